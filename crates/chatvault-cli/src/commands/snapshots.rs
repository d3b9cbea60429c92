//! `chatvault snapshots`: lists the repository's snapshots (damaged ones flagged).

use anyhow::Result;
use serde_json::json;

use super::ctx::Ctx;
use crate::exit;

pub(super) fn run(ctx: &Ctx, json_out: bool) -> Result<u8> {
    let (repo, _) = ctx.open_checked()?;
    let all = repo.snapshots()?;
    let mut damaged = 0;
    if json_out {
        let v: Vec<_> = all
            .iter()
            .map(|(id, s)| match s {
                Ok(s) => {
                    json!({"id": id, "short_id": id.short(), "time": s.time, "hostname": s.hostname,
                    "device": s.device, "device_short": s.device.as_deref().map(short_device),
                    "paths": s.paths, "files": s.summary.files, "bytes": s.summary.bytes,
                    "complete": s.summary.is_complete(), "parent": s.parent})
                }
                Err(e) => {
                    damaged += 1;
                    json!({"id": id, "short_id": id.short(), "error": e.to_string()})
                }
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
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
