//! Repository locks (docs/FORMAT.md §11).
//!
//! Every operation takes a *shared* lock; nothing needs an exclusive one today (prune is
//! two-phase, §15, and only excludes other prunes). A lock is an object under `locks/` that
//! others treat as stale once [`LOCK_TTL`] has passed since it was written, so a killed process
//! never blocks others for long: stale locks are ignored, never trusted. A lock must therefore
//! not lie in either direction:
//!
//! - **Holding.** A [`LockGuard`] refreshes its lock from a background thread every
//!   [`REFRESH_EVERY`] (a new lock object, then the old one is deleted). It counts its lock live
//!   only until [`LOCK_TTL`] − [`SAFETY_MARGIN`] after the start of its last successful write,
//!   measured pessimistically on this process's clocks: the longer of the monotonic clock (which
//!   stops while a Linux or macOS machine sleeps) and the wall clock (which does not, but can be
//!   set). Past that deadline the lock is *lost* for good: no refresh revives it, and
//!   [`LockGuard::ensure_live`] fails from then on with [`RepoError::LockLost`].
//! - **Publishing.** Index objects, snapshots and prune plans are written with
//!   [`LockGuard::write_new`] (or a [`Liveness`] handle on other threads): it checks the lock and
//!   cuts the write off at the deadline, so nothing lands after another device may have judged
//!   the lock stale.
//! - **Judging others.** [`LockGuard::live_locks`] judges locks by storage time: a lock object is
//!   stale once *storage now* is [`LOCK_TTL`] past its `last_modified`. Storage now is the
//!   `last_modified` of this guard's latest lock object plus the monotonic time since that write
//!   ended, which never runs ahead of the storage clock. The `expires` field (written by a device
//!   whose clock may be wrong) is used only when the backend reports no times.
//!
//! ```no_run
//! # fn demo(repo: &chatvault_repo::repository::Repository) -> chatvault_repo::Result<()> {
//! let guard = chatvault_repo::lock::lock(repo, "backup", false)?;
//! // … long work; the lock refreshes itself …
//! guard.write_new("index/…", b"sealed".to_vec())?; // fails if the lock was lost
//! # Ok(()) }
//! ```

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use chatvault_format::id::LockId;
use chatvault_format::key::RepoKeys;
use chatvault_format::objects::{self, Lock, OBJECT_VERSION};
use chrono::{DateTime, TimeDelta, Utc};
use rand_core::OsRng;

use crate::error::{RepoError, Result};
use crate::repository::{Repository, layout};
use crate::storage::{Listed, Storage};

/// How long a lock object stays valid, by storage time, after it was written.
pub const LOCK_TTL: Duration = Duration::from_secs(30 * 60);
/// How often a holder refreshes its lock.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
/// How long before [`LOCK_TTL`] a holder stops trusting its own lock. Every write made under the
/// lock is cut off by then (retries included), so the margin only has to cover what cutting off
/// cannot: a request the service had already accepted (seconds), S3's one-second `Last-Modified`
/// resolution, and clocks running at slightly different rates (well under a second per hour).
pub const SAFETY_MARGIN: Duration = Duration::from_secs(2 * 60);

/// Lock timing. The defaults are the protocol's constants; other devices judge every lock with
/// [`LOCK_TTL`], so only tests change them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LockConfig {
    /// [`LOCK_TTL`].
    pub(crate) ttl: Duration,
    /// [`REFRESH_EVERY`].
    pub(crate) refresh_every: Duration,
    /// [`SAFETY_MARGIN`].
    pub(crate) margin: Duration,
}

impl Default for LockConfig {
    fn default() -> Self {
        LockConfig {
            ttl: LOCK_TTL,
            refresh_every: REFRESH_EVERY,
            margin: SAFETY_MARGIN,
        }
    }
}

impl LockConfig {
    /// How long after the start of its last successful write a holder counts its lock live.
    fn live_for(&self) -> Duration {
        self.ttl.saturating_sub(self.margin)
    }

    /// How soon a failed refresh is retried.
    fn retry_after(&self) -> Duration {
        self.refresh_every / 5
    }
}

/// A moment on this process's clocks.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    mono: Instant,
    wall: SystemTime,
}

