//! Protocol core of the chatvault **Backup Key Vault** (docs/PROTOCOL.md): OPAQUE (RFC 9807)
//! registration and recovery of a 32-byte backup key, the guess counter, sealed records, sealed
//! login states, registration tickets and recovery proofs.
//!
//! This crate is pure: it does **no I/O** (no network, no filesystem, no clock, no OS randomness).
//! Every step takes the RNG (`rand_core::CryptoRngCore`) and the time (`now`, unix seconds) as
//! parameters, so it could run inside an HSM. It must never log, store or return passwords,
//! export keys, wrap keys or backup keys except to the caller that owns them.
//!
//! Main types:
//! - server side: [`VaultKeys`] (long-term secrets), [`Vault`] (the steps of PROTOCOL.md §4, §6),
//!   [`AccountState`] and [`GuessCounter`] (the per-account state machine the stores implement
//!   atomically), [`Record`] (sealed at rest);
//! - client side: [`RegistrationClient`], [`RecoveryClient`], [`Unwrapper`];
//! - rollback commitment rules: [`validate_commitment`], [`decide_commitment`];
//! - wire: [`api`] (JSON messages), [`labels`] (every domain-separation label).
//!
//! One suite is pinned: [`Suite`] = ristretto255 OPRF, 3DH with SHA-512, Argon2id KSF.
//!
//! ```
//! use chatvault_vault_core::*;
//! # let mut rng = rand::rngs::OsRng;
//! let vault = Vault::new(VaultKeys::generate(&mut rng), VaultConfig::default());
//! let pinned = vault.server_identity();
//! let account = AccountId::new("alice")?;
//! let (reg, request) = RegistrationClient::start(&mut rng, &account, b"pw")?;
//! let started = vault.register_start(&mut rng, 0, &account, &request)?;
//! let key = BackupKey::from_bytes([7; 32]);
//! let answer = RegistrationAnswer {
//!     response: &started.response,
//!     ticket: &started.ticket,
//!     signature: &started.signature,
//!     server_identity: started.server_identity,
//! };
//! let out = reg.finish(&mut rng, b"pw", answer, &key, KsfParams::MIN_REGISTRATION,
//!                      Some(&pinned))?;
//! assert!(out.server_identity.ct_matches(&pinned));
//! # Ok::<(), Error>(())
//! ```

pub mod api;
mod client;
mod commitment;
mod counter;
mod error;
pub mod labels;
mod record;
mod seal;
mod session;
mod sign;
mod types;
mod vault;

pub use client::{
    Ke2Params, RecoveryClient, RegistrationAnswer, RegistrationClient, RegistrationOutput,
    Released, Unwrapper,
};
pub use commitment::{
    CommitmentDecision, MAX_COMMITMENT_LEN, MAX_COMMITMENT_SEQ, MIN_COMMITMENT_SEQ,
    decide_commitment, validate_commitment,
};
pub use counter::{AccountState, Exhausted, GuessCounter, Stale};
pub use error::{Error, Result};
pub use record::{PASSWORD_FILE_LEN, RECORD_PLAINTEXT_LEN, Record, SEALED_RECORD_LEN};
pub use session::{BINDING_LEN, ProofBinding, SessionKeys};
pub use sign::{SIGNATURE_LEN, registration_transcript, verify as verify_signature};
pub use types::{
    AccountId, BLOB_VERSION, BackupKey, Key32, KsfParams, MAX_ACCOUNT_LEN, RECORD_VERSION,
    SUITE_ID, ServerIdentity, Suite, WRAPPED_KEY_LEN, WrappedKey,
};
pub use vault::{
    LoginState, NewRecord, RecoverStarted, RegistrationFinish, RegistrationStarted,
    SERVER_LOGIN_LEN, SERVER_SETUP_LEN, Vault, VaultConfig, VaultKeys,
};

#[cfg(test)]
mod tests;
