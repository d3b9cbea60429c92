//! The backup key (docs/FORMAT.md §3): 32 random bytes, its 64-hex-digit form, key files, and the
//! subkeys derived from it.

use std::fmt;

use hkdf::Hkdf;
use rand_core::{CryptoRng, RngCore};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::id::RepoId;
use crate::labels;

/// Length of the backup key in bytes.
pub const KEY_LEN: usize = 32;

/// Header of a Java-serialized `byte[]` as written by WhatsApp's `encrypted_backup.key`
/// (`ObjectOutputStream` magic + TC_ARRAY + class descriptor of `[B`).
const JAVA_PREFIX: &[u8] = &[0xac, 0xed, 0x00, 0x05, 0x75, 0x72, 0x00, 0x02, 0x5b, 0x42];
/// Rest of the class descriptor after the 8-byte serialVersionUID: flags SC_SERIALIZABLE, zero
/// fields, TC_ENDBLOCKDATA, TC_NULL superclass, then the array length (32, big-endian).
const JAVA_SUFFIX: &[u8] = &[0x02, 0x00, 0x00, 0x78, 0x70, 0x00, 0x00, 0x00, 0x20];
const JAVA_FILE_LEN: usize = JAVA_PREFIX.len() + 8 + JAVA_SUFFIX.len() + KEY_LEN;

/// Why a key text or key file could not be read. Never contains key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyParseError {
    /// A character that is neither a hex digit nor a separator.
    #[error(
        "the key contains a character that is not a hex digit (0-9, a-f) at position {position}"
    )]
    InvalidCharacter {
        /// 1-based position among the non-separator characters.
        position: usize,
    },
    /// Too few or too many hex digits.
    #[error("the key must have exactly 64 hex digits, found {found}")]
    WrongLength {
        /// Number of hex digits found.
        found: usize,
    },
    /// A binary key file that is not a Java-serialized 32-byte array.
    #[error(
        "unrecognised key file: expected 64 hex digits or a WhatsApp encrypted_backup.key file"
    )]
    UnrecognisedFile,
}

/// The 256-bit backup key. Zeroized on drop; `Debug` is redacted; not `Clone`.
///
/// The key is only ever generated from an OS RNG ([`BackupKey::generate`]) or read back from the
/// user ([`BackupKey::parse_hex`], [`BackupKey::from_key_file`]); it is never derived from a
/// password.
pub struct BackupKey(Zeroizing<[u8; KEY_LEN]>);