impl Stamp {
    fn now() -> Stamp {
        Stamp {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// Time since this stamp by whichever clock says more: the monotonic clock does not count
    /// sleep (Linux `CLOCK_MONOTONIC`, macOS), the wall clock does but can be set back.
    fn elapsed_longest(&self) -> Duration {
        let wall = SystemTime::now()
            .duration_since(self.wall)
            .unwrap_or(Duration::ZERO);
        self.mono.elapsed().max(wall)
    }
}

/// The storage service's clock, learned from one of this guard's lock objects.
#[derive(Debug, Clone, Copy)]
struct StorageClock {
    /// The object's `last_modified`.
    at: DateTime<Utc>,
    /// When its write had returned.
    seen: Instant,
}

impl StorageClock {
    /// Storage time now, never ahead of the truth: the object's time is paired with the end of
    /// its write, and the monotonic clock does not count sleep. Lagging only makes other locks
    /// look younger (honoured longer) and unindexed packs younger (kept longer).
    fn now(&self) -> DateTime<Utc> {
        let since = TimeDelta::from_std(self.seen.elapsed()).unwrap_or(TimeDelta::zero());
        self.at.checked_add_signed(since).unwrap_or(self.at)
    }
}

/// A live lock found in the repository.
#[derive(Debug, Clone)]
pub struct LiveLock {
    /// The lock object's id.
    pub id: LockId,
    /// Its contents.
    pub lock: Lock,
    /// When the operation started, by the storage clock (see [`LiveLock::started_by_storage`]);
    /// `None` if the backend reports no times.
    pub started_by_storage: Option<DateTime<Utc>>,
}

impl LiveLock {
    fn started(lock: &Lock, last_modified: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
        // `expires` − TTL is the holder's clock at its last refresh, `time` its clock at the
        // start: their difference is how long it had run, whatever its clock's offset. The
        // refresh reached storage at `last_modified`. Nonsense (unparsable fields, a clock set
        // back) counts as "started at the beginning of time", which postpones every sweep.
        let parse = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc));
        let ran = match (parse(&lock.expires), parse(&lock.time)) {
            (Ok(e), Ok(t)) => TimeDelta::from_std(ttl)
                .ok()
                .and_then(|ttl| e.checked_sub_signed(ttl))
                .map(|refreshed| refreshed.signed_duration_since(t)),
            _ => None,
        };
        match ran {
            Some(ran) if ran >= TimeDelta::zero() => last_modified
                .checked_sub_signed(ran)
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            _ => DateTime::<Utc>::MIN_UTC,
        }
    }
}

/// What a guard knows about its lock; changed only under [`Inner::state`].
struct State {
    /// The current lock object.
    id: LockId,
    /// When the write of the current lock object started.
    refreshed: Stamp,
    /// Why the lock was lost. Once set, never cleared.
    lost: Option<String>,
    /// The last refresh failure since the last success.
    last_failure: Option<String>,
    /// Storage time, if the backend reports it.
    clock: Option<StorageClock>,
    /// The current lock object as written (`None` until the first is): listing the live locks
    /// does not read it back.
    object: Option<Lock>,
}

struct Inner {
    cfg: LockConfig,
    storage: Storage,
    keys: Arc<RepoKeys>,
    operation: String,
    exclusive: bool,
    /// When the operation started (RFC 3339, this device's clock); every lock object keeps it.
    started: String,
    state: Mutex<State>,
    /// Serializes refreshes (the timer thread and [`LockGuard::refresh_if_due`]).
    refreshing: Mutex<()>,
}

fn lock_path(id: &LockId) -> String {
    format!("{}{id}", layout::LOCKS)
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}.{:03}s", s, d.subsec_millis())
    }
}

/// The outcome of writing one lock object.
struct Written {
    id: LockId,
    /// What was written.
    lock: Lock,
    /// Taken just before the write started.
    started: Stamp,
    clock: Option<StorageClock>,
    /// When the write had returned (pairs with the object's time in a listing).
    seen: Instant,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lost(&self, reason: impl Into<String>) -> RepoError {
        RepoError::LockLost {
            operation: self.operation.clone(),
            reason: reason.into(),
        }
    }

    /// Time left before the deadline. Past it, marks the lock lost (for good) and fails.
    fn remaining(&self) -> Result<Duration> {
        let mut s = self.state();
        if let Some(why) = &s.lost {
            return Err(self.lost(why.clone()));
        }
        let since = s.refreshed.elapsed_longest();
        if since < self.cfg.live_for() {
            return Ok(self.cfg.live_for() - since);
        }
        let hint = match &s.last_failure {
            Some(f) => format!("last refresh failure: {f}"),
            None => "was the machine asleep?".into(),
        };
        let why = format!(
            "no refresh reached storage for {} ({hint}), so other devices may treat it as \
             stale; nothing was published after that",
            human(since)
        );
        tracing::error!(operation = %self.operation, reason = %why, "repository lock lost");
        s.lost = Some(why.clone());
        Err(self.lost(why))
    }

