//! `[schema_registry]`: where input records in the Confluent wire format
//! (`input.format = "registry"`) find their schemas. Credentials are
//! [`Secret`]s: never logged, never in `Debug`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::types::{duration, Secret};
use super::validate::Problems;

/// `[schema_registry]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaRegistryConfig {
    /// Base URL of a Confluent-compatible Schema Registry, e.g.
    /// `http://schema-registry:8081`. Required with `input.format =
    /// "registry"`.
    pub url: String,
    /// HTTP basic auth user (with `password`).
    pub username: String,
    /// HTTP basic auth password.
    pub password: Secret,
    /// Bearer token (instead of basic auth).
    pub bearer_token: Secret,
    /// PEM file of CA certificates to trust beside the system's (empty: none).
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate (tests only).
    pub insecure_skip_verify: bool,
    /// Time limit of one request. Default `5s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub timeout: Duration,
    /// Schemas kept in memory, by id. Default 1000.
    pub max_schemas: usize,
}

impl Default for SchemaRegistryConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            username: String::new(),
            password: Secret::default(),
            bearer_token: Secret::default(),
            ca_file: None,
            insecure_skip_verify: false,
            timeout: Duration::from_secs(5),
            max_schemas: 1000,
        }
    }
}

impl SchemaRegistryConfig {
    /// `ca_file`, unless unset or empty.
    pub(crate) fn ca(&self) -> Option<&std::path::Path> {
        self.ca_file.as_deref().filter(|p| !p.as_os_str().is_empty())
    }

    pub(super) fn validate(&self, needed: bool, p: &mut Problems) {
        if !needed {
            return;
        }
        let parsed = url::Url::parse(&self.url);
        if parsed
            .as_ref()
            .is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
            || self.url.contains('@')
        {
            // Never echoed: it may hold a password.
            p.need(
                false,
                "schema_registry.url must not hold credentials: use schema_registry.username and password (or bearer_token)",
            );
            return;
        }
        p.need(
            parsed
                .as_ref()
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some()),
            format!(
                "schema_registry.url: {:?} must be an http(s) URL (input.format = \"registry\" and output.format other than \"json\" need it)",
                self.url
            ),
        );
        p.need(
            self.username.is_empty() == self.password.is_empty(),
            "schema_registry.username and schema_registry.password go together",
        );
        p.need(
            self.bearer_token.is_empty() || self.username.is_empty(),
            "schema_registry: set username/password or bearer_token, not both",
        );
        if let Some(ca) = self.ca() {
            p.need(
                ca.is_file(),
                format!("schema_registry.ca_file: {} is not a readable file", ca.display()),
            );
        }
        p.need(!self.timeout.is_zero(), "schema_registry.timeout must be above 0");
        p.need(self.max_schemas >= 1, "schema_registry.max_schemas must be at least 1");
    }
}
