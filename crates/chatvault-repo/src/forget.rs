//! Retention (`forget`, docs/FORMAT.md §15): deletes the snapshot objects a keep policy does
//! not keep. It never deletes data; [`crate::prune`] frees what no snapshot needs any more.
//!
//! Snapshots are grouped by device and paths ([`retention_group`]); in each group the newest
//! snapshot is always kept. This module must not decide anything about keys or devices; it
//! works on an open [`Repository`].

use std::collections::BTreeMap;

use chatvault_format::id::SnapshotId;
use chatvault_format::objects::Snapshot;
use chrono::{DateTime, Datelike, Utc};
use serde::{Serialize, Serializer};

use crate::error::{RepoError, Result};
use crate::lock;
use crate::repository::{Repository, layout};

/// Which snapshots to keep. Snapshots are grouped by device and paths ([`retention_group`]);
/// in each group the newest snapshot is always kept, and a snapshot is kept if any rule keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    /// Keep the newest N.
    pub last: Option<u32>,
    /// Keep the newest snapshot of each of the last N days (UTC) that have snapshots.
    pub daily: Option<u32>,
    /// The same per ISO week.
    pub weekly: Option<u32>,
    /// The same per calendar month.
    pub monthly: Option<u32>,
    /// The same per year.
    pub yearly: Option<u32>,
}

impl KeepPolicy {
    /// Whether no rule is set (forget refuses: it would keep only the newest snapshots).
    pub fn is_empty(&self) -> bool {
        [
            self.last,
            self.daily,
            self.weekly,
            self.monthly,
            self.yearly,
        ]
        .iter()
        .all(Option::is_none)
    }
}

/// One snapshot's fate under a policy. It serializes (`forget --json`) as
/// `{id, short_id, time, hostname, device, reasons}`, the snapshot's fields `null` when it is
/// unreadable.
#[derive(Debug, Clone)]
pub struct ForgetEntry {
    /// The snapshot.
    pub id: SnapshotId,
    /// Its time, host and paths (None if unreadable).
    pub snapshot: Option<Snapshot>,
    /// Why it is kept (empty: it goes).
    pub reasons: Vec<String>,
}

impl Serialize for ForgetEntry {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Entry<'a> {
            id: &'a SnapshotId,
            short_id: String,
            time: Option<&'a str>,
            hostname: Option<&'a str>,
            device: Option<&'a str>,
            reasons: &'a [String],
        }
        let snap = self.snapshot.as_ref();
        Entry {
            id: &self.id,
            short_id: self.id.short(),
            time: snap.map(|s| s.time.as_str()),
            hostname: snap.map(|s| s.hostname.as_str()),
            device: snap.and_then(|s| s.device.as_deref()),
            reasons: &self.reasons,
        }
        .serialize(s)
    }
}

/// The outcome of [`forget`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct ForgetReport {
    /// Snapshots kept, newest first within each group.
    pub keep: Vec<ForgetEntry>,
    /// Snapshots removed (or that would be, in a dry run).
    pub remove: Vec<ForgetEntry>,
}

fn bucket(rule: &str, t: &DateTime<Utc>) -> String {
    match rule {
        "daily" => t.format("%Y-%m-%d").to_string(),
        "weekly" => {
            let w = t.iso_week();
            format!("{}-W{:02}", w.year(), w.week())
        }
        "monthly" => t.format("%Y-%m").to_string(),
        _ => t.format("%Y").to_string(),
    }
}

/// The retention group of a snapshot (FORMAT §15): its device id, or `host:<hostname>` for a
/// snapshot written before device ids existed, and its paths. Two phones that both call
/// themselves `localhost` are in different groups; a host name can never collide with a device
/// id (32 hex digits, no `:`).
pub fn retention_group(s: &Snapshot) -> (String, Vec<String>) {
    let who = match &s.device {
        Some(d) => d.clone(),
        None => format!("host:{}", s.hostname),
    };
    (who, s.paths.clone())
}

/// Applies `policy` to the repository's snapshots (pure decision; nothing is written).
pub fn forget_plan(repo: &Repository, policy: &KeepPolicy) -> Result<ForgetReport> {
    if policy.is_empty() {
        return Err(RepoError::Invalid(
            "forget needs a policy: --keep-last, --keep-daily, --keep-weekly, --keep-monthly or --keep-yearly".into(),
        ));
    }
    let mut report = ForgetReport::default();
    type Group = Vec<(SnapshotId, Snapshot, DateTime<Utc>)>;
    let mut groups: BTreeMap<(String, Vec<String>), Group> = BTreeMap::new();
    for (id, s) in repo.snapshots()? {
        match s {
            Ok(s) => {
                let Ok(t) = DateTime::parse_from_rfc3339(&s.time) else {
                    report.keep.push(ForgetEntry {
                        id,
                        snapshot: Some(s),
                        reasons: vec!["unparsable time: never removed automatically".into()],
                    });
                    continue;
                };
                groups
                    .entry(retention_group(&s))
                    .or_default()
                    .push((id, s, t.with_timezone(&Utc)));
            }
            Err(e) => report.keep.push(ForgetEntry {
                id,
                snapshot: None,
                reasons: vec![format!("unreadable ({e}): never removed automatically")],
            }),
        }
    }
    for (_, mut snaps) in groups {
        // Newest first (by sequence number, then time: a device with a wrong clock cannot
        // make its newest snapshot look old).
        snaps.sort_by(|a, b| b.1.seq.cmp(&a.1.seq).then(b.2.cmp(&a.2)));
        let rules: [(&str, Option<u32>); 4] = [
            ("daily", policy.daily),
            ("weekly", policy.weekly),
            ("monthly", policy.monthly),
            ("yearly", policy.yearly),
        ];
        let mut last_bucket: [Option<String>; 4] = Default::default();
        let mut used: [u32; 4] = [0; 4];
        for (i, (id, s, t)) in snaps.into_iter().enumerate() {
            let mut reasons = Vec::new();
            if i == 0 {
                reasons.push("newest".to_string());
            }
            if policy.last.is_some_and(|n| (i as u32) < n) {
                reasons.push(format!("last {}", policy.last.unwrap_or(0)));
            }
            for (r, (name, n)) in rules.iter().enumerate() {
                let Some(n) = n else { continue };
                let b = bucket(name, &t);
                if used[r] < *n && last_bucket[r].as_deref() != Some(&b) {
                    used[r] += 1;
                    reasons.push(format!("{name} {b}"));
                    last_bucket[r] = Some(b);
                }
            }
            let e = ForgetEntry {
                id,
                snapshot: Some(s),
                reasons,
            };
            if e.reasons.is_empty() {
                report.remove.push(e);
            } else {
                report.keep.push(e);
            }
        }
    }
    Ok(report)
}

