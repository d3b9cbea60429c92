//! `chatvault prune`: frees the data no snapshot needs any more (plan, then sweep).

use anyhow::Result;
use chatvault_repo::prune::{self, PruneOptions, PruneReport};

use super::ctx::Ctx;
use super::shared::{WithDryRun, print_json};
use crate::args::PruneArgs;
use crate::exit;

pub(super) fn run(ctx: &Ctx, a: &PruneArgs) -> Result<u8> {
    let (repo, _) = ctx.open_checked()?;
    let opts = PruneOptions {
        dry_run: a.dry_run,
        grace: a.grace,
        repack_threshold_percent: a.repack_threshold,
    };
    let r = prune::prune(&repo, &opts)?;
    if a.json {
        print_json(&WithDryRun {
            dry_run: a.dry_run,
            report: &r,
        })?;
    } else {
        print_prune(&r, a.dry_run);
    }
    Ok(exit::OK)
}

pub(super) fn print_prune(r: &PruneReport, dry_run: bool) {
    let would = if dry_run { "would be " } else { "" };
    let condemn = if dry_run {
        "would condemn"
    } else {
        "condemned"
    };
    println!(
        "{} snapshot(s) need {} blob(s) in {} pack(s) ({} bytes)",
        r.snapshots, r.used_blobs, r.packs_before, r.bytes_before
    );
    println!(
        "{condemn}: {} unused pack(s) ({} bytes), {} mostly-unused pack(s) repacked ({} bytes, into {} new pack(s) of {} bytes), {} unindexed pack(s) ({} bytes)",
        r.unused_packs,
        r.unused_bytes,
        r.repacked_packs,
        r.repacked_bytes,
        r.new_packs,
        r.new_bytes,
        r.unindexed_packs,
        r.unindexed_bytes
    );
    if r.young_unindexed_packs > 0 {
        println!(
            "left alone: {} unindexed pack(s) ({} bytes) younger than {} hours by storage time (a running backup may still index them)",
            r.young_unindexed_packs,
            r.young_unindexed_bytes,
            prune::UNINDEXED_PACK_MIN_AGE.as_secs() / 3600
        );
    }
    if r.undated_unindexed_packs > 0 {
        println!(
            "left alone: {} unindexed pack(s) ({} bytes) of unknown age (this storage reports no modification times)",
            r.undated_unindexed_packs, r.undated_unindexed_bytes
        );
    }
    if let Some(p) = &r.plan {
        println!("prune plan {} written", p.short());
    }
    if !r.swept_plans.is_empty() {
        println!(
            "{} plan(s) swept: {} pack(s) ({} bytes) and {} index object(s) {would}deleted, {} pack(s) rescued",
            r.swept_plans.len(),
            r.deleted_packs,
            r.deleted_bytes,
            r.deleted_index,
            r.rescued_packs
        );
    }
    for (id, why) in &r.postponed {
        println!("plan {} not swept yet: {why}", id.short());
    }
}
