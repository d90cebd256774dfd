//! Webhook wake-ups: each job attempt waiting for a callback registers an
//! unguessable token; a callback carrying a live token wakes that job,
//! which then confirms the state with a status request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use subtle::ConstantTimeEq;
use tokio::sync::Notify;

/// Live webhook tokens -> the jobs waiting for them.
#[derive(Debug, Default)]
pub(crate) struct WakeRegistry {
    tokens: Mutex<HashMap<String, Arc<Notify>>>,
}

impl WakeRegistry {
    /// Registers a fresh token (128 random bits, hex); returns it and the
    /// notification its callback triggers.
    pub(crate) fn register(&self) -> (String, Arc<Notify>) {
        let bits: u128 = rand::random();
        let token = format!("{bits:032x}");
        let wake = Arc::new(Notify::new());
        self.tokens.lock().expect("wakers").insert(token.clone(), wake.clone());
        (token, wake)
    }

    /// Forgets a token (its job attempt ended).
    pub(crate) fn remove(&self, token: &str) {
        self.tokens.lock().expect("wakers").remove(token);
    }

    /// Finds a live token by constant-time comparison against each one.
    pub(crate) fn find(&self, token: &str) -> Option<Arc<Notify>> {
        let map = self.tokens.lock().expect("wakers");
        let mut found = None;
        for (t, n) in map.iter() {
            if bool::from(t.as_bytes().ct_eq(token.as_bytes())) {
                found = Some(n.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_tokens_wake_and_removed_ones_do_not() {
        let r = WakeRegistry::default();
        let (a, _) = r.register();
        let (b, _) = r.register();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(r.find(&a).is_some());
        assert!(r.find(&a[..31]).is_none());
        assert!(r.find("").is_none());
        r.remove(&a);
        assert!(r.find(&a).is_none());
        assert!(r.find(&b).is_some());
    }
}
