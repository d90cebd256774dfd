//! The store topic: found, or created compacted when missing and allowed;
//! an existing topic that does not compact is refused (its records would
//! be deleted by age alone, or never, and a restore could not trust it).
//!
//! Created with `cleanup.policy=compact,delete`: compaction keeps the
//! latest record of each identifier and job, and `retention.ms` (the TTL
//! plus an hour) removes what is older than `cache.ttl` even when it is the
//! latest of its key; `segment.ms` (a tenth of the TTL, 1 h to 1 day) lets
//! that happen within a fraction of the TTL.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use tracing::info;

use super::StoreError;
use crate::config::{CacheConfig, KafkaConfig};

const TIMEOUT: Duration = Duration::from_secs(30);

/// The topic configuration the connector creates.
pub(crate) fn topic_configs(ttl: Duration) -> Vec<(&'static str, String)> {
    let retention = ttl + Duration::from_secs(3600);
    let segment = (ttl / 10).clamp(Duration::from_secs(3600), Duration::from_secs(86_400));
    vec![
        ("cleanup.policy", "compact,delete".into()),
        ("retention.ms", retention.as_millis().to_string()),
        ("segment.ms", segment.as_millis().to_string()),
    ]
}

/// Whether a `cleanup.policy` value compacts.
pub(crate) fn compacts(policy: &str) -> bool {
    policy.split(',').any(|p| p.trim() == "compact")
}

/// Makes sure `topic` exists and compacts; returns its partition count.
pub(crate) async fn ensure(kafka: &KafkaConfig, cache: &CacheConfig, topic: &str) -> Result<i32, StoreError> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &kafka.brokers);
    for (k, v) in &kafka.client_properties(true) {
        cc.set(k, v);
    }
    let admin: AdminClient<DefaultClientContext> = cc.create().map_err(StoreError::Kafka)?;
    let partitions = partition_count(&admin, topic)?;
    if let Some(n) = partitions {
        check_policy(&admin, topic).await?;
        return Ok(n);
    }
    if !cache.create_topic {
        return Err(StoreError::Topic(format!(
            "cache.topic {topic:?} does not exist and cache.create_topic = false: create it with cleanup.policy=compact"
        )));
    }
    let configs = topic_configs(cache.ttl);
    let replication = TopicReplication::Fixed(cache.replication_factor);
    let mut new = NewTopic::new(topic, cache.partitions, replication);
    for (k, v) in &configs {
        new = new.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let results = admin.create_topics(&[new], &opts).await.map_err(StoreError::Kafka)?;
    for r in results {
        match r {
            Ok(_) => info!(topic, partitions = cache.partitions, "created the store topic (compacted)"),
            // Another replica created it first.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(StoreError::Topic(format!(
                    "cannot create cache.topic {topic:?}: {code} (create it with cleanup.policy=compact, or grant CREATE on it)"
                )))
            }
        }
    }
    Ok(partition_count(&admin, topic)?.unwrap_or(cache.partitions))
}

/// How many partitions the input topics have in all (a missing topic
/// counts 0): what the group splits among its members.
pub(crate) async fn input_partitions(kafka: &KafkaConfig) -> Result<u32, StoreError> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &kafka.brokers);
    for (k, v) in &kafka.client_properties(true) {
        cc.set(k, v);
    }
    let admin: AdminClient<DefaultClientContext> = cc.create().map_err(StoreError::Kafka)?;
    let mut total = 0;
    for topic in &kafka.input_topics {
        total += partition_count(&admin, topic)?.unwrap_or(0) as u32;
    }
    Ok(total)
}

/// The topic's partition count, `None` when it does not exist.
fn partition_count(admin: &AdminClient<DefaultClientContext>, topic: &str) -> Result<Option<i32>, StoreError> {
    let md = admin
        .inner()
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(StoreError::Kafka)?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if t.error().is_some() || t.partitions().is_empty() {
        return Ok(None);
    }
    Ok(Some(t.partitions().len() as i32))
}

async fn check_policy(admin: &AdminClient<DefaultClientContext>, topic: &str) -> Result<(), StoreError> {
    let opts = AdminOptions::new().request_timeout(Some(TIMEOUT));
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &opts)
        .await
        .map_err(StoreError::Kafka)?;
    for r in described {
        let resource = r.map_err(|code| {
            StoreError::Topic(format!(
                "cannot read the configuration of cache.topic {topic:?}: {code} (grant DESCRIBE_CONFIGS on it)"
            ))
        })?;
        let policy = resource
            .get("cleanup.policy")
            .and_then(|e| e.value.clone())
            .unwrap_or_else(|| "delete".into());
        if !compacts(&policy) {
            return Err(StoreError::Topic(format!(
                "cache.topic {topic:?} has cleanup.policy={policy}; the store needs a compacted topic (cleanup.policy=compact or compact,delete)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_follow_the_ttl() {
        let day = topic_configs(Duration::from_secs(86_400));
        assert_eq!(day[0], ("cleanup.policy", "compact,delete".to_string()));
        assert_eq!(day[1].1, (90_000u64 * 1000).to_string());
        assert_eq!(day[2].1, (8_640u64 * 1000).to_string());
        let short = topic_configs(Duration::from_secs(60));
        assert_eq!(short[2].1, "3600000", "segments of at least an hour");
    }

    #[test]
    fn compaction_is_recognised() {
        assert!(compacts("compact"));
        assert!(compacts("compact,delete"));
        assert!(compacts("delete, compact"));
        assert!(!compacts("delete"));
        assert!(!compacts(""));
    }
}
