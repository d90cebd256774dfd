//! Simulator job lifecycle and results: timing of status transitions,
//! completed/failed bodies, result files (gzip JSONL shape, shuffling,
//! determinism, directory file), credit ledger and
//! job retention.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use crustdata_sim::SimConfig;
use serde_json::{json, Value};

fn timed(pending_ms: u64, base_ms: u64, retrieval_ms: u64) -> SimConfig {
    SimConfig {
        latency_scale: 1.0,
        pending_time: Duration::from_millis(pending_ms),
        base_time: Duration::from_millis(base_ms),
        per_identifier_time: Duration::ZERO,
        retrieval_time: Duration::from_millis(retrieval_ms),
        jitter: Duration::ZERO,
        ..fast_config()
    }
}

#[tokio::test]
async fn status_moves_pending_processing_completed_by_wall_clock() {
    let env = start(timed(300, 900, 0)).await;
    let started = Instant::now();
    let v = env.submit_ok(&emails("life", 2)).await;
    let id = v["batch_id"].as_str().unwrap();
    let (_, p) = env.poll(id).await;
    assert_eq!(p["status"], "pending");
    assert!(p.get("download_url").is_none());
    tokio::time::sleep(Duration::from_millis(550).saturating_sub(started.elapsed())).await;
    let (_, p) = env.poll(id).await;
    assert_eq!(p["status"], "processing");
    assert!(p.get("download_url").is_none());
    assert!(p.get("result_count").is_none());
    tokio::time::sleep(Duration::from_millis(1000).saturating_sub(started.elapsed())).await;
    let (_, p) = env.poll(id).await;
    assert_eq!(p["status"], "completed");
}

#[tokio::test]
async fn unknown_identifiers_add_retrieval_time() {
    let env = start(timed(0, 0, 700)).await;
    env.sim.update(|c| c.match_rate = 0.0);
    let v = env.submit_ok(&emails("known", 3)).await;
    // All match: no retrieval needed, done (almost) at once.
    env.sim.update(|c| c.match_rate = 1.0);
    let known = env.submit_ok(&emails("known2", 3)).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (_, unknown_job) = env.poll(v["batch_id"].as_str().unwrap()).await;
    let (_, known_job) = env.poll(known["batch_id"].as_str().unwrap()).await;
    assert_eq!(known_job["status"], "completed");
    assert_eq!(unknown_job["status"], "processing", "needs real-time retrieval");
}

#[tokio::test]
async fn per_identifier_time_and_latency_scale_apply() {
    let env = start(SimConfig {
        per_identifier_time: Duration::from_millis(10),
        ..timed(0, 0, 0)
    })
    .await;
    env.sim.update(|c| c.match_rate = 1.0);
    let big = env.submit_ok(&emails("big", 100)).await; // 1 s
    let small = env.submit_ok(&emails("small", 1)).await; // 10 ms
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        env.poll(big["batch_id"].as_str().unwrap()).await.1["status"],
        "processing"
    );
    assert_eq!(
        env.poll(small["batch_id"].as_str().unwrap()).await.1["status"],
        "completed"
    );
    env.sim.update(|c| c.latency_scale = 0.0);
    let instant = env.submit_ok(&emails("instant", 100)).await;
    assert_eq!(
        env.poll(instant["batch_id"].as_str().unwrap()).await.1["status"],
        "completed"
    );
}

#[tokio::test]
async fn completed_body_has_counts_times_and_absolute_signed_urls() {
    let env = start(SimConfig {
        match_rate: 1.0,
        ..fast_config()
    })
    .await;
    let done = env.run_job(&emails("body", 4)).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["entity"], "person");
    assert_eq!(done["action"], "identify");
    assert_eq!(done["identifier_count"], 4);
    assert_eq!(done["entities_requested"], 4);
    assert_eq!(done["result_count"], 4);
    assert_eq!(done["entities_fulfilled"], 4);
    let created = chrono::DateTime::parse_from_rfc3339(done["created_at"].as_str().unwrap()).unwrap();
    let completed = chrono::DateTime::parse_from_rfc3339(done["completed_at"].as_str().unwrap()).unwrap();
    assert!(completed >= created);
    let id = done["batch_id"].as_str().unwrap();
    let url = done["download_url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/_files/{id}/", env.sim.base_url())),
        "{url}"
    );
    assert!(url.contains("X-Amz-Expires=432000"));
    assert!(url.contains("X-Amz-Signature="));
    assert!(url.contains("X-Amz-Date="));
    let parts = done["download_urls"].as_array().unwrap();
    assert_eq!(parts.len(), 1);
    assert!(parts[0].as_str().unwrap().starts_with("http://127.0.0.1:"));
    assert!(done.get("error_message").is_none());
}

