//! Metrics: every Prometheus metric the connector exports, defined here and
//! nowhere else. Call sites use the named methods; labels are bounded.

use std::time::Duration;

use prometheus::{
    exponential_buckets, Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// All metrics, registered in one registry, grouped by stage.
pub(crate) struct Metrics {
    registry: Registry,
    records: RecordMetrics,
    jobs: JobMetrics,
    api: ApiMetrics,
    kafka: KafkaMetrics,
    webhooks: WebhookMetrics,
    store: StoreMetrics,
}

/// The result store.
struct StoreMetrics {
    applied: IntCounter,
    restore_seconds: Gauge,
    results: IntGauge,
    write_errors: IntCounter,
    hot_bytes: IntGauge,
}

/// Records through the pipeline.
struct RecordMetrics {
    consumed: IntCounter,
    produced_matched: IntCounter,
    produced_unmatched: IntCounter,
    dead_letters: IntCounterVec,
    in_flight: IntGauge,
    e2e_latency: Histogram,
    produce_errors: IntCounter,
}

/// Batches, jobs and credits.
struct JobMetrics {
    batches: IntCounterVec,
    batch_size: Histogram,
    active: IntGauge,
    submitted: IntCounter,
    finished: IntCounterVec,
    duration: HistogramVec,
    resubmitted: IntCounter,
    credits_spent: IntCounter,
    credits_saved: IntCounterVec,
    result_files_rejected: IntCounter,
    adopted: IntCounterVec,
    unknown_status: IntCounter,
    halted: IntGauge,
    halts: IntCounter,
}

/// API requests.
struct ApiMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    retries: IntCounterVec,
    rate_limited: IntCounter,
}

/// The consumer group.
struct KafkaMetrics {
    consumer_lag: IntGaugeVec,
    paused_partitions: IntGauge,
    commits: IntCounter,
    commit_errors: IntCounter,
    rebalances: IntCounterVec,
}

/// Webhook callbacks.
struct WebhookMetrics {
    callbacks: IntCounterVec,
    wakeups: IntCounter,
}

/// 50 ms to about 1.8 h (api.job_timeout defaults to 30 min).
fn seconds_buckets() -> Vec<f64> {
    exponential_buckets(0.05, 2.0, 18).expect("buckets")
}

impl RecordMetrics {
    fn register(r: &Registry) -> Self {
        // Per-record counters get their labels resolved once, here.
        let produced = counter_vec(
            r,
            "records_produced_total",
            "Result records acknowledged by Kafka.",
            &["result"],
        );
        Self {
            consumed: counter(r, "records_consumed_total", "Input records consumed."),
            produced_matched: produced.with_label_values(&["matched"]),
            produced_unmatched: produced.with_label_values(&["unmatched"]),
            dead_letters: counter_vec(
                r,
                "dead_letters_total",
                "Records acknowledged on the dead-letter topic.",
                &["reason"],
            ),
            in_flight: gauge(
                r,
                "in_flight_records",
                "Records consumed whose output is not yet acknowledged.",
            ),
            e2e_latency: histogram(
                r,
                "end_to_end_latency_seconds",
                "Input record timestamp to output acknowledged.",
                seconds_buckets(),
                &[],
            )
            .with_label_values(&[] as &[&str]),
            produce_errors: counter(r, "produce_errors_total", "Records Kafka failed to acknowledge."),
        }
    }
}

impl JobMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            batches: counter_vec(r, "batches_total", "Batches submitted as jobs.", &["identifier_type"]),
            batch_size: histogram(
                r,
                "batch_size",
                "Unique identifiers per submitted job.",
                vec![1.0, 10.0, 50.0, 100.0, 200.0, 299.0, 300.0],
                &[],
            )
            .with_label_values(&[] as &[&str]),
            active: gauge(
                r,
                "active_jobs",
                "Jobs holding a slot (submitted, results not yet published).",
            ),
            submitted: counter(r, "jobs_submitted_total", "Jobs the API accepted."),
            finished: counter_vec(r, "jobs_finished_total", "Job attempts by outcome.", &["outcome"]),
            duration: histogram(
                r,
                "job_duration_seconds",
                "Submit to final status, per job attempt.",
                seconds_buckets(),
                &["outcome"],
            ),
            resubmitted: counter(
                r,
                "jobs_resubmitted_total",
                "Job attempts after a failure, timeout or bad result file.",
            ),
            credits_spent: counter(
                r,
                "credits_spent_total",
                "Credits spent: matched identifiers in job results.",
            ),
            credits_saved: counter_vec(
                r,
                "credits_saved_total",
                "Lookups answered without a new API lookup.",
                &["source"],
            ),
            result_files_rejected: counter(
                r,
                "result_files_rejected_total",
                "Result files that were corrupt, truncated or too large.",
            ),
            adopted: counter_vec(
                r,
                "jobs_adopted_total",
                "Jobs this pod did not submit (or whose answer was lost) whose results it fetched, by how it learnt of them.",
                &["source"],
            ),
            unknown_status: counter(
                r,
                "api_unknown_status_total",
                "Status responses with a status word the API does not document.",
            ),
            halted: gauge(
                r,
                "submits_halted",
                "1 while submitting is halted because the API refuses every submit.",
            ),
            halts: counter(
                r,
                "submit_halts_total",
                "Times submitting halted because the API refused every submit.",
            ),
        }
    }
}

