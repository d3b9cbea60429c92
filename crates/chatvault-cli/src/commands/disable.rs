//! `chatvault disable`: turns backup off and deletes every backup (and the vault record).

use anyhow::{Result, anyhow, bail};
use chatvault_client::Custody;
use chatvault_client::vault;

use super::ctx::Ctx;
use super::shared::{pinned_or_fail, read_password};
use crate::exit;
use crate::ui;

pub(super) fn run(ctx: &Ctx, yes: bool) -> Result<u8> {
    let cfg = ctx.home.require_config()?;
    if !yes {
        match ui::prompt_line(&format!(
            "This deletes every backup in {} and cannot be undone. Type `delete` to continue: ",
            cfg.repo
        ))? {
            Some(s) if s == "delete" => {}
            Some(_) => bail!("not confirmed; nothing was deleted"),
            None => {
                bail!("refusing to delete without confirmation: run on a terminal, or pass --yes")
            }
        }
    }
    let removed = match &cfg.custody {
        Custody::Password { .. } => {
            let (access, pinned) = ctx.require_vault()?;
            let pinned = pinned_or_fail(pinned)?;
            let password = read_password("Current password: ", false)?;
            vault::disable(&ctx.home, Some((&access, &password, &pinned)))?
        }
        Custody::Threshold { .. } => {
            let access = ctx
                .threshold_access()?
                .ok_or_else(|| anyhow!("the threshold vault configuration is missing"))?;
            let password = read_password("Current password: ", false)?;
            for f in vault::delete_threshold(&access, &password)? {
                eprintln!(
                    "warning: could not delete the registration at {f}; delete it there later"
                );
            }
            vault::disable(&ctx.home, None)?
        }
        _ => vault::disable(&ctx.home, None)?,
    };
    println!(
        "End-to-end encrypted backup is off: {removed} object(s) deleted from {}.",
        cfg.repo
    );
    Ok(exit::OK)
}
