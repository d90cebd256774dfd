//! JSON views of a job: the status object returned by submit, poll, list and
//! sent as webhook body, including pre-signed `download_url(s)` once completed,
//! written as the [`Variants`] say (timestamps, counts, words, undated jobs).

use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use super::config::{SimConfig, Variants};
use super::directory::{mix64, unit_float};
use super::files::{part_names, WHOLE_FILE};
use super::jobs::{Job, Phase};
use super::server::Shared;

/// RFC 3339 with microseconds and `+00:00`, as in the vendor's examples.
pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// A time as the variants say: RFC 3339, or Unix seconds.
fn time(t: DateTime<Utc>, v: &Variants) -> Value {
    if v.numeric_timestamps {
        json!(t.timestamp_millis() as f64 / 1000.0)
    } else {
        json!(timestamp(t))
    }
}

/// A count as the variants say: a number, or a string.
fn count(n: u64, v: &Variants) -> Value {
    if v.string_counts {
        json!(n.to_string())
    } else {
        json!(n)
    }
}

/// The status word of `documented` (one of the four) as the variants say.
fn word<'a>(documented: &str, v: &'a Variants) -> &'a str {
    let i = ["pending", "processing", "completed", "failed"]
        .iter()
        .position(|w| *w == documented)
        .unwrap_or(0);
    &v.status_words[i]
}

/// Salt of the per-job undated draw.
const UNDATED_SALT: u64 = 0x0DA7_E1E5_5CAF_E000;

/// Whether `job`'s views carry no `created_at`: decided from its id and seed
/// alone, so a job is always dated or always undated (for a given rate).
fn undated(job: &Job, v: &Variants) -> bool {
    if v.undated_rate <= 0.0 {
        return false;
    }
    let id = job.id.as_u128();
    let h = mix64(mix64(id as u64 ^ mix64(job.seed ^ UNDATED_SALT)) ^ (id >> 64) as u64);
    unit_float(h) < v.undated_rate
}

/// The fields shared by every view of a job.
fn common(job: &Job, status: &str, v: &Variants) -> Map<String, Value> {
    let n = job.identifiers.len() as u64;
    let mut view = json!({
        "batch_id": job.id.to_string(),
        "status": word(status, v),
        "entity": "person",
        "action": "identify",
        "identifier_count": count(n, v),
        "entities_requested": count(n, v),
        "created_at": time(job.created_at, v),
        "status_url": format!("/batch/{}", job.id),
    });
    if undated(job, v) {
        if let Value::Object(m) = &mut view {
            m.remove("created_at");
        }
    }
    match view {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The submit response: always `pending`.
pub(crate) fn submit_json(job: &Job, cfg: &SimConfig) -> Value {
    Value::Object(common(job, "pending", &cfg.variants))
}

/// The poll/list/webhook view of a job at `now`.
pub(crate) fn status_json(shared: &Shared, cfg: &SimConfig, job: &Job, now: Instant) -> Value {
    let v = &cfg.variants;
    let mut m = common(job, job.status(now), v);
    if let Some(url) = &job.webhook_url {
        m.insert("webhook_url".into(), json!(url));
    }
    match &job.phase {
        Phase::Active => {}
        Phase::Completed {
            completed_at,
            result_count,
        } => {
            m.insert("completed_at".into(), time(*completed_at, v));
            let links_delayed = chrono::Duration::from_std(v.link_delay).is_ok_and(|d| Utc::now() < *completed_at + d);
            if links_delayed {
                return Value::Object(m);
            }
            let base = if v.relative_links {
                String::new()
            } else {
                shared.public_base(cfg)
            };
            let sign = |name: &str| shared.links.presign(&base, &job.id, name, *completed_at, cfg.link_ttl);
            let parts: Vec<String> = part_names(job.identifiers.len(), cfg.lines_per_part)
                .iter()
                .map(|p| sign(p))
                .collect();
            m.insert("result_count".into(), count(*result_count, v));
            m.insert("entities_fulfilled".into(), count(*result_count, v));
            m.insert("download_url".into(), json!(sign(WHOLE_FILE)));
            m.insert("download_urls".into(), json!(parts));
        }
        Phase::Failed {
            completed_at,
            error_message,
        } => {
            m.insert("result_count".into(), count(0, v));
            m.insert("entities_fulfilled".into(), count(0, v));
            m.insert("completed_at".into(), time(*completed_at, v));
            m.insert("error_message".into(), json!(error_message));
        }
    }
    Value::Object(m)
}
