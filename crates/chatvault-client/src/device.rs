//! The device as an app embeds it: [`Device`] is opened on a home and runs every workflow with
//! its checks, so no caller can forget one.
//!
//! - every operation on an existing backup opens the repository with the home's key and runs
//!   the rollback check (docs/FORMAT.md §9.1) first: the repository's newest snapshot must not
//!   be older than what this device, or in password mode the vault, remembers;
//! - a backup gets this device's id, the rollback memory as `min_seq` and the home's scratch
//!   folder, and its snapshot is recorded afterwards (device memory, vault commitment);
//! - a restore on a new home with the key or the password adopts the home, so the new phone
//!   backs up from then on.
//!
//! Progress goes to a [`ProgressListener`] (`on_progress(done_bytes, total_bytes, path)`),
//! throttled so that a callback across a language boundary stays cheap; a [`CancelToken`] stops
//! a backup before its snapshot is written (nothing is published, `check` stays clean) or a
//! restore between batches of files. Errors are one [`DeviceError`] that carries its data.
//!
//! ```no_run
//! use chatvault_client::device::Device;
//! let phone = Device::open("/tmp/phone-a");
//! let key_text = phone.enable_with_key("/tmp/repo")?;
//! let info = phone.backup_now(&["/tmp/chats".into()], None, None)?;
//! println!("snapshot {} ({} files); key {}", info.id, info.files, key_text.as_str());
//! # Ok::<(), chatvault_client::device::DeviceError>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chatvault_format::id::SnapshotId;
use chatvault_format::key::BackupKey;
use chatvault_format::objects::Snapshot;
use chatvault_repo::RepoError;
use chatvault_repo::backup::{self, BackupOptions, BackupOutcome, Progress};
use chatvault_repo::check::{self, CheckOptions};
use chatvault_repo::repository::Repository;
use chatvault_repo::restore::{RestoreEvent, RestoreOptions};
use chatvault_repo::storage::Limits;
use chatvault_vault_client::{SecretString, ServerIdentity};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::rollback::{self, Recorded};
use crate::vault::{self, VaultAccess};
use crate::{ClientError, Custody, Home};

const TOKEN_FILE: &str = "account-token";
const LAST_BACKUP_FILE: &str = "last-backup.json";
/// Progress callbacks are sent at most this often (plus one per file and one at the end).
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Everything a [`Device`] operation can fail with: few kinds, each one a user or app can act
/// on, carrying its data. Messages never contain a key, password or token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The backup key does not open the repository.
    #[error("wrong backup key: it does not open the repository at {location}")]
    WrongKey {
        /// The repository location.
        location: String,
    },
    /// The vault refused the password; the guess was counted.
    #[error(
        "wrong password; {attempts_left} attempt(s) left before the vault destroys the backup key"
    )]
    WrongPassword {
        /// Wrong guesses left before the backup key is destroyed.
        attempts_left: u32,
    },
    /// Too many wrong passwords: the vault destroyed the backup key for good.
    #[error(
        "locked: the vault destroyed the backup key after too many wrong passwords; the backup cannot be restored with a password any more"
    )]
    Locked,
    /// The repository looks rolled back (or the vault's commitment was tampered with): nothing
    /// was changed.
    #[error("{message}")]
    RolledBack {
        /// What was seen, by whom, and what the repository holds now.
        message: String,
    },
    /// Stored data is damaged: these files (or objects) cannot be restored intact.
    #[error("damaged backup: {} item(s) cannot be restored intact: {}", files.len(), files.join(", "))]
    Damaged {
        /// The files, or the damaged objects, affected.
        files: Vec<String>,
    },
    /// Another backup, restore or maintenance run holds the repository; try again later.
    #[error("the repository is busy: {message}")]
    Busy {
        /// Who holds it.
        message: String,
    },
    /// There is no repository (at the location, or configured on this device).
    #[error("{message}")]
    NoRepository {
        /// Where none was found and what to do.
        message: String,
    },
    /// The storage or the device's own files failed (network, permissions, full disk, …).
    #[error("storage error: {message}")]
    Storage {
        /// What failed.
        message: String,
    },
    /// The vault refused or failed for a reason other than the password (unreachable, token
    /// expired, server key mismatch, …).
    #[error("vault error: {message}")]
    Vault {
        /// What failed.
        message: String,
    },
    /// The request is not valid in this state (already enabled, bad key text, unknown snapshot,
    /// …).
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
    },
    /// The caller cancelled the operation through its [`CancelToken`]; a cancelled backup
    /// published nothing.
    #[error("cancelled")]
    Cancelled,
}

