//! Validation: one validator per section, each adding one message per
//! mistake (naming its key) to a shared list, so that `--check` reports
//! every problem at once.

use std::net::SocketAddr;

use super::{
    ApiConfig, BatchConfig, CacheConfig, Config, ConfigError, InputConfig, InputFormat, KafkaConfig, ServerConfig,
    WebhookConfig,
};
use crate::model::API_MAX_BATCH;

/// The mistakes found so far.
#[derive(Default)]
pub(super) struct Problems(Vec<String>);

impl Problems {
    /// Records `msg` unless `ok`.
    pub(super) fn need(&mut self, ok: bool, msg: impl Into<String>) {
        if !ok {
            self.0.push(msg.into());
        }
    }
}

impl Config {
    /// Checks every value; one message per mistake, each naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        self.kafka.validate(&self.input, &mut p);
        self.input.validate(&mut p);
        self.batch.validate(&mut p);
        self.api.validate(&mut p);
        self.webhook.validate(&mut p);
        self.cache.validate(&self.kafka, &mut p);
        self.server.validate(&mut p);
        self.output.validate(self.input.format, &mut p);
        self.telemetry.validate(&mut p);
        self.budget.validate(&mut p);
        self.schema_registry.validate(
            self.input.format == InputFormat::Registry || self.output.uses_registry(),
            &mut p,
        );
        // The store topic keeps records for cache.ttl plus an hour; the
        // budget's reservations must outlive their longest window there.
        let window = match (self.budget.credits_per_day, self.budget.credits_per_hour) {
            (Some(_), _) => Some(("budget.day_length", self.budget.day_length)),
            (None, Some(_)) => Some(("budget.hour_length", self.budget.hour_length)),
            (None, None) => None,
        };
        for (name, ceiling) in [
            ("credits_per_hour", self.budget.credits_per_hour),
            ("credits_per_day", self.budget.credits_per_day),
        ] {
            if let Some(c) = ceiling.filter(|c| *c > 0) {
                p.need(
                    c >= self.batch.max_size as u64,
                    format!(
                        "budget.{name}: {c} is below batch.max_size ({}): a full job could never be reserved; lower batch.max_size or raise the ceiling",
                        self.batch.max_size
                    ),
                );
            }
        }
        if let Some((name, len)) = window {
            p.need(
                self.cache.ttl + std::time::Duration::from_secs(3600) >= len,
                format!(
                    "cache.ttl: {:?} plus an hour is shorter than {name} ({len:?}); the store topic would drop budget reservations before their window ends",
                    self.cache.ttl
                ),
            );
        }
        if p.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(p.0))
        }
    }
}

impl KafkaConfig {
    fn validate(&self, input: &InputConfig, p: &mut Problems) {
        p.need(!self.brokers.trim().is_empty(), "kafka.brokers must not be empty");
        p.need(!self.group_id.trim().is_empty(), "kafka.group_id must not be empty");
        p.need(
            !self.input_topics.is_empty(),
            "kafka.input_topics must list at least one topic",
        );
        for t in &self.input_topics {
            p.need(
                valid_topic(t),
                format!("kafka.input_topics: {t:?} is not a valid topic name"),
            );
        }
        for (key, topic) in [
            ("kafka.output_topic", &self.output_topic),
            ("kafka.dead_letter_topic", &self.dead_letter_topic),
        ] {
            p.need(
                valid_topic(topic),
                format!("{key}: {topic:?} is not a valid topic name (required)"),
            );
        }
        p.need(
            !self.input_topics.contains(&self.output_topic) && !self.input_topics.contains(&self.dead_letter_topic),
            "kafka.output_topic and kafka.dead_letter_topic must differ from every input topic",
        );
        p.need(self.max_in_flight >= 1, "kafka.max_in_flight must be at least 1");
        p.need(
            self.max_in_flight_bytes >= input.max_value_bytes,
            "kafka.max_in_flight_bytes must be at least input.max_value_bytes",
        );
        p.need(
            !self.commit_interval.is_zero(),
            "kafka.commit_interval must be greater than 0",
        );
        p.need(
            self.instance_id.len() <= 249 && !self.instance_id.chars().any(char::is_whitespace),
            format!(
                "kafka.instance_id: {:?} must be at most 249 characters without spaces",
                self.instance_id
            ),
        );
        for key in [
            "enable.auto.commit",
            "enable.auto.offset.store",
            "group.id",
            "group.instance.id",
            "bootstrap.servers",
        ] {
            p.need(
                !self.consumer.contains_key(key),
                format!("kafka.consumer.\"{key}\" is managed by the connector and must not be set"),
            );
        }
        if let Some(v) = self.producer.get("transaction.timeout.ms") {
            let ms: u64 = v.trim().parse().unwrap_or(0);
            p.need(
                !self.exactly_once || ms > super::TRANSACTION_MIN.as_millis() as u64,
                format!(
                    "kafka.producer.\"transaction.timeout.ms\" = {v:?} must exceed {} (the connector retries a commit for up to {} s; a shorter timeout lets the broker abort it meanwhile)",
                    super::TRANSACTION_MIN.as_millis(),
                    super::TRANSACTION_MIN.as_secs()
                ),
            );
        }
        for key in ["enable.idempotence", "bootstrap.servers", "transactional.id"] {
            p.need(
                !self.producer.contains_key(key),
                format!("kafka.producer.\"{key}\" is managed by the connector and must not be set"),
            );
        }
    }
}

