//! Garbage collection (`prune`, docs/FORMAT.md §15); retention (`forget`, which deletes
//! snapshot objects and never data) is [`crate::forget`].
//!
//! `prune` frees the packs no snapshot needs, in two phases, so that it never deletes something
//! a backup running at the same time still relies on, and never takes an exclusive lock:
//!
//! 1. **Mark**: with a shared lock, compute the blobs every snapshot needs, copy the still-needed
//!    blobs out of mostly-unused packs into new packs, write an index object covering every pack
//!    that stays, then write a *prune plan* naming the packs and index objects to delete. From
//!    then on backups do not deduplicate against condemned packs (they store such data again).
//! 2. **Sweep** (a later `prune`, once the plan is older than the grace period, or the same run
//!    with `grace = 0`): only when no other operation that started before the plan still holds
//!    a live lock. It re-reads every snapshot, rescues any condemned pack a snapshot written in
//!    the meantime needs (by indexing it again), deletes the condemned index objects, then the
//!    packs, then the plan. A crash at any step leaves a repository `check` passes.
//!
//! This module must not decide anything about keys or devices; it works on an open
//! [`Repository`].

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chatvault_format::blob;
use chatvault_format::envelope::ObjectKind;
use chatvault_format::id::{BlobId, IndexId, PackId, PlanId};
use chatvault_format::objects::{
    self, IndexBlob, IndexFile, IndexPack, NodeKind, OBJECT_VERSION, PrunePlan, TreeBlob,
};
use chatvault_format::pack::{self, PackEntry};
use chrono::{DateTime, TimeDelta, Utc};
use rand_core::OsRng;
use serde::{Serialize, Serializer};

use crate::error::{RepoError, Result};
use crate::lock::{self, LockGuard};
use crate::repository::{Index, Repository, layout, par_map};

/// How far another device's clock may run ahead of ours without endangering a sweep: a lock
/// that started up to this long after a plan still postpones the plan's sweep.
pub const CLOCK_SKEW_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Default grace period between marking and sweeping.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60 * 60);

/// Packs in `data/` that no index lists are condemned only once they are this many lock
/// lifetimes old by storage time ([`UNINDEXED_PACK_MIN_AGE`]): a younger one may belong to a
/// backup still running whose index object is not written yet.
pub const UNINDEXED_PACK_MIN_AGE_LOCK_TTLS: u32 = 4;

/// [`UNINDEXED_PACK_MIN_AGE_LOCK_TTLS`] × [`lock::LOCK_TTL`]: 2 hours.
pub const UNINDEXED_PACK_MIN_AGE: Duration =
    Duration::from_secs(lock::LOCK_TTL.as_secs() * UNINDEXED_PACK_MIN_AGE_LOCK_TTLS as u64);

/// Options of [`prune`].
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Compute and report, write and delete nothing.
    pub dry_run: bool,
    /// How old a plan must be before it is swept. Zero: sweep the new plan in the same run if
    /// no other operation is running.
    pub grace: Duration,
    /// Repack a pack when at least this percentage of its bytes is unused.
    pub repack_threshold_percent: u8,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            grace: DEFAULT_GRACE,
            repack_threshold_percent: 10,
        }
    }
}

/// What [`prune`] did (or would do). It serializes (`prune --json`) field by field, with
/// `postponed` as `[{plan, reason}]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Snapshots whose data is kept.
    pub snapshots: usize,
    /// Blobs the snapshots need.
    pub used_blobs: usize,
    /// Packs in the index before this run (not counting already condemned ones).
    pub packs_before: usize,
    /// Their bytes.
    pub bytes_before: u64,
    /// Packs no snapshot needs, condemned by the new plan.
    pub unused_packs: usize,
    /// Their bytes.
    pub unused_bytes: u64,
    /// Mostly-unused packs whose live blobs were copied into new packs, then condemned.
    pub repacked_packs: usize,
    /// Their bytes.
    pub repacked_bytes: u64,
    /// Packs written by the repack.
    pub new_packs: usize,
    /// Their bytes.
    pub new_bytes: u64,
    /// Packs in storage that no index lists (left by interrupted backups), condemned.
    pub unindexed_packs: usize,
    /// Their bytes.
    pub unindexed_bytes: u64,
    /// Unindexed packs left alone because they are younger than [`UNINDEXED_PACK_MIN_AGE`] by
    /// storage time (a running backup may still index them).
    pub young_unindexed_packs: usize,
    /// Their bytes.
    pub young_unindexed_bytes: u64,
    /// Unindexed packs left alone because the backend reports no modification times, so their
    /// age is unknown (they may belong to a running backup).
    pub undated_unindexed_packs: usize,
    /// Their bytes.
    pub undated_unindexed_bytes: u64,
    /// The plan written by this run, if there was anything to condemn.
    pub plan: Option<PlanId>,
    /// Plans swept by this run.
    pub swept_plans: Vec<PlanId>,
    /// Packs deleted by the sweeps.
    pub deleted_packs: usize,
    /// Their bytes.
    pub deleted_bytes: u64,
    /// Index objects deleted by the sweeps.
    pub deleted_index: usize,
    /// Condemned packs a newer snapshot turned out to need; indexed again, not deleted.
    pub rescued_packs: usize,
    /// Plans left for a later run, with the reason.
    #[serde(serialize_with = "serialize_postponed")]
    pub postponed: Vec<(PlanId, String)>,
}

/// [`PruneReport::postponed`] as `[{"plan": …, "reason": …}]`.
fn serialize_postponed<S: Serializer>(
    postponed: &[(PlanId, String)],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Postponed<'a> {
        plan: &'a PlanId,
        reason: &'a str,
    }
    s.collect_seq(
        postponed
            .iter()
            .map(|(plan, reason)| Postponed { plan, reason }),
    )
}

