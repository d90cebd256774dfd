//! `identify-connector redrive`: sends dead letters through again. It
//! reads the dead-letter topic to its end, selects letters by reason,
//! error class, original topic and time range ([`select`]), and produces
//! each selected letter's original key, value and kept headers to its
//! original topic with an `identify.redrive` header. Which letters it
//! re-drove is remembered in a compacted topic beside the dead-letter
//! topic (`<dead_letter_topic>.redriven`), written in the same Kafka
//! transaction as the records ([`topics`]): a run that dies half-way
//! leaves both or neither, a second run re-drives nothing twice, and a
//! run for one reason leaves the other reasons' letters for a later run
//! (a consumer group's offset would move past the letters it skipped).
//! Bad arguments and letters that are not ours stop the run before it
//! writes anything.

mod select;
mod topics;

use std::collections::BTreeMap;
use std::io::IsTerminal;

use chrono::{DateTime, Utc};
use rdkafka::message::{Header, OwnedHeaders};

use crate::config::Config;
use crate::model::{reason_class, DEAD_LETTER_REASONS};
use select::{judge, Filter, Verdict};

/// Records per transaction.
const CHUNK: usize = 500;

/// Why a re-drive did not run.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    /// The arguments are wrong; nothing was read or written.
    #[error("{0}")]
    Usage(String),
    /// A letter is not a dead letter of ours; nothing was written.
    #[error("{0}")]
    Foreign(String),
    /// Kafka failed; the transactions committed before stay.
    #[error("kafka: {0}")]
    Kafka(String),
}

/// What to re-drive (the command line's options).
#[derive(Debug, Clone, Default)]
pub struct RedriveArgs {
    /// Reasons to re-drive (empty: all).
    pub reasons: Vec<String>,
    /// Error class: `input`, `api` or `output`.
    pub class: Option<String>,
    /// Original topic.
    pub topic: Option<String>,
    /// Dead-lettered at or after (RFC 3339).
    pub since: Option<String>,
    /// Dead-lettered before (RFC 3339).
    pub until: Option<String>,
    /// Re-drive at most this many.
    pub limit: Option<usize>,
    /// Report what would be re-driven; write nothing.
    pub dry_run: bool,
    /// Re-drive letters that did not keep the input's headers (written
    /// with `output.forward_headers = false`), without them.
    pub without_headers: bool,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Letters read.
    pub read: usize,
    /// Letters the filter selected.
    pub selected: usize,
    /// Letters re-driven (or, with `--dry-run`, that would be).
    pub redriven: usize,
    /// Selected letters not re-driven, by why.
    pub skipped: BTreeMap<&'static str, usize>,
    /// Whether it was a dry run.
    pub dry_run: bool,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run { "would re-drive" } else { "re-driven" };
        write!(
            f,
            "dead letters read: {}, selected: {}, {verb}: {}",
            self.read, self.selected, self.redriven
        )?;
        for (why, n) in &self.skipped {
            write!(f, ", skipped ({why}): {n}")?;
        }
        if self.skipped.contains_key("headers_not_kept") {
            write!(
                f,
                "\n(headers_not_kept: dead-lettered with output.forward_headers = false, so their headers are gone; add --without-headers to send them without)"
            )?;
        }
        Ok(())
    }
}

fn time(name: &str, v: Option<&str>) -> Result<Option<i64>, RedriveError> {
    v.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .map_err(|e| {
                RedriveError::Usage(format!(
                    "--{name} {s:?} is not an RFC 3339 time such as 2026-12-07T09:30:00Z: {e}"
                ))
            })
    })
    .transpose()
}

/// Checks the arguments: one message per run, naming the option.
fn filter(a: &RedriveArgs) -> Result<Filter, RedriveError> {
    for r in &a.reasons {
        if reason_class(r).is_none() {
            let known: Vec<&str> = DEAD_LETTER_REASONS.iter().map(|(r, _)| *r).collect();
            return Err(RedriveError::Usage(format!(
                "--reason {r:?} is not a dead-letter reason; the reasons are: {}",
                known.join(", ")
            )));
        }
    }
    if let Some(c) = &a.class {
        if !["input", "api", "output"].contains(&c.as_str()) {
            return Err(RedriveError::Usage(format!(
                "--class {c:?} is not an error class; the classes are: input, api, output"
            )));
        }
    }
    let (since_ms, until_ms) = (time("since", a.since.as_deref())?, time("until", a.until.as_deref())?);
    if let (Some(s), Some(u)) = (since_ms, until_ms) {
        if s >= u {
            return Err(RedriveError::Usage(format!(
                "--since {} is not before --until {}: the time range is empty",
                a.since.as_deref().unwrap_or_default(),
                a.until.as_deref().unwrap_or_default()
            )));
        }
    }
    if a.limit == Some(0) {
        return Err(RedriveError::Usage("--limit 0 would re-drive nothing".into()));
    }
    Ok(Filter {
        reasons: a.reasons.clone(),
        class: a.class.clone(),
        topic: a.topic.clone(),
        since_ms,
        until_ms,
        without_headers: a.without_headers,
    })
}

/// Progress on a terminal (a bar on stderr), plain lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
    next_line: usize,
}

