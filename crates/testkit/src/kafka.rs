//! Helpers for tests against the real local broker started by
//! `scripts/kafka-local.sh start` (bootstrap from `KAFKA_BOOTSTRAP`, default
//! 127.0.0.1:9092).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// The broker's bootstrap address.
pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A name unique to this test run.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// Creates topics with the broker's default replication factor (1 on the
/// single broker, 3 on the cluster of `scripts/kafka-local.sh cluster`);
/// fails the test on error.
pub async fn create_topics(topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client");
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, parts)| NewTopic::new(name, *parts, TopicReplication::Fixed(-1)))
        .collect();
    let res = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topics (is Kafka running? scripts/kafka-local.sh start)");
    for r in res {
        r.expect("topic created");
    }
}

/// Sets (`Some`) or removes (`None`) the topic-level setting `key` of
/// `topic`, keeping its other settings (Kafka's `AlterConfigs` replaces
/// the whole set).
pub async fn set_topic_config(topic: &str, key: &str, value: Option<&str>) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client");
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &opts)
        .await
        .expect("describe configs");
    let resource = described.into_iter().next().expect("one resource").expect("described");
    let mut set: HashMap<String, String> = resource
        .entries
        .into_iter()
        .filter(|e| e.source == ConfigSource::DynamicTopic)
        .filter_map(|e| Some((e.name, e.value?)))
        .collect();
    match value {
        Some(v) => set.insert(key.to_string(), v.to_string()),
        None => set.remove(key),
    };
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for (k, v) in &set {
        alter = alter.set(k, v);
    }
    for r in admin.alter_configs(&[alter], &opts).await.expect("alter configs") {
        r.expect("topic config altered");
    }
}

/// Records to produce: optional key, value.
pub type Records = Vec<(Option<String>, Vec<u8>)>;

/// Produces `(key, value)` records round-robin over `partitions`; waits for acks.
pub async fn produce(topic: &str, partitions: i32, records: &[(Option<String>, Vec<u8>)]) {
    let all = records.iter().map(|(k, v)| (k.as_deref(), v.as_slice(), &[][..]));
    produce_all(topic, partitions, all).await;
}

/// Record headers: names and raw values (`None`: a header without value).
pub type HeaderList = Vec<(String, Option<Vec<u8>>)>;

/// [`produce`] with headers on every record.
pub async fn produce_with_headers(topic: &str, partitions: i32, records: &[(Option<String>, Vec<u8>, HeaderList)]) {
    let all = records
        .iter()
        .map(|(k, v, h)| (k.as_deref(), v.as_slice(), h.as_slice()));
    produce_all(topic, partitions, all).await;
}

async fn produce_all<'a>(
    topic: &str,
    partitions: i32,
    records: impl Iterator<Item = (Option<&'a str>, &'a [u8], &'a [(String, Option<Vec<u8>>)])>,
) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let mut pending = Vec::new();
    for (i, (key, value, headers)) in records.enumerate() {
        let mut rec = FutureRecord::to(topic).payload(value).partition(i as i32 % partitions);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        if !headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(headers.len());
            for (key, value) in headers {
                h = h.insert(Header {
                    key,
                    value: value.as_deref(),
                });
            }
            rec = rec.headers(h);
        }
        pending.push(producer.send_result(rec).map_err(|(e, _)| e).expect("enqueue"));
        if pending.len() >= 5000 {
            for f in pending.drain(..) {
                f.await.expect("delivery").expect("ack");
            }
        }
    }
    for f in pending {
        f.await.expect("delivery").expect("ack");
    }
}

/// A consumed record, owned.
#[derive(Debug, Clone)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: HashMap<String, String>,
    /// Every header in its order, values as bytes.
    pub raw_headers: HeaderList,
    /// The record's timestamp (ms since the epoch), if it has one.
    pub timestamp_ms: Option<i64>,
}

impl Rec {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.value.as_deref().unwrap_or_default()).expect("JSON value")
    }
    pub fn header(&self, k: &str) -> &str {
        self.headers
            .get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("header {k} missing"))
    }
}

/// High watermarks per partition.
pub fn end_offsets(topic: &str, partitions: i32) -> Vec<i64> {
    Watermarks::new().end_offsets(topic, partitions)
}

/// A client kept for reading end offsets often (a benchmark's samples).
pub struct Watermarks(BaseConsumer);

impl Watermarks {
    /// A client of the local broker.
    pub fn new() -> Self {
        Self(
            ClientConfig::new()
                .set("bootstrap.servers", bootstrap())
                .create()
                .expect("consumer"),
        )
    }

    /// The end offset of each partition of `topic`.
    pub fn end_offsets(&self, topic: &str, partitions: i32) -> Vec<i64> {
        (0..partitions)
            .map(|p| {
                self.0
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .expect("watermarks")
                    .1
            })
            .collect()
    }
}

impl Default for Watermarks {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads every record currently in `topic` (up to the high watermarks at call time).
pub fn read_all(topic: &str, partitions: i32) -> Vec<Rec> {
    let ends = end_offsets(topic, partitions);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        // What a downstream consumer of committed data sees (librdkafka's
        // default, stated): no aborted or still open transaction.
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).expect("assign");
    let total: i64 = ends.iter().sum();
    let mut out = Vec::with_capacity(total as usize);
    let mut seen = vec![0i64; partitions as usize];
    let deadline = Instant::now() + Duration::from_secs(60);
    while (0..partitions as usize).any(|p| seen[p] < ends[p]) {
        assert!(Instant::now() < deadline, "timed out reading {topic}");
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let p = m.partition() as usize;
                seen[p] = m.offset() + 1;
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let raw_headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Rec {
                    raw_headers,
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers,
                    timestamp_ms: m.timestamp().to_millis(),
                });
            }
            Some(Err(e)) => panic!("consume {topic}: {e}"),
            // Transaction markers and aborted records are never delivered:
            // the position passes them.
            None => {
                if let Ok(pos) = c.position() {
                    for e in pos.elements() {
                        if let Offset::Offset(o) = e.offset() {
                            let p = e.partition() as usize;
                            seen[p] = seen[p].max(o);
                        }
                    }
                }
            }
        }
    }
    out
}

/// Offsets committed by `group` for `topic` (-1 where none).
pub fn committed(group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        // read_committed would ask for stable offsets only, which waits for
        // a transaction a killed member left open (exactly_once) to time out.
        .set("isolation.level", "read_uncommitted")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let mut attempts = 0;
    let got = loop {
        match c.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(got) => break got,
            Err(e) if attempts < 5 => {
                attempts += 1;
                eprintln!("committed offsets of {group}: {e}; retrying");
            }
            Err(e) => panic!("committed offsets of {group}: {e}"),
        }
    };
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}

/// Waits until `f` returns true, polling every 100 ms, or panics after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
