//! The `config` object (docs/FORMAT.md §6): the repository header.
//!
//! ```text
//! config = magic[16] || version u32le || repo_id[32] || key_check[32]
//!          || params_len u32le || sealed_params[params_len] || checksum[32]
//! checksum = BLAKE3(all preceding bytes)
//! ```
//! The unkeyed checksum tells corruption apart from a wrong key: a damaged header fails the
//! checksum whatever the key; an intact header whose key-check differs means a wrong key.

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::envelope::{self, ObjectKind};
use crate::id::RepoId;
use crate::key::{BackupKey, RepoKeys};
use crate::{FORMAT_VERSION, labels};

/// Parameters sealed in the config: fixed at `init`, shared by every client of the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoParams {
    /// Minimum chunk size in bytes.
    pub chunk_min: u32,
    /// Average (target) chunk size in bytes.
    pub chunk_avg: u32,
    /// Maximum chunk size in bytes.
    pub chunk_max: u32,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// When the repository was created (RFC 3339).
    pub created: String,
}

impl RepoParams {
    /// The defaults of format version 1.
    pub fn defaults(created: String) -> Self {
        RepoParams {
            chunk_min: 128 << 10,
            chunk_avg: 512 << 10,
            chunk_max: 2 << 20,
            pack_size: 16 << 20,
            created,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        // The chunker's own bounds (FastCDC 2020: min ≤ 1 MiB, avg ≤ 4 MiB, max ≤ 16 MiB): a
        // config outside them must be refused here, not panic inside a backup.
        let ok = self.chunk_min >= 4096
            && self.chunk_min <= 1 << 20
            && self.chunk_min <= self.chunk_avg
            && self.chunk_avg <= 4 << 20
            && self.chunk_avg <= self.chunk_max
            && self.chunk_max <= 16 << 20
            && self.pack_size >= 1 << 20
            && self.pack_size <= 256 << 20;
        if ok {
            Ok(())
        } else {
            Err(ConfigError::Corrupted("parameters out of range"))
        }
    }
}

/// Why a config could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not a chatvault repository header at all.
    #[error("not a chatvault repository (bad magic)")]
    NotARepository,
    /// Written by a newer (or unknown) format version.
    #[error(
        "unsupported repository format version {0} (this program reads version {FORMAT_VERSION})"
    )]
    UnsupportedVersion(u32),
    /// Damaged bytes (checksum, lengths, sealed parameters).
    #[error("repository config is corrupted: {0}")]
    Corrupted(&'static str),
    /// The header is intact but the key-check value does not match this key.
    #[error("wrong backup key: this key does not open this repository")]
    WrongKey,
}

/// A decoded and verified config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The repository id.
    pub repo_id: RepoId,
    /// The sealed parameters, opened.
    pub params: RepoParams,
}

const HEADER_LEN: usize = 16 + 4 + 32 + 32 + 4;

