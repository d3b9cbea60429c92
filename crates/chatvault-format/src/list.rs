//! Content lists: how a large file's list of data blob ids is stored (docs/FORMAT.md §10.1).
//!
//! A file node lists its data blob ids inline while there are at most [`INLINE_MAX`] of them.
//! A larger list (a multi-GB database has over a million pages) is cut into *list blobs*, which
//! are themselves listed, level by level, until at most [`INLINE_MAX`] ids remain; the node then
//! names those top-level list blobs. Cuts are content-defined: a list is cut after an id whose
//! first four bytes, read as `u32le`, are `≡ 0 (mod LIST_DIVISOR)` once it holds [`LIST_MIN`]
//! ids, and always at [`LIST_MAX`]. Ids are keyed hashes, so the cuts are unpredictable to the
//! storage provider yet stable: an unchanged region of a file keeps its list blobs, and a
//! backup that changed a few pages stores only the list blobs around them.
//!
//! ```text
//! list plaintext = 0x01 (list version) || level u8 || count u32le || id[32] * count
//! ```
//! Level 0 lists hold data blob ids; a level-k list holds ids of level-(k−1) list blobs.

use crate::blob::{self, BlobType};
use crate::id::BlobId;
use crate::key::RepoKeys;

/// At most this many ids are stored inline in a file node (data ids, or top-level list ids).
pub const INLINE_MAX: usize = 256;
/// A list holds at least this many ids (except the last one of a level).
pub const LIST_MIN: usize = 8;
/// Cut divisor: after [`LIST_MIN`] ids, each id ends a list with probability 1/8.
///
/// Small lists keep a scattered change cheap: a backup stores the changed page's list and the
/// lists above it, about 500 bytes each (a day of 2,000 messages in a 4.5 GB database touches a
/// few hundred places; docs/FORMAT.md §10.1 gives the figures).
pub const LIST_DIVISOR: u32 = 8;
/// A list holds at most this many ids.
pub const LIST_MAX: usize = 1024;
/// The highest list level a reader accepts: levels 0..=5 hold [`MAX_FILE_BLOBS`] even when
/// every list has only [`LIST_MIN`] ids (2^24 / 8^6 = 64 top ids ≤ [`INLINE_MAX`]).
pub const MAX_LEVEL: u8 = 5;
/// The most data blobs one file may have (a reader refuses more: it bounds memory).
pub const MAX_FILE_BLOBS: usize = 1 << 24;

const LIST_VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 1 + 4;

/// Why a list blob's plaintext was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    /// Not a list of this version, a bad length, or a count out of range.
    #[error("malformed content list: {0}")]
    Malformed(&'static str),
    /// The list is not at the level its parent says.
    #[error("content list at level {found}, expected {expected}")]
    WrongLevel {
        /// Level the parent implies.
        expected: u8,
        /// Level found in the list.
        found: u8,
    },
}

/// A decoded list blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListBlob {
    /// 0: the ids are data blobs; k > 0: the ids are level-(k−1) list blobs.
    pub level: u8,
    /// The ids, in file order.
    pub ids: Vec<BlobId>,
}

/// Encodes a list blob's plaintext.
pub fn encode(level: u8, ids: &[BlobId]) -> Vec<u8> {
    debug_assert!(!ids.is_empty() && ids.len() <= LIST_MAX && level <= MAX_LEVEL);
    let mut out = Vec::with_capacity(HEADER_LEN + 32 * ids.len());
    out.push(LIST_VERSION);
    out.push(level);
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        out.extend_from_slice(id.as_bytes());
    }
    out
}

/// Decodes a list blob's plaintext (after it was opened and matched its id).
pub fn decode(plain: &[u8]) -> Result<ListBlob, ListError> {
    let (&[version, level, c0, c1, c2, c3], body) = plain
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(ListError::Malformed("shorter than its header"))?;
    if version != LIST_VERSION {
        return Err(ListError::Malformed("unknown list version"));
    }
    if level > MAX_LEVEL {
        return Err(ListError::Malformed("level too high"));
    }
    let count = u32::from_le_bytes([c0, c1, c2, c3]) as usize;
    if count == 0 || count > LIST_MAX {
        return Err(ListError::Malformed("count out of range"));
    }
    if body.len() != 32 * count {
        return Err(ListError::Malformed("length does not match the count"));
    }
    let ids = body
        .chunks_exact(32)
        .map(|c| BlobId::from_bytes(c.try_into().expect("32-byte chunk")))
        .collect();
    Ok(ListBlob { level, ids })
}

/// Decodes a list blob and checks that it is at `expected` level.
pub fn decode_at(plain: &[u8], expected: u8) -> Result<ListBlob, ListError> {
    let l = decode(plain)?;
    if l.level != expected {
        return Err(ListError::WrongLevel {
            expected,
            found: l.level,
        });
    }
    Ok(l)
}

/// Cuts `ids` into content-defined pieces of [`LIST_MIN`]..=[`LIST_MAX`] ids (the last one may
/// be shorter).
pub fn cut(ids: &[BlobId]) -> Vec<&[BlobId]> {
    let mut out = Vec::with_capacity(ids.len() / 64 + 1);
    let mut start = 0;
    for (i, id) in ids.iter().enumerate() {
        let n = i + 1 - start;
        let b = id.as_bytes();
        let boundary = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) % LIST_DIVISOR == 0;
        if n >= LIST_MAX || (n >= LIST_MIN && boundary) {
            out.push(&ids[start..=i]);
            start = i + 1;
        }
    }
    if start < ids.len() {
        out.push(&ids[start..]);
    }
    out
}

/// How a file node refers to its data blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    /// At most [`INLINE_MAX`] data blob ids, inline.
    Inline(Vec<BlobId>),
    /// Top-level list blob ids (at most [`INLINE_MAX`], all of one level).
    Lists(Vec<BlobId>),
}

