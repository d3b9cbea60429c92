//! A writer must never produce an object its reader refuses (docs/FORMAT.md §4.3, §8, §10.1).
//!
//! For each object kind this builds the largest object a writer may produce — maximal counts and
//! field values, worst-case JSON escaping — seals it as the engine does, and opens it again with
//! the reader. Where the writer has a hard limit, one step beyond it must be refused by the
//! writer (not stored and refused later).
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use chatvault_format::blob::{self, BlobType};
use chatvault_format::envelope::ObjectKind;
use chatvault_format::id::{BlobId, PackId, RepoId, SnapshotId};
use chatvault_format::key::{BackupKey, RepoKeys};
use chatvault_format::objects::{
    self, Bytes, IndexBlob, IndexFile, IndexPack, MAX_INDEX_BLOBS, MAX_OBJECT_LEN,
    MAX_PROBLEM_PATH, MAX_PROBLEMS, Node, NodeKind, OBJECT_VERSION, ObjectError, Snapshot, Summary,
    Tree,
};
use chatvault_format::{list, pack, parts};
use rand_core::OsRng;

fn keys() -> RepoKeys {
    BackupKey::from_bytes([0x42; 32]).derive(&RepoId::from_bytes([0x24; 32]))
}

fn id(i: usize) -> BlobId {
    BlobId::from_bytes(*blake3::hash(&i.to_le_bytes()).as_bytes())
}

#[test]
fn largest_index_object_opens() {
    let k = keys();
    let blobs: Vec<IndexBlob> = (0..MAX_INDEX_BLOBS)
        .map(|i| IndexBlob {
            id: id(i),
            ty: BlobType::Data,
            offset: u64::MAX,
            length: u32::MAX,
            raw_length: u32::MAX,
        })
        .collect();
    let pack = |n: u8, blobs: Vec<IndexBlob>| IndexPack {
        id: PackId::from_bytes([n; 32]),
        size: u64::MAX,
        blobs,
    };
    // A writer splits by blob count: two full packs make two index objects.
    let files = objects::split_index(vec![pack(1, blobs.clone()), pack(2, blobs.clone())]);
    assert_eq!(files.len(), 2);
    let (oid, sealed) =
        objects::seal_object(&k, ObjectKind::Index, &files[0], &mut OsRng).expect("fits");
    let back: IndexFile = objects::open_object(&k, ObjectKind::Index, &oid, &sealed).unwrap();
    assert_eq!(back.packs[0].blobs.len(), MAX_INDEX_BLOBS);
    // Packs are closed at MAX_PACK_BLOBS, so a split never has to cut a pack.
    const {
        assert!(
            pack::MAX_PACK_BLOBS <= MAX_INDEX_BLOBS && pack::MAX_PACK_BLOBS <= pack::MAX_ENTRIES
        )
    };
}

#[test]
fn largest_pack_header_opens() {
    let k = keys();
    let pid = PackId::from_bytes([3; 32]);
    let entries: Vec<pack::PackEntry> = (0..pack::MAX_PACK_BLOBS)
        .map(|i| pack::PackEntry {
            ty: BlobType::Data,
            id: id(i),
            offset: 40 * i as u64,
            length: 40,
            raw_length: u32::MAX,
        })
        .collect();
    let mut bytes = vec![0u8; 40 * pack::MAX_PACK_BLOBS];
    bytes.extend(pack::encode_header(&k, &pid, &entries, &mut OsRng));
    assert_eq!(
        pack::decode_header(&k, &pid, &bytes).unwrap().len(),
        pack::MAX_PACK_BLOBS
    );
}

#[test]
fn largest_snapshot_opens() {
    let k = keys();
    // Control characters are escaped as \u00XX: six bytes of JSON per byte of path.
    let nasty = "\u{1}".repeat(MAX_PROBLEM_PATH * 4);
    let mut summary = Summary::default();
    for _ in 0..MAX_PROBLEMS + 10 {
        summary.add_unreadable(&nasty, &nasty);
        summary.add_changed(&nasty);
    }
    assert_eq!(summary.unreadable.len(), MAX_PROBLEMS);
    assert_eq!(summary.omitted_problems, 20);
    assert!(!summary.is_complete());
    let s = Snapshot {
        version: OBJECT_VERSION,
        time: "2026-12-02T00:00:00Z".into(),
        hostname: nasty.clone(),
        paths: vec![nasty.clone()],
        tree: id(1),
        parent: Some(SnapshotId::from_bytes([1; 32])),
        program: "chatvault".into(),
        summary,
        seq: u64::MAX,
        device: Some(nasty.clone()),
    };
    let (sid, sealed) = objects::seal_object(&k, ObjectKind::Snapshot, &s, &mut OsRng).unwrap();
    let back: Snapshot = objects::open_object(&k, ObjectKind::Snapshot, &sid, &sealed).unwrap();
    assert_eq!(back, s);
}

