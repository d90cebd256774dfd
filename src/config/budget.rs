//! `[budget]`: ceilings on the credits the key's jobs may cost per UTC
//! hour and per UTC day, shared by every pod of the deployment (see
//! [`crate::budget`]). Off unless a ceiling is set.

use std::time::Duration;

use serde::Deserialize;

use super::types::duration;
use super::validate::Problems;

/// `[budget]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// Credits per UTC hour at most (unset: no hourly ceiling).
    pub credits_per_hour: Option<u64>,
    /// Credits per UTC day at most (unset: no daily ceiling).
    pub credits_per_day: Option<u64>,
    /// The length of the "hour" window (default `1h`; windows start at
    /// multiples of it since the Unix epoch). Only tests shorten it.
    #[serde(deserialize_with = "duration::deserialize")]
    pub hour_length: Duration,
    /// The length of the "day" window (default `24h`).
    #[serde(deserialize_with = "duration::deserialize")]
    pub day_length: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            credits_per_hour: None,
            credits_per_day: None,
            hour_length: Duration::from_secs(3600),
            day_length: Duration::from_secs(86_400),
        }
    }
}

impl BudgetConfig {
    /// Whether any ceiling is set.
    pub fn enabled(&self) -> bool {
        self.credits_per_hour.is_some() || self.credits_per_day.is_some()
    }

    pub(super) fn validate(&self, p: &mut Problems) {
        for (name, v) in [
            ("credits_per_hour", self.credits_per_hour),
            ("credits_per_day", self.credits_per_day),
        ] {
            p.need(
                v != Some(0),
                format!("budget.{name}: 0 would never submit a job; leave it unset for no ceiling"),
            );
        }
        for (name, d) in [("hour_length", self.hour_length), ("day_length", self.day_length)] {
            p.need(
                d >= Duration::from_secs(1),
                format!("budget.{name}: {d:?} is shorter than a second"),
            );
        }
        p.need(
            self.day_length >= self.hour_length,
            "budget.day_length must not be shorter than budget.hour_length",
        );
    }
}
