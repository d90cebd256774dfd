//! Webhooks: when a job with a `webhook_url` finishes (and, with
//! `webhook_on_processing`, when it starts processing), POST its status object
//! after `webhook_delay`, signed with `x-crustdata-signature`, maybe dropped
//! (`webhook_drop_rate`), with a bounded timeout and no retries.

use std::sync::Arc;
use std::time::Instant;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::jobs::Finished;
use super::server::Shared;
use super::view::status_json;

/// Name of the signature header on webhook requests.
pub const SIGNATURE_HEADER: &str = "x-crustdata-signature";

/// The `x-crustdata-signature` value: `t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
/// keyed by the job's API key.
pub fn webhook_signature(api_key: &str, unix_time: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(api_key.as_bytes()).expect("HMAC accepts any key length");
    mac.update(unix_time.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={unix_time},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Logs finished (or, with `webhook_on_processing`, started) jobs and
/// sends the webhooks of those that asked for one.
pub(crate) fn dispatch(shared: &Arc<Shared>, finished: Vec<Finished>) {
    if finished.is_empty() {
        return;
    }
    let cfg = shared.config();
    let now = Instant::now();
    for Finished { job } in finished {
        tracing::debug!(batch_id = %job.id, status = job.status(now), "job changed");
        let Some(url) = job.webhook_url.clone() else {
            continue;
        };
        let body = status_json(shared, &cfg, &job, now).to_string();
        let shared = shared.clone();
        let key = job.key.clone();
        tokio::spawn(async move {
            let cfg = shared.config();
            if !cfg.webhook_delay.is_zero() {
                tokio::time::sleep(cfg.webhook_delay).await;
            }
            let drop_rate = shared.config().webhook_drop_rate;
            let dropped = {
                let mut store = shared.store.lock().expect("store lock");
                let dropped = store.chance(drop_rate);
                store.stats.webhooks_dropped += u64::from(dropped);
                dropped
            };
            if dropped {
                tracing::debug!(batch_id = %job.id, "webhook dropped (fault injection)");
                return;
            }
            let t = chrono::Utc::now().timestamp();
            let signature = webhook_signature(&key, t, body.as_bytes());
            let result = shared
                .http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, signature)
                .timeout(cfg.webhook_timeout)
                .body(body)
                .send()
                .await;
            let ok = match &result {
                Ok(resp) if resp.status().is_success() => true,
                Ok(resp) => {
                    tracing::warn!(batch_id = %job.id, status = %resp.status(), "webhook rejected");
                    false
                }
                Err(e) => {
                    tracing::warn!(batch_id = %job.id, error = %e, "webhook failed");
                    false
                }
            };
            let mut store = shared.store.lock().expect("store lock");
            if ok {
                store.stats.webhooks_sent += 1;
            } else {
                store.stats.webhooks_failed += 1;
            }
        });
    }
}
