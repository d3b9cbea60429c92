//! Opening, creating and reading a repository (docs/FORMAT.md §2, §6, §8, §9).

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};

use chatvault_format::blob::{self, BlobType};
use chatvault_format::config::{Config, ConfigError, RepoParams};
use chatvault_format::envelope::ObjectKind;
use chatvault_format::id::{BlobId, IndexId, PackId, PlanId, RepoId, SnapshotId};
use chatvault_format::key::{BackupKey, RepoKeys};
use chatvault_format::objects::{
    self, IndexFile, IndexPack, NodeKind, PrunePlan, Snapshot, Tree, TreeBlob,
};
use chatvault_format::{list, pack, parts};
use rand_core::OsRng;

use crate::cache::{self, Cache};
use crate::error::{RepoError, Result};
use crate::lock::LockConfig;
use crate::storage::{Listed, Storage};

/// Largest ranged read made for a run of neighbouring blobs.
pub const READ_RUN: u64 = 4 << 20;
/// Largest gap between two blobs that are still fetched with one ranged read (reading a few
/// unneeded bytes is cheaper than another round trip).
pub const READ_GAP: u64 = 64 << 10;

/// Metadata objects (snapshots, index objects, plans) fetched at once: storage round trips,
/// not CPU, bound how long opening a repository takes. On a new device every snapshot and index
/// object is fetched: a month of daily backups is one round of requests, a year a dozen.
pub const METADATA_READERS: usize = 32;

/// Groups `n` byte ranges of packs, sorted by pack and start, into runs that one ranged read
/// fetches: a range joins the run when it lies in the same pack and either starts where the
/// previous one starts (the same blob, wanted twice) or starts at most [`READ_GAP`] after the
/// previous one ends with the whole run spanning at most `max_span` bytes. `range(i)` is item
/// `i`'s pack, start and end.
pub(crate) fn neighbour_runs(
    n: usize,
    range: impl Fn(usize) -> (PackId, u64, u64),
    max_span: u64,
) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < n {
        let (pack, first, _) = range(start);
        let mut end = start + 1;
        while end < n {
            let (_, prev_start, prev_end) = range(end - 1);
            let (next_pack, next_start, next_end) = range(end);
            let same = next_pack == pack && next_start == prev_start;
            let joins = next_pack == pack
                && next_start >= prev_end
                && next_start - prev_end <= READ_GAP
                && next_end - first <= max_span;
            if !(same || joins) {
                break;
            }
            end += 1;
        }
        runs.push(start..end);
        start = end;
    }
    runs
}

/// [`neighbour_runs`] of `n` blob locations sorted by pack and offset, runs spanning at most
/// [`READ_RUN`] bytes.
pub(crate) fn location_runs(
    n: usize,
    loc: impl Fn(usize) -> BlobLocation,
) -> Vec<std::ops::Range<usize>> {
    neighbour_runs(
        n,
        |i| {
            let l = loc(i);
            (l.pack, l.offset, l.offset + u64::from(l.length))
        },
        READ_RUN,
    )
}

/// Most sealed bytes of index objects [`Repository::load_index`] fetches and parses at once.
const INDEX_WAVE_BYTES: u64 = 16 << 20;

/// Sealed bytes of the runs of tree or list blobs [`Repository::read_blobs`] fetches at once:
/// up to [`METADATA_READERS`] small runs, or 8 runs of [`READ_RUN`] bytes.
const BLOB_READ_BUDGET: u64 = 8 * READ_RUN;

/// Bytes that parallel readers may hold at once. A reader takes its share before a request and
/// gives it back when done with what it read, so that many small reads are in flight together
/// (the scattered pages and trees of a repository with months of daily backups lie in one pack
/// per day) while large ones queue: round trips bound the one, memory the other.
pub(crate) struct ByteBudget {
    total: u64,
    left: std::sync::Mutex<u64>,
    freed: std::sync::Condvar,
}

impl ByteBudget {
    pub(crate) fn new(total: u64) -> Self {
        ByteBudget {
            total,
            left: std::sync::Mutex::new(total),
            freed: std::sync::Condvar::new(),
        }
    }

    /// Waits until `bytes` (at most the whole budget) are free and takes them until the share
    /// is dropped.
    pub(crate) fn take(&self, bytes: u64) -> BudgetShare<'_> {
        let bytes = bytes.min(self.total);
        let mut left = self.left.lock().expect("byte budget");
        while *left < bytes {
            left = self.freed.wait(left).expect("byte budget");
        }
        *left -= bytes;
        BudgetShare {
            budget: self,
            bytes,
        }
    }
}

/// Bytes taken from a [`ByteBudget`], given back on drop.
pub(crate) struct BudgetShare<'a> {
    budget: &'a ByteBudget,
    bytes: u64,
}

impl Drop for BudgetShare<'_> {
    fn drop(&mut self) {
        *self.budget.left.lock().expect("byte budget") += self.bytes;
        self.budget.freed.notify_all();
    }
}

/// Applies `f` to every item on up to [`METADATA_READERS`] threads; results keep the order.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    par_map_n(items, METADATA_READERS, f)
}

/// [`par_map`] on up to `threads` threads.
pub(crate) fn par_map_n<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<R>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.min(items.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    *results[i].lock().expect("result slot") = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .expect("result slot")
                .expect("every item was processed")
        })
        .collect()
}

/// Object paths of the layout (§2).
pub mod layout {
    use super::*;
    /// The config object.
    pub const CONFIG: &str = "config";
    /// Folder of pack files (with two-hex-digit subfolders).
    pub const DATA: &str = "data/";
    /// Folder of index objects.
    pub const INDEX: &str = "index/";
    /// Folder of snapshot objects.
    pub const SNAPSHOTS: &str = "snapshots/";
    /// Folder of lock objects.
    pub const LOCKS: &str = "locks/";
    /// Folder of prune plans (§15).
    pub const PLANS: &str = "plans/";

    /// Path of a pack.
    pub fn pack(id: &PackId) -> String {
        let h = id.to_hex();
        format!("data/{}/{h}", &h[..2])
    }
    /// Path of an index object.
    pub fn index(id: &IndexId) -> String {
        format!("index/{id}")
    }
    /// Path of a snapshot object.
    pub fn snapshot(id: &SnapshotId) -> String {
        format!("snapshots/{id}")
    }
    /// Path of a prune plan.
    pub fn plan(id: &PlanId) -> String {
        format!("plans/{id}")
    }
}

/// A directory's tree as loaded, with the parts it is stored in ([`Repository::load_tree_full`]).
#[derive(Debug, Clone)]
pub struct LoadedTree {
    /// The whole tree (for a tree in parts: all parts' nodes, in order, and version
    /// [`objects::TREE_VERSION_PARTS`]).
    pub tree: Tree,
    /// The ids of its parts (FORMAT §10.2); empty for a tree stored whole.
    pub parts: Vec<BlobId>,
}

/// An open repository: storage, verified config and subkeys.
pub struct Repository {
    pub(crate) storage: Storage,
    /// Shared with the lock refresher thread (§11), which seals lock objects.
    pub(crate) keys: Arc<RepoKeys>,
    pub(crate) config: Config,
    /// Lock timing (§11): the protocol's constants, shortened only by tests.
    pub(crate) lock_config: LockConfig,
    /// The device's metadata cache, if any (`cache.rs`).
    pub(crate) cache: Option<Cache>,
    /// Snapshots this process already read and verified, by id. A command that looks at the
    /// snapshots more than once (a restore: the rollback check, `latest`, the damaged count)
    /// lists them each time but reads each one once: on a new phone, with no local cache, a
    /// year of daily snapshots is one read each, not three (each a storage round trip).
    snapshots_read: Mutex<HashMap<SnapshotId, Snapshot>>,
    /// The last listing of `snapshots/` ([`Repository::snapshots_as_listed`]).
    snapshots_listed: Mutex<Option<Vec<(SnapshotId, String)>>>,
    /// The rewrite of the cached merged index ([`Repository::load_index`]) running on a
    /// thread of its own; joined before the next load and when the repository is dropped.
    cache_writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Repository {
    /// Waits for the merged index being written to the cache, so that a command's work is
    /// not lost when it ends (a killed process leaves the old file: it is replaced atomically).
    fn drop(&mut self) {
        self.join_cache_writer();
    }
}

/// A scoped thread's result (its panic goes on in this thread).
pub(crate) fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Where a blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack holding it.
    pub pack: PackId,
    /// Blob type.
    pub ty: BlobType,
    /// Offset of the sealed blob in the pack.
    pub offset: u64,
    /// Sealed length.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
}

/// The merged in-memory view of all index objects.
///
/// Built with [`Index::add`] per index object, then [`Index::finish`]. Blob locations are kept
/// compactly — a sorted array of 49-byte records (id, pack number, offset, lengths, type)
/// searched by bisection, with pack ids stored once — so a repository of a million blobs costs
/// about 50 MB, not the ~100–200 bytes per blob of a hash map of full locations.
#[derive(Debug, Default)]
pub struct Index {
    /// Blob locations, sorted by id (after [`Index::finish`]).
    entries: Entries,
    /// Blobs added by [`Index::finish`] since `entries` was last rebuilt, sorted by id: new
    /// ones, and better locations (outside condemned packs) of blobs in `entries`, which they
    /// override. A few index objects added to a large merged index (a daily backup after a year)
    /// land here instead of costing a copy of the whole array; folded in once they are many.
    extra: Vec<(BlobId, Slot)>,
    /// How many ids of `extra` are not in `entries`.
    extra_new: usize,
    /// Entries added since the last [`Index::finish`], with "is in a condemned pack".
    pending: Vec<(BlobId, Slot, bool)>,
    /// Pack numbers used by [`Slot`] → pack id.
    pack_ids: Vec<PackId>,
    /// Pack id → pack number.
    pack_numbers: HashMap<PackId, u32>,
    /// Pack id → size in bytes.
    pub packs: HashMap<PackId, u64>,
    /// Index objects that were loaded.
    pub files: Vec<IndexId>,
    /// Index objects that could not be loaded, with the reason. Their blobs count as missing:
    /// files that need them fail to restore (and are listed), a new backup stores them again.
    pub damaged: Vec<(IndexId, String)>,
    /// Packs condemned by a prune plan (§15): still readable until a sweep deletes them, but a
    /// backup must not deduplicate against them. Fill it before calling [`Index::add`].
    pub condemned: HashSet<PackId>,
    /// Where each 16-bit id prefix starts in `entries` (65,537 positions, 256 KiB): ids are
    /// keyed hashes, evenly spread, so a lookup bisects a handful of neighbouring entries instead
    /// of jumping across the whole array (one or two cache misses, not twenty).
    prefix_start: Vec<u32>,
    /// The same for `extra`, by its ids' first [`Index::extra_bits`] bits (about
    /// [`EXTRA_BUCKET`] ids per prefix): bisecting the whole of `extra` cost a daily backup
    /// after a year (47,000 ids there) 2.5 % of its cycles, mostly cache misses.
    extra_start: Vec<u32>,
    /// Prefix bits of [`Index::extra_start`].
    extra_bits: u32,
}

