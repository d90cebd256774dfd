//! The result store: what this key's jobs resolved, so that no identifier
//! is paid for twice, across restarts and replicas. The Kafka Streams
//! design: a compacted topic is the changelog and the truth ([`topic`]),
//! every pod tails all of it ([`tail`]) into an embedded store on disk
//! ([`disk`]), with a hot set in memory bounded by bytes in front
//! ([`hot`]). The same topic carries the job journal ([`journal`]): a job
//! is written as open right after the API accepts it, and as done once its
//! results are stored.
//!
//! The dispatcher reads and writes through the [`ResultStore`] trait;
//! [`KafkaStore`] is the real one.

mod disk;
mod hot;
mod journal;
mod members;
mod record;
mod tail;
mod topic;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext};
use rdkafka::ClientContext;
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::model::{IdentifierType, JobSpec, Matches};
use crate::share::Team;
use crate::sink::PolledProducer;
use disk::Disk;
use hot::HotSet;
use journal::Journal;
pub(crate) use journal::{Journaled, OpenJob};
use record::JobEntry;
use tail::{Tail, TailParts};

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
    /// Stores what a job resolved; then marks the job done (if any).
    fn put(&self, batch_id: Option<Arc<str>>, resolved: Vec<(IdentifierType, String, Arc<Cached>)>);
    /// Marks a job done without results (failed, or unusable).
    fn job_done(&self, batch_id: Arc<str>);
    /// The open job (of any pod) covering `value`, if any.
    fn covering(&self, value: &str) -> Option<OpenJob>;
    /// What the journal knows of `batch_id`.
    fn job(&self, batch_id: &str) -> Journaled;
}

/// Delivery reports of store writes go to whoever waits for them.
struct StoreContext;

/// Kafka's acknowledgement of one store write.
type Ack = oneshot::Receiver<KafkaResult<()>>;

impl ClientContext for StoreContext {}

impl ProducerContext for StoreContext {
    type DeliveryOpaque = Box<oneshot::Sender<KafkaResult<()>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Self::DeliveryOpaque) {
        let _ = ack.send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone()));
    }
}

/// The store's producer, shared with the tasks that wait for its acks.
struct Writer {
    producer: PolledProducer<StoreContext>,
    topic: String,
}

impl Writer {
    /// Hands one record to librdkafka; its ack arrives on the receiver.
    fn send(&self, key: &str, value: &[u8]) -> KafkaResult<Ack> {
        let (tx, rx) = oneshot::channel();
        let rec = BaseRecord::with_opaque_to(&self.topic, Box::new(tx))
            .key(key.as_bytes())
            .payload(value);
        self.producer.send(rec).map(|()| rx).map_err(|(e, _)| e)
    }

    /// Hands a tombstone of `key` to librdkafka.
    fn send_tombstone(&self, key: &str) -> KafkaResult<Ack> {
        let (tx, rx) = oneshot::channel();
        let rec = BaseRecord::<[u8], [u8], _>::with_opaque_to(&self.topic, Box::new(tx)).key(key.as_bytes());
        self.producer.send(rec).map(|()| rx).map_err(|(e, _)| e)
    }

