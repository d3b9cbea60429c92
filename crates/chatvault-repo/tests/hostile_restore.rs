//! Restore stays inside its target (docs/FORMAT.md §12.1), whatever the snapshot or the target
//! already holds.
//!
//! Hostile snapshots are built directly through the format API ([`Forge`]: tree and data blobs
//! sealed with the repository's keys, one pack, an index object, a snapshot object), so they
//! can hold what a backup never writes. Every case runs in a [`Scene`]: a temp folder with the
//! target and a sibling `outside/` folder of known content (a file, a subfolder). Each restore
//! asserts that nothing outside the target changed (listing, bytes, link targets, modes, mtimes)
//! and that no temporary file is left, then checks the exact outcome.
//!
//! | case | snapshot | target before | expected |
//! |---|---|---|---|
//! | a | dir `x/file` | link `x -> outside` | without --overwrite `x/` fails; with it a real dir |
//! | b | link `x -> outside` and dir `x/` (both orders, also nested) | empty | `x` duplicate, neither restored |
//! | c | link `x`, names `..` `.` `/` `a/b` `x/../e` empty NUL | empty | each unsafe name listed; `x` is a link |
//! | d | two files `f` | file `f` | duplicate listed, `f` untouched, others restore |
//! | e | file `f` | link `f -> outside/secret` | without --overwrite fails; with it the link is replaced |
//! | f | link `l -> outside`, then a dir `l/…` in a later snapshot | — | the link is data; nothing written through it |
//! | g | SQLite database (real backup; forged journals) | stale `-wal`, `-shm` | removed; integrity_check ok |
//! | h | hostile trees | — | `check` reports unsafe and duplicate names as errors |
//! | parts | trees in parts (§10.2): nested, repeated, missing, overlapping | — | each folder fails or its duplicates are refused; check reports it |
//! | depth | 300 nested dirs | — | listed past 256 levels, no crash |
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chatvault_format::blob::{self, BlobType};
use chatvault_format::envelope::ObjectKind;
use chatvault_format::id::{BlobId, IndexId, PackId, SnapshotId};
use chatvault_format::key::{BackupKey, RepoKeys};
use chatvault_format::objects::{
    self, Bytes, IndexBlob, IndexFile, IndexPack, Node, NodeKind, OBJECT_VERSION, Snapshot,
    Summary, Tree,
};
use chatvault_format::pack::{self, PackEntry};
use chatvault_repo::backup::{BackupOptions, NoProgress, backup};
use chatvault_repo::check::{CheckOptions, check};
use chatvault_repo::repository::{Repository, layout};
use chatvault_repo::restore::{RestoreOptions, RestoreOutcome, restore};
use chatvault_repo::storage::Storage;
use rand_core::OsRng;

/// Builds snapshots blob by blob, bypassing the backup's rules.
struct Forge {
    repo: Repository,
    keys: RepoKeys,
    pack: Vec<u8>,
    entries: Vec<PackEntry>,
}

const MTIME: i64 = 1_600_000_000;

impl Forge {
    fn new(name: &str) -> Forge {
        let key = BackupKey::from_bytes([9; 32]);
        let repo =
            Repository::init(Storage::open(&format!("memory://{name}")).unwrap(), &key).unwrap();
        let keys = key.derive(&repo.id());
        Forge {
            repo,
            keys,
            pack: Vec::new(),
            entries: Vec::new(),
        }
    }

    fn blob(&mut self, ty: BlobType, plain: &[u8]) -> BlobId {
        let id = blob::blob_id(&self.keys, ty, plain);
        if !self.entries.iter().any(|e| e.id == id) {
            let sealed = blob::seal_blob(&self.keys, ty, &id, plain, &mut OsRng);
            self.entries.push(PackEntry {
                ty,
                id,
                offset: self.pack.len() as u64,
                length: sealed.len() as u32,
                raw_length: plain.len() as u32,
            });
            self.pack.extend_from_slice(&sealed);
        }
        id
    }

    fn node(name: &[u8], kind: NodeKind, mode: u32) -> Node {
        Node {
            name: Bytes(name.to_vec()),
            kind,
            mode,
            mtime_s: MTIME,
            mtime_ns: 0,
            ctime_s: 0,
            ctime_ns: 0,
            inode: 0,
        }
    }