fn symlink_node(i: usize, target_len: usize) -> Node {
    Node {
        name: Bytes(format!("{i:08}").into_bytes()),
        kind: NodeKind::Symlink {
            target: Bytes(vec![b'x'; target_len]),
        },
        mode: 0o777,
        mtime_s: i64::MIN,
        mtime_ns: u32::MAX,
        ctime_s: i64::MIN,
        ctime_ns: u32::MAX,
        inode: u64::MAX,
    }
}

#[test]
fn largest_tree_opens_and_one_more_entry_is_refused_by_the_writer() {
    let k = keys();
    let one = serde_json::to_vec(&symlink_node(0, 4000)).unwrap().len() + 1;
    let n = (MAX_OBJECT_LEN - 64) / one;
    let mut nodes: Vec<Node> = (0..n).map(|i| symlink_node(i, 4000)).collect();
    let mut tree = Tree {
        version: objects::tree_version(&nodes),
        nodes: nodes.clone(),
    };
    let plain = objects::tree_plaintext(&tree).expect("just below the limit");
    assert!(plain.len() <= MAX_OBJECT_LEN && plain.len() > MAX_OBJECT_LEN - 2 * one);
    let bid = blob::blob_id(&k, BlobType::Tree, &plain);
    let sealed = blob::seal_blob(&k, BlobType::Tree, &bid, &plain, &mut OsRng);
    let opened = blob::open_blob(&k, BlobType::Tree, &bid, &sealed).expect("reader accepts it");
    assert_eq!(objects::parse_tree(&opened).unwrap().nodes.len(), n);

    nodes.push(symlink_node(n, 4000));
    nodes.push(symlink_node(n + 1, 4000));
    tree.nodes = nodes;
    assert!(matches!(
        objects::tree_plaintext(&tree),
        Err(ObjectError::TooLarge { .. })
    ));
}

#[test]
fn a_file_with_the_most_blobs_fits_in_a_small_node() {
    let k = keys();
    let ids: Vec<BlobId> = (0..list::MAX_FILE_BLOBS / 8).map(id).collect();
    let mut largest = 0;
    let c = list::build(&k, ids, |_, plain| largest = largest.max(plain.len()));
    let list::FileContent::Lists(top) = c else {
        panic!("lists expected")
    };
    assert!(top.len() <= list::INLINE_MAX);
    assert!(largest <= 6 + 32 * list::LIST_MAX);
    let node = Node {
        name: Bytes(b"msgstore.db".to_vec()),
        kind: NodeKind::File {
            size: u64::MAX,
            content: vec![],
            lists: top,
            changed_while_reading: true,
            sqlite_snapshot: true,
            sqlite_source: None,
        },
        ..symlink_node(0, 0)
    };
    let tree = Tree {
        version: objects::tree_version(std::slice::from_ref(&node)),
        nodes: vec![node],
    };
    assert_eq!(tree.version, objects::TREE_VERSION_LISTS);
    let plain = objects::tree_plaintext(&tree).unwrap();
    assert!(plain.len() < 64 << 10, "{} bytes", plain.len());
    assert_eq!(objects::parse_tree(&plain).unwrap(), tree);
}

#[test]
fn a_version_1_tree_with_lists_is_refused() {
    let json = br#"{"version":1,"nodes":[{"name":"a","type":"file","size":1,"content":[],
        "lists":["0000000000000000000000000000000000000000000000000000000000000000"],
        "mode":420,"mtime_s":0,"mtime_ns":0}]}"#;
    assert!(matches!(
        objects::parse_tree(json),
        Err(ObjectError::Invalid(_))
    ));
    let json2 = String::from_utf8_lossy(json).replace("\"version\":1", "\"version\":2");
    assert!(objects::parse_tree(json2.as_bytes()).is_ok());
    let json3 = json2.replace(
        "\"content\":[]",
        &format!("\"content\":[\"{}\"]", "11".repeat(32)),
    );
    assert!(objects::parse_tree(json3.as_bytes()).is_err());
    // Version 3 is a list of parts (§10.2): nodes there are malformed, version 4 is unknown.
    let json4 = String::from_utf8_lossy(json).replace("\"version\":1", "\"version\":3");
    assert!(matches!(
        objects::parse_tree_blob(json4.as_bytes()),
        Err(ObjectError::Invalid(_))
    ));
    let json5 = String::from_utf8_lossy(json).replace("\"version\":1", "\"version\":4");
    assert!(matches!(
        objects::parse_tree(json5.as_bytes()),
        Err(ObjectError::UnsupportedVersion(4))
    ));
}

