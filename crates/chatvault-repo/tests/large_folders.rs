//! Large folders through the engine: trees in parts (docs/FORMAT.md §10.2).
//!
//! A folder of thousands of files (a year of photos) is stored as parts and a list of them; a
//! day that adds a few files stores the parts they fall into and the list, not the whole
//! listing; an unchanged folder stores nothing; a new device restores it; prune after forget
//! keeps the parts the remaining snapshots need; check reads them all.
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use std::collections::HashSet;
use std::path::Path;

use chatvault_format::blob::BlobType;
use chatvault_format::id::BlobId;
use chatvault_format::key::BackupKey;
use chatvault_format::objects::{NodeKind, Snapshot, TreeBlob};
use chatvault_repo::backup::{BackupOptions, NoProgress, backup};
use chatvault_repo::check::{CheckOptions, check};
use chatvault_repo::forget::{KeepPolicy, forget};
use chatvault_repo::prune::{PruneOptions, prune};
use chatvault_repo::repository::Repository;
use chatvault_repo::restore::{RestoreOptions, restore};
use chatvault_repo::storage::Storage;

fn photo(dir: &Path, i: usize) {
    let name = format!("IMG-{:08}-WA{:04}.jpg", 20250101 + i / 10, i % 10);
    std::fs::write(dir.join(name), format!("photo {i} ").repeat(1 + i % 7)).unwrap();
}

/// The tree blob ids in the index.
fn tree_blobs(repo: &Repository) -> HashSet<BlobId> {
    repo.load_index()
        .unwrap()
        .iter()
        .filter(|(_, l)| l.ty == BlobType::Tree)
        .map(|(id, _)| id)
        .collect()
}

/// The tree blob of the folder `Images` in `snap`, as stored.
fn images_blob(repo: &Repository, snap: &Snapshot) -> (BlobId, TreeBlob) {
    let index = repo.load_index().unwrap();
    let mut tree = repo.load_tree(&index, &snap.tree).unwrap();
    for name in [&b"Media"[..], b"Images"] {
        let NodeKind::Dir { subtree } = &tree
            .nodes
            .iter()
            .find(|n| n.name.0 == name)
            .expect("folder")
            .kind
        else {
            panic!("a folder")
        };
        if name == b"Images" {
            return (*subtree, repo.load_tree_blob(&index, subtree).unwrap());
        }
        tree = repo.load_tree(&index, subtree).unwrap();
    }
    unreachable!()
}

/// A temp folder with `Media/Images` holding `n` photos; returns it and `Media`.
fn photo_folder(n: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("Media");
    let images = src.join("Images");
    std::fs::create_dir_all(&images).unwrap();
    for i in 0..n {
        photo(&images, i);
    }
    (dir, src)
}

fn same_files(a: &Path, b: &Path) {
    let list = |d: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let names = list(a);
    assert_eq!(names, list(b));
    for n in names {
        assert_eq!(
            std::fs::read(a.join(&n)).unwrap(),
            std::fs::read(b.join(&n)).unwrap()
        );
    }
}

#[test]
fn a_large_folder_is_stored_in_parts_and_a_day_stores_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("Media");
    let images = src.join("Images");
    std::fs::create_dir_all(&images).unwrap();
    let n = 4_000;
    for i in 0..n {
        photo(&images, i);
    }
    let storage = Storage::open(dir.path().join("repo").to_str().unwrap()).unwrap();
    let key = BackupKey::generate(&mut rand_core::OsRng);
    let repo = Repository::init(storage.clone(), &key).unwrap();
    let opts = BackupOptions::default();

    let first = backup(&repo, std::slice::from_ref(&src), &opts, &NoProgress).unwrap();
    let (first_id, TreeBlob::Parts(first_parts)) = images_blob(&repo, &first.snapshot) else {
        panic!("a folder of {n} files is stored in parts")
    };
    // About 450 KB of listing in parts of about 16 KiB.
    assert!(first_parts.len() >= 10, "{first_parts:?}");
    let index = repo.load_index().unwrap();
    assert_eq!(repo.load_tree(&index, &first_id).unwrap().nodes.len(), n);

    // Unchanged: the folder's tree (its list and parts) is reused, nothing new is stored.
    let before = tree_blobs(&repo);
    let same = backup(&repo, std::slice::from_ref(&src), &opts, &NoProgress).unwrap();
    assert_eq!(images_blob(&repo, &same.snapshot).0, first_id);
    assert_eq!(tree_blobs(&repo), before);

    // A day: 25 new photos (named after the day, so at the end) and one edited early on.
    for i in n..n + 25 {
        photo(&images, i);
    }
    std::fs::write(images.join("IMG-20250101-WA0003.jpg"), b"edited").unwrap();
    let day = backup(&repo, std::slice::from_ref(&src), &opts, &NoProgress).unwrap();
    let (day_id, TreeBlob::Parts(day_parts)) = images_blob(&repo, &day.snapshot) else {
        panic!("still in parts")
    };
    assert_ne!(day_id, first_id);
    let new_trees: Vec<BlobId> = tree_blobs(&repo).difference(&before).copied().collect();
    let new_parts = day_parts.iter().filter(|p| new_trees.contains(p)).count();
    // The edited file's part and the last one (or two, if the new names cut it); the list of
    // parts; the two folders above.
    assert!((2..=4).contains(&new_parts), "{new_parts} new parts");
    assert!(
        new_trees.len() <= new_parts + 3,
        "{} new tree blobs",
        new_trees.len()
    );
    let whole_listing: u64 = {
        let index = repo.load_index().unwrap();
        day_parts
            .iter()
            .map(|p| u64::from(index.get(p).unwrap().raw_length))
            .sum()
    };
    let stored_listing: u64 = {
        let index = repo.load_index().unwrap();
        new_trees
            .iter()
            .map(|p| u64::from(index.get(p).unwrap().raw_length))
            .sum()
    };
    assert!(
        stored_listing * 4 < whole_listing,
        "{stored_listing} of {whole_listing} bytes of listing stored again"
    );

    // A new device restores the folder as it is.
    let reopened = Repository::open(storage.clone(), &key).unwrap();
    restores_intact(&reopened, &day.snapshot, &dir.path().join("out"), &images);

    // Prune after forgetting all but the last snapshot keeps its parts; check reads them all.
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
    let left = tree_blobs(&reopened);
    assert!(day_parts.iter().all(|p| left.contains(p)));
    let report = check(&reopened, CheckOptions { read_data: true }, &NoProgress).unwrap();
    assert!(report.ok(), "{:?}", report.errors);
    restores_intact(&reopened, &day.snapshot, &dir.path().join("out2"), &images);
}

