//! Configuration: the documented example is valid and states the defaults,
//! mistakes produce messages naming their keys, secrets never show.

use std::time::Duration;

use identify_connector::config::{Config, ConfigError, IdentifierTypeSetting, InputFormat};

const MINIMAL: &str = r#"
[kafka]
input_topics = ["in"]
output_topic = "out"
dead_letter_topic = "dlq"
[api]
key = "k"
"#;

fn errors(toml: &str) -> Vec<String> {
    match Config::from_toml(toml) {
        Err(ConfigError::Invalid(e)) => e,
        Err(ConfigError::Load(e)) => vec![e],
        Ok(_) => panic!("accepted:\n{toml}"),
    }
}

#[test]
fn example_file_is_valid_and_states_the_defaults() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml")).unwrap();
    let example = Config::from_toml(&text.replace("[api]\n", "[api]\nkey = \"k\"\n")).expect("example is valid");
    let defaults = Config::from_toml(MINIMAL).unwrap();
    assert_eq!(format!("{:?}", example.batch), format!("{:?}", defaults.batch));
    assert_eq!(format!("{:?}", example.cache), format!("{:?}", defaults.cache));
    assert_eq!(format!("{:?}", example.api), format!("{:?}", defaults.api));
    assert_eq!(format!("{:?}", example.webhook), format!("{:?}", defaults.webhook));
    assert_eq!(format!("{:?}", example.server), format!("{:?}", defaults.server));
    assert_eq!(format!("{:?}", example.shutdown), format!("{:?}", defaults.shutdown));
    assert_eq!(format!("{:?}", example.input), format!("{:?}", defaults.input));
    assert_eq!(format!("{:?}", example.output), format!("{:?}", defaults.output));
    assert_eq!(example.kafka.max_in_flight, defaults.kafka.max_in_flight);
    assert_eq!(example.kafka.commit_interval, defaults.kafka.commit_interval);
    assert_eq!(defaults.batch.max_size, 300);
    assert_eq!(defaults.batch.linger, Duration::from_secs(2));
    assert_eq!(defaults.api.max_active_jobs, 5);
    assert_eq!(defaults.cache.ttl, Duration::from_secs(24 * 3600));
    assert_eq!(defaults.input.format, InputFormat::Json);
    assert_eq!(defaults.input.identifier_type, IdentifierTypeSetting::BusinessEmail);
}

#[test]
fn every_mistake_is_named() {
    let e = errors("[kafka]\ninput_topics = []\n[batch]\nmax_size = 301\n[api]\nbase_url = \"ftp://x\"\n");
    let all = e.join("\n");
    for key in [
        "kafka.input_topics",
        "kafka.output_topic",
        "kafka.dead_letter_topic",
        "batch.max_size",
        "api.base_url",
        "api.key",
    ] {
        assert!(all.contains(key), "no message names {key}:\n{all}");
    }
    assert!(errors(&format!("{MINIMAL}\n[batch]\nlinger = \"soon\"\n"))[0].contains("linger"));
    assert!(
        errors(&format!("{MINIMAL}\n[batch]\nlingr = \"2s\"\n"))[0].contains("lingr"),
        "unknown keys are refused"
    );
    assert!(errors(&format!("{MINIMAL}\n[input]\nformat = \"xml\"\n"))[0].contains("xml"));
    let managed = errors(&MINIMAL.replace("[api]", "[kafka.consumer]\n\"enable.auto.commit\" = \"true\"\n[api]"));
    assert!(managed[0].contains("enable.auto.commit"), "{managed:?}");
    let same = errors(&MINIMAL.replace("output_topic = \"out\"", "output_topic = \"in\""));
    assert!(same[0].contains("output_topic"));
}

#[test]
fn output_mistakes_are_named() {
    for (bad, says) in [
        (
            "enrich_field = \"crustdata\"",
            "output.enrich_field: \"crustdata\" must start with '/'",
        ),
        (
            "enrich_field = \"/a//b\"",
            "output.enrich_field: \"/a//b\" has an empty member name",
        ),
        ("enrich_field = \"/a~2\"", "'~'"),
        (
            "mode = \"enrich\"\n[input]\nformat = \"text\"",
            "output.mode = \"enrich\" needs input.format = \"json\"",
        ),
        (
            "ordering = \"key\"",
            "output.ordering = \"key\" needs output.key = \"input\"",
        ),
        ("format = \"avro\"", "schema_registry.url: \"\" must be an http(s) URL"),
        (
            "format = \"avro\"\nmode = \"enrich\"",
            "output.format = \"avro\" or \"json_schema\" is for output.mode = \"result\"",
        ),
        (
            "format = \"input\"",
            "output.format = \"input\" needs output.mode = \"enrich\" and input.format = \"registry\"",
        ),
        (
            "mode = \"enrich\"\n[input]\nformat = \"registry\"",
            "with input.format = \"registry\" needs output.format = \"input\"",
        ),
        (
            "mode = \"enrich\"\nformat = \"input\"\nenrich_field = \"/meta/x\"\n[input]\nformat = \"registry\"",
            "must name one top-level field",
        ),
        ("subject_strategy = \"subject\"", "subject"),
    ] {
        let e = errors(&format!("{MINIMAL}\n[output]\n{bad}\n")).join("\n");
        assert!(e.contains(says), "{bad}: {e}");
    }
    assert!(errors(&format!("{MINIMAL}\n[output]\nkey = \"value\"\n"))[0].contains("value"));
    assert!(errors(&format!("{MINIMAL}\n[output]\ndead_letter_headers = \"kafka\"\n"))[0].contains("kafka"));
    assert!(errors(&format!("{MINIMAL}\n[output]\nordering = \"partition\"\n"))[0].contains("partition"));
    let ok = Config::from_toml(&format!(
        "{MINIMAL}\n[output]\nmode = \"enrich\"\nenrich_field = \"/meta/identify\"\nkey = \"input\"\nforward_headers = true\ndead_letter_headers = \"connect\"\nordering = \"key\"\n"
    ));
    assert!(ok.is_ok(), "{ok:?}");
    let registry = Config::from_toml(&format!(
        "{MINIMAL}\n[output]\nmode = \"enrich\"\nformat = \"input\"\nsubject_strategy = \"record\"\n[input]\nformat = \"registry\"\n[schema_registry]\nurl = \"http://registry:8081\"\n"
    ));
    assert!(registry.is_ok(), "{registry:?}");
}

