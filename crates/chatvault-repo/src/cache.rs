//! The local metadata cache (docs/FORMAT.md §12.3).
//!
//! Index objects, snapshots, and tree and list blobs never change once written (they are
//! write-once and named by keyed hashes of their content), so a device keeps the sealed bytes it
//! fetched under `<home>/cache/<repo id>/<kind>/<id>` and reads them from there next time.
//! Tree and list blobs are kept per pack: `packs/<pack id>` is a sparse file holding the sealed
//! blobs fetched from that pack at their offsets in it (a multi-GB database has tens of
//! thousands of small list blobs; one file each cost eight times their size in disk blocks and
//! seconds of system time to write). A region never fetched reads as zeros, which no sealed
//! blob starts with (its 24-byte nonce is random), so it counts as not cached.
//! Index objects and snapshots are cached with a *stamp*, their size and modification time in
//! storage's listing: if the object in storage was rewritten (damaged, replaced), the stamp
//! differs and the object is fetched (and found damaged) again, so a device does not go on
//! deduplicating against an index object that no longer opens in storage.
//! Nothing in the cache is trusted: every entry is opened with the repository keys and checked
//! against its id exactly like a fetched object, and an entry that does not verify is deleted
//! and fetched again. The cache holds only sealed bytes (nothing a thief of the device home
//! could read without the key), and deleting it at any time only costs the next command its
//! downloads. Writing to it is best effort: a full disk or a read-only home makes commands
//! slower, never fail.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use chatvault_format::id::RepoId;

/// Kinds of cached objects (folder names).
pub mod kind {
    /// Index objects.
    pub const INDEX: &str = "index";
    /// Snapshot objects.
    pub const SNAPSHOT: &str = "snapshots";
    /// Tree and list blobs: one sparse file per pack, the sealed blobs at their offsets.
    pub const PACK: &str = "packs";
}

/// The folder of tree and list blobs of earlier versions (one file per blob): removed when a
/// cache is opened.
const LEGACY_BLOBS: &str = "blobs";

/// File name of the device's merged index (sealed; FORMAT §12.3).
pub const MERGED_INDEX: &str = "index.merged";

/// Name prefix of a file being written ([`write_atomic`]) before it is renamed into place.
const TEMPORARY_PREFIX: &str = ".tmp-";

/// Age from which a temporary file is a killed writer's leftover ([`Cache::remove_legacy`]).
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(600);

