//! 2HashTDH threshold OPRF over ristretto255 with SHA-512, and the Chaum–Pedersen DLEQ proof of
//! each realm's evaluation (PROTOCOL.md §13.4, §13.5).
//!
//! ```text
//! H1(x)        = ristretto255::from_uniform_bytes(SHA-512(OPRF_HASH_TO_GROUP || lp(x)))
//! F_k(x)       = SHA-512(OPRF_OUTPUT || lp(x) || compress(k·H1(x)))            (2HashDH)
//! blind        B = r·H1(x), r random non-zero
//! evaluate_i   Z_i = k_i·B                       (k_i = f(i), Shamir share of the root key k)
//! finalize     Z = Σ λ_i·Z_i = k·B;  F = SHA-512(OPRF_OUTPUT || lp(x) || compress(r⁻¹·Z))
//! ```
//!
//! DLEQ (Chaum–Pedersen with Fiat–Shamir) proves `log_G(P_i) = log_B(Z_i)`:
//! `c = H(DLEQ_CHALLENGE || P || B || Z || R1 || R2)` reduced wide, `s = ρ − c·k`, proof `c || s`.

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_TABLE as G;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{Identity, VartimeMultiscalarMul};
use sha2::{Digest, Sha512};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::labels;
use crate::shamir;

/// Length of an OPRF output (`F`), split into the unlock-key commitment and the unlock key.
pub const OUTPUT_LEN: usize = 64;
/// Length of a DLEQ proof (`c || s`).
pub const PROOF_LEN: usize = 64;

fn lp_hash(h: &mut Sha512, x: &[u8]) {
    let len = u16::try_from(x.len()).expect("OPRF input longer than 65535 bytes");
    h.update(len.to_be_bytes());
    h.update(x);
}

/// `H1(x)`.
pub(crate) fn hash_to_group(input: &[u8]) -> RistrettoPoint {
    let mut h = Sha512::new();
    h.update(labels::OPRF_HASH_TO_GROUP);
    lp_hash(&mut h, input);
    let wide: [u8; 64] = h.finalize().into();
    RistrettoPoint::from_uniform_bytes(&wide)
}

/// `H2(x, Y)`.
fn output_hash(input: &[u8], point: &RistrettoPoint) -> Zeroizing<[u8; OUTPUT_LEN]> {
    let mut h = Sha512::new();
    h.update(labels::OPRF_OUTPUT);
    lp_hash(&mut h, input);
    h.update(point.compress().as_bytes());
    Zeroizing::new(h.finalize().into())
}

/// `F_k(x)` evaluated directly with the root key (registration, §13.3).
pub(crate) fn evaluate_unblinded(key: &Scalar, input: &[u8]) -> Zeroizing<[u8; OUTPUT_LEN]> {
    output_hash(input, &(hash_to_group(input) * key))
}

/// The client's blinding state: `r` and the input, zeroized on drop.
pub(crate) struct Blind {
    r: Scalar,
    input: Zeroizing<Vec<u8>>,
}

impl Drop for Blind {
    fn drop(&mut self) {
        self.r.zeroize();
    }
}

/// Blinds `input`: returns the state and `B = r·H1(x)`.
pub(crate) fn blind(
    rng: &mut impl rand_core::CryptoRngCore,
    input: &[u8],
) -> (Blind, RistrettoPoint) {
    let r = loop {
        let r = shamir::random_scalar(rng);
        if r != Scalar::ZERO {
            break r;
        }
    };
    let b = hash_to_group(input) * r;
    (
        Blind {
            r,
            input: Zeroizing::new(input.to_vec()),
        },
        b,
    )
}

/// A realm's evaluation `Z_i = k_i·B`.
pub(crate) fn blind_evaluate(key_share: &Scalar, blinded: &RistrettoPoint) -> RistrettoPoint {
    blinded * key_share
}

impl Blind {
    /// Combines `t` verified evaluations `(index, Z_i)` and unblinds: `F_k(x)`.
    pub(crate) fn finalize(
        &self,
        evaluations: &[(u8, RistrettoPoint)],
    ) -> Result<Zeroizing<[u8; OUTPUT_LEN]>> {
        let z = shamir::combine_points(evaluations)?;
        let y = z * self.r.invert();
        Ok(output_hash(&self.input, &y))
    }
}

