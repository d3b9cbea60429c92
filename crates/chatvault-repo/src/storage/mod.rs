//! Untrusted object storage (docs/FORMAT.md §2) over Apache OpenDAL.
//!
//! The engine sees a flat namespace of write-once objects. [`Storage`] hides OpenDAL's async API
//! behind blocking calls on a private Tokio runtime, so the engine can use plain threads.
//!
//! Backends are chosen by URL (README "Storage backends"):
//!
//! | location | backend | cargo feature |
//! |---|---|---|
//! | `/path`, `file:///path` | local folder | always |
//! | `memory://NAME` | in-process memory (tests) | always |
//! | `s3://BUCKET/PREFIX` | Amazon S3 and S3-compatible servers | `s3` |
//! | `gcs://BUCKET/PREFIX` | Google Cloud Storage | `gcs` |
//! | `azblob://CONTAINER/PREFIX` | Azure Blob Storage | `azblob` |
//! | `gdrive://PATH` | Google Drive | `gdrive` |
//! | `onedrive://PATH` | Microsoft OneDrive | `onedrive` |
//! | `dropbox://PATH` | Dropbox | `dropbox` |
//! | `webdav://HOST/PATH`, `webdav+https://HOST/PATH` | WebDAV | `webdav` |
//!
//! Credentials never appear in the location: they come from the usual environment variables (or
//! the file named by `CHATVAULT_CREDENTIALS_FILE`), are never stored in [`Storage`]'s `Debug`
//! output, and are scrubbed from error messages.
//!
//! Every backend gets the same robustness: transient failures (5xx, throttling, dropped
//! connections, timeouts) are retried with jittered exponential backoff; every request has a
//! deadline; permanent failures (403, a missing bucket) fail at once with a message that says what
//! to check. Large objects (packs, up to ~16 MiB) are uploaded in parts where the service supports
//! it (S3 multipart), so a failed part is retried alone.
//!
//! Write-once (FORMAT §2, §12): services with conditional writes (S3, GCS, Azure, fs, memory) use
//! `if-not-exists`, which is atomic. The others (Drive, OneDrive, Dropbox, WebDAV) check with a
//! `stat` first and then write; two writers racing on the *same* name can then both "win". That is
//! harmless here: pack and lock names are 256-bit random, and index and snapshot names are keyed
//! hashes of their content, so two writers of one name write equivalent objects.
//!
//! Tuning (environment): `CHATVAULT_STORAGE_ATTEMPTS` (attempts per request, default 5),
//! `CHATVAULT_STORAGE_RETRY_DELAY_MS` (first backoff, default 1000, doubling up to 30 s),
//! `CHATVAULT_STORAGE_TIMEOUT` (seconds per request; default 60 for metadata requests and 120 for
//! each data transfer call), `CHATVAULT_S3_PART_SIZE` (multipart part size in bytes, `K`/`M`/`MiB`
//! suffixes accepted; default 8 MiB, at least 5 MiB), `CHATVAULT_S3_VIRTUAL_HOST` (1/0: force
//! virtual-host or path-style addressing).
//!
//! Bandwidth: [`Storage::set_limits`] paces downloads and uploads with a token bucket each
//! ([`Limits`]; CLI `--limit-download` / `--limit-upload`). Downloads are paced as they are
//! requested: a ranged read larger than a quarter second's budget is fetched as several ranged
//! requests, each admitted by the bucket, so a limited transfer flows evenly instead of in
//! bursts. An upload is one conditional write (write-once, FORMAT §2) and cannot be split: it is
//! admitted as a whole, so uploads keep the average rate with bursts of at most one object (a
//! pack, ≤ ~18 MB). [`Storage::transfers`] counts the bytes one storage moved (restore reports, tests).
//!
//! Every request is counted, process-wide and cheaply (a few atomic additions): [`stats()`]
//! gives the storage operations, the HTTP requests by method (cloud backends), part uploads and
//! retries; `chatvault -v` prints them at exit.
//!
//! The submodules, by concern: `backends` turns a location into an OpenDAL operator (local,
//! memory, the cloud schemes of `http`) with its retry and timeout tuning; `pacing` holds the
//! bandwidth limits and transfer counts of one storage; `stats` the process-wide counters.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{Buffer, ErrorKind, Operator};

use crate::error::{RepoError, Result};

mod backends;
#[cfg(feature = "_http")]
mod http;
mod pacing;
mod stats;

use backends::{Settings, Tuning, build};
pub use pacing::{Limits, TransferStats};
use pacing::{Pacer, Transfers};
use stats::{BACKENDS, COUNTERS, count};
pub use stats::{BackendWrites, StorageStats, stats};

/// A repository's storage location.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

struct Inner {
    rt: tokio::runtime::Runtime,
    op: Operator,
    /// The location as shown to the user (never holds credentials).
    location: String,
    /// Backend name (`fs`, `memory`, `s3`, …).
    scheme: &'static str,
    /// The service supports atomic put-if-absent.
    native_if_not_exists: bool,
    /// Upload objects larger than this in parts (services with multipart writes only).
    part_size: Option<usize>,
    /// Attempts per request (for messages).
    attempts: usize,
    /// Credential values to scrub from error messages. Never printed.
    secrets: Vec<String>,
    /// Download and upload pacing ([`Storage::set_limits`]).
    download: Pacer,
    upload: Pacer,
    /// Requests and bytes moved so far ([`Storage::transfers`]).
    counters: Transfers,
    /// The folder of an `fs` repository: [`Storage::read_range_into`] reads its packs with
    /// `pread` straight into the caller's buffer.
    local_root: Option<std::path::PathBuf>,
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("location", &self.inner.location)
            .field("backend", &self.inner.scheme)
            .field("atomic_write_once", &self.inner.native_if_not_exists)
            .field("part_size", &self.inner.part_size)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.location)
    }
}

