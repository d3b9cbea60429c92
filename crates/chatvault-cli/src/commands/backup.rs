//! `chatvault backup`: one backup of the given paths, recorded on the device and at the vault.

use anyhow::Result;
use chatvault_client::{DeviceError, rollback};
use chatvault_format::id::SnapshotId;
use chatvault_format::objects::Snapshot;
use serde::Serialize;

use super::ctx::Ctx;
use super::shared::print_json;
use crate::args::BackupArgs;
use crate::exit;
use crate::ui::Bar;

/// `backup --json`: the new snapshot's id and the snapshot itself.
#[derive(Serialize)]
struct BackupJson<'a> {
    id: &'a SnapshotId,
    snapshot: &'a Snapshot,
}

pub(super) fn run(ctx: &Ctx, a: &BackupArgs) -> Result<u8> {
    let (repo, access) = ctx.open_checked()?;
    let bar = Bar::new(ctx.quiet || a.json, "backing up");
    // The workflow (device id, min_seq, scratch folder, record_snapshot) is the SDK's.
    let r = chatvault_client::device::backup_recorded(
        &ctx.home,
        &repo,
        &access,
        &a.paths,
        a.host.clone(),
        a.force,
        &bar,
    );
    bar.finish();
    let (out, recorded) = r?;
    let tampered = match recorded {
        rollback::Recorded::Done => None,
        rollback::Recorded::Warning(w) => {
            eprintln!("warning: {w}");
            None
        }
        rollback::Recorded::Tampered(t) if ctx.accept_rollback => {
            eprintln!("WARNING: {t}.");
            None
        }
        rollback::Recorded::Tampered(t) => Some(t),
    };
    let s = &out.snapshot.summary;
    if a.json {
        print_json(&BackupJson {
            id: &out.id,
            snapshot: &out.snapshot,
        })?;
    } else {
        println!(
            "snapshot {} saved: {} files, {} dirs, {} bytes; {} files read, {} new bytes in {} blobs, {} bytes uploaded",
            out.id.short(),
            s.files,
            s.dirs,
            s.bytes,
            s.files_read,
            s.new_bytes,
            s.new_blobs,
            s.uploaded_bytes
        );
        for p in &s.unreadable {
            eprintln!("not backed up: {}: {}", p.path, p.error);
        }
        for p in &s.changed_while_reading {
            eprintln!("changed while reading (may be inconsistent): {p}");
        }
    }
    if let Some(t) = tampered {
        return Err(DeviceError::RolledBack {
            message: format!("snapshot {} is saved, but {t}", out.id.short()),
        }
        .into());
    }
    if s.is_complete() {
        Ok(exit::OK)
    } else {
        eprintln!(
            "backup is partial: {} item(s) not backed up, {} changed while reading",
            s.unreadable.len(),
            s.changed_while_reading.len()
        );
        Ok(exit::PARTIAL)
    }
}
