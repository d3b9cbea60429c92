//! The engine's error type: few, actionable kinds (docs/FORMAT.md §13 lists how each maps to
//! an exit code in the CLI).

use std::path::PathBuf;

/// Everything that can go wrong in the engine. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// There is no repository at the location.
    #[error(
        "no chatvault repository at {location} (check the --repo location, or run `chatvault init`)"
    )]
    NotFound {
        /// The repository location.
        location: String,
    },
    /// `init` on a location that already holds a repository.
    #[error("a chatvault repository already exists at {location}")]
    AlreadyExists {
        /// The repository location.
        location: String,
    },
    /// The key does not open the repository.
    #[error("wrong backup key: this key does not open the repository at {location}")]
    WrongKey {
        /// The repository location.
        location: String,
    },
    /// The repository format is newer than this program.
    #[error("unsupported repository format: {0}; upgrade chatvault")]
    UnsupportedVersion(String),
    /// A stored object is damaged, truncated, missing or not what it claims to be.
    #[error("repository corrupted: {object}: {reason}")]
    Corrupted {
        /// Which object, e.g. `snapshot 1a2b3c4d` or `pack 5e6f…`.
        object: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The requested snapshot does not exist.
    #[error("snapshot {0} not found (run `chatvault snapshots` to list them)")]
    SnapshotNotFound(String),
    /// Another process holds a conflicting lock.
    #[error("repository is locked: {0}")]
    Locked(String),
    /// This operation's own lock lapsed (no refresh reached storage in time, e.g. because the
    /// device slept), so others may already treat it as stale (docs/FORMAT.md §11). A lost lock
    /// is never revived: the operation stops and writes no index object, snapshot or plan after
    /// the loss.
    #[error("this {operation} lost its repository lock: {reason}; run it again")]
    LockLost {
        /// The operation that held the lock (`backup`, `prune`, …).
        operation: String,
        /// Why the lock counts as lost.
        reason: String,
    },
    /// The storage backend failed (network, permissions, full disk, …).
    #[error("storage error on {path}: {source}")]
    Storage {
        /// Object path inside the repository.
        path: String,
        /// The backend's error.
        #[source]
        source: opendal::Error,
    },
    /// A local file-system operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The local path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Invalid request from the caller (bad path, bad URL, conflicting options).
    #[error("{0}")]
    Invalid(String),
    /// The caller cancelled the operation ([`crate::backup::Progress::cancelled`]). A cancelled
    /// backup wrote no snapshot; a cancelled restore left the files it had not finished
    /// unwritten (a rerun keeps the verified ones and removes temporary leftovers).
    #[error("cancelled")]
    Cancelled,
    /// The operation was interrupted because another stage failed.
    #[error("backup aborted")]
    Aborted,
}

impl RepoError {
    pub(crate) fn corrupted(object: impl Into<String>, reason: impl ToString) -> Self {
        RepoError::Corrupted {
            object: object.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        RepoError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Result alias of the engine.
pub type Result<T, E = RepoError> = std::result::Result<T, E>;
