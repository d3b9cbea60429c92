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

/// Fixes glibc malloc's mmap threshold at 1 MiB. By default glibc raises it each time a large
/// block it had mapped is freed (up to 32 MiB); larger buffers then come from per-thread arenas
/// that keep what is freed, and a restore's readers (new threads for every batch of blobs) left
/// a 4.5 GB database's restore at 325–390 MB of resident memory. With the threshold fixed:
/// 200–210 MB, and 47–50 MB instead of 63–67 for the 400 MB benchmark preset, at the same speed.
/// Setting the parameter turns the adjustment off.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: `mallopt` only sets a parameter of the allocator; it is called first thing in
    // `main`, before this process starts any thread. Its result (1 on success) needs no check:
    // on failure the default behaviour stays.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
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
