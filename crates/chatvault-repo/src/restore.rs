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
//! The steps, in order: `Plan` walks the snapshot's trees and creates the directories;
//! `restore_file` writes the files in parallel; `restore_symlink` creates the links;
//! directory metadata is applied last.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use chatvault_format::id::BlobId;
use chatvault_format::objects::{Node, NodeKind, Snapshot, Tree};
use rand_core::{OsRng, RngCore};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::backup::Progress;
use crate::error::{RepoError, Result};
use crate::lock;
use crate::repository::{BlobLocation, Index, READ_RUN, Repository};
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
    let _guard = lock::lock(repo, "restore", false)?;
    let index = repo.load_index()?;
    for (id, why) in &index.damaged {
        progress.warn(&format!(
            "index {} is damaged and ignored: {why}",
            id.short()
        ));
    }
    let include: Option<Vec<Vec<u8>>> = match &opts.include {
        None => None,
        Some(p) => Some(
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
                .collect::<Result<_>>()?,
        ),
    };
    std::fs::create_dir_all(target)
        .map_err(|e| RepoError::io("creating the restore target", target, e))?;
    let root = rfs::open(
        target,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RepoError::io("opening the restore target", target, e.into()))?;
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
    let mut plan = Plan {
        repo,
        index: &index,
        overwrite: opts.overwrite,
        dirs: vec![DirRec {
            names: Vec::new(),
            shown: String::new(),
            meta: None,
        }],
        files: Vec::new(),
        links: Vec::new(),
        ancestors: vec![snapshot.tree],
        entries: 0,
        max_entries: opts.max_entries.unwrap_or(MAX_ENTRIES),
        out: &mut out,
    };
    plan.tree(&root_tree, 0, root.as_fd(), include.as_deref())?;
    let Plan {
        dirs, files, links, ..
    } = plan;
    if let Some(inc) = &include
        && files.is_empty()
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

    // 1. Files in parallel, two at a time per core.
    let jobs = Mutex::new(files.into_iter());
    let results = Mutex::new(&mut out);
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let Some(job) = jobs.lock().expect("jobs").next() else {
                        break;
                    };
                    let r = restore_file(
                        repo,
                        &index,
                        root.as_fd(),
                        &dirs[job.dir],
                        &job,
                        opts.overwrite,
                        target,
                        progress,
                    );
                    let mut o = results.lock().expect("results");
                    match r {
                        Ok(n) => {
                            o.files += 1;
                            o.bytes += n;
                        }
                        Err(e) => {
                            progress.warn(&format!("{}: {e}", job.shown));
                            o.failed.push((job.shown.clone(), e.to_string()));
                        }
                    }
                }
            });
        }
    });
    // 2. Symbolic links, once nothing else will be written beneath any name.
    for job in &links {
        match restore_symlink(root.as_fd(), &dirs[job.dir], job, opts.overwrite) {
            Ok(()) => out.files += 1,
            Err(e) => {
                progress.warn(&format!("{}: {e}", job.shown));
                out.failed.push((job.shown.clone(), e.to_string()));
            }
        }
    }
    // 3. Directory metadata last, deepest first, so writing entries does not change it again
    // (and a read-only directory is filled before it becomes read-only).
    for d in dirs.iter().rev() {
        let Some(node) = &d.meta else { continue };
        // Best effort, like the file metadata: a failure leaves default permissions.
        if let Ok(fd) = open_dir(root.as_fd(), &d.names) {
            let _ = rfs::fchmod(&fd, mode_of(node));
            let _ = rfs::futimens(&fd, &times_of(node));
            out.dirs += 1;
        }
    }
    out.failed.sort();
    out.skipped.sort();
    Ok(out)
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
    out: &'a mut RestoreOutcome,
}

