//! Shamir secret sharing over the ristretto255 scalar field (PROTOCOL.md §13.2).
//!
//! A secret `s` is shared with a random polynomial `f` of degree `t − 1`, `f(0) = s`; share `i`
//! (1-based, the realm's position) is `f(i)`. Any `t` shares give `s` back by Lagrange
//! interpolation at 0; fewer reveal nothing. The same coefficients combine group elements
//! `f(i)·P` into `s·P` (the threshold OPRF, §13.4).

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;
use zeroize::Zeroize;

use crate::error::{Error, Result};

/// Largest number of realms (`n`) of one registration.
pub const MAX_REALMS: usize = 16;

/// A uniformly random scalar from 64 bytes of RNG output (reduced mod ℓ; bias ≤ 2⁻²⁵⁹).
pub(crate) fn random_scalar(rng: &mut impl rand_core::CryptoRngCore) -> Scalar {
    let mut wide = [0u8; 64];
    rng.fill_bytes(&mut wide);
    let s = Scalar::from_bytes_mod_order_wide(&wide);
    wide.zeroize();
    s
}

/// Shares `secret` into `n` shares, `t` of which reconstruct it. Returned in index order 1..=n.
/// The polynomial coefficients are zeroized before returning.
pub(crate) fn split(
    rng: &mut impl rand_core::CryptoRngCore,
    secret: &Scalar,
    t: usize,
    n: usize,
) -> Result<Vec<Scalar>> {
    check_config(t, n)?;
    let mut coeffs: Vec<Scalar> = Vec::with_capacity(t);
    coeffs.push(*secret);
    for _ in 1..t {
        coeffs.push(random_scalar(rng));
    }
    let shares = (1..=n)
        .map(|i| {
            // Horner: f(x) = c0 + x(c1 + x(c2 + …)).
            let x = Scalar::from(i as u64);
            coeffs.iter().rev().fold(Scalar::ZERO, |acc, c| acc * x + c)
        })
        .collect();
    coeffs.zeroize();
    Ok(shares)
}

/// `1 ≤ t ≤ n ≤ MAX_REALMS`.
pub(crate) fn check_config(t: usize, n: usize) -> Result<()> {
    if n == 0 || n > MAX_REALMS {
        return Err(Error::InvalidConfig("the number of realms must be 1 to 16"));
    }
    if t == 0 || t > n {
        return Err(Error::InvalidConfig(
            "the threshold must be at least 1 and at most the number of realms",
        ));
    }
    Ok(())
}

/// Lagrange coefficients at 0 for the distinct non-zero `indices`:
/// `λ_i = Π_{j≠i} j / (j − i)`.
pub(crate) fn lagrange_at_zero(indices: &[u8]) -> Result<Vec<Scalar>> {
    for (k, &i) in indices.iter().enumerate() {
        if i == 0 || indices[k + 1..].contains(&i) {
            return Err(Error::Malformed {
                what: "share indices (zero or repeated)",
            });
        }
    }
    Ok(indices
        .iter()
        .map(|&i| {
            let xi = Scalar::from(u64::from(i));
            let (num, den) = indices.iter().filter(|&&j| j != i).fold(
                (Scalar::ONE, Scalar::ONE),
                |(num, den), &j| {
                    let xj = Scalar::from(u64::from(j));
                    (num * xj, den * (xj - xi))
                },
            );
            num * den.invert()
        })
        .collect())
}

/// Interpolates scalar shares `(index, f(index))` at 0.
pub(crate) fn combine_scalars(shares: &[(u8, Scalar)]) -> Result<Scalar> {
    let indices: Vec<u8> = shares.iter().map(|(i, _)| *i).collect();
    let lambdas = lagrange_at_zero(&indices)?;
    Ok(shares.iter().zip(&lambdas).map(|((_, s), l)| s * l).sum())
}

/// Interpolates group-element shares `(index, f(index)·P)` at 0, giving `f(0)·P`.
pub(crate) fn combine_points(shares: &[(u8, RistrettoPoint)]) -> Result<RistrettoPoint> {
    let indices: Vec<u8> = shares.iter().map(|(i, _)| *i).collect();
    let lambdas = lagrange_at_zero(&indices)?;
    Ok(shares
        .iter()
        .zip(&lambdas)
        .fold(RistrettoPoint::identity(), |acc, ((_, p), l)| acc + p * l))
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT as G;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn rng(seed: u64) -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::seed_from_u64(seed)
    }

    #[test]
    fn split_any_t_shares_reconstruct() {
        let mut r = rng(1);
        let s = random_scalar(&mut r);
        let shares = split(&mut r, &s, 3, 5).unwrap();
        for a in 0..5 {
            for b in a + 1..5 {
                for c in b + 1..5 {
                    let pick = [a, b, c].map(|k| ((k + 1) as u8, shares[k]));
                    assert_eq!(combine_scalars(&pick).unwrap(), s);
                    let pts = pick.map(|(i, x)| (i, G * x));
                    assert_eq!(combine_points(&pts).unwrap(), G * s);
                }
            }
        }
    }

    #[test]
    fn split_fewer_than_t_shares_give_wrong_secret() {
        let mut r = rng(2);
        let s = random_scalar(&mut r);
        let shares = split(&mut r, &s, 3, 3).unwrap();
        assert_ne!(
            combine_scalars(&[(1, shares[0]), (2, shares[1])]).unwrap(),
            s
        );
    }

    #[test]
    fn lagrange_repeated_or_zero_index_rejected() {
        assert!(lagrange_at_zero(&[1, 1]).is_err());
        assert!(lagrange_at_zero(&[0, 2]).is_err());
    }

    #[test]
    fn check_config_bounds() {
        assert!(check_config(2, 3).is_ok());
        assert!(check_config(0, 3).is_err());
        assert!(check_config(4, 3).is_err());
        assert!(check_config(1, 17).is_err());
    }

    proptest! {
        #[test]
        fn split_roundtrip_any_subset(seed in any::<u64>(), n in 1usize..=8, t_off in 0usize..8, mask in any::<u16>()) {
            let t = 1 + t_off % n;
            let mut r = rng(seed);
            let s = random_scalar(&mut r);
            let shares = split(&mut r, &s, t, n).unwrap();
            let picked: Vec<(u8, Scalar)> = (0..n)
                .filter(|k| mask & (1 << k) != 0)
                .map(|k| ((k + 1) as u8, shares[k]))
                .collect();
            if picked.len() >= t {
                prop_assert_eq!(combine_scalars(&picked).unwrap(), s);
            }
        }
    }
}
