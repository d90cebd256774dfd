//! [`ConfigPatch`], the JSON body of `POST /_sim/config`: the runtime knobs to
//! change, checked ([`ConfigPatch::validate`]) before anything is applied.

use serde::{Deserialize, Deserializer};

use super::{JobTimeModel, JsonDuration, SimConfig, Variants};

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
    /// See [`SimConfig::job_time_model`]: `"fixed"` or `"realistic"`.
    pub job_time_model: Option<JobTimeModel>,
    /// See [`SimConfig::unknown_rate`].
    pub unknown_rate: Option<f64>,
    /// See [`SimConfig::retrieval_median`].
    pub retrieval_median: Option<JsonDuration>,
    /// See [`SimConfig::retrieval_sigma`].
    pub retrieval_sigma: Option<f64>,
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
    /// See [`SimConfig::cut_response_rate`].
    pub cut_response_rate: Option<f64>,
    /// See [`SimConfig::slow_response_rate`].
    pub slow_response_rate: Option<f64>,
    /// See [`SimConfig::slow_response`].
    pub slow_response: Option<JsonDuration>,
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
            ("cut_response_rate", self.cut_response_rate),
            ("slow_response_rate", self.slow_response_rate),
            ("unknown_rate", self.unknown_rate),
            ("variants.undated_rate", self.variants.as_ref().map(|v| v.undated_rate)),
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
        if let Some(s) = self.retrieval_sigma {
            if !s.is_finite() || !(0.0..=10.0).contains(&s) {
                return Err(format!("retrieval_sigma must be within 0..=10, got {s}"));
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
            cut_response_rate,
            slow_response_rate,
            job_time_model,
            unknown_rate,
            retrieval_sigma,
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
            retrieval_median,
            jitter,
            link_ttl,
            job_retention,
            webhook_delay,
            webhook_timeout,
            slow_download,
            slow_response,
            request_latency_min,
            request_latency_max
        );
    }
}
