//! Authenticated encryption of every stored object (docs/FORMAT.md §4).
//!
//! `envelope = nonce[24] || XChaCha20-Poly1305(K, nonce, plaintext, ad)` with
//! `ad = label || 0x00 || ENVELOPE_VERSION (= 1) || id[32]`. Nonces are 192 random bits from the OS RNG,
//! so they do not repeat in practice (birthday bound 2^96 objects per key).
//!
//! XChaCha20-Poly1305 is computed exactly as draft-irtf-cfrg-xchacha-03 §2.3 defines it, from two
//! audited pieces: HChaCha20 (RustCrypto's `chacha20`) derives a subkey from `K` and the nonce's
//! first 16 bytes, and ChaCha20-Poly1305 (RFC 8439, *ring*'s assembly) runs under that subkey with
//! the 12-byte nonce `0x00000000 || nonce[16..24]`. That is how libsodium and the
//! `chacha20poly1305` crate build it too; the tests compare every output with the latter's.

use chacha20::cipher::consts::U10;
use rand_core::{CryptoRng, RngCore};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroize;

use crate::ENVELOPE_VERSION;
use crate::key::RepoKeys;
use crate::labels;

/// Length of the random nonce that starts every envelope.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Bytes an envelope adds to its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// The kind of a sealed object; selects the subkey and the associated-data label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ObjectKind {
    /// Sealed repository parameters inside `config`.
    Config,
    /// The header at the end of a pack.
    PackHeader,
    /// The trailer of a version 2 pack: the sealed header's length (FORMAT §7).
    PackTrailer,
    /// A chunk of file content.
    DataBlob,
    /// A directory listing.
    TreeBlob,
    /// A piece of a large file's content list (FORMAT §10.1).
    ListBlob,
    /// An index object.
    Index,
    /// A snapshot object.
    Snapshot,
    /// A lock object.
    Lock,
    /// A prune plan: packs and index objects condemned by `prune`, deleted by a later sweep.
    PrunePlan,
    /// A rollback commitment to the newest snapshot, kept by the Backup Key Vault.
    Commitment,
    /// A device's merged index in its local metadata cache (never stored in the repository).
    CacheIndex,
}

impl ObjectKind {
    /// The associated-data (and keyed-id) label of this kind.
    pub fn label(self) -> &'static str {
        match self {
            ObjectKind::Config => labels::AD_CONFIG,
            ObjectKind::PackHeader => labels::AD_PACK_HEADER,
            ObjectKind::PackTrailer => labels::AD_PACK_TRAILER,
            ObjectKind::DataBlob => labels::AD_BLOB_DATA,
            ObjectKind::TreeBlob => labels::AD_BLOB_TREE,
            ObjectKind::ListBlob => labels::AD_BLOB_LIST,
            ObjectKind::Index => labels::AD_INDEX,
            ObjectKind::Snapshot => labels::AD_SNAPSHOT,
            ObjectKind::Lock => labels::AD_LOCK,
            ObjectKind::PrunePlan => labels::AD_PRUNE_PLAN,
            ObjectKind::Commitment => labels::AD_COMMITMENT,
            ObjectKind::CacheIndex => labels::AD_CACHE_INDEX,
        }
    }

    /// Human-readable name for messages.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Config => "config",
            ObjectKind::PackHeader => "pack header",
            ObjectKind::PackTrailer => "pack trailer",
            ObjectKind::DataBlob => "data blob",
            ObjectKind::TreeBlob => "tree blob",
            ObjectKind::ListBlob => "list blob",
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshot",
            ObjectKind::Lock => "lock",
            ObjectKind::PrunePlan => "prune plan",
            ObjectKind::Commitment => "rollback commitment",
            ObjectKind::CacheIndex => "cached merged index",
        }
    }

    fn key(self, keys: &RepoKeys) -> &[u8; 32] {
        match self {
            ObjectKind::PackHeader
            | ObjectKind::PackTrailer
            | ObjectKind::DataBlob
            | ObjectKind::TreeBlob
            | ObjectKind::ListBlob => &keys.data,
            ObjectKind::Config
            | ObjectKind::Index
            | ObjectKind::Snapshot
            | ObjectKind::Lock
            | ObjectKind::PrunePlan
            | ObjectKind::Commitment
            | ObjectKind::CacheIndex => &keys.meta,
        }
    }

    fn associated_data(self, id: &[u8; 32]) -> Vec<u8> {
        let label = self.label().as_bytes();
        let mut ad = Vec::with_capacity(label.len() + 2 + 32);
        ad.extend_from_slice(label);
        ad.push(0);
        ad.push(ENVELOPE_VERSION);
        ad.extend_from_slice(id);
        ad
    }
}

/// Why an envelope could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Shorter than nonce + tag.
    #[error("truncated: {len} bytes is shorter than the {OVERHEAD}-byte envelope overhead")]
    Truncated {
        /// Length found.
        len: usize,
    },
    /// The tag did not verify: the bytes were altered, or belong to another object or kind.
    #[error("authentication failed (altered, or not the object it claims to be)")]
    Authentication,
}