/// A list of parts: distinct ids, 1 to MAX_PARTS of them, and no nodes beside them.
#[test]
fn part_lists_are_checked() {
    let list = |ids: &[BlobId]| parts::part_list_plaintext(ids).unwrap();
    let ids: Vec<BlobId> = (0..3).map(id).collect();
    assert_eq!(
        objects::parse_tree_blob(&list(&ids)).unwrap(),
        objects::TreeBlob::Parts(ids.clone())
    );
    assert!(matches!(
        objects::parse_tree(&list(&ids)),
        Err(ObjectError::Invalid(_))
    ));
    let twice = [ids[0], ids[1], ids[0]];
    assert!(matches!(
        objects::parse_tree_blob(&list(&twice)),
        Err(ObjectError::Invalid(_))
    ));
    assert!(matches!(
        objects::parse_tree_blob(&list(&[])),
        Err(ObjectError::Invalid(_))
    ));
    let many: Vec<BlobId> = (0..parts::MAX_PARTS + 1).map(id).collect();
    assert!(objects::parse_tree_blob(&list(&many[..parts::MAX_PARTS])).is_ok());
    assert!(matches!(
        objects::parse_tree_blob(&list(&many)),
        Err(ObjectError::Invalid(_))
    ));
    // The writer's `"nodes":[]` may be absent; nodes beside parts, or parts in a listing, not.
    let one = format!(r#""parts":["{}"]"#, "11".repeat(32));
    let bare = format!(r#"{{"version":3,{one}}}"#);
    assert!(objects::parse_tree_blob(bare.as_bytes()).is_ok());
    let node = r#"{"name":"a","type":"symlink","target":"b","mode":511,"mtime_s":0,"mtime_ns":0}"#;
    for bad in [
        format!(r#"{{"version":3,"nodes":[{node}],{one}}}"#),
        format!(r#"{{"version":1,"nodes":[{node}],{one}}}"#),
        format!(r#"{{"version":1,"nodes":[],{one}}}"#),
    ] {
        assert!(
            matches!(
                objects::parse_tree_blob(bad.as_bytes()),
                Err(ObjectError::Invalid(_))
            ),
            "{bad}"
        );
    }
    let dup = format!(
        r#"{{"version":3,"parts":["{0}"],"parts":["{0}"]}}"#,
        "11".repeat(32)
    );
    assert!(matches!(
        objects::parse_tree_blob(dup.as_bytes()),
        Err(ObjectError::Malformed(_))
    ));
}

/// The largest folder a writer stores in parts: every part opens, the parts together stay
/// within what a reader loads (MAX_PARTS_BYTES); a few more entries and the writer refuses.
#[test]
fn largest_tree_in_parts_is_readable_and_more_is_refused_by_the_writer() {
    let k = keys();
    let one = serde_json::to_vec(&symlink_node(0, 4000)).unwrap().len() + 1;
    let n = (parts::MAX_PARTS_BYTES as usize / one) * 998 / 1000;
    let mut nodes: Vec<Node> = (0..n).map(|i| symlink_node(i, 4000)).collect();
    let e = parts::encode_tree(&k, &nodes).expect("just below the limit");
    let total: usize = e.parts.iter().map(|(_, p)| p.len()).sum();
    assert!(total as u64 <= parts::MAX_PARTS_BYTES && total > n * one - one);
    let objects::TreeBlob::Parts(ids) = objects::parse_tree_blob(&e.plain).unwrap() else {
        panic!("parts expected")
    };
    assert_eq!(ids.len(), e.parts.len());
    let mut count = 0;
    for (pid, plain) in &e.parts {
        assert!(plain.len() <= MAX_OBJECT_LEN);
        assert_eq!(blob::blob_id(&k, BlobType::Tree, plain), *pid);
        count += objects::parse_tree(plain).unwrap().nodes.len();
    }
    assert_eq!(count, n);

    nodes.extend((n..n + n / 200).map(|i| symlink_node(i, 4000)));
    assert!(matches!(
        parts::encode_tree(&k, &nodes),
        Err(ObjectError::TooLarge { .. })
    ));
}
