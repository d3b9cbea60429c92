//! `chatvault-vault`: the Backup Key Vault server (see docs/PROTOCOL.md).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use chatvault_vault::http::AppState;
use chatvault_vault::keyfile::{self, KeyFile};
use chatvault_vault::store::{PgStore, SqliteStore, Store};
use chatvault_vault::token::{self, Verifier};
use chatvault_vault::{Settings, Tls, serve_with, unix_now};
use chatvault_vault_core::{AccountId, Vault, VaultConfig};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "chatvault-vault",
    version,
    about = "chatvault Backup Key Vault server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve(ServeArgs),
    /// Print an account token signed with the development issuer key of DATA_DIR.
    Token {
        /// Account id the token is for.
        #[arg(long)]
        account: String,
        /// Data directory holding vault.key.
        #[arg(long)]
        data_dir: PathBuf,
        /// Lifetime in seconds (the vault accepts at most --max-token-lifetime, default 3600).
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8443 or 127.0.0.1:0 (any free port).
    #[arg(long)]
    listen: String,
    /// Directory for vault.key (created 0600 on first start) and, by default, vault.sqlite3.
    #[arg(long)]
    data_dir: PathBuf,
    /// PostgreSQL/CockroachDB URL (postgres://user:password@host:port/db). Default: SQLite in DATA_DIR.
    /// TLS: add `?sslmode=verify-full&sslrootcert=CA.pem` (PROTOCOL.md §9.2).
    #[arg(long, env = "CHATVAULT_VAULT_DB")]
    db: Option<String>,
    /// PEM CA certificate(s) that issued the PostgreSQL server's certificate (instead of
    /// `sslrootcert=` in the URL); without `sslmode` in the URL this means `sslmode=verify-full`.
    #[arg(long, env = "CHATVAULT_VAULT_DB_CA")]
    db_ca: Option<PathBuf>,
    /// Wrong guesses allowed before a record is destroyed (applies to new registrations).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_attempts: u32,
    /// File with the account-token issuer's Ed25519 public key (32 bytes, base64url).
    /// Needs --token-issuer. Either this or --dev-issuer is required.
    #[arg(long, requires = "token_issuer", conflicts_with = "dev_issuer")]
    issuer_public_key: Option<PathBuf>,
    /// The `iss` claim the account service puts in its tokens (with --issuer-public-key).
    #[arg(long)]
    token_issuer: Option<String>,
    /// DEVELOPMENT ONLY: accept tokens signed with the development issuer key in DATA_DIR
    /// (`chatvault-vault token`). Anyone with a copy of DATA_DIR can then mint tokens for every
    /// account.
    #[arg(long)]
    dev_issuer: bool,
    /// Maximum token lifetime (exp − iat) in seconds.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86400))]
    max_token_lifetime: u64,
    /// Requests per minute per client IP on /v1 (0 = unlimited).
    #[arg(long, default_value_t = 120)]
    rate_limit_ip: u32,
    /// Requests per minute per account on /v1 (0 = unlimited).
    #[arg(long, default_value_t = 30)]
    rate_limit_account: u32,
    /// Seconds a login state stays valid between KE2 and KE3.
    #[arg(long, default_value_t = 120)]
    state_ttl: u64,
    /// Whole-request timeout in seconds.
    #[arg(long, default_value_t = 15)]
    request_timeout: u64,
    /// PEM certificate chain to serve HTTPS with (with --tls-key). Reloaded on SIGHUP.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (reloaded with it on SIGHUP).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PostgreSQL connections per process.
    #[arg(long, default_value_t = 16)]
    pg_pool_size: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Command::Token {
            account,
            data_dir,
            ttl,
        } => {
            AccountId::new(&account).context("invalid --account")?;
            let kf = KeyFile::load_or_create(&data_dir)?;
            println!("{}", token::issue(&kf.issuer, &account, unix_now(), ttl));
            Ok(())
        }
        Command::Serve(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            runtime.block_on(run_serve(args))
        }
    }
}