/// Result alias of [`Device`] operations.
pub type Result<T, E = DeviceError> = std::result::Result<T, E>;

impl DeviceError {
    fn invalid(message: impl Into<String>) -> Self {
        DeviceError::Invalid {
            message: message.into(),
        }
    }
}

impl From<RepoError> for DeviceError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::WrongKey { location } => DeviceError::WrongKey { location },
            RepoError::NotFound { .. } => DeviceError::NoRepository {
                message: e.to_string(),
            },
            RepoError::Corrupted { ref object, .. } => DeviceError::Damaged {
                files: vec![format!("{object} ({e})")],
            },
            RepoError::Locked(message) => DeviceError::Busy { message },
            RepoError::Cancelled => DeviceError::Cancelled,
            RepoError::Storage { .. } | RepoError::Io { .. } | RepoError::LockLost { .. } => {
                DeviceError::Storage {
                    message: e.to_string(),
                }
            }
            RepoError::Aborted => DeviceError::Storage {
                message: e.to_string(),
            },
            other => DeviceError::Invalid {
                message: other.to_string(),
            },
        }
    }
}

impl From<chatvault_vault_client::Error> for DeviceError {
    fn from(e: chatvault_vault_client::Error) -> Self {
        use chatvault_vault_client::Error as V;
        match e {
            V::WrongPassword { attempts_left } => DeviceError::WrongPassword { attempts_left },
            V::Locked => DeviceError::Locked,
            V::InvalidInput(_) => DeviceError::invalid(e.to_string()),
            other => DeviceError::Vault {
                message: other.to_string(),
            },
        }
    }
}

impl From<ClientError> for DeviceError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Repo(r) => r.into(),
            ClientError::Vault(v) => v.into(),
            ClientError::Key(k) => DeviceError::invalid(format!("invalid backup key: {k}")),
            ClientError::NotConfigured(ref dir) => DeviceError::NoRepository {
                message: format!(
                    "this device has no chatvault backup configured (home {}); enable it or restore first",
                    dir.display()
                ),
            },
            ClientError::AlreadyConfigured(_) => DeviceError::invalid(
                "this device already has end-to-end encrypted backup enabled (disable it first, or use another home)",
            ),
            ClientError::Home { .. } | ClientError::BadConfig { .. } => DeviceError::Storage {
                message: e.to_string(),
            },
        }
    }
}

/// A cancellation flag shared between the caller and a running operation. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks every operation watching this token to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Receives progress of a backup or restore. Called from the operation's thread, at most about
/// ten times a second plus once per file and once at the end.
pub trait ProgressListener: Send + Sync {
    /// `done_bytes` of about `total_bytes` are processed; `current_path` is the file being read
    /// (backup) or written (restore). `total_bytes` is an estimate for a backup (file sizes
    /// before reading) and is never below `done_bytes`.
    fn on_progress(&self, done_bytes: u64, total_bytes: u64, current_path: String);
}

/// One snapshot, as an app lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// The snapshot id (64 hex digits).
    pub id: String,
    /// When the backup started (RFC 3339).
    pub time: String,
    /// Files in the snapshot.
    pub files: u64,
    /// Bytes of file content in the snapshot.
    pub bytes: u64,
    /// Bytes the backup that made it uploaded (new data and metadata).
    pub uploaded_bytes: u64,
}

impl SnapshotInfo {
    fn of(id: &SnapshotId, s: &Snapshot) -> Self {
        SnapshotInfo {
            id: id.to_hex(),
            time: s.time.clone(),
            files: s.summary.files,
            bytes: s.summary.bytes,
            uploaded_bytes: s.summary.uploaded_bytes,
        }
    }
}

/// What a restore wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreInfo {
    /// The restored snapshot's id (64 hex digits).
    pub snapshot_id: String,
    /// Files (and symbolic links) in place.
    pub files: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// What `check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckInfo {
    /// Problems that make data unrestorable or the repository inconsistent (empty: clean).
    pub errors: Vec<String>,
    /// Harmless findings (e.g. packs left by an interrupted backup).
    pub warnings: Vec<String>,
    /// Snapshots checked.
    pub snapshots: u64,
}

