//! Health: the liveness and readiness flags that the stages set and the
//! HTTP server reports (`/healthz`, `/readyz`, with the reason when not
//! ready).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Liveness and readiness flags, set by the pipeline.
#[derive(Debug, Default)]
pub(crate) struct Health {
    joined: AtomicBool,
    api_accepted: AtomicBool,
    api_refused: AtomicBool,
    failed: AtomicBool,
    restoring: AtomicBool,
    halted: Mutex<Option<String>>,
    misrouted: Mutex<Option<String>>,
    budget: Mutex<Option<String>>,
    registry: Mutex<Option<String>>,
    kafka: Mutex<Option<String>>,
}

impl Health {
    /// The consumer has (or no longer has) an assignment in its group.
    pub(crate) fn set_joined(&self, v: bool) {
        self.joined.store(v, Ordering::Relaxed);
    }
    /// Whether the consumer has had an assignment.
    pub(crate) fn joined(&self) -> bool {
        self.joined.load(Ordering::Relaxed)
    }
    /// The result store is (or no longer is) being restored.
    pub(crate) fn set_restoring(&self, v: bool) {
        self.restoring.store(v, Ordering::Relaxed);
    }
    /// The API refused (true) or accepted (false) the key; returns whether
    /// that changed (so that the change is logged once, not every retry).
    pub(crate) fn set_api_refused(&self, refused: bool) -> bool {
        let was = self.api_refused.swap(refused, Ordering::Relaxed);
        if !refused {
            self.api_accepted.store(true, Ordering::Relaxed);
        }
        was != refused
    }
    /// The API currently refuses the key.
    pub(crate) fn api_refused(&self) -> bool {
        self.api_refused.load(Ordering::Relaxed)
    }
    /// The API has accepted the key at least once and does not refuse it now.
    pub(crate) fn api_ok(&self) -> bool {
        self.api_accepted.load(Ordering::Relaxed) && !self.api_refused()
    }
    /// Submitting halted because the API refuses every request (`Some`:
    /// its message), or resumed (`None`).
    pub(crate) fn set_halted(&self, why: Option<String>) {
        *self.halted.lock().expect("health") = why;
    }
    /// The API's endpoints answer as if `api.base_url` were wrong (`Some`:
    /// what they said), or they answer again (`None`).
    pub(crate) fn set_misrouted(&self, why: Option<String>) {
        *self.misrouted.lock().expect("health") = why;
    }
    /// Submitting halted because the credit budget is spent (`Some`: why
    /// and until when), or resumed (`None`).
    pub(crate) fn set_budget(&self, why: Option<String>) {
        *self.budget.lock().expect("health") = why;
    }
    /// Taking records halted because the schema registry cannot answer
    /// (`Some`: why), or resumed (`None`).
    pub(crate) fn set_registry(&self, why: Option<String>) {
        *self.registry.lock().expect("health") = why;
    }
    /// Kafka acknowledges none of the writes waiting (`Some`: for how
    /// long), or takes them again (`None`).
    pub(crate) fn set_kafka(&self, why: Option<String>) {
        *self.kafka.lock().expect("health") = why;
    }
    /// Whether Kafka is reported not to take writes.
    pub(crate) fn kafka_stalled(&self) -> bool {
        self.kafka.lock().expect("health").is_some()
    }
    /// Why submitting is halted, if it is.
    pub(crate) fn halted(&self) -> Option<String> {
        self.halted.lock().expect("health").clone()
    }
    /// A pipeline task died: liveness fails so the pod restarts.
    pub(crate) fn set_failed(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }
    /// Liveness.
    pub(crate) fn live(&self) -> bool {
        !self.failed.load(Ordering::Relaxed)
    }
    /// Why the service is not ready; `None` when it is.
    pub(crate) fn unready(&self) -> Option<String> {
        if !self.live() {
            return Some("a pipeline task failed".into());
        }
        if self.restoring.load(Ordering::Relaxed) {
            return Some("restoring the result store from its topic".into());
        }
        if let Some(why) = self.misrouted.lock().expect("health").clone() {
            return Some(format!("the API is not at api.base_url: {why}"));
        }
        if let Some(why) = self.halted() {
            return Some(format!("submitting halted: the API refuses every request: {why}"));
        }
        if let Some(why) = self.budget.lock().expect("health").clone() {
            return Some(format!("budget: {why}"));
        }
        if let Some(why) = self.registry.lock().expect("health").clone() {
            return Some(format!("schema registry: {why}"));
        }
        if let Some(why) = self.kafka.lock().expect("health").clone() {
            return Some(format!("kafka: {why}"));
        }
        if self.api_refused() {
            return Some("the API refuses the key".into());
        }
        if !self.api_ok() {
            return Some("the API key is not yet confirmed".into());
        }
        if !self.joined.load(Ordering::Relaxed) {
            return Some("the consumer has not joined its group".into());
        }
        None
    }
    /// Readiness.
    pub(crate) fn ready(&self) -> bool {
        self.unready().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_the_first_reason() {
        let h = Health::default();
        assert_eq!(h.unready().unwrap(), "the API key is not yet confirmed");
        h.set_api_refused(false);
        assert_eq!(h.unready().unwrap(), "the consumer has not joined its group");
        h.set_joined(true);
        assert!(h.ready());
        h.set_halted(Some("400: contract expired".into()));
        assert!(h.unready().unwrap().contains("contract expired"));
        h.set_halted(None);
        h.set_restoring(true);
        assert!(h.unready().unwrap().contains("restoring"));
        h.set_restoring(false);
        h.set_api_refused(true);
        assert_eq!(h.unready().unwrap(), "the API refuses the key");
        h.set_failed();
        assert!(!h.live());
        assert_eq!(h.unready().unwrap(), "a pipeline task failed");
    }
}
