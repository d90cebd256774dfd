//! Simulator result downloads: parts of `lines_per_part` lines, S3-style
//! refusals (Authorization header, bad signature, expired link) and the 404
//! of a completed job with `result_count: 0`.

mod common;

use std::time::Duration;

use common::*;
use crustdata_sim::SimConfig;

#[tokio::test]
async fn download_urls_split_into_parts_of_lines_per_part() {
    let env = start(SimConfig {
        match_rate: 1.0,
        lines_per_part: 10,
        ..fast_config()
    })
    .await;
    let ids = emails("parts", 25);
    let done = env.run_job(&ids).await;
    let parts = done["download_urls"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    let mut all = Vec::new();
    let mut sizes = Vec::new();
    for p in parts {
        let lines = env.download_lines(p.as_str().unwrap()).await;
        sizes.push(lines.len());
        all.extend(lines);
    }
    assert_eq!(sizes, vec![10, 10, 5]);
    let whole = env.download_lines(done["download_url"].as_str().unwrap()).await;
    assert_eq!(all, whole, "parts concatenate to the whole file");
}

async fn xml_error(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

#[tokio::test]
async fn download_with_authorization_is_refused_like_s3() {
    let env = start(SimConfig {
        match_rate: 1.0,
        ..fast_config()
    })
    .await;
    let done = env.run_job(&emails("auth", 1)).await;
    let resp = env
        .http
        .get(done["download_url"].as_str().unwrap())
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let (status, body) = xml_error(resp).await;
    assert_eq!(status, 400);
    assert!(body.contains("<Code>InvalidArgument</Code>"), "{body}");
    assert!(body.contains("Only one auth mechanism allowed"));
    assert_eq!(env.sim.stats().download_errors, 1);
}

#[tokio::test]
async fn bad_signature_and_expired_links_are_403() {
    let env = start(SimConfig {
        match_rate: 1.0,
        ..fast_config()
    })
    .await;
    let done = env.run_job(&emails("sig", 1)).await;
    let url = done["download_url"].as_str().unwrap();
    let last = if url.ends_with('0') { '1' } else { '0' };
    let tampered = format!("{}{last}", &url[..url.len() - 1]);
    let (status, body) = xml_error(env.download(&tampered).await).await;
    assert_eq!(status, 403);
    assert!(body.contains("<Code>SignatureDoesNotMatch</Code>"), "{body}");
    let other_object = url.replace("results.jsonl.gz", "part-000.jsonl.gz");
    assert_eq!(
        env.download(&other_object).await.status(),
        403,
        "signature covers the object name"
    );
    let unsigned = url.split('?').next().unwrap();
    assert_eq!(env.download(unsigned).await.status(), 403);

    env.sim.update(|c| c.link_ttl = Duration::ZERO);
    let done = env.run_job(&emails("sig2", 1)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, body) = xml_error(env.download(done["download_url"].as_str().unwrap()).await).await;
    assert_eq!(status, 403);
    assert!(
        body.contains("<Code>AccessDenied</Code>") && body.contains("Request has expired"),
        "{body}"
    );
}

#[tokio::test]
async fn zero_results_keep_the_url_but_download_is_404() {
    let env = start(SimConfig {
        match_rate: 0.0,
        ..fast_config()
    })
    .await;
    let done = env.run_job(&emails("none", 3)).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["result_count"], 0);
    let url = done["download_url"].as_str().expect("URL still present");
    let (status, body) = xml_error(env.download(url).await).await;
    assert_eq!(status, 404);
    assert!(body.contains("<Code>NoSuchKey</Code>"), "{body}");
    let part = done["download_urls"][0].as_str().unwrap();
    assert_eq!(env.download(part).await.status(), 404);
    assert_eq!(env.sim.stats().credits_charged, 0);
}
