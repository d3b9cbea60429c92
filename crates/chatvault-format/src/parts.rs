//! Trees in parts: how a large folder's listing is stored (docs/FORMAT.md §10.2).
//!
//! A tree whose listing is at most [`PARTS_OVER_BYTES`] is one tree blob. A larger one (a year
//! of photos is 11,000 files and 1.8 MB of listing in one folder) is cut into *parts*, each an
//! ordinary tree blob of a run of its sorted nodes, and the folder's tree blob only lists the
//! parts:
//!
//! ```text
//! {"version":3,"nodes":[],"parts":["<tree blob id>",…]}
//! ```
//!
//! Cuts are content-defined on the names, weighted by size: a node whose JSON encoding is
//! `len` bytes ends a part with probability `len / PART_TARGET_BYTES` (its name's keyed hash,
//! label [`TREE_CUT_LABEL`], read as `u32le`, is `< len` modulo [`PART_TARGET_BYTES`]) once the
//! part holds [`PART_MIN_BYTES`], and a part always ends at [`PART_MAX_BYTES`]. So parts hold
//! about 16 KiB of listing whether the folder holds photos (one chunk each, ~170 bytes a node)
//! or videos (dozens of chunks, kilobytes a node); a day that adds a few files to a large
//! folder stores the parts they fall into and the short list of parts, not the whole listing
//! again (1.2 MB a day after a year of the benchmark preset); and the storage provider cannot
//! predict the cuts.

use serde::Serialize;

use crate::blob::{self, BlobType};
use crate::id::BlobId;
use crate::key::RepoKeys;
use crate::objects::{self, Node, ObjectError, Tree};

/// A tree whose listing (its plaintext as one tree blob) is larger than this is written in
/// parts.
pub const PARTS_OVER_BYTES: usize = 32 << 10;
/// A part holds at least this many bytes of node encodings before a content-defined cut.
pub const PART_MIN_BYTES: usize = 2 << 10;
/// The expected bytes of node encodings between content-defined cuts: the modulus of the cut
/// test.
pub const PART_TARGET_BYTES: u32 = 16 << 10;
/// A part ends once its node encodings reach this many bytes.
pub const PART_MAX_BYTES: usize = 128 << 10;
/// The most parts one tree may list.
pub const MAX_PARTS: usize = 65_536;
/// The most plaintext bytes all the parts of one tree may have together (a reader refuses more
/// before reading them: it bounds memory). Four times what one tree blob may hold.
pub const MAX_PARTS_BYTES: u64 = 256 << 20;
/// Keyed-hash domain of the cut (§4.2's `keyed_id` with this label; never stored).
pub const TREE_CUT_LABEL: &str = crate::labels::TREE_CUT;

/// Whether the node named `name`, whose encoding is `len` bytes, may end a part (once the part
/// holds [`PART_MIN_BYTES`]).
pub fn is_boundary(keys: &RepoKeys, name: &[u8], len: usize) -> bool {
    let h = keys.keyed_id(TREE_CUT_LABEL, name);
    let v = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) % PART_TARGET_BYTES;
    (v as usize) < len
}

/// The cut of nodes whose encodings are `lens` bytes long: the number of nodes in each part,
/// in order. `boundary(i)` says whether node `i` may end a part ([`is_boundary`]).
pub fn cut_lengths(lens: &[usize], mut boundary: impl FnMut(usize) -> bool) -> Vec<usize> {
    let mut out = Vec::with_capacity(lens.len() / 64 + 1);
    let (mut nodes, mut bytes) = (0usize, 0usize);
    for (i, &len) in lens.iter().enumerate() {
        nodes += 1;
        bytes += len;
        if bytes >= PART_MAX_BYTES || (bytes >= PART_MIN_BYTES && boundary(i)) {
            out.push(nodes);
            (nodes, bytes) = (0, 0);
        }
    }
    if nodes > 0 {
        out.push(nodes);
    }
    out
}

/// Cuts `nodes` (sorted by name) into parts (FORMAT §10.2): the number of nodes in each.
pub fn cut(keys: &RepoKeys, nodes: &[Node]) -> Vec<usize> {
    let encoded: Vec<Vec<u8>> = nodes.iter().map(encode_node).collect();
    cut_encoded(keys, nodes, &encoded)
}