    fn mark_lost(&self, why: &str) -> RepoError {
        let mut s = self.state();
        if s.lost.is_none() {
            tracing::error!(operation = %self.operation, reason = %why, "repository lock lost");
            s.lost = Some(why.to_string());
        }
        self.lost(why)
    }

    fn lock_object(&self) -> Lock {
        let now = Utc::now();
        let ttl = TimeDelta::from_std(self.cfg.ttl).unwrap_or(TimeDelta::MAX);
        Lock {
            version: OBJECT_VERSION,
            hostname: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
            operation: self.operation.clone(),
            exclusive: self.exclusive,
            // The start of the operation, kept by every refresh: a sweep compares it with its
            // plan (§15).
            time: self.started.clone(),
            expires: now
                .checked_add_signed(ttl)
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
                .to_rfc3339(),
        }
    }

    /// Writes a new lock object, giving up after `limit` (`Ok(None)`), and learns the storage
    /// clock from it (`ask_time`: with a request for its time; else the caller learns it from
    /// a listing, with [`Written::seen`]).
    fn write_lock_object(&self, limit: Duration, ask_time: bool) -> Result<Option<Written>> {
        let id = LockId::random(&mut OsRng);
        let lock = self.lock_object();
        let sealed = objects::seal_lock(&self.keys, id.as_bytes(), &lock, &mut OsRng);
        let written = lock.clone();
        let path = lock_path(&id);
        let started = Stamp::now();
        if self
            .storage
            .write_new_within_volatile(&path, sealed, limit)?
            .is_none()
        {
            return Ok(None);
        }
        let seen = Instant::now();
        let clock = if ask_time {
            self.object_clock(&id, seen)
        } else {
            None
        };
        Ok(Some(Written {
            id,
            lock: written,
            started,
            clock,
            seen,
        }))
    }

    /// The storage clock learned from lock object `id`, written by `seen`: its time, asked for.
    fn object_clock(&self, id: &LockId, seen: Instant) -> Option<StorageClock> {
        match self.storage.last_modified(&lock_path(id)) {
            Ok(t) => t.map(|at| StorageClock { at, seen }),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the time of the new lock object");
                None
            }
        }
    }

    /// Writes a new lock object and deletes the old one, if a refresh is due. If another
    /// refresh is in flight, waits for it (`wait`) or returns at once. Never revives a lost
    /// lock: a refresh starts only before the deadline and must land before it.
    fn refresh(&self, wait: bool) -> Result<()> {
        let _one = if wait {
            self.refreshing
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        } else {
            match self.refreshing.try_lock() {
                Ok(g) => g,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return self.remaining().map(drop),
            }
        };
        let left = self.remaining()?;
        if self.until_due() > Duration::ZERO {
            return Ok(());
        }
        let old = self.state().id;
        let w = match self.write_lock_object(left, true) {
            Ok(Some(w)) => w,
            Ok(None) => {
                return Err(self.mark_lost(
                    "its refresh did not reach storage before the lock's deadline; nothing was \
                     published after that",
                ));
            }
            Err(e) => {
                self.state().last_failure = Some(e.to_string());
                return Err(e);
            }
        };
        // The new object must have landed before the old one could be judged stale (a sleep
        // mid-request shows here); otherwise it must not make a lost lock look live.
        if let Err(e) = self.remaining() {
            if let Err(d) = self.storage.delete(&lock_path(&w.id)) {
                tracing::warn!(error = %d, "could not remove a late lock object; it expires by itself");
            }
            return Err(e);
        }
        {
            let mut s = self.state();
            s.id = w.id;
            s.object = Some(w.lock);
            s.refreshed = w.started;
            s.last_failure = None;
            if w.clock.is_some() {
                s.clock = w.clock;
            }
        }
        tracing::debug!(lock = %w.id.short(), "lock refreshed");
        if let Err(e) = self.storage.delete(&lock_path(&old)) {
            tracing::warn!(error = %e, "could not remove the previous lock object; it expires by itself");
        }
        Ok(())
    }

    /// How long until the next refresh is due (zero: due).
    fn until_due(&self) -> Duration {
        let since = self.state().refreshed.elapsed_longest();
        self.cfg.refresh_every.saturating_sub(since)
    }

    /// Writes a new object only while the lock is live, and gives up at the lock's deadline.
    fn write_new(&self, path: &str, bytes: Vec<u8>) -> Result<bool> {
        let left = self.remaining()?;
        let Some(written) = self.storage.write_new_within(path, bytes, left)? else {
            return Err(self.mark_lost(&format!(
                "writing {path} did not finish before the lock's deadline and was abandoned; \
                 nothing was published after that"
            )));
        };
        if self.remaining().is_err() {
            // Only a sleep in the middle of the request gets here: the write was cut off by the
            // monotonic clock, which does not count sleep.
            return Err(self.lost(format!(
                "{path} may have been stored after the lock lapsed (did the machine sleep \
                 mid-write?); nothing else was published; run `chatvault check`"
            )));
        }
        Ok(written)
    }
}

