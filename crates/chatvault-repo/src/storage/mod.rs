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
//! Every request is counted, process-wide and cheaply (a few atomic additions): [`stats`] gives
//! the storage operations, the HTTP requests by method (cloud backends), part uploads and
//! retries; `chatvault -v` prints them at exit.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, Operator};

use crate::error::{RepoError, Result};

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
}

/// Bandwidth limits of a [`Storage`], in bytes per second (`None`: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes per second read from storage (pack data, metadata).
    pub download: Option<u64>,
    /// Most bytes per second written to storage.
    pub upload: Option<u64>,
}

/// Requests made and bytes moved by one [`Storage`] since it was opened (all clones share them;
/// [`stats`] counts operations of the whole process).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TransferStats {
    /// Read requests (whole objects and ranges) that returned data.
    pub read_requests: u64,
    /// Bytes those reads returned.
    pub read_bytes: u64,
    /// Write requests (new objects and replacements) that stored data.
    pub write_requests: u64,
    /// Bytes those writes stored.
    pub written_bytes: u64,
}

#[derive(Default)]
struct Transfers {
    read_requests: AtomicU64,
    read_bytes: AtomicU64,
    write_requests: AtomicU64,
    written_bytes: AtomicU64,
}

impl Transfers {
    fn read(&self, n: usize) {
        self.read_requests.fetch_add(1, Ordering::Relaxed);
        self.read_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    fn wrote(&self, n: usize) {
        self.write_requests.fetch_add(1, Ordering::Relaxed);
        self.written_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// A token bucket in its "virtual scheduling" form (GCRA): each transfer of `n` bytes moves a
/// theoretical arrival time `tat` forward by `n / rate`; a transfer waits until `tat` is at most
/// [`PACER_BURST`] ahead of now. Over any interval the bytes admitted are at most
/// `rate · interval + burst`, and a steady stream of requests is admitted at exactly `rate`.
#[derive(Default)]
struct Pacer {
    /// Bytes per second; 0 = unlimited.
    rate: AtomicU64,
    tat: std::sync::Mutex<Option<Instant>>,
}

/// Bytes a paced transfer may run ahead of its rate (the bucket's depth), and the pieces a
/// paced ranged read is split into at most: a quarter second of the rate, at least
/// [`PACER_MIN_PIECE`].
const PACER_BURST: Duration = Duration::from_millis(250);
const PACER_MIN_PIECE: u64 = 64 << 10;

impl Pacer {
    fn set(&self, rate: Option<u64>) {
        self.rate.store(rate.unwrap_or(0), Ordering::Relaxed);
        *self.tat.lock().expect("pacer") = None;
    }

    fn rate(&self) -> Option<u64> {
        Some(self.rate.load(Ordering::Relaxed)).filter(|r| *r > 0)
    }

    /// How long a transfer of `n` bytes must wait before it starts (and books it).
    fn admit(&self, n: u64) -> Option<Duration> {
        let rate = self.rate()?;
        let now = Instant::now();
        let mut tat = self.tat.lock().expect("pacer");
        let start = tat.map_or(now, |t| t.max(now));
        let next = start + Duration::from_secs_f64(n as f64 / rate as f64);
        *tat = Some(next);
        next.checked_duration_since(now + PACER_BURST)
            .filter(|d| !d.is_zero())
    }

    /// Largest piece a paced ranged read asks for at once.
    fn piece(&self) -> Option<u64> {
        self.rate().map(|r| (r / 4).max(PACER_MIN_PIECE))
    }

    async fn take(&self, n: u64) {
        if let Some(d) = self.admit(n) {
            tokio::time::sleep(d).await;
        }
    }
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

/// Process-wide request counters (see [`stats`]).
struct Counters {
    reads: AtomicU64,
    ranged_reads: AtomicU64,
    writes: AtomicU64,
    stats: AtomicU64,
    lists: AtomicU64,
    deletes: AtomicU64,
    retries: AtomicU64,
    /// HTTP requests by method, in [`HTTP_METHODS`] order (the last slot: any other method).
    http: [AtomicU64; HTTP_METHODS.len() + 1],
    /// HTTP requests that upload one part of a larger object.
    part_uploads: AtomicU64,
}

const HTTP_METHODS: [&str; 7] = ["GET", "HEAD", "PUT", "POST", "DELETE", "PROPFIND", "MKCOL"];

static COUNTERS: Counters = Counters {
    reads: AtomicU64::new(0),
    ranged_reads: AtomicU64::new(0),
    writes: AtomicU64::new(0),
    stats: AtomicU64::new(0),
    lists: AtomicU64::new(0),
    deletes: AtomicU64::new(0),
    retries: AtomicU64::new(0),
    http: [const { AtomicU64::new(0) }; HTTP_METHODS.len() + 1],
    part_uploads: AtomicU64::new(0),
};

fn count(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What this process asked of its storage so far (all [`Storage`]s together).
///
/// The operations are [`Storage`]'s calls as the engine makes them (a listing counts once however
/// many pages or folders it takes); `http_requests` are the requests that actually went to a
/// cloud service, retries and part uploads included (0 for local folders and `memory://`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StorageStats {
    /// Whole-object reads.
    pub reads: u64,
    /// Ranged reads (part of an object).
    pub ranged_reads: u64,
    /// Object writes (write-once and replace).
    pub writes: u64,
    /// Metadata requests (size, modification time, existence before a write).
    pub stats: u64,
    /// Listings.
    pub lists: u64,
    /// Deletions.
    pub deletes: u64,
    /// Attempts repeated after a transient failure.
    pub retries: u64,
    /// HTTP requests sent (cloud backends).
    pub http_requests: u64,
    /// HTTP requests by method (only methods used).
    pub http_by_method: BTreeMap<String, u64>,
    /// HTTP requests that uploaded one part of a multipart (S3, GCS), block (Azure) or resumable
    /// (GCS) upload.
    pub part_uploads: u64,
    /// How each backend opened in this process writes (by backend name).
    pub backends: BTreeMap<String, BackendWrites>,
}

/// How a backend writes objects, as [`Storage::open`] found its capabilities.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackendWrites {
    /// Write-once is an atomic create-if-absent (conditional write); otherwise chatvault checks
    /// that the name is free, then writes.
    pub atomic_write_once: bool,
    /// Objects larger than this go up in parts; `None`: in one request.
    pub part_size: Option<usize>,
}

static BACKENDS: std::sync::Mutex<BTreeMap<String, BackendWrites>> =
    std::sync::Mutex::new(BTreeMap::new());

/// The process-wide request counters (see [`StorageStats`]).
pub fn stats() -> StorageStats {
    let c = &COUNTERS;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut by_method = BTreeMap::new();
    for (i, n) in c.http.iter().enumerate() {
        let n = get(n);
        if n > 0 {
            let name = HTTP_METHODS.get(i).copied().unwrap_or("other");
            by_method.insert(name.to_string(), n);
        }
    }
    StorageStats {
        reads: get(&c.reads),
        ranged_reads: get(&c.ranged_reads),
        writes: get(&c.writes),
        stats: get(&c.stats),
        lists: get(&c.lists),
        deletes: get(&c.deletes),
        retries: get(&c.retries),
        http_requests: by_method.values().sum(),
        http_by_method: by_method,
        part_uploads: get(&c.part_uploads),
        backends: BACKENDS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone(),
    }
}

impl fmt::Display for StorageStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} reads, {} ranged reads, {} writes, {} stats, {} lists, {} deletes, {} retries",
            self.reads,
            self.ranged_reads,
            self.writes,
            self.stats,
            self.lists,
            self.deletes,
            self.retries
        )?;
        if self.http_requests > 0 {
            let methods: Vec<String> = self
                .http_by_method
                .iter()
                .map(|(m, n)| format!("{m} {n}"))
                .collect();
            write!(
                f,
                "; {} HTTP requests ({}; {} part uploads)",
                self.http_requests,
                methods.join(", "),
                self.part_uploads
            )?;
        }
        Ok(())
    }
}

