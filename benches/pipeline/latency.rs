//! End-to-end latency under light load (10 records a second).

use std::time::{Duration, Instant};

use testkit::kafka;

use crate::common::*;

pub async fn run() {
    let sim = sim(two_second_jobs).await;
    let run = Run::new("latency", 3).await;
    let port = testkit::free_port();
    let conn = Connector::start(&run.config(&sim.base_url(), port, ""), port);
    // Wait until the consumer is in its group and the key is confirmed.
    let t0 = Instant::now();
    while reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
        != 200
    {
        assert!(t0.elapsed() < Duration::from_secs(60), "connector never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Light load: 10 records a second for 30 seconds.
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka::bootstrap())
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let n = 300;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for i in 0..n {
        tick.tick().await;
        let value = format!(r#"{{"email":"light{i}@company{}.com"}}"#, i % 7);
        let rec = rdkafka::producer::FutureRecord::<(), str>::to(&run.input)
            .partition(i % run.partitions)
            .payload(&value);
        producer
            .send(rec, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
    drain(&run, &conn, Duration::from_secs(120)).await;
    conn.stop();
    // Latency: output record timestamp (set when the connector produced it)
    // minus input record timestamp (set when the event was produced).
    let inputs = read_timestamps(&run.input, run.partitions);
    let mut lat: Vec<f64> = read_timestamps_by_source(&run.output, run.partitions)
        .into_iter()
        .filter_map(|(src, out_ts)| inputs.get(&src).map(|in_ts| (out_ts - in_ts) as f64 / 1000.0))
        .collect();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    report(
        "latency",
        &[
            ("records", lat.len().to_string()),
            ("linger_s", "2".into()),
            ("job_s", "2".into()),
            ("p50_s", format!("{:.3}", pct(0.5))),
            ("p90_s", format!("{:.3}", pct(0.9))),
            ("p99_s", format!("{:.3}", pct(0.99))),
            ("max_s", format!("{:.3}", lat[lat.len() - 1])),
            (
                "p99_added_over_linger_plus_job_ms",
                format!("{:.0}", (pct(0.99) - 4.0) * 1000.0),
            ),
        ],
    );
}

fn read_timestamps(topic: &str, partitions: i32) -> std::collections::HashMap<(i32, i64), i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::ClientConfig;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka::bootstrap())
        .set("group.id", kafka::unique("ts"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let total: i64 = kafka::end_offsets(topic, partitions).iter().sum();
    let mut out = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (out.len() as i64) < total && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.insert((m.partition(), m.offset()), m.timestamp().to_millis().unwrap_or(0));
        }
    }
    out
}

fn read_timestamps_by_source(topic: &str, partitions: i32) -> Vec<((i32, i64), i64)> {
    let ts = read_timestamps(topic, partitions);
    let recs = kafka::read_all(topic, partitions);
    recs.iter()
        .map(|r| {
            let src: (i32, i64) = (
                r.header("identify.source.partition").parse().unwrap(),
                r.header("identify.source.offset").parse().unwrap(),
            );
            (src, ts[&(r.partition, r.offset)])
        })
        .collect()
}