    fn file(&mut self, name: &[u8], content: &[u8]) -> Node {
        self.file_with(name, content, false)
    }

    fn file_with(&mut self, name: &[u8], content: &[u8], sqlite_snapshot: bool) -> Node {
        let blobs = if content.is_empty() {
            vec![]
        } else {
            vec![self.blob(BlobType::Data, content)]
        };
        Self::node(
            name,
            NodeKind::File {
                size: content.len() as u64,
                content: blobs,
                lists: vec![],
                changed_while_reading: false,
                sqlite_snapshot,
                sqlite_source: None,
            },
            0o600,
        )
    }

    fn tree(&mut self, nodes: Vec<Node>) -> BlobId {
        let t = Tree {
            version: OBJECT_VERSION,
            nodes,
        };
        self.blob(BlobType::Tree, &objects::tree_plaintext(&t).unwrap())
    }

    /// A tree blob listing `parts` (FORMAT §10.2), whatever they are.
    fn parts_tree(&mut self, parts: &[BlobId]) -> BlobId {
        self.blob(
            BlobType::Tree,
            &chatvault_format::parts::part_list_plaintext(parts).unwrap(),
        )
    }

    fn dir(&mut self, name: &[u8], nodes: Vec<Node>) -> Node {
        let subtree = self.tree(nodes);
        // 0o777 on purpose: a chmod through a link would show on `outside`.
        Self::node(name, NodeKind::Dir { subtree }, 0o777)
    }

    fn link(name: &[u8], target: &[u8]) -> Node {
        Self::node(
            name,
            NodeKind::Symlink {
                target: Bytes(target.to_vec()),
            },
            0o777,
        )
    }

    /// Stores the pending blobs as one pack, indexes it, and stores a snapshot of `root`.
    fn snapshot(&mut self, root: Vec<Node>) -> Snapshot {
        let tree = self.tree(root);
        let id = PackId::random(&mut OsRng);
        let mut bytes = std::mem::take(&mut self.pack);
        let entries = std::mem::take(&mut self.entries);
        bytes.extend_from_slice(&pack::encode_header(&self.keys, &id, &entries, &mut OsRng));
        let index = IndexFile {
            version: OBJECT_VERSION,
            packs: vec![IndexPack {
                id,
                size: bytes.len() as u64,
                blobs: entries
                    .iter()
                    .map(|e| IndexBlob {
                        id: e.id,
                        ty: e.ty,
                        offset: e.offset,
                        length: e.length,
                        raw_length: e.raw_length,
                    })
                    .collect(),
            }],
        };
        let storage = self.repo.storage();
        storage.write_new(&layout::pack(&id), bytes).unwrap();
        let (iid, sealed) =
            objects::seal_object(&self.keys, ObjectKind::Index, &index, &mut OsRng).unwrap();
        storage
            .write_new(&layout::index(&IndexId::from_bytes(iid)), sealed)
            .unwrap();
        let snap = Snapshot {
            version: OBJECT_VERSION,
            time: "2026-01-01T00:00:00Z".into(),
            hostname: "forge".into(),
            paths: vec!["/forged".into()],
            tree,
            parent: None,
            program: "hostile_restore test".into(),
            summary: Summary::default(),
            seq: 0,
            device: None,
        };
        let (sid, sealed) =
            objects::seal_object(&self.keys, ObjectKind::Snapshot, &snap, &mut OsRng).unwrap();
        storage
            .write_new(&layout::snapshot(&SnapshotId::from_bytes(sid)), sealed)
            .unwrap();
        snap
    }
}

/// A temp folder holding `target/` and a sibling `outside/` that must never change.
struct Scene {
    dir: tempfile::TempDir,
}

/// Relative path → (kind, mode, mtime, bytes or link target), links not followed.
type Fingerprint = BTreeMap<PathBuf, (char, u32, i64, i64, Vec<u8>)>;

