//! The `identify-connector` binary: parses the command line, loads the
//! configuration, installs signal handlers and runs the pipeline until
//! SIGTERM or SIGINT.

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
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
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
