//! `chatvault restore`: restores a snapshot into a folder, with a summary (or JSON events).

use anyhow::Result;
use chatvault_format::id::SnapshotId;
use chatvault_repo::repository::Repository;
use chatvault_repo::restore::RestoreOutcome;
use chatvault_repo::restore::{self, RestoreOptions};
use serde::Serialize;

use super::ctx::Ctx;
use crate::args::RestoreArgs;
use crate::exit;
use crate::ui::{self, Bar};

/// The last line of `restore --json`: `{"event": "summary", …}` after the progress events.
#[derive(Serialize)]
struct Summary<'a> {
    event: &'static str,
    snapshot: &'a SnapshotId,
    files: u64,
    kept: u64,
    dirs: u64,
    bytes: u64,
    cleaned: u64,
    downloaded_bytes: u64,
    failed: Vec<Failed<'a>>,
    skipped: Vec<Skipped<'a>>,
}

/// An item the restore could not write, and why.
#[derive(Serialize)]
struct Failed<'a> {
    path: &'a str,
    error: &'a str,
}

/// An item the restore left alone on purpose, and why.
#[derive(Serialize)]
struct Skipped<'a> {
    path: &'a str,
    reason: &'a str,
}

impl<'a> Summary<'a> {
    fn of(snapshot: &'a SnapshotId, out: &'a RestoreOutcome) -> Self {
        Summary {
            event: "summary",
            snapshot,
            files: out.files,
            kept: out.kept,
            dirs: out.dirs,
            bytes: out.bytes,
            cleaned: out.cleaned,
            downloaded_bytes: out.downloaded_bytes,
            failed: out
                .failed
                .iter()
                .map(|(path, error)| Failed { path, error })
                .collect(),
            skipped: out
                .skipped
                .iter()
                .map(|(path, reason)| Skipped { path, reason })
                .collect(),
        }
    }
}

pub(super) fn run(ctx: &Ctx, a: &RestoreArgs) -> Result<u8> {
    let (repo, _) = ctx.open_checked()?;
    let (id, snap, damaged) = if a.snapshot == "latest" {
        // The listing the rollback check just took, for both: the newest readable snapshot and
        // how many are damaged.
        let all = repo.snapshots_as_listed()?;
        let damaged = all.iter().filter(|(_, s)| s.is_err()).count();
        let (id, snap) = Repository::latest_of(all)?;
        (id, snap, damaged)
    } else {
        let (id, snap) = repo.find_snapshot(&a.snapshot)?;
        (id, snap, 0)
    };
    if damaged > 0 {
        eprintln!(
            "warning: {damaged} snapshot(s) are damaged and were skipped; `latest` is the \
             newest readable one, {} ({}). Run `chatvault check`.",
            id.short(),
            snap.time
        );
    }
    let bar = Bar::new(ctx.quiet || a.json, "restoring");
    let opts = RestoreOptions {
        include: a.include.clone(),
        overwrite: a.overwrite,
        max_entries: None,
        readers: a.readers.map(usize::from),
        durable: a.durable,
    };
    let r = if a.json {
        restore::restore(&repo, &snap, &a.target, &opts, &ui::JsonEvents)
    } else {
        restore::restore(&repo, &snap, &a.target, &opts, &bar)
    };
    bar.finish();
    let out = r?;
    if a.json {
        ui::json_line(&Summary::of(&id, &out));
    } else {
        let kept = if out.kept > 0 {
            format!(" ({} already complete from an earlier run, kept)", out.kept)
        } else {
            String::new()
        };
        println!(
            "restored snapshot {} ({}) to {}: {} files{kept}, {} dirs, {} bytes",
            id.short(),
            snap.time,
            a.target.display(),
            out.files,
            out.dirs,
            out.bytes
        );
    }
    for (p, why) in &out.skipped {
        eprintln!("skipped {p}: {why}");
    }
    if out.failed.is_empty() {
        Ok(exit::OK)
    } else {
        eprintln!(
            "{} item(s) could not be restored (nothing unverified was written):",
            out.failed.len()
        );
        for (p, e) in &out.failed {
            eprintln!("  {p}: {e}");
        }
        Ok(exit::DAMAGED)
    }
}
