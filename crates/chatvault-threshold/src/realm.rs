//! The realm side: the stored record and the pure steps `register2`, `recover1`, `recover2`,
//! `recover3` (PROTOCOL.md §13.8). The server runs each step between the atomic store
//! operations of its guess counter ([`GuessCounter`]): `recover2` only after the guess was
//! counted, `recover3`'s success resets it.

use std::fmt;

use chatvault_vault_core::{AccountId, GuessCounter, KsfParams};
use curve25519_dalek::scalar::Scalar;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::messages::*;
use crate::oprf;
use crate::realm_keys::RealmKeys;
use crate::shamir::MAX_REALMS;
use crate::sign;
use crate::types::{B64, RealmId, RegistrationVersion, Secret32};

/// Version of the stored record encoding.
pub const REALM_RECORD_VERSION: u16 = 1;
/// Length of an encoded [`RealmRecord`].
pub const REALM_RECORD_LEN: usize =
    2 + 16 + 3 + 12 + 4 + 32 + 32 + 32 + 64 + 32 + 32 + 32 + ENCRYPTED_SECRET_LEN + 32;
/// Largest guess limit a realm accepts.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

/// What one realm stores for one account (PROTOCOL.md §13.8). The server seals the encoding at
/// rest; the OPRF key share and scalar share are zeroized on drop and never printed.
pub struct RealmRecord {
    version: RegistrationVersion,
    share_index: u8,
    threshold: u8,
    realms: u8,
    ksf: KsfParams,
    max_attempts: u32,
    oprf_key_share: Scalar,
    oprf_public_key: B64<32>,
    verifying_key: B64<32>,
    signature: B64<64>,
    unlock_key_commitment: B64<32>,
    unlock_tag: B64<32>,
    encryption_scalar_share: Secret32,
    encrypted_secret: B64<ENCRYPTED_SECRET_LEN>,
    secret_commitment: B64<32>,
}

impl Drop for RealmRecord {
    fn drop(&mut self) {
        self.oprf_key_share.zeroize();
    }
}

