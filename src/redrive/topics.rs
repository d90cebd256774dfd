//! The re-drive's Kafka side: reading a topic to its end (committed
//! records only), the memory of re-driven letters (a compacted topic
//! beside the dead-letter topic), and the transactional producer that
//! writes the re-driven records and their memory together.

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use super::select::Letter;
use super::RedriveError;
use crate::config::Config;

/// How long a metadata request or a transaction step waits.
const TIMEOUT: Duration = Duration::from_secs(30);

fn client(cfg: &Config, producer: bool) -> ClientConfig {
    crate::scan::client(cfg, producer)
}

fn kafka(what: &str) -> impl Fn(KafkaError) -> RedriveError + '_ {
    move |e| RedriveError::Kafka(format!("{what}: {e}"))
}

/// The partitions of `topic`; `None` when it does not exist.
pub(super) fn partitions(cfg: &Config, topic: &str) -> Result<Option<i32>, RedriveError> {
    crate::scan::partitions(cfg, topic).map_err(RedriveError::Kafka)
}

/// Calls `each` with every committed record of `topic` up to its end now.
pub(super) fn read_to_end(
    cfg: &Config,
    topic: &str,
    partitions: i32,
    each: impl FnMut(Letter),
) -> Result<(), RedriveError> {
    crate::scan::read_to_end(cfg, topic, partitions, each).map_err(RedriveError::Kafka)
}

/// The letters re-driven before: the ids the memory topic holds.
pub(super) fn remembered(cfg: &Config, memory: &str) -> Result<HashSet<String>, RedriveError> {
    let mut done = HashSet::new();
    if let Some(n) = partitions(cfg, memory)? {
        read_to_end(cfg, memory, n, |l| {
            let Some(id) = l.key.and_then(|k| String::from_utf8(k).ok()) else {
                return;
            };
            match l.value {
                Some(_) => done.insert(id),
                None => done.remove(&id),
            };
        })?;
    }
    Ok(done)
}

/// Creates the memory topic (compacted, one partition) when missing.
pub(super) async fn ensure_memory(cfg: &Config, memory: &str) -> Result<(), RedriveError> {
    if partitions(cfg, memory)?.is_some() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = client(cfg, true).create().map_err(kafka("admin"))?;
    let new = NewTopic::new(memory, 1, TopicReplication::Fixed(cfg.cache.replication_factor))
        .set("cleanup.policy", "compact");
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    for r in admin
        .create_topics(&[new], &opts)
        .await
        .map_err(kafka("create topic"))?
    {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(RedriveError::Kafka(format!(
                    "cannot create {memory:?} (compacted, the memory of re-driven letters): {code}"
                )))
            }
        }
    }
    Ok(())
}

/// A record to re-drive: (topic, key, value, headers).
pub(super) type Outgoing = (String, Option<Vec<u8>>, Option<Vec<u8>>, rdkafka::message::OwnedHeaders);

/// A transactional producer: one transaction per chunk of re-driven
/// records and their memory. Its transactional id is the dead-letter
/// topic's, so a second run at the same time fences the first.
pub(super) struct Writer {
    producer: BaseProducer,
}

impl Writer {
    pub(super) fn new(cfg: &Config) -> Result<Self, RedriveError> {
        let mut cc = client(cfg, true);
        cc.set(
            "transactional.id",
            format!("identify-redrive.{}", cfg.kafka.dead_letter_topic),
        )
        .set("enable.idempotence", "true");
        let producer: BaseProducer = cc.create().map_err(kafka("producer"))?;
        producer
            .init_transactions(TIMEOUT)
            .map_err(kafka("init transactions"))?;
        Ok(Self { producer })
    }

    /// Writes `records` (topic, key, value, headers) and the memory
    /// entries `(memory topic, id, value)` in one transaction.
    pub(super) fn commit(
        &self,
        records: &[Outgoing],
        memory: &[(String, String, Vec<u8>)],
    ) -> Result<(), RedriveError> {
        let p = &self.producer;
        p.begin_transaction().map_err(kafka("begin transaction"))?;
        let sent = (|| {
            for (topic, key, value, headers) in records {
                let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(headers.clone());
                if let Some(k) = key {
                    r = r.key(k.as_slice());
                }
                if let Some(v) = value {
                    r = r.payload(v.as_slice());
                }
                self.send(r)?;
            }
            for (topic, id, value) in memory {
                self.send(BaseRecord::to(topic).key(id.as_bytes()).payload(value.as_slice()))?;
            }
            p.commit_transaction(TIMEOUT).map_err(kafka("commit transaction"))
        })();
        if sent.is_err() {
            let _ = p.abort_transaction(TIMEOUT);
        }
        sent
    }

    fn send(&self, mut r: BaseRecord<'_, [u8], [u8]>) -> Result<(), RedriveError> {
        loop {
            match self.producer.send(r) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    self.producer.poll(Duration::from_millis(100));
                    r = back;
                }
                Err((e, _)) => return Err(kafka("produce")(e)),
            }
        }
    }
}
