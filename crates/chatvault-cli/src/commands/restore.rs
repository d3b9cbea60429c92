//! `chatvault restore`: restores a snapshot into a folder, with a summary (or JSON events).

use anyhow::Result;
use chatvault_repo::restore::{self, RestoreOptions};
use serde_json::json;

use super::ctx::Ctx;
use crate::args::RestoreArgs;
use crate::exit;
use crate::ui::{self, Bar};

pub(super) fn run(ctx: &Ctx, a: &RestoreArgs) -> Result<u8> {
    let (repo, _) = ctx.open_checked()?;
    let (id, snap) = repo.find_snapshot(&a.snapshot)?;
    if a.snapshot == "latest" {
        let damaged = repo.snapshots()?.iter().filter(|(_, s)| s.is_err()).count();
        if damaged > 0 {
            eprintln!(
                "warning: {damaged} snapshot(s) are damaged and were skipped; `latest` is the \
                 newest readable one, {} ({}). Run `chatvault check`.",
                id.short(),
                snap.time
            );
        }
    }
    let bar = Bar::new(ctx.quiet || a.json, "restoring");
    let opts = RestoreOptions {
        include: a.include.clone(),
        overwrite: a.overwrite,
        max_entries: None,
        readers: a.readers.map(usize::from),
    };
    let r = if a.json {
        restore::restore(&repo, &snap, &a.target, &opts, &ui::JsonEvents)
    } else {
        restore::restore(&repo, &snap, &a.target, &opts, &bar)
    };
    bar.finish();
    let out = r?;
    if a.json {
        let failed: Vec<_> = out
            .failed
            .iter()
            .map(|(p, e)| json!({"path": p, "error": e}))
            .collect();
        let skipped: Vec<_> = out
            .skipped
            .iter()
            .map(|(p, e)| json!({"path": p, "reason": e}))
            .collect();
        ui::json_line(
            &json!({"event": "summary", "snapshot": id, "files": out.files,
            "kept": out.kept, "dirs": out.dirs, "bytes": out.bytes, "cleaned": out.cleaned,
            "downloaded_bytes": out.downloaded_bytes, "failed": failed, "skipped": skipped}),
        );
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
