//! Logging: tracing to stderr, JSON or human-readable by `[log] format`,
//! levels from `RUST_LOG` (default `info`); beside it, with telemetry on,
//! the layer that exports the trace spans ([`crate::telemetry`]). The API
//! key is never logged: it lives in a type whose `Debug` is redacted and in
//! a header marked sensitive.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::LogFormat;
use crate::telemetry::Telemetry;

/// Installs the global subscriber (with `telemetry`'s layer when given); a
/// second call is a no-op.
pub fn init(format: LogFormat, telemetry: Option<&Telemetry>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt.json().flatten_event(true).with_filter(filter).boxed(),
        LogFormat::Text => fmt.with_filter(filter).boxed(),
    };
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![fmt];
    if let Some(t) = telemetry {
        layers.push(t.layer().boxed());
    }
    let _ = tracing_subscriber::registry().with(layers).try_init();
}
