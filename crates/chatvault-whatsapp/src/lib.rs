//! WhatsApp crypt15 backup interop: decrypt a `msgstore.db.crypt15` with the account's
//! 64-digit key, and encrypt a database back into a file WhatsApp's layout accepts.
//!
//! # What it does, and what it must not do
//!
//! [`decrypt`] (in memory) and [`decrypt_to_file`] (streaming, bounded memory, for
//! msgstore files of hundreds of MB) check the MD5 trailer and the AES-256-GCM tag over the
//! whole file *before* any plaintext is handed back: [`decrypt`] returns only verified
//! bytes, and [`decrypt_to_file`] writes into a temporary file that the caller moves into
//! place with [`DecryptedFile::persist`] only after success. The output is the
//! zlib-inflated SQLite database, or, for multi-file backups (stickers, wallpapers), the ZIP
//! archive as is ([`PayloadKind::Zip`]; it is not unpacked). [`encrypt`] produces a
//! single-file crypt15 backup.
//!
//! This crate takes the key as `&[u8; 32]`: it does not parse `encrypted_backup.key` files
//! or the 64-digit string, does not talk to WhatsApp's servers or key vault, does not
//! derive password- or passkey-based keys (those backups fail with
//! [`Error::UnsupportedKeyType`]), and does not read crypt14 or older. It never logs, and
//! its errors never carry key material or plaintext. Derived keys are zeroized.
//!
//! # Format (summary)
//!
//! As described in `shared/notes/research.md` ("WhatsApp crypt15 single-file backups", from
//! wa-crypt-tools' reading of the format) and specified byte for byte in this crate's
//! `FORMAT-crypt15.md`:
//!
//! ```text
//! [len: u8] [0x01: msgstore feature table]? [BackupPrefix protobuf: len bytes]
//!     field 1 key_type = 1, field 3 { field 1: 16-byte IV }, field 4 info (app version,
//!     last two phone digits, backup version, feature flags)
//! [AES-256-GCM(zlib(database)), 16-byte IV, no AAD] [16-byte tag]
//! [MD5 of everything before it: 16 bytes]            (absent in multi-file backups)
//!
//! AES key = HKDF-SHA256[salt = none, info = "backup encryption"](root key, 32)
//! ```
//!
//! A file whose MD5 trailer matches but whose tag does not is [`Error::WrongKey`]; a
//! damaged or truncated one is [`Error::Corrupted`] or [`Error::Truncated`]; without an
//! intact trailer the two cannot always be told apart ([`Error::WrongKeyOrCorrupted`]).
//!
//! # Example
//!
//! ```
//! use chatvault_whatsapp::{decrypt, encrypt, EncryptOptions, Error, PayloadKind};
//!
//! # fn main() -> Result<(), Error> {
//! let key = [7u8; 32]; // the 64-digit key, hex-decoded
//! let db = b"SQLite format 3\0...";
//! let backup = encrypt(&key, db, &EncryptOptions::default(), &mut rand_core::OsRng)?;
//!
//! let restored = decrypt(&key, &backup)?;
//! assert_eq!(restored.kind(), PayloadKind::Database);
//! assert_eq!(restored.data(), db);
//! assert!(matches!(decrypt(&[8u8; 32], &backup), Err(Error::WrongKey)));
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod decrypt;
mod encrypt;
mod error;
mod gcm;
mod kdf;
mod prefix;

pub use decrypt::{Decrypted, DecryptedFile, PayloadKind, decrypt, decrypt_to_file};
pub use encrypt::{EncryptOptions, encrypt};
pub use error::Error;
pub use prefix::BackupHeader;

#[cfg(test)]
mod tests;
