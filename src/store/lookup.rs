//! Reading a result: the hot set when its entry is fresh, else the local
//! store on disk (which may hold a fresher one: another pod resolved the
//! identifier again since), else nothing.

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::disk::Disk;
use super::hot::HotSet;
use super::{now_ms, record, Cached, Found};
use crate::model::IdentifierType;

/// A result from the hot set when it is fresh, else from the disk (which
/// may hold a fresher one: another pod resolved it again since), else
/// none. What the disk gives enters the hot set.
pub(super) fn lookup(
    hot: &HotSet,
    disk: &Disk,
    ttl: Duration,
    kind: IdentifierType,
    value: &str,
) -> Option<(Arc<Cached>, Found)> {
    let fresh = |c: &Cached| now_ms() - c.resolved_at_ms <= ttl.as_millis() as i64;
    if let Some(c) = hot.get(value).filter(|c| fresh(c)) {
        return Some((c, Found::Hot));
    }
    let stored = match disk.result(&record::result_key(kind, value)) {
        Ok(v) => v?,
        Err(e) => {
            warn!(error = %e, "store read failed; treated as a miss");
            return None;
        }
    };
    let c = Arc::new(record::decode_result(&stored)?);
    if !fresh(&c) {
        return None;
    }
    hot.insert(value.to_string(), c.clone());
    Some((c, Found::Disk))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::disk;

    fn cached(resolved_at_ms: i64, batch: &str) -> Arc<Cached> {
        Arc::new(Cached {
            matches: crate::model::no_matches(),
            batch_id: Arc::from(batch),
            resolved_at: Arc::from("t"),
            resolved_at_ms,
        })
    }

    #[test]
    fn a_stale_entry_in_memory_does_not_hide_a_fresher_one_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path(), "t").unwrap();
        let ttl = Duration::from_secs(3600);
        let hot = HotSet::new(1 << 20, ttl);
        let kind = IdentifierType::BusinessEmail;
        let stale = now_ms() - 2 * 3_600_000;
        hot.insert("a@x.co".into(), cached(stale, "old"));
        let fresh = record::encode_result(&cached(now_ms(), "new"));
        disk.apply(
            &[disk::Change::Result(record::result_key(kind, "a@x.co"), Some(fresh))],
            &std::collections::HashMap::new(),
            false,
        )
        .unwrap();
        let (c, found) = lookup(&hot, &disk, ttl, kind, "a@x.co").expect("the disk's fresher result");
        assert_eq!((&*c.batch_id, found), ("new", Found::Disk));
        let (c, found) = lookup(&hot, &disk, ttl, kind, "a@x.co").unwrap();
        assert_eq!(
            (&*c.batch_id, found),
            ("new", Found::Hot),
            "and it replaced the stale one"
        );
        assert!(lookup(&hot, &disk, ttl, kind, "b@x.co").is_none());
    }
}