impl Config {
    /// Encodes a new config for `key`.
    pub fn encode<R: RngCore + CryptoRng>(
        repo_id: &RepoId,
        params: &RepoParams,
        keys: &RepoKeys,
        rng: &mut R,
    ) -> Vec<u8> {
        let json = serde_json::to_vec(params).expect("params serialize");
        let sealed = envelope::seal(keys, ObjectKind::Config, repo_id.as_bytes(), &json, rng);
        let mut out = Vec::with_capacity(HEADER_LEN + sealed.len() + 32);
        out.extend_from_slice(labels::CONFIG_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(repo_id.as_bytes());
        out.extend_from_slice(&keys.key_check(repo_id));
        out.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        out.extend_from_slice(&sealed);
        let checksum = blake3::hash(&out);
        out.extend_from_slice(checksum.as_bytes());
        out
    }

    /// Reads the repository id without a key (after checking magic, version and checksum).
    pub fn peek_repo_id(bytes: &[u8]) -> Result<RepoId, ConfigError> {
        Self::check_structure(bytes).map(|(id, _, _)| id)
    }

    fn check_structure(bytes: &[u8]) -> Result<(RepoId, [u8; 32], &[u8]), ConfigError> {
        if bytes.len() < 16 || &bytes[..16] != labels::CONFIG_MAGIC {
            return Err(ConfigError::NotARepository);
        }
        if bytes.len() < 20 {
            return Err(ConfigError::Corrupted("truncated"));
        }
        let version = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
        if bytes.len() < HEADER_LEN + 32 {
            return Err(ConfigError::Corrupted("truncated"));
        }
        let (body, checksum) = bytes.split_at(bytes.len() - 32);
        if blake3::hash(body).as_bytes() != checksum {
            return Err(ConfigError::Corrupted("checksum mismatch"));
        }
        if version != FORMAT_VERSION {
            return Err(ConfigError::UnsupportedVersion(version));
        }
        let repo_id = RepoId::from_bytes(bytes[20..52].try_into().expect("32 bytes"));
        let key_check: [u8; 32] = bytes[52..84].try_into().expect("32 bytes");
        let len = u32::from_le_bytes(bytes[84..88].try_into().expect("4 bytes")) as usize;
        // `bytes.len() >= HEADER_LEN + 32` here; no `HEADER_LEN + len + 32`, which overflows
        // on 32-bit targets.
        if len != bytes.len() - HEADER_LEN - 32 {
            return Err(ConfigError::Corrupted("length mismatch"));
        }
        Ok((repo_id, key_check, &bytes[HEADER_LEN..HEADER_LEN + len]))
    }

    /// Decodes and verifies a config with the backup key, returning it and the subkeys.
    pub fn decode(bytes: &[u8], key: &BackupKey) -> Result<(Config, RepoKeys), ConfigError> {
        let (repo_id, key_check, sealed) = Self::check_structure(bytes)?;
        let keys = key.derive(&repo_id);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            keys.key_check(&repo_id).as_slice(),
            key_check.as_slice(),
        )) {
            return Err(ConfigError::WrongKey);
        }
        let json = envelope::open(&keys, ObjectKind::Config, repo_id.as_bytes(), sealed)
            .map_err(|_| ConfigError::Corrupted("sealed parameters do not authenticate"))?;
        let params: RepoParams = serde_json::from_slice(&json)
            .map_err(|_| ConfigError::Corrupted("sealed parameters are not valid JSON"))?;
        params.validate()?;
        Ok((Config { repo_id, params }, keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    fn sample() -> (Vec<u8>, BackupKey) {
        let key = BackupKey::generate(&mut OsRng);
        let id = RepoId::random(&mut OsRng);
        let keys = key.derive(&id);
        let bytes = Config::encode(&id, &RepoParams::defaults("now".into()), &keys, &mut OsRng);
        (bytes, key)
    }

    #[test]
    fn config_round_trips() {
        let (bytes, key) = sample();
        let (cfg, _) = Config::decode(&bytes, &key).unwrap();
        assert_eq!(cfg.params, RepoParams::defaults("now".into()));
        assert_eq!(Config::peek_repo_id(&bytes).unwrap(), cfg.repo_id);
    }

    #[test]
    fn wrong_key_is_distinct_from_corruption() {
        let (bytes, _) = sample();
        let other = BackupKey::generate(&mut OsRng);
        assert_eq!(
            Config::decode(&bytes, &other).unwrap_err(),
            ConfigError::WrongKey
        );
        for i in 16..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            let e = Config::decode(&b, &other).unwrap_err();
            assert_eq!(e, ConfigError::Corrupted("checksum mismatch"), "byte {i}");
        }
        for len in 0..bytes.len() {
            let e = Config::decode(&bytes[..len], &other).unwrap_err();
            assert!(
                matches!(e, ConfigError::Corrupted(_) | ConfigError::NotARepository),
                "{len}"
            );
        }
    }

    #[test]
    fn newer_version_is_refused() {
        let (mut bytes, key) = sample();
        bytes[16] = 2;
        let n = bytes.len() - 32;
        let c = blake3::hash(&bytes[..n]);
        bytes[n..].copy_from_slice(c.as_bytes());
        assert_eq!(
            Config::decode(&bytes, &key).unwrap_err(),
            ConfigError::UnsupportedVersion(2)
        );
    }
}