/// The first 8 bytes of an id, big-endian: they order ids as the whole id does and almost always
/// decide, so a bisection step is one integer compare instead of a 32-byte `memcmp` call (the
/// index lookup of every page of a database was 5 % of a daily backup's time).
fn head(id: &BlobId) -> u64 {
    head_of(id.as_bytes())
}

/// [`head`] of an id's bytes (a record of [`Entries`]).
fn head_of(id: &[u8]) -> u64 {
    u64::from_be_bytes(id[..8].try_into().expect("8 bytes"))
}

/// Prefix bits of [`Index::prefix_start`]: 65,536 prefixes.
const PREFIX_BITS: u32 = 16;

/// Ids per prefix [`Index::extra_start`] aims at.
const EXTRA_BUCKET: usize = 4;

/// The first `bits` (at most 16) bits of an id's bytes (a [`BlobId`] or a record of [`Entries`]).
fn prefix_of(id: &[u8], bits: u32) -> usize {
    (u32::from(u16::from_be_bytes([id[0], id[1]])) >> (16 - bits)) as usize
}

/// Where each `bits`-bit prefix starts among `n` ids sorted ascending (`id(i)`), then `n`:
/// 2^`bits` + 1 positions; the ids with prefix `p` are `starts[p]..starts[p + 1]`.
fn prefix_starts<'a>(n: usize, bits: u32, id: impl Fn(usize) -> &'a [u8]) -> Vec<u32> {
    let prefixes = 1usize << bits;
    let mut starts = Vec::with_capacity(prefixes + 1);
    for i in 0..n {
        let p = prefix_of(id(i), bits);
        while starts.len() <= p {
            starts.push(i as u32);
        }
    }
    starts.resize(prefixes + 1, n as u32);
    starts
}

/// A blob's place, compactly.
#[derive(Debug, Clone, Copy)]
struct Slot {
    pack: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
    ty: BlobType,
}

/// In-memory bytes per indexed blob (one record of [`Entries`]; measured by a test).
pub const INDEX_BYTES_PER_BLOB: usize = MERGED_ENTRY_LEN;

/// Blob locations sorted by id, as [`MERGED_ENTRY_LEN`]-byte records laid out like the entries
/// of a cached merged index (FORMAT §12.3): id, pack number, offset, length, raw length (u32le),
/// type. A merged index read from the cache is searched where it was decrypted, not parsed into
/// a second array: after a year of daily backups (750,000 blobs, 37 MB) that copy's fresh pages
/// cost every backup about 40 ms.
#[derive(Debug, Default)]
struct Entries {
    buf: Vec<u8>,
    /// Where the first record starts in `buf`.
    start: usize,
    len: usize,
}

impl Entries {
    fn with_capacity(n: usize) -> Entries {
        Entries {
            buf: Vec::with_capacity(n * MERGED_ENTRY_LEN),
            start: 0,
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn record(&self, i: usize) -> &[u8] {
        let at = self.start + i * MERGED_ENTRY_LEN;
        &self.buf[at..at + MERGED_ENTRY_LEN]
    }

    fn id(&self, i: usize) -> &[u8] {
        &self.record(i)[..32]
    }

    fn get(&self, i: usize) -> (BlobId, Slot) {
        decode_record(self.record(i)).expect("records are checked when they are stored")
    }

    fn push(&mut self, id: &BlobId, slot: &Slot) {
        encode_record(&mut self.buf, id, slot);
        self.len += 1;
    }

    fn iter(&self) -> impl Iterator<Item = (BlobId, Slot)> + '_ {
        (0..self.len).map(|i| self.get(i))
    }

    /// The slot of `id` among records `lo..hi`, whose ids all begin with the same `bits` bits.
    ///
    /// Ids are keyed hashes, spread evenly: the bits after the common prefix place `id` within
    /// the range, and the first probe lands on it or beside it. After a year of daily backups
    /// (750 k blobs, ~11 per 16-bit prefix) plain bisection touched four or five cache lines per
    /// lookup, and lookups were 10 % of a day backup's cycles. After the estimate and its
    /// neighbour on the side it points to, bisection: ids crowded into one prefix (an index
    /// written by someone else who holds the key) cost no more than bisection did.
    fn search(&self, lo: usize, hi: usize, bits: u32, id: &BlobId) -> Option<Slot> {
        let (mut lo, mut hi) = (lo, hi.min(self.len));
        let want = head(id);
        let order = |i: usize| {
            let have = self.id(i);
            head_of(have)
                .cmp(&want)
                .then_with(|| have.cmp(id.as_bytes().as_slice()))
        };
        let probe = |i: usize, lo: &mut usize, hi: &mut usize| match order(i) {
            std::cmp::Ordering::Less => {
                *lo = i + 1;
                false
            }
            std::cmp::Ordering::Greater => {
                *hi = i;
                false
            }
            std::cmp::Ordering::Equal => true,
        };
        if lo < hi {
            // The 32 bits after the prefix, as a fraction of the range.
            let frac = u128::from(((want << bits) >> 32) as u32);
            let guess = lo + ((frac * (hi - lo) as u128) >> 32) as usize;
            if probe(guess, &mut lo, &mut hi) {
                return Some(self.get(guess).1);
            }
            let beside = if lo == guess + 1 {
                lo
            } else {
                hi.wrapping_sub(1)
            };
            if lo < hi && probe(beside, &mut lo, &mut hi) {
                return Some(self.get(beside).1);
            }
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if probe(mid, &mut lo, &mut hi) {
                return Some(self.get(mid).1);
            }
        }
        None
    }
}

/// Appends one [`MERGED_ENTRY_LEN`]-byte record (FORMAT §12.3).
fn encode_record(out: &mut Vec<u8>, id: &BlobId, s: &Slot) {
    out.extend_from_slice(id.as_bytes());
    for v in [s.pack, s.offset, s.length, s.raw_length] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.push(s.ty.code());
}

/// Reads one [`MERGED_ENTRY_LEN`]-byte record; `None` if its type is unknown.
fn decode_record(e: &[u8]) -> Option<(BlobId, Slot)> {
    let word =
        |i: usize| u32::from_le_bytes(e[32 + 4 * i..36 + 4 * i].try_into().expect("4 bytes"));
    let slot = Slot {
        pack: word(0),
        offset: word(1),
        length: word(2),
        raw_length: word(3),
        ty: BlobType::from_code(e[48])?,
    };
    Some((BlobId::from_bytes(e[..32].try_into().ok()?), slot))
}

impl Index {
    /// Adds one index object's entries. Call [`Index::finish`] before looking blobs up. A blob
    /// found in several packs keeps a location in a pack that is not condemned, if there is one.
    pub fn add(&mut self, file: &IndexFile) {
        for p in &file.packs {
            self.packs.insert(p.id, p.size);
            let condemned = self.condemned.contains(&p.id);
            let next = self.pack_ids.len() as u32;
            let number = *self.pack_numbers.entry(p.id).or_insert(next);
            if number == next {
                self.pack_ids.push(p.id);
            }
            for b in &p.blobs {
                // Offsets beyond 4 GiB cannot occur in a valid pack (pack_size ≤ 256 MiB, a
                // blob ≤ 64 MiB + 41): such an entry is left out, so its blob counts as missing.
                let Ok(offset) = u32::try_from(b.offset) else {
                    tracing::warn!(pack = %p.id.short(), "index entry beyond 4 GiB ignored");
                    continue;
                };
                let slot = Slot {
                    pack: number,
                    offset,
                    length: b.length,
                    raw_length: b.raw_length,
                    ty: b.ty,
                };
                self.pending.push((b.id, slot, condemned));
            }
        }
    }

