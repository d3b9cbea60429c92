//! JSON messages between a client and one realm (PROTOCOL.md §13.8). Binary fields are
//! base64url without padding and exactly sized ([`B64`]); unknown fields are rejected.
//!
//! Decoding a message only checks its shape. The realm steps ([`crate::RealmRecord`]) and the
//! client steps check the content (canonical points and scalars, signatures, proofs).

use chatvault_vault_core::KsfParams;
use serde::{Deserialize, Serialize};

use crate::types::{B64, RealmId, RegistrationVersion, Secret32};

/// Length of the encrypted backup key: 32 bytes + 16-byte Poly1305 tag.
pub const ENCRYPTED_SECRET_LEN: usize = 48;

/// `register1` response: the realm is up and tells its id (checked against the pin).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Register1Response {
    /// The realm's id (its identity public key).
    pub realm_id: RealmId,
}

/// `register2` request: everything realm `share_index` stores (PROTOCOL.md §13.3).
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Register2Request {
    /// Registration version (random, the same at every realm).
    pub version: RegistrationVersion,
    /// This realm's 1-based share index.
    pub share_index: u8,
    /// Threshold `t`.
    pub threshold: u8,
    /// Number of realms `n`.
    pub realms: u8,
    /// Argon2id parameters the client stretched the password with.
    pub ksf: KsfParams,
    /// Guess limit of this realm.
    pub max_attempts: u32,
    /// The realm's OPRF key share `k_i` (secret).
    pub oprf_key_share: Secret32,
    /// `P_i = k_i·G`.
    pub oprf_public_key: B64<32>,
    /// The registration's throw-away Ed25519 verifying key.
    pub verifying_key: B64<32>,
    /// Ed25519 signature of `P_i` (PROTOCOL.md §13.6).
    pub signature: B64<64>,
    /// Unlock-key commitment (the same at every realm).
    pub unlock_key_commitment: B64<32>,
    /// This realm's unlock tag.
    pub unlock_tag: B64<32>,
    /// This realm's share of the encryption scalar.
    pub encryption_scalar_share: Secret32,
    /// The encrypted backup key (the same at every realm).
    pub encrypted_secret: B64<ENCRYPTED_SECRET_LEN>,
    /// MAC binding this realm's scalar share and the encrypted backup key to the unlock key.
    pub secret_commitment: B64<32>,
}

/// `register2` response: the realm's signed receipt (checked against the pinned realm id).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Register2Response {
    /// Ed25519 signature by the realm identity key of `(account, version, share_index)`.
    pub receipt: B64<64>,
}

/// `recover1` response: which registration the realm holds.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Recover1Response {
    /// Registration version.
    pub version: RegistrationVersion,
    /// The realm's share index.
    pub share_index: u8,
    /// Threshold `t` of the registration.
    pub threshold: u8,
    /// Number of realms `n` of the registration.
    pub realms: u8,
    /// Argon2id parameters (bounded by the client, PROTOCOL.md §2.1).
    pub ksf: KsfParams,
}

/// `recover2` request: the blinded OPRF input.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Recover2Request {
    /// Registration version from `recover1`.
    pub version: RegistrationVersion,
    /// `B = r·H1(x)`.
    pub blinded: B64<32>,
}

/// `recover2` response: the evaluation, its proof and what the client checks them against.
/// Sent only after the guess was counted.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Recover2Response {
    /// `Z_i = k_i·B`.
    pub evaluation: B64<32>,
    /// DLEQ proof `c || s`.
    pub proof: B64<64>,
    /// `P_i`.
    pub oprf_public_key: B64<32>,
    /// Throw-away verifying key of the registration.
    pub verifying_key: B64<32>,
    /// Signature of `P_i`.
    pub signature: B64<64>,
    /// Unlock-key commitment.
    pub unlock_key_commitment: B64<32>,
    /// Guess limit.
    pub max_attempts: u32,
    /// Guesses counted since the last success, this one included.
    pub attempts: u32,
    /// Ed25519 signature by the realm identity key of `(account, version, blinded, evaluation)`.
    pub realm_signature: B64<64>,
}

/// `recover3` request: proof of the password.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Recover3Request {
    /// Registration version.
    pub version: RegistrationVersion,
    /// The unlock tag for this realm.
    pub unlock_tag: B64<32>,
}

/// `recover3` response: this realm's part of the encrypted backup key.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Recover3Response {
    /// This realm's share of the encryption scalar.
    pub encryption_scalar_share: Secret32,
    /// The encrypted backup key.
    pub encrypted_secret: B64<ENCRYPTED_SECRET_LEN>,
    /// The secret commitment the client checks.
    pub secret_commitment: B64<32>,
}