/// Runs prune: sweeps due plans, then marks what is unused now (docs/FORMAT.md §15).
pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    let mut guard = lock::lock(repo, "prune", false)?;
    // Prunes exclude each other and `repair index` (they rewrite the index); everything else
    // runs on.
    guard.refuse_beside(&["prune", "repair"], "try again when it has finished")?;
    let mut report = PruneReport::default();
    let now = Utc::now();

    for (id, plan) in repo.load_plans()? {
        let age = plan_age(&plan, now);
        if age < opts.grace {
            report.postponed.push((
                id,
                format!(
                    "made {} ago; swept once older than the grace period ({})",
                    human(age),
                    human(opts.grace)
                ),
            ));
            continue;
        }
        guard.refresh_if_due()?;
        sweep(repo, &guard, id, &plan, opts.dry_run, &mut report)?;
    }

    if let Some((id, plan)) = mark(repo, &mut guard, opts, &mut report)?
        && opts.grace.is_zero()
    {
        sweep(repo, &guard, id, &plan, opts.dry_run, &mut report)?;
    }
    Ok(report)
}

fn plan_age(plan: &PrunePlan, now: DateTime<Utc>) -> Duration {
    DateTime::parse_from_rfc3339(&plan.time)
        .ok()
        .and_then(|t| (now - t.with_timezone(&Utc)).to_std().ok())
        .unwrap_or(Duration::ZERO)
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// What [`used_blobs`] found.
enum Used {
    /// The number of snapshots and every blob they need.
    All(usize, HashSet<BlobId>),
    /// A snapshot's tree or content list is in none of the index objects loaded: a backup
    /// published it (after its index objects) since they were listed. Load them again.
    Newer,
}

/// Every blob (data and tree) the readable snapshots need. Fails if a snapshot or tree cannot
/// be read: pruning without knowing what is needed could delete needed data.
fn used_blobs(repo: &Repository, index: &Index) -> Result<Used> {
    let mut used = HashSet::new();
    let mut trees: Vec<BlobId> = Vec::new();
    let snapshots = repo.snapshots()?;
    for (id, s) in &snapshots {
        match s {
            Ok(s) => trees.push(s.tree),
            Err(e) => {
                return Err(RepoError::Invalid(format!(
                    "snapshot {} is unreadable ({e}); prune cannot tell which data it needs. \
                     Run `chatvault check`; if it is damaged beyond repair, remove it with \
                     `chatvault forget --snapshot {}`",
                    id.short(),
                    id.short()
                )));
            }
        }
    }
    while let Some(t) = trees.pop() {
        if !used.insert(t) {
            continue;
        }
        if !index.contains(&t) {
            return Ok(Used::Newer);
        }
        let unreadable = |e: RepoError| {
            RepoError::Invalid(format!(
                "{e}; prune cannot tell which data the snapshots need (run `chatvault check`)"
            ))
        };
        let tree = match repo.load_tree_blob(index, &t).map_err(unreadable)? {
            TreeBlob::Listing(tree) => tree,
            // A large folder's tree in parts (FORMAT §10.2): the parts are needed too.
            TreeBlob::Parts(parts) => {
                if !parts.iter().all(|p| index.contains(p)) {
                    return Ok(Used::Newer);
                }
                used.extend(parts.iter().copied());
                repo.load_tree_parts(index, &t, &parts)
                    .map_err(unreadable)?
            }
        };
        for n in tree.nodes {
            match n.kind {
                NodeKind::File { content, lists, .. } => {
                    used.extend(content);
                    if !lists.iter().all(|l| used.contains(l) || index.contains(l)) {
                        return Ok(Used::Newer);
                    }
                    // Lists already seen (shared by an older snapshot) are not read again.
                    let data = repo
                        .walk_lists(index, &lists, |l| used.insert(*l))
                        .map_err(|e| {
                            RepoError::Invalid(format!(
                                "{e}; prune cannot tell which data the snapshots need (run \
                                 `chatvault check`)"
                            ))
                        })?;
                    used.extend(data);
                }
                NodeKind::Dir { subtree } => trees.push(subtree),
                NodeKind::Symlink { .. } => {}
            }
        }
    }
    Ok(Used::All(snapshots.len(), used))
}

/// The merged index of `files` (as [`Repository::load_index`] builds it), without reading the
/// index objects a second time.
fn merged_index(plans: &[(PlanId, PrunePlan)], files: &[(IndexId, IndexFile)]) -> Index {
    let mut index = Index::default();
    index.condemned = plans.iter().flat_map(|(_, p)| p.packs.clone()).collect();
    for (id, f) in files {
        index.add(f);
        index.files.push(*id);
    }
    index.finish();
    index
}

/// Loads every index object as stored. Fails on a damaged one (its packs would look unused).
pub(crate) fn index_files(repo: &Repository) -> Result<Vec<(IndexId, IndexFile)>> {
    let mut out = Vec::new();
    let ids: Vec<IndexId> = repo
        .list_ids::<IndexId>(layout::INDEX)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    for (id, loaded) in ids.iter().zip(par_map(&ids, |id| repo.load_index_file(id))) {
        match loaded {
            Ok(f) => out.push((*id, f)),
            Err(e) => {
                return Err(RepoError::Invalid(format!(
                    "{e}; stopping here (the packs it lists would look unused). Run `chatvault check`"
                )));
            }
        }
    }
    Ok(out)
}

/// Index objects with their ids.
type IndexFiles = Vec<(IndexId, IndexFile)>;

/// The index objects, the number of snapshots and every blob they need, loaded so that they
/// agree: a backup that finishes between the listing of the index objects and that of the
/// snapshots publishes a snapshot whose blobs the loaded index does not know, so the index
/// objects are loaded again (a backup writes them before its snapshot).
fn needed(
    repo: &Repository,
    plans: &[(PlanId, PrunePlan)],
) -> Result<(IndexFiles, usize, HashSet<BlobId>)> {
    for _ in 0..4 {
        let files = index_files(repo)?;
        let index = merged_index(plans, &files);
        match used_blobs(repo, &index)? {
            Used::All(snapshots, used) => return Ok((files, snapshots, used)),
            Used::Newer => {
                tracing::debug!(
                    "a snapshot newer than the index objects loaded: loading them again"
                )
            }
        }
    }
    Err(RepoError::Invalid(
        "snapshots keep referring to blobs in no index object; prune cannot tell which data the \
         snapshots need (run `chatvault check`)"
            .into(),
    ))
}

/// Phase 1. Returns the new plan, if anything was condemned.
fn mark(
    repo: &Repository,
    guard: &mut LockGuard<'_>,
    opts: &PruneOptions,
    report: &mut PruneReport,
) -> Result<Option<(PlanId, PrunePlan)>> {
    let plans = repo.load_plans()?;
    let already: HashSet<PackId> = plans.iter().flat_map(|(_, p)| p.packs.clone()).collect();
    let already_index: HashSet<IndexId> = plans.iter().flat_map(|(_, p)| p.index.clone()).collect();
    let (files, snapshots, used) = needed(repo, &plans)?;
    report.snapshots = snapshots;
    report.used_blobs = used.len();

    let packs = indexed_packs(&files, &already);
    report.packs_before = packs.len();
    report.bytes_before = packs.values().map(|p| p.size).sum();
    let mut triage = triage_packs(&packs, &used, opts, report);
    condemn_old_unindexed(repo, guard, &files, &already, report, &mut triage.condemned)?;

    if triage.repack.is_empty() && triage.condemned.is_empty() {
        return Ok(None);
    }
    if opts.dry_run {
        report.repacked_packs = triage.repack.len();
        report.repacked_bytes = triage.repack.iter().map(|(p, _)| p.size).sum();
        report.new_packs = usize::from(!triage.repack.is_empty());
        return Ok(None);
    }
    repack(repo, guard, &mut triage, report)?;
    write_plan(repo, guard, &files, &already_index, triage, report).map(Some)
}

/// Every indexed pack once, but the already condemned ones (a pack listed by two index objects
/// has the same entries in both).
fn indexed_packs(
    files: &[(IndexId, IndexFile)],
    already: &HashSet<PackId>,
) -> BTreeMap<PackId, IndexPack> {
    let mut packs: BTreeMap<PackId, IndexPack> = BTreeMap::new();
    for (_, f) in files {
        for p in &f.packs {
            if !already.contains(&p.id) {
                packs.entry(p.id).or_insert_with(|| p.clone());
            }
        }
    }
    packs
}

/// What [`mark`] does with the indexed packs.
#[derive(Default)]
struct Triage {
    /// Packs that stay as they are.
    keep: Vec<IndexPack>,
    /// Mostly-unused packs, with the live blobs to copy out of them.
    repack: Vec<(IndexPack, Vec<IndexBlob>)>,
    /// Packs the plan deletes.
    condemned: Vec<PackId>,
}

/// Sorts the packs into kept, repacked and unused ones. Each needed blob is claimed by the
/// first pack (in id order) holding it: preferring packs that will not be repacked is not worth
/// the complexity, a blob's extra copies are simply unused bytes of their packs.
fn triage_packs(
    packs: &BTreeMap<PackId, IndexPack>,
    used: &HashSet<BlobId>,
    opts: &PruneOptions,
    report: &mut PruneReport,
) -> Triage {
    let mut claimed: HashSet<BlobId> = HashSet::new();
    let mut triage = Triage::default();
    for p in packs.values() {
        let live: Vec<IndexBlob> = p
            .blobs
            .iter()
            .filter(|b| used.contains(&b.id) && !claimed.contains(&b.id))
            .cloned()
            .collect();
        let live_bytes: u64 = live.iter().map(|b| u64::from(b.length)).sum();
        let blob_bytes: u64 = p.blobs.iter().map(|b| u64::from(b.length)).sum();
        let unused = blob_bytes - live_bytes;
        if live.is_empty() {
            report.unused_packs += 1;
            report.unused_bytes += p.size;
            triage.condemned.push(p.id);
        } else if unused * 100 >= blob_bytes * u64::from(opts.repack_threshold_percent) {
            claimed.extend(live.iter().map(|b| b.id));
            triage.repack.push((p.clone(), live));
        } else {
            claimed.extend(live.iter().map(|b| b.id));
            triage.keep.push(p.clone());
        }
    }
    // Needed blobs not in any pack here are either in already-condemned packs (a sweep will
    // rescue them) or missing (check reports them); prune neither helps nor harms them.
    triage
}

/// Condemns the stored packs no index lists that are old enough by storage time, never by
/// this device's clock: old enough that no backup still running can index them (§15). Younger
/// ones, and all of them where the storage reports no times, are left alone (and counted).
fn condemn_old_unindexed(
    repo: &Repository,
    guard: &LockGuard<'_>,
    files: &[(IndexId, IndexFile)],
    already: &HashSet<PackId>,
    report: &mut PruneReport,
    condemned: &mut Vec<PackId>,
) -> Result<()> {
    let indexed: HashSet<PackId> = files
        .iter()
        .flat_map(|(_, f)| f.packs.iter().map(|p| p.id))
        .collect();
    let storage_now = guard.storage_now();
    let min_age = TimeDelta::from_std(guard.config().ttl * UNINDEXED_PACK_MIN_AGE_LOCK_TTLS)
        .unwrap_or(TimeDelta::MAX);
    for (id, l) in repo.stored_pack_listing()?.0 {
        if indexed.contains(&id) || already.contains(&id) {
            continue;
        }
        match (storage_now, l.last_modified) {
            (Some(now), Some(written)) if now.signed_duration_since(written) >= min_age => {
                report.unindexed_packs += 1;
                report.unindexed_bytes += l.size;
                condemned.push(id);
            }
            (Some(_), Some(_)) => {
                report.young_unindexed_packs += 1;
                report.young_unindexed_bytes += l.size;
            }
            _ => {
                report.undated_unindexed_packs += 1;
                report.undated_unindexed_bytes += l.size;
            }
        }
    }
    Ok(())
}

/// Copies the live blobs of the repacked packs (verified on the way) into new packs, which
/// join the kept ones; the old packs are condemned. Each old pack is read once; data and
/// metadata (trees, lists) go to separate packs (§7), each closed before it would exceed
/// pack_size or MAX_PACK_BLOBS, as backup does.
fn repack(
    repo: &Repository,
    guard: &mut LockGuard<'_>,
    triage: &mut Triage,
    report: &mut PruneReport,
) -> Result<()> {
    let pack_size = repo.params().pack_size as usize;
    let mut data = PackWriter::default();
    let mut meta = PackWriter::default();
    for (p, live) in std::mem::take(&mut triage.repack) {
        // Stop at a pack that is missing or holds a damaged live blob, before any plan exists:
        // going on would be unsafe. Its live blobs were claimed by it, so another pack's copy
        // of one of them counts as unused and could be condemned, leaving only the damaged
        // copy. Packs already written are unindexed, and condemned once old (§15).
        let damaged = |why: String| {
            RepoError::corrupted(
                format!("pack {}", p.id.short()),
                format!(
                    "{why}; prune stopped before condemning anything. Run `chatvault repair \
                     packs {}` (it salvages the intact blobs), then prune again",
                    p.id.short()
                ),
            )
        };
        let bytes = repo
            .storage
            .read(&layout::pack(&p.id))?
            .ok_or_else(|| damaged("missing from storage".into()))?;
        // Every live blob verified before any is copied.
        let sealed: Vec<&[u8]> = live
            .iter()
            .map(|b| live_blob(repo, &p, b, &bytes))
            .collect::<Result<_>>()
            .map_err(|e| damaged(e.to_string()))?;
        for (b, sealed) in live.iter().zip(sealed) {
            let writer = if b.ty.is_metadata() {
                &mut meta
            } else {
                &mut data
            };
            if writer.is_full_for(sealed.len(), pack_size) {
                triage.keep.push(writer.flush(repo, report)?);
            }
            writer.add(b, sealed.to_vec());
        }
        guard.refresh_if_due()?;
        report.repacked_packs += 1;
        report.repacked_bytes += p.size;
        triage.condemned.push(p.id);
    }
    for writer in [&mut data, &mut meta] {
        if !writer.entries.is_empty() {
            triage.keep.push(writer.flush(repo, report)?);
        }
    }
    Ok(())
}

/// The sealed bytes of blob `b` in the bytes of pack `p`, verified (it must open).
pub(crate) fn live_blob<'a>(
    repo: &Repository,
    p: &IndexPack,
    b: &IndexBlob,
    bytes: &'a [u8],
) -> Result<&'a [u8]> {
    let sealed = usize::try_from(b.offset)
        .ok()
        .and_then(|start| bytes.get(start..start.checked_add(b.length as usize)?))
        .ok_or_else(|| RepoError::corrupted(format!("pack {}", p.id.short()), "truncated"))?;
    blob::open_blob(repo.keys(), b.ty, &b.id, sealed).map_err(|e| {
        RepoError::corrupted(
            format!(
                "{} {} in pack {}",
                b.ty.kind().name(),
                b.id.short(),
                p.id.short()
            ),
            e,
        )
    })?;
    Ok(sealed)
}

