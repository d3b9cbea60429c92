//! The guess counter and the per-account state machine (PROTOCOL.md §5, §6.2, §6.4).
//!
//! These pure transitions are the specification of the counter. The server's stores execute the
//! same transitions as single atomic conditional SQL statements (the SQL is quoted next to each
//! method), so that many vault processes sharing one database can never count more than
//! `max_attempts` guesses.

/// Plain (non-secret) counter columns of a registered record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuessCounter {
    /// Guesses counted since the last successful recovery.
    pub attempts: u32,
    /// The limit fixed at registration.
    pub max_attempts: u32,
    /// Total guesses counted in this generation (monotonic).
    pub guess_seq: u64,
    /// `guess_seq` at the last successful recovery: states with `guess_seq <= success_floor` are dead.
    pub success_floor: u64,
}

/// Why a guess could not be counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exhausted;

/// Why a successful KE3 could not be applied: the state was used already or superseded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stale;

impl GuessCounter {
    /// A fresh counter for a new registration.
    pub fn new(max_attempts: u32) -> Self {
        Self {
            attempts: 0,
            max_attempts,
            guess_seq: 0,
            success_floor: 0,
        }
    }

    /// Counts one guess, before KE2 is released (PROTOCOL.md §6.1). SQL:
    /// `UPDATE … SET attempts = attempts + 1, guess_seq = guess_seq + 1 WHERE … AND attempts < max_attempts`.
    pub fn count_guess(self) -> Result<Self, Exhausted> {
        if self.attempts < self.max_attempts {
            Ok(Self {
                attempts: self.attempts + 1,
                guess_seq: self.guess_seq + 1,
                ..self
            })
        } else {
            Err(Exhausted)
        }
    }

    /// Guesses left if the guess just counted turns out wrong.
    pub fn attempts_left(&self) -> u32 {
        self.max_attempts.saturating_sub(self.attempts)
    }

    /// True once no further guess may be counted: the record must be destroyed (PROTOCOL.md §6.4).
    pub fn is_exhausted(&self) -> bool {
        self.attempts >= self.max_attempts
    }

    /// Applies a verified KE3 of the login state with `state_guess_seq` (PROTOCOL.md §6.3). SQL:
    /// `UPDATE … SET attempts = 0, success_floor = guess_seq WHERE … AND success_floor < $seq`.
    pub fn record_success(self, state_guess_seq: u64) -> Result<Self, Stale> {
        if self.success_floor < state_guess_seq && state_guess_seq <= self.guess_seq {
            Ok(Self {
                attempts: 0,
                success_floor: self.guess_seq,
                ..self
            })
        } else {
            Err(Stale)
        }
    }
}

/// What the server knows about one account (one database row).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountState {
    /// No record: never registered, deleted or reset. `generation` is 0 if there never was a row.
    NoRecord {
        /// Last generation used by this account.
        generation: u64,
    },
    /// A live record.
    Registered {
        /// Current generation.
        generation: u64,
        /// The sealed record ([`crate::Record::seal`]).
        sealed: Vec<u8>,
        /// The plain counter columns.
        counter: GuessCounter,
    },
    /// The record was destroyed after too many wrong guesses; only a tombstone is left.
    Destroyed {
        /// Generation of the destroyed record.
        generation: u64,
        /// When it was destroyed (unix seconds).
        destroyed_at: u64,
    },
}

impl AccountState {
    /// The generation of the row.
    pub fn generation(&self) -> u64 {
        match self {
            AccountState::NoRecord { generation }
            | AccountState::Registered { generation, .. }
            | AccountState::Destroyed { generation, .. } => *generation,
        }
    }

    /// The state after the destruction of an exhausted record (PROTOCOL.md §6.4): the password file
    /// and wrapped key are erased, a tombstone stays. Returns `None` if `self` is not an exhausted
    /// registered record. SQL: `UPDATE … SET status = 2, sealed = NULL WHERE … AND attempts >= max_attempts`.
    pub fn destroy_if_exhausted(&self, now: u64) -> Option<AccountState> {
        match self {
            AccountState::Registered {
                generation,
                counter,
                ..
            } if counter.is_exhausted() => Some(AccountState::Destroyed {
                generation: *generation,
                destroyed_at: now,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn count_guess_at_limit_exhausted() {
        let mut c = GuessCounter::new(3);
        for left in [2, 1, 0] {
            c = c.count_guess().unwrap();
            assert_eq!(c.attempts_left(), left);
        }
        assert!(c.is_exhausted());
        assert_eq!(c.count_guess(), Err(Exhausted));
    }

    #[test]
    fn record_success_resets_and_rejects_replay() {
        let c = GuessCounter::new(10)
            .count_guess()
            .unwrap()
            .count_guess()
            .unwrap();
        let ok = c.record_success(2).unwrap();
        assert_eq!(ok.attempts, 0);
        assert_eq!(ok.success_floor, 2);
        assert_eq!(ok.record_success(2), Err(Stale), "replayed KE3");
        assert_eq!(ok.record_success(1), Err(Stale), "older state");
        assert_eq!(c.record_success(3), Err(Stale), "state from the future");
    }

    #[test]
    fn destroy_if_exhausted_only_when_exhausted() {
        let live = AccountState::Registered {
            generation: 4,
            sealed: vec![1],
            counter: GuessCounter::new(1),
        };
        assert_eq!(live.destroy_if_exhausted(9), None);
        let done = AccountState::Registered {
            generation: 4,
            sealed: vec![1],
            counter: GuessCounter::new(1).count_guess().unwrap(),
        };
        assert_eq!(
            done.destroy_if_exhausted(9),
            Some(AccountState::Destroyed {
                generation: 4,
                destroyed_at: 9
            })
        );
    }

    proptest! {
        /// Whatever interleaving of guesses and successes, attempts never exceed the limit and
        /// between two successes at most `max` guesses are counted.
        #[test]
        fn guess_count_never_exceeds_limit(max in 1u32..12, ops in proptest::collection::vec(0u8..4, 0..200)) {
            let mut c = GuessCounter::new(max);
            let mut since_success = 0u32;
            for op in ops {
                if op == 0 {
                    if let Ok(n) = c.record_success(c.guess_seq) { c = n; since_success = 0; }
                } else if let Ok(n) = c.count_guess() {
                    c = n;
                    since_success += 1;
                }
                prop_assert!(c.attempts <= max);
                prop_assert!(since_success <= max);
                prop_assert_eq!(c.attempts, since_success);
            }
        }
    }
}
