//! Health: the liveness and readiness flags that the stages set and the
//! HTTP server reports (`/healthz`, `/readyz`).

use std::sync::atomic::{AtomicBool, Ordering};

/// Liveness and readiness flags, set by the pipeline.
#[derive(Debug, Default)]
pub(crate) struct Health {
    joined: AtomicBool,
    api_accepted: AtomicBool,
    api_refused: AtomicBool,
    failed: AtomicBool,
}

impl Health {
    /// The consumer has (or no longer has) an assignment in its group.
    pub(crate) fn set_joined(&self, v: bool) {
        self.joined.store(v, Ordering::Relaxed);
    }
    /// The API refused (true) or accepted (false) the key.
    pub(crate) fn set_api_refused(&self, refused: bool) {
        self.api_refused.store(refused, Ordering::Relaxed);
        if !refused {
            self.api_accepted.store(true, Ordering::Relaxed);
        }
    }
    /// The API currently refuses the key.
    pub(crate) fn api_refused(&self) -> bool {
        self.api_refused.load(Ordering::Relaxed)
    }
    /// The API has accepted the key at least once and does not refuse it now.
    pub(crate) fn api_ok(&self) -> bool {
        self.api_accepted.load(Ordering::Relaxed) && !self.api_refused()
    }
    /// A pipeline task died: liveness fails so the pod restarts.
    pub(crate) fn set_failed(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }
    /// Liveness.
    pub(crate) fn live(&self) -> bool {
        !self.failed.load(Ordering::Relaxed)
    }
    /// Readiness.
    pub(crate) fn ready(&self) -> bool {
        self.live() && self.joined.load(Ordering::Relaxed) && self.api_ok()
    }
}
