//! Decoding cost per input format on the cache-hit path: the same 1,000
//! known people, their events as JSON, and in the Confluent wire format as
//! Avro, JSON Schema and Protobuf (made by Confluent's Python serializers
//! against a real Schema Registry), 1,000,000 events each, through the
//! connector over a warm store, in 3 interleaved rounds. Reports the median
//! CPU per record and rate of each format, and each format's CPU over
//! JSON's. The connector is timed from its start, so every figure carries
//! the same start-up cost.

use std::time::{Duration, Instant};

use base64::Engine;
use testkit::kafka;
use testkit::registry::{python_produce, SchemaRegistry};

use crate::common::*;

const PEOPLE: usize = 1_000;
/// Interleaved rounds; medians are reported.
const ROUNDS: usize = 3;

/// `registry_produce.py`'s email of person `i` (prefix `p`).
fn email(i: usize) -> String {
    format!("p{i}@example{}.com", i % 13)
}

/// Values for the 1,000 people: `plain` JSON, or `format` (`avro`, `json`
/// Schema or `protobuf`) in the wire format.
fn values(registry: &SchemaRegistry, format: &str, plain: bool) -> Vec<Vec<u8>> {
    if plain {
        return (0..PEOPLE)
            .map(|i| format!(r#"{{"email":"{}","user":{i}}}"#, email(i)).into_bytes())
            .collect();
    }
    let count = PEOPLE.to_string();
    let (lines, _) = tokio::task::block_in_place(|| {
        python_produce(
            registry,
            &["--format", format, "--prefix", "p", "--count", &count, "--raw"],
        )
    });
    lines
        .lines()
        .map(|l| base64::engine::general_purpose::STANDARD.decode(l).expect("base64"))
        .collect()
}

pub async fn run(events: usize) {
    let registry = SchemaRegistry::start().await;
    registry.compatibility_none().await;
    let sim = sim(|c| c.latency_scale = 0.0).await;
    // Resolve the people once; every pass reads this store.
    let warm = Run::new("formats-warm", 6).await;
    let people: kafka::Records = values(&registry, "json", true).into_iter().map(|v| (None, v)).collect();
    kafka::produce(&warm.input, warm.partitions, &people).await;
    let port = testkit::free_port();
    let conn = Connector::start(&warm.config(&sim.base_url(), port, ""), port);
    drain(&warm, &conn, Duration::from_secs(300)).await;
    conn.stop();
    let store_topic = format!("{}.identify-cache", warm.group);
    let formats = [
        ("json", "json"),
        ("avro", "registry"),
        ("json", "registry"),
        ("protobuf", "registry"),
    ];
    // Each format's input topic, filled once; each round reads every one
    // with a new consumer group (rounds interleave the formats, so that
    // the machine's noise falls on all of them alike).
    let mut runs = Vec::new();
    for (format, setting) in formats {
        let name = if setting == "registry" {
            format!("{format}-registry")
        } else {
            format.to_string()
        };
        let run = Run::new(&format!("formats-{name}"), 6).await;
        let vals = values(&registry, format, setting == "json");
        for start in (0..events).step_by(100_000) {
            let chunk: kafka::Records = (start..(start + 100_000).min(events))
                .map(|i| (None, vals[i % vals.len()].clone()))
                .collect();
            kafka::produce(&run.input, run.partitions, &chunk).await;
        }
        runs.push((name, format, setting, run, Vec::new(), Vec::new()));
    }
    for round in 0..ROUNDS {
        for (name, _, setting, run, cpus, rates) in &mut runs {
            let extra = if *setting == "registry" {
                format!(
                    "[input]\nformat = \"registry\"\n[schema_registry]\nurl = \"{}\"\n",
                    registry.url
                )
            } else {
                String::new()
            };
            let port = testkit::free_port();
            let id = format!("{}-round{round}", run.group);
            let output = kafka::unique("bench-formats-out");
            kafka::create_topics(&[(&output, run.partitions)]).await;
            let group = Group {
                id: &id,
                output: &output,
                store_topic: &store_topic,
            };
            let cfg = run.config_for(&sim.base_url(), port, &extra, &warm.store_dir(), &group);
            let started = Instant::now();
            let conn = Connector::start(&cfg, port);
            loop {
                let n: i64 = tokio::task::block_in_place(|| run.marks.end_offsets(&output, run.partitions))
                    .iter()
                    .sum();
                if n >= events as i64 {
                    break;
                }
                let dead = tokio::task::block_in_place(|| run.marks.end_offsets(&run.dlq, 1))[0];
                assert_eq!(dead, 0, "{name}: records dead-lettered; the inputs do not decode");
                assert!(started.elapsed() < Duration::from_secs(600), "{name}: {n} of {events}");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let took = started.elapsed().as_secs_f64();
            let (cpu, _) = conn.usage();
            conn.stop();
            cpus.push(cpu * 1e6 / events as f64);
            rates.push(events as f64 / took);
            eprintln!("round {round} {name}: {:.2} us per record", cpus[cpus.len() - 1]);
        }
    }
    let json = median(runs[0].4.clone());
    for (name, format, setting, _, cpus, rates) in runs {
        let us = median(cpus);
        report(
            &format!("decode_{name}"),
            &[
                ("events", events.to_string()),
                ("rounds", ROUNDS.to_string()),
                ("input_format", setting.to_string()),
                ("schema_type", format.to_string()),
                ("cpu_us_per_record_median", format!("{us:.2}")),
                ("cpu_us_over_json", format!("{:.2}", us - json)),
                ("records_per_s_from_start_median", format!("{:.0}", median(rates))),
                ("jobs", sim.stats().submits_accepted.to_string()),
            ],
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
