//! Which dead letters a re-drive sends through again: the filter the
//! operator gave (reasons, error class, original topic, time range), the
//! letters already re-driven, and those that cannot be sent back as they
//! came (a value cut to fit the dead-letter topic; the input's headers not
//! kept, unless the operator accepts that). Pure, unit-tested.

use std::collections::HashSet;

use crate::model::reason_class;

/// Headers of our own on a dead letter; every other header is the input's.
fn ours(key: &str) -> bool {
    key.starts_with("identify.") || key.starts_with("__connect.errors.")
}

/// One record read from the dead-letter topic.
pub(crate) type Letter = crate::scan::Scanned;

impl Letter {
    /// Its id in the re-drive memory.
    pub(crate) fn id(&self) -> String {
        format!("{}/{}", self.partition, self.offset)
    }

    fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Its reason (`identify.error.reason`).
    pub(crate) fn reason(&self) -> Option<&str> {
        self.header("identify.error.reason")
    }

    /// When it was dead-lettered: its `identify.error.at` header, else its
    /// timestamp (which is the input's).
    pub(crate) fn dead_lettered_ms(&self) -> i64 {
        self.header("identify.error.at")
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis())
            .or(self.timestamp_ms)
            .unwrap_or(0)
    }

    /// The topic it came from (`identify.source.topic`).
    pub(crate) fn source_topic(&self) -> Option<&str> {
        self.header("identify.source.topic")
    }

    /// The input's headers it kept (all of them with
    /// `output.forward_headers = true`; none otherwise).
    pub(crate) fn input_headers(&self) -> impl Iterator<Item = &(String, Option<Vec<u8>>)> {
        self.headers.iter().filter(|(k, _)| !ours(k))
    }
}

/// What the operator asked for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    /// Reasons (empty: any).
    pub(crate) reasons: Vec<String>,
    /// Error class: `input`, `api` or `output` (none: any).
    pub(crate) class: Option<String>,
    /// Original topic (none: any).
    pub(crate) topic: Option<String>,
    /// Dead-lettered at or after (ms).
    pub(crate) since_ms: Option<i64>,
    /// Dead-lettered before (ms).
    pub(crate) until_ms: Option<i64>,
    /// Re-drive letters that did not keep the input's headers, without them.
    pub(crate) without_headers: bool,
}

/// The verdict on one letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not asked for.
    Unselected,
    /// Asked for but not sent: why (a summary label).
    Skipped(&'static str),
    /// Sent back to this topic.
    Redrive(String),
}

/// Why a letter cannot be judged at all: it is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dead letter {id} has no {missing} header: not a dead letter of identify-connector (or a damaged one); nothing was re-driven")]
pub(crate) struct Foreign {
    /// `partition/offset`.
    pub(crate) id: String,
    /// The header it lacks.
    pub(crate) missing: &'static str,
}