/// Writes one index object for everything that stays, then the plan condemning the rest.
/// The index comes first: a crash in between only leaves duplicate index entries, which the
/// next prune cleans up. Index ids are content hashes, so it may coincide with an existing
/// object (same packs): that one is not condemned.
fn write_plan(
    repo: &Repository,
    guard: &LockGuard<'_>,
    files: &[(IndexId, IndexFile)],
    already_index: &HashSet<IndexId>,
    triage: Triage,
    report: &mut PruneReport,
) -> Result<(PlanId, PrunePlan)> {
    let kept_index: HashSet<IndexId> = repo
        .write_index_objects(triage.keep, &guard.liveness())?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let plan = PrunePlan {
        version: OBJECT_VERSION,
        time: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        hostname: gethostname::gethostname().to_string_lossy().into_owned(),
        packs: triage.condemned,
        index: files
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !already_index.contains(id) && !kept_index.contains(id))
            .collect(),
    };
    let (id, sealed) = objects::seal_object(repo.keys(), ObjectKind::PrunePlan, &plan, &mut OsRng)
        .map_err(|e| RepoError::Invalid(format!("cannot write the prune plan: {e}")))?;
    let id = PlanId::from_bytes(id);
    guard.write_new(&layout::plan(&id), sealed)?;
    tracing::info!(plan = %id.short(), packs = plan.packs.len(), "prune plan written");
    report.plan = Some(id);
    Ok((id, plan))
}