/// The device's backup state, read from the home without network access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `"off"`, `"key"` (the user keeps the 64-digit key) or `"password"` (a vault keeps it).
    pub mode: String,
    /// The repository location, when enabled.
    pub repo: Option<String>,
    /// The last backup this device made, if any.
    pub last_snapshot: Option<SnapshotInfo>,
    /// The vault URL in password mode.
    pub vault_url: Option<String>,
    /// The vault's pinned server identity (base64url) in password mode.
    pub vault_identity: Option<String>,
}

/// A device home and every workflow on it. Cheap to create; holds no open connections.
#[derive(Debug, Clone)]
pub struct Device {
    home: Home,
    /// How this device transfers ([`Device::set_transfer`]); shared by clones.
    transfer: Arc<Mutex<Transfer>>,
}

/// How a [`Device`] moves data: bandwidth limits for every transfer of its workflows and how
/// durably a restore places files. Not stored in the home: an app sets it for each session
/// (for example lower limits on a metered network).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfer {
    /// Most download bandwidth in bytes per second (restore, check, and every other read of
    /// the repository), paced evenly by a token bucket; `None`: unlimited.
    pub download: Option<u64>,
    /// Most upload bandwidth in bytes per second (backup); `None`: unlimited.
    pub upload: Option<u64>,
    /// Restores sync every file to disk before giving it its real name
    /// ([`RestoreOptions::durable`], docs/FORMAT.md §12.1 rule 13), not only the databases and
    /// their folders: not even a power loss then leaves an incomplete medium under its name.
    /// Slower: bound by the disk's writes.
    pub durable_restore: bool,
}

/// The password-mode settings of a device: vault access (if the home holds an account token)
/// and the pinned identity.
struct PasswordMode {
    access: Option<VaultAccess>,
    url: String,
    account: String,
    pinned: String,
}

impl Device {
    /// A device on the home folder `home` (created on first write).
    pub fn open(home: impl Into<PathBuf>) -> Self {
        Device {
            home: Home::at(home.into()),
            transfer: Default::default(),
        }
    }

    /// Sets how this device (and its clones) transfers from now on: bandwidth limits and
    /// restore durability. A workflow already running keeps what it started with.
    pub fn set_transfer(&self, transfer: Transfer) {
        *self.transfer.lock().unwrap_or_else(|p| p.into_inner()) = transfer;
    }

