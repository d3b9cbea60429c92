//! The backup pipeline (docs/FORMAT.md §12 "Read and write ordering").
//!
//! ```text
//! walker (this thread): read → chunk (keyed FastCDC) → keyed hash → dedup
//!   └─► workers (one per core): compress → seal
//!         └─► packer: append to a data or tree pack; close at the target size
//!               └─► uploaders (2): write pack (write-once) → record in pending index
//!                     └─► every 4 packs or 60 s: write an index object
//! after all packs and index objects are stored: write the snapshot
//! ```
//! Every channel is bounded, so memory stays bounded whatever the data size (at most a few
//! packs and a few chunks in flight). Each stage keeps draining its input after a failure, so an
//! error anywhere stops the run without deadlock, and nothing references data that was not
//! durably stored: a killed backup leaves only unreferenced packs (and complete index objects for
//! packs already stored, which the next run reuses). The next run also adopts the packs stored
//! after the last index object (FORMAT §12.4), so an interrupted upload is not sent again.

use std::collections::{HashMap, HashSet};
use std::fs::{File, Metadata};
use std::io::{Read, Seek};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chatvault_format::blob::{self, BlobType};
use chatvault_format::envelope::ObjectKind;
use chatvault_format::id::{BlobId, PackId, SnapshotId};
use chatvault_format::list::{self, FileContent};
use chatvault_format::objects::{
    self, Bytes, FileStamp, IndexBlob, IndexPack, Node, NodeKind, OBJECT_VERSION, Snapshot,
    SqliteSource, Summary, Tree,
};
use chatvault_format::pack::{self, PackEntry};
use chatvault_format::parts;
use crossbeam_channel::{Receiver, Sender, bounded};
use rand_core::OsRng;

use crate::error::{RepoError, Result};
use crate::lock::{self, Liveness, LockGuard};
pub use crate::progress::{NoProgress, Progress};
use crate::repository::{Index, LoadedTree, Repository, join, layout};
use crate::sqlite;

/// Packs written between two index objects (at most; see [`INDEX_EVERY`]). Small enough that a
/// killed run loses little: the next run reuses every indexed pack.
const PACKS_PER_INDEX: usize = 4;
/// An index object is also written once this long has passed since the last one (slow uplinks).
const INDEX_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Options of a backup run.
#[derive(Debug, Default, Clone)]
pub struct BackupOptions {
    /// Host name recorded in the snapshot (default: this machine's). Only a label: parent
    /// selection and retention go by [`BackupOptions::device`] when it is set.
    pub hostname: Option<String>,
    /// This device's stable id (the device home's, 32 hex digits), recorded in the snapshot
    /// (FORMAT §9). The parent is the newest snapshot of the same device and paths; without a
    /// device id the parent is chosen by host name as before device ids existed.
    pub device: Option<String>,
    /// Re-read every file instead of reusing unchanged files from the parent snapshot.
    pub force_reread: bool,
    /// The highest snapshot sequence number this device has seen (its rollback memory); the
    /// new snapshot's `seq` is above it and above every snapshot in the repository.
    pub min_seq: u64,
    /// A private folder for consistent SQLite copies (the device home's `scratch/`). Copies
    /// left there by a killed run are removed by the next run. Default: a fresh folder in the
    /// system's temporary directory (a killed run's copy then stays until the OS cleans it).
    pub scratch_dir: Option<PathBuf>,
}

/// What a backup run produced.
#[derive(Debug)]
pub struct BackupOutcome {
    /// The new snapshot's id.
    pub id: SnapshotId,
    /// The new snapshot.
    pub snapshot: Snapshot,
}

struct Job {
    ty: BlobType,
    id: BlobId,
    data: Vec<u8>,
}

/// Blobs travel between stages in batches of about this many plaintext bytes (or
/// [`BATCH_BLOBS`]): one channel message per 4 KiB database page cost more in wake-ups and
/// context switches than hashing the page.
const BATCH_BYTES: usize = 128 << 10;
/// The most blobs in one batch.
const BATCH_BLOBS: usize = 32;

/// Bytes of database pages hashed together by one helper of [`Walker::sqlite_file`].
const PAGE_BATCH_BYTES: usize = 1 << 20;

/// Pages of one database, in page order, with their ids and whether the index has them.
#[derive(Default)]
struct PageBatch {
    /// Page size (every page of a batch has it).
    page: usize,
    bytes: Vec<u8>,
    ids: Vec<BlobId>,
    reusable: Vec<bool>,
}

impl PageBatch {
    fn new(page: usize, spare: Option<Vec<u8>>) -> Self {
        let mut bytes = spare.unwrap_or_default();
        bytes.reserve(PAGE_BATCH_BYTES);
        PageBatch {
            page,
            bytes,
            ids: Vec::new(),
            reusable: Vec::new(),
        }
    }

    fn hash(&mut self, repo: &Repository, index: &Index) {
        self.ids = self
            .bytes
            .chunks(self.page)
            .map(|p| blob::blob_id(repo.keys(), BlobType::Data, p))
            .collect();
        self.reusable = self.ids.iter().map(|id| index.reusable(id)).collect();
    }
}

struct Sealed {
    ty: BlobType,
    id: BlobId,
    raw_length: u32,
    bytes: Vec<u8>,
}

struct FinishedPack {
    id: PackId,
    /// The pack's bytes, in order ([`PackBuilder`]).
    parts: Vec<Vec<u8>>,
    size: u64,
    entries: Vec<PackEntry>,
    /// The sealed trees (and content lists where the device caches them) of a metadata pack,
    /// in runs at their offsets: written to the device's cache once the pack is stored.
    cache_spans: Vec<(u64, Vec<u8>)>,
}

/// The runs of `entries` (a pack whose blob area is `parts`, concatenated) that the device's
/// metadata cache keeps (FORMAT §12.3), with their sealed bytes: a backup leaves the trees it
/// wrote in the cache, so the next backup (which compares every folder with its tree in this
/// snapshot) and a restore on this device read them locally. Without it, the first backup
/// after the initial one fetched every folder's tree, one round trip each (67 rounds on the
/// benchmark preset through a 50 ms link). Empty without a cache or for data packs.
fn cache_spans(repo: &Repository, parts: &[Vec<u8>], entries: &[PackEntry]) -> Vec<(u64, Vec<u8>)> {
    if repo.cache.is_none() || !entries.iter().any(|e| repo.caches_blobs(e.ty)) {
        return Vec::new();
    }
    let mut runs: Vec<(u64, std::ops::Range<usize>)> = Vec::new();
    for e in entries.iter().filter(|e| repo.caches_blobs(e.ty)) {
        let (start, end) = (e.offset as usize, e.offset as usize + e.length as usize);
        match runs.last_mut() {
            Some((_, r)) if r.end == start => r.end = end,
            _ => runs.push((e.offset, start..end)),
        }
    }
    runs.into_iter()
        .map(|(offset, r)| (offset, copy_range(parts, r)))
        .collect()
}

/// The bytes `r` of the concatenation of `parts`.
fn copy_range(parts: &[Vec<u8>], r: std::ops::Range<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(r.len());
    let mut at = 0;
    for p in parts {
        let (from, to) = (r.start.max(at), r.end.min(at + p.len()));
        if from < to {
            out.extend_from_slice(&p[from - at..to - at]);
        }
        at += p.len();
        if at >= r.end {
            break;
        }
    }
    out
}