    /// Merges what was added into the sorted array (a blob keeps one location, in a pack that
    /// is not condemned when there is one; otherwise the first added). Linear in the entries
    /// already there: a device that loaded a merged index (FORMAT §12.3) adds a few index objects
    /// to hundreds of thousands of entries.
    pub fn finish(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        // Per id, a location in a pack that is not condemned first; otherwise first added.
        pending.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(&b.2)));
        pending.dedup_by(|later, first| later.0 == first.0);
        if (self.extra.len() + pending.len()) * EXTRA_SHARE <= self.entries.len() {
            self.finish_into_extra(pending);
            return;
        }
        self.fold_extra();
        let existing = std::mem::take(&mut self.entries);
        let mut out = Entries::with_capacity(existing.len() + pending.len());
        let mut added = pending.into_iter().peekable();
        for (id, slot) in existing.iter() {
            while let Some((new_id, new_slot, _)) = added.next_if(|p| p.0 < id) {
                out.push(&new_id, &new_slot);
            }
            match added.next_if(|p| p.0 == id) {
                Some((_, new_slot, false)) if self.yields(&slot) => out.push(&id, &new_slot),
                _ => out.push(&id, &slot),
            }
        }
        drop(existing);
        for (id, slot, _) in added {
            out.push(&id, &slot);
        }
        out.buf.shrink_to_fit();
        self.entries = out;
        self.index_prefixes();
    }

    /// Whether a blob at `slot` should give way to one added outside a condemned pack.
    fn yields(&self, slot: &Slot) -> bool {
        !self.condemned.is_empty() && self.condemned.contains(&self.pack_ids[slot.pack as usize])
    }

    /// [`Index::finish`] for a few additions (sorted, one per id): each goes to `extra` if its
    /// blob is new, or is a location outside a condemned pack for one only in a condemned pack.
    fn finish_into_extra(&mut self, pending: Vec<(BlobId, Slot, bool)>) {
        let mut accepted: Vec<(BlobId, Slot, bool)> = Vec::with_capacity(pending.len());
        for (id, slot, condemned) in pending {
            let known = self.extra_slot(&id).or_else(|| self.entries_slot(&id));
            match known {
                None => accepted.push((id, slot, false)),
                Some(old) if !condemned && self.yields(&old) => {
                    accepted.push((id, slot, self.entries_slot(&id).is_some()))
                }
                Some(_) => {}
            }
        }
        let old = std::mem::take(&mut self.extra);
        let mut out = Vec::with_capacity(old.len() + accepted.len());
        let mut added = accepted.into_iter().peekable();
        for (id, slot) in old {
            while let Some((new_id, new_slot, in_entries)) = added.next_if(|a| a.0 < id) {
                self.extra_new += usize::from(!in_entries);
                out.push((new_id, new_slot));
            }
            // An id already in `extra` is replaced (only by a better location: see above).
            match added.next_if(|a| a.0 == id) {
                Some((_, new_slot, _)) => out.push((id, new_slot)),
                None => out.push((id, slot)),
            }
        }
        for (id, slot, in_entries) in added {
            self.extra_new += usize::from(!in_entries);
            out.push((id, slot));
        }
        self.set_extra(out);
    }

    /// Folds `extra` into `entries` (its locations win), leaving it empty.
    fn fold_extra(&mut self) {
        if self.extra.is_empty() {
            return;
        }
        let extra = std::mem::take(&mut self.extra);
        self.set_extra(Vec::new());
        self.extra_new = 0;
        let existing = std::mem::take(&mut self.entries);
        let mut out = Entries::with_capacity(existing.len() + extra.len());
        let mut added = extra.into_iter().peekable();
        for (id, slot) in existing.iter() {
            while let Some((new_id, new_slot)) = added.next_if(|e| e.0 < id) {
                out.push(&new_id, &new_slot);
            }
            match added.next_if(|e| e.0 == id) {
                Some((_, new_slot)) => out.push(&id, &new_slot),
                None => out.push(&id, &slot),
            }
        }
        drop(existing);
        for (id, slot) in added {
            out.push(&id, &slot);
        }
        self.entries = out;
        self.index_prefixes();
    }

    /// Rebuilds [`Index::prefix_start`] from the sorted entries.
    fn index_prefixes(&mut self) {
        let entries = &self.entries;
        self.prefix_start = prefix_starts(entries.len(), PREFIX_BITS, |i| entries.id(i));
    }

    /// Sets `extra` (sorted by id) and rebuilds [`Index::extra_start`] for it.
    fn set_extra(&mut self, extra: Vec<(BlobId, Slot)>) {
        let buckets = (extra.len() / EXTRA_BUCKET).max(1);
        self.extra_bits = buckets.ilog2().min(PREFIX_BITS);
        self.extra_start = prefix_starts(extra.len(), self.extra_bits, |i| extra[i].0.as_bytes());
        self.extra = extra;
    }

    fn slot(&self, id: &BlobId) -> Option<Slot> {
        debug_assert!(self.pending.is_empty(), "Index::finish was not called");
        // `extra` overrides `entries` only where the entry lies in a condemned pack
        // ([`Index::finish_into_extra`]), so most lookups (unchanged pages, found in `entries`
        // outside a condemned pack) skip `extra` and its cache miss.
        match self.entries_slot(id) {
            Some(s) if !self.yields(&s) => Some(s),
            found => self.extra_slot(id).or(found),
        }
    }

    fn extra_slot(&self, id: &BlobId) -> Option<Slot> {
        if self.extra.is_empty() {
            return None;
        }
        let p = prefix_of(id.as_bytes(), self.extra_bits);
        let (lo, hi) = (
            self.extra_start[p] as usize,
            self.extra_start[p + 1] as usize,
        );
        let bucket = &self.extra[lo..hi];
        let want = head(id);
        bucket
            .binary_search_by(|(e, _)| head(e).cmp(&want).then_with(|| e.cmp(id)))
            .ok()
            .map(|i| bucket[i].1)
    }

    fn entries_slot(&self, id: &BlobId) -> Option<Slot> {
        let p = prefix_of(id.as_bytes(), PREFIX_BITS);
        let (lo, hi, bits) = match self.prefix_start.get(p..=p + 1) {
            Some(&[lo, hi]) => (lo as usize, hi as usize, PREFIX_BITS),
            _ => (0, self.entries.len(), 0),
        };
        self.entries.search(lo, hi, bits, id)
    }

    fn location(&self, slot: &Slot) -> BlobLocation {
        BlobLocation {
            pack: self.pack_ids[slot.pack as usize],
            ty: slot.ty,
            offset: u64::from(slot.offset),
            length: slot.length,
            raw_length: slot.raw_length,
        }
    }

    /// Where blob `id` is, if indexed.
    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        self.slot(id).map(|s| self.location(&s))
    }

    /// Whether blob `id` is indexed.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.slot(id).is_some()
    }

    /// Number of indexed blobs.
    pub fn len(&self) -> usize {
        self.entries.len() + self.extra_new
    }

    /// Whether no blob is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every indexed blob and its location, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (BlobId, BlobLocation)> + '_ {
        self.slots().map(|(id, s)| (id, self.location(&s)))
    }

    /// Every indexed blob's slot in id order: `entries` and `extra` merged, `extra` winning.
    fn slots(&self) -> impl Iterator<Item = (BlobId, Slot)> + '_ {
        let mut a = self.entries.iter().peekable();
        let mut b = self.extra.iter().copied().peekable();
        std::iter::from_fn(move || match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 < y.0 => a.next(),
            (Some(x), Some(y)) if x.0 == y.0 => {
                a.next();
                b.next()
            }
            (Some(_), Some(_)) | (None, Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, None) => None,
        })
    }

    /// Whether a backup may reference `id` without storing it again: it is indexed in a pack
    /// that no prune plan condemned.
    pub fn reusable(&self, id: &BlobId) -> bool {
        self.slot(id)
            .is_some_and(|s| !self.condemned.contains(&self.pack_ids[s.pack as usize]))
    }

    /// Whether every one of `ids` is [`Index::reusable`]. Many ids (the pages of a large
    /// database) are looked up in id order, so the lookups walk the sorted entries front to
    /// back instead of missing the cache at random: 1.2 million unchanged pages took 0.64 s of
    /// lookups one by one.
    pub fn all_reusable(&self, mut ids: Vec<BlobId>) -> bool {
        if ids.len() > 4096 {
            ids.sort_unstable_by_key(head);
        }
        ids.iter().all(|id| self.reusable(id))
    }
}

/// [`Index::finish`] keeps additions apart (in `extra`) while they and the earlier ones are at
/// most this fraction (1/n) of the sorted array: a lookup then bisects a small second array.
const EXTRA_SHARE: usize = 16;

/// Version byte of a cached merged index (FORMAT §12.3).
const MERGED_VERSION: u8 = 1;
/// Bytes of one entry in a cached merged index: id, pack number, offset, lengths, type.
const MERGED_ENTRY_LEN: usize = 32 + 4 * 4 + 1;
/// A cached merged index is rewritten once this many index objects had to be loaded besides
/// it (so a daily backup rewrites it about once a week, not every time).
const MERGE_AFTER: usize = 8;

/// Index objects (with their listing stamps) a merged index was built from.
type Sources = Vec<(IndexId, String)>;

impl Index {
    /// Digest of the condemned packs a merged index was built under: a blob's location depends
    /// on them, so a merged index is only reused under the same set.
    fn condemned_digest(condemned: &HashSet<PackId>) -> [u8; 32] {
        let mut ids: Vec<&PackId> = condemned.iter().collect();
        ids.sort();
        let mut h = blake3::Hasher::new();
        for id in ids {
            h.update(id.as_bytes());
        }
        *h.finalize().as_bytes()
    }

    /// The plaintext of a cached merged index (FORMAT §12.3): what was loaded from `sources`
    /// under condemned packs `digest`.
    fn encode_merged(&self, sources: &[(IndexId, String)], digest: &[u8; 32]) -> Vec<u8> {
        debug_assert!(self.pending.is_empty());
        let mut out = Vec::with_capacity(
            64 + sources.len() * 64 + self.pack_ids.len() * 40 + self.len() * MERGED_ENTRY_LEN,
        );
        out.push(MERGED_VERSION);
        out.extend_from_slice(digest);
        out.extend_from_slice(&(sources.len() as u32).to_le_bytes());
        for (id, stamp) in sources {
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(&(stamp.len() as u16).to_le_bytes());
            out.extend_from_slice(stamp.as_bytes());
        }
        out.extend_from_slice(&(self.pack_ids.len() as u32).to_le_bytes());
        for id in &self.pack_ids {
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(&self.packs.get(id).copied().unwrap_or(0).to_le_bytes());
        }
        out.extend_from_slice(&(self.len() as u32).to_le_bytes());
        for (id, s) in self.slots() {
            encode_record(&mut out, &id, &s);
        }
        out
    }

    /// Parses a cached merged index, the plaintext `plain` of `buf`; `None` if it is not one
    /// this version wrote (it is then rebuilt from the index objects). The entries stay in
    /// `buf`, checked (sorted, known types and packs) but not copied.
    fn decode_merged(buf: Vec<u8>, plain: Range<usize>) -> Option<(Index, Sources, [u8; 32])> {
        let mut r = Reader(buf.get(plain.clone())?);
        if r.take(1)? != [MERGED_VERSION] {
            return None;
        }
        let digest: [u8; 32] = r.take(32)?.try_into().ok()?;
        let n = r.u32()? as usize;
        let mut sources = Vec::with_capacity(n.min(r.0.len() / 34));
        for _ in 0..n {
            let id = IndexId::from_bytes(r.take(32)?.try_into().ok()?);
            let len = u16::from_le_bytes(r.take(2)?.try_into().ok()?) as usize;
            let stamp = std::str::from_utf8(r.take(len)?).ok()?.to_string();
            sources.push((id, stamp));
        }
        let mut index = Index::default();
        let n = r.u32()? as usize;
        for number in 0..n {
            let id = PackId::from_bytes(r.take(32)?.try_into().ok()?);
            let size = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
            index.pack_ids.push(id);
            index.pack_numbers.insert(id, number as u32);
            index.packs.insert(id, size);
        }
        let n = r.u32()? as usize;
        if r.0.len() != n.checked_mul(MERGED_ENTRY_LEN)? {
            return None;
        }
        let mut last: Option<&[u8]> = None;
        for e in r.0.chunks_exact(MERGED_ENTRY_LEN) {
            let (_, slot) = decode_record(e)?;
            if slot.pack as usize >= index.pack_ids.len() || last.is_some_and(|l| l >= &e[..32]) {
                return None;
            }
            last = Some(&e[..32]);
        }
        let start = plain.end - r.0.len();
        index.entries = Entries { buf, start, len: n };
        index.index_prefixes();
        Some((index, sources, digest))
    }
}

