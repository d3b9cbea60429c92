//! One function per subcommand.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use chatvault_client::rollback;
use chatvault_client::vault::{self, VaultAccess};
use chatvault_client::{ClientError, Custody, Home};
use chatvault_format::key::BackupKey;
use chatvault_repo::check::{self, CheckOptions};
use chatvault_repo::prune::{self, KeepPolicy, PruneOptions, PruneReport};
use chatvault_repo::repair::{self, RepairOptions};
use chatvault_repo::repository::Repository;
use chatvault_repo::restore::{self, RestoreOptions};
use chatvault_repo::storage::Limits;
use chatvault_vault_client::{SecretString, ServerIdentity};
use serde_json::json;
use zeroize::Zeroizing;

use crate::args::*;
use crate::exit;
use crate::ui::{self, Bar};

/// A key given by the user that does not work for what it was given for (crypt15).
#[derive(Debug)]
pub struct WrongKey(pub String);
impl std::fmt::Display for WrongKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for WrongKey {}

/// The repository looks rolled back and `--accept-rollback` was not given (exit code 9).
#[derive(Debug)]
pub struct RolledBack(pub String);
impl std::fmt::Display for RolledBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for RolledBack {}

pub fn run(cli: Cli) -> Result<u8> {
    let ctx = Ctx::new(&cli)?;
    match &cli.command {
        Command::Init(a) => init(&ctx, a),
        Command::Backup(a) => backup_cmd(&ctx, a),
        Command::Snapshots(a) => snapshots(&ctx, a.json),
        Command::Restore(a) => restore_cmd(&ctx, a),
        Command::Check(a) => check_cmd(&ctx, a),
        Command::Forget(a) => forget_cmd(&ctx, a),
        Command::Prune(a) => prune_cmd(&ctx, a),
        Command::Repair(RepairCommand::Index(a)) => repair_index_cmd(&ctx, a),
        Command::Key(KeyCommand::Show { yes }) => key_show(&ctx, *yes),
        Command::Key(KeyCommand::ChangePassword) => change_password(&ctx),
        Command::Key(KeyCommand::ToKey) => to_key(&ctx),
        Command::Key(KeyCommand::ToPassword) => to_password(&ctx),
        Command::Disable { yes } => disable(&ctx, *yes),
        Command::Whatsapp(c) => whatsapp(&ctx, c),
        Command::Sample(a) => sample(a),
        Command::Migrate(a) => migrate(&ctx, a.json),
        #[cfg(feature = "demo")]
        Command::Demo {
            keep,
            realms: Some(n),
        } => crate::demo::run_realms(keep.as_deref(), ctx.quiet, *n),
        #[cfg(feature = "demo")]
        Command::Demo { keep, realms: None } => crate::demo::run(keep.as_deref(), ctx.quiet),
    }
}

/// Resolved global settings.
struct Ctx {
    home: Home,
    repo: Option<String>,
    key_file: Option<PathBuf>,
    quiet: bool,
    vault: Option<String>,
    realms: Vec<String>,
    threshold: Option<u8>,
    account: Option<String>,
    account_token_file: Option<PathBuf>,
    account_token_files: Vec<PathBuf>,
    vault_identity: Option<String>,
    vault_ca: Option<PathBuf>,
    accept_rollback: bool,
    limits: Limits,
}

fn default_home() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".chatvault"),
        None => PathBuf::from(".chatvault"),
    }
}

