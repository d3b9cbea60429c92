//! # chatvault-ffi
//!
//! The `Device` API of `chatvault-client` for Kotlin, Swift and Python, through uniffi
//! (proc-macro style). [`Device`] is the object an app holds; its methods return records
//! ([`SnapshotInfo`], [`RestoreInfo`], [`Status`], [`CheckInfo`]) or raise one typed
//! [`ChatvaultError`]; progress goes to a foreign [`ProgressListener`] and a [`CancelToken`]
//! stops a running backup or restore. The Python package (`python/`, built with maturin) is
//! `import chatvault`; `scripts/gen-bindings.sh` writes the Kotlin and Swift sources.
//!
//! This crate only translates: every workflow and check lives in `chatvault-client`, so the
//! bindings and the CLI cannot drift. It must not add behaviour of its own, and it is the only
//! crate of the workspace where `unsafe` code exists (uniffi's generated scaffolding); it
//! writes none by hand. Passwords and tokens are wrapped in `SecretString` as soon as they
//! cross, and never logged.
//!
//! ```python
//! import chatvault
//! d = chatvault.Device("/data/phone-home")
//! key_text = d.enable_with_key("/data/repo")
//! info = d.backup_now(["/data/chats"])
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chatvault_client::device as core;
use chatvault_vault_client::SecretString;

uniffi::setup_scaffolding!("chatvault");

/// Everything a device operation can fail with. Each variant is one thing an app can act on;
/// every variant's `detail` is the human-readable message (not `message`, which Kotlin's
/// `Throwable` owns; the Python package makes it `str(e)`).
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum ChatvaultError {
    /// The backup key does not open the repository.
    #[error("{detail}")]
    WrongKey {
        /// What happened.
        detail: String,
    },
    /// The vault refused the password; the guess was counted.
    #[error("{detail}")]
    WrongPassword {
        /// Wrong guesses left before the vault destroys the backup key.
        attempts_left: u32,
        /// The message.
        detail: String,
    },
    /// Too many wrong passwords: the vault destroyed the backup key.
    #[error("{detail}")]
    Locked {
        /// What happened.
        detail: String,
    },
    /// The repository looks rolled back; nothing was changed.
    #[error("{detail}")]
    RolledBack {
        /// What was seen, by whom, and what the repository holds now.
        detail: String,
    },
    /// These files (or stored objects) cannot be restored intact.
    #[error("{detail}")]
    Damaged {
        /// The files or objects affected.
        files: Vec<String>,
        /// The message.
        detail: String,
    },
    /// Another run holds the repository; try again later.
    #[error("{detail}")]
    Busy {
        /// Who holds it.
        detail: String,
    },
    /// No repository at the location, or none configured on this device.
    #[error("{detail}")]
    NoRepository {
        /// Where and what to do.
        detail: String,
    },
    /// The storage or the device's own files failed.
    #[error("{detail}")]
    Storage {
        /// What failed.
        detail: String,
    },
    /// The vault failed for a reason other than the password.
    #[error("{detail}")]
    Vault {
        /// What failed.
        detail: String,
    },
    /// The request is not valid in this state.
    #[error("{detail}")]
    Invalid {
        /// What is wrong.
        detail: String,
    },
    /// Cancelled through the [`CancelToken`]; a cancelled backup published nothing.
    #[error("{detail}")]
    Cancelled {
        /// The message.
        detail: String,
    },
}

impl From<core::DeviceError> for ChatvaultError {
    fn from(e: core::DeviceError) -> Self {
        use core::DeviceError as D;
        let detail = e.to_string();
        match e {
            D::WrongKey { .. } => ChatvaultError::WrongKey { detail },
            D::WrongPassword { attempts_left } => ChatvaultError::WrongPassword {
                attempts_left,
                detail,
            },
            D::Locked => ChatvaultError::Locked { detail },
            D::RolledBack { .. } => ChatvaultError::RolledBack { detail },
            D::Damaged { files } => ChatvaultError::Damaged { files, detail },
            D::Busy { .. } => ChatvaultError::Busy { detail },
            D::NoRepository { .. } => ChatvaultError::NoRepository { detail },
            D::Storage { .. } => ChatvaultError::Storage { detail },
            D::Vault { .. } => ChatvaultError::Vault { detail },
            D::Cancelled => ChatvaultError::Cancelled { detail },
            _ => ChatvaultError::Invalid { detail },
        }
    }
}

type Result<T, E = ChatvaultError> = std::result::Result<T, E>;

/// Receives progress of a backup or restore (implemented by the app, in its language). Called
/// on the operation's thread about ten times a second at most, plus once per file and at the
/// end.
#[uniffi::export(with_foreign)]
pub trait ProgressListener: Send + Sync {
    /// `done_bytes` of about `total_bytes` are processed; `current_path` is the file at hand.
    fn on_progress(&self, done_bytes: u64, total_bytes: u64, current_path: String);
}

