//! The tail: a consumer thread that follows every partition of the store
//! topic (no group: each pod reads everything), from the local checkpoint
//! (or the beginning, on an empty disk), and applies each record to the
//! local store and the job journal. Whatever any pod resolved is known to
//! all within about a second. The store counts as restored once every
//! partition has been read to the end it had at start-up.
//!
//! Journal records are applied by the job lifecycle's rule ([`Journal`]),
//! budget records by the ledger's ([`Budget`]); only the records they take
//! reach the disk, so a restart resumes from the same state every pod
//! holds. It also hands the other pods' member
//! records to the [`Team`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::disk::{Change, Disk};
use super::journal::Journal;
use super::record::{self, Key};
use super::StoreError;
use crate::budget::Budget;
use crate::config::KafkaConfig;
use crate::lifecycle::Applied;
use crate::metrics::Metrics;
use crate::share::{Team, EXPIRY};

/// Records applied per transaction at most.
const BATCH: usize = 20_000;
/// How long a batch may gather records once the first arrived.
const GATHER: Duration = Duration::from_millis(50);
/// A durable commit at least this often (others skip the fsync).
const DURABLE_EVERY: Duration = Duration::from_secs(2);

/// What the tail thread needs.
pub(super) struct TailParts {
    pub(super) topic: String,
    pub(super) partitions: i32,
    pub(super) disk: Arc<Disk>,
    pub(super) journal: Arc<Mutex<Journal>>,
    /// Bumped after every batch applied: journal waiters look again.
    pub(super) changes: watch::Sender<u64>,
    pub(super) metrics: Arc<Metrics>,
    /// The pods sharing the key, from their member records.
    pub(super) team: Arc<Team>,
    /// The credit budget's ledger, from the reservations.
    pub(super) budget: Arc<Budget>,
}

/// The running tail.
pub(super) struct Tail {
    stop: Arc<AtomicBool>,
    handle: Mutex<Option<JoinHandle<Result<(), StoreError>>>>,
}

impl Tail {
    /// Assigns every partition at its checkpoint and starts the thread;
    /// `restored` turns true once the topic has been read to its end.
    pub(super) fn start(
        kafka: &KafkaConfig,
        parts: TailParts,
        restored: watch::Sender<bool>,
    ) -> Result<Self, StoreError> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &kafka.brokers)
            .set("group.id", "identify-connector-store-tail")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("queued.max.messages.kbytes", "16384")
            .set("client.id", "identify-connector-store");
        for (k, v) in &kafka.client_properties(false) {
            cc.set(k, v);
        }
        cc.set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true");
        let consumer: BaseConsumer<TailContext> = cc.create_with_context(TailContext).map_err(StoreError::Kafka)?;
        let checkpoint = parts.disk.checkpoint()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..parts.partitions {
            let offset = checkpoint.get(&p).map_or(Offset::Beginning, |o| Offset::Offset(*o));
            tpl.add_partition_offset(&parts.topic, p, offset)
                .map_err(StoreError::Kafka)?;
        }
        consumer.assign(&tpl).map_err(StoreError::Kafka)?;
        let from_disk = checkpoint.values().sum::<i64>();
        info!(
            topic = %parts.topic,
            partitions = parts.partitions,
            checkpoint_records = from_disk,
            "restoring the store from its topic"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name("store-tail".into())
            .spawn(move || run(consumer, parts, checkpoint, restored, &thread_stop))
            .map_err(|e| StoreError::Disk(format!("cannot start the store thread: {e}")))?;
        Ok(Self {
            stop,
            handle: Mutex::new(Some(handle)),
        })
    }

    /// Stops the thread after a last durable commit.
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.lock().expect("tail").take() {
            match h.join() {
                Ok(Err(e)) => warn!(error = %e, "store tail stopped with an error"),
                Err(_) => warn!("store tail panicked"),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// The tail's client context: the end of a partition is how the restore
/// knows it is done, not an error worth a log line (rust-rdkafka logs
/// every error event at ERROR by default).
struct TailContext;

impl ClientContext for TailContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::PartitionEOF(_))
            && error.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        {
            warn!(error = %error, reason, "store tail: Kafka client error");
        }
    }
}

impl ConsumerContext for TailContext {}

/// Per-partition progress of the restore.
struct Restore {
    started: Instant,
    pending: Vec<bool>,
    done: bool,
}

