//! Restoring a snapshot to a local folder.
//!
//! Only verified data is ever written under a final name: each file is assembled in a temporary
//! file next to its destination from blobs that were authenticated and checked against their
//! ids, and renamed into place only when every blob verified. A file with a missing or damaged
//! blob is not created; it is listed in the outcome, and the other files still restore.

use std::fs::{File, FileTimes, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatvault_format::id::BlobId;
use chatvault_format::objects::{Node, NodeKind, Snapshot, Tree};

use crate::backup::Progress;
use crate::error::{RepoError, Result};
use crate::lock;
use crate::repository::{BlobLocation, Index, READ_RUN, Repository};

/// Options of a restore.
#[derive(Debug, Default, Clone)]
pub struct RestoreOptions {
    /// Restore only this path inside the snapshot (its first component is the name of a
    /// backed-up path, e.g. `chats/Databases/msgstore.db`).
    pub include: Option<PathBuf>,
    /// Replace files that already exist in the target.
    pub overwrite: bool,
}

/// What a restore did.
#[derive(Debug, Default)]
pub struct RestoreOutcome {
    /// Files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Items that could not be restored, with the reason. Non-empty means the restore is
    /// incomplete.
    pub failed: Vec<(String, String)>,
}

struct FileJob {
    dest: PathBuf,
    shown: String,
    node: Node,
}

/// Restores `snapshot` into `target`.
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
    let mut out = RestoreOutcome::default();
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let root = match repo.load_tree(&index, &snapshot.tree) {
        Ok(t) => t,
        // Listed like a damaged subdirectory, so the caller reports it with the snapshot id.
        Err(e @ RepoError::Corrupted { .. }) => {
            out.failed
                .push(("/".into(), format!("snapshot not restored: {e}")));
            return Ok(out);
        }
        Err(e) => return Err(e),
    };
    plan(
        repo,
        &index,
        &root,
        target,
        "",
        include.as_deref(),
        opts,
        &mut files,
        &mut dirs,
        &mut out,
    )?;
    if let Some(inc) = &include
        && files.is_empty()
        && dirs.is_empty()
        && out.failed.is_empty()
    {
        return Err(RepoError::Invalid(format!(
            "--include {}: no such path in the snapshot",
            String::from_utf8_lossy(&inc.join(&b'/'))
        )));
    }

    // Files in parallel, two at a time per core.
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
                    let r = restore_file(repo, &index, &job, opts.overwrite, progress);
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
    // Directory metadata last, deepest first, so writing files does not change it again.
    for (path, node) in dirs.iter().rev() {
        apply_metadata(path, node);
        out.dirs += 1;
    }
    out.failed.sort();
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn plan(
    repo: &Repository,
    index: &Index,
    tree: &Tree,
    dir: &Path,
    shown: &str,
    include: Option<&[Vec<u8>]>,
    opts: &RestoreOptions,
    files: &mut Vec<FileJob>,
    dirs: &mut Vec<(PathBuf, Node)>,
    out: &mut RestoreOutcome,
) -> Result<()> {
    for node in &tree.nodes {
        let name = &node.name.0;
        if name.is_empty() || name.contains(&b'/') || name == b"." || name == b".." {
            out.failed.push((
                format!("{shown}{}", String::from_utf8_lossy(name)),
                "unsafe file name in snapshot; skipped".into(),
            ));
            continue;
        }
        let rest = match include {
            Some([first, rest @ ..]) if first == name => Some(rest),
            Some([_, ..]) => continue,
            Some([]) | None => None,
        };
        let dest = dir.join(std::ffi::OsStr::from_bytes(name));
        let shown_child = format!("{shown}{}", String::from_utf8_lossy(name));
        match &node.kind {
            NodeKind::Dir { subtree } => {
                std::fs::create_dir_all(&dest)
                    .map_err(|e| RepoError::io("creating directory", &dest, e))?;
                if rest.is_none_or(|r| r.is_empty()) {
                    dirs.push((dest.clone(), node.clone()));
                }
                match repo.load_tree(index, subtree) {
                    Ok(t) => plan(
                        repo,
                        index,
                        &t,
                        &dest,
                        &format!("{shown_child}/"),
                        rest.filter(|r| !r.is_empty()),
                        opts,
                        files,
                        dirs,
                        out,
                    )?,
                    Err(e) => out.failed.push((
                        format!("{shown_child}/"),
                        format!("directory not restored: {e}"),
                    )),
                }
            }
            _ if rest.is_some_and(|r| !r.is_empty()) => {}
            NodeKind::File { .. } => files.push(FileJob {
                dest,
                shown: shown_child,
                node: node.clone(),
            }),
            NodeKind::Symlink { target } => {
                if opts.overwrite && dest.symlink_metadata().is_ok() {
                    let _ = std::fs::remove_file(&dest);
                }
                match std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target.0), &dest) {
                    Ok(()) => out.files += 1,
                    Err(e) => out
                        .failed
                        .push((shown_child, format!("symlink not created: {e}"))),
                }
            }
        }
    }
    Ok(())
}