impl BackupKey {
    /// Generates a fresh key from a cryptographically secure RNG (use `rand_core::OsRng`).
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill_bytes(k.as_mut());
        BackupKey(k)
    }

    /// Wraps raw key bytes (e.g. released by the vault).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        BackupKey(Zeroizing::new(bytes))
    }

    /// Parses the 64-digit form: case-insensitive hex; whitespace, `-`, `_` and `:` are ignored.
    pub fn parse_hex(text: &str) -> Result<Self, KeyParseError> {
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        let mut n = 0usize;
        for c in text.chars() {
            if c.is_whitespace() || matches!(c, '-' | '_' | ':') {
                continue;
            }
            let v = c
                .to_digit(16)
                .ok_or(KeyParseError::InvalidCharacter { position: n + 1 })?;
            if n < 2 * KEY_LEN {
                out[n / 2] |= (v as u8) << if n.is_multiple_of(2) { 4 } else { 0 };
            }
            n += 1;
        }
        if n != 2 * KEY_LEN {
            return Err(KeyParseError::WrongLength { found: n });
        }
        Ok(BackupKey(out))
    }

    /// Reads a key file: either text holding the 64 hex digits, or WhatsApp's
    /// `encrypted_backup.key` (a Java-serialized `byte[32]`).
    pub fn from_key_file(contents: &[u8]) -> Result<Self, KeyParseError> {
        if contents.starts_with(JAVA_PREFIX) {
            if contents.len() != JAVA_FILE_LEN
                || &contents[JAVA_PREFIX.len() + 8..JAVA_PREFIX.len() + 8 + JAVA_SUFFIX.len()]
                    != JAVA_SUFFIX
            {
                return Err(KeyParseError::UnrecognisedFile);
            }
            let mut k = [0u8; KEY_LEN];
            k.copy_from_slice(&contents[JAVA_FILE_LEN - KEY_LEN..]);
            let key = BackupKey::from_bytes(k);
            k.zeroize();
            return Ok(key);
        }
        let text = std::str::from_utf8(contents).map_err(|_| KeyParseError::UnrecognisedFile)?;
        BackupKey::parse_hex(text)
    }

    /// Serializes the key as WhatsApp's `encrypted_backup.key` (Java-serialized `byte[32]`, with
    /// the serialVersionUID of `[B`).
    pub fn to_java_key_file(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(JAVA_FILE_LEN));
        v.extend_from_slice(JAVA_PREFIX);
        v.extend_from_slice(&[0xac, 0xf3, 0x17, 0xf8, 0x06, 0x08, 0x54, 0xe0]);
        v.extend_from_slice(JAVA_SUFFIX);
        v.extend_from_slice(self.0.as_ref());
        v
    }

    /// The 64 lowercase hex digits, ungrouped (for key files).
    /// Every intermediate buffer is zeroized, and the string has room for one more character
    /// (a newline) so that pushing it does not leave a freed copy behind.
    pub fn to_hex(&self) -> Zeroizing<String> {
        let mut buf = Zeroizing::new([0u8; 2 * KEY_LEN]);
        hex::encode_to_slice(self.0.as_ref(), &mut buf[..]).expect("64 bytes for 32");
        let mut s = Zeroizing::new(String::with_capacity(2 * KEY_LEN + 1));
        s.push_str(std::str::from_utf8(&buf[..]).expect("hex digits are ASCII"));
        s
    }

    /// The 64 hex digits in 16 groups of 4, separated by spaces (for showing to a person).
    pub fn to_grouped_hex(&self) -> Zeroizing<String> {
        let h = self.to_hex();
        let mut s = Zeroizing::new(String::with_capacity(80));
        for (i, c) in h.chars().enumerate() {
            if i > 0 && i % 4 == 0 {
                s.push(' ');
            }
            s.push(c);
        }
        s
    }

    /// Raw key bytes. Callers must not copy them into non-zeroizing storage.
    pub fn expose_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Derives the repository subkeys (§3): `HKDF-SHA256(salt = repo_id, ikm = key, info = label)`.
    pub fn derive(&self, repo_id: &RepoId) -> RepoKeys {
        let hk = Hkdf::<Sha256>::new(Some(repo_id.as_bytes()), self.0.as_ref());
        let expand = |label: &str| {
            let mut out = Zeroizing::new([0u8; 32]);
            hk.expand(label.as_bytes(), out.as_mut())
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            out
        };
        let mut seed = [0u8; 8];
        hk.expand(labels::HKDF_CHUNKER.as_bytes(), &mut seed)
            .expect("8 bytes is a valid HKDF-SHA256 output length");
        let chunker_seed = u64::from_le_bytes(seed);
        seed.zeroize();
        RepoKeys {
            check: expand(labels::HKDF_KEY_CHECK),
            data: expand(labels::HKDF_DATA),
            meta: expand(labels::HKDF_METADATA),
            id: expand(labels::HKDF_ID),
            chunker_seed,
        }
    }
}

impl fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BackupKey(redacted)")
    }
}

impl PartialEq for BackupKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_ref().ct_eq(other.0.as_ref()).into()
    }
}
impl Eq for BackupKey {}

/// The subkeys of one repository (docs/FORMAT.md §3). Zeroized on drop; `Debug` is redacted.
pub struct RepoKeys {
    pub(crate) check: Zeroizing<[u8; 32]>,
    pub(crate) data: Zeroizing<[u8; 32]>,
    pub(crate) meta: Zeroizing<[u8; 32]>,
    pub(crate) id: Zeroizing<[u8; 32]>,
    chunker_seed: u64,
}

impl RepoKeys {
    /// The key-check value stored in the config: `BLAKE3-keyed(K_check, KEY_CHECK_INPUT || repo_id)`.
    pub fn key_check(&self, repo_id: &RepoId) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.check);
        h.update(labels::KEY_CHECK_INPUT.as_bytes());
        h.update(repo_id.as_bytes());
        *h.finalize().as_bytes()
    }

    /// Seed for the content-defined chunker, so chunk boundaries depend on the key.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// The keyed id of an object with the given domain label (§4.2):
    /// `BLAKE3-keyed(K_id, label || 0x00 || plaintext)`.
    ///
    /// Small inputs (a 4 KiB SQLite page) are hashed from one contiguous copy of
    /// `label || 0x00 || plaintext`: fed in two pieces, the label shifts every 1 KiB BLAKE3 chunk
    /// boundary of the input, so the hasher compresses most chunks one block at a time instead of
    /// several chunks side by side in SIMD lanes (measured: 2–3× slower per page). Same value.
    pub fn keyed_id(&self, label: &str, plaintext: &[u8]) -> [u8; 32] {
        /// Below this the copy is cheap next to the hashing it speeds up.
        const CONTIGUOUS_MAX: usize = 64 * 1024;
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        if plaintext.len() <= CONTIGUOUS_MAX {
            return SCRATCH.with(|buf| {
                let mut buf = buf.borrow_mut();
                buf.clear();
                buf.extend_from_slice(label.as_bytes());
                buf.push(0);
                buf.extend_from_slice(plaintext);
                let id = *blake3::keyed_hash(&self.id, &buf).as_bytes();
                buf.as_mut_slice().zeroize();
                buf.clear();
                id
            });
        }
        let mut h = self.id_hasher(label);
        h.update(plaintext);
        *h.finalize().as_bytes()
    }

    /// An incremental hasher for [`RepoKeys::keyed_id`].
    pub fn id_hasher(&self, label: &str) -> blake3::Hasher {
        let mut h = blake3::Hasher::new_keyed(&self.id);
        h.update(label.as_bytes());
        h.update(&[0]);
        h
    }
}

