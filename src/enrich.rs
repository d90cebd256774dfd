//! Enrich mode's JSON surgery: the input object, unchanged, with the
//! result added at a JSON pointer (RFC 6901). Only the objects on the
//! pointer's path are rewritten (their members' values are copied as raw
//! JSON, byte for byte, in their order); nothing else of the input is
//! parsed into a tree. A leaf: it imports no other module.
//!
//! [`check`] runs when a record is decoded, so that an input that cannot be
//! enriched is dead-lettered before any credit is spent on it.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// A parsed JSON pointer with at least one token (the result never
/// replaces the whole document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pointer(Vec<String>);

/// Why a pointer is not usable as `output.enrich_field`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PointerError {
    /// Not starting with `/` (the empty pointer is the whole document).
    #[error("must start with '/' and name a member, such as \"/crustdata\"")]
    NotAPointer,
    /// `//`, or a trailing `/`.
    #[error("has an empty member name")]
    EmptyToken,
    /// A `~` not followed by `0` or `1`.
    #[error("has a '~' that is not '~0' or '~1'")]
    BadEscape,
}

impl Pointer {
    /// Parses `s`, unescaping `~1` (`/`) and `~0` (`~`).
    pub(crate) fn parse(s: &str) -> Result<Self, PointerError> {
        let rest = s.strip_prefix('/').ok_or(PointerError::NotAPointer)?;
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            if raw.is_empty() {
                return Err(PointerError::EmptyToken);
            }
            let escapes_ok = raw
                .match_indices('~')
                .all(|(i, _)| matches!(raw.as_bytes().get(i + 1), Some(b'0' | b'1')));
            if !escapes_ok {
                return Err(PointerError::BadEscape);
            }
            tokens.push(raw.replace("~1", "/").replace("~0", "~"));
        }
        Ok(Self(tokens))
    }

    /// The one member it names when that is a single top-level name fit
    /// for an Avro field (letters, digits, `_`, not starting with a digit).
    pub(crate) fn field_name(&self) -> Option<&str> {
        let [name] = self.0.as_slice() else { return None };
        let mut chars = name.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        (first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')).then_some(name.as_str())
    }
}

/// Why an input value cannot be enriched (its dead-letter message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EnrichError {
    /// The value is not valid JSON.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// The value is JSON, but not an object.
    #[error("the value is a JSON {0}, not an object: enrich mode adds the result to an object")]
    NotAnObject(&'static str),
    /// A member on the pointer's path holds something other than an object.
    #[error("{path} holds a JSON {kind}, not an object: the result cannot be added under it")]
    ParentNotAnObject {
        /// The path up to that member.
        path: String,
        /// What it holds.
        kind: &'static str,
    },
}

/// Whether `doc` can be enriched at `at`.
pub(crate) fn check(doc: &[u8], at: &Pointer) -> Result<(), EnrichError> {
    enrich(doc, at, "null").map(|_| ())
}

/// `doc` with `result` (a serialised JSON value) at `at`: the member is
/// replaced when present, added at the end of its object otherwise, and
/// missing parents are created as objects.
pub(crate) fn enrich(doc: &[u8], at: &Pointer, result: &str) -> Result<Vec<u8>, EnrichError> {
    let raw: &RawValue = serde_json::from_slice(doc).map_err(|e| EnrichError::NotJson(e.to_string()))?;
    let mut out = Vec::with_capacity(doc.len() + result.len() + 32);
    let kind = kind_of(raw.get());
    if kind != "object" {
        return Err(EnrichError::NotAnObject(kind));
    }
    write_object(&mut out, raw.get(), &at.0, result, &mut String::new())?;
    Ok(out)
}

/// Writes object `obj` with `result` put at `tokens` below it.
fn write_object(
    out: &mut Vec<u8>,
    obj: &str,
    tokens: &[String],
    result: &str,
    path: &mut String,
) -> Result<(), EnrichError> {
    let (first, rest) = tokens.split_first().expect("a pointer has a token");
    let Members(members) = serde_json::from_str::<Members<'_>>(obj).map_err(|e| EnrichError::NotJson(e.to_string()))?;
    path.push('/');
    path.push_str(first);
    out.push(b'{');
    let mut placed = false;
    let mut written = 0;
    for (key, value) in &members {
        let ours = key.as_ref() == first.as_str();
        if ours && placed {
            // A repeated member (JSON does not forbid it): one value only.
            continue;
        }
        if written > 0 {
            out.push(b',');
        }
        written += 1;
        write_key(out, key);
        if !ours {
            out.extend_from_slice(value.get().as_bytes());
        } else if rest.is_empty() {
            out.extend_from_slice(result.as_bytes());
        } else {
            let kind = kind_of(value.get());
            if kind != "object" {
                return Err(EnrichError::ParentNotAnObject {
                    path: path.clone(),
                    kind,
                });
            }
            write_object(out, value.get(), rest, result, path)?;
        }
        placed |= ours;
    }
    if !placed {
        if written > 0 {
            out.push(b',');
        }
        write_key(out, first);
        for t in rest {
            out.push(b'{');
            write_key(out, t);
        }
        out.extend_from_slice(result.as_bytes());
        out.extend(std::iter::repeat_n(b'}', rest.len()));
    }
    out.push(b'}');
    Ok(())
}

