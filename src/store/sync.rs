//! Catching up: before this pod plans records of partitions it was just
//! given, its tail must have applied the store topic up to the end the
//! topic has now. Otherwise what a peer resolved or journaled while this
//! pod was behind (a pod cut off from Kafka for a while, then given
//! partitions back) is unknown here, and its identifiers would be paid for
//! again. The ends are the topic's high watermarks (the store's writes are
//! not transactional, so the last record sits just below each).

use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use tracing::{info, warn};

use super::KafkaStore;

/// Time limit of one watermark request.
const ASK: Duration = Duration::from_secs(5);

impl KafkaStore {
    /// Waits until the tail has applied every partition of the store topic
    /// up to its end now; retries while Kafka cannot say where that is.
    pub(crate) async fn catch_up(&self) {
        let started = Instant::now();
        let ends = loop {
            let writer = self.j.writer.clone();
            let partitions = self.partitions;
            let asked = tokio::task::spawn_blocking(move || -> Result<Vec<(i32, i64)>, KafkaError> {
                let client = writer.producer.inner().client();
                (0..partitions)
                    .map(|p| {
                        client
                            .fetch_watermarks(&writer.topic, p, ASK)
                            .map(|(_, high)| (p, high))
                    })
                    .collect()
            })
            .await;
            match asked {
                Ok(Ok(ends)) => break ends,
                Ok(Err(e)) => warn!(error = %e, "cannot read the store topic's ends; records of new partitions wait"),
                Err(e) => warn!(error = %e, "reading the store topic's ends failed"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        let mut changes = self.journal_changes.clone();
        loop {
            let behind = {
                let j = self.j.journal.lock().expect("journal");
                ends.iter()
                    .filter(|(p, end)| *end > 0 && !j.applied_past(*p, end - 1))
                    .count()
            };
            if behind == 0 {
                break;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
        if started.elapsed() >= Duration::from_secs(1) {
            info!(
                seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
                "caught up with the store topic before taking the new partitions' records"
            );
        }
    }
}
