//! The registration's throw-away Ed25519 signatures of each realm's OPRF public key
//! (PROTOCOL.md §13.6). The client signs every `P_i` at registration and drops the signing key;
//! at recovery it only combines evaluations whose `P_i` carries a valid signature under the
//! verifying key a threshold of realms agree on, so a realm cannot substitute its own key share.
//!
//! `msg = OPRF_KEY_SIGNATURE || version || realm_id || u8(index) || P_i`.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::labels;
use crate::types::{B64, RealmId, RegistrationVersion};

fn message(version: &RegistrationVersion, realm: &RealmId, index: u8, public: &B64<32>) -> Vec<u8> {
    let mut m = labels::OPRF_KEY_SIGNATURE.to_vec();
    m.extend_from_slice(&version.0);
    m.extend_from_slice(&realm.0);
    m.push(index);
    m.extend_from_slice(&public.0);
    m
}

pub(crate) fn sign(
    key: &SigningKey,
    version: &RegistrationVersion,
    realm: &RealmId,
    index: u8,
    public: &B64<32>,
) -> B64<64> {
    B64(key.sign(&message(version, realm, index, public)).to_bytes())
}

/// Strict verification (rejects small-order keys and non-canonical signatures).
pub(crate) fn verify(
    verifying_key: &B64<32>,
    signature: &B64<64>,
    version: &RegistrationVersion,
    realm: &RealmId,
    index: u8,
    public: &B64<32>,
) -> bool {
    let Ok(vk) = VerifyingKey::from_bytes(&verifying_key.0) else {
        return false;
    };
    if vk.is_weak() {
        return false;
    }
    let sig = Signature::from_bytes(&signature.0);
    vk.verify_strict(&message(version, realm, index, public), &sig)
        .is_ok()
}
