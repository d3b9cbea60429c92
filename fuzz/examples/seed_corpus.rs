//! Writes seed corpora for every fuzz target into `<corpus>/<target>/seed-*`.
//!
//! Usage: `seed_corpus <corpus dir> [<whatsapp fixture dir>]`. The seeds are real objects made
//! by the encoders (with the harnesses' fixed key), each prefixed with the harness mode byte. The
//! WhatsApp fixture (`msgstore.db.crypt15`, `encrypted_backup.key`) is added when its directory
//! is given and exists; it is read, never copied into the repository (`fuzz/corpus` is ignored).

use std::path::{Path, PathBuf};

use chatvault_format::blob::{self, BlobType};
use chatvault_format::config::{Config, RepoParams};
use chatvault_format::envelope::{self, ObjectKind};
use chatvault_format::id::{BlobId, PackId, RepoId, SnapshotId};
use chatvault_format::key::BackupKey;
use chatvault_format::objects::{
    self, Bytes, IndexBlob, IndexFile, IndexPack, Lock, Node, NodeKind, Problem, Snapshot, Summary,
    Tree,
};
use chatvault_format::pack::{self, PackEntry};
use chatvault_fuzz::format::{self as h, FUZZ_ID, FUZZ_KEY, FUZZ_PACK, FUZZ_REPO, FixedRng};
use chatvault_fuzz::whatsapp as wa;
use chatvault_whatsapp::EncryptOptions;

struct Out {
    root: PathBuf,
    count: usize,
}

impl Out {
    fn put(&mut self, target: &str, name: &str, mode: Option<u8>, bytes: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        let mut data = Vec::with_capacity(bytes.len() + 1);
        data.extend(mode);
        data.extend_from_slice(bytes);
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
        self.count += 1;
    }
}

fn zstd_payload(plain: &[u8]) -> Vec<u8> {
    let mut p = vec![1u8];
    p.extend(zstd::bulk::compress(plain, 3).unwrap());
    p
}

fn stored_payload(plain: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8];
    p.extend_from_slice(plain);
    p
}

fn sample_tree() -> Tree {
    Tree {
        version: 1,
        nodes: vec![
            Node {
                name: Bytes(b"Databases".to_vec()),
                kind: NodeKind::Dir {
                    subtree: BlobId::from_bytes([3; 32]),
                },
                mode: 0o755,
                mtime_s: 1_700_000_000,
                mtime_ns: 5,
                ctime_s: 1_700_000_001,
                ctime_ns: 6,
                inode: 42,
            },
            Node {
                name: Bytes(vec![0x66, 0xff, 0x00]),
                kind: NodeKind::Symlink {
                    target: Bytes(b"../x".to_vec()),
                },
                mode: 0o777,
                mtime_s: -1,
                mtime_ns: 0,
                ctime_s: 0,
                ctime_ns: 0,
                inode: 0,
            },
            Node {
                name: Bytes("msgstore.db \u{1f600}".into()),
                kind: NodeKind::File {
                    size: 123,
                    content: vec![BlobId::from_bytes([1; 32]), BlobId::from_bytes([2; 32])],
                    changed_while_reading: true,
                    sqlite_snapshot: true,
                },
                mode: 0o600,
                mtime_s: 1,
                mtime_ns: 2,
                ctime_s: 3,
                ctime_ns: 4,
                inode: 5,
            },
        ],
    }
}

fn sample_snapshot() -> Snapshot {
    Snapshot {
        version: 1,
        time: "2026-01-01T00:00:00Z".into(),
        hostname: "phone".into(),
        paths: vec!["/sdcard/WhatsApp".into(), "/data".into()],
        tree: BlobId::from_bytes([9; 32]),
        parent: Some(SnapshotId::from_bytes([8; 32])),
        program: "chatvault 0.1.0".into(),
        summary: Summary {
            files: 3,
            dirs: 1,
            bytes: 1 << 20,
            files_read: 2,
            new_blobs: 4,
            new_bytes: 5,
            uploaded_bytes: 6,
            unreadable: vec![Problem {
                path: "/x".into(),
                error: "denied".into(),
            }],
            changed_while_reading: vec!["/y".into()],
        },
    }
}

fn sample_index() -> IndexFile {
    IndexFile {
        version: 1,
        packs: vec![IndexPack {
            id: PackId::from_bytes([4; 32]),
            size: 1000,
            blobs: vec![
                IndexBlob {
                    id: BlobId::from_bytes([5; 32]),
                    ty: BlobType::Data,
                    offset: 0,
                    length: 100,
                    raw_length: 60,
                },
                IndexBlob {
                    id: BlobId::from_bytes([6; 32]),
                    ty: BlobType::Tree,
                    offset: 100,
                    length: 900,
                    raw_length: 2000,
                },
            ],
        }],
    }
}

fn sample_lock() -> Lock {
    Lock {
        version: 1,
        hostname: "laptop".into(),
        pid: 4242,
        operation: "backup".into(),
        exclusive: false,
        time: "2026-01-01T00:00:00Z".into(),
        expires: "2026-01-01T00:30:00Z".into(),
    }
}

