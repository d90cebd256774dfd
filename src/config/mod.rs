//! Configuration: one serde struct per pipeline stage under [`Config`], loaded
//! from a TOML file and the environment with figment, then checked by
//! [`Config::validate`], which names the offending key in every message.
//!
//! Precedence (last wins): built-in defaults, the TOML file, `IDENTIFY_*`
//! environment variables (`__` separates nesting levels, e.g.
//! `IDENTIFY_KAFKA__BROKERS`), and `CRUSTDATA_API_KEY` for `api.key`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::model::{IdentifierType, API_MAX_BATCH};

mod budget;
mod load;
mod output;
mod registry;
mod telemetry;
mod types;
mod validate;

pub use budget::BudgetConfig;
pub use output::{DeadLetterHeaders, Ordering, OutputConfig, OutputFormat, OutputKey, OutputMode, SubjectStrategy};
pub use registry::SchemaRegistryConfig;
pub use telemetry::TelemetryConfig;
pub use types::{duration, Properties, Secret};

/// `transaction.timeout.ms` of the exactly-once producer unless
/// `kafka.producer` sets it: longer than the sink's retries of one commit
/// (50 s), which a setting must exceed too.
pub(crate) const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// What `transaction.timeout.ms` must exceed (the sink's test checks it).
pub(crate) const TRANSACTION_MIN: Duration = Duration::from_secs(50);

/// Errors while loading or validating configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be parsed into the schema.
    #[error("configuration error: {0}")]
    Load(String),
    /// Values parsed but are not acceptable; one line per problem.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Kafka source and sink.
    pub kafka: KafkaConfig,
    /// How an identifier is read from each input record.
    pub input: InputConfig,
    /// What the output records look like.
    pub output: OutputConfig,
    /// Micro-batching.
    pub batch: BatchConfig,
    /// The Crustdata API.
    pub api: ApiConfig,
    /// Webhook completion (optional).
    pub webhook: WebhookConfig,
    /// The result cache.
    pub cache: CacheConfig,
    /// The HTTP server (metrics, health, webhooks).
    pub server: ServerConfig,
    /// Logging.
    pub log: LogConfig,
    /// Traces (OpenTelemetry, off by default).
    pub telemetry: TelemetryConfig,
    /// Credit ceilings (off by default).
    pub budget: BudgetConfig,
    /// The Schema Registry of `input.format = "registry"`.
    pub schema_registry: SchemaRegistryConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
}

/// `[kafka]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated. Default `127.0.0.1:9092`.
    pub brokers: String,
    /// Consumer group. Default `identify-connector`.
    pub group_id: String,
    /// Topics to consume. Required.
    pub input_topics: Vec<String>,
    /// Topic for result records. Required.
    pub output_topic: String,
    /// Topic for records that cannot be resolved. Required.
    pub dead_letter_topic: String,
    /// Records held in memory (consumed, not yet published) before every
    /// partition is paused. Default 20000.
    pub max_in_flight: usize,
    /// Bytes of record values held in memory before pausing. Default 64 MiB.
    pub max_in_flight_bytes: usize,
    /// How often safe offsets are committed. Default `1s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub commit_interval: Duration,
    /// How long a revoked partition may drain before its rest is dropped
    /// uncommitted. Default `10s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub rebalance_drain_timeout: Duration,
    /// Static group membership (`group.instance.id`): a stable name per
    /// replica (the pod name of a StatefulSet), so that a restarted member
    /// takes its partitions back at once instead of after the session
    /// timeout. Empty (default): dynamic membership.
    pub instance_id: String,
    /// Outputs, dead letters and offsets committed in one Kafka transaction
    /// per commit: a `read_committed` consumer sees each input's output
    /// exactly once. Outputs become visible at the commit (up to
    /// `commit_interval` later). Default false (at least once).
    pub exactly_once: bool,
    /// SASL password for consumer and producer (`sasl.password`); best set
    /// through `IDENTIFY_KAFKA__SASL_PASSWORD`.
    pub sasl_password: Secret,
    /// Password of the TLS client key (`ssl.key.password`); best set through
    /// `IDENTIFY_KAFKA__SSL_KEY_PASSWORD`.
    pub ssl_key_password: Secret,
    /// Extra librdkafka consumer properties, passed through verbatim.
    pub consumer: Properties,
    /// Extra librdkafka producer properties, passed through verbatim.
    pub producer: Properties,
}

