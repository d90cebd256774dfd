//! The Confluent wire format and the three schema types: a record is a
//! magic byte 0, a 4-byte big-endian schema id, (Protobuf only) the
//! message indexes, then the payload. [`Parsed`] is a schema ready to
//! decode with; [`Parsed::to_json`] turns a payload into the JSON value the
//! identifier pointer reads.

use std::io::Read;

use base64::Engine;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

use super::client::SchemaDoc;

/// The header of a record in the wire format: its schema id and the rest.
pub(crate) fn split(value: &[u8]) -> Result<(u32, &[u8]), String> {
    match value {
        [0, a, b, c, d, rest @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        [0, ..] => Err(format!(
            "{} bytes, shorter than the wire format's 5-byte header",
            value.len()
        )),
        [m, ..] => Err(format!("magic byte {m}, not 0: not in the Confluent wire format")),
        [] => Err("empty value".into()),
    }
}

/// A schema ready to decode with.
pub(crate) enum Parsed {
    Avro(apache_avro::Schema),
    /// JSON Schema: the payload is JSON (not validated against the schema;
    /// the producer's serializer did that). The schema is kept for enrich
    /// mode, which evolves it.
    Json(serde_json::Value),
    Protobuf(DescriptorPool, String),
}

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Avro(_) => "Avro",
            Self::Json(_) => "JSON Schema",
            Self::Protobuf(..) => "Protobuf",
        })
    }
}

/// Name of the in-memory file a `.proto` schema is compiled as.
const PROTO_FILE: &str = "registry-schema.proto";

impl Parsed {
    /// Parses the registry's document; `Err` says why it cannot be used.
    pub(super) fn from_doc(doc: &SchemaDoc) -> Result<Self, String> {
        if doc.references.as_ref().is_some_and(|r| !r.is_empty()) {
            return Err("schemas with references are not supported".into());
        }
        match doc
            .schema_type
            .as_deref()
            .unwrap_or("AVRO")
            .to_ascii_uppercase()
            .as_str()
        {
            "AVRO" => apache_avro::Schema::parse_str(&doc.schema)
                .map(Self::Avro)
                .map_err(|e| format!("Avro schema: {e}")),
            "JSON" => serde_json::from_str(&doc.schema)
                .map(Self::Json)
                .map_err(|e| format!("JSON Schema: {e}")),
            "PROTOBUF" => protobuf(&doc.schema).map(|pool| Self::Protobuf(pool, PROTO_FILE.into())),
            other => Err(format!("schema type {other:?}")),
        }
    }

    /// The payload (after the 5-byte header) as JSON.
    pub(crate) fn to_json(&self, payload: &[u8]) -> Result<serde_json::Value, String> {
        match self {
            Self::Avro(schema) => {
                let mut reader = payload;
                let value =
                    apache_avro::from_avro_datum(schema, &mut reader, None).map_err(|e| format!("Avro: {e}"))?;
                if reader.bytes().next().is_some() {
                    return Err("Avro: bytes left after the record".into());
                }
                // The decoder reads a value cut short as null: a record
                // that does not fit its schema was truncated.
                if !value.validate(schema) {
                    return Err("Avro: the record ends early or does not fit its schema".into());
                }
                serde_json::Value::try_from(finite(value)).map_err(|e| format!("Avro: {e}"))
            }
            Self::Json(_) => serde_json::from_slice(payload).map_err(|e| format!("JSON: {e}")),
            Self::Protobuf(pool, file) => {
                let (desc, message) = message_of(pool, file, payload)?;
                let msg = DynamicMessage::decode(desc, message).map_err(|e| format!("Protobuf: {e}"))?;
                let options = SerializeOptions::new().use_proto_field_name(true);
                msg.serialize_with_options(serde_json::value::Serializer, &options)
                    .map_err(|e| format!("Protobuf: {e}"))
            }
        }
    }

    /// Whether the payload is JSON as it stands (JSON Schema).
    pub(crate) fn is_json(&self) -> bool {
        matches!(self, Self::Json(_))
    }
}

