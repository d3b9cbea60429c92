//! The vault's identity signatures (PROTOCOL.md §3, §4.1): Ed25519 (RFC 8032) with
//! `ed25519-dalek`, under an identity key of its own, separate from the OPAQUE keys.
//!
//! The vault proves that it holds the private key of the pinned [`ServerIdentity`] by signing
//! the registration transcript, so a client can check who it is talking to **before** it uploads
//! its envelope (which, with the OPRF key of whoever answered, allows an offline dictionary
//! attack). The identity is also the OPAQUE server identifier (RFC 9807 §4.1.2,
//! `CleartextCredentials.server_identity`), so the envelope a password opens authenticates it on
//! recovery: a new phone learns the identity to pin from a recovery that succeeded.
//!
//! Verification is `verify_strict` (canonical `s`, no small-order `R` or key).

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use crate::error::{Error, Result};
use crate::labels;
use crate::seal;
use crate::types::{AccountId, ServerIdentity};

/// Size of a signature (Ed25519: `R[32] || s[32]`).
pub const SIGNATURE_LEN: usize = 64;

/// The signed registration transcript (PROTOCOL.md §4.1):
/// `REG_TRANSCRIPT || lp(account) || lp(request) || lp(response) || lp(ticket)`.
pub fn registration_transcript(
    account: &AccountId,
    request: &[u8],
    response: &[u8],
    ticket: &[u8],
) -> Vec<u8> {
    let mut m = labels::REG_TRANSCRIPT.to_vec();
    seal::lp(&mut m, account.as_bytes());
    seal::lp(&mut m, request);
    seal::lp(&mut m, response);
    seal::lp(&mut m, ticket);
    m
}

/// Signs `msg` with the identity key (deterministic Ed25519).
pub(crate) fn sign(identity: &SigningKey, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
    identity.sign(msg).to_bytes()
}

/// Verifies an identity signature under `pk`. Any failure is [`Error::ServerKeyMismatch`]:
/// whoever signed does not hold the key the client expects; a signature of the wrong length is
/// [`Error::Malformed`].
pub fn verify(pk: &ServerIdentity, msg: &[u8], signature: &[u8]) -> Result<()> {
    let sig: &[u8; SIGNATURE_LEN] = signature.try_into().map_err(|_| Error::Malformed {
        what: "registration signature",
    })?;
    let key = VerifyingKey::from_bytes(pk.as_bytes()).map_err(|_| Error::ServerKeyMismatch)?;
    key.verify_strict(msg, &Signature::from_bytes(sig))
        .map_err(|_| Error::ServerKeyMismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair(seed: u8) -> (SigningKey, ServerIdentity) {
        let sk = SigningKey::from_bytes(&[seed; 32]);
        let pk = ServerIdentity::from_bytes(sk.verifying_key().to_bytes());
        (sk, pk)
    }

    #[test]
    fn sign_verify_round_trip_and_every_flipped_bit_rejected() {
        let (sk, pk) = keypair(3);
        let sig = sign(&sk, b"transcript");
        verify(&pk, b"transcript", &sig).unwrap();
        assert_eq!(
            verify(&pk, b"transcripT", &sig),
            Err(Error::ServerKeyMismatch)
        );
        for bit in 0..SIGNATURE_LEN * 8 {
            let mut bad = sig;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(verify(&pk, b"transcript", &bad).is_err(), "bit {bit}");
        }
        assert!(matches!(
            verify(&pk, b"transcript", &sig[..63]),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn verify_under_another_key_rejected() {
        let (sk, pk) = keypair(3);
        let (_, other) = keypair(4);
        let sig = sign(&sk, b"m");
        assert_eq!(verify(&other, b"m", &sig), Err(Error::ServerKeyMismatch));
        // A signature made with another key but presented for the pinned key fails too.
        let (sk2, _) = keypair(5);
        assert_eq!(
            verify(&pk, b"m", &sign(&sk2, b"m")),
            Err(Error::ServerKeyMismatch)
        );
        // A key that is not a curve point is a mismatch, not a panic.
        let junk = ServerIdentity::from_bytes([0xff; 32]);
        assert_eq!(verify(&junk, b"m", &sig), Err(Error::ServerKeyMismatch));
    }
}
