//! Metadata objects: index, snapshot, tree and lock (docs/FORMAT.md §8–§11).
//!
//! Index and snapshot objects are content-addressed: `id = BLAKE3-keyed(K_id, label || 0x00 ||
//! json)`, and the stored object is `seal(K_meta, kind, id, compress(json))`. Tree blobs use the
//! blob path (§5). Locks have random ids.

use base64::engine::general_purpose::STANDARD as B64;
use rand_core::{CryptoRng, RngCore};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::blob::{self, BlobType};
use crate::envelope::{self, EnvelopeError, ObjectKind};
use crate::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::key::RepoKeys;

mod node_serde;

/// Version number carried inside every JSON object of format version 1.
pub const OBJECT_VERSION: u32 = 1;

/// Why a metadata object could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// The envelope did not open (altered, truncated, swapped with another object).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Decompression failed.
    #[error(transparent)]
    Payload(#[from] blob::BlobError),
    /// The plaintext does not hash to the object's name.
    #[error("content does not match its id")]
    IdMismatch,
    /// Authenticated but not valid JSON for this kind (a writer bug or an unknown format).
    #[error("malformed content: {0}")]
    Malformed(#[source] serde_json::Error),
    /// An object version this program does not understand.
    #[error("unsupported object version {0}")]
    UnsupportedVersion(u32),
    /// Valid JSON that breaks a rule of the format.
    #[error("invalid content: {0}")]
    Invalid(&'static str),
    /// A writer refused to produce an object larger than readers accept.
    #[error("{kind} would be {len} bytes, over the {max}-byte limit readers accept")]
    TooLarge {
        /// What was being written.
        kind: &'static str,
        /// Its plaintext length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// The largest plaintext (JSON, before compression) of a metadata object or tree: what readers
/// accept after decompression ([`blob::MAX_BLOB_LEN`]). Writers refuse to go over it, so no
/// object is ever stored that a reader would refuse (FORMAT §4.3).
pub const MAX_OBJECT_LEN: usize = blob::MAX_BLOB_LEN;

/// At most this many blobs are listed by one index object (FORMAT §8): about 10 MiB of JSON,
/// far below [`MAX_OBJECT_LEN`] whatever the field values.
pub const MAX_INDEX_BLOBS: usize = 65_536;

/// Seals a content-addressed metadata object; returns its id and the bytes to store. Fails
/// (writes nothing) if its JSON would exceed [`MAX_OBJECT_LEN`].
pub fn seal_object<T: Serialize, R: RngCore + CryptoRng>(
    keys: &RepoKeys,
    kind: ObjectKind,
    value: &T,
    rng: &mut R,
) -> Result<([u8; 32], Vec<u8>), ObjectError> {
    let json = serde_json::to_vec(value).expect("metadata serializes");
    check_len(kind.name(), json.len())?;
    let id = keys.keyed_id(kind.label(), &json);
    let sealed = envelope::seal(keys, kind, &id, &blob::compress(&json), rng);
    Ok((id, sealed))
}

pub(crate) fn check_len(kind: &'static str, len: usize) -> Result<(), ObjectError> {
    if len > MAX_OBJECT_LEN {
        return Err(ObjectError::TooLarge {
            kind,
            len,
            max: MAX_OBJECT_LEN,
        });
    }
    Ok(())
}

/// Splits the packs to index into index objects of at most [`MAX_INDEX_BLOBS`] blobs each (a
/// pack is never split; writers keep packs below [`crate::pack::MAX_PACK_BLOBS`]).
pub fn split_index(packs: Vec<IndexPack>) -> Vec<IndexFile> {
    let mut out: Vec<IndexFile> = Vec::new();
    let mut blobs = 0usize;
    for p in packs {
        let n = p.blobs.len();
        match out.last_mut() {
            Some(f) if blobs + n <= MAX_INDEX_BLOBS => {
                f.packs.push(p);
                blobs += n;
            }
            _ => {
                out.push(IndexFile {
                    version: OBJECT_VERSION,
                    packs: vec![p],
                });
                blobs = n;
            }
        }
    }
    out
}

/// Opens a content-addressed metadata object and checks it against its id.
pub fn open_object<T: DeserializeOwned + Versioned>(
    keys: &RepoKeys,
    kind: ObjectKind,
    id: &[u8; 32],
    bytes: &[u8],
) -> Result<T, ObjectError> {
    let payload = envelope::open(keys, kind, id, bytes)?;
    let json = blob::decompress(&payload)?;
    let actual = keys.keyed_id(kind.label(), &json);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        actual.as_slice(),
        id.as_slice(),
    )) {
        return Err(ObjectError::IdMismatch);
    }
    parse_versioned(&json)
}

/// Seals a lock (random id, not content-addressed).
pub fn seal_lock<R: RngCore + CryptoRng>(
    keys: &RepoKeys,
    id: &[u8; 32],
    lock: &Lock,
    rng: &mut R,
) -> Vec<u8> {
    let json = serde_json::to_vec(lock).expect("lock serializes");
    envelope::seal(keys, ObjectKind::Lock, id, &json, rng)
}

/// Opens a lock.
pub fn open_lock(keys: &RepoKeys, id: &[u8; 32], bytes: &[u8]) -> Result<Lock, ObjectError> {
    let json = envelope::open(keys, ObjectKind::Lock, id, bytes)?;
    parse_versioned(&json)
}

/// Tree version written when a tree has a node with content lists (FORMAT §10.1); trees
/// without them are still written as version 1, which chatvault 0.1 reads.
pub const TREE_VERSION_LISTS: u32 = 2;

/// Tree version of a tree stored in parts (FORMAT §10.2, [`crate::parts`]).
pub const TREE_VERSION_PARTS: u32 = 3;

/// A tree blob's plaintext, decoded: a listing of nodes (versions 1 and 2), or the list of the
/// parts a large tree is stored in (version 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeBlob {
    /// The nodes themselves.
    Listing(Tree),
    /// The ids of the parts (tree blobs holding listings), in order; distinct, 1 to
    /// [`crate::parts::MAX_PARTS`].
    Parts(Vec<BlobId>),
}

/// Any tree blob, as stored: a listing has `nodes`; a list of parts has `parts` and no nodes
/// (its writer emits `"nodes":[]`, so that older readers refuse it by its version).
#[derive(Deserialize)]
struct AnyTree {
    version: u32,
    #[serde(default)]
    nodes: Option<Vec<Node>>,
    #[serde(default)]
    parts: Option<Vec<BlobId>>,
}

/// Decodes a tree blob's plaintext: a listing or a list of parts (§10, §10.2).
pub fn parse_tree_blob(json: &[u8]) -> Result<TreeBlob, ObjectError> {
    let t: AnyTree = serde_json::from_slice(json).map_err(ObjectError::Malformed)?;
    match (t.version, t.nodes, t.parts) {
        (OBJECT_VERSION | TREE_VERSION_LISTS, Some(nodes), None) => {
            let tree = Tree {
                version: t.version,
                nodes,
            };
            check_listing(&tree)?;
            Ok(TreeBlob::Listing(tree))
        }
        (TREE_VERSION_PARTS, nodes, Some(parts)) if nodes.as_ref().is_none_or(Vec::is_empty) => {
            if parts.is_empty() || parts.len() > crate::parts::MAX_PARTS {
                return Err(ObjectError::Invalid(
                    "a tree lists no parts or more than a reader accepts",
                ));
            }
            let mut seen = std::collections::HashSet::with_capacity(parts.len());
            if !parts.iter().all(|p| seen.insert(*p)) {
                return Err(ObjectError::Invalid("a tree lists a part twice"));
            }
            Ok(TreeBlob::Parts(parts))
        }
        (OBJECT_VERSION | TREE_VERSION_LISTS | TREE_VERSION_PARTS, _, _) => {
            Err(ObjectError::Invalid(
                "a tree needs `nodes` (versions 1, 2) or `parts` and no nodes (version 3)",
            ))
        }
        (v, _, _) => Err(ObjectError::UnsupportedVersion(v)),
    }
}

/// Decodes the plaintext of a tree blob that must be a listing: a tree stored whole, or a
/// part of one (parts do not nest).
pub fn parse_tree(json: &[u8]) -> Result<Tree, ObjectError> {
    match parse_tree_blob(json)? {
        TreeBlob::Listing(t) => Ok(t),
        TreeBlob::Parts(_) => Err(ObjectError::Invalid(
            "a list of tree parts where a listing was expected",
        )),
    }
}

/// The rules of a listing beyond its JSON shape (§10.1).
fn check_listing(t: &Tree) -> Result<(), ObjectError> {
    for n in &t.nodes {
        if let NodeKind::File { content, lists, .. } = &n.kind
            && !lists.is_empty()
            && (t.version == OBJECT_VERSION || !content.is_empty())
        {
            return Err(ObjectError::Invalid(
                "a file node has content lists in a version 1 tree or besides inline content",
            ));
        }
    }
    Ok(())
}

/// The version a tree with `nodes` is written with: 2 if any file uses content lists, else 1.
pub fn tree_version(nodes: &[Node]) -> u32 {
    let lists = nodes
        .iter()
        .any(|n| matches!(&n.kind, NodeKind::File { lists, .. } if !lists.is_empty()));
    if lists {
        TREE_VERSION_LISTS
    } else {
        OBJECT_VERSION
    }
}

fn parse_versioned<T: DeserializeOwned + Versioned>(json: &[u8]) -> Result<T, ObjectError> {
    let v: T = serde_json::from_slice(json).map_err(ObjectError::Malformed)?;
    if v.version() != OBJECT_VERSION {
        return Err(ObjectError::UnsupportedVersion(v.version()));
    }
    Ok(v)
}

/// Objects that carry a `version` field.
pub trait Versioned {
    /// The object's version.
    fn version(&self) -> u32;
}

macro_rules! versioned {
    ($($t:ty),*) => { $(impl Versioned for $t { fn version(&self) -> u32 { self.version } })* };
}
versioned!(IndexFile, Snapshot, Tree, Lock, PrunePlan);

/// An index object: where blobs live (§8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    /// Always [`OBJECT_VERSION`].
    pub version: u32,
    /// Packs described by this index.
    pub packs: Vec<IndexPack>,
}

