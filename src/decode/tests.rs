//! Hostile input for the decoder: property tests (arbitrary bytes,
//! oversized values, deep nesting, invalid UTF-8, NUL bytes), 10 MB values,
//! unicode and quoted emails: no panic, and every refusal carries a known
//! dead-letter reason.

use proptest::prelude::*;

use super::{DecodeError, Decoder};
use crate::config::{IdentifierTypeSetting, InputConfig, InputFormat};

const REASONS: [&str; 7] = [
    "empty_value",
    "oversized",
    "not_parseable",
    "missing_field",
    "not_a_string",
    "invalid_identifier",
    "not_enrichable",
];

fn decoder(format: InputFormat, kind: IdentifierTypeSetting, max: usize) -> Decoder {
    Decoder::new(
        &InputConfig {
            format,
            field: "/email".into(),
            identifier_type: kind,
            max_value_bytes: max,
        },
        None,
    )
}

fn decoders() -> Vec<Decoder> {
    let mut all = Vec::new();
    for format in [InputFormat::Json, InputFormat::Text] {
        for kind in [
            IdentifierTypeSetting::BusinessEmail,
            IdentifierTypeSetting::ProfileUrl,
            IdentifierTypeSetting::Auto,
        ] {
            all.push(decoder(format, kind, 65_536));
        }
    }
    all
}

/// Decodes with every decoder; a refusal must carry a known reason and a
/// message, an acceptance a normalised identifier that decodes to itself.
fn check(value: Option<&[u8]>) {
    for d in decoders() {
        match d.decode(value) {
            Ok(id) => {
                assert!(!id.value.is_empty());
                assert!(!id.value.contains(['\0', '\n', ' ']), "{:?}", id.value);
                let again = decoder(InputFormat::Text, IdentifierTypeSetting::Auto, 65_536)
                    .decode(Some(id.value.as_bytes()))
                    .expect("a normalised identifier is valid");
                assert_eq!(again.value, id.value, "normalisation is idempotent");
            }
            Err(e) => {
                assert!(REASONS.contains(&e.reason()), "{e:?}");
                assert!(!e.to_string().is_empty());
            }
        }
    }
}

fn json_email(s: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "email": s })).unwrap()
}

