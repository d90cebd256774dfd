//! Result files: S3-style pre-signed links ([`Links`]) and the download
//! endpoint `GET /_files/{batch_id}/{name}`, which renders the gzipped JSONL
//! lazily from the job's identifiers and applies download faults per request.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDateTime, Utc};
use flate2::write::GzEncoder;
use flate2::Compression;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::directory::permutation;
use super::errors::S3Error;
use super::jobs::{Job, Phase};
use super::server::Shared;

/// Name of the object holding every line of a job.
pub const WHOLE_FILE: &str = "results.jsonl.gz";
const AMZ_DATE: &str = "%Y%m%dT%H%M%SZ";

/// Signs and verifies the simulator's pre-signed download links.
#[derive(Debug)]
pub(crate) struct Links {
    secret: [u8; 32],
}

impl Links {
    /// A signer with a random secret.
    pub fn new() -> Links {
        Links { secret: rand::random() }
    }

    fn signature(&self, id: &Uuid, name: &str, date: &str, expires: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC accepts any key length");
        mac.update(format!("{id}/{name}\n{date}\n{expires}").as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// An absolute pre-signed URL for object `name` of job `id`.
    pub fn presign(&self, base: &str, id: &Uuid, name: &str, signed_at: DateTime<Utc>, ttl: Duration) -> String {
        let date = signed_at.format(AMZ_DATE).to_string();
        let expires = ttl.as_secs().to_string();
        let sig = hex::encode(self.signature(id, name, &date, &expires));
        format!(
            "{base}/_files/{id}/{name}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=SIMULATED%2F{day}%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date={date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host&X-Amz-Signature={sig}",
            day = signed_at.format("%Y%m%d"),
        )
    }

    /// Checks signature then expiry of a download request's query.
    fn verify(&self, id: &Uuid, name: &str, q: &HashMap<String, String>) -> Result<(), S3Error> {
        let (Some(date), Some(expires), Some(sig)) =
            (q.get("X-Amz-Date"), q.get("X-Amz-Expires"), q.get("X-Amz-Signature"))
        else {
            return Err(S3Error::SignatureDoesNotMatch);
        };
        let given = hex::decode(sig).map_err(|_| S3Error::SignatureDoesNotMatch)?;
        let expected = self.signature(id, name, date, expires);
        if !bool::from(given.ct_eq(&expected)) {
            return Err(S3Error::SignatureDoesNotMatch);
        }
        let signed = NaiveDateTime::parse_from_str(date, AMZ_DATE)
            .map_err(|_| S3Error::SignatureDoesNotMatch)?
            .and_utc();
        let ttl: i64 = expires.parse().map_err(|_| S3Error::SignatureDoesNotMatch)?;
        if Utc::now() > signed + chrono::Duration::seconds(ttl) {
            return Err(S3Error::Expired);
        }
        Ok(())
    }
}

/// Object names of a job with `lines` result lines: the parts of `download_urls`.
pub(crate) fn part_names(lines: usize, lines_per_part: usize) -> Vec<String> {
    let parts = lines.div_ceil(lines_per_part.max(1)).max(1);
    (0..parts).map(|i| format!("part-{i:03}.jsonl.gz")).collect()
}

/// Index range of the shuffled lines held by object `name`, if it exists.
fn object_range(name: &str, lines: usize, lines_per_part: usize) -> Option<std::ops::Range<usize>> {
    if name == WHOLE_FILE {
        return Some(0..lines);
    }
    let idx: usize = name.strip_prefix("part-")?.strip_suffix(".jsonl.gz")?.parse().ok()?;
    let lpp = lines_per_part.max(1);
    let start = idx.checked_mul(lpp)?;
    (start < lines || (idx == 0 && lines == 0)).then(|| start..(start + lpp).min(lines))
}

/// What to do to one download, decided under the lock.
#[derive(Debug, Default)]
struct Damage {
    missing_line: Option<u64>,
    corrupt: Option<u64>,
    truncate: Option<u64>,
}

/// Renders the shuffled JSONL lines of a completed job.
fn render_lines(shared: &Shared, job: &Job) -> Vec<String> {
    let ids = &job.identifiers;
    permutation(ids.len(), job.seed ^ job.id.as_u128() as u64)
        .into_iter()
        .map(|i| {
            shared
                .directory
                .render_line(job.kind, job.seed, job.match_rate, &ids[i])
        })
        .collect()
}

fn gzip(lines: &[String]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    for line in lines {
        // Writing to a Vec cannot fail.
        let _ = enc.write_all(line.as_bytes());
        let _ = enc.write_all(b"\n");
    }
    enc.finish().unwrap_or_default()
}

/// `GET /_files/{batch_id}/{name}`.
pub(crate) async fn download(
    State(shared): State<Arc<Shared>>,
    Path((batch_id, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    match prepare(&shared, &batch_id, &name, &query, &headers) {
        Ok((bytes, slow)) => {
            shared.store.lock().expect("store lock").stats.downloads += 1;
            serve(bytes, slow)
        }
        Err(e) => {
            shared.store.lock().expect("store lock").stats.download_errors += 1;
            e.into_response()
        }
    }
}

fn prepare(
    shared: &Shared,
    batch_id: &str,
    name: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(Vec<u8>, Duration), S3Error> {
    if headers.contains_key(header::AUTHORIZATION) {
        return Err(S3Error::InvalidArgument);
    }
    let id = Uuid::parse_str(batch_id).map_err(|_| S3Error::SignatureDoesNotMatch)?;
    shared.links.verify(&id, name, query)?;
    let cfg = shared.config();
    let (job, damage) = {
        let mut store = shared.store.lock().expect("store lock");
        if store.chance(cfg.expired_link_rate) {
            return Err(S3Error::Expired);
        }
        if store.chance(cfg.error_rate_download) {
            store.stats.injected_500s += 1;
            return Err(S3Error::InternalError);
        }
        let job = store.get(&id).ok_or(S3Error::NoSuchKey)?;
        let damage = Damage {
            missing_line: store.chance(cfg.missing_line_rate).then(|| store.below(u64::MAX)),
            corrupt: store.chance(cfg.corrupt_rate).then(|| store.below(u64::MAX)),
            truncate: store.chance(cfg.truncate_rate).then(|| store.below(u64::MAX)),
        };
        if damage.missing_line.is_some() || damage.corrupt.is_some() || damage.truncate.is_some() {
            store.stats.downloads_damaged += 1;
        }
        (job, damage)
    };
    match job.phase {
        Phase::Completed { result_count, .. } if result_count > 0 => {}
        _ => return Err(S3Error::NoSuchKey),
    }
    let range = object_range(name, job.identifiers.len(), cfg.lines_per_part).ok_or(S3Error::NoSuchKey)?;
    let mut lines = render_lines(shared, &job);
    lines.truncate(range.end);
    lines.drain(..range.start);
    if let Some(r) = damage.missing_line {
        if !lines.is_empty() {
            lines.remove((r % lines.len() as u64) as usize);
        }
    }
    let mut bytes = gzip(&lines);
    if let Some(r) = damage.corrupt {
        garble(&mut bytes, r);
    }
    if let Some(r) = damage.truncate {
        // Keep the 10-byte header, lose at least the last trailer byte.
        let len = bytes.len();
        if len > 11 {
            bytes.truncate(10 + (r % (len as u64 - 11)) as usize);
        }
    }
    Ok((bytes, cfg.slow_download))
}

/// Overwrites a run of bytes after the gzip header so decoding must fail
/// (deflate error or CRC mismatch); tiny files also lose their magic bytes.
fn garble(bytes: &mut [u8], r: u64) {
    if bytes.len() < 24 {
        bytes.iter_mut().for_each(|b| *b = !*b);
        return;
    }
    let start = 10 + (r % ((bytes.len() - 20) as u64)) as usize;
    let end = (start + 16).min(bytes.len() - 8);
    for (i, b) in bytes[start..end].iter_mut().enumerate() {
        *b ^= 0xA5 ^ (i as u8).wrapping_mul(31) | 1;
    }
    // Also poison the CRC so a lucky deflate decode still fails.
    let n = bytes.len();
    bytes[n - 8] ^= 0xFF;
}

fn serve(bytes: Vec<u8>, slow: Duration) -> Response {
    let len = bytes.len();
    let body = if slow.is_zero() || len == 0 {
        Body::from(bytes)
    } else {
        let chunks = 10.min(len);
        let size = len.div_ceil(chunks);
        let pause = slow / chunks as u32;
        let data = Bytes::from(bytes);
        let stream = futures::stream::unfold(data, move |mut rest| async move {
            if rest.is_empty() {
                return None;
            }
            tokio::time::sleep(pause).await;
            let chunk = rest.split_to(size.min(rest.len()));
            Some((Ok::<_, std::convert::Infallible>(chunk), rest))
        });
        Body::from_stream(stream)
    };
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from(len)),
        ],
        body,
    )
        .into_response()
}
