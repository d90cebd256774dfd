//! The API-key probe: confirms the key and the base URL at start-up
//! (`GET /batch?limit=1`) so that readiness does not wait for traffic; and
//! the same check for `--check`.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::api::{misrouted, ApiClient, ErrorClass};
use crate::config::Config;
use crate::health::Health;
use crate::metrics::Metrics;

/// Confirms the key at start-up so readiness does not wait for traffic;
/// retries (slowly while the key is refused) until the API accepts it.
pub(super) async fn probe_key(api: Arc<ApiClient>, health: Arc<Health>) {
    let mut wait = Duration::from_secs(1);
    loop {
        if health.api_ok() {
            return;
        }
        match api.probe().await {
            Ok(()) => {
                let _ = health.set_api_refused(false);
                health.set_misrouted(None);
                info!("the API accepts the key");
                return;
            }
            Err(e) if e.class() == ErrorClass::Auth => {
                if health.set_api_refused(true) {
                    warn!(error = %e, "the API refuses the key; the service stays unready");
                }
            }
            Err(e) if misrouted(&e) => {
                health.set_misrouted(Some(e.to_string()));
                warn!(error = %e, "GET /batch is not answered as the API would: is api.base_url right? The service stays unready");
            }
            Err(e) => warn!(error = %e, "API key probe failed; retrying"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// What `--check` finds out about the API: an error for a base URL that is
/// not the API's; a warning (`Ok(Some)`) for a refused key or an API out of
/// reach (the configuration itself is valid).
pub async fn check_api(cfg: &Config) -> Result<Option<String>, String> {
    let mut quick = cfg.api.clone();
    quick.request_timeout = Duration::from_secs(5);
    let api = ApiClient::new(&quick, Arc::new(Metrics::new())).map_err(|e| e.to_string())?;
    match api.probe().await {
        Ok(()) => Ok(None),
        Err(e) if misrouted(&e) => Err(format!(
            "api.base_url: {:?}: GET /batch answered {e}; that is not the API (a path prefix missing or wrong?)",
            cfg.api.base_url
        )),
        Err(e) if e.class() == ErrorClass::Auth => Ok(Some(format!("the API refuses the key: {e}"))),
        Err(e) => Ok(Some(format!(
            "could not reach the API at {} to check it: {e}",
            cfg.api.base_url
        ))),
    }
}