/// A cursor over a byte slice for [`Index::decode_merged`].
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
}

impl Repository {
    /// Creates a new repository at `storage` for `key`. Fails if one already exists.
    pub fn init(storage: Storage, key: &BackupKey) -> Result<Repository> {
        Self::init_version(storage, key, chatvault_format::FORMAT_VERSION)
    }

    /// Creates a repository of an older format `version` (tests and interoperability).
    #[doc(hidden)]
    pub fn init_version(storage: Storage, key: &BackupKey, version: u32) -> Result<Repository> {
        if storage.size(layout::CONFIG)?.is_some() {
            return Err(RepoError::AlreadyExists {
                location: storage.location().to_string(),
            });
        }
        let repo_id = RepoId::random(&mut OsRng);
        let keys = key.derive(&repo_id);
        let params = RepoParams::defaults(chrono::Utc::now().to_rfc3339());
        let bytes = Config::encode_version(version, &repo_id, &params, &keys, &mut OsRng);
        if !storage.write_new(layout::CONFIG, bytes)? {
            return Err(RepoError::AlreadyExists {
                location: storage.location().to_string(),
            });
        }
        tracing::info!(location = storage.location(), repo = %repo_id.short(), "repository created");
        Ok(Repository {
            storage,
            keys: Arc::new(keys),
            config: Config {
                version,
                repo_id,
                params,
            },
            lock_config: LockConfig::default(),
            cache: None,
            snapshots_read: Mutex::default(),
            snapshots_listed: Mutex::default(),
            cache_writer: Mutex::default(),
        })
    }

    /// Upgrades a format 1 repository to format 2 (FORMAT §14): rewrites the config with the
    /// same repository id, parameters and key check at version 2, so that new packs are padded
    /// (§7). Existing objects stay as they are (format 2 readers read them). Safe to kill: the
    /// config is replaced in one atomic write, and the new config is read back and verified.
    /// Returns false if the repository already was at format 2.
    pub fn upgrade(&mut self) -> Result<bool> {
        if self.config.version >= chatvault_format::FORMAT_VERSION {
            return Ok(false);
        }
        {
            let _guard = crate::lock::lock(self, "upgrade", false)?;
            self.replace_config_version(chatvault_format::FORMAT_VERSION)?;
        }
        self.config.version = chatvault_format::FORMAT_VERSION;
        tracing::info!(repo = %self.config.repo_id.short(), "repository upgraded to format 2");
        Ok(true)
    }

    fn replace_config_version(&self, version: u32) -> Result<()> {
        let bytes = Config::encode_version(
            version,
            &self.config.repo_id,
            &self.config.params,
            &self.keys,
            &mut OsRng,
        );
        // Guard against a writer bug: the new config must open with the same keys.
        let check = |b: &[u8]| {
            Config::peek_repo_id(b).is_ok_and(|id| id == self.config.repo_id)
                && self.keys.key_check(&self.config.repo_id) == b[52..84]
        };
        if !check(&bytes) {
            return Err(RepoError::Invalid(
                "the upgraded config does not verify; nothing was changed".into(),
            ));
        }
        self.storage.replace(layout::CONFIG, bytes)?;
        let stored = self
            .storage
            .read(layout::CONFIG)?
            .ok_or_else(|| RepoError::corrupted("config", "missing after the upgrade"))?;
        if !check(&stored) {
            return Err(RepoError::corrupted(
                "config",
                "does not verify after the upgrade",
            ));
        }
        Ok(())
    }

    /// Opens an existing repository with `key`.
    pub fn open(storage: Storage, key: &BackupKey) -> Result<Repository> {
        let location = storage.location().to_string();
        let bytes = storage
            .read(layout::CONFIG)?
            .ok_or_else(|| RepoError::NotFound {
                location: location.clone(),
            })?;
        let (config, keys) = Config::decode(&bytes, key).map_err(|e| match e {
            ConfigError::WrongKey => RepoError::WrongKey { location },
            ConfigError::UnsupportedVersion(_) => RepoError::UnsupportedVersion(e.to_string()),
            other => RepoError::corrupted("config", other),
        })?;
        Ok(Repository {
            storage,
            keys: Arc::new(keys),
            config,
            lock_config: LockConfig::default(),
            cache: None,
            snapshots_read: Mutex::default(),
            snapshots_listed: Mutex::default(),
            cache_writer: Mutex::default(),
        })
    }

    /// Keeps fetched index objects, snapshots, trees and lists in the local cache under
    /// `base` (the device home's `cache/`; FORMAT §12.3), and reads them from there.
    pub fn set_cache(&mut self, base: &Path) {
        let cache = Cache::new(base, &self.config.repo_id);
        cache.remove_legacy();
        self.cache = Some(cache);
    }

    /// Whether blobs of type `ty` go to the device's cache (FORMAT §12.3): trees and lists,
    /// except lists of a repository in a local folder. A 4.6 GB database has 81,000 list blobs
    /// (median 468 bytes); one cache file each took 327 MB of disk for 43 MB, and writing them
    /// 3.6 s of system time, to save reading the same bytes from packs on the same disk.
    pub(crate) fn caches_blobs(&self, ty: BlobType) -> bool {
        match ty {
            BlobType::Tree => true,
            BlobType::List => self.storage.backend() != "fs",
            BlobType::Data => false,
        }
    }

    /// The same repository without the local cache: what `check` uses, so that it verifies
    /// the objects in storage, not the device's copies.
    pub fn without_cache(&self) -> Repository {
        Repository {
            storage: self.storage.clone(),
            keys: Arc::clone(&self.keys),
            config: self.config.clone(),
            lock_config: self.lock_config,
            cache: None,
            snapshots_read: Mutex::default(),
            snapshots_listed: Mutex::default(),
            cache_writer: Mutex::default(),
        }
    }

    /// Reads a metadata object from the cache (when its listing `stamp` is known) or else
    /// storage, opens and verifies it with `open`; a cache entry that does not verify is
    /// dropped and the object fetched again.
    fn read_object<T>(
        &self,
        kind: &str,
        id: &[u8; 32],
        path: &str,
        stamp: Option<&str>,
        open: impl Fn(&[u8]) -> Result<T>,
    ) -> Result<Option<T>> {
        let hex = hex::encode(id);
        let cache = self.cache.as_ref().zip(stamp);
        if let Some((cache, stamp)) = cache
            && let Some(bytes) = cache.get(kind, &hex, stamp)
        {
            match open(&bytes) {
                Ok(v) => return Ok(Some(v)),
                Err(_) => cache.remove(kind, &hex),
            }
        }
        let Some(bytes) = self.storage.read(path)? else {
            return Ok(None);
        };
        let v = open(&bytes)?;
        if let Some((cache, stamp)) = cache {
            cache.put(kind, &hex, stamp, &bytes);
        }
        Ok(Some(v))
    }

    /// Ids in a folder with their listing stamp (size and modification time, FORMAT §12.3).
    fn list_stamped<T: std::str::FromStr>(&self, folder: &str) -> Result<Vec<(T, String)>> {
        let mut out = Vec::new();
        for l in self.storage.list(folder, false)? {
            match l.name.parse::<T>() {
                Ok(id) => {
                    let time = l.last_modified.and_then(|t| t.timestamp_nanos_opt());
                    out.push((id, format!("{} {}", l.size, time.unwrap_or(-1))));
                }
                Err(_) => tracing::warn!(name = %l.name, folder, "ignoring unexpected object"),
            }
        }
        Ok(out)
    }

    /// The storage of this repository.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The repository id.
    pub fn id(&self) -> RepoId {
        self.config.repo_id
    }

    /// The repository format version (1, or 2 for new repositories: padded packs, §7).
    pub fn format_version(&self) -> u32 {
        self.config.version
    }

    /// Encodes the tail of a new pack (its header, and in format 2 the padding and trailer)
    /// after `blob_area` bytes of sealed blobs.
    pub(crate) fn pack_tail(
        &self,
        id: &PackId,
        entries: &[pack::PackEntry],
        blob_area: u64,
    ) -> Vec<u8> {
        if self.config.version >= 2 {
            pack::encode_tail_v2(&self.keys, id, entries, blob_area, &mut OsRng)
        } else {
            pack::encode_header(&self.keys, id, entries, &mut OsRng)
        }
    }

    /// The repository parameters.
    pub fn params(&self) -> &RepoParams {
        &self.config.params
    }

    /// The subkeys (crate-internal use by backup/restore/check).
    pub(crate) fn keys(&self) -> &RepoKeys {
        &self.keys
    }

    /// Lists ids in a folder whose names are 64-hex ids; other names are reported as warnings.
    pub(crate) fn list_ids<T: std::str::FromStr>(&self, folder: &str) -> Result<Vec<(T, u64)>> {
        let mut out = Vec::new();
        for l in self.storage.list(folder, false)? {
            match l.name.parse::<T>() {
                Ok(id) => out.push((id, l.size)),
                Err(_) => tracing::warn!(name = %l.name, folder, "ignoring unexpected object"),
            }
        }
        Ok(out)
    }

    /// Loads one index object.
    pub fn load_index_file(&self, id: &IndexId) -> Result<IndexFile> {
        self.load_index_file_stamped(id, None)
    }

    /// Loads one index object, from the cache if it was cached with `stamp` (§12.3).
    fn load_index_file_stamped(&self, id: &IndexId, stamp: Option<&str>) -> Result<IndexFile> {
        self.read_object(
            cache::kind::INDEX,
            id.as_bytes(),
            &layout::index(id),
            stamp,
            |bytes| {
                objects::open_object(&self.keys, ObjectKind::Index, id.as_bytes(), bytes)
                    .map_err(|e| RepoError::corrupted(format!("index {}", id.short()), e))
            },
        )?
        .ok_or_else(|| RepoError::corrupted(format!("index {}", id.short()), "missing"))
    }

