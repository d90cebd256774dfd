//! The API-key probe: confirms the key at start-up (`GET /batch?limit=1`)
//! so that readiness does not wait for traffic.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::api::{ApiClient, ErrorClass};
use crate::health::Health;

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
                health.set_api_refused(false);
                info!("the API accepts the key");
                return;
            }
            Err(e) if e.class() == ErrorClass::Auth => {
                health.set_api_refused(true);
                warn!(error = %e, "the API refuses the key; the service stays unready");
            }
            Err(e) => warn!(error = %e, "API key probe failed; retrying"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}
