//! Result files: gzip detection by magic bytes, bounded decompression (a
//! gzip bomb is refused), and stream-decoding of the JSONL lines into rows
//! of `matched_on`, `match_type` and `matches` (kept verbatim as raw JSON).

use std::io::{BufRead, BufReader, Read};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::model::{no_matches, IdentifierType, Matches};

/// One line of a result file.
#[derive(Debug)]
pub(crate) struct ResultRow {
    /// The identifier as submitted (the API echoes it).
    pub(crate) matched_on: String,
    /// Its type, from `match_type` when the line names a known one.
    pub(crate) kind: Option<IdentifierType>,
    /// The matches, verbatim.
    pub(crate) matches: Matches,
}

/// Why a result file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ResultError {
    /// Not gzip and not JSONL, truncated, or a line that is not a result.
    #[error("corrupt result file: {0}")]
    Corrupt(String),
    /// Decompressed size beyond the bound.
    #[error("result file decompresses to more than {0} bytes")]
    TooLarge(u64),
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    matched_on: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    match_type: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    matches: Option<Box<RawValue>>,
}

fn kind_of(match_type: &str) -> Option<IdentifierType> {
    match match_type.trim() {
        "business_email" | "email" => Some(IdentifierType::BusinessEmail),
        "professional_network_profile_url" | "profile_url" => Some(IdentifierType::ProfileUrl),
        _ => None,
    }
}

/// True if `data` starts with the gzip magic bytes.
pub(crate) fn is_gzip(data: &[u8]) -> bool {
    data.len() >= 2 && data[0] == 0x1f && data[1] == 0x8b
}

/// Decodes a result file (gzip or plain JSONL) into rows, reading at most
/// `max_bytes` decompressed bytes.
#[cfg(test)]
pub(crate) fn parse(data: &[u8], max_bytes: u64) -> Result<Vec<ResultRow>, ResultError> {
    match parse_partial(data, max_bytes) {
        Parsed { rows, error: None, .. } => Ok(rows),
        Parsed { error: Some(e), .. } => Err(e),
    }
}

/// What [`parse_partial`] read.
#[derive(Debug)]
pub(crate) struct Parsed {
    /// Every complete line read.
    pub(crate) rows: Vec<ResultRow>,
    /// What was wrong with the file, if anything.
    pub(crate) error: Option<ResultError>,
    /// Decompressed bytes read.
    pub(crate) bytes: u64,
}

/// Like [`parse`], but keeps every complete line read before the file
/// turned out damaged.
pub(crate) fn parse_partial(data: &[u8], max_bytes: u64) -> Parsed {
    let mut rows = Vec::new();
    let mut bytes = 0;
    let result = if is_gzip(data) {
        parse_lines(
            flate2::read::MultiGzDecoder::new(data),
            max_bytes,
            &mut rows,
            &mut bytes,
        )
    } else {
        parse_lines(data, max_bytes, &mut rows, &mut bytes)
    };
    Parsed {
        rows,
        error: result.err(),
        bytes,
    }
}

fn parse_lines(input: impl Read, max_bytes: u64, out: &mut Vec<ResultRow>, total: &mut u64) -> Result<(), ResultError> {
    let mut reader = BufReader::new(input.take(max_bytes + 1));
    let mut line = Vec::with_capacity(1024);
    let mut number = 0usize;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| ResultError::Corrupt(format!("after line {number}: {e}")))?;
        if n == 0 {
            break;
        }
        *total += n as u64;
        if *total > max_bytes {
            return Err(ResultError::TooLarge(max_bytes));
        }
        number += 1;
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let parsed: Line<'_> =
            serde_json::from_slice(text).map_err(|e| ResultError::Corrupt(format!("line {number}: {e}")))?;
        let matches = match parsed.matches {
            Some(m) if m.get().trim_start().starts_with('[') => m,
            Some(m) if m.get().trim() == "null" => no_matches(),
            None => no_matches(),
            Some(_) => return Err(ResultError::Corrupt(format!("line {number}: matches is not an array"))),
        };
        out.push(ResultRow {
            matched_on: parsed.matched_on.into_owned(),
            kind: parsed.match_type.as_deref().and_then(kind_of),
            matches,
        });
    }
    Ok(())
}

