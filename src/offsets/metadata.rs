//! Commit metadata: the ids of the API jobs covering a partition's
//! uncommitted records, so that the partition's next owner can reuse their
//! results instead of paying for the same identifiers again.

/// Prefix of the commit metadata written by this connector.
const META_PREFIX: &str = "identify/v1 jobs=";
/// At most this many job ids per partition (commit metadata is limited,
/// 4096 bytes by default on the broker).
pub(crate) const MAX_META_JOBS: usize = 64;

/// Commit metadata naming the jobs that cover uncommitted records.
pub(crate) fn encode_jobs<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    let ids: Vec<&str> = ids.take(MAX_META_JOBS).collect();
    format!("{META_PREFIX}{}", ids.join(","))
}

/// The job ids in commit metadata written by [`encode_jobs`]; anything else
/// (another tool's metadata, garbage) yields none.
pub(crate) fn decode_jobs(meta: &str) -> Vec<String> {
    let Some(list) = meta.strip_prefix(META_PREFIX) else {
        return Vec::new();
    };
    list.split(',')
        .map(str::trim)
        .filter(|id| {
            !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .take(MAX_META_JOBS)
        .map(str::to_owned)
        .collect()
}
