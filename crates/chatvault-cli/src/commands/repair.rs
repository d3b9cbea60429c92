//! `chatvault repair index`: re-indexes packs from their headers.

use anyhow::Result;
use chatvault_repo::repair::{self, RepairOptions};

use super::ctx::Ctx;
use super::shared::print_json;
use crate::args::RepairIndexArgs;
use crate::exit;

pub(super) fn index(ctx: &Ctx, a: &RepairIndexArgs) -> Result<u8> {
    let (repo, _) = ctx.open_checked()?;
    let r = repair::repair_index(
        &repo,
        &RepairOptions {
            dry_run: a.dry_run,
            all: a.all,
        },
    )?;
    if a.json {
        print_json(&r)?;
    } else {
        let would = if a.dry_run { "would be " } else { "" };
        println!(
            "{} pack(s) in storage: {} already indexed, {} {would}re-indexed from their headers ({} blobs, {} bytes)",
            r.packs_scanned, r.packs_already_indexed, r.packs_reindexed, r.blobs, r.bytes
        );
        if r.condemned_reindexed > 0 {
            println!(
                "{} re-indexed pack(s) are condemned by a prune plan: the plan's sweep now keeps them; a later prune frees them if no snapshot needs them",
                r.condemned_reindexed
            );
        }
        for u in &r.unreadable {
            println!(
                "error: pack {} ({} bytes): {}; not indexed (files that need it stay unrestorable)",
                u.pack.short(),
                u.size,
                u.reason
            );
        }
        if r.vanished > 0 {
            println!(
                "{} pack(s) disappeared while repair ran (deleted by a prune sweep)",
                r.vanished
            );
        }
        for (id, why) in &r.damaged_index {
            println!(
                "warning: index object {} is damaged ({why}); its packs were re-indexed, the object itself is left in place (check reports it until it is deleted)",
                id.short()
            );
        }
        for path in &r.unexpected {
            println!("warning: unexpected object {path} (not a pack at its place; ignored)");
        }
        if a.dry_run {
            println!("dry run: nothing written");
        } else {
            println!("{} index object(s) written", r.index_written.len());
        }
        if !r.ok() {
            println!(
                "{} pack header(s) are damaged; run `chatvault check --read-data` to see which files are affected",
                r.unreadable.len()
            );
        }
    }
    Ok(if r.ok() { exit::OK } else { exit::DAMAGED })
}
