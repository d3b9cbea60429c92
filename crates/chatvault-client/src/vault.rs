//! Password custody: the backup key kept by a Backup Key Vault behind the user's password
//! (docs/PROTOCOL.md). The device still keeps its own copy of the key in the home; the vault is
//! what lets a *new* device get it back with only the password.

use chatvault_format::key::BackupKey;
use chatvault_repo::repository::Repository;
use chatvault_repo::storage::Storage;
use chatvault_vault_client::{SecretString, ServerIdentity, VaultClient};
use rand_core::OsRng;

use crate::{ClientError, Custody, DeviceConfig, Home, Result};

/// Where and as whom to reach the vault.
pub struct VaultAccess {
    /// Vault base URL.
    pub url: String,
    /// Account id at the vault.
    pub account: String,
    /// Account token issued by the app's account service.
    pub token: SecretString,
    /// PEM CA certificates to trust for the vault's `https://` instead of the web PKI (a
    /// private CA), if any.
    pub ca_pem: Option<Vec<u8>>,
}

impl VaultAccess {
    pub(crate) fn client(&self) -> Result<VaultClient> {
        let mut c = VaultClient::new(&self.url, &self.account, self.token.clone())?;
        if let Some(pem) = &self.ca_pem {
            c = c.with_ca_pem(pem)?;
        }
        Ok(match test_ksf() {
            Some(k) => c.with_registration_ksf(k)?,
            None => c,
        })
    }
}

/// Cheap Argon2 parameters for test suites only, selected by `CHATVAULT_INSECURE_TEST_KSF=1`
/// **in builds with the `insecure-test-ksf` feature** (the workspace's test builds); release
/// builds ignore the variable, and their vault refuses such parameters (PROTOCOL.md §2.1).
#[cfg(feature = "insecure-test-ksf")]
fn test_ksf() -> Option<chatvault_vault_client::KsfParams> {
    (std::env::var("CHATVAULT_INSECURE_TEST_KSF").as_deref() == Ok("1"))
        .then_some(chatvault_vault_client::KsfParams::INSECURE_FOR_TESTS)
}

#[cfg(not(feature = "insecure-test-ksf"))]
fn test_ksf() -> Option<chatvault_vault_client::KsfParams> {
    None
}

/// The normalised form of a vault URL (no trailing slash), or the text itself if it is not a
/// valid vault URL (the client refuses it later with a clear message).
pub fn normalize_url(url: &str) -> String {
    chatvault_vault_client::normalize_vault_url(url).unwrap_or_else(|_| url.to_owned())
}

/// Parses a pinned vault identity (base64url).
pub fn parse_identity(text: &str) -> Result<ServerIdentity> {
    Ok(ServerIdentity::from_b64(text.trim()).map_err(chatvault_vault_client::Error::from)?)
}

/// Registers `key` at the vault: checked against `pinned` (PROTOCOL.md §4.1), or trust on first
/// use without a pin.
fn register(
    vault: &VaultAccess,
    password: &SecretString,
    key: &BackupKey,
    pinned: Option<&ServerIdentity>,
) -> Result<ServerIdentity> {
    let client = vault.client()?;
    Ok(match pinned {
        Some(p) => client.register_pinned(password, key.expose_bytes(), p)?,
        None => client.register(password, key.expose_bytes())?,
    })
}

/// Enables E2EE backup in password mode: creates the repository with a fresh random key, stores
/// the key at the vault behind `password` (checking the vault's signature against `pinned`, or
/// trusting its key on first use when there is no pin), and configures the home. If the vault
/// refuses, the just-created repository header is removed again so the user can retry.
pub fn enable_with_password(
    home: &Home,
    location: &str,
    vault: &VaultAccess,
    password: &SecretString,
    pinned: Option<&ServerIdentity>,
) -> Result<(Repository, ServerIdentity)> {
    if home.config()?.is_some() {
        return Err(ClientError::AlreadyConfigured(home.dir().to_path_buf()));
    }
    let key = BackupKey::generate(&mut OsRng);
    let storage = Storage::open(location)?;
    let repo = Repository::init(storage.clone(), &key)?;
    let identity = match register(vault, password, &key, pinned) {
        Ok(i) => i,
        Err(e) => {
            let _ = storage.delete(chatvault_repo::repository::layout::CONFIG);
            return Err(e);
        }
    };
    home.store_key(&key)?;
    home.save_config(&DeviceConfig {
        version: 1,
        repo: crate::remembered_location(location),
        custody: Custody::Password {
            vault: normalize_url(&vault.url),
            account: vault.account.clone(),
            server_key: identity.to_string(),
        },
    })?;
    Ok((repo, identity))
}