fn cut_encoded(keys: &RepoKeys, nodes: &[Node], encoded: &[Vec<u8>]) -> Vec<usize> {
    let lens: Vec<usize> = encoded.iter().map(Vec::len).collect();
    cut_lengths(&lens, |i| is_boundary(keys, &nodes[i].name.0, lens[i]))
}

/// A tree encoded for storage: its tree blob and, for a tree in parts, the parts' blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedTree {
    /// The tree blob's id (what a parent node's `subtree` or a snapshot's `tree` names).
    pub id: BlobId,
    /// The tree blob's plaintext: the listing, or the list of parts.
    pub plain: Vec<u8>,
    /// The parts (id and plaintext), in order; empty for a tree stored whole.
    pub parts: Vec<(BlobId, Vec<u8>)>,
}

/// The list of parts. `nodes` is always empty: it makes the object a tree that readers before
/// version 3 parse and then refuse as "unsupported object version 3", not as malformed.
#[derive(Serialize)]
struct PartList<'a> {
    version: u32,
    nodes: &'a [Node],
    parts: &'a [BlobId],
}

fn encode_node(n: &Node) -> Vec<u8> {
    serde_json::to_vec(n).expect("node serializes")
}

/// The length of [`listing`]'s result for nodes encoded as `encoded`:
/// `{"version":V,"nodes":[` (22 bytes, V being one digit), the encodings and the commas between
/// them, `]}`.
fn listing_len(encoded: &[Vec<u8>]) -> usize {
    24 + encoded.iter().map(Vec::len).sum::<usize>() + encoded.len().saturating_sub(1)
}

/// The plaintext of a listing of `nodes` (a whole tree or a part), from their encodings: the
/// bytes `serde_json` writes for a [`Tree`] of them (`{"version":V,"nodes":[n1,n2,…]}`), with
/// the version the nodes need (§10, §10.1).
fn listing(nodes: &[Node], encoded: &[Vec<u8>]) -> Result<Vec<u8>, ObjectError> {
    let version = objects::tree_version(nodes);
    let body: usize = encoded.iter().map(|e| e.len() + 1).sum();
    let mut json = Vec::with_capacity(body + 32);
    json.extend_from_slice(format!("{{\"version\":{version},\"nodes\":[").as_bytes());
    for (i, e) in encoded.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.extend_from_slice(e);
    }
    json.extend_from_slice(b"]}");
    objects::check_len("tree blob", json.len())?;
    Ok(json)
}

/// Encodes the tree of `nodes` (sorted by name): whole when its listing is at most
/// [`PARTS_OVER_BYTES`], else in parts. Fails, writing nothing, when a reader would refuse the
/// result (a part over [`objects::MAX_OBJECT_LEN`], more than [`MAX_PARTS`] parts or
/// [`MAX_PARTS_BYTES`] bytes of parts).
pub fn encode_tree(keys: &RepoKeys, nodes: &[Node]) -> Result<EncodedTree, ObjectError> {
    let id_of = |plain: &[u8]| blob::blob_id(keys, BlobType::Tree, plain);
    let encoded: Vec<Vec<u8>> = nodes.iter().map(encode_node).collect();
    if listing_len(&encoded) <= PARTS_OVER_BYTES {
        let plain = listing(nodes, &encoded)?;
        return Ok(EncodedTree {
            id: id_of(&plain),
            plain,
            parts: Vec::new(),
        });
    }
    let lengths = cut_encoded(keys, nodes, &encoded);
    if lengths.len() > MAX_PARTS {
        return Err(ObjectError::TooLarge {
            kind: "tree (parts)",
            len: lengths.len(),
            max: MAX_PARTS,
        });
    }
    let mut parts = Vec::with_capacity(lengths.len());
    let (mut at, mut bytes) = (0usize, 0usize);
    for n in lengths {
        let plain = listing(&nodes[at..at + n], &encoded[at..at + n])?;
        at += n;
        bytes += plain.len();
        if bytes as u64 > MAX_PARTS_BYTES {
            return Err(ObjectError::TooLarge {
                kind: "tree (all parts)",
                len: bytes,
                max: MAX_PARTS_BYTES as usize,
            });
        }
        parts.push((id_of(&plain), plain));
    }
    let ids: Vec<BlobId> = parts.iter().map(|(id, _)| *id).collect();
    let plain = part_list_plaintext(&ids)?;
    Ok(EncodedTree {
        id: id_of(&plain),
        plain,
        parts,
    })
}