/// State shared by the pipeline stages.
struct Shared {
    abort: AtomicBool,
    error: Mutex<Option<RepoError>>,
    uploaded: AtomicU64,
    /// Stored packs not yet in an index object, and when the last index object was written.
    pending: Mutex<(Vec<IndexPack>, std::time::Instant)>,
    /// The run's lock: index objects are written only while it is live (FORMAT §11).
    live: Liveness,
}

impl Shared {
    fn fail(&self, e: RepoError) {
        self.abort.store(true, Ordering::SeqCst);
        let mut slot = self.error.lock().expect("error slot");
        if slot.is_none() {
            *slot = Some(e);
        }
    }
    fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }
}

/// Backs up `paths` into a new snapshot.
pub fn backup(
    repo: &Repository,
    paths: &[PathBuf],
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    if paths.is_empty() {
        return Err(RepoError::Invalid(
            "nothing to back up: give at least one path".into(),
        ));
    }
    let started = chrono::Utc::now();
    let roots = resolve_roots(paths)?;
    let display_paths: Vec<String> = roots
        .iter()
        .map(|r| r.0.to_string_lossy().into_owned())
        .collect();
    let hostname = opts
        .hostname
        .clone()
        .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());

    let clock = std::time::Instant::now();
    // The metadata loads while the other locks are listed (one round trip less).
    let (mut guard, (index, adopted, snapshots)) =
        lock::lock_while(repo, "backup", false, || load_metadata(repo))?;
    tracing::debug!(
        ms = clock.elapsed().as_millis(),
        "backup: locked, index loaded"
    );
    for (id, why) in &index.damaged {
        progress.warn(&format!(
            "index {} is damaged and ignored ({why}); data it listed is stored again",
            id.short()
        ));
    }
    if let Some(base) = &opts.scratch_dir {
        // Database copies of killed runs (made when SQLite cannot read pages in place) go now,
        // whether or not this run needs a copy.
        sqlite::Scratch::clean(base);
    }
    let lineage = lineage(repo, &index, snapshots, opts, &hostname, &display_paths)?;
    tracing::debug!(ms = clock.elapsed().as_millis(), "backup: parent chosen");

    let shared = Shared {
        abort: AtomicBool::new(false),
        error: Mutex::new(None),
        uploaded: AtomicU64::new(0),
        pending: Mutex::new((adopted, std::time::Instant::now())),
        live: guard.liveness(),
    };
    let walk_result = run_pipeline(repo, &shared, |work_tx| {
        let mut walker = Walker {
            repo,
            index: &index,
            stored: HashSet::new(),
            work_tx,
            shared: &shared,
            progress,
            summary: Summary::default(),
            guard: &mut guard,
            scratch_base: opts.scratch_dir.clone(),
            scratch: None,
            copies: 0,
            chunk_buf: Vec::new(),
            batch: Vec::new(),
            batch_bytes: 0,
        };
        let r = walker
            .root(&roots, lineage.parent_tree.as_ref())
            .and_then(|tree| walker.flush().map(|()| tree));
        let summary = std::mem::take(&mut walker.summary);
        drop(walker); // closes the work channel; the stages drain and finish
        r.map(|tree| (tree, summary))
    });
    let (tree, summary) = finish_uploads(repo, &shared, walk_result, progress)?;
    tracing::debug!(
        ms = clock.elapsed().as_millis(),
        "backup: data and trees stored"
    );

    let snapshot = Snapshot {
        version: OBJECT_VERSION,
        time: started.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        hostname,
        paths: display_paths,
        tree,
        parent: lineage.parent.map(|(id, _)| id),
        program: format!("chatvault {}", env!("CARGO_PKG_VERSION")),
        summary,
        seq: lineage.seq,
        device: opts.device.clone(),
    };
    let id = publish_snapshot(repo, guard, &snapshot)?;
    tracing::debug!(
        ms = clock.elapsed().as_millis(),
        "backup: snapshot published"
    );
    Ok(BackupOutcome { id, snapshot })
}

/// A path to back up: its absolute path, its name (the root tree's entry), its metadata.
type Root = (PathBuf, Vec<u8>, Metadata);

/// Resolves the paths to back up to absolute paths with their names and metadata, before
/// anything is locked or read; two paths ending in the same name are refused (they would
/// collide in the root tree).
fn resolve_roots(paths: &[PathBuf]) -> Result<Vec<Root>> {
    let mut roots = Vec::new();
    let mut seen = HashSet::new();
    for p in paths {
        let abs = std::path::absolute(p).map_err(|e| RepoError::io("resolving", p, e))?;
        let meta = std::fs::metadata(&abs).map_err(|e| RepoError::io("cannot back up", &abs, e))?;
        let name = abs
            .file_name()
            .ok_or_else(|| {
                RepoError::Invalid(format!("cannot back up {}: it has no name", abs.display()))
            })?
            .as_bytes()
            .to_vec();
        if !seen.insert(name.clone()) {
            return Err(RepoError::Invalid(format!(
                "two paths end in the same name {:?}; back them up separately",
                String::from_utf8_lossy(&name)
            )));
        }
        roots.push((abs, name, meta));
    }
    Ok(roots)
}

/// Snapshots as [`Repository::snapshots`] lists them.
type Snapshots = Vec<(SnapshotId, Result<Snapshot>)>;

/// Loads the index (its damaged index objects are the caller's to warn about), adopts
/// the packs an interrupted backup left unindexed and loads the snapshots; returns the index,
/// the adopted packs (which this run's first index object lists) and the snapshots. The pack
/// listing and the snapshots are fetched on their own threads while the index loads (the
/// listing once the prune plans are read): after a year of daily backups the index alone takes
/// ~0.1 s.
fn load_metadata(repo: &Repository) -> Result<(Index, Vec<IndexPack>, Snapshots)> {
    let (index, listing, snapshots) = std::thread::scope(|s| {
        let snapshots = s.spawn(|| repo.snapshots());
        // `data/` is listed once the prune plans are read (Repository::load_index_and).
        let (index, listing) = repo.load_index_and(|| repo.stored_pack_listing());
        (index, listing, join(snapshots))
    });
    let mut index = index?;
    let adopted = adopt_unindexed_packs(repo, &mut index, listing?.0)?;
    Ok((index, adopted, snapshots?))
}

/// Where the new snapshot sits among the repository's: its sequence number and its parent.
struct Lineage {
    /// Above every snapshot in the repository and above [`BackupOptions::min_seq`].
    seq: u64,
    /// The parent snapshot ([`find_parent`]).
    parent: Option<(SnapshotId, Snapshot)>,
    /// The parent's root tree, whose unchanged files are reused (none with `force_reread`).
    parent_tree: Option<Tree>,
}

/// Lists the snapshots to number the new one and choose its parent (FORMAT §9).
fn lineage(
    repo: &Repository,
    index: &Index,
    snapshots: Snapshots,
    opts: &BackupOptions,
    hostname: &str,
    display_paths: &[String],
) -> Result<Lineage> {
    let seq = snapshots
        .iter()
        .filter_map(|(_, s)| s.as_ref().ok().map(|s| s.seq))
        .max()
        .unwrap_or(0)
        .max(opts.min_seq)
        + 1;
    let parent = find_parent(snapshots, hostname, opts.device.as_deref(), display_paths);
    let parent_tree = match &parent {
        Some((_, s)) if !opts.force_reread => repo.load_tree(index, &s.tree).ok(),
        _ => None,
    };
    Ok(Lineage {
        seq,
        parent,
        parent_tree,
    })
}