#[tokio::test]
async fn public_url_overrides_the_download_base() {
    let env = start(SimConfig {
        public_url: Some("https://sim.example.net/".into()),
        match_rate: 1.0,
        ..fast_config()
    })
    .await;
    let done = env.run_job(&emails("pub", 1)).await;
    let url = done["download_url"].as_str().unwrap();
    assert!(url.starts_with("https://sim.example.net/_files/"), "{url}");
}

#[tokio::test]
async fn result_file_is_gzip_jsonl_with_one_line_per_identifier() {
    let env = start(SimConfig {
        match_rate: 0.5,
        ..fast_config()
    })
    .await;
    let mut ids = emails("file", 40);
    ids.push("Mixed.Case@Example.COM".into());
    ids.push("file.0@example0.com".into()); // duplicate: one line per submitted value
    let done = env.run_job(&ids).await;
    let resp = env.download(done["download_url"].as_str().unwrap()).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("content-encoding").is_none(), "no Content-Encoding");
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct == "application/octet-stream" || ct == "application/gzip", "{ct}");
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");
    let lines: Vec<Value> = gunzip(&bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), ids.len());
    let mut echoed: Vec<String> = lines
        .iter()
        .map(|l| l["matched_on"].as_str().unwrap().to_string())
        .collect();
    let mut submitted = ids.clone();
    echoed.sort();
    submitted.sort();
    assert_eq!(echoed, submitted, "matched_on echoes values verbatim");
    let mut matched = 0;
    for line in &lines {
        assert_eq!(line["match_type"], "business_email");
        let matches = line["matches"].as_array().unwrap();
        if let Some(m) = matches.first() {
            matched += 1;
            let score = m["confidence_score"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&score));
            let person = &m["person_data"];
            assert!(person["crustdata_person_id"].is_u64());
            for field in ["name", "headline", "current_title"] {
                assert!(person["basic_profile"][field].is_string(), "{field}");
            }
            chrono::DateTime::parse_from_rfc3339(person["updated_at"].as_str().unwrap()).unwrap();
        }
    }
    assert_eq!(done["result_count"], matched);
    assert!(matched > 5 && matched < 37, "match_rate 0.5 gave {matched}/42");
}

#[tokio::test]
async fn lines_are_shuffled_deterministically_and_persons_are_stable() {
    let env = start(SimConfig {
        match_rate: 1.0,
        ..fast_config()
    })
    .await;
    let ids = emails("order", 60);
    let done = env.run_job(&ids).await;
    let url = done["download_url"].as_str().unwrap();
    let first = env.download(url).await.bytes().await.unwrap();
    let again = env.download(url).await.bytes().await.unwrap();
    assert_eq!(first, again, "re-download gives the same bytes");
    let order: Vec<String> = gunzip(&first)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["matched_on"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_ne!(order, ids, "lines are shuffled");

    let person_of = |lines: &[Value], who: &str| {
        lines
            .iter()
            .find(|l| l["matched_on"].as_str().unwrap().eq_ignore_ascii_case(who))
            .map(|l| l["matches"][0]["person_data"].clone())
            .unwrap()
    };
    let lines1 = env.download_lines(url).await;
    let done2 = env.run_job(&["ORDER.7@EXAMPLE7.COM".to_string()]).await;
    let lines2 = env.download_lines(done2["download_url"].as_str().unwrap()).await;
    assert_eq!(
        person_of(&lines1, "order.7@example7.com"),
        person_of(&lines2, "ORDER.7@EXAMPLE7.COM"),
        "same person for the same identifier, case-insensitively"
    );
}

#[tokio::test]
async fn profile_urls_and_directory_file_people() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        file,
        "{}",
        json!({ "email": "Known@Corp.com", "person_data": { "crustdata_person_id": 777, "basic_profile": { "name": "Known Person" }, "extra": true } })
    )
    .unwrap();
    writeln!(
        file,
        "{}",
        json!({ "profile_url": "https://www.linkedin.com/in/known", "person_data": { "crustdata_person_id": 888 } })
    )
    .unwrap();
    let env = start(SimConfig {
        match_rate: 0.0,
        directory: Some(file.path().to_path_buf()),
        ..fast_config()
    })
    .await;
    let done = env
        .run_job(&["known@corp.com".to_string(), "stranger@corp.com".to_string()])
        .await;
    assert_eq!(done["result_count"], 1);
    let lines = env.download_lines(done["download_url"].as_str().unwrap()).await;
    let known = lines.iter().find(|l| l["matched_on"] == "known@corp.com").unwrap();
    assert_eq!(known["matches"][0]["person_data"]["crustdata_person_id"], 777);
    assert_eq!(known["matches"][0]["person_data"]["extra"], true);
    let stranger = lines.iter().find(|l| l["matched_on"] == "stranger@corp.com").unwrap();
    assert_eq!(stranger["matches"], json!([]));

    let sub: Value = env
        .submit(json!({ "professional_network_profile_urls": ["https://www.linkedin.com/in/known"] }))
        .await
        .json()
        .await
        .unwrap();
    let done = env.wait_done(sub["batch_id"].as_str().unwrap()).await;
    let lines = env.download_lines(done["download_url"].as_str().unwrap()).await;
    assert_eq!(lines[0]["match_type"], "professional_network_profile_url");
    assert_eq!(lines[0]["matches"][0]["person_data"]["crustdata_person_id"], 888);
}

