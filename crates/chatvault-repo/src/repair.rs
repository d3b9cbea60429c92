//! Repairs: rebuilding a lost or damaged index from the pack headers (`chatvault repair
//! index`, docs/FORMAT.md §12.2), and salvaging packs whose blobs no longer verify (`chatvault
//! repair packs`, [`repair_packs`], §12.5).
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

use std::collections::{HashMap, HashSet};

use chatvault_format::blob::BlobType;
use chatvault_format::id::{BlobId, IndexId, PackId};
use chatvault_format::objects::{IndexBlob, IndexPack, MAX_INDEX_BLOBS};
use chatvault_format::pack;

use crate::error::{RepoError, Result};
use crate::lock;
use crate::prune::PackWriter;
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
        guard.refuse_beside(&["prune"], "run the repair when it has finished")?;
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

/// Options of [`repair_packs`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RepairPacksOptions {
    /// Read and verify the packs and report; write and delete nothing (and take no lock).
    pub dry_run: bool,
}

/// What [`repair_packs`] found in one pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PackOutcome {
    /// Every blob the index places in it verified: left as it is.
    Intact,
    /// Some blobs did not verify, or its header did not open: the blobs that verify were
    /// copied into new packs, and the pack left the index and storage (or would, in a dry run).
    Repaired,
    /// Not in storage: it left the index (or would, in a dry run).
    Missing,
    /// Two reads of it disagreed on which blobs verify (an unreliable storage or network, not
    /// a damaged pack): left as it is.
    Unstable,
}

/// A blob of a repaired pack that did not verify.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LostBlob {
    /// The blob.
    pub id: BlobId,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: BlobType,
    /// Why it is unusable.
    pub reason: String,
    /// Whether another pack that stays in the index holds it (then nothing is lost).
    pub elsewhere: bool,
}

/// One pack of [`repair_packs`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PackRepair {
    /// The pack.
    pub pack: PackId,
    /// Its size in the index.
    pub size: u64,
    /// What was found (and done).
    pub outcome: PackOutcome,
    /// Blobs that verified (copied into new packs when the pack is repaired).
    pub salvaged: usize,
    /// Blobs that did not.
    pub lost: Vec<LostBlob>,
    /// Whether its sealed header (§7) did not open: a repair then also rewrites a pack whose
    /// blobs all verify, so that `repair index` can read it again.
    pub header_damaged: bool,
}

/// What [`repair_packs`] found and did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairPacksReport {
    /// Whether nothing was written or deleted.
    pub dry_run: bool,
    /// The packs asked for, in that order.
    pub packs: Vec<PackRepair>,
    /// Packs written with the salvaged blobs.
    pub new_packs: Vec<PackId>,
    /// Index objects written (every pack of the rewritten objects but the repaired ones, and the
    /// new packs).
    pub index_written: Vec<IndexId>,
    /// Index objects deleted (those that listed a repaired or missing pack).
    pub index_deleted: Vec<IndexId>,
    /// Repaired packs deleted from storage.
    pub packs_deleted: usize,
}

impl RepairPacksReport {
    /// Blobs lost for good by the repaired packs: in no other pack of the index. The next
    /// backup of a device that still has their files stores them again (FORMAT §12.5).
    pub fn lost_blobs(&self) -> usize {
        self.packs
            .iter()
            .flat_map(|p| &p.lost)
            .filter(|b| !b.elsewhere)
            .count()
    }

    /// True when no pack was left unrepaired for unreliable reads.
    pub fn ok(&self) -> bool {
        self.packs
            .iter()
            .all(|p| p.outcome != PackOutcome::Unstable)
    }
}

/// The indexed packs whose id starts with each of `prefixes` (hex, at least 4 digits, as
/// `check` prints them); an unknown or ambiguous prefix is an error.
pub fn find_packs(repo: &Repository, prefixes: &[String]) -> Result<Vec<PackId>> {
    let index = repo.load_index()?;
    let mut out = Vec::new();
    for p in prefixes {
        let p = p.trim().to_ascii_lowercase();
        if p.len() < 4 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(RepoError::Invalid(format!(
                "pack {p:?}: give its id, or at least its first 4 hex digits"
            )));
        }
        let found: Vec<PackId> = index
            .packs
            .keys()
            .filter(|id| id.to_hex().starts_with(&p))
            .copied()
            .collect();
        match found.as_slice() {
            [one] => {
                if !out.contains(one) {
                    out.push(*one);
                }
            }
            [] => {
                return Err(RepoError::Invalid(format!(
                    "no pack in the index starts with {p}"
                )));
            }
            _ => {
                return Err(RepoError::Invalid(format!(
                    "{} packs start with {p}: give more digits",
                    found.len()
                )));
            }
        }
    }
    Ok(out)
}

