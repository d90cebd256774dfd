//! JSON views of a job: the status object returned by submit, poll, list and
//! sent as webhook body, including pre-signed `download_url(s)` once completed.

use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use super::config::SimConfig;
use super::files::{part_names, WHOLE_FILE};
use super::jobs::{Job, Phase};
use super::server::Shared;

/// RFC 3339 with microseconds and `+00:00`, as in the vendor's examples.
pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// The fields shared by every view of a job.
fn common(job: &Job, status: &str) -> Map<String, Value> {
    let n = job.identifiers.len();
    let v = json!({
        "batch_id": job.id.to_string(),
        "status": status,
        "entity": "person",
        "action": "identify",
        "identifier_count": n,
        "entities_requested": n,
        "created_at": timestamp(job.created_at),
        "status_url": format!("/batch/{}", job.id),
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The submit response: always `pending`.
pub(crate) fn submit_json(job: &Job) -> Value {
    Value::Object(common(job, "pending"))
}

/// The poll/list/webhook view of a job at `now`.
pub(crate) fn status_json(shared: &Shared, cfg: &SimConfig, job: &Job, now: Instant) -> Value {
    let mut m = common(job, job.status(now));
    if let Some(url) = &job.webhook_url {
        m.insert("webhook_url".into(), json!(url));
    }
    match &job.phase {
        Phase::Active => {}
        Phase::Completed {
            completed_at,
            result_count,
        } => {
            let base = shared.public_base(cfg);
            let sign = |name: &str| shared.links.presign(&base, &job.id, name, *completed_at, cfg.link_ttl);
            let parts: Vec<String> = part_names(job.identifiers.len(), cfg.lines_per_part)
                .iter()
                .map(|p| sign(p))
                .collect();
            m.insert("result_count".into(), json!(result_count));
            m.insert("entities_fulfilled".into(), json!(result_count));
            m.insert("completed_at".into(), json!(timestamp(*completed_at)));
            m.insert("download_url".into(), json!(sign(WHOLE_FILE)));
            m.insert("download_urls".into(), json!(parts));
        }
        Phase::Failed {
            completed_at,
            error_message,
        } => {
            m.insert("result_count".into(), json!(0));
            m.insert("entities_fulfilled".into(), json!(0));
            m.insert("completed_at".into(), json!(timestamp(*completed_at)));
            m.insert("error_message".into(), json!(error_message));
        }
    }
    Value::Object(m)
}
