//! Decode: turns an input record's value into a normalised, validated
//! identifier, or into a [`DecodeError`] that names the dead-letter reason.
//!
//! Normalisation and validation rules (documented in `docs/CONFIG.md`):
//! - the value (JSON string at `input.field`, or the whole text) is trimmed;
//! - a **business email** is lowercased, at most 254 bytes, ASCII only, one
//!   `@`; the local part is 1–64 bytes of letters, digits and
//!   ``!#$%&'*+/=?^_`{|}~.-`` (no leading, trailing or double dot; quoted
//!   local parts are refused); the domain has at least two labels of
//!   letters, digits and `-` (1–63 bytes, not starting or ending with `-`)
//!   and a top-level label of at least two letters (or an `xn--` label);
//! - a **profile URL** is an absolute `http`/`https` URL with a host, at most
//!   2048 bytes, without whitespace; scheme and host are lowercased and a
//!   fragment is removed;
//! - with `identifier_type = "auto"`, a value starting with `http://` or
//!   `https://` is a profile URL and anything else an email.

use std::sync::Arc;

use crate::config::{IdentifierTypeSetting, InputConfig, InputFormat};
use crate::enrich::{self, EnrichError, Pointer};
use crate::model::{Identifier, IdentifierType};
use crate::registry::{Encoder, Registry, RegistryError};

mod pointer;

/// Why a record cannot be resolved. The reason string is the dead-letter
/// header `identify.error.reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// The record has no value (a tombstone).
    #[error("record has no value")]
    Empty,
    /// Larger than `input.max_value_bytes`.
    #[error("value is {size} bytes, more than input.max_value_bytes = {max}")]
    Oversized {
        /// Size of the value.
        size: usize,
        /// The configured bound.
        max: usize,
    },
    /// Not UTF-8 (text) or not JSON (json).
    #[error("value is not valid {0}: {1}")]
    NotParseable(&'static str, String),
    /// The JSON pointer finds nothing.
    #[error("field {0} is missing")]
    MissingField(String),
    /// The JSON pointer finds something other than a string.
    #[error("field {0} is not a string")]
    NotAString(String),
    /// The identifier breaks the validation rule.
    #[error("invalid {kind}: {why}")]
    InvalidIdentifier {
        /// The kind it was checked as.
        kind: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// Enrich mode cannot add the result to this value.
    #[error("cannot enrich: {0}")]
    NotEnrichable(EnrichError),
    /// Registry input: the schema id is unknown, or its schema cannot be used.
    #[error("{0}")]
    Schema(RegistryError),
    /// Registry input: not in the wire format, or the bytes do not decode
    /// with their schema.
    #[error("value does not decode: {0}")]
    NotDecodable(String),
    /// Registry input: the registry cannot answer. Not the record's
    /// fault: it is never dead-lettered (the source halts).
    #[error("{0}")]
    RegistryDown(RegistryError),
}

impl DecodeError {
    /// Bounded reason label for headers and metrics.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Empty => "empty_value",
            Self::Oversized { .. } => "oversized",
            Self::NotParseable(..) => "not_parseable",
            Self::MissingField(_) => "missing_field",
            Self::NotAString(_) => "not_a_string",
            Self::InvalidIdentifier { .. } => "invalid_identifier",
            Self::NotEnrichable(_) => "not_enrichable",
            Self::Schema(RegistryError::UnknownId(_)) => "unknown_schema",
            Self::Schema(_) => "unusable_schema",
            Self::NotDecodable(_) => "not_decodable",
            Self::RegistryDown(_) => "registry_unavailable",
        }
    }
}

/// Decodes record values according to `[input]`.
#[derive(Debug, Clone)]
pub(crate) struct Decoder {
    format: InputFormat,
    field: String,
    kind: IdentifierTypeSetting,
    max_bytes: usize,
    enrich_at: Option<Pointer>,
    registry: Option<Arc<Registry>>,
    /// Enrich mode with registry output: evolves each input schema.
    encoder: Option<Arc<Encoder>>,
}

impl Decoder {
    /// A decoder for the given input settings; in enrich mode (`enrich_at`)
    /// a value the result cannot be added to is refused here, before it
    /// costs a credit.
    pub(crate) fn new(cfg: &InputConfig, enrich_at: Option<Pointer>) -> Self {
        Self {
            format: cfg.format,
            field: cfg.field.clone(),
            kind: cfg.identifier_type,
            max_bytes: cfg.max_value_bytes,
            enrich_at,
            registry: None,
            encoder: None,
        }
    }

