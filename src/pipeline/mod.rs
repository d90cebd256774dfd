//! Pipeline: builds the stages and wires them (source -> dispatch -> jobs
//! -> sink, the HTTP server, the API-key [`probe`]), then runs the
//! [`shutdown`] sequence when asked or when a stage fails.

mod probe;
mod shutdown;
mod stall;

pub use probe::check_api;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{info, warn};

use crate::api::{ApiClient, ApiError};
use crate::budget::{self, Budget, Forecast};
use crate::config::Config;
use crate::decode::Decoder;
use crate::dispatch::{self, DispatchError, Dispatcher};
use crate::health::Health;
use crate::jobs::JobContext;
use crate::lookup;
use crate::metrics::Metrics;
use crate::offsets::OffsetTracker;
use crate::server::{self, ServerState};
use crate::sink::{Fatal, KafkaSink, SinkError};
use crate::source::{self, SourceControl, SourceError, SourceParts};
use crate::store::{KafkaStore, StoreError};
use crate::wake::WakeRegistry;

/// Why the pipeline could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The API client could not be built.
    #[error("API client: {0}")]
    Api(#[from] ApiError),
    /// The producer could not be built.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The consumer could not be built, or its thread failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The result store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The schema registry client could not be built.
    #[error("schema registry: {0}")]
    Registry(#[from] crate::registry::RegistryError),
    /// The HTTP server could not bind.
    #[error("HTTP server on {listen}: {source}")]
    Server {
        /// The address.
        listen: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The dispatcher failed; nothing after its records was committed.
    #[error("pipeline failed: {0}")]
    Dispatch(#[from] DispatchError),
    /// The pipeline task ended without a result (it panicked).
    #[error("pipeline failed: the pipeline task vanished")]
    Vanished,
    /// The consumer stopped although no shutdown was asked for.
    #[error("pipeline failed: consumer stopped unexpectedly")]
    SourceClosed,
}

/// Handles a running pipeline exposes (for tests and the binary).
pub struct Running {
    /// Where the HTTP server listens.
    pub http_addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    done: oneshot::Receiver<Result<(), PipelineError>>,
}

impl Running {
    /// Liveness, as `/healthz` reports it.
    pub fn live(&self) -> bool {
        self.health.live()
    }

    /// Readiness, as `/readyz` reports it.
    pub fn ready(&self) -> bool {
        self.health.ready()
    }

    /// The Prometheus text exposition of every metric (what `/metrics` serves).
    pub fn metrics(&self) -> String {
        self.metrics.render()
    }

    /// Waits for the pipeline to stop.
    pub async fn wait(self) -> Result<(), PipelineError> {
        self.done.await.unwrap_or(Err(PipelineError::Vanished))
    }
}

/// Starts the pipeline; it stops when `shutdown` resolves (or on a fatal
/// error). Fails at once when a stage cannot be built.
pub async fn start(cfg: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<Running, PipelineError> {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let tracker = Arc::new(Mutex::new(OffsetTracker::new()));
    let fatal = Arc::new(Fatal::default());
    let wakers = Arc::new(WakeRegistry::default());

    let api = Arc::new(ApiClient::new(&cfg.api, metrics.clone())?);
    let (server_stop, server_stop_rx) = oneshot::channel::<()>();
    let state = ServerState {
        metrics: metrics.clone(),
        health: health.clone(),
        wakers: wakers.clone(),
        webhook_rate: server::webhook_limiter(),
    };
    let (http_addr, server_task) = server::serve(&cfg.server.listen, state, async {
        let _ = server_stop_rx.await;
    })
    .await
    .map_err(|source| PipelineError::Server {
        listen: cfg.server.listen.clone(),
        source,
    })?;
    info!(%http_addr, "HTTP server listening");

    // Records are taken only once the store knows everything resolved before.
    health.set_restoring(true);
    let step = std::time::Instant::now();
    // A shutdown asked for while the store restores ends the start at once:
    // nothing was taken from the input yet, so there is nothing to finish.
    let mut shutdown = Box::pin(shutdown);
    let budget = Arc::new(Budget::new(&cfg.budget, health.clone(), metrics.clone()));
    let store = tokio::select! {
        store = KafkaStore::open(&cfg, metrics.clone(), budget.clone()) => store?,
        () = &mut shutdown => {
            info!("shutdown asked for while the store restored; stopping");
            let _ = server_stop.send(());
            let _ = server_task.await;
            let (done_tx, done) = oneshot::channel();
            let _ = done_tx.send(Ok(()));
            return Ok(Running { http_addr, metrics, health, done });
        }
    };
    metrics.startup_step("store", step.elapsed());
    health.set_restoring(false);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let webhook = (!cfg.webhook.public_url.is_empty()).then(|| {
        (
            format!("{}/webhooks/crustdata", cfg.webhook.public_url.trim_end_matches('/')),
            cfg.webhook.fallback_poll_interval,
        )
    });
    let ctx = Arc::new(JobContext {
        api: api.clone(),
        cfg: cfg.api.clone(),
        estimator: Mutex::default(),
        learnt: Notify::new(),
        health: health.clone(),
        metrics: metrics.clone(),
        webhook,
        wakers,
        events: events_tx,
        store: store.clone(),
        tracker: tracker.clone(),
    });
    if cfg.kafka.exactly_once && cfg.kafka.instance_id.is_empty() {
        warn!(
            "kafka.exactly_once without kafka.instance_id: after a crash, the open transaction of the pod \
             that died holds back read_committed readers and this group's offsets until the broker aborts it \
             (transaction.timeout.ms); give each replica a stable instance_id (the chart's staticMembership)"
        );
    }
    // Stable across restarts with static membership, so that a restarted
    // pod fences its predecessor's open transaction at once.
    let transactional_id = cfg
        .kafka
        .exactly_once
        .then(|| format!("{}-{}", cfg.kafka.group_id, store.team().me()));
    let registry = (cfg.input.format == crate::config::InputFormat::Registry || cfg.output.uses_registry())
        .then(|| crate::registry::Registry::new(&cfg.schema_registry, tokio::runtime::Handle::current()))
        .transpose()?
        .map(Arc::new);
    let encoder = registry
        .as_ref()
        .and_then(|r| crate::registry::Encoder::new(r.clone(), &cfg.output, &cfg.kafka.output_topic))
        .map(Arc::new);
    if let Some(encoder) = &encoder {
        // A registry that refuses result mode's schema stops the start.
        let step = std::time::Instant::now();
        encoder.prepare().await?;
        metrics.startup_step("output_schema", step.elapsed());
    }
    let step = std::time::Instant::now();
    let sink = Arc::new(
        KafkaSink::new(
            &cfg.kafka,
            &cfg.output,
            transactional_id.as_deref(),
            tracker.clone(),
            metrics.clone(),
            fatal.clone(),
        )?
        .with_encoder(encoder.clone()),
    );
    metrics.startup_step("sink", step.elapsed());

    let step = std::time::Instant::now();
    let (tx, rx) = mpsc::unbounded_channel();
    let control = Arc::new(SourceControl::default());
    let source_thread = source::spawn(SourceParts {
        cfg: cfg.kafka.clone(),
        decoder: Decoder::new(&cfg.input, cfg.output.enrich_pointer())
            .with_registry(registry)
            .with_encoder(encoder),
        keep_headers: cfg.output.forward_headers,
        tracker: tracker.clone(),
        sink: sink.clone(),
        tx,
        metrics: metrics.clone(),
        health: health.clone(),
        control: control.clone(),
    })?;
    metrics.startup_step("consumer", step.elapsed());

    let probe = tokio::spawn(probe::probe_key(api.clone(), health.clone()));
    let lookups = tokio::spawn(lookup::serve(store.clone(), lookup::socket_path(&cfg.cache.dir)));
    let gauges = tokio::spawn(gauges(
        store.clone(),
        api.clone(),
        tracker.clone(),
        metrics.clone(),
        cfg.api.max_active_jobs,
        (sink.clone(), health.clone()),
    ));
    let dispatcher = Dispatcher::new(
        &cfg,
        dispatch::Parts {
            runner: ctx,
            sink: sink.clone(),
            store: store.clone(),
            tracker,
            metrics: metrics.clone(),
            health: health.clone(),
            fatal: fatal.clone(),
            team: store.team(),
            budget,
        },
    );
    let (done_tx, done) = oneshot::channel();
    let stages = shutdown::Stages {
        dispatcher,
        records: rx,
        events: events_rx,
        grace: cfg.shutdown.timeout,
        probe,
        gauges,
        lookups,
        store,
        sink,
        control,
        source_thread,
        fatal,
        health: health.clone(),
        server_stop,
        server_task,
    };
    tokio::spawn(async move {
        let _ = done_tx.send(stages.run(shutdown).await);
    });
    Ok(Running {
        http_addr,
        metrics,
        health,
        done,
    })
}

/// Every second: the gauges nothing else keeps current (the hot set's
/// bytes, the journal's jobs, the partitions assigned here, also for the
/// team's member records when no record arrives to wake the dispatcher,
/// and this pod's slot share), and this pod's part of the key's request
/// budget.
async fn gauges(
    store: Arc<KafkaStore>,
    api: Arc<ApiClient>,
    tracker: Arc<Mutex<OffsetTracker>>,
    metrics: Arc<Metrics>,
    slots: usize,
    (sink, health): (Arc<KafkaSink>, Arc<Health>),
) {
    let team = store.team();
    let mut stall = stall::StallWatch::default();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut forecast = Forecast::default();
    let mut told = std::time::Instant::now();
    loop {
        tick.tick().await;
        let (store_pending, store_acked) = store.writes();
        let pending = u64::try_from(sink.pending()).unwrap_or(0) + store_pending;
        stall.report(pending, sink.acked() + store_acked, &health, &metrics);
        metrics.set_store_hot_bytes(store.hot_bytes());
        metrics.set_journal_jobs(store.journal_len());
        let budget = store.budget();
        if budget.enabled() {
            let now_ms = crate::model::now_ms();
            budget.report(now_ms);
            let (published, credits, waiting) = metrics.spend_sample();
            if let Some(cost) = forecast.sample(std::time::Instant::now(), published, credits, waiting) {
                metrics.set_budget_forecast(cost);
                if told.elapsed() >= budget::FORECAST_EVERY {
                    told = std::time::Instant::now();
                    let room = budget.room(now_ms).map_or(0, |r| r.credits);
                    info!(
                        backlog_records = waiting,
                        expected_credits = cost,
                        room_credits = room,
                        "budget forecast"
                    );
                }
            }
        }
        let assigned = tracker.lock().expect("tracker").assigned();
        team.set_partitions(assigned as u32);
        metrics.set_assigned_partitions(assigned);
        let room = team.room(slots, std::time::Instant::now());
        metrics.set_slot_share(room.share, room.members);
        // api.requests_per_minute is the key's: each pod takes the part
        // its share of the slots needs.
        api.share_budget(room.share, slots);
    }
}
