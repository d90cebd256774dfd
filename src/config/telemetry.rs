//! `[telemetry]`: OpenTelemetry traces of jobs and traced records, exported
//! over OTLP/HTTP (protobuf). Off unless an endpoint is set here or in the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` /
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variables.

use serde::Deserialize;

use super::validate::Problems;

/// `[telemetry]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318`
    /// (spans go to `/v1/traces` under it). Empty (default): traces are off
    /// unless the `OTEL_EXPORTER_OTLP_*ENDPOINT` variables name one.
    pub otlp_endpoint: String,
    /// The share of jobs traced, 0 to 1 (default 1). A record whose
    /// `traceparent` is sampled is traced whatever the ratio.
    pub sample_ratio: f64,
    /// `service.name` of the spans (`OTEL_SERVICE_NAME` overrides it).
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            sample_ratio: 1.0,
            service_name: "identify-connector".into(),
        }
    }
}

impl TelemetryConfig {
    pub(super) fn validate(&self, p: &mut Problems) {
        p.need(
            (0.0..=1.0).contains(&self.sample_ratio),
            format!("telemetry.sample_ratio: {} must be between 0 and 1", self.sample_ratio),
        );
        p.need(
            !self.service_name.trim().is_empty(),
            "telemetry.service_name must not be empty",
        );
        if !self.otlp_endpoint.is_empty() {
            let ok = url::Url::parse(&self.otlp_endpoint)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            p.need(
                ok,
                format!(
                    "telemetry.otlp_endpoint: {:?} must be an http(s) URL such as \"http://127.0.0.1:4318\"",
                    self.otlp_endpoint
                ),
            );
        }
    }
}
