//! The natural attacks of whoever holds **one** realm's full state (its decrypted record: OPRF
//! key share, unlock-key commitment, unlock tag, encryption-scalar share, encrypted backup key)
//! against a list of candidate passwords (PROTOCOL.md §13.11). The attacker tests of this crate
//! and of `chatvault-vault`, and `chatvault demo --realms`, run it and show that no attack singles
//! out the right password. It uses nothing an attacker would not have: the record layout is public.

use chatvault_vault_core::{AccountId, KsfParams};
use curve25519_dalek::scalar::Scalar;
use subtle::ConstantTimeEq;

use crate::error::Result;
use crate::realm::REALM_RECORD_LEN;
use crate::types::RealmId;
use crate::{kdf, labels, oprf, shamir};

/// Runs every attack over `candidates` with a record's plaintext encoding (as
/// [`crate::RealmRecord::to_bytes`] gives it, or as the attacker decrypted it with the realm's
/// key file). Returns, per attack, the indices of the candidates it "confirmed".
pub fn run_all(
    record: &[u8],
    account: &AccountId,
    realm_id: &RealmId,
    candidates: &[String],
) -> Result<Vec<(&'static str, Vec<usize>)>> {
    crate::RealmRecord::from_bytes(record)?;
    debug_assert_eq!(record.len(), REALM_RECORD_LEN);
    // Offsets of RealmRecord::to_bytes (PROTOCOL.md §13.8).
    let version: [u8; 16] = record[2..18].try_into().expect("length checked");
    let index = record[18];
    let ksf = KsfParams {
        m_kib: u32::from_be_bytes(record[21..25].try_into().expect("4")),
        t: u32::from_be_bytes(record[25..29].try_into().expect("4")),
        p: u32::from_be_bytes(record[29..33].try_into().expect("4")),
    };
    let k_i = oprf::decode_scalar(&record[37..69], "k")?;
    let commitment: [u8; 32] = record[197..229].try_into().expect("32");
    let tag: [u8; 32] = record[229..261].try_into().expect("32");
    let scalar_share: [u8; 32] = record[261..293].try_into().expect("32");
    let encrypted: [u8; 48] = record[293..341].try_into().expect("48");
    let mut out: Vec<(&'static str, Vec<usize>)> = vec![
        (
            "evaluate with the stolen share alone, compare the commitment",
            vec![],
        ),
        (
            "interpolate with guessed other shares, compare the commitment",
            vec![],
        ),
        (
            "recompute the unlock tag from the share-alone evaluation",
            vec![],
        ),
        (
            "decrypt the backup key with the stolen scalar share",
            vec![],
        ),
    ];
    // Guessed shares of another realm: low-entropy values an attacker might try.
    let guesses = [Scalar::ZERO, Scalar::ONE, k_i, -k_i];
    let other = if index == 1 { 2 } else { 1 };
    for (c, pw) in candidates.iter().enumerate() {
        let s = kdf::stretch(pw.as_bytes(), &version, account, &ksf)?;
        let x = s.access_key.as_ref();
        let f = oprf::evaluate_unblinded(&k_i, x);
        if bool::from(f[..32].ct_eq(&commitment)) {
            out[0].1.push(c);
        }
        for g in guesses {
            let k = shamir::combine_scalars(&[(index, k_i), (other, g)])?;
            let f2 = oprf::evaluate_unblinded(&k, x);
            if bool::from(f2[..32].ct_eq(&commitment)) && !out[1].1.contains(&c) {
                out[1].1.push(c);
            }
        }
        let uk: [u8; 32] = f[32..].try_into().expect("64-byte output");
        let t = kdf::mac(&uk, labels::UNLOCK_TAG, &[&realm_id.0, &version, &[index]]);
        if t == tag {
            out[2].1.push(c);
        }
        let key = kdf::encryption_key(&s.encryption_seed, &scalar_share);
        if kdf::decrypt_secret(&key, &version, account, &encrypted).is_ok() {
            out[3].1.push(c);
        }
    }
    Ok(out)
}
