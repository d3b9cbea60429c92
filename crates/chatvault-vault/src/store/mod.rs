//! Record stores (PROTOCOL.md §5). Every method is **one atomic conditional statement** (or one
//! transaction) mirroring a pure transition of `chatvault_vault_core::GuessCounter` /
//! `AccountState`, so that any number of vault processes may share one database.

mod pgtls;
mod postgres;
mod sqlite;

use std::future::Future;

use chatvault_vault_core::{AccountId, AccountState, GuessCounter, NewRecord};

pub use pgtls::{PgSslMode, PgTlsError, RustlsConnect, RustlsConnector, RustlsStream};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::error::Result;

/// Row status values (PROTOCOL.md §5).
pub(crate) const STATUS_NONE: i64 = 0;
pub(crate) const STATUS_REGISTERED: i64 = 1;
pub(crate) const STATUS_DESTROYED: i64 = 2;
/// Schema version written by this build. The rollback-commitment columns (`commitment_seq`,
/// `commitment`) are an additive migration within version 1: older builds ignore them.
pub(crate) const SCHEMA_VERSION: &str = "1";

/// Storage of per-account rows.
pub trait Store: Send + Sync + 'static {
    /// The account's state; `NoRecord { generation: 0 }` if there is no row.
    fn load(&self, account: &AccountId) -> impl Future<Output = Result<AccountState>> + Send;

    /// Counts one guess (PROTOCOL.md §6.1): `attempts += 1, guess_seq += 1` if the row is a live
    /// record of `generation` with `attempts < max_attempts`. Returns the counter after the
    /// increment, or `None` if nothing matched (exhausted, destroyed or re-registered).
    fn count_guess(
        &self,
        account: &AccountId,
        generation: u64,
        now: u64,
    ) -> impl Future<Output = Result<Option<GuessCounter>>> + Send;

    /// Destroys the live record of `generation` if it is exhausted (PROTOCOL.md §6.4): erases the
    /// sealed record and keeps a tombstone. Returns whether this call destroyed it.
    fn destroy_exhausted(
        &self,
        account: &AccountId,
        generation: u64,
        now: u64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Applies a verified KE3 (PROTOCOL.md §6.3): `attempts = 0, success_floor = guess_seq` if the
    /// row is a live record of `generation` with `success_floor < state_guess_seq`. Returns whether
    /// it applied (false: replayed or superseded state).
    fn record_success(
        &self,
        account: &AccountId,
        generation: u64,
        state_guess_seq: u64,
        now: u64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// [`Store::record_success`] that also returns, from the same atomic statement, the sealed
    /// record and the counter (after the reset) of the row it applied to: `None` if it did not
    /// apply. `recover/finish` needs no separate load then (PROTOCOL.md §6.3).
    fn record_success_returning(
        &self,
        account: &AccountId,
        generation: u64,
        state_guess_seq: u64,
        now: u64,
    ) -> impl Future<Output = Result<Option<(Vec<u8>, GuessCounter)>>> + Send;

    /// Writes a new record if the row still has `record.expected_generation` (0: no row yet).
    /// Returns false on a lost race.
    fn write_record(
        &self,
        account: &AccountId,
        record: &NewRecord,
        now: u64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Erases the record (delete with proof, or reset): `status = 0, sealed = NULL,
    /// generation + 1`. With `expected_generation`, only if the row still has it. Returns whether a
    /// row changed.
    fn remove(
        &self,
        account: &AccountId,
        expected_generation: Option<u64>,
        now: u64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Destroys every exhausted record whose last guess is older than `state_ttl` (its KE3 can no
    /// longer arrive). Returns how many were destroyed.
    fn sweep(&self, now: u64, state_ttl: u64) -> impl Future<Output = Result<u64>> + Send;

    /// The rollback commitment of the account's live record (PROTOCOL.md §9.1): `(seq, blob)`,
    /// or `None` if there is no live record or it has no commitment.
    fn get_commitment(
        &self,
        account: &AccountId,
    ) -> impl Future<Output = Result<Option<(u64, Vec<u8>)>>> + Send;

    /// Stores a rollback commitment iff the account has a live record and `seq` is higher than
    /// the stored sequence number (or none is stored): one atomic compare-and-set
    /// (`chatvault_vault_core::decide_commitment`). `seq` and `commitment` are already validated.
    fn put_commitment(
        &self,
        account: &AccountId,
        seq: u64,
        commitment: &[u8],
    ) -> impl Future<Output = Result<CommitmentWrite>> + Send;

    /// Checks the database is reachable.
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;
}

/// Outcome of [`Store::put_commitment`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitmentWrite {
    /// Stored: there was none, or the new sequence number is higher.
    Stored,
    /// Refused: the stored sequence number is equal or higher.
    Stale {
        /// The sequence number currently stored.
        current_seq: u64,
    },
    /// Refused: the account has no live record (none, deleted, reset or destroyed).
    NoRecord,
}

/// How often `put_commitment` re-runs its compare-and-set when the row changed between the
/// conditional update and the read that explains a miss (reset and re-registration meanwhile).
pub(crate) const COMMITMENT_ROUNDS: usize = 5;

/// Explains a compare-and-set miss from the row read afterwards: `None` means "the row changed
/// meanwhile; try again".
pub(crate) fn explain_commitment_miss(
    status: Option<i64>,
    stored_seq: Option<i64>,
    seq: u64,
) -> Option<CommitmentWrite> {
    use chatvault_vault_core::{CommitmentDecision, decide_commitment};
    if status != Some(STATUS_REGISTERED) {
        return Some(CommitmentWrite::NoRecord);
    }
    match decide_commitment(stored_seq.map(u), seq) {
        CommitmentDecision::Stale { current_seq } => Some(CommitmentWrite::Stale { current_seq }),
        CommitmentDecision::Store => None,
    }
}

/// Raw column values, shared by both stores.
pub(crate) struct Row {
    pub status: i64,
    pub generation: i64,
    pub sealed: Option<Vec<u8>>,
    pub attempts: i64,
    pub max_attempts: i64,
    pub guess_seq: i64,
    pub success_floor: i64,
    pub updated_at: i64,
}

pub(crate) fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A [`GuessCounter`] from its raw columns (`attempts`, `max_attempts`, `guess_seq`,
/// `success_floor`).
pub(crate) fn counter_from(
    attempts: i64,
    max_attempts: i64,
    guess_seq: i64,
    success_floor: i64,
) -> Result<GuessCounter> {
    use crate::error::Error::CorruptRow;
    Ok(GuessCounter {
        attempts: u32::try_from(attempts).map_err(|_| CorruptRow("attempts"))?,
        max_attempts: u32::try_from(max_attempts).map_err(|_| CorruptRow("max_attempts"))?,
        guess_seq: u(guess_seq),
        success_floor: u(success_floor),
    })
}

impl Row {
    pub(crate) fn into_state(self) -> Result<AccountState> {
        use crate::error::Error::CorruptRow;
        let generation = u(self.generation);
        Ok(match self.status {
            STATUS_NONE => AccountState::NoRecord { generation },
            STATUS_REGISTERED => AccountState::Registered {
                generation,
                sealed: self.sealed.ok_or(CorruptRow("registered without record"))?,
                counter: counter_from(
                    self.attempts,
                    self.max_attempts,
                    self.guess_seq,
                    self.success_floor,
                )?,
            },
            STATUS_DESTROYED => AccountState::Destroyed {
                generation,
                destroyed_at: u(self.updated_at),
            },
            _ => return Err(CorruptRow("unknown status")),
        })
    }
}