fn format_seeds(o: &mut Out) {
    let k = h::keys();
    let mut rng = FixedRng(99);
    let key = BackupKey::from_bytes(FUZZ_KEY);

    // key_text / key_file
    let hex = key.to_hex();
    o.put("key_text", "hex", None, hex.as_bytes());
    o.put("key_text", "grouped", None, key.to_grouped_hex().as_bytes());
    o.put(
        "key_text",
        "upper-dashes",
        None,
        format!(
            " {}\n",
            key.to_grouped_hex().to_uppercase().replace(' ', "-")
        )
        .as_bytes(),
    );
    o.put("key_text", "short", None, &hex.as_bytes()[..63]);
    o.put(
        "key_text",
        "colons",
        None,
        hex.as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":")
            .as_bytes(),
    );
    o.put(
        "key_text",
        "unicode-space",
        None,
        format!("{}\u{3000}{}", &hex[..32], &hex[32..]).as_bytes(),
    );
    o.put("key_file", "java", None, &key.to_java_key_file());
    o.put(
        "key_file",
        "hex",
        None,
        format!("{}\n", hex.as_str()).as_bytes(),
    );
    o.put(
        "key_file",
        "java-truncated",
        None,
        &key.to_java_key_file()[..58],
    );

    // config
    let repo = RepoId::from_bytes(FUZZ_REPO);
    let params = RepoParams::defaults("2026-01-01T00:00:00Z".into());
    let cfg = Config::encode(&repo, &params, k, &mut rng);
    o.put("config", "raw", Some(0), &cfg);
    o.put("config", "fixsum", Some(1), &cfg);
    o.put(
        "config",
        "params",
        Some(2),
        &serde_json::to_vec(&params).unwrap(),
    );
    let bad = RepoParams {
        chunk_min: 1,
        ..params.clone()
    };
    o.put(
        "config",
        "params-out-of-range",
        Some(2),
        &serde_json::to_vec(&bad).unwrap(),
    );

    // pack_header
    let pack_id = PackId::from_bytes(FUZZ_PACK);
    let mut packed = Vec::new();
    let mut entries = Vec::new();
    for (i, b) in [&b"first blob"[..], &b"a".repeat(300), b""]
        .iter()
        .enumerate()
    {
        let ty = if i == 1 {
            BlobType::Tree
        } else {
            BlobType::Data
        };
        let id = blob::blob_id(k, ty, b);
        let sealed = blob::seal_blob(k, ty, &id, b, &mut rng);
        entries.push(PackEntry {
            ty,
            id,
            offset: packed.len() as u64,
            length: sealed.len() as u32,
            raw_length: b.len() as u32,
        });
        packed.extend_from_slice(&sealed);
    }
    let area = packed.len();
    let mut full = packed.clone();
    full.extend(pack::encode_header(k, &pack_id, &entries, &mut rng));
    o.put("pack_header", "raw", Some(0), &full);
    let mut plain = vec![1u8];
    plain.extend((entries.len() as u32).to_le_bytes());
    for e in &entries {
        plain.push(e.ty.code());
        plain.extend_from_slice(e.id.as_bytes());
        plain.extend(e.offset.to_le_bytes());
        plain.extend(e.length.to_le_bytes());
        plain.extend(e.raw_length.to_le_bytes());
    }
    let mut m1 = (area as u16).to_le_bytes().to_vec();
    m1.extend_from_slice(&plain);
    o.put("pack_header", "plaintext", Some(1), &m1);
    o.put("pack_header", "empty", Some(1), &[0, 0, 1, 0, 0, 0, 0]);

    // index / snapshot / lock objects
    fn objs<T: serde::Serialize>(o: &mut Out, target: &str, kind: ObjectKind, v: &T) {
        let k = h::keys();
        let json = serde_json::to_vec(v).unwrap();
        let (_, sealed) = objects::seal_object(k, kind, v, &mut FixedRng(5));
        o.put(target, "raw", Some(0), &sealed);
        o.put(target, "payload-stored", Some(1), &stored_payload(&json));
        o.put(target, "payload-zstd", Some(1), &zstd_payload(&json));
        o.put(target, "json", Some(2), &json);
        o.put(
            target,
            "json-pretty",
            Some(2),
            &serde_json::to_vec_pretty(v).unwrap(),
        );
    }
    objs(o, "index_object", ObjectKind::Index, &sample_index());
    objs(
        o,
        "index_object",
        ObjectKind::Index,
        &IndexFile {
            version: 1,
            packs: vec![],
        },
    );
    objs(
        o,
        "snapshot_object",
        ObjectKind::Snapshot,
        &sample_snapshot(),
    );
    let lock = sample_lock();
    o.put(
        "lock_object",
        "raw",
        Some(0),
        &objects::seal_lock(k, &FUZZ_ID, &lock, &mut rng),
    );
    o.put(
        "lock_object",
        "json",
        Some(1),
        &serde_json::to_vec(&lock).unwrap(),
    );

    // tree blobs
    let tree = objects::tree_plaintext(&sample_tree());
    o.put("tree_blob", "json", Some(0), &tree);
    o.put(
        "tree_blob",
        "json-empty",
        Some(0),
        br#"{"version":1,"nodes":[]}"#,
    );
    let tid = blob::blob_id(k, BlobType::Tree, &tree);
    o.put(
        "tree_blob",
        "sealed",
        Some(1),
        &blob::seal_blob(k, BlobType::Tree, &tid, &tree, &mut rng),
    );
    o.put(
        "tree_blob",
        "payload-stored",
        Some(2),
        &stored_payload(&tree),
    );
    o.put("tree_blob", "payload-zstd", Some(2), &zstd_payload(&tree));

    // blob payloads
    let text = b"hello, are we still on for dinner tonight? ".repeat(20);
    for (name, p) in [
        ("stored", stored_payload(b"hello")),
        ("zstd", zstd_payload(&text)),
        ("compress", blob::compress(&text)),
        ("empty-zstd", zstd_payload(b"")),
    ] {
        o.put("blob_payload", name, Some(0), &p);
        o.put("blob_payload", name, Some(2), &p);
    }
    let bid = blob::blob_id(k, BlobType::Data, &text);
    o.put(
        "blob_payload",
        "sealed",
        Some(1),
        &blob::seal_blob(k, BlobType::Data, &bid, &text, &mut rng),
    );
    o.put("blob_payload", "roundtrip", Some(3), &text);

    // envelopes
    let env = envelope::seal(k, ObjectKind::Snapshot, &FUZZ_ID, b"hello", &mut rng);
    o.put("envelope", "sealed", Some(0), &env);
    o.put(
        "envelope",
        "roundtrip",
        Some(1),
        b"\x05\x10\x00hello envelope",
    );
}