/// One pack in an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPack {
    /// The pack id.
    pub id: PackId,
    /// Total size of the pack file in bytes.
    pub size: u64,
    /// The blobs in the pack, in pack order.
    pub blobs: Vec<IndexBlob>,
}

/// One blob of a pack in an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexBlob {
    /// Blob id.
    pub id: BlobId,
    /// Blob type.
    #[serde(rename = "type")]
    pub ty: BlobType,
    /// Offset of the sealed blob in the pack.
    pub offset: u64,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the plaintext.
    pub raw_length: u32,
}

impl From<&crate::pack::PackEntry> for IndexBlob {
    /// The index entry of a pack header entry (the same fields, §7 and §8).
    fn from(e: &crate::pack::PackEntry) -> Self {
        IndexBlob {
            id: e.id,
            ty: e.ty,
            offset: e.offset,
            length: e.length,
            raw_length: e.raw_length,
        }
    }
}

/// A snapshot: one backup run (§9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Always [`OBJECT_VERSION`].
    pub version: u32,
    /// When the backup started (RFC 3339, UTC).
    pub time: String,
    /// Host name of the device.
    pub hostname: String,
    /// The paths given to `backup`, as the user typed them resolved to absolute paths (lossy
    /// UTF-8, for display; the tree holds exact names).
    pub paths: Vec<String>,
    /// Root tree blob: one node per backed-up path.
    pub tree: BlobId,
    /// The snapshot this one was compared with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SnapshotId>,
    /// Program that wrote the snapshot.
    pub program: String,
    /// Statistics and problems of the run.
    pub summary: Summary,
    /// Sequence number: one more than the highest `seq` the writer knew of (in the repository
    /// and remembered by the device), so that a rolled-back repository is detectable (§9.1).
    /// 0 in snapshots written before sequence numbers existed.
    #[serde(default)]
    pub seq: u64,
    /// The writing device's stable id (32 lowercase hex digits, random per device home), if the
    /// writer knows one (FORMAT §9). Parent selection and retention groups use it; `hostname`
    /// is only a label (every Android phone calls itself `localhost`). Absent in snapshots
    /// written before device ids existed; older readers ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// Statistics of a backup run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Regular files in the snapshot.
    pub files: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Total bytes of file content in the snapshot.
    pub bytes: u64,
    /// Files whose content was read (not reused from the parent snapshot).
    pub files_read: u64,
    /// Blobs newly stored by this run.
    pub new_blobs: u64,
    /// Bytes of plaintext newly stored by this run.
    pub new_bytes: u64,
    /// Bytes uploaded (sealed, compressed, including pack headers and index objects).
    pub uploaded_bytes: u64,
    /// Items that could not be read and are missing from the snapshot.
    #[serde(default)]
    pub unreadable: Vec<Problem>,
    /// Files that changed while they were being read (their content may be inconsistent).
    #[serde(default)]
    pub changed_while_reading: Vec<String>,
    /// Problems beyond the first [`MAX_PROBLEMS`] of each list, counted but not listed (so the
    /// snapshot stays far below [`MAX_OBJECT_LEN`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_problems: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// At most this many entries are kept in each problem list of a snapshot summary; paths in