impl fmt::Debug for RealmRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RealmRecord")
            .field("version", &self.version)
            .field("share_index", &self.share_index)
            .field("threshold", &self.threshold)
            .field("realms", &self.realms)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl RealmRecord {
    /// Validates a `register2` request addressed to the realm `realm_id` and builds the record.
    /// Checks: index and threshold in range, KSF within the registration policy, guess limit
    /// `1..=100`, the key share matches the public key, the signature of the public key verifies.
    pub fn register2(realm_id: &RealmId, req: Register2Request) -> Result<Self> {
        crate::shamir::check_config(usize::from(req.threshold), usize::from(req.realms))?;
        if req.share_index == 0
            || req.share_index > req.realms
            || usize::from(req.realms) > MAX_REALMS
        {
            return Err(Error::Malformed {
                what: "share index",
            });
        }
        req.ksf.validate_registration()?;
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&req.max_attempts) {
            return Err(Error::Malformed {
                what: "max_attempts (1 to 100)",
            });
        }
        let k = oprf::decode_scalar(req.oprf_key_share.expose_secret(), "OPRF key share")?;
        let public = oprf::decode_point(req.oprf_public_key.as_bytes(), "OPRF public key")?;
        if oprf::public_key(&k) != public || k == Scalar::ZERO {
            return Err(Error::Malformed {
                what: "OPRF key share (does not match its public key)",
            });
        }
        oprf::decode_scalar(
            req.encryption_scalar_share.expose_secret(),
            "encryption scalar share",
        )?;
        if !sign::verify(
            &req.verifying_key,
            &req.signature,
            &req.version,
            realm_id,
            req.share_index,
            &req.oprf_public_key,
        ) {
            return Err(Error::Malformed {
                what: "signature of the OPRF public key",
            });
        }
        Ok(Self {
            version: req.version,
            share_index: req.share_index,
            threshold: req.threshold,
            realms: req.realms,
            ksf: req.ksf,
            max_attempts: req.max_attempts,
            oprf_key_share: k,
            oprf_public_key: req.oprf_public_key,
            verifying_key: req.verifying_key,
            signature: req.signature,
            unlock_key_commitment: req.unlock_key_commitment,
            unlock_tag: req.unlock_tag,
            encryption_scalar_share: Secret32(*req.encryption_scalar_share.expose_secret()),
            encrypted_secret: req.encrypted_secret,
            secret_commitment: req.secret_commitment,
        })
    }

    /// The guess limit fixed at registration.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The realm's share index in this registration.
    pub fn share_index(&self) -> u8 {
        self.share_index
    }

    /// The registration version.
    pub fn version(&self) -> &RegistrationVersion {
        &self.version
    }

    /// `recover1`: which registration this realm holds. The server answers it only for a live,
    /// non-exhausted record.
    pub fn recover1(&self) -> Recover1Response {
        Recover1Response {
            version: self.version,
            share_index: self.share_index,
            threshold: self.threshold,
            realms: self.realms,
            ksf: self.ksf,
        }
    }

    /// Checks a `recover2` request before the guess is counted (so a malformed request or one
    /// for an old registration costs no guess).
    pub fn check_recover2(&self, req: &Recover2Request) -> Result<()> {
        if req.version != self.version {
            return Err(Error::VersionMismatch);
        }
        oprf::decode_point(req.blinded.as_bytes(), "blinded input")?;
        Ok(())
    }

    /// `recover2`: evaluates and proves. `counted` is the counter **after** the store counted
    /// this guess atomically; a counter with no counted guess is refused.
    pub fn recover2(
        &self,
        rng: &mut impl rand_core::CryptoRngCore,
        keys: &RealmKeys,
        account: &AccountId,
        counted: &GuessCounter,
        req: &Recover2Request,
    ) -> Result<Recover2Response> {
        if req.version != self.version {
            return Err(Error::VersionMismatch);
        }
        if counted.attempts == 0 || counted.attempts > counted.max_attempts {
            return Err(Error::Malformed {
                what: "guess counter (the guess must be counted before evaluating)",
            });
        }
        let b = oprf::decode_point(req.blinded.as_bytes(), "blinded input")?;
        let z = oprf::blind_evaluate(&self.oprf_key_share, &b);
        let evaluation = B64(z.compress().to_bytes());
        // P_i was checked against k_i at registration; its stored encoding is canonical.
        let proof = oprf::prove(
            rng,
            &self.oprf_key_share,
            &self.oprf_public_key.0,
            (&b, &req.blinded.0),
            &evaluation.0,
        );
        Ok(Recover2Response {
            realm_signature: keys.sign_evaluation(
                account,
                &self.version,
                &req.blinded,
                &evaluation,
            ),
            evaluation,
            proof: B64(proof),
            oprf_public_key: self.oprf_public_key,
            verifying_key: self.verifying_key,
            signature: self.signature,
            unlock_key_commitment: self.unlock_key_commitment,
            max_attempts: counted.max_attempts,
            attempts: counted.attempts,
        })
    }

    /// `recover3`: releases this realm's part of the encrypted backup key if the unlock tag is
    /// right (constant-time comparison). On success the server resets the counter; on
    /// [`Error::BadUnlockTag`] nothing changes (no guess is counted here: the tag is 256 bits).
    pub fn recover3(
        &self,
        counter: &GuessCounter,
        req: &Recover3Request,
    ) -> Result<Recover3Response> {
        if req.version != self.version {
            return Err(Error::VersionMismatch);
        }
        if !bool::from(req.unlock_tag.0.ct_eq(&self.unlock_tag.0)) {
            return Err(Error::BadUnlockTag {
                guesses_remaining: counter.attempts_left(),
            });
        }
        Ok(Recover3Response {
            encryption_scalar_share: Secret32(*self.encryption_scalar_share.expose_secret()),
            encrypted_secret: self.encrypted_secret,
            secret_commitment: self.secret_commitment,
        })
    }

    /// The fixed-size encoding (sealed by the server before it is stored).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut o = Zeroizing::new(Vec::with_capacity(REALM_RECORD_LEN));
        o.extend_from_slice(&REALM_RECORD_VERSION.to_be_bytes());
        o.extend_from_slice(&self.version.0);
        o.extend_from_slice(&[self.share_index, self.threshold, self.realms]);
        for v in [self.ksf.m_kib, self.ksf.t, self.ksf.p, self.max_attempts] {
            o.extend_from_slice(&v.to_be_bytes());
        }
        o.extend_from_slice(self.oprf_key_share.as_bytes());
        o.extend_from_slice(&self.oprf_public_key.0);
        o.extend_from_slice(&self.verifying_key.0);
        o.extend_from_slice(&self.signature.0);
        o.extend_from_slice(&self.unlock_key_commitment.0);
        o.extend_from_slice(&self.unlock_tag.0);
        o.extend_from_slice(self.encryption_scalar_share.expose_secret());
        o.extend_from_slice(&self.encrypted_secret.0);
        o.extend_from_slice(&self.secret_commitment.0);
        debug_assert_eq!(o.len(), REALM_RECORD_LEN);
        o
    }

    /// Decodes [`RealmRecord::to_bytes`]. Rejects other lengths, unknown versions and
    /// non-canonical keys.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        const WHAT: &str = "threshold realm record";
        if b.len() < 2 {
            return Err(Error::Malformed { what: WHAT });
        }
        let v = u16::from_be_bytes([b[0], b[1]]);
        if v != REALM_RECORD_VERSION {
            return Err(Error::UnsupportedVersion {
                what: WHAT,
                found: v,
                supported: REALM_RECORD_VERSION,
            });
        }
        if b.len() != REALM_RECORD_LEN {
            return Err(Error::Malformed { what: WHAT });
        }
        let mut r = Reader { b, at: 2 };
        let version = B64(r.arr::<16>());
        let [share_index, threshold, realms] = r.arr::<3>();
        let ksf = KsfParams {
            m_kib: r.u32(),
            t: r.u32(),
            p: r.u32(),
        };
        let max_attempts = r.u32();
        let oprf_key_share = oprf::decode_scalar(&r.arr::<32>(), WHAT)?;
        let rec = Self {
            version,
            share_index,
            threshold,
            realms,
            ksf,
            max_attempts,
            oprf_key_share,
            oprf_public_key: B64(r.arr()),
            verifying_key: B64(r.arr()),
            signature: B64(r.arr()),
            unlock_key_commitment: B64(r.arr()),
            unlock_tag: B64(r.arr()),
            encryption_scalar_share: Secret32(r.arr()),
            encrypted_secret: B64(r.arr()),
            secret_commitment: B64(r.arr()),
        };
        crate::shamir::check_config(usize::from(threshold), usize::from(realms))
            .map_err(|_| Error::Malformed { what: WHAT })?;
        if share_index == 0 || share_index > realms || rec.ksf.validate().is_err() {
            return Err(Error::Malformed { what: WHAT });
        }
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts) {
            return Err(Error::Malformed { what: WHAT });
        }
        oprf::decode_point(rec.oprf_public_key.as_bytes(), WHAT)?;
        Ok(rec)
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn arr<const N: usize>(&mut self) -> [u8; N] {
        let out = self.b[self.at..self.at + N]
            .try_into()
            .expect("length checked");
        self.at += N;
        out
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.arr())
    }
}
