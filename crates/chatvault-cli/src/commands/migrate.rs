//! `chatvault migrate`: upgrades the repository to the current format version.

use anyhow::Result;
use serde::Serialize;

use super::ctx::Ctx;

/// `migrate --json` (one line): the format version before and after, and whether it changed.
#[derive(Serialize)]
struct MigrateJson {
    from: u32,
    to: u32,
    upgraded: bool,
}

pub(super) fn run(ctx: &Ctx, json: bool) -> Result<u8> {
    let (mut repo, _) = ctx.open_checked()?;
    let from = repo.format_version();
    let upgraded = repo.upgrade()?;
    let to = repo.format_version();
    if json {
        let report = MigrateJson { from, to, upgraded };
        println!("{}", serde_json::to_string(&report)?);
    } else if upgraded {
        println!(
            "repository upgraded from format {from} to {to}: new packs are padded and carry no \
             clear-text header length (docs/FORMAT.md §7); existing packs are read as they are. \
             chatvault versions before 0.3 cannot open it any more."
        );
    } else {
        println!("the repository already is at format {to}; nothing to do");
    }
    Ok(0)
}