/// them are cut to [`MAX_PROBLEM_PATH`] bytes.
pub const MAX_PROBLEMS: usize = 1000;
/// Longest path or message kept in a snapshot's problem lists (bytes of UTF-8).
pub const MAX_PROBLEM_PATH: usize = 1024;

impl Summary {
    /// Records an unreadable item, within the limits.
    pub fn add_unreadable(&mut self, path: &str, error: &str) {
        if self.unreadable.len() >= MAX_PROBLEMS {
            self.omitted_problems += 1;
            return;
        }
        self.unreadable.push(Problem {
            path: cut_str(path),
            error: cut_str(error),
        });
    }

    /// Records a file that changed while it was read, within the limits.
    pub fn add_changed(&mut self, path: &str) {
        if self.changed_while_reading.len() >= MAX_PROBLEMS {
            self.omitted_problems += 1;
            return;
        }
        self.changed_while_reading.push(cut_str(path));
    }
}

fn cut_str(s: &str) -> String {
    if s.len() <= MAX_PROBLEM_PATH {
        return s.to_string();
    }
    let mut end = MAX_PROBLEM_PATH;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl Summary {
    /// True when the snapshot is complete and consistent.
    pub fn is_complete(&self) -> bool {
        self.unreadable.is_empty()
            && self.changed_while_reading.is_empty()
            && self.omitted_problems == 0
    }
}

/// An item that could not be backed up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Path (lossy UTF-8).
    pub path: String,
    /// What went wrong.
    pub error: String,
}

