//! The dispatcher's decisions, without Kafka or HTTP: a scripted [`Runner`]
//! whose jobs the test finishes by hand, a recording [`Publish`]er that
//! acknowledges at once, and paused time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{DispatchError, Dispatcher, Parts, Stopped};
use crate::config::Config;
use crate::health::Health;
use crate::jobs::{JobError, JobEvent, JobOutcome, ResultRow, Runner};
use crate::metrics::Metrics;
use crate::model::{no_matches, Identifier, IdentifierType, InputRecord, JobSpec, Matches};
use crate::offsets::OffsetTracker;
use crate::share::Team;
use crate::sink::{Failure, Fatal, Publish, Resolution, SinkError};
use crate::source::{SourceEvent, Work};
use crate::store::{Cached, Found, Journaled, OpenJob, ResultStore};

/// What a job asked of the fake runner.
#[derive(Debug, PartialEq)]
enum Asked {
    Run(Vec<String>),
    Recover(String, Option<Vec<String>>),
    Reconcile,
}

/// One job started by the dispatcher, finished by the test.
struct Call {
    seq: u64,
    asked: Asked,
    /// Started on the slot of a job that was due, not confirmed ended.
    early: bool,
    reply: oneshot::Sender<JobOutcome>,
    /// What the job tells the dispatcher while it runs (`Submitted`).
    events: mpsc::UnboundedSender<JobEvent>,
}

struct FakeRunner {
    calls: mpsc::UnboundedSender<Call>,
    events: mpsc::UnboundedSender<JobEvent>,
}

impl FakeRunner {
    fn call(
        &self,
        seq: u64,
        asked: Asked,
        early: bool,
    ) -> impl std::future::Future<Output = JobOutcome> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let events = self.events.clone();
        let _ = self.calls.send(Call {
            seq,
            asked,
            early,
            reply,
            events,
        });
        // A dropped reply is a job that never ends.
        async move {
            match rx.await {
                Ok(outcome) => outcome,
                Err(_) => std::future::pending().await,
            }
        }
    }
}

impl Runner for FakeRunner {
    fn run(
        &self,
        seq: u64,
        spec: JobSpec,
        early: bool,
    ) -> impl std::future::Future<Output = JobOutcome> + Send + 'static {
        self.call(seq, Asked::Run(spec.ids), early)
    }

    fn recover(
        &self,
        seq: u64,
        batch_id: Arc<str>,
        spec: Option<JobSpec>,
    ) -> impl std::future::Future<Output = JobOutcome> + Send + 'static {
        self.call(seq, Asked::Recover(batch_id.to_string(), spec.map(|s| s.ids)), false)
    }

    fn reconcile(&self, seq: u64) -> impl std::future::Future<Output = JobOutcome> + Send + 'static {
        self.call(seq, Asked::Reconcile, false)
    }
}

/// The store in memory: results, the jobs marked done, the open jobs.
#[derive(Default)]
struct MemoryStore {
    results: Mutex<std::collections::HashMap<String, Arc<Cached>>>,
    done: Mutex<Vec<String>>,
    open: Mutex<Vec<OpenJob>>,
}

impl ResultStore for MemoryStore {
    fn get(&self, _: IdentifierType, value: &str) -> Option<(Arc<Cached>, Found)> {
        self.results
            .lock()
            .unwrap()
            .get(value)
            .map(|c| (c.clone(), Found::Disk))
    }

    fn put(&self, batch_id: Option<Arc<str>>, resolved: Vec<(IdentifierType, String, Arc<Cached>)>) {
        let mut r = self.results.lock().unwrap();
        for (_, k, c) in resolved {
            r.insert(k, c);
        }
        if let Some(b) = batch_id {
            self.job_done(b);
        }
    }

    fn job_done(&self, batch_id: Arc<str>) {
        self.open.lock().unwrap().retain(|o| o.batch_id != batch_id);
        self.done.lock().unwrap().push(batch_id.to_string());
    }

    fn covering(&self, value: &str) -> Option<OpenJob> {
        self.open
            .lock()
            .unwrap()
            .iter()
            .find(|o| o.spec.ids.iter().any(|i| i == value))
            .cloned()
    }

    fn job(&self, batch_id: &str) -> Journaled {
        if let Some(o) = self.open.lock().unwrap().iter().find(|o| &*o.batch_id == batch_id) {
            return Journaled::Open(o.clone());
        }
        if self.done.lock().unwrap().iter().any(|d| d == batch_id) {
            Journaled::Done
        } else {
            Journaled::Unknown
        }
    }
}

/// What reached the sink.
#[derive(Debug, Clone, PartialEq)]
enum Sent {
    Output {
        offset: i64,
        identifier: String,
        batch_id: String,
        matched: bool,
    },
    DeadLetter {
        offset: i64,
        reason: &'static str,
    },
}

