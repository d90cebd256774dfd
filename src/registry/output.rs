//! Registry output: records in the Confluent wire format. In result mode
//! (`output.format = "avro" | "json_schema"`) the output schema
//! ([`schemas`]) is registered once, at start-up, under the output topic's
//! subject (or the record's name); a registry that refuses it stops the
//! start. In enrich mode (`output.format = "input"`) each input schema is
//! evolved, when its first record is decoded, into the input schema plus a
//! nullable result field with a null default, and registered; a refusal
//! halts the source like a registry that cannot answer ([`Encoder::evolve_blocking`]).
//!
//! A record's value is built in [`Encoder::result`] or [`Encoder::enrich`].

use std::sync::{Arc, Mutex};

use apache_avro::types::Value as Avro;
use rustc_hash::FxHashMap;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::schemas;
use super::{Parsed, Registry, RegistryError};
use crate::config::{OutputConfig, OutputFormat, SubjectStrategy};
use crate::enrich::{self, Pointer};

/// A schema registered for output: its id, and the Avro schema to write
/// with (`None`: JSON Schema, the payload is JSON).
struct Registered {
    id: u32,
    avro: Option<apache_avro::Schema>,
}

/// An input schema's evolved output schema, and the input schema.
struct Evolved {
    out: Registered,
    input: Arc<Parsed>,
}

/// Why an output value cannot be built now.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EncodeError {
    /// The evolved schema of input schema `0` is not in memory.
    #[error("the output schema for input schema id {0} is not registered yet")]
    NotReady(u32),
    /// The input record cannot carry the result.
    #[error("{0}")]
    Bad(String),
}

/// Writes output records in the registry's formats.
pub(crate) struct Encoder {
    registry: Arc<Registry>,
    format: OutputFormat,
    strategy: SubjectStrategy,
    topic: String,
    /// Enrich mode's field and its pointer.
    field: Option<(String, Pointer)>,
    /// Result mode's schema, registered by [`Encoder::prepare`].
    result: std::sync::OnceLock<Registered>,
    /// `["null", IdentifyResult]`, to resolve enrich mode's field with.
    result_union: apache_avro::Schema,
    evolved: Mutex<FxHashMap<u32, Arc<Evolved>>>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("format", &self.format)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// The encoder `[output]` asks for (`None` with `format = "json"`).
    pub(crate) fn new(registry: Arc<Registry>, cfg: &OutputConfig, topic: &str) -> Option<Self> {
        let union = serde_json::json!(["null", schemas::result_avro()]);
        let field = cfg
            .enrich_pointer()
            .and_then(|p| Some((p.field_name()?.to_string(), p)));
        cfg.uses_registry().then(|| Self {
            registry,
            format: cfg.format,
            strategy: cfg.subject_strategy,
            topic: topic.to_string(),
            field: field.filter(|_| cfg.format == OutputFormat::Input),
            result: std::sync::OnceLock::new(),
            result_union: apache_avro::Schema::parse(&union).expect("our result schema parses"),
            evolved: Mutex::default(),
        })
    }

    fn subject(&self, record_name: &str) -> String {
        match self.strategy {
            SubjectStrategy::Topic => format!("{}-value", self.topic),
            SubjectStrategy::Record => record_name.to_string(),
        }
    }

    /// Registers result mode's schema (nothing to do in enrich mode).
    pub(crate) async fn prepare(&self) -> Result<(), RegistryError> {
        let (kind, schema, avro) = match self.format {
            OutputFormat::Avro => {
                let s = schemas::output_avro();
                (
                    "AVRO",
                    s.to_string(),
                    Some(apache_avro::Schema::parse(&s).expect("parses")),
                )
            }
            OutputFormat::JsonSchema => ("JSON", schemas::output_json_schema().to_string(), None),
            OutputFormat::Json | OutputFormat::Input => return Ok(()),
        };
        let subject = self.subject(schemas::OUTPUT_RECORD);
        let id = self.registry.client.register(&subject, kind, &schema).await?;
        tracing::info!(subject, schema_id = id, "output schema registered");
        let _ = self.result.set(Registered { id, avro });
        Ok(())
    }

    /// Result mode's value of one result.
    pub(crate) fn result(&self, out: &OutputValue<'_>) -> Result<Vec<u8>, EncodeError> {
        let reg = self.result.get().expect("prepared at start-up");
        let mut buf = header(reg.id);
        match &reg.avro {
            None => serde_json::to_writer(&mut buf, out).expect("serializes"),
            Some(schema) => buf.extend(avro_datum(schema, out)?),
        }
        Ok(buf)
    }