    /// With the registry that `input.format = "registry"` reads schemas from.
    pub(crate) fn with_registry(mut self, registry: Option<Arc<Registry>>) -> Self {
        self.registry = registry;
        self
    }

    /// With the encoder that registers each input schema's enriched output
    /// schema (`output.format = "input"`), before any credit is spent.
    pub(crate) fn with_encoder(mut self, encoder: Option<Arc<Encoder>>) -> Self {
        self.encoder = encoder;
        self
    }

    /// Whether records of schema `id` can be taken now: the registry gives
    /// the schema and (enrich mode) takes its output schema. `Err` only for
    /// a systemic error (a halt goes on).
    pub(crate) fn ready(&self, id: u32) -> Result<(), RegistryError> {
        match self.schema(id) {
            Err(DecodeError::RegistryDown(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Schema `id`, with its output schema registered in enrich mode.
    fn schema(&self, id: u32) -> Result<Arc<crate::registry::Parsed>, DecodeError> {
        let registry = self.registry.as_ref().expect("input.format = registry has a registry");
        let classify = |e: RegistryError| {
            if e.systemic() {
                DecodeError::RegistryDown(e)
            } else {
                DecodeError::Schema(e)
            }
        };
        let schema = registry.schema_blocking(id).map_err(classify)?;
        if let Some(encoder) = &self.encoder {
            encoder.evolve_blocking(id, &schema).map_err(classify)?;
        }
        Ok(schema)
    }

    /// Decodes one record value.
    pub(crate) fn decode(&self, value: Option<&[u8]>) -> Result<Identifier, DecodeError> {
        let value = value.ok_or(DecodeError::Empty)?;
        if value.len() > self.max_bytes {
            return Err(DecodeError::Oversized {
                size: value.len(),
                max: self.max_bytes,
            });
        }
        match self.format {
            InputFormat::Text => {
                let text = std::str::from_utf8(value).map_err(|e| DecodeError::NotParseable("UTF-8", e.to_string()))?;
                self.identifier(text)
            }
            InputFormat::Json => {
                if let Some(at) = &self.enrich_at {
                    enrich::check(value, at).map_err(|e| match e {
                        EnrichError::NotJson(m) => DecodeError::NotParseable("JSON", m),
                        e => DecodeError::NotEnrichable(e),
                    })?;
                }
                self.json_field(value)
            }
            InputFormat::Registry => self.registry_record(value),
        }
    }

    fn json_field(&self, value: &[u8]) -> Result<Identifier, DecodeError> {
        match pointer::lookup(value, &self.field) {
            Err(e) => Err(DecodeError::NotParseable("JSON", e.to_string())),
            Ok(pointer::Found::Missing) => Err(DecodeError::MissingField(self.field.clone())),
            Ok(pointer::Found::NotAString) => Err(DecodeError::NotAString(self.field.clone())),
            Ok(pointer::Found::Str(s)) => self.identifier(&s),
        }
    }

    /// A record in the Confluent wire format: its schema (fetched when not
    /// in memory, blocking this thread), then the identifier at
    /// `input.field` of the decoded record.
    fn registry_record(&self, value: &[u8]) -> Result<Identifier, DecodeError> {
        let (id, payload) = crate::registry::split(value).map_err(DecodeError::NotDecodable)?;
        let schema = self.schema(id)?;
        if schema.is_json() {
            if let Some(at) = self.enrich_at.as_ref().filter(|_| self.encoder.is_some()) {
                enrich::check(payload, at).map_err(|e| match e {
                    EnrichError::NotJson(m) => DecodeError::NotDecodable(format!("JSON: {m}")),
                    e => DecodeError::NotEnrichable(e),
                })?;
            }
            return match self.json_field(payload) {
                Err(DecodeError::NotParseable(_, m)) => Err(DecodeError::NotDecodable(format!("JSON: {m}"))),
                other => other,
            };
        }
        let doc = schema.to_json(payload).map_err(DecodeError::NotDecodable)?;
        match doc.pointer(&self.field) {
            None | Some(serde_json::Value::Null) => Err(DecodeError::MissingField(self.field.clone())),
            Some(serde_json::Value::String(s)) => self.identifier(s),
            Some(_) => Err(DecodeError::NotAString(self.field.clone())),
        }
    }

    fn identifier(&self, raw: &str) -> Result<Identifier, DecodeError> {
        let raw = raw.trim();
        let kind = self.kind.fixed().unwrap_or_else(|| detect(raw));
        normalize(kind, raw).map(|value| Identifier { kind, value })
    }
}

/// Auto-detection: `http://` or `https://` means a profile URL.
pub(crate) fn detect(raw: &str) -> IdentifierType {
    let lower = raw.get(..8).unwrap_or(raw).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        IdentifierType::ProfileUrl
    } else {
        IdentifierType::BusinessEmail
    }
}

/// Normalises and validates a trimmed identifier of the given kind.
pub(crate) fn normalize(kind: IdentifierType, raw: &str) -> Result<String, DecodeError> {
    match kind {
        IdentifierType::BusinessEmail => normalize_email(raw),
        IdentifierType::ProfileUrl => normalize_url(raw),
    }
}

fn bad(kind: &'static str, why: &'static str) -> DecodeError {
    DecodeError::InvalidIdentifier { kind, why }
}

fn normalize_email(raw: &str) -> Result<String, DecodeError> {
    let e = |why| bad("business_email", why);
    if raw.is_empty() {
        return Err(e("empty"));
    }
    if raw.len() > 254 {
        return Err(e("longer than 254 bytes"));
    }
    if !raw.is_ascii() {
        return Err(e("not ASCII (give international domains in punycode)"));
    }
    let email = raw.to_ascii_lowercase();
    let (local, domain) = email.split_once('@').ok_or(e("no @"))?;
    if domain.contains('@') {
        return Err(e("more than one @"));
    }
    if local.is_empty() || local.len() > 64 {
        return Err(e("local part must be 1 to 64 bytes"));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(e("misplaced dot in local part"));
    }
    let local_ok = local
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b));
    if !local_ok {
        return Err(e("forbidden character in local part"));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err(e("domain needs at least two labels"));
    }
    for l in &labels {
        if l.is_empty() || l.len() > 63 {
            return Err(e("domain label must be 1 to 63 bytes"));
        }
        if l.starts_with('-') || l.ends_with('-') {
            return Err(e("domain label starts or ends with '-'"));
        }
        if !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(e("forbidden character in domain"));
        }
    }
    let tld = labels[labels.len() - 1];
    if !(tld.starts_with("xn--") || (tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()))) {
        return Err(e("top-level domain must be letters"));
    }
    Ok(email)
}