    /// Loads and merges every index object. A damaged index object does not stop the load (so
    /// one bad object cannot make the whole repository unrestorable); it is logged and listed
    /// in [`Index::damaged`].
    ///
    /// With a cache, the device keeps the merged result (FORMAT §12.3) and loads only the index
    /// objects added since: opening a repository with years of history does not parse every
    /// index object again.
    pub fn load_index(&self) -> Result<Index> {
        self.load_index_and(|| ()).0
    }

    /// [`Repository::load_index`], running `alongside` on another thread once the prune plans
    /// are read, while the index objects are listed: a backup lists `data/` there, for the
    /// packs it adopts (§12.4), which must come after the plans for the same reason as the
    /// index objects (a pack a sweep was deleting would look unindexed and uncondemned).
    pub(crate) fn load_index_and<T: Send>(
        &self,
        alongside: impl FnOnce() -> T + Send,
    ) -> (Result<Index>, T) {
        let clock = std::time::Instant::now();
        self.join_cache_writer();
        // The prune plans first, then the index objects, never at once (FORMAT §15): a sweep
        // deletes the index objects it condemns before its plan, so a reader that finds no plan
        // lists none of them. Listed at once, a sweep ending in between left a reader with a
        // condemned index object and no plan (its merged cache even matched): it deduplicated
        // against deleted packs. The cached merged index is read and decrypted meanwhile (on a
        // cloud service the device's own work hides behind the round trips).
        let (plans, listed, merged, along) = std::thread::scope(|s| {
            let merged = self
                .cache
                .as_ref()
                .map(|cache| s.spawn(|| self.read_merged(cache)));
            let plans = self.load_plans_settled();
            let along = s.spawn(alongside);
            let listed = match &plans {
                Ok(_) => self.list_stamped::<IndexId>(layout::INDEX),
                Err(_) => Ok(Vec::new()),
            };
            (plans, listed, merged.and_then(join), join(along))
        });
        (self.merge_loaded(clock, plans, listed, merged), along)
    }

    /// The rest of [`Repository::load_index_and`]: the index objects listed (and the merged
    /// index cached) under the prune plans read first.
    fn merge_loaded(
        &self,
        clock: std::time::Instant,
        plans: Result<Vec<(PlanId, PrunePlan)>>,
        listed: Result<Vec<(IndexId, String)>>,
        merged: Option<(Index, Sources, [u8; 32])>,
    ) -> Result<Index> {
        let mut condemned = HashSet::new();
        for (_, plan) in plans? {
            condemned.extend(plan.packs);
        }
        let listed: Vec<(IndexId, String)> = listed?;
        let digest = Index::condemned_digest(&condemned);
        if let Some(cache) = &self.cache {
            cache.retain(
                cache::kind::INDEX,
                &listed.iter().map(|(id, _)| id.to_hex()).collect(),
            );
        }
        // Used only if built under the same condemned packs and every index object it was
        // built from is still listed with the same stamp.
        let merged = merged.filter(|(_, sources, built_under)| {
            let listed: HashSet<&(IndexId, String)> = listed.iter().collect();
            *built_under == digest && sources.iter().all(|s| listed.contains(s))
        });
        let (mut index, mut sources) = merged.map(|(i, s, _)| (i, s)).unwrap_or_default();
        index.condemned = condemned;
        let have: HashSet<&(IndexId, String)> = sources.iter().collect();
        let missing: Vec<&(IndexId, String)> =
            listed.iter().filter(|l| !have.contains(l)).collect();
        // Fetched in parallel, in waves of at most INDEX_WAVE_BYTES of sealed objects (a new
        // device's first load of a 4.5 GB database's index: 40 objects of megabytes each, whose
        // parsing in 32 threads at once took 170 MB more than the index itself); each reader
        // merges what it fetched at once, so at most one parsed index object per reader is in
        // memory.
        let shared = std::sync::Mutex::new((index, Vec::new()));
        let listed_size = |stamp: &str| {
            stamp
                .split(' ')
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let mut waves: Vec<&[&(IndexId, String)]> = Vec::new();
        let (mut start, mut bytes) = (0, 0u64);
        for (i, (_, stamp)) in missing.iter().enumerate() {
            let size = listed_size(stamp);
            if i > start && (bytes + size > INDEX_WAVE_BYTES || i - start >= METADATA_READERS) {
                waves.push(&missing[start..i]);
                (start, bytes) = (i, 0);
            }
            bytes += size;
        }
        if start < missing.len() {
            waves.push(&missing[start..]);
        }
        let results = waves.iter().flat_map(|wave| {
            par_map(wave, |(id, stamp)| {
                let loaded = self.load_index_file_stamped(id, Some(stamp));
                let mut guard = shared.lock().expect("index lock");
                let (index, added) = &mut *guard;
                match loaded {
                    Ok(f) => {
                        index.add(&f);
                        added.push((*id, stamp.clone()));
                        Ok(())
                    }
                    Err(e @ RepoError::Corrupted { .. }) => {
                        tracing::warn!(error = %e, "skipping damaged index object");
                        index.damaged.push((*id, e.to_string()));
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            })
        });
        results.collect::<Result<()>>()?;
        let (mut index, added) = shared.into_inner().expect("index lock");
        index.finish();
        tracing::debug!(
            ms = clock.elapsed().as_millis(),
            blobs = index.len(),
            from_cache = sources.len(),
            loaded = added.len(),
            "index loaded"
        );
        let rewrite = added.len() >= MERGE_AFTER || (sources.is_empty() && !added.is_empty());
        sources.extend(added);
        sources.sort();
        index.files = sources.iter().map(|(id, _)| *id).collect();
        index.damaged.sort();
        if let Some(cache) = &self.cache
            && rewrite
        {
            // Encoded here, then sealed a segment at a time into the file (one buffer the size
            // of the index, not two: a 4.6 GB database's index is ~60 MB) on a thread of its
            // own while the command goes on: after a year of daily backups (36 MB) this took a
            // daily backup 220 ms once a week before its walk began.
            let plain = index.encode_merged(&sources, &digest);
            // Cached blobs of packs no index lists any more (pruned) leave with it; here, not
            // on the thread, which would race this command's own new packs.
            cache.retain(
                cache::kind::PACK,
                &index.packs.keys().map(|p| p.to_hex()).collect(),
            );
            let (keys, cache, repo_id) = (Arc::clone(&self.keys), cache.clone(), self.id());
            let writer = std::thread::Builder::new()
                .name("chatvault-cache".into())
                .spawn(move || {
                    cache.put_file_with(cache::MERGED_INDEX, |f| {
                        let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
                        let segment = cache::MERGED_SEGMENT;
                        cache::write_merged(&keys, &repo_id, &plain, segment, &mut out)?;
                        std::io::Write::flush(&mut out)
                    });
                });
            match writer {
                Ok(handle) => {
                    *self.cache_writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle)
                }
                // No thread: the cache is only an optimisation, rebuilt by a later load.
                Err(e) => tracing::debug!(error = %e, "merged index not cached"),
            }
        }
        Ok(index)
    }

    /// Waits for [`Repository::cache_writer`], if it runs.
    fn join_cache_writer(&self) {
        let handle = self
            .cache_writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::warn!("writing the merged index to the cache failed");
        }
    }

    /// The cached merged index, if there is one and it opens, with the index objects it was
    /// built from and the digest of the condemned packs it was built under; one that does not
    /// open is removed.
    fn read_merged(&self, cache: &Cache) -> Option<(Index, Sources, [u8; 32])> {
        let (file, len) = cache.open_file(cache::MERGED_INDEX)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let (keys, segment) = (&self.keys, cache::MERGED_SEGMENT);
        let decoded =
            cache::read_merged(keys, &self.id(), &file, len, segment, threads).and_then(|plain| {
                let n = plain.len();
                Index::decode_merged(plain, 0..n)
            });
        if decoded.is_none() {
            tracing::warn!("the cached merged index does not verify: rebuilding it");
            cache.remove_file(cache::MERGED_INDEX);
        }
        decoded
    }

    /// Loads every prune plan (§15). An unreadable plan is logged and skipped: its packs then
    /// look alive, which is safe (nothing is deleted on its behalf).
    pub fn load_plans(&self) -> Result<Vec<(PlanId, PrunePlan)>> {
        self.load_plans_once().map(|(plans, _)| plans)
    }

    /// [`Repository::load_plans`] for a reader about to list the index objects: a plan listed
    /// but gone when read was just swept, and the listing is taken again (a few times at most;
    /// then the load fails rather than go on with a view a sweep cut through).
    fn load_plans_settled(&self) -> Result<Vec<(PlanId, PrunePlan)>> {
        for _ in 0..4 {
            let (plans, vanished) = self.load_plans_once()?;
            if !vanished {
                return Ok(plans);
            }
            tracing::debug!("a prune plan was swept while the plans were read: listing again");
        }
        Err(RepoError::Invalid(
            "prune plans kept disappearing while the index loaded (sweeps running); try again"
                .into(),
        ))
    }

    /// The readable prune plans, and whether one that was listed was gone when read.
    fn load_plans_once(&self) -> Result<(Vec<(PlanId, PrunePlan)>, bool)> {
        let mut out = Vec::new();
        let mut vanished = false;
        for (id, _) in self.list_ids::<PlanId>(layout::PLANS)? {
            let Some(bytes) = self.storage.read(&layout::plan(&id))? else {
                vanished = true;
                continue;
            };
            match objects::open_object(&self.keys, ObjectKind::PrunePlan, id.as_bytes(), &bytes) {
                Ok(p) => out.push((id, p)),
                Err(e) => {
                    tracing::warn!(plan = %id.short(), error = %e, "ignoring damaged prune plan")
                }
            }
        }
        Ok((out, vanished))
    }

    /// The highest snapshot sequence number among the readable snapshots (0 if none).
    pub fn max_seq(&self) -> Result<u64> {
        Ok(self
            .snapshots()?
            .iter()
            .filter_map(|(_, s)| s.as_ref().ok().map(|s| s.seq))
            .max()
            .unwrap_or(0))
    }

    /// Loads one snapshot.
    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        self.load_snapshot_stamped(id, None)
    }

