//! Helpers several subcommands share: passwords and keys from the environment, a file or a
//! prompt; private files; notes about vault pins and skipped realms.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use chatvault_format::key::BackupKey;
use chatvault_vault_client::{SecretString, ServerIdentity};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::ui;

/// A password from CHATVAULT_PASSWORD (or CHATVAULT_NEW_PASSWORD for a new one), else a prompt;
/// new passwords are asked twice.
pub(super) fn read_password(prompt: &str, new: bool) -> Result<SecretString> {
    let var = if new {
        "CHATVAULT_NEW_PASSWORD"
    } else {
        "CHATVAULT_PASSWORD"
    };
    if let Some(v) = std::env::var_os(var) {
        let v = v
            .into_string()
            .map_err(|_| anyhow!("{var} is not valid text"))?;
        if v.is_empty() {
            bail!("{var} is empty");
        }
        return Ok(SecretString::from(v));
    }
    let Some(first) = ui::prompt_secret(prompt)? else {
        bail!("a password is needed: run on a terminal, or set {var}");
    };
    if new {
        if first.chars().count() < 6 {
            bail!("the password must have at least 6 characters");
        }
        let again = ui::prompt_secret("Repeat the password: ")?.unwrap_or_default();
        if *again != *first {
            bail!("the passwords do not match");
        }
    }
    Ok(SecretString::from(first.to_string()))
}

pub(super) fn key_from_env_or_file(file: Option<&Path>) -> Result<Option<BackupKey>> {
    if let Some(v) = std::env::var_os("CHATVAULT_KEY") {
        let v = Zeroizing::new(
            v.into_string()
                .map_err(|_| anyhow!("CHATVAULT_KEY is not valid text"))?,
        );
        return Ok(Some(
            BackupKey::parse_hex(&v).context("reading CHATVAULT_KEY")?,
        ));
    }
    if let Some(path) = file {
        let bytes = Zeroizing::new(
            std::fs::read(path).with_context(|| format!("reading key file {}", path.display()))?,
        );
        return Ok(Some(
            BackupKey::from_key_file(&bytes)
                .with_context(|| format!("key file {}", path.display()))?,
        ));
    }
    Ok(None)
}

pub(super) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Says so when there is no pinned vault key: the vault's key is then trusted on first use
/// (docs/SECURITY.md, "Backup Key Vault").
pub(super) fn warn_if_tofu(pinned: Option<&ServerIdentity>) {
    if pinned.is_none() {
        eprintln!(
            "note: no pinned vault key (--vault-identity / CHATVAULT_VAULT_IDENTITY): trusting the \
             key this vault proves on first use (TOFU) and pinning it from now on"
        );
    }
}

pub(super) fn pinned_or_fail(pinned: Option<ServerIdentity>) -> Result<ServerIdentity> {
    pinned.ok_or_else(|| anyhow!("this device has no pinned vault key: pass --vault-identity KEY"))
}

/// Prints the realms a threshold operation skipped (down, refused, misbehaving).
pub(super) fn print_realm_warnings(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: realm skipped: {w}");
    }
}

/// Prints `report` as pretty JSON on stdout (the `--json` output of a subcommand).
pub(super) fn print_json(report: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(report)?);
    Ok(())
}

/// A report with the run's `dry_run` flag next to its own fields (`forget --json`,
/// `prune --json`).
#[derive(Serialize)]
pub(super) struct WithDryRun<'a, T: Serialize> {
    /// Whether the run only said what it would do.
    pub(super) dry_run: bool,
    /// The report's fields.
    #[serde(flatten)]
    pub(super) report: &'a T,
}
