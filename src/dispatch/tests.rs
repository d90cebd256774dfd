//! The dispatcher's decisions, without Kafka or HTTP: a scripted [`Runner`]
//! whose jobs the test finishes by hand, a recording [`Publish`]er that
//! acknowledges at once, an in-memory store and journal, and paused time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{DispatchError, Dispatcher, Parts, Stopped};
use crate::config::Config;
use crate::health::Health;
use crate::jobs::{JobError, JobEvent, JobOutcome, Runner};
use crate::lifecycle::{JobId, Outcome, Phase, Record, Stage};
use crate::metrics::Metrics;
use crate::model::{no_matches, Identifier, IdentifierType, InputRecord, JobSpec, Matches};
use crate::offsets::OffsetTracker;
use crate::share::Team;
use crate::sink::{Failure, Fatal, Publish, Resolution, SinkError};
use crate::source::{SourceEvent, Work};
use crate::store::{Cached, Found, ResultStore};

/// What a job asked of the fake runner.
#[derive(Debug, PartialEq)]
enum Asked {
    /// A new job of these identifiers.
    Run(Vec<String>),
    /// A journaled job taken up.
    Adopt(String),
}

/// How the test ends a job's task.
enum Reply {
    Outcome(JobOutcome),
    Panic,
}

/// One job started by the dispatcher, finished by the test.
struct Call {
    seq: u64,
    job: JobId,
    asked: Asked,
    reply: oneshot::Sender<Reply>,
    /// What the job tells the dispatcher while it runs.
    events: mpsc::UnboundedSender<JobEvent>,
}

impl Call {
    fn finish(self, outcome: JobOutcome) {
        let _ = self.reply.send(Reply::Outcome(outcome));
    }
}

struct FakeRunner {
    calls: mpsc::UnboundedSender<Call>,
    events: mpsc::UnboundedSender<JobEvent>,
}

impl FakeRunner {
    fn call(
        &self,
        seq: u64,
        job: JobId,
        asked: Asked,
    ) -> impl std::future::Future<Output = JobOutcome> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let events = self.events.clone();
        let _ = self.calls.send(Call {
            seq,
            job,
            asked,
            reply,
            events,
        });
        // A dropped reply is a job that never ends.
        async move {
            match rx.await {
                Ok(Reply::Outcome(outcome)) => outcome,
                Ok(Reply::Panic) => panic!("the job's task fails"),
                Err(_) => std::future::pending().await,
            }
        }
    }
}

impl Runner for FakeRunner {
    fn run(
        &self,
        seq: u64,
        job: JobId,
        spec: JobSpec,
    ) -> impl std::future::Future<Output = JobOutcome> + Send + 'static {
        self.call(seq, job, Asked::Run(spec.ids))
    }

    fn adopt(
        &self,
        seq: u64,
        job: JobId,
        _rec: Record,
    ) -> impl std::future::Future<Output = JobOutcome> + Send + 'static {
        let asked = Asked::Adopt(job.to_string());
        self.call(seq, job, asked)
    }
}

/// The store and the journal in memory.
#[derive(Default)]
struct MemoryStore {
    results: Mutex<HashMap<String, Arc<Cached>>>,
    /// Job id -> record (the journal).
    journal: Mutex<HashMap<String, Record>>,
    /// Jobs closed, with how.
    closed: Mutex<Vec<(String, Outcome)>>,
    /// Owners whose jobs may be taken up.
    silent: Mutex<Vec<String>>,
}

impl MemoryStore {
    fn journaled(&self, job: &str, owner: &str, ids: &[&str], stage: Stage) {
        let rec = Record {
            owner: owner.into(),
            stage,
            ..Record::submitting(&spec(&ids.iter().map(|s| s.to_string()).collect::<Vec<_>>()), owner, 0)
        };
        self.journal.lock().unwrap().insert(job.into(), rec);
    }

    fn closed(&self) -> Vec<(String, Outcome)> {
        self.closed.lock().unwrap().clone()
    }
}