/// Restores `snap` into `out` without a failure, its `Media/Images` the same as `images`.
fn restores_intact(repo: &Repository, snap: &Snapshot, out: &Path, images: &Path) {
    let r = restore(repo, snap, out, &RestoreOptions::default(), &NoProgress).unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    same_files(images, &out.join("Media/Images"));
}

/// A damaged part (one flipped byte in its pack) costs its folder, with a clear reason, and
/// nothing else: restore on a new device restores the rest and reports the folder; check
/// reports it damaged.
#[test]
fn a_damaged_part_fails_its_folder_only() {
    let (dir, src) = photo_folder(1_500);
    std::fs::write(src.join("notes.txt"), b"not in the large folder").unwrap();
    let repo_dir = dir.path().join("repo");
    let storage = Storage::open(repo_dir.to_str().unwrap()).unwrap();
    let key = BackupKey::generate(&mut rand_core::OsRng);
    let repo = Repository::init(storage.clone(), &key).unwrap();
    let snap = backup(
        &repo,
        std::slice::from_ref(&src),
        &BackupOptions::default(),
        &NoProgress,
    )
    .unwrap()
    .snapshot;
    let (_, TreeBlob::Parts(parts)) = images_blob(&repo, &snap) else {
        panic!("in parts")
    };
    let loc = repo.load_index().unwrap().get(&parts[1]).unwrap();
    let pack = repo_dir.join(chatvault_repo::repository::layout::pack(&loc.pack));
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[loc.offset as usize + 40] ^= 0x01;
    std::fs::write(&pack, bytes).unwrap();

    let reopened = Repository::open(storage, &key).unwrap();
    let out = dir.path().join("out");
    let r = restore(
        &reopened,
        &snap,
        &out,
        &RestoreOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(r.failed.len(), 1, "{:?}", r.failed);
    let (path, why) = &r.failed[0];
    assert_eq!(path, "Media/Images/");
    assert!(
        why.contains("directory not restored") && why.contains("corrupted"),
        "{why}"
    );
    assert_eq!(
        std::fs::read(out.join("Media/notes.txt")).unwrap(),
        b"not in the large folder"
    );
    assert!(!out.join("Media/Images/IMG-20250101-WA0000.jpg").exists());
    let report = check(&reopened, CheckOptions { read_data: true }, &NoProgress).unwrap();
    assert!(!report.ok());
    let damaged: Vec<String> = report.damaged.values().flatten().cloned().collect();
    assert!(
        damaged.contains(&"Media/Images/ (directory listing damaged)".to_string()),
        "{damaged:?}"
    );
}

/// A backup leaves the trees it wrote (a folder's list of parts and its parts too) in the
/// device's cache: the next backup and a restore on this device read them there, not one
/// round trip per folder. Shown by damaging every pack in storage afterwards: the snapshot's
/// trees still load through the cache, and check (which never trusts the cache) fails.
#[test]
fn a_backup_leaves_the_trees_it_wrote_in_the_device_cache() {
    let (dir, src) = photo_folder(1_500);
    let repo_dir = dir.path().join("repo");
    let storage = Storage::open(repo_dir.to_str().unwrap()).unwrap();
    let key = BackupKey::generate(&mut rand_core::OsRng);
    let cache_base = dir.path().join("home/cache");
    let mut repo = Repository::init(storage.clone(), &key).unwrap();
    repo.set_cache(&cache_base);
    let snap = backup(
        &repo,
        std::slice::from_ref(&src),
        &BackupOptions::default(),
        &NoProgress,
    )
    .unwrap()
    .snapshot;
    let index = repo.load_index().unwrap();
    let (images_id, TreeBlob::Parts(_)) = images_blob(&repo, &snap) else {
        panic!("in parts")
    };
    drop(repo);

    for p in walk(&repo_dir.join("data")) {
        let mut b = std::fs::read(&p).unwrap();
        for x in b.iter_mut().take(64) {
            *x ^= 0xff;
        }
        std::fs::write(&p, b).unwrap();
    }
    let mut again = Repository::open(storage.clone(), &key).unwrap();
    again.set_cache(&cache_base);
    assert_eq!(
        again.load_tree(&index, &images_id).unwrap().nodes.len(),
        1_500
    );
    assert!(again.load_tree(&index, &snap.tree).is_ok());
    let uncached = Repository::open(storage, &key).unwrap();
    assert!(uncached.load_tree(&index, &images_id).is_err());
    let report = check(&again, CheckOptions { read_data: false }, &NoProgress).unwrap();
    assert!(!report.ok(), "check trusted the cache");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