/// Builds the content reference of a file with data blobs `ids`. Every list blob made on the way
/// is passed to `emit` with its id and plaintext (the caller stores it unless already stored).
pub fn build(
    keys: &RepoKeys,
    ids: Vec<BlobId>,
    mut emit: impl FnMut(BlobId, Vec<u8>),
) -> FileContent {
    if ids.len() <= INLINE_MAX {
        return FileContent::Inline(ids);
    }
    let mut level = 0u8;
    let mut current = ids;
    loop {
        let next: Vec<BlobId> = cut(&current)
            .into_iter()
            .map(|piece| {
                let plain = encode(level, piece);
                let id = blob::blob_id(keys, BlobType::List, &plain);
                emit(id, plain);
                id
            })
            .collect();
        if next.len() <= INLINE_MAX {
            return FileContent::Lists(next);
        }
        current = next;
        level += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::RepoId;
    use crate::key::BackupKey;
    use std::collections::HashMap;

    fn ids(seed: u8, n: usize) -> Vec<BlobId> {
        (0..n)
            .map(|i| {
                let mut b = blake3::hash(&[seed, (i >> 16) as u8, (i >> 8) as u8, i as u8])
                    .as_bytes()
                    .to_owned();
                b[31] = seed;
                BlobId::from_bytes(b)
            })
            .collect()
    }

    fn expand(store: &HashMap<BlobId, Vec<u8>>, c: &FileContent) -> Vec<BlobId> {
        let FileContent::Lists(top) = c else {
            let FileContent::Inline(v) = c else {
                unreachable!()
            };
            return v.clone();
        };
        let level = decode(&store[&top[0]]).unwrap().level;
        let mut cur = top.clone();
        for l in (0..=level).rev() {
            cur = cur
                .iter()
                .flat_map(|id| decode_at(&store[id], l).unwrap().ids)
                .collect();
        }
        cur
    }

    #[test]
    fn small_files_stay_inline_and_large_ones_round_trip() {
        let keys = BackupKey::from_bytes([5; 32]).derive(&RepoId::from_bytes([5; 32]));
        let few = ids(1, INLINE_MAX);
        assert_eq!(
            build(&keys, few.clone(), |_, _| panic!(
                "no list for a small file"
            )),
            FileContent::Inline(few)
        );
        for n in [INLINE_MAX + 1, 20_000, 1_100_000] {
            let all = ids(2, n);
            let mut store = HashMap::new();
            let c = build(&keys, all.clone(), |id, p| {
                assert!(p.len() <= HEADER_LEN + 32 * LIST_MAX);
                store.insert(id, p);
            });
            let FileContent::Lists(top) = &c else {
                panic!("expected lists for {n} ids")
            };
            assert!(top.len() <= INLINE_MAX);
            assert_eq!(expand(&store, &c), all, "{n} ids");
        }
    }

    #[test]
    fn a_changed_id_changes_few_lists() {
        let keys = BackupKey::from_bytes([5; 32]).derive(&RepoId::from_bytes([5; 32]));
        let mut all = ids(3, 200_000);
        let mut before = HashMap::new();
        build(&keys, all.clone(), |id, p| {
            before.insert(id, p);
        });
        // Change 10 scattered pages and append 100.
        for i in 0..10 {
            all[i * 19_000 + 7] = ids(4, 10)[i];
        }
        all.extend(ids(5, 100));
        let mut new = 0usize;
        let mut total = 0usize;
        build(&keys, all, |id, _| {
            total += 1;
            if !before.contains_key(&id) {
                new += 1;
            }
        });
        // Each change touches its level-0 list and the lists above it (3 levels here), two per
        // level when it moves a cut; the appended ids add their own lists and the last ones
        // above.
        assert!(
            new <= 10 * 2 * 3 + 100 / LIST_MIN + 3,
            "{new} new lists of {total}"
        );
        assert!(total > 1000);
    }

    #[test]
    fn hostile_lists_are_refused() {
        let good = encode(1, &ids(6, 3));
        assert_eq!(decode(&good).unwrap().ids.len(), 3);
        assert!(matches!(
            decode_at(&good, 0),
            Err(ListError::WrongLevel {
                expected: 0,
                found: 1
            })
        ));
        let mut bad = good.clone();
        bad.pop();
        assert!(decode(&bad).is_err());
        let mut bad = good.clone();
        bad[0] = 2;
        assert!(decode(&bad).is_err());
        let mut bad = good.clone();
        bad[1] = MAX_LEVEL + 1;
        assert!(decode(&bad).is_err());
        let mut bad = good.clone();
        bad[2..6].copy_from_slice(&0u32.to_le_bytes());
        assert!(decode(&bad).is_err());
        assert!(decode(&[1, 0, 1]).is_err());
        let mut huge = vec![1, 0];
        huge.extend_from_slice(&((LIST_MAX + 1) as u32).to_le_bytes());
        huge.extend(std::iter::repeat_n(7u8, 32 * (LIST_MAX + 1)));
        assert!(decode(&huge).is_err());
    }

    #[test]
    fn cuts_respect_bounds_even_for_runs_of_one_id() {
        let same = vec![BlobId::from_bytes([0; 32]); 5000]; // u32 0: a boundary everywhere
        let pieces = cut(&same);
        assert!(
            pieces[..pieces.len() - 1]
                .iter()
                .all(|p| p.len() == LIST_MIN)
        );
        let never = vec![BlobId::from_bytes([1; 32]); 5000]; // never a boundary
        let pieces = cut(&never);
        assert!(
            pieces[..pieces.len() - 1]
                .iter()
                .all(|p| p.len() == LIST_MAX)
        );
    }
}