    /// Loads one snapshot, from the cache if it was cached with `stamp` (§12.3).
    fn load_snapshot_stamped(&self, id: &SnapshotId, stamp: Option<&str>) -> Result<Snapshot> {
        if let Some(s) = self.snapshots_read.lock().expect("snapshot memo").get(id) {
            return Ok(s.clone());
        }
        let snapshot: Snapshot = self
            .read_object(
                cache::kind::SNAPSHOT,
                id.as_bytes(),
                &layout::snapshot(id),
                stamp,
                |bytes| {
                    objects::open_object(&self.keys, ObjectKind::Snapshot, id.as_bytes(), bytes)
                        .map_err(|e| RepoError::corrupted(format!("snapshot {}", id.short()), e))
                },
            )?
            .ok_or_else(|| RepoError::SnapshotNotFound(id.short()))?;
        self.snapshots_read
            .lock()
            .expect("snapshot memo")
            .insert(*id, snapshot.clone());
        Ok(snapshot)
    }

    /// All snapshot ids in storage.
    pub fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self
            .list_ids::<SnapshotId>(layout::SNAPSHOTS)?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// Loads every snapshot, oldest first (by `seq`, then `time`, then id). Damaged snapshots are returned as errors in the list
    /// so that one bad object does not hide the others.
    pub fn snapshots(&self) -> Result<Vec<(SnapshotId, Result<Snapshot>)>> {
        let listed: Vec<(SnapshotId, String)> = self.list_stamped(layout::SNAPSHOTS)?;
        *self.snapshots_listed.lock().expect("snapshot listing") = Some(listed.clone());
        Ok(self.snapshots_of(listed))
    }

    /// [`Repository::snapshots`] as of this process's last listing of them (listing them now
    /// if it has none), without listing again: for a command that acts on the view its opening
    /// checks just took (the rollback check lists every snapshot; a restore of `latest` on a
    /// phone then needs no second round trip). Not for a command that wrote or deleted
    /// snapshots since.
    pub fn snapshots_as_listed(&self) -> Result<Vec<(SnapshotId, Result<Snapshot>)>> {
        let listed = self
            .snapshots_listed
            .lock()
            .expect("snapshot listing")
            .clone();
        match listed {
            Some(listed) => Ok(self.snapshots_of(listed)),
            None => self.snapshots(),
        }
    }

    /// The snapshots of a listing, read (in parallel; each at most once per process) and
    /// ordered as [`Repository::snapshots`] says.
    fn snapshots_of(
        &self,
        listed: Vec<(SnapshotId, String)>,
    ) -> Vec<(SnapshotId, Result<Snapshot>)> {
        if let Some(cache) = &self.cache {
            cache.retain(
                cache::kind::SNAPSHOT,
                &listed.iter().map(|(id, _)| id.to_hex()).collect(),
            );
        }
        let loaded = par_map(&listed, |(id, stamp)| {
            self.load_snapshot_stamped(id, Some(stamp))
        });
        let mut v: Vec<_> = listed.into_iter().map(|(id, _)| id).zip(loaded).collect();
        // Newest = highest `seq` (FORMAT §9): a phone whose clock is wrong still orders its
        // snapshots right; `time` (then id) only breaks ties, e.g. between snapshots written
        // before `seq` existed.
        v.sort_by(|a, b| match (&a.1, &b.1) {
            (Ok(x), Ok(y)) => (x.seq, &x.time, a.0).cmp(&(y.seq, &y.time, b.0)),
            (Ok(_), Err(_)) => std::cmp::Ordering::Greater,
            (Err(_), Ok(_)) => std::cmp::Ordering::Less,
            _ => a.0.cmp(&b.0),
        });
        v
    }

    /// `latest` among snapshots as [`Repository::snapshots`] lists them: the newest readable.
    pub fn latest_of(all: Vec<(SnapshotId, Result<Snapshot>)>) -> Result<(SnapshotId, Snapshot)> {
        all.into_iter()
            .rev()
            .find_map(|(id, s)| s.ok().map(|s| (id, s)))
            .ok_or_else(|| {
                RepoError::SnapshotNotFound(
                    "latest (the repository has no readable snapshots)".into(),
                )
            })
    }

