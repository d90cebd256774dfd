//! `crustdata-sim`: runs the Crustdata batch reverse-identify simulator until
//! SIGINT/SIGTERM. Every knob of `SimConfig` has a flag; see crates/crustdata-sim/README.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use crustdata_sim::{JobTimeModel, SimConfig, SimHandle};

fn rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not within 0..=1"))
    }
}

/// `5ms..50ms` (uniform in that range) or `20ms` (fixed).
fn latency_range(s: &str) -> Result<(Duration, Duration), String> {
    let parse = |x: &str| humantime::parse_duration(x.trim()).map_err(|e| format!("{x:?}: {e}"));
    let (lo, hi) = match s.split_once("..") {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let d = parse(s)?;
            (d, d)
        }
    };
    if lo > hi {
        return Err(format!("{s}: the minimum is above the maximum"));
    }
    Ok((lo, hi))
}

fn scale(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("{v} must be finite and >= 0"))
    }
}

fn sigma(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && (0.0..=10.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not within 0..=10"))
    }
}

/// Simulator of Crustdata's asynchronous batch reverse-identify API.
#[derive(Debug, Parser)]
#[command(
    name = "crustdata-sim",
    version,
    about = "Simulator of Crustdata's asynchronous batch reverse-identify API (see crates/crustdata-sim/README.md)",
    long_about = None
)]
struct Cli {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "CRUSTDATA_SIM_LISTEN", default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Base of absolute download URLs [default: http://ADDR, ADDR being the bound address].
    #[arg(long)]
    public_url: Option<String>,
    /// Accepted API key; repeatable and/or comma-separated.
    #[arg(
        long = "api-key",
        env = "CRUSTDATA_SIM_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Vec<String>,
    /// Required x-api-version value on submits.
    #[arg(long, default_value = "2025-11-01")]
    api_version: String,
    /// Maximum identifiers per submit.
    #[arg(long, default_value_t = 300)]
    max_identifiers: usize,
    /// Maximum active (pending/processing) jobs per key.
    #[arg(long, default_value_t = 5)]
    max_active_jobs: usize,
    /// Requests per minute per key and endpoint (0 = off).
    #[arg(long, default_value_t = 0)]
    requests_per_minute: u32,
    /// Credits each key may spend [default: unlimited].
    #[arg(long)]
    credit_balance: Option<u64>,
    /// Time a job stays pending.
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    pending_time: Duration,
    /// Fixed part of a job's duration.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    base_time: Duration,
    /// Duration added per identifier.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    per_identifier_time: Duration,
    /// Added when any identifier is unknown (real-time retrieval).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    retrieval_time: Duration,
    /// Job-duration model: fixed or realistic (per-identifier log-normal retrieval).
    #[arg(long, default_value = "fixed", value_parser = str::parse::<JobTimeModel>)]
    job_time_model: JobTimeModel,
    /// Realistic model: probability that an identifier needs real-time retrieval.
    #[arg(long, default_value_t = 0.01, value_parser = rate)]
    unknown_rate: f64,
    /// Realistic model: median retrieval time of an unknown identifier.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    retrieval_median: Duration,
    /// Realistic model: sigma of the log-normal retrieval time (0..=10).
    #[arg(long, default_value_t = 1.0, value_parser = sigma)]
    retrieval_sigma: f64,
    /// Uniform random extra duration in [0, jitter].
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    jitter: Duration,
    /// Multiplier of every job duration (0 = instant).
    #[arg(long, default_value_t = 1.0, value_parser = scale)]
    latency_scale: f64,
    /// Seed of the deterministic directory and the fault RNG.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Fraction of identifiers that resolve to a person.
    #[arg(long, default_value_t = 0.7, value_parser = rate)]
    match_rate: f64,
    /// JSONL file of known people: {"email"|"profile_url", "person_data"}.
    #[arg(long)]
    directory: Option<PathBuf>,
    /// Maximum lines per download_urls part.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    lines_per_part: u64,
    /// Validity of pre-signed download links.
    #[arg(long, default_value = "5days", value_parser = humantime::parse_duration)]
    link_ttl: Duration,
    /// How long finished jobs are remembered.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    job_retention: Duration,
    /// Delay before sending a webhook.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    webhook_delay: Duration,
    /// Probability that a webhook is silently not sent.
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    webhook_drop_rate: f64,
    /// Also call a job's webhook when it moves to processing.
    #[arg(long)]
    webhook_on_processing: bool,
    /// Timeout of one webhook POST.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    webhook_timeout: Duration,
    /// Period of the background task that completes jobs.
    #[arg(long, default_value = "25ms", value_parser = humantime::parse_duration)]
    sweep_interval: Duration,
    /// Probability of an injected 500 on submit (no job created).
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    error_rate_submit: f64,
    /// Latency added to every answer, e.g. `5ms..50ms` (uniform) or `20ms`.
    #[arg(long, default_value = "0s", value_parser = latency_range)]
    request_latency: (Duration, Duration),
    /// Probability that an accepted submit's answer is lost (job created, 504 answered).
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    lost_response_rate: f64,
    /// Probability that an accepted submit's connection is cut (job created, no answer).
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    cut_response_rate: f64,
    /// Probability that an accepted submit is answered only after --slow-response.
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    slow_response_rate: f64,
    /// Delay of a slow submit answer.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    slow_response: Duration,
    /// Probability of an injected 500 on poll.
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    error_rate_poll: f64,
    /// Probability of an injected 500 on download.
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    error_rate_download: f64,
    /// Probability of an injected 500 on list.
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    error_rate_list: f64,
    /// Probability that a job ends failed.
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    job_failure_rate: f64,
    /// Probability that a download is garbled (invalid gzip).
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    corrupt_rate: f64,
    /// Probability that a download's gzip stream is cut short.
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    truncate_rate: f64,
    /// Probability that a download silently omits one line.
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    missing_line_rate: f64,
    /// Probability that a download answers 403 "Request has expired".
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    expired_link_rate: f64,
    /// Trickle each download body over this duration (0s = off).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    slow_download: Duration,
    /// Answer every submit with this status (e.g. 400, 404; 0 = off).
    #[arg(long, default_value_t = 0)]
    refuse_submits_status: u16,
    /// Message of refused submits.
    #[arg(long, default_value = "submits refused")]
    refuse_submits_message: String,
    /// Write created_at and completed_at as Unix seconds.
    #[arg(long)]
    numeric_timestamps: bool,
    /// Write identifier_count and result_count as strings.
    #[arg(long)]
    string_counts: bool,
    /// Status words for pending,processing,completed,failed.
    #[arg(
        long,
        value_delimiter = ',',
        num_args = 4,
        default_value = "pending,processing,completed,failed"
    )]
    status_words: Vec<String>,
    /// Write download links relative to the API's base URL.
    #[arg(long)]
    relative_links: bool,
    /// Show a completed job's links and result_count only this long after completion.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    link_delay: Duration,
    /// Probability that a job's views carry no created_at (decided per job).
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    undated_rate: f64,
}

