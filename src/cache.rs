//! The result cache: identifiers resolved within `cache.ttl`, answered
//! without a new lookup (matched or not: an unmatched one is free, but its
//! job slot and wait are not). Bounded by `cache.max_entries`.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use rustc_hash::FxBuildHasher;

use crate::model::Matches;

/// A resolved identifier: its matches and which job resolved it when.
#[derive(Debug)]
pub(crate) struct Cached {
    /// The API's matches, verbatim.
    pub(crate) matches: Matches,
    /// The job that resolved it.
    pub(crate) batch_id: Arc<str>,
    /// RFC 3339 time of resolution.
    pub(crate) resolved_at: Arc<str>,
}

/// Resolved identifiers by normalised value (unique across both kinds: see
/// the dispatcher's pending identifiers). A zero TTL disables the cache.
pub(crate) struct ResultCache {
    inner: Option<Cache<String, Arc<Cached>, FxBuildHasher>>,
}

impl ResultCache {
    /// A cache keeping `max_entries` entries for `ttl` each.
    pub(crate) fn new(ttl: Duration, max_entries: u64) -> Self {
        let inner = (!ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .build_with_hasher(FxBuildHasher)
        });
        Self { inner }
    }

    /// The cached result of `key`, if resolved within the TTL.
    pub(crate) fn get(&self, key: &str) -> Option<Arc<Cached>> {
        self.inner.as_ref()?.get(key)
    }

    /// Remembers the result of `key`.
    pub(crate) fn insert(&self, key: String, value: Arc<Cached>) {
        if let Some(c) = &self.inner {
            c.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::no_matches;

    fn entry() -> Arc<Cached> {
        Arc::new(Cached {
            matches: no_matches(),
            batch_id: Arc::from("b"),
            resolved_at: Arc::from("t"),
        })
    }

    #[test]
    fn hits_within_the_ttl_and_none_when_disabled() {
        let c = ResultCache::new(Duration::from_secs(60), 10);
        c.insert("a@x.co".into(), entry());
        assert!(c.get("a@x.co").is_some());
        assert!(c.get("b@x.co").is_none());
        let off = ResultCache::new(Duration::ZERO, 10);
        off.insert("a@x.co".into(), entry());
        assert!(off.get("a@x.co").is_none());
    }
}