    /// How this device transfers ([`Device::set_transfer`]; default: unlimited, databases
    /// synced).
    pub fn transfer(&self) -> Transfer {
        *self.transfer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens the repository at `location` with `key`, under this device's bandwidth limits.
    fn open_repo(&self, location: &str, key: &BackupKey) -> Result<Repository> {
        let repo = crate::open(location, key)?;
        let t = self.transfer();
        repo.storage().set_limits(Limits {
            download: t.download,
            upload: t.upload,
        });
        Ok(repo)
    }

    /// The device home.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// Enables backup with a new 64-digit key at `repo` (a folder or a storage URL). Returns
    /// the key as grouped text, for the user to write down.
    pub fn enable_with_key(&self, repo: &str) -> Result<Zeroizing<String>> {
        let (_, key) = crate::enable_with_key(&self.home, repo)?;
        tracing::info!(home = %self.home.dir().display(), "backup enabled with a 64-digit key");
        Ok(key.to_grouped_hex())
    }

    /// Enables backup in password mode: a new random key, kept by the vault at `vault_url`
    /// behind `password` for `account` (trusting the vault's key on first use and pinning it).
    /// The account token is kept in the home (0600) for later vault calls.
    pub fn enable_with_password(
        &self,
        repo: &str,
        vault_url: &str,
        account: &str,
        token: SecretString,
        password: &SecretString,
    ) -> Result<()> {
        let access = access(vault_url, account, token);
        vault::enable_with_password(&self.home, repo, &access, password, None)?;
        self.store_token(&access.token)?;
        tracing::info!(home = %self.home.dir().display(), "backup enabled with a vault password");
        Ok(())
    }

    /// Replaces the account token kept in the home (after the app signed in again).
    pub fn set_account_token(&self, token: SecretString) -> Result<()> {
        self.home.require_config()?;
        self.store_token(&token)
    }

    /// Backs up `paths` now: rollback check, then the backup (this device's id, its rollback
    /// memory as the lowest sequence number), then the snapshot is recorded on the device and,
    /// in password mode, at the vault. A cancelled backup publishes nothing.
    pub fn backup_now(
        &self,
        paths: &[PathBuf],
        progress: Option<&dyn ProgressListener>,
        cancel: Option<&CancelToken>,
    ) -> Result<SnapshotInfo> {
        let (repo, access) = self.open_checked()?;
        let total = estimate_bytes(paths);
        let sink = Sink::new(progress, cancel, total);
        let (out, recorded) = backup_recorded(
            &self.home,
            &repo,
            access.as_slice(),
            paths,
            None,
            false,
            &sink,
        )?;
        sink.finish();
        // The device's own repository (the CLI can back up elsewhere with --repo, so this is
        // Device's, not backup_recorded's): what `status` reports as the last backup. Written
        // before the vault's answer is judged: the snapshot is saved either way.
        let info = SnapshotInfo::of(&out.id, &out.snapshot);
        let json = serde_json::to_vec_pretty(&info).expect("snapshot info serializes");
        self.home
            .write_atomic(LAST_BACKUP_FILE, &json, 0o600)
            .map_err(DeviceError::from)?;
        match recorded {
            Recorded::Done => {}
            Recorded::Warning(w) => tracing::warn!("{w}"),
            Recorded::Tampered(t) => {
                return Err(DeviceError::RolledBack {
                    message: format!("snapshot {} is saved, but {t}", out.id.short()),
                });
            }
        }
        let s = &out.snapshot.summary;
        for p in &s.unreadable {
            tracing::warn!(path = %p.path, error = %p.error, "not backed up");
        }
        Ok(info)
    }

    /// The readable snapshots of the repository, oldest first (newest last). Damaged ones are
    /// left out (with a warning in the log; `check` lists them).
    pub fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        let (repo, _) = self.open_checked()?;
        // As the rollback check just listed them.
        Ok(repo
            .snapshots_as_listed()?
            .iter()
            .filter_map(|(id, s)| match s {
                Ok(s) => Some(SnapshotInfo::of(id, s)),
                Err(e) => {
                    tracing::warn!(snapshot = %id.short(), error = %e, "damaged snapshot left out");
                    None
                }
            })
            .collect())
    }

    /// Restores `snapshot` (`"latest"` or an id prefix) into `target` on this device.
    pub fn restore(
        &self,
        snapshot: &str,
        target: &Path,
        progress: Option<&dyn ProgressListener>,
        cancel: Option<&CancelToken>,
    ) -> Result<RestoreInfo> {
        let (repo, _) = self.open_checked()?;
        let opts = RestoreOptions {
            durable: self.transfer().durable_restore,
            ..RestoreOptions::default()
        };
        restore_from(&repo, snapshot, target, &opts, progress, cancel)
    }

    /// On a new device: restores from `repo` with the 64-digit `key_text`, and sets this home
    /// up to back up there with that key.
    pub fn restore_with_key(
        &self,
        repo: &str,
        key_text: &str,
        snapshot: &str,
        target: &Path,
        progress: Option<&dyn ProgressListener>,
        cancel: Option<&CancelToken>,
    ) -> Result<RestoreInfo> {
        self.require_new()?;
        let key = BackupKey::parse_hex(key_text).map_err(ClientError::from)?;
        // Opening proves the key before anything is written to the home.
        self.open_repo(repo, &key)?;
        self.home.store_key(&key)?;
        self.home.save_config(&crate::DeviceConfig {
            version: 1,
            repo: crate::remembered_location(repo),
            custody: Custody::Key,
        })?;
        self.restore(snapshot, target, progress, cancel)
    }

    /// On a new device: gets the key from the vault with the password (trusting the vault's
    /// key on first use and pinning it), sets this home up in password mode, checks the
    /// repository against the vault's rollback commitment and restores.
    #[allow(clippy::too_many_arguments)]
    pub fn restore_with_password(
        &self,
        repo: &str,
        vault_url: &str,
        account: &str,
        token: SecretString,
        password: &SecretString,
        snapshot: &str,
        target: &Path,
        progress: Option<&dyn ProgressListener>,
        cancel: Option<&CancelToken>,
    ) -> Result<RestoreInfo> {
        self.require_new()?;
        let access = access(vault_url, account, token);
        let (key, identity) = vault::recover_key(&access, password, None)?;
        self.open_repo(repo, &key)?;
        vault::adopt_device(&self.home, repo, &access, &identity, &key)?;
        self.store_token(&access.token)?;
        self.restore(snapshot, target, progress, cancel)
    }

