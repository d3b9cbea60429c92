//! Metadata objects: index, snapshot, tree and lock (docs/FORMAT.md §8–§11).
//!
//! Index and snapshot objects are content-addressed: `id = BLAKE3-keyed(K_id, label || 0x00 ||
//! json)`, and the stored object is `seal(K_meta, kind, id, compress(json))`. Tree blobs use the
//! blob path (§5). Locks have random ids.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand_core::{CryptoRng, RngCore};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::blob::{self, BlobType};
use crate::envelope::{self, EnvelopeError, ObjectKind};
use crate::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::key::RepoKeys;

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
}

/// Seals a content-addressed metadata object; returns its id and the bytes to store.
pub fn seal_object<T: Serialize, R: RngCore + CryptoRng>(
    keys: &RepoKeys,
    kind: ObjectKind,
    value: &T,
    rng: &mut R,
) -> ([u8; 32], Vec<u8>) {
    let json = serde_json::to_vec(value).expect("metadata serializes");
    let id = keys.keyed_id(kind.label(), &json);
    let sealed = envelope::seal(keys, kind, &id, &blob::compress(&json), rng);
    (id, sealed)
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

/// Decodes a tree blob's plaintext.
pub fn parse_tree(json: &[u8]) -> Result<Tree, ObjectError> {
    parse_versioned(json)
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
}

impl Summary {
    /// True when the snapshot is complete and consistent.
    pub fn is_complete(&self) -> bool {
        self.unreadable.is_empty() && self.changed_while_reading.is_empty()
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

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Exact file name bytes.
    pub name: Bytes,
    /// What the entry is.
    #[serde(flatten)]
    pub kind: NodeKind,
    /// Unix permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime_s: i64,
    /// Modification time, nanoseconds part.
    pub mtime_ns: u32,
    /// Change time (seconds), used to detect changes against the parent snapshot.
    #[serde(default)]
    pub ctime_s: i64,
    /// Change time, nanoseconds part.
    #[serde(default)]
    pub ctime_ns: u32,
    /// Inode number, used to detect changes against the parent snapshot.
    #[serde(default)]
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
        /// Data blob ids, in order.
        content: Vec<BlobId>,
        /// The file changed while it was read; its content may be inconsistent.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        changed_while_reading: bool,
        /// The file is a consistent SQLite copy taken with the online backup API.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        sqlite_snapshot: bool,
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

/// A byte string that serializes as a JSON string when it is UTF-8 and as `{"b64": "…"}` otherwise,
/// so non-UTF-8 file names survive exactly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub Vec<u8>);

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum BytesRepr {
    Utf8(String),
    Raw { b64: String },
}

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(t) => BytesRepr::Utf8(t.to_owned()).serialize(s),
            Err(_) => BytesRepr::Raw {
                b64: B64.encode(&self.0),
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match BytesRepr::deserialize(d)? {
            BytesRepr::Utf8(t) => Ok(Bytes(t.into_bytes())),
            BytesRepr::Raw { b64 } => B64.decode(b64).map(Bytes).map_err(serde::de::Error::custom),
        }
    }
}

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

/// Serializes a tree for storage as a tree blob.
pub fn tree_plaintext(tree: &Tree) -> Vec<u8> {
    serde_json::to_vec(tree).expect("tree serializes")
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
        let json = tree_plaintext(&t);
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
        };
        let (id, bytes) = seal_object(&keys, ObjectKind::Snapshot, &s, &mut OsRng);
        let back: Snapshot = open_object(&keys, ObjectKind::Snapshot, &id, &bytes).unwrap();
        assert_eq!(back, s);
        let mut other = id;
        other[0] ^= 1;
        assert!(open_object::<Snapshot>(&keys, ObjectKind::Snapshot, &other, &bytes).is_err());
        assert!(open_object::<IndexFile>(&keys, ObjectKind::Index, &id, &bytes).is_err());
    }
}