fn run(
    consumer: BaseConsumer<TailContext>,
    p: TailParts,
    mut next: HashMap<i32, i64>,
    restored: watch::Sender<bool>,
    stop: &AtomicBool,
) -> Result<(), StoreError> {
    let mut restore = Restore {
        started: Instant::now(),
        pending: vec![true; p.partitions.max(0) as usize],
        done: p.partitions == 0,
    };
    if restore.done {
        let _ = restored.send(true);
    }
    let mut last_durable = Instant::now();
    let mut undurable = false;
    let mut last_report = Instant::now();
    let mut applied = 0u64;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let (changes, eofs, got_any) = gather(&consumer, &p, &mut next)?;
        applied += changes.len() as u64;
        // Changes are committed at once; the fsync waits for the next durable
        // commit (at most DURABLE_EVERY later, or at the stop). Idle, nothing
        // is written at all.
        if !changes.is_empty() {
            undurable = true;
        }
        let durable = undurable && (stopping || last_durable.elapsed() >= DURABLE_EVERY);
        if !changes.is_empty() || durable {
            p.disk.apply(&changes, &next, durable)?;
        }
        if got_any {
            // Covers of just-closed jobs whose results the local store now
            // holds end (checked without the journal's lock), and so do
            // covers of the results this batch brought.
            let fresh = p.journal.lock().expect("journal").take_fresh();
            let mut stored = Vec::new();
            for (value, key, job) in fresh {
                if p.disk.result(&key)?.is_some() {
                    stored.push((value, job));
                }
            }
            {
                let mut j = p.journal.lock().expect("journal");
                for (partition, offset) in &next {
                    j.note_offset(*partition, *offset);
                }
                for (value, job) in &stored {
                    j.uncover(value, Some(job));
                }
                for change in &changes {
                    if let Change::Result(key, Some(_)) = change {
                        if let Some(Key::Result(_, value)) = record::parse_key(key) {
                            j.uncover(value, None);
                        }
                    }
                }
            }
            p.changes.send_modify(|v| *v += 1);
        }
        if !changes.is_empty() || durable {
            p.metrics.store_applied(changes.len());
            if durable {
                last_durable = Instant::now();
                undurable = false;
                p.metrics.set_store_results(p.disk.result_count()?);
            }
        }
        for partition in eofs {
            if let Some(x) = restore.pending.get_mut(partition as usize) {
                *x = false;
            }
        }
        if !restore.done && restore.pending.iter().all(|x| !x) {
            restore.done = true;
            p.disk.apply(&[], &next, true)?;
            let secs = restore.started.elapsed().as_secs_f64();
            let results = p.disk.result_count()?;
            p.metrics.store_restored(secs);
            p.metrics.set_store_results(results);
            info!(
                records = applied,
                seconds = format!("{secs:.2}"),
                results,
                "store restored"
            );
            let _ = restored.send(true);
        } else if !restore.done && last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            info!(records = applied, "restoring the store");
        }
        if stopping {
            return Ok(());
        }
    }
}

/// A member record: recent ones update the team (older ones, read while
/// restoring, are of members long gone).
fn heard(team: &Team, member: &str, value: Option<&[u8]>) {
    let now_ms = chrono::Utc::now().timestamp_millis();
    match value.map(record::decode_member) {
        None => team.heard(member, None, Instant::now()),
        Some(Some((status, at_ms))) if now_ms - at_ms < EXPIRY.as_millis() as i64 => {
            team.heard(member, Some(status), Instant::now());
            team.heard_at(member, at_ms, status.active);
        }
        Some(_) => {}
    }
}

/// Reads what is there (waiting up to 100 ms for the first record, then
/// gathering for up to `GATHER`): the changes, the partitions that
/// reached their end, and whether any record was read.
fn gather(
    consumer: &BaseConsumer<TailContext>,
    p: &TailParts,
    next: &mut HashMap<i32, i64>,
) -> Result<(Vec<Change>, Vec<i32>, bool), StoreError> {
    let mut changes = Vec::new();
    let mut eofs = Vec::new();
    let mut got_any = false;
    let mut wait = Duration::from_millis(100);
    let started = Instant::now();
    while changes.len() < BATCH && (changes.is_empty() || started.elapsed() < GATHER) {
        let msg = match consumer.poll(wait) {
            None => break,
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                eofs.push(partition);
                continue;
            }
            Some(Err(e)) => {
                warn!(error = %e, "store tail");
                break;
            }
            Some(Ok(m)) => m,
        };
        wait = Duration::ZERO;
        got_any = true;
        next.insert(msg.partition(), msg.offset() + 1);
        let Some(key) = msg.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            continue;
        };
        let value = msg.payload().map(<[u8]>::to_vec);
        match record::parse_key(key) {
            Some(Key::Result(..)) => changes.push(Change::Result(key.to_string(), value)),
            Some(Key::Job(job)) => {
                let rec = match value.as_deref() {
                    None => None,
                    Some(v) => match record::decode_job(v) {
                        Some(r) => Some(r),
                        None => {
                            debug!(%job, "a journal record this version cannot read; skipped");
                            continue;
                        }
                    },
                };
                let applied = p.journal.lock().expect("journal").apply(job, rec, Instant::now());
                match applied {
                    Applied::Taken | Applied::Removed => changes.push(Change::Job(key.to_string(), value)),
                    Applied::Ignored => debug!(%job, "a journal record of a job that changed hands; ignored"),
                }
            }
            Some(Key::Member(member)) => heard(&p.team, member, value.as_deref()),
            Some(Key::Reservation(id)) => {
                if let Some(stored) = p.budget.apply_reservation(id, value.as_deref()) {
                    changes.push(Change::Budget(id.to_string(), stored));
                }
            }
            Some(Key::Settlement(id)) => {
                if let Some(stored) = value.as_deref().and_then(|v| p.budget.apply_settlement(id, v)) {
                    changes.push(Change::Budget(id.to_string(), Some(stored)));
                }
            }
            None => {}
        }
    }
    Ok((changes, eofs, got_any))
}
