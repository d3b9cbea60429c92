//! Authenticated encryption of every stored object (docs/FORMAT.md §4).
//!
//! `envelope = nonce[24] || XChaCha20-Poly1305(K, nonce, plaintext, ad)` with
//! `ad = label || 0x00 || ENVELOPE_VERSION (= 1) || id[32]`. Nonces are 192 random bits from the OS RNG,
//! so they do not repeat in practice (birthday bound 2^96 objects per key).

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{CryptoRng, RngCore};

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

/// Seals `plaintext` as an object of `kind` named `id`.
pub fn seal<R: RngCore + CryptoRng>(
    keys: &RepoKeys,
    kind: ObjectKind,
    id: &[u8; 32],
    plaintext: &[u8],
    rng: &mut R,
) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let cipher = XChaCha20Poly1305::new(kind.key(keys).into());
    let ad = kind.associated_data(id);
    let ct = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &ad,
            },
        )
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
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
    let (nonce, ct) = envelope.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(kind.key(keys).into());
    let ad = kind.associated_data(id);
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &ad })
        .map_err(|_| EnvelopeError::Authentication)
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
    let cipher = XChaCha20Poly1305::new(kind.key(keys).into());
    let ad = kind.associated_data(id);
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(nonce), &ad, body)
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
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
    let (nonce, rest) = envelope.split_at_mut(NONCE_LEN);
    let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
    let cipher = XChaCha20Poly1305::new(kind.key(keys).into());
    let ad = kind.associated_data(id);
    cipher
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            &ad,
            body,
            chacha20poly1305::Tag::from_slice(tag),
        )
        .map_err(|_| EnvelopeError::Authentication)?;
    Ok(body)
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

    proptest! {
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