/// Repairs damaged packs (`chatvault repair packs`, FORMAT §12.5): reads each of `packs`
/// whole and verifies every blob the index places in it, where restore would read it. A pack
/// whose blobs all verify is left alone. Otherwise, after a second read agrees on which blobs
/// fail, the blobs that verify are copied into new packs, the index objects that list the pack
/// are rewritten without it (and with the new packs), and the pack is deleted; a pack missing
/// from storage only leaves the index. The damaged blobs are then in no index: backups stop
/// deduplicating against them and store them again from any device that still has their files,
/// which heals every snapshot that needs them (blob ids are content ids). Until then, `check`
/// names the files of older snapshots that need them.
///
/// Excludes prune and other repairs (each fails while the other holds a live lock); refused
/// while a prune plan names one of the packs or one of the index objects to rewrite (sweep it
/// first: `chatvault prune`).
pub fn repair_packs(
    repo: &Repository,
    packs: &[PackId],
    opts: &RepairPacksOptions,
) -> Result<RepairPacksReport> {
    let repo = &repo.without_cache();
    let mut guard = if opts.dry_run {
        None
    } else {
        let guard = lock::lock(repo, "repair", false)?;
        guard.refuse_beside(
            &["prune", "repair"],
            "repair the packs when it has finished",
        )?;
        Some(guard)
    };
    let files = crate::prune::index_files(repo)?;
    // Each indexed pack once, borrowed from the index objects (a year's index is large).
    let mut entries: HashMap<PackId, &IndexPack> = HashMap::new();
    for (_, f) in &files {
        for p in &f.packs {
            entries.entry(p.id).or_insert(p);
        }
    }
    let asked: HashSet<PackId> = packs.iter().copied().collect();
    // Each pack once, in the order asked.
    let mut seen: HashSet<PackId> = HashSet::new();
    let packs: Vec<PackId> = packs.iter().filter(|p| seen.insert(**p)).copied().collect();
    for (plan_id, plan) in repo.load_plans()? {
        let named = plan.packs.iter().any(|p| asked.contains(p))
            || files.iter().any(|(fid, f)| {
                plan.index.contains(fid) && f.packs.iter().any(|p| asked.contains(&p.id))
            });
        if named {
            return Err(RepoError::Invalid(format!(
                "prune plan {} condemns one of these packs or an index object listing one; \
                 run `chatvault prune` once the plan's grace period is over (or with --grace 0), \
                 then repair what is left",
                plan_id.short()
            )));
        }
    }

    let mut report = RepairPacksReport {
        dry_run: opts.dry_run,
        ..RepairPacksReport::default()
    };
    // 1. Each pack read (twice when damaged) and judged; the blobs that verify in a repaired
    // one are copied at once into new packs (data and metadata apart, §7), so that memory holds
    // one pack read and the packs being filled, however many packs are repaired.
    let pack_size = repo.params().pack_size as usize;
    let mut new_packs: Vec<IndexPack> = Vec::new();
    let mut data = PackWriter::default();
    let mut meta = PackWriter::default();
    let mut salvaged: HashSet<BlobId> = HashSet::new();
    for id in &packs {
        let p = entries.get(id).copied().ok_or_else(|| {
            RepoError::Invalid(format!("pack {} is not in the index", id.short()))
        })?;
        let Some(bytes) = repo.storage.read(&layout::pack(id))? else {
            report.packs.push(PackRepair {
                pack: *id,
                size: p.size,
                outcome: PackOutcome::Missing,
                salvaged: 0,
                header_damaged: false,
                lost: p
                    .blobs
                    .iter()
                    .map(|b| LostBlob {
                        id: b.id,
                        ty: b.ty,
                        reason: "its pack is missing from storage".into(),
                        elsewhere: false,
                    })
                    .collect(),
            });
            continue;
        };
        let (good, lost) = verify_indexed(repo, p, &bytes);
        let header_damaged = pack::decode_header(repo.keys(), id, &bytes).is_err();
        let mut outcome = if lost.is_empty() && !header_damaged {
            PackOutcome::Intact
        } else {
            PackOutcome::Repaired
        };
        if !lost.is_empty() {
            // A second read must fail the same blobs: a flaky read is not a reason to drop
            // anything.
            let again = repo.storage.read(&layout::pack(id))?.unwrap_or_default();
            let (_, lost_again) = verify_indexed(repo, p, &again);
            let ids = |l: &[LostBlob]| l.iter().map(|b| b.id).collect::<Vec<_>>();
            if ids(&lost) != ids(&lost_again) {
                outcome = PackOutcome::Unstable;
            }
        }
        report.packs.push(PackRepair {
            pack: *id,
            size: p.size,
            outcome,
            salvaged: good.len(),
            lost,
            header_damaged,
        });
        if outcome == PackOutcome::Repaired {
            salvaged.extend(good.iter().map(|b| b.id));
        }
        if let Some(g) = guard.as_mut() {
            if outcome == PackOutcome::Repaired {
                for b in &good {
                    let sealed = crate::prune::live_blob(repo, p, b, &bytes)?;
                    let writer = if b.ty.is_metadata() {
                        &mut meta
                    } else {
                        &mut data
                    };
                    if writer.is_full_for(sealed.len(), pack_size) {
                        new_packs.push(writer.write(repo)?);
                    }
                    writer.add(b, sealed.to_vec());
                }
            }
            g.refresh_if_due()?;
        }
    }
    let fixed: HashSet<PackId> = report
        .packs
        .iter()
        .filter(|p| matches!(p.outcome, PackOutcome::Repaired | PackOutcome::Missing))
        .map(|p| p.pack)
        .collect();
    if report.packs.iter().any(|p| !p.lost.is_empty()) {
        // A lost blob with a copy that stays (in a pack not repaired, or salvaged from another
        // repaired pack) is not lost.
        let mut stays: HashSet<BlobId> = entries
            .values()
            .filter(|q| !fixed.contains(&q.id))
            .flat_map(|q| q.blobs.iter().map(|b| b.id))
            .collect();
        stays.extend(salvaged);
        for b in report.packs.iter_mut().flat_map(|p| &mut p.lost) {
            b.elsewhere = stays.contains(&b.id);
        }
    }
    let Some(guard) = guard else {
        return Ok(report);
    };
    if fixed.is_empty() {
        return Ok(report);
    }
    for writer in [&mut data, &mut meta] {
        if !writer.is_empty() {
            new_packs.push(writer.write(repo)?);
        }
    }
    report.new_packs = new_packs.iter().map(|p| p.id).collect();

    // 2. The index objects that list a fixed pack, rewritten without it, with the new packs;
    // written before the old ones go, so that no moment lacks an entry for a kept blob.
    let affected: Vec<IndexId> = files
        .iter()
        .filter(|(_, f)| f.packs.iter().any(|p| fixed.contains(&p.id)))
        .map(|(id, _)| *id)
        .collect();
    let mut keep: Vec<IndexPack> = Vec::new();
    let mut kept: HashSet<PackId> = HashSet::new();
    for (_, f) in files.iter().filter(|(id, _)| affected.contains(id)) {
        for p in &f.packs {
            if !fixed.contains(&p.id) && kept.insert(p.id) {
                keep.push(p.clone());
            }
        }
    }
    keep.extend(new_packs);
    let written: HashSet<IndexId> = repo
        .write_index_objects(keep, &guard.liveness())?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    report.index_written = written.iter().copied().collect();
    report.index_written.sort();
    for id in affected.iter().filter(|id| !written.contains(id)) {
        guard.ensure_live()?;
        repo.storage.delete(&layout::index(id))?;
        report.index_deleted.push(*id);
    }
    // 3. The repaired packs themselves: no index lists them any more (a missing one is gone).
    let repaired = report
        .packs
        .iter()
        .filter(|p| p.outcome == PackOutcome::Repaired)
        .map(|p| p.pack)
        .collect::<Vec<_>>();
    for id in &repaired {
        guard.ensure_live()?;
        repo.storage.delete(&layout::pack(id))?;
        report.packs_deleted += 1;
    }
    tracing::info!(
        packs = fixed.len(),
        new_packs = report.new_packs.len(),
        lost = report.lost_blobs(),
        "packs repaired"
    );
    Ok(report)
}