    /// Changes the vault password (password mode); the key and every backup stay the same.
    pub fn change_password(&self, old: &SecretString, new: &SecretString) -> Result<()> {
        let (access, pinned) = self.vault_for_change()?;
        vault::change_password(&access, old, new, &pinned)?;
        Ok(())
    }

    /// Switches from the vault password to the 64-digit key: proves `password`, deletes the
    /// vault record, and returns the key as grouped text for the user to write down.
    pub fn switch_to_key(&self, password: &SecretString) -> Result<Zeroizing<String>> {
        let (access, pinned) = self.vault_for_change()?;
        let key = vault::to_key(&self.home, &access, password, &pinned)?;
        let _ = self.remove_token();
        Ok(key.to_grouped_hex())
    }

    /// Switches from the 64-digit key to a password kept by the vault at `vault_url`.
    pub fn switch_to_password(
        &self,
        vault_url: &str,
        account: &str,
        token: SecretString,
        password: &SecretString,
    ) -> Result<()> {
        let cfg = self.home.require_config()?;
        if !matches!(cfg.custody, Custody::Key) {
            return Err(DeviceError::invalid(
                "this device already keeps its key at a vault (password or threshold mode)",
            ));
        }
        let access = access(vault_url, account, token);
        vault::to_password(&self.home, &access, password, None)?;
        self.store_token(&access.token)
    }

    /// Turns backup off: in password mode proves `password` and deletes the vault record, then
    /// deletes every object of the repository and this device's configuration and key. Returns
    /// the number of objects deleted.
    pub fn disable(&self, password: Option<&SecretString>) -> Result<u64> {
        let cfg = self.home.require_config()?;
        let removed = match &cfg.custody {
            Custody::Password { .. } => {
                let password = password.ok_or_else(|| {
                    DeviceError::invalid("password mode: the current password is needed to disable")
                })?;
                let (access, pinned) = self.vault_for_change()?;
                vault::disable(&self.home, Some((&access, password, &pinned)))?
            }
            Custody::Threshold { .. } => return Err(threshold_unsupported()),
            Custody::Key => vault::disable(&self.home, None)?,
        };
        let _ = self.remove_token();
        let _ = std::fs::remove_file(self.home.dir().join(LAST_BACKUP_FILE));
        Ok(removed)
    }

    /// Verifies the repository's structure (every snapshot, tree and indexed pack; not the
    /// pack contents).
    pub fn check(&self) -> Result<CheckInfo> {
        let (repo, _) = self.open_checked()?;
        let r = check::check(
            &repo,
            CheckOptions { read_data: false },
            &backup::NoProgress,
        )?;
        Ok(CheckInfo {
            errors: r.errors,
            warnings: r.warnings,
            snapshots: r.snapshots as u64,
        })
    }