#[test]
fn durations_accept_human_strings() {
    let c = Config::from_toml(&format!(
        "{MINIMAL}\n[batch]\nlinger = \"500ms\"\n[shutdown]\ntimeout = \"2m\"\n"
    ))
    .unwrap();
    assert_eq!(c.batch.linger, Duration::from_millis(500));
    assert_eq!(c.shutdown.timeout, Duration::from_secs(120));
}

#[test]
fn secrets_never_show_in_debug() {
    let c = Config::from_toml(&MINIMAL.replace(
        "[api]\nkey = \"k\"",
        "[kafka.consumer]\n\"sasl.password\" = \"hunter2-pass\"\n\"sasl.username\" = \"svc\"\n[api]\nkey = \"sk-live-secret-123\"",
    ))
    .unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains("sk-live-secret-123"), "{debug}");
    assert!(!debug.contains("hunter2-pass"), "{debug}");
    assert!(debug.contains("svc"), "non-secret properties stay visible");
}

#[test]
fn environment_overrides_file() {
    // The only test in this binary touching the environment.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, MINIMAL.replace("key = \"k\"", "")).unwrap();
    std::env::set_var("IDENTIFY_KAFKA__BROKERS", "broker-a:9092,broker-b:9092");
    std::env::set_var("IDENTIFY_BATCH__LINGER", "750ms");
    std::env::set_var("CRUSTDATA_API_KEY", "from-env");
    std::env::set_var("IDENTIFY_KAFKA__SASL_PASSWORD", "0123");
    let c = Config::load(Some(&path)).unwrap();
    assert_eq!(c.kafka.brokers, "broker-a:9092,broker-b:9092");
    assert_eq!(c.batch.linger, Duration::from_millis(750));
    assert_eq!(c.api.key.expose(), "from-env");
    assert_eq!(c.kafka.sasl_password.expose(), "0123", "digits kept verbatim");
    assert!(!format!("{c:?}").contains("0123"));
    let missing = Config::load(Some(&dir.path().join("nope.toml"))).unwrap_err();
    assert!(missing.to_string().contains("does not exist"));
}

#[test]
fn an_exactly_once_transaction_timeout_shorter_than_the_connectors_commit_retries_is_refused() {
    let with = |ms: &str| {
        MINIMAL.replacen("[kafka]\n", "[kafka]\nexactly_once = true\n", 1)
            + &format!("[kafka.producer]\n\"transaction.timeout.ms\" = \"{ms}\"\n")
    };
    let all = errors(&with("10000")).join("\n");
    assert!(all.contains("kafka.producer.\"transaction.timeout.ms\""), "{all}");
    assert!(Config::from_toml(&with("90000")).is_ok());
}

#[test]
fn registry_input_needs_a_registry_url_and_consistent_credentials() {
    let e = errors(&format!("{MINIMAL}\n[input]\nformat = \"registry\"\n")).join("\n");
    assert!(e.contains("schema_registry.url: \"\" must be an http(s) URL"), "{e}");
    let e = errors(&format!(
        "{MINIMAL}\n[input]\nformat = \"registry\"\n[schema_registry]\nurl = \"http://sr:8081\"\nusername = \"u\"\nbearer_token = \"t\"\n"
    ))
    .join("\n");
    assert!(e.contains("username and schema_registry.password go together"), "{e}");
    assert!(e.contains("not both"), "{e}");
    assert!(!e.contains("t\""), "no secret in the message: {e}");
    let e = errors(&format!(
        "{MINIMAL}\n[input]\nformat = \"registry\"\n[schema_registry]\nurl = \"https://u:hunter2@sr:8081\"\n"
    ))
    .join("\n");
    assert!(e.contains("must not hold credentials") && !e.contains("hunter2"), "{e}");
    let ok = Config::from_toml(&format!(
        "{MINIMAL}\n[input]\nformat = \"registry\"\n[schema_registry]\nurl = \"https://sr:8081\"\nusername = \"u\"\npassword = \"p\"\n"
    ));
    assert!(ok.is_ok(), "{ok:?}");
    let debug = format!("{:?}", ok.unwrap().schema_registry);
    assert!(!debug.contains("\"p\""), "the password is not in Debug: {debug}");
}