/// A held lock; refreshed by a background thread, removed on drop.
pub struct LockGuard<'a> {
    repo: &'a Repository,
    inner: Arc<Inner>,
    /// Dropping it stops the refresher.
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.inner.state();
        f.debug_struct("LockGuard")
            .field("id", &s.id.short())
            .field("operation", &self.inner.operation)
            .field("lost", &s.lost)
            .finish_non_exhaustive()
    }
}

fn describe(l: &Lock) -> String {
    format!(
        "{} lock held by {} (pid {}) for {} since {}; it expires at {} unless refreshed",
        if l.exclusive {
            "an exclusive"
        } else {
            "a shared"
        },
        l.hostname,
        l.pid,
        l.operation,
        l.time,
        l.expires
    )
}

/// Takes a lock for `operation` and starts refreshing it. Fails if a conflicting live lock
/// exists: the lock object is written first, then the others are listed (so of two racing
/// exclusive lockers at least one sees the other, and the listing is judged by storage time).
pub fn lock<'a>(repo: &'a Repository, operation: &str, exclusive: bool) -> Result<LockGuard<'a>> {
    lock_while(repo, operation, exclusive, || Ok(())).map(|(guard, ())| guard)
}

/// [`lock`], running `alongside` on another thread once the lock object is written, while the
/// other locks are listed and judged: one storage round trip less for a caller whose next step
/// needs the lock in place but not that judgement (restore loads the index meanwhile; on a
/// phone's link every round trip delays *messages ready*). When the lock is refused, or the
/// listing fails, that error is returned and what `alongside` produced is dropped.
pub fn lock_while<'a, T: Send>(
    repo: &'a Repository,
    operation: &str,
    exclusive: bool,
    alongside: impl FnOnce() -> Result<T> + Send,
) -> Result<(LockGuard<'a>, T)> {
    let cfg = repo.lock_config;
    let inner = Inner {
        cfg,
        storage: repo.storage.clone(),
        keys: Arc::clone(&repo.keys),
        operation: operation.to_string(),
        exclusive,
        started: Utc::now().to_rfc3339(),
        state: Mutex::new(State {
            // Placeholders until the first lock object is written, below.
            id: LockId::random(&mut OsRng),
            refreshed: Stamp::now(),
            lost: None,
            last_failure: None,
            clock: None,
            object: None,
        }),
        refreshing: Mutex::new(()),
    };
    // No deadline yet: the first write may take as long as the storage layer allows; if it took
    // longer than the lock lives, the lock is lost at once. Its time comes with the listing of
    // the locks below (one round trip less than asking for it), or is asked for if the listing
    // has none.
    let w = inner
        .write_lock_object(Duration::MAX, false)?
        .ok_or_else(|| RepoError::Invalid("writing the lock object never finished".into()))?;
    let seen = w.seen;
    {
        let mut s = inner.state();
        s.id = w.id;
        s.object = Some(w.lock);
        s.refreshed = w.started;
        s.clock = w.clock;
    }
    let mut guard = LockGuard {
        repo,
        inner: Arc::new(inner),
        stop: None,
        refresher: None,
    };
    let mine = guard.id();
    let (listed, along) = std::thread::scope(|s| {
        let along = s.spawn(alongside);
        let listed = guard.list_locks();
        (
            listed,
            along
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        )
    });
    let listed = listed?;
    let clock = match listed.iter().find(|(id, _)| *id == mine) {
        Some((_, l)) if l.last_modified.is_some() => {
            l.last_modified.map(|at| StorageClock { at, seen })
        }
        _ => guard.inner.object_clock(&mine, seen),
    };
    guard.inner.state().clock = clock;
    if let Some(c) = guard
        .judge_locks(listed)?
        .into_iter()
        .find(|l| l.id != mine && (exclusive || l.lock.exclusive))
    {
        return Err(RepoError::Locked(describe(&c.lock)));
    }
    let (tx, rx) = mpsc::channel();
    let inner = Arc::clone(&guard.inner);
    let handle = std::thread::Builder::new()
        .name("chatvault-lock".into())
        .spawn(move || refresher(&inner, &rx))
        .map_err(|e| {
            RepoError::io(
                "starting the lock refresher for",
                repo.storage.location(),
                e,
            )
        })?;
    guard.stop = Some(tx);
    guard.refresher = Some(handle);
    Ok((guard, along?))
}

