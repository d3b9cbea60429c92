//! The vault key file `DATA_DIR/vault.key` (PROTOCOL.md §9): OPAQUE server setup, record-sealing
//! key, state-sealing key and the development token issuer key. Mode 0600, created on first start.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chatvault_vault_core::VaultKeys;
use chatvault_vault_core::labels::KEY_FILE_MAGIC;
use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Key file format version. Version 2 added the Ed25519 identity key (PROTOCOL.md §3).
pub const KEY_FILE_VERSION: u16 = 2;
const KEY_FILE_LEN: usize = 6 + 2 + VaultKeys::SERIALIZED_LEN + 32;

/// The contents of `vault.key`.
pub struct KeyFile {
    /// Protocol keys.
    pub vault: VaultKeys,
    /// Development token issuer (Ed25519) key.
    pub issuer: SigningKey,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFile")
            .field("vault", &self.vault)
            .field("issuer", &"(redacted)")
            .finish()
    }
}

/// `DATA_DIR/vault.key`.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("vault.key")
}

/// `DATA_DIR/issuer.pub`: the dev issuer public key, base64url.
pub fn issuer_pub_path(data_dir: &Path) -> PathBuf {
    data_dir.join("issuer.pub")
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

impl KeyFile {
    /// The threshold realm keys of this vault (PROTOCOL.md §13.1): the vault's Ed25519 identity
    /// key (so the realm id is the server identity single-vault clients pin) and a sealing key
    /// derived from the key file's secrets.
    pub fn realm_keys(&self) -> Result<chatvault_threshold::RealmKeys> {
        let bytes = self.vault.to_bytes();
        // `VaultKeys::to_bytes` ends with the 32-byte identity seed (PROTOCOL.md §3); the test
        // below checks the derived realm id is the server identity.
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            bytes[bytes.len() - 32..]
                .try_into()
                .expect("VaultKeys serialization ends with the identity seed"),
        );
        chatvault_threshold::RealmKeys::new(&seed, &bytes).map_err(|e| Error::KeyFile {
            path: "vault.key".into(),
            reason: e.to_string(),
        })
    }
}

