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

/// SIGTERM or SIGINT.
async fn signalled() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Crash-test builds only: FAILPOINTS=<step>=return aborts at that step.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
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
    identify_connector::init_logging(cfg.log.format);
    let result = match identify_connector::start(cfg, signalled()).await {
        Ok(running) => running.wait().await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "identify-connector failed");
            eprintln!("identify-connector: {e}");
            ExitCode::FAILURE
        }
    }
}