/// The plaintext of a tree blob listing the parts `ids` (version 3).
pub fn part_list_plaintext(ids: &[BlobId]) -> Result<Vec<u8>, ObjectError> {
    let plain = serde_json::to_vec(&PartList {
        version: objects::TREE_VERSION_PARTS,
        nodes: &[],
        parts: ids,
    })
    .expect("part list serializes");
    objects::check_len("tree blob", plain.len())?;
    Ok(plain)
}

/// Joins the parts of a tree (each parsed with [`objects::parse_tree`], in order) into the
/// whole tree. Refuses an empty part.
pub fn join(parts: impl IntoIterator<Item = Tree>) -> Result<Tree, ObjectError> {
    let mut nodes = Vec::new();
    for part in parts {
        if part.nodes.is_empty() {
            return Err(ObjectError::Invalid("a tree part is empty"));
        }
        nodes.extend(part.nodes);
    }
    Ok(Tree {
        version: objects::TREE_VERSION_PARTS,
        nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::RepoId;
    use crate::key::BackupKey;
    use crate::objects::{Bytes, NodeKind, TreeBlob, parse_tree, parse_tree_blob};

    fn keys() -> RepoKeys {
        BackupKey::from_bytes([7; 32]).derive(&RepoId::from_bytes([1; 32]))
    }

    /// A photo (one chunk) or, with `chunks` > 1, a video.
    fn node(i: usize, chunks: usize) -> Node {
        Node {
            name: Bytes(format!("IMG-{i:06}.jpg").into_bytes()),
            kind: NodeKind::File {
                size: 3,
                content: (0..chunks)
                    .map(|c| BlobId::from_bytes([(i + c) as u8; 32]))
                    .collect(),
                lists: Vec::new(),
                changed_while_reading: false,
                sqlite_snapshot: false,
                sqlite_source: None,
            },
            mode: 0o644,
            mtime_s: 1,
            mtime_ns: 0,
            ctime_s: 0,
            ctime_ns: 0,
            inode: 0,
        }
    }

    fn photos(range: std::ops::Range<usize>) -> Vec<Node> {
        range.map(|i| node(i, 1)).collect()
    }

    /// Decodes an encoded tree back, as a reader would: the top blob, then each part.
    fn decode(e: &EncodedTree) -> Tree {
        match parse_tree_blob(&e.plain).unwrap() {
            TreeBlob::Listing(t) => {
                assert!(e.parts.is_empty());
                t
            }
            TreeBlob::Parts(ids) => {
                let want: Vec<BlobId> = e.parts.iter().map(|(id, _)| *id).collect();
                assert_eq!(ids, want);
                join(e.parts.iter().map(|(_, p)| parse_tree(p).unwrap())).unwrap()
            }
        }
    }

    #[test]
    fn small_trees_are_whole_with_the_usual_bytes_and_large_ones_in_bounded_parts() {
        let k = keys();
        let small = photos(0..100);
        let e = encode_tree(&k, &small).unwrap();
        assert!(e.parts.is_empty());
        // The listing assembled from the nodes' encodings is serde's encoding of the tree.
        let tree = Tree {
            version: objects::tree_version(&small),
            nodes: small.clone(),
        };
        assert_eq!(e.plain, objects::tree_plaintext(&tree).unwrap());
        assert_eq!(decode(&e).nodes, small);
        for n in [0, 1, 2, 100] {
            let enc: Vec<Vec<u8>> = small[..n].iter().map(encode_node).collect();
            assert_eq!(listing(&small[..n], &enc).unwrap().len(), listing_len(&enc));
        }
        // The threshold is the listing's exact length.
        let mut n = 0;
        let at = |n: usize| listing_len(&photos(0..n).iter().map(encode_node).collect::<Vec<_>>());
        while at(n + 1) <= PARTS_OVER_BYTES {
            n += 1;
        }
        assert!(encode_tree(&k, &photos(0..n)).unwrap().parts.is_empty());
        assert!(!encode_tree(&k, &photos(0..n + 1)).unwrap().parts.is_empty());

        for large in [photos(0..20_000), (0..3_000).map(|i| node(i, 40)).collect()] {
            let e = encode_tree(&k, &large).unwrap();
            assert!(e.parts.len() > 20, "{} parts", e.parts.len());
            for (n, (_, plain)) in e.parts.iter().enumerate() {
                let part = parse_tree(plain).unwrap();
                let nodes = part.nodes.len();
                let one = encode_node(&part.nodes[0]).len();
                assert!(plain.len() < PART_MAX_BYTES + nodes + one + 32);
                if n + 1 < e.parts.len() {
                    assert!(plain.len() >= PART_MIN_BYTES, "part {n}: {} B", plain.len());
                }
                assert_eq!(part.version, objects::tree_version(&part.nodes));
            }
            let mean = e.parts.iter().map(|(_, p)| p.len()).sum::<usize>() / e.parts.len();
            assert!((8 << 10..32 << 10).contains(&mean), "mean part {mean} B");
            assert_eq!(decode(&e).nodes, large);
            assert_eq!(encode_tree(&k, &large).unwrap(), e, "deterministic");
        }
    }

    #[test]
    fn cuts_respect_the_minimum_and_the_maximum() {
        // No content-defined boundary: parts end at PART_MAX_BYTES (131 × 1000 < 128 KiB).
        let lens = vec![1000; 1000];
        let got = cut_lengths(&lens, |_| false);
        assert_eq!(got[..7], [132; 7]);
        assert_eq!(got.iter().sum::<usize>(), 1000);
        // Every node a boundary: parts end as soon as they hold PART_MIN_BYTES.
        assert_eq!(cut_lengths(&[100; 42], |_| true), [21, 21]);
        // A node larger than the minimum ends its part on its own.
        assert_eq!(cut_lengths(&[20_000, 20_000, 5], |_| true), [1, 1, 1]);
        assert_eq!(cut_lengths(&[], |_| true), Vec::<usize>::new());
    }

    /// Adding files at the end of a large folder (tomorrow's photos) changes only the last
    /// part; adding one in the middle changes only the part it falls in (or splits it in two).
    #[test]
    fn an_added_file_changes_only_its_part() {
        let k = keys();
        let before: Vec<Node> = (0..10_000).map(|i| node(i * 2, 1)).collect();
        let old = encode_tree(&k, &before).unwrap();
        let old_ids: std::collections::HashSet<BlobId> =
            old.parts.iter().map(|(id, _)| *id).collect();

        let mut appended = before.clone();
        appended.extend((0..30).map(|i| node(20_000 + i, 1)));
        let new = encode_tree(&k, &appended).unwrap();
        let fresh = new
            .parts
            .iter()
            .filter(|(id, _)| !old_ids.contains(id))
            .count();
        assert!(fresh <= 2, "{fresh} new parts for 30 appended files");

        let mut inserted = before.clone();
        inserted.insert(5_000, node(10_001, 1));
        let new = encode_tree(&k, &inserted).unwrap();
        let fresh = new
            .parts
            .iter()
            .filter(|(id, _)| !old_ids.contains(id))
            .count();
        assert!((1..=2).contains(&fresh), "{fresh} new parts for one file");
        assert_ne!(new.id, old.id);
    }

    /// The cut depends on the key: another repository cuts the same folder elsewhere.
    #[test]
    fn cuts_depend_on_the_key() {
        let nodes = photos(0..5_000);
        let other = BackupKey::from_bytes([8; 32]).derive(&RepoId::from_bytes([1; 32]));
        assert_ne!(cut(&keys(), &nodes), cut(&other, &nodes));
    }

    #[test]
    fn an_empty_part_is_refused() {
        let t = Tree {
            version: 1,
            nodes: Vec::new(),
        };
        assert!(matches!(join([t]), Err(ObjectError::Invalid(_))));
    }
}
