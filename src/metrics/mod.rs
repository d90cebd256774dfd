//! Metrics: every Prometheus metric the connector exports, defined here and
//! nowhere else. Call sites use the named methods; labels are bounded.

mod families;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use prometheus::core::Collector;
use prometheus::local::LocalHistogram;
use prometheus::{Encoder, GaugeVec, IntCounter, Opts, Registry, TextEncoder};

use families::{ApiMetrics, JobMetrics, KafkaMetrics, RecordMetrics, StoreMetrics, WebhookMetrics};

/// Trace spans dropped because the export queue was full. Counted from
/// before any registry exists (telemetry starts first), so it lives here
/// and every registry registers it.
static SPANS_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "spans_dropped_total",
        "Trace spans dropped because the export queue was full (the collector is slow or down).",
    )
    .expect("valid metric")
});

/// A trace span found the export queue full.
pub(crate) fn span_dropped() {
    SPANS_DROPPED.inc();
}

/// All metrics, registered in one registry, grouped by stage.
pub(crate) struct Metrics {
    registry: Registry,
    records: RecordMetrics,
    jobs: JobMetrics,
    api: ApiMetrics,
    kafka: KafkaMetrics,
    webhooks: WebhookMetrics,
    store: StoreMetrics,
    /// `credits_saved_total` of the labels the hot path uses, resolved once.
    saved: [(&'static str, IntCounter); 3],
    /// Start-up, by phase (bounded labels; see [`Metrics::startup_step`]).
    startup: GaugeVec,
    /// When the pipeline began starting (this registry was made).
    born: Instant,
    first_output: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub(crate) fn new() -> Self {
        let r = Registry::new_custom(Some("identify".into()), None).expect("valid prefix");
        let jobs = JobMetrics::register(&r);
        let saved = ["dedupe", "cache", "store"].map(|l| (l, jobs.credits_saved.with_label_values(&[l])));
        Self {
            records: RecordMetrics::register(&r),
            saved,
            jobs,
            api: ApiMetrics::register(&r),
            kafka: KafkaMetrics::register(&r),
            webhooks: WebhookMetrics::register(&r),
            store: StoreMetrics::register(&r),
            startup: {
                let g = GaugeVec::new(
                    Opts::new(
                        "startup_seconds",
                        "Start-up: how long each step took (store, sink, consumer), and when the group was joined and the first output acknowledged (joined, first_output), in seconds since the pipeline began starting.",
                    ),
                    &["phase"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("registered once");
                g
            },
            born: Instant::now(),
            first_output: AtomicBool::new(false),
            registry: {
                r.register(Box::new(SPANS_DROPPED.clone())).expect("registered once");
                r
            },
        }
    }

    /// A start-up step (`store`, `sink`, `consumer`) took `d`.
    pub(crate) fn startup_step(&self, phase: &str, d: Duration) {
        self.startup.with_label_values(&[phase]).set(d.as_secs_f64());
    }

    /// A start-up milestone (`joined`) was reached now.
    pub(crate) fn startup_mark(&self, phase: &str) {
        self.startup
            .with_label_values(&[phase])
            .set(self.born.elapsed().as_secs_f64());
    }

    /// When the pipeline began starting.
    pub(crate) fn born(&self) -> Instant {
        self.born
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encode metrics");
        String::from_utf8(buf).expect("UTF-8 metrics")
    }

    /// `n` input records were consumed (counted per poll batch).
    pub(crate) fn records_consumed(&self, n: u64) {
        self.records.consumed.inc_by(n);
    }
    /// A result record was acknowledged.
    pub(crate) fn record_produced(&self, matched: bool) {
        if !self.first_output.load(Ordering::Relaxed) && !self.first_output.swap(true, Ordering::Relaxed) {
            self.startup_mark("first_output");
        }
        if matched {
            self.records.produced_matched.inc()
        } else {
            self.records.produced_unmatched.inc()
        }
    }
    /// A dead-letter record was acknowledged.
    pub(crate) fn dead_lettered(&self, reason: &str) {
        self.records.dead_letters.with_label_values(&[reason]).inc();
    }
    /// Kafka failed to acknowledge a record.
    pub(crate) fn produce_failed(&self) {
        self.records.produce_errors.inc();
    }
    /// Input timestamp to acknowledgement, gathered locally (no shared
    /// atomics per record) and flushed into the shared histogram with `flush`.
    pub(crate) fn end_to_end_local(&self) -> LocalHistogram {
        self.records.e2e_latency.local()
    }
    /// A batch was handed to a job.
    pub(crate) fn batch_submitted(&self, kind: &str, size: usize) {
        self.jobs.batches.with_label_values(&[kind]).inc();
        self.jobs.batch_size.observe(size as f64);
    }
    /// Jobs currently holding a slot.
    pub(crate) fn set_active_jobs(&self, n: usize) {
        self.jobs.active.set(n as i64);
    }
    /// Input partitions assigned here.
    pub(crate) fn set_assigned_partitions(&self, n: usize) {
        self.jobs.assigned_partitions.set(n as i64);
    }
    /// This pod's share of the key's slots, and the pods it shares them with.
    pub(crate) fn set_slot_share(&self, share: usize, members: usize) {
        self.jobs.slot_share.set(share as i64);
        self.jobs.team_members.set(members as i64);
    }
    /// The API accepted a job.
    pub(crate) fn job_submitted(&self) {
        self.jobs.submitted.inc();
    }
    /// A job attempt reached a final state.
    pub(crate) fn job_finished(&self, outcome: &str, d: Duration) {
        self.jobs.finished.with_label_values(&[outcome]).inc();
        self.jobs
            .duration
            .with_label_values(&[outcome])
            .observe(d.as_secs_f64());
    }
    /// A job is being submitted again.
    pub(crate) fn job_resubmitted(&self) {
        self.jobs.resubmitted.inc();
    }
    /// A submit written ahead was not sent (`reason`: `late_write`, `revoked`).
    pub(crate) fn submit_withheld(&self, reason: &str) {
        self.jobs.withheld.with_label_values(&[reason]).inc();
    }
    /// One API request finished; `status` 0 means no response.
    pub(crate) fn api_request(&self, endpoint: &str, status: u16, d: Duration) {
        let class = match status {
            0 => "error",
            200..=299 => "2xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "other",
        };
        if status == 429 {
            self.api.rate_limited.inc();
        }
        self.api.requests.with_label_values(&[endpoint, class]).inc();
        self.api
            .duration
            .with_label_values(&[endpoint])
            .observe(d.as_secs_f64());
    }
    /// A request is retried.
    pub(crate) fn api_retry(&self, endpoint: &str, error: &str) {
        self.api.retries.with_label_values(&[endpoint, error]).inc();
    }
    /// Credits spent by a job.
    pub(crate) fn credits_spent(&self, n: u64) {
        self.jobs.credits_spent.inc_by(n);
    }
    /// Lookups saved: `source` is `dedupe` (identifier already pending),
    /// `cache` (the hot set), `store` (the local store: resolved by this pod
    /// before a restart, or by another pod), `recovery` (an adopted job's
    /// results).
    pub(crate) fn credits_saved(&self, source: &str, n: u64) {
        // The labels of the hot path, resolved once (no lookup per record).
        match self.saved.iter().find(|(label, _)| *label == source) {
            Some((_, c)) => c.inc_by(n),
            None => self.jobs.credits_saved.with_label_values(&[source]).inc_by(n),
        }
    }
    /// A result file could not be used.
    pub(crate) fn result_file_rejected(&self) {
        self.jobs.result_files_rejected.inc();
    }
    /// Lag of one partition.
    pub(crate) fn set_consumer_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.kafka
            .consumer_lag
            .with_label_values(&[topic, &partition.to_string()])
            .set(lag);
    }
    /// The age of a partition's oldest record not yet committed.
    pub(crate) fn set_lag_seconds(&self, topic: &str, partition: i32, seconds: f64) {
        self.kafka
            .lag_seconds
            .with_label_values(&[topic, &partition.to_string()])
            .set(seconds);
    }
    /// Drops the lag series of a partition no longer assigned.
    pub(crate) fn forget_partition(&self, topic: &str, partition: i32) {
        let labels = [topic, &partition.to_string()];
        let _ = self.kafka.consumer_lag.remove_label_values(&labels);
        let _ = self.kafka.lag_seconds.remove_label_values(&labels);
    }
    /// Records in flight.
    pub(crate) fn set_in_flight(&self, n: usize) {
        self.records.in_flight.set(n as i64);
    }
    /// Outputs held back for per-key order.
    pub(crate) fn set_held_outputs(&self, n: usize) {
        self.records.held.set(n as i64);
    }
    /// Partitions paused.
    pub(crate) fn set_paused_partitions(&self, n: usize) {
        self.kafka.paused_partitions.set(n as i64);
    }
    /// Taking records halted for the schema registry (or resumed).
    pub(crate) fn set_registry_halted(&self, halted: bool) {
        self.kafka.registry_halted.set(i64::from(halted));
    }
    /// Outputs wait and Kafka acknowledges none (see `pipeline::stall`).
    pub(crate) fn set_writes_stalled(&self, stalled: bool) {
        self.kafka.writes_stalled.set(i64::from(stalled));
    }
    /// An offset commit finished.
    pub(crate) fn commit(&self, ok: bool) {
        if ok {
            self.kafka.commits.inc()
        } else {
            self.kafka.commit_errors.inc()
        }
    }
    /// A rebalance `assign` or `revoke` callback ran.
    pub(crate) fn rebalance(&self, kind: &str) {
        self.kafka.rebalances.with_label_values(&[kind]).inc();
    }
    /// A webhook callback was `accepted` or `rejected`.
    pub(crate) fn webhook_callback(&self, accepted: bool) {
        self.webhooks
            .callbacks
            .with_label_values(&[if accepted { "accepted" } else { "rejected" }])
            .inc();
    }
    /// A webhook request answered 429 (the endpoint's rate limit).
    pub(crate) fn webhook_throttled(&self) {
        self.webhooks.callbacks.with_label_values(&["throttled"]).inc();
    }
    /// A status check was woken by a callback.
    pub(crate) fn webhook_wakeup(&self) {
        self.webhooks.wakeups.inc();
    }
    /// A journaled job was taken up; `source` is `journal` or `claim`.
    pub(crate) fn job_adopted(&self, source: &str) {
        self.jobs.adopted.with_label_values(&[source]).inc();
    }
    /// A lost submit answer's verdict: `ours`, `not_created` or `undecided`.
    pub(crate) fn lost_submit(&self, verdict: &str) {
        self.jobs.lost_submits.with_label_values(&[verdict]).inc();
    }
    /// Jobs in the journal.
    pub(crate) fn set_journal_jobs(&self, n: usize) {
        self.jobs.journal_jobs.set(n as i64);
    }
    /// Submitting halted (or resumed).
    pub(crate) fn set_halted(&self, halted: bool) {
        if halted {
            self.jobs.halts.inc();
        }
        self.jobs.halted.set(i64::from(halted));
    }
    /// Submitting halted by the credit budget (or resumed).
    pub(crate) fn set_budget_halted(&self, halted: bool) {
        self.jobs.budget_halted.set(i64::from(halted));
    }
    /// Credits left in the current `window` (`hour` or `day`).
    pub(crate) fn set_budget_remaining(&self, window: &str, credits: u64) {
        self.jobs
            .budget_remaining
            .with_label_values(&[window])
            .set(credits as i64);
    }
    /// (records published, credits spent, records waiting: the consumer lag
    /// plus the records consumed and not yet published) now: what the
    /// budget's forecast is computed from.
    pub(crate) fn spend_sample(&self) -> (u64, u64, i64) {
        let lag: i64 = self
            .kafka
            .consumer_lag
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .map(|m| m.get_gauge().get_value() as i64)
            .filter(|v| *v > 0)
            .sum();
        let published = self.records.produced_matched.get() + self.records.produced_unmatched.get();
        (
            published,
            self.jobs.credits_spent.get(),
            lag + self.records.in_flight.get(),
        )
    }
    /// The credits the backlog is expected to cost.
    pub(crate) fn set_budget_forecast(&self, credits: u64) {
        self.jobs.budget_forecast.set(credits as i64);
    }
    /// A status word the API does not document.
    pub(crate) fn unknown_status(&self) {
        self.jobs.unknown_status.inc();
    }
    /// Store records applied to the local store.
    pub(crate) fn store_applied(&self, n: usize) {
        self.store.applied.inc_by(n as u64);
    }
    /// The store was restored in `secs`.
    pub(crate) fn store_restored(&self, secs: f64) {
        self.store.restore_seconds.set(secs);
    }
    /// Results in the local store.
    pub(crate) fn set_store_results(&self, n: u64) {
        self.store.results.set(n as i64);
    }
    /// Store writes not acknowledged.
    pub(crate) fn store_write_failed_by(&self, n: usize) {
        self.store.write_errors.inc_by(n as u64);
    }
    /// Bytes in the hot set.
    pub(crate) fn set_store_hot_bytes(&self, n: u64) {
        self.store.hot_bytes.set(n as i64);
    }
}
