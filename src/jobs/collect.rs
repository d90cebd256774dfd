//! Collecting a completed job's results: download every part (renewing an
//! expired link once, fetching a corrupt part once more), decode the files
//! and match each line back to a submitted identifier.

use std::collections::HashMap;

use tracing::{info, warn};

use super::results::{self, ResultRow};
use super::JobContext;
use crate::api::{ApiError, Endpoint, JobStatus};
use crate::decode::match_key;
use crate::model::{has_matches, no_matches, JobSpec, Matches};

impl JobContext {
    /// Downloads and decodes the results of a completed job and matches
    /// them to the submitted identifiers.
    pub(super) async fn collect(
        &self,
        seq: u64,
        spec: &JobSpec,
        batch_id: &str,
        status: JobStatus,
    ) -> Result<(HashMap<String, Matches>, Vec<String>), ApiError> {
        let empty = status.result_count == Some(0);
        let rows = if empty {
            Vec::new()
        } else {
            self.fetch_all(seq, batch_id, status).await?
        };
        let mut found: HashMap<String, Matches> = rows
            .into_iter()
            .map(|r| (match_key(&r.matched_on), r.matches))
            .collect();
        let mut results = HashMap::with_capacity(spec.ids.len());
        let mut missing = Vec::new();
        let mut credits = 0u64;
        for id in &spec.ids {
            match found.remove(&match_key(id)) {
                Some(m) => {
                    if has_matches(&m) {
                        credits += 1;
                    }
                    results.insert(id.clone(), m);
                }
                None if empty => {
                    results.insert(id.clone(), no_matches());
                }
                None => missing.push(id.clone()),
            }
        }
        self.metrics.credits_spent(credits);
        info!(%batch_id, submitted = spec.ids.len(), matched = credits, missing = missing.len(), credits_spent = credits, "job results");
        Ok((results, missing))
    }

    /// Downloads every part of a completed job's results (`download_urls`,
    /// else `download_url`). An expired link is renewed once by a fresh
    /// status request; a corrupt part is fetched once more.
    pub(super) async fn fetch_all(
        &self,
        seq: u64,
        batch_id: &str,
        mut status: JobStatus,
    ) -> Result<Vec<ResultRow>, ApiError> {
        let mut refreshed = false;
        'links: loop {
            let urls = if status.download_urls.is_empty() {
                status.download_url.iter().cloned().collect::<Vec<_>>()
            } else {
                status.download_urls.clone()
            };
            if urls.is_empty() {
                return Err(ApiError::Malformed(format!(
                    "job {batch_id} completed without download_url"
                )));
            }
            let mut all = Vec::new();
            for url in &urls {
                let mut tries = 0;
                loop {
                    tries += 1;
                    let data = match self.call(Endpoint::Download, seq, || self.api.download(url)).await {
                        Ok(d) => d,
                        Err(ApiError::LinkExpired(_)) if !refreshed => {
                            refreshed = true;
                            status = self.call(Endpoint::Status, seq, || self.api.status(batch_id)).await?;
                            continue 'links;
                        }
                        Err(e) => return Err(e),
                    };
                    match results::parse(&data, self.api.max_result_bytes()) {
                        Ok(rows) => {
                            all.extend(rows);
                            break;
                        }
                        Err(e) => {
                            self.metrics.result_file_rejected();
                            warn!(error = %e, tries, %batch_id, "unusable result file");
                            if tries >= 2 {
                                return Err(ApiError::Malformed(e.to_string()));
                            }
                        }
                    }
                }
            }
            return Ok(all);
        }
    }
}