fn restore_file(
    repo: &Repository,
    index: &Index,
    job: &FileJob,
    overwrite: bool,
    progress: &dyn Progress,
) -> Result<u64> {
    let NodeKind::File { size, .. } = &job.node.kind else {
        unreachable!("only files are queued");
    };
    if !overwrite && job.dest.symlink_metadata().is_ok() {
        return Err(RepoError::Invalid(
            "already exists in the target (use --overwrite to replace it)".into(),
        ));
    }
    progress.file(&job.dest);
    let dir = job.dest.parent().expect("destination has a parent");
    let tmp = dir.join(format!(
        ".{}.chatvault-partial-{}",
        job.dest.file_name().expect("named").to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<u64> {
        let content = repo.file_blobs(index, &job.node.kind)?;
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| RepoError::io("creating", &tmp, e))?;
        let mut written = 0u64;
        // Consecutive chunks usually lie back to back in one pack (a database's pages, a
        // video's chunks): fetch each such run with one ranged read of up to READ_RUN bytes.
        let mut run: Vec<(BlobId, BlobLocation)> = Vec::new();
        let mut flush = |run: &mut Vec<(BlobId, BlobLocation)>, f: &mut File| {
            for data in repo.read_adjacent_blobs(run)? {
                f.write_all(&data)
                    .map_err(|e| RepoError::io("writing", &tmp, e))?;
                written += data.len() as u64;
                progress.bytes(data.len() as u64);
            }
            run.clear();
            Ok::<(), RepoError>(())
        };
        for id in &content {
            let loc = *index.blobs.get(id).ok_or_else(|| {
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
            run.push((*id, loc));
        }
        flush(&mut run, &mut f)?;
        if written != *size {
            return Err(RepoError::corrupted(
                "snapshot",
                format!("file content is {written} bytes, the snapshot says {size}"),
            ));
        }
        f.sync_all()
            .map_err(|e| RepoError::io("syncing", &tmp, e))?;
        drop(f);
        apply_metadata(&tmp, &job.node);
        std::fs::rename(&tmp, &job.dest)
            .map_err(|e| RepoError::io("renaming into place", &job.dest, e))?;
        Ok(written)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn apply_metadata(path: &Path, node: &Node) {
    if let Some(t) = to_system_time(node.mtime_s, node.mtime_ns)
        && let Ok(f) = File::open(path)
    {
        let _ = f.set_times(FileTimes::new().set_modified(t));
    }
    let _ = std::fs::set_permissions(path, Permissions::from_mode(node.mode & 0o7777));
}

fn to_system_time(s: i64, ns: u32) -> Option<SystemTime> {
    if s >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(s as u64, ns))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(s.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(ns.into())))
    }
}
