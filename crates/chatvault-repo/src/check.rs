//! Verifying a repository (`chatvault check [--read-data]`).
//!
//! Structure check: the config opens; every index object opens; every indexed pack exists with
//! the indexed size; every snapshot opens; every tree of every snapshot loads; every blob a
//! snapshot references is indexed. With `read_data`, additionally every pack is downloaded, its
//! header authenticated and compared with the index, and every blob opened and checked against
//! its id (at its indexed place when the header is damaged: restore never reads headers).
//! Tree entries restore refuses (unsafe or duplicate names, trees nested deeper than
//! [`MAX_DEPTH`]; FORMAT §12.1) are errors: the snapshot cannot be restored intact.
//! Problems are mapped back to the snapshots and files they affect.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use chatvault_format::blob::BlobType;
use chatvault_format::id::{BlobId, IndexId, PackId};
use chatvault_format::objects::{NodeKind, Tree};
use chatvault_format::{blob, list, pack};

use crate::backup::Progress;
use crate::error::Result;
use crate::lock;
use crate::repository::{BlobLocation, Index, Repository, layout, par_map, par_map_n};
use crate::restore::{self, MAX_DEPTH, Refusal};

/// Options of a check.
#[derive(Debug, Default, Clone, Copy)]
pub struct CheckOptions {
    /// Download and verify every pack.
    pub read_data: bool,
}

/// What a check found.
#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    /// Problems that make data unrestorable or the repository inconsistent.
    pub errors: Vec<String>,
    /// Harmless findings (e.g. packs left by an interrupted backup).
    pub warnings: Vec<String>,
    /// Snapshot short id → files (or directories) that cannot be restored intact.
    pub damaged: BTreeMap<String, Vec<String>>,
    /// Snapshots checked.
    pub snapshots: usize,
    /// Packs in the index.
    pub packs: usize,
    /// Blobs in the index.
    pub blobs: usize,
    /// Blobs downloaded and verified (with `read_data`).
    pub blobs_verified: usize,
    /// Indexed packs that are missing, of the wrong size, or (with `read_data`) hold blobs that
    /// do not verify: what `chatvault repair packs` takes (FORMAT §12.5).
    pub damaged_packs: Vec<PackId>,
}

