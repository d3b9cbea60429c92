//! `chatvault forget`: removes snapshots by a retention policy (and prunes with `--prune`).

use anyhow::Result;
use chatvault_repo::prune::{self, KeepPolicy, PruneOptions};
use serde_json::json;

use super::ctx::Ctx;
use super::prune::print_prune;
use crate::args::ForgetArgs;
use crate::exit;

pub(super) fn run(ctx: &Ctx, a: &ForgetArgs) -> Result<u8> {
    let (repo, _) = ctx.open_checked()?;
    let policy = KeepPolicy {
        last: a.keep_last,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
    };
    let report = prune::forget(&repo, &policy, a.dry_run)?;
    let entry = |e: &prune::ForgetEntry| {
        json!({"id": e.id, "short_id": e.id.short(),
               "time": e.snapshot.as_ref().map(|s| s.time.clone()),
               "hostname": e.snapshot.as_ref().map(|s| s.hostname.clone()),
               "device": e.snapshot.as_ref().and_then(|s| s.device.clone()),
               "reasons": e.reasons})
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "dry_run": a.dry_run,
                "keep": report.keep.iter().map(entry).collect::<Vec<_>>(),
                "remove": report.remove.iter().map(entry).collect::<Vec<_>>(),
            }))?
        );
    } else {
        for e in &report.keep {
            println!(
                "keep    {} {:<32} {}",
                e.id.short(),
                e.snapshot.as_ref().map_or("?", |s| s.time.as_str()),
                e.reasons.join(", ")
            );
        }
        for e in &report.remove {
            println!(
                "{} {} {}",
                if a.dry_run {
                    "would remove"
                } else {
                    "remove  "
                },
                e.id.short(),
                e.snapshot.as_ref().map_or("?", |s| s.time.as_str()),
            );
        }
        println!(
            "{} snapshot(s) kept, {} {}; data is freed by `chatvault prune`",
            report.keep.len(),
            report.remove.len(),
            if a.dry_run {
                "would be removed"
            } else {
                "removed"
            }
        );
    }
    if a.prune && !a.dry_run {
        let r = prune::prune(&repo, &PruneOptions::default())?;
        if !a.json {
            print_prune(&r, false);
        }
    }
    Ok(exit::OK)
}