/// Gets the backup key from the vault with the password. With no pinned identity (a new
/// device), the identity authenticated by the OPAQUE envelope is returned for pinning.
pub fn recover_key(
    vault: &VaultAccess,
    password: &SecretString,
    pinned: Option<&ServerIdentity>,
) -> Result<(BackupKey, ServerIdentity)> {
    let client = vault.client()?;
    let (recovered, identity) = match pinned {
        Some(p) => (client.recover(password, p)?, *p),
        None => client.recover_unpinned(password)?,
    };
    Ok((BackupKey::from_bytes(*recovered.backup_key), identity))
}

/// Saves a device configuration for password custody after a successful recovery on a new
/// device, so that it can back up from now on.
pub fn adopt_device(
    home: &Home,
    location: &str,
    vault: &VaultAccess,
    identity: &ServerIdentity,
    key: &BackupKey,
) -> Result<()> {
    home.store_key(key)?;
    home.save_config(&DeviceConfig {
        version: 1,
        repo: crate::remembered_location(location),
        custody: Custody::Password {
            vault: normalize_url(&vault.url),
            account: vault.account.clone(),
            server_key: identity.to_string(),
        },
    })
}

/// Changes the vault password (the backup key stays the same).
pub fn change_password(
    vault: &VaultAccess,
    old: &SecretString,
    new: &SecretString,
    pinned: &ServerIdentity,
) -> Result<()> {
    Ok(vault.client()?.change_password(old, new, pinned)?)
}

/// Switches this device to the 64-digit key: proves the password, deletes the vault record, and
/// records key custody in the home. Returns the key for showing to the user.
pub fn to_key(
    home: &Home,
    vault: &VaultAccess,
    password: &SecretString,
    pinned: &ServerIdentity,
) -> Result<BackupKey> {
    let mut cfg = home.require_config()?;
    let key = home
        .load_key()?
        .ok_or_else(|| ClientError::NotConfigured(home.dir().to_path_buf()))?;
    vault.client()?.delete(password, pinned)?;
    cfg.custody = Custody::Key;
    home.save_config(&cfg)?;
    Ok(key)
}

/// Switches this device from the 64-digit key to a password kept by the vault, checked against
/// `pinned` (PROTOCOL.md §4.1) or trusted on first use without a pin.
pub fn to_password(
    home: &Home,
    vault: &VaultAccess,
    password: &SecretString,
    pinned: Option<&ServerIdentity>,
) -> Result<ServerIdentity> {
    let mut cfg = home.require_config()?;
    let key = home
        .load_key()?
        .ok_or_else(|| ClientError::NotConfigured(home.dir().to_path_buf()))?;
    let identity = register(vault, password, &key, pinned)?;
    cfg.custody = Custody::Password {
        vault: normalize_url(&vault.url),
        account: vault.account.clone(),
        server_key: identity.to_string(),
    };
    home.save_config(&cfg)?;
    Ok(identity)
}

/// Turns E2EE backup off: deletes the vault record (password mode, proving the password), then
/// every object of the repository, then this device's configuration and key.
pub fn disable(
    home: &Home,
    vault: Option<(&VaultAccess, &SecretString, &ServerIdentity)>,
) -> Result<u64> {
    let cfg = home.require_config()?;
    if let Some((v, password, pinned)) = vault {
        v.client()?.delete(password, pinned)?;
    }
    let storage = Storage::open(&cfg.repo)?;
    let mut removed = 0u64;
    // Snapshots first, config last: an interrupted disable leaves no snapshot pointing at
    // deleted data, and a still-valid header until everything else is gone.
    for folder in ["snapshots/", "index/", "data/", "locks/"] {
        for l in storage.list(folder, true)? {
            let path = if folder == "data/" {
                format!("data/{}/{}", &l.name[..2.min(l.name.len())], l.name)
            } else {
                format!("{folder}{}", l.name)
            };
            storage.delete(&path)?;
            removed += 1;
        }
    }
    storage.delete(chatvault_repo::repository::layout::CONFIG)?;
    home.forget()?;
    Ok(removed + 1)
}
