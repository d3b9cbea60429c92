//! The per-account record stored by the server, sealed at rest (PROTOCOL.md §5).

use core::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::labels;
use crate::seal::{self, Reader};
use crate::types::{AccountId, KsfParams, RECORD_VERSION, SUITE_ID, WRAPPED_KEY_LEN, WrappedKey};

/// Size of a serialized OPAQUE password file (`ServerRegistration`).
pub const PASSWORD_FILE_LEN: usize = 192;
/// Plaintext size of a record, padding included (fixed: every record looks the same).
pub const RECORD_PLAINTEXT_LEN: usize = 384;
/// Size of a sealed record: version, nonce, padded plaintext, tag.
pub const SEALED_RECORD_LEN: usize = 2 + seal::NONCE_LEN + RECORD_PLAINTEXT_LEN + seal::TAG_LEN;

/// An opened record of a registered account.
pub struct Record {
    /// Registration generation; bound into the record's AD.
    pub generation: u64,
    /// Registration time (unix seconds).
    pub created_at: u64,
    /// Guess limit fixed at registration (must equal the `max_attempts` column).
    pub max_attempts: u32,
    /// Client KSF parameters used at registration.
    pub ksf: KsfParams,
    /// Per-registration nonce of the OPAQUE credential identifier (PROTOCOL.md §3.1).
    pub credential_nonce: [u8; 32],
    /// OPAQUE password file (`ServerRegistration`, 192 bytes).
    pub password_file: Zeroizing<[u8; PASSWORD_FILE_LEN]>,
    /// The client-wrapped backup key.
    pub wrapped_key: WrappedKey,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("generation", &self.generation)
            .field("created_at", &self.created_at)
            .field("max_attempts", &self.max_attempts)
            .field("ksf", &self.ksf)
            .field("password_file", &"(redacted)")
            .field("wrapped_key", &"(redacted)")
            .finish_non_exhaustive()
    }
}

fn record_ad(account: &AccountId, generation: u64) -> Vec<u8> {
    seal::ad(
        labels::RECORD_AD,
        RECORD_VERSION,
        account,
        &generation.to_be_bytes(),
    )
}

impl Record {
    /// Seals the record under the record key (PROTOCOL.md §5). Always [`SEALED_RECORD_LEN`] bytes.
    pub fn seal(
        &self,
        rng: &mut impl rand_core::CryptoRngCore,
        record_key: &crate::types::Key32,
        account: &AccountId,
    ) -> Vec<u8> {
        let mut pt = Zeroizing::new(Vec::with_capacity(RECORD_PLAINTEXT_LEN));
        pt.extend_from_slice(&SUITE_ID.to_be_bytes());
        pt.extend_from_slice(&self.generation.to_be_bytes());
        pt.extend_from_slice(&self.created_at.to_be_bytes());
        pt.extend_from_slice(&self.max_attempts.to_be_bytes());
        pt.extend_from_slice(&self.ksf.m_kib.to_be_bytes());
        pt.extend_from_slice(&self.ksf.t.to_be_bytes());
        pt.extend_from_slice(&self.ksf.p.to_be_bytes());
        pt.extend_from_slice(&self.credential_nonce);
        pt.extend_from_slice(&self.password_file[..]);
        pt.extend_from_slice(self.wrapped_key.as_bytes());
        pt.resize(RECORD_PLAINTEXT_LEN, 0);
        seal::seal_versioned(
            rng,
            record_key,
            RECORD_VERSION,
            &record_ad(account, self.generation),
            &pt,
        )
    }

    /// Opens a sealed record of `account` at `generation`. Fails with
    /// [`Error::UnsupportedVersion`] on an unknown version (checked before decryption) and
    /// [`Error::Corrupted`] on tamper, another account, another generation or non-zero padding.
    pub fn open(
        sealed: &[u8],
        record_key: &crate::types::Key32,
        account: &AccountId,
        generation: u64,
    ) -> Result<Self> {
        const WHAT: &str = "vault record";
        let pt = seal::open_versioned(
            record_key,
            RECORD_VERSION,
            &record_ad(account, generation),
            sealed,
            RECORD_PLAINTEXT_LEN,
            WHAT,
        )?;
        let mut r = Reader::new(&pt, WHAT);
        let suite = r.u16()?;
        if suite != SUITE_ID {
            return Err(Error::UnsupportedVersion {
                what: "OPAQUE suite",
                found: suite,
                supported: SUITE_ID,
            });
        }
        let stored_generation = r.u64()?;
        let created_at = r.u64()?;
        let max_attempts = r.u32()?;
        let ksf = KsfParams {
            m_kib: r.u32()?,
            t: r.u32()?,
            p: r.u32()?,
        };
        let credential_nonce = r.array::<32>()?;
        let password_file = Zeroizing::new(r.array::<PASSWORD_FILE_LEN>()?);
        let wrapped_key = WrappedKey(r.array::<WRAPPED_KEY_LEN>()?);
        let padding = r.rest();
        let zeros = [0u8; RECORD_PLAINTEXT_LEN];
        let padding_ok: bool = padding.ct_eq(&zeros[..padding.len()]).into();
        if stored_generation != generation || !padding_ok {
            return Err(Error::Corrupted { what: WHAT });
        }
        Ok(Self {
            generation,
            created_at,
            max_attempts,
            ksf,
            credential_nonce,
            password_file,
            wrapped_key,
        })
    }
}
