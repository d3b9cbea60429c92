//! The one error type of the protocol core.

/// Everything that can go wrong in a protocol step. Messages never contain secrets.
#[non_exhaustive]
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A record, sealed blob or message announces a version this code does not implement.
    #[error("unsupported version {found} of {what} (this build supports version {supported})")]
    UnsupportedVersion {
        /// What carried the version.
        what: &'static str,
        /// The version found.
        found: u16,
        /// The version this build implements.
        supported: u16,
    },
    /// Authenticated decryption failed: the blob was modified, belongs to another account or
    /// generation, or was sealed under another key.
    #[error("{what} failed authentication (tampered, or sealed for another account or key)")]
    Corrupted {
        /// What failed to open.
        what: &'static str,
    },
    /// A message or blob has the wrong size or does not parse.
    #[error("malformed {what}")]
    Malformed {
        /// What was malformed.
        what: &'static str,
    },
    /// The account id is empty, too long or has characters outside `[A-Za-z0-9._~+@-]`.
    #[error("invalid account id (1 to 128 characters from A-Z a-z 0-9 . _ ~ + @ -)")]
    InvalidAccountId,
    /// Argon2id parameters outside the accepted bounds.
    #[error("invalid Argon2id parameters: {0}")]
    InvalidKsfParams(&'static str),
    /// A sealed login state, registration ticket or proof is past its expiry time.
    #[error("{what} expired; start again")]
    Expired {
        /// What expired.
        what: &'static str,
    },
    /// The KE3 did not verify (server side), or the login state was a dummy.
    #[error("authentication failed")]
    AuthenticationFailed,
    /// The client could not open the server's KE2: wrong password, or no record for this account.
    #[error("wrong password (or no backup key is registered for this account)")]
    WrongPassword,
    /// The server proved possession of a different OPAQUE key than the pinned one.
    #[error("the vault's server key differs from the pinned one; refusing to continue")]
    ServerKeyMismatch,
    /// A live record exists and the request carried no valid recovery proof for it.
    #[error(
        "a backup key is already registered for this account: recover it first (proof of the current password) or reset"
    )]
    AlreadyRegistered,
    /// The recovery proof is for another generation of the record (already used, or superseded).
    #[error("recovery proof is stale (already used or superseded); recover again")]
    StaleProof,
    /// The login state belongs to an older generation, was already used, or was superseded.
    #[error("recovery state is stale (already used or superseded); start again")]
    StaleState,
    /// The record was destroyed after too many wrong guesses.
    #[error("locked: backup key destroyed")]
    Locked,
    /// An OPAQUE operation failed for a reason other than a wrong password.
    #[error("OPAQUE protocol error: {0}")]
    Protocol(&'static str),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;
