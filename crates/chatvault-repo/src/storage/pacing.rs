//! Bandwidth limits and transfer counts of one [`Storage`]: a token bucket per direction
//! ([`Limits`], set with [`Storage::set_limits`]) and the requests and bytes it moved
//! ([`TransferStats`], from [`Storage::transfers`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[allow(unused_imports)] // doc links
use super::Storage;

/// Bandwidth limits of a [`Storage`], in bytes per second (`None`: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes per second read from storage (pack data, metadata).
    pub download: Option<u64>,
    /// Most bytes per second written to storage.
    pub upload: Option<u64>,
}

/// Requests made and bytes moved by one [`Storage`] since it was opened (all clones share them;
/// [`stats`](super::stats()) counts operations of the whole process).
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
pub(super) struct Transfers {
    pub(super) read_requests: AtomicU64,
    pub(super) read_bytes: AtomicU64,
    pub(super) write_requests: AtomicU64,
    pub(super) written_bytes: AtomicU64,
}

impl Transfers {
    pub(super) fn read(&self, n: usize) {
        self.read_requests.fetch_add(1, Ordering::Relaxed);
        self.read_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Bytes received by a request already counted (a streamed ranged read).
    pub(super) fn received(&self, n: usize) {
        self.read_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub(super) fn wrote(&self, n: usize) {
        self.write_requests.fetch_add(1, Ordering::Relaxed);
        self.written_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// A token bucket in its "virtual scheduling" form (GCRA): each transfer of `n` bytes moves a
/// theoretical arrival time `tat` forward by `n / rate`; a transfer waits until `tat` is at most
/// [`PACER_BURST`] ahead of now. Over any interval the bytes admitted are at most
/// `rate · interval + burst`, and a steady stream of requests is admitted at exactly `rate`.
#[derive(Default)]
pub(super) struct Pacer {
    /// Bytes per second; 0 = unlimited.
    rate: AtomicU64,
    tat: std::sync::Mutex<Option<Instant>>,
}

/// Bytes a paced transfer may run ahead of its rate (the bucket's depth), and the pieces a
/// paced ranged read is split into at most: a quarter second of the rate, at least
/// [`PACER_MIN_PIECE`].
pub(super) const PACER_BURST: Duration = Duration::from_millis(250);
pub(super) const PACER_MIN_PIECE: u64 = 64 << 10;

impl Pacer {
    pub(super) fn set(&self, rate: Option<u64>) {
        self.rate.store(rate.unwrap_or(0), Ordering::Relaxed);
        *self.tat.lock().expect("pacer") = None;
    }

    pub(super) fn rate(&self) -> Option<u64> {
        Some(self.rate.load(Ordering::Relaxed)).filter(|r| *r > 0)
    }

    /// How long a transfer of `n` bytes must wait before it starts (and books it).
    pub(super) fn admit(&self, n: u64) -> Option<Duration> {
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
    pub(super) fn piece(&self) -> Option<u64> {
        self.rate().map(|r| (r / 4).max(PACER_MIN_PIECE))
    }

    pub(super) async fn take(&self, n: u64) {
        if let Some(d) = self.admit(n) {
            tokio::time::sleep(d).await;
        }
    }
}
