//! AES-256-GCM with a 16-byte IV, taken apart so that a backup of any size can be
//! authenticated in one streaming pass and decrypted in a second (NIST SP 800-38D, §7.2).
//!
//! `aes-gcm` 0.10 only works on whole buffers; this module assembles the same construction
//! from the RustCrypto pieces `aes-gcm` itself is built on (`aes`, `ctr`'s 32-bit big-endian
//! counter, `ghash`). Encryption stays with `aes-gcm`, so every round-trip test checks this
//! code against it, and the real-backup fixture checks it against WhatsApp.
//!
//! With `H = AES_K(0^128)` and IV `N` of 128 bits: `J0 = GHASH_H(N || 0^64 || [128]_64)`,
//! keystream = `AES_K(inc32(J0)), AES_K(inc32²(J0)), …`, and
//! `tag = AES_K(J0) ⊕ GHASH_H(C || pad || [0]_64 || [8·len(C)]_64)` (no associated data).

use aes::Aes256;
use aes::cipher::{BlockEncrypt, KeyInit, KeyIvInit, StreamCipher};
use ghash::GHash;
use ghash::universal_hash::UniversalHash;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

type Ctr = ctr::Ctr32BE<Aes256>;
type Block = ghash::Block;

pub(crate) const TAG_LEN: usize = 16;

/// Per-(key, IV) state: the cipher, the GHASH key, `J0` and the tag mask `AES_K(J0)`.
pub(crate) struct Gcm {
    key: [u8; 32],
    ghash: GHash,
    j0: Block,
    mask: [u8; TAG_LEN],
}

impl Drop for Gcm {
    fn drop(&mut self) {
        self.key.zeroize();
        self.j0.as_mut_slice().zeroize();
        self.mask.zeroize();
    }
}

impl Gcm {
    pub(crate) fn new(key: &[u8; 32], iv: &[u8; 16]) -> Self {
        let aes = Aes256::new(key.into());
        let mut h = Block::default();
        aes.encrypt_block(&mut h);
        let ghash = GHash::new(&h);
        h.as_mut_slice().zeroize();

        let mut j0_hash = ghash.clone();
        j0_hash.update_padded(iv);
        let mut lengths = Block::default();
        lengths[8..].copy_from_slice(&(8 * iv.len() as u64).to_be_bytes());
        j0_hash.update(&[lengths]);
        let j0 = j0_hash.finalize();

        let mut mask = [0u8; TAG_LEN];
        Ctr::new(key.into(), &j0).apply_keystream(&mut mask);
        Gcm {
            key: *key,
            ghash,
            j0,
            mask,
        }
    }

    /// A fresh GHASH over ciphertext.
    pub(crate) fn hasher(&self) -> TagHasher {
        TagHasher {
            ghash: self.ghash.clone(),
            partial: [0u8; 16],
            partial_len: 0,
            len: 0,
        }
    }

    /// The keystream for the first ciphertext byte on (counter `inc32(J0)`).
    pub(crate) fn keystream(&self) -> Keystream {
        let mut ctr = Ctr::new((&self.key).into(), &self.j0);
        let mut skip = [0u8; 16];
        ctr.apply_keystream(&mut skip);
        skip.zeroize();
        Keystream(ctr)
    }

    /// Whether `hasher` (fed exactly the ciphertext) yields `tag`, in constant time.
    pub(crate) fn verify(&self, hasher: TagHasher, tag: &[u8]) -> bool {
        let mut computed = hasher.finalize();
        for (c, m) in computed.iter_mut().zip(self.mask) {
            *c ^= m;
        }
        let ok = tag.len() == TAG_LEN && bool::from(computed.ct_eq(tag));
        computed.zeroize();
        ok
    }
}

/// CTR keystream, applied in place.
pub(crate) struct Keystream(Ctr);

impl Keystream {
    pub(crate) fn apply(&mut self, buf: &mut [u8]) {
        self.0.apply_keystream(buf);
    }
}

/// GHASH over a ciphertext fed in pieces of any length.
#[derive(Clone)]
pub(crate) struct TagHasher {
    ghash: GHash,
    partial: [u8; 16],
    partial_len: usize,
    len: u64,
}

impl TagHasher {
    pub(crate) fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.partial_len > 0 {
            let take = (16 - self.partial_len).min(data.len());
            self.partial[self.partial_len..self.partial_len + take].copy_from_slice(&data[..take]);
            self.partial_len += take;
            data = &data[take..];
            if self.partial_len < 16 {
                return;
            }
            self.ghash.update(&[Block::from(self.partial)]);
            self.partial_len = 0;
        }
        let whole = data.len() - data.len() % 16;
        // On whole blocks update_padded adds no padding.
        self.ghash.update_padded(&data[..whole]);
        let rest = &data[whole..];
        self.partial[..rest.len()].copy_from_slice(rest);
        self.partial_len = rest.len();
    }

    fn finalize(mut self) -> [u8; TAG_LEN] {
        if self.partial_len > 0 {
            self.ghash.update_padded(&self.partial[..self.partial_len]);
        }
        self.partial.zeroize();
        let mut lengths = Block::default();
        lengths[8..].copy_from_slice(&(self.len * 8).to_be_bytes());
        self.ghash.update(&[lengths]);
        self.ghash.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::AeadInPlace;
    use aes_gcm::aead::consts::U16;
    use aes_gcm::{AesGcm, Nonce};
    use rand::{Rng, SeedableRng};

    type Reference = AesGcm<Aes256, U16>;

    #[test]
    fn pieces_match_aes_gcm_at_every_split() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 100, 1000] {
            let key: [u8; 32] = rng.r#gen();
            let iv: [u8; 16] = rng.r#gen();
            let plain: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            let mut ct = plain.clone();
            let tag = Reference::new((&key).into())
                .encrypt_in_place_detached(Nonce::<U16>::from_slice(&iv), b"", &mut ct)
                .unwrap();

            let gcm = Gcm::new(&key, &iv);
            for split in [0, 1, 7, 16, len / 2, len] {
                let split = split.min(len);
                let mut h = gcm.hasher();
                h.update(&ct[..split]);
                h.update(&ct[split..]);
                assert!(gcm.verify(h.clone(), &tag), "len {len} split {split}");
                let mut bad = tag;
                bad[0] ^= 1;
                assert!(!gcm.verify(h, &bad));
            }
            let mut out = ct.clone();
            let mut ks = gcm.keystream();
            let (a, b) = out.split_at_mut(len / 3);
            ks.apply(a);
            ks.apply(b);
            assert_eq!(out, plain);
        }
    }
}