/// A repository's cache folder.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache of repository `repo` under `base` (created when first written).
    pub fn new(base: &Path, repo: &RepoId) -> Cache {
        Cache {
            dir: base.join(repo.to_hex()),
        }
    }

    /// Removes what earlier versions kept and this one no longer reads, and the temporary
    /// files of writes that a killed process left in the cache's folder (best effort). Those
    /// are [`STALE_TEMPORARY`] old at least, so that another process's write in progress is
    /// left alone; the largest is a merged index (tens of MB), which a phone would otherwise
    /// keep forever. (Temporary files among the cached objects go with [`Cache::retain`].)
    pub fn remove_legacy(&self) {
        let _ = std::fs::remove_dir_all(self.dir.join(LEGACY_BLOBS));
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let stale = e
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .is_some_and(|t| t.elapsed().is_ok_and(|age| age >= STALE_TEMPORARY));
            if e.file_name()
                .as_encoded_bytes()
                .starts_with(TEMPORARY_PREFIX.as_bytes())
                && stale
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// The folder of this repository's cache.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, kind: &str, id: &str) -> PathBuf {
        self.dir
            .join(kind)
            .join(id.get(..2).unwrap_or("xx"))
            .join(id)
    }

    /// The cached bytes of `kind`/`id`, if any, provided they were cached with the same
    /// `stamp` (what storage's listing says of the object now: size and modification time).
    /// They still have to be verified.
    pub fn get(&self, kind: &str, id: &str, stamp: &str) -> Option<Vec<u8>> {
        let mut bytes = std::fs::read(self.path(kind, id)).ok()?;
        let nl = bytes.iter().position(|&b| b == b'\n')?;
        if &bytes[..nl] != stamp.as_bytes() {
            return None;
        }
        bytes.drain(..=nl);
        Some(bytes)
    }

    /// Stores `bytes` (sealed, already verified) as `kind`/`id` with its listing `stamp`;
    /// failures are only logged.
    pub fn put(&self, kind: &str, id: &str, stamp: &str, bytes: &[u8]) {
        let path = self.path(kind, id);
        let mut entry = Vec::with_capacity(stamp.len() + 1 + bytes.len());
        entry.extend_from_slice(stamp.as_bytes());
        entry.push(b'\n');
        entry.extend_from_slice(bytes);
        if let Err(e) = write_atomic(&path, &entry) {
            tracing::debug!(path = %path.display(), error = %e, "metadata cache not written");
        }
    }

    /// The cached blobs of pack `pack` (hex id), open for [`read_at`], if any are cached.
    pub fn open_pack(&self, pack: &str) -> Option<std::fs::File> {
        std::fs::File::open(self.path(kind::PACK, pack)).ok()
    }

    /// Writes sealed blobs of pack `pack` (hex id) into its cache file at their offsets in the
    /// pack: each span is (offset, bytes). Failures are only logged.
    pub fn put_pack(&self, pack: &str, spans: &[(u64, &[u8])]) {
        use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
        let path = self.path(kind::PACK, pack);
        let result = (|| {
            let dir = path.parent().expect("cache paths have a folder");
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)?;
            for (offset, bytes) in spans {
                f.write_all_at(bytes, *offset)?;
            }
            std::io::Result::Ok(())
        })();
        if let Err(e) = result {
            tracing::debug!(path = %path.display(), error = %e, "metadata cache not written");
        }
    }

    /// The bytes of the cache's file `name` (such as [`MERGED_INDEX`]), if any. They still
    /// have to be verified.
    pub fn get_file(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join(name)).ok()
    }

    /// Replaces the cache's file `name` with `bytes` (sealed); failures are only logged.
    pub fn put_file(&self, name: &str, bytes: &[u8]) {
        let path = self.dir.join(name);
        if let Err(e) = write_atomic(&path, bytes) {
            tracing::debug!(path = %path.display(), error = %e, "metadata cache not written");
        }
    }

    /// Deletes the cache's file `name` (it did not verify).
    pub fn remove_file(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.join(name));
    }

    /// Deletes `kind`/`id` (an entry that did not verify).
    pub fn remove(&self, kind: &str, id: &str) {
        let path = self.path(kind, id);
        tracing::warn!(path = %path.display(), "removing a cache entry that does not verify");
        let _ = std::fs::remove_file(path);
    }

    /// Deletes the entries of `kind` whose id is not in `keep` (objects deleted from the
    /// repository by forget or prune).
    pub fn retain(&self, kind: &str, keep: &HashSet<String>) {
        let Ok(shards) = std::fs::read_dir(self.dir.join(kind)) else {
            return;
        };
        for shard in shards.flatten() {
            let Ok(entries) = std::fs::read_dir(shard.path()) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                if !keep.contains(name.to_string_lossy().as_ref()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// Reads `len` bytes at `offset` of a pack's cache file (see [`Cache::open_pack`]); what lies
/// past its end reads as zeros, like a hole. `None` on a read error.
pub fn read_at(file: &std::fs::File, offset: u64, len: usize) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(buf)
}

/// Whether a sealed blob read from a pack's cache file is a region never written (a hole reads
/// as zeros; a sealed blob begins with its random 24-byte nonce).
pub fn is_hole(sealed: &[u8]) -> bool {
    sealed.iter().take(24).all(|&b| b == 0)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().expect("cache paths have a folder");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(
        "{TEMPORARY_PREFIX}{:016x}",
        rand_core::RngCore::next_u64(&mut rand_core::OsRng)
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_writers_temporary_files_are_removed_once_stale() {
        let base = tempfile::tempdir().unwrap();
        let cache = Cache::new(base.path(), &RepoId::from_bytes([7; 32]));
        cache.put_file(MERGED_INDEX, b"sealed");
        let old = cache
            .dir()
            .join(format!("{TEMPORARY_PREFIX}00000000000000aa"));
        let fresh = cache
            .dir()
            .join(format!("{TEMPORARY_PREFIX}00000000000000bb"));
        std::fs::write(&old, b"half a merged index").unwrap();
        std::fs::write(&fresh, b"another process is writing this").unwrap();
        let long_ago = std::time::SystemTime::now() - STALE_TEMPORARY;
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        cache.remove_legacy();
        assert!(!old.exists(), "a killed writer's temporary file stays");
        assert!(fresh.exists(), "a write in progress was removed");
        assert_eq!(
            std::fs::read(cache.dir().join(MERGED_INDEX)).unwrap(),
            b"sealed"
        );
    }
}
