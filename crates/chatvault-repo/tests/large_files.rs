//! Large files through the engine: content lists (docs/FORMAT.md §10.1) and the SQLite copy
//! that is skipped when nothing changed (§5.1).
//!
//! A database with thousands of pages gets content lists instead of an inline id list; it
//! restores logically identical, check and prune walk its lists, a changed page stores only a
//! few new list blobs, and an unchanged database is neither copied nor re-read.
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use std::collections::HashMap;
use std::path::Path;

use chatvault_format::key::BackupKey;
use chatvault_format::list::INLINE_MAX;
use chatvault_format::objects::NodeKind;
use chatvault_repo::backup::{BackupOptions, NoProgress, backup};
use chatvault_repo::check::{CheckOptions, check};
use chatvault_repo::forget::{KeepPolicy, forget};
use chatvault_repo::prune::{PruneOptions, prune};
use chatvault_repo::repository::{Repository, layout};
use chatvault_repo::restore::{RestoreOptions, restore};
use chatvault_repo::sqlite;
use chatvault_repo::storage::Storage;
use rusqlite::Connection;

/// A WAL-mode database of about `rows` × 1 KiB.
fn make_db(path: &Path, rows: usize) {
    let c = Connection::open(path).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.execute_batch("CREATE TABLE messages(id INTEGER PRIMARY KEY, body TEXT)")
        .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 0..rows {
        tx.execute(
            "INSERT INTO messages(body) VALUES (?1)",
            [format!("{i:>6} {}", "message text ".repeat(80))],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

fn db_node(repo: &Repository, snap: &chatvault_format::objects::Snapshot) -> NodeKind {
    let index = repo.load_index().unwrap();
    let root = repo.load_tree(&index, &snap.tree).unwrap();
    let NodeKind::Dir { subtree } = &root.nodes[0].kind else {
        panic!("root is the folder")
    };
    let dir = repo.load_tree(&index, subtree).unwrap();
    let n = dir
        .nodes
        .iter()
        .find(|n| n.name.0 == b"msgstore.db")
        .expect("database node");
    n.kind.clone()
}

#[test]
fn a_database_with_thousands_of_pages_uses_content_lists_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("chats");
    std::fs::create_dir_all(&src).unwrap();
    let db = src.join("msgstore.db");
    make_db(&db, 6_000); // ≈ 6 MB: ~1,500 pages of 4 KiB
    let storage = Storage::open(dir.path().join("repo").to_str().unwrap()).unwrap();
    let key = BackupKey::generate(&mut rand_core::OsRng);
    let repo = Repository::init(storage.clone(), &key).unwrap();
    let scratch = dir.path().join("scratch");
    let opts = BackupOptions {
        scratch_dir: Some(scratch.clone()),
        ..BackupOptions::default()
    };

    let first = backup(&repo, std::slice::from_ref(&src), &opts, &NoProgress).unwrap();
    let NodeKind::File {
        content,
        lists,
        sqlite_snapshot: true,
        sqlite_source: Some(_),
        ..
    } = db_node(&repo, &first.snapshot)
    else {
        panic!("a database node with its source stamps")
    };
    assert!(content.is_empty() && !lists.is_empty() && lists.len() <= INLINE_MAX);
    // No plaintext copy is left in the scratch folder (none is made: pages are read in place).
    assert_eq!(std::fs::read_dir(&scratch).map_or(0, |d| d.count()), 0);

    // Unchanged: the database is neither copied nor read again; the node is reused.
    let same = backup(&repo, std::slice::from_ref(&src), &opts, &NoProgress).unwrap();
    assert_eq!(same.snapshot.summary.files_read, 0);
    // Only directory listings can be new (the folder's times changed when SQLite made its
    // `-shm` during the first copy): no page and no list.
    assert!(
        same.snapshot.summary.new_bytes < 4096,
        "{:?}",
        same.snapshot.summary
    );
    assert_eq!(
        db_node(&repo, &same.snapshot),
        db_node(&repo, &first.snapshot)
    );

    // Change a few rows: only their pages and the lists above them are new.
    {
        let c = Connection::open(&db).unwrap();
        for id in [10, 3_000, 5_990] {
            c.execute("UPDATE messages SET body = 'edited' WHERE id = ?1", [id])
                .unwrap();
        }
    }
    let second = backup(&repo, std::slice::from_ref(&src), &opts, &NoProgress).unwrap();
    assert_eq!(second.snapshot.summary.files_read, 1);
    let new_blobs = second.snapshot.summary.new_blobs;
    assert!(
        (1..=40).contains(&new_blobs),
        "{new_blobs} new blobs for 3 changed rows"
    );

    // Restore on a new device: logically identical.
    let want = sqlite::logical_digest(&db).unwrap();
    let reopened = Repository::open(storage.clone(), &key).unwrap();
    let out = dir.path().join("out");
    restores_and_checks(&reopened, &second.snapshot, &out, &want);

    // Prune after forgetting the older snapshots keeps everything the newest needs (it walks
    // the lists), and the newest still restores.
    forget(
        &reopened,
        &KeepPolicy {
            last: Some(1),
            ..KeepPolicy::default()
        },
        false,
    )
    .unwrap();
    prune(
        &reopened,
        &PruneOptions {
            grace: std::time::Duration::ZERO,
            ..PruneOptions::default()
        },
    )
    .unwrap();
    let out2 = dir.path().join("out2");
    restores_and_checks(&reopened, &second.snapshot, &out2, &want);
}

/// Restores `snap` into `out`: no failure, the database logically `want`; then check
/// --read-data passes.
fn restores_and_checks(
    repo: &Repository,
    snap: &chatvault_format::objects::Snapshot,
    out: &Path,
    want: &str,
) {
    let r = restore(repo, snap, out, &RestoreOptions::default(), &NoProgress).unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    assert_eq!(
        sqlite::logical_digest(&out.join("chats/msgstore.db")).unwrap(),
        want
    );
    let report = check(repo, CheckOptions { read_data: true }, &NoProgress).unwrap();
    assert!(report.ok(), "{:?}", report.errors);
}

#[test]
fn a_killed_runs_database_copy_is_removed_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("scratch");
    // What a killed run leaves: its lock file (lock released by the kernel) and its folder.
    std::fs::create_dir_all(base.join("run-dead")).unwrap();
    std::fs::write(base.join("run-dead/copy-0.db"), b"plaintext chats").unwrap();
    std::fs::write(base.join("run-dead.lock"), b"").unwrap();
    // A live run's folder must survive.
    let live = sqlite::Scratch::new(&base).unwrap();
    std::fs::write(live.dir().join("copy-0.db"), b"in use").unwrap();
    assert!(!base.join("run-dead").exists());
    assert!(!base.join("run-dead.lock").exists());
    let other = sqlite::Scratch::new(&base).unwrap();
    assert!(live.dir().join("copy-0.db").exists());
    drop(other);
    drop(live);
    assert_eq!(std::fs::read_dir(&base).unwrap().count(), 0);
}

#[test]
fn the_metadata_cache_is_used_verified_and_never_trusted_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("chats");
    std::fs::create_dir_all(src.join("Media")).unwrap();
    std::fs::write(src.join("Media/a.jpg"), vec![7u8; 300_000]).unwrap();
    let repo_dir = dir.path().join("repo");
    let storage = Storage::open(repo_dir.to_str().unwrap()).unwrap();
    let key = BackupKey::generate(&mut rand_core::OsRng);
    let repo = Repository::init(storage.clone(), &key).unwrap();
    let snap = backup(&repo, &[src], &BackupOptions::default(), &NoProgress)
        .unwrap()
        .snapshot;

    let cache_base = dir.path().join("home/cache");
    let cache_dir = cache_base.join(repo.id().to_hex());
    // An earlier version's one-file-per-blob folder is removed when the cache is opened.
    std::fs::create_dir_all(cache_dir.join("blobs/ab")).unwrap();
    std::fs::write(cache_dir.join("blobs/ab/abcd"), b"old entry").unwrap();
    let mut cached = Repository::open(storage.clone(), &key).unwrap();
    cached.set_cache(&cache_base);
    assert!(!cache_dir.join("blobs").exists());
    let index = cached.load_index().unwrap();
    let root = cached.load_tree(&index, &snap.tree).unwrap();
    assert_eq!(cached.snapshots().unwrap().len(), 1);
    let count = |kind: &str| {
        walk_files(&cache_dir.join(kind))
            .into_iter()
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .count()
    };
    assert!(count("index") >= 1 && count("snapshots") == 1 && count("packs") == 1);

    // A damaged cache entry (the last bytes of the pack's cache file: the root tree's tag) is
    // fetched again, transparently.
    for p in walk_files(&cache_dir.join("packs")) {
        let mut b = std::fs::read(&p).unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        std::fs::write(&p, b).unwrap();
    }
    let again = Repository::open(storage.clone(), &key).unwrap();
    let mut again = again;
    again.set_cache(&cache_base);
    assert_eq!(again.load_tree(&index, &snap.tree).unwrap(), root);

    // With every pack in storage damaged, the cached trees still load (the cache is used) ...
    for p in walk_files(&repo_dir.join("data")) {
        let mut b = std::fs::read(&p).unwrap();
        for x in b.iter_mut().take(64) {
            *x ^= 0xff;
        }
        std::fs::write(&p, b).unwrap();
    }
    assert_eq!(again.load_tree(&index, &snap.tree).unwrap(), root);
    // ... but check verifies storage, not the device's copies.
    let report = check(&again, CheckOptions { read_data: false }, &NoProgress).unwrap();
    assert!(!report.ok(), "check trusted the cache");

    // Objects deleted from the repository leave the cache.
    for p in walk_files(&repo_dir.join("snapshots")) {
        std::fs::remove_file(p).unwrap();
    }
    assert!(again.snapshots().unwrap().is_empty());
    assert_eq!(count("snapshots"), 0);
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn pack_files(repo_dir: &Path) -> Vec<std::path::PathBuf> {
    walk_files(&repo_dir.join("data"))
}

#[test]
fn format_2_packs_are_padded_and_a_format_1_repository_upgrades_in_place() {
    use chatvault_format::pack;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("chats");
    std::fs::create_dir_all(&src).unwrap();
    // One "media file" of a distinctive size: its pack must not reveal it.
    std::fs::write(src.join("IMG-1.jpg"), vec![0x5a; 1_234_567]).unwrap();
    let key = BackupKey::generate(&mut rand_core::OsRng);

    // A new repository is format 2: every pack's length is a Padmé length and its header
    // opens only through the sealed trailer.
    let new_dir = dir.path().join("new");
    let storage = Storage::open(new_dir.to_str().unwrap()).unwrap();
    let repo = Repository::init(storage.clone(), &key).unwrap();
    assert_eq!(repo.format_version(), 2);
    backup(
        &repo,
        std::slice::from_ref(&src),
        &BackupOptions::default(),
        &NoProgress,
    )
    .unwrap();
    for p in pack_files(&new_dir) {
        let len = std::fs::metadata(&p).unwrap().len();
        assert_eq!(pack::padme(len), len, "{} is not padded", p.display());
    }
    let report = check(&repo, CheckOptions { read_data: true }, &NoProgress).unwrap();
    assert!(report.ok(), "{:?}", report.errors);

    // A format 1 repository keeps unpadded packs until it is upgraded ...
    let old_dir = dir.path().join("old");
    let storage = Storage::open(old_dir.to_str().unwrap()).unwrap();
    let mut repo = Repository::init_version(storage.clone(), &key, 1).unwrap();
    let first = backup(
        &repo,
        std::slice::from_ref(&src),
        &BackupOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let v1_packs = pack_files(&old_dir);
    for p in &v1_packs {
        let b = std::fs::read(p).unwrap();
        let hlen = pack::header_len_from_tail(&b[b.len() - 4..]).unwrap();
        assert!(
            hlen < b.len(),
            "format 1 packs end in a clear header length"
        );
    }
    // ... then upgrades in place (twice is a no-op) and writes padded packs from then on.
    assert!(repo.upgrade().unwrap());
    assert!(!repo.upgrade().unwrap());
    let reopened = Repository::open(storage.clone(), &key).unwrap();
    assert_eq!(reopened.format_version(), 2);
    std::fs::write(src.join("IMG-2.jpg"), vec![0x6b; 777_777]).unwrap();
    let second = backup(
        &reopened,
        std::slice::from_ref(&src),
        &BackupOptions::default(),
        &NoProgress,
    )
    .unwrap();
    for p in pack_files(&old_dir)
        .iter()
        .filter(|p| !v1_packs.contains(p))
    {
        let len = std::fs::metadata(p).unwrap().len();
        assert_eq!(pack::padme(len), len);
    }
    for (snap, name) in [(&first.snapshot, "r1"), (&second.snapshot, "r2")] {
        let out = dir.path().join(name);
        let r = restore(
            &reopened,
            snap,
            &out,
            &RestoreOptions::default(),
            &NoProgress,
        )
        .unwrap();
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        assert_eq!(
            std::fs::read(out.join("chats/IMG-1.jpg")).unwrap(),
            vec![0x5a; 1_234_567]
        );
    }
    let report = check(&reopened, CheckOptions { read_data: true }, &NoProgress).unwrap();
    assert!(report.ok(), "{:?}", report.errors);
}

/// What a load of the index found, comparably: entries, index objects, damaged ones, packs.
type IndexView = (
    Vec<(
        chatvault_format::id::BlobId,
        chatvault_repo::repository::BlobLocation,
    )>,
    Vec<chatvault_format::id::IndexId>,
    Vec<String>,
    Vec<(chatvault_format::id::PackId, u64)>,
);

fn index_view(index: &chatvault_repo::repository::Index) -> IndexView {
    let mut packs: Vec<_> = index.packs.iter().map(|(k, v)| (*k, *v)).collect();
    packs.sort();
    (
        index.iter().collect(),
        index.files.clone(),
        index.damaged.iter().map(|(id, _)| id.to_hex()).collect(),
        packs,
    )
}

#[test]
fn the_merged_index_in_the_cache_always_equals_a_full_load() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("chats");
    std::fs::create_dir_all(&src).unwrap();
    let repo_dir = dir.path().join("repo");
    let storage = Storage::open(repo_dir.to_str().unwrap()).unwrap();
    let key = BackupKey::generate(&mut rand_core::OsRng);
    let repo = Repository::init(storage.clone(), &key).unwrap();
    let day = |n: usize| {
        std::fs::write(
            src.join(format!("day-{n}.txt")),
            format!("day {n} ").repeat(5000),
        )
        .unwrap();
        backup(
            &repo,
            std::slice::from_ref(&src),
            &BackupOptions::default(),
            &NoProgress,
        )
        .unwrap();
    };
    let cache_base = dir.path().join("home/cache");
    let merged = cache_base
        .join(repo.id().to_hex())
        .join(chatvault_repo::cache::MERGED_INDEX);
    let cached = || {
        let mut r = Repository::open(storage.clone(), &key).unwrap();
        r.set_cache(&cache_base);
        r
    };
    let same = |why: &str| {
        let full = Repository::open(storage.clone(), &key)
            .unwrap()
            .load_index()
            .unwrap();
        let fast = cached().load_index().unwrap();
        assert_eq!(index_view(&fast), index_view(&full), "{why}");
        assert!(!full.is_empty());
    };

    for n in 0..3 {
        day(n);
    }
    same("first load: built from every index object");
    let first = std::fs::read(&merged).expect("the merged index is cached");
    let some_blob = repo.load_index().unwrap().iter().next().unwrap().0;
    assert!(
        !first.windows(32).any(|w| w == some_blob.as_bytes()),
        "the merged index is sealed"
    );
    day(3);
    same("one new index object besides the merged index");
    assert_eq!(
        std::fs::read(&merged).unwrap(),
        first,
        "not rewritten for one object"
    );
    for n in 4..12 {
        day(n);
    }
    same("eight new index objects");
    assert_ne!(
        std::fs::read(&merged).unwrap(),
        first,
        "rewritten after eight"
    );

    // A damaged merged index is rebuilt; so is one whose sources changed in storage.
    let mut bad = std::fs::read(&merged).unwrap();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    std::fs::write(&merged, &bad).unwrap();
    same("damaged merged index");
    assert_ne!(std::fs::read(&merged).unwrap(), bad);
    let an_index = walk_files(&repo_dir.join("index")).remove(0);
    let mut b = std::fs::read(&an_index).unwrap();
    b[40] ^= 1;
    std::fs::write(&an_index, &b).unwrap();
    same("an index object damaged in storage");
    let damaged = cached().load_index().unwrap();
    assert_eq!(
        damaged.damaged.len(),
        1,
        "the damage is reported, not hidden by the cache"
    );
    b[40] ^= 1;
    std::fs::write(&an_index, &b).unwrap();

    // Prune rewrites and deletes index objects: the merged index follows.
    forget(
        &repo,
        &KeepPolicy {
            last: Some(2),
            ..KeepPolicy::default()
        },
        false,
    )
    .unwrap();
    prune(
        &repo,
        &PruneOptions {
            grace: std::time::Duration::ZERO,
            repack_threshold_percent: 1,
            ..PruneOptions::default()
        },
    )
    .unwrap();
    same("after prune");
    day(12);
    same("a backup after prune");
}

#[test]
fn a_live_database_is_read_in_place_as_of_its_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("chats");
    std::fs::create_dir_all(&src).unwrap();
    let db = src.join("msgstore.db");
    make_db(&db, 2_000);
    // The app is running: commits that sit only in the WAL, and a transaction in progress.
    let app = Connection::open(&db).unwrap();
    app.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    for i in 0..300 {
        app.execute(
            "INSERT INTO messages(body) VALUES (?1)",
            [format!("committed {i} {}", "x".repeat(900))],
        )
        .unwrap();
    }
    app.execute_batch("BEGIN IMMEDIATE; DELETE FROM messages WHERE id % 2 = 0;")
        .unwrap();
    let wal = std::fs::metadata(sqlite::wal_path(&db)).unwrap().len();
    assert!(wal > 300 * 1000, "the commits are in the WAL ({wal} bytes)");
    let want = sqlite::logical_digest(&db).unwrap(); // a reader's view: committed only

    let storage = Storage::open(dir.path().join("repo").to_str().unwrap()).unwrap();
    let key = BackupKey::generate(&mut rand_core::OsRng);
    let repo = Repository::init(storage.clone(), &key).unwrap();
    let scratch = dir.path().join("scratch");
    let opts = BackupOptions {
        scratch_dir: Some(scratch.clone()),
        ..BackupOptions::default()
    };
    let done = backup(&repo, std::slice::from_ref(&src), &opts, &NoProgress).unwrap();
    assert!(!scratch.exists(), "no plaintext copy was made");
    app.execute_batch("ROLLBACK").unwrap();
    drop(app);
    restores_and_checks(&repo, &done.snapshot, &dir.path().join("out"), &want);
}

