//! Loading: figment merges the defaults, the TOML file and the
//! environment; then [`Config::validate`] checks the result.

use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::Figment;

use super::{Config, ConfigError, Secret};

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
}
