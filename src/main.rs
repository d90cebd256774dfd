//! The `identify-connector` binary: parses the command line, loads the
//! configuration, installs signal handlers and runs the pipeline until
//! SIGTERM or SIGINT, or runs an operator tool (`redrive`, `lookup`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use identify_connector::Config;

/// mimalloc: less fragmentation than glibc's per-thread arenas under a
/// large backlog (lower peak RSS), and cheaper small allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Kafka connector for Crustdata's batch reverse-identify API.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file (environment variables IDENTIFY_* and
    /// CRUSTDATA_API_KEY override it).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
    /// A tool instead of the connector.
    #[command(subcommand)]
    tool: Option<Tool>,
}

/// Operator tools.
#[derive(clap::Subcommand, Debug)]
enum Tool {
    /// Send dead letters through again: each selected letter's original
    /// key, value and kept headers go back to its original topic, once.
    Redrive {
        /// Only letters of this reason (repeatable), e.g. job_failed.
        #[arg(long = "reason")]
        reasons: Vec<String>,
        /// Only letters of this error class: input, api or output.
        #[arg(long)]
        class: Option<String>,
        /// Only letters that came from this topic.
        #[arg(long)]
        topic: Option<String>,
        /// Only letters dead-lettered at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only letters dead-lettered before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Re-drive at most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// Say what would be re-driven; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also re-drive letters that did not keep the input's headers
        /// (output.forward_headers = false), without them.
        #[arg(long)]
        without_headers: bool,
    },
    /// What the connector knows of identifiers, one JSON line each: exit
    /// 0 when every one was resolved (matched or not), 1 when some were
    /// not, 2 on an error.
    Lookup {
        /// Read the store topic instead of the running connector or the
        /// local store.
        #[arg(long)]
        from_topic: bool,
        /// Business emails or profile URLs.
        identifiers: Vec<String>,
    },
}

/// SIGTERM or SIGINT. The handlers are installed when this is called, not
/// when the future is first polled: a signal that arrives during start-up
/// is kept, never the default action (death by signal, no clean exit).
fn signalled() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}

/// Runs an operator tool. `redrive`: exit 0 when it did its work, 2 for
/// bad arguments or input (nothing changed), 1 when Kafka failed.
async fn run_tool(cfg: &Config, tool: Tool) -> ExitCode {
    match tool {
        Tool::Redrive {
            reasons,
            class,
            topic,
            since,
            until,
            limit,
            dry_run,
            without_headers,
        } => {
            let args = identify_connector::RedriveArgs {
                reasons,
                class,
                topic,
                since,
                until,
                limit,
                dry_run,
                without_headers,
            };
            match identify_connector::redrive(cfg, &args).await {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e @ identify_connector::RedriveError::Kafka(_)) => {
                    eprintln!("redrive: {e}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("redrive: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Tool::Lookup {
            from_topic,
            identifiers,
        } => match identify_connector::lookup(cfg, &identifiers, from_topic).await {
            Ok(answers) => {
                for a in &answers {
                    println!("{}", serde_json::to_string(a).expect("an answer serializes"));
                }
                if answers.iter().all(|a| a.found()) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("lookup: {e}");
                ExitCode::from(2)
            }
        },
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Crash-test builds only: FAILPOINTS=<step>=return aborts at that step.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let shutdown = signalled();
    let cli = Cli::parse();
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(tool) = cli.tool {
        return run_tool(&cfg, tool).await;
    }
    if cli.check {
        match identify_connector::check_api(&cfg).await {
            Ok(None) => println!("configuration is valid; the API answers at api.base_url"),
            Ok(Some(warning)) => println!("configuration is valid (warning: {warning})"),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
        return ExitCode::SUCCESS;
    }
    let telemetry = match identify_connector::Telemetry::init(&cfg.telemetry) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    identify_connector::init_logging(cfg.log.format, telemetry.as_ref());
    let result = match identify_connector::start(cfg, shutdown).await {
        Ok(running) => running.wait().await,
        Err(e) => Err(e),
    };
    if let Some(t) = telemetry {
        t.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "identify-connector failed");
            eprintln!("identify-connector: {e}");
            ExitCode::FAILURE
        }
    }
}
