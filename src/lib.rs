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
//! | `offsets` | the offset tracker: in-flight offsets, contiguous commit watermarks, epochs |
//! | `batch` | micro-batches: one identifier type per job, size and linger flushes |
//! | `dispatch` | the single owner of pending identifiers: dedupe, the store, the jobs and their slots, fan-out, journaled jobs nobody drives |
//! | `budget` | the credit ceilings per hour and day: reservations in one store-topic partition judged alike by every pod, settlements, the halt |
//! | `share` | the split of the key's active-job slots among the pods that use it (member records in the store topic) |
//! | `store` | the result store: a compacted topic tailed by every pod into a local store on disk, a hot set in memory, the job journal |
//! | `lifecycle` | a job's life as a state machine: the journal's records, the rule that applies them in log order, the phases that hold slots (pure, a leaf) |
//! | `jobs` | one task per job: submit (written ahead to the journal), a lost answer resolved by content, wait (poll or webhook), read results; following and claiming another pod's job |
//! | `api` | the HTTP client, the status parser, the download allowlist, errors and the retry policy |
//! | `sink` | the producer of results and dead letters; acknowledgements finish offsets |
//! | `health`, `wake` | readiness flags; webhook tokens that wake waiting jobs |
//! | `server` | `/metrics`, `/healthz`, `/readyz`, webhook callbacks |
//! | `metrics`, `logging` | every Prometheus metric, defined in one place; log output |
//! | `telemetry` | OpenTelemetry traces of jobs and traced records, exported over OTLP without blocking |
//! | `lookup` | the `lookup` tool: what is known of identifiers, from the running connector (a Unix socket), the local store or the store topic |
//! | `redrive` | the `redrive` tool: dead letters sent through again, remembered in a compacted topic written in the same transaction |
//! | `scan` | reading a whole topic outside the pipeline, for the operator tools |
//! | `pipeline` | building the stages, the API-key probe, the shutdown sequence |
//!
//! The public surface is what the binary and the tests use: [`Config`],
//! [`start`] (the pipeline, stopped by the future it is given), [`Running`],
//! [`init_logging`], [`Telemetry`] and the error types.

/// Fault injection at a named step of a job's life, for the crash tests:
/// built with `--features failpoints` and run with `FAILPOINTS=<name>=return`
/// (or `<n>*off->return`: at the n+1st time), the process aborts there, as
/// a SIGKILL would stop it. Compiled out otherwise.
macro_rules! failpoint {
    ($name:literal) => {
        failpoint!($name, true)
    };
    ($name:literal, $when:expr) => {{
        #[cfg(feature = "failpoints")]
        if $when && fail::eval($name, |_| ()).is_some() {
            eprintln!("failpoint {} reached: aborting", $name);
            std::process::abort();
        }
        #[cfg(not(feature = "failpoints"))]
        let _ = || $when;
    }};
}

mod api;
mod batch;
mod budget;
pub mod config;
mod decode;
mod dispatch;
mod enrich;
mod health;
mod jobs;
mod lifecycle;
mod logging;
mod lookup;
mod metrics;
mod model;
mod offsets;
mod pipeline;
mod redrive;
mod registry;
mod scan;
mod server;
mod share;
mod sink;
mod source;
mod store;
mod telemetry;
mod wake;

pub use api::ApiError;
pub use config::{Config, ConfigError};
pub use dispatch::DispatchError;
pub use logging::init as init_logging;
pub use lookup::{run as lookup, Answer as LookupAnswer, LookupError};
pub use pipeline::{check_api, start, PipelineError, Running};
pub use redrive::{run as redrive, RedriveArgs, RedriveError, Summary as RedriveSummary};
pub use sink::SinkError;
pub use source::SourceError;
pub use store::StoreError;
pub use telemetry::{Telemetry, TelemetryError};