    /// Enrich mode's value: the input record (`value`, in the wire format)
    /// with `result` at the field, in the input's format, under the
    /// evolved schema's id.
    pub(crate) fn enrich(&self, value: &[u8], result: &ResultValue<'_>) -> Result<Vec<u8>, EncodeError> {
        let (field, at) = self.field.as_ref().expect("enrich mode");
        let (id, payload) = super::split(value).map_err(EncodeError::Bad)?;
        let evolved = self
            .evolved
            .lock()
            .expect("evolved")
            .get(&id)
            .cloned()
            .ok_or(EncodeError::NotReady(id))?;
        let mut buf = header(evolved.out.id);
        match (&*evolved.input, &evolved.out.avro) {
            (Parsed::Avro(input), Some(out)) => {
                let mut reader = payload;
                let Avro::Record(mut fields) = apache_avro::from_avro_datum(input, &mut reader, None)
                    .map_err(|e| EncodeError::Bad(format!("Avro: {e}")))?
                else {
                    return Err(EncodeError::Bad("the Avro value is not a record".into()));
                };
                let r = apache_avro::to_value(result)
                    .and_then(|v| v.resolve(&self.result_union))
                    .map_err(|e| EncodeError::Bad(format!("Avro result: {e}")))?;
                fields.retain(|(name, _)| name != field);
                fields.push((field.clone(), r));
                let datum = apache_avro::to_avro_datum(out, Avro::Record(fields))
                    .map_err(|e| EncodeError::Bad(format!("Avro: {e}")))?;
                buf.extend(datum);
            }
            (Parsed::Json(_), None) => {
                let result = serde_json::to_string(result).expect("serializes");
                buf.extend(enrich::enrich(payload, at, &result).map_err(|e| EncodeError::Bad(e.to_string()))?);
            }
            _ => return Err(EncodeError::Bad("the input's format has no output format".into())),
        }
        Ok(buf)
    }

    /// Makes sure input schema `id` (`input`) has its evolved output
    /// schema registered. Blocks the calling thread (the consumer's).
    pub(crate) fn evolve_blocking(&self, id: u32, input: &Arc<Parsed>) -> Result<(), RegistryError> {
        if self.field.is_none() || self.evolved.lock().expect("evolved").contains_key(&id) {
            return Ok(());
        }
        self.registry.runtime.block_on(self.register_evolved(id, input.clone()))
    }

    /// [`Encoder::evolve_blocking`] for the sink, when the evolved schema
    /// is no longer in memory.
    pub(crate) async fn evolve(&self, id: u32) -> Result<(), RegistryError> {
        let input = match self.registry.cached(id) {
            Some(p) => p,
            None => self.registry.fetch(id).await?,
        };
        self.register_evolved(id, input).await
    }

    async fn register_evolved(&self, id: u32, input: Arc<Parsed>) -> Result<(), RegistryError> {
        let (field, _) = self.field.as_ref().expect("enrich mode");
        let unusable = |why: String| RegistryError::Unusable { id, why };
        let (kind, schema, name) = match &*input {
            Parsed::Avro(s) => {
                let (text, name) = evolve_avro(s, field).map_err(unusable)?;
                ("AVRO", text, name)
            }
            Parsed::Json(s) => {
                let (text, name) = evolve_json(s, field).map_err(unusable)?;
                ("JSON", text, name)
            }
            Parsed::Protobuf(..) => {
                return Err(RegistryError::CannotWrite(format!(
                    "schema id {id} is Protobuf: enrich mode with output.format = \"input\" writes Avro and JSON Schema only (use output.mode = \"result\")"
                )))
            }
        };
        let subject = match (self.strategy, name) {
            (SubjectStrategy::Record, None) => {
                return Err(unusable(
                    "output.subject_strategy = \"record\" needs a JSON Schema with a \"title\"".into(),
                ))
            }
            (_, name) => self.subject(name.as_deref().unwrap_or_default()),
        };
        let avro = match kind {
            "AVRO" => Some(apache_avro::Schema::parse_str(&schema).map_err(|e| unusable(format!("evolved: {e}")))?),
            _ => None,
        };
        let out_id = self.registry.client.register(&subject, kind, &schema).await?;
        tracing::info!(
            subject,
            input_schema_id = id,
            schema_id = out_id,
            "enriched output schema registered"
        );
        let mut evolved = self.evolved.lock().expect("evolved");
        if evolved.len() >= self.registry.max {
            // Bounded; one dropped is registered again when next needed.
            if let Some(old) = evolved.keys().next().copied() {
                evolved.remove(&old);
            }
        }
        evolved.insert(
            id,
            Arc::new(Evolved {
                out: Registered { id: out_id, avro },
                input,
            }),
        );
        Ok(())
    }
}

/// The wire format's header for schema `id`.
fn header(id: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(512);
    buf.push(0);
    buf.extend(id.to_be_bytes());
    buf
}