/// The refresher thread: refreshes when due, retries failures sooner, stops when told to (the
/// guard is dropped) or when the lock is lost.
fn refresher(inner: &Inner, stop: &mpsc::Receiver<()>) {
    let mut wait = inner.until_due();
    loop {
        match stop.recv_timeout(wait.max(Duration::from_millis(1))) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        wait = match inner.refresh(true) {
            Ok(()) => inner.until_due(),
            Err(RepoError::LockLost { .. }) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not refresh the repository lock; retrying");
                inner.cfg.retry_after()
            }
        };
    }
}

impl LockGuard<'_> {
    /// Refreshes the lock now if a refresh is due and the background refresher is not already
    /// at it (it never waits for one). Fails once the lock is lost, so long loops stop early; a
    /// failed refresh is only logged while the lock is still live (it is retried).
    pub fn refresh_if_due(&self) -> Result<()> {
        match self.inner.refresh(false) {
            Ok(()) => Ok(()),
            Err(e @ RepoError::LockLost { .. }) => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "could not refresh the repository lock; retrying later");
                Ok(())
            }
        }
    }

    /// Fails with [`RepoError::LockLost`] if this lock is lost: its deadline ([`LOCK_TTL`] −
    /// [`SAFETY_MARGIN`] after the start of its last successful write) has passed, by the
    /// monotonic or the wall clock, whichever says more. Once lost, always lost.
    pub fn ensure_live(&self) -> Result<()> {
        self.inner.remaining().map(drop)
    }

    /// Writes a new object only while the lock is live, cut off at the lock's deadline (see the
    /// module documentation). `Ok(false)`: the object already existed.
    pub fn write_new(&self, path: &str, bytes: Vec<u8>) -> Result<bool> {
        self.inner.write_new(path, bytes)
    }

    /// A handle other threads use to check liveness and write under this lock.
    pub fn liveness(&self) -> Liveness {
        Liveness {
            inner: Arc::clone(&self.inner),
        }
    }

    /// When the operation holding this lock started (RFC 3339).
    pub fn started(&self) -> &str {
        &self.inner.started
    }

    /// The id of the current lock object (it changes with every refresh).
    pub fn id(&self) -> LockId {
        self.inner.state().id
    }

    /// Storage time now, learned from this guard's latest lock object; `None` if the backend
    /// reports no times. Never ahead of the storage service's clock.
    pub fn storage_now(&self) -> Option<DateTime<Utc>> {
        self.inner.state().clock.map(|c| c.now())
    }

    /// The lock's timing (crate-internal: prune derives the age of unindexed packs from it).
    pub(crate) fn config(&self) -> LockConfig {
        self.inner.cfg
    }

    /// The live locks in the repository, this guard's own included. A lock is live while
    /// storage now (see [`LockGuard::storage_now`]) is less than [`LOCK_TTL`] past the lock
    /// object's `last_modified`; only if the backend reports no times, while its `expires` is
    /// ahead of this device's clock. Unreadable locks are ignored.
    pub fn live_locks(&self) -> Result<Vec<LiveLock>> {
        let listed = self.list_locks()?;
        self.judge_locks(listed)
    }

    /// Fails with [`RepoError::Locked`] when another live lock's operation is one of
    /// `operations` (those that must not run at the same time as this one: prune and the
    /// repairs rewrite the index and delete packs); `then` ends the message ("try again when it
    /// has finished").
    pub(crate) fn refuse_beside(&self, operations: &[&str], then: &str) -> Result<()> {
        let mine = self.id();
        match self
            .live_locks()?
            .into_iter()
            .find(|l| l.id != mine && operations.contains(&l.lock.operation.as_str()))
        {
            Some(l) => Err(RepoError::Locked(format!(
                "a {} is running on {} (pid {}) since {}; {then}",
                l.lock.operation, l.lock.hostname, l.lock.pid, l.lock.time
            ))),
            None => Ok(()),
        }
    }

    /// The lock objects in the repository, with what the listing says of them.
    fn list_locks(&self) -> Result<Vec<(LockId, Listed)>> {
        let mut listed = Vec::new();
        for l in self.repo.storage.list(layout::LOCKS, false)? {
            match l.name.parse::<LockId>() {
                Ok(id) => listed.push((id, l)),
                Err(_) => tracing::warn!(name = %l.name, "ignoring unexpected object in locks/"),
            }
        }
        Ok(listed)
    }

    /// [`LockGuard::live_locks`] of a listing.
    fn judge_locks(&self, listed: Vec<(LockId, Listed)>) -> Result<Vec<LiveLock>> {
        let storage_now = self.storage_now();
        let wall_now = Utc::now();
        let ttl = TimeDelta::from_std(self.inner.cfg.ttl).unwrap_or(TimeDelta::MAX);
        // This guard's own lock is not read back; the others are read in parallel (stale locks
        // of killed runs on other devices must not cost a round trip each).
        let (mine, object) = {
            let s = self.inner.state();
            (s.id, s.object.clone())
        };
        let read = crate::repository::par_map(&listed, |(id, _)| -> Result<Option<Lock>> {
            if *id == mine
                && let Some(own) = &object
            {
                return Ok(Some(own.clone()));
            }
            let Some(bytes) = self.repo.storage.read(&lock_path(id))? else {
                return Ok(None);
            };
            match objects::open_lock(self.repo.keys(), id.as_bytes(), &bytes) {
                Ok(lock) => Ok(Some(lock)),
                Err(e) => {
                    tracing::warn!(lock = %id.short(), error = %e, "ignoring unreadable lock");
                    Ok(None)
                }
            }
        });
        let mut out = Vec::new();
        for ((id, l), lock) in listed.into_iter().zip(read) {
            let Some(lock) = lock? else {
                continue;
            };
            let live = match (l.last_modified, storage_now) {
                (Some(written), Some(now)) => written
                    .checked_add_signed(ttl)
                    .is_none_or(|stale_at| now < stale_at),
                _ => DateTime::parse_from_rfc3339(&lock.expires).is_ok_and(|t| t > wall_now),
            };
            if live {
                let started_by_storage = l
                    .last_modified
                    .map(|t| LiveLock::started(&lock, t, self.inner.cfg.ttl));
                out.push(LiveLock {
                    id,
                    lock,
                    started_by_storage,
                });
            }
        }
        Ok(out)
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.refresher.take()
            && t.join().is_err()
        {
            tracing::warn!("the lock refresher thread panicked");
        }
        let id = {
            let mut s = self.inner.state();
            if s.lost.is_none() {
                s.lost = Some("the lock was already released".into());
            }
            s.id
        };
        if let Err(e) = self.repo.storage.delete(&lock_path(&id)) {
            tracing::warn!(error = %e, "could not remove lock; it expires by itself");
        }
    }
}

