//! The result store: what this key's jobs resolved, so that no identifier
//! is paid for twice, across restarts and replicas. The Kafka Streams
//! design: a compacted topic is the changelog and the truth ([`topic`]),
//! every pod tails all of it ([`tail`]) into an embedded store on disk
//! ([`disk`]), with a hot set in memory bounded by bytes in front
//! ([`hot`]). The same topic carries the job journal ([`journal`]: every
//! job's latest [`Record`], applied by the lifecycle's rule) and the
//! members sharing the key ([`members`]), and the credit budget's
//! reservations ([`budget`]).
//!
//! The dispatcher reads and writes through the [`ResultStore`] trait;
//! [`KafkaStore`] is the real one, and the job tasks use its journal
//! methods directly.

mod budget;
mod disk;
mod hot;
mod inspect;
mod journal;
mod lookup;
mod members;
mod record;
mod sweep;
mod sync;
mod tail;
mod topic;
mod writer;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use tokio::sync::watch;
use tracing::{debug, info};

use crate::budget::Budget;
use crate::config::Config;
use crate::lifecycle::{Applied, JobId, Outcome, Record, Stage};
use crate::metrics::Metrics;
use crate::model::{now_ms, IdentifierType, Matches};
use crate::share::{Team, CLAIM_AFTER};
use crate::sink::PolledProducer;
pub(crate) use budget::Reserved;
use disk::Disk;
use hot::HotSet;
pub(crate) use inspect::{decode as decode_result, read_local, result_key};
use journal::Journal;
use lookup::lookup;
use tail::{Tail, TailParts};
pub(crate) use writer::Written;
use writer::{StoreContext, Writer};

/// Why the store cannot work.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A Kafka client failed.
    #[error("store: {0}")]
    Kafka(KafkaError),
    /// The store topic is unusable.
    #[error("store: {0}")]
    Topic(String),
    /// The local database failed.
    #[error("store (local database): {0}")]
    Disk(String),
}

/// A resolved identifier: its matches and which job resolved it when.
#[derive(Debug)]
pub(crate) struct Cached {
    /// The API's matches, verbatim.
    pub(crate) matches: Matches,
    /// The job that resolved it.
    pub(crate) batch_id: Arc<str>,
    /// RFC 3339 time of resolution.
    pub(crate) resolved_at: Arc<str>,
    /// The same, in ms since the epoch.
    pub(crate) resolved_at_ms: i64,
}

/// Where a result was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// In memory.
    Hot,
    /// In the local store (read from the topic, by this pod or another).
    Disk,
}

impl Found {
    /// The `source` label of `credits_saved_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Hot => "cache",
            Self::Disk => "store",
        }
    }
}

/// What the dispatcher needs of the store.
pub(crate) trait ResultStore: Send + Sync + 'static {
    /// The result of `value`, if resolved within the TTL.
    fn get(&self, kind: IdentifierType, value: &str) -> Option<(Arc<Cached>, Found)>;
    /// Stores what a job resolved. For this pod's own job `job`: durably
    /// (every write acknowledged, refused ones tried again), and only then
    /// is the job closed as published. For a job of another pod (`None`):
    /// in memory only (its owner stores it).
    fn put(&self, job: Option<JobId>, resolved: Vec<(IdentifierType, String, Arc<Cached>)>);
    /// Closes this pod's job `job`, which published nothing.
    fn close(&self, job: JobId, outcome: Outcome);
    /// Job `job`'s journal record.
    fn record(&self, job: &str) -> Option<Record>;
    /// The journaled job resolving `value` (in flight, or published a
    /// moment ago), with its record.
    fn covering(&self, value: &str) -> Option<(JobId, Record)>;
    /// Jobs in flight that this pod should drive: its own (a restart with
    /// the same member id), and those whose owner has been silent for
    /// [`CLAIM_AFTER`] (to be claimed).
    fn orphans(&self) -> Vec<(JobId, Record)>;
    /// Resolves once what the store topic holds now is known here (see
    /// [`KafkaStore::catch_up`]).
    fn caught_up(&self) -> impl std::future::Future<Output = ()> + Send;
}

