//! The sweep of expired entries from the local store: off the tail's
//! thread (member records and journal records never wait behind it), in
//! short steps that each hold redb's write lock briefly, every
//! [`SWEEP_EVERY`]. Kafka's retention removes the same entries from the
//! topic.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::disk::{Disk, Table};
use super::record;

/// How often the whole local store is swept.
const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// Entries scanned per step.
const STEP: usize = 5_000;
/// The pause between two steps (the tail's transactions go in between).
const BETWEEN_STEPS: Duration = Duration::from_millis(20);
/// Journal records live as long as the topic keeps them (TTL plus an hour).
const JOB_EXTRA: Duration = Duration::from_secs(3600);

/// Starts sweeping `disk` of entries older than `ttl`.
pub(super) fn spawn(disk: Arc<Disk>, ttl: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            let mut removed = 0;
            for (table, keep) in [(Table::Results, ttl), (Table::Jobs, ttl + JOB_EXTRA)] {
                let mut after: Option<String> = None;
                loop {
                    let disk = disk.clone();
                    let from = after.clone();
                    let step = tokio::task::spawn_blocking(move || {
                        let now = chrono::Utc::now().timestamp_millis();
                        disk.sweep_step(table, from.as_deref(), STEP, |v| record::expired(v, keep, now))
                    })
                    .await;
                    match step {
                        Ok(Ok((n, next))) => {
                            removed += n;
                            match next {
                                Some(k) => after = Some(k),
                                None => break,
                            }
                        }
                        Ok(Err(e)) => {
                            warn!(error = %e, "sweeping the local store failed; trying again later");
                            break;
                        }
                        Err(_) => return,
                    }
                    tokio::time::sleep(BETWEEN_STEPS).await;
                }
            }
            if removed > 0 {
                info!(removed, "expired store entries removed");
            }
        }
    })
}