impl Ctx {
    fn new(cli: &Cli) -> Result<Self> {
        Ok(Ctx {
            home: Home::at(cli.home.clone().unwrap_or_else(default_home)),
            repo: cli.repo.clone(),
            key_file: cli.key_file.clone(),
            quiet: cli.quiet,
            vault: match (cli.vault.as_slice(), cli.threshold) {
                ([one], None) => Some(one.clone()),
                _ => None,
            },
            realms: if cli.vault.len() > 1 || cli.threshold.is_some() {
                cli.vault.clone()
            } else {
                Vec::new()
            },
            threshold: cli.threshold,
            account: cli.account.clone(),
            account_token_file: cli.account_token_file.first().cloned(),
            account_token_files: cli.account_token_file.clone(),
            vault_identity: cli.vault_identity.clone(),
            vault_ca: cli.vault_ca.clone(),
            accept_rollback: cli.accept_rollback,
            limits: Limits {
                download: cli.limit_download.map(|k| k.saturating_mul(1024)),
                upload: cli.limit_upload.map(|k| k.saturating_mul(1024)),
            },
        })
    }

    /// The account token: CHATVAULT_ACCOUNT_TOKEN, or --account-token-file.
    fn account_token(&self) -> Result<SecretString> {
        if let Some(t) = std::env::var_os("CHATVAULT_ACCOUNT_TOKEN") {
            let t = t
                .into_string()
                .map_err(|_| anyhow!("CHATVAULT_ACCOUNT_TOKEN is not valid text"))?;
            return Ok(SecretString::from(t.trim().to_string()));
        }
        if let Some(p) = &self.account_token_file {
            let t = std::fs::read_to_string(p)
                .with_context(|| format!("reading account token file {}", p.display()))?;
            return Ok(SecretString::from(t.trim().to_string()));
        }
        bail!(
            "the vault needs an account token: set CHATVAULT_ACCOUNT_TOKEN or pass --account-token-file FILE"
        )
    }

    /// Threshold vault access from --vault … --threshold T / --account, else from the device's
    /// threshold custody (docs/PROTOCOL.md §13). Tokens: CHATVAULT_ACCOUNT_TOKEN for every realm,
    /// or one --account-token-file per realm (same order), or one file for all.
    fn threshold_access(&self) -> Result<Option<vault::ThresholdAccess>> {
        let custody = self.home.config()?.map(|c| c.custody);
        let (urls, threshold, account, pins) = match (self.realms.is_empty(), custody) {
            (false, c) => {
                let threshold = self
                    .threshold
                    .ok_or_else(|| anyhow!("several --vault URLs need --threshold T"))?;
                let account = self
                    .account
                    .clone()
                    .ok_or_else(|| anyhow!("a threshold vault needs --account ID"))?;
                let normalized: Vec<String> = self
                    .realms
                    .iter()
                    .map(|u| vault::normalize_url(u))
                    .collect();
                let pins = match c {
                    Some(Custody::Threshold {
                        realms,
                        account: a,
                        threshold: t,
                    }) if a == account
                        && t == threshold
                        && realms.iter().map(|r| &r.url).eq(normalized.iter()) =>
                    {
                        Some(vault::parse_realm_ids(&realms)?)
                    }
                    _ => None,
                };
                (self.realms.clone(), threshold, account, pins)
            }
            (
                true,
                Some(Custody::Threshold {
                    realms,
                    threshold,
                    account,
                }),
            ) => {
                let pins = vault::parse_realm_ids(&realms)?;
                (
                    realms.into_iter().map(|r| r.url).collect(),
                    threshold,
                    account,
                    Some(pins),
                )
            }
            (true, _) => return Ok(None),
        };
        let tokens: Vec<SecretString> = if std::env::var_os("CHATVAULT_ACCOUNT_TOKEN").is_some()
            || self.account_token_files.len() <= 1
        {
            let t = self.account_token()?;
            vec![t; urls.len()]
        } else if self.account_token_files.len() == urls.len() {
            self.account_token_files
                .iter()
                .map(|p| {
                    std::fs::read_to_string(p)
                        .with_context(|| format!("reading account token file {}", p.display()))
                        .map(|t| SecretString::from(t.trim().to_string()))
                })
                .collect::<Result<_>>()?
        } else {
            bail!(
                "{} --account-token-file for {} realms: give one per --vault (same order), or one for all",
                self.account_token_files.len(),
                urls.len()
            )
        };
        let ca_pem = match &self.vault_ca {
            Some(p) => Some(
                std::fs::read(p).with_context(|| format!("reading --vault-ca {}", p.display()))?,
            ),
            None => None,
        };
        Ok(Some(vault::ThresholdAccess {
            realms: urls.into_iter().zip(tokens).collect(),
            threshold,
            account,
            pins,
            ca_pem,
        }))
    }