/// URL schemes and the cargo feature (of `chatvault-cli` and `chatvault-repo`) that builds each.
const CLOUD_SCHEMES: &[(&str, &str)] = &[
    ("s3", "s3"),
    ("gcs", "gcs"),
    ("azblob", "azblob"),
    ("gdrive", "gdrive"),
    ("onedrive", "onedrive"),
    ("dropbox", "dropbox"),
    ("webdav", "webdav"),
    ("webdav+https", "webdav"),
    ("webdav+http", "webdav"),
];

/// What [`Storage::open`] builds before the common layers are added.
struct Built {
    op: Operator,
    display: String,
    scheme: &'static str,
    secrets: Vec<String>,
}

/// Robustness settings shared by all backends.
struct Tuning {
    attempts: usize,
    first_delay: Duration,
    timeout: Duration,
    io_timeout: Duration,
    part_size: usize,
}

/// Where settings and credentials come from: explicit values first (an empty value: unset),
/// then the environment.
#[derive(Clone, Default)]
struct Settings {
    explicit: Vec<(String, String)>,
}

impl Settings {
    fn get(&self, name: &str) -> Option<String> {
        // The last value given for a name wins.
        match self.explicit.iter().rev().find(|(k, _)| k == name) {
            Some((_, v)) => Some(v.clone()).filter(|v| !v.trim().is_empty()),
            None => env_nonempty(name),
        }
    }
}

