//! Pack files (docs/FORMAT.md §7): many sealed blobs followed by a sealed header.
//!
//! ```text
//! pack   = blob_1 || … || blob_n || sealed_header || header_len u32le
//! header = version u8 (=1) || count u32le || entry*count
//! entry  = type u8 || blob_id[32] || offset u64le || length u32le || raw_length u32le
//! ```
//! The header envelope is bound to the pack id, so packs cannot be renamed or swapped.

use rand_core::{CryptoRng, RngCore};

use crate::blob::BlobType;
use crate::envelope::{self, ObjectKind};
use crate::id::{BlobId, PackId};
use crate::key::RepoKeys;

const ENTRY_LEN: usize = 1 + 32 + 8 + 4 + 4;
const HEADER_VERSION: u8 = 1;
/// Upper bound on entries in one pack header (bounds memory when decoding untrusted headers).
pub const MAX_ENTRIES: usize = 1 << 20;
/// Writers close a pack once it holds this many blobs, so that one pack always fits in one
/// index object (`objects::MAX_INDEX_BLOBS`) and its header stays small.
pub const MAX_PACK_BLOBS: usize = 32_768;

/// One blob in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    /// Blob type.
    pub ty: BlobType,
    /// Blob id.
    pub id: BlobId,
    /// Byte offset of the sealed blob in the pack.
    pub offset: u64,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the blob's plaintext.
    pub raw_length: u32,
}

/// Why a pack could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PackError {
    /// Too short to hold a header.
    #[error("pack is truncated")]
    Truncated,
    /// The header envelope did not authenticate.
    #[error("pack header {0}")]
    Header(#[from] envelope::EnvelopeError),
    /// The header decrypted but its content is inconsistent.
    #[error("pack header is malformed: {0}")]
    Malformed(&'static str),
}

/// Encodes and seals a header; returns `sealed_header || header_len`.
pub fn encode_header<R: RngCore + CryptoRng>(
    keys: &RepoKeys,
    pack_id: &PackId,
    entries: &[PackEntry],
    rng: &mut R,
) -> Vec<u8> {
    let mut plain = Vec::with_capacity(5 + entries.len() * ENTRY_LEN);
    plain.push(HEADER_VERSION);
    plain.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        plain.push(e.ty.code());
        plain.extend_from_slice(e.id.as_bytes());
        plain.extend_from_slice(&e.offset.to_le_bytes());
        plain.extend_from_slice(&e.length.to_le_bytes());
        plain.extend_from_slice(&e.raw_length.to_le_bytes());
    }
    let mut sealed = envelope::seal(
        keys,
        ObjectKind::PackHeader,
        pack_id.as_bytes(),
        &plain,
        rng,
    );
    let len = sealed.len() as u32;
    sealed.extend_from_slice(&len.to_le_bytes());
    sealed
}

/// The length of the sealed header, read from the last 4 bytes of a pack.
pub fn header_len_from_tail(tail4: &[u8]) -> Result<usize, PackError> {
    let b: [u8; 4] = tail4.try_into().map_err(|_| PackError::Truncated)?;
    Ok(u32::from_le_bytes(b) as usize)
}

/// Parses the header of a complete pack and checks that its entries tile the blob area.
pub fn decode_header(
    keys: &RepoKeys,
    pack_id: &PackId,
    pack: &[u8],
) -> Result<Vec<PackEntry>, PackError> {
    if pack.len() < 4 {
        return Err(PackError::Truncated);
    }
    let hlen = header_len_from_tail(&pack[pack.len() - 4..])?;
    // `pack.len() >= 4` here; no `hlen + 4`, which overflows on 32-bit targets.
    if hlen > pack.len() - 4 {
        return Err(PackError::Truncated);
    }
    let blob_area = pack.len() - 4 - hlen;
    let plain = envelope::open(
        keys,
        ObjectKind::PackHeader,
        pack_id.as_bytes(),
        &pack[blob_area..pack.len() - 4],
    )?;
    let entries = parse_header_plaintext(&plain)?;
    let mut expected = 0u64;
    for e in &entries {
        if e.offset != expected {
            return Err(PackError::Malformed("entries do not tile the pack"));
        }
        expected += u64::from(e.length);
    }
    if expected != blob_area as u64 {
        return Err(PackError::Malformed("entries do not cover the pack"));
    }
    Ok(entries)
}

/// Longest sealed header [`decode_sealed_header`] accepts: a header of
/// [`crate::objects::MAX_INDEX_BLOBS`] entries in its envelope. Bounds what a reader fetches
/// when a pack's trailing `header_len` is damaged.
pub const MAX_SEALED_HEADER_LEN: usize =
    envelope::OVERHEAD + 5 + crate::objects::MAX_INDEX_BLOBS * ENTRY_LEN;