/// A directory listing (§10), stored as a tree blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Always [`OBJECT_VERSION`].
    pub version: u32,
    /// Entries sorted by name bytes.
    pub nodes: Vec<Node>,
}

/// One entry of a tree. Its JSON encoding is written by hand (see `node_serde`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Exact file name bytes.
    pub name: Bytes,
    /// What the entry is (its fields are the node's, after `type`).
    pub kind: NodeKind,
    /// Unix permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime_s: i64,
    /// Modification time, nanoseconds part.
    pub mtime_ns: u32,
    /// Change time (seconds), used to detect changes against the parent snapshot (0 when absent).
    pub ctime_s: i64,
    /// Change time, nanoseconds part.
    pub ctime_ns: u32,
    /// Inode number, used to detect changes against the parent snapshot.
    pub inode: u64,
}

/// The type-specific part of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum NodeKind {
    /// A regular file: its size and content blobs in order.
    File {
        /// Size in bytes.
        size: u64,
        /// Data blob ids, in order (at most [`crate::list::INLINE_MAX`] when written by this
        /// version; empty when `lists` is used).
        #[serde(default)]
        content: Vec<BlobId>,
        /// Top-level content-list blob ids, for a file with more than
        /// [`crate::list::INLINE_MAX`] data blobs (FORMAT §10.1; tree version 2).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        lists: Vec<BlobId>,
        /// The file changed while it was read; its content may be inconsistent.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        changed_while_reading: bool,
        /// The file is a consistent SQLite copy taken with the online backup API.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        sqlite_snapshot: bool,
        /// For a SQLite copy: the live database and its WAL as they were just before the copy,
        /// so that the next backup can skip an unchanged database (FORMAT §5.1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sqlite_source: Option<SqliteSource>,
    },
    /// A directory and its listing.
    Dir {
        /// Tree blob id.
        subtree: BlobId,
    },
    /// A symbolic link.
    Symlink {
        /// Exact target bytes.
        target: Bytes,
    },
}

/// What a live SQLite database and its write-ahead log looked like before a consistent copy
/// (FORMAT §5.1). Equal stamps mean nothing was written since (every write changes the
/// modification and change times, with nanosecond resolution on the filesystems phones use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqliteSource {
    /// The database file.
    pub db: FileStamp,
    /// Its `-wal` file, if one existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<FileStamp>,
}

/// Size, times and inode of a file, for change detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds.
    pub mtime_s: i64,
    /// Modification time, nanoseconds part.
    pub mtime_ns: u32,
    /// Change time, seconds.
    pub ctime_s: i64,
    /// Change time, nanoseconds part.
    pub ctime_ns: u32,
    /// Inode number.
    pub inode: u64,
}

/// A byte string that serializes as a JSON string when it is UTF-8 and as `{"b64": "…"}` otherwise,
/// so non-UTF-8 file names survive exactly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub Vec<u8>);

/// A lock object (§11): announces a running operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Always [`OBJECT_VERSION`].
    pub version: u32,
    /// Host name of the locking device.
    pub hostname: String,
    /// Process id on that host.
    pub pid: u32,
    /// What runs: "backup", "check", "prune", …
    pub operation: String,
    /// True for an exclusive lock (prune); false for a shared one.
    pub exclusive: bool,
    /// When the lock was created or last refreshed (RFC 3339).
    pub time: String,
    /// After this time the lock is stale and ignored (RFC 3339).
    pub expires: String,
}

