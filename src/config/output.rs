//! `[output]`: what an output record looks like (today's result record or
//! the input enriched with the result), its key, whether the input's
//! headers travel with it, and which dead-letter header convention is
//! written.

use serde::Deserialize;

use super::validate::Problems;
use super::InputFormat;
use crate::enrich::Pointer;

/// `[output]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// `result` (default): a record of its own (the result and its source);
    /// `enrich`: the input JSON object with the result at `enrich_field`.
    pub mode: OutputMode,
    /// Where enrich mode puts the result (a JSON pointer). Default `/crustdata`.
    pub enrich_field: String,
    /// `identifier` (default): the normalised identifier; `input`: the
    /// input record's key (downstream partitioning is kept).
    pub key: OutputKey,
    /// Copy the input record's headers to its output and dead letter.
    pub forward_headers: bool,
    /// `identify` (default): `identify.error.*` headers on dead letters;
    /// `connect`: Kafka Connect's `__connect.errors.*` as well.
    pub dead_letter_headers: DeadLetterHeaders,
    /// `none` (default): outputs go as their jobs finish; `key`: the
    /// outputs of one input key (from one input partition) in input order.
    pub ordering: Ordering,
    /// `json` (default); `avro` or `json_schema`: result records in the
    /// Confluent wire format, their schema registered in the registry;
    /// `input` (enrich mode with registry input): the input's own format.
    pub format: OutputFormat,
    /// Subject of the registered output schema: `topic` (default,
    /// `<output_topic>-value`) or `record` (the record's full name).
    pub subject_strategy: SubjectStrategy,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            mode: OutputMode::Result,
            enrich_field: "/crustdata".into(),
            key: OutputKey::Identifier,
            forward_headers: false,
            dead_letter_headers: DeadLetterHeaders::Identify,
            ordering: Ordering::None,
            format: OutputFormat::Json,
            subject_strategy: SubjectStrategy::Topic,
        }
    }
}

/// `output.mode`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputMode {
    /// A result record per input.
    Result,
    /// The input object with the result added.
    Enrich,
}

/// `output.key`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKey {
    /// The normalised identifier.
    Identifier,
    /// The input record's key (none when it had none).
    Input,
}

/// `output.dead_letter_headers`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterHeaders {
    /// `identify.error.*` only.
    Identify,
    /// `identify.error.*` and Kafka Connect's `__connect.errors.*`.
    Connect,
}

/// `output.ordering`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// As jobs finish.
    None,
    /// Per input key, in input order.
    Key,
}

/// `output.format`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// Plain JSON.
    Json,
    /// Avro in the Confluent wire format.
    Avro,
    /// JSON Schema in the Confluent wire format.
    JsonSchema,
    /// Enrich mode: the input's own registry format, its schema plus the
    /// result field.
    Input,
}

/// `output.subject_strategy`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectStrategy {
    /// TopicNameStrategy: `<output_topic>-value`.
    Topic,
    /// RecordNameStrategy: the record's full name (Avro) or title (JSON Schema).
    Record,
}

impl OutputConfig {
    /// Whether outputs are written in the Confluent wire format.
    pub(crate) fn uses_registry(&self) -> bool {
        self.format != OutputFormat::Json
    }

    /// The parsed `enrich_field` (validated).
    pub(crate) fn enrich_pointer(&self) -> Option<Pointer> {
        (self.mode == OutputMode::Enrich)
            .then(|| Pointer::parse(&self.enrich_field).ok())
            .flatten()
    }

    pub(super) fn validate(&self, input: InputFormat, p: &mut Problems) {
        if let Err(e) = Pointer::parse(&self.enrich_field) {
            p.need(false, format!("output.enrich_field: {:?} {e}", self.enrich_field));
        }
        let enrich = self.mode == OutputMode::Enrich;
        let registry_input = input == InputFormat::Registry;
        match self.format {
            OutputFormat::Json => p.need(
                !enrich || input == InputFormat::Json,
                if registry_input {
                    "output.mode = \"enrich\" with input.format = \"registry\" needs output.format = \"input\" (the output keeps the input's format)"
                } else {
                    "output.mode = \"enrich\" needs input.format = \"json\" or \"registry\" (it adds the result to the input object)"
                },
            ),
            OutputFormat::Avro | OutputFormat::JsonSchema => p.need(
                !enrich,
                "output.format = \"avro\" or \"json_schema\" is for output.mode = \"result\"; enrich mode keeps the input's format (output.format = \"input\" with input.format = \"registry\")",
            ),
            OutputFormat::Input => {
                p.need(
                    enrich && registry_input,
                    "output.format = \"input\" needs output.mode = \"enrich\" and input.format = \"registry\"",
                );
                let field_ok = Pointer::parse(&self.enrich_field).is_ok_and(|ptr| ptr.field_name().is_some());
                p.need(
                    field_ok,
                    format!(
                        "output.enrich_field: {:?} must name one top-level field (letters, digits, '_', not starting with a digit, such as \"/crustdata\") with output.format = \"input\": the result is a field of the input's schema",
                        self.enrich_field
                    ),
                );
            }
        }
        p.need(
            self.ordering != Ordering::Key || self.key == OutputKey::Input,
            "output.ordering = \"key\" needs output.key = \"input\" (a key's outputs keep their order on one output partition)",
        );
    }
}
