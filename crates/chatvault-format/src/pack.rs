//! Pack files (docs/FORMAT.md §7): many sealed blobs followed by a sealed header.
//!
//! ```text
//! version 1 (repository version 1):
//!   pack    = blob_1 || … || blob_n || sealed_header || header_len u32le
//!   header  = 0x01 || count u32le || entry*count
//! version 2 (repository version 2: padded, nothing in clear text):
//!   pack    = blob_1 || … || blob_n || padding || sealed_header || sealed_trailer
//!   header  = 0x02 || count u32le || entry*count
//!   trailer = envelope(K_data, "chatvault/v1/pack-trailer", pack_id, header_len u32le)  (44 bytes)
//!   len(pack) = Padmé(blob area + header + trailer); padding = random bytes
//! entry   = type u8 || blob_id[32] || offset u64le || length u32le || raw_length u32le
//! ```
//! The header envelope is bound to the pack id, so packs cannot be renamed or swapped. In a
//! version 2 pack the storage provider sees only the padded total length: the blob count, the
//! header's length and the end of the blob area are all inside envelopes or random padding.

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
    let plain = header_plaintext(HEADER_VERSION, entries);
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

const HEADER_VERSION_2: u8 = 2;
/// Length of a version 2 pack's sealed trailer (24-byte nonce, 4-byte plaintext, 16-byte tag).
pub const TRAILER_LEN: usize = envelope::OVERHEAD + 4;

/// The Padmé padded length of `len` (Nikitin et al., "Reducing Metadata Leakage from Encrypted
/// Files and Communication with PURBs", PETS 2019): the last `E − S` bits are zeroed rounding
/// up, with `E = ⌊log2 len⌋` and `S = ⌊log2 E⌋ + 1`. At most ≈ 12 % overhead (≤ 6 % above
/// 64 KiB, ≤ 3 % above 2^24), and a length class leaks only O(log log len) bits.
pub fn padme(len: u64) -> u64 {
    if len < 2 {
        return len;
    }
    let e = 63 - u64::from(len.leading_zeros());
    let s = 64 - u64::from(e.leading_zeros());
    let low = e - s;
    let mask = (1u64 << low) - 1;
    (len + mask) & !mask
}

fn header_plaintext(version: u8, entries: &[PackEntry]) -> Vec<u8> {
    let mut plain = Vec::with_capacity(5 + entries.len() * ENTRY_LEN);
    plain.push(version);
    plain.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        plain.push(e.ty.code());
        plain.extend_from_slice(e.id.as_bytes());
        plain.extend_from_slice(&e.offset.to_le_bytes());
        plain.extend_from_slice(&e.length.to_le_bytes());
        plain.extend_from_slice(&e.raw_length.to_le_bytes());
    }
    plain
}

/// Encodes the tail of a version 2 pack whose blob area is `blob_area` bytes: random padding,
/// the sealed header, the sealed trailer, so that the whole pack is `padme` long.
pub fn encode_tail_v2<R: RngCore + CryptoRng>(
    keys: &RepoKeys,
    pack_id: &PackId,
    entries: &[PackEntry],
    blob_area: u64,
    rng: &mut R,
) -> Vec<u8> {
    let header = envelope::seal(
        keys,
        ObjectKind::PackHeader,
        pack_id.as_bytes(),
        &header_plaintext(HEADER_VERSION_2, entries),
        rng,
    );
    let trailer = envelope::seal(
        keys,
        ObjectKind::PackTrailer,
        pack_id.as_bytes(),
        &(header.len() as u32).to_le_bytes(),
        rng,
    );
    let unpadded = blob_area + (header.len() + trailer.len()) as u64;
    let pad = (padme(unpadded) - unpadded) as usize;
    let mut out = vec![0u8; pad];
    rng.fill_bytes(&mut out);
    out.extend_from_slice(&header);
    out.extend_from_slice(&trailer);
    out
}

/// Where the sealed header of a version 2 pack lies, from its last [`TRAILER_LEN`] bytes and
/// its total length: `(offset, length)`. `None` when the tail is not a version 2 trailer of
/// this pack (then the pack is a version 1 pack, or damaged).
pub fn header_location_v2(
    keys: &RepoKeys,
    pack_id: &PackId,
    tail: &[u8],
    pack_len: u64,
) -> Option<(u64, usize)> {
    if tail.len() != TRAILER_LEN {
        return None;
    }
    let plain = envelope::open(keys, ObjectKind::PackTrailer, pack_id.as_bytes(), tail).ok()?;
    let hlen = u32::from_le_bytes(plain.as_slice().try_into().ok()?) as u64;
    let start = pack_len
        .checked_sub(TRAILER_LEN as u64)?
        .checked_sub(hlen)?;
    Some((start, hlen as usize))
}

/// The length of the sealed header, read from the last 4 bytes of a pack.
pub fn header_len_from_tail(tail4: &[u8]) -> Result<usize, PackError> {
    let b: [u8; 4] = tail4.try_into().map_err(|_| PackError::Truncated)?;
    Ok(u32::from_le_bytes(b) as usize)
}

