//! Property test of the whole engine on the in-memory backend: any folder backs up and restores
//! exactly, across incremental runs, and dedup stores repeated content once.
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use chatvault_format::key::BackupKey;
use chatvault_repo::backup::{BackupOptions, NoProgress, backup};
use chatvault_repo::check::{CheckOptions, check};
use chatvault_repo::repository::Repository;
use chatvault_repo::restore::{RestoreOptions, restore};
use chatvault_repo::storage::Storage;
use proptest::prelude::*;

fn read_tree(root: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            for (k, v) in read_tree(&p) {
                let mut key = e.file_name().as_bytes().to_vec();
                key.push(b'/');
                key.extend(k);
                out.insert(key, v);
            }
        } else {
            out.insert(
                e.file_name().as_bytes().to_vec(),
                std::fs::read(&p).unwrap(),
            );
        }
    }
    out
}

fn content(seed: u8, len: usize, text: bool) -> Vec<u8> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if text {
                b"hey ok lol "[(x % 11) as usize]
            } else {
                x as u8
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, .. ProptestConfig::default() })]
    #[test]
    fn any_folder_round_trips_incrementally(
        files in proptest::collection::vec((any::<u8>(), 0usize..1_000_000, any::<bool>(), any::<u8>()), 1..8),
        change in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        for (i, (seed, len, text, name)) in files.iter().enumerate() {
            // Includes non-UTF-8 names and a second copy of the same content (dedup).
            let mut fname = format!("f{i}-").into_bytes();
            fname.push(*name | 0x80);
            let folder = if i % 2 == 0 { src.clone() } else { src.join("sub") };
            std::fs::write(folder.join(std::ffi::OsStr::from_bytes(&fname)), content(*seed, *len, *text)).unwrap();
        }
        let storage = Storage::open("memory://prop").unwrap();
        let key = BackupKey::generate(&mut rand_core::OsRng);
        let repo = Repository::init(storage.clone(), &key).unwrap();
        let first = backup(&repo, std::slice::from_ref(&src), &BackupOptions::default(), &NoProgress).unwrap();
        // Change one file, back up again: only that file is read.
        let i = change.index(files.len());
        let folder = if i % 2 == 0 { src.clone() } else { src.join("sub") };
        let victim = std::fs::read_dir(&folder).unwrap().map(|e| e.unwrap().path()).find(|p| p.is_file() && p.file_name().unwrap().as_bytes().starts_with(format!("f{i}-").as_bytes())).unwrap();
        std::fs::write(&victim, b"changed").unwrap();
        let second = backup(&repo, std::slice::from_ref(&src), &BackupOptions::default(), &NoProgress).unwrap();
        prop_assert_eq!(second.snapshot.summary.files_read, 1);
        prop_assert_eq!(second.snapshot.parent, Some(first.id));
        // Nothing changed since: the trees are the parent's (reused without being encoded
        // again), and they are the trees a backup that reads everything again computes.
        let third = backup(&repo, std::slice::from_ref(&src), &BackupOptions::default(), &NoProgress).unwrap();
        prop_assert_eq!(third.snapshot.tree, second.snapshot.tree);
        prop_assert_eq!(third.snapshot.summary.new_blobs, 0);
        let reread = BackupOptions { force_reread: true, ..BackupOptions::default() };
        let fourth = backup(&repo, std::slice::from_ref(&src), &reread, &NoProgress).unwrap();
        prop_assert_eq!(fourth.snapshot.tree, second.snapshot.tree);

        let reopened = Repository::open(storage, &key).unwrap();
        let out = dir.path().join("out");
        let r = restore(&reopened, &second.snapshot, &out, &RestoreOptions::default(), &NoProgress).unwrap();
        prop_assert!(r.failed.is_empty());
        prop_assert_eq!(read_tree(&src), read_tree(&out.join("src")));
        let report = check(&reopened, CheckOptions { read_data: true }, &NoProgress).unwrap();
        prop_assert!(report.ok(), "{:?}", report.errors);
    }
}

#[test]
fn identical_files_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let data = content(7, 3_000_000, false);
    std::fs::write(src.join("a.jpg"), &data).unwrap();
    std::fs::write(src.join("b.jpg"), &data).unwrap();
    let repo = Repository::init(
        Storage::open("memory://dedup").unwrap(),
        &BackupKey::generate(&mut rand_core::OsRng),
    )
    .unwrap();
    let out = backup(&repo, &[src], &BackupOptions::default(), &NoProgress).unwrap();
    let s = &out.snapshot.summary;
    assert_eq!(s.bytes, 6_000_000);
    assert!(
        s.new_bytes < 3_100_000,
        "stored {} bytes for two copies of 3 MB",
        s.new_bytes
    );
}