/// Parses a pack's header from the sealed header alone (fetched with a ranged read: the
/// `header_len` bytes before the last 4 of a pack of `pack_len` bytes), with the same checks as
/// [`decode_header`]: the envelope authenticates against `pack_id`, and the entries tile the
/// blob area `pack_len - 4 - header_len` exactly. Used to rebuild a lost index (FORMAT §12.2).
pub fn decode_sealed_header(
    keys: &RepoKeys,
    pack_id: &PackId,
    pack_len: u64,
    sealed_header: &[u8],
) -> Result<Vec<PackEntry>, PackError> {
    if sealed_header.len() > MAX_SEALED_HEADER_LEN {
        return Err(PackError::Malformed("header longer than any pack has"));
    }
    let blob_area = pack_len
        .checked_sub(4)
        .and_then(|n| n.checked_sub(sealed_header.len() as u64))
        .ok_or(PackError::Truncated)?;
    let plain = envelope::open(
        keys,
        ObjectKind::PackHeader,
        pack_id.as_bytes(),
        sealed_header,
    )?;
    let entries = parse_header_plaintext(&plain)?;
    let mut expected = 0u64;
    for e in &entries {
        if e.offset != expected {
            return Err(PackError::Malformed("entries do not tile the pack"));
        }
        expected += u64::from(e.length);
    }
    if expected != blob_area {
        return Err(PackError::Malformed("entries do not cover the pack"));
    }
    Ok(entries)
}

fn parse_header_plaintext(plain: &[u8]) -> Result<Vec<PackEntry>, PackError> {
    if plain.len() < 5 || plain[0] != HEADER_VERSION {
        return Err(PackError::Malformed("unknown header version"));
    }
    let count = u32::from_le_bytes(plain[1..5].try_into().expect("4 bytes")) as usize;
    if count > MAX_ENTRIES || plain.len() != 5 + count * ENTRY_LEN {
        return Err(PackError::Malformed("entry count does not match length"));
    }
    plain[5..]
        .chunks_exact(ENTRY_LEN)
        .map(|c| {
            let ty = BlobType::from_code(c[0]).ok_or(PackError::Malformed("unknown blob type"))?;
            let length = u32::from_le_bytes(c[41..45].try_into().expect("4"));
            if (length as usize) < envelope::OVERHEAD {
                return Err(PackError::Malformed("blob shorter than an envelope"));
            }
            Ok(PackEntry {
                ty,
                id: BlobId::from_bytes(c[1..33].try_into().expect("32")),
                offset: u64::from_le_bytes(c[33..41].try_into().expect("8")),
                length,
                raw_length: u32::from_le_bytes(c[45..49].try_into().expect("4")),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{blob_id, seal_blob};
    use crate::id::RepoId;
    use crate::key::BackupKey;
    use proptest::prelude::*;
    use rand_core::OsRng;

    fn build(keys: &RepoKeys, id: &PackId, blobs: &[Vec<u8>]) -> (Vec<u8>, Vec<PackEntry>) {
        let mut pack = Vec::new();
        let mut entries = Vec::new();
        for b in blobs {
            let bid = blob_id(keys, BlobType::Data, b);
            let sealed = seal_blob(keys, BlobType::Data, &bid, b, &mut OsRng);
            entries.push(PackEntry {
                ty: BlobType::Data,
                id: bid,
                offset: pack.len() as u64,
                length: sealed.len() as u32,
                raw_length: b.len() as u32,
            });
            pack.extend_from_slice(&sealed);
        }
        pack.extend_from_slice(&encode_header(keys, id, &entries, &mut OsRng));
        (pack, entries)
    }

    proptest! {
        #[test]
        fn pack_round_trips_and_rejects_damage(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..6), flip in any::<usize>()) {
            let keys = BackupKey::from_bytes([1; 32]).derive(&RepoId::from_bytes([3; 32]));
            let id = PackId::from_bytes([5; 32]);
            let (pack, entries) = build(&keys, &id, &blobs);
            // The header alone (a ranged read) decodes to the same entries.
            let hlen = header_len_from_tail(&pack[pack.len()-4..]).unwrap();
            let sealed = &pack[pack.len() - 4 - hlen..pack.len() - 4];
            prop_assert_eq!(decode_sealed_header(&keys, &id, pack.len() as u64, sealed).unwrap(), entries.clone());
            prop_assert_eq!(decode_header(&keys, &id, &pack).unwrap(), entries);
            prop_assert!(decode_sealed_header(&keys, &id, pack.len() as u64 + 1, sealed).is_err());
            prop_assert!(decode_sealed_header(&keys, &PackId::from_bytes([6; 32]), pack.len() as u64, sealed).is_err());
            prop_assert!(decode_header(&keys, &PackId::from_bytes([6; 32]), &pack).is_err());
            // Flipping a byte in the header region or truncating is always detected.
            let header_start = pack.len() - 4 - header_len_from_tail(&pack[pack.len()-4..]).unwrap();
            let i = header_start + flip % (pack.len() - header_start);
            let mut bad = pack.clone();
            bad[i] ^= 0x01;
            prop_assert!(decode_header(&keys, &id, &bad).is_err());
            prop_assert!(decode_header(&keys, &id, &pack[..pack.len() - 1]).is_err());
        }
    }
}