/// A pack being filled with sealed blobs copied from other packs (prune's repack, `repair
/// packs`' salvage).
#[derive(Default)]
pub(crate) struct PackWriter {
    bytes: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl PackWriter {
    /// Whether a blob of `len` sealed bytes must go into the next pack: this one is not empty
    /// and would exceed `pack_size` or [`pack::MAX_PACK_BLOBS`] with it.
    pub(crate) fn is_full_for(&self, len: usize, pack_size: usize) -> bool {
        !self.entries.is_empty()
            && (self.bytes.len() + len > pack_size || self.entries.len() >= pack::MAX_PACK_BLOBS)
    }

    /// Whether nothing was added since the last flush.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn add(&mut self, b: &IndexBlob, sealed: Vec<u8>) {
        self.entries.push(PackEntry {
            ty: b.ty,
            id: b.id,
            offset: self.bytes.len() as u64,
            length: b.length,
            raw_length: b.raw_length,
        });
        self.bytes.extend_from_slice(&sealed);
    }

    fn flush(&mut self, repo: &Repository, report: &mut PruneReport) -> Result<IndexPack> {
        let p = self.write(repo)?;
        report.new_packs += 1;
        report.new_bytes += p.size;
        Ok(p)
    }

    /// Writes the pack (a new random id, the blobs, the sealed header and trailer) and starts
    /// an empty one; returns the written pack's index entry.
    pub(crate) fn write(&mut self, repo: &Repository) -> Result<IndexPack> {
        let id = PackId::random(&mut OsRng);
        let mut bytes = std::mem::take(&mut self.bytes);
        let entries = std::mem::take(&mut self.entries);
        let area = bytes.len() as u64;
        bytes.extend_from_slice(&repo.pack_tail(&id, &entries, area));
        let size = bytes.len() as u64;
        repo.storage.write_new(&layout::pack(&id), bytes)?;
        Ok(IndexPack {
            id,
            size,
            blobs: entries.iter().map(IndexBlob::from).collect(),
        })
    }
}

