//! The running pipeline and its shutdown sequence: the dispatcher runs
//! until shutdown is asked for (or a stage fails); then consuming stops,
//! running jobs get `shutdown.timeout` to publish, the producer is flushed,
//! the consumer commits what is safe and leaves the group, the store
//! delivers its last writes, and the HTTP server stops last.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;
use tokio::task::JoinHandle as TaskHandle;
use tracing::{error, info, warn};

use super::PipelineError;
use crate::dispatch::{DispatchError, Dispatcher, Stopped};
use crate::health::Health;
use crate::jobs::{JobContext, JobEvent};
use crate::sink::{Fatal, KafkaSink};
use crate::source::{SourceControl, SourceError, SourceEvent};
use crate::store::KafkaStore;

/// Every running stage, as the shutdown sequence needs them.
pub(super) struct Stages {
    pub(super) dispatcher: Dispatcher<KafkaSink, Arc<JobContext>, KafkaStore>,
    pub(super) records: UnboundedReceiver<SourceEvent>,
    pub(super) events: UnboundedReceiver<JobEvent>,
    pub(super) grace: Duration,
    pub(super) probe: TaskHandle<()>,
    pub(super) gauges: TaskHandle<()>,
    /// The `lookup` tool's socket.
    pub(super) lookups: TaskHandle<()>,
    pub(super) store: Arc<KafkaStore>,
    pub(super) sink: Arc<KafkaSink>,
    pub(super) control: Arc<SourceControl>,
    pub(super) source_thread: JoinHandle<Result<(), SourceError>>,
    pub(super) fatal: Arc<Fatal>,
    pub(super) health: Arc<Health>,
    pub(super) server_stop: oneshot::Sender<()>,
    pub(super) server_task: TaskHandle<()>,
}

/// How long the producer may take to deliver what it holds at shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

impl Stages {
    /// Runs the pipeline until `shutdown` resolves or a stage fails, then
    /// stops every stage in order; the result says whether all went well.
    pub(super) async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), PipelineError> {
        let control = self.control.clone();
        let stop = async move {
            shutdown.await;
            info!("shutdown requested: no new records are taken");
            control.stop_taking.store(true, Ordering::Relaxed);
        };
        let outcome = self.dispatcher.run(self.records, self.events, stop, self.grace).await;
        self.control.stop_taking.store(true, Ordering::Relaxed);
        self.probe.abort();
        self.gauges.abort();
        self.lookups.abort();
        flush(&self.sink).await;
        self.control.close.store(true, Ordering::Relaxed);
        let source = join_source(self.source_thread).await;
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
        let result = verdict(outcome, source, &self.fatal);
        match &result {
            Ok(()) => info!("pipeline stopped cleanly"),
            Err(e) => {
                self.health.set_failed();
                error!(error = %e, "pipeline stopped with an error");
            }
        }
        let _ = self.server_stop.send(());
        let _ = self.server_task.await;
        result
    }
}

/// Everything handed to the producer gets acknowledged (or not) now.
async fn flush(sink: &Arc<KafkaSink>) {
    let s = sink.clone();
    let flushed = tokio::task::spawn_blocking(move || s.flush(FLUSH_TIMEOUT)).await;
    if !matches!(flushed, Ok(Ok(()))) {
        warn!(
            pending = sink.pending(),
            "producer flush incomplete; unacknowledged records stay uncommitted"
        );
    }
}

/// Waits for the consumer thread, which commits and leaves the group.
async fn join_source(thread: JoinHandle<Result<(), SourceError>>) -> Result<(), SourceError> {
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .map_err(|_| SourceError::Panicked)?
        .map_err(|_| SourceError::Panicked)?
}

/// The pipeline's result from the dispatcher's and the consumer's.
fn verdict(
    outcome: Result<Stopped, DispatchError>,
    source: Result<(), SourceError>,
    fatal: &Fatal,
) -> Result<(), PipelineError> {
    if let Some(f) = fatal.get() {
        return Err(PipelineError::Dispatch(DispatchError::Fatal(f)));
    }
    match (outcome?, source) {
        (_, Err(e)) => Err(e.into()),
        (Stopped::SourceClosed, Ok(())) => Err(PipelineError::SourceClosed),
        (Stopped::Shutdown, Ok(())) => Ok(()),
    }
}