impl KeyFile {
    /// Serializes (secret!).
    fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(KEY_FILE_LEN));
        out.extend_from_slice(KEY_FILE_MAGIC);
        out.extend_from_slice(&KEY_FILE_VERSION.to_be_bytes());
        out.extend_from_slice(&self.vault.to_bytes());
        out.extend_from_slice(self.issuer.as_bytes());
        out
    }

    fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |reason: &str| Error::KeyFile {
            path: path.display().to_string(),
            reason: reason.into(),
        };
        if bytes.len() < 8 || &bytes[..6] != KEY_FILE_MAGIC {
            return Err(bad("not a chatvault vault key file"));
        }
        let version = u16::from_be_bytes([bytes[6], bytes[7]]);
        if version == 1 {
            // Version 1 vaults had no identity key; their records were registered with no OPAQUE
            // server identifier and cannot be recovered by clients of protocol 2. Refuse rather
            // than answer logins that would fail and burn the users' guesses.
            return Err(bad(
                "version 1 (no identity key): its records cannot be recovered with this version; \
                 keep this data directory for the old release and start this one on a new one \
                 (users re-register with their backup key: `chatvault key to-password`)",
            ));
        }
        if version != KEY_FILE_VERSION {
            return Err(bad(&format!("unsupported version {version}")));
        }
        if bytes.len() != KEY_FILE_LEN {
            return Err(bad("wrong length"));
        }
        let vault = VaultKeys::from_bytes(&bytes[8..8 + VaultKeys::SERIALIZED_LEN])
            .map_err(|e| bad(&e.to_string()))?;
        let issuer_bytes: Zeroizing<[u8; 32]> = Zeroizing::new(
            bytes[8 + VaultKeys::SERIALIZED_LEN..]
                .try_into()
                .expect("length checked"),
        );
        Ok(Self {
            vault,
            issuer: SigningKey::from_bytes(&issuer_bytes),
        })
    }

    /// Reads `vault.key` from `data_dir`, or creates it (mode 0600, atomically: concurrent first
    /// starts of several processes end up with the same key file). Also writes `issuer.pub`.
    pub fn load_or_create(data_dir: &Path) -> Result<Self> {
        fs::create_dir_all(data_dir).map_err(io(format!("creating {}", data_dir.display())))?;
        let path = key_path(data_dir);
        if !path.exists() {
            let mut rng = rand_core::OsRng;
            let fresh = KeyFile {
                vault: VaultKeys::generate(&mut rng),
                issuer: SigningKey::generate(&mut rng),
            };
            let tmp = data_dir.join(format!(".vault.key.{}.tmp", std::process::id()));
            {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(io(format!("creating {}", tmp.display())))?;
                f.write_all(&fresh.to_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(io(format!("writing {}", tmp.display())))?;
            }
            // hard_link fails if another process won the race; then we read its file.
            let linked = fs::hard_link(&tmp, &path);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    if let Ok(dir) = fs::File::open(data_dir) {
                        let _ = dir.sync_all();
                    }
                    tracing::info!(path = %path.display(), "created new vault key file");
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(format!("creating {}", path.display()))(e)),
            }
        }
        let meta = fs::metadata(&path).map_err(io(format!("reading {}", path.display())))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(Error::KeyFile {
                path: path.display().to_string(),
                reason: "permissions too open (must be 0600)".into(),
            });
        }
        let bytes =
            Zeroizing::new(fs::read(&path).map_err(io(format!("reading {}", path.display())))?);
        let kf = Self::from_bytes(&bytes, &path)?;
        let pub_path = issuer_pub_path(data_dir);
        let pub_text = format!(
            "{}\n",
            URL_SAFE_NO_PAD.encode(kf.issuer.verifying_key().as_bytes())
        );
        if fs::read_to_string(&pub_path).ok().as_deref() != Some(pub_text.as_str()) {
            fs::write(&pub_path, pub_text)
                .map_err(io(format!("writing {}", pub_path.display())))?;
        }
        Ok(kf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_or_create_roundtrip_same_keys_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let a = KeyFile::load_or_create(dir.path()).unwrap();
        let b = KeyFile::load_or_create(dir.path()).unwrap();
        assert_eq!(a.vault.server_identity(), b.vault.server_identity());
        assert_eq!(a.issuer.verifying_key(), b.issuer.verifying_key());
        let mode = fs::metadata(key_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!format!("{a:?}").contains(&format!("{:?}", a.issuer.as_bytes())));
    }

    #[test]
    fn realm_id_is_the_server_identity() {
        let dir = tempfile::tempdir().unwrap();
        let kf = KeyFile::load_or_create(dir.path()).unwrap();
        assert_eq!(
            kf.realm_keys().unwrap().realm_id().0,
            *kf.vault.server_identity().as_bytes()
        );
    }

    #[test]
    fn load_corrupted_key_file_rejected() {
        let dir = tempfile::tempdir().unwrap();
        KeyFile::load_or_create(dir.path()).unwrap();
        let p = key_path(dir.path());
        let mut bytes = fs::read(&p).unwrap();
        bytes[7] = 9;
        fs::write(&p, &bytes).unwrap();
        let err = KeyFile::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("unsupported version 9"), "{err}");
    }

    #[test]
    fn version_1_key_file_refused_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = key_path(dir.path());
        // A version-1 file: magic, version 1, setup + record key + state key + issuer key.
        let mut v1 = KEY_FILE_MAGIC.to_vec();
        v1.extend_from_slice(&1u16.to_be_bytes());
        v1.extend_from_slice(&[0u8; 128 + 64 + 32]);
        fs::write(&p, &v1).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        let err = KeyFile::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("version 1 (no identity key)"), "{err}");
        assert!(err.contains("new one"), "{err}");
        // The old file is left as it was.
        assert_eq!(fs::read(&p).unwrap(), v1);
    }
}