impl InputConfig {
    fn validate(&self, p: &mut Problems) {
        if self.format != InputFormat::Text {
            p.need(
                self.field.is_empty() || self.field.starts_with('/'),
                format!(
                    "input.field: {:?} must be a JSON pointer such as \"/email\"",
                    self.field
                ),
            );
        }
        p.need(self.max_value_bytes >= 64, "input.max_value_bytes must be at least 64");
    }
}

impl BatchConfig {
    fn validate(&self, p: &mut Problems) {
        p.need(
            (1..=API_MAX_BATCH).contains(&self.max_size),
            format!("batch.max_size must be between 1 and {API_MAX_BATCH}"),
        );
    }
}

impl ApiConfig {
    fn validate(&self, p: &mut Problems) {
        p.need(
            http_url(&self.base_url),
            format!("api.base_url: {:?} must be an http(s) URL", self.base_url),
        );
        p.need(
            self.allow_insecure_http || !cleartext_beyond_loopback(&self.base_url),
            format!(
                "api.base_url: {:?} is plain http to a host that is not the loopback: the API key would cross the network in clear; use https, or set api.allow_insecure_http = true",
                self.base_url
            ),
        );
        p.need(
            !self.key.is_empty(),
            "api.key is missing: set CRUSTDATA_API_KEY (or IDENTIFY_API__KEY)",
        );
        p.need(self.max_active_jobs >= 1, "api.max_active_jobs must be at least 1");
        p.need(
            self.requests_per_minute >= 1,
            "api.requests_per_minute must be at least 1",
        );
        p.need(!self.job_timeout.is_zero(), "api.job_timeout must be greater than 0");
        p.need(
            !self.request_timeout.is_zero(),
            "api.request_timeout must be greater than 0",
        );
        p.need(
            self.clock_skew <= std::time::Duration::from_secs(600),
            "api.clock_skew must be at most 10m",
        );
        p.need(!self.poll_initial.is_zero(), "api.poll_initial must be greater than 0");
        p.need(
            self.poll_max >= self.poll_initial,
            "api.poll_max must be at least api.poll_initial",
        );
        p.need(self.max_job_attempts >= 1, "api.max_job_attempts must be at least 1");
        p.need(
            self.max_result_bytes >= 1024,
            "api.max_result_bytes must be at least 1024",
        );
    }
}

impl WebhookConfig {
    fn validate(&self, p: &mut Problems) {
        p.need(
            self.public_url.is_empty() || http_url(&self.public_url),
            "webhook.public_url must be an http(s) URL or empty",
        );
        p.need(
            !self.fallback_poll_interval.is_zero(),
            "webhook.fallback_poll_interval must be greater than 0",
        );
    }
}

