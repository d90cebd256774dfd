//! A simulator with fast jobs, and the input records the tests feed.

use std::time::Duration;

use crustdata_sim::{SimConfig, SimHandle};

use crate::kafka;

/// The key the simulator accepts in tests.
pub const KEY: &str = "test-key-3f9a";

/// A simulator accepting [`KEY`] with fast jobs (about half a second),
/// tuned further by `tune`.
pub async fn start_sim(tune: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut cfg = SimConfig {
        api_keys: vec![KEY.into()],
        pending_time: Duration::from_millis(50),
        base_time: Duration::from_millis(300),
        per_identifier_time: Duration::from_micros(500),
        retrieval_time: Duration::from_millis(200),
        jitter: Duration::from_millis(200),
        ..SimConfig::default()
    };
    tune(&mut cfg);
    SimHandle::start(cfg).await.expect("simulator starts")
}

/// An event value carrying `email`.
pub fn event(email: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"email": email, "source": "test"})).unwrap()
}

/// `n` events with distinct emails (`{tag}{i}@example{i % 13}.com`).
pub fn emails(n: usize, tag: &str) -> kafka::Records {
    (0..n)
        .map(|i| (None, event(&format!("{tag}{i}@example{}.com", i % 13))))
        .collect()
}