#[tokio::test]
async fn failed_jobs_carry_error_message_and_are_not_billed() {
    let env = start(SimConfig {
        match_rate: 1.0,
        job_failure_rate: 1.0,
        ..fast_config()
    })
    .await;
    let done = env.run_job(&emails("fail", 3)).await;
    assert_eq!(done["status"], "failed");
    assert!(done["error_message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(done.get("download_url").is_none());
    assert!(done.get("download_urls").is_none());
    let stats = env.sim.stats();
    assert_eq!(stats.jobs_failed, 1);
    assert_eq!(stats.jobs_completed, 0);
    assert_eq!(stats.credits_charged, 0);
    assert_eq!(stats.active_jobs, 0);
}

#[tokio::test]
async fn completion_is_billed_without_polling() {
    let env = start(SimConfig {
        match_rate: 1.0,
        ..timed(0, 100, 0)
    })
    .await;
    env.submit_ok(&emails("bill", 7)).await;
    assert_eq!(env.sim.stats().credits_charged, 0, "not billed before completion");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = env.sim.stats();
    assert_eq!(stats.jobs_completed, 1);
    assert_eq!(stats.credits_charged, 7);
    assert_eq!(stats.active_jobs, 0);
    assert_eq!(stats.polls, 0);
}

#[tokio::test]
async fn ledger_counts_duplicates_and_recharges() {
    let env = start(SimConfig {
        match_rate: 1.0,
        ..fast_config()
    })
    .await;
    let ids = emails("dup", 5);
    env.run_job(&ids).await;
    let mut upper: Vec<String> = ids[..3].iter().map(|s| s.to_uppercase()).collect();
    upper.push("fresh@x.com".into());
    env.run_job(&upper).await;
    let stats = env.sim.stats();
    assert_eq!(stats.submits_accepted, 2);
    assert_eq!(stats.identifiers_submitted, 9);
    assert_eq!(stats.unique_identifiers_submitted, 6);
    assert_eq!(stats.identifiers_submitted_more_than_once, 3);
    assert_eq!(stats.credits_charged, 9);
    assert_eq!(stats.credits_recharged, 3);
    assert_eq!(stats.identifiers_matched, 9);
    // A third submit of the same values does not count them twice again.
    env.run_job(&ids[..1]).await;
    let stats = env.sim.stats();
    assert_eq!(stats.identifiers_submitted_more_than_once, 3);
    assert_eq!(stats.credits_recharged, 4);
}

#[tokio::test]
async fn finished_jobs_are_forgotten_after_retention() {
    let env = start(SimConfig {
        match_rate: 1.0,
        job_retention: Duration::from_millis(150),
        ..fast_config()
    })
    .await;
    let done = env.run_job(&emails("old", 1)).await;
    let id = done["batch_id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(env.poll(id).await.0, 404);
    assert_eq!(env.download(done["download_url"].as_str().unwrap()).await.status(), 404);
    assert_eq!(env.sim.stats().jobs_forgotten, 1);
}