    /// The device's state, from the home only (no network).
    pub fn status(&self) -> Result<Status> {
        let Some(cfg) = self.home.config()? else {
            return Ok(Status {
                mode: "off".into(),
                repo: None,
                last_snapshot: None,
                vault_url: None,
                vault_identity: None,
            });
        };
        let last_snapshot = match std::fs::read(self.home.dir().join(LAST_BACKUP_FILE)) {
            Ok(b) => serde_json::from_slice(&b).ok(),
            Err(_) => None,
        };
        let (mode, vault_url, vault_identity) = match cfg.custody {
            Custody::Key => ("key", None, None),
            Custody::Password {
                vault, server_key, ..
            } => ("password", Some(vault), Some(server_key)),
            Custody::Threshold { realms, .. } => (
                "threshold",
                Some(
                    realms
                        .iter()
                        .map(|r| r.url.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                None,
            ),
        };
        Ok(Status {
            mode: mode.into(),
            repo: Some(cfg.repo),
            last_snapshot,
            vault_url,
            vault_identity,
        })
    }

    fn require_new(&self) -> Result<()> {
        if self.home.config()?.is_some() {
            return Err(ClientError::AlreadyConfigured(self.home.dir().to_path_buf()).into());
        }
        Ok(())
    }

    fn store_token(&self, token: &SecretString) -> Result<()> {
        use secrecy::ExposeSecret;
        self.home.ensure_dir()?;
        self.home
            .write_atomic(TOKEN_FILE, token.expose_secret().as_bytes(), 0o600)?;
        Ok(())
    }

    fn remove_token(&self) -> std::io::Result<()> {
        std::fs::remove_file(self.home.dir().join(TOKEN_FILE))
    }

    fn load_token(&self) -> Result<Option<SecretString>> {
        let path = self.home.dir().join(TOKEN_FILE);
        match std::fs::read(&path) {
            Ok(b) => {
                let b = Zeroizing::new(b);
                let text = std::str::from_utf8(&b).map_err(|_| DeviceError::Storage {
                    message: format!("{} is not text", path.display()),
                })?;
                Ok(Some(SecretString::from(text.trim().to_owned())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ClientError::Home { path, source }.into()),
        }
    }

    fn password_mode(&self) -> Result<Option<PasswordMode>> {
        let cfg = self.home.require_config()?;
        if matches!(cfg.custody, Custody::Threshold { .. }) {
            return Err(threshold_unsupported());
        }
        let Custody::Password {
            vault,
            account,
            server_key,
        } = cfg.custody
        else {
            return Ok(None);
        };
        let access = self
            .load_token()?
            .map(|token| access(&vault, &account, token));
        Ok(Some(PasswordMode {
            access,
            url: vault,
            account,
            pinned: server_key,
        }))
    }

    /// Vault access and pin for an operation that changes the vault record.
    fn vault_for_change(&self) -> Result<(VaultAccess, ServerIdentity)> {
        let mode = self.password_mode()?.ok_or_else(|| {
            DeviceError::invalid("this device keeps the 64-digit key; there is no vault password")
        })?;
        let access = mode.access.ok_or_else(|| DeviceError::Vault {
            message: format!(
                "no account token for {} at {} on this device; set one (set_account_token) first",
                mode.account, mode.url
            ),
        })?;
        let pinned = vault::parse_identity(&mode.pinned)?;
        Ok((access, pinned))
    }

    /// Opens the repository with the home's key and runs the rollback check.
    fn open_checked(&self) -> Result<(Repository, Option<VaultAccess>)> {
        let cfg = self.home.require_config()?;
        let key = self
            .home
            .load_key()?
            .ok_or_else(|| ClientError::NotConfigured(self.home.dir().to_path_buf()))?;
        let mut repo = self.open_repo(&cfg.repo, &key)?;
        repo.set_cache(&self.home.dir().join("cache"));
        let access = match self.password_mode()? {
            Some(PasswordMode {
                access: Some(a), ..
            }) => Some(a),
            Some(_) => {
                tracing::warn!(
                    "no account token on this device: the vault's rollback commitment is not checked"
                );
                None
            }
            None => None,
        };
        let status = rollback::check_rollback(&self.home, &repo, access.as_slice())?;
        for w in &status.warnings {
            tracing::warn!("{w}");
        }
        if let Some(t) = status.tampered {
            return Err(DeviceError::RolledBack { message: t });
        }
        if let Some(r) = status.rollback {
            return Err(DeviceError::RolledBack {
                message: r.to_string(),
            });
        }
        Ok((repo, access))
    }
}

fn access(url: &str, account: &str, token: SecretString) -> VaultAccess {
    VaultAccess {
        url: url.to_owned(),
        account: account.to_owned(),
        token,
        ca_pem: None,
    }
}

/// The backup workflow shared by [`Device::backup_now`] and the CLI's `backup`, on a
/// repository that passed the rollback check: this device's id, its rollback memory as
/// `min_seq` and the home's scratch folder go into the run; afterwards the snapshot is
/// recorded on the device and, in password mode, at the vault (threshold mode: at every realm;
/// [`rollback::record_snapshot`]).
/// What the vault answered is returned for the caller to report.
pub fn backup_recorded(
    home: &Home,
    repo: &Repository,
    access: &[VaultAccess],
    paths: &[PathBuf],
    hostname: Option<String>,
    force_reread: bool,
    progress: &dyn Progress,
) -> std::result::Result<(BackupOutcome, Recorded), ClientError> {
    let opts = BackupOptions {
        hostname,
        device: Some(home.device_id()?),
        force_reread,
        min_seq: home.seen(repo)?.map_or(0, |s| s.seq),
        scratch_dir: Some(home.dir().join("scratch")),
    };
    let out = backup::backup(repo, paths, &opts, progress)?;
    let recorded = rollback::record_snapshot(home, repo, access, &out.id, &out.snapshot)?;
    Ok((out, recorded))
}

fn restore_from(
    repo: &Repository,
    snapshot: &str,
    target: &Path,
    opts: &RestoreOptions,
    progress: Option<&dyn ProgressListener>,
    cancel: Option<&CancelToken>,
) -> Result<RestoreInfo> {
    let (id, snap) = if snapshot == "latest" {
        // As the rollback check of opening just listed them.
        Repository::latest_of(repo.snapshots_as_listed()?)?
    } else {
        repo.find_snapshot(snapshot)?
    };
    let sink = Sink::new(progress, cancel, 0);
    let out = chatvault_repo::restore::restore(repo, &snap, target, opts, &sink)?;
    sink.finish();
    if !out.failed.is_empty() {
        return Err(DeviceError::Damaged {
            files: out
                .failed
                .iter()
                .map(|(p, why)| format!("{p}: {why}"))
                .collect(),
        });
    }
    Ok(RestoreInfo {
        snapshot_id: id.to_hex(),
        files: out.files,
        bytes: out.bytes,
    })
}

/// File content bytes below `paths` (an estimate of a backup's total; unreadable entries
/// count nothing).
fn estimate_bytes(paths: &[PathBuf]) -> u64 {
    let mut total = 0u64;
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_file() {
            total += m.len();
        } else if m.is_dir()
            && let Ok(rd) = std::fs::read_dir(&p)
        {
            stack.extend(rd.flatten().map(|e| e.path()));
        }
    }
    total
}

/// The engine's [`Progress`] observer in front of a [`ProgressListener`] and a [`CancelToken`]:
/// sums bytes, remembers the current file, throttles the callbacks.
struct Sink<'a> {
    listener: Option<&'a dyn ProgressListener>,
    cancel: Option<&'a CancelToken>,
    total: AtomicU64,
    done: AtomicU64,
    state: Mutex<(String, Option<Instant>)>,
}

impl<'a> Sink<'a> {
    fn new(
        listener: Option<&'a dyn ProgressListener>,
        cancel: Option<&'a CancelToken>,
        total: u64,
    ) -> Self {
        Sink {
            listener,
            cancel,
            total: AtomicU64::new(total),
            done: AtomicU64::new(0),
            state: Mutex::new((String::new(), None)),
        }
    }

    fn emit(&self, force: bool) {
        let Some(l) = self.listener else { return };
        let path = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if !force && st.1.is_some_and(|t| t.elapsed() < PROGRESS_EVERY) {
                return;
            }
            st.1 = Some(Instant::now());
            st.0.clone()
        };
        let done = self.done.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed).max(done);
        l.on_progress(done, total, path);
    }

