//! Metric families by stage: their names, help texts and buckets. The
//! `Metrics` methods in the parent module are the only call sites.

use prometheus::{
    exponential_buckets, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// The result store.
pub(super) struct StoreMetrics {
    pub(super) applied: IntCounter,
    pub(super) restore_seconds: Gauge,
    pub(super) results: IntGauge,
    pub(super) write_errors: IntCounter,
    pub(super) hot_bytes: IntGauge,
}

/// Records through the pipeline.
pub(super) struct RecordMetrics {
    pub(super) consumed: IntCounter,
    pub(super) produced_matched: IntCounter,
    pub(super) produced_unmatched: IntCounter,
    pub(super) dead_letters: IntCounterVec,
    pub(super) in_flight: IntGauge,
    pub(super) held: IntGauge,
    pub(super) e2e_latency: Histogram,
    pub(super) produce_errors: IntCounter,
}

/// Batches, jobs and credits.
pub(super) struct JobMetrics {
    pub(super) batches: IntCounterVec,
    pub(super) batch_size: Histogram,
    pub(super) active: IntGauge,
    pub(super) slot_share: IntGauge,
    pub(super) team_members: IntGauge,
    pub(super) assigned_partitions: IntGauge,
    pub(super) submitted: IntCounter,
    pub(super) finished: IntCounterVec,
    pub(super) duration: HistogramVec,
    pub(super) resubmitted: IntCounter,
    pub(super) withheld: IntCounterVec,
    pub(super) credits_spent: IntCounter,
    pub(super) credits_saved: IntCounterVec,
    pub(super) result_files_rejected: IntCounter,
    pub(super) adopted: IntCounterVec,
    pub(super) lost_submits: IntCounterVec,
    pub(super) journal_jobs: IntGauge,
    pub(super) unknown_status: IntCounter,
    pub(super) halted: IntGauge,
    pub(super) halts: IntCounter,
    pub(super) budget_halted: IntGauge,
    pub(super) budget_remaining: IntGaugeVec,
    pub(super) budget_forecast: IntGauge,
}

/// API requests.
pub(super) struct ApiMetrics {
    pub(super) requests: IntCounterVec,
    pub(super) duration: HistogramVec,
    pub(super) retries: IntCounterVec,
    pub(super) rate_limited: IntCounter,
}

/// The consumer group.
pub(super) struct KafkaMetrics {
    pub(super) consumer_lag: IntGaugeVec,
    pub(super) lag_seconds: GaugeVec,
    pub(super) paused_partitions: IntGauge,
    pub(super) registry_halted: IntGauge,
    pub(super) writes_stalled: IntGauge,
    pub(super) commits: IntCounter,
    pub(super) commit_errors: IntCounter,
    pub(super) rebalances: IntCounterVec,
}

/// Webhook callbacks.
pub(super) struct WebhookMetrics {
    pub(super) callbacks: IntCounterVec,
    pub(super) wakeups: IntCounter,
}

/// 50 ms to about 1.8 h (api.job_timeout defaults to 30 min).
fn seconds_buckets() -> Vec<f64> {
    exponential_buckets(0.05, 2.0, 18).expect("buckets")
}

impl RecordMetrics {
    pub(super) fn register(r: &Registry) -> Self {
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
            held: gauge(
                r,
                "held_outputs",
                "Outputs held back until an earlier record of their key is out (output.ordering = \"key\").",
            ),
            e2e_latency: histogram(
                r,
                "end_to_end_latency_seconds",
                "Input record's Kafka timestamp to its output's acknowledgement.",
                seconds_buckets(),
                &[],
            )
            .with_label_values(&[] as &[&str]),
            produce_errors: counter(r, "produce_errors_total", "Records Kafka failed to acknowledge."),
        }
    }
}

impl JobMetrics {
    pub(super) fn register(r: &Registry) -> Self {
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
                "Jobs holding one of the key's active-job slots (submitted, not yet reported completed or failed by the API).",
            ),
            slot_share: gauge(
                r,
                "slot_share",
                "This pod's share of the key's active-job slots (pods sharing a key split them).",
            ),
            team_members: gauge(
                r,
                "team_members",
                "Pods sharing the key that this pod hears of (itself included).",
            ),
            assigned_partitions: gauge(r, "assigned_partitions", "Input partitions assigned to this pod."),
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
            withheld: counter_vec(
                r,
                "submits_withheld_total",
                "Submits written ahead but not sent, by reason: late_write (the journal took the record after the lease ran out) or revoked (partitions were revoked while the job waited). Nothing is charged; the identifiers are planned again.",
                &["reason"],
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
                "Journaled jobs this pod took up without submitting them: journal (its own, from before a restart), claim (another pod's, whose owner fell silent).",
                &["source"],
            ),
            lost_submits: counter_vec(
                r,
                "lost_submits_total",
                "Submits whose answer was lost, by the verdict on their content: ours (the job exists: used), not_created (submitted again), undecided (undecided for api.job_timeout: treated as timed out).",
                &["verdict"],
            ),
            journal_jobs: gauge(
                r,
                "journal_jobs",
                "Jobs in the journal this pod holds (in flight, and closed ones until their record is removed).",
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
            budget_halted: gauge(
                r,
                "budget_halted",
                "1 while submitting is halted because the credit budget ([budget]) is spent.",
            ),
            budget_remaining: gauge_vec(
                r,
                "budget_remaining_credits",
                "Credits left in the current budget window (hour or day), counting jobs in flight at their size until they are settled.",
                &["window"],
            ),
            budget_forecast: gauge(
                r,
                "budget_forecast_credits",
                "Estimated credits the backlog (consumer lag plus records consumed and not yet published) will cost, at the credits per published record of the last 5 minutes.",
            ),
        }
    }
}

impl ApiMetrics {
    pub(super) fn register(r: &Registry) -> Self {
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
    pub(super) fn register(r: &Registry) -> Self {
        Self {
            consumer_lag: gauge_vec(
                r,
                "consumer_lag",
                "Consumer lag per partition (librdkafka statistics).",
                &["topic", "partition"],
            ),
            lag_seconds: {
                let g = GaugeVec::new(
                    Opts::new(
                        "lag_seconds",
                        "Age of the partition's oldest record not yet committed (now minus its Kafka timestamp), once consumed; 0 when every record consumed is committed.",
                    ),
                    &["topic", "partition"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            paused_partitions: gauge(r, "paused_partitions", "Partitions paused by back-pressure."),
            registry_halted: gauge(
                r,
                "registry_halted",
                "1 while records are not taken because the schema registry cannot answer.",
            ),
            writes_stalled: gauge(
                r,
                "kafka_writes_stalled",
                "1 while writes (outputs, store records, heartbeats) wait and Kafka has acknowledged none for 10 s (e.g. fewer in-sync replicas than min.insync.replicas).",
            ),
            commits: counter(r, "commits_total", "Successful offset commits."),
            commit_errors: counter(r, "commit_errors_total", "Failed offset commits."),
            rebalances: counter_vec(r, "rebalances_total", "Rebalance callbacks by kind.", &["kind"]),
        }
    }
}

impl StoreMetrics {
    pub(super) fn register(r: &Registry) -> Self {
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
    pub(super) fn register(r: &Registry) -> Self {
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
