//! Restoring a snapshot to a local folder, contained in that folder (docs/FORMAT.md §12.1).
//!
//! Only verified data is ever written under a final name: each file is assembled in a temporary
//! file next to its destination from blobs that were authenticated and checked against their
//! ids, and renamed into place only when every blob verified. A file with a missing or damaged
//! blob is not created; it is listed in the outcome, and the other files still restore.
//!
//! Nothing is written outside the target, whatever the snapshot or the target already holds:
//! - the target folder is opened once (a symbolic link given as the target itself is followed:
//!   the user named it); below it every step is relative to an open directory, one name at a
//!   time, and never follows a symbolic link (`openat(O_DIRECTORY | O_NOFOLLOW)`, `mkdirat`,
//!   `renameat`, `unlinkat`, `symlinkat`);
//! - tree entries whose names are unsafe (empty, `.`, `..`, containing `/` or NUL) or appear more
//!   than once in their tree are not restored and are listed (`refusals`, shared with `check`);
//! - symbolic links from the snapshot are created last, after every file and directory, so
//!   nothing is written through them; their time is set with `AT_SYMLINK_NOFOLLOW` and they are
//!   never chmod-ed;
//! - file mode and time are set through the open file, directory mode and time through the open
//!   directory (deepest first, at the very end).
//!
//! The steps, in order: `Plan` walks the snapshot's trees, creates the directories and removes
//! the temporary entries a killed restore left; `Writer` writes the files — first every SQLite
//! database and the rest of its folder, then (after [`RestoreEvent::MessagesReady`]) everything
//! else in tree order; `restore_symlink` creates the links; directory metadata is applied last.
//!
//! The writer is a planner (docs/FORMAT.md §12.1 rule 11): files are taken in batches (at most
//! [`BATCH_FILES`] files and [`BATCH_BLOBS`] blobs, so memory stays bounded whatever the
//! snapshot); a batch's blobs are sorted by pack and offset and grouped into regions (neighbours
//! with gaps of at most [`READ_GAP`](crate::repository::READ_GAP), at most [`READ_RUN`] bytes); a pool of readers fetches each
//! region once (on a local folder with `pread` into the reader's own buffer; on a cloud service
//! all the neighbouring regions of a pack with one streamed request, consumed a region at a
//! time: one GET per pack, as restic makes, with the memory of one region), decrypts its blobs
//! where they lie and verifies them on the reader's core (zstd contexts are reused per thread),
//! and writes each plaintext with a positioned write into every temporary file that needs it,
//! so files of a batch fill in parallel. The reader that verifies a file's last blob hands it
//! to the placer thread, which syncs it (databases and their folders; every file with
//! [`RestoreOptions::durable`]: FORMAT §12.1 rule 13), stamps and renames it, while the readers
//! go on.
//!
//! Resuming (rule 12): a file already under its real name is kept when its content hashes to the
//! snapshot's blob ids (not when its size or time match); the target is locked (`flock`) so two
//! restores never write into it at once, which is what makes removing the leftovers safe.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use chatvault_format::blob::{self, BlobType, Opened};
use chatvault_format::envelope::OVERHEAD;
use chatvault_format::id::BlobId;
use chatvault_format::objects::{self, Node, NodeKind, Snapshot, Tree, TreeBlob};
use rand_core::{OsRng, RngCore};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::backup::Progress;
use crate::error::{RepoError, Result};
use crate::lock;
use crate::repository::{
    BlobLocation, ByteBudget, Index, READ_RUN, Repository, join_parts, layout, location_runs,
    neighbour_runs,
};
use crate::sqlite;

/// Options of a restore.
#[derive(Debug, Default, Clone)]
pub struct RestoreOptions {
    /// Restore only this path inside the snapshot (its first component is the name of a
    /// backed-up path, e.g. `chats/Databases/msgstore.db`).
    pub include: Option<PathBuf>,
    /// Replace files and symbolic links that already exist in the target (the entry itself is
    /// replaced; a link is never followed). A non-empty directory is never replaced.
    pub overwrite: bool,
    /// Most entries to restore from one snapshot (default [`MAX_ENTRIES`]); the rest of a
    /// larger (hostile) snapshot is listed as not restored.
    pub max_entries: Option<usize>,
    /// Parallel readers (each fetches a pack region, verifies and writes it). Default: one per
    /// core (at least 2, at most 8) on a local folder, 6 on a cloud backend (round trips, not
    /// CPU, bound those). On a cloud backend, up to 16 times as many fetch small reads at once
    /// (pages scattered over many packs), holding together no more than `readers` regions.
    pub readers: Option<usize>,
    /// Sync every restored file to disk before it gets its real name, so that even a power
    /// loss never leaves a file incomplete under its name. By default only the databases and
    /// the other files of their folders are (before "messages ready"); media is renamed once
    /// verified and written back by the kernel, as restic, borg and tar leave it (FORMAT §12.1
    /// rule 13). Syncing everything makes the restore as slow as the disk's writes.
    pub durable: bool,
}

/// What a restore reports while it runs, through [`Progress::restore_event`] (the library's
/// observer hook; the CLI prints them as newline-delimited JSON with `restore --json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RestoreEvent {
    /// The snapshot was walked and the directories made; the files follow.
    Started {
        /// Files to restore (including those an earlier run already completed).
        files: u64,
        /// Bytes of their content.
        bytes: u64,
        /// SQLite databases among them (restored first, with the rest of their folders).
        databases: u64,
        /// Temporary entries of an earlier, killed restore that were removed.
        cleaned: u64,
    },
    /// A file is in place under its real name, verified.
    File {
        /// Path below the target.
        path: String,
        /// Its size.
        bytes: u64,
        /// It is a SQLite database.
        database: bool,
        /// It was already complete (an earlier, interrupted restore wrote it) and was kept.
        kept: bool,
    },
    /// A file could not be restored; nothing was written under its name.
    Failed {
        /// Path below the target.
        path: String,
        /// Why.
        error: String,
    },
    /// Every SQLite database of the snapshot, and every other file in a database's folder, is
    /// in place and verified (or listed as failed); media follows. Sent exactly once per
    /// restore, also when the snapshot holds no database.
    MessagesReady {
        /// Databases in place.
        databases: u64,
        /// Files of the database folders that failed.
        failed: u64,
    },
}

/// What a restore did.
#[derive(Debug, Default)]
pub struct RestoreOutcome {
    /// Files (and symbolic links) written.
    pub files: u64,
    /// Directories whose metadata was restored.
    pub dirs: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Items that could not be restored, with the reason. Non-empty means the restore is
    /// incomplete.
    pub failed: Vec<(String, String)>,
    /// Snapshot entries deliberately not restored, with the reason: SQLite journals stored
    /// beside a consistent database copy (§5.1), which would be replayed over it. The restore
    /// is complete without them.
    pub skipped: Vec<(String, String)>,
    /// Files that were already complete in the target (an earlier, interrupted restore wrote
    /// them: their content hashed to the snapshot's blob ids) and were kept; counted in `files`.
    pub kept: u64,
    /// Temporary entries (`.chatvault-partial-*`) of an earlier, killed restore that were
    /// removed.
    pub cleaned: u64,
    /// Bytes read from storage during the restore (metadata and pack data).
    pub downloaded_bytes: u64,
}

/// Deepest directory nesting a restore (and `check`) follows; deeper trees are listed as not
/// restored. Trees are content-addressed, so a tree cannot contain itself unless the keyed
/// hash is broken; the bound holds anyway.
pub const MAX_DEPTH: usize = 256;

/// Most entries a restore (and `check`) walks in one snapshot. Trees are deduplicated, so a
/// hostile snapshot (written by someone else who holds the key) can name the same subtree twice
/// at each of many levels and describe 2^depth files in a few kilobytes; beyond this bound the
/// rest of the snapshot is listed as not restored instead of being expanded. Ten million is far
/// above any phone's chat folder.
pub const MAX_ENTRIES: usize = 10_000_000;

/// Prefix of the temporary names restore creates (followed by 16 random hex digits).
pub const PARTIAL_PREFIX: &str = ".chatvault-partial-";

/// Files the writer has open at once (their temporary files; a batch). Tiny in unit tests, so
/// they cross batch boundaries.
pub const BATCH_FILES: usize = if cfg!(test) { 3 } else { 256 };
/// Blobs the writer plans at once (about 100 bytes each): a batch of a huge database is a
/// slice of its pages.
pub const BATCH_BLOBS: usize = if cfg!(test) { 50 } else { 1 << 16 };

/// Why a tree entry is not restored (FORMAT §12.1). Computed by [`refusals`], shared by
/// restore and `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The name is not a single safe path component.
    UnsafeName(&'static str),
    /// The name appears `count` times in the tree; `first` marks the first of them (reports
    /// list a name once).
    Duplicate { count: usize, first: bool },
    /// A journal (`-wal`, `-shm`, `-journal`) of a SQLite snapshot in the same tree.
    Journal,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UnsafeName(why) => write!(f, "unsafe file name in snapshot tree ({why})"),
            Refusal::Duplicate { count, .. } => write!(
                f,
                "duplicate name in snapshot tree ({count} entries); none of them restored"
            ),
            Refusal::Journal => f.write_str(
                "SQLite journal beside a consistent database copy; not restored (it would be \
                 replayed over the copy)",
            ),
        }
    }
}

/// Why `name` is not a safe single path component, if it is not.
fn unsafe_name(name: &[u8]) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty")
    } else if name == b"." || name == b".." {
        Some("`.` or `..`")
    } else if name.contains(&b'/') {
        Some("contains `/`")
    } else if name.contains(&0) {
        Some("contains a NUL byte")
    } else {
        None
    }
}

/// For each node of `tree` (same order), why it must not be restored, or `None`.
pub(crate) fn refusals(tree: &Tree) -> Vec<Option<Refusal>> {
    let mut count: HashMap<&[u8], usize> = HashMap::new();
    for n in &tree.nodes {
        *count.entry(n.name.0.as_slice()).or_default() += 1;
    }
    let databases: Vec<&[u8]> = tree
        .nodes
        .iter()
        .filter(|n| {
            matches!(
                n.kind,
                NodeKind::File {
                    sqlite_snapshot: true,
                    ..
                }
            )
        })
        .map(|n| n.name.0.as_slice())
        .collect();
    let mut seen: HashSet<&[u8]> = HashSet::new();
    tree.nodes
        .iter()
        .map(|n| {
            let name = n.name.0.as_slice();
            if let Some(why) = unsafe_name(name) {
                return Some(Refusal::UnsafeName(why));
            }
            match count[name] {
                1 => {}
                count => {
                    return Some(Refusal::Duplicate {
                        count,
                        first: seen.insert(name),
                    });
                }
            }
            databases
                .iter()
                .any(|db| sqlite::is_journal_of(name, db))
                .then_some(Refusal::Journal)
        })
        .collect()
}

/// The data blob ids of a file node, in order. The one place that knows where a file keeps
/// its content list.
fn file_content(repo: &Repository, index: &Index, node: &Node) -> Result<Vec<BlobId>> {
    match &node.kind {
        NodeKind::File { .. } => repo.file_blobs(index, &node.kind),
        _ => Err(RepoError::Invalid("not a file".into())),
    }
}

/// A directory of the target, reached from the target root one name at a time.
struct DirRec {
    /// Names below the target root.
    names: Vec<Vec<u8>>,
    /// Shown path, ending in `/` (empty for the root).
    shown: String,
    /// Metadata to restore at the end (`None` for the root and for `--include` ancestors).
    meta: Option<Node>,
}

