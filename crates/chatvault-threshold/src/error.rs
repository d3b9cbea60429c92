//! The one error type of the threshold protocol core.

/// Everything that can go wrong in a threshold protocol step. Messages never contain secrets.
///
/// Realms are named by their 1-based share index (their position in the client's realm list);
/// the client layer maps indices to URLs.
#[non_exhaustive]
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A message or record has the wrong size or does not parse.
    #[error("malformed {what}")]
    Malformed {
        /// What was malformed.
        what: &'static str,
    },
    /// A record or message announces a version this code does not implement.
    #[error("unsupported version {found} of {what} (this build supports version {supported})")]
    UnsupportedVersion {
        /// What carried the version.
        what: &'static str,
        /// The version found.
        found: u16,
        /// The version this build implements.
        supported: u16,
    },
    /// `t` or `n` out of range: `1 ≤ t ≤ n ≤ 16`, `t ≥ 2` in release builds of the client.
    #[error("invalid threshold configuration: {0}")]
    InvalidConfig(&'static str),
    /// The vault-core layer rejected something (KSF parameters, account id).
    #[error(transparent)]
    Core(#[from] chatvault_vault_core::Error),
    /// Fewer than `t` realms gave a usable answer in this phase.
    #[error(
        "only {usable} of the {needed} realms needed answered correctly in {phase}; \
         failing realms: {failures}"
    )]
    NotEnoughRealms {
        /// Protocol phase (`register`, `recover1`, `recover2`, `recover3`).
        phase: &'static str,
        /// Threshold.
        needed: usize,
        /// Usable answers.
        usable: usize,
        /// Human-readable list `#index: reason` of the realms that failed.
        failures: String,
    },
    /// The password is wrong: the threshold OPRF result does not match the stored commitment.
    #[error(
        "wrong password ({guesses_remaining} guesses left before the backup key is destroyed \
         at the realms that counted this one)"
    )]
    WrongPassword {
        /// Smallest number of guesses left at the realms that counted this guess.
        guesses_remaining: u32,
    },
    /// Realm side: the unlock tag of a `recover3` request does not match.
    #[error("wrong unlock tag ({guesses_remaining} guesses left)")]
    BadUnlockTag {
        /// Guesses left at this realm.
        guesses_remaining: u32,
    },
    /// Realm side: the request names another registration version than the stored one.
    #[error("registration version mismatch (the account was registered again); start again")]
    VersionMismatch,
    /// The realms agree on a commitment, but the released encrypted backup key does not open.
    #[error("authenticated decryption failed (tampered, or sealed for another account or key)")]
    Corrupted,
}

/// Result alias of this crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;