/// Phase 2 for one plan.
fn sweep(
    repo: &Repository,
    guard: &LockGuard<'_>,
    id: PlanId,
    plan: &PrunePlan,
    dry_run: bool,
    report: &mut PruneReport,
) -> Result<()> {
    if let Some(why) = older_operation_running(repo, guard, id, plan)? {
        report.postponed.push((id, why));
        return Ok(());
    }
    let (files, _, used) = match needed(repo, &repo.load_plans()?) {
        Ok(u) => u,
        Err(e) => {
            report.postponed.push((id, e.to_string()));
            return Ok(());
        }
    };
    let (rescue, surviving_packs) = rescues(plan, &files, &used);
    // Packs a surviving index lists (an interrupted backup's pack indexed since) also stay.
    let stored = repo.stored_packs()?.0;
    let delete: Vec<PackId> = plan
        .packs
        .iter()
        .filter(|p| !rescue.contains_key(p) && !surviving_packs.contains(p))
        .copied()
        .collect();
    report.rescued_packs += rescue.len();
    report.deleted_index += plan.index.len();
    report.deleted_packs += delete.iter().filter(|p| stored.contains_key(p)).count();
    report.deleted_bytes += delete.iter().filter_map(|p| stored.get(p)).sum::<u64>();
    report.swept_plans.push(id);
    if dry_run {
        return Ok(());
    }
    delete_condemned(repo, guard, id, plan, rescue, &delete)
}

/// Why the sweep of plan `id` must wait, if it must: anything that started before the plan
/// (allowing for clock skew) may have deduplicated against the packs it condemns and not
/// published its snapshot yet. "Before" by the devices' clocks (`time` fields) or by storage
/// time (the plan object's and the lock's, where the backend reports times): postponed if
/// either says so.
fn older_operation_running(
    repo: &Repository,
    guard: &LockGuard<'_>,
    id: PlanId,
    plan: &PrunePlan,
) -> Result<Option<String>> {
    let plan_time = DateTime::parse_from_rfc3339(&plan.time)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| RepoError::corrupted(format!("prune plan {}", id.short()), "bad time"))?;
    let plan_stored = repo.storage.last_modified(&layout::plan(&id))?;
    let margin = TimeDelta::from_std(CLOCK_SKEW_MARGIN).unwrap_or(TimeDelta::MAX);
    let before = |t: DateTime<Utc>, plan: DateTime<Utc>| {
        plan.checked_add_signed(margin).is_none_or(|p| t < p)
    };
    let mine = guard.id();
    for live in guard.live_locks()? {
        if live.id == mine {
            continue;
        }
        let l = live.lock;
        let started = DateTime::parse_from_rfc3339(&l.time).map(|t| t.with_timezone(&Utc));
        let before_by_storage = live
            .started_by_storage
            .zip(plan_stored)
            .is_some_and(|(s, p)| before(s, p));
        if started.is_err() || started.is_ok_and(|t| before(t, plan_time)) || before_by_storage {
            return Ok(Some(format!(
                "{} on {} (pid {}) started {} and is still running",
                l.operation, l.hostname, l.pid, l.time
            )));
        }
    }
    Ok(None)
}

