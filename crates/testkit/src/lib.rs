//! Test kit of `identify-connector` (dev-only): what the integration tests
//! and the benchmarks share, so that neither keeps a copy.
//!
//! - [`kafka`]: the real local broker (`scripts/kafka-local.sh`): topics,
//!   producing, reading back, committed and end offsets;
//! - [`proc`]: the connector binary as a child process (SIGKILL, SIGTERM,
//!   CPU time and peak RSS), and free ports;
//! - [`metrics`]: reading values out of the Prometheus text format;
//! - [`sim`]: a simulator with fast jobs, and the records the tests feed;
//! - [`registry`]: a real Schema Registry and the Confluent Python
//!   serializers that make the registry-format inputs;
//! - [`cluster`]: the three-broker cluster (`scripts/kafka-local.sh
//!   cluster`): nodes killed and started, leaders, in-sync replicas;
//! - [`toxiproxy`]: network faults (Toxiproxy) between the connector and
//!   the brokers or the simulator;
//! - [`audit`]: every input accounted for (outputs, dead letters,
//!   duplicates, lost records) from the `identify.source.*` headers.
//!
//! It knows the connector only from the outside (topics, headers, HTTP,
//! the binary), never its code.

pub mod audit;
pub mod cluster;
pub mod kafka;
pub mod metrics;
pub mod proc;
pub mod registry;
pub mod sim;
pub mod toxiproxy;

pub use audit::{audit, wait_done, Audit, Topics};
pub use metrics::metric;
pub use proc::{free_port, ConnectorProc};
pub use sim::{emails, event, start_sim, KEY};
