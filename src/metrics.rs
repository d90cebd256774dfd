//! Metrics: every Prometheus metric the connector exports, defined here and
//! nowhere else. Call sites use the named methods; labels are bounded.

use std::time::Duration;

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// All metrics, registered in one registry.
pub struct Metrics {
    registry: Registry,
    records_consumed: IntCounter,
    produced_matched: IntCounter,
    produced_unmatched: IntCounter,
    dead_letters: IntCounterVec,
    batches: IntCounterVec,
    batch_size: Histogram,
    active_jobs: IntGauge,
    jobs_submitted: IntCounter,
    jobs_finished: IntCounterVec,
    job_duration: HistogramVec,
    jobs_resubmitted: IntCounter,
    api_requests: IntCounterVec,
    api_request_duration: HistogramVec,
    api_retries: IntCounterVec,
    rate_limited: IntCounter,
    credits_spent: IntCounter,
    credits_saved: IntCounterVec,
    result_files_rejected: IntCounter,
    consumer_lag: IntGaugeVec,
    in_flight: IntGauge,
    paused_partitions: IntGauge,
    e2e_latency: Histogram,
    commits: IntCounter,
    rebalances: IntCounterVec,
    commit_errors: IntCounter,
    webhook_callbacks: IntCounterVec,
    webhook_wakeups: IntCounter,
    produce_errors: IntCounter,
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
    pub fn new() -> Self {
        let r = Registry::new_custom(Some("identify".into()), None).expect("valid prefix");
        // 50 ms to about 1.8 h (api.job_timeout defaults to 30 min).
        let secs = exponential_buckets(0.05, 2.0, 18).expect("buckets");
        // Per-record counters get their labels resolved once, here.
        let produced = counter_vec(
            &r,
            "records_produced_total",
            "Result records acknowledged by Kafka.",
            &["result"],
        );
        Self {
            records_consumed: counter(&r, "records_consumed_total", "Input records consumed."),
            produced_matched: produced.with_label_values(&["matched"]),
            produced_unmatched: produced.with_label_values(&["unmatched"]),
            dead_letters: counter_vec(
                &r,
                "dead_letters_total",
                "Records acknowledged on the dead-letter topic.",
                &["reason"],
            ),
            batches: counter_vec(&r, "batches_total", "Batches submitted as jobs.", &["identifier_type"]),
            batch_size: histogram(
                &r,
                "batch_size",
                "Unique identifiers per submitted job.",
                vec![1.0, 10.0, 50.0, 100.0, 200.0, 299.0, 300.0],
                &[],
            )
            .with_label_values(&[] as &[&str]),
            active_jobs: gauge(
                &r,
                "active_jobs",
                "Jobs holding a slot (submitted, results not yet published).",
            ),
            jobs_submitted: counter(&r, "jobs_submitted_total", "Jobs the API accepted."),
            jobs_finished: counter_vec(&r, "jobs_finished_total", "Job attempts by outcome.", &["outcome"]),
            job_duration: histogram(
                &r,
                "job_duration_seconds",
                "Submit to final status, per job attempt.",
                secs.clone(),
                &["outcome"],
            ),
            jobs_resubmitted: counter(
                &r,
                "jobs_resubmitted_total",
                "Job attempts after a failure, timeout or bad result file.",
            ),
            api_requests: counter_vec(
                &r,
                "api_requests_total",
                "API requests by endpoint and status class.",
                &["endpoint", "status"],
            ),
            api_request_duration: histogram(
                &r,
                "api_request_duration_seconds",
                "API request latency.",
                exponential_buckets(0.005, 2.0, 14).expect("buckets"),
                &["endpoint"],
            ),
            api_retries: counter_vec(
                &r,
                "api_retries_total",
                "Retried API requests by endpoint and error.",
                &["endpoint", "error"],
            ),
            rate_limited: counter(&r, "api_rate_limited_total", "429 responses."),
            credits_spent: counter(
                &r,
                "credits_spent_total",
                "Credits spent: matched identifiers in job results.",
            ),
            credits_saved: counter_vec(
                &r,
                "credits_saved_total",
                "Lookups answered without a new API lookup.",
                &["source"],
            ),
            result_files_rejected: counter(
                &r,
                "result_files_rejected_total",
                "Result files that were corrupt, truncated or too large.",
            ),
            consumer_lag: IntGaugeVec::new(
                Opts::new("consumer_lag", "Consumer lag per partition (librdkafka statistics)."),
                &["topic", "partition"],
            )
            .inspect(|g| r.register(Box::new(g.clone())).expect("unique metric"))
            .expect("valid metric"),
            in_flight: gauge(
                &r,
                "in_flight_records",
                "Records consumed whose output is not yet acknowledged.",
            ),
            paused_partitions: gauge(&r, "paused_partitions", "Partitions paused by back-pressure."),
            e2e_latency: histogram(
                &r,
                "end_to_end_latency_seconds",
                "Input record timestamp to output acknowledged.",
                secs,
                &[],
            )
            .with_label_values(&[] as &[&str]),
            commits: counter(&r, "commits_total", "Successful offset commits."),
            rebalances: counter_vec(&r, "rebalances_total", "Rebalance callbacks by kind.", &["kind"]),
            commit_errors: counter(&r, "commit_errors_total", "Failed offset commits."),
            webhook_callbacks: counter_vec(
                &r,
                "webhook_callbacks_total",
                "Webhook callbacks by result.",
                &["result"],
            ),
            webhook_wakeups: counter(
                &r,
                "webhook_wakeups_total",
                "Status checks triggered by a webhook callback.",
            ),
            produce_errors: counter(&r, "produce_errors_total", "Records Kafka failed to acknowledge."),
            registry: r,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encode metrics");
        String::from_utf8(buf).expect("UTF-8 metrics")
    }

    /// An input record was consumed.
    pub fn record_consumed(&self) {
        self.records_consumed.inc();
    }
    /// A result record was acknowledged.
    pub fn record_produced(&self, matched: bool) {
        if matched {
            self.produced_matched.inc()
        } else {
            self.produced_unmatched.inc()
        }
    }
    /// A dead-letter record was acknowledged.
    pub fn dead_lettered(&self, reason: &str) {
        self.dead_letters.with_label_values(&[reason]).inc();
    }
    /// Kafka failed to acknowledge a record.
    pub fn produce_failed(&self) {
        self.produce_errors.inc();
    }
    /// Input timestamp to acknowledgement.
    pub fn end_to_end(&self, d: Duration) {
        self.e2e_latency.observe(d.as_secs_f64());
    }
    /// A batch was handed to a job.
    pub fn batch_submitted(&self, kind: &str, size: usize) {
        self.batches.with_label_values(&[kind]).inc();
        self.batch_size.observe(size as f64);
    }
    /// Jobs currently holding a slot.
    pub fn set_active_jobs(&self, n: usize) {
        self.active_jobs.set(n as i64);
    }
    /// The API accepted a job.
    pub fn job_submitted(&self) {
        self.jobs_submitted.inc();
    }
    /// A job attempt reached a final state.
    pub fn job_finished(&self, outcome: &str, d: Duration) {
        self.jobs_finished.with_label_values(&[outcome]).inc();
        self.job_duration.with_label_values(&[outcome]).observe(d.as_secs_f64());
    }
    /// A job is being submitted again.
    pub fn job_resubmitted(&self) {
        self.jobs_resubmitted.inc();
    }
    /// One API request finished; `status` 0 means no response.
    pub fn api_request(&self, endpoint: &str, status: u16, d: Duration) {
        let class = match status {
            0 => "error",
            200..=299 => "2xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "other",
        };
        if status == 429 {
            self.rate_limited.inc();
        }
        self.api_requests.with_label_values(&[endpoint, class]).inc();
        self.api_request_duration
            .with_label_values(&[endpoint])
            .observe(d.as_secs_f64());
    }
    /// A request is retried.
    pub fn api_retry(&self, endpoint: &str, error: &str) {
        self.api_retries.with_label_values(&[endpoint, error]).inc();
    }
    /// Credits spent by a job.
    pub fn credits_spent(&self, n: u64) {
        self.credits_spent.inc_by(n);
    }
    /// Lookups saved: `source` is `dedupe` (identifier already pending),
    /// `cache` or `recovery` (a previous owner's job).
    pub fn credits_saved(&self, source: &str, n: u64) {
        self.credits_saved.with_label_values(&[source]).inc_by(n);
    }
    /// A result file could not be used.
    pub fn result_file_rejected(&self) {
        self.result_files_rejected.inc();
    }
    /// Lag of one partition.
    pub fn set_consumer_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.consumer_lag
            .with_label_values(&[topic, &partition.to_string()])
            .set(lag);
    }
    /// Drops the lag series of a partition no longer assigned.
    pub fn forget_partition(&self, topic: &str, partition: i32) {
        let _ = self.consumer_lag.remove_label_values(&[topic, &partition.to_string()]);
    }
    /// Records in flight.
    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.set(n as i64);
    }
    /// Partitions paused.
    pub fn set_paused_partitions(&self, n: usize) {
        self.paused_partitions.set(n as i64);
    }
    /// An offset commit finished.
    pub fn commit(&self, ok: bool) {
        if ok {
            self.commits.inc()
        } else {
            self.commit_errors.inc()
        }
    }
    /// A rebalance `assign` or `revoke` callback ran.
    pub fn rebalance(&self, kind: &str) {
        self.rebalances.with_label_values(&[kind]).inc();
    }
    /// A webhook callback was `accepted` or `rejected`.
    pub fn webhook_callback(&self, accepted: bool) {
        self.webhook_callbacks
            .with_label_values(&[if accepted { "accepted" } else { "rejected" }])
            .inc();
    }
    /// A status check was woken by a callback.
    pub fn webhook_wakeup(&self) {
        self.webhook_wakeups.inc();
    }
}