    /// Vault access from --vault/--account, else from the device's password custody.
    /// Returns the access and the pinned server identity, if any.
    fn vault_access(&self) -> Result<Option<(VaultAccess, Option<ServerIdentity>)>> {
        let custody = self.home.config()?.map(|c| c.custody);
        let (url, account, pinned) = match (&self.vault, &self.account, custody) {
            (Some(u), Some(a), c) => {
                let pinned = match c {
                    Some(Custody::Password {
                        vault,
                        account,
                        server_key,
                    }) if vault::normalize_url(&vault) == vault::normalize_url(u)
                        && account == *a =>
                    {
                        Some(server_key)
                    }
                    _ => None,
                };
                (u.clone(), a.clone(), pinned)
            }
            (Some(_), None, _) | (None, Some(_), _) => {
                bail!("password mode needs both --vault URL and --account ID")
            }
            (
                None,
                None,
                Some(Custody::Password {
                    vault,
                    account,
                    server_key,
                }),
            ) => (vault, account, Some(server_key)),
            (None, None, _) => return Ok(None),
        };
        let pinned = match (&self.vault_identity, pinned) {
            (Some(given), _) => Some(vault::parse_identity(given)?),
            (None, Some(stored)) => Some(vault::parse_identity(&stored)?),
            (None, None) => None,
        };
        let ca_pem = match &self.vault_ca {
            Some(p) => Some(
                std::fs::read(p).with_context(|| format!("reading --vault-ca {}", p.display()))?,
            ),
            None => None,
        };
        Ok(Some((
            VaultAccess {
                url,
                account,
                token: self.account_token()?,
                ca_pem,
            },
            pinned,
        )))
    }

    fn require_vault(&self) -> Result<(VaultAccess, Option<ServerIdentity>)> {
        self.vault_access()?.ok_or_else(|| {
            anyhow!("no vault configured: pass --vault URL and --account ID (or enable password mode with `chatvault init --password`)")
        })
    }

    /// The repository location: --repo / CHATVAULT_REPO, else the device's configuration.
    fn location(&self) -> Result<String> {
        if let Some(r) = &self.repo {
            return Ok(r.clone());
        }
        match self.home.config()? {
            Some(c) => Ok(c.repo),
            None => Err(ClientError::NotConfigured(self.home.dir().to_path_buf()).into()),
        }
    }

    /// The backup key, from (in order) CHATVAULT_KEY, --key-file, this device's home, or an
    /// interactive prompt.
    fn key(&self) -> Result<BackupKey> {
        if let Some(k) = key_from_env_or_file(self.key_file.as_deref())? {
            return Ok(k);
        }
        let cfg = self.home.config()?;
        let same_repo = match (&self.repo, &cfg) {
            (Some(r), Some(c)) => *r == c.repo,
            (None, Some(_)) => true,
            _ => false,
        };
        if same_repo && let Some(k) = self.home.load_key()? {
            return Ok(k);
        }
        if let Some(access) = self.threshold_access()? {
            let password = read_password("Backup password: ", false)?;
            let (key, ids, warnings) = vault::recover_key_threshold(&access, &password)?;
            print_realm_warnings(&warnings);
            if cfg.is_none() {
                let location = self.location()?;
                vault::adopt_device_threshold(&self.home, &location, &access, &ids, &key)?;
                eprintln!(
                    "This device is now set up to back up to {location} with the threshold vault password (home {}).",
                    self.home.dir().display()
                );
            }
            return Ok(key);
        }
        if let Some((access, pinned)) = self.vault_access()? {
            warn_if_tofu(pinned.as_ref());
            let password = read_password("Backup password: ", false)?;
            let (key, identity) = vault::recover_key(&access, &password, pinned.as_ref())?;
            if cfg.is_none() {
                let location = self.location()?;
                vault::adopt_device(&self.home, &location, &access, &identity, &key)?;
                eprintln!(
                    "This device is now set up to back up to {location} with the vault password (home {}).",
                    self.home.dir().display()
                );
            }
            return Ok(key);
        }
        if let Some(text) = ui::prompt_secret("Enter the 64-digit backup key: ")? {
            return BackupKey::parse_hex(&text).context("reading the typed key");
        }
        bail!(
            "no backup key available: set CHATVAULT_KEY to the 64-digit key, pass --key-file FILE, \
             or run this on the device that made the backup"
        )
    }

