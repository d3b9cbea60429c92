//! Progress and cancellation: the observer every long run (backup, restore, check) reports to.
//!
//! An app shows a progress bar, opens its chats when a restore's messages are ready and lets
//! the user cancel, through one trait. Implementations must be cheap and must not block: the
//! engine calls them per chunk from its worker threads. Nothing here does I/O.

use std::path::Path;

/// Receives progress events. Implementations must be cheap; they are called per chunk.
pub trait Progress: Sync {
    /// A file is about to be read.
    fn file(&self, _path: &Path) {}
    /// `n` more bytes of file content were processed (read or reused).
    fn bytes(&self, _n: u64) {}
    /// Something was skipped or is suspicious; the run goes on.
    fn warn(&self, _message: &str) {}
    /// A restore's milestone (files placed, messages ready, …): the observer hook an app uses
    /// to open its chats before the media is back.
    fn restore_event(&self, _event: &crate::restore::RestoreEvent) {}
    /// Whether the caller asked the run to stop. A backup checks it before every file and every
    /// blob and stops with [`crate::RepoError::Cancelled`] before its snapshot is written (packs
    /// already stored are indexed, as after a killed run, so the next run reuses them); a
    /// restore checks it between batches of files.
    fn cancelled(&self) -> bool {
        false
    }
}

/// A [`Progress`] that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}
