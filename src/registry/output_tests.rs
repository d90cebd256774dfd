//! Unit tests of registry output: matches in registry form, result mode's
//! wire format, and enrich mode's schema evolution and values.

use apache_avro::types::Record;
use serde_json::json;

use super::*;
use crate::config::{OutputMode, SchemaRegistryConfig};

fn encoder(format: OutputFormat) -> Encoder {
    let cfg = SchemaRegistryConfig {
        url: "http://127.0.0.1:9".into(),
        ..Default::default()
    };
    let registry = Arc::new(Registry::new(&cfg, tokio::runtime::Handle::current()).unwrap());
    let output = OutputConfig {
        mode: if format == OutputFormat::Input {
            OutputMode::Enrich
        } else {
            OutputMode::Result
        },
        format,
        ..Default::default()
    };
    Encoder::new(registry, &output, "identified").unwrap()
}

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.into()).unwrap()
}

const MATCHES: &str = r#"[{"confidence_score":0.9,"person_data":{"crustdata_person_id":123,"basic_profile":{"name":"Jane","current_title":"CTO","x":[1]},"updated_at":"2026-01-01"},"extra":true}]"#;

fn result<'a>(m: &RawValue) -> ResultValue<'a> {
    ResultValue {
        identifier: "jane@acme.com",
        identifier_type: "business_email",
        matched: true,
        matches: matches(m),
        batch_id: "b-1",
        resolved_at: "2026-12-07T00:00:00.000Z",
    }
}

#[test]
fn matches_keep_their_stable_fields_and_all_of_themselves() {
    let m = matches(&raw(MATCHES));
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].crustdata_person_id.as_deref(), Some("123"));
    assert_eq!(
        m[0].title.as_deref(),
        Some("CTO"),
        "current_title when there is no title"
    );
    assert_eq!(m[0].headline, None);
    let whole: Value = serde_json::from_str(&m[0].match_json).unwrap();
    assert_eq!(whole["extra"], true);
    assert_eq!(whole["person_data"]["basic_profile"]["x"][0], 1);
    let m = matches(&raw(
        r#"[{"person_data":{"crustdata_person_id":"p-9"},"confidence_score":"high"}]"#,
    ));
    assert_eq!(m[0].crustdata_person_id.as_deref(), Some("p-9"));
    assert_eq!(m[0].confidence_score, None);
    assert!(matches(&raw("[]")).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn result_mode_writes_the_wire_format_with_the_registered_id() {
    let e = encoder(OutputFormat::Avro);
    let schema = apache_avro::Schema::parse(&schemas::output_avro()).unwrap();
    let _ = e.result.set(Registered {
        id: 7,
        avro: Some(schema.clone()),
    });
    let m = raw(MATCHES);
    let r = result(&m);
    let out = OutputValue {
        identifier: r.identifier,
        identifier_type: r.identifier_type,
        matched: true,
        matches: r.matches,
        batch_id: r.batch_id,
        resolved_at: r.resolved_at,
        source: SourceValue {
            topic: "emails",
            partition: 2,
            offset: 99,
        },
    };
    let bytes = e.result(&out).unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, 7]);
    let v = apache_avro::from_avro_datum(&schema, &mut &bytes[5..], None).unwrap();
    let v: Value = Value::try_from(v).unwrap();
    assert_eq!(v["identifier"], "jane@acme.com");
    assert_eq!(v["source"]["offset"], 99);
    assert_eq!(v["matches"][0]["crustdata_person_id"], "123");
}

#[tokio::test(flavor = "multi_thread")]
async fn enrich_mode_adds_a_nullable_result_field_to_avro_and_json_schema() {
    let e = encoder(OutputFormat::Input);
    let input = apache_avro::Schema::parse_str(
        r#"{"type":"record","name":"Signup","namespace":"t","fields":[{"name":"email","type":"string"},{"name":"crustdata","type":"int"}]}"#,
    )
    .unwrap();
    let (text, name) = evolve_avro(&input, "crustdata").unwrap();
    assert_eq!(name.as_deref(), Some("t.Signup"));
    let out = apache_avro::Schema::parse_str(&text).unwrap();
    let evolved: Value = serde_json::from_str(&text).unwrap();
    let fields = evolved["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 2, "a field of the same name is replaced");
    assert_eq!(fields[1]["default"], Value::Null);
    e.evolved.lock().unwrap().insert(
        3,
        Arc::new(Evolved {
            out: Registered {
                id: 8,
                avro: Some(out.clone()),
            },
            input: Arc::new(Parsed::Avro(input.clone())),
        }),
    );
    let mut rec = Record::new(&input).unwrap();
    rec.put("email", "Jane@Acme.com");
    rec.put("crustdata", 5);
    let mut value = vec![0, 0, 0, 0, 3];
    value.extend(apache_avro::to_avro_datum(&input, rec).unwrap());
    let m = raw(MATCHES);
    let bytes = e.enrich(&value, &result(&m)).unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, 8]);
    let v = Value::try_from(apache_avro::from_avro_datum(&out, &mut &bytes[5..], None).unwrap()).unwrap();
    assert_eq!(v["email"], "Jane@Acme.com");
    assert_eq!(v["crustdata"]["batch_id"], "b-1");
    assert!(std::matches!(
        e.enrich(&[0, 0, 0, 0, 4, 2], &result(&m)),
        Err(EncodeError::NotReady(4))
    ));
    assert!(evolve_avro(&apache_avro::Schema::String, "crustdata").is_err());

    let json_input = json!({"type":"object","title":"t.Signup","required":["email","crustdata"],"properties":{"email":{"type":"string"}}});
    let (text, title) = evolve_json(&json_input, "crustdata").unwrap();
    assert_eq!(title.as_deref(), Some("t.Signup"));
    let s: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(s["required"], json!(["email"]));
    assert_eq!(s["properties"]["crustdata"]["default"], Value::Null);
    assert!(evolve_json(&json!({"type":"array"}), "crustdata").is_err());
}
