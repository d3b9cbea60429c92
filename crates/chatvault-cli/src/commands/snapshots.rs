//! `chatvault snapshots`: lists the repository's snapshots (damaged ones flagged).

use anyhow::Result;
use chatvault_format::id::SnapshotId;
use chatvault_format::objects::Snapshot;
use serde::Serialize;

use super::ctx::Ctx;
use super::shared::print_json;
use crate::exit;

/// One entry of `snapshots --json`: a readable snapshot, or a damaged one with its error.
#[derive(Serialize)]
#[serde(untagged)]
enum Listed<'a> {
    /// A snapshot that decrypts and parses.
    Readable {
        id: &'a SnapshotId,
        short_id: String,
        time: &'a str,
        hostname: &'a str,
        device: Option<&'a str>,
        device_short: Option<&'a str>,
        paths: &'a [String],
        files: u64,
        bytes: u64,
        complete: bool,
        parent: Option<&'a SnapshotId>,
    },
    /// A snapshot object that cannot be read.
    Damaged {
        id: &'a SnapshotId,
        short_id: String,
        error: String,
    },
}

impl<'a> Listed<'a> {
    fn of(id: &'a SnapshotId, s: Result<&'a Snapshot, &impl std::fmt::Display>) -> Self {
        match s {
            Ok(s) => Listed::Readable {
                id,
                short_id: id.short(),
                time: &s.time,
                hostname: &s.hostname,
                device: s.device.as_deref(),
                device_short: s.device.as_deref().map(short_device),
                paths: &s.paths,
                files: s.summary.files,
                bytes: s.summary.bytes,
                complete: s.summary.is_complete(),
                parent: s.parent.as_ref(),
            },
            Err(e) => Listed::Damaged {
                id,
                short_id: id.short(),
                error: e.to_string(),
            },
        }
    }
}

pub(super) fn run(ctx: &Ctx, json_out: bool) -> Result<u8> {
    let (repo, _) = ctx.open_checked()?;
    // As the rollback check just listed them.
    let all = repo.snapshots_as_listed()?;
    let mut damaged = 0;
    if json_out {
        let v: Vec<_> = all
            .iter()
            .map(|(id, s)| {
                let entry = Listed::of(id, s.as_ref());
                if matches!(entry, Listed::Damaged { .. }) {
                    damaged += 1;
                }
                entry
            })
            .collect();
        print_json(&v)?;
    } else {
        println!(
            "{:<10} {:<32} {:<16} {:<8} {:>8} {:>14}  paths",
            "id", "time", "host", "device", "files", "bytes"
        );
        for (id, s) in &all {
            match s {
                Ok(s) => println!(
                    "{:<10} {:<32} {:<16} {:<8} {:>8} {:>14}  {}{}",
                    id.short(),
                    s.time,
                    s.hostname,
                    s.device.as_deref().map_or("-", short_device),
                    s.summary.files,
                    s.summary.bytes,
                    s.paths.join(", "),
                    if s.summary.is_complete() {
                        ""
                    } else {
                        "  (partial)"
                    }
                ),
                Err(e) => {
                    damaged += 1;
                    println!("{:<10} DAMAGED: {e}", id.short())
                }
            }
        }
        println!("{} snapshot(s)", all.len());
    }
    Ok(if damaged > 0 { exit::DAMAGED } else { exit::OK })
}

/// The first 8 digits of a device id, for listings (the host name is only a label: two phones
/// can both be `localhost`).
fn short_device(d: &str) -> &str {
    d.get(..8).unwrap_or(d)
}
