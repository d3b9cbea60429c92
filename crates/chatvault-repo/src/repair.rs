//! Rebuilding a lost or damaged index from the pack headers (`chatvault repair index`,
//! docs/FORMAT.md §12.2).
//!
//! Every pack carries a sealed header listing its blobs (§7), so the index (§8) is redundant:
//! [`repair_index`] lists `data/`, and for each pack that no readable index object lists (every
//! pack with [`RepairOptions::all`]) fetches only the header with two ranged reads (the last 4
//! bytes, `header_len`, then the sealed header), authenticates it against the pack id, checks
//! that its entries tile the pack exactly, and writes index objects for those packs. A pack
//! whose header does not open is reported with the reason and not indexed.
//!
//! Packs condemned by a prune plan (§15) are re-indexed like any other: the new index object is
//! not one the plan condemns, so a sweep keeps those packs (it deletes only condemned packs no
//! surviving index object lists). That is the safe side: with the index lost, a sweep could no
//! longer tell that a snapshot still needs such a pack. The space is freed by a later prune.
//! Repair and prune exclude each other (each fails while the other holds a live lock).
//!
//! ```no_run
//! # use chatvault_repo::{repository::Repository, repair};
//! # fn f(repo: &Repository) -> chatvault_repo::Result<()> {
//! let report = repair::repair_index(repo, &repair::RepairOptions::default())?;
//! println!("{} packs re-indexed", report.packs_reindexed);
//! # Ok(()) }
//! ```

use std::collections::HashSet;

use chatvault_format::id::{IndexId, PackId};
use chatvault_format::objects::{IndexBlob, IndexPack, MAX_INDEX_BLOBS};
use chatvault_format::pack;

use crate::error::{RepoError, Result};
use crate::lock;
use crate::repository::{Repository, layout, par_map};

/// Options of [`repair_index`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RepairOptions {
    /// Read the headers and report; write nothing (and take no lock).
    pub dry_run: bool,
    /// Ignore the existing index objects: re-index every pack in storage. The old index objects
    /// stay (duplicate entries are harmless; the next prune merges them).
    pub all: bool,
}

/// A pack whose header could not be used.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnreadablePack {
    /// The pack.
    pub pack: PackId,
    /// Its size in storage.
    pub size: u64,
    /// Why its header was not used.
    pub reason: String,
}

/// What [`repair_index`] found and did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairReport {
    /// Whether nothing was written.
    pub dry_run: bool,
    /// Packs in storage (`data/`).
    pub packs_scanned: usize,
    /// Packs already listed by a readable index object, left as they are.
    pub packs_already_indexed: usize,
    /// Packs whose header was read and that are listed by the new index objects (or would be,
    /// in a dry run).
    pub packs_reindexed: usize,
    /// Blobs in those packs.
    pub blobs: usize,
    /// Bytes of those packs.
    pub bytes: u64,
    /// Re-indexed packs that a prune plan condemns: a sweep now keeps them; a later prune frees
    /// them if no snapshot needs them.
    pub condemned_reindexed: usize,
    /// Packs whose header is damaged (not indexed; their blobs stay unrestorable).
    pub unreadable: Vec<UnreadablePack>,
    /// Packs that disappeared between the listing and the read (a concurrent sweep).
    pub vanished: usize,
    /// Index objects that exist but do not open: their packs were treated as unindexed. They
    /// are left in place (`check` keeps reporting them; delete them once the repair is done).
    pub damaged_index: Vec<(IndexId, String)>,
    /// Objects under `data/` that are not packs at their place (ignored).
    pub unexpected: Vec<String>,
    /// Index objects written.
    pub index_written: Vec<IndexId>,
}

impl RepairReport {
    /// True when every pack that needed it was re-indexed (no damaged header).
    pub fn ok(&self) -> bool {
        self.unreadable.is_empty()
    }
}

/// Why one pack's header was not used: damage (reported), or gone (counted).
pub(crate) enum HeaderProblem {
    Damaged(String),
    Vanished,
}