impl KafkaConfig {
    /// Consumer (`producer = false`) or producer properties, with the
    /// password fields applied where the maps do not set them.
    pub(crate) fn client_properties(&self, producer: bool) -> BTreeMap<String, String> {
        let mut props = if producer {
            self.producer.0.clone()
        } else {
            self.consumer.0.clone()
        };
        for (key, secret) in [
            ("sasl.password", &self.sasl_password),
            ("ssl.key.password", &self.ssl_key_password),
        ] {
            if !secret.is_empty() {
                props.entry(key.into()).or_insert_with(|| secret.expose().to_string());
            }
        }
        props
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: "identify-connector".into(),
            input_topics: Vec::new(),
            output_topic: String::new(),
            dead_letter_topic: String::new(),
            max_in_flight: 20_000,
            max_in_flight_bytes: 64 << 20,
            commit_interval: Duration::from_secs(1),
            rebalance_drain_timeout: Duration::from_secs(10),
            instance_id: String::new(),
            exactly_once: false,
            sasl_password: Secret::default(),
            ssl_key_password: Secret::default(),
            consumer: Properties::default(),
            producer: Properties::default(),
        }
    }
}

/// How input record values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// A JSON document; the identifier sits at `input.field`.
    Json,
    /// The whole value, as UTF-8 text, is the identifier.
    Text,
    /// The Confluent wire format (Avro, JSON Schema or Protobuf, by the
    /// schema's type, fetched by id from `[schema_registry]`); the
    /// identifier sits at `input.field` of the decoded record.
    Registry,
}

/// Which identifier type input records carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierTypeSetting {
    /// Business emails.
    BusinessEmail,
    /// Professional-network profile URLs.
    ProfileUrl,
    /// Decided per record: an `http(s)://` URL is a profile URL, anything
    /// else is an email.
    Auto,
}

impl IdentifierTypeSetting {
    /// The fixed type, or `None` for `auto`.
    pub(crate) fn fixed(self) -> Option<IdentifierType> {
        match self {
            Self::BusinessEmail => Some(IdentifierType::BusinessEmail),
            Self::ProfileUrl => Some(IdentifierType::ProfileUrl),
            Self::Auto => None,
        }
    }
}

/// `[input]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// `json` (default) or `text`.
    pub format: InputFormat,
    /// JSON pointer to the identifier. Default `/email`.
    pub field: String,
    /// `business_email` (default), `profile_url` or `auto`.
    pub identifier_type: IdentifierTypeSetting,
    /// Larger values are dead-lettered as `oversized`. Default 65536.
    pub max_value_bytes: usize,
}

impl Default for InputConfig {
    fn default() -> Self {
        Self {
            format: InputFormat::Json,
            field: "/email".into(),
            identifier_type: IdentifierTypeSetting::BusinessEmail,
            max_value_bytes: 65_536,
        }
    }
}

/// `[batch]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Unique identifiers per job, 1 to 300. Default 300.
    pub max_size: usize,
    /// Time after a batch's first record before it is submitted. Default `2s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub linger: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_size: API_MAX_BATCH,
            linger: Duration::from_secs(2),
        }
    }
}

