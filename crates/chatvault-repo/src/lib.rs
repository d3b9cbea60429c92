//! # chatvault-repo
//!
//! The repository engine: everything between a folder on the device and the sealed objects in
//! untrusted storage. [`storage::Storage`] is the seam to object stores (Apache OpenDAL);
//! [`repository::Repository`] opens or creates a repository and reads its objects;
//! [`backup::backup`], [`restore::restore`] and [`check::check`] are the three operations;
//! [`forget`] handles retention, [`prune`] garbage collection and [`repair::repair_index`]
//! rebuilds a lost index.
//! The byte formats come from `chatvault-format`; this crate implements the ordering rules of
//! docs/FORMAT.md §12 (packs → index → snapshot) and the lock protocol of §11.
//!
//! This crate must not know about terminals, command lines, device homes or how the backup key
//! is kept (64-digit key or vault password): callers hand it a `BackupKey`.
//!
//! ```no_run
//! use chatvault_repo::{storage::Storage, repository::Repository, backup};
//! use chatvault_format::key::BackupKey;
//! let key = BackupKey::generate(&mut rand_core::OsRng);
//! let repo = Repository::init(Storage::open("/tmp/repo")?, &key)?;
//! let out = backup::backup(&repo, &["/tmp/chats".into()], &Default::default(), &backup::NoProgress)?;
//! println!("snapshot {}", out.id.short());
//! # Ok::<(), chatvault_repo::error::RepoError>(())
//! ```

pub mod backup;
pub mod cache;
pub mod check;
pub mod error;
pub mod forget;
pub mod lock;
pub mod progress;
pub mod prune;
pub mod repair;
pub mod repository;
pub mod restore;
pub mod rollback;
pub mod sqlite;
pub mod storage;
#[cfg(test)]
mod test_util;

pub use error::{RepoError, Result};
