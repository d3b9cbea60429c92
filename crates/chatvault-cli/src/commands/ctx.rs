//! The resolved global settings of one run ([`Ctx`]) and what every subcommand derives from
//! them: the repository location, the backup key (environment, key file, this device's home,
//! the vault, or a prompt), vault access, and the repository opened with the rollback check.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use chatvault_client::rollback;
use chatvault_client::vault::{self, VaultAccess};
use chatvault_client::{ClientError, Custody, DeviceError, Home};
use chatvault_format::key::BackupKey;
use chatvault_repo::repository::Repository;
use chatvault_repo::storage::Limits;
use chatvault_vault_client::{SecretString, ServerIdentity};

use super::shared::{key_from_env_or_file, print_realm_warnings, read_password, warn_if_tofu};
use crate::args::Cli;
use crate::ui;

/// Resolved global settings.
pub(super) struct Ctx {
    pub(super) home: Home,
    pub(super) repo: Option<String>,
    pub(super) key_file: Option<PathBuf>,
    pub(super) quiet: bool,
    pub(super) vault: Option<String>,
    pub(super) realms: Vec<String>,
    pub(super) threshold: Option<u8>,
    pub(super) account: Option<String>,
    pub(super) account_token_file: Option<PathBuf>,
    pub(super) account_token_files: Vec<PathBuf>,
    pub(super) vault_identity: Option<String>,
    pub(super) vault_ca: Option<PathBuf>,
    pub(super) accept_rollback: bool,
    pub(super) limits: Limits,
}

fn default_home() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".chatvault"),
        None => PathBuf::from(".chatvault"),
    }
}

impl Ctx {
    pub(super) fn new(cli: &Cli) -> Result<Self> {
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
    pub(super) fn account_token(&self) -> Result<SecretString> {
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
    pub(super) fn threshold_access(&self) -> Result<Option<vault::ThresholdAccess>> {
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
    pub(super) fn vault_access(&self) -> Result<Option<(VaultAccess, Option<ServerIdentity>)>> {
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

    pub(super) fn require_vault(&self) -> Result<(VaultAccess, Option<ServerIdentity>)> {
        self.vault_access()?.ok_or_else(|| {
            anyhow!("no vault configured: pass --vault URL and --account ID (or enable password mode with `chatvault init --password`)")
        })
    }

    /// The repository location: --repo / CHATVAULT_REPO, else the device's configuration.
    pub(super) fn location(&self) -> Result<String> {
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
    pub(super) fn key(&self) -> Result<BackupKey> {
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

    pub(super) fn open(&self) -> Result<Repository> {
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
    pub(super) fn open_checked(&self) -> Result<(Repository, Vec<VaultAccess>)> {
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
                return Err(DeviceError::RolledBack {
                    message: format!("{t}. To go on anyway, pass --accept-rollback"),
                }
                .into());
            }
            eprintln!("WARNING: {t}.");
            eprintln!("WARNING: going on because of --accept-rollback.");
        }
        if let Some(r) = status.rollback {
            if !self.accept_rollback {
                return Err(DeviceError::RolledBack {
                    message: format!(
                        "{r}. If you know why (for example you restored the storage from an old \
                         copy), pass --accept-rollback"
                    ),
                }
                .into());
            }
            eprintln!("WARNING: {r}.");
            eprintln!("WARNING: going on because of --accept-rollback.");
        }
        Ok((repo, access))
    }
}