fn hash_to_scalar(h: Sha512) -> Scalar {
    let mut wide: [u8; 64] = h.finalize().into();
    let s = Scalar::from_bytes_mod_order_wide(&wide);
    wide.zeroize();
    s
}

fn challenge(
    public: &CompressedRistretto,
    blinded: &CompressedRistretto,
    evaluated: &CompressedRistretto,
    r1: &CompressedRistretto,
    r2: &CompressedRistretto,
) -> Scalar {
    let mut h = Sha512::new();
    h.update(labels::DLEQ_CHALLENGE);
    for p in [public, blinded, evaluated, r1, r2] {
        h.update(p.as_bytes());
    }
    hash_to_scalar(h)
}

/// Proves `log_G(P) = log_B(Z)` for `P = k·G`, `Z = k·B`. The nonce is hedged: derived from the
/// key, the statement and 32 fresh random bytes, so a weak RNG alone does not leak `k`. `P`, `B`
/// and `Z` come with their canonical encodings (`B` also as a point for `R2 = ρ·B`), so that
/// nothing is decompressed or compressed twice.
pub(crate) fn prove(
    rng: &mut impl rand_core::CryptoRngCore,
    key: &Scalar,
    public_c: &[u8; 32],
    (blinded, blinded_c): (&RistrettoPoint, &[u8; 32]),
    evaluated_c: &[u8; 32],
) -> [u8; PROOF_LEN] {
    let mut fresh = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(fresh.as_mut());
    let mut h = Sha512::new();
    h.update(labels::DLEQ_NONCE);
    h.update(key.as_bytes());
    h.update(blinded_c);
    h.update(fresh.as_ref());
    let mut rho = hash_to_scalar(h);
    let r1 = (G * &rho).compress();
    let r2 = (blinded * rho).compress();
    let c = challenge(
        &CompressedRistretto(*public_c),
        &CompressedRistretto(*blinded_c),
        &CompressedRistretto(*evaluated_c),
        &r1,
        &r2,
    );
    let s = rho - c * key;
    rho.zeroize();
    let mut out = [0u8; PROOF_LEN];
    out[..32].copy_from_slice(c.as_bytes());
    out[32..].copy_from_slice(s.as_bytes());
    out
}

/// [`prove`] for points without their encodings (tests).
#[cfg(test)]
pub(crate) fn prove_points(
    rng: &mut impl rand_core::CryptoRngCore,
    key: &Scalar,
    public: &RistrettoPoint,
    blinded: &RistrettoPoint,
    evaluated: &RistrettoPoint,
) -> [u8; PROOF_LEN] {
    prove(
        rng,
        key,
        &public.compress().to_bytes(),
        (blinded, &blinded.compress().to_bytes()),
        &evaluated.compress().to_bytes(),
    )
}

/// Verifies a DLEQ proof (client side). Any malformed part is a failure. Each point comes with
/// its canonical encoding (the bytes it was decoded from, or its compression), so that nothing
/// is compressed again: `R1' = s·G + c·P` and `R2' = s·B + c·Z`, each one variable-time
/// multiscalar multiplication.
pub(crate) fn verify(
    proof: &[u8; PROOF_LEN],
    (public, public_c): (&RistrettoPoint, &[u8; 32]),
    (blinded, blinded_c): (&RistrettoPoint, &[u8; 32]),
    (evaluated, evaluated_c): (&RistrettoPoint, &[u8; 32]),
) -> bool {
    let c = Scalar::from_canonical_bytes(proof[..32].try_into().expect("32 bytes"));
    let s = Scalar::from_canonical_bytes(proof[32..].try_into().expect("32 bytes"));
    let (Some(c), Some(s)) = (Option::<Scalar>::from(c), Option::<Scalar>::from(s)) else {
        return false;
    };
    if *evaluated == RistrettoPoint::identity() || *public == RistrettoPoint::identity() {
        return false;
    }
    let r1 = RistrettoPoint::vartime_double_scalar_mul_basepoint(&c, public, &s);
    let r2 = RistrettoPoint::vartime_multiscalar_mul([s, c], [*blinded, *evaluated]);
    let expect = challenge(
        &CompressedRistretto(*public_c),
        &CompressedRistretto(*blinded_c),
        &CompressedRistretto(*evaluated_c),
        &r1.compress(),
        &r2.compress(),
    );
    expect == c
}

