//! A realm's long-term keys (PROTOCOL.md §13.1, §13.8): the vault's Ed25519 **identity key**
//! (PROTOCOL.md §3; its public key is the realm id clients pin, the same key single-vault clients
//! pin) and a record-sealing key derived from the key file's secrets,
//! `HKDF-SHA256(ikm = key-file secret, info = REALM_SEAL_KEY)` (XChaCha20-Poly1305,
//! `AD = REALM_RECORD_AD || lp(account) || u64(generation)`), so the key-file format does not
//! change. [`RealmKeys::derive`] (tests, fuzzing) derives the identity key from the secret too.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chatvault_vault_core::AccountId;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::labels;
use crate::realm::RealmRecord;
use crate::types::{B64, RealmId, RegistrationVersion};

/// A realm's identity and sealing keys. Never printed.
pub struct RealmKeys {
    identity: SigningKey,
    seal: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for RealmKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RealmKeys(id {:?}, keys redacted)", self.realm_id())
    }
}

fn lp(out: &mut Vec<u8>, x: &[u8]) {
    out.extend_from_slice(&(x.len() as u16).to_be_bytes());
    out.extend_from_slice(x);
}

fn register_receipt_msg(account: &AccountId, version: &RegistrationVersion, index: u8) -> Vec<u8> {
    let mut m = labels::REGISTER_RECEIPT.to_vec();
    lp(&mut m, account.as_bytes());
    m.extend_from_slice(&version.0);
    m.push(index);
    m
}

fn evaluation_msg(
    account: &AccountId,
    version: &RegistrationVersion,
    blinded: &B64<32>,
    evaluation: &B64<32>,
) -> Vec<u8> {
    let mut m = labels::EVALUATION_RECEIPT.to_vec();
    lp(&mut m, account.as_bytes());
    m.extend_from_slice(&version.0);
    m.extend_from_slice(&blinded.0);
    m.extend_from_slice(&evaluation.0);
    m
}

fn verify(realm: &RealmId, msg: &[u8], sig: &B64<64>) -> bool {
    let Ok(vk) = VerifyingKey::from_bytes(&realm.0) else {
        return false;
    };
    !vk.is_weak()
        && vk
            .verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig.0))
            .is_ok()
}

/// Client side: checks a realm's `register2` receipt against the pinned realm id.
pub(crate) fn verify_register_receipt(
    realm: &RealmId,
    account: &AccountId,
    version: &RegistrationVersion,
    index: u8,
    sig: &B64<64>,
) -> bool {
    verify(realm, &register_receipt_msg(account, version, index), sig)
}

/// Client side: checks a realm's signature of its evaluation against the pinned realm id.
pub(crate) fn verify_evaluation(
    realm: &RealmId,
    account: &AccountId,
    version: &RegistrationVersion,
    blinded: &B64<32>,
    evaluation: &B64<32>,
    sig: &B64<64>,
) -> bool {
    verify(
        realm,
        &evaluation_msg(account, version, blinded, evaluation),
        sig,
    )
}

impl RealmKeys {
    /// The realm keys of a vault: its Ed25519 identity key (the 32-byte seed) and the sealing
    /// key derived from `key_material` (the key file's secrets, at least 32 bytes).
    pub fn new(identity_seed: &[u8; 32], key_material: &[u8]) -> Result<Self> {
        let derived = Self::derive(key_material)?;
        Ok(Self {
            identity: SigningKey::from_bytes(identity_seed),
            seal: derived.seal,
        })
    }

    /// Derives both keys from key material (at least 32 bytes): for tests and fuzzing, where
    /// there is no vault identity key.
    pub fn derive(key_material: &[u8]) -> Result<Self> {
        if key_material.len() < 32 {
            return Err(Error::Malformed {
                what: "realm key material (at least 32 bytes)",
            });
        }
        let hk = Hkdf::<Sha256>::new(None, key_material);
        let mut id = Zeroizing::new([0u8; 32]);
        let mut seal = Zeroizing::new([0u8; 32]);
        hk.expand(labels::REALM_IDENTITY_KEY, id.as_mut())
            .expect("32 bytes is a valid HKDF length");
        hk.expand(labels::REALM_SEAL_KEY, seal.as_mut())
            .expect("32 bytes is a valid HKDF length");
        Ok(Self {
            identity: SigningKey::from_bytes(&id),
            seal,
        })
    }

    /// The realm id: the Ed25519 identity public key.
    pub fn realm_id(&self) -> RealmId {
        B64(self.identity.verifying_key().to_bytes())
    }

    /// Signs the receipt of a stored registration.
    pub fn register_receipt(
        &self,
        account: &AccountId,
        version: &RegistrationVersion,
        index: u8,
    ) -> B64<64> {
        B64(self
            .identity
            .sign(&register_receipt_msg(account, version, index))
            .to_bytes())
    }

    /// Signs an evaluation (bound to the account, version and blinded input).
    pub fn sign_evaluation(
        &self,
        account: &AccountId,
        version: &RegistrationVersion,
        blinded: &B64<32>,
        evaluation: &B64<32>,
    ) -> B64<64> {
        B64(self
            .identity
            .sign(&evaluation_msg(account, version, blinded, evaluation))
            .to_bytes())
    }

    fn ad(account: &AccountId, generation: u64) -> Vec<u8> {
        let mut ad = labels::REALM_RECORD_AD.to_vec();
        lp(&mut ad, account.as_bytes());
        ad.extend_from_slice(&generation.to_be_bytes());
        ad
    }

    /// Seals a record for storage: `nonce(24) || XChaCha20-Poly1305(record)`.
    pub fn seal_record(
        &self,
        rng: &mut impl rand_core::CryptoRngCore,
        account: &AccountId,
        generation: u64,
        record: &RealmRecord,
    ) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut nonce);
        let ct = XChaCha20Poly1305::new(self.seal.as_ref().into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &record.to_bytes(),
                    aad: &Self::ad(account, generation),
                },
            )
            .expect("XChaCha20-Poly1305 encryption of a small buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    /// Opens a sealed record. A record sealed for another account, generation or realm (or an
    /// OPAQUE record of the single-vault mode) fails with [`Error::Corrupted`].
    pub fn open_record(
        &self,
        account: &AccountId,
        generation: u64,
        sealed: &[u8],
    ) -> Result<RealmRecord> {
        if sealed.len() < 24 + 16 {
            return Err(Error::Corrupted);
        }
        let pt = Zeroizing::new(
            XChaCha20Poly1305::new(self.seal.as_ref().into())
                .decrypt(
                    XNonce::from_slice(&sealed[..24]),
                    Payload {
                        msg: &sealed[24..],
                        aad: &Self::ad(account, generation),
                    },
                )
                .map_err(|_| Error::Corrupted)?,
        );
        RealmRecord::from_bytes(&pt)
    }
}