    fn finish(&self) {
        self.emit(true);
    }
}

impl Progress for Sink<'_> {
    fn file(&self, path: &Path) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0 =
            path.to_string_lossy().into_owned();
        self.emit(true);
    }
    fn bytes(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        self.emit(false);
    }
    fn warn(&self, message: &str) {
        tracing::warn!("{message}");
    }
    fn restore_event(&self, event: &RestoreEvent) {
        if let RestoreEvent::Started { bytes, .. } = event {
            self.total.store(*bytes, Ordering::Relaxed);
            self.emit(true);
        }
    }
    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(CancelToken::is_cancelled)
    }
}

/// The SDK does not run the threshold-vault workflows yet (the CLI does, PROTOCOL.md §13).
fn threshold_unsupported() -> DeviceError {
    DeviceError::invalid(
        "this device keeps its key at threshold vault realms; the SDK does not manage that mode \
         yet: use the chatvault CLI (`chatvault key …`, `chatvault disable`)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_errors_keep_their_data() {
        let e: DeviceError =
            chatvault_vault_client::Error::WrongPassword { attempts_left: 7 }.into();
        assert!(matches!(e, DeviceError::WrongPassword { attempts_left: 7 }));
        let e: DeviceError = ClientError::Vault(chatvault_vault_client::Error::Locked).into();
        assert!(matches!(e, DeviceError::Locked));
        let e: DeviceError = RepoError::Locked("backup by phone-a".into()).into();
        assert!(matches!(e, DeviceError::Busy { message } if message.contains("phone-a")));
    }

    #[test]
    fn status_of_a_new_home_is_off() {
        let dir = tempfile::tempdir().unwrap();
        let s = Device::open(dir.path().join("h")).status().unwrap();
        assert_eq!(s.mode, "off");
        assert_eq!(s.repo, None);
    }
}
