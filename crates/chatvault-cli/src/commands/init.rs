//! `chatvault init`: enables end-to-end encrypted backup with a new 64-digit key, a vault
//! password, or a threshold vault.

use std::io::Write;

use anyhow::{Result, anyhow, bail};
use chatvault_client::vault;
use chatvault_repo::repository::Repository;

use super::ctx::Ctx;
use super::shared::{print_realm_warnings, read_password, warn_if_tofu, write_private};
use crate::args::InitArgs;
use crate::exit;

pub(super) fn run(ctx: &Ctx, a: &InitArgs) -> Result<u8> {
    let location = ctx
        .repo
        .clone()
        .ok_or_else(|| anyhow!("give the repository location with --repo URL|PATH"))?;
    if a.password {
        if a.key_out.is_some() {
            bail!("--key-out is for --key mode; in password mode the vault keeps the key");
        }
        return match ctx.threshold_access()? {
            Some(access) => init_threshold(ctx, &location, &access),
            None => init_password(ctx, &location),
        };
    }
    if let Some(p) = &a.key_out
        && p.exists()
    {
        bail!("--key-out {}: file exists; choose a new file", p.display());
    }
    let (repo, key) = chatvault_client::enable_with_key(&ctx.home, &location)?;
    if let Some(p) = &a.key_out {
        let mut text = key.to_hex();
        text.push('\n');
        write_private(p, text.as_bytes())?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "End-to-end encrypted backup is on.")?;
    writeln!(
        out,
        "Repository: {} (id {})",
        repo.storage().location(),
        repo.id().short()
    )?;
    writeln!(out)?;
    writeln!(out, "Your 64-digit backup key:")?;
    writeln!(out)?;
    writeln!(out, "    {}", key.to_grouped_hex().as_str())?;
    writeln!(out)?;
    writeln!(
        out,
        "Write it down or keep it in a password manager. Without it (or this device) your backups \
         cannot be restored: nobody, including the storage provider, can recover them."
    )?;
    Ok(exit::OK)
}

/// `init --password` with a threshold vault (several `--vault` URLs and `--threshold T`).
fn init_threshold(ctx: &Ctx, location: &str, access: &vault::ThresholdAccess) -> Result<u8> {
    if usize::from(access.threshold) * 2 <= access.realms.len() {
        eprintln!(
            "note: threshold {} of {} realms is not above half: two disjoint sets of realms \
             could each hold a registration, and more realms can be asked for guesses \
             (docs/PROTOCOL.md §13.10 recommends t > n/2)",
            access.threshold,
            access.realms.len()
        );
    }
    let password = read_password("Choose a backup password: ", true)?;
    let (repo, warnings) = vault::enable_with_threshold(&ctx.home, location, access, &password)?;
    print_realm_warnings(&warnings);
    print_enabled_with_password(&repo);
    println!(
        "Threshold vault: {} of {} realms, account {} (realm identity keys pinned):",
        access.threshold,
        access.realms.len(),
        access.account
    );
    for (url, _) in &access.realms {
        println!("  {url}");
    }
    println!(
        "On a new device, restore with the password and any {} of the realms. Each realm \
         destroys its share after too many wrong passwords.",
        access.threshold
    );
    Ok(exit::OK)
}

/// `init --password` with one vault.
fn init_password(ctx: &Ctx, location: &str) -> Result<u8> {
    let (access, pinned) = ctx.require_vault()?;
    warn_if_tofu(pinned.as_ref());
    let password = read_password("Choose a backup password: ", true)?;
    let (repo, identity) =
        vault::enable_with_password(&ctx.home, location, &access, &password, pinned.as_ref())?;
    print_enabled_with_password(&repo);
    println!(
        "Vault: {} account {} (server key {identity} pinned)",
        access.url, access.account
    );
    println!(
        "On a new device, restore with the password. After too many wrong passwords the vault \
         destroys the key and the backup cannot be restored."
    );
    Ok(exit::OK)
}

/// The first lines `init --password` prints, for one vault or a threshold vault.
fn print_enabled_with_password(repo: &Repository) {
    println!("End-to-end encrypted backup is on, protected by your password.");
    println!(
        "Repository: {} (id {})",
        repo.storage().location(),
        repo.id().short()
    );
}
