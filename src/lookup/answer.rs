//! One lookup answer: what the store holds for an identifier, in the
//! terms finance asks about (matched or not, who, when, by which job,
//! whether it was paid). Pure, unit-tested.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::decode::{detect, normalize};
use crate::model::{has_matches, IdentifierType};
use crate::store::Cached;

/// What is known of one identifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// As asked.
    pub input: String,
    /// Normalised, as stored (absent when it is not a valid identifier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    /// `business_email` or `profile_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier_type: Option<String>,
    /// `matched`, `unmatched`, `unknown` (never resolved, or no longer
    /// stored) or `invalid` (not an identifier the connector accepts).
    pub status: String,
    /// The person's Crustdata id, when matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person_id: Option<Value>,
    /// The person's name, when matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When it was resolved (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    /// The API job that resolved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// Whether resolving it cost a credit (1 per match; unmatched is free).
    pub paid: bool,
    /// Where the answer came from: `connector`, `local_store` or `topic`.
    pub source: String,
}

impl Answer {
    /// Whether the identifier was resolved (matched or not).
    pub fn found(&self) -> bool {
        matches!(self.status.as_str(), "matched" | "unmatched")
    }
}

/// `raw` as the connector stores it: its type and normalised value.
pub(crate) fn parse(raw: &str) -> Option<(IdentifierType, String)> {
    let raw = raw.trim();
    let kind = detect(raw);
    normalize(kind, raw).ok().map(|v| (kind, v))
}

/// The first of `paths` (JSON pointers) present in `v`.
fn first<'a>(v: &'a Value, paths: &[&str]) -> Option<&'a Value> {
    paths.iter().find_map(|p| v.pointer(p)).filter(|x| !x.is_null())
}

/// The answer for `raw` given what the store holds for it.
pub(crate) fn answer(raw: &str, stored: Option<&Cached>, source: &str) -> Answer {
    let mut a = Answer {
        input: raw.to_string(),
        identifier: None,
        identifier_type: None,
        status: "invalid".into(),
        person_id: None,
        name: None,
        resolved_at: None,
        batch_id: None,
        paid: false,
        source: source.to_string(),
    };
    let Some((kind, value)) = parse(raw) else {
        return a;
    };
    a.identifier = Some(value);
    a.identifier_type = Some(kind.as_str().to_string());
    let Some(c) = stored else {
        a.status = "unknown".into();
        return a;
    };
    a.resolved_at = Some(c.resolved_at.to_string());
    a.batch_id = Some(c.batch_id.to_string());
    if !has_matches(&c.matches) {
        a.status = "unmatched".into();
        return a;
    }
    a.status = "matched".into();
    a.paid = true;
    // The vendor's match objects vary: the documented shape first, then
    // flatter variants.
    let matches: Value = serde_json::from_str(c.matches.get()).unwrap_or(Value::Null);
    if let Some(m) = matches.get(0) {
        a.person_id = first(
            m,
            &[
                "/person_data/crustdata_person_id",
                "/person_data/person_id",
                "/crustdata_person_id",
                "/person_id",
                "/id",
            ],
        )
        .cloned();
        a.name = first(
            m,
            &[
                "/person_data/basic_profile/name",
                "/person_data/name",
                "/basic_profile/name",
                "/name",
                "/full_name",
            ],
        )
        .and_then(Value::as_str)
        .map(str::to_string);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn cached(matches: &str) -> Cached {
        Cached {
            matches: serde_json::value::RawValue::from_string(matches.into()).unwrap(),
            batch_id: Arc::from("job-7"),
            resolved_at: Arc::from("2026-12-07T09:00:00Z"),
            resolved_at_ms: 0,
        }
    }

    #[test]
    fn a_match_names_the_person_the_job_and_the_credit() {
        let c = cached(
            r#"[{"confidence_score":1.0,"person_data":{"crustdata_person_id":123,"basic_profile":{"name":"Jane Doe"}}}]"#,
        );
        let a = answer(" Jane@Acme.com ", Some(&c), "connector");
        assert_eq!(a.identifier.as_deref(), Some("jane@acme.com"));
        assert_eq!(a.status, "matched");
        assert_eq!(a.person_id, Some(serde_json::json!(123)));
        assert_eq!(a.name.as_deref(), Some("Jane Doe"));
        assert_eq!(a.batch_id.as_deref(), Some("job-7"));
        assert!(a.paid && a.found());
        let flat = answer(
            "jane@acme.com",
            Some(&cached(r#"[{"id":"p-9","full_name":"J"}]"#)),
            "topic",
        );
        assert_eq!(flat.person_id, Some(serde_json::json!("p-9")));
        assert_eq!(flat.name.as_deref(), Some("J"));
    }

    #[test]
    fn unmatched_is_free_unknown_is_not_found_and_garbage_is_invalid() {
        let a = answer("nobody@acme.com", Some(&cached("[]")), "local_store");
        assert_eq!((a.status.as_str(), a.paid, a.found()), ("unmatched", false, true));
        let u = answer("new@acme.com", None, "connector");
        assert_eq!((u.status.as_str(), u.found()), ("unknown", false));
        let i = answer("not an email", None, "connector");
        assert_eq!(i.status, "invalid");
        assert!(i.identifier.is_none());
        let json = serde_json::to_string(&u).unwrap();
        assert_eq!(serde_json::from_str::<Answer>(&json).unwrap(), u);
    }
}