impl CheckReport {
    /// True when no errors were found.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Checks the repository.
pub fn check(
    repo: &Repository,
    opts: CheckOptions,
    progress: &dyn Progress,
) -> Result<CheckReport> {
    // Verify what is in storage, not the device's cached copies.
    let repo = &repo.without_cache();
    let _guard = lock::lock(repo, "check", false)?;
    let mut r = CheckReport::default();
    let index = load_index(repo, &mut r)?;
    let mut bad_packs = check_stored_packs(repo, &index, &mut r)?;
    // Without reading data: every pack of the right size must carry its own sealed trailer
    // (format 2, one 44-byte ranged read) or header (format 1): a pack stored under another
    // pack's name, or with a damaged tail, is found here. Blobs are not marked bad for it:
    // restore reads blobs at their indexed places and never needs headers; `--read-data`
    // tells which blobs really are unusable.
    if !opts.read_data {
        check_pack_headers(repo, &index, &bad_packs, &mut r);
    }
    // Blobs that are unusable: not indexed, in a missing/damaged pack, or failing verification.
    let mut bad: HashSet<BlobId> = HashSet::new();
    if opts.read_data {
        read_packs(repo, &index, &mut bad_packs, &mut bad, progress, &mut r)?;
    }
    for (id, loc) in index.iter() {
        if bad_packs.contains(&loc.pack) {
            bad.insert(id);
        }
    }
    check_snapshots(repo, &index, &bad, &mut r)?;
    r.damaged_packs.extend(bad_packs);
    r.damaged_packs.sort();
    r.damaged_packs.dedup();
    r.errors.dedup();
    let mut once = HashSet::new();
    r.warnings.retain(|w| once.insert(w.clone()));
    Ok(r)
}

/// Loads the index as stored; an index object that does not open is an error.
fn load_index(repo: &Repository, r: &mut CheckReport) -> Result<Index> {
    let mut index = Index::default();
    let ids: Vec<IndexId> = repo
        .list_ids::<IndexId>(layout::INDEX)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    for (id, loaded) in ids.iter().zip(par_map(&ids, |id| repo.load_index_file(id))) {
        match loaded {
            Ok(f) => {
                index.add(&f);
                index.files.push(*id);
            }
            Err(e) => r.errors.push(e.to_string()),
        }
    }
    r.packs = index.packs.len();
    index.finish();
    r.blobs = index.len();
    Ok(index)
}

/// Compares the stored packs with the index: an indexed pack that is missing or of another
/// size is an error (returned as bad), an unindexed one or an unexpected object a warning.
fn check_stored_packs(
    repo: &Repository,
    index: &Index,
    r: &mut CheckReport,
) -> Result<HashSet<PackId>> {
    let (stored, unexpected) = repo.stored_packs()?;
    for path in unexpected {
        r.warnings.push(format!(
            "unexpected object {path} (not a pack at its place; ignored)"
        ));
    }
    let mut bad_packs: HashSet<PackId> = HashSet::new();
    for (id, size) in &index.packs {
        match stored.get(id) {
            None => {
                r.errors
                    .push(format!("pack {} is missing from storage", id.short()));
                bad_packs.insert(*id);
            }
            Some(s) if s != size => {
                r.errors.push(format!(
                    "pack {} has {s} bytes, the index says {size} (truncated or replaced)",
                    id.short()
                ));
                bad_packs.insert(*id);
            }
            Some(_) => {}
        }
    }
    let unreferenced = stored
        .keys()
        .filter(|id| !index.packs.contains_key(id))
        .count();
    if unreferenced > 0 {
        r.warnings.push(format!(
            "{unreferenced} pack(s) are not referenced by any index (left by an interrupted backup; harmless)"
        ));
    }
    Ok(bad_packs)
}

/// Authenticates the trailer (or header) of every indexed pack that is not already bad.
fn check_pack_headers(
    repo: &Repository,
    index: &Index,
    bad_packs: &HashSet<PackId>,
    r: &mut CheckReport,
) {
    let mut to_check: Vec<(PackId, u64)> = index
        .packs
        .iter()
        .filter(|(id, _)| !bad_packs.contains(id))
        .map(|(id, size)| (*id, *size))
        .collect();
    to_check.sort();
    for ((id, _), verdict) in to_check.iter().zip(par_map(&to_check, |(id, size)| {
        crate::repair::read_header(repo, id, *size).map(|h| h.is_ok())
    })) {
        match verdict {
            Ok(true) => {}
            Ok(false) => {
                r.errors.push(format!(
                    "pack {}: its header does not authenticate as this pack (damaged, or \
                     another pack stored under its name); run check --read-data to find the \
                     files affected",
                    id.short()
                ));
                r.damaged_packs.push(*id);
            }
            Err(e) => r.errors.push(format!("pack {}: {e}", id.short())),
        }
    }
}

/// What reading one pack found (`--read-data`).
#[derive(Default)]
struct PackVerdict {
    /// The pack is not in storage.
    missing: bool,
    errors: Vec<String>,
    bad: Vec<BlobId>,
    verified: usize,
    /// Its header did not open.
    header_damaged: bool,
}

/// Buffers a `--read-data` thread reuses from pack to pack: a fresh pack buffer cost a page
/// fault per 4 KiB (a third of the time on a local folder), and [`blob::open_blob`]'s
/// allocations per blob were fresh `mmap`s for 1 MiB media chunks.
#[derive(Default)]
struct Scratch {
    /// The pack.
    pack: Vec<u8>,
    /// A copy of one sealed blob, decrypted in place.
    sealed: Vec<u8>,
    /// Its decompressed plaintext.
    plain: Vec<u8>,
}

impl Scratch {
    /// Opens and verifies one sealed blob of the pack.
    fn verify_blob(
        &mut self,
        repo: &Repository,
        ty: BlobType,
        id: &BlobId,
        sealed: &[u8],
    ) -> std::result::Result<(), blob::BlobError> {
        self.sealed.clear();
        self.sealed.extend_from_slice(sealed);
        self.plain.clear();
        blob::open_blob_into(repo.keys(), ty, id, &mut self.sealed, &mut self.plain).map(|_| ())
    }
}

/// Packs read and verified at once by `--read-data`: one per core on a local folder (the work
/// is decryption and hashing), at least 4 on a cloud service (round trips). Each holds one pack.
fn pack_checkers(repo: &Repository) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    match repo.storage.backend() {
        "fs" | "memory" => cores.clamp(1, 8),
        _ => cores.clamp(4, 8),
    }
}