impl fmt::Debug for RepoKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RepoKeys(redacted)")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keyed_id_equals_its_definition_at_every_size_around_chunk_boundaries() {
        let keys = BackupKey::from_bytes([5; 32]).derive(&RepoId::from_bytes([6; 32]));
        let data: Vec<u8> = (0..70_000u32).map(|i| (i * 31 % 251) as u8).collect();
        for len in [
            0, 1, 999, 1000, 1023, 1024, 1025, 4096, 4097, 8192, 65_536, 65_537, 70_000,
        ] {
            let mut h = blake3::Hasher::new_keyed(&keys.id);
            h.update(b"chatvault/v1/blob/data");
            h.update(&[0]);
            h.update(&data[..len]);
            assert_eq!(
                keys.keyed_id("chatvault/v1/blob/data", &data[..len]),
                *h.finalize().as_bytes(),
                "{len}"
            );
        }
    }

    use super::*;

    const HEX: &str = "6730a595a1484d0c39c101dc0ac82ec5e401bb6f0e1b8ee2dc104a6b3687f017";

    #[test]
    fn parse_hex_accepts_any_case_and_spacing() {
        let a = BackupKey::parse_hex(HEX).unwrap();
        let b = BackupKey::parse_hex(&HEX.to_uppercase()).unwrap();
        let grouped = a.to_grouped_hex();
        let c = BackupKey::parse_hex(&grouped).unwrap();
        let d = BackupKey::parse_hex(&format!("  {}\n", grouped.replace(' ', "-"))).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a, d);
        assert_eq!(grouped.split(' ').count(), 16);
        assert_eq!(a.to_hex().as_str(), HEX);
    }

    #[test]
    fn parse_hex_rejects_bad_input() {
        assert_eq!(
            BackupKey::parse_hex(&HEX[..63]).unwrap_err(),
            KeyParseError::WrongLength { found: 63 }
        );
        assert_eq!(
            BackupKey::parse_hex(&format!("{HEX}0")).unwrap_err(),
            KeyParseError::WrongLength { found: 65 }
        );
        assert_eq!(
            BackupKey::parse_hex(&format!("{}g", &HEX[..63])).unwrap_err(),
            KeyParseError::InvalidCharacter { position: 64 }
        );
        assert!(BackupKey::parse_hex("").is_err());
    }

    #[test]
    fn java_key_file_round_trips() {
        let k = BackupKey::parse_hex(HEX).unwrap();
        let file = k.to_java_key_file();
        assert_eq!(file.len(), 59);
        assert_eq!(BackupKey::from_key_file(&file).unwrap(), k);
        let mut bad = file.to_vec();
        bad.pop();
        assert_eq!(
            BackupKey::from_key_file(&bad).unwrap_err(),
            KeyParseError::UnrecognisedFile
        );
    }

    #[test]
    fn whatsapp_fixture_key_file_parses_when_present() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/fixtures/whatsapp/encrypted_backup.key");
        let Ok(bytes) = std::fs::read(&p) else {
            eprintln!("SKIPPED: {} not found", p.display());
            return;
        };
        let k = BackupKey::from_key_file(&bytes).unwrap();
        assert_eq!(k.to_hex().as_str(), HEX);
        assert_eq!(k.to_java_key_file().as_slice(), bytes.as_slice());
    }

    #[test]
    fn debug_is_redacted() {
        let k = BackupKey::parse_hex(HEX).unwrap();
        assert_eq!(format!("{k:?}"), "BackupKey(redacted)");
        let keys = k.derive(&RepoId::from_bytes([7; 32]));
        assert!(!format!("{keys:?}").contains("67"));
    }

    #[test]
    fn subkeys_are_distinct_and_bound_to_the_repository() {
        let k = BackupKey::parse_hex(HEX).unwrap();
        let a = k.derive(&RepoId::from_bytes([1; 32]));
        let b = k.derive(&RepoId::from_bytes([2; 32]));
        let set = [&a.check, &a.data, &a.meta, &a.id];
        for i in 0..set.len() {
            for j in i + 1..set.len() {
                assert_ne!(set[i].as_ref(), set[j].as_ref());
            }
        }
        assert_ne!(a.data.as_ref(), b.data.as_ref());
        assert_ne!(a.chunker_seed(), b.chunker_seed());
    }
}