/// Runs the pipeline's stages (workers, packer, uploaders; see the module docs) while `walk`
/// feeds them on this thread through the work channel it is given; returns once every stage
/// has drained. `walk` must drop the channel's sender when it is done.
fn run_pipeline<T>(
    repo: &Repository,
    shared: &Shared,
    walk: impl FnOnce(Sender<Vec<Job>>) -> Result<T>,
) -> Result<T> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let pack_size = repo.params().pack_size as usize;
    std::thread::scope(|s| {
        let (work_tx, work_rx) = bounded::<Vec<Job>>(2 * workers);
        let (sealed_tx, sealed_rx) = bounded::<Vec<Sealed>>(2 * workers);
        // A rendezvous: a finished pack waits in the packer until an uploader takes it, not in
        // a queue (with a queue of one, 16 MiB more were resident: the first backup's peak RSS
        // was 112 MB instead of 99, no faster).
        let (pack_tx, pack_rx) = bounded::<FinishedPack>(0);
        for _ in 0..workers {
            let (rx, tx) = (work_rx.clone(), sealed_tx.clone());
            s.spawn(move || seal_stage(repo, rx, tx, shared));
        }
        drop((work_rx, sealed_tx));
        s.spawn(|| pack_stage(repo, sealed_rx, pack_tx, pack_size));
        for _ in 0..2 {
            let rx = pack_rx.clone();
            s.spawn(move || upload_stage(repo, rx, shared));
        }
        drop(pack_rx);
        walk(work_tx)
    })
}

/// After the pipeline drained: fails with the first stage error (indexing what was stored
/// when the run was cancelled), else indexes the packs not yet in an index object, so that
/// everything the snapshot references is stored and indexed before it is written. Returns the
/// root tree and the summary, with the uploaded bytes.
fn finish_uploads(
    repo: &Repository,
    shared: &Shared,
    walk_result: Result<(BlobId, Summary)>,
    progress: &dyn Progress,
) -> Result<(BlobId, Summary)> {
    if let Some(e) = shared.error.lock().expect("error slot").take() {
        if matches!(e, RepoError::Cancelled) {
            // Every stage has drained: the packs stored so far are indexed (as after a killed
            // run, so the next run reuses them); no snapshot is written.
            let rest = std::mem::take(&mut shared.pending.lock().expect("pending").0);
            write_index(repo, rest, shared)?;
            tracing::info!("backup cancelled; no snapshot written");
        }
        return Err(e);
    }
    let (tree, mut summary) = walk_result?;
    // All packs are stored; index what is left, then (and only then) the snapshot.
    let rest = std::mem::take(&mut shared.pending.lock().expect("pending").0);
    write_index(repo, rest, shared)?;
    if progress.cancelled() {
        tracing::info!("backup cancelled; no snapshot written");
        return Err(RepoError::Cancelled);
    }
    summary.uploaded_bytes = shared.uploaded.load(Ordering::SeqCst);
    Ok((tree, summary))
}

/// Seals and writes the snapshot under the run's lock, then releases the lock.
fn publish_snapshot(
    repo: &Repository,
    guard: LockGuard<'_>,
    snapshot: &Snapshot,
) -> Result<SnapshotId> {
    // A prune sweep only deletes condemned packs while no backup that started before the plan
    // holds a live lock (§15). If this run's lock lapsed (the device slept past its expiry), a
    // sweep may have deleted data this snapshot references: do not publish it (the write checks
    // the lock and is cut off at its deadline, §11).
    let (id, sealed) =
        objects::seal_object(repo.keys(), ObjectKind::Snapshot, snapshot, &mut OsRng)
            .map_err(|e| RepoError::Invalid(format!("cannot write the snapshot: {e}")))?;
    let id = SnapshotId::from_bytes(id);
    guard.write_new(&layout::snapshot(&id), sealed)?;
    drop(guard);
    tracing::info!(snapshot = %id.short(), "snapshot saved");
    Ok(id)
}

/// Adopts the packs in storage that no index lists (FORMAT §12.4): what a backup that was
/// killed, cut off or cancelled had uploaded after its last index object. Each one's header is
/// read and authenticated with two ranged reads (never the pack); its blobs become reusable for
/// this run, and this run's first index object lists the pack, so an interrupted backup's
/// uploads are not sent again. A pack whose header does not open (damaged, or a write still in
/// progress on a backend without atomic writes) is left alone for `check` and prune; one that
/// vanished meanwhile is skipped. Packs condemned by a prune plan are never adopted. `stored`:
/// the packs in storage ([`Repository::stored_pack_listing`]).
fn adopt_unindexed_packs(
    repo: &Repository,
    index: &mut Index,
    stored: HashMap<PackId, crate::storage::Listed>,
) -> Result<Vec<IndexPack>> {
    let orphans: Vec<(PackId, u64)> = stored
        .into_iter()
        .filter(|(id, _)| !index.packs.contains_key(id) && !index.condemned.contains(id))
        .map(|(id, l)| (id, l.size))
        .collect();
    if orphans.is_empty() {
        return Ok(Vec::new());
    }
    let headers = crate::repository::par_map(&orphans, |(id, size)| {
        crate::repair::read_header(repo, id, *size)
    });
    let mut adopted = Vec::new();
    for ((id, _), header) in orphans.iter().zip(headers) {
        match header? {
            Ok(pack) => adopted.push(pack),
            Err(crate::repair::HeaderProblem::Vanished) => {}
            Err(crate::repair::HeaderProblem::Damaged(why)) => {
                tracing::warn!(pack = %id.short(), %why, "unindexed pack not adopted");
            }
        }
    }
    if !adopted.is_empty() {
        tracing::info!(
            packs = adopted.len(),
            "adopting packs an interrupted backup uploaded"
        );
        index.add(&objects::IndexFile {
            version: OBJECT_VERSION,
            packs: adopted.clone(),
        });
        index.finish();
    }
    Ok(adopted)
}

/// The parent of a new snapshot (FORMAT §9): the latest readable snapshot (`all` is oldest
/// first) of the same device and paths. If none has this device, the latest snapshot of the same
/// host name and paths that has *no* device id (written before device ids existed), so the first
/// backup after an upgrade is still incremental. Snapshots of other devices are never chosen,
/// even with the same host name (every Android phone is `localhost`): reusing another phone's
/// file entries by matching metadata would be wrong. Without a device id: host name and paths.
fn find_parent(
    all: Vec<(SnapshotId, Result<Snapshot>)>,
    hostname: &str,
    device: Option<&str>,
    paths: &[String],
) -> Option<(SnapshotId, Snapshot)> {
    let readable: Vec<(SnapshotId, Snapshot)> = all
        .into_iter()
        .rev()
        .filter_map(|(id, s)| s.ok().map(|s| (id, s)))
        .filter(|(_, s)| s.paths == paths)
        .collect();
    let Some(device) = device else {
        return readable.into_iter().find(|(_, s)| s.hostname == hostname);
    };
    if let Some(i) = readable
        .iter()
        .position(|(_, s)| s.device.as_deref() == Some(device))
    {
        return readable.into_iter().nth(i);
    }
    readable
        .into_iter()
        .find(|(_, s)| s.device.is_none() && s.hostname == hostname)
}