    fn open(&self) -> Result<Repository> {
        let location = self.location()?;
        let key = self.key()?;
        let mut repo = chatvault_client::open(&location, &key)?;
        repo.storage().set_limits(self.limits);
        // FORMAT §12.3: metadata the device fetched once is read locally (verified) next time.
        if std::env::var_os("CHATVAULT_NO_CACHE").is_none() {
            repo.set_cache(&self.home.dir().join("cache"));
        }
        Ok(repo)
    }

    /// Opens the repository and checks it was not rolled back (docs/FORMAT.md §9.1): its newest
    /// snapshot must not be older than what this device, or in password mode the vault (in
    /// threshold mode every realm), remembers. Returns the vault access (password mode: one,
    /// threshold mode: one per realm) for recording new snapshots.
    fn open_checked(&self) -> Result<(Repository, Vec<VaultAccess>)> {
        let repo = self.open()?;
        // Threshold mode: every realm carries the commitment (PROTOCOL.md §13.15).
        let access = match self.threshold_access() {
            Ok(Some(t)) => Ok(t.commitment_access()),
            Ok(None) => self
                .vault_access()
                .map(|a| a.map(|(a, _)| a).into_iter().collect()),
            Err(e) => Err(e),
        };
        let access = match access {
            Ok(a) => a,
            Err(e) => {
                eprintln!("warning: the vault's rollback commitment was not checked: {e:#}");
                Vec::new()
            }
        };
        let status = rollback::check_rollback(&self.home, &repo, &access)?;
        for w in &status.warnings {
            eprintln!("warning: {w}");
        }
        if let Some(t) = status.tampered {
            if !self.accept_rollback {
                return Err(
                    RolledBack(format!("{t}. To go on anyway, pass --accept-rollback")).into(),
                );
            }
            eprintln!("WARNING: {t}.");
            eprintln!("WARNING: going on because of --accept-rollback.");
        }
        if let Some(r) = status.rollback {
            if !self.accept_rollback {
                return Err(RolledBack(format!(
                    "{r}. If you know why (for example you restored the storage from an old \
                     copy), pass --accept-rollback"
                ))
                .into());
            }
            eprintln!("WARNING: {r}.");
            eprintln!("WARNING: going on because of --accept-rollback.");
        }
        Ok((repo, access))
    }
}

