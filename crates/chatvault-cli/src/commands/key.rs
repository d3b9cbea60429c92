//! `chatvault key …`: shows the key, changes the password, switches between the 64-digit key
//! and a vault password.

use anyhow::{Result, bail};
use chatvault_client::ClientError;
use chatvault_client::vault;

use super::ctx::Ctx;
use super::shared::{pinned_or_fail, print_realm_warnings, read_password, warn_if_tofu};
use crate::exit;
use crate::ui;

pub(super) fn show(ctx: &Ctx, yes: bool) -> Result<u8> {
    let key = ctx
        .home
        .load_key()?
        .ok_or_else(|| ClientError::NotConfigured(ctx.home.dir().to_path_buf()))?;
    if !yes {
        match ui::prompt_line(
            "Anyone who sees the key can read your backups. Type `show` to display it: ",
        )? {
            Some(s) if s == "show" => {}
            Some(_) => bail!("not confirmed; the key was not shown"),
            None => bail!(
                "refusing to print the key without confirmation: run on a terminal, or pass --yes"
            ),
        }
    }
    println!("{}", key.to_grouped_hex().as_str());
    Ok(exit::OK)
}

pub(super) fn change_password(ctx: &Ctx) -> Result<u8> {
    if let Some(access) = ctx.threshold_access()? {
        let old = read_password("Current password: ", false)?;
        let new = read_password("New password: ", true)?;
        print_realm_warnings(&vault::change_password_threshold(&access, &old, &new)?);
        println!("Password changed. The backup key (and every backup) stays the same.");
        return Ok(exit::OK);
    }
    let (access, pinned) = ctx.require_vault()?;
    let pinned = pinned_or_fail(pinned)?;
    let old = read_password("Current password: ", false)?;
    let new = read_password("New password: ", true)?;
    vault::change_password(&access, &old, &new, &pinned)?;
    println!("Password changed. The backup key (and every backup) stays the same.");
    Ok(exit::OK)
}

pub(super) fn to_key(ctx: &Ctx) -> Result<u8> {
    let key = if let Some(access) = ctx.threshold_access()? {
        let password = read_password("Current password: ", false)?;
        let (key, failed) = vault::to_key_threshold(&ctx.home, &access, &password)?;
        for f in &failed {
            eprintln!("warning: could not delete the registration at {f}; delete it there later");
        }
        key
    } else {
        let (access, pinned) = ctx.require_vault()?;
        let pinned = pinned_or_fail(pinned)?;
        let password = read_password("Current password: ", false)?;
        vault::to_key(&ctx.home, &access, &password, &pinned)?
    };
    println!("Switched to the 64-digit key; the vault no longer holds it.");
    println!();
    println!("    {}", key.to_grouped_hex().as_str());
    println!();
    println!(
        "Write it down or keep it in a password manager: it is now the only way to restore on a new device."
    );
    Ok(exit::OK)
}

pub(super) fn to_password(ctx: &Ctx) -> Result<u8> {
    if let Some(access) = ctx.threshold_access()? {
        let password = read_password("Choose a backup password: ", true)?;
        print_realm_warnings(&vault::to_threshold(&ctx.home, &access, &password)?);
        println!(
            "Switched to password mode: {} of {} realms keep the key (realm identity keys pinned).",
            access.threshold,
            access.realms.len()
        );
        println!(
            "The old 64-digit key still opens the backups; destroy written copies if you no longer want that."
        );
        return Ok(exit::OK);
    }
    let (access, pinned) = ctx.require_vault()?;
    warn_if_tofu(pinned.as_ref());
    let password = read_password("Choose a backup password: ", true)?;
    let identity = vault::to_password(&ctx.home, &access, &password, pinned.as_ref())?;
    println!(
        "Switched to password mode: the vault {} keeps the key (server key {identity} pinned).",
        access.url
    );
    println!(
        "The old 64-digit key still opens the backups; destroy written copies if you no longer want that."
    );
    Ok(exit::OK)
}
