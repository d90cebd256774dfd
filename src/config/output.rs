//! `[output]`: what an output record looks like (today's result record or
//! the input enriched with the result), its key, whether the input's
//! headers travel with it, and which dead-letter header convention is
//! written.

use serde::Deserialize;

use super::validate::Problems;
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

impl OutputConfig {
    /// The parsed `enrich_field` (validated).
    pub(crate) fn enrich_pointer(&self) -> Option<Pointer> {
        (self.mode == OutputMode::Enrich)
            .then(|| Pointer::parse(&self.enrich_field).ok())
            .flatten()
    }

    pub(super) fn validate(&self, json_input: bool, p: &mut Problems) {
        if let Err(e) = Pointer::parse(&self.enrich_field) {
            p.need(false, format!("output.enrich_field: {:?} {e}", self.enrich_field));
        }
        p.need(
            self.mode != OutputMode::Enrich || json_input,
            "output.mode = \"enrich\" needs input.format = \"json\" (it adds the result to the input object)",
        );
        p.need(
            self.ordering != Ordering::Key || self.key == OutputKey::Input,
            "output.ordering = \"key\" needs output.key = \"input\" (a key's outputs keep their order on one output partition)",
        );
    }
}
