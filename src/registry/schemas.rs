//! The schemas of registry output (`output.format = "avro" | "json_schema"
//! | "input"`), defined once, in Avro, and translated to JSON Schema, so
//! that both formats carry the same fields. The vendor's open match objects
//! travel as a record of their stable fields plus the whole match as JSON
//! text (`match_json`), so no field is lost. docs/schemas holds the
//! generated files; a test keeps them equal to these.

use serde_json::{json, Map, Value};

/// Namespace of the connector's Avro records.
pub(crate) const NAMESPACE: &str = "io.crustdata.identify";
/// Full name of the result-mode record (its subject under RecordNameStrategy).
pub(crate) const OUTPUT_RECORD: &str = "io.crustdata.identify.IdentifyOutput";

fn nullable(name: &str, kind: &str, doc: &str) -> Value {
    json!({ "name": name, "type": ["null", kind], "default": null, "doc": doc })
}

fn field(name: &str, kind: Value, doc: &str) -> Value {
    json!({ "name": name, "type": kind, "doc": doc })
}

/// One match: its stable fields, and all of it as JSON text.
fn match_record() -> Value {
    json!({
        "type": "record",
        "name": "IdentifyMatch",
        "namespace": NAMESPACE,
        "doc": "One match of the API for the identifier: its stable fields (null when the API left them out), and the whole match object as the API returned it.",
        "fields": [
            nullable("confidence_score", "double", "Match confidence reported by the API."),
            nullable("crustdata_person_id", "string", "Crustdata's person id (a number in the vendor's examples, written in decimal)."),
            nullable("name", "string", "person_data.basic_profile.name."),
            nullable("headline", "string", "person_data.basic_profile.headline."),
            nullable("title", "string", "person_data.basic_profile.title, or current_title when there is no title."),
            nullable("updated_at", "string", "person_data.updated_at: when Crustdata last updated the person."),
            field("match_json", json!("string"), "The whole match object as the API returned it (JSON text): every field, including those not above."),
        ]
    })
}

/// The fields of a result, in both modes.
fn result_fields() -> Vec<Value> {
    vec![
        field(
            "identifier",
            json!("string"),
            "The normalised identifier as submitted to the API.",
        ),
        field("identifier_type", json!("string"), "business_email or profile_url."),
        field(
            "matched",
            json!("boolean"),
            "True when matches holds at least one element.",
        ),
        field(
            "matches",
            json!({ "type": "array", "items": match_record() }),
            "The API's matches for this identifier.",
        ),
        field(
            "batch_id",
            json!("string"),
            "The API's batch_id of the job that resolved the identifier (for a cache hit, the job that first did).",
        ),
        field(
            "resolved_at",
            json!("string"),
            "RFC 3339 UTC time with milliseconds at which the result was published (for a cache hit, the first time).",
        ),
    ]
}

/// The record of result mode: the result and the input record it is for.
pub(crate) fn output_avro() -> Value {
    let mut fields = result_fields();
    fields.push(field(
        "source",
        json!({
            "type": "record",
            "name": "IdentifySource",
            "namespace": NAMESPACE,
            "doc": "Coordinates of the input record this result belongs to.",
            "fields": [
                field("topic", json!("string"), "Input topic."),
                field("partition", json!("int"), "Input partition."),
                field("offset", json!("long"), "Input offset."),
            ]
        }),
        "Coordinates of the input record this result belongs to.",
    ));
    json!({
        "type": "record",
        "name": "IdentifyOutput",
        "namespace": NAMESPACE,
        "doc": "identify-connector's output record (output.mode = \"result\"): one per input record whose identifier was resolved.",
        "fields": fields
    })
}

/// The record enrich mode adds to the input's (as a nullable field).
pub(crate) fn result_avro() -> Value {
    json!({
        "type": "record",
        "name": "IdentifyResult",
        "namespace": NAMESPACE,
        "doc": "identify-connector's result, added to the input record in enrich mode (output.format = \"input\").",
        "fields": result_fields()
    })
}

/// An Avro schema (of the kinds above) as JSON Schema (draft-07).
fn to_json_schema(avro: &Value) -> Value {
    match avro {
        Value::String(kind) => json!({ "type": primitive(kind) }),
        Value::Array(union) => {
            // ["null", X]: X or null.
            let inner = to_json_schema(&union[1]);
            match inner.get("type").and_then(Value::as_str) {
                Some(t) if t != "object" && t != "array" => json!({ "type": ["null", t] }),
                _ => json!({ "anyOf": [{ "type": "null" }, inner] }),
            }
        }
        Value::Object(o) if o["type"] == "array" => json!({ "type": "array", "items": to_json_schema(&o["items"]) }),
        Value::Object(o) => {
            let mut properties = Map::new();
            let mut required = Vec::new();
            for f in o["fields"].as_array().expect("fields") {
                let name = f["name"].as_str().expect("name");
                let mut s = to_json_schema(&f["type"]);
                s["description"] = f["doc"].clone();
                if f.get("default").is_none() {
                    required.push(json!(name));
                }
                properties.insert(name.to_string(), s);
            }
            json!({
                "type": "object",
                "title": format!("{}.{}", o["namespace"].as_str().expect("namespace"), o["name"].as_str().expect("name")),
                "description": o["doc"],
                "additionalProperties": false,
                "required": required,
                "properties": properties
            })
        }
        other => unreachable!("not an Avro schema of ours: {other}"),
    }
}

fn primitive(kind: &str) -> &'static str {
    match kind {
        "string" => "string",
        "boolean" => "boolean",
        "double" => "number",
        "int" | "long" => "integer",
        other => unreachable!("no such primitive here: {other}"),
    }
}

/// The JSON Schema of result mode's record.
pub(crate) fn output_json_schema() -> Value {
    let mut s = to_json_schema(&output_avro());
    s.as_object_mut()
        .expect("object")
        .insert("$schema".into(), json!("http://json-schema.org/draft-07/schema#"));
    s
}

/// The JSON Schema of the result enrich mode adds.
pub(crate) fn result_json_schema() -> Value {
    to_json_schema(&result_avro())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/schemas/<name>, or written there with `IDENTIFY_WRITE_SCHEMAS=1`.
    fn same_as_doc(name: &str, schema: &Value) {
        let path = format!("{}/docs/schemas/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = serde_json::to_string_pretty(schema).unwrap() + "\n";
        if std::env::var_os("IDENTIFY_WRITE_SCHEMAS").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let doc = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            doc == text,
            "{path} differs from the schema the code registers; run IDENTIFY_WRITE_SCHEMAS=1 cargo test --lib schemas"
        );
    }

    #[test]
    fn the_documented_schemas_are_the_ones_registered() {
        for s in [output_avro(), result_avro()] {
            apache_avro::Schema::parse(&s).expect("valid Avro");
        }
        same_as_doc("output.avsc", &output_avro());
        same_as_doc("result.avsc", &result_avro());
        same_as_doc("output.registry.schema.json", &output_json_schema());
        same_as_doc("result.registry.schema.json", &result_json_schema());
    }

    #[test]
    fn json_schema_has_the_avro_fields_with_their_nullability() {
        let s = output_json_schema();
        assert_eq!(s["title"], OUTPUT_RECORD);
        assert_eq!(s["properties"]["source"]["properties"]["offset"]["type"], "integer");
        let m = &s["properties"]["matches"]["items"];
        assert_eq!(m["properties"]["confidence_score"]["type"], json!(["null", "number"]));
        assert_eq!(m["required"], json!(["match_json"]));
        assert!(s["required"].as_array().unwrap().contains(&json!("source")));
    }
}
