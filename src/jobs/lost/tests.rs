//! The verdicts on a lost submit's candidates, pure.

use chrono::{TimeZone, Utc};

use super::*;
use crate::model::no_matches;

const SKEW: Duration = Duration::from_secs(5);
const SENT: i64 = 1_000_000;

fn listed(id: &str, created_ms: Option<i64>, count: Option<u64>, state: JobState, results: Option<u64>) -> JobStatus {
    JobStatus {
        batch_id: Some(id.into()),
        state,
        unknown_word: false,
        identifier_count: count,
        result_count: results,
        download_urls: Vec::new(),
        download_url: None,
        error_message: None,
        created_at: created_ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
        server_duration: None,
    }
}

fn row(id: &str) -> ResultRow {
    ResultRow {
        matched_on: id.into(),
        kind: Some(IdentifierType::BusinessEmail),
        matches: no_matches(),
    }
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}@x.co")).collect()
}

#[test]
fn size_and_time_only_exclude_and_a_dated_job_before_the_send_ends_the_listing() {
    let unknown = |_: &str| None;
    let judge = |j: &JobStatus| judge_listed(j, 300, SENT, "me", SKEW, unknown);
    let done = |id, created| listed(id, created, Some(300), JobState::Completed, Some(12));
    assert_eq!(
        judge(&done("a", Some(SENT + 30))),
        Listed::ReadFile,
        "size and time fit: the file tells"
    );
    assert_eq!(
        judge(&done("b", Some(SENT - 4_000))),
        Listed::ReadFile,
        "within the clock skew"
    );
    assert_eq!(
        judge(&done("c", Some(SENT - 6_000))),
        Listed::Stop,
        "clearly before the send"
    );
    assert_eq!(judge(&done("d", None)), Listed::ReadFile, "undated: the file tells");
    assert_eq!(
        judge(&listed("e", None, Some(299), JobState::Completed, Some(1))),
        Listed::NotOurs,
        "another size"
    );
    assert_eq!(
        judge(&listed("f", None, None, JobState::Completed, Some(1))),
        Listed::ReadFile,
        "no size listed: the file tells"
    );
    assert_eq!(
        judge(&listed("g", None, Some(300), JobState::Running, None)),
        Listed::Running
    );
    assert_eq!(
        judge(&listed("h", None, Some(300), JobState::Failed, None)),
        Listed::NotOurs,
        "failed: never billed, submitting again costs nothing"
    );
    assert_eq!(
        judge(&listed("i", None, Some(300), JobState::Completed, Some(0))),
        Listed::NotOurs,
        "no results: never billed"
    );
}

#[test]
fn jobs_a_journal_owns_are_never_candidates_and_one_accepted_before_the_send_ends_the_listing() {
    let known = |b: &str| match b {
        "ours-running" => Some((SENT + 10, "me".to_string())),
        "ours-old" => Some((SENT - 60_000, "peer".to_string())),
        "ours-undated" => Some((0, "me".to_string())),
        "mine-just-before" => Some((SENT - 100, "me".to_string())),
        "peers-just-before" => Some((SENT - 100, "peer".to_string())),
        _ => None,
    };
    let judge = |id: &str| {
        let job = listed(id, None, Some(300), JobState::Completed, Some(3));
        judge_listed(&job, 300, SENT, "me", SKEW, known)
    };
    assert_eq!(judge("ours-running"), Listed::NotOurs);
    assert_eq!(judge("ours-undated"), Listed::NotOurs);
    assert_eq!(judge("ours-old"), Listed::Stop);
    assert_eq!(
        judge("mine-just-before"),
        Listed::Stop,
        "accepted before the send by the sender's own clock: what follows is older"
    );
    assert_eq!(
        judge("peers-just-before"),
        Listed::NotOurs,
        "another member's clock may be off by the skew"
    );
    assert_eq!(judge("foreign"), Listed::ReadFile);
}

#[test]
fn of_several_jobs_of_the_batchs_size_only_the_one_holding_its_identifiers_is_ours() {
    // The old rule took the newest unknown job of the right size: here a
    // peer's or another tool's 300-identifier job.
    let batch = ids("mine", 300);
    let other_tool = ids("theirs", 300);
    let mut overlapping = ids("mine", 150);
    overlapping.extend(ids("theirs", 150));
    let rows = |v: &[String]| v.iter().map(|i| row(i)).collect::<Vec<_>>();
    let kind = IdentifierType::BusinessEmail;
    assert_eq!(judge_rows(&rows(&other_tool), false, kind, &batch), Content::NotOurs);
    assert_eq!(judge_rows(&rows(&overlapping), false, kind, &batch), Content::NotOurs);
    assert_eq!(judge_rows(&rows(&batch), false, kind, &batch), Content::Ours);
    let echoed: Vec<ResultRow> = batch.iter().map(|i| row(&i.to_uppercase())).collect();
    assert_eq!(
        judge_rows(&echoed, false, kind, &batch),
        Content::Ours,
        "compared by the key results are matched with"
    );
}

#[test]
fn a_damaged_or_short_file_is_read_again_but_a_foreign_line_decides_at_once() {
    let batch = ids("mine", 10);
    let kind = IdentifierType::BusinessEmail;
    let part: Vec<ResultRow> = batch[..4].iter().map(|i| row(i)).collect();
    assert_eq!(judge_rows(&part, true, kind, &batch), Content::Unreadable);
    assert_eq!(judge_rows(&part, false, kind, &batch), Content::Short);
    assert_eq!(
        judge_rows(&[], false, kind, &batch),
        Content::Unreadable,
        "an empty file proves nothing"
    );
    let mut foreign = part;
    foreign.push(row("stranger@else.co"));
    assert_eq!(judge_rows(&foreign, true, kind, &batch), Content::NotOurs);
}