impl Progress {
    fn new(total: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} re-driven ({eta} left)")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        Self {
            bar,
            total,
            next_line: 0,
        }
    }

    fn done(&mut self, n: usize) {
        match &self.bar {
            Some(b) => b.set_position(n as u64),
            None if n >= self.next_line || n == self.total => {
                eprintln!("re-driven {n}/{}", self.total);
                self.next_line = n + (self.total / 10).max(CHUNK);
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

/// Runs a re-drive under `cfg` (its Kafka settings and dead-letter topic).
pub async fn run(cfg: &Config, args: &RedriveArgs) -> Result<Summary, RedriveError> {
    let f = filter(args)?;
    let dlq = cfg.kafka.dead_letter_topic.clone();
    let memory = format!("{dlq}.redriven");
    let Some(partitions) = topics::partitions(cfg, &dlq)? else {
        return Err(RedriveError::Usage(format!(
            "kafka.dead_letter_topic {dlq:?} does not exist"
        )));
    };
    // A real run first fences any other run on this dead-letter topic (its
    // transactional id), and only then reads what was re-driven: letters a
    // run still going sent are not sent again.
    let writer = if args.dry_run {
        None
    } else {
        topics::ensure_memory(cfg, &memory).await?;
        Some(tokio::task::block_in_place(|| topics::Writer::new(cfg))?)
    };
    let done = topics::remembered(cfg, &memory)?;
    let mut summary = Summary {
        dry_run: args.dry_run,
        ..Summary::default()
    };
    let mut chosen = Vec::new();
    let mut foreign = None;
    topics::read_to_end(cfg, &dlq, partitions, |l| {
        summary.read += 1;
        if foreign.is_some() {
            return;
        }
        match judge(&l, &f, &done) {
            Err(e) => foreign = Some(e),
            Ok(Verdict::Unselected) => {}
            Ok(Verdict::Skipped(why)) => {
                summary.selected += 1;
                *summary.skipped.entry(why).or_default() += 1;
            }
            Ok(Verdict::Redrive(topic)) => {
                summary.selected += 1;
                if args.limit.is_some_and(|n| chosen.len() >= n) {
                    *summary.skipped.entry("over_limit").or_default() += 1;
                } else {
                    chosen.push((topic, l));
                }
            }
        }
    })?;
    if let Some(e) = foreign {
        return Err(RedriveError::Foreign(e.to_string()));
    }
    let Some(writer) = writer.filter(|_| !chosen.is_empty()) else {
        summary.redriven = chosen.len();
        return Ok(summary);
    };
    let run = format!(
        "{}/{}",
        Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        uuid::Uuid::new_v4().simple()
    );
    let mut progress = Progress::new(chosen.len());
    for chunk in chosen.chunks(CHUNK) {
        let mut records = Vec::with_capacity(chunk.len());
        let mut remember = Vec::with_capacity(chunk.len());
        for (topic, l) in chunk {
            let mut headers = OwnedHeaders::new();
            for (k, v) in l.input_headers() {
                headers = headers.insert(Header {
                    key: k,
                    value: v.as_deref(),
                });
            }
            let from = format!("{dlq}/{}", l.id());
            headers = headers
                .insert(Header {
                    key: "identify.redrive",
                    value: Some(run.as_bytes()),
                })
                .insert(Header {
                    key: "identify.redrive.from",
                    value: Some(from.as_bytes()),
                });
            records.push((topic.clone(), l.key.clone(), l.value.clone(), headers));
            let value = serde_json::json!({"run": run, "to": topic, "reason": l.reason()});
            remember.push((memory.clone(), l.id(), value.to_string().into_bytes()));
        }
        tokio::task::block_in_place(|| writer.commit(&records, &remember))?;
        summary.redriven += chunk.len();
        progress.done(summary.redriven);
    }
    progress.finish();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut RedriveArgs)) -> RedriveArgs {
        let mut a = RedriveArgs::default();
        f(&mut a);
        a
    }

    #[test]
    fn bad_arguments_get_one_clear_message() {
        let unknown = filter(&args(|a| a.reasons = vec!["timeout".into()])).unwrap_err();
        assert!(unknown
            .to_string()
            .starts_with("--reason \"timeout\" is not a dead-letter reason; the reasons are: empty_value"));
        let backwards = filter(&args(|a| {
            a.since = Some("2026-12-07T10:00:00Z".into());
            a.until = Some("2026-12-07T09:00:00Z".into());
        }))
        .unwrap_err();
        assert!(backwards.to_string().contains("is not before --until"), "{backwards}");
        let not_a_time = filter(&args(|a| a.since = Some("yesterday".into()))).unwrap_err();
        assert!(not_a_time
            .to_string()
            .starts_with("--since \"yesterday\" is not an RFC 3339 time"));
        let class = filter(&args(|a| a.class = Some("network".into()))).unwrap_err();
        assert!(class.to_string().contains("input, api, output"));
        let ok = filter(&args(|a| {
            a.reasons = vec!["job_failed".into()];
            a.since = Some("2026-12-07T09:00:00+01:00".into());
        }))
        .unwrap();
        assert_eq!(ok.since_ms, Some(1_796_630_400_000));
    }

    #[test]
    fn the_summary_says_what_was_skipped_and_why() {
        let mut s = Summary {
            read: 10,
            selected: 6,
            redriven: 4,
            ..Summary::default()
        };
        s.skipped.insert("already_redriven", 2);
        assert_eq!(
            s.to_string(),
            "dead letters read: 10, selected: 6, re-driven: 4, skipped (already_redriven): 2"
        );
    }
}
