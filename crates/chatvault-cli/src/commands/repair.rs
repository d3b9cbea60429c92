//! `chatvault repair index`: re-indexes packs from their headers; `chatvault repair packs`:
//! salvages packs with damaged blobs.

use anyhow::Result;
use chatvault_repo::repair::{self, PackOutcome, RepairOptions, RepairPacksOptions};

use super::ctx::Ctx;
use super::shared::print_json;
use crate::args::{RepairIndexArgs, RepairPacksArgs};
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

pub(super) fn packs(ctx: &Ctx, a: &RepairPacksArgs) -> Result<u8> {
    let (repo, _) = ctx.open_checked()?;
    let ids = repair::find_packs(&repo, &a.packs)?;
    let r = repair::repair_packs(&repo, &ids, &RepairPacksOptions { dry_run: a.dry_run })?;
    if a.json {
        print_json(&r)?;
        return Ok(if r.ok() { exit::OK } else { exit::DAMAGED });
    }
    let would = if a.dry_run { "would be " } else { "" };
    for p in &r.packs {
        let lost = p.lost.iter().filter(|b| !b.elsewhere).count();
        match p.outcome {
            PackOutcome::Intact => println!(
                "pack {}: intact ({} blobs verified); left as it is",
                p.pack.short(),
                p.salvaged
            ),
            PackOutcome::Repaired => println!(
                "pack {}: {} blob(s) damaged ({lost} with no other copy){}, {} intact blob(s) {would}copied into new packs; the pack {would}removed",
                p.pack.short(),
                p.lost.len(),
                if p.header_damaged {
                    ", header damaged"
                } else {
                    ""
                },
                p.salvaged
            ),
            PackOutcome::Missing => println!(
                "pack {}: missing from storage; its {} blob(s) ({lost} with no other copy) {would}removed from the index",
                p.pack.short(),
                p.lost.len()
            ),
            PackOutcome::Unstable => println!(
                "error: pack {}: two reads disagreed on which blobs are damaged (unreliable storage or network); left as it is, try again later",
                p.pack.short()
            ),
        }
        for b in &p.lost {
            let copy = if b.elsewhere {
                " (another pack holds it)"
            } else {
                ""
            };
            println!(
                "  {} {}: {}{copy}",
                b.ty.kind().name(),
                b.id.short(),
                b.reason
            );
        }
    }
    if a.dry_run {
        println!("dry run: nothing written or deleted");
    } else if !r.new_packs.is_empty() || !r.index_written.is_empty() {
        println!(
            "{} new pack(s), {} index object(s) written, {} deleted; {} pack(s) deleted",
            r.new_packs.len(),
            r.index_written.len(),
            r.index_deleted.len(),
            r.packs_deleted
        );
    }
    if r.lost_blobs() > 0 {
        println!(
            "{} damaged blob(s) are in no other pack: run a backup on each device that still has their files (it stores them again, and every snapshot that needs them is whole again); `chatvault check` names the files still affected",
            r.lost_blobs()
        );
    }
    Ok(if r.ok() { exit::OK } else { exit::DAMAGED })
}