/// An object listed in a folder.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Object name within the folder (the last path component).
    pub name: String,
    /// Full path from the repository root (e.g. `data/ab/ab…`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// When the object was written, by the storage service's clock, if the backend reports it
    /// in listings (fs and S3 do; `memory://` does not). Lock staleness and the age of
    /// unindexed packs are judged with it (docs/FORMAT.md §11, §15).
    pub last_modified: Option<chrono::DateTime<chrono::Utc>>,
}

impl Storage {
    /// Opens the storage named by `location`: a local path, `file:///abs/path`, `memory://NAME`,
    /// or a cloud URL such as `s3://bucket/prefix` (see the module documentation).
    pub fn open(location: &str) -> Result<Self> {
        Self::open_with(location, &[])
    }

    /// [`Storage::open`] with some settings and credentials given here instead of in the
    /// environment (same names, e.g. `AZURE_STORAGE_KEY`; an empty value counts as unset). For
    /// tools and tests that must not change their own process's environment.
    pub fn open_with(location: &str, settings: &[(&str, &str)]) -> Result<Self> {
        let settings = Settings {
            explicit: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let tuning = Tuning::from_settings(&settings)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("chatvault-io")
            .enable_all()
            .build()
            .map_err(|e| RepoError::io("starting the I/O runtime for", location, e))?;
        let built = {
            // Service builders may spawn on the runtime or read its clock.
            let _enter = rt.enter();
            build(location, &settings)?
        };
        let cap = built.op.info().capability();
        let native_if_not_exists = cap.write_with_if_not_exists;
        let part_size = if cap.write_can_multi && built.scheme != "fs" && built.scheme != "memory" {
            let min = cap.write_multi_min_size.unwrap_or(0);
            let max = cap.write_multi_max_size.unwrap_or(usize::MAX);
            let p = tuning.part_size.clamp(min, max);
            if p != tuning.part_size {
                tracing::warn!(
                    requested = tuning.part_size,
                    used = p,
                    "part size adjusted to the service's limits"
                );
            }
            Some(p)
        } else {
            None
        };
        // Timeout before retry: each attempt has its own deadline, and a timed-out attempt
        // is retried (OpenDAL marks timeouts temporary).
        let mut retry = RetryLayer::new()
            .with_max_times(tuning.attempts.saturating_sub(1))
            .with_factor(2.0)
            .with_min_delay(tuning.first_delay)
            .with_max_delay(Duration::from_secs(30).max(tuning.first_delay));
        if !tuning.first_delay.is_zero() {
            retry = retry.with_jitter();
        }
        let retry = retry.with_notify(|e: opendal::layers::RetryEvent<'_>| {
            count(&COUNTERS.retries);
            tracing::debug!(op = ?e.op, attempt = e.attempt, error = %e.err, "retrying");
        });
        let op = built
            .op
            .layer(
                TimeoutLayer::new()
                    .with_timeout(tuning.timeout)
                    .with_io_timeout(tuning.io_timeout),
            )
            .layer(retry);
        BACKENDS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                built.scheme.to_string(),
                BackendWrites {
                    atomic_write_once: native_if_not_exists,
                    part_size,
                },
            );
        tracing::debug!(
            location = %built.display,
            backend = built.scheme,
            native_if_not_exists,
            ?part_size,
            "storage opened"
        );
        let local_root = (built.scheme == "fs").then(|| std::path::PathBuf::from(&built.display));
        Ok(Storage {
            inner: Arc::new(Inner {
                local_root,
                rt,
                op,
                location: built.display,
                scheme: built.scheme,
                native_if_not_exists,
                part_size,
                attempts: tuning.attempts,
                secrets: built.secrets,
                download: Pacer::default(),
                upload: Pacer::default(),
                counters: Transfers::default(),
            }),
        })
    }

    /// The location as shown to the user.
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// The backend's name: `fs`, `memory`, `s3`, `gcs`, `azblob`, `gdrive`, `onedrive`,
    /// `dropbox` or `webdav`.
    pub fn backend(&self) -> &'static str {
        self.inner.scheme
    }

    fn block_on<F: std::future::IntoFuture>(&self, f: F) -> F::Output {
        self.inner.rt.block_on(f.into_future())
    }

    /// Sets (or lifts, with `None`) the bandwidth limits of this storage and of every clone of
    /// it; transfers already admitted are not affected.
    pub fn set_limits(&self, limits: Limits) {
        self.inner.download.set(limits.download);
        self.inner.upload.set(limits.upload);
    }

    /// The bandwidth limits in force.
    pub fn limits(&self) -> Limits {
        Limits {
            download: self.inner.download.rate(),
            upload: self.inner.upload.rate(),
        }
    }

    /// Requests made and bytes moved so far by this storage and its clones.
    pub fn transfers(&self) -> TransferStats {
        let c = &self.inner.counters;
        TransferStats {
            read_requests: c.read_requests.load(Ordering::Relaxed),
            read_bytes: c.read_bytes.load(Ordering::Relaxed),
            write_requests: c.write_requests.load(Ordering::Relaxed),
            written_bytes: c.written_bytes.load(Ordering::Relaxed),
        }
    }

    /// Reads a whole object. A missing object is `Ok(None)`.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        count(&COUNTERS.reads);
        if self.inner.download.rate().is_some() {
            // The size is needed to pace (and to split) the read.
            return match self.size(path)? {
                Some(len) => Ok(self.read_range(path, 0, len)?.map(Vec::from)),
                None => Ok(None),
            };
        }
        if let Some(root) = &self.inner.local_root {
            // OpenDAL's fs reader zero-fills a large chunk buffer for every read and then the
            // bytes are copied out of it: a new device opening a year's repository (200 index
            // objects, ~150 k blobs) spent 60 % of its index load in that memset and its page
            // faults. One `read` into a buffer of the file's size instead.
            let full = root.join(path);
            return match std::fs::read(&full) {
                Ok(b) => {
                    self.inner.counters.read(b.len());
                    Ok(Some(b))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(RepoError::io("reading", full, e)),
            };
        }
        match self.block_on(self.inner.op.read(path)) {
            Ok(b) => {
                self.inner.counters.read(b.len());
                Ok(Some(b.to_vec()))
            }
            Err(e) if is_missing_object(&e) => Ok(None),
            Err(e) => Err(self.err("read", path, e)),
        }
    }

    /// Reads `len` bytes at `offset` of an object. Under a download limit the range is fetched
    /// in paced pieces (module documentation). The bytes are the buffer the service read into,
    /// not a copy of it, when it read them in one piece.
    pub fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Option<Bytes>> {
        let mut single = None;
        let mut out: Vec<u8> = Vec::new();
        let found = self.read_pieces(path, offset, len, |b, whole| {
            if whole {
                single = Some(b.to_bytes());
            } else {
                append_piece(&mut out, b, len as usize);
            }
        })?;
        Ok(found.then(|| single.unwrap_or_else(|| Bytes::from(out))))
    }

    /// [`Storage::read_range`] into the reusable buffer `buf`: returns how many bytes were read
    /// into its start (fewer than `len` when the object ended), or `None` when the object is
    /// missing. Bytes of `buf` past those are left over from earlier reads. On a local folder
    /// without a download limit the range is read with `pread` straight into `buf`, which is
    /// only ever grown (zeroed once, not per read); elsewhere each piece the service received
    /// is copied in once (a restore reads every pack region through here).
    pub fn read_range_into(
        &self,
        path: &str,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<Option<usize>> {
        let len = usize::try_from(len).map_err(|_| RepoError::Invalid("range too large".into()))?;
        let Some(root) = self
            .inner
            .local_root
            .as_ref()
            .filter(|_| self.inner.download.rate().is_none())
        else {
            buf.clear();
            let found =
                self.read_pieces(path, offset, len as u64, |b, _| append_piece(buf, b, len))?;
            return Ok(found.then_some(buf.len()));
        };
        count(&COUNTERS.ranged_reads);
        let full = root.join(path);
        let file = match std::fs::File::open(&full) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RepoError::io("reading", full, e)),
        };
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let mut got = 0;
        while got < len {
            match rustix::io::pread(&file, &mut buf[got..len], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(RepoError::io("reading", full, e.into())),
            }
        }
        self.inner.counters.read(got);
        Ok(Some(got))
    }

    /// Whether [`Storage::read_range_stream`] is the cheaper way to read many neighbouring
    /// regions of one object: on a cloud service (one request instead of one per region) and
    /// without a download limit (a limited read is paced piece by piece instead). A local folder
    /// reads each region with `pread` ([`Storage::read_range_into`]).
    pub fn streams_ranges(&self) -> bool {
        self.inner.local_root.is_none() && self.inner.download.rate().is_none()
    }

    /// Starts one ranged read of `len` bytes at `offset` and hands the bytes out in the order
    /// they arrive, as [`RangeStream::read_into`] and [`RangeStream::skip`] ask for them: a
    /// restore reads all the regions it needs of a pack with one request and holds one region
    /// at a time, not the whole range. `None` when the object is missing. Not paced: see
    /// [`Storage::streams_ranges`].
    pub fn read_range_stream(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<Option<RangeStream<'_>>> {
        count(&COUNTERS.ranged_reads);
        self.inner.counters.read(0);
        let open = async {
            self.inner
                .op
                .reader_with(path)
                .await?
                .into_stream(offset..offset + len)
                .await
        };
        let stream = match self.block_on(open) {
            Ok(s) => s,
            Err(e) if is_missing_object(&e) => return Ok(None),
            Err(e) => return Err(self.err("read", path, e)),
        };
        let mut s = RangeStream {
            storage: self,
            path: path.to_owned(),
            stream,
            pending: opendal::Buffer::new(),
            left: len,
        };
        // The request goes out with the first poll: a missing object shows here.
        match s.poll_piece() {
            Ok(_) => Ok(Some(s)),
            Err(e) if is_missing_object(&e) => Ok(None),
            Err(e) => Err(self.err("read", path, e)),
        }
    }

    /// Fetches `len` bytes at `offset` of an object, in paced pieces under a download limit,
    /// handing each to `f` (with `true` when it is the whole range); `false` when the object is
    /// missing. A short piece means the object ended.
    fn read_pieces(
        &self,
        path: &str,
        offset: u64,
        len: u64,
        mut f: impl FnMut(opendal::Buffer, bool),
    ) -> Result<bool> {
        let piece = self.inner.download.piece().unwrap_or(u64::MAX).max(1);
        let mut at = offset;
        let end = offset + len;
        loop {
            let n = (end - at).min(piece);
            count(&COUNTERS.ranged_reads);
            let fetch = async {
                self.inner.download.take(n).await;
                self.inner.op.read_with(path).range(at..at + n).await
            };
            match self.block_on(fetch) {
                Ok(b) => {
                    let got = b.len() as u64;
                    self.inner.counters.read(b.len());
                    f(b, at == offset && at + n == end);
                    at += got;
                    if at >= end || got < n {
                        return Ok(true);
                    }
                }
                Err(e) if is_missing_object(&e) => return Ok(false),
                Err(e) => return Err(self.err("read", path, e)),
            }
        }
    }

    /// Writes a new object. Objects are write-once: if `path` exists, returns `Ok(false)` and
    /// leaves it untouched. On services without conditional writes this is stat-then-write (see
    /// the module documentation for why the race is harmless).
    pub fn write_new(&self, path: &str, bytes: Vec<u8>) -> Result<bool> {
        self.block_on(self.write_new_async(path, bytes.into()))
    }

    /// [`Storage::write_new`] of the concatenation of `parts`, which are not copied into one
    /// buffer (a pack is its sealed blobs one after another).
    pub fn write_new_parts(&self, path: &str, parts: Vec<Vec<u8>>) -> Result<bool> {
        let buffer: Buffer = parts.into_iter().map(Bytes::from).collect();
        self.block_on(self.write_new_async(path, buffer))
    }

    /// [`Storage::write_new`] that gives up once `limit` has passed, retries included: `Ok(None)`
    /// then means the write was abandoned (cut off mid-request, it may or may not have been
    /// stored). Writes that must land before a lock expires use it (docs/FORMAT.md §11).
    pub fn write_new_within(
        &self,
        path: &str,
        bytes: Vec<u8>,
        limit: Duration,
    ) -> Result<Option<bool>> {
        // The timer must be made inside the runtime.
        let timed =
            async { tokio::time::timeout(limit, self.write_new_async(path, bytes.into())).await };
        match self.block_on(timed) {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// [`Storage::write_new_within`] for an object that need not outlive a crash of this machine:
    /// a lock object, which dies with its process anyway. In a local folder it is written
    /// under `tmp/` and renamed into place without `fsync` (the fsync of a restore's lock waited
    /// 190 ms behind the writeback of the previous restore's files); elsewhere it is
    /// [`Storage::write_new_within`].
    pub fn write_new_within_volatile(
        &self,
        path: &str,
        bytes: Vec<u8>,
        limit: Duration,
    ) -> Result<Option<bool>> {
        let Some(root) = self.inner.local_root.as_ref() else {
            return self.write_new_within(path, bytes, limit);
        };
        count(&COUNTERS.writes);
        let full = root.join(path);
        if full.exists() {
            return Ok(Some(false));
        }
        let tmp_dir = root.join("tmp");
        std::fs::create_dir_all(&tmp_dir).map_err(|e| RepoError::io("creating", &tmp_dir, e))?;
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(|e| RepoError::io("creating", parent, e))?;
        }
        let mut name = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut name);
        let tmp = tmp_dir.join(format!("volatile-{}", hex::encode(name)));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(RepoError::io("writing", &tmp, e));
        }
        // Write-once: never replaces an object of the same name. A filesystem without
        // RENAME_NOREPLACE (some FUSE and network filesystems) gets a plain rename: the callers'
        // names are random 256-bit ids, and the existence check above covers the rest.
        let renamed = match rustix::fs::renameat_with(
            rustix::fs::CWD,
            &tmp,
            rustix::fs::CWD,
            &full,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => Ok(()),
            Err(
                rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::OPNOTSUPP,
            ) => std::fs::rename(&tmp, &full),
            Err(e) => Err(e.into()),
        };
        match renamed {
            Ok(()) => {
                self.inner.counters.wrote(bytes.len());
                Ok(Some(true))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(&tmp);
                Ok(Some(false))
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(RepoError::io("renaming into place", &full, e))
            }
        }
    }

    async fn write_new_async(&self, path: &str, bytes: Buffer) -> Result<bool> {
        self.inner.upload.take(bytes.len() as u64).await;
        if !self.inner.native_if_not_exists {
            count(&COUNTERS.stats);
            match self.inner.op.stat(path).await {
                Ok(_) => return Ok(false),
                Err(e) if is_missing_object(&e) => {}
                Err(e) => return Err(self.err("stat", path, e)),
            }
        }
        let len = bytes.len();
        count(&COUNTERS.writes);
        let mut w = self.inner.op.write_with(path, bytes);
        if self.inner.native_if_not_exists {
            w = w.if_not_exists(true);
        }
        if let Some(part) = self.inner.part_size
            && len > part
        {
            w = w.chunk(part);
        }
        match w.await {
            Ok(_) => {
                self.inner.counters.wrote(len);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConditionNotMatch | ErrorKind::AlreadyExists
                ) =>
            {
                // Also the outcome when an attempt stored the object but its response was lost
                // and the retry found it: the object is there either way.
                Ok(false)
            }
            Err(e) => Err(self.err("write", path, e)),
        }
    }

    /// Replaces an object (or creates it). Only for the config on a format upgrade (FORMAT §14):
    /// every other object is write-once. The swap is atomic where the service's writes are
    /// (fs: written under `tmp/` and renamed; S3/GCS/Azure: a single PUT).
    pub fn replace(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        count(&COUNTERS.writes);
        let len = bytes.len();
        self.block_on(async {
            self.inner.upload.take(len as u64).await;
            self.inner.op.write(path, bytes).await
        })
        .map(|_| self.inner.counters.wrote(len))
        .map_err(|e| self.err("write", path, e))
    }

    /// Size of an object, or `None` if missing.
    pub fn size(&self, path: &str) -> Result<Option<u64>> {
        count(&COUNTERS.stats);
        match self.block_on(self.inner.op.stat(path)) {
            Ok(m) => Ok(Some(m.content_length())),
            Err(e) if is_missing_object(&e) => Ok(None),
            Err(e) => Err(self.err("stat", path, e)),
        }
    }

    /// When an object was last written, by the storage service's clock. `None` if the object is
    /// missing or the backend does not report modification times.
    pub fn last_modified(&self, path: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        count(&COUNTERS.stats);
        match self.block_on(self.inner.op.stat(path)) {
            Ok(m) => Ok(m.last_modified().map(to_chrono)),
            Err(e) if is_missing_object(&e) => Ok(None),
            Err(e) => Err(self.err("stat", path, e)),
        }
    }

    /// Lists the objects directly in `folder` (ending in `/`), or recursively.
    pub fn list(&self, folder: &str, recursive: bool) -> Result<Vec<Listed>> {
        count(&COUNTERS.lists);
        if let Some(root) = &self.inner.local_root {
            return list_local(root, folder, recursive);
        }
        let entries = match self.block_on(self.inner.op.list_with(folder).recursive(recursive)) {
            Ok(v) => v,
            Err(e) if is_missing_object(&e) => return Ok(Vec::new()),
            Err(e) => return Err(self.err("list", folder, e)),
        };
        let mut out = Vec::new();
        for e in entries {
            if e.metadata().is_dir() {
                continue;
            }
            let name = e.name().to_string();
            let size = if e.metadata().content_length() > 0 || !e.metadata().is_file() {
                e.metadata().content_length()
            } else {
                // Some services list without sizes; ask.
                self.size(e.path())?.unwrap_or(0)
            };
            let last_modified = e.metadata().last_modified().map(to_chrono);
            let path = e.path().trim_start_matches('/').to_string();
            out.push(Listed {
                name,
                path,
                size,
                last_modified,
            });
        }
        Ok(out)
    }

    /// Deletes an object (missing objects are not an error).
    pub fn delete(&self, path: &str) -> Result<()> {
        count(&COUNTERS.deletes);
        match self.block_on(self.inner.op.delete(path)) {
            Ok(()) => Ok(()),
            Err(e) if is_missing_object(&e) => Ok(()),
            Err(e) => Err(self.err("delete", path, e)),
        }
    }

    /// A storage error with a hint saying what to check, concise and scrubbed of credentials.
    /// (The full OpenDAL error, scrubbed too, is logged at debug level: `-vv`.)
    fn err(&self, op: &'static str, path: &str, e: opendal::Error) -> RepoError {
        let full = redact(&e.to_string(), &self.inner.secrets);
        tracing::debug!(path, error = %full, "storage request failed");
        let status = http_status(&full);
        // OpenDAL marks every error that passed its retry layer "persistent", retried or not, so
        // only the HTTP status tells a refusal (4xx: retrying cannot help, and was not done)
        // from an outage.
        let refused = status.filter(|s| (400..500).contains(s) && *s != 408 && *s != 429);
        let hint = if is_container_missing(&e) || (op == "write" && e.kind() == ErrorKind::NotFound)
        {
            // A new object's name cannot be missing: its bucket, container or (WebDAV) base
            // folder is. Some servers say so (S3, Azure, GCS), others only answer 404
            // (fake-gcs-server, WebDAV servers).
            format!(
                "the bucket, container or folder of {} does not exist (create it first)",
                self.inner.location
            )
        } else if full.contains("signing credential") || full.contains("load credential") {
            format!(
                "no usable credentials for {} (set them as README \"Storage backends\" says)",
                self.inner.location
            )
        } else if e.kind() == ErrorKind::PermissionDenied || matches!(status, Some(401 | 403)) {
            format!(
                "access denied by {}: check the credentials and their permissions on this bucket/folder",
                self.inner.location
            )
        } else {
            match e.kind() {
                ErrorKind::ConfigInvalid => {
                    format!("bad storage configuration for {}", self.inner.location)
                }
                ErrorKind::RateLimited => format!(
                    "throttled by the storage service; gave up after {} attempts",
                    self.inner.attempts
                ),
                _ if refused.is_some() => format!(
                    "{} refused the request (not retried: retrying cannot help)",
                    self.inner.location
                ),
                _ if e.is_persistent() || e.is_temporary() => format!(
                    "storage unavailable (server error, timeout or network failure); gave up after {} attempts",
                    self.inner.attempts
                ),
                _ => "storage request failed".to_string(),
            }
        };
        let mut detail = e.message().to_string();
        if let Some(status) = status {
            detail = format!("HTTP {status}: {detail}");
        }
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            detail = format!("{detail}: {s}");
            src = s.source();
        }
        let detail = redact(&detail, &self.inner.secrets);
        // A fresh error without the original source chain: the source (an HTTP client error)
        // could carry a request URL with a signed query, and callers print whole chains.
        let clean = opendal::Error::new(e.kind(), format!("{hint} ({detail})")).with_operation(op);
        RepoError::Storage {
            path: path.to_string(),
            source: clean,
        }
    }
}