/// A password from CHATVAULT_PASSWORD (or CHATVAULT_NEW_PASSWORD for a new one), else a prompt;
/// new passwords are asked twice.
fn read_password(prompt: &str, new: bool) -> Result<SecretString> {
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

fn key_from_env_or_file(file: Option<&Path>) -> Result<Option<BackupKey>> {
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

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
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

fn init(ctx: &Ctx, a: &InitArgs) -> Result<u8> {
    let location = ctx
        .repo
        .clone()
        .ok_or_else(|| anyhow!("give the repository location with --repo URL|PATH"))?;
    if a.password {
        if a.key_out.is_some() {
            bail!("--key-out is for --key mode; in password mode the vault keeps the key");
        }
        if let Some(access) = ctx.threshold_access()? {
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
            let (repo, warnings) =
                vault::enable_with_threshold(&ctx.home, &location, &access, &password)?;
            print_realm_warnings(&warnings);
            println!("End-to-end encrypted backup is on, protected by your password.");
            println!(
                "Repository: {} (id {})",
                repo.storage().location(),
                repo.id().short()
            );
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
            return Ok(exit::OK);
        }
        let (access, pinned) = ctx.require_vault()?;
        warn_if_tofu(pinned.as_ref());
        let password = read_password("Choose a backup password: ", true)?;
        let (repo, identity) =
            vault::enable_with_password(&ctx.home, &location, &access, &password, pinned.as_ref())?;
        println!("End-to-end encrypted backup is on, protected by your password.");
        println!(
            "Repository: {} (id {})",
            repo.storage().location(),
            repo.id().short()
        );
        println!(
            "Vault: {} account {} (server key {identity} pinned)",
            access.url, access.account
        );
        println!(
            "On a new device, restore with the password. After too many wrong passwords the vault \
             destroys the key and the backup cannot be restored."
        );
        return Ok(exit::OK);
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

fn backup_cmd(ctx: &Ctx, a: &BackupArgs) -> Result<u8> {
    let (repo, access) = ctx.open_checked()?;
    let bar = Bar::new(ctx.quiet || a.json, "backing up");
    // The workflow (device id, min_seq, scratch folder, record_snapshot) is the SDK's.
    let r = chatvault_client::device::backup_recorded(
        &ctx.home,
        &repo,
        &access,
        &a.paths,
        a.host.clone(),
        a.force,
        &bar,
    );
    bar.finish();
    let (out, recorded) = r?;
    let tampered = match recorded {
        rollback::Recorded::Done => None,
        rollback::Recorded::Warning(w) => {
            eprintln!("warning: {w}");
            None
        }
        rollback::Recorded::Tampered(t) if ctx.accept_rollback => {
            eprintln!("WARNING: {t}.");
            None
        }
        rollback::Recorded::Tampered(t) => Some(t),
    };
    let s = &out.snapshot.summary;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"id": out.id, "snapshot": out.snapshot}))?
        );
    } else {
        println!(
            "snapshot {} saved: {} files, {} dirs, {} bytes; {} files read, {} new bytes in {} blobs, {} bytes uploaded",
            out.id.short(),
            s.files,
            s.dirs,
            s.bytes,
            s.files_read,
            s.new_bytes,
            s.new_blobs,
            s.uploaded_bytes
        );
        for p in &s.unreadable {
            eprintln!("not backed up: {}: {}", p.path, p.error);
        }
        for p in &s.changed_while_reading {
            eprintln!("changed while reading (may be inconsistent): {p}");
        }
    }
    if let Some(t) = tampered {
        return Err(RolledBack(format!("snapshot {} is saved, but {t}", out.id.short())).into());
    }
    if s.is_complete() {
        Ok(exit::OK)
    } else {
        eprintln!(
            "backup is partial: {} item(s) not backed up, {} changed while reading",
            s.unreadable.len(),
            s.changed_while_reading.len()
        );
        Ok(exit::PARTIAL)
    }
}