/// A file or symbolic link to create in directory `dir`.
struct Job {
    dir: usize,
    name: Vec<u8>,
    shown: String,
    node: Node,
    /// The data blob ids of a database whose content lists were expanded while the trees were
    /// fetched ahead ([`Plan::prefetch`]), taken when the file starts; otherwise read then.
    content: Mutex<Option<Vec<BlobId>>>,
}

/// Restores `snapshot` into `target`.
///
/// `target` is created if missing. It may itself be a symbolic link (it is the user's choice
/// and is followed once); nothing below it is ever reached through a link.
pub fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    target: &Path,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreOutcome> {
    let downloaded_before = repo.storage.transfers().read_bytes;
    // The index loads while the other locks are listed (one round trip less before the first
    // byte of a database).
    let (_guard, index) = lock::lock_while(repo, "restore", false, || repo.load_index())?;
    for (id, why) in &index.damaged {
        progress.warn(&format!(
            "index {} is damaged and ignored: {why}",
            id.short()
        ));
    }
    let include = include_components(opts.include.as_deref())?;
    let root = open_target(target)?;
    let mut out = RestoreOutcome::default();
    let root_tree = match repo.load_tree(&index, &snapshot.tree) {
        Ok(t) => t,
        // Listed like a damaged subdirectory, so the caller reports it with the snapshot id.
        Err(e @ RepoError::Corrupted { .. }) => {
            out.failed
                .push(("/".into(), format!("snapshot not restored: {e}")));
            return Ok(out);
        }
        Err(e) => return Err(e),
    };
    let mut plan = Plan::new(repo, &index, snapshot.tree, opts, &mut out);
    plan.tree(&root_tree, 0, root.as_fd(), include.as_deref())?;
    let Plan {
        dirs, files, links, ..
    } = plan;
    if let Some(inc) = &include {
        check_include_found(inc, &dirs, &files, &links, &out)?;
    }

    let steps = Steps {
        repo,
        index: &index,
        root: root.as_fd(),
        dirs: &dirs,
        target,
        opts,
        progress,
    };
    // 1. Files: the databases' folders first, then the rest in tree order (rule 11).
    steps.files(&files, &mut out)?;
    // 2. Symbolic links, once nothing else will be written beneath any name.
    steps.links(&links, &mut out);
    // 3. Directory metadata last, deepest first, so writing entries does not change it again
    // (and a read-only directory is filled before it becomes read-only).
    steps.dir_metadata(&mut out);
    out.failed.sort();
    out.skipped.sort();
    out.downloaded_bytes = repo.storage.transfers().read_bytes - downloaded_before;
    Ok(out)
}

/// The components of `--include`, or `None` without it; anything but a relative path inside
/// the snapshot is refused (`.` components are dropped).
fn include_components(include: Option<&Path>) -> Result<Option<Vec<Vec<u8>>>> {
    let Some(p) = include else { return Ok(None) };
    p.components()
        .map(|c| match c {
            Component::Normal(s) => Ok(s.as_bytes().to_vec()),
            Component::CurDir => Ok(Vec::new()),
            _ => Err(RepoError::Invalid(format!(
                "--include {}: give a relative path inside the snapshot, like chats/Media",
                p.display()
            ))),
        })
        .filter(|c| !matches!(c, Ok(v) if v.is_empty()))
        .collect::<Result<_>>()
        .map(Some)
}

/// Creates and opens the target folder (following it if it is a link: the user named it) and
/// locks it, so that no other restore writes into it meanwhile.
fn open_target(target: &Path) -> Result<OwnedFd> {
    std::fs::create_dir_all(target)
        .map_err(|e| RepoError::io("creating the restore target", target, e))?;
    let root = rfs::open(
        target,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RepoError::io("opening the restore target", target, e.into()))?;
    // One restore per target at a time (rule 12): the lock dies with its process, so a killed
    // restore's leftovers are removable by the next run, and never a live run's.
    match rfs::flock(&root, rfs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(Errno::WOULDBLOCK) => {
            return Err(RepoError::Invalid(format!(
                "another restore is writing into {}; wait for it to finish (or stop it) and \
                 run this one again: it continues where the other stopped",
                target.display()
            )));
        }
        // A file system without locks: restore anyway.
        Err(_) => {}
    }
    Ok(root)
}

/// Refuses an `--include` path that named nothing in the snapshot (nothing planned, nothing
/// listed as failed or skipped).
fn check_include_found(
    inc: &[Vec<u8>],
    dirs: &[DirRec],
    files: &[Job],
    links: &[Job],
    out: &RestoreOutcome,
) -> Result<()> {
    if files.is_empty()
        && links.is_empty()
        && dirs.iter().all(|d| d.meta.is_none())
        && out.failed.is_empty()
        && out.skipped.is_empty()
    {
        return Err(RepoError::Invalid(format!(
            "--include {}: no such path in the snapshot",
            String::from_utf8_lossy(&inc.join(&b'/'))
        )));
    }
    Ok(())
}

/// What the steps after planning (files, links, directory metadata) share.
struct Steps<'a> {
    repo: &'a Repository,
    index: &'a Index,
    /// The target folder, open.
    root: BorrowedFd<'a>,
    /// The planned directories ([`Plan::dirs`]).
    dirs: &'a [DirRec],
    target: &'a Path,
    opts: &'a RestoreOptions,
    progress: &'a dyn Progress,
}

impl Steps<'_> {
    /// Step 1: writes the files, first every database's folder (then
    /// [`RestoreEvent::MessagesReady`]), then the rest in tree order (rule 11). Fails with
    /// [`RepoError::Cancelled`] when the caller cancels between the two.
    fn files(&self, files: &[Job], out: &mut RestoreOutcome) -> Result<()> {
        let database_dirs: HashSet<usize> = files
            .iter()
            .filter(|j| is_database(&j.node))
            .map(|j| j.dir)
            .collect();
        let (first, rest): (Vec<usize>, Vec<usize>) =
            (0..files.len()).partition(|&i| database_dirs.contains(&files[i].dir));
        let readers = self
            .opts
            .readers
            .unwrap_or_else(|| default_readers(self.repo));
        self.progress.restore_event(&RestoreEvent::Started {
            files: files.len() as u64,
            bytes: files.iter().map(|j| file_size(&j.node)).sum(),
            databases: files.iter().filter(|j| is_database(&j.node)).count() as u64,
            cleaned: out.cleaned,
        });
        let writer = Writer {
            repo: self.repo,
            index: self.index,
            root: self.root,
            dirs: self.dirs,
            files,
            overwrite: self.opts.overwrite,
            target: self.target,
            progress: self.progress,
            readers: readers.max(1),
            out: Mutex::new(out),
            placer: Mutex::new(None),
            syncing: AtomicBool::new(false),
            buffers: Mutex::new(Vec::new()),
        };
        let failed_before = writer.failed();
        writer.write(&first, true);
        let databases = first
            .iter()
            .filter(|&&i| is_database(&files[i].node))
            .count() as u64;
        let failed_first = (writer.failed() - failed_before) as u64;
        self.progress.restore_event(&RestoreEvent::MessagesReady {
            databases: databases.saturating_sub(
                first
                    .iter()
                    .filter(|&&i| is_database(&files[i].node) && writer.has_failed(&files[i].shown))
                    .count() as u64,
            ),
            failed: failed_first,
        });
        if self.progress.cancelled() {
            return Err(RepoError::Cancelled);
        }
        writer.write(&rest, self.opts.durable);
        if self.progress.cancelled() {
            return Err(RepoError::Cancelled);
        }
        Ok(())
    }

    /// Step 2: creates the symbolic links; one that fails is warned about and listed.
    fn links(&self, links: &[Job], out: &mut RestoreOutcome) {
        for job in links {
            match restore_symlink(self.root, &self.dirs[job.dir], job, self.opts.overwrite) {
                Ok(()) => out.files += 1,
                Err(e) => {
                    self.progress.warn(&format!("{}: {e}", job.shown));
                    out.failed.push((job.shown.clone(), e.to_string()));
                }
            }
        }
    }

    /// Step 3: sets the directories' mode and time through the open directory, deepest first.
    fn dir_metadata(&self, out: &mut RestoreOutcome) {
        for d in self.dirs.iter().rev() {
            let Some(node) = &d.meta else { continue };
            // Best effort, like the file metadata: a failure leaves default permissions.
            if let Ok(fd) = open_dir(self.root, &d.names) {
                let _ = rfs::fchmod(&fd, mode_of(node));
                let _ = rfs::futimens(&fd, &times_of(node));
                out.dirs += 1;
            }
        }
    }
}

/// On a cloud service, how many more readers than [`RestoreOptions::readers`] may fetch small
/// units at once (their memory stays that of `readers` regions of [`READ_RUN`] bytes). At 31
/// daily snapshots behind 50 ms round trips, the latest database's pages lay in 63 units of
/// 31 packs: 6 readers took them in 55 requests one after another; 4 per reader (24) in two
/// rounds; 16 per reader (96) in one, as at 2 snapshots.
const SMALL_READS_PER_READER: usize = 16;

/// Readers when [`RestoreOptions::readers`] is not set: one per core (at least 2, at most 8) on
/// a local folder, 6 on a cloud backend (round trips, not CPU, bound those). Each reader holds
/// a region of up to [`READ_RUN`] bytes and its plaintexts: from S3 on loopback 4, 6 and 8
/// readers restored the benchmark preset equally fast (1.3–1.5 s), at 78–88, 92–100 and
/// 120–122 MB of peak RSS; 6 keeps more requests in flight for a distant service.
fn default_readers(repo: &Repository) -> usize {
    match repo.storage.backend() {
        "fs" | "memory" => std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 8),
        _ => 6,
    }
}

fn is_database(node: &Node) -> bool {
    matches!(
        node.kind,
        NodeKind::File {
            sqlite_snapshot: true,
            ..
        }
    )
}

fn file_size(node: &Node) -> u64 {
    match node.kind {
        NodeKind::File { size, .. } => size,
        _ => 0,
    }
}

/// Step 0: walks the trees, creates the directories, and queues files and links.
struct Plan<'a> {
    repo: &'a Repository,
    index: &'a Index,
    overwrite: bool,
    dirs: Vec<DirRec>,
    files: Vec<Job>,
    links: Vec<Job>,
    /// Tree ids from the root to the tree being planned.
    ancestors: Vec<BlobId>,
    /// Entries planned so far, and the bound ([`RestoreOptions::max_entries`]).
    entries: usize,
    max_entries: usize,
    /// Subdirectory trees fetched ahead with their siblings ([`Plan::prefetch`]), until used,
    /// with their plaintext sizes, and the sum of those (at most [`PREFETCH_BYTES`]).
    prefetched: HashMap<BlobId, (Tree, u64)>,
    prefetched_bytes: u64,
    /// Databases' content lists expanded during [`Plan::prefetch`] (by their list ids).
    contents: HashMap<Vec<BlobId>, Vec<BlobId>>,
    out: &'a mut RestoreOutcome,
}

/// Most plaintext bytes of trees fetched ahead and not yet walked ([`Plan::prefetch`]).
const PREFETCH_BYTES: u64 = 16 << 20;

/// Most databases whose content lists [`Plan::prefetch`] expands ahead (each on a thread, its
/// ids held until the file starts): a phone has a handful, and a hostile tree that marks
/// thousands of files as databases gets no more threads than this.
const PREFETCH_DATABASES: usize = 8;

/// Most page ids [`Plan::prefetch`] holds ahead (32 bytes each: 128 MiB; a 4.5 GB database
/// of 4 KiB pages has 1.1 million). Each database is expanded only within what its stated size
/// allows (pages of at least 512 bytes), so a tree that understates sizes cannot make the
/// read-ahead hold more; a database that does not fit is expanded when it starts, as without
/// read-ahead.
const PREFETCH_IDS: usize = 1 << 22;