impl ResultStore for MemoryStore {
    fn get(&self, _: IdentifierType, value: &str) -> Option<(Arc<Cached>, Found)> {
        self.results
            .lock()
            .unwrap()
            .get(value)
            .map(|c| (c.clone(), Found::Disk))
    }

    fn put(&self, job: Option<JobId>, resolved: Vec<(IdentifierType, String, Arc<Cached>)>) {
        let mut r = self.results.lock().unwrap();
        for (_, k, c) in resolved {
            r.insert(k, c);
        }
        if let Some(job) = job {
            self.close(job, Outcome::Published);
        }
    }

    fn close(&self, job: JobId, outcome: Outcome) {
        self.journal.lock().unwrap().remove(&*job);
        self.closed.lock().unwrap().push((job.to_string(), outcome));
    }

    fn record(&self, job: &str) -> Option<Record> {
        self.journal.lock().unwrap().get(job).cloned()
    }

    fn covering(&self, value: &str) -> Option<(JobId, Record)> {
        self.journal
            .lock()
            .unwrap()
            .iter()
            .find(|(_, r)| r.ids.iter().any(|i| i == value))
            .map(|(j, r)| (JobId::from(j.as_str()), r.clone()))
    }

    async fn caught_up(&self) {}

    fn orphans(&self) -> Vec<(JobId, Record)> {
        let silent = self.silent.lock().unwrap().clone();
        self.journal
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, r)| r.owner == "me" || silent.contains(&r.owner))
            .map(|(j, r)| (JobId::from(j.as_str()), r.clone()))
            .collect()
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
        Self::with(tune, Arc::default())
    }

    /// A dispatcher over `store`, whose API already answered a submit
    /// (without rate-limit headers: every slot may be used).
    fn with(tune: impl FnOnce(&mut Config), store: Arc<MemoryStore>) -> Self {
        let h = Self::fresh(tune, store);
        h.events
            .send(JobEvent::Accepted {
                seq: 0,
                remaining: None,
                sent_ms: 0,
            })
            .unwrap();
        h
    }

    /// A dispatcher over `store` that has not heard from the API yet.
    fn fresh(tune: impl FnOnce(&mut Config), store: Arc<MemoryStore>) -> Self {
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
                tracker: tracker.clone(),
                metrics: metrics.clone(),
                health: health.clone(),
                fatal: Arc::new(Fatal::default()),
                team: team.clone(),
                budget: Arc::new(crate::budget::Budget::new(&cfg.budget, health.clone(), metrics.clone())),
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
        let keyed: Vec<(&str, Option<&str>)> = ids.iter().map(|id| (*id, None)).collect();
        self.send_keyed(&keyed);
    }

    /// [`Self::send`], each record with its key.
    fn send_keyed(&mut self, ids: &[(&str, Option<&str>)]) {
        let topic: Arc<str> = Arc::from(TP.0);
        let mut batch = Vec::new();
        for (id, key) in ids {
            let pos = self
                .tracker
                .lock()
                .unwrap()
                .track_consumed(&topic, TP.1, self.next_offset, 10, 0)
                .expect("assigned");
            self.next_offset += 1;
            batch.push(Work {
                rec: InputRecord {
                    pos,
                    key: key.map(|k| bytes::Bytes::copy_from_slice(k.as_bytes())),
                    value: None,
                    headers: None,
                    timestamp_ms: None,
                    traceparent: None,
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

    /// What reached the sink, by input offset.
    fn sent_in_order(&self) -> Vec<Sent> {
        let mut sent = self.sent();
        sent.sort_by_key(|s| match s {
            Sent::Output { offset, .. } | Sent::DeadLetter { offset, .. } => *offset,
        });
        sent
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
    let ids = ids_of(&call);
    finish_with(call, &ids, batch_id, matched, missing, false);
}

fn finish_with(call: Call, ids: &[String], batch_id: &str, matched: &[&str], missing: &[&str], followed: bool) {
    if !followed {
        // The API accepted its submit.
        let _ = call.events.send(JobEvent::Accepted {
            seq: call.seq,
            remaining: None,
            sent_ms: 0,
        });
    }
    let results = ids
        .iter()
        .filter(|id| !missing.contains(&id.as_str()))
        .map(|id| (id.clone(), matches(matched.contains(&id.as_str()))))
        .collect();
    call.finish(JobOutcome::Done {
        spec: spec(ids),
        batch_id: Arc::from(batch_id),
        results,
        missing: missing.iter().map(|s| s.to_string()).collect(),
        followed,
    });
}

/// Tells the dispatcher that `call`'s job moved to `phase`.
fn phase(h: &Harness, call: &Call, phase: Phase) {
    h.events.send(JobEvent::Phase { seq: call.seq, phase }).unwrap();
}

fn output(offset: i64, identifier: &str, batch_id: &str, matched: bool) -> Sent {
    Sent::Output {
        offset,
        identifier: identifier.into(),
        batch_id: batch_id.into(),
        matched,
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
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
async fn repeats_wait_for_the_pending_identifier() {
    let mut h = Harness::start(|_| {});
    h.send(&["a@x.co", "a@x.co", "b@x.co"]);
    let call = h.next_call().await;
    assert_eq!(ids_of(&call), ["a@x.co", "b@x.co"], "one lookup per identifier");
    h.send(&["a@x.co"]);
    h.assert_no_call().await;
    done(call, "job-1", &["a@x.co"], &[]);
    h.settle().await;
    assert_eq!(
        h.sent_in_order(),
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
async fn a_resolved_identifier_is_stored_the_job_closed_and_then_answered_from_the_store() {
    let mut h = Harness::start(|_| {});
    h.send(&["a@x.co"]);
    let call = h.next_call().await;
    let job = call.job.to_string();
    done(call, "job-1", &["a@x.co"], &[]);
    h.settle().await;
    assert_eq!(
        h.store.closed(),
        [(job, Outcome::Published)],
        "closed once its results are stored"
    );
    h.send(&["a@x.co"]);
    h.settle().await;
    h.assert_no_call().await;
    assert_eq!(h.sent().last(), Some(&output(1, "a@x.co", "job-1", true)));
    assert_eq!(h.saved("store"), 1.0);
}

fn accepted(batch: &str) -> Stage {
    Stage::Accepted {
        attempt: 1,
        batch_id: batch.into(),
        at_ms: 1,
    }
}

#[tokio::test(start_paused = true)]
async fn an_identifier_another_pods_job_covers_waits_for_that_job_instead_of_being_paid_again() {
    let store = Arc::new(MemoryStore::default());
    store.journaled("peer-job", "peer", &["a@x.co", "b@x.co"], accepted("b-peer"));
    let mut h = Harness::with(|c| c.batch.max_size = 1, store);
    h.send(&["a@x.co", "a@x.co", "new@x.co"]);
    let follower = h.next_call().await;
    assert_eq!(follower.asked, Asked::Adopt("peer-job".into()));
    let fresh = h.next_call().await;
    assert_eq!(ids_of(&fresh), ["new@x.co"], "following holds nothing else back");
    h.send(&["b@x.co"]);
    h.assert_no_call().await;
    let ids = strings(&["a@x.co", "b@x.co"]);
    finish_with(follower, &ids, "b-peer", &["a@x.co"], &[], true);
    h.settle().await;
    assert_eq!(
        h.sent_in_order(),
        [
            output(0, "a@x.co", "b-peer", true),
            output(1, "a@x.co", "b-peer", true),
            output(3, "b@x.co", "b-peer", false)
        ],
        "both identifiers of the one followed job answered"
    );
    assert_eq!(h.saved("recovery"), 3.0);
    assert!(h.store.closed().is_empty(), "its owner closes it, not a follower");
    h.assert_no_call().await;
}

#[tokio::test(start_paused = true)]
async fn a_followed_job_that_ends_without_results_sends_its_identifiers_through_new_jobs() {
    let store = Arc::new(MemoryStore::default());
    store.journaled("peer-job", "peer", &["a@x.co", "b@x.co"], accepted("b-peer"));
    let mut h = Harness::with(|_| {}, store);
    h.send(&["a@x.co", "b@x.co"]);
    let follower = h.next_call().await;
    // Meanwhile its owner stored b's result (and closed the job without a).
    h.store.journal.lock().unwrap().clear();
    let stored = Arc::new(Cached {
        matches: matches(true),
        batch_id: Arc::from("b-peer"),
        resolved_at: Arc::from("t"),
        resolved_at_ms: 0,
    });
    h.store.results.lock().unwrap().insert("b@x.co".into(), stored);
    follower.finish(JobOutcome::Released);
    let next = h.next_call().await;
    assert_eq!(ids_of(&next), ["a@x.co"], "b is in the store by then");
    assert_eq!(h.sent(), [output(1, "b@x.co", "b-peer", true)]);
}

#[tokio::test(start_paused = true)]
async fn jobs_of_this_pod_left_in_flight_are_taken_up_at_start_and_hold_nothing_back() {
    let store = Arc::new(MemoryStore::default());
    store.journaled("mine-before-restart", "me", &["a@x.co"], accepted("b-old"));
    store.journaled("peer-alive", "peer", &["c@x.co"], accepted("b-peer"));
    store.journaled("peer-silent", "gone", &["d@x.co"], accepted("b-gone"));
    store.silent.lock().unwrap().push("gone".into());
    let mut h = Harness::with(|_| {}, store);
    let mut taken = vec![h.next_call().await.asked, h.next_call().await.asked];
    taken.sort_by_key(|a| format!("{a:?}"));
    assert_eq!(
        taken,
        [
            Asked::Adopt("mine-before-restart".into()),
            Asked::Adopt("peer-silent".into())
        ],
        "a live peer's job is left to it"
    );
    h.send(&["z@x.co"]);
    assert_eq!(ids_of(&h.next_call().await), ["z@x.co"]);
    h.send(&["a@x.co"]);
    h.assert_no_call().await;
}

#[tokio::test(start_paused = true)]
async fn a_task_that_panics_before_its_submit_was_written_requeues_its_identifiers_once() {
    let mut h = Harness::start(|c| c.batch.max_size = 2);
    h.send(&["a@x.co", "b@x.co"]);
    let call = h.next_call().await;
    let _ = call.reply.send(Reply::Panic);
    // Before: the batch went back to the queue and its identifiers were
    // queued again too: two jobs of the same identifiers.
    let again = h.next_call().await;
    assert_eq!(ids_of(&again), ["a@x.co", "b@x.co"]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    h.assert_no_call().await;
    done(again, "j1", &[], &[]);
    h.settle().await;
    assert_eq!(h.sent().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_task_that_panics_after_its_submit_was_written_is_resumed_from_the_journal() {
    let mut h = Harness::start(|_| {});
    h.send(&["a@x.co"]);
    let call = h.next_call().await;
    let job = call.job.to_string();
    h.store.journaled(&job, "me", &["a@x.co"], accepted("b1"));
    let _ = call.reply.send(Reply::Panic);
    let resumed = h.next_call().await;
    assert_eq!(resumed.asked, Asked::Adopt(job), "never submitted again: it may exist");
    h.assert_no_call().await;
    finish_with(resumed, &strings(&["a@x.co"]), "b1", &[], &[], false);
    h.settle().await;
    assert_eq!(h.sent(), [output(0, "a@x.co", "b1", false)]);
}

#[tokio::test(start_paused = true)]
async fn slots_bound_the_jobs_and_a_429_holds_what_worked() {
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
    for c in &calls[..3] {
        phase(&h, c, Phase::Running);
    }
    // The fourth submit got 429 while three ran: the key has three for us.
    h.events.send(JobEvent::RateLimited { seq: calls[3].seq }).unwrap();
    h.settle().await;
    let mut calls = calls.into_iter();
    done(calls.next().unwrap(), "j1", &[], &[]);
    h.assert_no_call().await;
    done(calls.next().unwrap(), "j2", &[], &[]);
    assert_eq!(ids_of(&h.next_call().await), ["e@x.co"]);
    h.assert_no_call().await;
}

#[tokio::test(start_paused = true)]
async fn one_job_goes_first_and_its_answer_says_how_many_slots_are_free() {
    let mut h = Harness::fresh(|c| c.batch.max_size = 1, Arc::default());
    h.send(&["a@x.co", "b@x.co", "c@x.co", "d@x.co", "e@x.co"]);
    let first = h.next_call().await;
    h.assert_no_call().await;
    // Another tool holds two of the key's slots: two are left after this one.
    h.events
        .send(JobEvent::Accepted {
            seq: first.seq,
            remaining: Some(2),
            sent_ms: 0,
        })
        .unwrap();
    let (second, third) = (h.next_call().await, h.next_call().await);
    h.assert_no_call().await;
    // The second is accepted while the third's submit is on its way: the
    // API counts two of this pod's jobs, and says one is left (the third's).
    phase(&h, &first, Phase::Running);
    h.events
        .send(JobEvent::Accepted {
            seq: second.seq,
            remaining: Some(1),
            sent_ms: 0,
        })
        .unwrap();
    phase(&h, &second, Phase::Running);
    h.assert_no_call().await;
    drop(third);
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
    phase(&h, &first, Phase::Running);
    phase(&h, &first, Phase::Collecting);
    let third = h.next_call().await;
    assert_eq!(ids_of(&third), ["c@x.co"]);
    h.assert_no_call().await;
    // A job that must submit again holds a slot again.
    phase(&h, &first, Phase::Submitting);
    phase(&h, &second, Phase::Running);
    phase(&h, &second, Phase::Collecting);
    h.assert_no_call().await;
    done(first, "j1", &[], &[]);
    assert_eq!(ids_of(&h.next_call().await), ["d@x.co"]);
    done(second, "j2", &[], &[]);
    done(third, "j3", &[], &[]);
    h.settle().await;
    assert_eq!(h.sent().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_submit_that_leaves_the_key_full_holds_the_next_back_until_a_job_of_this_pod_ends() {
    let mut h = Harness::start(|c| c.batch.max_size = 1);
    h.send(&["a@x.co"]);
    let first = h.next_call().await;
    // x-ratelimit-remaining: 0: other pods or tools hold the rest.
    phase(&h, &first, Phase::Running);
    h.events
        .send(JobEvent::Accepted {
            seq: first.seq,
            remaining: Some(0),
            sent_ms: 0,
        })
        .unwrap();
    h.settle().await;
    h.send(&["b@x.co"]);
    tokio::time::sleep(Duration::from_secs(9)).await;
    h.assert_no_call().await;
    // This pod's job ending frees a slot of the key at once.
    phase(&h, &first, Phase::Collecting);
    assert_eq!(ids_of(&h.next_call().await), ["b@x.co"]);
}

#[tokio::test(start_paused = true)]
async fn a_full_key_learnt_once_is_forgotten_after_the_window() {
    // Learnt from a view of the peers that lagged, or from jobs that have
    // ended since: a pod held back submits nothing to learn otherwise.
    let mut h = Harness::start(|c| c.batch.max_size = 1);
    h.send(&["a@x.co"]);
    let first = h.next_call().await;
    phase(&h, &first, Phase::Running);
    h.events
        .send(JobEvent::Accepted {
            seq: first.seq,
            remaining: Some(0),
            sent_ms: 0,
        })
        .unwrap();
    h.settle().await;
    h.send(&["b@x.co"]);
    let started = tokio::time::Instant::now();
    assert_eq!(ids_of(&h.next_call().await), ["b@x.co"]);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited <= Duration::from_secs(11),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_peer_with_work_takes_its_share_of_the_key_and_leaving_gives_it_back() {
    let mut h = Harness::start(|c| c.batch.max_size = 1);
    let peer = crate::share::Status {
        partitions: 1,
        demand: true,
        active: 0,
        backlog: 100,
    };
    h.team.heard("a", Some(peer), std::time::Instant::now());
    h.send(&["a@x.co", "b@x.co", "c@x.co", "d@x.co", "e@x.co"]);
    // One partition each: 3 slots for "a" (the remainder goes to the
    // larger backlog), 2 here.
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
    let reject = |call: Call| refuse(call, 400, "invalid identifier");
    reject(h.next_call().await);
    let left = h.next_call().await;
    let right = h.next_call().await;
    assert_eq!(ids_of(&left), ["a@x.co", "b@x.co"]);
    assert_eq!(ids_of(&right), ["c@x.co", "bad@x.co"]);
    // The good half is accepted after its batch was first refused.
    tokio::time::sleep(Duration::from_millis(1)).await;
    done(left, "j-left", &[], &[]);
    h.settle().await;
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
    let job = call.job.to_string();
    call.finish(JobOutcome::Failed {
        spec: spec(&ids),
        error,
    });
    h.settle().await;
    assert_eq!(h.store.closed(), [(job, Outcome::Failed)]);
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
    call.finish(JobOutcome::Rejected {
        spec: spec(&ids),
        status,
        message: message.into(),
    });
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

#[tokio::test(start_paused = true)]
async fn a_spent_budget_cuts_the_last_batch_to_fit_then_halts_while_hits_are_still_published() {
    let mut h = Harness::start(|c| {
        c.batch.max_size = 3;
        c.budget.credits_per_hour = Some(5);
    });
    h.send(&["a@x.co", "b@x.co", "c@x.co", "d@x.co", "e@x.co", "f@x.co", "g@x.co"]);
    let first = h.next_call().await;
    assert_eq!(ids_of(&first), ["a@x.co", "b@x.co", "c@x.co"]);
    let second = h.next_call().await;
    assert_eq!(ids_of(&second), ["d@x.co", "e@x.co"], "cut to the 2 credits left");
    tokio::time::sleep(Duration::from_secs(5)).await;
    h.assert_no_call().await;
    let why = h.health.unready().unwrap_or_default();
    assert!(
        why.starts_with("budget: the hour credit budget is spent until"),
        "{why}"
    );
    // A resolved identifier is still answered while halted.
    done(first, "job-1", &["a@x.co"], &[]);
    h.settle().await;
    h.send(&["a@x.co"]);
    h.settle().await;
    assert_eq!(h.sent().last(), Some(&output(7, "a@x.co", "job-1", true)));
    h.assert_no_call().await;
}

#[tokio::test(start_paused = true)]
async fn with_per_key_order_a_hit_waits_for_the_earlier_record_of_its_key_and_a_dead_letter_releases_it() {
    let store = Arc::new(MemoryStore::default());
    let stored = Arc::new(Cached {
        matches: matches(true),
        batch_id: Arc::from("old"),
        resolved_at: Arc::from("2026-01-01T00:00:00.000Z"),
        resolved_at_ms: 0,
    });
    store.results.lock().unwrap().insert("hit@x.co".into(), stored);
    let mut h = Harness::with(
        |c| {
            c.output.key = crate::config::OutputKey::Input;
            c.output.ordering = crate::config::Ordering::Key;
        },
        store,
    );
    h.send_keyed(&[
        ("new@x.co", Some("k")),
        ("hit@x.co", Some("k")),
        ("hit@x.co", Some("other")),
        ("hit@x.co", None),
    ]);
    h.settle().await;
    assert_eq!(
        h.sent(),
        [output(2, "hit@x.co", "old", true), output(3, "hit@x.co", "old", true)],
        "other keys and keyless records are not held"
    );
    let call = h.next_call().await;
    let ids = ids_of(&call);
    call.finish(JobOutcome::Failed {
        spec: spec(&ids),
        error: JobError::TimedOut {
            batch_id: Arc::from("j1"),
        },
    });
    h.settle().await;
    assert_eq!(
        h.sent()[2..],
        [
            Sent::DeadLetter {
                offset: 0,
                reason: "job_failed"
            },
            output(1, "hit@x.co", "old", true)
        ],
        "the held hit goes once the record before it of its key is out"
    );
}