/// One envelope's cipher: the HChaCha20 subkey and the RFC 8439 nonce of an XChaCha20 nonce.
struct XChaCha {
    key: LessSafeKey,
    nonce: [u8; 12],
}

impl XChaCha {
    fn new(key: &[u8; 32], nonce: &[u8]) -> Self {
        let (prefix, suffix) = nonce.split_at(16);
        let mut subkey = chacha20::hchacha::<U10>(key.into(), prefix.into());
        let key = LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &subkey)
                .expect("a 32-byte key is a ChaCha20-Poly1305 key"),
        );
        subkey.as_mut_slice().zeroize();
        let mut rfc_nonce = [0u8; 12];
        rfc_nonce[4..].copy_from_slice(suffix);
        Self {
            key,
            nonce: rfc_nonce,
        }
    }

    /// Encrypts `body` in place and returns the tag.
    fn seal(self, ad: &[u8], body: &mut [u8]) -> [u8; TAG_LEN] {
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(self.nonce),
                Aad::from(ad),
                body,
            )
            .expect("ChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Decrypts `body_and_tag` (ciphertext, then the tag) in place; returns the plaintext part.
    fn open<'a>(
        self,
        ad: &[u8],
        body_and_tag: &'a mut [u8],
    ) -> Result<&'a mut [u8], EnvelopeError> {
        self.key
            .open_in_place(
                Nonce::assume_unique_for_key(self.nonce),
                Aad::from(ad),
                body_and_tag,
            )
            .map_err(|_| EnvelopeError::Authentication)
    }
}

/// Seals `plaintext` as an object of `kind` named `id`.
pub fn seal<R: RngCore + CryptoRng>(
    keys: &RepoKeys,
    kind: ObjectKind,
    id: &[u8; 32],
    plaintext: &[u8],
    rng: &mut R,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.resize(NONCE_LEN, 0);
    out.extend_from_slice(plaintext);
    seal_in_place(keys, kind, id, &mut out, rng);
    out
}

/// Opens an envelope sealed by [`seal`] with the same kind and id.
pub fn open(
    keys: &RepoKeys,
    kind: ObjectKind,
    id: &[u8; 32],
    envelope: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    if envelope.len() < OVERHEAD {
        return Err(EnvelopeError::Truncated {
            len: envelope.len(),
        });
    }
    let (nonce, sealed) = envelope.split_at(NONCE_LEN);
    let mut out = sealed.to_vec();
    let plain_len = XChaCha::new(kind.key(keys), nonce)
        .open(&kind.associated_data(id), &mut out)?
        .len();
    out.truncate(plain_len);
    Ok(out)
}

/// [`seal`] without a second buffer, for large local objects: `buf` holds [`NONCE_LEN`] bytes
/// (overwritten with the nonce) followed by the plaintext, and becomes the envelope (the
/// plaintext encrypted in place, the tag appended). Same output format as [`seal`].
pub fn seal_in_place<R: RngCore + CryptoRng>(
    keys: &RepoKeys,
    kind: ObjectKind,
    id: &[u8; 32],
    buf: &mut Vec<u8>,
    rng: &mut R,
) {
    assert!(
        buf.len() >= NONCE_LEN,
        "seal_in_place needs room for the nonce"
    );
    let (nonce, body) = buf.split_at_mut(NONCE_LEN);
    rng.fill_bytes(nonce);
    let tag = XChaCha::new(kind.key(keys), nonce).seal(&kind.associated_data(id), body);
    buf.extend_from_slice(&tag);
}