/// The blobs the index places in pack `p` (read as `bytes`) that verify at their indexed place,
/// and those that do not, in the order the index lists them.
fn verify_indexed(
    repo: &Repository,
    p: &IndexPack,
    bytes: &[u8],
) -> (Vec<IndexBlob>, Vec<LostBlob>) {
    let mut good = Vec::new();
    let mut lost = Vec::new();
    for b in &p.blobs {
        match crate::prune::live_blob(repo, p, b, bytes) {
            Ok(_) => good.push(*b),
            Err(e) => lost.push(LostBlob {
                id: b.id,
                ty: b.ty,
                reason: e.to_string(),
                elsewhere: false,
            }),
        }
    }
    (good, lost)
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
    use chatvault_format::id::SnapshotId;

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

    /// Backs up `dir` with the default options.
    fn backup_of(r: &Repository, dir: &std::path::Path) -> backup::BackupOutcome {
        backup::backup(
            r,
            &[dir.to_path_buf()],
            &BackupOptions::default(),
            &NoProgress,
        )
        .unwrap()
    }

    /// Rewrites the stored object `path` with one bit of its byte `at` flipped.
    fn flip(r: &Repository, path: &str, at: u64) {
        let mut bytes = r.storage.read(path).unwrap().unwrap();
        bytes[at as usize] ^= 0x10;
        r.storage.delete(path).unwrap();
        r.storage.write_new(path, bytes).unwrap();
    }

    /// Restores snapshot `id` into a new folder: the failed files and the folder.
    fn restore_of(r: &Repository, id: &SnapshotId) -> (Vec<String>, tempfile::TempDir) {
        let s = r.load_snapshot(id).unwrap();
        let t = tempfile::tempdir().unwrap();
        let out =
            restore::restore(r, &s, t.path(), &RestoreOptions::default(), &NoProgress).unwrap();
        (out.failed.into_iter().map(|(p, _)| p).collect(), t)
    }

    #[test]
    fn repair_packs_salvages_intact_blobs_and_the_next_backup_heals_old_snapshots() {
        let r = repo("repair-packs");
        let src = tempfile::tempdir().unwrap();
        let files = [
            ("a.bin", noise(5, 200 << 10)),
            ("b.bin", noise(6, 200 << 10)),
        ];
        for (name, data) in &files {
            std::fs::write(src.path().join(name), data).unwrap();
        }
        let first = backup_of(&r, src.path()).id;
        // One bit of one data blob, in the middle of its sealed bytes.
        let index = r.load_index().unwrap();
        let (victim_blob, loc) = index
            .iter()
            .filter(|(_, l)| l.ty == BlobType::Data)
            .min_by_key(|(id, _)| *id)
            .unwrap();
        let data_blobs = index.iter().filter(|(_, l)| l.pack == loc.pack).count();
        assert!(data_blobs >= 2, "both files' blobs share the pack");
        flip(
            &r,
            &layout::pack(&loc.pack),
            loc.offset + u64::from(loc.length) / 2,
        );
        let (failed, _) = restore_of(&r, &first);
        assert_eq!(failed.len(), 1, "{failed:?}");

        // A backup now deduplicates against the damaged blob: the new snapshot is damaged too.
        let (failed_before, _) = {
            let id = backup_of(&r, src.path()).id;
            restore_of(&r, &id)
        };
        assert_eq!(failed_before.len(), 1);

        let found = find_packs(&r, &[loc.pack.short()]).unwrap();
        assert_eq!(found, vec![loc.pack]);
        let dry = repair_packs(&r, &found, &RepairPacksOptions { dry_run: true }).unwrap();
        assert_eq!(dry.packs[0].outcome, PackOutcome::Repaired);
        assert!(r.storage.read(&layout::pack(&loc.pack)).unwrap().is_some());

        let rep = repair_packs(&r, &found, &RepairPacksOptions::default()).unwrap();
        assert!(rep.ok());
        let p = &rep.packs[0];
        assert_eq!(p.outcome, PackOutcome::Repaired, "{rep:?}");
        assert_eq!(p.lost.len(), 1);
        assert_eq!(p.lost[0].id, victim_blob);
        assert!(!p.lost[0].elsewhere);
        assert_eq!(p.salvaged, data_blobs - 1);
        assert_eq!(rep.lost_blobs(), 1);
        assert_eq!(rep.packs_deleted, 1);
        assert!(r.storage.read(&layout::pack(&loc.pack)).unwrap().is_none());
        let index = r.load_index().unwrap();
        assert!(index.get(&victim_blob).is_none());
        assert!(!index.packs.contains_key(&loc.pack));
        // Still one file short (its blob is gone), the other restores from the new pack.
        let (failed, _) = restore_of(&r, &first);
        assert_eq!(failed.len(), 1, "{failed:?}");

        // The next backup stores the damaged blob again: every snapshot is whole again.
        let healed = backup_of(&r, src.path());
        assert!(healed.snapshot.summary.new_blobs >= 1);
        for id in [first, healed.id] {
            let (failed, t) = restore_of(&r, &id);
            assert!(failed.is_empty(), "{failed:?}");
            let root = std::fs::read_dir(t.path())
                .unwrap()
                .next()
                .unwrap()
                .unwrap();
            for (name, data) in &files {
                assert_eq!(&std::fs::read(root.path().join(name)).unwrap(), data);
            }
        }
        let c = crate::check::check(
            &r,
            crate::check::CheckOptions { read_data: true },
            &NoProgress,
        )
        .unwrap();
        assert!(c.ok(), "{:?}", c.errors);
    }

    #[test]
    fn repair_packs_leaves_intact_packs_and_drops_missing_ones_from_the_index() {
        let r = repo("repair-packs-missing");
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("a.bin"), noise(7, 100 << 10)).unwrap();
        backup_of(&r, src.path());
        let index = r.load_index().unwrap();
        let (_, loc) = index.iter().find(|(_, l)| l.ty == BlobType::Data).unwrap();
        let rep = repair_packs(&r, &[loc.pack], &RepairPacksOptions::default()).unwrap();
        assert_eq!(rep.packs[0].outcome, PackOutcome::Intact);
        assert!(rep.index_written.is_empty() && rep.new_packs.is_empty());

        r.storage.delete(&layout::pack(&loc.pack)).unwrap();
        let rep = repair_packs(&r, &[loc.pack], &RepairPacksOptions::default()).unwrap();
        assert_eq!(rep.packs[0].outcome, PackOutcome::Missing);
        assert_eq!(rep.index_deleted.len(), 1);
        let index = r.load_index().unwrap();
        assert!(!index.packs.contains_key(&loc.pack));
        // The next backup stores the file again and check is clean but for the old snapshot.
        backup_of(&r, src.path());
        let c = crate::check::check(
            &r,
            crate::check::CheckOptions { read_data: true },
            &NoProgress,
        )
        .unwrap();
        assert!(c.ok(), "{:?}", c.errors);

        assert!(find_packs(&r, &["zz".into()]).is_err());
        assert!(find_packs(&r, &["0123456789abcdef".into()]).is_err());
    }

    #[test]
    fn repair_packs_rewrites_a_pack_whose_header_is_damaged() {
        let r = repo("repair-packs-header");
        let src = tempfile::tempdir().unwrap();
        let a = noise(8, 100 << 10);
        std::fs::write(src.path().join("a.bin"), &a).unwrap();
        backup_of(&r, src.path());
        let index = r.load_index().unwrap();
        let (_, loc) = index.iter().find(|(_, l)| l.ty == BlobType::Data).unwrap();
        let path = layout::pack(&loc.pack);
        let n = r.storage.read(&path).unwrap().unwrap().len() as u64;
        flip(&r, &path, n - 20);
        let c =
            crate::check::check(&r, crate::check::CheckOptions::default(), &NoProgress).unwrap();
        assert_eq!(c.damaged_packs, vec![loc.pack]);

        let rep = repair_packs(&r, &[loc.pack], &RepairPacksOptions::default()).unwrap();
        let p = &rep.packs[0];
        assert_eq!(p.outcome, PackOutcome::Repaired, "{rep:?}");
        assert!(p.header_damaged && p.lost.is_empty());
        assert_eq!(rep.lost_blobs(), 0);
        restores(&r, src.path(), "a.bin", &a);
        let c = crate::check::check(
            &r,
            crate::check::CheckOptions { read_data: true },
            &NoProgress,
        )
        .unwrap();
        assert!(c.ok() && c.damaged_packs.is_empty(), "{:?}", c.errors);
        let all = repair_index(
            &r,
            &RepairOptions {
                dry_run: true,
                all: true,
            },
        )
        .unwrap();
        assert!(all.ok(), "{all:?}");
    }
}