/// [`verify`] for points without their encodings (tests).
#[cfg(test)]
pub(crate) fn verify_points(
    proof: &[u8; PROOF_LEN],
    public: &RistrettoPoint,
    blinded: &RistrettoPoint,
    evaluated: &RistrettoPoint,
) -> bool {
    verify(
        proof,
        (public, &public.compress().to_bytes()),
        (blinded, &blinded.compress().to_bytes()),
        (evaluated, &evaluated.compress().to_bytes()),
    )
}

/// `k·G`.
pub(crate) fn public_key(key: &Scalar) -> RistrettoPoint {
    G * key
}

/// Decodes a canonical, non-identity ristretto255 point.
pub(crate) fn decode_point(bytes: &[u8], what: &'static str) -> Result<RistrettoPoint> {
    let arr: [u8; 32] = bytes.try_into().map_err(|_| Error::Malformed { what })?;
    let p = CompressedRistretto(arr)
        .decompress()
        .ok_or(Error::Malformed { what })?;
    if p == RistrettoPoint::identity() {
        return Err(Error::Malformed { what });
    }
    Ok(p)
}

/// Decodes a canonical scalar.
pub(crate) fn decode_scalar(bytes: &[u8], what: &'static str) -> Result<Scalar> {
    let arr: [u8; 32] = bytes.try_into().map_err(|_| Error::Malformed { what })?;
    Option::from(Scalar::from_canonical_bytes(arr)).ok_or(Error::Malformed { what })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng(seed: u64) -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::seed_from_u64(seed)
    }

    #[test]
    fn threshold_evaluation_equals_direct_evaluation() {
        let mut r = rng(7);
        let k = shamir::random_scalar(&mut r);
        let shares = shamir::split(&mut r, &k, 2, 3).unwrap();
        let (state, b) = blind(&mut r, b"access key");
        let evals: Vec<(u8, RistrettoPoint)> = [(1u8, shares[0]), (3, shares[2])]
            .iter()
            .map(|(i, s)| (*i, blind_evaluate(s, &b)))
            .collect();
        assert_eq!(
            *state.finalize(&evals).unwrap(),
            *evaluate_unblinded(&k, b"access key")
        );
        // A different input gives a different output.
        assert_ne!(
            *state.finalize(&evals).unwrap(),
            *evaluate_unblinded(&k, b"access kez")
        );
    }

    #[test]
    fn dleq_valid_proof_verifies() {
        let mut r = rng(8);
        let k = shamir::random_scalar(&mut r);
        let p = public_key(&k);
        let (_, b) = blind(&mut r, b"x");
        let z = blind_evaluate(&k, &b);
        let proof = prove_points(&mut r, &k, &p, &b, &z);
        assert!(verify_points(&proof, &p, &b, &z));
    }

    #[test]
    fn dleq_wrong_evaluation_rejected() {
        let mut r = rng(9);
        let k = shamir::random_scalar(&mut r);
        let other = shamir::random_scalar(&mut r);
        let p = public_key(&k);
        let (_, b) = blind(&mut r, b"x");
        // A realm that evaluates with another key cannot prove it against its public key.
        let z = blind_evaluate(&other, &b);
        let proof = prove_points(&mut r, &other, &p, &b, &z);
        assert!(!verify_points(&proof, &p, &b, &z));
        // A correct proof does not cover a substituted evaluation.
        let good = blind_evaluate(&k, &b);
        let proof = prove_points(&mut r, &k, &p, &b, &good);
        assert!(!verify_points(&proof, &p, &b, &(good + p)));
        // Nor a flipped proof byte.
        for byte in 0..PROOF_LEN {
            let mut bad = proof;
            bad[byte] ^= 1;
            assert!(!verify_points(&bad, &p, &b, &good), "byte {byte}");
        }
    }

    #[test]
    fn decode_point_identity_and_noncanonical_rejected() {
        assert!(decode_point(&[0u8; 32], "p").is_err());
        assert!(decode_point(&[0xffu8; 32], "p").is_err());
        assert!(decode_point(&[1u8; 31], "p").is_err());
        assert!(decode_scalar(&[0xffu8; 32], "s").is_err());
    }
}
