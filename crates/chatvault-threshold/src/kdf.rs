//! Password stretching, MACs and the encryption of the backup key (PROTOCOL.md §13.3, §13.7).
//!
//! ```text
//! salt                       = SHA-256(ARGON2_SALT || version || lp(account))
//! access_key || enc_seed     = Argon2id(password, salt, ksf)            (64 bytes)
//! MAC(key, label, parts…)    = HMAC-SHA256(key, lp(label) || lp(part_1) || … )
//! encryption_key             = MAC(enc_seed, ENCRYPTION_KEY, scalar)
//! encrypted_secret           = ChaCha20-Poly1305(encryption_key, nonce 0, backup_key,
//!                                                AD = SECRET_AD || version || lp(account))
//! ```

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use chatvault_vault_core::{AccountId, KsfParams};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::labels;
use crate::messages::ENCRYPTED_SECRET_LEN;

fn lp(out: &mut Vec<u8>, x: &[u8]) {
    let len = u16::try_from(x.len()).expect("MAC input longer than 65535 bytes");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(x);
}

/// `MAC(key, label, parts…)`: HMAC-SHA256 over an unambiguous (length-prefixed) encoding.
pub(crate) fn mac(key: &[u8; 32], label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    let mut buf = Zeroizing::new(Vec::new());
    lp(&mut buf, label);
    for p in parts {
        lp(&mut buf, p);
    }
    m.update(&buf);
    m.finalize().into_bytes().into()
}

/// The stretched password: the OPRF input and the encryption-key seed.
pub(crate) struct Stretched {
    pub(crate) access_key: Zeroizing<[u8; 32]>,
    pub(crate) encryption_seed: Zeroizing<[u8; 32]>,
}

fn argon2_salt(version: &[u8; 16], account: &AccountId) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(labels::ARGON2_SALT);
    h.update(version);
    let a = account.as_bytes();
    h.update((a.len() as u16).to_be_bytes());
    h.update(a);
    h.finalize().into()
}

/// `Argon2id(password, salt(version, account), ksf)` split in two 32-byte keys. The caller has
/// validated `ksf` (registration or recovery bounds).
pub(crate) fn stretch(
    password: &[u8],
    version: &[u8; 16],
    account: &AccountId,
    ksf: &KsfParams,
) -> Result<Stretched> {
    ksf.validate()?;
    let params = argon2::Params::new(ksf.m_kib, ksf.t, ksf.p, Some(64))
        .map_err(|_| chatvault_vault_core::Error::InvalidKsfParams("rejected by argon2"))?;
    let a2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 64]);
    a2.hash_password_into(password, &argon2_salt(version, account), out.as_mut())
        .map_err(|_| chatvault_vault_core::Error::InvalidKsfParams("rejected by argon2"))?;
    let mut access_key = Zeroizing::new([0u8; 32]);
    let mut encryption_seed = Zeroizing::new([0u8; 32]);
    access_key.copy_from_slice(&out[..32]);
    encryption_seed.copy_from_slice(&out[32..]);
    Ok(Stretched {
        access_key,
        encryption_seed,
    })
}

fn secret_ad(version: &[u8; 16], account: &AccountId) -> Vec<u8> {
    let mut ad = labels::SECRET_AD.to_vec();
    ad.extend_from_slice(version);
    lp(&mut ad, account.as_bytes());
    ad
}

/// `encryption_key = MAC(enc_seed, ENCRYPTION_KEY, scalar)`.
pub(crate) fn encryption_key(seed: &[u8; 32], scalar: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(mac(seed, labels::ENCRYPTION_KEY, &[scalar]))
}

/// Encrypts the backup key. Nonce 0 is safe: the key is fresh for every registration (new
/// random scalar).
pub(crate) fn encrypt_secret(
    key: &[u8; 32],
    version: &[u8; 16],
    account: &AccountId,
    secret: &[u8; 32],
) -> [u8; ENCRYPTED_SECRET_LEN] {
    let ct = ChaCha20Poly1305::new(key.into())
        .encrypt(
            &Nonce::default(),
            Payload {
                msg: secret,
                aad: &secret_ad(version, account),
            },
        )
        .expect("ChaCha20-Poly1305 encryption of 32 bytes cannot fail");
    ct.try_into().expect("32 bytes + 16-byte tag")
}

/// Decrypts the backup key.
pub(crate) fn decrypt_secret(
    key: &[u8; 32],
    version: &[u8; 16],
    account: &AccountId,
    ct: &[u8; ENCRYPTED_SECRET_LEN],
) -> Result<Zeroizing<[u8; 32]>> {
    let pt = Zeroizing::new(
        ChaCha20Poly1305::new(key.into())
            .decrypt(
                &Nonce::default(),
                Payload {
                    msg: ct,
                    aad: &secret_ad(version, account),
                },
            )
            .map_err(|_| Error::Corrupted)?,
    );
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&pt);
    Ok(out)
}
