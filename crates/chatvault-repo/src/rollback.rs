//! Rollback detection (docs/FORMAT.md §9.1, docs/PROTOCOL.md "Rollback commitment").
//!
//! Storage can hide the newest snapshots (delete them, or serve an old listing); it cannot forge
//! one. Every snapshot carries a sequence number above every snapshot its writer knew of, so a
//! reader that remembers the highest number it has seen — the device itself, or the Backup Key
//! Vault through a sealed [`Commitment`] — notices when the repository's newest snapshot is
//! older than that. This module seals and opens commitments and finds the newest snapshot; it
//! does not store anything itself (the client keeps the device memory and talks to the vault).

use chatvault_format::envelope::{self, ObjectKind};
use chatvault_format::id::SnapshotId;
use chatvault_format::labels;
use chatvault_format::objects::{OBJECT_VERSION, Snapshot};
use rand_core::OsRng;
use serde::{Deserialize, Serialize};

use crate::error::{RepoError, Result};
use crate::repository::Repository;

/// A commitment to the newest snapshot a device wrote, for the vault to keep. Sealed with the
/// repository's metadata key and bound to the vault account, so the vault can neither read nor
/// forge it, nor move it between accounts or repositories.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commitment {
    /// Always [`OBJECT_VERSION`].
    pub version: u32,
    /// The snapshot's sequence number.
    pub seq: u64,
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// Its time (RFC 3339), for messages.
    pub time: String,
}

impl Commitment {
    /// The commitment to `snapshot`.
    pub fn to(id: SnapshotId, snapshot: &Snapshot) -> Self {
        Commitment {
            version: OBJECT_VERSION,
            seq: snapshot.seq,
            snapshot: id,
            time: snapshot.time.clone(),
        }
    }
}

impl Repository {
    fn commitment_id(&self, account: &str) -> [u8; 32] {
        self.keys()
            .keyed_id(labels::AD_COMMITMENT, account.as_bytes())
    }

    /// Seals `c` for the vault account `account`.
    pub fn seal_commitment(&self, account: &str, c: &Commitment) -> Vec<u8> {
        let json = serde_json::to_vec(c).expect("commitment serializes");
        envelope::seal(
            self.keys(),
            ObjectKind::Commitment,
            &self.commitment_id(account),
            &json,
            &mut OsRng,
        )
    }

    /// Opens a commitment the vault returned for `account`. Fails if it was not sealed with
    /// this repository's key for this account (forged, altered, or another repository's).
    pub fn open_commitment(&self, account: &str, bytes: &[u8]) -> Result<Commitment> {
        let json = envelope::open(
            self.keys(),
            ObjectKind::Commitment,
            &self.commitment_id(account),
            bytes,
        )
        .map_err(|e| RepoError::corrupted("rollback commitment from the vault", e))?;
        let c: Commitment = serde_json::from_slice(&json)
            .map_err(|e| RepoError::corrupted("rollback commitment from the vault", e))?;
        if c.version != OBJECT_VERSION {
            return Err(RepoError::UnsupportedVersion(format!(
                "rollback commitment version {}",
                c.version
            )));
        }
        Ok(c)
    }

    /// The newest readable snapshot: highest sequence number, then latest time.
    pub fn newest_snapshot(&self) -> Result<Option<(SnapshotId, Snapshot)>> {
        Ok(self
            .snapshots()?
            .into_iter()
            .filter_map(|(id, s)| s.ok().map(|s| (id, s)))
            .max_by(|a, b| a.1.seq.cmp(&b.1.seq).then(a.1.time.cmp(&b.1.time))))
    }
}
