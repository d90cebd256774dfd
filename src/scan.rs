//! Reading a whole topic outside the pipeline, for the operator tools
//! (`redrive` reads the dead-letter topic, `lookup --from-topic` the store
//! topic): every committed record up to the end the topic has now.

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::config::Config;

/// One record read.
#[derive(Debug, Clone)]
pub(crate) struct Scanned {
    /// Its partition.
    pub(crate) partition: i32,
    /// Its offset.
    pub(crate) offset: i64,
    /// Its timestamp (ms since the epoch).
    pub(crate) timestamp_ms: Option<i64>,
    /// Its key.
    pub(crate) key: Option<Vec<u8>>,
    /// Its value.
    pub(crate) value: Option<Vec<u8>>,
    /// Every header, in order.
    pub(crate) headers: Vec<(String, Option<Vec<u8>>)>,
}

/// How long a metadata request, a transaction step or an idle read waits.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A client configuration for `cfg`'s brokers.
pub(crate) fn client(cfg: &Config, producer: bool) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.kafka.brokers);
    for (k, v) in &cfg.kafka.client_properties(producer) {
        cc.set(k, v);
    }
    cc
}

fn kafka(what: &str) -> impl Fn(KafkaError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// The partitions of `topic`; `None` when it does not exist.
pub(crate) fn partitions(cfg: &Config, topic: &str) -> Result<Option<i32>, String> {
    let consumer: BaseConsumer = client(cfg, false).create().map_err(kafka("consumer"))?;
    let md = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(kafka("metadata"))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len() as i32)
        .filter(|n| *n > 0))
}

/// Calls `each` with every committed record of `topic` (of `partitions`),
/// up to the end it has now.
pub(crate) fn read_to_end(
    cfg: &Config,
    topic: &str,
    partitions: i32,
    mut each: impl FnMut(Scanned),
) -> Result<(), String> {
    let mut cc = client(cfg, false);
    cc.set("group.id", "identify-connector-redrive")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = cc.create().map_err(kafka("consumer"))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(kafka("assign"))?;
    }
    consumer.assign(&tpl).map_err(kafka("assign"))?;
    let mut open: HashSet<i32> = (0..partitions).collect();
    while !open.is_empty() {
        match consumer.poll(TIMEOUT) {
            None => return Err(format!("{topic}: no record and no end of partition within {TIMEOUT:?}")),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => return Err(kafka("read")(e)),
            Some(Ok(m)) => {
                let headers = m.headers().map_or_else(Vec::new, |h| {
                    h.iter()
                        .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec)))
                        .collect()
                });
                each(Scanned {
                    partition: m.partition(),
                    offset: m.offset(),
                    timestamp_ms: m.timestamp().to_millis(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers,
                });
            }
        }
    }
    Ok(())
}