/// The condemned packs that a snapshot written after the plan needs (to be indexed again, with
/// the entries of the condemned index objects, and kept), and the packs surviving index
/// objects list.
fn rescues(
    plan: &PrunePlan,
    files: &[(IndexId, IndexFile)],
    used: &HashSet<BlobId>,
) -> (BTreeMap<PackId, IndexPack>, HashSet<PackId>) {
    let condemned_packs: HashSet<PackId> = plan.packs.iter().copied().collect();
    let condemned_index: HashSet<IndexId> = plan.index.iter().copied().collect();
    // Blobs available after the sweep: in surviving index objects, outside condemned packs.
    let mut available: HashSet<BlobId> = HashSet::new();
    let mut surviving_packs: HashSet<PackId> = HashSet::new();
    for (fid, f) in files {
        if condemned_index.contains(fid) {
            continue;
        }
        for p in &f.packs {
            surviving_packs.insert(p.id);
            if !condemned_packs.contains(&p.id) {
                available.extend(p.blobs.iter().map(|b| b.id));
            }
        }
    }
    let mut rescue: BTreeMap<PackId, IndexPack> = BTreeMap::new();
    for (_, f) in files {
        for p in &f.packs {
            if condemned_packs.contains(&p.id)
                && !surviving_packs.contains(&p.id)
                && p.blobs
                    .iter()
                    .any(|b| used.contains(&b.id) && !available.contains(&b.id))
            {
                rescue.entry(p.id).or_insert_with(|| p.clone());
            }
        }
    }
    (rescue, surviving_packs)
}

/// Indexes the rescued packs again, then deletes the plan's index objects, the packs in
/// `delete` and the plan. Index objects first: a crash after that leaves only unreferenced
/// packs (harmless). A rescue index may coincide with a condemned one (same content): that one
/// stays. Every delete happens under a live lock (a lapsed prune could race another prune,
/// §11).
fn delete_condemned(
    repo: &Repository,
    guard: &LockGuard<'_>,
    id: PlanId,
    plan: &PrunePlan,
    rescue: BTreeMap<PackId, IndexPack>,
    delete: &[PackId],
) -> Result<()> {
    let rescue_index: HashSet<IndexId> = repo
        .write_index_objects(rescue.into_values().collect(), &guard.liveness())?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    for i in plan.index.iter().filter(|i| !rescue_index.contains(i)) {
        guard.ensure_live()?;
        repo.storage.delete(&layout::index(i))?;
    }
    for p in delete {
        guard.ensure_live()?;
        repo.storage.delete(&layout::pack(p))?;
    }
    guard.ensure_live()?;
    repo.storage.delete(&layout::plan(&id))?;
    tracing::info!(plan = %id.short(), packs = delete.len(), "prune plan swept");
    Ok(())
}

#[cfg(test)]
mod tests {
    use chatvault_format::blob::BlobType;
    use chatvault_format::id::SnapshotId;
    use chatvault_format::objects::Snapshot;

    use super::*;
    use crate::backup::{self, BackupOptions, NoProgress};
    use crate::restore::{self, RestoreOptions};
    use crate::storage::Storage;
    use chatvault_format::key::BackupKey;

    use crate::forget::{KeepPolicy, forget};
    use crate::test_util::{memory_repo as repo, noise};

    fn backup_of(repo: &Repository, dir: &std::path::Path, host: &str) -> SnapshotId {
        let opts = BackupOptions {
            hostname: Some(host.into()),
            ..Default::default()
        };
        backup::backup(repo, &[dir.to_path_buf()], &opts, &NoProgress)
            .unwrap()
            .id
    }

    fn pack_count(repo: &Repository) -> usize {
        repo.stored_packs().unwrap().0.len()
    }