fn seal_stage(repo: &Repository, rx: Receiver<Vec<Job>>, tx: Sender<Vec<Sealed>>, shared: &Shared) {
    for batch in rx {
        if shared.aborted() {
            continue;
        }
        let sealed = batch
            .into_iter()
            .map(|job| Sealed {
                ty: job.ty,
                id: job.id,
                raw_length: job.data.len() as u32,
                bytes: blob::seal_blob(repo.keys(), job.ty, &job.id, &job.data, &mut OsRng),
            })
            .collect();
        if tx.send(sealed).is_err() {
            return;
        }
    }
}

/// Sealed blobs of at least this many bytes become parts of their pack as they are (not
/// copied); smaller ones (database pages) are gathered into shared parts of [`GATHER_PART`].
const OWN_PART: usize = 64 << 10;
/// Capacity of a part that gathers small sealed blobs.
const GATHER_PART: usize = 1 << 20;

/// A pack being built: its bytes as parts written one after another (a pack of media is its
/// sealed blobs as they came from the workers: concatenating them into one buffer copied every
/// byte once more into fresh pages, 6 % of a first backup's cycles with the page clearing).
#[derive(Default)]
struct PackBuilder {
    parts: Vec<Vec<u8>>,
    /// Whether the last part gathers small blobs (and may take more).
    gathering: bool,
    /// Bytes in `parts`.
    len: usize,
    entries: Vec<PackEntry>,
}

impl PackBuilder {
    fn add(&mut self, s: Sealed) {
        self.entries.push(PackEntry {
            ty: s.ty,
            id: s.id,
            offset: self.len as u64,
            length: s.bytes.len() as u32,
            raw_length: s.raw_length,
        });
        self.len += s.bytes.len();
        if s.bytes.len() >= OWN_PART {
            self.parts.push(s.bytes);
            self.gathering = false;
            return;
        }
        match self.parts.last_mut() {
            Some(last) if self.gathering && last.len() + s.bytes.len() <= last.capacity() => {
                last.extend_from_slice(&s.bytes)
            }
            _ => {
                let mut part = Vec::with_capacity(GATHER_PART.max(s.bytes.len()));
                part.extend_from_slice(&s.bytes);
                self.parts.push(part);
                self.gathering = true;
            }
        }
    }
    fn finish(&mut self, repo: &Repository) -> Option<FinishedPack> {
        if self.entries.is_empty() {
            return None;
        }
        let id = PackId::random(&mut OsRng);
        let mut parts = std::mem::take(&mut self.parts);
        let entries = std::mem::take(&mut self.entries);
        let area = std::mem::take(&mut self.len);
        self.gathering = false;
        let cache_spans = cache_spans(repo, &parts, &entries);
        let tail = repo.pack_tail(&id, &entries, area as u64);
        let size = (area + tail.len()) as u64;
        parts.push(tail);
        Some(FinishedPack {
            id,
            parts,
            size,
            entries,
            cache_spans,
        })
    }
}

fn pack_stage(
    repo: &Repository,
    rx: Receiver<Vec<Sealed>>,
    tx: Sender<FinishedPack>,
    pack_size: usize,
) {
    // Data and tree blobs go to separate packs, so metadata can be read without data.
    let mut data = PackBuilder::default();
    let mut trees = PackBuilder::default();
    for s in rx.into_iter().flatten() {
        let b = if s.ty.is_metadata() {
            &mut trees
        } else {
            &mut data
        };
        if (b.len + s.bytes.len() > pack_size || b.entries.len() >= pack::MAX_PACK_BLOBS)
            && let Some(p) = b.finish(repo)
            && tx.send(p).is_err()
        {
            return;
        }
        b.add(s);
    }
    for b in [&mut data, &mut trees] {
        if let Some(p) = b.finish(repo) {
            let _ = tx.send(p);
        }
    }
}

fn upload_stage(repo: &Repository, rx: Receiver<FinishedPack>, shared: &Shared) {
    for p in rx {
        if shared.aborted() {
            continue;
        }
        let size = p.size;
        match repo.storage.write_new_parts(&layout::pack(&p.id), p.parts) {
            Ok(_) => {
                shared.uploaded.fetch_add(size, Ordering::Relaxed);
                if let Some(cache) = &repo.cache
                    && !p.cache_spans.is_empty()
                {
                    let spans: Vec<(u64, &[u8])> = p
                        .cache_spans
                        .iter()
                        .map(|(o, b)| (*o, b.as_slice()))
                        .collect();
                    cache.put_pack(&p.id.to_hex(), &spans);
                }
                let entry = IndexPack {
                    id: p.id,
                    size,
                    blobs: p.entries.iter().map(IndexBlob::from).collect(),
                };
                let full = {
                    let mut pending = shared.pending.lock().expect("pending");
                    pending.0.push(entry);
                    if pending.0.len() >= PACKS_PER_INDEX || pending.1.elapsed() >= INDEX_EVERY {
                        pending.1 = std::time::Instant::now();
                        std::mem::take(&mut pending.0)
                    } else {
                        Vec::new()
                    }
                };
                if let Err(e) = write_index(repo, full, shared) {
                    shared.fail(e);
                }
            }
            Err(e) => shared.fail(e),
        }
    }
}

fn write_index(repo: &Repository, packs: Vec<IndexPack>, shared: &Shared) -> Result<()> {
    // Only while the lock is live: a lapsed run's packs may already be condemned (§11, §15).
    for (_, len) in repo.write_index_objects(packs, &shared.live)? {
        shared.uploaded.fetch_add(len, Ordering::Relaxed);
    }
    Ok(())
}

struct Walker<'a, 'g> {
    repo: &'a Repository,
    index: &'a Index,
    /// Blobs this run already queued (the index answers for everything stored before).
    stored: HashSet<BlobId>,
    work_tx: Sender<Vec<Job>>,
    shared: &'a Shared,
    progress: &'a dyn Progress,
    summary: Summary,
    guard: &'a mut LockGuard<'g>,
    /// Where consistent SQLite copies go ([`BackupOptions::scratch_dir`]).
    scratch_base: Option<PathBuf>,
    /// This run's scratch folder, made at the first database.
    scratch: Option<sqlite::Scratch>,
    /// Database copies made so far (names them).
    copies: u32,
    /// The chunker's read window, reused from file to file ([`Walker::chunk_stream`]).
    chunk_buf: Vec<u8>,
    /// New blobs not yet sent to the workers, and their plaintext bytes ([`BATCH_BYTES`]).
    batch: Vec<Job>,
    batch_bytes: usize,
}

fn mtime(m: &Metadata) -> (i64, u32) {
    (m.mtime(), m.mtime_nsec() as u32)
}

fn stamp(m: &Metadata) -> FileStamp {
    FileStamp {
        size: m.len(),
        mtime_s: m.mtime(),
        mtime_ns: m.mtime_nsec() as u32,
        ctime_s: m.ctime(),
        ctime_ns: m.ctime_nsec() as u32,
        inode: m.ino(),
    }
}

/// The database's and its WAL's stamps now, or None if the database cannot be stat'ed.
fn sqlite_source(db: &Path) -> Option<SqliteSource> {
    let db_meta = std::fs::metadata(db).ok()?;
    Some(SqliteSource {
        db: stamp(&db_meta),
        // An empty WAL holds no frames: the same state as none (opening the database for the
        // copy may leave one behind).
        wal: std::fs::symlink_metadata(sqlite::wal_path(db))
            .ok()
            .filter(|m| m.len() > 0)
            .map(|m| stamp(&m)),
    })
}

