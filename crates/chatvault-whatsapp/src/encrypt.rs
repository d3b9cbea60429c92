//! Encryption into a WhatsApp-compatible crypt15 file (FORMAT-crypt15.md, "Writing").

use std::collections::BTreeMap;
use std::io::Write;

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{AesGcm, Nonce};
use flate2::Compression;
use flate2::write::ZlibEncoder;
use md5::{Digest, Md5};
use rand_core::{CryptoRng, RngCore};

use crate::error::Error;
use crate::kdf::backup_encryption_key;
use crate::prefix::{self, BackupHeader, BackupInfo, FEATURE_TAGS, IV_LEN};

/// AES-256-GCM with WhatsApp's 16-byte IV.
type Aes256Gcm16 = AesGcm<aes::Aes256, U16>;

/// What goes into the cleartext header of a backup this crate writes.
///
/// [`EncryptOptions::default`] describes a msgstore backup like the reference fixture
/// (app version 2.22.5.13, feature table present, its feature flags). To re-encrypt a
/// backup so that it looks like the original, use [`EncryptOptions::from_header`] with the
/// original's [`BackupHeader`]. Set [`jid_suffix`](Self::jid_suffix) to the last two digits
/// of the account's phone number.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EncryptOptions {
    /// WhatsApp version string written in the header.
    pub app_version: String,
    /// The last two digits of the account's phone number.
    pub jid_suffix: String,
    /// `backup_version` field, omitted when `None`.
    pub backup_version: Option<i32>,
    /// Write the `0x01` feature-table byte (msgstore backups do).
    pub feature_table: bool,
    /// Feature flags by field number (5..=37, 39, 40); absent numbers are not written.
    pub feature_flags: BTreeMap<u32, bool>,
    /// zlib compression level, 0..=9. WhatsApp and wa-crypt-tools write level 1 (`78 01`).
    pub compression_level: u32,
}

/// Feature flags of the fixture's msgstore backup (fields 5..=37, these ones true).
const DEFAULT_ENABLED: [u32; 14] = [5, 7, 8, 13, 14, 19, 22, 25, 28, 30, 31, 32, 36, 37];

impl Default for EncryptOptions {
    fn default() -> Self {
        EncryptOptions {
            app_version: "2.22.5.13".to_owned(),
            jid_suffix: "00".to_owned(),
            backup_version: Some(0),
            feature_table: true,
            feature_flags: (5..=37)
                .map(|tag| (tag, DEFAULT_ENABLED.contains(&tag)))
                .collect(),
            compression_level: 1,
        }
    }
}

impl EncryptOptions {
    /// Options that reproduce `header`'s metadata (app version, phone digits, backup
    /// version, feature table and flags), e.g. to re-encrypt an edited database.
    pub fn from_header(header: &BackupHeader) -> Self {
        EncryptOptions {
            app_version: header.app_version.clone(),
            jid_suffix: header.jid_suffix.clone(),
            backup_version: header.backup_version,
            feature_table: header.feature_table,
            feature_flags: header.feature_flags.clone(),
            ..EncryptOptions::default()
        }
    }

    pub(crate) fn info(&self) -> Result<BackupInfo, Error> {
        if let Some(tag) = self
            .feature_flags
            .keys()
            .find(|t| !FEATURE_TAGS.contains(t))
        {
            return Err(Error::InvalidOptions {
                reason: format!("feature flag {tag} is not a known header field").into(),
            });
        }
        if self.compression_level > 9 {
            return Err(Error::InvalidOptions {
                reason: "the zlib compression level must be 0..=9".into(),
            });
        }
        let mut info = BackupInfo {
            app_version: self.app_version.clone(),
            jid_suffix: self.jid_suffix.clone(),
            backup_version: self.backup_version,
            ..BackupInfo::default()
        };
        info.set_feature_flags(&self.feature_flags);
        Ok(info)
    }
}

/// Encrypts `plaintext_db` (the SQLite database bytes) into a single-file crypt15 backup.
///
/// `key` is the 32-byte root key. The IV is 16 bytes from `rng`, which must be a
/// cryptographic RNG (`rand_core::OsRng` in production; a seeded one only in tests): a
/// repeated IV under the same key breaks AES-GCM.
pub fn encrypt<R: RngCore + CryptoRng>(
    key: &[u8; 32],
    plaintext_db: &[u8],
    options: &EncryptOptions,
    rng: &mut R,
) -> Result<Vec<u8>, Error> {
    let info = options.info()?;
    let mut iv = [0u8; IV_LEN];
    rng.fill_bytes(&mut iv);
    let header = prefix::serialize(&iv, options.feature_table, info)?;
    let payload = compress(plaintext_db, options.compression_level);
    Ok(seal(key, &iv, header, payload, true))
}

pub(crate) fn compress(data: &[u8], level: u32) -> Vec<u8> {
    let mut z = ZlibEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        Compression::new(level),
    );
    z.write_all(data).expect("writing to a Vec cannot fail");
    z.finish().expect("writing to a Vec cannot fail")
}

/// `header || AES-256-GCM(payload) || tag || MD5(everything before)?`.
pub(crate) fn seal(
    root_key: &[u8; 32],
    iv: &[u8; IV_LEN],
    header: Vec<u8>,
    payload: Vec<u8>,
    md5_trailer: bool,
) -> Vec<u8> {
    let key = backup_encryption_key(root_key);
    let cipher = Aes256Gcm16::new((&*key).into());
    drop(key);
    let mut out = header;
    let ct_start = out.len();
    out.extend_from_slice(&payload);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::<U16>::from_slice(iv), b"", &mut out[ct_start..])
        .expect("payload is far below AES-GCM's length limit");
    out.extend_from_slice(&tag);
    if md5_trailer {
        let digest = Md5::digest(&out);
        out.extend_from_slice(&digest);
    }
    out
}
