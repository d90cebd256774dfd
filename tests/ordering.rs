//! Per-key order (`output.ordering = "key"`): 20,000 records over about
//! 500 keys, job times varying by 30%, some identifiers repeated (cache
//! hits and repeats of pending ones). An independent consumer reads the
//! output topic and checks that each key's outputs come in input order.
//! The same input with `ordering = "none"` shows the check can fail.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{kafka, Connector, Topics};
use identify_connector::config::{Ordering, OutputKey};
use rand::{Rng, SeedableRng};

const N: usize = 20_000;
const PARTITIONS: i32 = 3;
/// Keys per input partition (a key stays on one partition).
const KEYS_PER_PARTITION: usize = 166;

/// The input: record `i` on partition `i % 3` (the test producer's
/// round-robin), its key one of that partition's keys; one in ten repeats
/// an earlier email.
fn input(seed: u64) -> kafka::Records {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut emails: Vec<String> = Vec::with_capacity(N);
    (0..N)
        .map(|i| {
            let key = (i % 3) + 3 * rng.random_range(0..KEYS_PER_PARTITION);
            let email = if i > 100 && rng.random_bool(0.1) {
                emails[rng.random_range(0..emails.len())].clone()
            } else {
                format!("ordered{i}@example{}.com", i % 13)
            };
            emails.push(email.clone());
            (Some(format!("user-{key}")), common::event(&email))
        })
        .collect()
}

/// Outputs that came after a later input record of their key, and the
/// keys that have any, read in each output partition's order. Panics if a
/// key's outputs are spread over output partitions.
fn disorder(outputs: &[kafka::Rec]) -> (usize, usize) {
    let mut by_partition: Vec<&kafka::Rec> = outputs.iter().collect();
    by_partition.sort_by_key(|r| (r.partition, r.offset));
    let mut last: HashMap<&[u8], (i32, i32, i64)> = HashMap::new();
    let mut late = 0;
    let mut keys = std::collections::HashSet::new();
    for r in by_partition {
        let key = r.key.as_deref().expect("the output has the input's key");
        let src_partition: i32 = r.header("identify.source.partition").parse().unwrap();
        let src: i64 = r.header("identify.source.offset").parse().unwrap();
        if let Some(&(out_partition, p, prev)) = last.get(key) {
            assert_eq!(out_partition, r.partition, "one output partition per key");
            assert_eq!(p, src_partition, "one input partition per key");
            if src <= prev {
                late += 1;
                keys.insert(key);
                continue;
            }
        }
        last.insert(key, (r.partition, src_partition, src));
    }
    (late, keys.len())
}

/// Runs the input through a connector with `ordering`; returns the output
/// records and the drain time.
async fn run(name: &str, ordering: Ordering, records: &kafka::Records) -> (Vec<kafka::Rec>, Duration, i64) {
    // 1 s jobs varying by 30%, so that jobs finish out of order.
    let sim = common::start_sim(|c| {
        c.base_time = Duration::from_millis(1000);
        c.jitter = Duration::from_millis(300);
        c.retrieval_time = Duration::ZERO;
    })
    .await;
    let topics = Topics::create(name, PARTITIONS).await;
    kafka::produce(&topics.input, PARTITIONS, records).await;
    let mut cfg = common::config(&topics, &sim.base_url());
    cfg.output.key = OutputKey::Input;
    cfg.output.ordering = ordering;
    let started = Instant::now();
    let connector = Connector::start(cfg).await;
    let mut held_max = 0;
    let done = common::wait_done(&topics, Duration::from_secs(240));
    tokio::pin!(done);
    loop {
        tokio::select! {
            () = &mut done => break,
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                held_max = held_max.max(common::metric(&connector.metrics(), "identify_held_outputs") as i64);
            }
        }
    }
    let drain = started.elapsed();
    connector.stop().await;
    let audit = common::audit(&topics);
    println!("{}", audit.result_line(name, 0.0));
    audit.assert_nothing_lost(name);
    assert_eq!(audit.duplicates, 0, "{name}: a clean run publishes each record once");
    assert!(audit.dlq.is_empty(), "{name}: valid records are never dead-lettered");
    assert_eq!(sim.stats().credits_recharged, 0, "{name}: nothing paid twice");
    (audit.outputs, drain, held_max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_keys_outputs_come_in_input_order_while_jobs_finish_in_any_order() {
    let seed: u64 = std::env::var("ORDER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (ORDER_SEED={seed} repeats this input)");
    let records = input(seed);

    let (outputs, drain_none, _) = run("order-none", Ordering::None, &records).await;
    let (late, keys) = disorder(&outputs);
    println!("ordering = none: {late} outputs after a later record of their key, over {keys} keys");
    assert!(
        late > 0,
        "with ordering = none, jobs finishing out of order must show in the output (else this test proves nothing)"
    );

    let (outputs, drain_key, held_max) = run("order-key", Ordering::Key, &records).await;
    let (late, keys) = disorder(&outputs);
    println!(
        "ordering = key: {late} outputs out of order over {keys} keys; held at most {held_max} outputs; \
         drain {:.1} s against {:.1} s with none ({:.2}x)",
        drain_key.as_secs_f64(),
        drain_none.as_secs_f64(),
        drain_none.as_secs_f64() / drain_key.as_secs_f64()
    );
    assert_eq!((late, keys), (0, 0), "every key's outputs in input order");
    assert!(held_max > 0, "outputs were held back for earlier records of their key");
}
