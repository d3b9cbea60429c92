//! `XSEAL` / `XOPEN` (PROTOCOL.md §1): XChaCha20-Poly1305 with a version prefix and length-prefixed AD.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::types::{AccountId, Key32};

pub(crate) const NONCE_LEN: usize = 24;
pub(crate) const TAG_LEN: usize = 16;

/// `label || u16(version) || lp(account) || extra`.
pub(crate) fn ad(label: &[u8], version: u16, account: &AccountId, extra: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(label.len() + 4 + account.as_bytes().len() + extra.len());
    out.extend_from_slice(label);
    out.extend_from_slice(&version.to_be_bytes());
    lp(&mut out, account.as_bytes());
    out.extend_from_slice(extra);
    out
}

/// Appends `u16(len(x)) || x`.
pub(crate) fn lp(out: &mut Vec<u8>, x: &[u8]) {
    let len = u16::try_from(x.len()).expect("length-prefixed field longer than 65535 bytes");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(x);
}

/// Raw XSEAL without version prefix: `nonce || ct || tag`.
pub(crate) fn xseal(
    rng: &mut impl rand_core::CryptoRngCore,
    key: &[u8; 32],
    ad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let cipher = XChaCha20Poly1305::new(key.into());
    let ct = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: ad,
            },
        )
        .expect("XChaCha20-Poly1305 encryption of a small buffer cannot fail");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Raw XOPEN of `nonce || ct || tag`.
pub(crate) fn xopen(
    key: &[u8; 32],
    ad: &[u8],
    blob: &[u8],
    what: &'static str,
) -> Result<Zeroizing<Vec<u8>>> {
    if blob.len() < NONCE_LEN + TAG_LEN {
        return Err(Error::Malformed { what });
    }
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(
            XNonce::from_slice(&blob[..NONCE_LEN]),
            Payload {
                msg: &blob[NONCE_LEN..],
                aad: ad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| Error::Corrupted { what })
}

/// `u16(version) || XSEAL[key, ad](plaintext)`; `ad` must already contain the version.
pub(crate) fn seal_versioned(
    rng: &mut impl rand_core::CryptoRngCore,
    key: &Key32,
    version: u16,
    ad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let mut out = version.to_be_bytes().to_vec();
    out.extend_from_slice(&xseal(rng, key.expose_secret(), ad, plaintext));
    out
}

/// Checks the version prefix (before decrypting) and opens. `expected_len` is the exact plaintext
/// size of this kind of blob.
pub(crate) fn open_versioned(
    key: &Key32,
    supported: u16,
    ad: &[u8],
    blob: &[u8],
    expected_len: usize,
    what: &'static str,
) -> Result<Zeroizing<Vec<u8>>> {
    let version = read_version(blob, what)?;
    if version != supported {
        return Err(Error::UnsupportedVersion {
            what,
            found: version,
            supported,
        });
    }
    if blob.len() != 2 + NONCE_LEN + expected_len + TAG_LEN {
        return Err(Error::Malformed { what });
    }
    xopen(key.expose_secret(), ad, &blob[2..], what)
}

pub(crate) fn read_version(blob: &[u8], what: &'static str) -> Result<u16> {
    match blob {
        [a, b, ..] => Ok(u16::from_be_bytes([*a, *b])),
        _ => Err(Error::Malformed { what }),
    }
}

/// A forward-only reader over a fixed layout.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::Malformed { what: self.what });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn rest(self) -> &'a [u8] {
        self.buf
    }
}