    fn restores(repo: &Repository, id: &SnapshotId, name: &str, want: &[u8]) {
        let s = repo.load_snapshot(id).unwrap();
        let t = tempfile::tempdir().unwrap();
        let out =
            restore::restore(repo, &s, t.path(), &RestoreOptions::default(), &NoProgress).unwrap();
        assert!(out.failed.is_empty(), "{:?}", out.failed);
        let root = std::fs::read_dir(t.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(std::fs::read(root.path().join(name)).unwrap(), want);
    }

    fn grace0() -> PruneOptions {
        PruneOptions {
            grace: Duration::ZERO,
            ..Default::default()
        }
    }

    #[test]
    fn a_damaged_live_blob_stops_prune_before_any_plan_and_names_the_repair() {
        let r = repo("prune-damaged");
        let src = tempfile::tempdir().unwrap();
        let keep = noise(11, 200 << 10);
        std::fs::write(src.path().join("keep.bin"), &keep).unwrap();
        std::fs::write(src.path().join("gone.bin"), noise(12, 600 << 10)).unwrap();
        backup_of(&r, src.path(), "a");
        std::fs::remove_file(src.path().join("gone.bin")).unwrap();
        let s2 = backup_of(&r, src.path(), "a");
        forget(
            &r,
            &KeepPolicy {
                last: Some(1),
                ..Default::default()
            },
            false,
        )
        .unwrap();
        // keep.bin's blobs are live in a pack that is mostly gone.bin: due for a repack. One
        // bit of one of them flipped.
        let index = r.load_index().unwrap();
        let root = r
            .load_tree(&index, &r.load_snapshot(&s2).unwrap().tree)
            .unwrap();
        let NodeKind::Dir { subtree } = &root.nodes[0].kind else {
            panic!("the backed-up folder")
        };
        let dir = r.load_tree(&index, subtree).unwrap();
        let node = dir.nodes.iter().find(|n| n.name.0 == b"keep.bin").unwrap();
        let NodeKind::File { content, .. } = &node.kind else {
            panic!("a file")
        };
        let loc = index.get(&content[0]).unwrap();
        assert_eq!(loc.ty, BlobType::Data);
        let path = layout::pack(&loc.pack);
        let mut bytes = r.storage.read(&path).unwrap().unwrap();
        bytes[(loc.offset + u64::from(loc.length) / 2) as usize] ^= 0x10;
        r.storage.delete(&path).unwrap();
        r.storage.write_new(&path, bytes).unwrap();

        let err = prune(&r, &grace0()).unwrap_err().to_string();
        assert!(err.contains("data blob"), "{err}");
        assert!(
            err.contains(&format!("chatvault repair packs {}", loc.pack.short())),
            "{err}"
        );
        // Nothing condemned: the pack stays, indexed, for `repair packs`.
        assert!(r.load_plans().unwrap().is_empty());
        assert!(r.storage.read(&path).unwrap().is_some());
        assert!(r.load_index().unwrap().packs.contains_key(&loc.pack));

        let fixed = crate::repair::repair_packs(&r, &[loc.pack], &Default::default()).unwrap();
        assert_eq!(fixed.packs[0].outcome, crate::repair::PackOutcome::Repaired);
        backup_of(&r, src.path(), "a");
        restores(&r, &s2, "keep.bin", &keep);
        let rep = prune(&r, &grace0()).unwrap();
        assert_eq!(rep.swept_plans.len(), 1, "{rep:?}");
        restores(&r, &s2, "keep.bin", &keep);
    }

    #[test]
    fn prune_frees_forgotten_data_and_keeps_what_snapshots_need() {
        let r = repo("prune-basic");
        let src = tempfile::tempdir().unwrap();
        let keep = noise(1, 3 << 20);
        std::fs::write(src.path().join("keep.bin"), &keep).unwrap();
        std::fs::write(src.path().join("gone.bin"), noise(2, 3 << 20)).unwrap();
        let s1 = backup_of(&r, src.path(), "a");
        std::fs::remove_file(src.path().join("gone.bin")).unwrap();
        let s2 = backup_of(&r, src.path(), "a");
        let before = pack_count(&r);

        let policy = KeepPolicy {
            last: Some(1),
            ..Default::default()
        };
        let f = forget(&r, &policy, false).unwrap();
        assert_eq!(f.remove.len(), 1);
        assert_eq!(f.remove[0].id, s1);

        // Default grace: only a plan; nothing deleted yet, and backups avoid condemned packs.
        let rep = prune(&r, &PruneOptions::default()).unwrap();
        assert!(rep.plan.is_some());
        assert!(rep.swept_plans.is_empty());
        assert_eq!(pack_count(&r) - rep.new_packs, before);
        let index = r.load_index().unwrap();
        assert!(!index.condemned.is_empty());

        // The next prune with grace 0 sweeps the plan.
        let rep = prune(&r, &grace0()).unwrap();
        assert_eq!(rep.swept_plans.len(), 1, "{rep:?}");
        assert!(rep.deleted_packs > 0);
        assert!(pack_count(&r) < before + 1);
        assert!(r.load_plans().unwrap().is_empty());
        restores(&r, &s2, "keep.bin", &keep);
        let report = crate::check::check(
            &r,
            crate::check::CheckOptions { read_data: true },
            &NoProgress,
        )
        .unwrap();
        assert!(report.ok(), "{report:?}");
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    }

    /// The race prune is designed for: a backup that loaded the index before the plan existed
    /// references data in packs the plan condemns. Its live lock postpones the sweep; once it
    /// has published its snapshot, the sweep rescues those packs instead of deleting them.
    #[test]
    fn sweep_waits_for_older_backups_and_rescues_what_they_referenced() {
        let r = repo("prune-race");
        let src = tempfile::tempdir().unwrap();
        let old = noise(3, 2 << 20);
        std::fs::write(src.path().join("old.bin"), &old).unwrap();
        let s1 = backup_of(&r, src.path(), "a");
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("x.bin"), noise(4, 1 << 20)).unwrap();
        backup_of(&r, other.path(), "b");

        // A backup starts (its lock) and would reuse s1's data...
        let running = lock::lock(&r, "backup", false).unwrap();
        // ...meanwhile s1 is forgotten and prune condemns its packs.
        let s1_loaded = r.load_snapshot(&s1).unwrap();
        r.storage.delete(&layout::snapshot(&s1)).unwrap();
        let rep = prune(&r, &grace0()).unwrap();
        assert!(rep.plan.is_some());
        assert!(rep.swept_plans.is_empty());
        assert_eq!(rep.postponed.len(), 1, "{rep:?}");
        assert!(rep.postponed[0].1.contains("backup"), "{rep:?}");

        // The running backup publishes a snapshot referencing s1's (condemned) tree and data.
        let s1_snap = Snapshot {
            time: Utc::now().to_rfc3339(),
            seq: 99,
            ..s1_loaded
        };
        let (id, sealed) =
            objects::seal_object(r.keys(), ObjectKind::Snapshot, &s1_snap, &mut OsRng).unwrap();
        let late = SnapshotId::from_bytes(id);
        r.storage
            .write_new(&layout::snapshot(&late), sealed)
            .unwrap();
        drop(running);

        let rep = prune(&r, &grace0()).unwrap();
        assert_eq!(rep.swept_plans.len(), 1, "{rep:?}");
        assert!(rep.rescued_packs > 0, "{rep:?}");
        restores(&r, &late, "old.bin", &old);
        let report = crate::check::check(
            &r,
            crate::check::CheckOptions { read_data: true },
            &NoProgress,
        )
        .unwrap();
        assert!(report.ok(), "{report:?}");
    }