fn snapshots(ctx: &Ctx, json_out: bool) -> Result<u8> {
    let (repo, _) = ctx.open_checked()?;
    let all = repo.snapshots()?;
    let mut damaged = 0;
    if json_out {
        let v: Vec<_> = all
            .iter()
            .map(|(id, s)| match s {
                Ok(s) => {
                    json!({"id": id, "short_id": id.short(), "time": s.time, "hostname": s.hostname,
                    "device": s.device, "device_short": s.device.as_deref().map(short_device),
                    "paths": s.paths, "files": s.summary.files, "bytes": s.summary.bytes,
                    "complete": s.summary.is_complete(), "parent": s.parent})
                }
                Err(e) => {
                    damaged += 1;
                    json!({"id": id, "short_id": id.short(), "error": e.to_string()})
                }
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{:<10} {:<32} {:<16} {:<8} {:>8} {:>14}  paths",
            "id", "time", "host", "device", "files", "bytes"
        );
        for (id, s) in &all {
            match s {
                Ok(s) => println!(
                    "{:<10} {:<32} {:<16} {:<8} {:>8} {:>14}  {}{}",
                    id.short(),
                    s.time,
                    s.hostname,
                    s.device.as_deref().map_or("-", short_device),
                    s.summary.files,
                    s.summary.bytes,
                    s.paths.join(", "),
                    if s.summary.is_complete() {
                        ""
                    } else {
                        "  (partial)"
                    }
                ),
                Err(e) => {
                    damaged += 1;
                    println!("{:<10} DAMAGED: {e}", id.short())
                }
            }
        }
        println!("{} snapshot(s)", all.len());
    }
    Ok(if damaged > 0 { exit::DAMAGED } else { exit::OK })
}

/// The first 8 digits of a device id, for listings (the host name is only a label: two phones
/// can both be `localhost`).
fn short_device(d: &str) -> &str {
    d.get(..8).unwrap_or(d)
}

fn restore_cmd(ctx: &Ctx, a: &RestoreArgs) -> Result<u8> {
    let (repo, _) = ctx.open_checked()?;
    let (id, snap) = repo.find_snapshot(&a.snapshot)?;
    if a.snapshot == "latest" {
        let damaged = repo.snapshots()?.iter().filter(|(_, s)| s.is_err()).count();
        if damaged > 0 {
            eprintln!(
                "warning: {damaged} snapshot(s) are damaged and were skipped; `latest` is the \
                 newest readable one, {} ({}). Run `chatvault check`.",
                id.short(),
                snap.time
            );
        }
    }
    let bar = Bar::new(ctx.quiet || a.json, "restoring");
    let opts = RestoreOptions {
        include: a.include.clone(),
        overwrite: a.overwrite,
        max_entries: None,
        readers: a.readers.map(usize::from),
    };
    let r = if a.json {
        restore::restore(&repo, &snap, &a.target, &opts, &ui::JsonEvents)
    } else {
        restore::restore(&repo, &snap, &a.target, &opts, &bar)
    };
    bar.finish();
    let out = r?;
    if a.json {
        let failed: Vec<_> = out
            .failed
            .iter()
            .map(|(p, e)| json!({"path": p, "error": e}))
            .collect();
        let skipped: Vec<_> = out
            .skipped
            .iter()
            .map(|(p, e)| json!({"path": p, "reason": e}))
            .collect();
        ui::json_line(
            &json!({"event": "summary", "snapshot": id, "files": out.files,
            "kept": out.kept, "dirs": out.dirs, "bytes": out.bytes, "cleaned": out.cleaned,
            "downloaded_bytes": out.downloaded_bytes, "failed": failed, "skipped": skipped}),
        );
    } else {
        let kept = if out.kept > 0 {
            format!(" ({} already complete from an earlier run, kept)", out.kept)
        } else {
            String::new()
        };
        println!(
            "restored snapshot {} ({}) to {}: {} files{kept}, {} dirs, {} bytes",
            id.short(),
            snap.time,
            a.target.display(),
            out.files,
            out.dirs,
            out.bytes
        );
    }
    for (p, why) in &out.skipped {
        eprintln!("skipped {p}: {why}");
    }
    if out.failed.is_empty() {
        Ok(exit::OK)
    } else {
        eprintln!(
            "{} item(s) could not be restored (nothing unverified was written):",
            out.failed.len()
        );
        for (p, e) in &out.failed {
            eprintln!("  {p}: {e}");
        }
        Ok(exit::DAMAGED)
    }
}

fn migrate(ctx: &Ctx, json: bool) -> Result<u8> {
    let (mut repo, _) = ctx.open_checked()?;
    let from = repo.format_version();
    let upgraded = repo.upgrade()?;
    let to = repo.format_version();
    if json {
        println!(
            "{}",
            serde_json::json!({"from": from, "to": to, "upgraded": upgraded})
        );
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

fn check_cmd(ctx: &Ctx, a: &CheckArgs) -> Result<u8> {
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
        println!("{}", serde_json::to_string_pretty(&report)?);
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
    }
    Ok(if report.ok() { exit::OK } else { exit::DAMAGED })
}

fn forget_cmd(ctx: &Ctx, a: &ForgetArgs) -> Result<u8> {
    let (repo, _) = ctx.open_checked()?;
    let policy = KeepPolicy {
        last: a.keep_last,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
    };
    let report = prune::forget(&repo, &policy, a.dry_run)?;
    let entry = |e: &prune::ForgetEntry| {
        json!({"id": e.id, "short_id": e.id.short(),
               "time": e.snapshot.as_ref().map(|s| s.time.clone()),
               "hostname": e.snapshot.as_ref().map(|s| s.hostname.clone()),
               "device": e.snapshot.as_ref().and_then(|s| s.device.clone()),
               "reasons": e.reasons})
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "dry_run": a.dry_run,
                "keep": report.keep.iter().map(entry).collect::<Vec<_>>(),
                "remove": report.remove.iter().map(entry).collect::<Vec<_>>(),
            }))?
        );
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