async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.issuer_public_key.is_none() && !args.dev_issuer {
        bail!(
            "no account-token issuer configured: pass --issuer-public-key FILE --token-issuer NAME \
             (the app's account service), or --dev-issuer for development only"
        );
    }
    let kf = KeyFile::load_or_create(&args.data_dir)?;
    let (issuer_path, issuer_name) = match (&args.issuer_public_key, &args.token_issuer) {
        (Some(path), Some(name)) => (path.clone(), name.clone()),
        _ => (
            keyfile::issuer_pub_path(&args.data_dir),
            token::DEV_ISSUER.to_owned(),
        ),
    };
    let text = std::fs::read_to_string(&issuer_path)
        .with_context(|| format!("reading issuer public key {}", issuer_path.display()))?;
    let issuer = token::parse_public_key(&text, &issuer_path.display().to_string())?;
    if args.dev_issuer {
        let warning = "WARNING: --dev-issuer: accepting account tokens signed with the development \
                       issuer key in the data directory; anyone with a copy of it can act as every \
                       account. Never run production like this.";
        eprintln!("{warning}");
        tracing::warn!("{warning}");
    }
    let policy = token::TokenPolicy {
        issuer: issuer_name,
        max_lifetime: args.max_token_lifetime,
        recent: token::DEFAULT_RECENT,
    };
    if args.state_ttl == 0 || args.state_ttl > 3600 {
        bail!("--state-ttl must be 1..=3600 seconds");
    }
    let settings = Settings {
        max_attempts: args.max_attempts,
        rate_limit_per_ip: args.rate_limit_ip,
        rate_limit_per_account: args.rate_limit_account,
        request_timeout: Duration::from_secs(args.request_timeout.max(1)),
        vault: VaultConfig {
            state_ttl: args.state_ttl,
            ..VaultConfig::default()
        },
        ..Settings::default()
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(Tls::load(cert, key)?)),
        _ => None,
    };
    let realm = kf
        .realm_keys()
        .context("deriving the threshold realm keys")?;
    let vault = Vault::new(kf.vault, settings.vault);
    let identity = vault.server_identity();
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    match args.db.as_deref() {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let store =
                PgStore::connect_with_ca(url, args.pg_pool_size.max(1), args.db_ca.as_deref())
                    .await
                    .context("connecting to PostgreSQL")?;
            tracing::info!("store: PostgreSQL");
            let served = Served {
                listener,
                addr,
                identity,
                tls,
                realm,
            };
            start(served, vault, store, issuer, policy, settings).await
        }
        Some(_) => bail!("--db must be a postgres:// URL (SQLite is the default without --db)"),
        None if args.db_ca.is_some() => bail!("--db-ca needs --db postgres://…"),
        None => {
            let path = args.data_dir.join("vault.sqlite3");
            let store =
                SqliteStore::open(&path).with_context(|| format!("opening {}", path.display()))?;
            tracing::info!(path = %path.display(), "store: SQLite");
            let served = Served {
                listener,
                addr,
                identity,
                tls,
                realm,
            };
            start(served, vault, store, issuer, policy, settings).await
        }
    }
}

/// Where and how the API is served.
struct Served {
    listener: tokio::net::TcpListener,
    addr: std::net::SocketAddr,
    identity: chatvault_vault_core::ServerIdentity,
    tls: Option<Arc<Tls>>,
    realm: chatvault_threshold::RealmKeys,
}

async fn start<S: Store>(
    served: Served,
    vault: Vault,
    store: S,
    issuer: ed25519_dalek::VerifyingKey,
    policy: token::TokenPolicy,
    settings: Settings,
) -> anyhow::Result<()> {
    let Served {
        listener,
        addr,
        identity,
        tls,
        realm,
    } = served;
    tracing::info!(realm_id = ?realm.realm_id(), "threshold realm identity key");
    let state = Arc::new(
        AppState::new(
            vault,
            store,
            Verifier::with_policy(issuer, policy),
            settings,
        )
        .with_realm(realm),
    );
    tracing::info!(server_identity = %identity, "vault identity key (pin this)");
    if let Some(tls) = &tls {
        let tls = tls.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match tls.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "SIGHUP: TLS reload failed; keeping the old certificate")
                    }
                }
            }
        });
    } else if !addr.ip().is_loopback() {
        tracing::warn!(
            "serving plain HTTP on a non-loopback address: clients only accept https:// (use --tls-cert/--tls-key or a TLS proxy)"
        );
    }
    {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {scheme}://{addr}");
        let _ = writeln!(out, "server identity {identity}");
        let _ = out.flush();
    }
    serve_with(listener, state, tls, shutdown_signal()).await?;
    tracing::info!("shut down");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