/// `value` with every NaN or infinite float as null: JSON has no such
/// numbers, and a record's identifier must not be lost to another field.
fn finite(value: apache_avro::types::Value) -> apache_avro::types::Value {
    use apache_avro::types::Value;
    match value {
        Value::Float(f) if !f.is_finite() => Value::Null,
        Value::Double(f) if !f.is_finite() => Value::Null,
        Value::Record(fields) => Value::Record(fields.into_iter().map(|(k, v)| (k, finite(v))).collect()),
        Value::Map(m) => Value::Map(m.into_iter().map(|(k, v)| (k, finite(v))).collect()),
        Value::Array(a) => Value::Array(a.into_iter().map(finite).collect()),
        Value::Union(i, v) => Value::Union(i, Box::new(finite(*v))),
        other => other,
    }
}

/// A Protobuf schema: `.proto` text (what Confluent's registry returns),
/// or a base64-encoded `FileDescriptorProto` (what some clients register
/// and some registries return as given).
fn protobuf(schema: &str) -> Result<DescriptorPool, String> {
    if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(schema.trim()) {
        if let Ok(mut file) = prost_types::FileDescriptorProto::decode(bytes.as_slice()) {
            file.name = Some(PROTO_FILE.into());
            if !file.message_type.is_empty() {
                let mut pool = DescriptorPool::new();
                return pool
                    .add_file_descriptor_proto(file)
                    .map(|()| pool)
                    .map_err(|e| format!("Protobuf descriptor: {e}"));
            }
        }
    }
    let mut resolver = protox::file::ChainFileResolver::new();
    resolver.add(OneFile(schema.to_string()));
    resolver.add(protox::file::GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler
        .open_file(PROTO_FILE)
        .map_err(|e| format!("Protobuf schema: {e}"))?;
    Ok(compiler.descriptor_pool())
}

/// The `.proto` text of a schema, as the one file of its name.
struct OneFile(String);

impl protox::file::FileResolver for OneFile {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        if name == PROTO_FILE {
            protox::file::File::from_source(name, &self.0)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

/// Reads the message indexes (a zigzag varint count, then each index;
/// a single 0 means the first message) and finds the message they name.
fn message_of<'a>(
    pool: &DescriptorPool,
    file: &str,
    payload: &'a [u8],
) -> Result<(MessageDescriptor, &'a [u8]), String> {
    let mut buf = payload;
    let zigzag = |buf: &mut &[u8]| -> Result<i64, String> {
        let n = prost::encoding::decode_varint(buf).map_err(|e| format!("Protobuf message indexes: {e}"))?;
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    };
    let count = zigzag(&mut buf)?;
    let indexes = if count == 0 {
        vec![0]
    } else {
        if !(1..=64).contains(&count) {
            return Err(format!("Protobuf message indexes: count {count}"));
        }
        (0..count).map(|_| zigzag(&mut buf)).collect::<Result<Vec<_>, _>>()?
    };
    let fd = pool
        .get_file_by_name(file)
        .ok_or_else(|| "Protobuf schema has no file".to_string())?;
    let mut desc: Option<MessageDescriptor> = None;
    for i in indexes {
        let i = usize::try_from(i).map_err(|_| format!("Protobuf message index {i}"))?;
        let next = match &desc {
            None => fd.messages().nth(i),
            Some(d) => d.child_messages().nth(i),
        };
        desc = Some(next.ok_or_else(|| format!("Protobuf message index {i} names no message"))?);
    }
    Ok((desc.expect("at least one index"), buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(schema: &str, kind: Option<&str>) -> SchemaDoc {
        SchemaDoc {
            schema: schema.into(),
            schema_type: kind.map(str::to_string),
            references: None,
        }
    }

    #[test]
    fn the_header_gives_the_schema_id_or_says_why_it_is_not_the_wire_format() {
        assert_eq!(split(&[0, 0, 0, 1, 2, 9]).unwrap(), (258, &[9u8][..]));
        assert!(split(b"{\"email\":1}").unwrap_err().contains("magic byte 123"));
        assert!(split(&[0, 0, 1]).unwrap_err().contains("shorter"));
    }

    #[test]
    fn avro_records_become_json_with_their_field_names() {
        let p = Parsed::from_doc(&doc(
            r#"{"type":"record","name":"E","fields":[{"name":"email","type":"string"},{"name":"n","type":["null","long"]}]}"#,
            None,
        ))
        .unwrap();
        let schema = match &p {
            Parsed::Avro(s) => s.clone(),
            other => panic!("{other:?}"),
        };
        let mut rec = apache_avro::types::Record::new(&schema).unwrap();
        rec.put("email", "jane@acme.com");
        rec.put(
            "n",
            apache_avro::types::Value::Union(1, Box::new(apache_avro::types::Value::Long(7))),
        );
        let bytes = apache_avro::to_avro_datum(&schema, rec).unwrap();
        let v = p.to_json(&bytes).unwrap();
        assert_eq!(v["email"], "jane@acme.com");
        assert_eq!(v["n"], 7);
        assert!(p.to_json(&bytes[..3]).is_err(), "truncated");
        let mut longer = bytes.clone();
        longer.push(1);
        assert!(p.to_json(&longer).is_err(), "trailing bytes");
    }

    #[test]
    fn a_nan_in_another_field_does_not_lose_the_identifier() {
        let p = Parsed::from_doc(&doc(
            r#"{"type":"record","name":"E","fields":[{"name":"email","type":"string"},{"name":"score","type":"double"}]}"#,
            None,
        ))
        .unwrap();
        let Parsed::Avro(schema) = &p else { panic!() };
        let mut rec = apache_avro::types::Record::new(schema).unwrap();
        rec.put("email", "jane@acme.com");
        rec.put("score", f64::NAN);
        let v = p.to_json(&apache_avro::to_avro_datum(schema, rec).unwrap()).unwrap();
        assert_eq!(v["email"], "jane@acme.com");
        assert!(v["score"].is_null());
    }

    #[test]
    fn protobuf_from_proto_text_or_a_base64_descriptor_with_message_indexes() {
        let text = "syntax = \"proto3\";\npackage t;\nmessage A { string x = 1; }\nmessage Event { string email = 1; int64 user_id = 2; message Inner { string email = 1; } }\n";
        let p = Parsed::from_doc(&doc(text, Some("PROTOBUF"))).unwrap();
        // Event { email = "jane@acme.com", user_id = 3 } after indexes [1].
        let mut payload = vec![2, 2];
        payload.extend([0x0a, 13]);
        payload.extend(b"jane@acme.com");
        payload.extend([0x10, 3]);
        let v = p.to_json(&payload).unwrap();
        assert_eq!(v["email"], "jane@acme.com");
        assert_eq!(
            v["user_id"], "3",
            "int64 as a JSON string, per the Protobuf JSON mapping"
        );
        // Event.Inner: indexes [1, 0].
        let mut inner = vec![4, 2, 0, 0x0a, 1];
        inner.push(b'q');
        assert_eq!(p.to_json(&inner).unwrap()["email"], "q");
        // The first message: a single 0.
        assert_eq!(p.to_json(&[0, 0x0a, 1, b'z']).unwrap()["x"], "z");
        assert!(p.to_json(&[2, 14]).is_err(), "index 7 names no message");

        let Parsed::Protobuf(pool, _) = &p else { panic!() };
        let fd = pool.get_file_by_name(PROTO_FILE).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(fd.file_descriptor_proto().encode_to_vec());
        let q = Parsed::from_doc(&doc(&b64, Some("PROTOBUF"))).unwrap();
        assert_eq!(q.to_json(&payload).unwrap()["email"], "jane@acme.com");
    }

    #[test]
    fn unusable_schemas_say_why() {
        assert!(Parsed::from_doc(&doc("{", None)).unwrap_err().contains("Avro"));
        assert!(Parsed::from_doc(&doc("message {", Some("PROTOBUF")))
            .unwrap_err()
            .contains("Protobuf"));
        assert!(Parsed::from_doc(&doc("x", Some("XML"))).unwrap_err().contains("XML"));
        let mut with_refs = doc("{}", Some("JSON"));
        with_refs.references = Some(vec![serde_json::json!({"name": "other"})]);
        assert!(Parsed::from_doc(&with_refs).unwrap_err().contains("references"));
    }
}