impl<'a> Plan<'a> {
    /// A plan with only the target root, for the snapshot whose root tree is `root_tree`.
    fn new(
        repo: &'a Repository,
        index: &'a Index,
        root_tree: BlobId,
        opts: &RestoreOptions,
        out: &'a mut RestoreOutcome,
    ) -> Self {
        Plan {
            repo,
            index,
            overwrite: opts.overwrite,
            dirs: vec![DirRec {
                names: Vec::new(),
                shown: String::new(),
                meta: None,
            }],
            files: Vec::new(),
            links: Vec::new(),
            ancestors: vec![root_tree],
            entries: 0,
            max_entries: opts.max_entries.unwrap_or(MAX_ENTRIES),
            prefetched: HashMap::new(),
            prefetched_bytes: 0,
            contents: HashMap::new(),
            out,
        }
    }

    /// Fetches the trees below `tree` ahead, a level at a time: its subdirectories' trees in
    /// one go, then all of theirs, and so on (neighbouring blobs in one read, the reads of one
    /// level in parallel: FORMAT §12.1), so that walking a snapshot costs one storage round trip
    /// per level of depth, not one per directory (on a phone's network, each is tens of
    /// milliseconds before the first byte of a file is restored; and the trees of a snapshot
    /// lie in as many packs as the days that changed them). Only while the trees fetched ahead
    /// and not yet walked stay within [`PREFETCH_BYTES`] of plaintext (a level that does not fit
    /// is left to the walk, which loads and checks each subtree itself, as it does after any
    /// failure here). Returns the ids fetched, for [`Plan::drop_prefetched`] once the directory
    /// is walked.
    ///
    /// The content lists of the databases met on the way (FORMAT §10.1: a database of more than
    /// 256 pages keeps its page ids in lists, one read per list level) are expanded meanwhile,
    /// each on a thread of its own, so that their reads overlap the next levels' instead of
    /// coming after the walk, on the way to *messages ready* (two round trips of a 100 MB
    /// database).
    fn prefetch(&mut self, tree: &Tree, include: Option<&[Vec<u8>]>) -> Vec<BlobId> {
        let mut fetched: Vec<BlobId> = Vec::new();
        if include.is_some() {
            return fetched;
        }
        let level = self.unfetched_subtrees(&tree.nodes, &HashSet::new());
        // A single subdirectory costs the walk one read either way.
        if level.len() < 2 {
            return fetched;
        }
        let (repo, index) = (self.repo, self.index);
        // Each list set once (the same database can be in several folders).
        let mut seen: HashSet<Vec<BlobId>> = self.contents.keys().cloned().collect();
        let mut ids_left = PREFETCH_IDS.saturating_sub(self.contents.values().map(Vec::len).sum());
        let expanded = std::thread::scope(|s| {
            let mut walks = Vec::new();
            let mut start = |nodes: &[Node]| {
                for node in nodes.iter().filter(|n| is_database(n)) {
                    let NodeKind::File { lists, size, .. } = &node.kind else {
                        continue;
                    };
                    let most = usize::try_from(size.div_ceil(512)).unwrap_or(usize::MAX);
                    if !lists.is_empty()
                        && most <= ids_left
                        && seen.len() < PREFETCH_DATABASES
                        && seen.insert(lists.clone())
                    {
                        ids_left -= most;
                        let lists = lists.clone();
                        walks.push(s.spawn(move || {
                            let content = repo.walk_lists_at_most(index, &lists, |_| true, most);
                            (lists, content)
                        }));
                    }
                }
            };
            self.prefetch_levels(level, &mut fetched, &mut start);
            walks
                .into_iter()
                .filter_map(|w| w.join().ok())
                .collect::<Vec<_>>()
        });
        // A list that does not expand is left to the file's start, which reports why.
        for (lists, content) in expanded {
            if let Ok(c) = content {
                self.contents.insert(lists, c);
            }
        }
        fetched
    }

    /// The level loop of [`Plan::prefetch`]: `start` is shown each level's nodes as they arrive.
    fn prefetch_levels(
        &mut self,
        mut level: Vec<BlobId>,
        fetched: &mut Vec<BlobId>,
        start: &mut dyn FnMut(&[Node]),
    ) {
        while !level.is_empty() {
            let mut sizes: Vec<u64> = Vec::with_capacity(level.len());
            let mut bytes = 0u64;
            for id in &level {
                let Some(loc) = self.index.get(id) else {
                    return;
                };
                bytes += u64::from(loc.raw_length);
                sizes.push(u64::from(loc.raw_length));
            }
            if self.prefetched_bytes + bytes > PREFETCH_BYTES {
                return;
            }
            let Ok(blobs) = self.repo.read_blobs(self.index, BlobType::Tree, &level) else {
                return;
            };
            let mut trees: Vec<(BlobId, Tree, u64)> = Vec::with_capacity(level.len());
            let mut parted: Vec<(BlobId, Vec<BlobId>)> = Vec::new();
            for ((id, size), plain) in level.iter().zip(sizes).zip(blobs) {
                match objects::parse_tree_blob(&plain) {
                    Ok(TreeBlob::Listing(t)) => trees.push((*id, t, size)),
                    Ok(TreeBlob::Parts(parts)) => parted.push((*id, parts)),
                    Err(_) => {}
                }
            }
            // Large folders in parts (FORMAT §10.2): the parts of all of this level's, read
            // together (one more round trip for the level, not one per folder).
            let left = PREFETCH_BYTES.saturating_sub(self.prefetched_bytes + bytes);
            trees.extend(self.prefetch_parts(&parted, left));
            let mut next: Vec<BlobId> = Vec::new();
            let mut queued: HashSet<BlobId> = HashSet::new();
            for (id, t, size) in trees {
                start(&t.nodes);
                for sub in self.unfetched_subtrees(&t.nodes, &queued) {
                    queued.insert(sub);
                    next.push(sub);
                }
                self.prefetched.insert(id, (t, size));
                self.prefetched_bytes += size;
            }
            fetched.extend_from_slice(&level);
            next.retain(|id| !self.prefetched.contains_key(id));
            level = next;
        }
    }

    /// The trees in parts `parted` (tree id, part ids), joined, with the plaintext bytes of
    /// their parts: all parts read with one [`Repository::read_blobs`], if they fit in `left`
    /// bytes of the budget. A tree whose parts do not check out is left to the walk, which
    /// loads it itself and reports why.
    fn prefetch_parts(
        &self,
        parted: &[(BlobId, Vec<BlobId>)],
        left: u64,
    ) -> Vec<(BlobId, Tree, u64)> {
        let mut out = Vec::new();
        let mut ids: Vec<BlobId> = Vec::new();
        let mut seen: HashSet<BlobId> = HashSet::new();
        let mut bytes = 0u64;
        for p in parted.iter().flat_map(|(_, parts)| parts) {
            let Some(loc) = self.index.get(p) else {
                return out;
            };
            if seen.insert(*p) {
                ids.push(*p);
                bytes += u64::from(loc.raw_length);
            }
        }
        if ids.is_empty() || bytes > left {
            return out;
        }
        let Ok(plains) = self.repo.read_blobs(self.index, BlobType::Tree, &ids) else {
            return out;
        };
        let plain: HashMap<BlobId, Vec<u8>> = ids.into_iter().zip(plains).collect();
        for (id, parts) in parted {
            let size = parts.iter().map(|p| plain[p].len() as u64).sum();
            if let Ok(t) = join_parts(id, parts, parts.iter().map(|p| plain[p].as_slice())) {
                out.push((*id, t, size));
            }
        }
        out
    }

    /// The subdirectory trees among `nodes` neither fetched ahead nor in `queued`, once each.
    fn unfetched_subtrees(&self, nodes: &[Node], queued: &HashSet<BlobId>) -> Vec<BlobId> {
        let mut ids: Vec<BlobId> = Vec::new();
        let mut seen: HashSet<BlobId> = HashSet::new();
        for node in nodes {
            if let NodeKind::Dir { subtree } = &node.kind
                && !self.prefetched.contains_key(subtree)
                && !queued.contains(subtree)
                && seen.insert(*subtree)
            {
                ids.push(*subtree);
            }
        }
        ids
    }

    /// Takes a tree fetched ahead, if it was.
    fn take_prefetched(&mut self, id: &BlobId) -> Option<Tree> {
        let (tree, size) = self.prefetched.remove(id)?;
        self.prefetched_bytes -= size;
        Some(tree)
    }

    /// Forgets the trees fetched ahead for a directory that were not walked (skipped or refused
    /// entries), so that they do not count against the budget of the next directories.
    fn drop_prefetched(&mut self, ids: &[BlobId]) {
        for id in ids {
            let _ = self.take_prefetched(id);
        }
    }

    /// Plans the entries of `tree`, the content of directory `dir` (open as `dir_fd`), after
    /// removing the leftovers of a killed restore there; `include`: the rest of the
    /// `--include` path below this directory.
    fn tree(
        &mut self,
        tree: &Tree,
        dir: usize,
        dir_fd: BorrowedFd<'_>,
        include: Option<&[Vec<u8>]>,
    ) -> Result<()> {
        let shown = self.dirs[dir].shown.clone();
        self.out.cleaned += clean_partials(dir_fd);
        let ahead = self.prefetch(tree, include);
        let walked = self.walk_entries(tree, dir, dir_fd, include, &shown);
        self.drop_prefetched(&ahead);
        walked
    }

    /// The entries of [`Plan::tree`], each planned or refused in turn.
    fn walk_entries(
        &mut self,
        tree: &Tree,
        dir: usize,
        dir_fd: BorrowedFd<'_>,
        include: Option<&[Vec<u8>]>,
        shown: &str,
    ) -> Result<()> {
        for (node, refusal) in tree.nodes.iter().zip(refusals(tree)) {
            let name = &node.name.0;
            let shown_child = format!("{shown}{}", String::from_utf8_lossy(name));
            if self.over_budget(&shown_child) {
                return Ok(());
            }
            // Unsafe names are reported even outside `--include`: the tree is damaged.
            if let Some(r @ Refusal::UnsafeName(_)) = &refusal {
                self.out.failed.push((shown_child, format!("{r}; skipped")));
                continue;
            }
            let rest = match include {
                Some([first, rest @ ..]) if first == name => Some(rest),
                Some([_, ..]) => continue,
                Some([]) | None => None,
            };
            match refusal {
                Some(Refusal::Duplicate { first: false, .. }) => continue,
                Some(r @ Refusal::Journal) => {
                    self.out.skipped.push((shown_child, r.to_string()));
                    continue;
                }
                Some(r) => {
                    self.out.failed.push((shown_child, r.to_string()));
                    continue;
                }
                None => {}
            }
            let deeper = rest.filter(|r| !r.is_empty());
            match &node.kind {
                NodeKind::Dir { subtree } => {
                    self.subdir(
                        node,
                        subtree,
                        format!("{shown_child}/"),
                        dir,
                        dir_fd,
                        deeper,
                    )?;
                }
                _ if deeper.is_some() => {}
                NodeKind::File { lists, .. } => self.files.push(Job {
                    dir,
                    name: name.clone(),
                    shown: shown_child,
                    node: node.clone(),
                    content: Mutex::new(self.contents.remove(lists)),
                }),
                NodeKind::Symlink { .. } => self.links.push(Job {
                    dir,
                    name: name.clone(),
                    shown: shown_child,
                    node: node.clone(),
                    content: Mutex::new(None),
                }),
            }
        }
        Ok(())
    }

