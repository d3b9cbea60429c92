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

// ---------------------------------------------------------------------------------------------
// Threshold mode (docs/PROTOCOL.md §13): the key behind the password at t of n realms.

/// Where and as whom to reach the realms of a threshold vault.
pub struct ThresholdAccess {
    /// Realm base URLs and the account token each accepts, in share order.
    pub realms: Vec<(String, SecretString)>,
    /// How many realms a recovery needs.
    pub threshold: u8,
    /// Account id at the realms.
    pub account: String,
    /// Pinned realm ids (from the device's configuration; `None` entries unknown), if any.
    pub pins: Option<Vec<Option<chatvault_vault_client::RealmId>>>,
    /// PEM CA certificates to trust for the realms' `https://`, if any.
    pub ca_pem: Option<Vec<u8>>,
}

impl ThresholdAccess {
    fn client(&self) -> Result<chatvault_vault_client::ThresholdClient> {
        let endpoints = self
            .realms
            .iter()
            .map(|(url, token)| chatvault_vault_client::RealmEndpoint {
                url: url.clone(),
                token: token.clone(),
            })
            .collect();
        let mut c =
            chatvault_vault_client::ThresholdClient::new(endpoints, self.threshold, &self.account)?;
        if let Some(pins) = &self.pins {
            c = c.with_partial_pins(pins.clone())?;
        }
        if let Some(pem) = &self.ca_pem {
            c = c.with_ca_pem(pem)?;
        }
        Ok(match test_ksf() {
            Some(k) => c.with_registration_ksf(k)?,
            None => c,
        })
    }

    /// One [`VaultAccess`] per realm, in realm order: each realm keeps the rollback commitment
    /// with its record at the endpoints of PROTOCOL.md §9.1 (§13.15).
    pub fn commitment_access(&self) -> Vec<VaultAccess> {
        self.realms
            .iter()
            .map(|(url, token)| VaultAccess {
                url: url.clone(),
                account: self.account.clone(),
                token: token.clone(),
                ca_pem: self.ca_pem.clone(),
            })
            .collect()
    }

    /// The custody entry of the device configuration, pinning `ids`.
    pub fn custody(&self, ids: &[Option<chatvault_vault_client::RealmId>]) -> Custody {
        Custody::Threshold {
            realms: self
                .realms
                .iter()
                .zip(ids)
                .map(|((url, _), id)| crate::ThresholdRealm {
                    url: normalize_url(url),
                    realm_id: id.map(|id| id.to_b64()).unwrap_or_default(),
                })
                .collect(),
            threshold: self.threshold,
            account: self.account.clone(),
        }
    }
}

/// Parses the pinned realm ids of a [`Custody::Threshold`] (an empty id: not known yet).
pub fn parse_realm_ids(
    realms: &[crate::ThresholdRealm],
) -> Result<Vec<Option<chatvault_vault_client::RealmId>>> {
    realms
        .iter()
        .map(|r| {
            if r.realm_id.is_empty() {
                return Ok(None);
            }
            chatvault_vault_client::RealmId::from_b64(&r.realm_id)
                .map(Some)
                .ok_or_else(|| {
                    chatvault_vault_client::Error::InvalidInput(format!(
                        "the pinned realm id of {} is not 32 bytes of base64url",
                        r.url
                    ))
                    .into()
                })
        })
        .collect()
}

/// Enables E2EE backup in threshold password mode: creates the repository with a fresh key,
/// registers it at the realms (at least `t` must store it) and configures the home with the
/// realm ids pinned. Returns the repository and warnings about realms that did not store it.
pub fn enable_with_threshold(
    home: &Home,
    location: &str,
    access: &ThresholdAccess,
    password: &SecretString,
) -> Result<(Repository, Vec<String>)> {
    if home.config()?.is_some() {
        return Err(ClientError::AlreadyConfigured(home.dir().to_path_buf()));
    }
    let key = BackupKey::generate(&mut OsRng);
    let storage = Storage::open(location)?;
    let repo = Repository::init(storage.clone(), &key)?;
    let done = match access
        .client()
        .and_then(|c| Ok(c.register(password, key.expose_bytes())?))
    {
        Ok(d) => d,
        Err(e) => {
            let _ = storage.delete(chatvault_repo::repository::layout::CONFIG);
            return Err(e);
        }
    };
    home.store_key(&key)?;
    home.save_config(&DeviceConfig {
        version: 1,
        repo: crate::remembered_location(location),
        custody: access.custody(&done.realm_ids),
    })?;
    Ok((repo, done.warnings))
}

/// Gets the backup key from the realms with the password. Returns the key, the realm ids to
/// pin (authenticated by the registration, PROTOCOL.md §13.1) and warnings about skipped realms.
pub fn recover_key_threshold(
    access: &ThresholdAccess,
    password: &SecretString,
) -> Result<(
    BackupKey,
    Vec<Option<chatvault_vault_client::RealmId>>,
    Vec<String>,
)> {
    let got = access.client()?.recover(password)?;
    Ok((
        BackupKey::from_bytes(*got.backup_key),
        got.realm_ids,
        got.warnings,
    ))
}

/// Saves a device configuration for threshold custody after a recovery on a new device.
pub fn adopt_device_threshold(
    home: &Home,
    location: &str,
    access: &ThresholdAccess,
    ids: &[Option<chatvault_vault_client::RealmId>],
    key: &BackupKey,
) -> Result<()> {
    home.store_key(key)?;
    home.save_config(&DeviceConfig {
        version: 1,
        repo: crate::remembered_location(location),
        custody: access.custody(ids),
    })
}

/// Changes the password at the realms (the backup key stays the same). Returns warnings.
pub fn change_password_threshold(
    access: &ThresholdAccess,
    old: &SecretString,
    new: &SecretString,
) -> Result<Vec<String>> {
    Ok(access.client()?.change_password(old, new)?)
}

/// Switches to the 64-digit key: proves the password (a recovery), deletes the registration at
/// every realm and records key custody. Returns the key and the realms where deleting failed.
pub fn to_key_threshold(
    home: &Home,
    access: &ThresholdAccess,
    password: &SecretString,
) -> Result<(BackupKey, Vec<String>)> {
    let mut cfg = home.require_config()?;
    let key = home
        .load_key()?
        .ok_or_else(|| ClientError::NotConfigured(home.dir().to_path_buf()))?;
    let client = access.client()?;
    client.recover(password)?;
    let failed = client.delete()?;
    cfg.custody = Custody::Key;
    home.save_config(&cfg)?;
    Ok((key, failed))
}

/// Switches this device from the 64-digit key to a threshold password. Returns warnings.
pub fn to_threshold(
    home: &Home,
    access: &ThresholdAccess,
    password: &SecretString,
) -> Result<Vec<String>> {
    let mut cfg = home.require_config()?;
    let key = home
        .load_key()?
        .ok_or_else(|| ClientError::NotConfigured(home.dir().to_path_buf()))?;
    let done = access.client()?.register(password, key.expose_bytes())?;
    cfg.custody = access.custody(&done.realm_ids);
    home.save_config(&cfg)?;
    Ok(done.warnings)
}

/// Deletes the threshold registration (after proving the password) before a `disable`.
pub fn delete_threshold(access: &ThresholdAccess, password: &SecretString) -> Result<Vec<String>> {
    let client = access.client()?;
    client.recover(password)?;
    Ok(client.delete()?)
}