fn normalize_url(raw: &str) -> Result<String, DecodeError> {
    let e = |why| bad("profile_url", why);
    if raw.is_empty() {
        return Err(e("empty"));
    }
    if raw.len() > 2048 {
        return Err(e("longer than 2048 bytes"));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(e("contains whitespace or control characters"));
    }
    let mut url = url::Url::parse(raw).map_err(|_| e("not an absolute URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(e("scheme must be http or https"));
    }
    if url.host_str().is_none_or(|h| h.is_empty()) {
        return Err(e("no host"));
    }
    url.set_fragment(None);
    Ok(url.to_string())
}

/// The key a result line is matched back with, the same for a submitted
/// identifier and for the API's echo of it. Emails: trimmed and
/// lowercased. Profile URLs: host and path only, lowercased, without
/// `www.` and trailing slashes (the API may echo a URL normalised its own
/// way: another scheme, case or trailing slash).
pub(crate) fn match_key(kind: Option<IdentifierType>, value: &str) -> String {
    let value = value.trim();
    match kind.unwrap_or_else(|| detect(value)) {
        IdentifierType::BusinessEmail => value.to_lowercase(),
        IdentifierType::ProfileUrl => match url::Url::parse(value) {
            Ok(u) => {
                let host = u.host_str().unwrap_or_default().to_ascii_lowercase();
                let host = host.strip_prefix("www.").unwrap_or(&host);
                format!("{host}{}", u.path().trim_end_matches('/').to_lowercase())
            }
            Err(_) => value.to_lowercase(),
        },
    }
}

#[cfg(test)]
mod tests;