fn fingerprint(root: &Path, skip: &Path) -> Fingerprint {
    fn walk(root: &Path, p: &Path, skip: &Path, out: &mut Fingerprint) {
        if p == skip {
            return;
        }
        let m = std::fs::symlink_metadata(p).unwrap();
        let (kind, data) = if m.file_type().is_symlink() {
            (
                'l',
                std::fs::read_link(p)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            )
        } else if m.is_dir() {
            ('d', Vec::new())
        } else {
            ('f', std::fs::read(p).unwrap())
        };
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        out.insert(
            rel,
            (kind, m.mode() & 0o7777, m.mtime(), m.mtime_nsec(), data),
        );
        if kind == 'd' {
            for e in std::fs::read_dir(p).unwrap() {
                walk(root, &e.unwrap().path(), skip, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, skip, &mut out);
    out
}

impl Scene {
    fn new() -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let s = Scene { dir };
        std::fs::create_dir_all(s.outside().join("sub")).unwrap();
        std::fs::write(s.outside().join("secret"), b"outside secret").unwrap();
        std::fs::write(s.outside().join("sub/inner"), b"inner").unwrap();
        std::fs::set_permissions(s.outside(), PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::set_permissions(s.outside().join("secret"), PermissionsExt::from_mode(0o644))
            .unwrap();
        std::fs::create_dir(s.target()).unwrap();
        s
    }
    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }
    fn target(&self) -> PathBuf {
        self.dir.path().join("target")
    }
    fn t(&self, rel: &str) -> PathBuf {
        self.target().join(rel)
    }
    fn outside_bytes(&self) -> Vec<u8> {
        self.outside().as_os_str().as_bytes().to_vec()
    }

    /// Restores and asserts containment: nothing outside the target changed, no temporary
    /// file is left in it.
    fn restore(&self, repo: &Repository, snap: &Snapshot, opts: RestoreOptions) -> RestoreOutcome {
        self.try_restore(repo, snap, opts).unwrap()
    }

    fn try_restore(
        &self,
        repo: &Repository,
        snap: &Snapshot,
        opts: RestoreOptions,
    ) -> chatvault_repo::Result<RestoreOutcome> {
        let before = fingerprint(self.dir.path(), &self.target());
        let out = restore(repo, snap, &self.target(), &opts, &NoProgress);
        assert_eq!(
            fingerprint(self.dir.path(), &self.target()),
            before,
            "something outside the target changed"
        );
        let leftovers: Vec<_> = fingerprint(&self.target(), Path::new(""))
            .into_keys()
            .filter(|p| p.to_string_lossy().contains(".chatvault-partial-"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
        out
    }
}

fn opts(overwrite: bool) -> RestoreOptions {
    RestoreOptions {
        include: None,
        overwrite,
        max_entries: None,
        readers: None,
        durable: false,
    }
}

fn failed(out: &RestoreOutcome) -> Vec<(&str, &str)> {
    out.failed
        .iter()
        .map(|(p, e)| (p.as_str(), e.as_str()))
        .collect()
}

fn is_link(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

fn is_real_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_dir())
}

const DUPLICATE: &str = "duplicate name in snapshot tree (2 entries); none of them restored";

#[test]
fn existing_symlink_to_a_directory_in_the_target_is_never_followed() {
    let mut f = Forge::new("hostile-a");
    let x = vec![f.file(b"file", b"through the link?")];
    let x = f.dir(b"x", x);
    let ok = f.file(b"ok", b"fine");
    let snap = f.snapshot(vec![ok, x]);

    let s = Scene::new();
    std::os::unix::fs::symlink(s.outside(), s.t("x")).unwrap();
    let out = s.restore(&f.repo, &snap, opts(false));
    assert_eq!(
        failed(&out),
        [(
            "x/",
            "directory not restored: a symbolic link is in its place in the target and is not \
             followed (use --overwrite to replace it)"
        )]
    );
    assert_eq!(out.files, 1);
    assert_eq!(std::fs::read(s.t("ok")).unwrap(), b"fine");
    assert_eq!(std::fs::read_link(s.t("x")).unwrap(), s.outside());

    // With --overwrite the link itself is replaced by a real directory.
    let out = s.restore(&f.repo, &snap, opts(true));
    assert_eq!(failed(&out), []);
    assert_eq!((out.files, out.dirs), (2, 1));
    assert!(is_real_dir(&s.t("x")));
    assert_eq!(std::fs::read(s.t("x/file")).unwrap(), b"through the link?");
    let m = std::fs::metadata(s.t("x")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o777, MTIME));
}

#[test]
fn symlink_and_directory_of_the_same_name_restore_neither() {
    let mut f = Forge::new("hostile-b");
    for link_first in [true, false] {
        for overwrite in [false, true] {
            let s = Scene::new();
            let mut pair = || {
                let inner = vec![f.file(b"pwned", b"written through the link?")];
                let dir = f.dir(b"x", inner);
                let link = Forge::link(b"x", &s.outside_bytes());
                if link_first {
                    vec![link, dir]
                } else {
                    vec![dir, link]
                }
            };
            // The same pair at the top and one level down.
            let top = pair();
            let nested = pair();
            let nested = f.dir(b"d", nested);
            let ok = f.file(b"ok", b"fine");
            let snap = f.snapshot([top, vec![nested, ok]].concat());
            let out = s.restore(&f.repo, &snap, opts(overwrite));
            assert_eq!(
                failed(&out),
                [("d/x", DUPLICATE), ("x", DUPLICATE)],
                "link first {link_first}, overwrite {overwrite}"
            );
            assert!(!s.t("x").exists() && !is_link(&s.t("x")));
            assert!(!s.t("d/x").exists() && !is_link(&s.t("d/x")));
            assert_eq!(std::fs::read(s.t("ok")).unwrap(), b"fine");
        }
    }
}

#[test]
fn unsafe_names_are_rejected_and_listed() {
    let mut f = Forge::new("hostile-c");
    let s = Scene::new();
    let mut root = vec![Forge::link(b"x", &s.outside_bytes())];
    for name in [&b".."[..], b".", b"/", b"a/b", b"x/../escape", b"", b"a\0b"] {
        root.push(f.file(name, b"escape?"));
    }
    let inner = vec![f.file(b"secret", b"overwritten?")];
    root.push(f.dir(b"..", inner));
    let inner = vec![f.file(b"secret", b"overwritten?")];
    root.push(f.dir(b"x/..", inner));
    let snap = f.snapshot(root);
    for overwrite in [false, true] {
        let out = s.restore(&f.repo, &snap, opts(overwrite));
        let why = |w: &str| format!("unsafe file name in snapshot tree ({w}); skipped");
        let mut want = vec![
            ("..".to_string(), why("`.` or `..`")),
            (".".into(), why("`.` or `..`")),
            ("/".into(), why("contains `/`")),
            ("a/b".into(), why("contains `/`")),
            ("x/../escape".into(), why("contains `/`")),
            ("".into(), why("empty")),
            ("a\0b".into(), why("contains a NUL byte")),
            ("..".into(), why("`.` or `..`")),
            ("x/..".into(), why("contains `/`")),
        ];
        want.sort();
        assert_eq!(out.failed, want, "overwrite {overwrite}");
        // The one legitimate entry, the link, is data and is restored as a link.
        let listing: Vec<_> = std::fs::read_dir(s.target())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(listing, ["x"]);
        assert_eq!(std::fs::read_link(s.t("x")).unwrap(), s.outside());
    }
}

#[test]
fn duplicate_files_are_neither_written_and_are_reported() {
    let mut f = Forge::new("hostile-d");
    let a = f.file(b"f", b"first content");
    let b = f.file(b"f", b"second content");
    let g = f.file(b"g", b"other");
    let snap = f.snapshot(vec![a, b, g]);
    for overwrite in [false, true] {
        let s = Scene::new();
        std::fs::write(s.t("f"), b"the user's file").unwrap();
        let out = s.restore(&f.repo, &snap, opts(overwrite));
        assert_eq!(failed(&out), [("f", DUPLICATE)]);
        assert_eq!(out.files, 1);
        assert_eq!(std::fs::read(s.t("f")).unwrap(), b"the user's file");
        assert_eq!(std::fs::read(s.t("g")).unwrap(), b"other");
    }
}

#[test]
fn existing_file_symlink_in_the_target_is_replaced_never_written_through() {
    let mut f = Forge::new("hostile-e");
    let file = f.file(b"f", b"restored content");
    let snap = f.snapshot(vec![file]);
    let s = Scene::new();
    std::os::unix::fs::symlink(s.outside().join("secret"), s.t("f")).unwrap();
    let out = s.restore(&f.repo, &snap, opts(false));
    assert_eq!(
        failed(&out),
        [(
            "f",
            "a symbolic link already exists in the target (use --overwrite to replace it)"
        )]
    );
    assert!(is_link(&s.t("f")));

    let out = s.restore(&f.repo, &snap, opts(true));
    assert_eq!(failed(&out), []);
    let m = std::fs::symlink_metadata(s.t("f")).unwrap();
    assert!(m.file_type().is_file());
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o600, MTIME));
    assert_eq!(std::fs::read(s.t("f")).unwrap(), b"restored content");
    assert_eq!(
        std::fs::read(s.outside().join("secret")).unwrap(),
        b"outside secret"
    );
}

