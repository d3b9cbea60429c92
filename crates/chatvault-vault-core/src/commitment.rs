//! Rollback commitment (PROTOCOL.md §9.1): the rules the vault applies to the small opaque blob
//! a password-mode client stores next to its record so that a new device can detect a rolled-back
//! backup repository.
//!
//! The client seals the commitment with a key derived from the backup key; the vault can neither
//! read nor forge it. The vault only checks its size and enforces that the client-declared
//! sequence number strictly grows. These pure rules are the specification; the server's stores
//! execute [`decide_commitment`] as one conditional SQL statement (compare-and-set), so that no
//! number of racing vault processes can let a lower sequence number overwrite a higher one.

use crate::error::{Error, Result};

/// Largest accepted commitment, in bytes (decoded).
pub const MAX_COMMITMENT_LEN: usize = 512;

/// Smallest accepted sequence number (0 is reserved for "no commitment").
pub const MIN_COMMITMENT_SEQ: u64 = 1;

/// Largest accepted sequence number: the stores keep it in a signed 64-bit column.
pub const MAX_COMMITMENT_SEQ: u64 = i64::MAX as u64;

/// What the vault does with a commitment update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitmentDecision {
    /// Store it: there was none, or the new sequence number is higher.
    Store,
    /// Refuse it: the stored sequence number is equal or higher (HTTP 409).
    Stale {
        /// The sequence number currently stored.
        current_seq: u64,
    },
}

/// Checks a commitment update before it reaches the store: `seq` in
/// [`MIN_COMMITMENT_SEQ`]`..=`[`MAX_COMMITMENT_SEQ`] and `1..=`[`MAX_COMMITMENT_LEN`] bytes.
pub fn validate_commitment(seq: u64, commitment: &[u8]) -> Result<()> {
    if !(MIN_COMMITMENT_SEQ..=MAX_COMMITMENT_SEQ).contains(&seq) {
        return Err(Error::Malformed {
            what: "commitment sequence number (must be 1 to 2^63-1)",
        });
    }
    if commitment.is_empty() || commitment.len() > MAX_COMMITMENT_LEN {
        return Err(Error::Malformed {
            what: "commitment (must be 1 to 512 bytes)",
        });
    }
    Ok(())
}

/// Compare-and-set rule: store iff nothing is stored or `seq` is strictly higher than the stored
/// sequence number. SQL: `UPDATE … SET commitment_seq = $seq, commitment = $blob WHERE account = $1
/// AND status = 1 AND (commitment_seq IS NULL OR commitment_seq < $seq)`.
pub fn decide_commitment(stored_seq: Option<u64>, seq: u64) -> CommitmentDecision {
    match stored_seq {
        Some(current_seq) if current_seq >= seq => CommitmentDecision::Stale { current_seq },
        _ => CommitmentDecision::Store,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_bounds() {
        assert!(validate_commitment(1, &[0]).is_ok());
        assert!(validate_commitment(MAX_COMMITMENT_SEQ, &[0; MAX_COMMITMENT_LEN]).is_ok());
        assert!(validate_commitment(0, &[0]).is_err());
        assert!(validate_commitment(MAX_COMMITMENT_SEQ + 1, &[0]).is_err());
        assert!(validate_commitment(u64::MAX, &[0]).is_err());
        assert!(validate_commitment(1, &[]).is_err());
        assert!(validate_commitment(1, &[0; MAX_COMMITMENT_LEN + 1]).is_err());
    }

    #[test]
    fn decide_only_grows() {
        assert_eq!(decide_commitment(None, 1), CommitmentDecision::Store);
        assert_eq!(decide_commitment(Some(4), 5), CommitmentDecision::Store);
        assert_eq!(
            decide_commitment(Some(5), 5),
            CommitmentDecision::Stale { current_seq: 5 }
        );
        assert_eq!(
            decide_commitment(Some(9), 3),
            CommitmentDecision::Stale { current_seq: 9 }
        );
    }

    proptest::proptest! {
        /// Applying any sequence of updates in any order leaves the maximum stored.
        #[test]
        fn any_order_ends_at_max(seqs in proptest::collection::vec(1u64..1000, 1..30)) {
            let mut stored = None;
            for &s in &seqs {
                if decide_commitment(stored, s) == CommitmentDecision::Store {
                    proptest::prop_assert!(stored.is_none_or(|c| c < s));
                    stored = Some(s);
                }
            }
            proptest::prop_assert_eq!(stored, seqs.iter().copied().max());
        }
    }
}
