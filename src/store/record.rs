//! The store topic's records, which the local store keeps verbatim:
//!
//! - `r/<identifier_type>/<normalised identifier>` -> a resolved identifier
//!   (`matched`, `matches` verbatim, `batch_id`, `resolved_at`);
//! - `j/<job id>` -> a job of this deployment: its latest journal record
//!   ([`crate::lifecycle::Record`]: identifiers, owner, stage);
//! - `m/<member>` -> a pod sharing the key (see [`crate::share`]): its
//!   partitions, whether it has work, the slots it holds, when it said so;
//!   a tombstone when it stopped;
//! - `b/<job>/<attempt>` -> a reservation of the credit budget, and
//!   `c/<job>/<attempt>` -> its settlement (see [`crate::budget`]); both
//!   always in partition 0, whose order decides which reservations fit.
//!
//! Values are JSON with a version field `v`; a record this version cannot
//! read is skipped, never fatal.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::Cached;
use crate::lifecycle::{Record, Stage};
use crate::model::{has_matches, IdentifierType};
use crate::share::Status;

/// The format version written.
const VERSION: u8 = 1;

/// What a record key names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Key<'a> {
    /// A resolved identifier.
    Result(IdentifierType, &'a str),
    /// A job.
    Job(&'a str),
    /// A member of the team sharing the key.
    Member(&'a str),
    /// A reservation of the credit budget.
    Reservation(&'a str),
    /// A reservation's settlement.
    Settlement(&'a str),
}

fn kind_tag(kind: IdentifierType) -> &'static str {
    kind.as_str()
}

/// The key of a resolved identifier.
pub(crate) fn result_key(kind: IdentifierType, value: &str) -> String {
    tagged_result_key(kind_tag(kind), value)
}

/// The key of a result, by its type's tag (a journal record's
/// `identifier_type`).
pub(crate) fn tagged_result_key(tag: &str, value: &str) -> String {
    format!("r/{tag}/{value}")
}

/// The key of a job.
pub(crate) fn job_key(job: &str) -> String {
    format!("j/{job}")
}

/// Reads a record key; `None` for keys of another format.
pub(crate) fn parse_key(key: &str) -> Option<Key<'_>> {
    if let Some(rest) = key.strip_prefix("r/") {
        let (tag, value) = rest.split_once('/')?;
        let kind = IdentifierType::ALL.into_iter().find(|k| kind_tag(*k) == tag)?;
        return (!value.is_empty()).then_some(Key::Result(kind, value));
    }
    if let Some(member) = key.strip_prefix("m/") {
        return (!member.is_empty()).then_some(Key::Member(member));
    }
    if let Some(id) = key.strip_prefix("b/") {
        return (!id.is_empty()).then_some(Key::Reservation(id));
    }
    if let Some(id) = key.strip_prefix("c/") {
        return (!id.is_empty()).then_some(Key::Settlement(id));
    }
    let id = key.strip_prefix("j/")?;
    (!id.is_empty()).then_some(Key::Job(id))
}

/// The key of budget reservation `id`.
pub(crate) fn reservation_key(id: &str) -> String {
    format!("b/{id}")
}

/// The key of the settlement of budget reservation `id`.
pub(crate) fn settlement_key(id: &str) -> String {
    format!("c/{id}")
}

/// Whether `key` is a budget record (written to partition 0 only).
pub(crate) fn is_budget_key(key: &str) -> bool {
    key.starts_with("b/") || key.starts_with("c/")
}

/// The key of a member.
pub(crate) fn member_key(member: &str) -> String {
    format!("m/{member}")
}

#[derive(Serialize, Deserialize)]
struct MemberValue {
    v: u8,
    partitions: u32,
    demand: bool,
    active: u32,
    #[serde(default)]
    backlog: u32,
    at_ms: i64,
}

/// The value of a member record: `status` at `at_ms`.
pub(crate) fn encode_member(status: Status, at_ms: i64) -> Vec<u8> {
    serde_json::to_vec(&MemberValue {
        v: VERSION,
        partitions: status.partitions,
        demand: status.demand,
        active: status.active,
        backlog: status.backlog,
        at_ms,
    })
    .expect("member serializes")
}

/// Reads a member record: (status, when it was written).
pub(crate) fn decode_member(value: &[u8]) -> Option<(Status, i64)> {
    let m: MemberValue = serde_json::from_slice(value).ok()?;
    let status = Status {
        partitions: m.partitions,
        demand: m.demand,
        active: m.active,
        backlog: m.backlog,
    };
    (m.v == VERSION).then_some((status, m.at_ms))
}

#[derive(Serialize, Deserialize)]
struct ResultValue<'a> {
    v: u8,
    matched: bool,
    #[serde(borrow)]
    matches: &'a RawValue,
    #[serde(borrow)]
    batch_id: Cow<'a, str>,
    #[serde(borrow)]
    resolved_at: Cow<'a, str>,
    resolved_at_ms: i64,
}

/// The value of a resolved identifier.
pub(crate) fn encode_result(c: &Cached) -> Vec<u8> {
    serde_json::to_vec(&ResultValue {
        v: VERSION,
        matched: has_matches(&c.matches),
        matches: &c.matches,
        batch_id: Cow::Borrowed(&c.batch_id),
        resolved_at: Cow::Borrowed(&c.resolved_at),
        resolved_at_ms: c.resolved_at_ms,
    })
    .expect("result serializes")
}

/// Reads the value of a resolved identifier.
pub(crate) fn decode_result(value: &[u8]) -> Option<Cached> {
    let r: ResultValue<'_> = serde_json::from_slice(value).ok()?;
    if r.v != VERSION {
        return None;
    }
    Some(Cached {
        matches: r.matches.to_owned(),
        batch_id: Arc::from(r.batch_id.as_ref()),
        resolved_at: Arc::from(r.resolved_at.as_ref()),
        resolved_at_ms: r.resolved_at_ms,
    })
}

#[derive(Serialize, Deserialize)]
struct JobValue<R> {
    v: u8,
    #[serde(flatten)]
    record: R,
}

/// The format version of job records (1 was the journal before the job
/// lifecycle; such records are skipped).
const JOB_VERSION: u8 = 2;

/// The value of a job record.
pub(crate) fn encode_job(record: &Record) -> Vec<u8> {
    serde_json::to_vec(&JobValue { v: JOB_VERSION, record }).expect("job serializes")
}

/// Reads the value of a job record; `None` for one this version cannot read.
pub(crate) fn decode_job(value: &[u8]) -> Option<Record> {
    let j: JobValue<Record> = serde_json::from_slice(value).ok()?;
    (j.v == JOB_VERSION).then_some(j.record)
}

/// When a job record was written (its stage's time).
fn job_at_ms(r: &Record) -> i64 {
    match &r.stage {
        Stage::Submitting { sent_at_ms, .. } => *sent_at_ms,
        Stage::Accepted { at_ms, .. } | Stage::Completed { at_ms, .. } | Stage::Closed { at_ms, .. } => *at_ms,
    }
}

/// Whether a stored value (a result or a job) was written more than `ttl`
/// before `now_ms`; an unreadable one counts as expired.
pub(crate) fn expired(value: &[u8], ttl: std::time::Duration, now_ms: i64) -> bool {
    let at = decode_result(value)
        .map(|c| c.resolved_at_ms)
        .or_else(|| decode_job(value).map(|j| job_at_ms(&j)));
    at.is_none_or(|at| now_ms - at > ttl.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::no_matches;

    #[test]
    fn keys_round_trip_and_foreign_keys_are_ignored() {
        let k = result_key(IdentifierType::BusinessEmail, "jane@acme.com");
        assert_eq!(k, "r/business_email/jane@acme.com");
        assert_eq!(
            parse_key(&k),
            Some(Key::Result(IdentifierType::BusinessEmail, "jane@acme.com"))
        );
        let u = result_key(IdentifierType::ProfileUrl, "https://x.com/in/a/b");
        assert_eq!(
            parse_key(&u),
            Some(Key::Result(IdentifierType::ProfileUrl, "https://x.com/in/a/b"))
        );
        assert_eq!(parse_key(&job_key("b-1")), Some(Key::Job("b-1")));
        assert_eq!(parse_key(&member_key("pod-0")), Some(Key::Member("pod-0")));
        assert_eq!(parse_key(&reservation_key("j1/2")), Some(Key::Reservation("j1/2")));
        assert_eq!(parse_key(&settlement_key("j1/2")), Some(Key::Settlement("j1/2")));
        assert!(is_budget_key("b/x") && is_budget_key("c/x") && !is_budget_key("j/x"));
        for foreign in [
            "",
            "x",
            "r/",
            "r/phone/123",
            "r/business_email/",
            "j/",
            "m/",
            "b/",
            "c/",
        ] {
            assert_eq!(parse_key(foreign), None, "{foreign:?}");
        }
    }

    #[test]
    fn member_values_round_trip() {
        let s = Status {
            partitions: 3,
            demand: true,
            active: 2,
            backlog: 4,
        };
        assert_eq!(decode_member(&encode_member(s, 42)), Some((s, 42)));
        assert_eq!(
            decode_member(br#"{"v":9,"partitions":1,"demand":true,"active":0,"at_ms":1}"#),
            None
        );
    }

    #[test]
    fn values_round_trip() {
        let matches = RawValue::from_string(r#"[{"confidence_score":0.9,"person_data":{"x":"é"}}]"#.into()).unwrap();
        let c = Cached {
            matches,
            batch_id: Arc::from("b-1"),
            resolved_at: Arc::from("2026-12-01T00:00:00.000Z"),
            resolved_at_ms: 1_700_000_000_000,
        };
        let back = decode_result(&encode_result(&c)).unwrap();
        assert_eq!(back.matches.get(), c.matches.get());
        assert_eq!(back.batch_id, c.batch_id);
        assert_eq!(back.resolved_at_ms, c.resolved_at_ms);
        let unmatched = Cached {
            matches: no_matches(),
            ..back
        };
        let text = String::from_utf8(encode_result(&unmatched)).unwrap();
        assert!(text.contains(r#""matched":false"#), "{text}");
        let job = Record::submitting(
            &crate::model::JobSpec {
                kind: IdentifierType::BusinessEmail,
                ids: vec!["a@x.co".into()],
            },
            "pod-a",
            9,
        );
        assert_eq!(decode_job(&encode_job(&job)), Some(job.clone()));
        assert!(
            decode_job(br#"{"v":1,"state":"open","identifier_type":"business_email","ids":[],"at_ms":1}"#).is_none(),
            "the journal's first format is skipped"
        );
        assert!(decode_result(b"{\"v\":2}").is_none());
        let day = std::time::Duration::from_secs(86_400);
        let fresh = encode_result(&Cached {
            resolved_at_ms: 1_000,
            ..decode_result(&encode_result(&c)).unwrap()
        });
        assert!(!expired(&fresh, day, 1_000 + 1000));
        assert!(expired(&fresh, day, 1_000 + 86_400_001));
        assert!(!expired(&encode_job(&job), day, 9));
        assert!(expired(b"garbage", day, 0));
        assert!(decode_job(b"not json").is_none());
    }
}