#[test]
fn symlinks_are_restored_as_data_and_nothing_goes_through_them() {
    let mut f = Forge::new("hostile-f");
    let s = Scene::new();
    let inner = vec![
        Forge::link(b"up", b"../../outside/secret"),
        f.file(b"file", b"m"),
    ];
    let m = f.dir(b"m", inner);
    let first = f.snapshot(vec![Forge::link(b"l", &s.outside_bytes()), m]);
    let out = s.restore(&f.repo, &first, opts(false));
    assert_eq!(failed(&out), []);
    assert_eq!(out.files, 3);
    assert_eq!(std::fs::read_link(s.t("l")).unwrap(), s.outside());
    assert_eq!(
        std::fs::read_link(s.t("m/up")).unwrap(),
        Path::new("../../outside/secret")
    );
    // The link's own time is restored (not its target's).
    assert_eq!(std::fs::symlink_metadata(s.t("l")).unwrap().mtime(), MTIME);

    // A path below a snapshot link is not a path of the snapshot.
    let err = s
        .try_restore(
            &f.repo,
            &first,
            RestoreOptions {
                include: Some("l/secret".into()),
                overwrite: true,
                max_entries: None,
                readers: None,
                durable: false,
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("no such path"), "{err}");

    // A later snapshot with entries beneath `l` meets the restored link: as in case (a).
    let inner = vec![f.file(b"secret", b"pwned")];
    let l = f.dir(b"l", inner);
    let second = f.snapshot(vec![l]);
    let out = s.restore(&f.repo, &second, opts(false));
    assert_eq!(out.failed.len(), 1);
    assert!(out.failed[0].1.contains("not followed"), "{:?}", out.failed);
    let out = s.restore(&f.repo, &second, opts(true));
    assert_eq!(failed(&out), []);
    assert!(is_real_dir(&s.t("l")));
    assert_eq!(std::fs::read(s.t("l/secret")).unwrap(), b"pwned");
}

/// A WAL-mode database with `rows` rows, its `-wal` and `-shm` copied aside while a
/// connection still had them (closing would checkpoint and delete them).
fn database_with_live_wal(path: &Path, rows: u32, tag: &str) -> (Vec<u8>, Vec<u8>) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
         CREATE TABLE m(id INTEGER PRIMARY KEY, t TEXT);",
    )
    .unwrap();
    for i in 0..rows {
        c.execute("INSERT INTO m(t) VALUES (?1)", [format!("{tag} {i}")])
            .unwrap();
    }
    let wal = std::fs::read(path.with_extension("db-wal")).unwrap();
    let shm = std::fs::read(path.with_extension("db-shm")).unwrap();
    drop(c);
    (wal, shm)
}

