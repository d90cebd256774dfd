//! The local store: an embedded redb database under `cache.dir` holding
//! every record of the store topic (results and jobs, verbatim) and, in the
//! same transactions, the position up to which the topic has been applied
//! (the checkpoint, as Kafka Streams keeps one). So a restarted pod reads
//! only the topic's tail; an empty disk reads the whole topic.
//!
//! redb: pure Rust, one file, ACID with copy-on-write B-trees; point reads
//! need no locks, and its page cache is bounded (`CACHE_BYTES`), so ten
//! million entries cost disk, not RAM.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::StoreError;

const RESULTS: TableDefinition<&str, &[u8]> = TableDefinition::new("results");
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
/// Valid budget reservations, by reservation id (see [`crate::budget`]).
const BUDGET: TableDefinition<&str, &[u8]> = TableDefinition::new("budget");
/// Store-topic partition -> next offset to apply.
const CHECKPOINT: TableDefinition<u32, u64> = TableDefinition::new("checkpoint");
/// `topic` -> the store topic this database mirrors.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// redb's page cache.
const CACHE_BYTES: usize = 8 << 20;

/// The tables the sweep goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    /// Resolved identifiers.
    Results,
    /// Journal records.
    Jobs,
}

/// One change read from the topic.
#[derive(Debug)]
pub(crate) enum Change {
    /// A result record (`None`: a tombstone).
    Result(String, Option<Vec<u8>>),
    /// A job record (`None`: a tombstone).
    Job(String, Option<Vec<u8>>),
    /// A valid budget reservation, by id (`None`: removed).
    Budget(String, Option<Vec<u8>>),
}

/// The database.
pub(crate) struct Disk {
    db: Database,
    path: PathBuf,
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Disk(e.to_string())
}