/// A prune plan (§15): what one `prune` run condemned. The packs and index objects it lists are
/// deleted by a later sweep once no backup that could still need them is running; until then
/// backups do not deduplicate against the condemned packs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunePlan {
    /// Always [`OBJECT_VERSION`].
    pub version: u32,
    /// When the plan was made (RFC 3339, UTC).
    pub time: String,
    /// Host name of the device that made it.
    pub hostname: String,
    /// Packs to delete.
    pub packs: Vec<PackId>,
    /// Index objects to delete (superseded by the index objects the prune wrote).
    pub index: Vec<IndexId>,
}

/// Convenience: ids of content-addressed objects.
pub fn index_id(id: [u8; 32]) -> IndexId {
    IndexId::from_bytes(id)
}

/// Convenience: snapshot id from raw bytes.
pub fn snapshot_id(id: [u8; 32]) -> SnapshotId {
    SnapshotId::from_bytes(id)
}

/// Serializes a tree for storage as a tree blob. Fails if it would exceed [`MAX_OBJECT_LEN`]
/// (a directory with hundreds of thousands of entries).
pub fn tree_plaintext(tree: &Tree) -> Result<Vec<u8>, ObjectError> {
    let json = serde_json::to_vec(tree).expect("tree serializes");
    check_len("tree blob", json.len())?;
    Ok(json)
}

/// The blob type of trees (re-exported for callers that only see objects).
pub const TREE: BlobType = BlobType::Tree;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::RepoId;
    use crate::key::BackupKey;
    use rand_core::OsRng;

    #[test]
    fn non_utf8_names_round_trip() {
        let t = Tree {
            version: 1,
            nodes: vec![
                Node {
                    name: Bytes(vec![0x66, 0xff, 0x00, 0x80]),
                    kind: NodeKind::Symlink {
                        target: Bytes(b"../x".to_vec()),
                    },
                    mode: 0o777,
                    mtime_s: -5,
                    mtime_ns: 7,
                    ctime_s: 0,
                    ctime_ns: 0,
                    inode: 0,
                },
                Node {
                    name: Bytes("caf\u{e9} \u{1f600}".into()),
                    kind: NodeKind::File {
                        size: 3,
                        content: vec![BlobId::from_bytes([1; 32])],
                        changed_while_reading: true,
                        sqlite_snapshot: false,
                        lists: vec![],
                        sqlite_source: None,
                    },
                    mode: 0o644,
                    mtime_s: 1,
                    mtime_ns: 2,
                    ctime_s: 3,
                    ctime_ns: 4,
                    inode: 5,
                },
            ],
        };
        let json = tree_plaintext(&t).unwrap();
        assert_eq!(parse_tree(&json).unwrap(), t);
    }

    #[test]
    fn snapshot_object_round_trips_and_binds_id() {
        let keys = BackupKey::from_bytes([2; 32]).derive(&RepoId::from_bytes([2; 32]));
        let s = Snapshot {
            version: 1,
            time: "2026-01-01T00:00:00Z".into(),
            hostname: "phone".into(),
            paths: vec!["/chats".into()],
            tree: BlobId::from_bytes([9; 32]),
            parent: None,
            program: "test".into(),
            summary: Summary::default(),
            seq: 7,
            device: Some("0123456789abcdef0123456789abcdef".into()),
        };
        let (id, bytes) = seal_object(&keys, ObjectKind::Snapshot, &s, &mut OsRng).unwrap();
        let back: Snapshot = open_object(&keys, ObjectKind::Snapshot, &id, &bytes).unwrap();
        assert_eq!(back, s);
        let mut other = id;
        other[0] ^= 1;
        assert!(open_object::<Snapshot>(&keys, ObjectKind::Snapshot, &other, &bytes).is_err());
        assert!(open_object::<IndexFile>(&keys, ObjectKind::Index, &id, &bytes).is_err());
    }

    #[test]
    fn snapshot_without_device_parses_and_none_is_not_written() {
        let old = br#"{"version":1,"time":"2026-01-01T00:00:00Z","hostname":"localhost",
            "paths":["/chats"],"tree":"0909090909090909090909090909090909090909090909090909090909090909",
            "program":"chatvault 0.2.0","summary":{"files":0,"dirs":0,"bytes":0,"files_read":0,
            "new_blobs":0,"new_bytes":0,"uploaded_bytes":0}}"#;
        let s: Snapshot = serde_json::from_slice(old).unwrap();
        assert_eq!(s.device, None);
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("device"), "{json}");
    }
}
