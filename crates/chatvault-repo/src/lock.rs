//! Repository locks (docs/FORMAT.md §11).
//!
//! Every operation takes a *shared* lock; nothing needs an exclusive one today (prune is
//! two-phase, §15, and only excludes other prunes). A lock is an object under `locks/` that expires [`LOCK_TTL`] after it was
//! last refreshed, so a killed process never leaves a lock that blocks others for long: stale
//! locks are ignored, never trusted.

use std::time::{Duration, Instant};

use chatvault_format::id::LockId;
use chatvault_format::objects::{self, Lock, OBJECT_VERSION};
use rand_core::OsRng;

use crate::error::{RepoError, Result};
use crate::repository::{Repository, layout};

/// How long a lock stays valid without a refresh.
pub const LOCK_TTL: Duration = Duration::from_secs(30 * 60);
/// How often a holder refreshes its lock.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

/// A held lock; removed on drop.
pub struct LockGuard<'a> {
    repo: &'a Repository,
    id: LockId,
    lock: Lock,
    refreshed: Instant,
}

fn lock_path(id: &LockId) -> String {
    format!("{}{id}", layout::LOCKS)
}

/// The locks currently in the repository that have not expired.
pub fn live_locks(repo: &Repository) -> Result<Vec<(LockId, Lock)>> {
    let now = chrono::Utc::now();
    let mut out = Vec::new();
    for (id, _) in repo.list_ids::<LockId>(layout::LOCKS)? {
        let Some(bytes) = repo.storage.read(&lock_path(&id))? else {
            continue;
        };
        match objects::open_lock(repo.keys(), id.as_bytes(), &bytes) {
            Ok(l) => {
                let live = chrono::DateTime::parse_from_rfc3339(&l.expires)
                    .map(|t| t > now)
                    .unwrap_or(false);
                if live {
                    out.push((id, l));
                }
            }
            Err(e) => tracing::warn!(lock = %id.short(), error = %e, "ignoring unreadable lock"),
        }
    }
    Ok(out)
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

/// Takes a lock for `operation`. Fails if a conflicting live lock exists.
pub fn lock<'a>(repo: &'a Repository, operation: &str, exclusive: bool) -> Result<LockGuard<'a>> {
    let conflicts = |mine: Option<&LockId>| -> Result<Option<String>> {
        Ok(live_locks(repo)?
            .into_iter()
            .find(|(id, l)| Some(id) != mine && (exclusive || l.exclusive))
            .map(|(_, l)| describe(&l)))
    };
    if let Some(c) = conflicts(None)? {
        return Err(RepoError::Locked(c));
    }
    let id = LockId::random(&mut OsRng);
    let lock = new_lock(operation, exclusive);
    let sealed = objects::seal_lock(repo.keys(), id.as_bytes(), &lock, &mut OsRng);
    repo.storage.write_new(&lock_path(&id), sealed)?;
    let guard = LockGuard {
        repo,
        id,
        lock,
        refreshed: Instant::now(),
    };
    // Re-check after writing: of two racing exclusive lockers at least one sees the other.
    if let Some(c) = conflicts(Some(&guard.id))? {
        drop(guard);
        return Err(RepoError::Locked(c));
    }
    Ok(guard)
}

fn new_lock(operation: &str, exclusive: bool) -> Lock {
    let now = chrono::Utc::now();
    Lock {
        version: OBJECT_VERSION,
        hostname: gethostname::gethostname().to_string_lossy().into_owned(),
        pid: std::process::id(),
        operation: operation.to_string(),
        exclusive,
        time: now.to_rfc3339(),
        expires: (now + chrono::Duration::from_std(LOCK_TTL).expect("small")).to_rfc3339(),
    }
}

impl LockGuard<'_> {
    /// Refreshes the lock if [`REFRESH_EVERY`] has passed: writes a new lock object, then
    /// removes the old one (objects are write-once).
    pub fn refresh_if_due(&mut self) -> Result<()> {
        if self.refreshed.elapsed() < REFRESH_EVERY {
            return Ok(());
        }
        let id = LockId::random(&mut OsRng);
        let mut lock = new_lock(&self.lock.operation, self.lock.exclusive);
        // `time` stays the start of the operation: a prune sweep compares it with its plan.
        lock.time = self.lock.time.clone();
        let sealed = objects::seal_lock(self.repo.keys(), id.as_bytes(), &lock, &mut OsRng);
        self.repo.storage.write_new(&lock_path(&id), sealed)?;
        let old = std::mem::replace(&mut self.id, id);
        self.lock = lock;
        self.refreshed = Instant::now();
        self.repo.storage.delete(&lock_path(&old))
    }
}

impl LockGuard<'_> {
    /// Fails if this lock has expired by the wall clock (for example because the machine slept
    /// past [`LOCK_TTL`] without a refresh): others may have treated it as stale.
    pub fn ensure_live(&self) -> Result<()> {
        let live = chrono::DateTime::parse_from_rfc3339(&self.lock.expires)
            .map(|t| t > chrono::Utc::now())
            .unwrap_or(false);
        if live {
            Ok(())
        } else {
            Err(RepoError::Locked(format!(
                "this {}'s own lock expired at {} (was the machine asleep?); nothing was \
                 published, run it again",
                self.lock.operation, self.lock.expires
            )))
        }
    }

    /// When the operation holding this lock started (RFC 3339).
    pub fn started(&self) -> &str {
        &self.lock.time
    }

    /// The id of this lock object.
    pub fn id(&self) -> &LockId {
        &self.id
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.repo.storage.delete(&lock_path(&self.id)) {
            tracing::warn!(error = %e, "could not remove lock; it expires by itself");
        }
    }
}