/// Rebuilds index entries from pack headers (FORMAT §12.2). Storage failures stop the run
/// (nothing half-done is published: index objects are written only at the end); damaged headers
/// do not.
pub fn repair_index(repo: &Repository, opts: &RepairOptions) -> Result<RepairReport> {
    // Judge the index objects as storage holds them, like `check` (FORMAT §12.3 (3)).
    let repo = &repo.without_cache();
    let guard = if opts.dry_run {
        None
    } else {
        let guard = lock::lock(repo, "repair", false)?;
        // Prune rewrites the index and deletes packs: never at the same time as a repair.
        let mine = guard.id();
        if let Some(l) = guard
            .live_locks()?
            .into_iter()
            .find(|l| l.id != mine && l.lock.operation == "prune")
            .map(|l| l.lock)
        {
            return Err(RepoError::Locked(format!(
                "a prune is running on {} (pid {}) since {}; run the repair when it has finished",
                l.hostname, l.pid, l.time
            )));
        }
        Some(guard)
    };
    let mut report = RepairReport {
        dry_run: opts.dry_run,
        ..RepairReport::default()
    };

    let indexed: HashSet<PackId> = if opts.all {
        HashSet::new()
    } else {
        let index = repo.load_index()?;
        report.damaged_index = index.damaged.clone();
        index.packs.keys().copied().collect()
    };
    let condemned: HashSet<PackId> = repo
        .load_plans()?
        .into_iter()
        .flat_map(|(_, p)| p.packs)
        .collect();
    let (stored, unexpected) = repo.stored_packs()?;
    report.unexpected = unexpected;
    report.packs_scanned = stored.len();
    let mut todo: Vec<(PackId, u64)> = stored
        .into_iter()
        .filter(|(id, _)| !indexed.contains(id))
        .collect();
    todo.sort();
    report.packs_already_indexed = report.packs_scanned - todo.len();

    let mut packs: Vec<IndexPack> = Vec::new();
    for ((id, size), read) in todo
        .iter()
        .zip(par_map(&todo, |(id, size)| read_header(repo, id, *size)))
    {
        match read? {
            Ok(p) => {
                report.packs_reindexed += 1;
                report.blobs += p.blobs.len();
                report.bytes += p.size;
                report.condemned_reindexed += usize::from(condemned.contains(id));
                packs.push(p);
            }
            Err(HeaderProblem::Damaged(reason)) => {
                tracing::warn!(pack = %id.short(), %reason, "pack header unreadable; not indexed");
                report.unreadable.push(UnreadablePack {
                    pack: *id,
                    size: *size,
                    reason,
                });
            }
            Err(HeaderProblem::Vanished) => report.vanished += 1,
        }
    }

    if let Some(guard) = &guard
        && !packs.is_empty()
    {
        report.index_written = repo
            .write_index_objects(packs, &guard.liveness())?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        tracing::info!(
            packs = report.packs_reindexed,
            index_objects = report.index_written.len(),
            "index rebuilt from pack headers"
        );
    }
    Ok(report)
}

/// Reads and authenticates one pack's header with two ranged reads (never the whole pack):
/// format 2 through its trailer, else format 1. Also `check`'s test that a pack's tail is its
/// own.
pub(crate) fn read_header(
    repo: &Repository,
    id: &PackId,
    size: u64,
) -> Result<Result<IndexPack, HeaderProblem>> {
    let damaged = |why: String| Ok(Err(HeaderProblem::Damaged(why)));
    let path = layout::pack(id);
    if size < 4 {
        return damaged(format!("{}", pack::PackError::Truncated));
    }
    // The tail holds a format 2 trailer (FORMAT §7) or, in a format 1 pack, the header length.
    let tail_len = (pack::TRAILER_LEN as u64).min(size);
    let Some(tail) = repo.storage.read_range(&path, size - tail_len, tail_len)? else {
        return Ok(Err(HeaderProblem::Vanished));
    };
    if let Some((start, hlen)) = pack::header_location_v2(repo.keys(), id, &tail, size) {
        if hlen > pack::MAX_SEALED_HEADER_LEN {
            return damaged(format!(
                "pack header length {hlen} is larger than any pack header"
            ));
        }
        let Some(sealed) = repo.storage.read_range(&path, start, hlen as u64)? else {
            return Ok(Err(HeaderProblem::Vanished));
        };
        return match pack::decode_header_v2(repo.keys(), id, &sealed, start) {
            Ok(entries) => checked(id, size, entries),
            Err(e) => damaged(e.to_string()),
        };
    }
    let hlen = match pack::header_len_from_tail(&tail[tail.len() - 4..]) {
        Ok(n) => n as u64,
        Err(e) => return damaged(e.to_string()),
    };
    if hlen > size - 4 {
        return damaged(format!(
            "pack is truncated (its header length {hlen} exceeds its {size} bytes)"
        ));
    }
    if hlen > pack::MAX_SEALED_HEADER_LEN as u64 {
        return damaged(format!(
            "pack header length {hlen} is larger than any pack header (damaged tail)"
        ));
    }
    let Some(sealed) = repo.storage.read_range(&path, size - 4 - hlen, hlen)? else {
        return Ok(Err(HeaderProblem::Vanished));
    };
    if sealed.len() as u64 != hlen {
        return damaged("pack is truncated".into());
    }
    match pack::decode_sealed_header(repo.keys(), id, size, &sealed) {
        Ok(entries) => checked(id, size, entries),
        Err(e) => damaged(e.to_string()),
    }
}