/// How long a closed job's record stays before it is removed: while it
/// does, its batch id is known to every pod (never taken for another
/// job's lost submit) and a new pod does not resume it.
const CLOSED_GRACE: Duration = Duration::from_secs(15 * 60);
/// How often closed records past their grace are removed.
const TIDY_EVERY: Duration = Duration::from_secs(60);

/// Writing journal records: what a job task, and a task that stores a
/// job's results before closing it, share.
#[derive(Clone)]
struct Journaling {
    journal: Arc<Mutex<Journal>>,
    writer: Arc<Writer>,
    metrics: Arc<Metrics>,
    team: Arc<Team>,
}

impl Journaling {
    fn record(&self, job: &str) -> Option<Record> {
        self.journal.lock().expect("journal").get(job)
    }

    /// See [`KafkaStore::journal`].
    async fn write(&self, job: &JobId, rec: &Record) -> Written {
        let key = record::job_key(job);
        let value = record::encode_job(rec);
        let written = self
            .writer
            .write(&key, Some(&value), &self.metrics, "journal record")
            .await;
        let applied = self
            .journal
            .lock()
            .expect("journal")
            .apply(job, Some(rec.clone()), Instant::now());
        if applied == Applied::Ignored {
            debug!(%job, "journal record not taken here: the job changed hands");
        }
        written
    }

    /// Writes the closing record of this pod's job `job` (with its
    /// results' batch id), unless the job changed hands or is gone.
    async fn write_closed(&self, job: &JobId, outcome: Outcome) {
        let me = self.team.me();
        let Some(rec) = self.record(job).filter(|r| r.owner == me && r.in_flight()) else {
            return;
        };
        let batch_id = match outcome {
            Outcome::Published => rec.batch_id().map(str::to_string),
            _ => None,
        };
        let closed = rec.at(Stage::Closed {
            outcome,
            batch_id,
            at_ms: now_ms(),
        });
        self.write(job, &closed).await;
        debug!(%job, outcome = outcome.as_str(), "job closed");
    }
}

/// The store on Kafka and disk.
pub(crate) struct KafkaStore {
    hot: HotSet,
    disk: Arc<Disk>,
    j: Journaling,
    /// Bumped whenever the tail applied journal records or moved on.
    journal_changes: watch::Receiver<u64>,
    ttl: Duration,
    tail: Tail,
    background: Vec<tokio::task::JoinHandle<()>>,
    /// The credit budget's ledger.
    budget: Arc<Budget>,
    /// Partitions of the store topic.
    partitions: i32,
}

/// This pod's member id: its `kafka.instance_id` (unique in the group),
/// else host, process and start time.
fn member_id(instance_id: &str) -> String {
    if !instance_id.is_empty() {
        return instance_id.to_string();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "pod".into());
    format!("{host}-{}-{:x}", std::process::id(), now_ms())
}

impl KafkaStore {
    /// Finds or creates the topic, opens the local store, and restores it
    /// from the topic's tail; returns once restored.
    pub(crate) async fn open(
        cfg: &Config,
        metrics: Arc<Metrics>,
        budget: Arc<Budget>,
    ) -> Result<Arc<Self>, StoreError> {
        let topic = cfg.cache.topic_name(&cfg.kafka);
        let partitions = topic::ensure(&cfg.kafka, &cfg.cache, &topic).await?;
        let dir = PathBuf::from(&cfg.cache.dir);
        let disk = Arc::new(Disk::open(&dir, &topic)?);
        let journal = Arc::new(Mutex::new(Journal::default()));
        {
            let mut j = journal.lock().expect("journal");
            let now = Instant::now();
            for (key, value) in disk.jobs()? {
                if let (Some(record::Key::Job(id)), Some(rec)) = (record::parse_key(&key), record::decode_job(&value)) {
                    j.apply(id, Some(rec), now);
                }
            }
        }
        for (id, value) in disk.budget()? {
            budget.load(&id, &value);
        }
        let ttl = cfg.cache.ttl;
        let team = Arc::new(Team::new(
            member_id(&cfg.kafka.instance_id),
            topic::input_partitions(&cfg.kafka).await?,
        ));
        let (restored_tx, mut restored) = watch::channel(false);
        let (changes_tx, journal_changes) = watch::channel(0u64);
        let tail = Tail::start(
            &cfg.kafka,
            TailParts {
                topic: topic.clone(),
                partitions,
                disk: disk.clone(),
                journal: journal.clone(),
                changes: changes_tx,
                metrics: metrics.clone(),
                team: team.clone(),
                budget: budget.clone(),
            },
            restored_tx,
        )?;
        if restored.wait_for(|r| *r).await.is_err() {
            tail.stop();
            return Err(StoreError::Disk("the store tail stopped while restoring".into()));
        }
        let in_flight = journal.lock().expect("journal").in_flight().len();
        info!(path = %disk.path().display(), %topic, member = team.me(), jobs_in_flight = in_flight, "result store ready");
        let writer = Arc::new(Writer {
            producer: producer(cfg)?,
            topic,
        });
        let background = vec![
            members::spawn(writer.clone(), team.clone()),
            sweep::spawn(disk.clone(), ttl),
        ];
        let store = Arc::new(Self {
            hot: HotSet::new(cfg.cache.max_memory_bytes, ttl),
            disk,
            j: Journaling {
                journal,
                writer,
                metrics,
                team,
            },
            journal_changes,
            ttl,
            tail,
            background,
            budget,
            partitions,
        });
        let tidy = tokio::spawn(tidy(Arc::downgrade(&store)));
        // The tidy task ends with the store (it holds a weak reference).
        drop(tidy);
        Ok(store)
    }