fn write_key(out: &mut Vec<u8>, key: &str) {
    serde_json::to_writer(&mut *out, key).expect("a string serialises");
    out.push(b':');
}

/// The JSON type of a valid serialised value.
fn kind_of(raw: &str) -> &'static str {
    match raw.trim_start().as_bytes().first() {
        Some(b'{') => "object",
        Some(b'[') => "array",
        Some(b'"') => "string",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        _ => "number",
    }
}

/// An object's members in their order, values as raw JSON.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                #[derive(Deserialize)]
                struct Key<'k>(#[serde(borrow)] Cow<'k, str>);
                let mut members = Vec::new();
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    members.push((k, map.next_value::<&'de RawValue>()?));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn at(p: &str) -> Pointer {
        Pointer::parse(p).unwrap()
    }

    fn enriched(doc: &str, p: &str) -> Result<String, EnrichError> {
        enrich(doc.as_bytes(), &at(p), r#"{"matched":true}"#).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn pointers() {
        assert_eq!(at("/crustdata"), Pointer(vec!["crustdata".into()]));
        assert_eq!(at("/a~1b/c~0d"), Pointer(vec!["a/b".into(), "c~d".into()]));
        assert_eq!(Pointer::parse(""), Err(PointerError::NotAPointer));
        assert_eq!(Pointer::parse("crustdata"), Err(PointerError::NotAPointer));
        assert_eq!(Pointer::parse("/"), Err(PointerError::EmptyToken));
        assert_eq!(Pointer::parse("/a//b"), Err(PointerError::EmptyToken));
        assert_eq!(Pointer::parse("/a~2"), Err(PointerError::BadEscape));
        assert_eq!(Pointer::parse("/a~"), Err(PointerError::BadEscape));
    }

    #[test]
    fn adds_replaces_and_keeps_everything_else_byte_for_byte() {
        let doc = r#"{"email":"jane@acme.com","n":1.50,"deep":{"x":[1, 2]},"u":"\u00e9😀"}"#;
        assert_eq!(
            enriched(doc, "/crustdata").unwrap(),
            r#"{"email":"jane@acme.com","n":1.50,"deep":{"x":[1, 2]},"u":"\u00e9😀","crustdata":{"matched":true}}"#
        );
        let existing = r#"{"crustdata":{"old":1},"a":2}"#;
        assert_eq!(
            enriched(existing, "/crustdata").unwrap(),
            r#"{"crustdata":{"matched":true},"a":2}"#
        );
        assert_eq!(
            enriched("{}", "/crustdata").unwrap(),
            r#"{"crustdata":{"matched":true}}"#
        );
        assert_eq!(
            enriched(r#"{"a":1,"a":2}"#, "/a").unwrap(),
            r#"{"a":{"matched":true}}"#,
            "a repeated member is written once"
        );
    }

    #[test]
    fn nested_pointers_create_missing_parents() {
        let doc = r#"{"meta":{"k":"v"},"z":0}"#;
        let v: Value = serde_json::from_str(&enriched(doc, "/meta/identify/result").unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"meta": {"k": "v", "identify": {"result": {"matched": true}}}, "z": 0})
        );
        let v: Value = serde_json::from_str(&enriched("{}", "/a/b").unwrap()).unwrap();
        assert_eq!(v, json!({"a": {"b": {"matched": true}}}));
        let v: Value = serde_json::from_str(&enriched(r#"{"a/b":{}}"#, "/a~1b/c").unwrap()).unwrap();
        assert_eq!(v, json!({"a/b": {"c": {"matched": true}}}));
    }

    #[test]
    fn what_cannot_be_enriched_says_why() {
        let p = at("/crustdata");
        assert_eq!(check(b"[1]", &p), Err(EnrichError::NotAnObject("array")));
        assert_eq!(check(b"\"jane@acme.com\"", &p), Err(EnrichError::NotAnObject("string")));
        assert_eq!(check(b"42", &p), Err(EnrichError::NotAnObject("number")));
        assert!(matches!(check(b"{nope", &p), Err(EnrichError::NotJson(_))));
        assert_eq!(
            check(br#"{"meta":"text"}"#, &at("/meta/result")),
            Err(EnrichError::ParentNotAnObject {
                path: "/meta".into(),
                kind: "string"
            })
        );
        assert_eq!(check(br#"{"meta":{}}"#, &at("/meta/result")), Ok(()));
    }
}