/// The device cache keeps the content lists of a large database only for a repository that is
/// not in a local folder (FORMAT §12.3): there the lists are on the same disk, and a multi-GB
/// database has tens of thousands of them. Trees are cached either way, and both repositories
/// restore the database.
#[test]
fn content_lists_are_cached_only_for_repositories_not_in_a_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("chats");
    std::fs::create_dir_all(&src).unwrap();
    let db = src.join("msgstore.db");
    make_db(&db, 3_000); // ≈ 750 pages: content lists
    let want = sqlite::logical_digest(&db).unwrap();
    let key = BackupKey::generate(&mut rand_core::OsRng);
    for (name, url) in [
        (
            "folder",
            dir.path().join("repo").to_str().unwrap().to_string(),
        ),
        ("memory", "memory://lists-cache".to_string()),
    ] {
        let storage = Storage::open(&url).unwrap();
        let repo = Repository::init(storage.clone(), &key).unwrap();
        let snap = backup(
            &repo,
            std::slice::from_ref(&src),
            &BackupOptions::default(),
            &NoProgress,
        )
        .unwrap()
        .snapshot;
        let cache_base = dir.path().join(format!("home-{name}/cache"));
        let mut cached = Repository::open(storage, &key).unwrap();
        cached.set_cache(&cache_base);
        let NodeKind::File { lists, .. } = db_node(&cached, &snap) else {
            panic!("a database node")
        };
        assert!(!lists.is_empty(), "{name}: the database has content lists");
        let out = dir.path().join(format!("out-{name}"));
        restores_and_checks(&cached, &snap, &out, &want);
        // What the cache holds: one sparse file per pack, named by an indexed pack, holding
        // sealed trees and lists at their offsets in the pack (zeros elsewhere).
        let index = cached.load_index().unwrap();
        let mut files = HashMap::new();
        for p in walk_files(&cache_base.join(repo.id().to_hex()).join("packs")) {
            let hex = p.file_name().unwrap().to_string_lossy().into_owned();
            let pack: chatvault_format::id::PackId = hex.parse().expect("named by a pack id");
            assert!(
                index.packs.contains_key(&pack),
                "{name}: {hex} is not indexed"
            );
            files.insert(pack, std::fs::read(&p).unwrap());
        }
        let (mut trees, mut lists_cached) = (0, 0);
        for (id, loc) in index.iter() {
            let Some(bytes) = files.get(&loc.pack) else {
                continue;
            };
            let at = loc.offset as usize;
            let Some(sealed) = bytes.get(at..at + loc.length as usize) else {
                continue;
            };
            if sealed[..24].iter().all(|&b| b == 0) {
                continue; // never cached
            }
            let stored = cached
                .storage()
                .read_range(&layout::pack(&loc.pack), loc.offset, u64::from(loc.length))
                .unwrap()
                .expect("the pack is stored");
            assert_eq!(
                sealed,
                &stored[..],
                "{name}: cached blob {} differs from storage",
                id.short()
            );
            match loc.ty {
                chatvault_format::blob::BlobType::Tree => trees += 1,
                chatvault_format::blob::BlobType::List => lists_cached += 1,
                chatvault_format::blob::BlobType::Data => panic!("{name}: a data blob cached"),
            }
        }
        assert!(
            files.len() < trees + lists_cached,
            "{name}: one cache file per pack, not per blob"
        );
        assert!(trees >= 2, "{name}: trees are cached ({trees})");
        if name == "folder" {
            assert_eq!(lists_cached, 0, "a local folder's lists are not cached");
        } else {
            assert!(
                lists_cached >= lists.len(),
                "the lists of a repository elsewhere are cached ({lists_cached})"
            );
        }
    }
}
