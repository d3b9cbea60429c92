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
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use chatvault_format::envelope::{self, NONCE_LEN, OVERHEAD, ObjectKind};
use chatvault_format::id::RepoId;
use chatvault_format::key::RepoKeys;
use chatvault_format::labels;
use rand_core::{OsRng, RngCore};

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

/// File name of the device's merged index (sealed in segments; FORMAT §12.3).
pub const MERGED_INDEX: &str = "index.merged.v2";

/// File name of the merged index of earlier versions (one envelope): removed when a cache is
/// opened.
const LEGACY_MERGED_INDEX: &str = "index.merged";

/// Plaintext bytes per sealed segment of the merged index (FORMAT §12.3): segments are read and
/// decrypted on all cores at once.
pub const MERGED_SEGMENT: usize = 2 << 20;

/// Bytes of the random salt that starts the merged index file.
const MERGED_SALT: usize = 32;

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
        let _ = std::fs::remove_file(self.dir.join(LEGACY_MERGED_INDEX));
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

    /// The cache's file `name` (such as [`MERGED_INDEX`]), open, and its size, if it exists.
    pub fn open_file(&self, name: &str) -> Option<(std::fs::File, u64)> {
        let file = std::fs::File::open(self.dir.join(name)).ok()?;
        let len = file.metadata().ok()?.len();
        Some((file, len))
    }

    /// Replaces the cache's file `name` with what `write` writes (sealed bytes); failures are
    /// only logged.
    pub fn put_file_with(
        &self,
        name: &str,
        write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    ) {
        let path = self.dir.join(name);
        if let Err(e) = write_atomic_with(&path, write) {
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
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// [`write_atomic`] of what `write` writes into the new file.
fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
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
        write(&mut f)?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The envelope id of segment `i` of `count` of a merged index file that starts with `salt`
/// (FORMAT §12.3): segments of another file, in another place, or of a file cut short do not
/// open.
fn segment_id(repo: &RepoId, salt: &[u8], i: usize, count: usize) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(labels::DERIVE_CACHE_INDEX_SEGMENT);
    h.update(repo.as_bytes());
    h.update(salt);
    h.update(&(i as u32).to_le_bytes());
    h.update(&(count as u32).to_le_bytes());
    *h.finalize().as_bytes()
}

/// Writes the merged index `plain` (FORMAT §12.3) to `out` as its cache file: a random salt,
/// then every `segment` bytes of it sealed on its own (one segment in memory at a time besides
/// `plain`).
pub fn write_merged(
    keys: &RepoKeys,
    repo: &RepoId,
    plain: &[u8],
    segment: usize,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let count = plain.len().div_ceil(segment).max(1);
    let mut salt = [0u8; MERGED_SALT];
    OsRng.fill_bytes(&mut salt);
    out.write_all(&salt)?;
    let mut sealed = Vec::with_capacity(segment.min(plain.len()) + OVERHEAD);
    for i in 0..count {
        let part = &plain[(i * segment).min(plain.len())..((i + 1) * segment).min(plain.len())];
        sealed.clear();
        sealed.resize(NONCE_LEN, 0);
        sealed.extend_from_slice(part);
        let id = segment_id(repo, &salt, i, count);
        envelope::seal_in_place(keys, ObjectKind::CacheIndex, &id, &mut sealed, &mut OsRng);
        out.write_all(&sealed)?;
    }
    Ok(())
}

/// Reads and opens the merged index file `file` (`len` bytes, written by [`write_merged`] with
/// the same `segment`), up to `threads` segments at once, each thread reading and decrypting
/// its share in place; returns the plaintext, or `None` if the file is cut short, too long, or
/// any segment does not open. A year of daily backups makes a 39 MB file: one thread took
/// 31–35 ms to read it (fresh pages) and 25 ms to decrypt it.
pub fn read_merged(
    keys: &RepoKeys,
    repo: &RepoId,
    file: &std::fs::File,
    len: u64,
    segment: usize,
    threads: usize,
) -> Option<Vec<u8>> {
    let len = usize::try_from(len).ok()?;
    let sealed = segment + OVERHEAD;
    let body = len.checked_sub(MERGED_SALT)?;
    let count = body.div_ceil(sealed).max(1);
    let last = body - (count - 1) * sealed;
    // Every segment holds at least one byte (an empty one only when the index is empty).
    if last < OVERHEAD || (count > 1 && last == OVERHEAD) {
        return None;
    }
    let mut buf = vec![0u8; len];
    let (salt, mut rest) = buf.split_at_mut(MERGED_SALT);
    file.read_exact_at(salt, 0).ok()?;
    let salt: &[u8] = salt;
    let threads = threads.clamp(1, count);
    let opened = std::thread::scope(|s| {
        let mut handles = Vec::with_capacity(threads);
        let mut first = 0;
        for t in 0..threads {
            let end = (t + 1) * count / threads;
            let bytes = ((end - first) * sealed).min(rest.len());
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(bytes);
            rest = tail;
            let offset = (MERGED_SALT + first * sealed) as u64;
            handles.push(s.spawn(move || {
                file.read_exact_at(mine, offset).ok()?;
                for (j, env) in mine.chunks_mut(sealed).enumerate() {
                    let id = segment_id(repo, salt, first + j, count);
                    envelope::open_in_place(keys, ObjectKind::CacheIndex, &id, env).ok()?;
                }
                Some(())
            }));
            first = end;
        }
        // (The scope joins whatever `all` leaves unjoined after a failure.)
        handles
            .into_iter()
            .all(|h| crate::repository::join(h).is_some())
    });
    if !opened {
        return None;
    }
    // The plaintexts lie between nonces and tags: moved together, front to back.
    let mut at = 0;
    for i in 0..count {
        let from = MERGED_SALT + i * sealed + NONCE_LEN;
        let n = if i + 1 < count {
            segment
        } else {
            last - OVERHEAD
        };
        buf.copy_within(from..from + n, at);
        at += n;
    }
    buf.truncate(at);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatvault_format::key::BackupKey;

    fn keys() -> RepoKeys {
        BackupKey::from_bytes([9; 32]).derive(&RepoId::from_bytes([1; 32]))
    }

    /// A merged index file of `plain` in `segment`-byte segments, and a reader of such bytes.
    fn sealed(plain: &[u8], segment: usize) -> Vec<u8> {
        let mut out = Vec::new();
        write_merged(
            &keys(),
            &RepoId::from_bytes([1; 32]),
            plain,
            segment,
            &mut out,
        )
        .unwrap();
        out
    }

    fn opened(bytes: &[u8], segment: usize, threads: usize) -> Option<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        std::fs::write(&path, bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let repo = RepoId::from_bytes([1; 32]);
        read_merged(&keys(), &repo, &file, bytes.len() as u64, segment, threads)
    }

    #[test]
    fn a_merged_index_opens_whole_in_any_number_of_segments_and_threads() {
        let plain: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for len in [0, 1, 99, 100, 101, 250, 1000] {
            let file = sealed(&plain[..len], 100);
            let count = len.div_ceil(100).max(1);
            assert_eq!(file.len(), MERGED_SALT + len + count * OVERHEAD);
            for threads in [1, 2, 3, 16] {
                assert_eq!(
                    opened(&file, 100, threads).unwrap(),
                    &plain[..len],
                    "{len} {threads}"
                );
            }
        }
    }

    #[test]
    fn a_merged_index_cut_reordered_spliced_or_damaged_does_not_open() {
        let plain: Vec<u8> = (0..350u32).map(|i| i as u8).collect();
        let good = sealed(&plain, 100);
        let seg = 100 + OVERHEAD;
        let at = |i: usize| MERGED_SALT + i * seg;
        assert!(opened(&good, 100, 2).is_some());
        // The last segment dropped (or any tail cut off).
        assert!(opened(&good[..at(3)], 100, 2).is_none());
        assert!(opened(&good[..good.len() - 1], 100, 2).is_none());
        // An empty segment appended.
        let mut longer = good.clone();
        longer.extend_from_slice(&[0; OVERHEAD]);
        assert!(opened(&longer, 100, 2).is_none());
        // Two segments swapped.
        let mut swapped = good.clone();
        swapped[at(0)..at(1)].copy_from_slice(&good[at(1)..at(2)]);
        swapped[at(1)..at(2)].copy_from_slice(&good[at(0)..at(1)]);
        assert!(opened(&swapped, 100, 2).is_none());
        // A segment from another file of the same plaintext (another salt).
        let other = sealed(&plain, 100);
        let mut spliced = good.clone();
        spliced[at(1)..at(2)].copy_from_slice(&other[at(1)..at(2)]);
        assert!(opened(&spliced, 100, 2).is_none());
        // One byte changed anywhere: salt, nonce, ciphertext, tag.
        for i in [0, MERGED_SALT, at(1) + 30, good.len() - 1] {
            let mut bad = good.clone();
            bad[i] ^= 1;
            assert!(opened(&bad, 100, 3).is_none(), "byte {i}");
        }
        // Another segment size reads other boundaries.
        assert!(opened(&good, 64, 1).is_none());
    }

    #[test]
    fn a_killed_writers_temporary_files_are_removed_once_stale() {
        let base = tempfile::tempdir().unwrap();
        let cache = Cache::new(base.path(), &RepoId::from_bytes([7; 32]));
        cache.put_file_with(MERGED_INDEX, |f| f.write_all(b"sealed"));
        let old = cache
            .dir()
            .join(format!("{TEMPORARY_PREFIX}00000000000000aa"));
        let fresh = cache
            .dir()
            .join(format!("{TEMPORARY_PREFIX}00000000000000bb"));
        std::fs::write(&old, b"half a merged index").unwrap();
        std::fs::write(&fresh, b"another process is writing this").unwrap();
        std::fs::write(cache.dir().join(LEGACY_MERGED_INDEX), b"one envelope").unwrap();
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
        assert!(
            !cache.dir().join(LEGACY_MERGED_INDEX).exists(),
            "the old merged index stays"
        );
        assert_eq!(
            std::fs::read(cache.dir().join(MERGED_INDEX)).unwrap(),
            b"sealed"
        );
    }
}