impl Plan<'_> {
    fn tree(
        &mut self,
        tree: &Tree,
        dir: usize,
        dir_fd: BorrowedFd<'_>,
        include: Option<&[Vec<u8>]>,
    ) -> Result<()> {
        let shown = self.dirs[dir].shown.clone();
        for (node, refusal) in tree.nodes.iter().zip(refusals(tree)) {
            let name = &node.name.0;
            let shown_child = format!("{shown}{}", String::from_utf8_lossy(name));
            self.entries += 1;
            if self.entries > self.max_entries {
                if self.entries == self.max_entries + 1 {
                    self.out.failed.push((
                        shown_child,
                        format!(
                            "the snapshot has more than {} entries (a hostile or broken \
                             tree); this and the remaining entries are not restored",
                            self.max_entries
                        ),
                    ));
                }
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
                    let shown_dir = format!("{shown_child}/");
                    if self.ancestors.len() >= MAX_DEPTH {
                        self.out.failed.push((
                            shown_dir,
                            format!("directory not restored: nested deeper than {MAX_DEPTH}"),
                        ));
                        continue;
                    }
                    if self.ancestors.contains(subtree) {
                        self.out.failed.push((
                            shown_dir,
                            "directory not restored: its tree contains itself".into(),
                        ));
                        continue;
                    }
                    let sub = match self.repo.load_tree(self.index, subtree) {
                        Ok(t) => t,
                        Err(e) => {
                            self.out
                                .failed
                                .push((shown_dir, format!("directory not restored: {e}")));
                            continue;
                        }
                    };
                    let fd = match ensure_dir(dir_fd, name, self.overwrite) {
                        Ok(fd) => fd,
                        Err(why) => {
                            self.out.failed.push((shown_dir, why));
                            continue;
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
                }
                _ if deeper.is_some() => {}
                NodeKind::File { .. } => self.files.push(Job {
                    dir,
                    name: name.clone(),
                    shown: shown_child,
                    node: node.clone(),
                }),
                NodeKind::Symlink { .. } => self.links.push(Job {
                    dir,
                    name: name.clone(),
                    shown: shown_child,
                    node: node.clone(),
                }),
            }
        }
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

/// Step 1: writes one file under a temporary name, then renames it into place.
#[allow(clippy::too_many_arguments)]
fn restore_file(
    repo: &Repository,
    index: &Index,
    root: BorrowedFd<'_>,
    dir: &DirRec,
    job: &Job,
    overwrite: bool,
    target: &Path,
    progress: &dyn Progress,
) -> Result<u64> {
    let NodeKind::File {
        size,
        sqlite_snapshot,
        ..
    } = &job.node.kind
    else {
        return Err(RepoError::Invalid("not a file".into()));
    };
    let dfd = open_dir(root, &dir.names)
        .map_err(|e| RepoError::Invalid(format!("opening its directory in the target: {e}")))?;
    check_free(dfd.as_fd(), &job.name, overwrite)?;
    progress.file(&target.join(&job.shown));
    let (tmp, fd) = create_partial(|n| {
        rfs::openat(
            &dfd,
            n,
            OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
    })?;
    let shown_path = || PathBuf::from(&job.shown);
    let result = (|| -> Result<u64> {
        let mut f = File::from(fd);
        let mut written = 0u64;
        // Consecutive chunks usually lie back to back in one pack (a database's pages, a
        // video's chunks): fetch each such run with one ranged read of up to READ_RUN bytes.
        let mut run: Vec<(BlobId, BlobLocation)> = Vec::new();
        let mut flush = |run: &mut Vec<(BlobId, BlobLocation)>, f: &mut File| {
            for data in repo.read_adjacent_blobs(run)? {
                f.write_all(&data)
                    .map_err(|e| RepoError::io("writing", shown_path(), e))?;
                written += data.len() as u64;
                progress.bytes(data.len() as u64);
            }
            run.clear();
            Ok::<(), RepoError>(())
        };
        for id in file_content(repo, index, &job.node)? {
            let loc = index.get(&id).ok_or_else(|| {
                RepoError::corrupted(format!("data blob {}", id.short()), "not in any index")
            })?;
            let extends = run.last().is_some_and(|(_, prev)| {
                prev.pack == loc.pack
                    && loc.offset == prev.offset + u64::from(prev.length)
                    && loc.offset + u64::from(loc.length) - run[0].1.offset <= READ_RUN
            });
            if !extends {
                flush(&mut run, &mut f)?;
            }
            run.push((id, loc));
        }
        flush(&mut run, &mut f)?;
        if written != *size {
            return Err(RepoError::corrupted(
                "snapshot",
                format!("file content is {written} bytes, the snapshot says {size}"),
            ));
        }
        f.sync_all()
            .map_err(|e| RepoError::io("syncing", shown_path(), e))?;
        // Best effort, through the open file: a mode or time that cannot be set does not make
        // the content wrong.
        let _ = rfs::fchmod(&f, mode_of(&job.node));
        let _ = rfs::futimens(&f, &times_of(&job.node));
        drop(f);
        if *sqlite_snapshot {
            clear_journals(dfd.as_fd(), &job.name)?;
        }
        place(dfd.as_fd(), &tmp, &job.name, overwrite)?;
        Ok(written)
    })();
    if result.is_err() {
        let _ = rfs::unlinkat(&dfd, tmp.as_str(), AtFlags::empty());
    }
    result
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

    #[test]
    fn partial_names_are_random_and_hidden() {
        let a = partial_name().unwrap();
        let b = partial_name().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(PARTIAL_PREFIX) && a.len() == PARTIAL_PREFIX.len() + 16);
    }
}
