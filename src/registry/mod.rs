//! Registry: the schemas of input records in the Confluent wire format
//! (`input.format = "registry"`), fetched by id from a Confluent-compatible
//! Schema Registry ([`client`]) once per id for the whole process, kept in
//! a bounded map, and used to decode Avro, JSON Schema and Protobuf
//! records into the JSON the identifier pointer reads ([`wire`]).
//!
//! Output in the registry's formats is written by [`Encoder`] ([`output`],
//! with the schemas of [`schemas`]).
//!
//! A schema id the registry does not know, a schema that cannot be used,
//! and bytes that do not decode are the record's fault (dead letters). A
//! registry that cannot be reached, refuses our credentials, answers an
//! error, or answers 404 while it holds no subject at all (it lost its
//! schemas) is nobody's record's fault: [`RegistryError::systemic`], and
//! the source halts until it answers.

mod client;
mod output;
mod schemas;
mod wire;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

pub(crate) use output::{matches, EncodeError, Encoder, OutputValue, ResultValue, SourceValue};
pub(crate) use wire::{split, Parsed};

use crate::config::SchemaRegistryConfig;

/// What went wrong with the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The client could not be built (a CA file, TLS).
    #[error("{0}")]
    Setup(String),
    /// Not an answer (connection refused, time-out, an unreadable body).
    #[error("the schema registry cannot be reached: {0}")]
    Unreachable(String),
    /// 401 or 403.
    #[error("the schema registry refuses our credentials ({0})")]
    Refused(u16),
    /// Another error status.
    #[error("the schema registry answered {0}")]
    Status(u16),
    /// 404 (for one id; see [`RegistryError::Lost`]).
    #[error("not found")]
    NotFound,
    /// 404 for an id while the registry holds no subject at all.
    #[error("the schema registry holds no schemas (404 for schema id {0}, and no subject)")]
    Lost(u32),
    /// The registry does not know this id.
    #[error("schema id {0} is unknown to the schema registry")]
    UnknownId(u32),
    /// The registry refuses to register our output schema under `subject`.
    #[error("the schema registry refuses the output schema under subject {subject:?}: {why}")]
    Incompatible {
        /// The subject.
        subject: String,
        /// Why.
        why: String,
    },
    /// This output cannot be written for records of this schema, whatever
    /// the record (a configuration the schema does not fit).
    #[error("{0}")]
    CannotWrite(String),
    /// The schema cannot be used.
    #[error("schema id {id} cannot be used: {why}")]
    Unusable {
        /// Its id.
        id: u32,
        /// Why.
        why: String,
    },
}

impl RegistryError {
    /// True when no record is at fault: the pipeline halts, nothing is
    /// dead-lettered.
    pub(crate) fn systemic(&self) -> bool {
        !std::matches!(self, Self::UnknownId(_) | Self::Unusable { .. })
    }
}

/// How long an id the registry does not know, or a schema that cannot be
/// used, is answered from memory: a run of such records must not cost two
/// requests each, and a schema registered late is still found.
const REFUSED_FOR: Duration = Duration::from_secs(30);

/// The registry client and the schemas fetched so far.
pub(crate) struct Registry {
    client: client::Client,
    schemas: Mutex<FxHashMap<u32, Arc<Parsed>>>,
    refused: Mutex<FxHashMap<u32, (Instant, RegistryError)>>,
    max: usize,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry client; `runtime` runs its requests for the consumer
    /// thread, which blocks on them.
    pub(crate) fn new(cfg: &SchemaRegistryConfig, runtime: tokio::runtime::Handle) -> Result<Self, RegistryError> {
        Ok(Self {
            client: client::Client::new(cfg)?,
            schemas: Mutex::default(),
            refused: Mutex::default(),
            max: cfg.max_schemas,
            runtime,
        })
    }

    /// The schema `id` from memory, or `None` when it was not fetched yet.
    pub(crate) fn cached(&self, id: u32) -> Option<Arc<Parsed>> {
        self.schemas.lock().expect("schemas").get(&id).cloned()
    }

    /// Schema `id`, fetched when not in memory. Blocks the calling thread,
    /// which must not be a runtime worker (the consumer thread).
    pub(crate) fn schema_blocking(&self, id: u32) -> Result<Arc<Parsed>, RegistryError> {
        if let Some(s) = self.cached(id) {
            return Ok(s);
        }
        if let Some((at, e)) = self.refused.lock().expect("refused").get(&id) {
            if at.elapsed() < REFUSED_FOR {
                return Err(e.clone());
            }
        }
        let fetched = self.runtime.block_on(self.fetch(id));
        if let Err(e) = &fetched {
            if !e.systemic() {
                let mut refused = self.refused.lock().expect("refused");
                refused.retain(|_, (at, _)| at.elapsed() < REFUSED_FOR);
                if refused.len() < self.max {
                    refused.insert(id, (Instant::now(), e.clone()));
                }
            }
        }
        fetched
    }

    async fn fetch(&self, id: u32) -> Result<Arc<Parsed>, RegistryError> {
        let doc = match self.client.schema(id).await {
            Ok(doc) => doc,
            Err(RegistryError::NotFound) => {
                return Err(if self.client.has_subjects().await? {
                    RegistryError::UnknownId(id)
                } else {
                    RegistryError::Lost(id)
                })
            }
            Err(e) => return Err(e),
        };
        let parsed = Arc::new(Parsed::from_doc(&doc).map_err(|why| RegistryError::Unusable { id, why })?);
        let mut schemas = self.schemas.lock().expect("schemas");
        if schemas.len() >= self.max {
            // Bounded: schema ids in use at once are few; drop any one.
            if let Some(old) = schemas.keys().next().copied() {
                schemas.remove(&old);
            }
        }
        schemas.insert(id, parsed.clone());
        Ok(parsed)
    }
}