fn prune_cmd(ctx: &Ctx, a: &PruneArgs) -> Result<u8> {
    let (repo, _) = ctx.open_checked()?;
    let opts = PruneOptions {
        dry_run: a.dry_run,
        grace: a.grace,
        repack_threshold_percent: a.repack_threshold,
    };
    let r = prune::prune(&repo, &opts)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "dry_run": a.dry_run,
                "snapshots": r.snapshots, "used_blobs": r.used_blobs,
                "packs_before": r.packs_before, "bytes_before": r.bytes_before,
                "unused_packs": r.unused_packs, "unused_bytes": r.unused_bytes,
                "repacked_packs": r.repacked_packs, "repacked_bytes": r.repacked_bytes,
                "new_packs": r.new_packs, "new_bytes": r.new_bytes,
                "unindexed_packs": r.unindexed_packs, "unindexed_bytes": r.unindexed_bytes,
                "young_unindexed_packs": r.young_unindexed_packs, "young_unindexed_bytes": r.young_unindexed_bytes,
                "undated_unindexed_packs": r.undated_unindexed_packs, "undated_unindexed_bytes": r.undated_unindexed_bytes,
                "plan": r.plan, "swept_plans": r.swept_plans,
                "deleted_packs": r.deleted_packs, "deleted_bytes": r.deleted_bytes,
                "deleted_index": r.deleted_index, "rescued_packs": r.rescued_packs,
                "postponed": r.postponed.iter().map(|(id, why)| json!({"plan": id, "reason": why})).collect::<Vec<_>>(),
            }))?
        );
    } else {
        print_prune(&r, a.dry_run);
    }
    Ok(exit::OK)
}