fn rows(path: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open(path).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let mut st = c.prepare("SELECT t FROM m ORDER BY id").unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn stale_sqlite_journals_in_the_target_are_removed_before_the_database_lands() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("chats");
    std::fs::create_dir(&src).unwrap();
    database_with_live_wal(&src.join("msgstore.db"), 50, "kept");
    let want = rows(&src.join("msgstore.db"));
    let key = BackupKey::from_bytes([3; 32]);
    let repo = Repository::init(Storage::open("memory://hostile-g").unwrap(), &key).unwrap();
    let snap = backup(&repo, &[src], &BackupOptions::default(), &NoProgress)
        .unwrap()
        .snapshot;
    // A stale WAL of another database with the same page size. Left beside the restored copy,
    // SQLite replays it: the database then reads as the 500 "stale" rows (seen when the removal
    // is disabled), with integrity_check still ok.
    let (wal, shm) = database_with_live_wal(&work.path().join("other.db"), 500, "stale");

    for (overwrite, existing_db) in [(true, true), (false, false)] {
        let s = Scene::new();
        std::fs::create_dir(s.t("chats")).unwrap();
        if existing_db {
            std::fs::copy(work.path().join("other.db"), s.t("chats/msgstore.db")).unwrap();
        }
        std::fs::write(s.t("chats/msgstore.db-wal"), &wal).unwrap();
        std::fs::write(s.t("chats/msgstore.db-shm"), &shm).unwrap();
        let out = s.restore(&repo, &snap, opts(overwrite));
        assert_eq!(failed(&out), []);
        assert!(!s.t("chats/msgstore.db-wal").exists());
        assert!(!s.t("chats/msgstore.db-shm").exists());
        assert_eq!(rows(&s.t("chats/msgstore.db")), want);
    }

    // A journal in the way that is not a file or link: the database is not placed.
    let s = Scene::new();
    std::fs::create_dir_all(s.t("chats/msgstore.db-wal")).unwrap();
    let out = s.restore(&repo, &snap, opts(true));
    assert_eq!(out.failed.len(), 1, "{:?}", out.failed);
    assert_eq!(out.failed[0].0, "chats/msgstore.db");
    assert!(!s.t("chats/msgstore.db").exists());
}