    #[test]
    fn backups_do_not_deduplicate_against_condemned_packs() {
        let r = repo("prune-dedup");
        let src = tempfile::tempdir().unwrap();
        let data = noise(5, 2 << 20);
        std::fs::write(src.path().join("a.bin"), &data).unwrap();
        let s1 = backup_of(&r, src.path(), "a");
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("x.bin"), noise(6, 1 << 20)).unwrap();
        backup_of(&r, other.path(), "b");
        r.storage.delete(&layout::snapshot(&s1)).unwrap();
        let rep = prune(&r, &PruneOptions::default()).unwrap();
        assert!(rep.plan.is_some() && rep.swept_plans.is_empty());
        // Same content again: stored anew (not deduplicated against the condemned pack).
        let s3 = backup::backup(
            &r,
            &[src.path().to_path_buf()],
            &BackupOptions::default(),
            &NoProgress,
        )
        .unwrap();
        assert!(s3.snapshot.summary.new_bytes >= data.len() as u64);
        // Sweeping now deletes the condemned packs and the new snapshot still restores.
        let rep = prune(&r, &grace0()).unwrap();
        assert_eq!(rep.rescued_packs, 0, "{rep:?}");
        assert!(rep.deleted_packs > 0);
        restores(&r, &s3.id, "a.bin", &data);
    }

    /// A repository in a local folder: the fs backend reports modification times.
    fn fs_repo() -> (tempfile::TempDir, Repository) {
        let dir = tempfile::tempdir().unwrap();
        let key = BackupKey::from_bytes([7; 32]);
        let r =
            Repository::init(Storage::open(dir.path().to_str().unwrap()).unwrap(), &key).unwrap();
        (dir, r)
    }

    /// A pack as a killed backup leaves it: stored, in no index.
    fn unindexed_pack(r: &Repository) -> PackId {
        let id = PackId::random(&mut OsRng);
        r.storage
            .write_new(&layout::pack(&id), noise(9, 1000))
            .unwrap();
        id
    }

    fn set_age(dir: &std::path::Path, path: &str, age: Duration) {
        let f = std::fs::File::options()
            .write(true)
            .open(dir.join(path))
            .unwrap();
        f.set_times(std::fs::FileTimes::new().set_modified(std::time::SystemTime::now() - age))
            .unwrap();
    }

    #[test]
    fn unindexed_packs_are_condemned_only_when_old_by_storage_time() {
        let (dir, r) = fs_repo();
        let young = unindexed_pack(&r);
        let old = unindexed_pack(&r);
        // Just under and well over 4 lock lifetimes (2 h) old by the storage's clock.
        set_age(
            dir.path(),
            &layout::pack(&young),
            UNINDEXED_PACK_MIN_AGE - Duration::from_secs(600),
        );
        set_age(
            dir.path(),
            &layout::pack(&old),
            UNINDEXED_PACK_MIN_AGE + Duration::from_secs(600),
        );

        let rep = prune(&r, &PruneOptions::default()).unwrap();
        assert_eq!(
            (rep.unindexed_packs, rep.young_unindexed_packs),
            (1, 1),
            "{rep:?}"
        );
        assert_eq!(rep.undated_unindexed_packs, 0, "{rep:?}");
        let plans = r.load_plans().unwrap();
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].1.packs, vec![old]);

        let rep = prune(&r, &grace0()).unwrap();
        assert_eq!(rep.swept_plans.len(), 1, "{rep:?}");
        assert_eq!(rep.young_unindexed_packs, 1, "{rep:?}");
        let left = r.stored_packs().unwrap().0;
        assert!(
            left.contains_key(&young) && !left.contains_key(&old),
            "{left:?}"
        );
    }

    #[test]
    fn unindexed_packs_of_unknown_age_are_left_alone() {
        // memory:// reports no modification times.
        let r = repo("prune-undated");
        let p = unindexed_pack(&r);
        let rep = prune(&r, &grace0()).unwrap();
        assert_eq!(rep.unindexed_packs, 0, "{rep:?}");
        assert_eq!(rep.undated_unindexed_packs, 1, "{rep:?}");
        assert!(rep.plan.is_none(), "{rep:?}");
        assert!(r.stored_packs().unwrap().0.contains_key(&p));
    }

    /// A backup on a device whose clock runs an hour ahead claims (in its lock's `time`) to
    /// have started after the plan; by storage time it started before, so the sweep waits.
    #[test]
    fn sweep_waits_for_a_backup_whose_clock_runs_ahead() {
        let (dir, r) = fs_repo();
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("old.bin"), noise(11, 1 << 20)).unwrap();
        let s1 = backup_of(&r, src.path(), "a");

        // The other device took its lock 10 minutes ago (storage time) and has not refreshed.
        let ahead = Utc::now() + chrono::TimeDelta::hours(1) - chrono::TimeDelta::minutes(10);
        let lid = chatvault_format::id::LockId::random(&mut OsRng);
        let l = objects::Lock {
            version: OBJECT_VERSION,
            hostname: "fast-clock".into(),
            pid: 7,
            operation: "backup".into(),
            exclusive: false,
            time: ahead.to_rfc3339(),
            expires: (ahead + chrono::TimeDelta::from_std(lock::LOCK_TTL).unwrap()).to_rfc3339(),
        };
        let sealed = objects::seal_lock(r.keys(), lid.as_bytes(), &l, &mut OsRng);
        let lpath = format!("{}{lid}", layout::LOCKS);
        r.storage.write_new(&lpath, sealed).unwrap();
        set_age(dir.path(), &lpath, Duration::from_secs(600));

        r.storage.delete(&layout::snapshot(&s1)).unwrap();
        let rep = prune(&r, &grace0()).unwrap();
        assert!(rep.plan.is_some(), "{rep:?}");
        assert!(rep.swept_plans.is_empty(), "{rep:?}");
        assert!(rep.postponed[0].1.contains("fast-clock"), "{rep:?}");

        // Gone (stale by storage time after 30 minutes, or removed): the sweep proceeds.
        r.storage.delete(&lpath).unwrap();
        let rep = prune(&r, &grace0()).unwrap();
        assert_eq!(rep.swept_plans.len(), 1, "{rep:?}");
    }
}