/// Adapts a foreign listener to the client's trait.
struct Listener(Arc<dyn ProgressListener>);
impl core::ProgressListener for Listener {
    fn on_progress(&self, done_bytes: u64, total_bytes: u64, current_path: String) {
        self.0.on_progress(done_bytes, total_bytes, current_path)
    }
}

/// Stops a running backup or restore when cancelled (from any thread, or from the progress
/// callback).
#[derive(Debug, Default, uniffi::Object)]
pub struct CancelToken(core::CancelToken);

#[uniffi::export]
impl CancelToken {
    /// A token that is not cancelled.
    #[uniffi::constructor]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    /// Asks the operation watching this token to stop.
    pub fn cancel(&self) {
        self.0.cancel()
    }
    /// Whether `cancel` was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }
}

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SnapshotInfo {
    /// The snapshot id (64 hex digits).
    pub id: String,
    /// When the backup started (RFC 3339).
    pub time: String,
    /// Files in the snapshot.
    pub files: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Bytes the backup uploaded.
    pub uploaded_bytes: u64,
}

impl From<core::SnapshotInfo> for SnapshotInfo {
    fn from(s: core::SnapshotInfo) -> Self {
        SnapshotInfo {
            id: s.id,
            time: s.time,
            files: s.files,
            bytes: s.bytes,
            uploaded_bytes: s.uploaded_bytes,
        }
    }
}

/// What a restore wrote.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RestoreInfo {
    /// The restored snapshot's id.
    pub snapshot_id: String,
    /// Files in place.
    pub files: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

impl From<core::RestoreInfo> for RestoreInfo {
    fn from(r: core::RestoreInfo) -> Self {
        RestoreInfo {
            snapshot_id: r.snapshot_id,
            files: r.files,
            bytes: r.bytes,
        }
    }
}

/// The device's state (read from its home, no network).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Status {
    /// `"off"`, `"key"` or `"password"`.
    pub mode: String,
    /// The repository location, when enabled.
    pub repo: Option<String>,
    /// The last backup this device made.
    pub last_snapshot: Option<SnapshotInfo>,
    /// The vault URL in password mode.
    pub vault_url: Option<String>,
    /// The vault's pinned server identity in password mode.
    pub vault_identity: Option<String>,
}

/// What `check` found (empty `errors`: the repository is consistent).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CheckInfo {
    /// Problems that make data unrestorable or the repository inconsistent.
    pub errors: Vec<String>,
    /// Harmless findings.
    pub warnings: Vec<String>,
    /// Snapshots checked.
    pub snapshots: u64,
}

/// A device home and every backup workflow on it. Methods block until done: call them off the
/// UI thread.
#[derive(Debug, uniffi::Object)]
pub struct Device(core::Device);

fn secret(s: String) -> SecretString {
    SecretString::from(s)
}

fn listener(p: Option<Arc<dyn ProgressListener>>) -> Option<Listener> {
    p.map(Listener)
}

fn as_dyn(l: &Option<Listener>) -> Option<&dyn core::ProgressListener> {
    l.as_ref().map(|l| l as &dyn core::ProgressListener)
}

#[uniffi::export]
impl Device {
    /// The device on the home folder `home` (created on first write).
    #[uniffi::constructor]
    pub fn new(home: String) -> Arc<Self> {
        Arc::new(Device(core::Device::open(home)))
    }

    /// Sets how this device transfers from now on: the most download and upload bandwidth in
    /// KiB/s (`None` or 0: unlimited; paced evenly, for every transfer of every workflow) and
    /// whether a restore syncs every file before naming it (`durable_restore`; default: only
    /// the databases and their folders, docs/FORMAT.md §12.1 rule 13). Not stored in the home.
    #[uniffi::method(default(download_kib_per_s = None, upload_kib_per_s = None, durable_restore = false))]
    pub fn set_transfer(
        &self,
        download_kib_per_s: Option<u64>,
        upload_kib_per_s: Option<u64>,
        durable_restore: bool,
    ) {
        let bytes = |kib: Option<u64>| kib.map(|k| k.saturating_mul(1024));
        self.0.set_transfer(core::Transfer {
            download: bytes(download_kib_per_s),
            upload: bytes(upload_kib_per_s),
            durable_restore,
        });
    }

    /// Enables backup with a new 64-digit key at `repo`; returns the key as grouped text for
    /// the user to write down.
    pub fn enable_with_key(&self, repo: String) -> Result<String> {
        Ok(self.0.enable_with_key(&repo)?.to_string())
    }

    /// Enables backup in password mode: the vault at `vault_url` keeps the key behind
    /// `password` for `account` (authenticated with the account `token`).
    pub fn enable_with_password(
        &self,
        repo: String,
        vault_url: String,
        account: String,
        token: String,
        password: String,
    ) -> Result<()> {
        Ok(self.0.enable_with_password(
            &repo,
            &vault_url,
            &account,
            secret(token),
            &secret(password),
        )?)
    }

