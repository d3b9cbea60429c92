//! Small public value types: account ids, the suite, KSF parameters, server identity, secrets.

use core::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, Result};

/// The one OPAQUE cipher suite of this protocol (PROTOCOL.md §2, suite id 1).
pub struct Suite;

impl opaque_ke::CipherSuite for Suite {
    type OprfCs = opaque_ke::Ristretto255;
    type KeyExchange = opaque_ke::TripleDh<opaque_ke::Ristretto255, sha2::Sha512>;
    type Ksf = argon2::Argon2<'static>;
}

/// Suite id of [`Suite`] (PROTOCOL.md §2).
pub const SUITE_ID: u16 = 1;
/// Record format version written by this build (PROTOCOL.md §5).
pub const RECORD_VERSION: u16 = 1;
/// Version of sealed login states, tickets and proofs (PROTOCOL.md §7).
pub const BLOB_VERSION: u16 = 1;

/// Maximum length of an account id in bytes.
pub const MAX_ACCOUNT_LEN: usize = 128;

/// A validated account id (PROTOCOL.md §1): 1..=128 bytes of `[A-Za-z0-9._~+@-]`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct AccountId(String);

impl AccountId {
    /// Validates an account id.
    pub fn new(id: &str) -> Result<Self> {
        let ok = !id.is_empty()
            && id.len() <= MAX_ACCOUNT_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._~+@-".contains(&b));
        if ok {
            Ok(Self(id.to_owned()))
        } else {
            Err(Error::InvalidAccountId)
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as bytes (the OPAQUE client identity).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Argon2id parameters of the client-side key stretching function (PROTOCOL.md §2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KsfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KsfParams {
    /// Production default: Argon2id, 64 MiB, t = 3, p = 1 (PROTOCOL.md §2.1).
    pub const PRODUCTION: KsfParams = KsfParams {
        m_kib: 65536,
        t: 3,
        p: 1,
    };

    /// The cheapest parameters a vault accepts at registration (PROTOCOL.md §2.1): Argon2id
    /// 19 MiB, t = 2 (the OWASP minimum).
    pub const MIN_REGISTRATION: KsfParams = KsfParams {
        m_kib: 19456,
        t: 2,
        p: 1,
    };

    /// The most expensive parameters a client accepts from a vault on recovery (PROTOCOL.md
    /// §2.1): 256 MiB, t = 8, p = 4. A malicious vault cannot make a phone spend more.
    pub const MAX_RECOVERY: KsfParams = KsfParams {
        m_kib: 256 * 1024,
        t: 8,
        p: 4,
    };

    /// The cheapest valid parameters (8 KiB, t = 1). **For tests only**: a record registered with
    /// these gives no protection against an attacker who steals the vault's OPRF seed and records.
    /// Exists, and is accepted by [`KsfParams::validate_registration`], only in `cfg(test)` and
    /// with the `insecure-test-ksf` cargo feature (test builds of the workspace).
    #[cfg(any(test, feature = "insecure-test-ksf"))]
    pub const INSECURE_FOR_TESTS: KsfParams = KsfParams {
        m_kib: 8,
        t: 1,
        p: 1,
    };

    /// Validated constructor (structural bounds only, see [`KsfParams::validate`]).
    pub fn new(m_kib: u32, t: u32, p: u32) -> Result<Self> {
        let params = Self { m_kib, t, p };
        params.validate()?;
        Ok(params)
    }

    /// Checks the structural bounds: `8·p ≤ m ≤ 1 GiB`, `1 ≤ t ≤ 64`, `1 ≤ p ≤ 16`.
    pub fn validate(&self) -> Result<()> {
        if !(1..=16).contains(&self.p) {
            return Err(Error::InvalidKsfParams("p must be 1..=16"));
        }
        if !(1..=64).contains(&self.t) {
            return Err(Error::InvalidKsfParams("t must be 1..=64"));
        }
        if self.m_kib < 8 * self.p || self.m_kib > 1 << 20 {
            return Err(Error::InvalidKsfParams("m must be 8*p KiB ..= 1 GiB"));
        }
        Ok(())
    }

    /// The client's ceiling on recovery (PROTOCOL.md §2.1): structural bounds and at most
    /// [`KsfParams::MAX_RECOVERY`] in every dimension.
    pub fn validate_recovery(&self) -> Result<()> {
        self.validate()?;
        let max = Self::MAX_RECOVERY;
        if self.m_kib > max.m_kib || self.t > max.t || self.p > max.p {
            return Err(Error::InvalidKsfParams(
                "the vault asks for more than 256 MiB, t = 8 or p = 4; refused",
            ));
        }
        Ok(())
    }

    /// The vault's policy at registration (PROTOCOL.md §2.1): within the recovery ceiling and at
    /// least [`KsfParams::MIN_REGISTRATION`] (or exactly the test parameters, in test builds).
    pub fn validate_registration(&self) -> Result<()> {
        self.validate_recovery()?;
        #[cfg(any(test, feature = "insecure-test-ksf"))]
        if *self == Self::INSECURE_FOR_TESTS {
            return Ok(());
        }
        let min = Self::MIN_REGISTRATION;
        if self.m_kib < min.m_kib || self.t < min.t {
            return Err(Error::InvalidKsfParams(
                "below the vault's minimum (Argon2id 19 MiB, t = 2)",
            ));
        }
        Ok(())
    }

    pub(crate) fn argon2(&self) -> Result<argon2::Argon2<'static>> {
        self.validate()?;
        let params = argon2::Params::new(self.m_kib, self.t, self.p, None)
            .map_err(|_| Error::InvalidKsfParams("rejected by argon2"))?;
        Ok(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        ))
    }
}

/// The vault's Ed25519 identity public key (32 bytes): the identity clients pin (PROTOCOL.md §3).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ServerIdentity([u8; 32]);

impl ServerIdentity {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses the base64url form (as printed by [`fmt::Display`]).
    pub fn from_b64(s: &str) -> Result<Self> {
        let v = URL_SAFE_NO_PAD
            .decode(s.trim())
            .map_err(|_| Error::Malformed {
                what: "server identity",
            })?;
        let arr: [u8; 32] = v.try_into().map_err(|_| Error::Malformed {
            what: "server identity",
        })?;
        Ok(Self(arr))
    }

    /// Raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time equality (PROTOCOL.md §6.1 step 3).
    pub fn ct_matches(&self, other: &ServerIdentity) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Display for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerIdentity({self})")
    }
}

/// A 32-byte symmetric secret key (record key, state key, wrap key). Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Key32([u8; 32]);

impl Key32 {
    /// Wraps key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Generates a random key.
    pub fn generate(rng: &mut impl rand_core::CryptoRngCore) -> Self {
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        Self(k)
    }