impl Tuning {
    fn from_settings(settings: &Settings) -> Result<Tuning> {
        let env_nonempty = |name: &str| settings.get(name);
        let attempts = match env_nonempty("CHATVAULT_STORAGE_ATTEMPTS") {
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| {
                    RepoError::Invalid(format!(
                        "CHATVAULT_STORAGE_ATTEMPTS={v:?}: expected a number from 1 to 100"
                    ))
                })?,
            None => 5,
        };
        let first_delay = match env_nonempty("CHATVAULT_STORAGE_RETRY_DELAY_MS") {
            Some(v) => Duration::from_millis(v.parse::<u64>().map_err(|_| {
                RepoError::Invalid(format!(
                    "CHATVAULT_STORAGE_RETRY_DELAY_MS={v:?}: expected milliseconds"
                ))
            })?),
            None => Duration::from_secs(1),
        };
        let (timeout, io_timeout) = match env_nonempty("CHATVAULT_STORAGE_TIMEOUT") {
            Some(v) => {
                let s = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| {
                        RepoError::Invalid(format!(
                            "CHATVAULT_STORAGE_TIMEOUT={v:?}: expected seconds"
                        ))
                    })?;
                (Duration::from_secs_f64(s), Duration::from_secs_f64(s))
            }
            None => (Duration::from_secs(60), Duration::from_secs(120)),
        };
        let part_size = match env_nonempty("CHATVAULT_S3_PART_SIZE") {
            Some(v) => parse_size(&v).ok_or_else(|| {
                RepoError::Invalid(format!(
                    "CHATVAULT_S3_PART_SIZE={v:?}: expected a size such as 5MiB or 8388608"
                ))
            })?,
            None => 8 << 20,
        };
        Ok(Tuning {
            attempts,
            first_delay,
            timeout,
            io_timeout,
            part_size,
        })
    }
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
        Ok(Storage {
            inner: Arc::new(Inner {
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
                Some(len) => self.read_range(path, 0, len),
                None => Ok(None),
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
    /// in paced pieces (module documentation).
    pub fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Option<Vec<u8>>> {
        let piece = self.inner.download.piece().unwrap_or(u64::MAX).max(1);
        let mut out: Vec<u8> = Vec::new();
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
                    self.inner.counters.read(b.len());
                    if out.is_empty() && at + n == end {
                        return Ok(Some(b.to_vec()));
                    }
                    let b = b.to_vec();
                    out.reserve(len as usize - out.len().min(len as usize));
                    let got = b.len() as u64;
                    out.extend_from_slice(&b);
                    at += got;
                    // A short read means the object ended: return what there is.
                    if at >= end || got < n {
                        return Ok(Some(out));
                    }
                }
                Err(e) if is_missing_object(&e) => return Ok(None),
                Err(e) => return Err(self.err("read", path, e)),
            }
        }
    }

    /// Writes a new object. Objects are write-once: if `path` exists, returns `Ok(false)` and
    /// leaves it untouched. On services without conditional writes this is stat-then-write (see
    /// the module documentation for why the race is harmless).
    pub fn write_new(&self, path: &str, bytes: Vec<u8>) -> Result<bool> {
        self.block_on(self.write_new_async(path, bytes))
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
        let timed = async { tokio::time::timeout(limit, self.write_new_async(path, bytes)).await };
        match self.block_on(timed) {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }

    async fn write_new_async(&self, path: &str, bytes: Vec<u8>) -> Result<bool> {
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

fn to_chrono(t: opendal::raw::Timestamp) -> chrono::DateTime<chrono::Utc> {
    std::time::SystemTime::from(t).into()
}

/// The HTTP status in an OpenDAL error's context (`response: Parts { status: 404, …`).
fn http_status(text: &str) -> Option<u16> {
    let i = text.find("status: ")? + "status: ".len();
    let digits: String = text[i..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|s| (100..600).contains(s))
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

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `8388608`, `5M`, `5MiB`, `512K`, `5MB` (binary units).
fn parse_size(v: &str) -> Option<usize> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult).filter(|n| *n > 0)
}

fn bad_location(location: &str, e: opendal::Error) -> RepoError {
    RepoError::Invalid(format!("cannot use repository location {location:?}: {e}"))
}

/// Builds the operator for `location` (no layers yet).
fn build(location: &str, settings: &Settings) -> Result<Built> {
    if let Some(rest) = location.strip_prefix("memory://") {
        let b = opendal::services::Memory::default().root(&format!("/{rest}"));
        return Ok(Built {
            op: Operator::new(b).map_err(|e| bad_location(location, e))?,
            display: location.to_string(),
            scheme: "memory",
            secrets: Vec::new(),
        });
    }
    if let Some((scheme, rest)) = location.split_once("://")
        && scheme != "file"
    {
        return build_cloud(location, &scheme.to_ascii_lowercase(), rest, settings);
    }
    let path = location.strip_prefix("file://").unwrap_or(location);
    if path.is_empty() {
        return Err(RepoError::Invalid("empty repository location".into()));
    }
    let abs = std::path::absolute(path)
        .map_err(|e| RepoError::io("resolving the repository path", path, e))?;
    let root = abs.to_string_lossy().into_owned();
    // Objects are written under tmp/ and renamed into place, so a crash never leaves a partial
    // object under its final name.
    let b = opendal::services::Fs::default()
        .root(&root)
        .atomic_write_dir(&format!("{root}/tmp"));
    Ok(Built {
        op: Operator::new(b).map_err(|e| bad_location(location, e))?,
        display: root,
        scheme: "fs",
        secrets: Vec::new(),
    })
}

/// `scheme://AUTHORITY/PATH` split into parts, with credentials in the URL refused.
#[cfg_attr(not(feature = "_http"), allow(dead_code))]
struct CloudUrl<'a> {
    /// Bucket, container or host (may be empty for drive-style URLs).
    authority: &'a str,
    /// Path after the authority, without leading or trailing `/`.
    path: &'a str,
}

impl CloudUrl<'_> {
    /// OpenDAL root: `/path/` (or `/`).
    #[cfg_attr(
        not(any(
            feature = "s3",
            feature = "gcs",
            feature = "azblob",
            feature = "webdav"
        )),
        allow(dead_code)
    )]
    fn root(&self) -> String {
        if self.path.is_empty() {
            "/".to_string()
        } else {
            format!("/{}/", self.path)
        }
    }
}

