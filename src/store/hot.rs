//! The hot set: recently used results in memory, bounded by bytes
//! (`cache.max_memory_bytes`), in front of the local store on disk.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use rustc_hash::FxBuildHasher;

use super::Cached;

/// Bytes an entry costs beyond its text: moka's entry, key and value
/// `Arc`s, its deque and hash-table nodes, the boxed `RawValue`. Measured
/// with a counting allocator (400,000 inserts into an 8 MiB set; 30% of
/// them unmatched): 300-360 bytes per entry beyond the text, whatever the
/// size of the matches. With 160, the set held 1.3-1.5 times its bound.
const ENTRY_OVERHEAD: usize = 320;

/// Results by normalised identifier, bounded by bytes.
pub(crate) struct HotSet {
    inner: Cache<String, Arc<Cached>, FxBuildHasher>,
}

/// The weight of an entry: what it holds in memory.
pub(crate) fn weight(key: &str, c: &Cached) -> u32 {
    let bytes = key.len() + c.matches.get().len() + c.batch_id.len() + c.resolved_at.len() + ENTRY_OVERHEAD;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl HotSet {
    /// A hot set of at most `max_bytes`, entries living at most `ttl`.
    pub(crate) fn new(max_bytes: u64, ttl: Duration) -> Self {
        let inner = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, v: &Arc<Cached>| weight(k, v))
            .time_to_live(ttl.max(Duration::from_secs(1)))
            .build_with_hasher(FxBuildHasher);
        Self { inner }
    }

    pub(crate) fn get(&self, key: &str) -> Option<Arc<Cached>> {
        self.inner.get(key)
    }

    pub(crate) fn insert(&self, key: String, value: Arc<Cached>) {
        self.inner.insert(key, value);
    }

    /// The weighted size now (after pending evictions).
    pub(crate) fn bytes(&self) -> u64 {
        self.inner.run_pending_tasks();
        self.inner.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::no_matches;

    fn entry(pad: usize) -> Arc<Cached> {
        Arc::new(Cached {
            matches: serde_json::value::RawValue::from_string(format!("[\"{}\"]", "x".repeat(pad))).unwrap(),
            batch_id: Arc::from("b"),
            resolved_at: Arc::from("t"),
            resolved_at_ms: 0,
        })
    }

    #[test]
    fn the_bound_is_in_bytes_not_entries() {
        let hot = HotSet::new(100_000, Duration::from_secs(60));
        for i in 0..1000 {
            hot.insert(format!("k{i}@x.co"), entry(1000));
        }
        let bytes = hot.bytes();
        assert!(bytes <= 100_000, "{bytes}");
        assert!(bytes > 50_000, "{bytes}");
        let small = HotSet::new(100_000, Duration::from_secs(60));
        for i in 0..400 {
            small.insert(format!("k{i}@x.co"), entry(0));
        }
        small.bytes();
        assert!(small.get("k0@x.co").is_some(), "small entries fit many more");
        assert_eq!(
            weight(
                "ab",
                &Cached {
                    matches: no_matches(),
                    batch_id: Arc::from("b"),
                    resolved_at: Arc::from("t"),
                    resolved_at_ms: 0
                }
            ),
            2 + 2 + 1 + 1 + 320
        );
    }
}