    /// Store writes waiting for Kafka, and those it acknowledged so far
    /// (for the stall watch; a heartbeat is written every second).
    pub(crate) fn writes(&self) -> (u64, u64) {
        let p = &self.j.writer.producer;
        let pending = u64::try_from(p.in_flight_count()).unwrap_or(0);
        let acked = rdkafka::producer::Producer::context(p.inner())
            .acked
            .load(std::sync::atomic::Ordering::Relaxed);
        (pending, acked)
    }

    /// Hot-set bytes, for the metric.
    pub(crate) fn hot_bytes(&self) -> u64 {
        self.hot.bytes()
    }

    /// The pods sharing the key, as this one sees them.
    pub(crate) fn team(&self) -> Arc<Team> {
        self.j.team.clone()
    }

    /// This pod's member id (the owner it writes in journal records).
    pub(crate) fn me(&self) -> &str {
        self.j.team.me()
    }

    /// Job `job`'s record now.
    pub(crate) fn record(&self, job: &str) -> Option<Record> {
        self.j.record(job)
    }

    /// Whether a journal owns API job `batch_id`: when it was accepted (ms
    /// since the epoch; 0 when unknown) and by which member.
    pub(crate) fn batch_known(&self, batch_id: &str) -> Option<(i64, String)> {
        self.j.journal.lock().expect("journal").batch(batch_id)
    }

    /// Jobs known to the journal (in flight and closed), for the metric.
    pub(crate) fn journal_len(&self) -> usize {
        self.j.journal.lock().expect("journal").len()
    }

    /// Fires when the journal changed (the tail applied records).
    pub(crate) fn journal_changes(&self) -> watch::Receiver<u64> {
        self.journal_changes.clone()
    }

    /// Writes `rec` as job `job`'s record and waits until Kafka has it
    /// (trying again while the topic refuses it: nothing that depends on
    /// it goes on meanwhile); then it is the job's state here too, if the
    /// journal's rule takes it.
    pub(crate) async fn journal(&self, job: &JobId, rec: &Record) -> Written {
        self.j.write(job, rec).await
    }

    /// Closes this pod's job `job` with `outcome`, waiting until the record
    /// is taken.
    pub(crate) async fn journal_closed(&self, job: &JobId, outcome: Outcome) {
        self.j.write_closed(job, outcome).await;
    }

    /// Writes a claim of job `job` (see [`crate::jobs`]): it counts only
    /// once the tail applied it and found it first ([`Self::confirmed`]),
    /// so it is not taken here before that.
    pub(crate) async fn journal_claim(&self, job: &JobId, claim: &Record) -> Written {
        let value = record::encode_job(claim);
        self.j
            .writer
            .write(&record::job_key(job), Some(&value), &self.j.metrics, "claim")
            .await
    }

