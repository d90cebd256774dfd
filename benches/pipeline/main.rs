//! End-to-end benchmarks of the connector against the local Apache Kafka
//! broker and the simulator: backlog drains against a simulator that
//! answers like a remote API (slot utilization, drain vs the API floor,
//! requests and 429s per job; one pod or three on one key; fixed or
//! jittered job times; polling or webhooks; per-key order), the cache-hit
//! path next to a bare `kcat` pipe, the decoding cost of each registry
//! format on it, throughput and CPU with an instant API, peak RSS with a
//! 1,000,000-record backlog, end-to-end latency under light load, credits
//! re-spent after a SIGKILL, and what exactly-once output costs.
//! The connector runs as a child process
//! (the release binary), so its CPU time and peak RSS are its own. Drains
//! and the cache-hit run write plots to docs/bench/.
//!
//! Run with `scripts/bench.sh` (or `cargo bench --bench pipeline -- NAME...`
//! with Kafka running and `target/release/identify-connector` built).
//! Scenarios: drain drain_rpm60 jitter webhooks jitter_webhooks jitter_ordered shared
//! realistic realistic_webhooks realistic_shared cachehit decode_formats startup throughput
//! rss latency recovery exactly_once traces (default: all; traces needs
//! JAEGER_BIN, which scripts/bench.sh sets).

mod cachehit;
mod common;
mod drain;
mod eos;
mod formats;
mod instant;
mod latency;
mod plot;
mod recovery;
mod startup;
mod traces;

use drain::{Drain, Jobs};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let all = [
        "drain",
        "drain_rpm60",
        "jitter",
        "webhooks",
        "jitter_webhooks",
        "jitter_ordered",
        "shared",
        "realistic",
        "realistic_webhooks",
        "realistic_shared",
        "cachehit",
        "decode_formats",
        "startup",
        "throughput",
        "rss",
        "latency",
        "recovery",
        "exactly_once",
        "traces",
    ];
    let drain = |name, pods, webhooks, jobs| Drain {
        name,
        records: 30_000,
        pods,
        webhooks,
        jobs,
        rpm: None,
        ordered: false,
    };
    let chosen: Vec<&str> = if args.is_empty() {
        all.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    for name in chosen {
        eprintln!("== {name}");
        match name {
            "drain" => drain::run(drain("drain", 1, false, Jobs::Fixed)).await,
            "drain_rpm60" => {
                drain::run(Drain {
                    records: 6_000,
                    rpm: Some(60),
                    ..drain("drain_rpm60", 1, false, Jobs::Fixed)
                })
                .await
            }
            "jitter" => drain::run(drain("jitter", 1, false, Jobs::Jitter)).await,
            "webhooks" => drain::run(drain("webhooks", 1, true, Jobs::Fixed)).await,
            "jitter_webhooks" => drain::run(drain("jitter_webhooks", 1, true, Jobs::Jitter)).await,
            "jitter_ordered" => {
                drain::run(Drain {
                    ordered: true,
                    ..drain("jitter_ordered", 1, false, Jobs::Jitter)
                })
                .await
            }
            "shared" => drain::run(drain("shared", 3, false, Jobs::Fixed)).await,
            "realistic" => drain::run(drain("realistic", 1, false, Jobs::Realistic)).await,
            "realistic_webhooks" => drain::run(drain("realistic_webhooks", 1, true, Jobs::Realistic)).await,
            "realistic_shared" => drain::run(drain("realistic_shared", 3, false, Jobs::Realistic)).await,
            "cachehit" => cachehit::run(1_000_000, 3).await,
            "decode_formats" => formats::run(1_000_000).await,
            "startup" => startup::run().await,
            "throughput" => instant::run("throughput", 200_000).await,
            "rss" => instant::run("rss", 1_000_000).await,
            "latency" => latency::run().await,
            "recovery" => recovery::run().await,
            "exactly_once" => eos::run().await,
            "traces" => traces::run().await,
            other => panic!("unknown scenario {other}; one of {all:?}"),
        }
    }
}