#[test]
fn journals_stored_beside_a_database_copy_are_skipped() {
    let mut f = Forge::new("hostile-g2");
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("a.db");
    database_with_live_wal(&db, 5, "row");
    let (wal, shm) = database_with_live_wal(&work.path().join("b.db"), 50, "stale");
    let nodes = vec![
        f.file_with(b"msgstore.db", &std::fs::read(&db).unwrap(), true),
        f.file(b"msgstore.db-shm", &shm),
        f.file(b"msgstore.db-wal", &wal),
    ];
    let snap = f.snapshot(nodes);
    let s = Scene::new();
    let out = s.restore(&f.repo, &snap, opts(false));
    assert_eq!(failed(&out), []);
    let why = "SQLite journal beside a consistent database copy; not restored (it would be \
               replayed over the copy)";
    assert_eq!(
        out.skipped,
        [
            ("msgstore.db-shm".to_string(), why.to_string()),
            ("msgstore.db-wal".to_string(), why.to_string())
        ]
    );
    assert!(!s.t("msgstore.db-wal").exists());
    assert_eq!(rows(&s.t("msgstore.db")).len(), 5);
}

#[test]
fn check_reports_unsafe_and_duplicate_names() {
    let mut f = Forge::new("hostile-h");
    let a = f.file(b"f", b"one");
    let b = f.file(b"f", b"two");
    let dotdot = f.file(b"..", b"x");
    let d = f.dir(b"d", vec![a, b, dotdot]);
    let good = f.file(b"good", b"fine");
    f.snapshot(vec![d, good]);
    let r = check(&f.repo, CheckOptions { read_data: true }, &NoProgress).unwrap();
    assert!(!r.ok());
    assert!(
        r.errors
            .iter()
            .any(|e| e.contains("(d/f): duplicate name in snapshot tree")),
        "{:?}",
        r.errors
    );
    assert!(
        r.errors
            .iter()
            .any(|e| e.contains("(d/..): unsafe file name in snapshot tree")),
        "{:?}",
        r.errors
    );
    let damaged: Vec<String> = r.damaged.values().flatten().cloned().collect();
    assert_eq!(
        damaged,
        [
            format!("d/f ({DUPLICATE})"),
            "d/.. (unsafe file name in snapshot tree (`.` or `..`))".to_string()
        ]
    );
}

#[test]
fn trees_nested_too_deep_are_listed_not_followed() {
    let mut f = Forge::new("hostile-depth");
    let mut node = f.file(b"bottom", b"deep");
    for _ in 0..300 {
        node = f.dir(b"d", vec![node]);
    }
    let snap = f.snapshot(vec![node]);
    let s = Scene::new();
    let out = s.restore(&f.repo, &snap, opts(false));
    assert_eq!(out.failed.len(), 1, "{:?}", out.failed);
    assert!(out.failed[0].1.contains("nested deeper than 256"));
    assert_eq!(out.failed[0].0, "d/".repeat(256));
    assert_eq!(out.files, 0);
    let r = check(&f.repo, CheckOptions::default(), &NoProgress).unwrap();
    assert!(!r.ok());
}

