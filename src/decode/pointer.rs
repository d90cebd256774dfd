//! JSON pointer lookup without building a document tree: each level is
//! scanned once, other members are skipped (but still validated), and only
//! the member on the path is kept, as raw JSON.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// What a pointer finds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found<'a> {
    /// A JSON string.
    Str(Cow<'a, str>),
    /// Something other than a string.
    NotAString,
    /// Nothing at that path.
    Missing,
}

/// Resolves RFC 6901 pointer `pointer` in the JSON document `doc`; `Err`
/// when `doc` is not valid JSON.
pub(crate) fn lookup<'a>(doc: &'a [u8], pointer: &str) -> Result<Found<'a>, serde_json::Error> {
    let mut raw: &'a RawValue = serde_json::from_slice(doc)?;
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        let mut de = serde_json::Deserializer::from_str(raw.get());
        match Member(&token).deserialize(&mut de)? {
            Some(next) => raw = next,
            None => return Ok(Found::Missing),
        }
    }
    #[derive(serde::Deserialize)]
    struct Text<'b>(#[serde(borrow)] Cow<'b, str>);
    Ok(match serde_json::from_str::<Text<'a>>(raw.get()) {
        Ok(Text(s)) => Found::Str(s),
        Err(_) => Found::NotAString,
    })
}

/// Finds the member named (or the element indexed by) the token.
struct Member<'t>(&'t str);

impl<'de> DeserializeSeed<'de> for Member<'_> {
    type Value = Option<&'de RawValue>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Member<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(is_it) = map.next_key_seed(KeyEq(self.0))? {
            if is_it && found.is_none() {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // RFC 6901: an array index is 0 or digits without a leading zero.
        let valid = self.0 == "0" || (!self.0.starts_with('0') && self.0.bytes().all(|b| b.is_ascii_digit()));
        let wanted = if valid { self.0.parse::<usize>().ok() } else { None };
        let mut found = None;
        let mut i = 0usize;
        loop {
            if Some(i) == wanted {
                match seq.next_element::<&'de RawValue>()? {
                    Some(v) => found = Some(v),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Compares a map key with the wanted name without allocating.
struct KeyEq<'t>(&'t str);

impl<'de> DeserializeSeed<'de> for KeyEq<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyEq<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(doc: &str, p: &str) -> Found<'static> {
        match lookup(doc.as_bytes(), p).expect("valid JSON") {
            Found::Str(s) => Found::Str(Cow::Owned(s.into_owned())),
            Found::NotAString => Found::NotAString,
            Found::Missing => Found::Missing,
        }
    }

    #[test]
    fn agrees_with_serde_json_pointer() {
        let docs = [
            r#"{"email":"a@b.co","x":[1,{"y":"z"}],"n":null,"e\u0041":"escaped key","a/b":{"m~n":"s"}}"#,
            r#"["first",{"email":"in array"}]"#,
            r#""just a string""#,
            r#"{"email":"with \"quotes\" and \u00e9"}"#,
            r#"{"email":5}"#,
        ];
        let pointers = [
            "",
            "/email",
            "/x/1/y",
            "/x/0",
            "/x/2",
            "/n",
            "/eA",
            "/a~1b/m~0n",
            "/1/email",
            "/0",
            "/missing",
            "/email/deeper",
            "/x/01",
        ];
        for doc in docs {
            let v: serde_json::Value = serde_json::from_str(doc).unwrap();
            for p in pointers {
                let want = match v.pointer(p) {
                    None => Found::Missing,
                    Some(serde_json::Value::String(s)) => Found::Str(Cow::Owned(s.clone())),
                    Some(_) => Found::NotAString,
                };
                assert_eq!(find(doc, p), want, "doc {doc} pointer {p}");
            }
        }
    }

    #[test]
    fn invalid_json_anywhere_is_an_error() {
        for doc in [
            r#"{"email":"a@b.co","x":[1,}"#,
            r#"{"email":"a@b.co"} trailing"#,
            "",
            r#"{"email":"a@b.co""#,
        ] {
            assert!(lookup(doc.as_bytes(), "/email").is_err(), "{doc}");
        }
        // Deep nesting is skipped without recursion (no stack overflow).
        let deep = "[".repeat(1_000_000) + &"]".repeat(1_000_000);
        assert_eq!(lookup(deep.as_bytes(), "/0").unwrap(), Found::NotAString);
        assert_eq!(lookup(deep.as_bytes(), "/email").unwrap(), Found::Missing);
        let deep_obj = r#"{"a":"#.repeat(100_000) + "1" + &"}".repeat(100_000);
        assert!(matches!(
            lookup(deep_obj.as_bytes(), "/email"),
            Ok(Found::Missing) | Err(_)
        ));
    }
}
