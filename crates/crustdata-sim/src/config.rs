//! Simulator configuration: every knob of [`SimConfig`] with defaults that
//! model the real Crustdata API, plus [`ConfigPatch`], the JSON patch accepted
//! by `POST /_sim/config` to change the runtime knobs of a running simulator.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

mod patch;

pub use crate::timing::JobTimeModel;
pub use patch::ConfigPatch;

/// The API version the real service requires on submits.
pub const API_VERSION: &str = "2025-11-01";

/// Every knob of the simulator. `Default` models the real API.
///
/// Latency knobs are fixed per job when it is submitted (changing them at
/// runtime affects only later submits); fault rates, keys, limits and credit
/// balances take effect on the next request.
#[derive(Clone)]
pub struct SimConfig {
    /// Address to bind; port 0 picks a free port. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Base URL used in `download_url`s (e.g. behind a proxy). Default: the
    /// bound address (`http://127.0.0.1:PORT`).
    pub public_url: Option<String>,
    /// Accepted API keys. Default: empty (every API request gets 401).
    pub api_keys: Vec<String>,
    /// Value required in `x-api-version` on submits. Default `2025-11-01`.
    pub api_version: String,
    /// Maximum identifiers per submit. Default 300.
    pub max_identifiers: usize,
    /// Maximum active (pending or processing) jobs per key. Default 5.
    pub max_active_jobs: usize,
    /// Request-rate limit per key and endpoint per minute; 0 = off (default).
    pub requests_per_minute: u32,
    /// Latency added to every answer (API and downloads), uniform in
    /// `[request_latency_min, request_latency_max]`, after the request was
    /// handled (a submit's job exists while its answer is on the wire).
    /// Default 0.
    pub request_latency_min: Duration,
    /// See [`SimConfig::request_latency_min`].
    pub request_latency_max: Duration,
    /// Credits each key may spend in total; `None` = unlimited (default).
    pub credit_balance: Option<u64>,
    /// Time a job stays `pending` before `processing`. Default 300 ms.
    pub pending_time: Duration,
    /// Fixed part of a job's duration. Default 2 s.
    pub base_time: Duration,
    /// Added per submitted identifier. Default 5 ms.
    pub per_identifier_time: Duration,
    /// Added once when any identifier is unknown (real-time retrieval), in
    /// the `fixed` model. Default 3 s.
    pub retrieval_time: Duration,
    /// How job durations are drawn: `fixed` (default) or `realistic`; see
    /// [`JobTimeModel`].
    pub job_time_model: JobTimeModel,
    /// `realistic` model: probability that an identifier is not already known
    /// to the vendor and needs real-time retrieval (decided from the
    /// identifier's hash and the seed). Default 0.01.
    pub unknown_rate: f64,
    /// `realistic` model: median retrieval time of an unknown identifier. Default 60 s.
    pub retrieval_median: Duration,
    /// `realistic` model: sigma of the log-normal retrieval time. Default 1.0.
    pub retrieval_sigma: f64,
    /// Uniform random extra duration in `[0, jitter]`. Default 500 ms.
    pub jitter: Duration,
    /// Multiplier applied to every job duration; 0 = instant. Default 1.0.
    pub latency_scale: f64,
    /// Seed of the deterministic directory and of the fault RNG. Default 42.
    pub seed: u64,
    /// Fraction of unknown identifiers that resolve to a person. Default 0.7.
    pub match_rate: f64,
    /// Optional JSONL file of known people (always matched). Read at start.
    pub directory: Option<PathBuf>,
    /// Maximum lines per `download_urls` part. Default 1000.
    pub lines_per_part: usize,
    /// Validity of pre-signed download links. Default 5 days.
    pub link_ttl: Duration,
    /// How long finished jobs are remembered. Default 1 h.
    pub job_retention: Duration,
    /// Delay before a webhook is sent. Default 0.
    pub webhook_delay: Duration,
    /// Probability that a webhook is silently not sent. Default 0.
    pub webhook_drop_rate: f64,
    /// Also call a job's webhook when it moves to `processing` (an API that
    /// calls back on every change, not only at the end). Default false.
    pub webhook_on_processing: bool,
    /// Timeout of one webhook POST. Default 5 s.
    pub webhook_timeout: Duration,
    /// Period of the background task that completes jobs. Default 25 ms.
    pub sweep_interval: Duration,
    /// Probability of an injected 500 on submit (no job is created). Default 0.
    pub error_rate_submit: f64,
    /// Probability that an accepted submit's answer is lost: the job is
    /// created (and billed when it completes), the client gets a 504.
    /// Default 0.
    pub lost_response_rate: f64,
    /// Probability that an accepted submit's connection is cut: the job is
    /// created, the client gets a transport error instead of an answer.
    /// Default 0.
    pub cut_response_rate: f64,
    /// Probability that an accepted submit's (normal) answer is delayed by
    /// [`SimConfig::slow_response`]: the job exists at once, a client with a
    /// shorter timeout gives up. Default 0.
    pub slow_response_rate: f64,
    /// Delay of a slow answer (`slow_response_rate`). Default 60 s.
    pub slow_response: Duration,
    /// Probability of an injected 500 on poll. Default 0.
    pub error_rate_poll: f64,
    /// Probability of an injected 500 on download. Default 0.
    pub error_rate_download: f64,
    /// Probability of an injected 500 on list. Default 0.
    pub error_rate_list: f64,
    /// Probability that a job ends `failed`. Default 0.
    pub job_failure_rate: f64,
    /// Probability that a download returns garbled (invalid gzip) bytes. Default 0.
    pub corrupt_rate: f64,
    /// Probability that a download's gzip stream is cut short. Default 0.
    pub truncate_rate: f64,
    /// Probability that a download silently omits one result line. Default 0.
    pub missing_line_rate: f64,
    /// Probability that a download answers 403 "Request has expired". Default 0.
    pub expired_link_rate: f64,
    /// Spread every download body over this duration (trickle); 0 = off.
    pub slow_download: Duration,
    /// Answer every submit with this status (after authentication and the
    /// version check) and [`SimConfig::refuse_submits_message`], as an
    /// account-level refusal or a gateway in the way would; 0 = off.
    pub refuse_submits_status: u16,
    /// The message of refused submits.
    pub refuse_submits_message: String,
    /// How job views are written: variants the vendor does not rule out.
    pub variants: Variants,
}

