//! The error type of the server library.

/// Errors of the server library (start-up, key file, stores, tokens).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The key file exists but is not a valid vault key file.
    #[error("vault key file {path} is invalid: {reason}")]
    KeyFile {
        /// File path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The issuer public key file is invalid.
    #[error("issuer public key {path} is invalid: expected 32 bytes in base64url")]
    IssuerKey {
        /// File path.
        path: String,
    },
    /// SQLite failed.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A SQLite transaction did not commit; none of its operations took effect.
    #[error("SQLite: the transaction did not commit: {0}")]
    Commit(String),
    /// PostgreSQL failed.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The PostgreSQL pool could not be built or could not give a connection.
    #[error("PostgreSQL pool: {0}")]
    Pool(String),
    /// The database schema was written by a newer version of the vault.
    #[error("unsupported database schema version {found} (this build supports {supported})")]
    UnsupportedSchema {
        /// Version found in the database.
        found: String,
        /// Version this build writes.
        supported: &'static str,
    },
    /// A stored row is inconsistent (e.g. status 1 without a sealed record).
    #[error("corrupted database row for an account: {0}")]
    CorruptRow(&'static str),
    /// A row kept changing under a compare-and-set; the caller may try again.
    #[error("the row changed concurrently; try again")]
    Conflict,
    /// A blocking task panicked or was cancelled.
    #[error("internal task failure")]
    Task,
    /// An account token was rejected.
    #[error("account token rejected: {0}")]
    Token(&'static str),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;
