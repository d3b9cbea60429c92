//! Process-wide storage request counters ([`stats`]): cheap atomic additions on every
//! operation, HTTP request, part upload and retry, and how each opened backend writes.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

#[allow(unused_imports)] // doc links
use super::Storage;

/// Process-wide request counters (see [`stats`]).
pub(super) struct Counters {
    pub(super) reads: AtomicU64,
    pub(super) ranged_reads: AtomicU64,
    pub(super) writes: AtomicU64,
    pub(super) stats: AtomicU64,
    pub(super) lists: AtomicU64,
    pub(super) deletes: AtomicU64,
    pub(super) retries: AtomicU64,
    /// HTTP requests by method, in [`HTTP_METHODS`] order (the last slot: any other method).
    pub(super) http: [AtomicU64; HTTP_METHODS.len() + 1],
    /// HTTP requests that upload one part of a larger object.
    pub(super) part_uploads: AtomicU64,
}

pub(super) const HTTP_METHODS: [&str; 7] =
    ["GET", "HEAD", "PUT", "POST", "DELETE", "PROPFIND", "MKCOL"];

pub(super) static COUNTERS: Counters = Counters {
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

pub(super) fn count(c: &AtomicU64) {
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

pub(super) static BACKENDS: std::sync::Mutex<BTreeMap<String, BackendWrites>> =
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