/// A command that looks at the snapshots several times (a restore: rollback check, `latest`,
/// the damaged count) reads each one from storage once; a newly listed snapshot is read, and a
/// deleted one is no longer returned.
#[test]
fn each_snapshot_is_read_from_storage_once_per_process() {
    use chatvault_repo::storage::stats;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), content(1, 10_000, true)).unwrap();
    let repo = Repository::init(
        Storage::open("memory://snapshot-memo").unwrap(),
        &BackupKey::generate(&mut rand_core::OsRng),
    )
    .unwrap();
    for _ in 0..3 {
        backup(
            &repo,
            std::slice::from_ref(&src),
            &BackupOptions::default(),
            &NoProgress,
        )
        .unwrap();
    }
    let first = repo.snapshots().unwrap();
    assert_eq!(first.len(), 3);
    let reads = stats().reads;
    let again = repo.snapshots().unwrap();
    let (id, latest) = repo.find_snapshot("latest").unwrap();
    assert_eq!(stats().reads, reads, "no snapshot read twice");
    assert_eq!(
        first
            .iter()
            .map(|(i, s)| (*i, s.as_ref().unwrap().seq))
            .collect::<Vec<_>>(),
        again
            .iter()
            .map(|(i, s)| (*i, s.as_ref().unwrap().seq))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        (id, latest.seq),
        (first[2].0, first[2].1.as_ref().unwrap().seq)
    );
    // A fourth snapshot (here from another handle, as from another device) is read once.
    let other = repo.without_cache();
    let fourth = backup(
        &other,
        std::slice::from_ref(&src),
        &BackupOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let reads = stats().reads;
    assert_eq!(repo.find_snapshot("latest").unwrap().0, fourth.id);
    assert_eq!(stats().reads, reads + 1, "only the new snapshot is read");
}

/// Restoring a directory of many subdirectories fetches their trees together, not one storage
/// round trip each (a phone's restore starts sooner), and restores them all.
#[test]
fn sibling_trees_are_fetched_together() {
    use chatvault_repo::storage::stats;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for k in 0..30 {
        let sub = src.join(format!("chat-{k:02}"));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("note.txt"), format!("note {k}")).unwrap();
    }
    let repo = Repository::init(
        Storage::open("memory://sibling-trees").unwrap(),
        &BackupKey::generate(&mut rand_core::OsRng),
    )
    .unwrap();
    let out = backup(
        &repo,
        std::slice::from_ref(&src),
        &BackupOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let target = dir.path().join("restored");
    let before = stats().ranged_reads;
    let r = restore(
        &repo,
        &out.snapshot,
        &target,
        &RestoreOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let reads = stats().ranged_reads - before;
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    assert_eq!(r.files, 30);
    assert_eq!(read_tree(&src), read_tree(&target.join("src")));
    // The root tree, the trees of `src` and of its 30 subdirectories (together), the data:
    // a handful of reads, where one per subdirectory would be over 30.
    assert!(reads <= 8, "{reads} ranged reads");
}

/// An interrupted backup's uploads are not sent again (FORMAT §12.4): the packs a run stored
/// after its last index object are adopted by the next run, which indexes them.
#[test]
fn an_interrupted_backups_packs_are_adopted_not_uploaded_again() {
    use chatvault_repo::repository::layout;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.jpg"), content(1, 3_000_000, false)).unwrap();
    let storage = Storage::open("memory://adopt").unwrap();
    let key = BackupKey::generate(&mut rand_core::OsRng);
    let repo = Repository::init(storage.clone(), &key).unwrap();
    let opts = BackupOptions::default();
    backup(&repo, std::slice::from_ref(&src), &opts, &NoProgress).unwrap();

    // A second run stores 5 MB more; then its index objects and snapshot are removed, which
    // leaves the repository as a run killed before its first index write leaves it.
    std::fs::write(src.join("b.jpg"), content(2, 5_000_000, false)).unwrap();
    let names = |folder: &str| -> Vec<String> {
        let mut v: Vec<String> = storage
            .list(folder, true)
            .unwrap()
            .into_iter()
            .map(|l| l.path)
            .collect();
        v.sort();
        v
    };
    let (index_before, snaps_before) = (names(layout::INDEX), names(layout::SNAPSHOTS));
    let packs_before = names(layout::DATA).len();
    let interrupted = backup(&repo, std::slice::from_ref(&src), &opts, &NoProgress).unwrap();
    assert!(interrupted.snapshot.summary.uploaded_bytes > 5_000_000);
    for path in names(layout::INDEX).iter().chain(&names(layout::SNAPSHOTS)) {
        if !index_before.contains(path) && !snaps_before.contains(path) {
            storage.delete(path).unwrap();
        }
    }
    let orphans = names(layout::DATA).len() - packs_before;
    assert!(orphans >= 1, "the interrupted run left packs");
    let reopened = Repository::open(storage.clone(), &key).unwrap();
    assert_eq!(reopened.load_index().unwrap().packs.len(), packs_before);

    // The next run reads those packs' headers, reuses their blobs and indexes them.
    let rerun = backup(&reopened, std::slice::from_ref(&src), &opts, &NoProgress).unwrap();
    let s = &rerun.snapshot.summary;
    assert_eq!(s.new_bytes, 0, "{s:?}");
    assert!(
        s.uploaded_bytes < 20_000,
        "uploaded {} bytes again",
        s.uploaded_bytes
    );
    assert_eq!(names(layout::DATA).len(), packs_before + orphans);
    assert_eq!(
        reopened.load_index().unwrap().packs.len(),
        packs_before + orphans
    );
    let out = dir.path().join("out");
    let r = restore(
        &reopened,
        &rerun.snapshot,
        &out,
        &RestoreOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert!(r.failed.is_empty());
    assert_eq!(read_tree(&src), read_tree(&out.join("src")));
    let report = check(&reopened, CheckOptions { read_data: true }, &NoProgress).unwrap();
    assert!(report.ok(), "{:?}", report.errors);
}