#[cfg(test)]
mod hostile;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::has_matches;
    use std::collections::HashMap;
    use std::io::Write;

    fn map(data: &[u8], max: u64) -> Result<HashMap<String, Matches>, ResultError> {
        parse(data, max).map(|rows| {
            rows.into_iter()
                .map(|r| (crate::decode::match_key(None, &r.matched_on), r.matches))
                .collect()
        })
    }

    fn gz(text: &str) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    }

    const LINES: &str = concat!(
        r#"{"matched_on":"Jane@Acme.com","match_type":"business_email","matches":[{"confidence_score":1.0,"person_data":{"crustdata_person_id":1}}]}"#,
        "\n",
        r#"{"matched_on":"nobody@example.com","match_type":"business_email","matches":[],"match_status":"not_found"}"#,
        "\n"
    );

    #[test]
    fn gzip_and_plain_are_both_read() {
        for data in [gz(LINES), LINES.as_bytes().to_vec()] {
            let m = map(&data, 1 << 20).unwrap();
            assert_eq!(m.len(), 2);
            assert!(has_matches(&m["jane@acme.com"]));
            assert!(!has_matches(&m["nobody@example.com"]));
            assert!(m["jane@acme.com"].get().contains("crustdata_person_id"));
        }
    }

    #[test]
    fn concatenated_gzip_members_are_read() {
        let (a, b) = LINES.split_at(LINES.find('\n').unwrap() + 1);
        let mut data = gz(a);
        data.extend(gz(b));
        assert_eq!(map(&data, 1 << 20).unwrap().len(), 2);
    }

    #[test]
    fn truncated_and_garbled_files_are_corrupt() {
        let data = gz(LINES);
        assert!(matches!(
            parse(&data[..data.len() - 6], 1 << 20),
            Err(ResultError::Corrupt(_))
        ));
        let mut garbled = data.clone();
        let mid = garbled.len() / 2;
        garbled[mid] ^= 0xff;
        assert!(parse(&garbled, 1 << 20).is_err());
        assert!(matches!(
            parse(b"\x00\x01 not json\n", 1 << 20),
            Err(ResultError::Corrupt(_))
        ));
        assert!(matches!(
            parse(br#"{"matches":[]}"#, 1 << 20),
            Err(ResultError::Corrupt(_))
        ));
        assert!(matches!(
            parse(br#"{"matched_on":"a","matches":{}}"#, 1 << 20),
            Err(ResultError::Corrupt(_))
        ));
    }

    #[test]
    fn gzip_bomb_is_refused() {
        let huge = "x".repeat(10 << 20);
        let data = gz(&huge);
        assert!(data.len() < 100_000);
        assert!(matches!(parse(&data, 1 << 20), Err(ResultError::TooLarge(_))));
    }

    #[test]
    fn missing_or_null_matches_mean_unmatched() {
        let m = map(
            b"{\"matched_on\":\"a@b.co\"}\n{\"matched_on\":\"c@d.co\",\"matches\":null}\n",
            1024,
        )
        .unwrap();
        assert!(!has_matches(&m["a@b.co"]));
        assert!(!has_matches(&m["c@d.co"]));
    }

    #[test]
    fn a_damaged_file_still_yields_its_complete_lines() {
        let data = gz(LINES);
        let p = parse_partial(&data[..data.len() - 6], 1 << 20);
        assert!(matches!(p.error, Some(ResultError::Corrupt(_))));
        assert_eq!(p.rows.len(), 2, "both lines were complete before the cut");
        let garbage = format!("{}{{not json\n", LINES);
        let p = parse_partial(garbage.as_bytes(), 1 << 20);
        assert!(p.error.is_some());
        assert_eq!(p.rows.len(), 2);
        assert_eq!(p.rows[0].kind, Some(IdentifierType::BusinessEmail));
        let p = parse_partial(LINES.as_bytes(), 1 << 20);
        assert!(p.error.is_none());
        assert_eq!(p.rows.len(), 2);
        assert_eq!(p.bytes, LINES.len() as u64);
    }
}