/// A handle on a [`LockGuard`]'s liveness for other threads (the backup's uploaders): cheap to
/// clone; it can neither refresh nor release the lock.
#[derive(Clone)]
pub struct Liveness {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Liveness")
            .field("operation", &self.inner.operation)
            .field("lost", &self.inner.state().lost)
            .finish()
    }
}

impl Liveness {
    /// [`LockGuard::ensure_live`].
    pub fn ensure_live(&self) -> Result<()> {
        self.inner.remaining().map(drop)
    }

    /// [`LockGuard::write_new`].
    pub fn write_new(&self, path: &str, bytes: Vec<u8>) -> Result<bool> {
        self.inner.write_new(path, bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{File, FileTimes};

    use super::*;
    use crate::backup::{self, BackupOptions, NoProgress};
    use crate::storage::Storage;
    use chatvault_format::key::BackupKey;

    fn key() -> BackupKey {
        BackupKey::from_bytes([9; 32])
    }

    fn memory_repo(name: &str) -> Repository {
        Repository::init(Storage::open(&format!("memory://{name}")).unwrap(), &key()).unwrap()
    }

    /// A repository in a local folder: the fs backend reports modification times.
    fn fs_repo() -> (tempfile::TempDir, Repository) {
        let dir = tempfile::tempdir().unwrap();
        let repo =
            Repository::init(Storage::open(dir.path().to_str().unwrap()).unwrap(), &key()).unwrap();
        (dir, repo)
    }

    fn config(ttl_ms: u64, refresh_ms: u64, margin_ms: u64) -> LockConfig {
        LockConfig {
            ttl: Duration::from_millis(ttl_ms),
            refresh_every: Duration::from_millis(refresh_ms),
            margin: Duration::from_millis(margin_ms),
        }
    }

    fn lock_ids(repo: &Repository) -> Vec<LockId> {
        repo.list_ids::<LockId>(layout::LOCKS)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    fn assert_lost(r: Result<impl std::fmt::Debug>) {
        match r {
            Err(e @ RepoError::LockLost { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("lost its repository lock"), "{msg}");
                assert!(msg.contains("run it again"), "{msg}");
            }
            other => panic!("expected LockLost, got {other:?}"),
        }
    }

    /// Another device's lock object, written as that device would, with its file's time set to
    /// `age` ago (the fs backend's `last_modified`).
    fn foreign_lock(
        dir: &std::path::Path,
        repo: &Repository,
        exclusive: bool,
        time: DateTime<Utc>,
        expires: DateTime<Utc>,
        age: Duration,
    ) -> LockId {
        let id = LockId::random(&mut OsRng);
        let lock = Lock {
            version: OBJECT_VERSION,
            hostname: "other-phone".into(),
            pid: 42,
            operation: "backup".into(),
            exclusive,
            time: time.to_rfc3339(),
            expires: expires.to_rfc3339(),
        };
        let sealed = objects::seal_lock(repo.keys(), id.as_bytes(), &lock, &mut OsRng);
        assert!(repo.storage.write_new(&lock_path(&id), sealed).unwrap());
        let f = File::options()
            .write(true)
            .open(dir.join(lock_path(&id)))
            .unwrap();
        f.set_times(FileTimes::new().set_modified(SystemTime::now() - age))
            .unwrap();
        id
    }

    #[test]
    fn expired_lock_is_not_revived_and_stays_lost() {
        let mut r = memory_repo("lock-expired");
        // Lives 300 ms; the timer would refresh only after an hour.
        r.lock_config = config(300, 3_600_000, 0);
        let g = lock(&r, "backup", false).unwrap();
        let first = g.id();
        g.ensure_live().unwrap();
        std::thread::sleep(Duration::from_millis(400));
        // A refresh after the deadline writes nothing and fails; so does everything after it.
        assert_lost(g.refresh_if_due());
        assert_lost(g.ensure_live());
        assert_lost(g.liveness().ensure_live());
        assert_lost(g.write_new("index/not-published", b"x".to_vec()));
        assert_lost(
            g.liveness()
                .write_new("snapshots/not-published", b"x".to_vec()),
        );
        assert_eq!(lock_ids(&r), vec![first]);
        assert_eq!(r.storage.read("index/not-published").unwrap(), None);
        assert_eq!(r.storage.read("snapshots/not-published").unwrap(), None);
        drop(g);
        assert!(lock_ids(&r).is_empty());
    }

    #[test]
    fn timer_does_not_revive_a_lock_past_its_deadline() {
        let mut r = memory_repo("lock-timer-lost");
        // The deadline (TTL − margin) has passed at once; the timer fires every 10 ms.
        r.lock_config = config(1_000, 10, 1_000);
        let g = lock(&r, "backup", false).unwrap();
        let first = g.id();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(lock_ids(&r), vec![first], "no refresh after the deadline");
        assert_lost(g.ensure_live());
    }

    #[test]
    fn timer_refreshes_without_the_caller() {
        let mut r = memory_repo("lock-timer");
        r.lock_config = config(60_000, 20, 10_000);
        let g = lock(&r, "backup", false).unwrap();
        let first = g.id();
        let deadline = Instant::now() + Duration::from_secs(20);
        // Two refreshes, each replacing the previous lock object.
        let mut seen = vec![first];
        while seen.len() < 3 {
            assert!(
                Instant::now() < deadline,
                "the lock was not refreshed: {seen:?}"
            );
            let now = g.id();
            if !seen.contains(&now) {
                seen.push(now);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        g.ensure_live().unwrap();
        let ids = lock_ids(&r);
        assert!(!ids.contains(&first), "old lock object kept: {ids:?}");
        assert!(ids.len() <= 2, "{ids:?}");
        drop(g);
        assert!(lock_ids(&r).is_empty());
    }

    #[test]
    fn backup_with_a_lost_lock_publishes_no_index_and_no_snapshot() {
        let mut r = memory_repo("lock-lost-backup");
        // Lost as soon as it is taken.
        r.lock_config = config(1_000, 3_600_000, 1_000);
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("chat.txt"), vec![7u8; 300_000]).unwrap();
        let e = backup::backup(
            &r,
            &[src.path().to_path_buf()],
            &BackupOptions::default(),
            &NoProgress,
        );
        assert_lost(e);
        assert!(r.storage.list(layout::INDEX, false).unwrap().is_empty());
        assert!(r.storage.list(layout::SNAPSHOTS, false).unwrap().is_empty());
        assert!(lock_ids(&r).is_empty());
    }

    #[test]
    fn a_lock_stale_by_storage_time_is_ignored_whatever_its_expires_says() {
        let (dir, r) = fs_repo();
        let now = Utc::now();
        // Its device's clock is a year ahead: `expires` far in the future. By storage time it
        // was last written 31 minutes ago: stale.
        let year = TimeDelta::days(365);
        let stale = foreign_lock(
            dir.path(),
            &r,
            true,
            now + year,
            now + year,
            Duration::from_secs(31 * 60),
        );
        let g = lock(&r, "prune", true).unwrap();
        assert!(g.storage_now().is_some());
        let live: Vec<LockId> = g.live_locks().unwrap().into_iter().map(|l| l.id).collect();
        assert_eq!(live, vec![g.id()], "stale lock {stale:?} honoured");
    }

    #[test]
    fn a_lock_fresh_by_storage_time_is_honoured_whatever_its_expires_says() {
        let (dir, r) = fs_repo();
        let now = Utc::now();
        // Its device's clock is a year behind: `expires` long past. By storage time it was
        // written a minute ago: live, and exclusive.
        let year = TimeDelta::days(365);
        let fresh = foreign_lock(
            dir.path(),
            &r,
            true,
            now - year,
            now - year,
            Duration::from_secs(60),
        );
        match lock(&r, "check", false) {
            Err(RepoError::Locked(m)) => assert!(m.contains("other-phone"), "{m}"),
            other => panic!("expected Locked, got {other:?}"),
        }
        // The refused locker removed its own lock object.
        assert_eq!(lock_ids(&r), vec![fresh]);
    }

    #[test]
    fn without_storage_times_the_expires_field_decides() {
        let r = memory_repo("lock-no-times");
        let now = Utc::now();
        let mut ids = Vec::new();
        for expires in [now + TimeDelta::minutes(10), now - TimeDelta::minutes(10)] {
            let id = LockId::random(&mut OsRng);
            let l = Lock {
                version: OBJECT_VERSION,
                hostname: "other".into(),
                pid: 1,
                operation: "backup".into(),
                exclusive: false,
                time: now.to_rfc3339(),
                expires: expires.to_rfc3339(),
            };
            let sealed = objects::seal_lock(r.keys(), id.as_bytes(), &l, &mut OsRng);
            r.storage.write_new(&lock_path(&id), sealed).unwrap();
            ids.push(id);
        }
        let g = lock(&r, "check", false).unwrap();
        assert!(g.storage_now().is_none());
        let mut live: Vec<LockId> = g.live_locks().unwrap().into_iter().map(|l| l.id).collect();
        live.sort();
        let mut want = vec![ids[0], g.id()];
        want.sort();
        assert_eq!(live, want);
    }

    #[test]
    fn start_by_storage_time_cancels_the_holders_clock_offset() {
        // A holder whose clock is an hour ahead started 20 minutes before its last refresh,
        // which storage stamped at `written`.
        let ttl = LOCK_TTL;
        let off = TimeDelta::hours(1);
        let written = Utc::now();
        let start_own_clock = written + off - TimeDelta::minutes(20);
        let refresh_own_clock = written + off;
        let l = Lock {
            version: OBJECT_VERSION,
            hostname: "h".into(),
            pid: 1,
            operation: "backup".into(),
            exclusive: false,
            time: start_own_clock.to_rfc3339(),
            expires: (refresh_own_clock + TimeDelta::from_std(ttl).unwrap()).to_rfc3339(),
        };
        let started = LiveLock::started(&l, written, ttl);
        assert!((started - (written - TimeDelta::minutes(20))).abs() < TimeDelta::seconds(1));
        // Nonsense (refreshed before it started) counts as "started at the beginning of time".
        let bad = Lock {
            expires: start_own_clock.to_rfc3339(),
            ..l
        };
        assert_eq!(
            LiveLock::started(&bad, written, ttl),
            DateTime::<Utc>::MIN_UTC
        );
    }
}
