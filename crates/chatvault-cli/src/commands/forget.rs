//! `chatvault forget`: removes snapshots by a retention policy (and prunes with `--prune`).

use anyhow::Result;
use chatvault_repo::forget::{self, KeepPolicy};
use chatvault_repo::prune::{self, PruneOptions};

use super::ctx::Ctx;
use super::prune::print_prune;
use super::shared::{WithDryRun, print_json};
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
    let report = forget::forget(&repo, &policy, a.dry_run)?;
    if a.json {
        print_json(&WithDryRun {
            dry_run: a.dry_run,
            report: &report,
        })?;
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
