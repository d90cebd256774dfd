//! Hostile input for the result parser: arbitrary bytes, well-formed files
//! read exactly, the decompression bound, 10 MB lines and deep nesting.

use std::io::Write;

use proptest::prelude::*;

use super::{parse, ResultError};
use crate::model::has_matches;

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn result_parser_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = parse(&bytes, 1 << 20);
        let mut magic = vec![0x1f, 0x8b];
        magic.extend_from_slice(&bytes);
        let _ = parse(&magic, 1 << 20);
        let _ = parse(&gz(&bytes), 1 << 20);
    }

    #[test]
    fn result_parser_reads_what_it_is_given(
        lines in proptest::collection::btree_map("[^\r\n]{0,40}", proptest::option::of(0u32..3), 0..40),
        gzipped in any::<bool>(),
    ) {
        let mut text = String::new();
        let mut expect = Vec::new();
        for (id, n) in &lines {
            let matches = match n {
                None => "null".to_string(),
                Some(n) => format!("[{}]", vec![r#"{"confidence_score":1.0,"person_data":{"crustdata_person_id":7}}"#; *n as usize].join(",")),
            };
            text.push_str(&format!(r#"{{"matched_on":{},"matches":{matches}}}"#, serde_json::to_string(id).unwrap()));
            text.push('\n');
            expect.push((id.clone(), n.unwrap_or(0) > 0));
        }
        let data = if gzipped { gz(text.as_bytes()) } else { text.into_bytes() };
        let rows = parse(&data, 1 << 20).map_err(|e| TestCaseError::fail(format!("well-formed results refused: {e}")))?;
        let got: Vec<(String, bool)> = rows.iter().map(|r| (r.matched_on.clone(), has_matches(&r.matches))).collect();
        prop_assert_eq!(got, expect);
    }

    #[test]
    fn result_parser_enforces_its_bound(max in 1024u64..8192, extra in 1u64..4096, gzipped in any::<bool>()) {
        let line = br#"{"matched_on":"a@b.co","matches":[]}"#;
        let mut text = Vec::new();
        while (text.len() as u64) <= max + extra {
            text.extend_from_slice(line);
            text.push(b'\n');
        }
        let data = if gzipped { gz(&text) } else { text };
        prop_assert_eq!(parse(&data, max).unwrap_err(), ResultError::TooLarge(max));
    }
}

#[test]
fn ten_megabyte_lines_and_deep_nesting_are_refused_without_panic() {
    let ten = 10 << 20;
    let nuls = vec![0u8; ten];
    // A 10 MB result line with a 1 MB bound, and a 10 MB gzip of zeros.
    let line = format!(r#"{{"matched_on":"{}","matches":[]}}"#, "a".repeat(ten));
    assert!(matches!(parse(line.as_bytes(), 1 << 20), Err(ResultError::TooLarge(_))));
    assert!(matches!(parse(&gz(&nuls), 1 << 20), Err(ResultError::TooLarge(_))));
    let deep_matches = format!(r#"{{"matched_on":"a","matches":{}}}"#, "[".repeat(1 << 20));
    assert!(matches!(
        parse(deep_matches.as_bytes(), 4 << 20),
        Err(ResultError::Corrupt(_))
    ));
}
