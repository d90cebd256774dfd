//! Recovery in seconds: with static group membership (`kafka.instance_id`),
//! a SIGKILLed member restarted at once takes its partitions back without
//! waiting for its old session to expire (librdkafka's default session is
//! 45 s, which this test keeps). Three SIGKILL-and-restart cycles; after
//! each restart the group's commits must advance within 10 s.
//! (Without static membership the same cycles take about 45 s each: see
//! docs/RELIABILITY.md.)

mod common;

use std::time::{Duration, Instant};

use common::{kafka, Topics};

fn committed_sum(topics: &Topics) -> i64 {
    kafka::committed(&topics.group, &topics.input, topics.partitions)
        .iter()
        .map(|c| (*c).max(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_static_member_resumes_within_seconds() {
    const N: usize = 30_000;
    let sim = common::start_sim(|c| c.base_time = Duration::from_millis(500)).await;
    let topics = Topics::create("static-member", 3).await;
    kafka::produce(&topics.input, 3, &common::emails(N, "static")).await;
    let dir = tempfile::tempdir().unwrap();
    // librdkafka's default session (45 s) instead of the tests' 6 s, and a
    // stable member name.
    let toml = common::toml_for(&topics, &sim.base_url())
        .replace(r#""session.timeout.ms" = "6000""#, "")
        .replace(r#""heartbeat.interval.ms" = "500""#, "")
        .replace(
            "rebalance_drain_timeout",
            "instance_id = \"pod-0\"\nrebalance_drain_timeout",
        )
        // A kill between a submit's journal record and its request leaves a
        // job that is called never created only after the request timeout
        // and the clock skew (docs/DESIGN.md, "A job's life"): short here.
        .replace("[api]\n", "[api]\nrequest_timeout = \"3s\"\nclock_skew = \"1s\"\n");
    let cfg = dir.path().join("connector.toml");
    std::fs::write(&cfg, toml).unwrap();
    let log = dir.path().join("connector.log");
    let mut proc = common::connector_proc(&cfg, &log, "warn", &[]);
    kafka::wait_for("first commits", Duration::from_secs(60), || committed_sum(&topics) > 0).await;
    let mut resumed = Vec::new();
    for cycle in 1..=3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        proc.kill();
        let before = committed_sum(&topics);
        let restarted = Instant::now();
        proc = common::connector_proc(&cfg, &log, "warn", &[]);
        kafka::wait_for("commits to advance after the restart", Duration::from_secs(40), || {
            committed_sum(&topics) > before
        })
        .await;
        let secs = restarted.elapsed().as_secs_f64();
        println!("static membership: cycle {cycle}: commits advanced {secs:.1} s after the restart");
        resumed.push(secs);
    }
    common::wait_done(&topics, Duration::from_secs(120)).await;
    assert!(proc.terminate(Duration::from_secs(60)).success());
    let audit = common::audit(&topics);
    let worst = resumed.iter().cloned().fold(0.0, f64::max);
    println!("{}", audit.result_line("static_membership_restart_x3", worst));
    audit.assert_nothing_lost("static membership restarts");
    for (i, s) in resumed.iter().enumerate() {
        assert!(
            *s < 10.0,
            "cycle {}: the group resumed {s:.1} s after the restart (45 s session)",
            i + 1
        );
    }
}