    /// Sends one record and waits (at most 30 s) for Kafka to have it.
    async fn send_acked(&self, key: &str, value: &[u8]) -> KafkaResult<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match self.send(key, value) {
                Ok(ack) => {
                    return match tokio::time::timeout_at(deadline, ack).await {
                        Ok(Ok(r)) => r,
                        _ => Err(KafkaError::Canceled),
                    }
                }
                Err(KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The store on Kafka and disk.
pub(crate) struct KafkaStore {
    hot: HotSet,
    disk: Arc<Disk>,
    journal: Arc<Mutex<Journal>>,
    writer: Arc<Writer>,
    ttl: Duration,
    metrics: Arc<Metrics>,
    tail: Tail,
    team: Arc<Team>,
    heartbeat: tokio::task::JoinHandle<()>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
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
    pub(crate) async fn open(cfg: &Config, metrics: Arc<Metrics>) -> Result<Arc<Self>, StoreError> {
        let topic = cfg.cache.topic_name(&cfg.kafka);
        let partitions = topic::ensure(&cfg.kafka, &cfg.cache, &topic).await?;
        let dir = PathBuf::from(&cfg.cache.dir);
        let disk = Arc::new(Disk::open(&dir, &topic)?);
        let journal = Arc::new(Mutex::new(Journal::default()));
        {
            let mut j = journal.lock().expect("journal");
            for (key, value) in disk.jobs()? {
                if let Some(record::Key::Job(id)) = record::parse_key(&key) {
                    j.apply(id, record::decode_job(&value));
                }
            }
        }
        let ttl = cfg.cache.ttl;
        let team = Arc::new(Team::new(
            member_id(&cfg.kafka.instance_id),
            topic::input_partitions(&cfg.kafka).await?,
        ));
        let (restored_tx, mut restored) = watch::channel(false);
        let tail = Tail::start(
            &cfg.kafka,
            TailParts {
                topic: topic.clone(),
                partitions,
                disk: disk.clone(),
                journal: journal.clone(),
                metrics: metrics.clone(),
                ttl,
                team: team.clone(),
            },
            restored_tx,
        )?;
        if restored.wait_for(|r| *r).await.is_err() {
            tail.stop();
            return Err(StoreError::Disk("the store tail stopped while restoring".into()));
        }
        info!(path = %disk.path().display(), %topic, member = team.me(), "result store ready");
        let writer = Arc::new(Writer {
            producer: producer(cfg)?,
            topic,
        });
        Ok(Arc::new(Self {
            hot: HotSet::new(cfg.cache.max_memory_bytes, ttl),
            disk,
            journal,
            heartbeat: members::spawn(writer.clone(), team.clone()),
            writer,
            ttl,
            metrics,
            tail,
            team,
        }))
    }

    fn fresh(&self, c: &Cached) -> bool {
        now_ms() - c.resolved_at_ms <= self.ttl.as_millis() as i64
    }

    /// Writes job `batch_id` as open and waits until Kafka has it: from
    /// then on no crash can forget it.
    pub(crate) async fn journal_open(&self, batch_id: &str, spec: &JobSpec) -> Result<(), StoreError> {
        let entry = JobEntry::Open {
            identifier_type: spec.kind.as_str().into(),
            ids: spec.ids.clone(),
            at_ms: now_ms(),
        };
        self.journal
            .lock()
            .expect("journal")
            .apply(batch_id, Some(entry.clone()));
        let key = record::job_key(batch_id);
        let value = record::encode_job(&entry);
        self.writer.send_acked(&key, &value).await.map_err(|e| {
            self.metrics.store_write_failed_by(1);
            StoreError::Kafka(e)
        })
    }

    /// Whether the journal knows `batch_id` (open or done).
    pub(crate) fn knows_job(&self, batch_id: &str) -> bool {
        self.journal.lock().expect("journal").knows(batch_id)
    }

    /// Every open job in the journal.
    pub(crate) fn open_jobs(&self) -> Vec<OpenJob> {
        self.journal.lock().expect("journal").open_jobs()
    }

    /// Forgets done jobs older than `window` in memory.
    pub(crate) fn prune_journal(&self, window: Duration) {
        let before = now_ms() - window.as_millis() as i64;
        self.journal.lock().expect("journal").prune_done(before);
    }

    /// Hot-set bytes, for the metric.
    pub(crate) fn hot_bytes(&self) -> u64 {
        self.hot.bytes()
    }

    /// The pods sharing the key, as this one sees them.
    pub(crate) fn team(&self) -> Arc<Team> {
        self.team.clone()
    }

    /// Leaves the team, delivers what is still queued and stops the tail.
    pub(crate) fn close(&self) {
        members::leave(&self.writer, &self.team, &self.heartbeat);
        let _ = self.writer.producer.flush(Duration::from_secs(10));
        self.tail.stop();
    }

    /// Waits for `acks` (the results of a job), then writes `batch_id` as
    /// done: a crash in between leaves the job open (and its results are
    /// fetched again by whoever adopts it), never done without results.
    fn finish(&self, acks: Vec<Ack>, batch_id: Option<Arc<str>>) {
        let done = batch_id.map(|b| {
            let entry = JobEntry::Done { at_ms: now_ms() };
            self.journal.lock().expect("journal").apply(&b, Some(entry.clone()));
            (record::job_key(&b), record::encode_job(&entry))
        });
        let writer = self.writer.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let n = acks.len();
            let failed = join_all(acks)
                .await
                .into_iter()
                .filter(|r| !matches!(r, Ok(Ok(_))))
                .count();
            if failed > 0 {
                warn!(
                    failed,
                    of = n,
                    "store writes not acknowledged; those identifiers may be paid again after a restart"
                );
                metrics.store_write_failed_by(failed);
            }
            if let Some((key, value)) = done {
                if writer.send_acked(&key, &value).await.is_err() {
                    metrics.store_write_failed_by(1);
                }
            }
        });
    }
}

fn producer(cfg: &Config) -> Result<PolledProducer<StoreContext>, StoreError> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.kafka.brokers)
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("client.id", "identify-connector-store");
    for (k, v) in &cfg.kafka.client_properties(true) {
        cc.set(k, v);
    }
    cc.set("enable.idempotence", "true");
    PolledProducer::new(&cc, StoreContext, "store-producer").map_err(StoreError::Kafka)
}

impl ResultStore for KafkaStore {
    fn get(&self, kind: IdentifierType, value: &str) -> Option<(Arc<Cached>, Found)> {
        if let Some(c) = self.hot.get(value) {
            return self.fresh(&c).then_some((c, Found::Hot));
        }
        let stored = match self.disk.result(&record::result_key(kind, value)) {
            Ok(v) => v?,
            Err(e) => {
                warn!(error = %e, "store read failed; treated as a miss");
                return None;
            }
        };
        let c = Arc::new(record::decode_result(&stored)?);
        if !self.fresh(&c) {
            return None;
        }
        self.hot.insert(value.to_string(), c.clone());
        Some((c, Found::Disk))
    }

    fn put(&self, batch_id: Option<Arc<str>>, resolved: Vec<(IdentifierType, String, Arc<Cached>)>) {
        let mut acks = Vec::with_capacity(resolved.len());
        for (kind, value, c) in resolved {
            let key = record::result_key(kind, &value);
            let bytes = record::encode_result(&c);
            match self.writer.send(&key, &bytes) {
                Ok(f) => acks.push(f),
                Err(e) => {
                    warn!(error = %e, "store write refused");
                    self.metrics.store_write_failed_by(1);
                }
            }
            self.hot.insert(value, c);
        }
        self.finish(acks, batch_id);
    }

    fn job_done(&self, batch_id: Arc<str>) {
        self.finish(Vec::new(), Some(batch_id));
    }

    fn covering(&self, value: &str) -> Option<OpenJob> {
        self.journal.lock().expect("journal").covering(value)
    }

    fn job(&self, batch_id: &str) -> Journaled {
        self.journal.lock().expect("journal").lookup(batch_id)
    }
}
