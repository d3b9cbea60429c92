//! Every domain-separation label of the threshold protocol (PROTOCOL.md §13.13), in one place.
//!
//! Changing any of these changes the wire or storage format: the golden test below freezes them.
//! They are pairwise distinct and distinct from the single-vault labels (`chatvault/v1/vault/…`).

/// Argon2id salt prefix: `salt = SHA-256(ARGON2_SALT || version || lp(account))` (§13.3).
pub const ARGON2_SALT: &[u8] = b"chatvault/v1/threshold/argon2-salt";
/// `H1`, the hash onto ristretto255 of the OPRF input (§13.4).
pub const OPRF_HASH_TO_GROUP: &[u8] = b"chatvault/v1/threshold/oprf-h1";
/// `H2`, the OPRF output hash (§13.4).
pub const OPRF_OUTPUT: &[u8] = b"chatvault/v1/threshold/oprf-h2";
/// Fiat–Shamir challenge of the DLEQ proof (§13.5).
pub const DLEQ_CHALLENGE: &[u8] = b"chatvault/v1/threshold/dleq-challenge";
/// Hedged nonce of the DLEQ proof (§13.5).
pub const DLEQ_NONCE: &[u8] = b"chatvault/v1/threshold/dleq-nonce";
/// Message signed by the throw-away registration key for each realm's OPRF public key (§13.6).
pub const OPRF_KEY_SIGNATURE: &[u8] = b"chatvault/v1/threshold/oprf-public-key";
/// MAC label of each realm's unlock tag (§13.7).
pub const UNLOCK_TAG: &[u8] = b"chatvault/v1/threshold/unlock-tag";
/// MAC label of the backup-key encryption key (§13.7).
pub const ENCRYPTION_KEY: &[u8] = b"chatvault/v1/threshold/encryption-key";
/// MAC label of each realm's encrypted-secret commitment (§13.7).
pub const SECRET_COMMITMENT: &[u8] = b"chatvault/v1/threshold/secret-commitment";
/// AEAD associated-data prefix of the encrypted backup key (§13.7).
pub const SECRET_AD: &[u8] = b"chatvault/v1/threshold/encrypted-backup-key";
/// HKDF info of the realm's Ed25519 identity key, derived from its key file (§13.1).
pub const REALM_IDENTITY_KEY: &[u8] = b"chatvault/v1/threshold/realm-identity-key";
/// HKDF info of the realm's record-sealing key, derived from its key file (§13.8).
pub const REALM_SEAL_KEY: &[u8] = b"chatvault/v1/threshold/realm-seal-key";
/// AD prefix of a sealed realm record (§13.8).
pub const REALM_RECORD_AD: &[u8] = b"chatvault/v1/threshold/realm-record";
/// Prefix of the realm's signed receipt of a registration (§13.1).
pub const REGISTER_RECEIPT: &[u8] = b"chatvault/v1/threshold/register-receipt";
/// Prefix of the realm's signature of an evaluation (§13.1).
pub const EVALUATION_RECEIPT: &[u8] = b"chatvault/v1/threshold/evaluation-receipt";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_golden_unchanged() {
        let all: [(&str, &[u8]); 15] = [
            ("argon2-salt", ARGON2_SALT),
            ("h1", OPRF_HASH_TO_GROUP),
            ("h2", OPRF_OUTPUT),
            ("dleq-challenge", DLEQ_CHALLENGE),
            ("dleq-nonce", DLEQ_NONCE),
            ("oprf-key-signature", OPRF_KEY_SIGNATURE),
            ("unlock-tag", UNLOCK_TAG),
            ("encryption-key", ENCRYPTION_KEY),
            ("secret-commitment", SECRET_COMMITMENT),
            ("secret-ad", SECRET_AD),
            ("realm-identity-key", REALM_IDENTITY_KEY),
            ("realm-seal-key", REALM_SEAL_KEY),
            ("realm-record", REALM_RECORD_AD),
            ("register-receipt", REGISTER_RECEIPT),
            ("evaluation-receipt", EVALUATION_RECEIPT),
        ];
        let rendered: Vec<String> = all
            .iter()
            .map(|(n, v)| format!("{n}={}", String::from_utf8_lossy(v)))
            .collect();
        assert_eq!(
            rendered.join("\n"),
            "argon2-salt=chatvault/v1/threshold/argon2-salt\n\
             h1=chatvault/v1/threshold/oprf-h1\n\
             h2=chatvault/v1/threshold/oprf-h2\n\
             dleq-challenge=chatvault/v1/threshold/dleq-challenge\n\
             dleq-nonce=chatvault/v1/threshold/dleq-nonce\n\
             oprf-key-signature=chatvault/v1/threshold/oprf-public-key\n\
             unlock-tag=chatvault/v1/threshold/unlock-tag\n\
             encryption-key=chatvault/v1/threshold/encryption-key\n\
             secret-commitment=chatvault/v1/threshold/secret-commitment\n\
             secret-ad=chatvault/v1/threshold/encrypted-backup-key\n\
             realm-identity-key=chatvault/v1/threshold/realm-identity-key\n\
             realm-seal-key=chatvault/v1/threshold/realm-seal-key\n\
             realm-record=chatvault/v1/threshold/realm-record\n\
             register-receipt=chatvault/v1/threshold/register-receipt\n\
             evaluation-receipt=chatvault/v1/threshold/evaluation-receipt"
        );
        for (i, (_, a)) in all.iter().enumerate() {
            for (_, b) in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