/// `[api]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Base URL. Default `https://api.crustdata.com`.
    pub base_url: String,
    /// The API key; prefer the `CRUSTDATA_API_KEY` environment variable.
    pub key: Secret,
    /// Jobs active at once (submitted, results not yet published). Default 5.
    pub max_active_jobs: usize,
    /// Requests per minute across all endpoints. Default 600 (5 jobs of 2 s
    /// need about 9 requests a second).
    pub requests_per_minute: u32,
    /// A job not finished within this is abandoned and resubmitted. Default `30m`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub job_timeout: Duration,
    /// Timeout of each HTTP request. Default `30s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub request_timeout: Duration,
    /// How far the API's clock (its `created_at`) and the clocks of the
    /// pods may disagree. A submit whose answer was lost is called never
    /// created only by a listing that started this long after the request
    /// could still have created a job. Default `5s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub clock_skew: Duration,
    /// First status poll after a submit (until durations are learnt). Default `1s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub poll_initial: Duration,
    /// Longest wait between two status polls. Default `30s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub poll_max: Duration,
    /// Attempts of one request before a job attempt is given up. Default 8.
    pub max_request_retries: u32,
    /// Longest backoff between two request retries. Default `60s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub max_backoff: Duration,
    /// Job submissions for the same identifiers before they are dead-lettered
    /// as `job_failed`. Default 3.
    pub max_job_attempts: u32,
    /// Largest result file accepted, compressed and decompressed. Default 256 MiB.
    pub max_result_bytes: u64,
    /// Hosts result files may be downloaded from; `*.` prefixes match
    /// subdomains. Empty (default): the host of `base_url` and
    /// `*.amazonaws.com`.
    pub download_allowed_hosts: Vec<String>,
    /// Allow a plain `http` base URL to a host that is not the loopback
    /// (the API key would cross the network in clear). Default false.
    pub allow_insecure_http: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.crustdata.com".into(),
            key: Secret::default(),
            max_active_jobs: 5,
            requests_per_minute: 600,
            job_timeout: Duration::from_secs(30 * 60),
            request_timeout: Duration::from_secs(30),
            clock_skew: Duration::from_secs(5),
            poll_initial: Duration::from_secs(1),
            poll_max: Duration::from_secs(30),
            max_request_retries: 8,
            max_backoff: Duration::from_secs(60),
            max_job_attempts: 3,
            max_result_bytes: 256 << 20,
            download_allowed_hosts: Vec::new(),
            allow_insecure_http: false,
        }
    }
}

/// `[webhook]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Public base URL under which `/webhooks/crustdata/{token}` reaches this
    /// service. Empty (default): completion by polling only.
    pub public_url: String,
    /// Poll interval while waiting for a callback. Default `60s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub fallback_poll_interval: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            public_url: String::new(),
            fallback_poll_interval: Duration::from_secs(60),
        }
    }
}

/// `[cache]`: the result store (a compacted topic, tailed by every pod
/// into a local store on disk, with a hot set in memory).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// The compacted topic holding every resolved identifier and the job
    /// journal. Default: `<kafka.group_id>.identify-cache`.
    pub topic: String,
    /// How long a resolved identifier is reused. `0s`: never (the journal
    /// still prevents paying twice for an accepted job). Default `24h`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub ttl: Duration,
    /// Bytes of results kept in memory (the hot set). Default 16 MiB.
    pub max_memory_bytes: u64,
    /// Directory of the local store (one process at a time). Default
    /// `identify-cache` (relative to the working directory).
    pub dir: String,
    /// Create the topic (compacted) when missing. Default true.
    pub create_topic: bool,
    /// Partitions of a topic the connector creates. Default 6.
    pub partitions: i32,
    /// Replication factor of a topic the connector creates; -1 is the
    /// broker's default. Default -1.
    pub replication_factor: i32,
}

impl CacheConfig {
    /// The store topic's name.
    pub fn topic_name(&self, kafka: &KafkaConfig) -> String {
        if self.topic.is_empty() {
            format!("{}.identify-cache", kafka.group_id)
        } else {
            self.topic.clone()
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            topic: String::new(),
            ttl: Duration::from_secs(24 * 3600),
            max_memory_bytes: 16 << 20,
            dir: "identify-cache".into(),
            create_topic: true,
            partitions: 6,
            replication_factor: -1,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the HTTP server. Default `0.0.0.0:8080`.
    pub listen: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (default) or `json`. Levels come from `RUST_LOG`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
        }
    }
}

/// `[shutdown]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long in-flight jobs may finish after SIGTERM. Default `30s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_reach_both_clients_unless_the_maps_set_them() {
        let mut k = KafkaConfig {
            sasl_password: Secret::new("0123"),
            ssl_key_password: Secret::new("key-pw"),
            ..KafkaConfig::default()
        };
        k.producer.insert("sasl.password".into(), "explicit".into());
        let consumer = k.client_properties(false);
        assert_eq!(consumer.get("sasl.password").map(String::as_str), Some("0123"));
        assert_eq!(consumer.get("ssl.key.password").map(String::as_str), Some("key-pw"));
        let producer = k.client_properties(true);
        assert_eq!(producer.get("sasl.password").map(String::as_str), Some("explicit"));
        assert!(KafkaConfig::default().client_properties(false).is_empty());
    }
}
