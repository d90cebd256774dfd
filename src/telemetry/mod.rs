//! Telemetry: OpenTelemetry traces of jobs and of traced records, exported
//! over OTLP/HTTP (protobuf) when `[telemetry]` or the standard `OTEL_*`
//! variables name a collector; off otherwise, and then no span is made.
//!
//! A job is a root span `job` (attributes `job.id`, `identifiers`,
//! `adopted`, then `attempt`, `batch_id`, `matches`, `credits` and
//! `outcome` as it goes) with a child per API request of its life
//! (`submit`, `poll`, `download`, `list`: retries included, errors as the
//! span's status) and `publish` for handing its results out. A record that
//! carries a W3C `traceparent` header gets a `record` span in that trace
//! (sampled as its parent says), linked to the job that resolved it; its
//! output carries that span's `traceparent`. Records without one make no
//! span (a traced cache hit gets its `record` span, with no job to link).
//!
//! Export never blocks the pipeline ([`export`]): a bounded queue, a thread
//! of its own, and spans that find the queue full are dropped and counted.

mod export;

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Status, TraceContextExt, TracerProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::config::TelemetryConfig;

/// The target of every span made here (the only spans exported).
pub(crate) const TARGET: &str = "identify_connector::trace";

/// Whether spans are made (a tracer is installed).
static ON: AtomicBool = AtomicBool::new(false);

/// How long the last spans may take to leave at shutdown.
const FLUSH: Duration = Duration::from_secs(5);

/// Why traces could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built.
    #[error("telemetry: cannot build the OTLP exporter: {0}")]
    Exporter(String),
}

/// The tracer provider; [`Telemetry::shutdown`] flushes what is queued.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// The collector's traces URL: `[telemetry] otlp_endpoint` + `/v1/traces`,
/// else whatever the `OTEL_EXPORTER_OTLP_*ENDPOINT` variables say (the
/// exporter reads them; `Some(None)`), else off (`None`).
fn endpoint(cfg: &TelemetryConfig) -> Option<Option<String>> {
    if !cfg.otlp_endpoint.is_empty() {
        return Some(Some(format!("{}/v1/traces", cfg.otlp_endpoint.trim_end_matches('/'))));
    }
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    (set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || set("OTEL_EXPORTER_OTLP_ENDPOINT")).then_some(None)
}

impl Telemetry {
    /// Traces as `cfg` asks, or `None` when no collector is named.
    /// `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`
    /// (with its argument), `OTEL_EXPORTER_OTLP_*` (headers, timeout) and
    /// `OTEL_BSP_*` (but the queue size, fixed at 2048) are honoured.
    pub fn init(cfg: &TelemetryConfig) -> Result<Option<Self>, TelemetryError> {
        let Some(url) = endpoint(cfg) else {
            return Ok(None);
        };
        // The exporter's blocking HTTP client runs a runtime of its own:
        // it must be made outside the async runtime.
        let exporter = std::thread::scope(|s| {
            s.spawn(|| {
                let mut b = opentelemetry_otlp::SpanExporter::builder().with_http();
                if let Some(url) = url {
                    use opentelemetry_otlp::WithExportConfig;
                    b = b.with_endpoint(url);
                }
                b.build()
            })
            .join()
        })
        .map_err(|_| TelemetryError::Exporter("the exporter's builder panicked".into()))?
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(cfg.service_name.clone());
        }
        let mut provider = SdkTracerProvider::builder()
            .with_span_processor(export::Bounded::new(exporter))
            .with_resource(resource.build());
        if std::env::var_os("OTEL_TRACES_SAMPLER").is_none() {
            provider = provider.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                cfg.sample_ratio,
            ))));
        }
        ON.store(true, Ordering::Relaxed);
        Ok(Some(Self {
            provider: provider.build(),
        }))
    }

    /// The `tracing` layer that turns this module's spans into
    /// OpenTelemetry spans (and nothing else).
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let tracer = self.provider.tracer("identify-connector");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_tracked_inactivity(false)
            .with_filter(Targets::new().with_target(TARGET, tracing::Level::INFO))
    }

    /// Flushes the spans still queued (at most a few seconds) and stops.
    pub fn shutdown(self) {
        ON.store(false, Ordering::Relaxed);
        let provider = self.provider;
        // Off the async runtime, like the exporter's making.
        let _ = std::thread::spawn(move || provider.shutdown_with_timeout(FLUSH)).join();
    }
}

/// Whether spans are made.
pub(crate) fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The root span of job `id` covering `identifiers` (`adopted`: taken up
/// from the journal); a disabled span when telemetry is off.
pub(crate) fn job(id: &str, identifiers: usize, adopted: bool) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(target: TARGET, parent: None, "job");
    span.set_attribute("job.id", id.to_string());
    span.set_attribute("identifiers", identifiers as i64);
    span.set_attribute("adopted", adopted);
    span
}

/// The span of one API request of the current job (`submit`, `poll`,
/// `download`, `list`), retries included.
pub(crate) fn request(name: &'static str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, "request", otel.name = name)
}

/// The span of publishing job `job`'s results.
pub(crate) fn publish(job: &Span) -> Span {
    if !enabled() || job.is_disabled() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, parent: job, "publish")
}

/// Sets attribute `key` of `span` (nothing when it is disabled).
pub(crate) fn attr(span: &Span, key: &'static str, value: impl Into<opentelemetry::Value>) {
    if !span.is_disabled() {
        span.set_attribute(key, value);
    }
}

/// Marks `span` failed with `error`.
pub(crate) fn failed(span: &Span, error: &dyn Display) {
    if !span.is_disabled() {
        span.set_status(Status::error(error.to_string()));
    }
}

/// The span of a record that carried `traceparent`: a child in its trace,
/// linked to `job` (the job that resolved it, if one did), with how long
/// the record waited. Returns the `traceparent` its output carries; `None`
/// when telemetry is off or the header is not a valid W3C one.
pub(crate) fn record(traceparent: &str, job: Option<&Span>, waited_ms: Option<i64>) -> Option<String> {
    if !enabled() {
        return None;
    }
    let propagator = TraceContextPropagator::new();
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let parent = propagator.extract(&carrier);
    if !parent.span().span_context().is_valid() {
        return None;
    }
    let span = tracing::info_span!(target: TARGET, parent: None, "record");
    let _ = span.set_parent(parent);
    if let Some(job) = job.filter(|j| !j.is_disabled()) {
        let link = job.context().span().span_context().clone();
        if link.is_valid() {
            span.add_link(link);
        }
    }
    if let Some(ms) = waited_ms {
        span.set_attribute("waited_ms", ms);
    }
    let mut out: HashMap<String, String> = HashMap::new();
    propagator.inject_context(&span.context(), &mut out);
    out.remove("traceparent")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_unless_a_collector_is_named() {
        let mut cfg = TelemetryConfig::default();
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
            && std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        {
            assert_eq!(endpoint(&cfg), None);
        }
        cfg.otlp_endpoint = "http://127.0.0.1:4318/".into();
        assert_eq!(endpoint(&cfg), Some(Some("http://127.0.0.1:4318/v1/traces".into())));
    }

    #[test]
    fn without_a_tracer_no_span_is_made() {
        // No test installs a tracer in this binary.
        assert!(job("j", 3, false).is_disabled());
        assert!(request("poll").is_disabled());
        assert_eq!(
            record("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None, None),
            None
        );
    }
}