impl CacheConfig {
    fn validate(&self, kafka: &KafkaConfig, p: &mut Problems) {
        let topic = self.topic_name(kafka);
        p.need(
            valid_topic(&topic),
            format!("cache.topic: {topic:?} is not a valid topic name (set cache.topic)"),
        );
        p.need(
            !kafka.input_topics.contains(&topic) && topic != kafka.output_topic && topic != kafka.dead_letter_topic,
            "cache.topic must differ from the input, output and dead-letter topics",
        );
        p.need(
            self.max_memory_bytes >= 1 << 20,
            "cache.max_memory_bytes must be at least 1048576 (1 MiB)",
        );
        p.need(!self.dir.trim().is_empty(), "cache.dir must not be empty");
        p.need(self.partitions >= 1, "cache.partitions must be at least 1");
        p.need(
            self.replication_factor == -1 || self.replication_factor >= 1,
            "cache.replication_factor must be -1 (the broker's default) or at least 1",
        );
    }
}

impl ServerConfig {
    fn validate(&self, p: &mut Problems) {
        p.need(
            self.listen.parse::<SocketAddr>().is_ok(),
            "server.listen must be an address such as \"0.0.0.0:8080\"",
        );
    }
}

/// An absolute `http` or `https` URL with a host.
fn http_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// An `http` URL to a host other than the loopback.
fn cleartext_beyond_loopback(s: &str) -> bool {
    let Ok(u) = url::Url::parse(s) else {
        return false;
    };
    let loopback = match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    u.scheme() == "http" && !loopback
}

/// Kafka's topic-name rule: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_the_loopback() {
        for ok in [
            "https://api.crustdata.com",
            "http://127.0.0.1:8787",
            "http://localhost:1",
            "http://[::1]:9",
        ] {
            assert!(!cleartext_beyond_loopback(ok), "{ok}");
        }
        for bad in ["http://api.crustdata.com", "http://10.0.0.7:8080/crustdata"] {
            assert!(cleartext_beyond_loopback(bad), "{bad}");
        }
        let mut c = Config::default();
        c.api.base_url = "http://api.example.com".into();
        let Err(ConfigError::Invalid(all)) = c.validate() else {
            panic!()
        };
        assert!(all.iter().any(|m| m.contains("allow_insecure_http")));
        c.api.allow_insecure_http = true;
        let Err(ConfigError::Invalid(all)) = c.validate() else {
            panic!()
        };
        assert!(!all.iter().any(|m| m.contains("allow_insecure_http")));
    }

    #[test]
    fn topic_names() {
        assert!(valid_topic("emails.identify-out_1"));
        for bad in ["", ".", "..", "a b", "ü", &"x".repeat(250)] {
            assert!(!valid_topic(bad), "{bad:?}");
        }
    }

    #[test]
    fn budget_mistakes_are_named() {
        let mut c = Config::default();
        c.budget.credits_per_hour = Some(0);
        c.budget.credits_per_day = Some(10);
        c.batch.max_size = 20;
        c.budget.hour_length = std::time::Duration::from_millis(10);
        c.cache.ttl = std::time::Duration::from_secs(3600);
        let Err(ConfigError::Invalid(all)) = c.validate() else {
            panic!("invalid")
        };
        for msg in [
            "budget.credits_per_hour: 0 would never submit a job",
            "budget.hour_length: 10ms is shorter than a second",
            "cache.ttl: 3600s plus an hour is shorter than budget.day_length",
            "budget.credits_per_day: 10 is below batch.max_size (20)",
        ] {
            assert!(all.iter().any(|m| m.starts_with(msg)), "{msg} in {all:#?}");
        }
    }

    #[test]
    fn every_mistake_is_reported_once() {
        let mut c = Config::default();
        c.batch.max_size = 0;
        c.api.poll_max = std::time::Duration::ZERO;
        let Err(ConfigError::Invalid(all)) = c.validate() else {
            panic!("invalid")
        };
        for key in [
            "kafka.input_topics",
            "kafka.output_topic",
            "kafka.dead_letter_topic",
            "batch.max_size",
            "api.key",
            "api.poll_max",
        ] {
            assert_eq!(
                all.iter().filter(|m| m.starts_with(key)).count(),
                1,
                "{key} in {all:#?}"
            );
        }
    }
}