/// Plausible variants of the API's job views (poll, list, webhook).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Variants {
    /// `created_at` and `completed_at` as Unix seconds (numbers).
    pub numeric_timestamps: bool,
    /// `identifier_count` and `result_count` as strings.
    pub string_counts: bool,
    /// The status words for pending, processing, completed and failed.
    pub status_words: [String; 4],
    /// `download_url(s)` as paths relative to the API's base URL.
    pub relative_links: bool,
    /// A completed job shows neither links nor `result_count` until this
    /// long after it completed.
    #[serde(deserialize_with = "duration_field")]
    pub link_delay: Duration,
    /// Probability that a job's views carry no `created_at`, decided per job
    /// from its id and the seed (a job is always dated or always undated).
    pub undated_rate: f64,
}

impl Default for Variants {
    fn default() -> Self {
        Variants {
            numeric_timestamps: false,
            string_counts: false,
            status_words: ["pending", "processing", "completed", "failed"].map(String::from),
            relative_links: false,
            link_delay: Duration::ZERO,
            undated_rate: 0.0,
        }
    }
}

fn duration_field<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    JsonDuration::deserialize(d).map(|j| j.0)
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: None,
            api_keys: Vec::new(),
            api_version: API_VERSION.to_string(),
            max_identifiers: 300,
            max_active_jobs: 5,
            requests_per_minute: 0,
            credit_balance: None,
            request_latency_min: Duration::ZERO,
            request_latency_max: Duration::ZERO,
            pending_time: Duration::from_millis(300),
            base_time: Duration::from_secs(2),
            per_identifier_time: Duration::from_millis(5),
            retrieval_time: Duration::from_secs(3),
            job_time_model: JobTimeModel::Fixed,
            unknown_rate: 0.01,
            retrieval_median: Duration::from_secs(60),
            retrieval_sigma: 1.0,
            jitter: Duration::from_millis(500),
            latency_scale: 1.0,
            seed: 42,
            match_rate: 0.7,
            directory: None,
            lines_per_part: 1000,
            link_ttl: Duration::from_secs(5 * 24 * 3600),
            job_retention: Duration::from_secs(3600),
            webhook_delay: Duration::ZERO,
            webhook_drop_rate: 0.0,
            webhook_on_processing: false,
            webhook_timeout: Duration::from_secs(5),
            sweep_interval: Duration::from_millis(25),
            error_rate_submit: 0.0,
            lost_response_rate: 0.0,
            cut_response_rate: 0.0,
            slow_response_rate: 0.0,
            slow_response: Duration::from_secs(60),
            error_rate_poll: 0.0,
            error_rate_download: 0.0,
            error_rate_list: 0.0,
            job_failure_rate: 0.0,
            corrupt_rate: 0.0,
            truncate_rate: 0.0,
            missing_line_rate: 0.0,
            expired_link_rate: 0.0,
            slow_download: Duration::ZERO,
            refuse_submits_status: 0,
            refuse_submits_message: "submits refused".to_string(),
            variants: Variants::default(),
        }
    }
}