    /// The key bytes. Handle with care.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key32(redacted)")
    }
}

/// The 32-byte backup key the vault protects. Zeroized on drop; `Debug` is redacted; no `Clone`.
pub struct BackupKey(Zeroizing<[u8; 32]>);

impl BackupKey {
    /// Wraps key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The key bytes.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }

    /// Moves the key out into a zeroizing container.
    pub fn into_zeroizing(self) -> Zeroizing<[u8; 32]> {
        self.0
    }
}

impl fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BackupKey(redacted)")
    }
}

/// Size of a wrapped backup key: 24-byte nonce, 32-byte ciphertext, 16-byte tag.
pub const WRAPPED_KEY_LEN: usize = 72;

/// The backup key wrapped under the client's export-key-derived key (PROTOCOL.md §3).
/// Not secret on its own, but only the password holder can unwrap it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct WrappedKey(pub(crate) [u8; WRAPPED_KEY_LEN]);

impl WrappedKey {
    /// Parses 72 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; WRAPPED_KEY_LEN] = bytes.try_into().map_err(|_| Error::Malformed {
            what: "wrapped key",
        })?;
        Ok(Self(arr))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; WRAPPED_KEY_LEN] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_id_rejects_bad_characters() {
        assert!(AccountId::new("alice+1@example.com").is_ok());
        assert!(AccountId::new("").is_err());
        assert!(AccountId::new("a/b").is_err());
        assert!(AccountId::new("a b").is_err());
        assert!(AccountId::new(&"a".repeat(129)).is_err());
        assert!(AccountId::new(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn ksf_params_bounds_enforced() {
        assert!(KsfParams::PRODUCTION.validate().is_ok());
        assert!(KsfParams::INSECURE_FOR_TESTS.validate().is_ok());
        assert!(KsfParams::PRODUCTION.validate_registration().is_ok());
        assert!(KsfParams::MIN_REGISTRATION.validate_registration().is_ok());
        assert!(
            KsfParams::new(16384, 3, 1)
                .unwrap()
                .validate_registration()
                .is_err()
        );
        assert!(
            KsfParams::new(65536, 1, 1)
                .unwrap()
                .validate_registration()
                .is_err()
        );
        // What a malicious vault could ask a phone for on recovery.
        assert!(
            KsfParams::new(1 << 20, 3, 1)
                .unwrap()
                .validate_recovery()
                .is_err()
        );
        assert!(
            KsfParams::new(65536, 64, 1)
                .unwrap()
                .validate_recovery()
                .is_err()
        );
        assert!(
            KsfParams::new(65536, 3, 16)
                .unwrap()
                .validate_recovery()
                .is_err()
        );
        assert!(KsfParams::MAX_RECOVERY.validate_recovery().is_ok());
        assert!(KsfParams::new(7, 1, 1).is_err());
        assert!(KsfParams::new(16, 1, 3).is_err());
        assert!(KsfParams::new(1 << 21, 1, 1).is_err());
        assert!(KsfParams::new(64, 0, 1).is_err());
        assert!(KsfParams::new(64, 65, 1).is_err());
    }

    #[test]
    fn secrets_debug_redacted() {
        let k = Key32::from_bytes([7; 32]);
        assert_eq!(format!("{k:?}"), "Key32(redacted)");
        let b = BackupKey::from_bytes([7; 32]);
        assert_eq!(format!("{b:?}"), "BackupKey(redacted)");
    }
}