impl Cli {
    fn into_config(self) -> SimConfig {
        SimConfig {
            listen: self.listen,
            public_url: self.public_url,
            api_keys: self
                .api_keys
                .iter()
                .flat_map(|k| crustdata_sim::split_keys(k))
                .collect(),
            api_version: self.api_version,
            max_identifiers: self.max_identifiers,
            max_active_jobs: self.max_active_jobs,
            requests_per_minute: self.requests_per_minute,
            credit_balance: self.credit_balance,
            request_latency_min: self.request_latency.0,
            request_latency_max: self.request_latency.1,
            pending_time: self.pending_time,
            base_time: self.base_time,
            per_identifier_time: self.per_identifier_time,
            retrieval_time: self.retrieval_time,
            job_time_model: self.job_time_model,
            unknown_rate: self.unknown_rate,
            retrieval_median: self.retrieval_median,
            retrieval_sigma: self.retrieval_sigma,
            jitter: self.jitter,
            latency_scale: self.latency_scale,
            seed: self.seed,
            match_rate: self.match_rate,
            directory: self.directory,
            lines_per_part: usize::try_from(self.lines_per_part).unwrap_or(usize::MAX),
            link_ttl: self.link_ttl,
            job_retention: self.job_retention,
            webhook_delay: self.webhook_delay,
            webhook_drop_rate: self.webhook_drop_rate,
            webhook_on_processing: self.webhook_on_processing,
            webhook_timeout: self.webhook_timeout,
            sweep_interval: self.sweep_interval,
            error_rate_submit: self.error_rate_submit,
            lost_response_rate: self.lost_response_rate,
            cut_response_rate: self.cut_response_rate,
            slow_response_rate: self.slow_response_rate,
            slow_response: self.slow_response,
            error_rate_poll: self.error_rate_poll,
            error_rate_download: self.error_rate_download,
            error_rate_list: self.error_rate_list,
            job_failure_rate: self.job_failure_rate,
            corrupt_rate: self.corrupt_rate,
            truncate_rate: self.truncate_rate,
            missing_line_rate: self.missing_line_rate,
            expired_link_rate: self.expired_link_rate,
            slow_download: self.slow_download,
            refuse_submits_status: self.refuse_submits_status,
            refuse_submits_message: self.refuse_submits_message,
            variants: crustdata_sim::Variants {
                numeric_timestamps: self.numeric_timestamps,
                string_counts: self.string_counts,
                status_words: std::array::from_fn(|i| self.status_words[i].clone()),
                relative_links: self.relative_links,
                link_delay: self.link_delay,
                undated_rate: self.undated_rate,
            },
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = Cli::parse().into_config();
    if config.api_keys.is_empty() {
        tracing::warn!("no --api-key given: every API request will be answered 401");
    }
    let sim = SimHandle::start(config).await?;
    println!("{}", sim.base_url());
    wait_for_signal().await;
    tracing::info!("signal received, shutting down");
    sim.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_defaults_match_sim_config_defaults() {
        let mut cfg = Cli::parse_from(["crustdata-sim"]).into_config();
        cfg.listen = SimConfig::default().listen;
        cfg.api_keys.clear();
        assert_eq!(format!("{cfg:?}"), format!("{:?}", SimConfig::default()));
    }

    #[test]
    fn api_keys_are_repeatable_and_comma_separated() {
        let cfg = Cli::parse_from(["crustdata-sim", "--api-key", "a", "--api-key", "b,c"]).into_config();
        assert_eq!(cfg.api_keys, vec!["a", "b", "c"]);
    }

    #[test]
    fn new_knobs_have_flags() {
        let cfg = Cli::parse_from([
            "crustdata-sim",
            "--cut-response-rate",
            "0.1",
            "--slow-response-rate",
            "0.2",
            "--slow-response",
            "3s",
            "--undated-rate",
            "0.5",
            "--job-time-model",
            "realistic",
            "--unknown-rate",
            "0.05",
            "--retrieval-median",
            "90s",
            "--retrieval-sigma",
            "0.5",
        ])
        .into_config();
        assert_eq!(cfg.cut_response_rate, 0.1);
        assert_eq!(cfg.slow_response_rate, 0.2);
        assert_eq!(cfg.slow_response, Duration::from_secs(3));
        assert_eq!(cfg.variants.undated_rate, 0.5);
        assert_eq!(cfg.job_time_model, JobTimeModel::Realistic);
        assert_eq!(cfg.unknown_rate, 0.05);
        assert_eq!(cfg.retrieval_median, Duration::from_secs(90));
        assert_eq!(cfg.retrieval_sigma, 0.5);
        assert!(Cli::try_parse_from(["crustdata-sim", "--job-time-model", "lognormal"]).is_err());
        assert!(Cli::try_parse_from(["crustdata-sim", "--undated-rate", "2"]).is_err());
    }
}
