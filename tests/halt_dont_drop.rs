//! Halt, don't drop: a record that cannot be produced goes to the
//! dead-letter topic and its partition moves on; a refusal that every
//! request would get halts submitting, visibly, and resumes by itself,
//! with no dead letter; waiting for a refused key costs no CPU; every
//! plausible variant of the API's job views is read; `--check` catches a
//! base URL that is not the API's.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{kafka, Connector, Topics};

/// A directory of known people for the simulator: one whose record is
/// `pad` bytes larger than usual (random text: compression cannot shrink
/// it below the broker's limit).
fn directory_with_a_huge_person(email: &str, pad: usize) -> tempfile::NamedTempFile {
    use rand::distr::{Alphanumeric, SampleString};
    let mut f = tempfile::NamedTempFile::new().unwrap();
    let summary = Alphanumeric.sample_string(&mut rand::rng(), pad);
    let person = serde_json::json!({
        "email": email,
        "person_data": {"crustdata_person_id": 7, "basic_profile": {"name": "Huge", "summary": summary}},
    });
    writeln!(f, "{person}").unwrap();
    f
}

async fn too_large_output_scenario(name: &str, tune: impl FnOnce(&mut identify_connector::Config)) {
    const N: usize = 3_000;
    let huge = "huge.person@bigcorp.com";
    let dir = directory_with_a_huge_person(huge, 1_500_000);
    let path = dir.path().to_path_buf();
    let sim = common::start_sim(move |c| c.directory = Some(path)).await;
    let topics = Topics::create(name, 3).await;
    let mut events = common::emails(N - 1, name);
    events.insert(N / 2, (Some("the-huge-one".into()), common::event(huge)));
    kafka::produce(&topics.input, 3, &events).await;
    let mut cfg = common::config(&topics, &sim.base_url());
    tune(&mut cfg);
    let connector = Connector::start(cfg).await;
    common::wait_done(&topics, Duration::from_secs(120)).await;
    assert!(connector.running.live(), "the connector is still running");
    connector.stop().await;
    let audit = common::audit(&topics);
    println!("{}", audit.result_line(name, 0.0));
    audit.assert_nothing_lost(name);
    assert_eq!(audit.outputs.len(), N - 1, "every other record published, once");
    assert_eq!(audit.dlq.len(), 1);
    let d = &audit.dlq[0];
    assert_eq!(d.header("identify.error.reason"), "output_too_large");
    assert_eq!(d.header("identify.identifier"), huge);
    assert!(!d.header("identify.batch_id").is_empty());
    assert_eq!(d.key.as_deref(), Some(&b"the-huge-one"[..]), "the input's key");
    assert_eq!(
        d.value.as_deref(),
        Some(common::event(huge).as_slice()),
        "the input's value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_above_message_max_bytes_is_dead_lettered_and_the_partition_moves_on() {
    too_large_output_scenario("too-large-local", |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_the_broker_refuses_for_its_size_is_dead_lettered_too() {
    // The producer would send it; the broker's own limit (1 MiB) refuses it.
    too_large_output_scenario("too-large-broker", |c| {
        c.kafka.producer.insert("message.max.bytes".into(), "4000000".into());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_an_output_above_message_max_bytes_is_dead_lettered() {
    too_large_output_scenario("too-large-local-eos", |c| c.kafka.exactly_once = true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_an_output_the_broker_refuses_fails_one_transaction_then_is_dead_lettered() {
    // Refused inside a transaction: that transaction aborts, the record goes
    // as its dead letter in the next one, nothing else is lost or doubled.
    too_large_output_scenario("too-large-broker-eos", |c| {
        c.kafka.exactly_once = true;
        c.kafka.producer.insert("message.max.bytes".into(), "4000000".into());
    })
    .await;
}

/// Every submit refused with `status` for 30 s, then accepted again.
async fn refusal_scenario(name: &str, status: u16, message: &str) {
    const N: usize = 600;
    let msg = message.to_string();
    let sim = common::start_sim(move |c| {
        c.refuse_submits_status = status;
        c.refuse_submits_message = msg;
    })
    .await;
    let topics = Topics::create(name, 3).await;
    kafka::produce(&topics.input, 3, &common::emails(N, name)).await;
    let connector = Connector::start(common::config(&topics, &sim.base_url())).await;
    let http = connector.running.http_addr;
    let readyz = || async move {
        let r = reqwest::get(format!("http://{http}/readyz")).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    kafka::wait_for("a refused submit", Duration::from_secs(30), || {
        sim.stats().submits_rejected_total > 0
    })
    .await;
    let until = Instant::now() + Duration::from_secs(30);
    let (mut unready, mut samples) = (0, 0);
    while Instant::now() < until {
        let (code, why) = readyz().await;
        samples += 1;
        if code == 503 && why.contains(message) {
            unready += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let refused = sim.stats().submits_rejected_total;
    let halted = common::metric(&connector.metrics(), "identify_submits_halted");
    sim.update(|c| c.refuse_submits_status = 0);
    common::wait_done(&topics, Duration::from_secs(120)).await;
    let (code, _) = readyz().await;
    let metrics = connector.metrics();
    connector.stop().await;
    let audit = common::audit(&topics);
    println!("{}", audit.result_line(name, 0.0));
    println!(
        "{name}: submits_refused={refused} readyz_503_with_the_message={unready}/{samples} halts={}",
        common::metric(&metrics, "identify_submit_halts_total")
    );
    audit.assert_nothing_lost(name);
    assert!(
        audit.dlq.is_empty(),
        "no valid record dead-lettered: {:?}",
        audit.dlq_reasons()
    );
    assert_eq!(audit.outputs.len(), N, "everything resolved afterwards");
    assert_eq!(halted, 1.0, "identify_submits_halted during the refusal");
    // Every sample but the first (the halt may be a moment behind the
    // refused submit); how many samples fit in 30 s depends on the machine.
    assert!(
        samples >= 10 && unready + 1 >= samples,
        "/readyz answered 503 with the API's message during the refusal ({unready} of {samples})"
    );
    assert_eq!(code, 200, "/readyz is 200 again after it");
    assert!(refused < 20, "probes are slow: {refused} refused submits in 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_submit_refused_with_400_halts_without_dead_letters_and_resumes() {
    refusal_scenario("refused-400", 400, "contract suspended: contact sales").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_on_the_submit_path_halts_without_dead_letters_and_resumes() {
    refusal_scenario("refused-404", 404, "no such endpoint").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_refused_key_costs_no_cpu() {
    let sim = common::start_sim(|_| {}).await;
    let topics = Topics::create("refused-key-cpu", 3).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("connector.toml");
    std::fs::write(&cfg, common::toml_for(&topics, &sim.base_url())).unwrap();
    let proc = common::connector_proc(&cfg, &dir.path().join("connector.log"), "warn", &[]);
    kafka::produce(&topics.input, 3, &common::emails(300, "warmup")).await;
    common::wait_done(&topics, Duration::from_secs(60)).await;
    // The key is refused; records keep arriving, their batches linger out.
    sim.update(|c| c.api_keys = vec!["another-key".into()]);
    kafka::produce(&topics.input, 3, &common::emails(600, "refused")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (cpu_before, _) = proc.usage();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (cpu_after, _) = proc.usage();
    let share = (cpu_after - cpu_before) / 30.0;
    sim.update(|c| c.api_keys = vec![common::KEY.into()]);
    common::wait_done(&topics, Duration::from_secs(120)).await;
    assert!(proc.terminate(Duration::from_secs(60)).success());
    println!("refused_key_cpu: {:.2}% of a core over 30 s", share * 100.0);
    assert!(
        share < 0.02,
        "the connector used {:.2}% of a core while the key was refused",
        share * 100.0
    );
    let audit = common::audit(&topics);
    audit.assert_nothing_lost("refused key");
    assert!(audit.dlq.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_plausible_variant_of_the_job_views_is_read_and_nothing_is_paid_twice() {
    use crustdata_sim::Variants;
    let words = |w: [&str; 4]| w.map(String::from);
    let cases: Vec<(&str, Variants)> = vec![
        (
            "numbers-and-strings",
            Variants {
                numeric_timestamps: true,
                string_counts: true,
                ..Variants::default()
            },
        ),
        (
            "other-status-words",
            Variants {
                status_words: words(["queued", "in_progress", "succeeded", "errored"]),
                ..Variants::default()
            },
        ),
        (
            "relative-links",
            Variants {
                relative_links: true,
                ..Variants::default()
            },
        ),
        (
            "links-appear-late",
            Variants {
                link_delay: Duration::from_secs(3),
                ..Variants::default()
            },
        ),
    ];
    for (name, variants) in cases {
        let sim = common::start_sim(|c| c.variants = variants.clone()).await;
        let topics = Topics::create(&format!("variant-{name}"), 3).await;
        kafka::produce(&topics.input, 3, &common::emails(600, name)).await;
        let connector = Connector::start(common::config(&topics, &sim.base_url())).await;
        common::wait_done(&topics, Duration::from_secs(120)).await;
        let metrics = connector.metrics();
        connector.stop().await;
        let stats = sim.stats();
        let audit = common::audit(&topics);
        println!(
            "variant {name}: outputs={} dead_letters={} jobs={} credits_recharged={} unknown_status_words={}",
            audit.outputs.len(),
            audit.dlq.len(),
            stats.submits_accepted,
            stats.credits_recharged,
            common::metric(&metrics, "identify_api_unknown_status_total")
        );
        audit.assert_nothing_lost(name);
        audit.assert_all_valid_resolved(600);
        assert_eq!(stats.credits_recharged, 0, "{name}: nothing paid twice");
        assert_eq!(stats.jobs_failed, 0);
        if name == "other-status-words" {
            assert!(
                common::metric(&metrics, "identify_api_unknown_status_total") > 0.0,
                "counted"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_catches_a_base_url_that_is_not_the_api() {
    let sim = common::start_sim(|_| {}).await;
    let topics = Topics::create("check-url", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let run = |base: String| {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, common::toml_for(&topics, &base)).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_identify-connector"))
            .arg("--config")
            .arg(&path)
            .arg("--check")
            .env("CRUSTDATA_API_KEY", common::KEY)
            .output()
            .unwrap()
    };
    let wrong = run(format!("{}/crustdata", sim.base_url()));
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(2), "{err}");
    assert!(err.contains("api.base_url") && err.contains("404"), "{err}");
    let right = run(sim.base_url());
    assert!(right.status.success(), "{}", String::from_utf8_lossy(&right.stderr));
    assert!(String::from_utf8_lossy(&right.stdout).contains("the API answers"));
}
