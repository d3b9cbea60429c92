//! Rollback detection on the client (docs/FORMAT.md §9.1): what this device remembers, what
//! the vault remembers, and the comparison with the repository's newest snapshot.

use std::collections::BTreeMap;

use chatvault_format::id::SnapshotId;
use chatvault_format::objects::Snapshot;
use chatvault_repo::repository::Repository;
use chatvault_repo::rollback::Commitment;
use chatvault_vault_client::CommitmentPut;
use serde::{Deserialize, Serialize};

use crate::vault::VaultAccess;
use crate::{ClientError, Home, Result};

const SEEN_FILE: &str = "seen.json";

/// The newest snapshot a device (or the vault) has seen in one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Its sequence number.
    pub seq: u64,
    /// Its id (hex).
    pub snapshot: String,
    /// Its time (RFC 3339).
    pub time: String,
}

/// A detected rollback: the repository's newest snapshot is older than one seen before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollback {
    /// Who remembers the newer snapshot: "this device", "the vault", or "the realm URL"
    /// (threshold mode).
    pub witness: String,
    /// The newer snapshot seen before.
    pub seen: Seen,
    /// The repository's newest readable snapshot now (None: it has none).
    pub newest: Option<Seen>,
}

impl std::fmt::Display for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |s: &str| s.chars().take(8).collect::<String>();
        write!(
            f,
            "the repository was rolled back: {} saw snapshot {} (#{}, {}), which is missing \
             from storage; the newest readable snapshot there is {}. The storage provider may \
             have deleted or hidden newer snapshots. Nothing was changed",
            self.witness,
            short(&self.seen.snapshot),
            self.seen.seq,
            self.seen.time,
            match &self.newest {
                Some(n) => format!("{} (#{}, {})", short(&n.snapshot), n.seq, n.time),
                None => "none".into(),
            }
        )
    }
}

fn seen_of(id: &SnapshotId, s: &Snapshot) -> Seen {
    Seen {
        seq: s.seq,
        snapshot: id.to_hex(),
        time: s.time.clone(),
    }
}

impl Home {
    fn seen_all(&self) -> Result<BTreeMap<String, Seen>> {
        let path = self.dir().join(SEEN_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| ClientError::BadConfig {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(source) => Err(ClientError::Home { path, source }),
        }
    }

    /// The newest snapshot this device has seen in `repo` (by repository id).
    pub fn seen(&self, repo: &Repository) -> Result<Option<Seen>> {
        Ok(self.seen_all()?.remove(&repo.id().to_hex()))
    }

    /// Remembers `seen` for `repo` if it is newer than what the device remembers.
    pub fn remember(&self, repo: &Repository, seen: Seen) -> Result<()> {
        let mut all = self.seen_all()?;
        let key = repo.id().to_hex();
        if all.get(&key).is_some_and(|old| old.seq >= seen.seq) {
            return Ok(());
        }
        all.insert(key, seen);
        self.ensure_dir()?;
        let json = serde_json::to_vec_pretty(&all).expect("seen serializes");
        self.write_atomic(SEEN_FILE, &json, 0o600)
    }
}

/// What the rollback check found.
#[derive(Debug, Default)]
pub struct RollbackStatus {
    /// The rollback, if any.
    pub rollback: Option<Rollback>,
    /// The vault's (or a realm's) commitment was tampered with (PROTOCOL.md §9.1, §13.15): it
    /// does not open with the repository's key, or its declared sequence number differs from the
    /// authenticated one inside. A rollback-class failure: the newest snapshot cannot be vouched
    /// for.
    pub tampered: Option<String>,
    /// Problems that did not prevent the check (vault unreachable), for a warning.
    pub warnings: Vec<String>,
}

/// The message for a commitment whose declared `seq` is not the authenticated one inside, or
/// that does not open. `holder` is "the vault" or "the realm URL".
fn tampered_message(holder: &str, what: &str) -> String {
    format!(
        "{holder}'s rollback commitment {what}: someone with the account token or the vault \
         itself replaced it, which hides newer snapshots from new devices. Nothing was changed. \
         Re-register the vault record (`chatvault key to-key`, then `key to-password`) to store a \
         fresh commitment"
    )
}

/// Who holds the commitment at `v`: "the vault" in single-vault mode (one access), "the realm
/// URL" in threshold mode (one access per realm, PROTOCOL.md §13.15).
fn holder(vaults: &[VaultAccess], v: &VaultAccess) -> String {
    if vaults.len() == 1 {
        "the vault".into()
    } else {
        format!("the realm {}", v.url)
    }
}

/// Compares the repository's newest snapshot with what this device and the vault remember (in
/// password mode one vault; in threshold mode every realm, PROTOCOL.md §13.15). Every reachable
/// vault's commitment is checked: the highest authenticated `seq` is the witness, and any
/// commitment that does not open or declares another `seq` than the one it authenticates is
/// [`RollbackStatus::tampered`]. Updates the device memory when the repository is newer.
pub fn check_rollback(
    home: &Home,
    repo: &Repository,
    vaults: &[VaultAccess],
) -> Result<RollbackStatus> {
    let mut status = RollbackStatus::default();
    let newest = repo.newest_snapshot()?;
    let newest_seen = newest.as_ref().map(|(id, s)| seen_of(id, s));
    let newest_seq = newest_seen.as_ref().map_or(0, |n| n.seq);

    let mut witnesses: Vec<(String, Seen)> = Vec::new();
    if let Some(s) = home.seen(repo)? {
        witnesses.push(("this device".into(), s));
    }
    let mut tampered = Vec::new();
    for v in vaults {
        let who = holder(vaults, v);
        match v.client().and_then(|c| Ok(c.get_commitment()?)) {
            // The authenticated seq inside is the witness; a declared seq that differs from it
            // (e.g. a genuine commitment PUT back with seq 2^63-1, which jams every later PUT)
            // or a commitment that does not open is an alarm, not a warning.
            Ok(Some((seq, bytes))) => match repo.open_commitment(&v.account, &bytes) {
                Ok(c) if c.seq == seq => witnesses.push((
                    who,
                    Seen {
                        seq: c.seq,
                        snapshot: c.snapshot.to_hex(),
                        time: c.time,
                    },
                )),
                Ok(c) => tampered.push(tampered_message(
                    &who,
                    &format!("declares #{seq} but commits to snapshot #{}", c.seq),
                )),
                Err(e) => tampered.push(tampered_message(
                    &who,
                    &format!("does not open with this repository's key ({e})"),
                )),
            },
            Ok(None) => {}
            Err(e) => status.warnings.push(format!(
                "could not read the rollback commitment from {who} ({e}); it was not checked"
            )),
        }
    }
    if !tampered.is_empty() {
        status.tampered = Some(tampered.join(". "));
    }
    let listed: Vec<String> = if witnesses.iter().any(|(_, s)| s.seq > newest_seq) {
        repo.snapshot_ids()?.iter().map(|id| id.to_hex()).collect()
    } else {
        Vec::new()
    };
    for (witness, seen) in witnesses {
        if seen.seq <= newest_seq {
            continue;
        }
        // Still listed but unreadable: that is damage (reported by the command itself as
        // such), not a rollback.
        if listed.contains(&seen.snapshot) {
            status.warnings.push(format!(
                "snapshot {} (#{}, {}), the newest {witness} saw, is damaged; older snapshots \
                 are what can be restored (run `chatvault check`)",
                &seen.snapshot[..8.min(seen.snapshot.len())],
                seen.seq,
                seen.time
            ));
            continue;
        }
        if status
            .rollback
            .as_ref()
            .is_none_or(|r| r.seen.seq < seen.seq)
        {
            status.rollback = Some(Rollback {
                witness,
                seen,
                newest: newest_seen.clone(),
            });
        }
    }
    if status.rollback.is_none()
        && let Some(n) = newest_seen
    {
        home.remember(repo, n)?;
    }
    Ok(status)
}

/// What [`record_snapshot`] did at the vault.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Committed (or no vault, or a genuine newer commitment from another device is there).
    Done,
    /// The vault could not be updated; the backup stands, a new device cannot vouch for it.
    Warning(String),
    /// The vault holds a commitment that was tampered with (PROTOCOL.md §9.1): rollback-class.
    Tampered(String),
}

