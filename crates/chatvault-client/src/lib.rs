//! # chatvault-client
//!
//! The client side of chatvault as an app would embed it: a device **home** (one per phone or
//! user account) that remembers which repository the device backs up to and how the backup key
//! is kept, and the operations that need that state. [`Device`] (module [`device`]) is the
//! API an app uses: it runs every workflow — enable, back up, list, restore, change password,
//! switch custody, disable, status — with its checks (rollback, sequence numbers, snapshot
//! records), reports progress through a [`ProgressListener`], stops on a [`CancelToken`] and
//! fails with one typed [`DeviceError`]. The lower-level functions below are its building
//! blocks (and the CLI's).
//!
//! This crate must not prompt, print or parse command lines (that is the CLI's job), and must
//! not write the key anywhere but the device home's 0600 key file (nor the vault account token
//! anywhere but the home's 0600 `account-token`).
//!
//! ```no_run
//! use chatvault_client::{Home, enable_with_key};
//! let home = Home::at("/tmp/phone-a".into());
//! let (repo, key) = enable_with_key(&home, "/tmp/repo")?;
//! println!("write this down: {}", key.to_grouped_hex().as_str());
//! # Ok::<(), chatvault_client::ClientError>(())
//! ```

#![forbid(unsafe_code)]

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chatvault_format::key::{BackupKey, KeyParseError};
use chatvault_repo::repository::Repository;
use chatvault_repo::storage::Storage;
use rand_core::OsRng;
use serde::{Deserialize, Serialize};

pub mod device;
pub mod rollback;
pub mod vault;

pub use device::{CancelToken, Device, DeviceError, ProgressListener, Transfer};

/// Restoring, as an app embeds it: [`restore::restore`] with an observer ([`restore::Progress`])
/// whose `restore_event` receives [`restore::RestoreEvent::MessagesReady`] as soon as every chat
/// database is back and verified (open the chats then; media keeps coming), and bandwidth
/// limits set on the repository's storage ([`restore::Limits`], `repo.storage().set_limits`).
pub mod restore {
    pub use chatvault_repo::backup::{NoProgress, Progress};
    pub use chatvault_repo::restore::{RestoreEvent, RestoreOptions, RestoreOutcome, restore};
    pub use chatvault_repo::storage::{Limits, TransferStats};
}

/// Errors of the client layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// An engine error (wrong key, corrupted repository, storage failure, …).
    #[error(transparent)]
    Repo(#[from] chatvault_repo::RepoError),
    /// A key text or key file could not be read.
    #[error("invalid backup key: {0}")]
    Key(#[from] KeyParseError),
    /// The device home has no configuration yet.
    #[error(
        "this device has no chatvault backup configured in {0} (run `chatvault init`, or pass --repo and a key)"
    )]
    NotConfigured(PathBuf),
    /// The device home is already configured.
    #[error(
        "this device already has E2EE backup enabled in {0} (use another --home, or `chatvault disable` first)"
    )]
    AlreadyConfigured(PathBuf),
    /// The device home could not be read or written.
    #[error("device home {}: {source}", path.display())]
    Home {
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The Backup Key Vault refused or failed (wrong password, locked, unreachable, …).
    #[error(transparent)]
    Vault(#[from] chatvault_vault_client::Error),
    /// The device configuration is unreadable.
    #[error("device config {} is damaged: {reason}", path.display())]
    BadConfig {
        /// The file involved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// How the backup key is kept for a new device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Custody {
    /// The user keeps the 64-digit key.
    Key,
    /// A Backup Key Vault keeps the key behind the user's password.
    Password {
        /// Vault base URL.
        vault: String,
        /// Account id at the vault.
        account: String,
        /// The vault's Ed25519 identity key pinned at registration (base64url).
        server_key: String,
    },
    /// A threshold Backup Key Vault keeps the key behind the user's password: `threshold` of the
    /// `realms` must take part in a recovery (docs/PROTOCOL.md §13).
    Threshold {
        /// The realms, in share order (the order matters: it is each realm's share index).
        realms: Vec<ThresholdRealm>,
        /// How many realms a recovery needs.
        threshold: u8,
        /// Account id at the realms.
        account: String,
    },
}

/// One realm of [`Custody::Threshold`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThresholdRealm {
    /// Realm base URL.
    pub url: String,
    /// The realm id (Ed25519 identity public key, base64url) pinned at registration.
    pub realm_id: String,
}

/// The device configuration stored in the home (`config.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceConfig {
    /// Format version of this file.
    pub version: u32,
    /// Repository location (URL or path).
    pub repo: String,
    /// How the key is kept.
    pub custody: Custody,
}