    /// Waits until the tail applied the store topic past `written` (so
    /// every earlier record of job `job` too), then returns the job's
    /// record: whose claim came first, say.
    pub(crate) async fn confirmed(&self, job: &str, written: Written) -> Option<Record> {
        let mut changes = self.journal_changes.clone();
        loop {
            {
                let j = self.j.journal.lock().expect("journal");
                if j.applied_past(written.0, written.1) {
                    return j.get(job);
                }
            }
            if changes.changed().await.is_err() {
                return self.record(job);
            }
        }
    }

    /// Leaves the team, delivers what is still queued and stops the tail.
    pub(crate) fn close(&self) {
        members::leave(&self.j.writer, &self.j.team, &self.background[0]);
        for task in &self.background[1..] {
            task.abort();
        }
        let _ = self.j.writer.producer.flush(Duration::from_secs(10));
        self.tail.stop();
    }

    /// Removes the records of jobs closed more than [`CLOSED_GRACE`] ago:
    /// this pod's, and those of owners long silent.
    fn remove_closed(&self) {
        let before = now_ms() - CLOSED_GRACE.as_millis() as i64;
        let now = Instant::now();
        let closed = self.j.journal.lock().expect("journal").closed_before(before);
        for (job, owner) in closed {
            if owner == self.me() || self.j.team.silent_for(&owner, now) >= CLAIM_AFTER {
                // A lost tombstone is sent again at the next round.
                let _ = self.j.writer.send_now(&record::job_key(&job), None);
            }
        }
    }
}

/// Removes closed journal records now and then, while the store lives.
async fn tidy(store: std::sync::Weak<KafkaStore>) {
    loop {
        tokio::time::sleep(TIDY_EVERY).await;
        let Some(store) = store.upgrade() else {
            return;
        };
        store.remove_closed();
        store.remove_ended_reservations();
    }
}

fn producer(cfg: &Config) -> Result<PolledProducer<StoreContext>, StoreError> {
    let mut cc = ClientConfig::new();
    // No linger: a journal record is written ahead of a submit, which
    // waits for it (a job's results batch on their own: they are queued
    // together).
    cc.set("bootstrap.servers", &cfg.kafka.brokers)
        .set("linger.ms", "0")
        .set("compression.type", "lz4")
        .set("client.id", "identify-connector-store");
    for (k, v) in &cfg.kafka.client_properties(true) {
        cc.set(k, v);
    }
    cc.set("enable.idempotence", "true");
    PolledProducer::new(&cc, StoreContext::default(), "store-producer").map_err(StoreError::Kafka)
}

impl ResultStore for KafkaStore {
    fn get(&self, kind: IdentifierType, value: &str) -> Option<(Arc<Cached>, Found)> {
        lookup(&self.hot, &self.disk, self.ttl, kind, value)
    }

    fn put(&self, job: Option<JobId>, resolved: Vec<(IdentifierType, String, Arc<Cached>)>) {
        let mut writes = Vec::with_capacity(if job.is_some() { resolved.len() } else { 0 });
        for (kind, value, c) in resolved {
            if job.is_some() {
                writes.push((record::result_key(kind, &value), record::encode_result(&c)));
            }
            self.hot.insert(value, c);
        }
        let Some(job) = job else {
            return;
        };
        let j = self.j.clone();
        tokio::spawn(async move {
            j.writer.write_all(writes, &j.metrics).await;
            // Only now: a crash before this leaves the job open, and its
            // results are read again (free) by whoever resumes it.
            j.write_closed(&job, Outcome::Published).await;
        });
    }

    fn close(&self, job: JobId, outcome: Outcome) {
        let j = self.j.clone();
        tokio::spawn(async move { j.write_closed(&job, outcome).await });
    }

    fn record(&self, job: &str) -> Option<Record> {
        self.j.record(job)
    }

    fn covering(&self, value: &str) -> Option<(JobId, Record)> {
        self.j.journal.lock().expect("journal").covering(value, Instant::now())
    }

    async fn caught_up(&self) {
        self.catch_up().await;
    }

    fn orphans(&self) -> Vec<(JobId, Record)> {
        let now = Instant::now();
        let in_flight = self.j.journal.lock().expect("journal").in_flight();
        in_flight
            .into_iter()
            .filter(|(_, r)| r.owner == self.me() || self.j.team.silent_for(&r.owner, now) >= CLAIM_AFTER)
            .collect()
    }
}
