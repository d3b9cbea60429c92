//! Seed corpora for every fuzz target: real objects and messages made by the encoders and the
//! vault protocol (with the harnesses' fixed keys), each prefixed with the harness mode byte.
//! Used by `examples/seed_corpus.rs` and by the `all` fuzz binary (`CHATVAULT_FUZZ_SEEDS`).

use std::path::{Path, PathBuf};

use crate::format::{self as h, FUZZ_ID, FUZZ_KEY, FUZZ_PACK, FUZZ_REPO, FixedRng};
use crate::whatsapp as wa;
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
use chatvault_whatsapp::EncryptOptions;

struct Out {
    root: PathBuf,
    count: usize,
    written: Vec<(&'static str, PathBuf)>,
}

impl Out {
    fn put(&mut self, target: &str, name: &str, mode: Option<u8>, bytes: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        let mut data = Vec::with_capacity(bytes.len() + 1);
        data.extend(mode);
        data.extend_from_slice(bytes);
        let path = dir.join(format!("seed-{name}"));
        std::fs::write(&path, data).unwrap();
        let target = crate::targets()
            .find(|(t, _)| *t == target)
            .unwrap_or_else(|| panic!("seed for unknown target {target}"))
            .0;
        self.written.push((target, path));
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
                    lists: vec![],
                    sqlite_source: None,
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
        seq: 3,
        device: None,
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
            omitted_problems: 0,
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
    let mut v2 = packed.clone();
    v2.extend(pack::encode_tail_v2(k, &pack_id, &entries, area as u64, &mut rng));
    o.put("pack_header", "raw-v2", Some(0), &v2);
    let mut m2 = (area as u16).to_le_bytes().to_vec();
    m2.push(17);
    m2.push(2);
    m2.extend_from_slice(&plain[1..]);
    o.put("pack_header", "plaintext-v2", Some(2), &m2);

    // index / snapshot / lock objects
    fn objs<T: serde::Serialize>(o: &mut Out, target: &str, kind: ObjectKind, v: &T) {
        let k = h::keys();
        let json = serde_json::to_vec(v).unwrap();
        let (_, sealed) = objects::seal_object(k, kind, v, &mut FixedRng(5)).unwrap();
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
    let tree = objects::tree_plaintext(&sample_tree()).unwrap();
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

    // content lists
    let ids: Vec<BlobId> = (0u8..20).map(|i| BlobId::from_bytes([i; 32])).collect();
    let l0 = chatvault_format::list::encode(0, &ids);
    o.put("list_blob", "level0", Some(0), &l0);
    o.put(
        "list_blob",
        "level2",
        Some(0),
        &chatvault_format::list::encode(2, &ids[..3]),
    );
    let lid = blob::blob_id(k, BlobType::List, &l0);
    o.put(
        "list_blob",
        "sealed",
        Some(1),
        &blob::seal_blob(k, BlobType::List, &lid, &l0, &mut rng),
    );

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

fn vault_seeds(o: &mut Out) {
    use chatvault_vault_core::api::{self, b64_encode};
    use chatvault_vault_core::{KsfParams, VaultKeys};

    use crate::vault_core::{self as vc, FUZZ_NOW};

    let f = vc::fixture();
    let json = |v: &dyn erased::Json| v.to_json();

    // vault_request: the real JSON bodies of the fixture's registration and login.
    let bodies: [(&str, u8, Vec<u8>); 10] = [
        (
            "register-start",
            0,
            json(&api::RegisterStartRequest {
                request: b64_encode(&f.registration_request),
            }),
        ),
        (
            "register-finish",
            1,
            json(&api::RegisterFinishRequest {
                ticket: b64_encode(&f.ticket),
                upload: b64_encode(&f.upload),
                wrapped_key: b64_encode(&f.wrapped_key),
                ksf: KsfParams::INSECURE_FOR_TESTS,
                proof: None,
                binding: None,
            }),
        ),
        (
            "register-finish-proof",
            1,
            json(&api::RegisterFinishRequest {
                ticket: b64_encode(&f.ticket),
                upload: b64_encode(&f.upload),
                wrapped_key: b64_encode(&f.wrapped_key),
                ksf: KsfParams::PRODUCTION,
                proof: Some(b64_encode(&f.proof)),
                binding: Some(b64_encode(&f.binding.reregistration_mac(
                    &f.account,
                    &f.ticket,
                    &f.upload,
                    &f.wrapped_key,
                    &KsfParams::PRODUCTION,
                ))),
            }),
        ),
        (
            "recover-start",
            2,
            json(&api::RecoverStartRequest {
                ke1: b64_encode(&f.ke1),
            }),
        ),
        (
            "recover-finish",
            3,
            json(&api::RecoverFinishRequest {
                state: b64_encode(&f.login_state),
                ke3: b64_encode(&f.ke3),
            }),
        ),
        (
            "recover-finish-dummy",
            3,
            json(&api::RecoverFinishRequest {
                state: b64_encode(&f.dummy_state),
                ke3: b64_encode(&f.ke3),
            }),
        ),
        (
            "delete",
            4,
            json(&api::DeleteRequest {
                proof: b64_encode(&f.proof),
            }),
        ),
        (
            "register-finish-extra-field",
            1,
            br#"{"ticket":"AA","upload":"AA","wrapped_key":"AA","ksf":{"m_kib":8,"t":1,"p":1},"x":1}"#
                .to_vec(),
        ),
        (
            "put-commitment",
            5,
            json(&api::PutCommitmentRequest {
                seq: 2,
                commitment: api::b64std_encode(&[0x5c; 100]),
            }),
        ),
        (
            "put-commitment-max",
            5,
            json(&api::PutCommitmentRequest {
                seq: i64::MAX as u64,
                commitment: api::b64std_encode(&[0xc5; 512]),
            }),
        ),
    ];
    for (name, mode, body) in bodies {
        o.put("vault_request", name, Some(mode), &body);
    }

    // vault_record: the stored record, its plaintext, and the plaintext for another generation.
    let record = f.record();
    let pt = vc::record_plaintext(&record);
    o.put("vault_record", "sealed", Some(0), &f.sealed_record);
    o.put("vault_record", "plaintext", Some(1), &pt);
    let mut m2 = 5u64.to_be_bytes().to_vec();
    m2.extend(10u32.to_be_bytes());
    let mut pt5 = pt.clone();
    pt5[2..10].copy_from_slice(&5u64.to_be_bytes());
    m2.extend_from_slice(&pt5);
    o.put("vault_record", "plaintext-gen5", Some(2), &m2);

    // vault_login_state: the real and the dummy state, sealed and as plaintext.
    for (name, state) in [("real", &f.login_state), ("dummy", &f.dummy_state)] {
        o.put(
            "vault_login_state",
            &format!("sealed-{name}"),
            Some(0),
            state,
        );
        let pt = vc::open(&f.state_key, &vc::login_state_ad(), state).unwrap();
        o.put(
            "vault_login_state",
            &format!("plaintext-{name}"),
            Some(1),
            &pt,
        );
        let mut m2 = f.ke3.clone();
        m2.extend_from_slice(&pt);
        o.put(
            "vault_login_state",
            &format!("ke3-plaintext-{name}"),
            Some(2),
            &m2,
        );
    }

    // vault_opaque: every message of the real run.
    for (name, mode, msg) in [
        ("ke1", 0, &f.ke1),
        ("ke3", 1, &f.ke3),
        ("registration-request", 2, &f.registration_request),
        ("registration-upload", 3, &f.upload),
        ("ke2", 4, &f.ke2),
        ("registration-response", 5, &f.registration_response),
        ("release", 6, &f.release),
        ("registration-signature", 7, &f.signature),
    ] {
        o.put("vault_opaque", name, Some(mode), msg);
    }

    // vault_values
    o.put("vault_values", "account", Some(0), b"alice+1@example.com");
    o.put(
        "vault_values",
        "server-identity",
        Some(1),
        f.identity.to_string().as_bytes(),
    );
    o.put(
        "vault_values",
        "b64",
        Some(2),
        b64_encode(&f.ke1).as_bytes(),
    );
    let keys = VaultKeys::generate(&mut vc::FixedRng(1));
    o.put("vault_values", "vault-keys", Some(3), &keys.to_bytes());
    o.put(
        "vault_values",
        "ksf",
        Some(4),
        br#"{"m_kib":65536,"t":3,"p":1}"#,
    );

    // vault_token: a real token, its JSON parts, and the issuer key file.
    let tk = crate::vault::issuer();
    let token = chatvault_vault::token::issue(tk, "alice", FUZZ_NOW, 3600);
    o.put("vault_token", "token", Some(0), token.as_bytes());
    let header = br#"{"alg":"EdDSA","typ":"JWT"}"#;
    let claims = format!(
        r#"{{"sub":"alice","aud":"chatvault-vault","iat":{},"exp":{}}}"#,
        FUZZ_NOW,
        FUZZ_NOW + 3600
    );
    let mut m1 = vec![header.len() as u8];
    m1.extend_from_slice(header);
    m1.extend_from_slice(claims.as_bytes());
    o.put("vault_token", "parts", Some(1), &m1);
    o.put(
        "vault_token",
        "issuer-pub",
        Some(2),
        format!("{}\n", b64_encode(tk.verifying_key().as_bytes())).as_bytes(),
    );
}

mod erased {
    /// `serde_json::to_vec` behind a trait object (the request types differ).
    pub trait Json {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap()
        }
    }
}

/// Valid threshold-vault messages and records (PROTOCOL.md §13.8): one full 2-of-3 recovery of
/// the harness fixture, so the fuzzer starts from inputs that reach every step.
fn threshold_seeds(o: &mut Out) {
    use crate::threshold::{FixedRng, fixture};
    use chatvault_threshold::{Recovery, register};
    use chatvault_vault_core::{BackupKey, GuessCounter, KsfParams};
    let json = |v: &dyn erased::Json| v.to_json();
    let f = fixture();
    let (_, reqs) = register(
        &mut FixedRng(9),
        &f.set,
        &f.account,
        b"pw",
        &BackupKey::from_bytes([0x42; 32]),
        KsfParams::INSECURE_FOR_TESTS,
        10,
    )
    .unwrap();
    o.put("threshold_messages", "register2-request", Some(1), &json(&reqs[0].1));
    let r1: Vec<_> = f.records.iter().map(|r| r.recover1()).collect();
    o.put("threshold_messages", "recover1-response", Some(3), &json(&r1[0]));
    let chosen = Recovery::new(f.set.clone(), f.account.clone())
        .choose(vec![(1, Ok(r1[0].clone())), (2, Ok(r1[1].clone()))])
        .unwrap();
    let (blinded, req2) = chosen.blind(&mut FixedRng(2), b"pw").unwrap();
    o.put("threshold_messages", "recover2-request", Some(4), &json(&req2));
    let counted = GuessCounter::new(10).count_guess().unwrap();
    let resp2: Vec<_> = (0..2)
        .map(|i| {
            f.records[i]
                .recover2(&mut FixedRng(1), &f.keys[i], &f.account, &counted, &req2)
                .unwrap()
        })
        .collect();
    o.put("threshold_messages", "recover2-response", Some(5), &json(&resp2[0]));
    let (_, req3) = blinded
        .finish(vec![(1, Ok(resp2[0].clone())), (2, Ok(resp2[1].clone()))])
        .unwrap();
    o.put("threshold_messages", "recover3-request", Some(6), &json(&req3[0].1));
    let resp3 = f.records[0].recover3(&counted, &req3[0].1).unwrap();
    o.put("threshold_messages", "recover3-response", Some(7), &json(&resp3));
    let record = f.records[0].to_bytes();
    o.put("threshold_record", "record", Some(0), &record);
    let sealed = f.keys[0].seal_record(&mut FixedRng(3), &f.account, 1, &f.records[0]);
    o.put("threshold_record", "sealed", Some(1), &sealed);
    o.put("threshold_record", "plaintext", Some(2), &record);
}

/// Writes the seeds of every target into `<root>/<target>/seed-*` and checks that each seed
/// passes its own harness. Returns the number of seeds.
pub fn write(root: &Path, fixtures: Option<&Path>) -> usize {
    let mut o = Out {
        root: root.to_path_buf(),
        count: 0,
        written: Vec::new(),
    };
    format_seeds(&mut o);
    whatsapp_seeds(&mut o, fixtures);
    vault_seeds(&mut o);
    threshold_seeds(&mut o);
    // Every seed must pass its own harness (catches harness or seed bugs before fuzzing). Only
    // the seeds just written: a fuzzer may be adding and removing other files in the same dirs.
    for (name, harness) in crate::targets() {
        let mut seeds = o.written.iter().filter(|(t, _)| *t == name).peekable();
        assert!(seeds.peek().is_some(), "no seeds for {name}");
        for (_, path) in seeds {
            harness(&std::fs::read(path).unwrap());
        }
    }
    o.count
}