/// `--read-data`: downloads every indexed pack that is not already bad and verifies its
/// blobs, several packs at once ([`pack_checkers`]); unusable blobs go into `bad`, packs that
/// vanished into `bad_packs`. Findings are reported in pack-id order.
fn read_packs(
    repo: &Repository,
    index: &Index,
    bad_packs: &mut HashSet<PackId>,
    bad: &mut HashSet<BlobId>,
    progress: &dyn Progress,
    r: &mut CheckReport,
) -> Result<()> {
    let mut by_pack: HashMap<PackId, Vec<(BlobId, BlobLocation)>> = HashMap::new();
    for (id, loc) in index.iter() {
        by_pack.entry(loc.pack).or_default().push((id, loc));
    }
    let mut packs: Vec<_> = index
        .packs
        .keys()
        .filter(|p| !bad_packs.contains(p))
        .copied()
        .collect();
    packs.sort();
    // After a storage error no pack is started: packs are taken in order, so every pack skipped
    // comes after the failed one, whose error the loop below returns first.
    let failed = AtomicBool::new(false);
    // One set of buffers per thread at most, freed when the check is done.
    let scratches: Mutex<Vec<Scratch>> = Mutex::new(Vec::new());
    let verdicts = par_map_n(&packs, pack_checkers(repo), |pid| {
        let mut v = PackVerdict::default();
        if failed.load(Ordering::Relaxed) {
            return Ok(v);
        }
        let size = index.packs.get(pid).copied().unwrap_or_default();
        let mut scratch = scratches.lock().expect("scratch").pop().unwrap_or_default();
        let mut pack = std::mem::take(&mut scratch.pack);
        let read = repo
            .storage
            .read_range_into(&layout::pack(pid), 0, size, &mut pack);
        match read {
            Ok(Some(got)) => {
                progress.bytes(got as u64);
                let blobs = by_pack.get(pid).map(Vec::as_slice).unwrap_or_default();
                verify_pack_blobs(repo, *pid, &pack[..got], blobs, &mut scratch, &mut v);
            }
            Ok(None) => v.missing = true,
            Err(_) => failed.store(true, Ordering::Relaxed),
        }
        scratch.pack = pack;
        scratches.lock().expect("scratch").push(scratch);
        read.map(|_| v)
    });
    for (pid, verdict) in packs.iter().zip(verdicts) {
        let v = verdict?;
        if v.missing {
            r.errors
                .push(format!("pack {} is missing from storage", pid.short()));
            bad_packs.insert(*pid);
        }
        if !v.bad.is_empty() || v.header_damaged {
            r.damaged_packs.push(*pid);
        }
        r.errors.extend(v.errors);
        r.blobs_verified += v.verified;
        bad.extend(v.bad);
    }
    Ok(())
}