/// Trees are deduplicated, so two entries naming the same subtree at each of 40 levels describe
/// 2^40 files in a few kilobytes: restore stops at its entry bound and says so, instead of
/// filling the disk; nothing outside the target changes.
#[test]
fn a_snapshot_that_names_one_subtree_twice_per_level_is_not_expanded_without_bound() {
    let mut f = Forge::new("hostile-dag");
    let mut level = vec![f.file(b"leaf", b"x")];
    for _ in 0..40 {
        let a = f.dir(b"a", level.clone());
        let b = f.dir(b"b", level);
        level = vec![a, b];
    }
    let snap = f.snapshot(level);
    let s = Scene::new();
    let out = s.restore(
        &f.repo,
        &snap,
        RestoreOptions {
            include: None,
            overwrite: false,
            max_entries: Some(2_000),
            readers: None,
            durable: false,
        },
    );
    assert_eq!(out.failed.len(), 1, "{:?}", out.failed);
    assert!(
        out.failed[0].1.contains("more than 2000 entries"),
        "{:?}",
        out.failed
    );
    assert!(out.files + out.dirs <= 2_000);
}

/// Trees in parts (FORMAT §10.2) written by someone else who holds the key: a part that is
/// itself a list of parts, a part listed twice, a part in no index, and two parts that both
/// hold `x`. Each of the first three folders fails as a whole, with the reason; the overlap
/// is a duplicate name, refused like one within a tree; everything else restores, nothing
/// outside the target changes, and check reports each.
#[test]
fn hostile_trees_in_parts_fail_their_folder_only() {
    let mut f = Forge::new("hostile-parts");
    let a = vec![f.file(b"a", b"part a")];
    let part_a = f.tree(a);
    let inner = f.parts_tree(&[part_a]);
    let nested = f.parts_tree(&[part_a, inner]);
    let twice = f.parts_tree(&[part_a, part_a]);
    let missing = f.parts_tree(&[part_a, BlobId::from_bytes([0x42; 32])]);
    let x1 = vec![f.file(b"w", b"w"), f.file(b"x", b"first x")];
    let x2 = vec![f.file(b"x", b"second x"), f.file(b"y", b"y")];
    let (p1, p2) = (f.tree(x1), f.tree(x2));
    let overlap = f.parts_tree(&[p1, p2]);
    let dir = |name: &[u8], subtree| Forge::node(name, NodeKind::Dir { subtree }, 0o755);
    let good = f.file(b"good", b"fine");
    let snap = f.snapshot(vec![
        good,
        dir(b"missing", missing),
        dir(b"nested", nested),
        dir(b"overlap", overlap),
        dir(b"twice", twice),
    ]);

    let s = Scene::new();
    let out = s.restore(&f.repo, &snap, opts(false));
    let got = failed(&out);
    let reason = |path: &str| {
        got.iter()
            .find(|(p, _)| *p == path)
            .map(|(_, e)| e.to_string())
            .unwrap_or_else(|| panic!("{path} not listed in {got:?}"))
    };
    assert!(reason("nested/").contains("a list of tree parts where a listing was expected"));
    assert!(reason("twice/").contains("lists a part twice"));
    assert!(reason("missing/").contains("not in any index"));
    assert!(reason("overlap/x").contains("duplicate name"));
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(std::fs::read(s.t("good")).unwrap(), b"fine");
    assert_eq!(std::fs::read(s.t("overlap/w")).unwrap(), b"w");
    assert_eq!(std::fs::read(s.t("overlap/y")).unwrap(), b"y");
    assert!(!s.t("overlap/x").exists());
    assert!(!s.t("nested/a").exists() && !s.t("twice/a").exists());

    let r = check(&f.repo, CheckOptions { read_data: true }, &NoProgress).unwrap();
    assert!(!r.ok());
    let damaged: Vec<String> = r.damaged.values().flatten().cloned().collect();
    for d in [
        "missing/ (directory listing damaged)",
        "nested/ (directory listing damaged)",
        "twice/ (directory listing damaged)",
    ] {
        assert!(damaged.iter().any(|x| x == d), "{d} not in {damaged:?}");
    }
    assert!(
        damaged
            .iter()
            .any(|x| x.starts_with("overlap/x (duplicate name")),
        "{damaged:?}"
    );
}
