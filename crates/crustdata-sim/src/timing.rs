//! How long a job takes: the `fixed` model (base + per-identifier time + one
//! retrieval time if any identifier does not resolve, plus jitter) and the
//! `realistic` one (each identifier known to the vendor, taking `base_time`,
//! or needing real-time retrieval, taking a log-normal time; the job lasts as
//! long as its slowest identifier). Both are scaled by `latency_scale`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;
use serde::Deserialize;

use super::config::SimConfig;
use super::directory::{identifier_hash, mix64, unit_float};

/// Salt of the known/unknown hash, so it is independent of the match hash.
const RETRIEVAL_SALT: u64 = 0x0E7A_1E5A_0C0F_FEE5;

/// Longest duration a job may be planned for (avoids overflowing `Instant`).
const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);

/// Which job-duration model applies to new jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobTimeModel {
    /// `base_time + per_identifier_time * n + retrieval_time if any identifier
    /// does not resolve + uniform[0, jitter]`, times `latency_scale`.
    #[default]
    Fixed,
    /// Known identifiers take `base_time + uniform[0, jitter]`, unknown ones a
    /// log-normal retrieval time (`retrieval_median`, `retrieval_sigma`); the
    /// job lasts as long as the slowest, plus `per_identifier_time * n`, times
    /// `latency_scale`.
    Realistic,
}

impl JobTimeModel {
    /// The model's name as written in flags and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            JobTimeModel::Fixed => "fixed",
            JobTimeModel::Realistic => "realistic",
        }
    }
}

impl fmt::Display for JobTimeModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobTimeModel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "fixed" => Ok(JobTimeModel::Fixed),
            "realistic" => Ok(JobTimeModel::Realistic),
            other => Err(format!(
                "unknown job time model {other:?} (expected fixed or realistic)"
            )),
        }
    }
}

/// Whether `identifier` is unknown to the vendor and needs real-time
/// retrieval under the realistic model: `unit(hash(seed, identifier)) <
/// unknown_rate`, with its own salt, so the same identifier (whatever its
/// case) is always known or always unknown for a given seed.
pub fn needs_retrieval(seed: u64, unknown_rate: f64, identifier: &str) -> bool {
    unknown_rate > 0.0 && unit_float(identifier_hash(mix64(seed ^ RETRIEVAL_SALT), identifier)) < unknown_rate
}

/// A job's planned schedule, before it is anchored to a start instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Submit to finish.
    pub total: Duration,
    /// Submit to `processing` (at most `total`).
    pub pending: Duration,
}

/// Seconds to a duration, saturating at [`LONGEST`].
fn secs(s: f64) -> Duration {
    if s.is_nan() || s <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(s).map_or(LONGEST, |d| d.min(LONGEST))
}

/// A standard normal draw (Box-Muller on two uniform draws).
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>(); // (0, 1]: ln is finite
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Plans a job of `n` identifiers, `unknown` of which need retrieval under the
/// realistic model; `any_unmatched` drives the fixed model's retrieval time.
/// Draws the jitter (both models) and one log-normal per unknown identifier
/// (realistic model) from `rng`.
pub(crate) fn plan(cfg: &SimConfig, rng: &mut impl Rng, n: usize, any_unmatched: bool, unknown: usize) -> Plan {
    let per_identifier = cfg.per_identifier_time.as_secs_f64() * n as f64;
    let jitter = cfg.jitter.as_secs_f64() * rng.random::<f64>();
    let unscaled = match cfg.job_time_model {
        JobTimeModel::Fixed => {
            let retrieval = if any_unmatched {
                cfg.retrieval_time.as_secs_f64()
            } else {
                0.0
            };
            cfg.base_time.as_secs_f64() + per_identifier + retrieval + jitter
        }
        JobTimeModel::Realistic => {
            let mut slowest: f64 = if unknown < n {
                cfg.base_time.as_secs_f64() + jitter
            } else {
                0.0
            };
            let median = cfg.retrieval_median.as_secs_f64();
            let sigma = cfg.retrieval_sigma.max(0.0);
            for _ in 0..unknown {
                let retrieval = median * (sigma * standard_normal(rng)).exp();
                slowest = slowest.max(retrieval);
            }
            slowest + per_identifier
        }
    };
    let scale = cfg.latency_scale.max(0.0);
    let total = secs(unscaled * scale);
    Plan {
        total,
        pending: secs(cfg.pending_time.as_secs_f64() * scale).min(total),
    }
}

/// The schedule of a job whose duration is given (a foreign job): `duration`
/// as is, pending for `pending_time * latency_scale` at most.
pub(crate) fn given(cfg: &SimConfig, duration: Duration) -> Plan {
    let total = duration.min(LONGEST);
    let pending = secs(cfg.pending_time.as_secs_f64() * cfg.latency_scale.max(0.0)).min(total);
    Plan { total, pending }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn model_names_round_trip() {
        for m in [JobTimeModel::Fixed, JobTimeModel::Realistic] {
            assert_eq!(m.as_str().parse::<JobTimeModel>(), Ok(m));
            assert_eq!(
                serde_json::from_value::<JobTimeModel>(serde_json::json!(m.as_str())).ok(),
                Some(m)
            );
        }
        assert!("lognormal".parse::<JobTimeModel>().is_err());
    }

    #[test]
    fn log_normal_draws_have_the_given_median() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut draws: Vec<f64> = (0..20_001).map(|_| 60.0 * standard_normal(&mut rng).exp()).collect();
        draws.sort_by(f64::total_cmp);
        let median = draws[draws.len() / 2];
        assert!((55.0..65.0).contains(&median), "median {median}");
    }

    #[test]
    fn needs_retrieval_is_stable_and_case_insensitive() {
        let unknown: Vec<bool> = (0..1000)
            .map(|i| needs_retrieval(42, 0.1, &format!("p{i}@x.com")))
            .collect();
        let count = unknown.iter().filter(|u| **u).count();
        assert!((60..140).contains(&count), "{count}");
        for (i, u) in unknown.iter().enumerate() {
            assert_eq!(needs_retrieval(42, 0.1, &format!(" P{i}@X.com")), *u);
        }
        assert!(!needs_retrieval(42, 0.0, "a@b.com"));
        assert!(needs_retrieval(42, 1.0, "a@b.com"));
    }
}