/// Verifies the blobs the index places in pack `pid` (its `bytes`). A damaged header is an
/// error, but restore reads blobs at their indexed places and never needs it: the blobs are
/// then verified there, so only files that really cannot be restored are listed.
fn verify_pack_blobs(
    repo: &Repository,
    pid: PackId,
    bytes: &[u8],
    blobs: &[(BlobId, BlobLocation)],
    scratch: &mut Scratch,
    r: &mut PackVerdict,
) {
    let header = match pack::decode_header(repo.keys(), &pid, bytes) {
        Ok(h) => Some(h),
        Err(e) => {
            r.errors.push(format!(
                "pack {}: header unreadable: {e} (its blobs are verified at their \
                 indexed places)",
                pid.short()
            ));
            r.header_damaged = true;
            None
        }
    };
    let in_header: Option<HashMap<BlobId, _>> = header
        .as_ref()
        .map(|h| h.iter().map(|e| (e.id, e)).collect());
    for (bid, loc) in blobs {
        let Some(in_header) = &in_header else {
            let sealed = usize::try_from(loc.offset)
                .ok()
                .and_then(|start| bytes.get(start..start.checked_add(loc.length as usize)?));
            match sealed.map(|s| scratch.verify_blob(repo, loc.ty, bid, s)) {
                Some(Ok(_)) => r.verified += 1,
                Some(Err(err)) => {
                    r.errors.push(format!(
                        "{} {} in pack {}: {err}",
                        loc.ty.kind().name(),
                        bid.short(),
                        pid.short()
                    ));
                    r.bad.push(*bid);
                }
                None => {
                    r.errors.push(format!(
                        "{} {}: indexed beyond the end of pack {}",
                        loc.ty.kind().name(),
                        bid.short(),
                        pid.short()
                    ));
                    r.bad.push(*bid);
                }
            }
            continue;
        };
        let Some(e) = in_header.get(bid) else {
            r.errors.push(format!(
                "blob {} is indexed in pack {} but not in its header",
                bid.short(),
                pid.short()
            ));
            r.bad.push(*bid);
            continue;
        };
        if e.offset != loc.offset || e.length != loc.length || e.ty != loc.ty {
            r.errors.push(format!(
                "blob {}: index and pack {} header disagree",
                bid.short(),
                pid.short()
            ));
            r.bad.push(*bid);
            continue;
        }
        let sealed = &bytes[e.offset as usize..(e.offset + u64::from(e.length)) as usize];
        match scratch.verify_blob(repo, e.ty, bid, sealed) {
            Ok(_) => r.verified += 1,
            Err(err) => {
                r.errors.push(format!(
                    "{} {} in pack {}: {err}",
                    e.ty.kind().name(),
                    bid.short(),
                    pid.short()
                ));
                r.bad.push(*bid);
            }
        }
    }
}

/// Walks every snapshot's trees and maps the unusable blobs (and trees restore refuses) to the
/// files they damage.
fn check_snapshots(
    repo: &Repository,
    index: &Index,
    bad: &HashSet<BlobId>,
    r: &mut CheckReport,
) -> Result<()> {
    // Verdicts on content lists, shared by all snapshots (most lists are in many of them).
    let mut lists_seen = HashMap::new();
    for (sid, snap) in repo.snapshots()? {
        r.snapshots += 1;
        let snap = match snap {
            Ok(s) => s,
            Err(e) => {
                r.errors.push(e.to_string());
                r.damaged
                    .entry(sid.short())
                    .or_default()
                    .push("(the whole snapshot)".into());
                continue;
            }
        };
        let mut walk = Walk {
            repo,
            index,
            bad,
            seen: HashSet::new(),
            lists_seen: &mut lists_seen,
            ancestors: vec![snap.tree],
            budget: 0,
            damaged: Vec::new(),
            warnings: &mut r.warnings,
            errors: &mut r.errors,
        };
        walk.tree(&snap.tree, "");
        let damaged = walk.damaged;
        if !damaged.is_empty() {
            r.errors.push(format!(
                "snapshot {} ({}): {} item(s) cannot be restored intact",
                sid.short(),
                snap.time,
                damaged.len()
            ));
            r.damaged.insert(sid.short(), damaged);
        }
    }
    Ok(())
}