/// After a backup: remember the new snapshot on this device and, in password mode, store a
/// sealed commitment to it at the vault (threshold mode: at every realm, PROTOCOL.md §13.15).
/// The backup itself stands whatever the vaults answer. A tampered commitment at any realm is
/// [`Recorded::Tampered`]; otherwise a realm that could not be updated is a warning.
pub fn record_snapshot(
    home: &Home,
    repo: &Repository,
    vaults: &[VaultAccess],
    id: &SnapshotId,
    snapshot: &Snapshot,
) -> Result<Recorded> {
    home.remember(repo, seen_of(id, snapshot))?;
    let (mut warnings, mut tampered) = (Vec::new(), Vec::new());
    for v in vaults {
        match record_at(repo, &holder(vaults, v), v, id, snapshot) {
            Recorded::Done => {}
            Recorded::Warning(w) => warnings.push(w),
            Recorded::Tampered(t) => tampered.push(t),
        }
    }
    Ok(if !tampered.is_empty() {
        Recorded::Tampered(tampered.join(". "))
    } else if !warnings.is_empty() {
        Recorded::Warning(warnings.join("; "))
    } else {
        Recorded::Done
    })
}

/// [`record_snapshot`] at one vault (or realm) `who`.
fn record_at(
    repo: &Repository,
    who: &str,
    v: &VaultAccess,
    id: &SnapshotId,
    snapshot: &Snapshot,
) -> Recorded {
    let sealed = repo.seal_commitment(&v.account, &Commitment::to(*id, snapshot));
    let client = match v.client() {
        Ok(c) => c,
        Err(e) => return Recorded::Warning(format!("could not reach {who} ({e})")),
    };
    match client.put_commitment(snapshot.seq, &sealed) {
        Ok(CommitmentPut::Stored) => Recorded::Done,
        // Another device already committed to a newer (or equally new) snapshot: fine, if that
        // commitment is genuine, i.e. opens and declares the seq it authenticates. Anything
        // else is a jammed commitment (a huge declared seq, or garbage).
        Ok(CommitmentPut::Stale { current_seq }) => match client.get_commitment() {
            Ok(Some((seq, bytes))) => match repo.open_commitment(&v.account, &bytes) {
                Ok(c) if c.seq == seq && c.seq >= snapshot.seq => Recorded::Done,
                Ok(c) => Recorded::Tampered(tampered_message(
                    who,
                    &format!(
                        "declares #{seq} but commits to snapshot #{}, so snapshot #{} cannot be \
                         committed",
                        c.seq, snapshot.seq
                    ),
                )),
                Err(e) => Recorded::Tampered(tampered_message(
                    who,
                    &format!(
                        "(#{current_seq}) does not open with this repository's key ({e}), so new \
                         snapshots cannot be committed"
                    ),
                )),
            },
            Ok(None) | Err(_) => Recorded::Warning(format!(
                "{who} refused the rollback commitment (it holds #{current_seq}) but does not \
                 show it; a new device will not be able to detect a rollback of this snapshot"
            )),
        },
        Err(e) => Recorded::Warning(format!(
            "could not store the rollback commitment at {who} ({e}); a new device will not \
             be able to detect a rollback of this snapshot"
        )),
    }
}