/// [`Storage::list`] of the local folder `root` with `read_dir`: what OpenDAL's `fs` service
/// lists (every file below `folder`, its size and modification time), without handing each
/// entry through tokio's blocking pool. A daily backup lists every pack (FORMAT §12.4); after
/// a year of them that took 13 % of an unchanged backup's cycles.
fn list_local(root: &std::path::Path, folder: &str, recursive: bool) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    let mut folders = vec![folder.trim_matches('/').to_string()];
    while let Some(rel) = folders.pop() {
        let full = root.join(&rel);
        let entries = match std::fs::read_dir(&full) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(RepoError::io("listing", full, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| RepoError::io("listing", &full, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Deleted since the folder was read (a prune, a lock released).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(RepoError::io("listing", root.join(&path), e)),
            };
            if meta.is_dir() {
                if recursive {
                    folders.push(path);
                }
                continue;
            }
            out.push(Listed {
                name,
                path,
                size: meta.len(),
                last_modified: meta
                    .modified()
                    .ok()
                    .map(chrono::DateTime::<chrono::Utc>::from),
            });
        }
    }
    Ok(out)
}

fn to_chrono(t: opendal::raw::Timestamp) -> chrono::DateTime<chrono::Utc> {
    std::time::SystemTime::from(t).into()
}

