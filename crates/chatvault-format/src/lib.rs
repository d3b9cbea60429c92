//! # chatvault-format
//!
//! The chatvault repository format, version 1, as pure functions over bytes: the 256-bit backup
//! key and its 64-digit form ([`key`]), the subkeys derived from it, the authenticated envelope
//! every stored object is sealed in ([`envelope`]), typed object ids ([`id`]), and the encodings
//! of the config header ([`config`]), blobs ([`blob`]), packs ([`pack`]) and the JSON metadata
//! objects ([`objects`]). Each module implements the section of `docs/FORMAT.md` it names; all
//! labels live in [`labels`].
//!
//! This crate must not do I/O, spawn threads, read clocks or choose algorithms at run time: the
//! caller supplies the RNG and the bytes, so everything here is deterministic given its inputs
//! and easy to fuzz.
//!
//! ```
//! use chatvault_format::{key::BackupKey, id::RepoId, envelope::{self, ObjectKind}};
//! let key = BackupKey::generate(&mut rand_core::OsRng);
//! let keys = key.derive(&RepoId::from_bytes([1; 32]));
//! let sealed = envelope::seal(&keys, ObjectKind::Snapshot, &[7; 32], b"hi", &mut rand_core::OsRng);
//! assert_eq!(envelope::open(&keys, ObjectKind::Snapshot, &[7; 32], &sealed).unwrap(), b"hi");
//! ```

pub mod blob;
pub mod config;
pub mod envelope;
pub mod id;
pub mod key;
pub mod labels;
pub mod list;
pub mod objects;
pub mod pack;
pub mod parts;

/// The repository format version this crate writes for new repositories (docs/FORMAT.md §6):
/// 2 = padded packs with a sealed trailer (§7). Version 1 repositories are read and written as
/// version 1 (unpadded packs) until upgraded (`chatvault migrate`).
pub const FORMAT_VERSION: u32 = 2;
/// The oldest repository format version this crate reads.
pub const MIN_FORMAT_VERSION: u32 = 1;
/// The version byte in every envelope's associated data (§4.1); unchanged by repository format 2.
pub const ENVELOPE_VERSION: u8 = 1;