/// Judges `l` by `f`, given the letters re-driven before (`done`).
pub(crate) fn judge(l: &Letter, f: &Filter, done: &HashSet<String>) -> Result<Verdict, Foreign> {
    let foreign = |missing| Foreign { id: l.id(), missing };
    let reason = l.reason().ok_or_else(|| foreign("identify.error.reason"))?;
    let topic = l.source_topic().ok_or_else(|| foreign("identify.source.topic"))?;
    let ts = l.dead_lettered_ms();
    let selected = (f.reasons.is_empty() || f.reasons.iter().any(|r| r == reason))
        && f.class.as_deref().is_none_or(|c| reason_class(reason) == Some(c))
        && f.topic.as_deref().is_none_or(|t| t == topic)
        && f.since_ms.is_none_or(|s| ts >= s)
        && f.until_ms.is_none_or(|u| ts < u);
    if !selected {
        return Ok(Verdict::Unselected);
    }
    if done.contains(&l.id()) {
        return Ok(Verdict::Skipped("already_redriven"));
    }
    if l.header("identify.error.value_truncated_from").is_some() {
        return Ok(Verdict::Skipped("value_truncated"));
    }
    if l.header("identify.error.headers_dropped").is_some() && !f.without_headers {
        return Ok(Verdict::Skipped("headers_not_kept"));
    }
    Ok(Verdict::Redrive(topic.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(offset: i64, reason: Option<&str>, ts: i64) -> Letter {
        let mut headers = vec![("tenant".to_string(), Some(b"acme".to_vec()))];
        headers.push(("identify.source.topic".into(), Some(b"in".to_vec())));
        if let Some(r) = reason {
            headers.push(("identify.error.reason".into(), Some(r.as_bytes().to_vec())));
        }
        headers.push(("__connect.errors.topic".into(), Some(b"in".to_vec())));
        Letter {
            partition: 0,
            offset,
            timestamp_ms: Some(ts),
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers,
        }
    }

    #[test]
    fn selects_by_reason_class_topic_and_time() {
        let none = HashSet::new();
        let by_reason = Filter {
            reasons: vec!["job_failed".into()],
            ..Filter::default()
        };
        let failed = letter(1, Some("job_failed"), 1000);
        let bad = letter(2, Some("not_parseable"), 1000);
        assert_eq!(judge(&failed, &by_reason, &none), Ok(Verdict::Redrive("in".into())));
        assert_eq!(judge(&bad, &by_reason, &none), Ok(Verdict::Unselected));
        let by_class = Filter {
            class: Some("input".into()),
            ..Filter::default()
        };
        assert_eq!(judge(&failed, &by_class, &none), Ok(Verdict::Unselected));
        assert_eq!(judge(&bad, &by_class, &none), Ok(Verdict::Redrive("in".into())));
        let other_topic = Filter {
            topic: Some("elsewhere".into()),
            ..Filter::default()
        };
        assert_eq!(judge(&failed, &other_topic, &none), Ok(Verdict::Unselected));
        let window = Filter {
            since_ms: Some(1000),
            until_ms: Some(2000),
            ..Filter::default()
        };
        assert_eq!(judge(&failed, &window, &none), Ok(Verdict::Redrive("in".into())));
        assert_eq!(
            judge(&letter(3, Some("job_failed"), 2000), &window, &none),
            Ok(Verdict::Unselected)
        );
        // The time it was dead-lettered counts, not the input's.
        let mut late = letter(4, Some("job_failed"), 1000);
        late.headers
            .push(("identify.error.at".into(), Some(b"1970-01-01T00:00:02.500Z".to_vec())));
        assert_eq!(late.dead_lettered_ms(), 2500);
        assert_eq!(judge(&late, &window, &none), Ok(Verdict::Unselected));
    }

    #[test]
    fn re_driven_and_truncated_letters_are_skipped_with_their_reason() {
        let any = Filter::default();
        let l = letter(7, Some("job_failed"), 0);
        let done: HashSet<String> = ["0/7".to_string()].into();
        assert_eq!(judge(&l, &any, &done), Ok(Verdict::Skipped("already_redriven")));
        let mut cut = letter(8, Some("oversized"), 0);
        cut.headers
            .push(("identify.error.value_truncated_from".into(), Some(b"9000000".to_vec())));
        assert_eq!(judge(&cut, &any, &done), Ok(Verdict::Skipped("value_truncated")));
        let mut bare = letter(9, Some("job_failed"), 0);
        bare.headers
            .push(("identify.error.headers_dropped".into(), Some(b"true".to_vec())));
        assert_eq!(judge(&bare, &any, &done), Ok(Verdict::Skipped("headers_not_kept")));
        let anyway = Filter {
            without_headers: true,
            ..Filter::default()
        };
        assert_eq!(judge(&bare, &anyway, &done), Ok(Verdict::Redrive("in".into())));
    }

    #[test]
    fn a_letter_without_our_headers_is_foreign_and_only_the_inputs_headers_go_back() {
        let l = letter(9, None, 0);
        let e = judge(&l, &Filter::default(), &HashSet::new()).unwrap_err();
        assert_eq!(e.missing, "identify.error.reason");
        assert!(e
            .to_string()
            .contains("dead letter 0/9 has no identify.error.reason header"));
        let kept: Vec<_> = letter(1, Some("job_failed"), 0)
            .input_headers()
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(kept, ["tenant"]);
    }
}