/// Parses the header of a complete pack (version 2 if its trailer opens, else version 1) and
/// checks that its entries tile the blob area.
pub fn decode_header(
    keys: &RepoKeys,
    pack_id: &PackId,
    pack: &[u8],
) -> Result<Vec<PackEntry>, PackError> {
    if pack.len() >= TRAILER_LEN
        && let Some((start, hlen)) = header_location_v2(
            keys,
            pack_id,
            &pack[pack.len() - TRAILER_LEN..],
            pack.len() as u64,
        )
    {
        let start = start as usize;
        return decode_header_v2(keys, pack_id, &pack[start..start + hlen], start as u64);
    }
    // Not a format 2 trailer of this pack: a format 1 pack, or a damaged one.
    decode_header_v1(keys, pack_id, pack)
}

fn decode_header_v1(
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
    let entries = parse_header_plaintext(&plain, HEADER_VERSION)?;
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

/// Opens a version 2 sealed header found at `header_start` and checks that its entries tile
/// the start of the pack without reaching into the header.
pub fn decode_header_v2(
    keys: &RepoKeys,
    pack_id: &PackId,
    sealed: &[u8],
    header_start: u64,
) -> Result<Vec<PackEntry>, PackError> {
    let plain = envelope::open(keys, ObjectKind::PackHeader, pack_id.as_bytes(), sealed)?;
    let entries = parse_header_plaintext(&plain, HEADER_VERSION_2)?;
    let end = tiled_end(&entries)?;
    if end > header_start {
        return Err(PackError::Malformed("entries reach into the header"));
    }
    Ok(entries)
}

/// Longest sealed header [`decode_sealed_header`] accepts: a header of
/// [`crate::objects::MAX_INDEX_BLOBS`] entries in its envelope. Bounds what a reader fetches
/// when a pack's trailing `header_len` is damaged.
pub const MAX_SEALED_HEADER_LEN: usize =
    envelope::OVERHEAD + 5 + crate::objects::MAX_INDEX_BLOBS * ENTRY_LEN;

/// Parses a format 1 pack's header from the sealed header alone (fetched with a ranged read:
/// the `header_len` bytes before the last 4 of a pack of `pack_len` bytes), with the same checks
/// as [`decode_header`]: the envelope authenticates against `pack_id`, and the entries tile the
/// blob area `pack_len - 4 - header_len` exactly. Used to rebuild a lost index (FORMAT §12.2).
/// For a format 2 pack use [`header_location_v2`] and [`decode_header_v2`].
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
    let entries = parse_header_plaintext(&plain, HEADER_VERSION)?;
    if tiled_end(&entries)? != blob_area {
        return Err(PackError::Malformed("entries do not cover the pack"));
    }
    Ok(entries)
}

/// Checks that entries tile `[0, end)` in order from 0; returns `end`.
fn tiled_end(entries: &[PackEntry]) -> Result<u64, PackError> {
    let mut expected = 0u64;
    for e in entries {
        if e.offset != expected {
            return Err(PackError::Malformed("entries do not tile the pack"));
        }
        expected += u64::from(e.length);
    }
    Ok(expected)
}

fn parse_header_plaintext(plain: &[u8], version: u8) -> Result<Vec<PackEntry>, PackError> {
    if plain.len() < 5 || plain[0] != version {
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

    #[test]
    fn padme_matches_the_paper() {
        // Values from the definition: E = ⌊log2 L⌋, S = ⌊log2 E⌋ + 1, zero the last E − S bits.
        assert_eq!(padme(0), 0);
        assert_eq!(padme(1), 1);
        assert_eq!(padme(9), 10);
        assert_eq!(padme(500), 512);
        assert_eq!(padme(1000), 1024);
        assert_eq!(padme(16 << 20), 16 << 20);
        assert_eq!(padme((16 << 20) + 1), (16 << 20) + (1 << 19));
        for l in [3u64, 100, 4097, 123_456, 5_000_000, 17_000_000, 1 << 40] {
            let p = padme(l);
            assert!(p >= l && (p - l) as f64 <= 0.12 * l as f64, "{l} → {p}");
            assert_eq!(padme(p), p, "padded lengths are fixed points");
        }
    }

    proptest! {
        #[test]
        fn v2_packs_round_trip_hide_their_layout_and_reject_damage(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..6), flip in any::<usize>()) {
            let keys = BackupKey::from_bytes([1; 32]).derive(&RepoId::from_bytes([3; 32]));
            let id = PackId::from_bytes([5; 32]);
            let (mut pack, entries) = build(&keys, &id, &blobs);
            // Rebuild with a version 2 tail instead of the version 1 one.
            let area: u64 = entries.iter().map(|e| u64::from(e.length)).sum();
            pack.truncate(area as usize);
            pack.extend(encode_tail_v2(&keys, &id, &entries, area, &mut OsRng));
            prop_assert_eq!(pack.len() as u64, padme(pack.len() as u64));
            prop_assert_eq!(decode_header(&keys, &id, &pack).unwrap(), entries);
            prop_assert!(decode_header(&keys, &PackId::from_bytes([6; 32]), &pack).is_err());
            let i = area as usize + flip % (pack.len() - area as usize);
            let mut bad = pack.clone();
            bad[i] ^= 0x01;
            // Damage in the random padding is harmless; anywhere in header or trailer it is not.
            let (start, _) = header_location_v2(&keys, &id, &pack[pack.len() - TRAILER_LEN..], pack.len() as u64).unwrap();
            if i as u64 >= start {
                prop_assert!(decode_header(&keys, &id, &bad).is_err());
            }
            prop_assert!(decode_header(&keys, &id, &pack[..pack.len() - 1]).is_err());
        }

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
