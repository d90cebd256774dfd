//! Loading (figment: file, then environment) and validation of the
//! configuration; every mistake becomes one message naming its key.

use std::net::SocketAddr;
use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::Figment;

use super::{Config, ConfigError, InputFormat, Secret};

impl Config {
    /// Loads defaults, then `file` (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::new();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig
            .merge(Env::prefixed("IDENTIFY_").split("__"))
            .merge(Env::raw().only(&["CRUSTDATA_API_KEY"]).map(|_| "api.key".into()));
        let mut config = Self::extract(fig)?;
        // Secrets verbatim: the environment provider would read "0123" as
        // the number 123.
        let raw = |var: &str| std::env::var(var).ok().map(Secret::new);
        if let Some(k) = raw("CRUSTDATA_API_KEY").or_else(|| raw("IDENTIFY_API__KEY")) {
            config.api.key = k;
        }
        if let Some(p) = raw("IDENTIFY_KAFKA__SASL_PASSWORD") {
            config.kafka.sasl_password = p;
        }
        if let Some(p) = raw("IDENTIFY_KAFKA__SSL_KEY_PASSWORD") {
            config.kafka.ssl_key_password = p;
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML string (no environment); for tests and `--check` tooling.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::string(text)))
    }

    fn from_figment(fig: Figment) -> Result<Self, ConfigError> {
        let config = Self::extract(fig)?;
        config.validate()?;
        Ok(config)
    }

    fn extract(fig: Figment) -> Result<Self, ConfigError> {
        fig.extract()
            .map_err(|e| ConfigError::Load(e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")))
    }

    /// Checks every value; one message per mistake, each naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errs = Vec::new();
        let mut need = |ok: bool, msg: String| {
            if !ok {
                errs.push(msg)
            }
        };
        let k = &self.kafka;
        need(!k.brokers.trim().is_empty(), "kafka.brokers must not be empty".into());
        need(!k.group_id.trim().is_empty(), "kafka.group_id must not be empty".into());
        need(
            !k.input_topics.is_empty(),
            "kafka.input_topics must list at least one topic".into(),
        );
        for t in &k.input_topics {
            need(
                valid_topic(t),
                format!("kafka.input_topics: {t:?} is not a valid topic name"),
            );
        }
        need(
            valid_topic(&k.output_topic),
            format!(
                "kafka.output_topic: {:?} is not a valid topic name (required)",
                k.output_topic
            ),
        );
        need(
            valid_topic(&k.dead_letter_topic),
            format!(
                "kafka.dead_letter_topic: {:?} is not a valid topic name (required)",
                k.dead_letter_topic
            ),
        );
        need(
            !k.input_topics.contains(&k.output_topic) && !k.input_topics.contains(&k.dead_letter_topic),
            "kafka.output_topic and kafka.dead_letter_topic must differ from every input topic".into(),
        );
        need(k.max_in_flight >= 1, "kafka.max_in_flight must be at least 1".into());
        need(
            k.max_in_flight_bytes >= self.input.max_value_bytes,
            "kafka.max_in_flight_bytes must be at least input.max_value_bytes".into(),
        );
        need(
            !k.commit_interval.is_zero(),
            "kafka.commit_interval must be greater than 0".into(),
        );
        for key in [
            "enable.auto.commit",
            "enable.auto.offset.store",
            "group.id",
            "bootstrap.servers",
        ] {
            need(
                !k.consumer.contains_key(key),
                format!("kafka.consumer.\"{key}\" is managed by the connector and must not be set"),
            );
        }
        for key in ["enable.idempotence", "bootstrap.servers"] {
            need(
                !k.producer.contains_key(key),
                format!("kafka.producer.\"{key}\" is managed by the connector and must not be set"),
            );
        }
        if self.input.format == InputFormat::Json {
            need(
                self.input.field.is_empty() || self.input.field.starts_with('/'),
                format!(
                    "input.field: {:?} must be a JSON pointer such as \"/email\"",
                    self.input.field
                ),
            );
        }
        need(
            self.input.max_value_bytes >= 64,
            "input.max_value_bytes must be at least 64".into(),
        );
        need(
            (1..=crate::batch::API_MAX_BATCH).contains(&self.batch.max_size),
            format!("batch.max_size must be between 1 and {}", crate::batch::API_MAX_BATCH),
        );
        let a = &self.api;
        match url::Url::parse(&a.base_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => errs.push(format!("api.base_url: {:?} must be an http(s) URL", a.base_url)),
        }
        let mut need = |ok: bool, msg: &str| {
            if !ok {
                errs.push(msg.to_string())
            }
        };
        need(
            !a.key.is_empty(),
            "api.key is missing: set CRUSTDATA_API_KEY (or IDENTIFY_API__KEY)",
        );
        need(a.max_active_jobs >= 1, "api.max_active_jobs must be at least 1");
        need(a.requests_per_minute >= 1, "api.requests_per_minute must be at least 1");
        need(!a.job_timeout.is_zero(), "api.job_timeout must be greater than 0");
        need(
            !a.request_timeout.is_zero(),
            "api.request_timeout must be greater than 0",
        );
        need(!a.poll_initial.is_zero(), "api.poll_initial must be greater than 0");
        need(
            a.poll_max >= a.poll_initial,
            "api.poll_max must be at least api.poll_initial",
        );
        need(a.max_job_attempts >= 1, "api.max_job_attempts must be at least 1");
        need(a.max_result_bytes >= 1024, "api.max_result_bytes must be at least 1024");
        if !self.webhook.public_url.is_empty() {
            match url::Url::parse(&self.webhook.public_url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => need(false, "webhook.public_url must be an http(s) URL or empty"),
            }
        }
        need(
            !self.webhook.fallback_poll_interval.is_zero(),
            "webhook.fallback_poll_interval must be greater than 0",
        );
        need(self.cache.max_entries >= 1, "cache.max_entries must be at least 1");
        need(
            self.server.listen.parse::<SocketAddr>().is_ok(),
            "server.listen must be an address such as \"0.0.0.0:8080\"",
        );
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errs))
        }
    }
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