    /// Resolves `latest`, a full id, or a unique id prefix (at least 4 hex digits).
    pub fn find_snapshot(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        if spec == "latest" {
            return Self::latest_of(self.snapshots()?);
        }
        let spec_l = spec.to_ascii_lowercase();
        if spec_l.len() < 4 || !spec_l.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RepoError::Invalid(format!(
                "invalid snapshot {spec:?}: give `latest` or at least 4 hex digits of an id"
            )));
        }
        let matches: Vec<_> = self
            .snapshot_ids()?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&spec_l))
            .collect();
        match matches.as_slice() {
            [id] => Ok((*id, self.load_snapshot(id)?)),
            [] => Err(RepoError::SnapshotNotFound(spec.to_string())),
            _ => Err(RepoError::Invalid(format!(
                "snapshot prefix {spec:?} is ambiguous: give more digits"
            ))),
        }
    }

    /// The packs in storage (id → size), and the paths of other objects under `data/`. Readers
    /// look for a pack only at its layout path (§2), so a pack stored anywhere else counts as
    /// an unexpected object, not as the pack.
    pub fn stored_packs(&self) -> Result<(HashMap<PackId, u64>, Vec<String>)> {
        let (packs, unexpected) = self.stored_pack_listing()?;
        Ok((
            packs.into_iter().map(|(id, l)| (id, l.size)).collect(),
            unexpected,
        ))
    }

    /// [`Repository::stored_packs`] with each pack's listing entry, which carries its storage
    /// time where the backend reports one (prune judges unindexed packs by it, §15).
    pub fn stored_pack_listing(&self) -> Result<(HashMap<PackId, Listed>, Vec<String>)> {
        let mut packs = HashMap::new();
        let mut unexpected = Vec::new();
        for l in self.storage.list(layout::DATA, true)? {
            match l.name.parse::<PackId>() {
                Ok(id) if l.path == layout::pack(&id) => {
                    packs.insert(id, l);
                }
                _ => unexpected.push(l.path),
            }
        }
        Ok((packs, unexpected))
    }

    /// Reads, opens and verifies one blob.
    pub fn read_blob(&self, id: &BlobId, loc: &BlobLocation) -> Result<Vec<u8>> {
        let mut one = self.read_adjacent_blobs(&[(*id, *loc)])?;
        Ok(one.pop().expect("one blob read"))
    }

    /// Reads blobs of one pack in increasing offset order (back to back, or with small gaps:
    /// see [`READ_GAP`]) with one ranged read, then opens and verifies each as
    /// [`Repository::read_blob`] does. Fails at the first blob that does not verify.
    pub fn read_adjacent_blobs(&self, blobs: &[(BlobId, BlobLocation)]) -> Result<Vec<Vec<u8>>> {
        let [(_, first), ..] = blobs else {
            return Ok(Vec::new());
        };
        let (_, last) = blobs[blobs.len() - 1];
        debug_assert!(blobs.windows(2).all(|w| w[0].1.pack == w[1].1.pack
            && w[1].1.offset >= w[0].1.offset + u64::from(w[0].1.length)));
        let total = last.offset + u64::from(last.length) - first.offset;
        let path = layout::pack(&first.pack);
        let range = self
            .storage
            .read_range(&path, first.offset, total)?
            .ok_or_else(|| {
                RepoError::corrupted(format!("pack {}", first.pack.short()), "missing")
            })?;
        let mut out = Vec::with_capacity(blobs.len());
        // What goes to the device's cache: verified blobs of the cached types, neighbours
        // joined into one write (offset in the pack, range in `range`).
        let mut spans: Vec<(u64, Range<usize>)> = Vec::new();
        for (id, loc) in blobs {
            let start = (loc.offset - first.offset) as usize;
            let end = start + loc.length as usize;
            let sealed = range.get(start..end).ok_or_else(|| {
                RepoError::corrupted(format!("pack {}", loc.pack.short()), "truncated")
            })?;
            let plain = blob::open_blob(&self.keys, loc.ty, id, sealed).map_err(|e| {
                RepoError::corrupted(
                    format!(
                        "{} {} in pack {}",
                        loc.ty.kind().name(),
                        id.short(),
                        loc.pack.short()
                    ),
                    e,
                )
            })?;
            if self.cache.is_some() && self.caches_blobs(loc.ty) {
                match spans.last_mut() {
                    Some((_, r)) if r.end == start => r.end = end,
                    Some((_, r)) if r.start <= start && end <= r.end => {}
                    _ => spans.push((loc.offset, start..end)),
                }
            }
            out.push(plain);
        }
        if let Some(cache) = &self.cache
            && !spans.is_empty()
        {
            let spans: Vec<(u64, &[u8])> = spans.into_iter().map(|(o, r)| (o, &range[r])).collect();
            cache.put_pack(&first.pack.to_hex(), &spans);
        }
        Ok(out)
    }

    /// Reads, opens and verifies many blobs of type `ty`, returned in the order of `ids`. The
    /// reads are sorted by pack and offset and neighbouring blobs are fetched together (runs of
    /// at most [`READ_RUN`] bytes with gaps of at most [`READ_GAP`]), so listing a large file's
    /// content lists costs a few requests, not one per list.
    pub fn read_blobs(&self, index: &Index, ty: BlobType, ids: &[BlobId]) -> Result<Vec<Vec<u8>>> {
        let mut order: Vec<(usize, BlobId, BlobLocation)> = Vec::with_capacity(ids.len());
        let mut out: Vec<Option<Vec<u8>>> = vec![None; ids.len()];
        // Trees and lists first from the device's cache (verified like fetched ones).
        if self.caches_blobs(ty)
            && let Some(cache) = &self.cache
        {
            self.read_cached_blobs(cache, index, ty, ids, &mut out);
        }
        for (i, id) in ids.iter().enumerate() {
            if out[i].is_some() {
                continue;
            }
            let loc = index.get(id).ok_or_else(|| {
                RepoError::corrupted(
                    format!("{} {}", ty.kind().name(), id.short()),
                    "not in any index",
                )
            })?;
            if loc.ty != ty {
                return Err(RepoError::corrupted(
                    format!("{} {}", ty.kind().name(), id.short()),
                    format!("indexed as a {}", loc.ty.kind().name()),
                ));
            }
            order.push((i, *id, loc));
        }
        order.sort_by_key(|(_, _, l)| (l.pack, l.offset));
        // Runs of neighbours, each read with one request; the runs (of different packs, or far
        // apart) are fetched in parallel: trees a restore prefetches, or the content lists of a
        // large file, often lie in one pack per day of history, and one round trip after
        // another would grow with it.
        // The same blob may be asked for twice: read it once, copy it.
        let runs = location_runs(order.len(), |i| order[i].2);
        let budget = ByteBudget::new(BLOB_READ_BUDGET);
        let read = par_map_n(&runs, METADATA_READERS, |r| {
            let mut run: Vec<(BlobId, BlobLocation)> = Vec::with_capacity(r.len());
            for (_, id, loc) in &order[r.clone()] {
                if run.last().is_none_or(|(_, l)| l.offset != loc.offset) {
                    run.push((*id, *loc));
                }
            }
            let bytes = run
                .last()
                .map_or(0, |(_, l)| l.offset + u64::from(l.length))
                - run.first().map_or(0, |(_, l)| l.offset);
            let _share = budget.take(bytes);
            let plains = self.read_adjacent_blobs(&run)?;
            Ok((run, plains))
        });
        for (r, result) in runs.iter().zip(read) {
            let (run, plains): (Vec<(BlobId, BlobLocation)>, Vec<Vec<u8>>) = result?;
            for (i, id, loc) in &order[r.clone()] {
                let k = run
                    .iter()
                    .position(|(rid, l)| l.offset == loc.offset && rid == id)
                    .ok_or_else(|| {
                        RepoError::corrupted(
                            format!("pack {}", loc.pack.short()),
                            "two blobs indexed at one place",
                        )
                    })?;
                out[*i] = Some(plains[k].clone());
            }
        }
        Ok(out
            .into_iter()
            .map(|p| p.expect("every blob read"))
            .collect())
    }

    /// Fills `out[i]` with blob `ids[i]` where the device's cache holds it verified: the cached
    /// blobs of each pack are read in runs of neighbours (one `pread` per run). A region never
    /// cached is skipped; one that does not verify is fetched again, and the fetch overwrites it.
    fn read_cached_blobs(
        &self,
        cache: &Cache,
        index: &Index,
        ty: BlobType,
        ids: &[BlobId],
        out: &mut [Option<Vec<u8>>],
    ) {
        let mut wanted: Vec<(usize, BlobLocation)> = ids
            .iter()
            .enumerate()
            .filter_map(|(i, id)| index.get(id).filter(|l| l.ty == ty).map(|l| (i, l)))
            .collect();
        wanted.sort_by_key(|(_, l)| (l.pack, l.offset));
        let runs = location_runs(wanted.len(), |k| wanted[k].1);
        let mut open: Option<(PackId, Option<std::fs::File>)> = None;
        for r in runs {
            let pack = wanted[r.start].1.pack;
            if open.as_ref().is_none_or(|(p, _)| *p != pack) {
                open = Some((pack, cache.open_pack(&pack.to_hex())));
            }
            let Some((_, Some(file))) = &open else {
                continue;
            };
            let start = wanted[r.start].1.offset;
            let end = wanted[r.clone()]
                .iter()
                .map(|(_, l)| l.offset + u64::from(l.length))
                .max()
                .unwrap_or(start);
            let Some(bytes) = cache::read_at(file, start, (end - start) as usize) else {
                continue;
            };
            for (i, loc) in &wanted[r] {
                let at = (loc.offset - start) as usize;
                let sealed = &bytes[at..at + loc.length as usize];
                if cache::is_hole(sealed) {
                    continue;
                }
                match blob::open_blob(&self.keys, ty, &ids[*i], sealed) {
                    Ok(plain) => out[*i] = Some(plain),
                    Err(e) => tracing::warn!(
                        pack = %pack.short(),
                        offset = loc.offset,
                        error = %e,
                        "a cached blob does not verify: fetching it again"
                    ),
                }
            }
        }
    }

    /// Expands a file's content lists (FORMAT §10.1) into its data blob ids, level by level.
    /// `visit` is called for every list blob before it is read; returning false skips it and
    /// what it lists (for walks that already saw it, like prune's). Fails on a missing or
    /// damaged list, a list at the wrong level, or more than [`list::MAX_FILE_BLOBS`] ids.
    pub fn walk_lists(
        &self,
        index: &Index,
        lists: &[BlobId],
        visit: impl FnMut(&BlobId) -> bool,
    ) -> Result<Vec<BlobId>> {
        self.walk_lists_at_most(index, lists, visit, list::MAX_FILE_BLOBS)
    }

    /// [`Repository::walk_lists`], failing as soon as the lists hold more than `max` ids (at
    /// most [`list::MAX_FILE_BLOBS`]): a walk that must not hold more memory than a file's
    /// stated size accounts for (restore's read-ahead of database lists).
    pub(crate) fn walk_lists_at_most(
        &self,
        index: &Index,
        lists: &[BlobId],
        mut visit: impl FnMut(&BlobId) -> bool,
        max: usize,
    ) -> Result<Vec<BlobId>> {
        let max = max.min(list::MAX_FILE_BLOBS);
        let mut current: Vec<BlobId> = lists.to_vec();
        let mut level: Option<u8> = None;
        loop {
            current.retain(|id| visit(id));
            let plains = self.read_blobs(index, BlobType::List, &current)?;
            let mut next = Vec::new();
            for (id, plain) in current.iter().zip(&plains) {
                let decoded = match level {
                    None => list::decode(plain),
                    Some(l) => list::decode_at(plain, l),
                }
                .map_err(|e| RepoError::corrupted(format!("list blob {}", id.short()), e))?;
                level = Some(decoded.level);
                next.extend(decoded.ids);
                if next.len() > max {
                    return Err(RepoError::corrupted(
                        format!("list blob {}", id.short()),
                        "lists more blobs than a file may have",
                    ));
                }
            }
            match level {
                None | Some(0) => return Ok(next),
                Some(l) => {
                    level = Some(l - 1);
                    current = next;
                }
            }
        }
    }

    /// The data blob ids of a file node, in order: inline, or expanded from its content lists.
    pub fn file_blobs(&self, index: &Index, kind: &NodeKind) -> Result<Vec<BlobId>> {
        match kind {
            NodeKind::File { content, lists, .. } if lists.is_empty() => Ok(content.clone()),
            NodeKind::File { lists, .. } => self.walk_lists(index, lists, |_| true),
            _ => Ok(Vec::new()),
        }
    }

    /// Writes index objects listing `packs`, split so that none exceeds what readers accept
    /// (FORMAT §8, [`objects::MAX_INDEX_BLOBS`]). Returns each object's id and stored size.
    /// Each write goes through `live`: it is refused once the writer's lock is lost (§11).
    pub(crate) fn write_index_objects(
        &self,
        packs: Vec<IndexPack>,
        live: &crate::lock::Liveness,
    ) -> Result<Vec<(IndexId, u64)>> {
        let mut out = Vec::new();
        for file in objects::split_index(packs) {
            let (id, sealed) =
                objects::seal_object(&self.keys, ObjectKind::Index, &file, &mut OsRng).map_err(
                    |e| RepoError::Invalid(format!("cannot write an index object: {e}")),
                )?;
            let id = IndexId::from_bytes(id);
            let len = sealed.len() as u64;
            live.write_new(&layout::index(&id), sealed)?;
            out.push((id, len));
        }
        Ok(out)
    }

    /// Loads a directory's tree: its tree blob and, for a tree stored in parts (FORMAT §10.2),
    /// its parts, joined.
    pub fn load_tree(&self, index: &Index, id: &BlobId) -> Result<Tree> {
        Ok(self.load_tree_full(index, id)?.tree)
    }

    /// [`Repository::load_tree`], with the ids of the parts the tree is stored in (none for a
    /// tree stored whole): what a backup checks before reusing the tree, and prune keeps.
    pub fn load_tree_full(&self, index: &Index, id: &BlobId) -> Result<LoadedTree> {
        match self.load_tree_blob(index, id)? {
            TreeBlob::Listing(tree) => Ok(LoadedTree {
                tree,
                parts: Vec::new(),
            }),
            TreeBlob::Parts(parts) => Ok(LoadedTree {
                tree: self.load_tree_parts(index, id, &parts)?,
                parts,
            }),
        }
    }

    /// Loads and decodes the tree blob `id` itself (a listing, or the list of its parts).
    pub fn load_tree_blob(&self, index: &Index, id: &BlobId) -> Result<TreeBlob> {
        let bytes = self
            .read_blobs(index, BlobType::Tree, std::slice::from_ref(id))?
            .pop()
            .expect("one tree read");
        objects::parse_tree_blob(&bytes)
            .map_err(|e| RepoError::corrupted(format!("tree {}", id.short()), e))
    }

    /// Loads the `parts` of tree `id` (all read at once, the runs in parallel) and joins them.
    /// Refuses, before reading any, parts whose plaintexts would exceed
    /// [`parts::MAX_PARTS_BYTES`] together (a hostile list naming huge parts).
    pub fn load_tree_parts(&self, index: &Index, id: &BlobId, parts: &[BlobId]) -> Result<Tree> {
        let what = || format!("tree {}", id.short());
        let mut bytes = 0u64;
        for p in parts {
            let loc = index.get(p).ok_or_else(|| {
                RepoError::corrupted(what(), format!("part {} is not in any index", p.short()))
            })?;
            bytes += u64::from(loc.raw_length);
        }
        if bytes > parts::MAX_PARTS_BYTES {
            return Err(RepoError::corrupted(
                what(),
                format!("its parts hold {bytes} bytes, more than a reader accepts"),
            ));
        }
        let plains = self.read_blobs(index, BlobType::Tree, parts)?;
        join_parts(id, parts, plains.iter().map(Vec::as_slice))
    }
}

/// Tree `id` from the plaintexts of its `parts` (in order): each must be a listing, none
/// empty (FORMAT §10.2).
pub(crate) fn join_parts<'p>(
    id: &BlobId,
    parts: &[BlobId],
    plains: impl IntoIterator<Item = &'p [u8]>,
) -> Result<Tree> {
    let what = || format!("tree {}", id.short());
    let mut listings = Vec::with_capacity(parts.len());
    for (p, plain) in parts.iter().zip(plains) {
        listings
            .push(objects::parse_tree(plain).map_err(|e| {
                RepoError::corrupted(format!("{} (part {})", what(), p.short()), e)
            })?);
    }
    parts::join(listings).map_err(|e| RepoError::corrupted(what(), e))
}