impl Disk {
    /// Opens (or creates) `dir/store.redb` as the mirror of `topic`. A
    /// database mirroring another topic is emptied first.
    pub(crate) fn open(dir: &Path, topic: &str) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Disk(format!("cache.dir {}: {e}", dir.display())))?;
        let path = dir.join("store.redb");
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| StoreError::Disk(format!("{}: {e}", path.display())))?;
        let disk = Self { db, path };
        disk.init(topic)?;
        Ok(disk)
    }

    /// Opens `dir/store.redb` to read it, only if it mirrors `topic` (never
    /// emptied).
    pub(crate) fn open_mirror_of(dir: &Path, topic: &str) -> Result<Self, StoreError> {
        let path = dir.join("store.redb");
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .open(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Disk(format!(
                    "{} is in use: a connector here is starting (its lookup socket opens once its store is restored); try again in a moment, or use --from-topic",
                    path.display()
                )),
                e => StoreError::Disk(format!("{}: {e}", path.display())),
            })?;
        let mirrored = {
            let txn = db.begin_read().map_err(db_err)?;
            let meta = txn.open_table(META).map_err(db_err)?;
            meta.get("topic").map_err(db_err)?.map(|v| v.value().to_string())
        };
        if mirrored.as_deref() != Some(topic) {
            return Err(StoreError::Disk(format!(
                "{} mirrors the store topic {mirrored:?}, not {topic:?} (check cache.topic and kafka.group_id)",
                path.display()
            )));
        }
        Ok(Self { db, path })
    }

    fn init(&self, topic: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let mirrored = meta.get("topic").map_err(db_err)?.map(|v| v.value().to_string());
            if mirrored.as_deref() != Some(topic) {
                drop(meta);
                txn.delete_table(RESULTS).map_err(db_err)?;
                txn.delete_table(JOBS).map_err(db_err)?;
                txn.delete_table(BUDGET).map_err(db_err)?;
                txn.delete_table(CHECKPOINT).map_err(db_err)?;
                meta = txn.open_table(META).map_err(db_err)?;
                meta.insert("topic", topic).map_err(db_err)?;
            }
            txn.open_table(RESULTS).map_err(db_err)?;
            txn.open_table(JOBS).map_err(db_err)?;
            txn.open_table(BUDGET).map_err(db_err)?;
            txn.open_table(CHECKPOINT).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// Where the database lives.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The stored value of result `key`.
    pub(crate) fn result(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(RESULTS).map_err(db_err)?;
        Ok(t.get(key).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// Every job record.
    pub(crate) fn jobs(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.all(JOBS)
    }

    /// Every valid budget reservation.
    pub(crate) fn budget(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.all(BUDGET)
    }

    fn all(&self, def: TableDefinition<&str, &[u8]>) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(def).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Partition -> next offset to apply.
    pub(crate) fn checkpoint(&self) -> Result<HashMap<i32, i64>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(CHECKPOINT).map_err(db_err)?;
        let mut out = HashMap::new();
        for entry in t.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            out.insert(k.value() as i32, v.value() as i64);
        }
        Ok(out)
    }

    /// Applies `changes` and moves the checkpoint to `next` in one
    /// transaction. `durable`: fsync now (otherwise at the next durable one;
    /// a crash then replays those records from the topic).
    pub(crate) fn apply(&self, changes: &[Change], next: &HashMap<i32, i64>, durable: bool) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        if !durable {
            txn.set_durability(Durability::None);
        }
        {
            let mut results = txn.open_table(RESULTS).map_err(db_err)?;
            let mut jobs = txn.open_table(JOBS).map_err(db_err)?;
            let mut budget = txn.open_table(BUDGET).map_err(db_err)?;
            for c in changes {
                let (table, key, value) = match c {
                    Change::Result(k, v) => (&mut results, k, v),
                    Change::Job(k, v) => (&mut jobs, k, v),
                    Change::Budget(k, v) => (&mut budget, k, v),
                };
                match value {
                    Some(v) => table.insert(key.as_str(), v.as_slice()).map_err(db_err)?,
                    None => table.remove(key.as_str()).map_err(db_err)?,
                };
            }
            let mut cp = txn.open_table(CHECKPOINT).map_err(db_err)?;
            for (p, o) in next {
                cp.insert(*p as u32, *o as u64).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)
    }

    /// One step of the sweep of expired entries: scans at most `scan`
    /// entries of `table` after `after` (from the start when `None`) and
    /// removes those for which `expired` holds (their value says when they
    /// were written). Returns how many it removed and the last key scanned
    /// (`None` once the table's end was reached). Short steps keep the
    /// write lock, which the tail's transactions wait for, brief.
    pub(crate) fn sweep_step(
        &self,
        table: Table,
        after: Option<&str>,
        scan: usize,
        expired: impl Fn(&[u8]) -> bool,
    ) -> Result<(usize, Option<String>), StoreError> {
        let def = match table {
            Table::Results => RESULTS,
            Table::Jobs => JOBS,
        };
        let txn = self.db.begin_write().map_err(db_err)?;
        let (removed, last) = {
            let mut t = txn.open_table(def).map_err(db_err)?;
            let mut doomed = Vec::new();
            let mut last = None;
            let mut scanned = 0;
            {
                let range = match after {
                    Some(a) => t.range::<&str>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
                    None => t.range::<&str>(..),
                }
                .map_err(db_err)?;
                for entry in range {
                    let (k, v) = entry.map_err(db_err)?;
                    scanned += 1;
                    if expired(v.value()) {
                        doomed.push(k.value().to_string());
                    }
                    if scanned == scan {
                        last = Some(k.value().to_string());
                        break;
                    }
                }
            }
            for k in &doomed {
                t.remove(k.as_str()).map_err(db_err)?;
            }
            (doomed.len(), last)
        };
        txn.commit().map_err(db_err)?;
        Ok((removed, last))
    }

    /// Results stored.
    pub(crate) fn result_count(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(RESULTS).map_err(db_err)?;
        t.len().map_err(db_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_and_the_checkpoint_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let d = Disk::open(dir.path(), "t1").unwrap();
            assert!(d.checkpoint().unwrap().is_empty());
            let changes = vec![
                Change::Result("r/business_email/a@x.co".into(), Some(b"A".to_vec())),
                Change::Result("r/business_email/b@x.co".into(), Some(b"B".to_vec())),
                Change::Job("j/1".into(), Some(b"J".to_vec())),
            ];
            d.apply(&changes, &HashMap::from([(0, 3)]), false).unwrap();
            d.apply(
                &[Change::Result("r/business_email/b@x.co".into(), None)],
                &HashMap::from([(0, 4), (1, 1)]),
                true,
            )
            .unwrap();
        }
        let d = Disk::open(dir.path(), "t1").unwrap();
        assert_eq!(d.result("r/business_email/a@x.co").unwrap(), Some(b"A".to_vec()));
        assert_eq!(d.result("r/business_email/b@x.co").unwrap(), None, "tombstone");
        assert_eq!(d.jobs().unwrap(), vec![("j/1".to_string(), b"J".to_vec())]);
        assert_eq!(d.checkpoint().unwrap(), HashMap::from([(0, 4), (1, 1)]));
        assert_eq!(d.result_count().unwrap(), 1);
        assert_eq!(
            d.sweep_step(Table::Results, None, 10, |v| v == b"A").unwrap(),
            (1, None)
        );
        assert_eq!(d.result_count().unwrap(), 0);
        drop(d);
        let other = Disk::open(dir.path(), "another-topic").unwrap();
        assert!(
            other.checkpoint().unwrap().is_empty(),
            "a mirror of another topic starts empty"
        );
        assert!(other.jobs().unwrap().is_empty());
    }

    #[test]
    fn a_sweep_step_scans_a_bounded_number_of_entries_and_goes_on_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let d = Disk::open(dir.path(), "t").unwrap();
        let changes: Vec<Change> = (0..100)
            .map(|i| Change::Result(format!("r/business_email/{i:03}@x.co"), Some(vec![(i % 2) as u8])))
            .collect();
        d.apply(&changes, &HashMap::new(), false).unwrap();
        let seen = std::cell::Cell::new(0);
        let odd = |v: &[u8]| {
            seen.set(seen.get() + 1);
            v == [1]
        };
        let (removed, last) = d.sweep_step(Table::Results, None, 30, odd).unwrap();
        assert_eq!((removed, seen.get()), (15, 30), "30 scanned, the odd ones removed");
        let mut after = last;
        let mut total = removed;
        while let Some(a) = after {
            let (n, next) = d.sweep_step(Table::Results, Some(&a), 30, odd).unwrap();
            total += n;
            after = next;
        }
        assert_eq!(total, 50);
        assert_eq!(seen.get(), 100, "every entry scanned once");
        assert_eq!(d.result_count().unwrap(), 50);
    }

    #[test]
    fn a_database_is_opened_by_one_process_only() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Disk::open(dir.path(), "t").unwrap();
        let second = Disk::open(dir.path(), "t");
        assert!(matches!(second, Err(StoreError::Disk(_))));
    }
}