/// The HTTP status in an OpenDAL error's context (`response: Parts { status: 404, …`).
fn http_status(text: &str) -> Option<u16> {
    let i = text.find("status: ")? + "status: ".len();
    let digits: String = text[i..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|s| (100..600).contains(s))
}

/// One ranged read in progress ([`Storage::read_range_stream`]): its bytes, handed out in order.
pub struct RangeStream<'a> {
    storage: &'a Storage,
    path: String,
    stream: opendal::BufferStream,
    /// Received and not handed out yet.
    pending: opendal::Buffer,
    /// Bytes of the range neither handed out nor skipped yet.
    left: u64,
}

impl RangeStream<'_> {
    /// Receives the next piece into `pending` (which must be empty); `false` when the service
    /// sent the whole response.
    fn poll_piece(&mut self) -> std::result::Result<bool, opendal::Error> {
        use futures_core::Stream;
        let stream = &mut self.stream;
        let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx));
        match self.storage.block_on(next) {
            Some(Ok(b)) => {
                self.storage.inner.counters.received(b.len());
                self.pending = b;
                Ok(true)
            }
            Some(Err(e)) => Err(e),
            None => Ok(false),
        }
    }

    /// Moves up to `n` bytes of the range to `out` (with `Some`) or drops them; returns how
    /// many (fewer only when the object ended).
    fn take(&mut self, n: u64, mut out: Option<&mut Vec<u8>>) -> Result<u64> {
        use bytes::Buf;
        let want = n.min(self.left);
        let mut done = 0;
        while done < want {
            if !self.pending.has_remaining() {
                match self.poll_piece() {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => return Err(self.storage.err("read", &self.path, e)),
                }
            }
            let chunk = self.pending.chunk();
            let k = chunk
                .len()
                .min(usize::try_from(want - done).unwrap_or(usize::MAX));
            if let Some(out) = out.as_deref_mut() {
                out.extend_from_slice(&chunk[..k]);
            }
            self.pending.advance(k);
            done += k as u64;
        }
        self.left -= done;
        Ok(done)
    }

    /// Reads the next `n` bytes of the range into `buf` (cleared first; its capacity reused):
    /// returns how many, fewer only when the object ended.
    pub fn read_into(&mut self, n: usize, buf: &mut Vec<u8>) -> Result<usize> {
        buf.clear();
        buf.reserve(n);
        let got = self.take(n as u64, Some(buf))?;
        Ok(got as usize)
    }

    /// Skips the next `n` bytes of the range; returns how many (fewer when the object ended).
    pub fn skip(&mut self, n: u64) -> Result<u64> {
        self.take(n, None)
    }
}

