//! identify-connector: a Kafka connector for Crustdata's asynchronous batch
//! reverse-identify API.
//!
//! # Layout
//!
//! The modules are the pipeline's stages, in the order a record meets them,
//! plus what they share; no module imports one that imports it back.
//!
//! | module | owns |
//! |---|---|
//! | `model` | the shared vocabulary: identifier types, identifiers, job specs, the batch limit, record positions (a leaf) |
//! | [`config`] | one serde struct per stage, loading (file + `IDENTIFY_*` environment) and validation; depends on no stage |
//! | `source` | the consumer thread, back-pressure, rebalances, the committer thread; hands [`SourceEvent`](source)s to the dispatcher |
//! | `decode` | record value -> normalised identifier, or the dead-letter reason |
//! | `enrich` | enrich mode's JSON surgery: the input object with the result at a pointer (a leaf) |
//! | `offsets` | the offset tracker: in-flight offsets, contiguous commit watermarks, epochs, jobs in commit metadata |
//! | `batch` | micro-batches: one identifier type per job, size and linger flushes |
//! | `dispatch` | the single owner of pending identifiers: dedupe, the store, job slots (AIMD), fan-out, adoption of jobs |
//! | `share` | the split of the key's active-job slots among the pods that use it (member records in the store topic) |
//! | `store` | the result store: a compacted topic tailed by every pod into a local store on disk, a hot set in memory, the job journal |
//! | `jobs` | one job's life: submit (write-ahead to the journal), wait (poll or webhook), download and parse results; reconciliation with the API's job list |
//! | `api` | the HTTP client, the status parser, the download allowlist, errors and the retry policy |
//! | `sink` | the producer of results and dead letters; acknowledgements finish offsets |
//! | `health`, `wake` | readiness flags; webhook tokens that wake waiting jobs |
//! | `server` | `/metrics`, `/healthz`, `/readyz`, webhook callbacks |
//! | `metrics`, `logging` | every Prometheus metric, defined in one place; log output |
//! | `pipeline` | building the stages, the API-key probe, the shutdown sequence |
//!
//! The public surface is what the binary and the tests use: [`Config`],
//! [`start`] (the pipeline, stopped by the future it is given), [`Running`],
//! [`init_logging`] and the error types.

mod api;
mod batch;
pub mod config;
mod decode;
mod dispatch;
mod enrich;
mod health;
mod jobs;
mod logging;
mod metrics;
mod model;
mod offsets;
mod pipeline;
mod server;
mod share;
mod sink;
mod source;
mod store;
mod wake;

pub use api::ApiError;
pub use config::{Config, ConfigError};
pub use dispatch::DispatchError;
pub use logging::init as init_logging;
pub use pipeline::{check_api, start, PipelineError, Running};
pub use sink::SinkError;
pub use source::SourceError;
pub use store::StoreError;
