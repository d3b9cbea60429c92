//! Protocol core of the chatvault **threshold Backup Key Vault** (docs/PROTOCOL.md §13): the
//! backup key is protected by a password across `n` independent realms, `t` of which must take
//! part in a recovery, so that no set of fewer than `t` realms (their databases and key files
//! included) can test a password. It follows the Juicebox protocol (whitepaper revision 7):
//! Argon2id on the client, the 2HashTDH threshold OPRF over ristretto255 with SHA-512 whose root
//! key the client Shamir-shares at registration, a Chaum–Pedersen DLEQ proof of each realm's
//! evaluation, an unlock-key commitment and per-realm unlock tags that gate the release of each
//! realm's share of the encryption scalar, and ChaCha20-Poly1305 for the backup key.
//!
//! **Why a separate crate** rather than a module of `chatvault-vault-core`: the two modes share
//! no cryptography (OPAQUE there, a threshold OPRF here), are reviewed and fuzzed separately, and
//! evolve on separate schedules; this crate depends on `chatvault-vault-core` only for the
//! shared value types ([`AccountId`](chatvault_vault_core::AccountId),
//! [`BackupKey`](chatvault_vault_core::BackupKey), [`KsfParams`](chatvault_vault_core::KsfParams))
//! and the guess counter ([`GuessCounter`](chatvault_vault_core::GuessCounter)) whose atomic SQL
//! the server's stores already implement.
//!
//! **What it must not do.** Like `chatvault-vault-core` it is pure: no I/O, no clock, no OS
//! randomness (every step takes the RNG), no logging. It must never return, print or store a
//! password, an OPRF root key, an unlock key or a backup key except to the caller that owns them;
//! secret types zeroize on drop and redact `Debug`; tags and commitments are compared in constant
//! time. It invents no primitive: curve25519-dalek, sha2, hmac, argon2, chacha20poly1305,
//! ed25519-dalek, zeroize, subtle.
//!
//! Main types:
//! - client: [`register`] → [`RegistrationPending`]; [`Recovery`] → [`Chosen`] → [`Blinded`] →
//!   [`Unlocked`] (each step consumes the previous state);
//! - realm: [`RealmRecord`] (`register2`, `recover1`, `recover2`, `recover3`, fixed-size encoding);
//! - wire: [`messages`] (JSON), [`labels`] (every domain-separation label).
//!
//! ```
//! use chatvault_threshold::*;
//! use chatvault_vault_core::{AccountId, BackupKey, GuessCounter, KsfParams};
//! # let mut rng = rand::rngs::OsRng;
//! let keys: Vec<RealmKeys> = (1..=3u8).map(|i| RealmKeys::derive(&[i; 32])).collect::<Result<_>>()?;
//! let ids: Vec<RealmId> = keys.iter().map(|k| k.realm_id()).collect();
//! let set = RealmSet::new(
//!     ids.iter().enumerate().map(|(k, id)| Realm { id: *id, name: format!("realm{k}") }).collect(),
//!     2,
//! )?;
//! let account = AccountId::new("alice")?;
//! let key = BackupKey::from_bytes([7; 32]);
//! let (pending, requests) =
//!     register(&mut rng, &set, &account, b"pw", &key, KsfParams::INSECURE_FOR_TESTS, 10)?;
//! let records: Vec<RealmRecord> = requests
//!     .into_iter()
//!     .map(|(i, req)| RealmRecord::register2(&ids[usize::from(i) - 1], req))
//!     .collect::<Result<_>>()?;
//! let receipts = (1..=3u8).map(|i| {
//!     let k = usize::from(i) - 1;
//!     (i, Ok(Register2Response { receipt: keys[k].register_receipt(&account, records[k].version(), i) }))
//! });
//! pending.finish(receipts.collect())?;
//!
//! // Recover with realms 1 and 3 only.
//! let chosen = Recovery::new(set, account.clone())
//!     .choose([0, 2].iter().map(|&k| (k as u8 + 1, Ok(records[k].recover1()))).collect())?;
//! let (blinded, req) = chosen.blind(&mut rng, b"pw")?;
//! let counted = GuessCounter::new(10).count_guess().unwrap();
//! let answers = [0, 2].iter()
//!     .map(|&k| (k as u8 + 1, Ok(records[k].recover2(&mut rng, &keys[k], &account, &counted, &req).unwrap())))
//!     .collect();
//! let (unlocked, tags) = blinded.finish(answers)?;
//! let releases = tags.iter()
//!     .map(|(i, r)| (*i, Ok(records[usize::from(*i) - 1].recover3(&counted, r).unwrap())))
//!     .collect();
//! let (recovered, _faults) = unlocked.finish(releases)?;
//! assert_eq!(recovered.expose_secret(), key.expose_secret());
//! # Ok::<(), Error>(())
//! ```

pub mod attacks;
mod client;
mod error;
mod kdf;
pub mod labels;
pub mod messages;
mod oprf;
mod realm;
mod realm_keys;
mod shamir;
mod sign;
mod types;

pub use client::{
    Answer, Blinded, Chosen, Recovery, Registered, RegistrationPending, UnlockStep, Unlocked,
    register,
};
pub use error::{Error, Result};
pub use messages::*;
pub use realm::{MAX_ATTEMPTS_LIMIT, REALM_RECORD_LEN, REALM_RECORD_VERSION, RealmRecord};
pub use realm_keys::RealmKeys;
pub use shamir::MAX_REALMS;
pub use types::{B64, Realm, RealmId, RealmSet, RegistrationVersion, Secret32};

#[cfg(test)]
mod tests;
