//! Simulator configuration: every knob of [`SimConfig`] with defaults that
//! model the real Crustdata API, plus [`ConfigPatch`], the JSON patch accepted
//! by `POST /_sim/config` to change the runtime knobs of a running simulator.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

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
    /// Added once when any identifier is unknown (real-time retrieval). Default 3 s.
    pub retrieval_time: Duration,
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
}

impl Default for Variants {
    fn default() -> Self {
        Variants {
            numeric_timestamps: false,
            string_counts: false,
            status_words: ["pending", "processing", "completed", "failed"].map(String::from),
            relative_links: false,
            link_delay: Duration::ZERO,
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

/// Distinguishes an absent field from an explicit `null` (used for `credit_balance`).
fn some_nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Patch of runtime-changeable knobs, the body of `POST /_sim/config`.
/// Absent fields are left unchanged; unknown fields are rejected.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigPatch {
    /// Replace the accepted keys.
    pub api_keys: Option<Vec<String>>,
    /// Add keys to the accepted ones.
    pub add_api_keys: Option<Vec<String>>,
    /// Required `x-api-version` value.
    pub api_version: Option<String>,
    /// Maximum identifiers per submit.
    pub max_identifiers: Option<usize>,
    /// Maximum active jobs per key.
    pub max_active_jobs: Option<usize>,
    /// Requests per minute per key and endpoint (0 = off).
    pub requests_per_minute: Option<u32>,
    /// Credits per key; `null` = unlimited.
    #[serde(default, deserialize_with = "some_nullable")]
    pub credit_balance: Option<Option<u64>>,
    /// See [`SimConfig::pending_time`].
    pub pending_time: Option<JsonDuration>,
    /// See [`SimConfig::base_time`].
    pub base_time: Option<JsonDuration>,
    /// See [`SimConfig::per_identifier_time`].
    pub per_identifier_time: Option<JsonDuration>,
    /// See [`SimConfig::retrieval_time`].
    pub retrieval_time: Option<JsonDuration>,
    /// See [`SimConfig::jitter`].
    pub jitter: Option<JsonDuration>,
    /// See [`SimConfig::latency_scale`].
    pub latency_scale: Option<f64>,
    /// See [`SimConfig::match_rate`] (applies to later submits).
    pub match_rate: Option<f64>,
    /// See [`SimConfig::lines_per_part`].
    pub lines_per_part: Option<usize>,
    /// See [`SimConfig::link_ttl`].
    pub link_ttl: Option<JsonDuration>,
    /// See [`SimConfig::job_retention`].
    pub job_retention: Option<JsonDuration>,
    /// See [`SimConfig::webhook_delay`].
    pub webhook_delay: Option<JsonDuration>,
    /// See [`SimConfig::webhook_drop_rate`].
    pub webhook_drop_rate: Option<f64>,
    /// See [`SimConfig::webhook_on_processing`].
    pub webhook_on_processing: Option<bool>,
    /// See [`SimConfig::webhook_timeout`].
    pub webhook_timeout: Option<JsonDuration>,
    /// See [`SimConfig::error_rate_submit`].
    pub error_rate_submit: Option<f64>,
    /// See [`SimConfig::lost_response_rate`].
    pub lost_response_rate: Option<f64>,
    /// See [`SimConfig::request_latency_min`].
    pub request_latency_min: Option<JsonDuration>,
    /// See [`SimConfig::request_latency_max`].
    pub request_latency_max: Option<JsonDuration>,
    /// See [`SimConfig::error_rate_poll`].
    pub error_rate_poll: Option<f64>,
    /// See [`SimConfig::error_rate_download`].
    pub error_rate_download: Option<f64>,
    /// See [`SimConfig::error_rate_list`].
    pub error_rate_list: Option<f64>,
    /// See [`SimConfig::job_failure_rate`].
    pub job_failure_rate: Option<f64>,
    /// See [`SimConfig::corrupt_rate`].
    pub corrupt_rate: Option<f64>,
    /// See [`SimConfig::truncate_rate`].
    pub truncate_rate: Option<f64>,
    /// See [`SimConfig::missing_line_rate`].
    pub missing_line_rate: Option<f64>,
    /// See [`SimConfig::expired_link_rate`].
    pub expired_link_rate: Option<f64>,
    /// See [`SimConfig::slow_download`].
    pub slow_download: Option<JsonDuration>,
    /// See [`SimConfig::refuse_submits_status`].
    pub refuse_submits_status: Option<u16>,
    /// See [`SimConfig::refuse_submits_message`].
    pub refuse_submits_message: Option<String>,
    /// See [`SimConfig::variants`].
    pub variants: Option<Variants>,
}

impl ConfigPatch {
    /// Checks value ranges (rates in 0..=1, non-negative finite scale).
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("match_rate", self.match_rate),
            ("webhook_drop_rate", self.webhook_drop_rate),
            ("error_rate_submit", self.error_rate_submit),
            ("lost_response_rate", self.lost_response_rate),
            ("error_rate_poll", self.error_rate_poll),
            ("error_rate_download", self.error_rate_download),
            ("error_rate_list", self.error_rate_list),
            ("job_failure_rate", self.job_failure_rate),
            ("corrupt_rate", self.corrupt_rate),
            ("truncate_rate", self.truncate_rate),
            ("missing_line_rate", self.missing_line_rate),
            ("expired_link_rate", self.expired_link_rate),
        ];
        for (name, value) in rates {
            if let Some(v) = value {
                if !(0.0..=1.0).contains(&v) {
                    return Err(format!("{name} must be within 0..=1, got {v}"));
                }
            }
        }
        if let Some(s) = self.latency_scale {
            if !s.is_finite() || s < 0.0 {
                return Err(format!("latency_scale must be finite and >= 0, got {s}"));
            }
        }
        if self.lines_per_part == Some(0) {
            return Err("lines_per_part must be >= 1".to_string());
        }
        Ok(())
    }

    /// Applies the patch to `cfg`.
    pub fn apply(self, cfg: &mut SimConfig) {
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { cfg.$field = v; } )* };
        }
        macro_rules! set_dur {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { cfg.$field = v.0; } )* };
        }
        if let Some(keys) = self.api_keys {
            cfg.api_keys = keys;
        }
        if let Some(keys) = self.add_api_keys {
            for k in keys {
                if !cfg.api_keys.contains(&k) {
                    cfg.api_keys.push(k);
                }
            }
        }
        set!(
            api_version,
            max_identifiers,
            max_active_jobs,
            requests_per_minute,
            credit_balance,
            latency_scale,
            match_rate,
            lines_per_part,
            webhook_drop_rate,
            webhook_on_processing,
            error_rate_submit,
            lost_response_rate,
            error_rate_poll,
            error_rate_download,
            error_rate_list,
            job_failure_rate,
            corrupt_rate,
            truncate_rate,
            missing_line_rate,
            expired_link_rate,
            refuse_submits_status,
            refuse_submits_message,
            variants
        );
        set_dur!(
            pending_time,
            base_time,
            per_identifier_time,
            retrieval_time,
            jitter,
            link_ttl,
            job_retention,
            webhook_delay,
            webhook_timeout,
            slow_download,
            request_latency_min,
            request_latency_max
        );
    }
}
