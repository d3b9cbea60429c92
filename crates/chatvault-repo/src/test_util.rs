//! Helpers shared by the crate's unit tests.

use chatvault_format::key::BackupKey;

use crate::repository::Repository;
use crate::storage::Storage;

/// Deterministic incompressible bytes (xorshift64).
pub(crate) fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A new repository in memory under `name` (a fixed key).
pub(crate) fn memory_repo(name: &str) -> Repository {
    let key = BackupKey::from_bytes([7; 32]);
    Repository::init(Storage::open(&format!("memory://{name}")).unwrap(), &key).unwrap()
}
