//! The `chatvault` command-line tool: a thin layer over `chatvault-client` and
//! `chatvault-repo`. It parses arguments, resolves the repository and the key, shows progress,
//! and maps errors to the documented exit codes. No backup logic lives here.

mod args;
mod commands;
#[cfg(feature = "demo")]
mod demo;
mod ui;

use std::process::ExitCode;

use chatvault_client::ClientError;
use chatvault_repo::RepoError;
use clap::Parser;

/// Exit codes (documented in `chatvault --help` and README).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any other error (bad input, I/O, storage, vault unreachable).
    pub const ERROR: u8 = 1;
    /// Done, but some files could not be backed up or restored (listed).
    pub const PARTIAL: u8 = 3;
    /// Wrong key or password.
    pub const WRONG_KEY: u8 = 4;
    /// No repository at the location.
    pub const NO_REPO: u8 = 5;
    /// The repository is damaged.
    pub const DAMAGED: u8 = 6;
    /// The vault destroyed the key after too many wrong guesses.
    pub const LOCKED: u8 = 7;
    /// Another run holds the repository's lock.
    pub const BUSY: u8 = 8;
    /// The storage served an older state than this device (or the vault) has seen.
    pub const ROLLED_BACK: u8 = 9;
}

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
            ExitCode::from(exit_code(&e))
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

fn repo_code(e: &RepoError) -> u8 {
    match e {
        RepoError::WrongKey { .. } => exit::WRONG_KEY,
        RepoError::NotFound { .. } => exit::NO_REPO,
        RepoError::Corrupted { .. } => exit::DAMAGED,
        RepoError::Locked(_) => exit::BUSY,
        _ => exit::ERROR,
    }
}

fn vault_code(e: &chatvault_vault_client::Error) -> u8 {
    match e {
        chatvault_vault_client::Error::WrongPassword { .. } => exit::WRONG_KEY,
        chatvault_vault_client::Error::Locked => exit::LOCKED,
        _ => exit::ERROR,
    }
}

fn exit_code(e: &anyhow::Error) -> u8 {
    for c in e.chain() {
        if let Some(r) = c.downcast_ref::<RepoError>() {
            return repo_code(r);
        }
        if let Some(c) = c.downcast_ref::<ClientError>() {
            return match c {
                ClientError::Repo(r) => repo_code(r),
                ClientError::NotConfigured(_) => exit::NO_REPO,
                ClientError::Vault(v) => vault_code(v),
                _ => exit::ERROR,
            };
        }
        if let Some(v) = c.downcast_ref::<chatvault_vault_client::Error>() {
            return vault_code(v);
        }
        if c.downcast_ref::<commands::WrongKey>().is_some() {
            return exit::WRONG_KEY;
        }
        if c.downcast_ref::<commands::RolledBack>().is_some() {
            return exit::ROLLED_BACK;
        }
    }
    exit::ERROR
}
