//! This pod's member record in the store topic: what the other pods need
//! to compute the same split of the key's slots ([`crate::share`]). It is
//! written about once a second, at most every [`MIN_GAP`] when the pod's
//! status changes, and removed (a tombstone) when the pod stops. Each
//! acknowledged record renews the pod's lease on the jobs it owns
//! ([`Team::lease_ok`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::writer::Writer;
use super::{now_ms, record};
use crate::share::{Team, HEARTBEAT};

/// Status changes closer than this share one record.
const MIN_GAP: Duration = Duration::from_millis(50);

/// Starts writing `team`'s own member record.
pub(super) fn spawn(writer: Arc<Writer>, team: Arc<Team>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let key = record::member_key(team.me());
        loop {
            // The next record supersedes a lost one; an acknowledged one
            // renews this pod's lease on the jobs it owns.
            let sent = std::time::Instant::now();
            if let Ok(ack) = writer.send_now(&key, Some(&record::encode_member(team.own(), now_ms()))) {
                let team = team.clone();
                tokio::spawn(async move {
                    if let Ok(Ok(_)) = ack.await {
                        team.renew_lease(sent);
                    }
                });
            }
            tokio::select! {
                _ = team.own_changed.notified() => tokio::time::sleep(MIN_GAP).await,
                _ = tokio::time::sleep(HEARTBEAT) => {}
            }
        }
    })
}

/// Stops `task` and removes the member record: the others take over its
/// slots at once instead of after [`crate::share::EXPIRY`].
pub(super) fn leave(writer: &Writer, team: &Team, task: &JoinHandle<()>) {
    task.abort();
    let _ = writer.send_now(&record::member_key(team.me()), None);
}