/// One snapshot's walk of its trees ([`Walk::tree`]): what every level of the recursion shares.
struct Walk<'a> {
    repo: &'a Repository,
    index: &'a Index,
    /// Blobs found unusable.
    bad: &'a HashSet<BlobId>,
    /// Trees of this snapshot already visited: their errors are reported on the first visit.
    seen: HashSet<BlobId>,
    /// Verdicts on content lists, shared by all snapshots.
    lists_seen: &'a mut ListVerdicts,
    /// Tree ids from the root to the tree being walked.
    ancestors: Vec<BlobId>,
    /// Entries walked so far (bounded by [`restore::MAX_ENTRIES`]).
    budget: usize,
    /// Items of this snapshot that cannot be restored intact.
    damaged: Vec<String>,
    warnings: &'a mut Vec<String>,
    errors: &'a mut Vec<String>,
}

impl Walk<'_> {
    /// Walks the tree `tree_id` (shown below `prefix`) and everything beneath it, recording
    /// what cannot be restored intact.
    fn tree(&mut self, tree_id: &BlobId, prefix: &str) {
        let shown_dir = if prefix.is_empty() {
            "/".to_string()
        } else {
            prefix.to_string()
        };
        if self.bad.contains(tree_id) {
            self.damaged
                .push(format!("{shown_dir} (directory listing damaged)"));
            return;
        }
        let tree: Tree = match self.repo.load_tree(self.index, tree_id) {
            Ok(t) => t,
            Err(e) => {
                self.errors.push(e.to_string());
                self.damaged
                    .push(format!("{shown_dir} (directory listing damaged)"));
                return;
            }
        };
        let first_visit = self.seen.insert(*tree_id);
        for (n, refusal) in tree.nodes.iter().zip(restore::refusals(&tree)) {
            let path = format!("{prefix}{}", String::from_utf8_lossy(&n.name.0));
            if self.over_budget(&path) {
                return;
            }
            if self.refused(refusal, &path, tree_id, first_visit) {
                continue;
            }
            self.node(&n.kind, path, first_visit);
        }
    }

    /// Counts one entry; true when the snapshot has more than [`restore::MAX_ENTRIES`] (reported
    /// once): the walk stops there.
    fn over_budget(&mut self, path: &str) -> bool {
        // A hostile DAG of shared subtrees can describe 2^depth entries (restore::MAX_ENTRIES).
        self.budget += 1;
        if self.budget > restore::MAX_ENTRIES {
            if self.budget == restore::MAX_ENTRIES + 1 {
                self.errors.push(format!(
                    "the snapshot has more than {} entries (a hostile or broken tree)",
                    restore::MAX_ENTRIES
                ));
                self.damaged
                    .push(format!("{path} (and the rest: too many entries)"));
            }
            return true;
        }
        false
    }

    /// Records an entry restore refuses (FORMAT §12.1), if it is one; true when the entry is
    /// not to be walked further.
    fn refused(
        &mut self,
        refusal: Option<Refusal>,
        path: &str,
        tree_id: &BlobId,
        first_visit: bool,
    ) -> bool {
        // Entries restore refuses (FORMAT §12.1): a hostile or broken tree.
        match refusal {
            None => false,
            Some(Refusal::Duplicate { first: false, .. }) => true,
            Some(Refusal::Journal) => {
                // Backup never stores these (§5.1); restore skips them, which loses nothing.
                self.warnings.push(format!(
                    "{path}: {} (tree {})",
                    Refusal::Journal,
                    tree_id.short()
                ));
                true
            }
            Some(r) => {
                if first_visit {
                    self.errors
                        .push(format!("tree {} ({path}): {r}", tree_id.short()));
                }
                self.damaged.push(format!("{path} ({r})"));
                true
            }
        }
    }

    /// Checks one accepted entry: a file's blobs or content lists, or a directory's tree
    /// (recursively, within [`MAX_DEPTH`] and without cycles).
    fn node(&mut self, kind: &NodeKind, path: String, first_visit: bool) {
        match kind {
            NodeKind::File { lists, .. } if !lists.is_empty() => {
                if let Err(why) =
                    check_lists(self.repo, self.index, self.bad, lists, self.lists_seen)
                {
                    if first_visit {
                        self.errors.push(format!("{path}: {why}"));
                    }
                    self.damaged.push(path);
                }
            }
            NodeKind::File { content, .. } => {
                if content
                    .iter()
                    .any(|b| self.bad.contains(b) || !self.index.contains(b))
                {
                    if first_visit {
                        for b in content.iter().filter(|b| !self.index.contains(b)) {
                            self.errors.push(format!(
                                "data blob {} of {path} is not in any index",
                                b.short()
                            ));
                        }
                    }
                    self.damaged.push(path);
                }
            }
            NodeKind::Dir { subtree } => {
                if self.ancestors.len() >= MAX_DEPTH || self.ancestors.contains(subtree) {
                    self.errors.push(format!(
                        "tree {} ({path}/): nested deeper than {MAX_DEPTH} or contains itself",
                        subtree.short()
                    ));
                    self.damaged
                        .push(format!("{path}/ (directory nested too deep)"));
                    return;
                }
                self.ancestors.push(*subtree);
                self.tree(subtree, &format!("{path}/"));
                self.ancestors.pop();
            }
            NodeKind::Symlink { .. } => {}
        }
    }
}