fn build_cloud(location: &str, scheme: &str, rest: &str, settings: &Settings) -> Result<Built> {
    let Some(&(_, feature)) = CLOUD_SCHEMES.iter().find(|(s, _)| *s == scheme) else {
        let known: Vec<&str> = CLOUD_SCHEMES.iter().map(|(s, _)| *s).collect();
        return Err(RepoError::Invalid(format!(
            "unsupported repository URL scheme {scheme:?} in {location:?}: use a local path, \
             file://, memory:// or one of {}://",
            known.join("://, ")
        )));
    };
    if rest.contains(['?', '#']) {
        return Err(RepoError::Invalid(format!(
            "repository URL {location:?}: query strings and fragments are not supported; \
             backend options come from environment variables (README \"Storage backends\")"
        )));
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err(RepoError::Invalid(format!(
            "repository URL for {scheme}:// must not contain credentials (user@ or user:password@): \
             they would be saved in the device configuration and shown in messages; set them in \
             environment variables instead (README \"Storage backends\")"
        )));
    }
    let url = CloudUrl {
        authority,
        path: path.trim_matches('/'),
    };
    build_backend(location, scheme, feature, &url, settings)
}

#[cfg(not(feature = "_http"))]
fn build_backend(
    location: &str,
    scheme: &str,
    feature: &str,
    _url: &CloudUrl<'_>,
    _settings: &Settings,
) -> Result<Built> {
    Err(not_compiled(location, scheme, feature))
}