impl fmt::Debug for SimConfig {
    /// Like a derived `Debug`, but API keys are redacted (only their count is shown).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("listen", &self.listen)
            .field("public_url", &self.public_url)
            .field("api_keys", &format_args!("<{} redacted>", self.api_keys.len()))
            .field("api_version", &self.api_version)
            .field("max_identifiers", &self.max_identifiers)
            .field("max_active_jobs", &self.max_active_jobs)
            .field("requests_per_minute", &self.requests_per_minute)
            .field("credit_balance", &self.credit_balance)
            .field("pending_time", &self.pending_time)
            .field("base_time", &self.base_time)
            .field("per_identifier_time", &self.per_identifier_time)
            .field("retrieval_time", &self.retrieval_time)
            .field("job_time_model", &self.job_time_model)
            .field("unknown_rate", &self.unknown_rate)
            .field("retrieval_median", &self.retrieval_median)
            .field("retrieval_sigma", &self.retrieval_sigma)
            .field("jitter", &self.jitter)
            .field("latency_scale", &self.latency_scale)
            .field("seed", &self.seed)
            .field("match_rate", &self.match_rate)
            .field("directory", &self.directory)
            .field("lines_per_part", &self.lines_per_part)
            .field("link_ttl", &self.link_ttl)
            .field("job_retention", &self.job_retention)
            .field("webhook_delay", &self.webhook_delay)
            .field("webhook_drop_rate", &self.webhook_drop_rate)
            .field("webhook_on_processing", &self.webhook_on_processing)
            .field("webhook_timeout", &self.webhook_timeout)
            .field("sweep_interval", &self.sweep_interval)
            .field("refuse_submits_status", &self.refuse_submits_status)
            .field("variants", &self.variants)
            .field("request_latency_min", &self.request_latency_min)
            .field("request_latency_max", &self.request_latency_max)
            .field("error_rate_submit", &self.error_rate_submit)
            .field("lost_response_rate", &self.lost_response_rate)
            .field("cut_response_rate", &self.cut_response_rate)
            .field("slow_response_rate", &self.slow_response_rate)
            .field("slow_response", &self.slow_response)
            .field("error_rate_poll", &self.error_rate_poll)
            .field("error_rate_download", &self.error_rate_download)
            .field("error_rate_list", &self.error_rate_list)
            .field("job_failure_rate", &self.job_failure_rate)
            .field("corrupt_rate", &self.corrupt_rate)
            .field("truncate_rate", &self.truncate_rate)
            .field("missing_line_rate", &self.missing_line_rate)
            .field("expired_link_rate", &self.expired_link_rate)
            .field("slow_download", &self.slow_download)
            .finish()
    }
}

/// Parses a comma-separated list of API keys, trimming blanks and dropping empty items.
pub fn split_keys(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect()
}

/// A JSON duration: a humantime string (`"500ms"`, `"2s"`) or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JsonDuration(pub Duration);

impl<'de> Deserialize<'de> for JsonDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Seconds(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(s) => humantime::parse_duration(s.trim())
                .map(JsonDuration)
                .map_err(serde::de::Error::custom),
            Raw::Seconds(s) => Duration::try_from_secs_f64(s)
                .map(JsonDuration)
                .map_err(serde::de::Error::custom),
        }
    }
}