fn email_reason(raw: &str) -> &'static str {
    let d = decoder(InputFormat::Json, IdentifierTypeSetting::BusinessEmail, 65_536);
    match d.decode(Some(&json_email(raw))) {
        Ok(_) => "accepted",
        Err(e) => e.reason(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decoder_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check(Some(&bytes));
    }

    #[test]
    fn decoder_survives_arbitrary_strings_in_the_field(s in any::<String>()) {
        check(Some(&json_email(&s)));
        check(Some(s.as_bytes()));
    }

    #[test]
    fn decoder_survives_email_shaped_noise(
        local in r#"[a-zA-Z0-9._%+"\\ (),:;<>@\[\]!#$&'*/=?^`{|}~-]{0,70}"#,
        domain in r"[a-zA-Z0-9.\-_éф中]{0,70}",
        nul in any::<bool>(),
    ) {
        let mut email = format!("{local}@{domain}");
        if nul {
            email.insert(local.len(), '\0');
        }
        check(Some(&json_email(&email)));
        check(Some(email.as_bytes()));
        if nul {
            prop_assert_eq!(email_reason(&email), "invalid_identifier");
        }
    }

    #[test]
    fn decoder_refuses_values_over_the_bound(extra in 1usize..4096, max in 64usize..4096) {
        let value = vec![b'a'; max + extra];
        let d = decoder(InputFormat::Json, IdentifierTypeSetting::BusinessEmail, max);
        let e = d.decode(Some(&value)).unwrap_err();
        prop_assert_eq!(e.reason(), "oversized");
        prop_assert_eq!(e, DecodeError::Oversized { size: max + extra, max });
    }

    #[test]
    fn decoder_survives_deep_nesting(depth in 1usize..20_000, object in any::<bool>()) {
        let (open, close) = if object { (r#"{"a":"#, "}") } else { ("[", "]") };
        let doc = format!(r#"{{"email":{}1{}}}"#, open.repeat(depth), close.repeat(depth));
        check(Some(doc.as_bytes()));
        let d = decoder(InputFormat::Json, IdentifierTypeSetting::BusinessEmail, 1 << 20);
        let reason = d.decode(Some(doc.as_bytes())).unwrap_err().reason();
        prop_assert!(["not_parseable", "not_a_string"].contains(&reason), "{}", reason);
    }

}

#[test]
fn ten_megabyte_values_are_refused_without_panic() {
    let ten = 10 << 20;
    let d = decoder(InputFormat::Json, IdentifierTypeSetting::BusinessEmail, 65_536);
    let big = vec![b'x'; ten];
    assert_eq!(d.decode(Some(&big)).unwrap_err().reason(), "oversized");
    // With a bound above it, the value is read and refused on its merits.
    let roomy = |f| decoder(f, IdentifierTypeSetting::Auto, 16 << 20);
    let long_email = json_email(&format!("{}@example.com", "a".repeat(ten)));
    assert_eq!(
        roomy(InputFormat::Json).decode(Some(&long_email)).unwrap_err().reason(),
        "invalid_identifier"
    );
    let mut not_utf8 = vec![0xffu8; ten];
    not_utf8[0] = b'a';
    assert_eq!(
        roomy(InputFormat::Text).decode(Some(&not_utf8)).unwrap_err().reason(),
        "not_parseable"
    );
    assert_eq!(
        roomy(InputFormat::Json).decode(Some(&not_utf8)).unwrap_err().reason(),
        "not_parseable"
    );
    let deep = "[".repeat(ten);
    assert_eq!(
        roomy(InputFormat::Json)
            .decode(Some(deep.as_bytes()))
            .unwrap_err()
            .reason(),
        "not_parseable"
    );
    let nuls = vec![0u8; ten];
    assert_eq!(
        roomy(InputFormat::Text).decode(Some(&nuls)).unwrap_err().reason(),
        "invalid_identifier"
    );
}

#[test]
fn unicode_quoted_and_nul_emails_are_invalid_identifiers() {
    for raw in [
        "jöse@exämple.com",
        "用户@例子.广告",
        "\"john doe\"@example.com",
        "\"a@b\"@example.com",
        "john\\@doe@example.com",
        "a\u{0}b@example.com",
        "ab@exa\u{0}mple.com",
        "a@b@example.com",
        "a..b@example.com",
        "ab@example",
        "ab@-example.com",
        "ab@example.c0m",
        "\u{202e}ab@example.com",
        "ab@example.com\u{200b}",
    ] {
        assert_eq!(email_reason(raw), "invalid_identifier", "{raw:?}");
    }
    // Surrounding whitespace is trimmed; case is folded.
    assert_eq!(email_reason("  Jane.Doe+tag@Example.COM \n"), "accepted");
    // A raw NUL inside a JSON string is not JSON at all.
    let d = decoder(InputFormat::Json, IdentifierTypeSetting::BusinessEmail, 65_536);
    assert_eq!(
        d.decode(Some(b"{\"email\":\"a\0b@example.com\"}"))
            .unwrap_err()
            .reason(),
        "not_parseable"
    );
}

#[test]
fn result_lines_match_back_whatever_form_the_api_echoes() {
    use super::match_key;
    use crate::model::IdentifierType::{BusinessEmail, ProfileUrl};
    assert_eq!(match_key(Some(BusinessEmail), " Jane@Acme.COM "), "jane@acme.com");
    let submitted = match_key(Some(ProfileUrl), "https://www.linkedin.com/in/JaneDoe");
    for echo in [
        "https://www.linkedin.com/in/JaneDoe",
        "http://linkedin.com/in/janedoe/",
        "https://LinkedIn.com/in/JaneDoe?trk=x#top",
    ] {
        assert_eq!(match_key(None, echo), submitted, "{echo}");
    }
    assert_ne!(match_key(None, "https://linkedin.com/in/jane"), submitted);
}

#[test]
fn enrich_mode_refuses_what_it_cannot_enrich_before_reading_the_identifier() {
    let cfg = InputConfig::default();
    let d = Decoder::new(&cfg, Some(crate::enrich::Pointer::parse("/crustdata").unwrap()));
    let reason = |v: &[u8]| d.decode(Some(v)).map(|_| "ok").unwrap_or_else(|e| e.reason());
    assert_eq!(reason(br#"{"email":"jane@acme.com"}"#), "ok");
    assert_eq!(reason(br#"{"email":"jane@acme.com","crustdata":7}"#), "ok", "replaced");
    assert_eq!(reason(br#""jane@acme.com""#), "not_enrichable");
    assert_eq!(reason(br#"[{"email":"jane@acme.com"}]"#), "not_enrichable");
    assert_eq!(reason(b"{bad"), "not_parseable");
    let nested = Decoder::new(&cfg, Some(crate::enrich::Pointer::parse("/meta/crustdata").unwrap()));
    let e = nested
        .decode(Some(br#"{"email":"jane@acme.com","meta":[]}"#))
        .unwrap_err();
    assert_eq!(e.reason(), "not_enrichable");
    assert!(e.to_string().contains("/meta holds a JSON array"), "{e}");
}