fn whatsapp_seeds(o: &mut Out, fixtures: Option<&Path>) {
    let db = b"SQLite format 3\0"
        .iter()
        .copied()
        .chain((0..2000u32).map(|i| (i % 7) as u8))
        .collect::<Vec<_>>();
    let mut variants = vec![("default", EncryptOptions::default())];
    let mut no_ft = EncryptOptions::default();
    no_ft.feature_table = false;
    no_ft.feature_flags.clear();
    variants.push(("no-feature-table", no_ft));
    let mut lvl9 = EncryptOptions::default();
    lvl9.compression_level = 9;
    lvl9.jid_suffix = "67".into();
    variants.push(("level9", lvl9));
    for (i, (name, opts)) in variants.into_iter().enumerate() {
        let file = chatvault_whatsapp::encrypt(
            &wa::FUZZ_KEY,
            &db[..db.len() >> i],
            &opts,
            &mut wa::FixedRng(i as u64),
        )
        .unwrap();
        o.put("crypt15", &format!("raw-{name}"), Some(0), &file);
        o.put("crypt15", &format!("fixmd5-{name}"), Some(1), &file);
    }
    let mut zlib = Vec::new();
    {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(&mut zlib, flate2::Compression::new(1));
        z.write_all(&db).unwrap();
        z.finish().unwrap();
    }
    let mut p = vec![1u8]; // feature table, MD5 trailer
    p.extend_from_slice(&zlib);
    o.put("crypt15", "sealed-zlib", Some(2), &p);
    o.put(
        "crypt15",
        "sealed-zip-multifile",
        Some(2),
        b"\x02PK\x03\x04\x14\x00\x00\x00\x08\x00zipzipzip",
    );
    o.put(
        "crypt15",
        "sealed-zip-single",
        Some(2),
        b"\x00PK\x05\x06\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    );
    o.put("crypt15", "roundtrip", Some(3), &db[..200]);
    if let Some(dir) = fixtures {
        if let Ok(f) = std::fs::read(dir.join("msgstore.db.crypt15")) {
            o.put("crypt15", "fixture-raw", Some(0), &f);
            o.put("crypt15", "fixture-fixmd5", Some(1), &f);
        } else {
            eprintln!("seed_corpus: no WhatsApp fixture in {}", dir.display());
        }
        if let Ok(f) = std::fs::read(dir.join("encrypted_backup.key")) {
            o.put("key_file", "fixture", None, &f);
        }
    }
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    let root = PathBuf::from(
        args.next()
            .expect("usage: seed_corpus <corpus dir> [<fixture dir>]"),
    );
    let fixtures = args.next().map(PathBuf::from);
    let mut o = Out { root, count: 0 };
    format_seeds(&mut o);
    whatsapp_seeds(&mut o, fixtures.as_deref());
    // Every seed must pass its own harness (catches harness or seed bugs before fuzzing).
    for (name, harness) in chatvault_fuzz::targets() {
        let dir = o.root.join(name);
        for e in std::fs::read_dir(&dir).unwrap_or_else(|_| panic!("no seeds for {name}")) {
            let p = e.unwrap().path();
            harness(&std::fs::read(&p).unwrap());
        }
    }
    eprintln!(
        "seed_corpus: wrote {} seeds into {}",
        o.count,
        o.root.display()
    );
}
