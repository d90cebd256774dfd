//! Export that never blocks the pipeline: the SDK's batch processor (its
//! own thread, a bounded queue) behind an admission count of our own, so
//! that every span refused for a full queue is counted in
//! `identify_spans_dropped_total` (the SDK only logs the first).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;

use crate::metrics;

/// Spans waiting for export at most (the batch processor's queue).
pub(super) const QUEUE: usize = 2048;

/// Spans admitted and not yet handed to the exporter.
#[derive(Debug, Default)]
struct Queued(AtomicUsize);

/// The exporter, telling the admission count which spans left the queue.
#[derive(Debug)]
pub(super) struct Counted<E> {
    inner: E,
    queued: Arc<Queued>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.queued.0.fetch_sub(batch.len(), Ordering::Relaxed);
        self.inner.export(batch).await
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The batch processor, admitting a span only while its queue has room.
#[derive(Debug)]
pub(super) struct Bounded {
    inner: BatchSpanProcessor,
    queued: Arc<Queued>,
}

impl Bounded {
    /// A batch processor over `exporter` (the SDK's `OTEL_BSP_*`
    /// variables apply, but its queue is at most [`QUEUE`]).
    pub(super) fn new<E: SpanExporter + 'static>(exporter: E) -> Self {
        let queued = Arc::new(Queued::default());
        let exporter = Counted {
            inner: exporter,
            queued: queued.clone(),
        };
        let config = BatchConfigBuilder::default().with_max_queue_size(QUEUE).build();
        let inner = BatchSpanProcessor::builder(exporter).with_batch_config(config).build();
        Self { inner, queued }
    }
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        let admitted = self
            .queued
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < QUEUE).then_some(n + 1))
            .is_ok();
        if admitted {
            self.inner.on_end(span);
        } else {
            metrics::span_dropped();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