/// Appends a piece of a ranged read to `out`, which is to hold `len` bytes in all (reserved at
/// the first piece, so the pieces are copied once, without reallocations).
fn append_piece(out: &mut Vec<u8>, piece: opendal::Buffer, len: usize) {
    out.reserve(len.saturating_sub(out.len()));
    piece.into_iter().for_each(|c| out.extend_from_slice(&c));
}

/// A missing object, as opposed to a missing bucket or container (which must not look like an
/// empty repository).
fn is_missing_object(e: &opendal::Error) -> bool {
    e.kind() == ErrorKind::NotFound && !is_container_missing(e)
}

fn is_container_missing(e: &opendal::Error) -> bool {
    let s = e.to_string();
    [
        "NoSuchBucket",
        "ContainerNotFound",
        "The specified bucket does not exist",
    ]
    .iter()
    .any(|m| s.contains(m))
}

/// Removes URL query strings (signed URLs, SAS tokens) and known credential values.
fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        // Copy up to and including the scheme separator, then the URL up to its query.
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '}' | ')' | '>'))
            .unwrap_or(tail.len());
        let url = &tail[..end];
        match url.find('?') {
            Some(q) => {
                out.push_str(&url[..q]);
                out.push_str("?[redacted]");
            }
            None => out.push_str(url),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    for s in secrets {
        if s.len() >= 4 {
            out = out.replace(s.as_str(), "[redacted]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::backends::parse_size;
    use super::pacing::PACER_MIN_PIECE;
    use super::*;

    #[test]
    fn redact_strips_queries_and_secrets() {
        let s = redact(
            "Unexpected at write, context: { url: https://acct.blob.core.windows.net/c/x?sv=1&sig=abc, k: v } => hunter2hunter2 failed",
            &["hunter2hunter2".to_string()],
        );
        assert!(!s.contains("sig=abc"), "{s}");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(
            s.contains("https://acct.blob.core.windows.net/c/x?[redacted]"),
            "{s}"
        );
    }

    #[test]
    fn pacer_admits_a_burst_then_the_rate() {
        let p = Pacer::default();
        assert_eq!(p.admit(1 << 30), None, "unlimited");
        assert_eq!(p.piece(), None);
        p.set(Some(1000));
        assert_eq!(p.piece(), Some(PACER_MIN_PIECE));
        // 250 bytes fit the quarter-second burst; each further 1000 bytes waits one more second.
        assert_eq!(p.admit(250), None);
        let w1 = p.admit(1000).expect("over the burst");
        let w2 = p.admit(1000).expect("over the burst");
        assert!(
            w1 > Duration::from_millis(900) && w1 <= Duration::from_secs(1),
            "{w1:?}"
        );
        assert!(
            w2 > Duration::from_millis(1900) && w2 <= Duration::from_secs(2),
            "{w2:?}"
        );
        p.set(Some(40 << 20));
        assert_eq!(p.piece(), Some(10 << 20));
        p.set(None);
        assert_eq!(p.admit(1 << 30), None);
    }

    #[test]
    fn a_range_stream_hands_out_regions_and_gaps_from_one_request() {
        let s = Storage::open("memory://stream").unwrap();
        assert!(
            s.streams_ranges(),
            "memory:// stands for a cloud service here"
        );
        let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        assert!(s.write_new("p", data.clone()).unwrap());
        let before = s.transfers();
        let mut st = s.read_range_stream("p", 1000, 500_000).unwrap().unwrap();
        let mut buf = vec![0xAA; 10];
        assert_eq!(st.read_into(100_000, &mut buf).unwrap(), 100_000);
        assert_eq!(buf, data[1000..101_000]);
        assert_eq!(st.skip(50_000).unwrap(), 50_000);
        assert_eq!(st.read_into(200_000, &mut buf).unwrap(), 200_000);
        assert_eq!(buf, data[151_000..351_000]);
        // The range ends before the object: what is asked beyond it is not handed out.
        assert_eq!(st.read_into(300_000, &mut buf).unwrap(), 150_000);
        assert_eq!(buf, data[351_000..501_000]);
        assert_eq!(st.read_into(10, &mut buf).unwrap(), 0);
        assert!(buf.is_empty());
        drop(st);
        let after = s.transfers();
        assert_eq!(after.read_requests - before.read_requests, 1);
        assert_eq!(after.read_bytes - before.read_bytes, 500_000);
        assert!(s.read_range_stream("missing", 0, 10).unwrap().is_none());
        // Under a download limit, reads are paced piece by piece instead.
        s.set_limits(Limits {
            download: Some(1 << 20),
            upload: None,
        });
        assert!(!s.streams_ranges());
    }

    #[test]
    fn a_local_folder_reads_as_opendal_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path().to_str().unwrap()).unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        for (path, bytes) in [
            ("index/empty", Vec::new()),
            ("index/small", b"abc".to_vec()),
            ("data/ab/big", big),
        ] {
            assert!(s.write_new(path, bytes.clone()).unwrap());
            let via_opendal = s.block_on(s.inner.op.read(path)).unwrap().to_vec();
            assert_eq!(via_opendal, bytes);
            assert_eq!(s.read(path).unwrap(), Some(bytes), "{path}");
        }
        assert_eq!(s.read("index/missing").unwrap(), None);
        assert_eq!(s.read("nowhere/missing").unwrap(), None);
        // A folder where an object should be is an error, not a missing object.
        assert!(s.read("data/ab").is_err());
    }

    #[test]
    fn a_local_folder_lists_as_opendal_lists_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path().to_str().unwrap()).unwrap();
        for (path, len) in [
            ("data/ab/ab01", 10),
            ("data/ab/ab02", 0),
            ("data/cd/cd03", 300),
            ("data/top", 5),
            ("snapshots/s1", 7),
            ("config", 3),
        ] {
            assert!(s.write_new(path, vec![1; len]).unwrap());
        }
        std::fs::create_dir_all(dir.path().join("data/ef")).unwrap();
        let key = |l: &Listed| (l.path.clone(), l.name.clone(), l.size, l.last_modified);
        let via_opendal = |folder: &str, recursive: bool| {
            let entries = s
                .block_on(s.inner.op.list_with(folder).recursive(recursive))
                .unwrap_or_default();
            let mut v: Vec<_> = entries
                .iter()
                .filter(|e| !e.metadata().is_dir())
                .map(|e| {
                    let m = e.metadata();
                    (
                        e.path().trim_start_matches('/').to_string(),
                        e.name().to_string(),
                        m.content_length(),
                        m.last_modified().map(to_chrono),
                    )
                })
                .collect();
            v.sort();
            v
        };
        for (folder, recursive) in [
            ("data/", true),
            ("data/", false),
            ("data/ab/", false),
            ("snapshots/", false),
            ("missing/", true),
        ] {
            let mut fast: Vec<_> = s.list(folder, recursive).unwrap().iter().map(key).collect();
            fast.sort();
            assert_eq!(fast, via_opendal(folder, recursive), "{folder} {recursive}");
        }
        assert_eq!(s.list("data/", true).unwrap().len(), 4);
        assert!(s.list("missing/", true).unwrap().is_empty());
    }

    #[test]
    fn volatile_writes_are_write_once_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path().to_str().unwrap()).unwrap();
        let forever = Duration::from_secs(60);
        let w = |bytes: &[u8]| {
            s.write_new_within_volatile("locks/ab", bytes.to_vec(), forever)
                .unwrap()
        };
        assert_eq!(w(b"first"), Some(true));
        assert_eq!(w(b"second"), Some(false), "never replaces an object");
        assert_eq!(s.read("locks/ab").unwrap().unwrap(), b"first");
        let tmp: Vec<_> = std::fs::read_dir(dir.path().join("tmp")).unwrap().collect();
        assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
        // Elsewhere it is an ordinary write-once write.
        let m = Storage::open("memory://volatile").unwrap();
        let mw = |bytes: &[u8]| {
            m.write_new_within_volatile("locks/ab", bytes.to_vec(), forever)
                .unwrap()
        };
        assert_eq!(mw(b"first"), Some(true));
        assert_eq!(mw(b"second"), Some(false));
        assert_eq!(m.read("locks/ab").unwrap().unwrap(), b"first");
    }

    #[test]
    fn limits_and_stats_are_shared_by_clones() {
        let s = Storage::open("memory://limits").unwrap();
        let c = s.clone();
        s.set_limits(Limits {
            download: Some(1 << 20),
            upload: None,
        });
        assert_eq!(c.limits().download, Some(1 << 20));
        assert!(c.write_new("a", vec![7; 300_000]).unwrap());
        // Paced reads split into pieces of a quarter second (256 KiB here) and are counted.
        assert_eq!(
            s.read_range("a", 10, 299_990).unwrap().unwrap(),
            vec![7; 299_990]
        );
        assert_eq!(s.read("a").unwrap().unwrap().len(), 300_000);
        let st = c.transfers();
        assert_eq!(st.write_requests, 1);
        assert_eq!(st.written_bytes, 300_000);
        assert_eq!(st.read_requests, 4);
        assert_eq!(st.read_bytes, 599_990);
    }

    #[test]
    fn part_sizes_parse() {
        assert_eq!(parse_size("5MiB"), Some(5 << 20));
        assert_eq!(parse_size("5M"), Some(5 << 20));
        assert_eq!(parse_size("8388608"), Some(8 << 20));
        assert_eq!(parse_size("512 KiB"), Some(512 << 10));
        assert_eq!(parse_size("5 parsecs"), None);
        assert_eq!(parse_size("0"), None);
    }

    #[test]
    fn unknown_and_uncompiled_schemes_are_clear() {
        let e = Storage::open("ftp://host/x").unwrap_err().to_string();
        assert!(
            e.contains("unsupported repository URL scheme \"ftp\""),
            "{e}"
        );
        assert!(e.contains("s3://"), "{e}");
        #[cfg(not(feature = "gdrive"))]
        {
            let e = Storage::open("gdrive://Backups").unwrap_err().to_string();
            assert!(e.contains("cargo feature `gdrive`"), "{e}");
        }
    }

    #[test]
    fn credentials_in_urls_are_refused() {
        let e = Storage::open("webdav+https://me:pw@host/x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("must not contain credentials"), "{e}");
        assert!(!e.contains("pw"), "{e}");
    }

    #[test]
    fn explicit_settings_win_over_the_environment_and_empty_means_unset() {
        let s = Settings {
            explicit: vec![
                ("PATH".into(), "first".into()),
                ("PATH".into(), "".into()),
                ("CHATVAULT_X".into(), "a".into()),
                ("CHATVAULT_X".into(), "b".into()),
            ],
        };
        assert_eq!(
            s.get("PATH"),
            None,
            "the last value given wins; empty is unset"
        );
        assert_eq!(s.get("CHATVAULT_X").as_deref(), Some("b"));
        // They reach the tuning as well as the credentials.
        let e = Storage::open_with("memory://settings", &[("CHATVAULT_STORAGE_ATTEMPTS", "0")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("CHATVAULT_STORAGE_ATTEMPTS=\"0\""), "{e}");
    }

    #[test]
    fn stats_count_operations_and_record_how_a_backend_writes() {
        let s = Storage::open("memory://stats").unwrap();
        let before = stats();
        assert!(s.write_new("a", b"x".to_vec()).unwrap());
        assert!(!s.write_new("a", b"y".to_vec()).unwrap());
        assert_eq!(&s.read_range("a", 0, 1).unwrap().unwrap()[..], b"x");
        s.list("", false).unwrap();
        s.delete("a").unwrap();
        let after = stats();
        // Other tests in this process count too: at least ours.
        assert!(after.writes >= before.writes + 2, "{after:?}");
        assert!(after.ranged_reads > before.ranged_reads);
        assert!(after.lists > before.lists && after.deletes > before.deletes);
        assert_eq!(
            after.backends.get("memory"),
            Some(&BackendWrites {
                atomic_write_once: true,
                part_size: None
            })
        );
        assert!(after.to_string().contains("writes"), "{after}");
    }

    #[test]
    fn debug_shows_location_only() {
        let s = Storage::open("memory://dbg").unwrap();
        let d = format!("{s:?}");
        assert!(d.contains("memory://dbg") && d.contains("memory"), "{d}");
        assert_eq!(s.backend(), "memory");
    }
}