    /// Counts one entry; true when the snapshot has more than [`Plan::max_entries`] (listed
    /// once, with the entry it stopped at): the rest is not restored.
    fn over_budget(&mut self, shown_child: &str) -> bool {
        self.entries += 1;
        if self.entries > self.max_entries {
            if self.entries == self.max_entries + 1 {
                self.out.failed.push((
                    shown_child.to_owned(),
                    format!(
                        "the snapshot has more than {} entries (a hostile or broken \
                         tree); this and the remaining entries are not restored",
                        self.max_entries
                    ),
                ));
            }
            return true;
        }
        false
    }

    /// Plans the subdirectory `node` of directory `dir` (tree `subtree`, shown as `shown_dir`):
    /// refused when nested too deep or inside itself, else created (or reused) in the target
    /// and planned recursively. A directory that cannot be planned is listed, not fatal.
    fn subdir(
        &mut self,
        node: &Node,
        subtree: &BlobId,
        shown_dir: String,
        dir: usize,
        dir_fd: BorrowedFd<'_>,
        deeper: Option<&[Vec<u8>]>,
    ) -> Result<()> {
        let name = &node.name.0;
        if self.ancestors.len() >= MAX_DEPTH {
            self.out.failed.push((
                shown_dir,
                format!("directory not restored: nested deeper than {MAX_DEPTH}"),
            ));
            return Ok(());
        }
        if self.ancestors.contains(subtree) {
            self.out.failed.push((
                shown_dir,
                "directory not restored: its tree contains itself".into(),
            ));
            return Ok(());
        }
        let fetched = match self.take_prefetched(subtree) {
            Some(t) => Ok(t),
            None => self.repo.load_tree(self.index, subtree),
        };
        let sub = match fetched {
            Ok(t) => t,
            Err(e) => {
                self.out
                    .failed
                    .push((shown_dir, format!("directory not restored: {e}")));
                return Ok(());
            }
        };
        let fd = match ensure_dir(dir_fd, name, self.overwrite) {
            Ok(fd) => fd,
            Err(why) => {
                self.out.failed.push((shown_dir, why));
                return Ok(());
            }
        };
        let mut names = self.dirs[dir].names.clone();
        names.push(name.clone());
        let idx = self.dirs.len();
        self.dirs.push(DirRec {
            names,
            shown: shown_dir,
            meta: deeper.is_none().then(|| node.clone()),
        });
        self.ancestors.push(*subtree);
        self.tree(&sub, idx, fd.as_fd(), deeper)?;
        self.ancestors.pop();
        Ok(())
    }
}

/// Opens the directory `name` in `parent` without following a link.
fn open_child_dir(parent: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        parent,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens a directory below the target root, one name at a time, following no link.
fn open_dir(root: BorrowedFd<'_>, names: &[Vec<u8>]) -> rustix::io::Result<OwnedFd> {
    let mut fd = open_child_dir(root, b".")?;
    for n in names {
        fd = open_child_dir(fd.as_fd(), n)?;
    }
    Ok(fd)
}

fn file_type(st: &rfs::Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode as _)
}

/// What an existing entry is, for messages.
fn describe(t: FileType) -> &'static str {
    match t {
        FileType::Symlink => "a symbolic link",
        FileType::RegularFile => "a file",
        FileType::Directory => "a directory",
        _ => "a special file",
    }
}

/// The entry `name` in `dir`, not following a link; `None` if there is none.
fn entry_type(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<Option<FileType>> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(file_type(&st))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Makes `name` in `parent` a real directory and opens it. An existing directory is reused;
/// anything else in its place is an error, or with `overwrite` is removed (never followed).
fn ensure_dir(
    parent: BorrowedFd<'_>,
    name: &[u8],
    overwrite: bool,
) -> std::result::Result<OwnedFd, String> {
    let fail = |what: &str, e: Errno| format!("directory not restored: {what}: {e}");
    match entry_type(parent, name).map_err(|e| fail("inspecting the target", e))? {
        None | Some(FileType::Directory) => {}
        Some(t) if overwrite => {
            rfs::unlinkat(parent, name, AtFlags::empty())
                .map_err(|e| fail(&format!("removing {} in its place", describe(t)), e))?;
        }
        Some(t) => {
            return Err(format!(
                "directory not restored: {} is in its place in the target and is not followed \
                 (use --overwrite to replace it)",
                describe(t)
            ));
        }
    }
    match rfs::mkdirat(parent, name, Mode::from_raw_mode(0o777)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(fail("creating it", e)),
    }
    // Fails (ELOOP/ENOTDIR) rather than follows if a link appeared in the meantime.
    open_child_dir(parent, name).map_err(|e| fail("opening it", e))
}

/// Refuses early (before any download) when `name` exists and may not be replaced.
fn check_free(dir: BorrowedFd<'_>, name: &[u8], overwrite: bool) -> Result<()> {
    match entry_type(dir, name) {
        Ok(None) => Ok(()),
        Ok(Some(t)) if !overwrite => Err(RepoError::Invalid(format!(
            "{} already exists in the target (use --overwrite to replace it)",
            describe(t)
        ))),
        Ok(Some(_)) => Ok(()),
        Err(e) => Err(RepoError::Invalid(format!("inspecting the target: {e}"))),
    }
}

/// A fresh random temporary name.
fn partial_name() -> Result<String> {
    let mut r = [0u8; 8];
    OsRng
        .try_fill_bytes(&mut r)
        .map_err(|e| RepoError::Invalid(format!("no randomness for a temporary name: {e}")))?;
    Ok(format!("{PARTIAL_PREFIX}{}", hex::encode(r)))
}

/// Calls `create` with fresh random names until one does not exist yet.
fn create_partial<T>(mut create: impl FnMut(&str) -> rustix::io::Result<T>) -> Result<(String, T)> {
    let mut tries = 0;
    loop {
        let name = partial_name()?;
        match create(&name) {
            Ok(t) => return Ok((name, t)),
            Err(Errno::EXIST) if tries < 8 => tries += 1,
            Err(e) => {
                return Err(RepoError::Invalid(format!(
                    "creating a temporary entry in the target: {e}"
                )));
            }
        }
    }
}

/// Renames the temporary `tmp` to `name` in `dir`. Without `overwrite` an existing `name` is
/// never replaced (atomically where the file system supports it); with it, a file or link in
/// the way is replaced (the link itself, not its target), an empty directory removed first, a
/// non-empty directory an error.
fn place(dir: BorrowedFd<'_>, tmp: &str, name: &[u8], overwrite: bool) -> Result<()> {
    let io = |e: Errno| RepoError::Invalid(format!("renaming into place: {e}"));
    let exists = || {
        RepoError::Invalid("already exists in the target (use --overwrite to replace it)".into())
    };
    if overwrite {
        if entry_type(dir, name).map_err(io)? == Some(FileType::Directory) {
            match rfs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
                Ok(()) => {}
                Err(Errno::NOTEMPTY | Errno::EXIST) => {
                    return Err(RepoError::Invalid(
                        "a non-empty directory is in its place in the target; not replaced".into(),
                    ));
                }
                Err(e) => return Err(io(e)),
            }
        }
        return rfs::renameat(dir, tmp, dir, name).map_err(io);
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    match rfs::renameat_with(dir, tmp, dir, name, rfs::RenameFlags::NOREPLACE) {
        Ok(()) => return Ok(()),
        Err(Errno::EXIST) => return Err(exists()),
        // Not supported by this file system or kernel: check, then rename.
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {}
        Err(e) => return Err(io(e)),
    }
    if entry_type(dir, name).map_err(io)?.is_some() {
        return Err(exists());
    }
    rfs::renameat(dir, tmp, dir, name).map_err(io)
}

/// Before a SQLite database `name` is placed: removes its journals (`-wal`, `-shm`,
/// `-journal`) from `dir`, so that a stale one is never replayed over the restored copy. Files
/// and links are unlinked (never followed); anything else there is an error.
fn clear_journals(dir: BorrowedFd<'_>, name: &[u8]) -> Result<()> {
    for suffix in [&b"-wal"[..], b"-shm", b"-journal"] {
        let journal = [name, suffix].concat();
        let shown = String::from_utf8_lossy(&journal).into_owned();
        let fail = |e: Errno| RepoError::Invalid(format!("removing the stale {shown}: {e}"));
        let found = match entry_type(dir, &journal) {
            // A name that long cannot exist.
            Err(Errno::NAMETOOLONG) => None,
            r => r.map_err(fail)?,
        };
        match found {
            None => {}
            Some(FileType::RegularFile | FileType::Symlink) => {
                rfs::unlinkat(dir, journal.as_slice(), AtFlags::empty()).map_err(fail)?;
            }
            Some(t) => {
                return Err(RepoError::Invalid(format!(
                    "{} named {shown} is beside the database in the target; remove it and retry \
                     (a journal there would be replayed over the restored database)",
                    describe(t)
                )));
            }
        }
    }
    Ok(())
}

/// The mode a restored entry gets: the stored permission and sticky bits, never set-user-id or
/// set-group-id (a snapshot written by someone else who holds the key must not be able to plant
/// a setuid program when root restores it; chat data never needs them).
fn mode_of(node: &Node) -> Mode {
    Mode::from_raw_mode((node.mode & 0o1777) as _)
}

fn times_of(node: &Node) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: node.mtime_s as _,
            tv_nsec: node.mtime_ns.min(999_999_999) as _,
        },
    }
}