fn not_compiled(location: &str, scheme: &str, feature: &str) -> RepoError {
    RepoError::Invalid(format!(
        "{location:?}: the {scheme}:// backend is not compiled into this build of chatvault; \
         rebuild with the cargo feature `{feature}` (e.g. `cargo install --path crates/chatvault-cli \
         --features {feature}`, or `--features all-backends`)"
    ))
}

#[cfg(feature = "_http")]
fn build_backend(
    location: &str,
    scheme: &str,
    feature: &str,
    url: &CloudUrl<'_>,
    settings: &Settings,
) -> Result<Built> {
    http::init()?;
    let mut creds = http::Creds::load(settings)?;
    let built = match scheme {
        #[cfg(feature = "s3")]
        "s3" => http::s3(location, url, &mut creds)?,
        #[cfg(feature = "gcs")]
        "gcs" => http::gcs(location, url, &mut creds)?,
        #[cfg(feature = "azblob")]
        "azblob" => http::azblob(location, url, &mut creds)?,
        #[cfg(feature = "gdrive")]
        "gdrive" => http::token_drive(location, url, &mut creds, "gdrive")?,
        #[cfg(feature = "onedrive")]
        "onedrive" => http::token_drive(location, url, &mut creds, "onedrive")?,
        #[cfg(feature = "dropbox")]
        "dropbox" => http::token_drive(location, url, &mut creds, "dropbox")?,
        #[cfg(feature = "webdav")]
        "webdav" | "webdav+http" | "webdav+https" => {
            http::webdav(location, scheme, url, &mut creds)?
        }
        _ => return Err(not_compiled(location, scheme, feature)),
    };
    Ok(Built {
        secrets: creds.secrets,
        ..built
    })
}

#[cfg(feature = "_http")]
mod http {
    //! The cloud backends: one HTTP client (reqwest on rustls/ring) shared by all of them.

    use std::collections::HashMap;
    use std::sync::OnceLock;
    use std::time::Duration;

    #[allow(unused_imports)]
    use opendal::Operator;

    #[allow(unused_imports)]
    use super::{Built, CloudUrl, Settings, bad_location};
    use crate::error::{RepoError, Result};