/// The index entry of a pack whose header decoded, if it fits in one index object.
fn checked(
    id: &PackId,
    size: u64,
    entries: Vec<pack::PackEntry>,
) -> Result<Result<IndexPack, HeaderProblem>> {
    if entries.len() > MAX_INDEX_BLOBS {
        return Ok(Err(HeaderProblem::Damaged(format!(
            "pack header lists {} blobs, more than one index object may hold",
            entries.len()
        ))));
    }
    Ok(Ok(IndexPack {
        id: *id,
        size,
        blobs: entries.iter().map(IndexBlob::from).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{self, BackupOptions, NoProgress};
    use crate::restore::{self, RestoreOptions};

    use crate::test_util::{memory_repo as repo, noise};

    fn restores(repo: &Repository, dir: &std::path::Path, name: &str, want: &[u8]) {
        let (_, s) = repo.find_snapshot("latest").unwrap();
        let t = tempfile::tempdir().unwrap();
        let out =
            restore::restore(repo, &s, t.path(), &RestoreOptions::default(), &NoProgress).unwrap();
        assert!(out.failed.is_empty(), "{:?}", out.failed);
        let root = t.path().join(dir.file_name().unwrap());
        assert_eq!(std::fs::read(root.join(name)).unwrap(), want);
    }

    fn index_ids(repo: &Repository) -> Vec<IndexId> {
        repo.list_ids::<IndexId>(layout::INDEX)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    #[test]
    fn repair_adds_only_the_packs_no_index_lists() {
        let r = repo("repair-partial");
        let src = tempfile::tempdir().unwrap();
        let a = noise(1, 3 << 20);
        std::fs::write(src.path().join("a.bin"), &a).unwrap();
        backup::backup(
            &r,
            &[src.path().to_path_buf()],
            &BackupOptions::default(),
            &NoProgress,
        )
        .unwrap();
        let first_index = index_ids(&r);
        let b = noise(2, 2 << 20);
        std::fs::write(src.path().join("b.bin"), &b).unwrap();
        backup::backup(
            &r,
            &[src.path().to_path_buf()],
            &BackupOptions::default(),
            &NoProgress,
        )
        .unwrap();
        // Lose the second backup's index objects.
        let mut lost_packs = 0;
        for id in index_ids(&r) {
            if !first_index.contains(&id) {
                lost_packs += r.load_index_file(&id).unwrap().packs.len();
                r.storage.delete(&layout::index(&id)).unwrap();
            }
        }
        assert!(lost_packs >= 2, "a data and a tree pack");
        let total = r.stored_packs().unwrap().0.len();

        let dry = repair_index(
            &r,
            &RepairOptions {
                dry_run: true,
                all: false,
            },
        )
        .unwrap();
        assert_eq!(dry.packs_reindexed, lost_packs);
        assert!(dry.index_written.is_empty());
        assert_eq!(
            index_ids(&r).len(),
            first_index.len(),
            "dry run writes nothing"
        );

        let rep = repair_index(&r, &RepairOptions::default()).unwrap();
        assert!(rep.ok(), "{rep:?}");
        assert_eq!(rep.packs_scanned, total);
        assert_eq!(rep.packs_reindexed, lost_packs);
        assert_eq!(rep.packs_already_indexed, total - lost_packs);
        assert_eq!(rep.index_written.len(), 1);
        // Run again: nothing is left to do.
        let again = repair_index(&r, &RepairOptions::default()).unwrap();
        assert_eq!(again.packs_reindexed, 0);
        assert!(again.index_written.is_empty());
        restores(&r, src.path(), "b.bin", &b);
        let check = crate::check::check(
            &r,
            crate::check::CheckOptions { read_data: true },
            &NoProgress,
        )
        .unwrap();
        assert!(check.ok(), "{check:?}");

        // --all re-reads every header, whatever the index says.
        let all = repair_index(
            &r,
            &RepairOptions {
                dry_run: true,
                all: true,
            },
        )
        .unwrap();
        assert_eq!(all.packs_reindexed, total);
    }

    #[test]
    fn damaged_header_is_reported_and_the_other_packs_are_indexed() {
        let r = repo("repair-damaged");
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("a.bin"), noise(3, 1 << 20)).unwrap();
        backup::backup(
            &r,
            &[src.path().to_path_buf()],
            &BackupOptions::default(),
            &NoProgress,
        )
        .unwrap();
        for id in index_ids(&r) {
            r.storage.delete(&layout::index(&id)).unwrap();
        }
        let (stored, _) = r.stored_packs().unwrap();
        let (victim, _) = stored.iter().max_by_key(|(_, s)| **s).unwrap();
        let path = layout::pack(victim);
        let mut bytes = r.storage.read(&path).unwrap().unwrap();
        let n = bytes.len();
        bytes[n - 10] ^= 1; // inside the sealed header
        r.storage.delete(&path).unwrap();
        r.storage.write_new(&path, bytes).unwrap();

        let rep = repair_index(&r, &RepairOptions::default()).unwrap();
        assert!(!rep.ok());
        assert_eq!(rep.unreadable.len(), 1, "{rep:?}");
        assert_eq!(rep.unreadable[0].pack, *victim);
        assert_eq!(rep.packs_reindexed, stored.len() - 1);
        let index = r.load_index().unwrap();
        assert!(!index.packs.contains_key(victim));
        assert_eq!(index.packs.len(), stored.len() - 1);
    }
}