/// Removes the temporary entries (files and links named [`PARTIAL_PREFIX`]…) that a killed
/// restore left in `dir`, never following a link; returns how many. Only called while holding
/// the target's lock, so none of them belongs to a live restore.
fn clean_partials(dir: BorrowedFd<'_>) -> u64 {
    let Ok(entries) = rfs::Dir::read_from(dir) else {
        return 0;
    };
    let mut names = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_bytes();
        if name.starts_with(PARTIAL_PREFIX.as_bytes()) {
            names.push(name.to_vec());
        }
    }
    let mut removed = 0;
    for name in names {
        // A directory of that name is not ours (we never make one): unlinkat fails on it.
        if let Ok(Some(FileType::RegularFile | FileType::Symlink)) = entry_type(dir, &name)
            && rfs::unlinkat(dir, name.as_slice(), AtFlags::empty()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Step 1: writes files (module documentation: the planner).
struct Writer<'a, 'o> {
    repo: &'a Repository,
    index: &'a Index,
    root: BorrowedFd<'a>,
    dirs: &'a [DirRec],
    files: &'a [Job],
    overwrite: bool,
    target: &'a Path,
    progress: &'a dyn Progress,
    readers: usize,
    out: Mutex<&'o mut RestoreOutcome>,
    /// Where a file goes once every blob of it verified: the placer thread of the running
    /// [`Writer::write`] syncs, stamps and renames it, so that no reader waits for the disk.
    placer: Mutex<Option<mpsc::Sender<ToPlacer>>>,
    /// Whether the running [`Writer::write`] syncs its files: then the placer also writes a
    /// file's data back while it is being written ([`FLUSH_EVERY`]).
    syncing: AtomicBool,
    /// The read and plaintext buffers of the readers that keep theirs (one per core), handed
    /// from batch to batch: a batch's readers are new threads, and buffers freed and
    /// allocated again by each (glibc keeps freed ones in per-thread arenas) grew a 4.5 GB
    /// database's restore by ~140 MB over its 17 batches.
    buffers: Mutex<Vec<Buffers>>,
}

/// A file being written under its temporary name.
struct Open {
    /// Index into [`Writer::files`].
    job: usize,
    dir: Arc<OwnedFd>,
    tmp: String,
    fd: OwnedFd,
    /// Blobs not yet written (or failed); the reader that takes it to 0 finishes the file.
    remaining: AtomicUsize,
    /// Bytes written since the placer last wrote this file back (files to be synced only).
    unflushed: AtomicU64,
    /// The failure at the lowest file offset, if any (the one reported, whatever the order the
    /// readers met them in).
    error: Mutex<Option<(u64, String)>>,
}

impl Open {
    fn fail(&self, offset: u64, why: String) {
        let mut e = self.error.lock().expect("file error");
        if e.as_ref().is_none_or(|(o, _)| offset < *o) {
            *e = Some((offset, why));
        }
    }
}

/// What the placer thread is asked to do.
enum ToPlacer {
    /// Sync (if the write syncs), stamp and rename a file whose every blob verified.
    Place(Arc<Open>),
    /// Write back what was written of a file to be synced so far (`fdatasync`), so that its
    /// final sync waits for little.
    Flush(Arc<Open>),
}

/// A file to be synced is written back by the placer every this many bytes written: the
/// pages of a database restored from several days of backups arrive scattered, in runs too
/// short for [`start_writeback`], and its final `fsync` waited 80–100 ms for all of them, with
/// the cores idle, before *messages ready*.
const FLUSH_EVERY: u64 = 16 << 20;

/// One blob to place at `offset` of the batch's file `file`.
struct Piece {
    loc: BlobLocation,
    id: BlobId,
    file: u32,
    offset: u64,
}

/// Most slices in one positioned write (`IOV_MAX` is 1024 on Linux).
const WRITE_SLICES: usize = 1024;

/// A file whose blobs did not all fit into one batch: it goes on in the next.
struct Carry {
    open: Arc<Open>,
    ids: Vec<BlobId>,
    next: usize,
    offset: u64,
}

impl Writer<'_, '_> {
    fn failed(&self) -> usize {
        self.out.lock().expect("outcome").failed.len()
    }

    fn has_failed(&self, shown: &str) -> bool {
        self.out
            .lock()
            .expect("outcome")
            .failed
            .iter()
            .any(|(p, _)| p == shown)
    }

    fn report_failure(&self, job: &Job, e: &str) {
        self.progress.warn(&format!("{}: {e}", job.shown));
        self.progress.restore_event(&RestoreEvent::Failed {
            path: job.shown.clone(),
            error: e.to_string(),
        });
        self.out
            .lock()
            .expect("outcome")
            .failed
            .push((job.shown.clone(), e.to_string()));
    }

    fn report_done(&self, job: &Job, written: u64, kept: bool) {
        let size = file_size(&job.node);
        {
            let mut o = self.out.lock().expect("outcome");
            o.files += 1;
            o.bytes += written;
            o.kept += u64::from(kept);
        }
        self.progress.restore_event(&RestoreEvent::File {
            path: job.shown.clone(),
            bytes: size,
            database: is_database(&job.node),
            kept,
        });
    }

    /// Writes the files `order` (indices into `files`), batch after batch, and returns when
    /// every one of them is placed (or failed); with `sync`, each is synced before its rename.
    ///
    /// A file whose blobs all verified goes to a placer thread, which syncs it, sets its
    /// metadata and renames it into place (`place_file`), one file after the other, while the
    /// readers go on with the next regions: the `fsync` waits for the disk, and a reader that
    /// waited there would leave its core idle (it was a third of a restore's time on a local
    /// folder, the readers doing their work on one core in two).
    fn write(&self, order: &[usize], sync: bool) {
        let (tx, rx) = mpsc::channel::<ToPlacer>();
        *self.placer.lock().expect("placer") = Some(tx);
        self.syncing.store(sync, Ordering::Relaxed);
        std::thread::scope(|s| {
            s.spawn(move || {
                for job in rx {
                    match job {
                        ToPlacer::Place(open) => self.place_verified(&open, sync),
                        // Only a head start: the final sync reports any error.
                        ToPlacer::Flush(open) => {
                            let _ = rfs::fdatasync(&open.fd);
                        }
                    }
                }
            });
            self.write_batches(order);
            // The last sender: the placer ends once it has placed what is queued.
            *self.placer.lock().expect("placer") = None;
        });
    }

    /// Writes the files `order` batch after batch: a planner thread starts the files of the
    /// next batch (opens their temporary files, keeps the verified ones) while the readers write
    /// the current one. Creating a file is a single thread's work in the kernel (on ext4 after
    /// many deletions, its inode search took 80–100 ms per batch of 256 files, with the other
    /// core idle); at most two batches of files are open at once.
    fn write_batches(&self, order: &[usize]) {
        let (tx, rx) = mpsc::sync_channel::<(Vec<Arc<Open>>, Vec<Piece>)>(0);
        std::thread::scope(|s| {
            s.spawn(move || self.plan_batches(order, &tx));
            for (opens, pieces) in rx {
                self.run_batch(&opens, pieces);
            }
        });
    }

    /// Starts the files `order` and hands them to `tx` in batches of at most [`BATCH_FILES`]
    /// files and [`BATCH_BLOBS`] blobs (a file with more blobs goes on in the next batch).
    fn plan_batches(&self, order: &[usize], tx: &mpsc::SyncSender<(Vec<Arc<Open>>, Vec<Piece>)>) {
        let mut queue = order.iter().copied();
        let mut carry: Option<Carry> = None;
        loop {
            if self.progress.cancelled() {
                break;
            }
            let mut opens: Vec<Arc<Open>> = Vec::new();
            let mut pieces: Vec<Piece> = Vec::new();
            let mut dir_fds: HashMap<usize, Arc<OwnedFd>> = HashMap::new();
            while pieces.len() < BATCH_BLOBS && opens.len() < BATCH_FILES {
                let mut c = match carry.take() {
                    Some(c) => c,
                    None => {
                        let Some(f) = queue.next() else { break };
                        match self.start(f, &mut dir_fds) {
                            Some((open, ids)) => Carry {
                                open,
                                ids,
                                next: 0,
                                offset: 0,
                            },
                            None => continue,
                        }
                    }
                };
                let file = opens.len() as u32;
                opens.push(c.open.clone());
                let end = (c.next + (BATCH_BLOBS - pieces.len())).min(c.ids.len());
                for id in &c.ids[c.next..end] {
                    let loc = self
                        .index
                        .get(id)
                        .expect("every blob was looked up when the file started");
                    pieces.push(Piece {
                        loc,
                        id: *id,
                        file,
                        offset: c.offset,
                    });
                    c.offset += u64::from(loc.raw_length);
                }
                c.next = end;
                if c.next < c.ids.len() {
                    carry = Some(c);
                }
            }
            if pieces.is_empty() || tx.send((opens, pieces)).is_err() {
                break;
            }
        }
    }

    /// Starts file `f`: keeps it when the target already holds it verified, refuses it when
    /// something else is in its way, otherwise opens its temporary file. Returns the open file
    /// and its blob ids when there is something to write.
    fn start(
        &self,
        f: usize,
        dir_fds: &mut HashMap<usize, Arc<OwnedFd>>,
    ) -> Option<(Arc<Open>, Vec<BlobId>)> {
        let job = &self.files[f];
        match self.try_start(f, dir_fds) {
            Ok(Started::Write(open, ids)) => Some((open, ids)),
            Ok(Started::Kept) => {
                self.report_done(job, 0, true);
                None
            }
            Ok(Started::Empty(open)) => {
                self.finish(&open);
                None
            }
            Err(e) => {
                self.report_failure(job, &e.to_string());
                None
            }
        }
    }

    fn try_start(&self, f: usize, dir_fds: &mut HashMap<usize, Arc<OwnedFd>>) -> Result<Started> {
        let job = &self.files[f];
        let NodeKind::File { size, .. } = &job.node.kind else {
            return Err(RepoError::Invalid("not a file".into()));
        };
        let dir = match dir_fds.get(&job.dir) {
            Some(d) => d.clone(),
            None => {
                let d = Arc::new(open_dir(self.root, &self.dirs[job.dir].names).map_err(|e| {
                    RepoError::Invalid(format!("opening its directory in the target: {e}"))
                })?);
                dir_fds.insert(job.dir, d.clone());
                d
            }
        };
        // Before any blob is read: something that is not a file in the way, without
        // --overwrite, is refused at once.
        let existing = entry_type(dir.as_fd(), &job.name)
            .map_err(|e| RepoError::Invalid(format!("inspecting the target: {e}")))?;
        if let Some(t) = existing
            && t != FileType::RegularFile
            && !self.overwrite
        {
            return Err(RepoError::Invalid(format!(
                "{} already exists in the target (use --overwrite to replace it)",
                describe(t)
            )));
        }
        let prefetched = job.content.lock().expect("job content").take();
        let ids = match prefetched {
            Some(c) => c,
            None => file_content(self.repo, self.index, &job.node)?,
        };
        let mut total = 0u64;
        for id in &ids {
            let loc = self.index.get(id).ok_or_else(|| {
                RepoError::corrupted(format!("data blob {}", id.short()), "not in any index")
            })?;
            total += u64::from(loc.raw_length);
        }
        if total != *size {
            return Err(RepoError::corrupted(
                "snapshot",
                format!("file content is {total} bytes, the snapshot says {size}"),
            ));
        }
        if existing == Some(FileType::RegularFile) {
            if self.verify_existing(dir.as_fd(), job, &ids, *size) {
                // Rule 7 holds for a kept database too: no journal beside it to replay.
                if is_database(&job.node) {
                    clear_journals(dir.as_fd(), &job.name)?;
                }
                return Ok(Started::Kept);
            }
            if !self.overwrite {
                return Err(RepoError::Invalid(
                    "a file already exists in the target (use --overwrite to replace it)".into(),
                ));
            }
        }
        self.progress.file(&self.target.join(&job.shown));
        let (tmp, fd) = create_partial(|n| {
            rfs::openat(
                dir.as_fd(),
                n,
                OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
        })?;
        let open = Arc::new(Open {
            job: f,
            dir,
            tmp,
            fd,
            remaining: AtomicUsize::new(ids.len()),
            unflushed: AtomicU64::new(0),
            error: Mutex::new(None),
        });
        Ok(if ids.is_empty() {
            Started::Empty(open)
        } else {
            Started::Write(open, ids)
        })
    }

    /// Whether the file `job.name` in `dir` already holds exactly the snapshot's content:
    /// a regular file (not followed if a link) of `size` bytes whose consecutive pieces, cut at
    /// the blobs' lengths, hash to the blob ids (the keyed BLAKE3 of §4.2; FORMAT §12.1 rule 12).
    /// Its mode and time are then set again through the open file.
    fn verify_existing(&self, dir: BorrowedFd<'_>, job: &Job, ids: &[BlobId], size: u64) -> bool {
        let Ok(fd) = rfs::openat(
            dir,
            job.name.as_slice(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return false;
        };
        match rfs::fstat(&fd) {
            Ok(st) if file_type(&st) == FileType::RegularFile && st.st_size as u64 == size => {}
            _ => return false,
        }
        let mut r = std::io::BufReader::with_capacity(1 << 20, std::fs::File::from(fd));
        let mut buf = Vec::new();
        for id in ids {
            let Some(loc) = self.index.get(id) else {
                return false;
            };
            buf.resize(loc.raw_length as usize, 0);
            if r.read_exact(&mut buf).is_err()
                || blob::blob_id(&self.repo.keys, BlobType::Data, &buf) != *id
            {
                return false;
            }
        }
        // Nothing may follow (the file could have grown since the stat).
        if !matches!(r.read(&mut [0u8; 1]), Ok(0)) {
            return false;
        }
        let f = r.into_inner();
        let _ = rfs::fchmod(&f, mode_of(&job.node));
        let _ = rfs::futimens(&f, &times_of(&job.node));
        true
    }

    /// Reads, verifies and writes one batch: its blobs sorted by pack and offset, grouped into
    /// regions, each region read once by one of the readers.
    fn run_batch(&self, opens: &[Arc<Open>], mut pieces: Vec<Piece>) {
        pieces.sort_unstable_by_key(|p| (p.loc.pack, p.loc.offset));
        let regions = location_runs(pieces.len(), |i| pieces[i].loc);
        // What one reader takes at a time: a region, or on a cloud service all the neighbouring
        // regions of a pack (up to STREAM_RUN bytes), fetched with one request whose response
        // is consumed region by region (Storage::read_range_stream). One request per pack
        // rather than per READ_RUN: a quarter of the requests (and of the per-request cost of
        // the service: moto reads the whole object for every ranged GET) for the same memory,
        // as only one region at a time is held.
        let units = if self.repo.storage.streams_ranges() {
            stream_units(&pieces, &regions)
        } else {
            (0..regions.len()).map(|i| i..i + 1).collect()
        };
        let next = AtomicUsize::new(0);
        // The decrypting and decompressing is CPU work: one reader per core keeps its buffers
        // from region to region (a fresh one is an mmap and its page faults each time);
        // the others, there to overlap storage round trips (6 on S3), free theirs after each
        // unit, so memory kept between units grows with the cores, not the readers.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        // On a cloud service, small units (a database's pages changed on other days lie in one
        // pack per day) are fetched by up to SMALL_READS_PER_READER times more readers: a unit
        // holds one region at a time, and the readers together no more than `readers` regions
        // of READ_RUN bytes (a ByteBudget).
        let region_bytes = |r: &Range<usize>| {
            let (first, last) = (&pieces[r.start].loc, &pieces[r.end - 1].loc);
            last.offset + u64::from(last.length) - first.offset
        };
        let unit_bytes = |u: &Range<usize>| regions[u.clone()].iter().map(region_bytes).max();
        let threads = if self.repo.storage.streams_ranges() {
            self.readers * SMALL_READS_PER_READER
        } else {
            self.readers
        };
        let budget = ByteBudget::new(self.readers as u64 * READ_RUN);
        std::thread::scope(|s| {
            for reader in 0..threads.min(units.len()) {
                let (next, units, regions, pieces) = (&next, &units, &regions, &pieces);
                let (budget, unit_bytes) = (&budget, &unit_bytes);
                s.spawn(move || {
                    let keeps = reader < cores;
                    let mut bufs = if keeps {
                        self.buffers
                            .lock()
                            .expect("buffers")
                            .pop()
                            .unwrap_or_default()
                    } else {
                        Buffers::default()
                    };
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(unit) = units.get(i) else { break };
                        let _share = budget.take(unit_bytes(unit).unwrap_or(0));
                        let regions = &regions[unit.clone()];
                        let mut stream = (regions.len() > 1)
                            .then(|| self.stream(pieces, regions))
                            .flatten();
                        for r in regions {
                            self.region(opens, &pieces[r.clone()], &mut bufs, &mut stream);
                        }
                        if !keeps {
                            bufs = Buffers::default();
                        }
                    }
                    if keeps {
                        self.buffers.lock().expect("buffers").push(bufs);
                    }
                });
            }
        });
    }

    /// One request for all of `regions` (neighbours in one pack): `None` if it cannot be made,
    /// and each region is then read on its own (with the storage's retries and its message).
    fn stream<'s>(&'s self, pieces: &[Piece], regions: &[Range<usize>]) -> Option<Streamed<'s>> {
        let first = pieces[regions.first()?.start].loc;
        let last = pieces[regions.last()?.end - 1].loc;
        let len = last.offset + u64::from(last.length) - first.offset;
        match self
            .repo
            .storage
            .read_range_stream(&layout::pack(&first.pack), first.offset, len)
        {
            Ok(Some(s)) => Some(Streamed {
                stream: s,
                at: first.offset,
            }),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!("streamed read of pack {} failed: {e}", first.pack.short());
                None
            }
        }
    }

    /// Reads `total` bytes at `first` into `sealed`: from the unit's stream while it works
    /// (a failed stream is dropped and this region and the next are read on their own), else
    /// with one ranged read. Returns how many bytes were read, or the message for the blobs.
    fn read_region(
        &self,
        first: &BlobLocation,
        total: u64,
        sealed: &mut Vec<u8>,
        stream: &mut Option<Streamed<'_>>,
    ) -> std::result::Result<usize, String> {
        if let Some(st) = stream.as_mut() {
            match st.read(first.offset, total, sealed) {
                Ok(n) => return Ok(n),
                Err(e) => {
                    tracing::debug!("streamed read of pack {} failed: {e}", first.pack.short());
                    *stream = None;
                }
            }
        }
        match self.repo.storage.read_range_into(
            &layout::pack(&first.pack),
            first.offset,
            total,
            sealed,
        ) {
            Ok(Some(n)) => Ok(n),
            Ok(None) => Err(RepoError::corrupted(
                format!("pack {}", first.pack.short()),
                "missing",
            )
            .to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Reads one region, opens and verifies each blob, writes it where it goes. `bufs` are the
    /// reader's: the region is read into `bufs.sealed` and its blobs decrypted there; the
    /// plaintexts of compressed ones are decompressed into `bufs.plain`, side by side.
    fn region(
        &self,
        opens: &[Arc<Open>],
        pieces: &[Piece],
        bufs: &mut Buffers,
        stream: &mut Option<Streamed<'_>>,
    ) {
        let first = pieces[0].loc;
        let last = pieces[pieces.len() - 1].loc;
        let total = last.offset + u64::from(last.length) - first.offset;
        let Buffers { sealed, plain } = bufs;
        let mut data = self
            .read_region(&first, total, sealed, stream)
            .map(|n| &mut sealed[..n]);
        // Open and verify every blob of the region first (each once, however many places need
        // it; blob::open_blob_into: decrypted where it was read, no copy or allocation per
        // blob), then write them sorted by file and offset: plaintexts that continue each other
        // in one file (a database's pages, which a backup packs in no strict order) go out with
        // one positioned write (`pwritev`), not one per blob.
        plain.clear();
        plain.reserve_exact(
            pieces
                .iter()
                // A stored blob is its plaintext, the compression byte and the envelope.
                .filter(|p| p.loc.length as usize != p.loc.raw_length as usize + OVERHEAD + 1)
                .map(|p| p.loc.raw_length as usize)
                .sum::<usize>()
                .min(PLAIN_RESERVE_MAX),
        );
        let mut plains: Vec<Opened> = Vec::new();
        let mut dests: Vec<(u32, u64, usize)> = Vec::with_capacity(pieces.len());
        let mut prev: Option<(u64, BlobId, std::result::Result<usize, String>)> = None;
        for p in pieces {
            if prev
                .as_ref()
                .is_none_or(|(o, id, _)| *o != p.loc.offset || *id != p.id)
            {
                let opened = match &mut data {
                    Ok(d) => self.open_blob(d, first.offset, p, plain).map(|r| {
                        plains.push(r);
                        plains.len() - 1
                    }),
                    Err(e) => Err(e.clone()),
                };
                prev = Some((p.loc.offset, p.id, opened));
            }
            match &prev.as_ref().expect("just set").2 {
                Ok(k) => dests.push((p.file, p.offset, *k)),
                Err(e) => {
                    let open = &opens[p.file as usize];
                    open.fail(p.offset, e.clone());
                    self.done(open, 1);
                }
            }
        }
        let data: &[u8] = data.map_or(&[], |d| &*d);
        let bytes = |k: usize| -> &[u8] {
            match &plains[k] {
                Opened::InPlace(r) => &data[r.clone()],
                Opened::Appended(r) => &plain[r.clone()],
            }
        };
        dests.sort_unstable_by_key(|&(file, offset, _)| (file, offset));
        let mut start = 0;
        while start < dests.len() {
            let (file, offset, _) = dests[start];
            let mut end = start + 1;
            let mut next = offset + bytes(dests[start].2).len() as u64;
            while end < dests.len()
                && end - start < WRITE_SLICES
                && dests[end].0 == file
                && dests[end].1 == next
            {
                next += bytes(dests[end].2).len() as u64;
                end += 1;
            }
            let open = &opens[file as usize];
            let slices: Vec<&[u8]> = dests[start..end]
                .iter()
                .map(|&(_, _, k)| bytes(k))
                .collect();
            match pwritev_all(open.fd.as_fd(), &slices, offset) {
                Ok(()) => {
                    start_writeback(open.fd.as_fd(), offset, next - offset);
                    self.flush_if_due(open, next - offset);
                    self.progress.bytes(next - offset);
                }
                Err(e) => open.fail(offset, format!("writing: {e}")),
            }
            self.done(open, end - start);
            start = end;
        }
        // A region of unusually large blobs does not leave huge buffers behind.
        if plain.capacity() > PLAIN_RESERVE_MAX {
            *plain = Vec::new();
        }
        if sealed.capacity() > SEALED_KEEP_MAX {
            *sealed = Vec::new();
        }
    }

    /// `n` bytes more of `open` were written: when the write syncs its files and
    /// [`FLUSH_EVERY`] bytes were written since the last time, asks the placer to write them
    /// back now.
    fn flush_if_due(&self, open: &Arc<Open>, n: u64) {
        if !self.syncing.load(Ordering::Relaxed) {
            return;
        }
        let before = open.unflushed.fetch_add(n, Ordering::Relaxed);
        if before + n >= FLUSH_EVERY && before < FLUSH_EVERY {
            open.unflushed.fetch_sub(before + n, Ordering::Relaxed);
            if let Some(placer) = self.placer.lock().expect("placer").as_ref() {
                let _ = placer.send(ToPlacer::Flush(open.clone()));
            }
        }
    }

    /// `n` more blobs of `open` were handled; the last one finishes the file.
    fn done(&self, open: &Arc<Open>, n: usize) {
        if open.remaining.fetch_sub(n, Ordering::AcqRel) == n {
            self.finish(open);
        }
    }

    /// Opens and verifies the blob of `p` in a region read at `base` (decrypted where it lies;
    /// a compressed one decompressed into `plain`); returns where its plaintext is.
    fn open_blob(
        &self,
        region: &mut [u8],
        base: u64,
        p: &Piece,
        plain: &mut Vec<u8>,
    ) -> std::result::Result<Opened, String> {
        let what = || {
            format!(
                "{} {} in pack {}",
                p.loc.ty.kind().name(),
                p.id.short(),
                p.loc.pack.short()
            )
        };
        let start = (p.loc.offset - base) as usize;
        let sealed = region
            .get_mut(start..start + p.loc.length as usize)
            .ok_or_else(|| {
                RepoError::corrupted(format!("pack {}", p.loc.pack.short()), "truncated")
                    .to_string()
            })?;
        if p.loc.ty != BlobType::Data {
            return Err(RepoError::corrupted(
                format!("data blob {}", p.id.short()),
                format!("indexed as a {}", p.loc.ty.kind().name()),
            )
            .to_string());
        }
        let opened = blob::open_blob_into(&self.repo.keys, p.loc.ty, &p.id, sealed, plain)
            .map_err(|e| RepoError::corrupted(what(), e).to_string())?;
        let (Opened::InPlace(r) | Opened::Appended(r)) = &opened;
        if r.len() != p.loc.raw_length as usize {
            if let Opened::Appended(r) = &opened {
                plain.truncate(r.start);
            }
            return Err(RepoError::corrupted(
                what(),
                format!("{} bytes, the index says {}", r.len(), p.loc.raw_length),
            )
            .to_string());
        }
        Ok(match opened {
            Opened::InPlace(r) => Opened::InPlace(start + r.start..start + r.end),
            appended => appended,
        })
    }

    /// Every blob of `open` was handled: hands it to the placer when they all verified;
    /// otherwise removes it and reports the file. (Without a placer to take it, which only a
    /// panicked placer thread leaves, the file is synced and placed here.)
    fn finish(&self, open: &Arc<Open>) {
        let failure = open.error.lock().expect("file error").take();
        if let Some((_, e)) = failure {
            let _ = rfs::unlinkat(open.dir.as_fd(), open.tmp.as_str(), AtFlags::empty());
            self.report_failure(&self.files[open.job], &e);
            return;
        }
        let open = match self.placer.lock().expect("placer").as_ref() {
            Some(placer) => match placer.send(ToPlacer::Place(open.clone())) {
                Ok(()) => return,
                Err(mpsc::SendError(ToPlacer::Place(open) | ToPlacer::Flush(open))) => open,
            },
            None => open.clone(),
        };
        self.place_verified(&open, true);
    }

    /// Syncs (with `sync`) a file whose every blob verified, sets its metadata and renames it
    /// into place; when that fails, removes it and reports the file.
    fn place_verified(&self, open: &Open, sync: bool) {
        let job = &self.files[open.job];
        match self.place_file(open, job, sync).map_err(|e| e.to_string()) {
            Ok(()) => self.report_done(job, file_size(&job.node), false),
            Err(e) => {
                let _ = rfs::unlinkat(open.dir.as_fd(), open.tmp.as_str(), AtFlags::empty());
                self.report_failure(job, &e);
            }
        }
    }

    fn place_file(&self, open: &Open, job: &Job, sync: bool) -> Result<()> {
        if sync {
            rfs::fsync(&open.fd)
                .map_err(|e| RepoError::io("syncing", self.target.join(&job.shown), e.into()))?;
        }
        // Best effort, through the open file: a mode or time that cannot be set does not make
        // the content wrong.
        let _ = rfs::fchmod(&open.fd, mode_of(&job.node));
        let _ = rfs::futimens(&open.fd, &times_of(&job.node));
        if is_database(&job.node) {
            clear_journals(open.dir.as_fd(), &job.name)?;
        }
        place(open.dir.as_fd(), &open.tmp, &job.name, self.overwrite)
    }
}

/// What starting a file found.
enum Started {
    /// Blobs to write into the open temporary file.
    Write(Arc<Open>, Vec<BlobId>),
    /// An empty file: only to place.
    Empty(Arc<Open>),
    /// Already complete in the target.
    Kept,
}

/// `pwritev` until all of `slices` is written, in order, from `offset`.
fn pwritev_all(fd: BorrowedFd<'_>, slices: &[&[u8]], offset: u64) -> rustix::io::Result<()> {
    let iov: Vec<std::io::IoSlice<'_>> = slices.iter().map(|s| std::io::IoSlice::new(s)).collect();
    let total: usize = slices.iter().map(|s| s.len()).sum();
    let written = loop {
        match rustix::io::pwritev(fd, &iov, offset) {
            Err(Errno::INTR) => {}
            r => break r?,
        }
    };
    if written == total {
        return Ok(());
    }
    // A short write: the rest one slice at a time.
    let mut at = offset;
    let mut skip = written;
    for s in slices {
        let n = s.len().min(skip);
        skip -= n;
        pwrite_all(fd, &s[n..], at + n as u64)?;
        at += s.len() as u64;
    }
    Ok(())
}

/// Most a reader reserves up front for one region's plaintexts, and most it keeps between
/// regions (a region of very compressible pages can hold far more plaintext than its size).
const PLAIN_RESERVE_MAX: usize = 32 << 20;

/// Most a reader keeps of its read buffer between regions (a region is at most [`READ_RUN`]
/// bytes, but a single blob can be larger).
const SEALED_KEEP_MAX: usize = 2 * READ_RUN as usize;

/// Most bytes of one pack a reader fetches with one streamed request ([`stream_units`]): a whole
/// pack (16 MiB by default, FORMAT §3) and a little more.
const STREAM_RUN: u64 = 20 << 20;

/// Groups `regions` (of `pieces` sorted by pack and offset) into what one reader takes at once
/// on a cloud service: runs of regions of one pack, each at most
/// [`READ_GAP`](crate::repository::READ_GAP) after the last, spanning at most [`STREAM_RUN`]
/// bytes.
fn stream_units(pieces: &[Piece], regions: &[Range<usize>]) -> Vec<Range<usize>> {
    neighbour_runs(
        regions.len(),
        |i| {
            let (first, last) = (
                &pieces[regions[i].start].loc,
                &pieces[regions[i].end - 1].loc,
            );
            (
                first.pack,
                first.offset,
                last.offset + u64::from(last.length),
            )
        },
        STREAM_RUN,
    )
}

/// A unit's streamed request ([`Storage::read_range_stream`]) and where in the pack it is.
struct Streamed<'s> {
    stream: crate::storage::RangeStream<'s>,
    at: u64,
}

impl Streamed<'_> {
    /// The `len` bytes at `offset` (at or after where the stream is) into `buf`: how many
    /// there were (fewer when the pack ended).
    fn read(&mut self, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<usize> {
        let gap = offset
            .checked_sub(self.at)
            .ok_or_else(|| RepoError::Invalid("streamed read went backwards".into()))?;
        if self.stream.skip(gap)? < gap {
            buf.clear();
            return Ok(0);
        }
        let len = usize::try_from(len).map_err(|_| RepoError::Invalid("range too large".into()))?;
        let n = self.stream.read_into(len, buf)?;
        self.at = offset + n as u64;
        Ok(n)
    }
}

/// A reader's buffers, reused from region to region.
#[derive(Default)]
struct Buffers {
    /// The region as read; its blobs are decrypted where they lie.
    sealed: Vec<u8>,
    /// Decompressed plaintexts, side by side.
    plain: Vec<u8>,
}

/// Writes of at least this many bytes start their writeback at once ([`start_writeback`]).
const WRITEBACK_MIN: u64 = 256 << 10;

/// Asks the kernel to start writing `len` bytes at `offset` of a file being restored to disk
/// now, without waiting, so that the disk works while the readers decrypt and decompress the
/// rest and the `fsync` before the file's rename finds little left to do (it was 55–60 ms of a
/// 100 MB database's restore, all of it on the path to "messages ready"). Linux's
/// `posix_fadvise(DONTNEED)` starts asynchronous writeback of the range's dirty pages; pages
/// still being written stay cached. PostgreSQL's `pg_flush_data` uses the same call where
/// `sync_file_range` is unavailable. Only a hint: durability still comes from the `fsync`
/// (FORMAT §12.1), and an error is ignored.
fn start_writeback(fd: BorrowedFd<'_>, offset: u64, len: u64) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if len >= WRITEBACK_MIN
        && let Some(len) = std::num::NonZeroU64::new(len)
    {
        let _ = rfs::fadvise(fd, offset, Some(len), rfs::Advice::DontNeed);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (fd, offset, len);
}

/// `pwrite` until all of `buf` is written at `offset`.
fn pwrite_all(fd: BorrowedFd<'_>, mut buf: &[u8], mut offset: u64) -> rustix::io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::pwrite(fd, buf, offset) {
            Ok(0) => return Err(Errno::IO),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Step 2: creates one symbolic link (under a temporary name, then renamed into place).
fn restore_symlink(root: BorrowedFd<'_>, dir: &DirRec, job: &Job, overwrite: bool) -> Result<()> {
    let NodeKind::Symlink { target } = &job.node.kind else {
        return Err(RepoError::Invalid("not a symbolic link".into()));
    };
    if target.0.is_empty() || target.0.contains(&0) {
        return Err(RepoError::Invalid(
            "symbolic link target is empty or contains a NUL byte; not created".into(),
        ));
    }
    let dfd = open_dir(root, &dir.names)
        .map_err(|e| RepoError::Invalid(format!("opening its directory in the target: {e}")))?;
    check_free(dfd.as_fd(), &job.name, overwrite)?;
    let (tmp, ()) = create_partial(|n| rfs::symlinkat(target.0.as_slice(), &dfd, n))?;
    let _ = rfs::utimensat(
        &dfd,
        tmp.as_str(),
        &times_of(&job.node),
        AtFlags::SYMLINK_NOFOLLOW,
    );
    let r = place(dfd.as_fd(), &tmp, &job.name, overwrite);
    if r.is_err() {
        let _ = rfs::unlinkat(&dfd, tmp.as_str(), AtFlags::empty());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatvault_format::objects::Bytes;

    fn node(name: &[u8], kind: NodeKind) -> Node {
        Node {
            name: Bytes(name.to_vec()),
            kind,
            mode: 0o644,
            mtime_s: 0,
            mtime_ns: 0,
            ctime_s: 0,
            ctime_ns: 0,
            inode: 0,
        }
    }

    fn file(name: &[u8], sqlite: bool) -> Node {
        node(
            name,
            NodeKind::File {
                size: 0,
                content: vec![],
                lists: vec![],
                changed_while_reading: false,
                sqlite_snapshot: sqlite,
                sqlite_source: None,
            },
        )
    }

    #[test]
    fn refusals_name_unsafe_duplicate_and_journal_entries() {
        let link = node(
            b"x",
            NodeKind::Symlink {
                target: Bytes(b"/elsewhere".to_vec()),
            },
        );
        let dir = node(
            b"x",
            NodeKind::Dir {
                subtree: BlobId::from_bytes([1; 32]),
            },
        );
        let tree = Tree {
            version: 1,
            nodes: vec![
                file(b"", false),
                file(b".", false),
                file(b"..", false),
                file(b"a/b", false),
                file(b"a\0b", false),
                file(b"db", true),
                file(b"db-shm", false),
                file(b"db-wal", false),
                file(b"db-x", false),
                link,
                dir,
            ],
        };
        let r = refusals(&tree);
        assert!(
            r[..5]
                .iter()
                .all(|r| matches!(r, Some(Refusal::UnsafeName(_))))
        );
        assert_eq!(r[5], None);
        assert_eq!(r[6], Some(Refusal::Journal));
        assert_eq!(r[7], Some(Refusal::Journal));
        assert_eq!(r[8], None);
        assert_eq!(
            r[9],
            Some(Refusal::Duplicate {
                count: 2,
                first: true
            })
        );
        assert_eq!(
            r[10],
            Some(Refusal::Duplicate {
                count: 2,
                first: false
            })
        );
    }

    use crate::backup::{BackupOptions, NoProgress, backup};
    use crate::test_util::{memory_repo, noise};

    /// Records, in order, temporary files started (`file`) and restore events.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);
    impl Progress for Recorder {
        fn file(&self, path: &Path) {
            self.0
                .lock()
                .unwrap()
                .push(format!("start {}", path.display()));
        }
        fn restore_event(&self, e: &RestoreEvent) {
            let line = match e {
                RestoreEvent::File { path, kept, .. } => format!("file {path} kept={kept}"),
                RestoreEvent::MessagesReady { databases, failed } => {
                    format!("ready {databases} {failed}")
                }
                RestoreEvent::Failed { path, error } => format!("failed {path}: {error}"),
                RestoreEvent::Started { files, .. } => format!("started {files}"),
            };
            self.0.lock().unwrap().push(line);
        }
    }

    /// chats/Databases/{msgstore.db (SQLite, ~100 pages: several batches of 50), keys.txt},
    /// chats/A/{0..4}.jpg and chats/Media/clip.mp4 (A sorts before Databases).
    fn chats(root: &Path) {
        std::fs::create_dir_all(root.join("Databases")).unwrap();
        std::fs::create_dir_all(root.join("A")).unwrap();
        std::fs::create_dir_all(root.join("Media")).unwrap();
        let db = rusqlite::Connection::open(root.join("Databases/msgstore.db")).unwrap();
        db.execute_batch(
            "CREATE TABLE m(id INTEGER PRIMARY KEY, t TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 20000)
             INSERT INTO m(t) SELECT 'message ' || i FROM n;",
        )
        .unwrap();
        drop(db);
        std::fs::write(root.join("Databases/keys.txt"), b"k").unwrap();
        for i in 0..5 {
            std::fs::write(root.join(format!("A/{i}.jpg")), noise(i, 200_000)).unwrap();
        }
        std::fs::write(root.join("Media/clip.mp4"), noise(9, 3 << 20)).unwrap();
    }

    fn restored_rows(target: &Path) -> i64 {
        rows_of(&target.join("chats/Databases/msgstore.db"))
    }

    /// Rows of table `m` in the database at `path`.
    fn rows_of(path: &Path) -> i64 {
        let c = rusqlite::Connection::open(path).unwrap();
        c.query_row("SELECT count(*) FROM m", [], |r| r.get(0))
            .unwrap()
    }

    fn backed_up(name: &str) -> (tempfile::TempDir, Repository, Snapshot) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("chats");
        chats(&src);
        let repo = memory_repo(name);
        let out = backup(&repo, &[src], &BackupOptions::default(), &NoProgress).unwrap();
        (dir, repo, out.snapshot)
    }

    /// A database of more than 256 pages keeps its page ids in content lists (FORMAT §10.1):
    /// planning expands them while it fetches the trees ahead, and the restore uses them.
    #[test]
    fn a_databases_content_lists_are_expanded_while_the_trees_are_fetched() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("chats");
        chats(&src);
        let db = rusqlite::Connection::open(src.join("Databases/big.db")).unwrap();
        db.execute_batch(
            "CREATE TABLE m(id INTEGER PRIMARY KEY, t TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 100000)
             INSERT INTO m(t) SELECT 'message number ' || i FROM n;",
        )
        .unwrap();
        drop(db);
        let repo = memory_repo("restore-lists-ahead");
        let snap = backup(&repo, &[src], &BackupOptions::default(), &NoProgress)
            .unwrap()
            .snapshot;
        let index = repo.load_index().unwrap();
        let target = dir.path().join("planned");
        let root = open_target(&target).unwrap();
        let root_tree = repo.load_tree(&index, &snap.tree).unwrap();
        let mut out = RestoreOutcome::default();
        let mut plan = Plan::new(
            &repo,
            &index,
            snap.tree,
            &RestoreOptions::default(),
            &mut out,
        );
        plan.tree(&root_tree, 0, root.as_fd(), None).unwrap();
        let job = plan
            .files
            .iter()
            .find(|j| j.shown.ends_with("Databases/big.db"))
            .unwrap();
        let NodeKind::File { lists, .. } = &job.node.kind else {
            panic!("a file")
        };
        assert!(!lists.is_empty(), "more than 256 pages: in lists");
        let want = repo.file_blobs(&index, &job.node.kind).unwrap();
        assert!(want.len() > 256);
        assert_eq!(job.content.lock().unwrap().as_deref(), Some(&want[..]));
        // The read-ahead holds no more ids than the stated size allows.
        assert!(
            repo.walk_lists_at_most(&index, lists, |_| true, want.len() - 1)
                .is_err()
        );
        // The small database keeps its ids inline: nothing to expand.
        let small = plan
            .files
            .iter()
            .find(|j| j.shown.ends_with("Databases/msgstore.db"))
            .unwrap();
        assert!(small.content.lock().unwrap().is_none());
        drop(plan);

        let target = dir.path().join("out");
        let out = restore(
            &repo,
            &snap,
            &target,
            &RestoreOptions::default(),
            &NoProgress,
        )
        .unwrap();
        assert!(out.failed.is_empty(), "{:?}", out.failed);
        assert_eq!(rows_of(&target.join("chats/Databases/big.db")), 100000);
    }

    #[test]
    fn databases_restore_first_and_messages_ready_precedes_any_media_write() {
        let (dir, repo, snap) = backed_up("restore-order");
        let target = dir.path().join("out");
        let rec = Recorder::default();
        let out = restore(&repo, &snap, &target, &RestoreOptions::default(), &rec).unwrap();
        assert!(out.failed.is_empty(), "{:?}", out.failed);
        assert_eq!(out.files, 8);
        let log = rec.0.into_inner().unwrap();
        let ready = log.iter().position(|l| l == "ready 1 0").expect("ready");
        assert_eq!(log.iter().filter(|l| l.starts_with("ready")).count(), 1);
        for (i, l) in log.iter().enumerate() {
            if l.contains("/Databases/") {
                assert!(i < ready, "{l} after messages ready: {log:#?}");
            } else if l.contains("/A/") || l.contains("/Media/") {
                assert!(i > ready, "{l} before messages ready: {log:#?}");
            }
        }
        assert_eq!(restored_rows(&target), 20000);
        for i in 0..5 {
            let got = std::fs::read(target.join(format!("chats/A/{i}.jpg"))).unwrap();
            assert_eq!(got, noise(i, 200_000));
        }
        assert_eq!(
            std::fs::read(target.join("chats/Media/clip.mp4")).unwrap(),
            noise(9, 3 << 20)
        );
    }

    #[test]
    fn a_rerun_keeps_verified_files_removes_leftovers_and_refuses_altered_ones() {
        let (dir, repo, snap) = backed_up("restore-resume");
        let target = dir.path().join("out");
        let first = restore(
            &repo,
            &snap,
            &target,
            &RestoreOptions::default(),
            &NoProgress,
        )
        .unwrap();
        assert!(first.failed.is_empty() && first.kept == 0, "{first:?}");
        // A dead run's state: one file missing, one altered in place (same size and time: a
        // size-and-mtime check would keep it), leftovers of two temporary files.
        let clip = target.join("chats/Media/clip.mp4");
        std::fs::remove_file(&clip).unwrap();
        let jpg = target.join("chats/A/2.jpg");
        let meta = std::fs::metadata(&jpg).unwrap();
        let mut altered = noise(2, 200_000);
        altered[100_000] ^= 1;
        std::fs::write(&jpg, &altered).unwrap();
        let f = std::fs::File::options().write(true).open(&jpg).unwrap();
        f.set_modified(meta.modified().unwrap()).unwrap();
        drop(f);
        std::fs::write(
            target.join("chats/Media/.chatvault-partial-0123456789abcdef"),
            b"x",
        )
        .unwrap();
        std::fs::write(target.join(".chatvault-partial-fedcba9876543210"), b"y").unwrap();
        // A journal that appeared beside the complete database would be replayed over it.
        let wal = target.join("chats/Databases/msgstore.db-wal");
        std::fs::write(&wal, b"stale frames").unwrap();
        let stats = repo.storage.transfers();

        let rec = Recorder::default();
        let again = restore(&repo, &snap, &target, &RestoreOptions::default(), &rec).unwrap();
        assert_eq!(again.cleaned, 2);
        assert_eq!(again.kept, 6, "{again:?}");
        assert_eq!(again.files, 7);
        assert_eq!(again.bytes, 3 << 20, "only the missing file is written");
        assert_eq!(again.failed.len(), 1, "{:?}", again.failed);
        assert!(again.failed[0].0.ends_with("A/2.jpg"));
        assert!(
            again.failed[0].1.contains("already exists"),
            "{:?}",
            again.failed
        );
        assert_eq!(
            std::fs::read(&jpg).unwrap(),
            altered,
            "not replaced without --overwrite"
        );
        assert_eq!(std::fs::read(&clip).unwrap(), noise(9, 3 << 20));
        // What was downloaded: the missing file's packs and the metadata, not the kept files.
        let read = repo.storage.transfers().read_bytes - stats.read_bytes;
        assert_eq!(read, again.downloaded_bytes);
        assert!(read < (3 << 20) + (1 << 20), "{read}");
        let log = rec.0.into_inner().unwrap();
        assert!(
            log.iter().any(|l| l.ends_with("msgstore.db kept=true")),
            "{log:#?}"
        );
        assert!(
            !wal.exists(),
            "the kept database's stale journal was left beside it"
        );

        let opts = RestoreOptions {
            overwrite: true,
            ..Default::default()
        };
        let fixed = restore(&repo, &snap, &target, &opts, &NoProgress).unwrap();
        assert!(fixed.failed.is_empty(), "{:?}", fixed.failed);
        assert_eq!((fixed.kept, fixed.bytes), (7, 200_000));
        assert_eq!(std::fs::read(&jpg).unwrap(), noise(2, 200_000));
        assert_eq!(restored_rows(&target), 20000);
        let leftovers: Vec<_> = std::fs::read_dir(target.join("chats/Media"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, [std::ffi::OsString::from("clip.mp4")]);
    }

    #[test]
    fn a_cloud_restore_reads_a_packs_regions_with_one_streamed_request() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("chats");
        std::fs::create_dir_all(&src).unwrap();
        // ~14 MiB in one pack: four or more regions of at most READ_RUN bytes.
        let big = noise(3, 14 << 20);
        std::fs::write(src.join("big.mp4"), &big).unwrap();
        let repo = memory_repo("restore-stream");
        let snap = backup(&repo, &[src], &BackupOptions::default(), &NoProgress)
            .unwrap()
            .snapshot;
        let requests = |limit: Option<u64>, name: &str| {
            repo.storage.set_limits(crate::storage::Limits {
                download: limit,
                upload: None,
            });
            let target = dir.path().join(name);
            let before = repo.storage.transfers().read_requests;
            let out = restore(
                &repo,
                &snap,
                &target,
                &RestoreOptions::default(),
                &NoProgress,
            );
            let out = out.unwrap();
            assert!(out.failed.is_empty(), "{:?}", out.failed);
            assert_eq!(std::fs::read(target.join("chats/big.mp4")).unwrap(), big);
            repo.storage.transfers().read_requests - before
        };
        // A limit of 4 GiB/s paces in pieces of 1 GiB: one request per region, not streamed.
        let per_region = requests(Some(4 << 30), "regions");
        let streamed = requests(None, "streamed");
        assert!(
            streamed + 3 <= per_region,
            "streamed {streamed} requests, region by region {per_region}"
        );
    }

    #[test]
    fn a_second_restore_into_a_busy_target_is_refused() {
        let (dir, repo, snap) = backed_up("restore-busy");
        let target = dir.path().join("out");
        std::fs::create_dir_all(&target).unwrap();
        let held = std::fs::File::open(&target).unwrap();
        rfs::flock(&held, rfs::FlockOperation::NonBlockingLockExclusive).unwrap();
        std::fs::write(target.join(".chatvault-partial-0123456789abcdef"), b"live").unwrap();
        let e = restore(
            &repo,
            &snap,
            &target,
            &RestoreOptions::default(),
            &NoProgress,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("another restore is writing into"), "{e}");
        assert!(
            target.join(".chatvault-partial-0123456789abcdef").exists(),
            "a live restore's temporary file was removed"
        );
        drop(held);
        let out = restore(
            &repo,
            &snap,
            &target,
            &RestoreOptions::default(),
            &NoProgress,
        )
        .unwrap();
        assert!(out.failed.is_empty() && out.cleaned == 1, "{out:?}");
    }

    #[test]
    fn partial_names_are_random_and_hidden() {
        let a = partial_name().unwrap();
        let b = partial_name().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(PARTIAL_PREFIX) && a.len() == PARTIAL_PREFIX.len() + 16);
    }
}