#[cfg(test)]
mod index_tests {
    use super::*;
    use chatvault_format::objects::{IndexBlob, OBJECT_VERSION};

    fn file(pack: u8, ids: std::ops::Range<u32>) -> IndexFile {
        IndexFile {
            version: OBJECT_VERSION,
            packs: vec![IndexPack {
                id: PackId::from_bytes([pack; 32]),
                size: 1 << 20,
                blobs: ids
                    .map(|i| IndexBlob {
                        id: BlobId::from_bytes(*blake3::hash(&i.to_le_bytes()).as_bytes()),
                        ty: BlobType::Data,
                        offset: u64::from(i) * 100,
                        length: 100,
                        raw_length: 90,
                    })
                    .collect(),
            }],
        }
    }

    fn id(i: u32) -> BlobId {
        BlobId::from_bytes(*blake3::hash(&i.to_le_bytes()).as_bytes())
    }

    /// Everything an index answers, for comparing two built differently.
    fn answers(index: &Index) -> (usize, Vec<(BlobId, BlobLocation)>, Vec<bool>) {
        let reusable = (0..20_000).map(|i| index.reusable(&id(i))).collect();
        (index.len(), index.iter().collect(), reusable)
    }

    /// The estimate-then-bisect search finds exactly what is there, whether the ids are spread
    /// evenly (keyed hashes), crowded into one prefix and one region of it (an index written by
    /// someone else who holds the key), or equal in their first 8 bytes; with and without the
    /// prefix table.
    #[test]
    fn lookups_find_every_id_and_only_those() {
        let spread: Vec<BlobId> = (0..40_000).map(id).collect();
        let crowded: Vec<BlobId> = (0..5_000u32)
            .map(|i| {
                let mut b = *id(i).as_bytes();
                b[..3].copy_from_slice(&[0x7f, 0xff, 0xff]);
                if i % 3 == 0 {
                    // Same first 8 bytes as others: only the tail tells them apart.
                    b[3..8].copy_from_slice(&[1, 2, 3, 4, 5]);
                }
                BlobId::from_bytes(b)
            })
            .collect();
        for ids in [spread, crowded] {
            let mut sorted = ids.clone();
            sorted.sort();
            sorted.dedup();
            let mut entries = Entries::with_capacity(sorted.len());
            for (n, i) in sorted.iter().enumerate() {
                let slot = Slot {
                    pack: 0,
                    offset: n as u32,
                    length: 1,
                    raw_length: 1,
                    ty: BlobType::Data,
                };
                entries.push(i, &slot);
            }
            let starts = prefix_starts(entries.len(), PREFIX_BITS, |i| entries.id(i));
            for (n, i) in sorted.iter().enumerate() {
                let p = prefix_of(i.as_bytes(), PREFIX_BITS);
                let (lo, hi) = (starts[p] as usize, starts[p + 1] as usize);
                let found = entries.search(lo, hi, PREFIX_BITS, i).map(|s| s.offset);
                assert_eq!(found, Some(n as u32));
                let whole = entries.search(0, entries.len(), 0, i).map(|s| s.offset);
                assert_eq!(whole, Some(n as u32));
            }
            for k in 0..20_000u32 {
                // Absent ids: new hashes, and neighbours of present ones.
                let mut absent = *id(1_000_000 + k).as_bytes();
                if k % 2 == 0 {
                    absent = *sorted[k as usize % sorted.len()].as_bytes();
                    absent[31] ^= 0x80;
                }
                let absent = BlobId::from_bytes(absent);
                if sorted.binary_search(&absent).is_ok() {
                    continue;
                }
                let p = prefix_of(absent.as_bytes(), PREFIX_BITS);
                let (lo, hi) = (starts[p] as usize, starts[p + 1] as usize);
                assert!(entries.search(lo, hi, PREFIX_BITS, &absent).is_none());
                assert!(entries.search(0, entries.len(), 0, &absent).is_none());
            }
        }
    }

    #[test]
    fn small_additions_kept_apart_answer_as_a_full_merge() {
        let build = |finish_each: bool| {
            let mut index = Index::default();
            index.condemned.insert(PackId::from_bytes([1; 32]));
            index.condemned.insert(PackId::from_bytes([4; 32]));
            let files = [
                file(1, 0..12_000), // condemned
                file(2, 6_000..9_000),
                file(3, 11_000..12_100), // beats the condemned copies of 11,000..12,000
                file(4, 12_050..12_300), // condemned: new ids, and copies of 3's
                file(5, 12_200..12_260), // beats 4's copies of 12,200..12,260
                file(6, 12_280..12_400), // beats 4's last ones, adds new ones
                file(7, 5_990..6_010),   // loses to 2 (not condemned) where they overlap
            ];
            for f in &files {
                index.add(f);
                if finish_each {
                    index.finish();
                }
            }
            index.finish();
            index
        };
        let apart = build(true);
        assert!(!apart.extra.is_empty(), "the later files were kept apart");
        assert!(
            apart.extra_bits > 0,
            "the kept-apart ids are looked up by prefix"
        );
        let merged = build(false);
        assert!(merged.extra.is_empty());
        assert!(answers(&apart) == answers(&merged));
        assert_eq!(apart.len(), 12_400);
        assert_eq!(
            apart.get(&id(11_500)).unwrap().pack,
            PackId::from_bytes([3; 32])
        );
        assert_eq!(
            apart.get(&id(12_210)).unwrap().pack,
            PackId::from_bytes([5; 32])
        );
        assert_eq!(
            apart.get(&id(12_290)).unwrap().pack,
            PackId::from_bytes([6; 32])
        );
        assert_eq!(
            apart.get(&id(6_000)).unwrap().pack,
            PackId::from_bytes([2; 32])
        );
        assert_eq!(
            apart.get(&id(5_995)).unwrap().pack,
            PackId::from_bytes([7; 32])
        );
        // The cached form holds the same, and a large addition folds everything in.
        let digest = [0u8; 32];
        let encoded = apart.encode_merged(&[], &digest);
        let n = encoded.len();
        let (mut decoded, _, _) = Index::decode_merged(encoded, 0..n).unwrap();
        decoded.condemned = apart.condemned.clone();
        assert!(answers(&decoded) == answers(&merged));
        let mut apart = apart;
        apart.add(&file(8, 20_000..40_000));
        apart.finish();
        assert!(apart.extra.is_empty());
        assert_eq!(apart.len(), 32_400);
    }

    #[test]
    fn index_is_compact_and_prefers_packs_that_are_not_condemned() {
        // The budget is 64 bytes per blob; the array holds exactly one entry per blob.
        const { assert!(INDEX_BYTES_PER_BLOB <= 49) };
        let mut index = Index::default();
        index.condemned.insert(PackId::from_bytes([1; 32]));
        index.add(&file(1, 0..1000)); // condemned copy first
        index.add(&file(2, 500..100_000));
        index.finish();
        assert_eq!(index.len(), 100_000);
        assert_eq!(
            index.entries.buf.capacity(),
            index.len() * INDEX_BYTES_PER_BLOB,
            "no slack after finish"
        );
        let in_both = index.get(&id(700)).unwrap();
        assert_eq!(in_both.pack, PackId::from_bytes([2; 32]));
        assert_eq!(in_both.offset, 70_000);
        assert!(index.reusable(&id(700)));
        assert!(!index.reusable(&id(10)), "only in a condemned pack");
        assert!(index.contains(&id(10)));
        assert!(!index.contains(&id(100_000)));
        assert!(
            (0..100_000).all(|i| index.contains(&id(i))),
            "every id found by prefix"
        );
        let mut absent = *id(5).as_bytes();
        absent[31] ^= 1;
        assert!(!index.contains(&BlobId::from_bytes(absent)));
        // Adding more later merges.
        index.add(&file(3, 100_000..100_010));
        index.finish();
        assert_eq!(index.len(), 100_010);
        assert_eq!(index.iter().count(), 100_010);

        // Merging into a finished index prefers a new copy over a condemned old one, and keeps
        // an old copy that is not condemned.
        let mut index = Index::default();
        index.condemned.insert(PackId::from_bytes([1; 32]));
        index.add(&file(1, 0..10));
        index.add(&file(3, 20..30));
        index.finish();
        index.add(&file(2, 5..25));
        index.finish();
        assert_eq!(index.len(), 30);
        let pack = |i| index.get(&id(i)).unwrap().pack;
        assert_eq!(
            pack(2),
            PackId::from_bytes([1; 32]),
            "only in the condemned pack"
        );
        assert_eq!(
            pack(7),
            PackId::from_bytes([2; 32]),
            "the condemned copy is replaced"
        );
        assert_eq!(
            pack(22),
            PackId::from_bytes([3; 32]),
            "the first live copy is kept"
        );
        assert!(index.iter().map(|(id, _)| id).is_sorted());
    }
}

#[cfg(test)]
mod budget_tests {
    use super::ByteBudget;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Many small shares are held at once; a share larger than what is left waits until enough
    /// is given back, and at no time do the held shares exceed the budget; a share larger than
    /// the whole budget takes all of it (it must not wait for ever).
    #[test]
    fn shares_stay_within_the_budget() {
        let budget = ByteBudget::new(100);
        let held = AtomicU64::new(0);
        let peak = AtomicU64::new(0);
        let barrier = std::sync::Barrier::new(10);
        std::thread::scope(|s| {
            // Ten small shares (10 bytes each) are all held at the same time.
            for _ in 0..10 {
                s.spawn(|| {
                    let _share = budget.take(10);
                    barrier.wait();
                });
            }
        });
        std::thread::scope(|s| {
            for i in 0..16u64 {
                let (budget, held, peak) = (&budget, &held, &peak);
                s.spawn(move || {
                    let bytes = [30, 70, 100, 5, 500][i as usize % 5];
                    let _share = budget.take(bytes);
                    let now = held.fetch_add(bytes.min(100), Ordering::SeqCst) + bytes.min(100);
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    held.fetch_sub(bytes.min(100), Ordering::SeqCst);
                });
            }
        });
        assert!(peak.load(Ordering::SeqCst) <= 100);
        assert_eq!(
            *budget.left.lock().unwrap(),
            100,
            "every share was given back"
        );
    }
}