/// A device home: `config.json`, the 0600 key file `backup.key`, and `device-id`, this
/// device's stable random id ([`Home::device_id`]).
#[derive(Debug, Clone)]
pub struct Home {
    dir: PathBuf,
}

const CONFIG_FILE: &str = "config.json";
const KEY_FILE: &str = "backup.key";
const DEVICE_ID_FILE: &str = "device-id";
/// Hex digits of a device id (128 random bits).
pub const DEVICE_ID_LEN: usize = 32;

impl Home {
    /// A home at `dir` (created on first write).
    pub fn at(dir: PathBuf) -> Self {
        Home { dir }
    }

    /// The home folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub(crate) fn ensure_dir(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|source| ClientError::Home {
            path: self.dir.clone(),
            source,
        })?;
        let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700));
        Ok(())
    }

    /// The device configuration, if any.
    pub fn config(&self) -> Result<Option<DeviceConfig>> {
        let path = self.path(CONFIG_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| ClientError::BadConfig {
                    path,
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ClientError::Home { path, source }),
        }
    }

    /// The device configuration, or [`ClientError::NotConfigured`].
    pub fn require_config(&self) -> Result<DeviceConfig> {
        self.config()?
            .ok_or_else(|| ClientError::NotConfigured(self.dir.clone()))
    }

    /// Saves the device configuration (atomically).
    pub fn save_config(&self, cfg: &DeviceConfig) -> Result<()> {
        self.ensure_dir()?;
        let json = serde_json::to_vec_pretty(cfg).expect("config serializes");
        self.write_atomic(CONFIG_FILE, &json, 0o600)
    }

    pub(crate) fn write_atomic(&self, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
        let path = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp"));
        let err = |source| ClientError::Home {
            path: path.clone(),
            source,
        };
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)
    }

    /// Stores the backup key in the home's 0600 key file.
    pub fn store_key(&self, key: &BackupKey) -> Result<()> {
        self.ensure_dir()?;
        let mut text = key.to_hex();
        text.push('\n');
        self.write_atomic(KEY_FILE, text.as_bytes(), 0o600)
    }

    /// The key stored on this device, if any.
    pub fn load_key(&self) -> Result<Option<BackupKey>> {
        let path = self.path(KEY_FILE);
        match std::fs::read(&path) {
            Ok(b) => {
                let b = zeroize::Zeroizing::new(b);
                Ok(Some(BackupKey::from_key_file(&b)?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ClientError::Home { path, source }),
        }
    }

    /// This device's stable id: 32 lowercase hex digits (128 bits from the OS RNG), created
    /// once, on first need, in the home's 0600 file `device-id`, and never changed. Snapshots
    /// carry it (docs/FORMAT.md §9) so that parent selection and retention groups tell phones
    /// apart even when they share a host name (`localhost` on Android). A new home (a new
    /// phone) gets a new id. Creation is atomic: the id is written to a temporary file and
    /// linked into place without replacing, so two processes racing agree on one id.
    pub fn device_id(&self) -> Result<String> {
        let path = self.path(DEVICE_ID_FILE);
        if let Some(id) = self.read_device_id(&path)? {
            return Ok(id);
        }
        self.ensure_dir()?;
        let mut raw = [0u8; DEVICE_ID_LEN / 2];
        rand_core::RngCore::fill_bytes(&mut OsRng, &mut raw);
        let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        // A private temporary name per attempt (the id itself is random), so racing threads
        // and processes never touch each other's file.
        let tmp = self.path(&format!(".{DEVICE_ID_FILE}.{id}.tmp"));
        let err = |source| ClientError::Home {
            path: path.clone(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(format!("{id}\n").as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(id),
            // Another process created it first: use its id.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self
                .read_device_id(&path)?
                .ok_or_else(|| ClientError::Home {
                    path: path.clone(),
                    source: std::io::Error::other("device id file vanished while being created"),
                }),
            Err(source) => Err(ClientError::Home { path, source }),
        }
    }

    fn read_device_id(&self, path: &Path) -> Result<Option<String>> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let id = text.trim();
                if id.len() == DEVICE_ID_LEN
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    Ok(Some(id.to_string()))
                } else {
                    Err(ClientError::BadConfig {
                        path: path.to_path_buf(),
                        reason: format!(
                            "expected {DEVICE_ID_LEN} lowercase hex digits; delete the file to                              give this device a new id (its next backup then starts a new                              retention group and reads every file again)"
                        ),
                    })
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ClientError::Home {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Removes the configuration and the key file from this device.
    pub fn forget(&self) -> Result<()> {
        for name in [KEY_FILE, CONFIG_FILE] {
            let path = self.path(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(ClientError::Home { path, source }),
            }
        }
        Ok(())
    }
}

/// The form of a repository location to remember in a device config: local paths become
/// absolute (so the device works from any directory); URLs are kept as given.
pub fn remembered_location(location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    std::path::absolute(location)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| location.to_string())
}

/// Enables E2EE backup with a new 64-digit key: creates the repository at `location`, generates
/// the key from the OS RNG, and stores the key and configuration in the home.
pub fn enable_with_key(home: &Home, location: &str) -> Result<(Repository, BackupKey)> {
    if home.config()?.is_some() {
        return Err(ClientError::AlreadyConfigured(home.dir().to_path_buf()));
    }
    let key = BackupKey::generate(&mut OsRng);
    let repo = Repository::init(Storage::open(location)?, &key)?;
    home.store_key(&key)?;
    home.save_config(&DeviceConfig {
        version: 1,
        repo: remembered_location(location),
        custody: Custody::Key,
    })?;
    Ok((repo, key))
}

/// Opens the repository at `location` with `key`.
pub fn open(location: &str, key: &BackupKey) -> Result<Repository> {
    Ok(Repository::open(Storage::open(location)?, key)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enable_stores_a_private_key_file_and_refuses_twice() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("home"));
        let repo = dir.path().join("repo");
        let (_, key) = enable_with_key(&home, repo.to_str().unwrap()).unwrap();
        let mode = std::fs::metadata(home.dir().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(home.load_key().unwrap().unwrap(), key);
        assert!(matches!(
            enable_with_key(&home, repo.to_str().unwrap()),
            Err(ClientError::AlreadyConfigured(_))
        ));
        open(repo.to_str().unwrap(), &key).unwrap();
    }

    #[test]
    fn device_id_is_created_once_private_and_differs_per_home() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("phone-a"));
        let id = home.device_id().unwrap();
        assert_eq!(id.len(), DEVICE_ID_LEN);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(home.device_id().unwrap(), id, "stable");
        let mode = std::fs::metadata(home.dir().join(DEVICE_ID_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let other = Home::at(dir.path().join("phone-b"));
        assert_ne!(other.device_id().unwrap(), id, "a new phone gets a new id");
        // Racing creators agree on one id.
        let racer = Home::at(dir.path().join("phone-c"));
        let ids: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| racer.device_id().unwrap()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
        std::fs::write(home.dir().join(DEVICE_ID_FILE), "not an id\n").unwrap();
        assert!(matches!(
            home.device_id(),
            Err(ClientError::BadConfig { .. })
        ));
    }
}