fn node_base(name: Vec<u8>, kind: NodeKind, m: &Metadata) -> Node {
    let (mtime_s, mtime_ns) = mtime(m);
    Node {
        name: Bytes(name),
        kind,
        mode: m.mode() & 0o7777,
        mtime_s,
        mtime_ns,
        ctime_s: m.ctime(),
        ctime_ns: m.ctime_nsec() as u32,
        inode: m.ino(),
    }
}

impl Walker<'_, '_> {
    fn check_abort(&self) -> Result<()> {
        if self.progress.cancelled() {
            self.shared.fail(RepoError::Cancelled);
            return Err(RepoError::Cancelled);
        }
        if self.shared.aborted() {
            Err(RepoError::Aborted)
        } else {
            Ok(())
        }
    }

    fn send(&mut self, ty: BlobType, id: BlobId, data: Vec<u8>) -> Result<()> {
        self.send_with(ty, id, data.len(), || data)
    }

    /// [`Walker::send`] for data that is only materialised (`make`) when the blob is new.
    fn send_with(
        &mut self,
        ty: BlobType,
        id: BlobId,
        len: usize,
        make: impl FnOnce() -> Vec<u8>,
    ) -> Result<()> {
        let reusable = self.index.reusable(&id);
        self.send_known(ty, id, len, reusable, make)
    }

    /// [`Walker::send_with`] with the index's answer for `id` already known (`reusable`).
    fn send_known(
        &mut self,
        ty: BlobType,
        id: BlobId,
        len: usize,
        reusable: bool,
        make: impl FnOnce() -> Vec<u8>,
    ) -> Result<()> {
        self.check_abort()?;
        if !reusable && self.stored.insert(id) {
            self.summary.new_blobs += 1;
            self.summary.new_bytes += len as u64;
            self.batch.push(Job {
                ty,
                id,
                data: make(),
            });
            self.batch_bytes += len;
            if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= BATCH_BLOBS {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Sends the blobs batched so far to the workers; the walk ends with it (before the work
    /// channel closes), so every new blob is stored before the snapshot.
    fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.batch_bytes = 0;
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_BLOBS));
        self.work_tx.send(batch).map_err(|_| RepoError::Aborted)
    }

    /// Stores the tree of `nodes` (the entries of `path`) and returns its id: one tree blob, or
    /// for a large folder its parts and the list of them (FORMAT §10.2), each stored only if
    /// new. When the parent snapshot's tree of the same directory (`parent`, with its id) has
    /// exactly these nodes, its id is the answer (a valid tree of these nodes, however it was
    /// cut), and it is neither encoded nor hashed again if it and its parts are still reusable:
    /// after a year of daily backups, encoding the unchanged media folders' trees (15,600
    /// entries) was 6 % of a daily backup's cycles.
    fn store_tree(
        &mut self,
        path: &Path,
        mut nodes: Vec<Node>,
        parent: Option<(&BlobId, &LoadedTree)>,
    ) -> Result<BlobId> {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some((id, old)) = parent
            && old.tree.nodes == nodes
            && self.index.reusable(id)
            && old.parts.iter().all(|p| self.index.reusable(p))
        {
            return Ok(*id);
        }
        // Refuse here, before the snapshot exists, rather than store a listing no reader takes.
        let encoded = parts::encode_tree(self.repo.keys(), &nodes).map_err(|e| {
            RepoError::Invalid(format!(
                "cannot back up {}: its listing of {} entries is too large ({e}); split the \
                 folder or leave it out",
                path.display(),
                nodes.len()
            ))
        })?;
        for (id, plain) in encoded.parts {
            self.send(BlobType::Tree, id, plain)?;
        }
        self.send(BlobType::Tree, encoded.id, encoded.plain)?;
        Ok(encoded.id)
    }

    fn problem(&mut self, path: &Path, error: impl std::fmt::Display) {
        let (path, error) = (path.to_string_lossy(), error.to_string());
        self.progress.warn(&format!("{path}: {error}"));
        tracing::warn!(path = %path, error = %error, "not backed up");
        self.summary.add_unreadable(&path, &error);
    }

    fn root(
        &mut self,
        roots: &[(PathBuf, Vec<u8>, Metadata)],
        parent: Option<&Tree>,
    ) -> Result<BlobId> {
        let mut nodes = Vec::new();
        for (path, name, meta) in roots {
            let pnode = parent.and_then(|t| t.nodes.iter().find(|n| n.name.0 == *name));
            let journaled = sqlite::has_journal_file(path);
            if let Some(n) = self.node(path, name.clone(), meta, pnode, journaled)? {
                nodes.push(n);
            }
        }
        self.store_tree(Path::new("/"), nodes, None)
    }

    /// The node of `path`; `journaled`: a SQLite journal (`-wal`, `-shm`, `-journal`) of this
    /// name exists beside it.
    fn node(
        &mut self,
        path: &Path,
        name: Vec<u8>,
        meta: &Metadata,
        parent: Option<&Node>,
        journaled: bool,
    ) -> Result<Option<Node>> {
        self.check_abort()?;
        self.guard.refresh_if_due()?;
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            let sub = match parent.map(|n| &n.kind) {
                Some(NodeKind::Dir { subtree }) => self
                    .repo
                    .load_tree_full(self.index, subtree)
                    .ok()
                    .map(|t| (*subtree, t)),
                _ => None,
            };
            let subtree = match self.dir(path, sub.as_ref().map(|(id, t)| (id, t)))? {
                Some(id) => id,
                None => return Ok(None),
            };
            self.summary.dirs += 1;
            NodeKind::Dir { subtree }
        } else if ft.is_file() {
            match self.file(path, meta, parent, journaled) {
                Ok(k) => k,
                Err(FileError::Fatal(e)) => return Err(e),
                Err(FileError::Unreadable(e)) => {
                    self.problem(path, e);
                    return Ok(None);
                }
            }
        } else if ft.is_symlink() {
            match std::fs::read_link(path) {
                Ok(t) => NodeKind::Symlink {
                    target: Bytes(t.as_os_str().as_bytes().to_vec()),
                },
                Err(e) => {
                    self.problem(path, e);
                    return Ok(None);
                }
            }
        } else {
            self.problem(
                path,
                "special file (socket, FIFO or device) is not backed up",
            );
            return Ok(None);
        };
        Ok(Some(node_base(name, kind, meta)))
    }

