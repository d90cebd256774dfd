//! End-to-end benchmarks of the connector against the local Apache Kafka
//! broker and the simulator: backlog drain vs the API floor, job-slot
//! utilization, API requests per job (polling and webhooks), throughput and
//! CPU with an instant API, peak RSS with a 1,000,000-record backlog,
//! end-to-end latency under light load, and credits re-spent after a
//! SIGKILL. The connector runs as a child process (the release binary), so
//! its CPU time and peak RSS are its own.
//!
//! Run with `scripts/bench.sh` (or `cargo bench --bench pipeline -- NAME...`
//! with Kafka running and `target/release/identify-connector` built).
//! Scenarios: drain webhooks throughput rss latency recovery (default: all).

mod common;
mod drain;
mod instant;
mod latency;
mod recovery;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let all = ["drain", "webhooks", "throughput", "rss", "latency", "recovery"];
    let chosen: Vec<&str> = if args.is_empty() {
        all.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    for name in chosen {
        eprintln!("== {name}");
        match name {
            "drain" => drain::run(false).await,
            "webhooks" => drain::run(true).await,
            "throughput" => instant::run("throughput", 200_000).await,
            "rss" => instant::run("rss", 1_000_000).await,
            "latency" => latency::run().await,
            "recovery" => recovery::run().await,
            other => panic!("unknown scenario {other}; one of {all:?}"),
        }
    }
}
