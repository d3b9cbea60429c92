//! `chatvault check`: verifies the repository and says which snapshots cannot be restored
//! intact.

use anyhow::Result;
use chatvault_repo::check::{self, CheckOptions};

use super::ctx::Ctx;
use super::shared::print_json;
use crate::args::CheckArgs;
use crate::exit;
use crate::ui::Bar;

pub(super) fn run(ctx: &Ctx, a: &CheckArgs) -> Result<u8> {
    let (repo, _) = ctx.open_checked()?;
    let bar = Bar::new(ctx.quiet || a.json, "checking");
    let r = check::check(
        &repo,
        CheckOptions {
            read_data: a.read_data,
        },
        &bar,
    );
    bar.finish();
    let report = r?;
    if a.json {
        print_json(&report)?;
    } else {
        for w in &report.warnings {
            println!("warning: {w}");
        }
        for e in &report.errors {
            println!("error: {e}");
        }
        for (snap, items) in &report.damaged {
            println!("snapshot {snap}: cannot restore intact:");
            for i in items {
                println!("  {i}");
            }
        }
        println!(
            "{}: {} snapshots, {} packs, {} blobs{}",
            if report.ok() {
                "no errors found"
            } else {
                "repository has errors"
            },
            report.snapshots,
            report.packs,
            report.blobs,
            if a.read_data {
                format!(", {} blobs read and verified", report.blobs_verified)
            } else {
                String::new()
            }
        );
        if !report.damaged_packs.is_empty() {
            let ids: Vec<String> = report.damaged_packs.iter().map(|p| p.short()).collect();
            println!(
                "to salvage the intact blobs of the damaged packs and let the next backup store the rest again: chatvault repair packs {}",
                ids.join(" ")
            );
        }
    }
    Ok(if report.ok() { exit::OK } else { exit::DAMAGED })
}