impl ApiMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            requests: counter_vec(
                r,
                "api_requests_total",
                "API requests by endpoint and status class.",
                &["endpoint", "status"],
            ),
            duration: histogram(
                r,
                "api_request_duration_seconds",
                "API request latency.",
                exponential_buckets(0.005, 2.0, 14).expect("buckets"),
                &["endpoint"],
            ),
            retries: counter_vec(
                r,
                "api_retries_total",
                "Retried API requests by endpoint and error.",
                &["endpoint", "error"],
            ),
            rate_limited: counter(r, "api_rate_limited_total", "429 responses."),
        }
    }
}

impl KafkaMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            consumer_lag: gauge_vec(
                r,
                "consumer_lag",
                "Consumer lag per partition (librdkafka statistics).",
                &["topic", "partition"],
            ),
            paused_partitions: gauge(r, "paused_partitions", "Partitions paused by back-pressure."),
            commits: counter(r, "commits_total", "Successful offset commits."),
            commit_errors: counter(r, "commit_errors_total", "Failed offset commits."),
            rebalances: counter_vec(r, "rebalances_total", "Rebalance callbacks by kind.", &["kind"]),
        }
    }
}

impl StoreMetrics {
    fn register(r: &Registry) -> Self {
        let restore_seconds = Gauge::new(
            "store_restore_seconds",
            "Time the last start-up took to restore the store from its topic.",
        )
        .expect("valid metric");
        r.register(Box::new(restore_seconds.clone())).expect("unique metric");
        Self {
            applied: counter(
                r,
                "store_records_applied_total",
                "Store-topic records applied to the local store.",
            ),
            restore_seconds,
            results: gauge(r, "store_results", "Resolved identifiers in the local store."),
            write_errors: counter(
                r,
                "store_write_errors_total",
                "Store-topic writes Kafka did not acknowledge.",
            ),
            hot_bytes: gauge(r, "store_hot_bytes", "Bytes of results held in memory (the hot set)."),
        }
    }
}

impl WebhookMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            callbacks: counter_vec(
                r,
                "webhook_callbacks_total",
                "Webhook callbacks by result.",
                &["result"],
            ),
            wakeups: counter(
                r,
                "webhook_wakeups_total",
                "Status checks triggered by a webhook callback.",
            ),
        }
    }
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
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
        Self {
            records: RecordMetrics::register(&r),
            jobs: JobMetrics::register(&r),
            api: ApiMetrics::register(&r),
            kafka: KafkaMetrics::register(&r),
            webhooks: WebhookMetrics::register(&r),
            store: StoreMetrics::register(&r),
            registry: r,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encode metrics");
        String::from_utf8(buf).expect("UTF-8 metrics")
    }

    /// An input record was consumed.
    pub(crate) fn record_consumed(&self) {
        self.records.consumed.inc();
    }
    /// A result record was acknowledged.
    pub(crate) fn record_produced(&self, matched: bool) {
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
    /// Input timestamp to acknowledgement.
    pub(crate) fn end_to_end(&self, d: Duration) {
        self.records.e2e_latency.observe(d.as_secs_f64());
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
        self.jobs.credits_saved.with_label_values(&[source]).inc_by(n);
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
    /// Drops the lag series of a partition no longer assigned.
    pub(crate) fn forget_partition(&self, topic: &str, partition: i32) {
        let _ = self
            .kafka
            .consumer_lag
            .remove_label_values(&[topic, &partition.to_string()]);
    }
    /// Records in flight.
    pub(crate) fn set_in_flight(&self, n: usize) {
        self.records.in_flight.set(n as i64);
    }
    /// Partitions paused.
    pub(crate) fn set_paused_partitions(&self, n: usize) {
        self.kafka.paused_partitions.set(n as i64);
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
    /// A status check was woken by a callback.
    pub(crate) fn webhook_wakeup(&self) {
        self.webhooks.wakeups.inc();
    }
    /// A job was adopted; `source` is `journal`, `reconciliation` or `lost_submit`.
    pub(crate) fn job_adopted(&self, source: &str) {
        self.jobs.adopted.with_label_values(&[source]).inc();
    }
    /// Submitting halted (or resumed).
    pub(crate) fn set_halted(&self, halted: bool) {
        if halted {
            self.jobs.halts.inc();
        }
        self.jobs.halted.set(i64::from(halted));
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