    /// The tree of directory `path`; `parent`: its tree in the parent snapshot, with its id.
    fn dir(
        &mut self,
        path: &Path,
        parent: Option<(&BlobId, &LoadedTree)>,
    ) -> Result<Option<BlobId>> {
        let rd = match std::fs::read_dir(path) {
            Ok(rd) => rd,
            Err(e) => {
                self.problem(path, e);
                return Ok(None);
            }
        };
        // Each entry with its name, taken once: `DirEntry::file_name` allocates, and sorting by
        // it called it twice per comparison (a year of photos is 11,000 files in one folder).
        let mut entries = Vec::new();
        for e in rd {
            match e {
                Ok(e) => entries.push((e.file_name().into_vec(), e)),
                Err(e) => self.problem(path, e),
            }
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let by_name: HashMap<&[u8], &Node> = parent
            .map(|(_, t)| {
                t.tree
                    .nodes
                    .iter()
                    .map(|n| (n.name.0.as_slice(), n))
                    .collect()
            })
            .unwrap_or_default();
        // Names that have a SQLite journal beside them, and the databases stored consistently
        // so far (a name sorts before its journals).
        let journaled: HashSet<Vec<u8>> = entries
            .iter()
            .filter_map(|(name, _)| sqlite::journal_base(name).map(<[u8]>::to_vec))
            .collect();
        let mut databases: HashSet<Vec<u8>> = HashSet::new();
        let mut nodes: Vec<Node> = Vec::with_capacity(entries.len());
        for (name, e) in entries {
            let child = e.path();
            // A database copied consistently already contains its WAL; a stale `-wal` restored
            // next to it would be replayed over the copy, so journals are not backed up.
            if sqlite::journal_base(&name).is_some_and(|db| databases.contains(db)) {
                tracing::debug!(path = %child.display(), "journal of a consistently copied database: skipped");
                continue;
            }
            // Relative to the open directory (fstatat), like lstat: no walk of the whole path
            // per entry (a year of media is thousands of files in a few folders).
            let meta = match e.metadata() {
                Ok(m) => m,
                Err(err) => {
                    self.problem(&child, err);
                    continue;
                }
            };
            let pnode = by_name.get(name.as_slice()).copied();
            let has_journal = journaled.contains(&name);
            if let Some(n) = self.node(&child, name, &meta, pnode, has_journal)? {
                if let NodeKind::File {
                    sqlite_snapshot: true,
                    ..
                } = n.kind
                {
                    databases.insert(n.name.0.clone());
                }
                nodes.push(n);
            }
        }
        self.store_tree(path, nodes, parent).map(Some)
    }

    /// The node kind of the regular file `path`: reused from the parent snapshot when
    /// unchanged, a SQLite database as of one transaction, else the file's bytes as read.
    fn file(
        &mut self,
        path: &Path,
        meta: &Metadata,
        parent: Option<&Node>,
        journaled: bool,
    ) -> Result<NodeKind, FileError> {
        self.summary.files += 1;
        self.summary.bytes += meta.len();
        if let Some(kind) = self.unchanged_file(meta, parent, journaled) {
            return Ok(kind);
        }
        if sqlite::is_sqlite(path)
            && let Some(kind) = self.database(path, meta, parent)?
        {
            return Ok(kind);
        }
        self.plain_file(path, meta)
    }

    /// The parent snapshot's entry of a plain file that did not change since, reused as is
    /// (counted as read without reading).
    fn unchanged_file(
        &mut self,
        meta: &Metadata,
        parent: Option<&Node>,
        journaled: bool,
    ) -> Option<NodeKind> {
        // A plain file unchanged since the parent snapshot (same size, mtime, ctime, inode) whose
        // blobs are all still indexed: its content list is reused without opening the file (not
        // even to look for a SQLite header: a year of media is thousands of files, most of them
        // no longer in the page cache). A file with a journal beside it is looked at again: it
        // may be a database stored raw last time (its copy failed) whose WAL changed.
        if let Some(p) = parent
            && !journaled
            && let NodeKind::File {
                size,
                content,
                lists,
                changed_while_reading: false,
                sqlite_snapshot: false,
                ..
            } = &p.kind
            && *size == meta.len()
            && (p.mtime_s, p.mtime_ns) == mtime(meta)
            && (p.ctime_s, p.ctime_ns) == (meta.ctime(), meta.ctime_nsec() as u32)
            && p.inode == meta.ino()
            && self.reusable_content(content, lists)
        {
            self.progress.bytes(*size);
            return Some(NodeKind::File {
                size: *size,
                content: content.clone(),
                lists: lists.clone(),
                changed_while_reading: false,
                sqlite_snapshot: false,
                sqlite_source: None,
            });
        }
        None
    }

    /// The node kind of the SQLite database `path`: the parent's when the database did not
    /// change since, else a consistent copy of its pages. `None` when the database cannot be
    /// read as one (warned): the caller backs up the raw file instead.
    fn database(
        &mut self,
        path: &Path,
        meta: &Metadata,
        parent: Option<&Node>,
    ) -> Result<Option<NodeKind>, FileError> {
        // Stamps of the database and its WAL taken before the copy: a write after this
        // point changes them, so the next backup copies again (FORMAT §5.1).
        let source = sqlite_source(path);
        if let (Some(source), Some(p)) = (&source, parent)
            && let NodeKind::File {
                size,
                content,
                lists,
                sqlite_snapshot: true,
                sqlite_source: Some(before),
                ..
            } = &p.kind
            && before == source
            && !sqlite::has_hot_journal(path)
            && self.reusable_content(content, lists)
        {
            tracing::debug!(path = %path.display(), "database unchanged since the parent snapshot: not copied");
            self.progress.bytes(*size);
            self.summary.bytes = self.summary.bytes - meta.len() + size;
            return Ok(Some(p.kind.clone()));
        }
        match self.sqlite_file(path, source) {
            Ok(k) => {
                if let NodeKind::File { size, .. } = &k {
                    self.summary.bytes = self.summary.bytes - meta.len() + size;
                }
                Ok(Some(k))
            }
            Err(FileError::Fatal(e)) => Err(FileError::Fatal(e)),
            Err(FileError::Unreadable(why)) => {
                self.progress.warn(&format!(
                    "{}: {why}; backing up the raw file instead",
                    path.display()
                ));
                Ok(None)
            }
        }
    }

    /// Reads and chunks the file `path` as it is; one that changed while it was read is stored
    /// as read and reported.
    fn plain_file(&mut self, path: &Path, meta: &Metadata) -> Result<NodeKind, FileError> {
        self.progress.file(path);
        self.summary.files_read += 1;
        let f = File::open(path).map_err(|e| FileError::Unreadable(e.to_string()))?;
        let before = f
            .metadata()
            .map_err(|e| FileError::Unreadable(e.to_string()))?;
        let (content, read) = self.chunk_stream(f)?;
        let after = std::fs::symlink_metadata(path).ok();
        let changed = read != before.len()
            || after.is_none_or(|a| {
                a.len() != before.len()
                    || mtime(&a) != mtime(&before)
                    || (a.ctime(), a.ctime_nsec()) != (before.ctime(), before.ctime_nsec())
                    || a.ino() != before.ino()
            });
        if changed {
            let p = path.to_string_lossy().into_owned();
            self.progress
                .warn(&format!("{p}: changed while it was being read"));
            tracing::warn!(path = %p, "file changed while being read");
            self.summary.add_changed(&p);
        }
        // The snapshot records the size actually stored.
        self.summary.bytes = self.summary.bytes - meta.len() + read;
        let (content, lists) = self.content_ref(content).map_err(FileError::Fatal)?;
        Ok(NodeKind::File {
            size: read,
            content,
            lists,
            changed_while_reading: changed,
            sqlite_snapshot: false,
            sqlite_source: None,
        })
    }

    /// Whether a parent snapshot's content reference can be reused as is: every data blob, and
    /// every content list on the way to them, is indexed in a pack no prune plan condemned.
    fn reusable_content(&self, content: &[BlobId], lists: &[BlobId]) -> bool {
        if lists.is_empty() {
            return content.iter().all(|id| self.index.reusable(id));
        }
        let mut ok = true;
        let data = self.repo.walk_lists(self.index, lists, |l| {
            ok &= self.index.reusable(l);
            ok
        });
        ok && data.is_ok_and(|d| self.index.all_reusable(d))
    }

    /// The content reference of a file with data blobs `ids`: inline, or content lists when
    /// there are many (FORMAT §10.1); list blobs not yet stored are queued like any blob.
    fn content_ref(&mut self, ids: Vec<BlobId>) -> Result<(Vec<BlobId>, Vec<BlobId>)> {
        let mut made = Vec::new();
        let built = list::build(self.repo.keys(), ids, |id, plain| made.push((id, plain)));
        for (id, plain) in made {
            self.send(BlobType::List, id, plain)?;
        }
        Ok(match built {
            FileContent::Inline(content) => (content, Vec::new()),
            FileContent::Lists(lists) => (Vec::new(), lists),
        })
    }

    /// Backs up a live SQLite database as of one transaction, one blob per page: read in place
    /// through SQLite where it can ([`sqlite::read_pages`]), else from a consistent copy.
    fn sqlite_file(
        &mut self,
        path: &Path,
        source: Option<SqliteSource>,
    ) -> Result<NodeKind, FileError> {
        self.progress.file(path);
        self.summary.files_read += 1;
        let (repo, index) = (self.repo, self.index);
        let mut content = Vec::new();
        // The pages are hashed and looked up in the index by helper threads, a batch at a time,
        // while this one reads the next pages through SQLite and sends the new ones on in page
        // order: hashing was 45 % and the index lookups 20 % of a changed 4.6 GB database's
        // backup, all on one core.
        let hashers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
        let direct = std::thread::scope(|s| {
            let (jobs, todo) = bounded::<(PageBatch, Sender<PageBatch>)>(hashers);
            for _ in 0..hashers {
                let todo = todo.clone();
                s.spawn(move || {
                    for (mut b, reply) in todo {
                        b.hash(repo, index);
                        let _ = reply.send(b);
                    }
                });
            }
            drop(todo);
            let mut queued = std::collections::VecDeque::new();
            let mut spare: Vec<Vec<u8>> = Vec::new();
            let mut current = PageBatch::default();
            let dispatch = |b: PageBatch, queued: &mut std::collections::VecDeque<_>| {
                let (reply, answer) = bounded(1);
                // The helpers outlive this scope's body: a send fails only if one panicked,
                // which the scope re-raises.
                let _ = jobs.send((b, reply));
                queued.push_back(answer);
            };
            let read = sqlite::read_pages(path, |page| {
                if current.page != page.len() || current.bytes.len() + page.len() > PAGE_BATCH_BYTES
                {
                    if !current.bytes.is_empty() {
                        let next = PageBatch::new(page.len(), spare.pop());
                        dispatch(std::mem::replace(&mut current, next), &mut queued);
                    } else {
                        current.page = page.len();
                    }
                }
                current.bytes.extend_from_slice(page);
                while queued.len() > hashers + 1 {
                    let done = queued
                        .pop_front()
                        .and_then(|a: Receiver<PageBatch>| a.recv().ok());
                    spare.push(self.take_pages(done, &mut content)?);
                }
                Ok(())
            });
            if read.is_ok() && !current.bytes.is_empty() {
                dispatch(std::mem::take(&mut current), &mut queued);
            }
            drop(jobs);
            let mut taken = Ok(());
            for answer in queued {
                if read.is_ok() && taken.is_ok() {
                    taken = self.take_pages(answer.recv().ok(), &mut content).map(drop);
                }
            }
            match (read, taken) {
                (Ok(r), Ok(())) => Ok(r),
                (Err(e), _) => Err(e),
                (Ok(_), Err(e)) => Err(sqlite::PagesError::Visit(e)),
            }
        });
        let read = match direct {
            Ok(Some(read)) => read,
            Ok(None) => {
                tracing::debug!("this SQLite has no sqlite_dbpage table: copying the database");
                self.sqlite_copy_pages(path, &mut content)?
            }
            Err(sqlite::PagesError::Visit(e)) => return Err(FileError::Fatal(e)),
            Err(sqlite::PagesError::Sqlite(e)) => return Err(FileError::Unreadable(e.to_string())),
        };
        let (content, lists) = self.content_ref(content).map_err(FileError::Fatal)?;
        Ok(NodeKind::File {
            size: read,
            content,
            lists,
            changed_while_reading: false,
            sqlite_snapshot: true,
            sqlite_source: source,
        })
    }

    /// Takes a hashed batch of pages in page order: their ids go to `content`, the new pages
    /// to the workers. Returns the batch's buffer for reuse.
    fn take_pages(
        &mut self,
        done: Option<PageBatch>,
        content: &mut Vec<BlobId>,
    ) -> Result<Vec<u8>> {
        // A helper that panicked dropped its batch; the scope re-raises the panic.
        let b = done.ok_or(RepoError::Aborted)?;
        for ((page, id), reusable) in b.bytes.chunks(b.page).zip(&b.ids).zip(&b.reusable) {
            self.progress.bytes(page.len() as u64);
            content.push(*id);
            self.send_known(BlobType::Data, *id, page.len(), *reusable, || page.to_vec())?;
        }
        let mut bytes = b.bytes;
        bytes.clear();
        Ok(bytes)
    }

    /// The fallback of [`Walker::sqlite_file`]: a consistent copy in the private scratch folder
    /// (FORMAT §5.1), cut into pages; pushes their ids to `content` and returns the bytes read.
    fn sqlite_copy_pages(
        &mut self,
        path: &Path,
        content: &mut Vec<BlobId>,
    ) -> Result<u64, FileError> {
        let no_scratch = |e: std::io::Error| {
            FileError::Unreadable(format!("no private folder for the database copy: {e}"))
        };
        let (_tmp, dir) = match &self.scratch_base {
            Some(base) => {
                if self.scratch.is_none() {
                    self.scratch = Some(sqlite::Scratch::new(base).map_err(no_scratch)?);
                }
                let dir = self.scratch.as_ref().map(|s| s.dir().to_path_buf());
                (None, dir.expect("scratch was just made"))
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("chatvault-sqlite-")
                    .tempdir()
                    .map_err(no_scratch)?;
                let dir = t.path().to_path_buf();
                (Some(t), dir)
            }
        };
        let copy = dir.join(format!("copy-{}.db", self.copies));
        self.copies += 1;
        let copied = sqlite::consistent_copy(path, &copy);
        let opened = copied
            .map_err(|e| e.to_string())
            .and_then(|()| File::open(&copy).map_err(|e| e.to_string()));
        // The plaintext copy loses its name as soon as it is open (or failed).
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut p = copy.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
        let mut f = opened.map_err(FileError::Unreadable)?;
        let mut header = [0u8; 100];
        f.read_exact(&mut header)
            .map_err(|e| FileError::Unreadable(e.to_string()))?;
        let page = sqlite::page_size(&header)
            .ok_or_else(|| FileError::Unreadable("invalid page size in database header".into()))?;
        f.seek(std::io::SeekFrom::Start(0))
            .map_err(|e| FileError::Unreadable(e.to_string()))?;
        let mut read = 0u64;
        loop {
            let mut buf = vec![0u8; page];
            let n =
                read_full(&mut f, &mut buf).map_err(|e| FileError::Unreadable(e.to_string()))?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            let id = blob::blob_id(self.repo.keys(), BlobType::Data, &buf);
            read += n as u64;
            self.progress.bytes(n as u64);
            content.push(id);
            self.send(BlobType::Data, id, buf)
                .map_err(FileError::Fatal)?;
        }
        Ok(read)
    }

    /// Chunks a stream with the repository's keyed chunker; returns the blob ids and the bytes read.
    /// The read window ([`for_each_chunk`]) is a buffer the walker keeps from file to file.
    fn chunk_stream(
        &mut self,
        mut source: impl std::io::Read,
    ) -> Result<(Vec<BlobId>, u64), FileError> {
        let p = self.repo.params();
        let max = p.chunk_max as usize;
        let mut buf = std::mem::take(&mut self.chunk_buf);
        // A window of several chunks: a cut never needs more than `max` bytes past its start.
        let window = max + CHUNK_WINDOW_EXTRA;
        if buf.len() < window {
            buf.resize(window, 0);
        }
        let result = self.chunk_window(&mut source, &mut buf[..window]);
        self.chunk_buf = buf;
        result
    }

    /// [`Walker::chunk_stream`] with its window buffer `buf`.
    fn chunk_window(
        &mut self,
        source: &mut impl std::io::Read,
        buf: &mut [u8],
    ) -> Result<(Vec<BlobId>, u64), FileError> {
        let p = self.repo.params();
        let sizes = (p.chunk_min, p.chunk_avg, p.chunk_max);
        let seed = self.repo.keys().chunker_seed();
        let mut content = Vec::new();
        let read = for_each_chunk(source, sizes, seed, buf, |data| {
            let id = blob::blob_id(self.repo.keys(), BlobType::Data, data);
            self.progress.bytes(data.len() as u64);
            content.push(id);
            self.send_with(BlobType::Data, id, data.len(), || data.to_vec())?;
            // Big files on slow links: keep the lock fresh within a file too.
            self.guard.refresh_if_due()
        })
        .map_err(|e| match e {
            ChunkError::Read(e) => FileError::Unreadable(format!("read error: {e}")),
            ChunkError::Visit(e) => FileError::Fatal(e),
        })?;
        Ok((content, read))
    }
}

/// Why [`for_each_chunk`] stopped.
enum ChunkError<E> {
    /// Reading the source failed.
    Read(std::io::Error),
    /// The chunk visitor failed.
    Visit(E),
}

/// Cuts `source` into the chunks `fastcdc::v2020::StreamCDC::with_level_and_seed(source, min,
/// avg, max, Level1, seed)` yields (FORMAT §5) and passes each to `visit`, in order; returns the
/// bytes read. `buf` is the read window, at least `max` bytes long (longer means fewer moves).
///
/// `StreamCDC` keeps a window of `max` bytes and cuts at its start, so a cut depends only on
/// the next `max` bytes (fewer at the end of the stream): every chunk whose next `max` bytes
/// are in this longer window is cut here with the same function over the same bytes.
/// `StreamCDC` itself moved the rest of its window to the front and zero-filled it after every
/// chunk and copied each chunk out byte by byte: about four copies of every media byte on the
/// walker thread, which bounds the whole pipeline.
fn for_each_chunk<E>(
    source: &mut impl std::io::Read,
    (min, avg, max): (u32, u32, u32),
    seed: u64,
    buf: &mut [u8],
    mut visit: impl FnMut(&[u8]) -> std::result::Result<(), E>,
) -> std::result::Result<u64, ChunkError<E>> {
    let max_len = max as usize;
    debug_assert!(buf.len() >= max_len);
    let mut read = 0u64;
    // Bytes `start..len` of `buf` are read and not yet cut.
    let (mut start, mut len, mut eof) = (0usize, 0usize, false);
    loop {
        if !eof && len - start < max_len {
            buf.copy_within(start..len, 0);
            len -= start;
            start = 0;
            let n = read_full(source, &mut buf[len..]).map_err(ChunkError::Read)?;
            eof = len + n < buf.len();
            len += n;
            read += n as u64;
        }
        if start == len {
            return Ok(read);
        }
        // The cut points of this window: every chunk with its next `max` bytes in it, or all
        // the rest at the end of the stream.
        let cuts = {
            let cdc = fastcdc::v2020::FastCDC::with_level_and_seed(
                &buf[..len],
                min,
                avg,
                max,
                fastcdc::v2020::Normalization::Level1,
                seed,
            );
            let mut cuts = Vec::new();
            let mut at = start;
            while at < len && (eof || len - at >= max_len) {
                let (_, end) = cdc.cut(at, (len - at).min(max_len));
                cuts.push(end);
                at = end;
            }
            cuts
        };
        for end in cuts {
            visit(&buf[start..end]).map_err(ChunkError::Visit)?;
            start = end;
        }
    }
}

/// How much longer than `chunk_max` the chunker's read window is ([`Walker::chunk_stream`]):
/// a few average chunks per refill, so the uncut tail moved to the front before a refill is
/// small next to what was cut; longer windows measured no faster and cost resident memory.
const CHUNK_WINDOW_EXTRA: usize = 2 << 20;

fn read_full(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

enum FileError {
    Unreadable(String),
    Fatal(RepoError),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every range of a pack's bytes, whichever of its parts it starts and ends in.
    #[test]
    fn copy_range_reads_across_parts() {
        let parts: Vec<Vec<u8>> = vec![
            (0..5).collect(),
            vec![],
            (5..9).collect(),
            (9..20).collect(),
        ];
        let whole: Vec<u8> = parts.concat();
        for start in 0..=whole.len() {
            for end in start..=whole.len() {
                assert_eq!(copy_range(&parts, start..end), whole[start..end]);
            }
        }
    }

    /// The windowed chunker cuts where `StreamCDC` cuts, whatever the window length and the
    /// read sizes, including at the end of the stream and for empty and tiny streams.
    #[test]
    fn for_each_chunk_cuts_like_stream_cdc() {
        /// A reader that hands out at most `step` bytes per read.
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(out.len()).min(self.1);
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut data = vec![0u8; 300_000];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 24) as u8;
        }
        // A run of zeros: cuts at the maximum size.
        data[100_000..150_000].fill(0);
        let (min, avg, max) = (1024u32, 4096u32, 16_384u32);
        let seed = 0x1234_5678_9abc_def0;
        for len in [0, 1, 1023, 1024, 5000, 16_384, 16_385, 99_999, 300_000] {
            let src = &data[..len];
            let expect: Vec<Vec<u8>> = fastcdc::v2020::StreamCDC::with_level_and_seed(
                src,
                min,
                avg,
                max,
                fastcdc::v2020::Normalization::Level1,
                seed,
            )
            .map(|c| c.unwrap().data)
            .collect();
            for (window, step) in [(16_384, usize::MAX), (20_000, 777), (1 << 20, 4096)] {
                let mut buf = vec![0u8; window];
                let mut got = Vec::new();
                let read = for_each_chunk(
                    &mut Trickle(src, step),
                    (min, avg, max),
                    seed,
                    &mut buf,
                    |c| {
                        got.push(c.to_vec());
                        Ok::<(), ()>(())
                    },
                );
                assert!(matches!(read, Ok(n) if n == len as u64));
                assert_eq!(got, expect, "len {len}, window {window}, step {step}");
            }
        }
    }
}