/// Removes the snapshots `policy` does not keep (unless `dry_run`). Data stays until `prune`.
pub fn forget(repo: &Repository, policy: &KeepPolicy, dry_run: bool) -> Result<ForgetReport> {
    let _guard = if dry_run {
        None
    } else {
        Some(lock::lock(repo, "forget", false)?)
    };
    let report = forget_plan(repo, policy)?;
    if !dry_run {
        for e in &report.remove {
            repo.storage.delete(&layout::snapshot(&e.id))?;
            tracing::info!(snapshot = %e.id.short(), "snapshot forgotten");
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::backup::{self, BackupOptions, NoProgress};
    use crate::test_util::{memory_repo as repo, noise};

    #[test]
    fn keep_policy_buckets() {
        // Pure policy logic on a synthetic list is covered through forget_plan in the CLI
        // tests; here: an empty policy is refused.
        let r = repo("prune-policy");
        assert!(matches!(
            forget_plan(&r, &KeepPolicy::default()),
            Err(RepoError::Invalid(_))
        ));
    }

    fn backup_as(
        repo: &Repository,
        dir: &std::path::Path,
        device: Option<&str>,
    ) -> (SnapshotId, Snapshot) {
        let opts = BackupOptions {
            hostname: Some("localhost".into()),
            device: device.map(str::to_string),
            ..Default::default()
        };
        let out = backup::backup(repo, &[dir.to_path_buf()], &opts, &NoProgress).unwrap();
        (out.id, out.snapshot)
    }

    /// Two Android phones both called `localhost`, backing up the same path, interleaved: each
    /// incremental backup picks its own device's parent, and retention keeps the newest
    /// snapshot of each phone, not just the newest "localhost" one.
    #[test]
    fn two_localhost_phones_keep_their_own_parents_and_retention_groups() {
        let r = repo("two-phones");
        let (a, b) = (
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        );
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("x.bin"), noise(20, 1 << 16)).unwrap();
        let (a1, _) = backup_as(&r, src.path(), Some(a));
        let (b1, s_b1) = backup_as(&r, src.path(), Some(b));
        assert_eq!(s_b1.parent, None, "never another phone's snapshot");
        let (a2, s_a2) = backup_as(&r, src.path(), Some(a));
        assert_eq!(s_a2.parent, Some(a1));
        let (b2, s_b2) = backup_as(&r, src.path(), Some(b));
        assert_eq!(s_b2.parent, Some(b1));
        let (a3, s_a3) = backup_as(&r, src.path(), Some(a));
        assert_eq!(s_a3.parent, Some(a2));
        assert_eq!(s_a3.device.as_deref(), Some(a));

        let policy = KeepPolicy {
            last: Some(1),
            ..Default::default()
        };
        let f = forget(&r, &policy, false).unwrap();
        let mut kept: Vec<SnapshotId> = f.keep.iter().map(|e| e.id).collect();
        kept.sort();
        let mut want = vec![a3, b2];
        want.sort();
        assert_eq!(kept, want, "the newest of each phone");
        assert_eq!(f.remove.len(), 3);
    }

    /// The first backup after the upgrade (the phone now has a device id) still finds the
    /// snapshot it wrote before device ids existed; a second phone with the same host name then
    /// does not take over that phone's snapshots.
    #[test]
    fn first_backup_with_a_device_id_continues_from_the_old_snapshots() {
        let r = repo("upgrade");
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("x.bin"), noise(21, 1 << 16)).unwrap();
        let (old, s_old) = backup_as(&r, src.path(), None);
        assert_eq!(s_old.device, None);
        let a = "0123456789abcdef0123456789abcdef";
        let (a1, s_a1) = backup_as(&r, src.path(), Some(a));
        assert_eq!(s_a1.parent, Some(old), "falls back to host name + paths");
        assert_eq!(s_a1.summary.files_read, 0, "incremental");
        let (_, s_a2) = backup_as(&r, src.path(), Some(a));
        assert_eq!(s_a2.parent, Some(a1));
        // Old snapshots form their own `host:` group: its newest stays.
        let groups: HashSet<(String, Vec<String>)> = r
            .snapshots()
            .unwrap()
            .into_iter()
            .map(|(_, s)| retention_group(&s.unwrap()))
            .collect();
        assert_eq!(groups.len(), 2);
        assert!(groups.iter().any(|(who, _)| who == "host:localhost"));
    }
}