/// [`open`] without a second buffer: decrypts `envelope` in place and returns the plaintext
/// part of it (for large local objects such as a device's merged index, where a copy costs
/// page faults). On failure the contents of `envelope` are unspecified.
pub fn open_in_place<'a>(
    keys: &RepoKeys,
    kind: ObjectKind,
    id: &[u8; 32],
    envelope: &'a mut [u8],
) -> Result<&'a [u8], EnvelopeError> {
    if envelope.len() < OVERHEAD {
        return Err(EnvelopeError::Truncated {
            len: envelope.len(),
        });
    }
    let (nonce, sealed) = envelope.split_at_mut(NONCE_LEN);
    let plain = XChaCha::new(kind.key(keys), nonce).open(&kind.associated_data(id), sealed)?;
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::RepoId;
    use crate::key::BackupKey;
    use proptest::prelude::*;
    use rand_core::OsRng;

    fn keys() -> RepoKeys {
        BackupKey::from_bytes([9; 32]).derive(&RepoId::from_bytes([1; 32]))
    }

    #[test]
    fn open_in_place_matches_open() {
        let k = keys();
        let env = seal(&k, ObjectKind::CacheIndex, &[5; 32], b"merged", &mut OsRng);
        let mut buf = env.clone();
        assert_eq!(
            open_in_place(&k, ObjectKind::CacheIndex, &[5; 32], &mut buf).unwrap(),
            b"merged"
        );
        let mut bad = env.clone();
        bad[30] ^= 1;
        assert_eq!(
            open_in_place(&k, ObjectKind::CacheIndex, &[5; 32], &mut bad),
            Err(EnvelopeError::Authentication)
        );
        let mut inplace = vec![0u8; NONCE_LEN];
        inplace.extend_from_slice(b"merged");
        seal_in_place(
            &k,
            ObjectKind::CacheIndex,
            &[5; 32],
            &mut inplace,
            &mut OsRng,
        );
        assert_eq!(
            open(&k, ObjectKind::CacheIndex, &[5; 32], &inplace).unwrap(),
            b"merged"
        );
        let mut other = env;
        assert!(open_in_place(&k, ObjectKind::Index, &[5; 32], &mut other).is_err());
        assert!(open_in_place(&k, ObjectKind::Index, &[5; 32], &mut [0; 39]).is_err());
    }

    #[test]
    fn open_rejects_other_kind_id_and_key() {
        let k = keys();
        let env = seal(&k, ObjectKind::Snapshot, &[5; 32], b"hello", &mut OsRng);
        assert_eq!(
            open(&k, ObjectKind::Snapshot, &[5; 32], &env).unwrap(),
            b"hello"
        );
        assert_eq!(
            open(&k, ObjectKind::Index, &[5; 32], &env),
            Err(EnvelopeError::Authentication)
        );
        assert_eq!(
            open(&k, ObjectKind::Snapshot, &[6; 32], &env),
            Err(EnvelopeError::Authentication)
        );
        let other = BackupKey::from_bytes([8; 32]).derive(&RepoId::from_bytes([1; 32]));
        assert_eq!(
            open(&other, ObjectKind::Snapshot, &[5; 32], &env),
            Err(EnvelopeError::Authentication)
        );
        assert_eq!(
            open(&k, ObjectKind::Snapshot, &[5; 32], &env[..39]),
            Err(EnvelopeError::Truncated { len: 39 })
        );
    }

    #[test]
    fn nonces_differ_between_seals() {
        let k = keys();
        let a = seal(&k, ObjectKind::DataBlob, &[0; 32], b"x", &mut OsRng);
        let b = seal(&k, ObjectKind::DataBlob, &[0; 32], b"x", &mut OsRng);
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
    }

    /// The envelope of RustCrypto's `XChaCha20Poly1305` for the same key, nonce, kind and id.
    fn rustcrypto_envelope(
        keys: &RepoKeys,
        kind: ObjectKind,
        id: &[u8; 32],
        nonce: &[u8; NONCE_LEN],
        data: &[u8],
    ) -> Vec<u8> {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        let cipher = chacha20poly1305::XChaCha20Poly1305::new(kind.key(keys).into());
        let ct = cipher
            .encrypt(
                chacha20poly1305::XNonce::from_slice(nonce),
                Payload {
                    msg: data,
                    aad: &kind.associated_data(id),
                },
            )
            .unwrap();
        [&nonce[..], &ct].concat()
    }

    proptest! {
        /// HChaCha20 + ring's ChaCha20-Poly1305 is XChaCha20-Poly1305: the same bytes as the
        /// `chacha20poly1305` crate's, both ways, at every length around ChaCha's 64-byte blocks
        /// and Poly1305's 16-byte ones.
        #[test]
        fn envelopes_equal_the_chacha20poly1305_crates(
            key in any::<[u8; 32]>(),
            nonce in any::<[u8; NONCE_LEN]>(),
            id in any::<[u8; 32]>(),
            data in proptest::collection::vec(any::<u8>(), 0..1100),
            data_kind in any::<bool>(),
        ) {
            let k = BackupKey::from_bytes(key).derive(&RepoId::from_bytes([1; 32]));
            let kind = if data_kind { ObjectKind::DataBlob } else { ObjectKind::Snapshot };
            let theirs = rustcrypto_envelope(&k, kind, &id, &nonce, &data);
            let mut ours = nonce.to_vec();
            ours.extend_from_slice(&data);
            let tag = XChaCha::new(kind.key(&k), &nonce).seal(&kind.associated_data(&id), &mut ours[NONCE_LEN..]);
            ours.extend_from_slice(&tag);
            prop_assert_eq!(&ours, &theirs);
            prop_assert_eq!(open(&k, kind, &id, &theirs).unwrap(), data);
        }

        #[test]
        fn any_flipped_bit_is_rejected(data in proptest::collection::vec(any::<u8>(), 0..256), pos in any::<usize>(), bit in 0u8..8) {
            let k = keys();
            let mut env = seal(&k, ObjectKind::DataBlob, &[3; 32], &data, &mut OsRng);
            let i = pos % env.len();
            env[i] ^= 1 << bit;
            prop_assert!(open(&k, ObjectKind::DataBlob, &[3; 32], &env).is_err());
        }
    }
}
