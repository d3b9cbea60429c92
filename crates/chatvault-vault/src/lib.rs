//! Server of the chatvault **Backup Key Vault** (docs/PROTOCOL.md): the `chatvault-vault` binary's
//! library. It serves the HTTP/JSON API over axum, keeps records in SQLite (default, WAL) or
//! PostgreSQL/CockroachDB behind the [`store::Store`] trait, holds the vault key file
//! ([`keyfile`]), verifies and (for development) issues account tokens ([`token`]), and exposes
//! `/healthz`, Prometheus `/metrics` and `/openapi.json`.
//!
//! The protocol itself lives in `chatvault-vault-core`; this crate only moves bytes, enforces
//! account binding, rate limits and the **atomic** guess counter in the store. It must never log
//! or persist passwords, OPAQUE messages, keys, proofs or tokens, and must never return KE2 before
//! the guess it represents is durably counted (PROTOCOL.md §6.1).
//!
//! Main entry points: [`keyfile::KeyFile::load_or_create`], [`store::SqliteStore::open`],
//! [`store::PgStore::connect`], [`http::router`] and [`serve`].

pub mod error;
pub mod http;
pub mod keyfile;
pub mod metrics;
pub mod ratelimit;
pub mod store;
pub mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use error::{Error, Result};

/// Settings of a running server (resolved from the command line).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Guess limit for new registrations (PROTOCOL.md §6.2). Default 10.
    pub max_attempts: u32,
    /// Requests per minute per client IP on `/v1`; 0 disables the limit.
    pub rate_limit_per_ip: u32,
    /// Requests per minute per account on `/v1`; 0 disables the limit.
    pub rate_limit_per_account: u32,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Maximum request body size in bytes.
    pub max_body_bytes: usize,
    /// Protocol lifetimes.
    pub vault: chatvault_vault_core::VaultConfig,
    /// How often the sweeper destroys exhausted records whose last state expired.
    pub sweep_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            rate_limit_per_ip: 120,
            rate_limit_per_account: 30,
            request_timeout: Duration::from_secs(15),
            max_body_bytes: 8 * 1024,
            vault: chatvault_vault_core::VaultConfig::default(),
            sweep_interval: Duration::from_secs(30),
        }
    }
}

/// Current unix time in seconds (the only clock of the server).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Serves the API on `listener` until `shutdown` resolves. Prints nothing; the caller reports the
/// bound address. Also runs the sweeper (PROTOCOL.md §6.4).
pub async fn serve<S: store::Store>(
    listener: tokio::net::TcpListener,
    state: Arc<http::AppState<S>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sweeper = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(state.settings.sweep_interval);
            loop {
                tick.tick().await;
                match state
                    .store
                    .sweep(unix_now(), state.settings.vault.state_ttl)
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => {
                        state.metrics.records_destroyed.add(n);
                        tracing::warn!(count = n, "sweeper destroyed exhausted records");
                    }
                    Err(e) => tracing::error!(error = %e, "sweeper failed"),
                }
            }
        })
    };
    let app = http::router(state);
    let result = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    sweeper.abort();
    result
}