/// Records what it is given and acknowledges it at once.
struct FakeSink {
    tracker: Arc<Mutex<OffsetTracker>>,
    sent: Mutex<Vec<Sent>>,
}

impl Publish for FakeSink {
    async fn output(&self, rec: &InputRecord, r: &Resolution<'_>) -> Result<(), SinkError> {
        self.sent.lock().unwrap().push(Sent::Output {
            offset: rec.pos.offset,
            identifier: r.identifier.to_string(),
            batch_id: r.batch_id.to_string(),
            matched: r.matched,
        });
        self.tracker.lock().unwrap().complete(&rec.pos);
        Ok(())
    }

    async fn dead_letter(&self, rec: &InputRecord, f: Failure<'_>) -> Result<(), SinkError> {
        self.sent.lock().unwrap().push(Sent::DeadLetter {
            offset: rec.pos.offset,
            reason: f.reason,
        });
        self.tracker.lock().unwrap().complete(&rec.pos);
        Ok(())
    }
}

/// A running dispatcher and the ends of every channel around it.
struct Harness {
    records: mpsc::UnboundedSender<SourceEvent>,
    events: mpsc::UnboundedSender<JobEvent>,
    calls: mpsc::UnboundedReceiver<Call>,
    sink: Arc<FakeSink>,
    store: Arc<MemoryStore>,
    tracker: Arc<Mutex<OffsetTracker>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    team: Arc<Team>,
    next_offset: i64,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<Stopped, DispatchError>>,
}

const TP: (&str, i32) = ("in", 0);

impl Harness {
    /// A dispatcher with `tune`d settings (default here: 2 s linger).
    fn start(tune: impl FnOnce(&mut Config)) -> Self {
        Self::with(tune, Arc::default(), false)
    }

    /// A dispatcher over `store`, reconciling at start when asked.
    fn with(tune: impl FnOnce(&mut Config), store: Arc<MemoryStore>, reconcile: bool) -> Self {
        let mut cfg = Config::default();
        cfg.batch.linger = Duration::from_secs(2);
        tune(&mut cfg);
        let tracker = Arc::new(Mutex::new(OffsetTracker::new()));
        tracker.lock().unwrap().assign((Arc::from(TP.0), TP.1));
        let (calls_tx, calls) = mpsc::unbounded_channel();
        let sink = Arc::new(FakeSink {
            tracker: tracker.clone(),
            sent: Mutex::default(),
        });
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::default());
        let (events, events_rx) = mpsc::unbounded_channel();
        let team = Arc::new(Team::new("me".into(), 0));
        let dispatcher = Dispatcher::new(
            &cfg,
            Parts {
                runner: FakeRunner {
                    calls: calls_tx,
                    events: events.clone(),
                },
                sink: sink.clone(),
                store: store.clone(),
                reconcile,
                tracker: tracker.clone(),
                metrics: metrics.clone(),
                health: health.clone(),
                fatal: Arc::new(Fatal::default()),
                team: team.clone(),
            },
        );
        let (records, rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let grace = cfg.shutdown.timeout;
        let task = tokio::spawn(dispatcher.run(
            rx,
            events_rx,
            async {
                let _ = stop_rx.await;
            },
            grace,
        ));
        Harness {
            records,
            events,
            calls,
            sink,
            store,
            tracker,
            metrics,
            health,
            team,
            next_offset: 0,
            stop: Some(stop),
            task,
        }
    }

    /// Consumes one record per identifier (offsets in order) and hands
    /// them over in one batch.
    fn send(&mut self, ids: &[&str]) {
        let topic: Arc<str> = Arc::from(TP.0);
        let mut batch = Vec::new();
        for id in ids {
            let pos = self
                .tracker
                .lock()
                .unwrap()
                .track_consumed(&topic, TP.1, self.next_offset, 10)
                .expect("assigned");
            self.next_offset += 1;
            batch.push(Work {
                rec: InputRecord {
                    pos,
                    key: None,
                    value: None,
                    headers: None,
                    timestamp_ms: None,
                },
                id: Identifier {
                    kind: IdentifierType::BusinessEmail,
                    value: id.to_string(),
                },
            });
        }
        self.records.send(SourceEvent::Records(batch)).unwrap();
    }

    /// Lets the dispatcher work (10 ms of paused time).
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    /// The next job the dispatcher starts (waiting for it in paused time).
    async fn next_call(&mut self) -> Call {
        tokio::time::timeout(Duration::from_secs(600), self.calls.recv())
            .await
            .expect("a job starts")
            .expect("dispatcher alive")
    }

    /// Asserts that no job was started.
    async fn assert_no_call(&mut self) {
        self.settle().await;
        if let Ok(c) = self.calls.try_recv() {
            panic!("unexpected job {:?}", c.asked);
        }
    }