    /// Replaces the vault account token kept on the device (after signing in again).
    pub fn set_account_token(&self, token: String) -> Result<()> {
        Ok(self.0.set_account_token(secret(token))?)
    }

    /// Backs up `paths` now (rollback check, backup, snapshot recorded); a cancelled backup
    /// publishes nothing.
    #[uniffi::method(default(progress = None, cancel = None))]
    pub fn backup_now(
        &self,
        paths: Vec<String>,
        progress: Option<Arc<dyn ProgressListener>>,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<SnapshotInfo> {
        let paths: Vec<PathBuf> = paths.into_iter().map(PathBuf::from).collect();
        let l = listener(progress);
        Ok(self
            .0
            .backup_now(&paths, as_dyn(&l), cancel.as_ref().map(|c| &c.0))?
            .into())
    }

    /// The readable snapshots, newest last.
    pub fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        Ok(self.0.snapshots()?.into_iter().map(Into::into).collect())
    }

    /// Restores `snapshot` (`"latest"` or an id prefix) into `target`.
    #[uniffi::method(default(progress = None, cancel = None))]
    pub fn restore(
        &self,
        snapshot: String,
        target: String,
        progress: Option<Arc<dyn ProgressListener>>,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<RestoreInfo> {
        let l = listener(progress);
        Ok(self
            .0
            .restore(
                &snapshot,
                Path::new(&target),
                as_dyn(&l),
                cancel.as_ref().map(|c| &c.0),
            )?
            .into())
    }

    /// On a new device: restores from `repo` with the 64-digit key text and sets this home up
    /// to back up there.
    #[uniffi::method(default(progress = None, cancel = None))]
    pub fn restore_with_key(
        &self,
        repo: String,
        key_text: String,
        snapshot: String,
        target: String,
        progress: Option<Arc<dyn ProgressListener>>,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<RestoreInfo> {
        let key_text = zeroize::Zeroizing::new(key_text);
        let l = listener(progress);
        Ok(self
            .0
            .restore_with_key(
                &repo,
                &key_text,
                &snapshot,
                Path::new(&target),
                as_dyn(&l),
                cancel.as_ref().map(|c| &c.0),
            )?
            .into())
    }

    /// On a new device: gets the key from the vault with the password, sets this home up in
    /// password mode, and restores.
    #[allow(clippy::too_many_arguments)]
    #[uniffi::method(default(progress = None, cancel = None))]
    pub fn restore_with_password(
        &self,
        repo: String,
        vault_url: String,
        account: String,
        token: String,
        password: String,
        snapshot: String,
        target: String,
        progress: Option<Arc<dyn ProgressListener>>,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<RestoreInfo> {
        let l = listener(progress);
        Ok(self
            .0
            .restore_with_password(
                &repo,
                &vault_url,
                &account,
                secret(token),
                &secret(password),
                &snapshot,
                Path::new(&target),
                as_dyn(&l),
                cancel.as_ref().map(|c| &c.0),
            )?
            .into())
    }

    /// Changes the vault password; the key and every backup stay the same.
    pub fn change_password(&self, old_password: String, new_password: String) -> Result<()> {
        Ok(self
            .0
            .change_password(&secret(old_password), &secret(new_password))?)
    }

    /// Switches to the 64-digit key (proving the password deletes the vault's copy); returns
    /// the key text for the user to write down.
    pub fn switch_to_key(&self, password: String) -> Result<String> {
        Ok(self.0.switch_to_key(&secret(password))?.to_string())
    }

    /// Switches from the 64-digit key to a password kept by the vault at `vault_url`.
    pub fn switch_to_password(
        &self,
        vault_url: String,
        account: String,
        token: String,
        password: String,
    ) -> Result<()> {
        Ok(self
            .0
            .switch_to_password(&vault_url, &account, secret(token), &secret(password))?)
    }

    /// Turns backup off and deletes every backup (in password mode `password` proves the
    /// right to delete the vault's copy). Returns the number of objects deleted.
    #[uniffi::method(default(password = None))]
    pub fn disable(&self, password: Option<String>) -> Result<u64> {
        let password = password.map(secret);
        Ok(self.0.disable(password.as_ref())?)
    }

    /// Verifies the repository's structure.
    pub fn check(&self) -> Result<CheckInfo> {
        let c = self.0.check()?;
        Ok(CheckInfo {
            errors: c.errors,
            warnings: c.warnings,
            snapshots: c.snapshots,
        })
    }

    /// The device's state, from its home (no network).
    pub fn status(&self) -> Result<Status> {
        let s = self.0.status()?;
        Ok(Status {
            mode: s.mode,
            repo: s.repo,
            last_snapshot: s.last_snapshot.map(Into::into),
            vault_url: s.vault_url,
            vault_identity: s.vault_identity,
        })
    }
}
