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

/// Time a client has to send a request's headers, and to finish the TLS handshake before that:
/// a connection that trickles bytes (slowloris) is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS certificate and key `serve --tls-cert --tls-key` serves (PROTOCOL.md §9.2), reloaded
/// from the same files by [`Tls::reload`] (on SIGHUP). rustls with the ring provider, TLS 1.3.
pub struct Tls {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    config: std::sync::RwLock<Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tls({}, key redacted)", self.cert.display())
    }
}

impl Tls {
    /// Loads a PEM certificate chain and a PEM private key.
    pub fn load(cert: &std::path::Path, key: &std::path::Path) -> Result<Self> {
        Ok(Self {
            config: std::sync::RwLock::new(Arc::new(Self::config(cert, key)?)),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        })
    }

    /// Reads the files again; on failure the current certificate stays in use.
    pub fn reload(&self) -> Result<()> {
        let config = Arc::new(Self::config(&self.cert, &self.key)?);
        if let Ok(mut current) = self.config.write() {
            *current = config;
        }
        Ok(())
    }

    fn config(
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<tokio_rustls::rustls::ServerConfig> {
        use rustls_pki_types::pem::PemObject as _;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let tls = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
            Error::Tls(format!("{what} {}: {e}", path.display()))
        };
        let certs = CertificateDer::pem_file_iter(cert)
            .map_err(|e| tls("reading certificate", cert, &e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| tls("reading certificate", cert, &e))?;
        if certs.is_empty() {
            return Err(tls(
                "reading certificate",
                cert,
                &"no certificate in the file",
            ));
        }
        // The error of a key that does not parse never quotes the key.
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|_| {
            tls(
                "reading private key",
                key,
                &"no PEM private key in the file",
            )
        })?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&tokio_rustls::rustls::version::TLS13])
            .map_err(|e| tls("configuring TLS for", cert, &e))?
            .with_no_client_auth()
            .with_single_cert(certs, key_der)
            .map_err(|e| tls("certificate and key do not match:", cert, &e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .config
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        tokio_rustls::TlsAcceptor::from(config)
    }
}

/// Serves the API on `listener` until `shutdown` resolves. Prints nothing; the caller reports the
/// bound address. Also runs the sweeper (PROTOCOL.md §6.4).
pub async fn serve<S: store::Store>(
    listener: tokio::net::TcpListener,
    state: Arc<http::AppState<S>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, None, shutdown).await
}

/// [`serve`] over TLS when `tls` is given. HTTP/1.1 on hyper with a header-read timeout
/// ([`HEADER_READ_TIMEOUT`], which also bounds the TLS handshake); on shutdown, connections
/// get up to 10 s to finish.
pub async fn serve_with<S: store::Store>(
    listener: tokio::net::TcpListener,
    state: Arc<http::AppState<S>>,
    tls: Option<Arc<Tls>>,
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
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(v) => v,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let app = app.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    tower::ServiceExt::oneshot(app.clone(), req)
                },
            );
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            match tls {
                None => {
                    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                    let _ = watcher.watch(conn).await;
                }
                Some(tls) => {
                    let accepted =
                        tokio::time::timeout(HEADER_READ_TIMEOUT, tls.acceptor().accept(stream))
                            .await;
                    let Ok(Ok(stream)) = accepted else {
                        tracing::debug!(%peer, "TLS handshake failed or timed out");
                        return;
                    };
                    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                    let _ = watcher.watch(conn).await;
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => {}
    }
    sweeper.abort();
    Ok(())
}