/// Content list blob → (its level if readable, verdict on everything beneath it).
type ListVerdicts = HashMap<BlobId, (Option<u8>, std::result::Result<(), String>)>;

/// Checks a file's content lists (FORMAT §10.1): each list readable, at a consistent level, and
/// every data blob it reaches indexed and not found bad. Verdicts are cached per list blob.
fn check_lists(
    repo: &Repository,
    index: &Index,
    bad: &HashSet<BlobId>,
    lists: &[BlobId],
    seen: &mut ListVerdicts,
) -> std::result::Result<(), String> {
    let mut level = None;
    for id in lists {
        let (l, verdict) = check_list(repo, index, bad, id, None, seen);
        if level.get_or_insert(l) != &l {
            return Err(format!(
                "content lists at different levels (list {})",
                id.short()
            ));
        }
        verdict?;
    }
    Ok(())
}

fn check_list(
    repo: &Repository,
    index: &Index,
    bad: &HashSet<BlobId>,
    id: &BlobId,
    expected: Option<u8>,
    seen: &mut ListVerdicts,
) -> (Option<u8>, std::result::Result<(), String>) {
    if let Some((level, verdict)) = seen.get(id) {
        if expected.is_some() && level.is_some() && *level != expected {
            return (
                *level,
                Err(format!("list blob {} at the wrong level", id.short())),
            );
        }
        return (*level, verdict.clone());
    }
    let read = || -> std::result::Result<list::ListBlob, String> {
        if bad.contains(id) {
            return Err(format!("list blob {} is damaged", id.short()));
        }
        let plain = repo
            .read_blobs(index, BlobType::List, &[*id])
            .map_err(|e| e.to_string())?;
        let plain = plain.first().ok_or("list blob not read")?;
        match expected {
            None => list::decode(plain),
            Some(l) => list::decode_at(plain, l),
        }
        .map_err(|e| format!("list blob {}: {e}", id.short()))
    };
    let l = match read() {
        Ok(l) => l,
        Err(e) => {
            seen.insert(*id, (None, Err(e.clone())));
            return (None, Err(e));
        }
    };
    let verdict = if l.level == 0 {
        match l.ids.iter().find(|b| bad.contains(b) || !index.contains(b)) {
            Some(b) if !index.contains(b) => {
                Err(format!("data blob {} is not in any index", b.short()))
            }
            Some(b) => Err(format!("data blob {} is damaged", b.short())),
            None => Ok(()),
        }
    } else {
        l.ids
            .iter()
            .map(|c| check_list(repo, index, bad, c, Some(l.level - 1), seen).1)
            .find(|v| v.is_err())
            .unwrap_or(Ok(()))
    };
    seen.insert(*id, (Some(l.level), verdict.clone()));
    (Some(l.level), verdict)
}