    /// Installs the TLS provider and the process-wide HTTP transport once.
    pub(super) fn init() -> Result<()> {
        static INIT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
        INIT.get_or_init(|| {
            // Another component may have installed a provider already; either is fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(20))
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| format!("cannot start the HTTPS client: {e}"))?;
            opendal::HttpTransporter::install_default(Counted(
                opendal_http_transport_reqwest::ReqwestTransport::new(client),
            ));
            Ok(())
        })
        .clone()
        .map_err(RepoError::Invalid)
    }

    /// The HTTP transport, counting requests (by method, and part uploads) for
    /// [`super::stats`].
    struct Counted(opendal_http_transport_reqwest::ReqwestTransport);

    impl opendal::HttpTransport for Counted {
        fn fetch(
            &self,
            req: http::Request<opendal::Buffer>,
        ) -> impl Future<Output = opendal::Result<http::Response<opendal::HttpBody>>> + Send
        {
            let c = &super::COUNTERS;
            let method = req.method().as_str();
            let slot = super::HTTP_METHODS
                .iter()
                .position(|m| *m == method)
                .unwrap_or(super::HTTP_METHODS.len());
            super::count(&c.http[slot]);
            // S3 and GCS multipart parts, Azure blocks, GCS resumable-upload chunks.
            let query = req.uri().query().unwrap_or("");
            if method == "PUT"
                && ["partNumber=", "blockid=", "upload_id="]
                    .iter()
                    .any(|k| query.contains(k))
            {
                super::count(&c.part_uploads);
            }
            self.0.fetch(req)
        }
    }

    /// Credential lookup: the environment first, then `CHATVAULT_CREDENTIALS_FILE` (lines of
    /// `NAME=VALUE`, `#` comments, optional `export ` prefix and quotes). Every secret value
    /// handed out is remembered so error messages can be scrubbed.
    pub(super) struct Creds {
        settings: Settings,
        file: HashMap<String, String>,
        pub(super) secrets: Vec<String>,
    }

    impl Creds {
        pub(super) fn load(settings: &Settings) -> Result<Creds> {
            let mut file = HashMap::new();
            if let Some(path) = settings.get("CHATVAULT_CREDENTIALS_FILE") {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    RepoError::io(
                        "reading the credentials file (CHATVAULT_CREDENTIALS_FILE)",
                        &path,
                        e,
                    )
                })?;
                for line in text.lines() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let line = line.strip_prefix("export ").unwrap_or(line);
                    if let Some((k, v)) = line.split_once('=') {
                        let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
                        file.insert(k.trim().to_string(), v.to_string());
                    }
                }
            }
            Ok(Creds {
                settings: settings.clone(),
                file,
                secrets: Vec::new(),
            })
        }

        /// A non-secret setting (region, endpoint, account name, client id).
        pub(super) fn get(&self, name: &str) -> Option<String> {
            self.settings
                .get(name)
                .or_else(|| self.file.get(name).filter(|v| !v.is_empty()).cloned())
        }

        /// A secret: remembered for scrubbing.
        pub(super) fn secret(&mut self, name: &str) -> Option<String> {
            let v = self.get(name)?;
            self.secrets.push(v.clone());
            Some(v)
        }

        /// The first of `names` that is set.
        #[cfg_attr(not(feature = "s3"), allow(dead_code))]
        pub(super) fn first(&self, names: &[&str]) -> Option<String> {
            names.iter().find_map(|n| self.get(n))
        }
    }

    #[allow(dead_code)]
    fn need_authority(location: &str, url: &CloudUrl<'_>, what: &str) -> Result<()> {
        if url.authority.is_empty() {
            return Err(RepoError::Invalid(format!(
                "repository URL {location:?} names no {what} (expected scheme://{what}/prefix)"
            )));
        }
        Ok(())
    }

    #[allow(dead_code)]
    fn missing(location: &str, what: &str) -> RepoError {
        RepoError::Invalid(format!(
            "cannot use {location}: {what} (README \"Storage backends\")"
        ))
    }

    #[cfg(feature = "s3")]
    pub(super) fn s3(location: &str, url: &CloudUrl<'_>, creds: &mut Creds) -> Result<Built> {
        need_authority(location, url, "bucket")?;
        let bucket = url.authority;
        let endpoint = creds
            .first(&[
                "AWS_ENDPOINT_URL_S3",
                "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT",
                "AWS_S3_ENDPOINT",
            ])
            .map(|e| e.trim_end_matches('/').to_string());
        let region = match creds.first(&["AWS_REGION", "AWS_DEFAULT_REGION"]) {
            Some(r) => r,
            // Most S3-compatible servers ignore the region but need one for signing.
            None if endpoint.is_some() => "us-east-1".to_string(),
            None => {
                return Err(missing(
                    location,
                    "no AWS region: set AWS_REGION (e.g. eu-central-1)",
                ));
            }
        };
        // Virtual-host style on AWS (path style is deprecated there) unless the bucket name has
        // dots (TLS wildcard certificates do not match them); path style on custom endpoints,
        // which is what S3-compatible servers (MinIO, Ceph, Garage, moto, …) support everywhere.
        let virtual_host = match creds.get("CHATVAULT_S3_VIRTUAL_HOST").as_deref() {
            Some("1" | "true" | "yes") => true,
            Some("0" | "false" | "no") => false,
            Some(v) => {
                return Err(missing(
                    location,
                    &format!("CHATVAULT_S3_VIRTUAL_HOST={v:?}: expected 1 or 0"),
                ));
            }
            None => endpoint.is_none() && !bucket.contains('.'),
        };
        let mut b = opendal::services::S3::default()
            .bucket(bucket)
            .root(&url.root())
            .region(&region);
        if let Some(e) = &endpoint {
            b = b.endpoint(e);
            // No instance metadata service behind a custom endpoint: do not wait for one.
            b = b.disable_ec2_metadata();
        }
        if virtual_host {
            b = b.enable_virtual_host_style();
        }
        if let (Some(ak), Some(sk)) = (
            creds.get("AWS_ACCESS_KEY_ID"),
            creds.secret("AWS_SECRET_ACCESS_KEY"),
        ) {
            b = b.access_key_id(&ak).secret_access_key(&sk);
            if let Some(t) = creds.secret("AWS_SESSION_TOKEN") {
                b = b.session_token(&t);
            }
        }
        if let Some(p) = creds.get("AWS_PROFILE") {
            b = b.profile(&p);
        }
        Ok(Built {
            op: Operator::new(b).map_err(|e| bad_location(location, e))?,
            display: format!("s3://{bucket}/{}", url.path),
            scheme: "s3",
            secrets: Vec::new(),
        })
    }

    #[cfg(feature = "gcs")]
    pub(super) fn gcs(location: &str, url: &CloudUrl<'_>, creds: &mut Creds) -> Result<Built> {
        need_authority(location, url, "bucket")?;
        let mut b = opendal::services::Gcs::default()
            .bucket(url.authority)
            .root(&url.root());
        if let Some(p) = creds.get("GOOGLE_APPLICATION_CREDENTIALS") {
            b = b.credential_path(&p);
        }
        if let Some(t) = creds.secret("CHATVAULT_GCS_TOKEN") {
            b = b.token(t);
        }
        if let Some(e) = creds.get("CHATVAULT_GCS_ENDPOINT") {
            b = b.endpoint(&e);
            // An emulator or proxy: no VM metadata service to ask for a token (its address is
            // not on this machine, and waiting for it would only delay a clear error).
            b = b.disable_vm_metadata();
        }
        Ok(Built {
            op: Operator::new(b).map_err(|e| bad_location(location, e))?,
            display: format!("gcs://{}/{}", url.authority, url.path),
            scheme: "gcs",
            secrets: Vec::new(),
        })
    }

    #[cfg(feature = "azblob")]
    pub(super) fn azblob(location: &str, url: &CloudUrl<'_>, creds: &mut Creds) -> Result<Built> {
        need_authority(location, url, "container")?;
        let mut b = match creds.secret("AZURE_STORAGE_CONNECTION_STRING") {
            Some(cs) => opendal::services::Azblob::from_connection_string(&cs).map_err(|_| {
                missing(
                    location,
                    "AZURE_STORAGE_CONNECTION_STRING is not a valid connection string",
                )
            })?,
            None => {
                let account = creds.get("AZURE_STORAGE_ACCOUNT");
                let endpoint = creds.get("AZURE_STORAGE_ENDPOINT").or_else(|| {
                    account
                        .as_ref()
                        .map(|a| format!("https://{a}.blob.core.windows.net"))
                });
                let Some(endpoint) = endpoint else {
                    return Err(missing(
                        location,
                        "set AZURE_STORAGE_ACCOUNT (and AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN), \
                         or AZURE_STORAGE_CONNECTION_STRING",
                    ));
                };
                let mut b = opendal::services::Azblob::default().endpoint(&endpoint);
                if let Some(a) = &account {
                    b = b.account_name(a);
                }
                if let Some(k) = creds.secret("AZURE_STORAGE_KEY") {
                    b = b.account_key(&k);
                }
                if let Some(s) = creds.secret("AZURE_STORAGE_SAS_TOKEN") {
                    b = b.sas_token(&s);
                }
                b
            }
        };
        b = b.container(url.authority).root(&url.root());
        Ok(Built {
            op: Operator::new(b).map_err(|e| bad_location(location, e))?,
            display: format!("azblob://{}/{}", url.authority, url.path),
            scheme: "azblob",
            secrets: Vec::new(),
        })
    }

    /// Google Drive, OneDrive and Dropbox: OAuth tokens from `CHATVAULT_<SERVICE>_…`.
    #[cfg(any(feature = "gdrive", feature = "onedrive", feature = "dropbox"))]
    pub(super) fn token_drive(
        location: &str,
        url: &CloudUrl<'_>,
        creds: &mut Creds,
        service: &'static str,
    ) -> Result<Built> {
        // gdrive://Backups/chat: the "authority" is the first folder.
        let path = [url.authority, url.path]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/");
        let root = if path.is_empty() {
            "/".to_string()
        } else {
            format!("/{path}/")
        };
        let up = service.to_ascii_uppercase();
        let access = creds.secret(&format!("CHATVAULT_{up}_ACCESS_TOKEN"));
        let refresh = creds.secret(&format!("CHATVAULT_{up}_REFRESH_TOKEN"));
        let client_id = creds.get(&format!("CHATVAULT_{up}_CLIENT_ID"));
        let client_secret = creds.secret(&format!("CHATVAULT_{up}_CLIENT_SECRET"));
        if access.is_none() && refresh.is_none() {
            return Err(missing(
                location,
                &format!(
                    "set CHATVAULT_{up}_REFRESH_TOKEN with CHATVAULT_{up}_CLIENT_ID and \
                     CHATVAULT_{up}_CLIENT_SECRET (or a short-lived CHATVAULT_{up}_ACCESS_TOKEN)"
                ),
            ));
        }
        if refresh.is_some() && (client_id.is_none() || client_secret.is_none()) {
            return Err(missing(
                location,
                &format!(
                    "CHATVAULT_{up}_REFRESH_TOKEN needs CHATVAULT_{up}_CLIENT_ID and CHATVAULT_{up}_CLIENT_SECRET"
                ),
            ));
        }
        macro_rules! oauth {
            ($b:expr) => {{
                let mut b = $b.root(&root);
                if let Some(t) = &access {
                    b = b.access_token(t);
                }
                if let Some(t) = &refresh {
                    b = b.refresh_token(t);
                }
                if let Some(c) = &client_id {
                    b = b.client_id(c);
                }
                if let Some(c) = &client_secret {
                    b = b.client_secret(c);
                }
                Operator::new(b).map_err(|e| bad_location(location, e))?
            }};
        }
        let op = match service {
            #[cfg(feature = "gdrive")]
            "gdrive" => oauth!(opendal::services::Gdrive::default()),
            #[cfg(feature = "onedrive")]
            "onedrive" => oauth!(opendal::services::Onedrive::default()),
            #[cfg(feature = "dropbox")]
            "dropbox" => oauth!(opendal::services::Dropbox::default()),
            _ => unreachable!("token_drive called for {service}"),
        };
        Ok(Built {
            op,
            display: format!("{service}://{path}"),
            scheme: service,
            secrets: Vec::new(),
        })
    }

    #[cfg(feature = "webdav")]
    pub(super) fn webdav(
        location: &str,
        scheme: &str,
        url: &CloudUrl<'_>,
        creds: &mut Creds,
    ) -> Result<Built> {
        need_authority(location, url, "host")?;
        let https = scheme == "webdav+https";
        let endpoint = format!(
            "{}://{}",
            if https { "https" } else { "http" },
            url.authority
        );
        let mut b = opendal::services::Webdav::default()
            .endpoint(&endpoint)
            .root(&url.root());
        if let Some(u) = creds.get("CHATVAULT_WEBDAV_USERNAME") {
            b = b.username(&u);
        }
        if let Some(p) = creds.secret("CHATVAULT_WEBDAV_PASSWORD") {
            if !https {
                let host = url
                    .authority
                    .rsplit_once(':')
                    .map_or(url.authority, |(h, _)| h);
                if !matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
                    tracing::warn!("webdav:// sends the password unencrypted; use webdav+https://");
                }
            }
            b = b.password(&p);
        }
        if let Some(t) = creds.secret("CHATVAULT_WEBDAV_TOKEN") {
            b = b.token(&t);
        }
        Ok(Built {
            op: Operator::new(b).map_err(|e| bad_location(location, e))?,
            display: format!("{scheme}://{}/{}", url.authority, url.path),
            scheme: "webdav",
            secrets: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(s.read_range("a", 0, 1).unwrap().unwrap(), b"x");
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