fn avro_datum(schema: &apache_avro::Schema, v: &impl Serialize) -> Result<Vec<u8>, EncodeError> {
    apache_avro::to_value(v)
        .and_then(|v| v.resolve(schema))
        .and_then(|v| apache_avro::to_avro_datum(schema, v))
        .map_err(|e| EncodeError::Bad(format!("Avro: {e}")))
}

/// The Avro input schema plus the result field (replacing one of that
/// name): its text and the record's full name.
fn evolve_avro(input: &apache_avro::Schema, field: &str) -> Result<(String, Option<String>), String> {
    let apache_avro::Schema::Record(rec) = input else {
        return Err("enrich mode adds a field to a record; this Avro schema is not a record".into());
    };
    let name = rec.name.fullname(None);
    let mut json = serde_json::to_value(input).map_err(|e| e.to_string())?;
    let fields = json["fields"].as_array_mut().ok_or("an Avro record without fields")?;
    fields.retain(|f| f["name"] != field);
    fields.push(serde_json::json!({
        "name": field,
        "type": ["null", schemas::result_avro()],
        "default": null,
        "doc": "identify-connector's result (null until resolved)."
    }));
    Ok((json.to_string(), Some(name)))
}

/// The JSON Schema input schema plus the result property: its text and
/// its title.
fn evolve_json(input: &Value, field: &str) -> Result<(String, Option<String>), String> {
    let mut s = input.clone();
    let Some(obj) = s.as_object_mut() else {
        return Err("the JSON Schema is not an object".into());
    };
    if obj.get("type").is_some_and(|t| t != "object") {
        return Err("enrich mode adds a property to an object; this JSON Schema's type is not \"object\"".into());
    }
    let title = obj.get("title").and_then(Value::as_str).map(str::to_string);
    let property = serde_json::json!({
        "anyOf": [{ "type": "null" }, schemas::result_json_schema()],
        "default": null,
        "description": "identify-connector's result (null until resolved)."
    });
    let properties = obj.entry("properties").or_insert_with(|| serde_json::json!({}));
    properties
        .as_object_mut()
        .ok_or("the JSON Schema's properties is not an object")?
        .insert(field.to_string(), property);
    if let Some(Value::Array(required)) = obj.get_mut("required") {
        required.retain(|r| r != field);
    }
    Ok((s.to_string(), title))
}

/// One match: its stable fields and all of it as JSON text.
#[derive(Serialize)]
pub(crate) struct MatchValue {
    confidence_score: Option<f64>,
    crustdata_person_id: Option<String>,
    name: Option<String>,
    headline: Option<String>,
    title: Option<String>,
    updated_at: Option<String>,
    match_json: String,
}

/// The matches array of the API (verbatim JSON) as [`MatchValue`]s.
pub(crate) fn matches(raw: &RawValue) -> Vec<MatchValue> {
    let items: Vec<&RawValue> = serde_json::from_str(raw.get()).unwrap_or_default();
    items
        .into_iter()
        .map(|item| {
            let m: Value = serde_json::from_str(item.get()).unwrap_or(Value::Null);
            let person = &m["person_data"];
            let profile = &person["basic_profile"];
            let text = |v: &Value| v.as_str().map(str::to_string);
            MatchValue {
                confidence_score: m["confidence_score"].as_f64().filter(|f| f.is_finite()),
                crustdata_person_id: match &person["crustdata_person_id"] {
                    Value::Number(n) => Some(n.to_string()),
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                },
                name: text(&profile["name"]),
                headline: text(&profile["headline"]),
                title: text(&profile["title"]).or_else(|| text(&profile["current_title"])),
                updated_at: text(&person["updated_at"]),
                match_json: item.get().to_string(),
            }
        })
        .collect()
}

/// The result of one identifier, in registry form.
#[derive(Serialize)]
pub(crate) struct ResultValue<'a> {
    pub(crate) identifier: &'a str,
    pub(crate) identifier_type: &'a str,
    pub(crate) matched: bool,
    pub(crate) matches: Vec<MatchValue>,
    pub(crate) batch_id: &'a str,
    pub(crate) resolved_at: &'a str,
}

/// Result mode's record in registry form.
#[derive(Serialize)]
pub(crate) struct OutputValue<'a> {
    pub(crate) identifier: &'a str,
    pub(crate) identifier_type: &'a str,
    pub(crate) matched: bool,
    pub(crate) matches: Vec<MatchValue>,
    pub(crate) batch_id: &'a str,
    pub(crate) resolved_at: &'a str,
    pub(crate) source: SourceValue<'a>,
}

/// Where the input record was.
#[derive(Serialize)]
pub(crate) struct SourceValue<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

#[cfg(test)]
#[path = "output_tests.rs"]
mod tests;