    fn sent(&self) -> Vec<Sent> {
        self.sink.sent.lock().unwrap().clone()
    }

    fn saved(&self, source: &str) -> f64 {
        let text = self.metrics.render();
        let line = format!("identify_credits_saved_total{{source=\"{source}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .map_or(0.0, |v| v.parse().unwrap())
    }

    async fn stop(mut self) -> Result<Stopped, DispatchError> {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap()
    }
}

fn matches(matched: bool) -> Matches {
    if matched {
        serde_json::value::RawValue::from_string(r#"[{"confidence_score":1.0}]"#.into()).unwrap()
    } else {
        no_matches()
    }
}

fn spec(ids: &[String]) -> JobSpec {
    JobSpec {
        kind: IdentifierType::BusinessEmail,
        ids: ids.to_vec(),
    }
}

fn ids_of(call: &Call) -> Vec<String> {
    match &call.asked {
        Asked::Run(ids) => ids.clone(),
        other => panic!("expected a job, got {other:?}"),
    }
}

/// Finishes `call` with results for every identifier but `missing`,
/// matched when listed in `matched`.
fn done(call: Call, batch_id: &str, matched: &[&str], missing: &[&str]) {
    let _ = call.events.send(JobEvent::Submitted {
        seq: call.seq,
        batch_id: Arc::from(batch_id),
        key_full_for: None,
    });
    let ids = ids_of(&call);
    let results = ids
        .iter()
        .filter(|id| !missing.contains(&id.as_str()))
        .map(|id| (id.clone(), matches(matched.contains(&id.as_str()))))
        .collect();
    let outcome = JobOutcome::Done {
        spec: spec(&ids),
        batch_id: Arc::from(batch_id),
        results,
        missing: missing.iter().map(|s| s.to_string()).collect(),
        adopted: false,
    };
    call.reply.send(outcome).unwrap();
}

fn output(offset: i64, identifier: &str, batch_id: &str, matched: bool) -> Sent {
    Sent::Output {
        offset,
        identifier: identifier.into(),
        batch_id: batch_id.into(),
        matched,
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_goes_at_once_and_a_partial_one_after_its_linger() {
    let mut h = Harness::start(|c| c.batch.max_size = 3);
    let started = tokio::time::Instant::now();
    h.send(&["a@x.co", "b@x.co", "c@x.co", "d@x.co"]);
    let first = h.next_call().await;
    assert_eq!(ids_of(&first), ["a@x.co", "b@x.co", "c@x.co"]);
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "size flush waits for nothing"
    );
    tokio::time::sleep(Duration::from_millis(1800)).await;
    h.assert_no_call().await;
    let second = h.next_call().await;
    assert_eq!(ids_of(&second), ["d@x.co"]);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn repeats_wait_for_the_pending_identifier_and_its_job_is_named_in_commit_metadata() {
    let mut h = Harness::start(|_| {});
    h.send(&["a@x.co", "a@x.co", "b@x.co"]);
    let call = h.next_call().await;
    assert_eq!(ids_of(&call), ["a@x.co", "b@x.co"], "one lookup per identifier");
    h.events
        .send(JobEvent::Submitted {
            seq: call.seq,
            batch_id: Arc::from("job-1"),
            key_full_for: None,
        })
        .unwrap();
    h.send(&["a@x.co"]);
    h.settle().await;
    let meta = h.tracker.lock().unwrap().commit_candidates();
    assert_eq!(meta.len(), 1);
    assert_eq!(crate::offsets::decode_jobs(&meta[0].metadata), ["job-1"]);
    h.assert_no_call().await;
    done(call, "job-1", &["a@x.co"], &[]);
    h.settle().await;
    let mut sent = h.sent();
    sent.sort_by_key(|s| match s {
        Sent::Output { offset, .. } | Sent::DeadLetter { offset, .. } => *offset,
    });
    assert_eq!(
        sent,
        [
            output(0, "a@x.co", "job-1", true),
            output(1, "a@x.co", "job-1", true),
            output(2, "b@x.co", "job-1", false),
            output(3, "a@x.co", "job-1", true),
        ]
    );
    assert_eq!(h.saved("dedupe"), 2.0);
    assert_eq!(h.tracker.lock().unwrap().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_resolved_identifier_is_stored_and_answered_from_the_store() {
    let mut h = Harness::start(|_| {});
    h.send(&["a@x.co"]);
    let call = h.next_call().await;
    done(call, "job-1", &["a@x.co"], &[]);
    h.settle().await;
    assert_eq!(
        *h.store.done.lock().unwrap(),
        ["job-1"],
        "the job is marked done once stored"
    );
    h.send(&["a@x.co"]);
    h.settle().await;
    h.assert_no_call().await;
    assert_eq!(h.sent().last(), Some(&output(1, "a@x.co", "job-1", true)));
    assert_eq!(h.saved("store"), 1.0);
}

fn open_job(batch_id: &str, ids: &[&str]) -> OpenJob {
    OpenJob {
        batch_id: Arc::from(batch_id),
        spec: spec(&ids.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        at_ms: 0,
    }
}

#[tokio::test(start_paused = true)]
async fn an_identifier_an_open_job_covers_waits_for_that_job_instead_of_being_paid_again() {
    let store = Arc::new(MemoryStore::default());
    store
        .open
        .lock()
        .unwrap()
        .push(open_job("other-pod", &["a@x.co", "b@x.co"]));
    let mut h = Harness::with(|c| c.batch.max_size = 1, store, false);
    h.send(&["a@x.co", "a@x.co", "new@x.co"]);
    let adoption = h.next_call().await;
    assert_eq!(
        adoption.asked,
        Asked::Recover("other-pod".into(), Some(vec!["a@x.co".into(), "b@x.co".into()]))
    );
    let fresh = h.next_call().await;
    assert_eq!(
        ids_of(&fresh),
        ["new@x.co"],
        "a journaled adoption holds nothing else back"
    );
    h.assert_no_call().await;
    let results = [
        ("a@x.co".to_string(), matches(true)),
        ("b@x.co".to_string(), matches(false)),
    ];
    adoption
        .reply
        .send(JobOutcome::Done {
            spec: spec(&["a@x.co".into(), "b@x.co".into()]),
            batch_id: Arc::from("other-pod"),
            results: results.into_iter().collect(),
            missing: Vec::new(),
            adopted: true,
        })
        .unwrap();
    h.settle().await;
    assert_eq!(
        h.sent(),
        [
            output(0, "a@x.co", "other-pod", true),
            output(1, "a@x.co", "other-pod", true)
        ]
    );
    assert_eq!(h.saved("recovery"), 2.0);
    assert!(
        h.store.results.lock().unwrap().contains_key("b@x.co"),
        "all its results are stored"
    );
    h.assert_no_call().await;
}

#[tokio::test(start_paused = true)]
async fn the_identifiers_of_an_adopted_job_that_failed_go_to_new_jobs() {
    let store = Arc::new(MemoryStore::default());
    store.open.lock().unwrap().push(open_job("lost", &["a@x.co"]));
    let mut h = Harness::with(|_| {}, store, false);
    h.send(&["a@x.co"]);
    let adoption = h.next_call().await;
    adoption
        .reply
        .send(JobOutcome::RecoveryFailed {
            batch_id: Arc::from("lost"),
            error: JobError::TimedOut {
                batch_id: Arc::from("lost"),
            },
        })
        .unwrap();
    assert_eq!(ids_of(&h.next_call().await), ["a@x.co"]);
    assert_eq!(*h.store.done.lock().unwrap(), ["lost"], "nobody adopts it again");
}

#[tokio::test(start_paused = true)]
async fn reconciliation_holds_submits_back_until_the_jobs_it_found_are_in() {
    let mut h = Harness::with(|_| {}, Arc::default(), true);
    let reconcile = h.next_call().await;
    assert_eq!(reconcile.asked, Asked::Reconcile);
    h.send(&["a@x.co", "b@x.co"]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    h.assert_no_call().await;
    reconcile
        .reply
        .send(JobOutcome::Reconciled(vec![crate::jobs::Adoption {
            batch_id: Arc::from("forgotten"),
            spec: None,
        }]))
        .unwrap();
    let adoption = h.next_call().await;
    assert_eq!(adoption.asked, Asked::Recover("forgotten".into(), None));
    tokio::time::sleep(Duration::from_secs(5)).await;
    h.assert_no_call().await;
    adoption
        .reply
        .send(JobOutcome::Recovered {
            batch_id: Arc::from("forgotten"),
            rows: vec![ResultRow {
                matched_on: "b@x.co".into(),
                kind: Some(IdentifierType::BusinessEmail),
                matches: matches(true),
            }],
        })
        .unwrap();
    assert_eq!(ids_of(&h.next_call().await), ["a@x.co"], "b was in the forgotten job");
    assert_eq!(h.sent(), [output(1, "b@x.co", "forgotten", true)]);
}

#[tokio::test(start_paused = true)]
async fn a_journaled_job_named_in_commit_metadata_is_adopted_with_its_identifiers() {
    let store = Arc::new(MemoryStore::default());
    store.open.lock().unwrap().push(open_job("prev-owner", &["a@x.co"]));
    store.done.lock().unwrap().push("finished-long-ago".into());
    let mut h = Harness::with(|_| {}, store, false);
    h.records
        .send(SourceEvent::Recover(vec![
            "prev-owner".into(),
            "finished-long-ago".into(),
        ]))
        .unwrap();
    let adoption = h.next_call().await;
    assert_eq!(
        adoption.asked,
        Asked::Recover("prev-owner".into(), Some(vec!["a@x.co".into()]))
    );
    h.assert_no_call().await;
    h.send(&["z@x.co"]);
    assert_eq!(
        ids_of(&h.next_call().await),
        ["z@x.co"],
        "no hold: its coverage is known"
    );
}

#[tokio::test(start_paused = true)]
async fn slots_bound_running_jobs_and_a_429_halves_them() {
    let mut h = Harness::start(|c| {
        c.batch.max_size = 1;
        c.api.max_active_jobs = 4;
    });
    h.send(&["a@x.co", "b@x.co", "c@x.co", "d@x.co", "e@x.co", "f@x.co"]);
    let mut calls = Vec::new();
    for _ in 0..4 {
        calls.push(h.next_call().await);
    }
    h.assert_no_call().await;
    // A 429 while 4 run: the limit halves to 2.
    h.events.send(JobEvent::RateLimited { seq: calls[0].seq }).unwrap();
    h.settle().await;
    let mut calls = calls.into_iter();
    done(calls.next().unwrap(), "j1", &[], &[]);
    h.assert_no_call().await;
    // A job done without a 429 grows the limit by one (to 3), 2 run: one more.
    done(calls.next().unwrap(), "j2", &[], &[]);
    assert_eq!(ids_of(&h.next_call().await), ["e@x.co"]);
    h.assert_no_call().await;
}

#[tokio::test(start_paused = true)]
async fn a_job_frees_its_slot_when_the_api_reports_it_ended_not_when_it_is_published() {
    let mut h = Harness::start(|c| {
        c.batch.max_size = 1;
        c.api.max_active_jobs = 2;
    });
    h.send(&["a@x.co", "b@x.co", "c@x.co", "d@x.co"]);
    let (first, second) = (h.next_call().await, h.next_call().await);
    h.assert_no_call().await;
    // The API reports the first job completed; its results are still to be
    // downloaded and published, but the key's slot is free: the next batch
    // goes in the same turn.
    h.events.send(JobEvent::Ended { seq: first.seq }).unwrap();
    let third = h.next_call().await;
    assert_eq!(ids_of(&third), ["c@x.co"]);
    h.assert_no_call().await;
    // A job that must submit again holds a slot again.
    h.events.send(JobEvent::Resubmitting { seq: first.seq }).unwrap();
    h.events.send(JobEvent::Ended { seq: second.seq }).unwrap();
    h.assert_no_call().await;
    done(first, "j1", &[], &[]);
    assert_eq!(ids_of(&h.next_call().await), ["d@x.co"]);
    done(second, "j2", &[], &[]);
    done(third, "j3", &[], &[]);
    h.settle().await;
    assert_eq!(h.sent().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_due_job_lends_its_slot_to_an_early_start() {
    let mut h = Harness::start(|c| {
        c.batch.max_size = 1;
        c.api.max_active_jobs = 2;
    });
    h.send(&["a@x.co", "b@x.co", "c@x.co", "d@x.co"]);
    let (first, second) = (h.next_call().await, h.next_call().await);
    assert!(!first.early && !second.early, "free slots are no early start");
    h.assert_no_call().await;
    // The first job is steady and its first poll goes out: its slot goes to
    // the next batch now, before the poll's answer, even though the key
    // said it was full.
    h.events
        .send(JobEvent::Submitted {
            seq: second.seq,
            batch_id: Arc::from("j2"),
            key_full_for: Some(Duration::from_secs(60)),
        })
        .unwrap();
    h.events.send(JobEvent::Due { seq: first.seq }).unwrap();
    let third = h.next_call().await;
    assert_eq!(ids_of(&third), ["c@x.co"]);
    assert!(third.early, "it is told its 429 would mean nothing");
    h.assert_no_call().await;
    // The poll found it ended: nothing more starts, the slot was used.
    h.events.send(JobEvent::Ended { seq: first.seq }).unwrap();
    h.assert_no_call().await;
    for (c, id) in [(first, "j1"), (second, "j2"), (third, "j3")] {
        done(c, id, &[], &[]);
    }
    assert_eq!(ids_of(&h.next_call().await), ["d@x.co"]);
}

#[tokio::test(start_paused = true)]
async fn an_early_start_refused_hands_its_batch_back_and_lending_stops_until_an_end() {
    let mut h = Harness::start(|c| {
        c.batch.max_size = 1;
        c.api.max_active_jobs = 2;
    });
    h.send(&["a@x.co", "b@x.co", "c@x.co", "d@x.co"]);
    let (first, second) = (h.next_call().await, h.next_call().await);
    h.events.send(JobEvent::Due { seq: first.seq }).unwrap();
    let early = h.next_call().await;
    assert!(early.early);
    // The first job still ran: the early submit got 429, nothing was
    // submitted, and the batch is the next to go.
    early
        .reply
        .send(JobOutcome::NotStarted {
            spec: spec(&["c@x.co".into()]),
        })
        .unwrap();
    h.events.send(JobEvent::StillRunning { seq: first.seq }).unwrap();
    h.assert_no_call().await;
    // No more lending until an end is confirmed: the second job being due
    // starts nothing (its poll's answer would be the only news).
    h.events.send(JobEvent::Due { seq: second.seq }).unwrap();
    h.assert_no_call().await;
    h.events.send(JobEvent::Ended { seq: first.seq }).unwrap();
    let retried = h.next_call().await;
    assert_eq!(ids_of(&retried), ["c@x.co"], "the handed-back batch first");
    assert!(!retried.early);
    // Lending again: the second job, due now, lends its slot.
    h.events.send(JobEvent::Due { seq: second.seq }).unwrap();
    let fourth = h.next_call().await;
    assert_eq!(ids_of(&fourth), ["d@x.co"]);
    assert!(fourth.early);
    for (c, id) in [(first, "j1"), (second, "j2"), (retried, "j3"), (fourth, "j4")] {
        done(c, id, &[], &[]);
    }
    h.settle().await;
    assert_eq!(h.sent().len(), 4, "every record once");
}

#[tokio::test(start_paused = true)]
async fn a_submit_that_leaves_the_key_full_holds_the_next_back_until_the_reset_or_an_end() {
    let mut h = Harness::start(|c| c.batch.max_size = 1);
    h.send(&["a@x.co"]);
    let first = h.next_call().await;
    // x-ratelimit-remaining: 0 and reset in 3 s: other pods hold the rest.
    h.events
        .send(JobEvent::Submitted {
            seq: first.seq,
            batch_id: Arc::from("j1"),
            key_full_for: Some(Duration::from_secs(3)),
        })
        .unwrap();
    h.settle().await;
    let sent = tokio::time::Instant::now();
    h.send(&["b@x.co"]);
    let second = h.next_call().await;
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_millis(3100),
        "{waited:?}"
    );
    h.events
        .send(JobEvent::Submitted {
            seq: second.seq,
            batch_id: Arc::from("j2"),
            key_full_for: Some(Duration::from_secs(60)),
        })
        .unwrap();
    h.send(&["c@x.co"]);
    h.assert_no_call().await;
    // One of this pod's jobs ending frees a slot of the key at once.
    h.events.send(JobEvent::Ended { seq: first.seq }).unwrap();
    assert_eq!(ids_of(&h.next_call().await), ["c@x.co"]);
}

#[tokio::test(start_paused = true)]
async fn a_peer_with_work_takes_its_share_of_the_key_and_leaving_gives_it_back() {
    let mut h = Harness::start(|c| c.batch.max_size = 1);
    let peer = crate::share::Status {
        partitions: 1,
        demand: true,
        active: 0,
    };
    h.team.heard("a", Some(peer), std::time::Instant::now());
    h.send(&["a@x.co", "b@x.co", "c@x.co", "d@x.co", "e@x.co"]);
    // One partition each: 3 slots for "a" (the remainder goes to the
    // smaller id), 2 here.
    let _running = (h.next_call().await, h.next_call().await);
    h.assert_no_call().await;
    assert!(h.team.own().demand && h.team.own().active == 2);
    h.team.heard("a", None, std::time::Instant::now());
    for _ in 0..3 {
        h.next_call().await;
    }
    h.assert_no_call().await;
}

#[tokio::test(start_paused = true)]
async fn while_the_key_is_refused_only_the_running_job_probes_it() {
    let mut h = Harness::start(|c| c.batch.max_size = 1);
    h.send(&["a@x.co"]);
    let first = h.next_call().await;
    h.health.set_api_refused(true);
    h.send(&["b@x.co"]);
    h.assert_no_call().await;
    h.health.set_api_refused(false);
    done(first, "j1", &[], &[]);
    assert_eq!(ids_of(&h.next_call().await), ["b@x.co"]);
}

#[tokio::test(start_paused = true)]
async fn a_refused_batch_is_halved_until_the_bad_identifier_is_dead_lettered() {
    let mut h = Harness::start(|c| c.batch.max_size = 4);
    h.send(&["a@x.co", "b@x.co", "c@x.co", "bad@x.co"]);
    let reject = |call: Call| {
        let ids = ids_of(&call);
        call.reply
            .send(JobOutcome::Rejected {
                spec: spec(&ids),
                status: 400,
                message: "invalid identifier".into(),
            })
            .unwrap();
    };
    reject(h.next_call().await);
    let left = h.next_call().await;
    let right = h.next_call().await;
    assert_eq!(ids_of(&left), ["a@x.co", "b@x.co"]);
    assert_eq!(ids_of(&right), ["c@x.co", "bad@x.co"]);
    done(left, "j-left", &[], &[]);
    reject(right);
    let c = h.next_call().await;
    let bad = h.next_call().await;
    assert_eq!(
        (ids_of(&c), ids_of(&bad)),
        (vec!["c@x.co".into()], vec!["bad@x.co".into()])
    );
    done(c, "j-c", &[], &[]);
    reject(bad);
    h.settle().await;
    let sent = h.sent();
    assert_eq!(sent.len(), 4);
    assert!(sent.contains(&Sent::DeadLetter {
        offset: 3,
        reason: "api_rejected"
    }));
    assert_eq!(sent.iter().filter(|s| matches!(s, Sent::Output { .. })).count(), 3);
}

#[tokio::test(start_paused = true)]
async fn missing_identifiers_are_queued_again_then_dead_lettered() {
    let mut h = Harness::start(|c| c.api.max_job_attempts = 2);
    h.send(&["a@x.co", "b@x.co"]);
    done(h.next_call().await, "j1", &[], &["b@x.co"]);
    let again = h.next_call().await;
    assert_eq!(ids_of(&again), ["b@x.co"], "only the missing one, at once");
    done(again, "j2", &[], &["b@x.co"]);
    h.settle().await;
    assert_eq!(
        h.sent(),
        [
            output(0, "a@x.co", "j1", false),
            Sent::DeadLetter {
                offset: 1,
                reason: "missing_result"
            }
        ]
    );
    h.assert_no_call().await;
}

#[tokio::test(start_paused = true)]
async fn a_job_failed_for_good_dead_letters_its_records() {
    let mut h = Harness::start(|_| {});
    h.send(&["a@x.co", "a@x.co"]);
    let call = h.next_call().await;
    let ids = ids_of(&call);
    let error = JobError::TimedOut {
        batch_id: Arc::from("j1"),
    };
    call.reply
        .send(JobOutcome::Failed {
            spec: spec(&ids),
            error,
        })
        .unwrap();
    h.settle().await;
    let reasons: Vec<_> = h
        .sent()
        .into_iter()
        .map(|s| match s {
            Sent::DeadLetter { reason, .. } => reason,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(reasons, ["job_failed", "job_failed"]);
}

#[tokio::test(start_paused = true)]
async fn recovered_jobs_answer_their_identifiers_before_any_new_submit() {
    let mut h = Harness::start(|_| {});
    h.records
        .send(SourceEvent::Recover(vec!["old-job".into(), "old-job".into()]))
        .unwrap();
    let recovery = h.next_call().await;
    assert_eq!(
        recovery.asked,
        Asked::Recover("old-job".into(), None),
        "not journaled: coverage unknown"
    );
    h.assert_no_call().await;
    h.send(&["a@x.co", "new@x.co"]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    h.assert_no_call().await;
    recovery
        .reply
        .send(JobOutcome::Recovered {
            batch_id: Arc::from("old-job"),
            rows: vec![ResultRow {
                matched_on: " A@X.co".into(),
                kind: None,
                matches: matches(true),
            }],
        })
        .unwrap();
    let next = h.next_call().await;
    assert_eq!(
        ids_of(&next),
        ["new@x.co"],
        "the recovered identifier is not paid again"
    );
    assert_eq!(h.sent(), [output(0, "a@x.co", "old-job", true)]);
    assert_eq!(h.saved("recovery"), 1.0);
}

#[tokio::test(start_paused = true)]
async fn records_of_revoked_partitions_leave_memory_at_once() {
    let mut h = Harness::start(|_| {});
    h.send(&["a@x.co", "b@x.co"]);
    h.settle().await;
    h.tracker.lock().unwrap().assign((Arc::from(TP.0), TP.1));
    h.records.send(SourceEvent::Revoked).unwrap();
    h.settle().await;
    h.send(&["a@x.co"]);
    h.settle().await;
    assert_eq!(h.saved("dedupe"), 0.0, "the revoked record no longer waits for a@x.co");
    let call = h.next_call().await;
    assert_eq!(ids_of(&call), ["a@x.co"], "b@x.co left the open batch");
}

#[tokio::test(start_paused = true)]
async fn identifiers_of_revoked_partitions_are_not_submitted() {
    let mut h = Harness::start(|_| {});
    h.send(&["a@x.co"]);
    h.settle().await;
    {
        let mut t = h.tracker.lock().unwrap();
        t.assign((Arc::from(TP.0), TP.1));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.assert_no_call().await;
    h.send(&["b@x.co"]);
    assert_eq!(ids_of(&h.next_call().await), ["b@x.co"]);
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_running_jobs_publish_within_the_grace() {
    let mut h = Harness::start(|c| c.shutdown.timeout = Duration::from_secs(5));
    h.send(&["a@x.co"]);
    let call = h.next_call().await;
    h.send(&["b@x.co"]);
    h.settle().await;
    let stop = h.stop.take().unwrap();
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_secs(1)).await;
    done(call, "j1", &[], &[]);
    let result = (&mut h.task).await.unwrap();
    assert_eq!(result.unwrap(), Stopped::Shutdown);
    assert_eq!(h.sent(), [output(0, "a@x.co", "j1", false)]);
    assert!(h.calls.try_recv().is_err(), "the open batch is not submitted");
}

#[tokio::test(start_paused = true)]
async fn shutdown_abandons_jobs_still_running_after_the_grace() {
    let mut h = Harness::start(|c| c.shutdown.timeout = Duration::from_secs(5));
    h.send(&["a@x.co"]);
    let call = h.next_call().await;
    let started = tokio::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(60), h.stop())
        .await
        .expect("the grace is bounded");
    assert_eq!(result.unwrap(), Stopped::Shutdown);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
    assert!(call.reply.is_closed(), "the job was aborted");
}

fn refuse(call: Call, status: u16, message: &str) {
    let ids = ids_of(&call);
    call.reply
        .send(JobOutcome::Rejected {
            spec: spec(&ids),
            status,
            message: message.into(),
        })
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_refusal_of_every_request_halts_without_dead_letters_and_a_probe_resumes() {
    let mut h = Harness::start(|c| c.batch.max_size = 4);
    h.send(&["a@x.co", "b@x.co", "c@x.co", "d@x.co"]);
    refuse(h.next_call().await, 400, "contract expired");
    let half = h.next_call().await;
    assert_eq!(ids_of(&half), ["a@x.co", "b@x.co"]);
    let other_half = h.next_call().await;
    refuse(half, 400, "contract expired");
    refuse(other_half, 400, "contract expired");
    h.settle().await;
    assert!(
        h.health.unready().unwrap().contains("contract expired"),
        "{:?}",
        h.health.unready()
    );
    assert!(h.metrics.render().contains("identify_submits_halted 1\n"));
    tokio::time::sleep(super::halt::FIRST_BACKOFF - Duration::from_secs(1)).await;
    h.assert_no_call().await;
    let probe = h.next_call().await;
    assert_eq!(
        probe.asked,
        Asked::Run(vec!["c@x.co".into(), "d@x.co".into()]),
        "the probe is the first refused batch"
    );
    done(probe, "j-probe", &[], &[]);
    let rest = h.next_call().await;
    assert_eq!(ids_of(&rest), ["a@x.co", "b@x.co"]);
    done(rest, "j-rest", &[], &[]);
    h.settle().await;
    assert!(h.health.halted().is_none());
    assert!(
        h.sent().iter().all(|s| matches!(s, Sent::Output { .. })),
        "no dead letter"
    );
    assert_eq!(h.sent().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_404_on_submit_halts_at_once_and_probes_back_off() {
    let mut h = Harness::start(|c| c.batch.max_size = 2);
    h.send(&["a@x.co", "b@x.co"]);
    refuse(h.next_call().await, 404, "no such endpoint");
    h.settle().await;
    assert!(h.health.unready().unwrap().contains("404"));
    let t0 = tokio::time::Instant::now();
    refuse(h.next_call().await, 404, "no such endpoint");
    let first = t0.elapsed();
    refuse(h.next_call().await, 404, "no such endpoint");
    let second = t0.elapsed() - first;
    assert!(
        second >= first * 2 - Duration::from_millis(50),
        "{first:?} then {second:?}"
    );
    assert!(h.sent().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_lone_refused_identifier_is_told_apart_by_probing_with_a_free_one() {
    let mut h = Harness::start(|c| c.batch.max_size = 1);
    h.send(&["nobody@x.co"]);
    done(h.next_call().await, "j0", &[], &[]);
    h.settle().await;
    h.send(&["weird@x.co"]);
    refuse(h.next_call().await, 400, "identifier refused");
    let probe = h.next_call().await;
    assert_eq!(
        probe.asked,
        Asked::Run(vec!["nobody@x.co".into()]),
        "an identifier known to match nobody, free to submit"
    );
    done(probe, "j-probe", &[], &[]);
    refuse(h.next_call().await, 400, "identifier refused");
    h.settle().await;
    assert_eq!(
        h.sent().last(),
        Some(&Sent::DeadLetter {
            offset: 1,
            reason: "api_rejected"
        })
    );
}
