//! Schnorr signatures over ristretto255 with the vault's OPAQUE server key (PROTOCOL.md §4.1).
//!
//! The vault proves that it holds the private key of the pinned [`ServerIdentity`] by signing
//! the registration transcript with it, so a client can check who it is talking to **before** it
//! uploads its envelope (which, with the OPRF key of whoever answered, allows an offline
//! dictionary attack). The same scalar is the 3DH static key of OPAQUE; the signature is domain
//! separated by its own labels (as XEdDSA reuses an X25519 key for signatures).
//!
//! ```text
//! k = Scalar(SHA-512(SIG_NONCE || sk || rand[32] || msg))        # hedged deterministic nonce
//! R = k·B
//! c = Scalar(SHA-512(SIG_CHALLENGE || R || pk || msg))
//! s = k + c·sk
//! signature = R[32] || s[32]                                     # s canonical
//! verify: s canonical, R and pk decode, s·B == R + c·pk
//! ```

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_TABLE;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::labels;
use crate::seal;
use crate::types::{AccountId, ServerIdentity};

/// Size of a signature: `R[32] || s[32]`.
pub const SIGNATURE_LEN: usize = 64;

fn hash_scalar(parts: &[&[u8]]) -> Scalar {
    let mut h = Sha512::new();
    for p in parts {
        h.update(p);
    }
    Scalar::from_bytes_mod_order_wide(&h.finalize().into())
}

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

/// Signs `msg` with the scalar `sk` (canonical little-endian bytes) whose public key is `pk`.
pub(crate) fn sign(
    rng: &mut impl rand_core::CryptoRngCore,
    sk: &[u8; 32],
    pk: &ServerIdentity,
    msg: &[u8],
) -> [u8; SIGNATURE_LEN] {
    let x = Zeroizing::new(Scalar::from_bytes_mod_order(*sk));
    let mut hedge = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut hedge[..]);
    let k = Zeroizing::new(hash_scalar(&[labels::SIG_NONCE, sk, &hedge[..], msg]));
    let r = (&*k * RISTRETTO_BASEPOINT_TABLE).compress();
    let c = hash_scalar(&[labels::SIG_CHALLENGE, r.as_bytes(), pk.as_bytes(), msg]);
    let s = *k + c * *x;
    let mut out = [0u8; SIGNATURE_LEN];
    out[..32].copy_from_slice(r.as_bytes());
    out[32..].copy_from_slice(s.as_bytes());
    out
}

/// Verifies a signature made by [`sign`] under `pk`. Any failure is
/// [`Error::ServerKeyMismatch`]: whoever signed does not hold the key the client expects.
pub fn verify(pk: &ServerIdentity, msg: &[u8], signature: &[u8]) -> Result<()> {
    let sig: &[u8; SIGNATURE_LEN] = signature.try_into().map_err(|_| Error::Malformed {
        what: "registration signature",
    })?;
    let r_bytes: [u8; 32] = sig[..32].try_into().expect("32 bytes");
    let s_bytes: [u8; 32] = sig[32..].try_into().expect("32 bytes");
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))
        .ok_or(Error::ServerKeyMismatch)?;
    let r = CompressedRistretto(r_bytes)
        .decompress()
        .ok_or(Error::ServerKeyMismatch)?;
    let a: RistrettoPoint = CompressedRistretto(*pk.as_bytes())
        .decompress()
        .ok_or(Error::ServerKeyMismatch)?;
    let c = hash_scalar(&[labels::SIG_CHALLENGE, &r_bytes, pk.as_bytes(), msg]);
    // s·B − c·A must equal R.
    let check = RistrettoPoint::vartime_double_scalar_mul_basepoint(&-c, &a, &s);
    if check.compress() == r.compress() {
        Ok(())
    } else {
        Err(Error::ServerKeyMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    fn keypair(seed: u8) -> ([u8; 32], ServerIdentity) {
        let sk = Scalar::from_bytes_mod_order([seed; 32]);
        let pk = (&sk * RISTRETTO_BASEPOINT_TABLE).compress();
        (sk.to_bytes(), ServerIdentity::from_bytes(pk.to_bytes()))
    }

    #[test]
    fn sign_verify_round_trip_and_every_flipped_bit_rejected() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (sk, pk) = keypair(3);
        let sig = sign(&mut rng, &sk, &pk, b"transcript");
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
        assert!(verify(&pk, b"transcript", &sig[..63]).is_err());
    }

    #[test]
    fn verify_under_another_key_rejected() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let (sk, pk) = keypair(3);
        let (_, other) = keypair(4);
        let sig = sign(&mut rng, &sk, &pk, b"m");
        assert_eq!(verify(&other, b"m", &sig), Err(Error::ServerKeyMismatch));
        // A signature made with another key but claiming the pinned public key fails too.
        let (sk2, _) = keypair(5);
        let forged = sign(&mut rng, &sk2, &pk, b"m");
        assert_eq!(verify(&pk, b"m", &forged), Err(Error::ServerKeyMismatch));
    }
}
