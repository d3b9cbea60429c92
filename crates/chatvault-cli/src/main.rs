//! The `chatvault` command-line tool: a thin layer over `chatvault-client` and
//! `chatvault-repo`. It parses arguments, resolves the repository and the key, shows progress,
//! and maps errors to the documented exit codes. No backup logic lives here.

mod args;
mod commands;
#[cfg(feature = "demo")]
mod demo;
mod exit;
mod ui;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let filter = match cli.verbose {
        0 => "warn",
        1 => "info,chatvault=info",
        _ => "debug",
    };
    let filter = std::env::var("CHATVAULT_LOG").unwrap_or_else(|_| filter.to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let verbose = cli.verbose;
    let code = match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::from(exit::OK);
            }
            eprintln!("error: {e:#}");
            ExitCode::from(exit::code(&e))
        }
    };
    report_storage_stats(verbose);
    code
}

/// What the run asked of its storage: a summary with `-v`, one JSON line
/// (`storage-stats: {…}`) with `CHATVAULT_STORAGE_STATS=1` (the backend tests read it).
fn report_storage_stats(verbose: u8) {
    let stats = chatvault_repo::storage::stats();
    if stats.backends.is_empty() {
        return; // no storage was opened
    }
    if verbose >= 1 {
        eprintln!("storage requests: {stats}");
    }
    if std::env::var("CHATVAULT_STORAGE_STATS").ok().as_deref() == Some("1") {
        match serde_json::to_string(&stats) {
            Ok(json) => eprintln!("storage-stats: {json}"),
            Err(e) => eprintln!("storage-stats: cannot encode: {e}"),
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