fn print_prune(r: &PruneReport, dry_run: bool) {
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

fn repair_index_cmd(ctx: &Ctx, a: &RepairIndexArgs) -> Result<u8> {
    let (repo, _) = ctx.open_checked()?;
    let r = repair::repair_index(
        &repo,
        &RepairOptions {
            dry_run: a.dry_run,
            all: a.all,
        },
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
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

fn key_show(ctx: &Ctx, yes: bool) -> Result<u8> {
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

/// Says so when there is no pinned vault key: the vault's key is then trusted on first use
/// (docs/SECURITY.md, "Backup Key Vault").
fn warn_if_tofu(pinned: Option<&ServerIdentity>) {
    if pinned.is_none() {
        eprintln!(
            "note: no pinned vault key (--vault-identity / CHATVAULT_VAULT_IDENTITY): trusting the \
             key this vault proves on first use (TOFU) and pinning it from now on"
        );
    }
}

fn pinned_or_fail(pinned: Option<ServerIdentity>) -> Result<ServerIdentity> {
    pinned.ok_or_else(|| anyhow!("this device has no pinned vault key: pass --vault-identity KEY"))
}

/// Prints the realms a threshold operation skipped (down, refused, misbehaving).
fn print_realm_warnings(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: realm skipped: {w}");
    }
}

fn change_password(ctx: &Ctx) -> Result<u8> {
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

fn to_key(ctx: &Ctx) -> Result<u8> {
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

fn to_password(ctx: &Ctx) -> Result<u8> {
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

fn disable(ctx: &Ctx, yes: bool) -> Result<u8> {
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

fn whatsapp(ctx: &Ctx, c: &WhatsappCommand) -> Result<u8> {
    let (a, decrypt) = match c {
        WhatsappCommand::Decrypt(a) => (a, true),
        WhatsappCommand::Encrypt(a) => (a, false),
    };
    let key = match key_from_env_or_file(a.key.as_deref().or(ctx.key_file.as_deref()))? {
        Some(k) => k,
        None => match ui::prompt_secret("Enter the 64-digit key: ")? {
            Some(t) => BackupKey::parse_hex(&t)?,
            None => bail!("no key: pass --key KEY_FILE or set CHATVAULT_KEY to the 64 hex digits"),
        },
    };
    if a.output.symlink_metadata().is_ok() {
        bail!("{} exists; choose a new output file", a.output.display());
    }
    let out_dir = match a.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if decrypt {
        let input = std::fs::File::open(&a.input)
            .with_context(|| format!("opening {}", a.input.display()))?;
        let d = match chatvault_whatsapp::decrypt_to_file(key.expose_bytes(), input, &out_dir) {
            Ok(d) => d,
            Err(chatvault_whatsapp::Error::WrongKey) => {
                return Err(WrongKey(
                    "wrong key: this 64-digit key does not decrypt this backup".into(),
                )
                .into());
            }
            Err(e) => return Err(e).with_context(|| format!("decrypting {}", a.input.display())),
        };
        let (len, kind) = (d.output_len(), d.kind());
        d.persist_noclobber(&a.output)
            .with_context(|| format!("writing {}", a.output.display()))?;
        println!(
            "decrypted {} → {} ({len} bytes, {kind:?})",
            a.input.display(),
            a.output.display()
        );
    } else {
        let db =
            std::fs::read(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
        let enc = chatvault_whatsapp::encrypt(
            key.expose_bytes(),
            &db,
            &chatvault_whatsapp::EncryptOptions::default(),
            &mut rand_core::OsRng,
        )?;
        let tmp = out_dir.join(format!(".chatvault-crypt15-{}", std::process::id()));
        write_private(&tmp, &enc)?;
        std::fs::hard_link(&tmp, &a.output)
            .with_context(|| format!("writing {}", a.output.display()))?;
        std::fs::remove_file(&tmp)?;
        println!(
            "encrypted {} → {} ({} bytes)",
            a.input.display(),
            a.output.display(),
            enc.len()
        );
    }
    Ok(exit::OK)
}

fn sample(a: &SampleArgs) -> Result<u8> {
    use chatvault_sample::SampleSpec;
    let spec = match a.preset {
        Preset::Small => SampleSpec::small(),
        Preset::Benchmark => SampleSpec::benchmark(),
    }
    .with_seed(a.seed);
    match a.next_day {
        None => {
            let s = chatvault_sample::generate(&a.dir, &spec)?;
            println!(
                "generated {}: {} messages in {} chats, {} media files ({} bytes), msgstore.db {} bytes",
                a.dir.display(),
                s.messages,
                s.chats,
                s.media_files,
                s.media_bytes,
                s.msgstore_bytes
            );
        }
        Some(day) => {
            let d = chatvault_sample::next_day(&a.dir, &spec, day)?;
            println!(
                "day {}: {} messages, {} media files ({} bytes) added; {} edited, {} deleted",
                d.day,
                d.messages_added,
                d.media_files_added,
                d.media_bytes_added,
                d.messages_edited,
                d.messages_deleted
            );
        }
    }
    Ok(exit::OK)
}
