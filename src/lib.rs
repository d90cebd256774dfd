//! identify-connector: a Kafka connector for Crustdata's asynchronous batch
//! reverse-identify API.
//!
//! Stages, each a module: [`source`] (consumer, rebalances, offset
//! tracking) -> [`decode`] -> [`batch`] -> [`jobs`] (submit, poll or
//! webhook, results) over the [`api`] client -> [`sink`] (producer), wired by
//! [`pipeline`]; plus [`config`], [`metrics`], [`server`] and [`logging`].
//! [`sim`] is a faithful simulator of the API for tests, demos and benchmarks.

pub mod api;
pub mod batch;
pub mod config;
pub mod decode;
pub mod jobs;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod server;
pub mod sim;
pub mod sink;
pub mod source;
