//! A producer with a polling thread of its own that serves delivery
//! callbacks. rust-rdkafka's `ThreadedProducer` (and the `FutureProducer`
//! built on it) polls every 100 ms and spins through the last sub-millisecond
//! of each wait (its deadline rounds down to whole milliseconds): about 1 %
//! of a core per producer, idle. Polling with a 1 s wait costs a tenth of
//! that; a callback still runs as soon as its event arrives.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

/// How long one poll waits for an event.
const POLL_WAIT: Duration = Duration::from_secs(1);
/// How long a send waits before trying a full queue again.
const QUEUE_WAIT: Duration = Duration::from_millis(5);

/// Whether librdkafka refused a record because its queue is full.
fn queue_full(e: &KafkaError) -> bool {
    matches!(e, KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull))
}

/// A producer context told when each poll has returned (`poll` serves the
/// events of up to [`POLL_WAIT`]): what it gathers per record it hands on
/// then, at most that far apart.
pub(crate) trait AfterPoll: ProducerContext {
    /// A poll has returned.
    fn after_poll(&self) {}
}

/// A record of a producer whose context is `C`.
pub(crate) type Record<'a, C> = BaseRecord<'a, [u8], [u8], <C as ProducerContext>::DeliveryOpaque>;

/// A `BaseProducer` polled by a thread of its own.
pub(crate) struct PolledProducer<C: AfterPoll + 'static> {
    producer: Arc<BaseProducer<C>>,
    stop: Arc<AtomicBool>,
}

impl<C: AfterPoll + 'static> PolledProducer<C> {
    /// Creates the producer and starts its polling thread (`name`).
    pub(crate) fn new(cc: &ClientConfig, context: C, name: &str) -> KafkaResult<Self> {
        let producer: Arc<BaseProducer<C>> = Arc::new(cc.create_with_context(context)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (producer.clone(), stop.clone());
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    p.poll(POLL_WAIT);
                    p.context().after_poll();
                }
            })
            .map_err(|e| KafkaError::ClientCreation(format!("cannot start the {name} thread: {e}")))?;
        Ok(Self { producer, stop })
    }

    /// Hands `record` to librdkafka; a refusal hands it back.
    #[allow(clippy::result_large_err)]
    pub(crate) fn send<'a>(&self, record: Record<'a, C>) -> Result<(), (KafkaError, Record<'a, C>)> {
        self.producer.send(record)
    }

    /// Hands `record` to librdkafka, waiting out a full queue: the one
    /// place where a full queue is waited on, for every producer.
    #[allow(clippy::result_large_err)]
    pub(crate) async fn send_when_room<'a>(
        &self,
        mut record: Record<'a, C>,
    ) -> Result<(), (KafkaError, Record<'a, C>)> {
        loop {
            match self.producer.send(record) {
                Err((e, back)) if queue_full(&e) => {
                    record = back;
                    tokio::time::sleep(QUEUE_WAIT).await;
                }
                other => return other,
            }
        }
    }

    /// Like [`Self::send_when_room`], for a thread that may block (the
    /// consumer's, the committer's).
    #[allow(clippy::result_large_err)]
    pub(crate) fn send_when_room_blocking<'a>(
        &self,
        mut record: Record<'a, C>,
    ) -> Result<(), (KafkaError, Record<'a, C>)> {
        loop {
            match self.producer.send(record) {
                Err((e, back)) if queue_full(&e) => {
                    record = back;
                    std::thread::sleep(QUEUE_WAIT);
                }
                other => return other,
            }
        }
    }

    /// Waits until every record is acknowledged (or `timeout`).
    pub(crate) fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        self.producer.flush(timeout)
    }

    /// The producer itself (transactions).
    pub(crate) fn inner(&self) -> &BaseProducer<C> {
        &self.producer
    }

    /// Records not yet acknowledged.
    pub(crate) fn in_flight_count(&self) -> i32 {
        self.producer.in_flight_count()
    }
}

impl<C: AfterPoll + 'static> Drop for PolledProducer<C> {
    /// The thread ends within [`POLL_WAIT`]; the producer goes with its
    /// last reference.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
