//! `chatvault repair index` through the real binary on a local folder repository.
//!
//! Data: a sample chat folder (`chatvault sample --preset small`: a WhatsApp-like SQLite
//! database and media), backed up twice (the second time after a simulated day of chatting).
//! Faults and expected outcomes:
//! - every object under `index/` deleted → restore fails (exit 6), check reports damage (exit 6);
//!   `repair index --dry-run` reports every pack and writes nothing; `repair index` rebuilds
//!   (exit 0); `check --read-data` passes; restore equals the source (files byte for byte,
//!   databases logically).
//! - the index deleted and one pack's header corrupted → `repair index` names that pack and
//!   exits 6; every other pack is re-indexed; a second run still reports only that pack.
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use std::path::{Path, PathBuf};

use assert_cmd::Command;

mod common;
use common::{assert_code, assert_ok};

struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        World {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn cv(&self) -> Command {
        let mut c = Command::cargo_bin("chatvault").unwrap();
        c.env_remove("CHATVAULT_KEY")
            .env_remove("CHATVAULT_REPO")
            .env_remove("CHATVAULT_HOME")
            .arg("--home")
            .arg(self.p("phone"));
        c
    }
    /// A repository with two snapshots of a sample chat folder; returns the folder.
    fn with_backups(&self) -> PathBuf {
        let src = self.p("chats");
        assert_ok(
            &self
                .cv()
                .args(["sample", "--preset", "small"])
                .arg(&src)
                .output()
                .unwrap(),
        );
        let repo = self.p("repo");
        assert_ok(
            &self
                .cv()
                .args(["init", "--key", "--repo"])
                .arg(&repo)
                .output()
                .unwrap(),
        );
        assert_ok(&self.cv().arg("backup").arg(&src).output().unwrap());
        assert_ok(
            &self
                .cv()
                .args(["sample", "--next-day", "1"])
                .arg(&src)
                .output()
                .unwrap(),
        );
        assert_ok(&self.cv().arg("backup").arg(&src).output().unwrap());
        src
    }
    fn files(&self, rel: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.p(rel), &mut out);
        out.sort();
        out
    }
    fn lose_index(&self) {
        let idx = self.files("repo/index");
        assert!(!idx.is_empty());
        for f in idx {
            std::fs::remove_file(f).unwrap();
        }
    }
    fn repair_json(&self, extra: &[&str]) -> (Option<i32>, serde_json::Value) {
        let out = self
            .cv()
            .args(["repair", "index", "--json"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("panicked"),
            "{out:?}"
        );
        (
            out.status.code(),
            serde_json::from_slice(&out.stdout).unwrap(),
        )
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// `restored` equals `src`: every file byte for byte, except SQLite databases, which are
/// compared logically (a restored database is a consistent copy, FORMAT §5.1).
fn assert_same(src: &Path, restored: &Path) {
    let is_db = |p: &Path| {
        std::fs::read(p)
            .map(|b| b.starts_with(b"SQLite format 3\0"))
            .unwrap_or(false)
    };
    let mut want = Vec::new();
    walk(src, &mut want);
    let mut n = 0;
    for f in want {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with("-wal") || name.ends_with("-shm") || name.ends_with("-journal") {
            continue; // never stored (FORMAT §5.1)
        }
        let rel = f.strip_prefix(src).unwrap();
        let got = restored.join(rel);
        if is_db(&f) {
            assert_eq!(
                chatvault_repo::sqlite::logical_digest(&got).unwrap(),
                chatvault_repo::sqlite::logical_digest(&f).unwrap(),
                "{}",
                rel.display()
            );
        } else {
            assert_eq!(
                std::fs::read(&got).unwrap(),
                std::fs::read(&f).unwrap(),
                "{}",
                rel.display()
            );
        }
        n += 1;
    }
    assert!(n > 3, "the sample has a database and media");
}

#[test]
fn lost_index_is_rebuilt_from_pack_headers_and_everything_restores() {
    let w = World::new();
    let src = w.with_backups();
    let packs = w.files("repo/data").len();
    w.lose_index();

    let out = w
        .cv()
        .args(["restore", "latest", "--target"])
        .arg(w.p("broken"))
        .output()
        .unwrap();
    assert_code(&out, 6, "not in any index");
    let out = w.cv().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(6), "{out:?}");

    let (code, dry) = w.repair_json(&["--dry-run"]);
    assert_eq!(code, Some(0), "{dry}");
    assert_eq!(dry["packs_scanned"], packs);
    assert_eq!(dry["packs_reindexed"], packs);
    assert!(w.files("repo/index").is_empty(), "a dry run writes nothing");

    let out = w.cv().args(["repair", "index"]).output().unwrap();
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{packs} re-indexed from their headers")),
        "{text}"
    );
    assert!(!w.files("repo/index").is_empty());

    let out = w.cv().args(["check", "--read-data"]).output().unwrap();
    assert_ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no errors found"),
        "{out:?}"
    );

    // Nothing left to do; a backup after the repair finds every blob indexed again.
    let (code, again) = w.repair_json(&[]);
    assert_eq!(code, Some(0));
    assert_eq!(again["packs_reindexed"], 0);
    assert_eq!(again["packs_already_indexed"], packs);
    let out = w
        .cv()
        .args(["backup", "--json"])
        .arg(&src)
        .output()
        .unwrap();
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // No file is read or stored again (at most the listings of folders whose mtime the
    // database copy touched: SQLite opens `-wal`/`-shm` beside the database).
    assert_eq!(v["snapshot"]["summary"]["files_read"], 0, "{v}");
    assert!(
        v["snapshot"]["summary"]["new_bytes"].as_u64().unwrap() < 4096,
        "{v}"
    );

    assert_ok(
        &w.cv()
            .args(["restore", "latest", "--target"])
            .arg(w.p("restored"))
            .output()
            .unwrap(),
    );
    assert_same(&src, &w.p("restored/chats"));
}

#[test]
fn a_pack_with_a_damaged_header_is_reported_and_the_rest_reindexed() {
    let w = World::new();
    w.with_backups();
    let packs = w.files("repo/data");
    w.lose_index();
    let victim = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(victim).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 0x40; // inside the sealed header (the last 4 bytes are its length)
    std::fs::write(victim, &bytes).unwrap();
    let victim_id = victim.file_name().unwrap().to_string_lossy().into_owned();

    let out = w.cv().args(["repair", "index"]).output().unwrap();
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&victim_id[..8]), "{text}");
    assert!(text.contains("1 pack header(s) are damaged"), "{text}");

    let (code, v) = w.repair_json(&["--dry-run"]);
    assert_eq!(code, Some(6));
    assert_eq!(v["packs_reindexed"], 0, "{v}");
    assert_eq!(v["packs_already_indexed"], packs.len() - 1);
    let unreadable = v["unreadable"].as_array().unwrap();
    assert_eq!(unreadable.len(), 1);
    assert_eq!(unreadable[0]["pack"], victim_id.as_str());

    // The packs whose header opened are usable again: check names only the lost data.
    let out = w.cv().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("cannot restore intact"), "{report}");
}

/// A bit of a blob flipped in the largest data pack (bit rot at the provider): `check
/// --read-data` names the pack and the command that salvages it; `repair packs` keeps the
/// intact blobs and drops the damaged one; the next backup stores it again, and then every
/// snapshot (the older one too) restores whole on a new device.
#[test]
fn a_damaged_pack_is_salvaged_and_the_next_backup_heals_every_snapshot() {
    let w = World::new();
    let src = w.with_backups();
    let victim = w
        .files("repo/data")
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x10; // inside a blob: the header is at the end
    std::fs::write(&victim, &bytes).unwrap();
    let victim_id = victim.file_name().unwrap().to_string_lossy().into_owned();

    let out = w.cv().args(["check", "--read-data"]).output().unwrap();
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let hint = format!("chatvault repair packs {}", &victim_id[..8]);
    assert!(text.contains(&hint), "{text}");
    assert!(text.contains("cannot restore intact"), "{text}");

    // A dry run reports and changes nothing.
    let out = w
        .cv()
        .args(["repair", "packs", "--dry-run", "--json", &victim_id[..8]])
        .output()
        .unwrap();
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["packs"][0]["outcome"], "repaired", "{v}");
    assert_eq!(v["packs"][0]["lost"].as_array().unwrap().len(), 1, "{v}");
    assert!(victim.exists());

    let out = w
        .cv()
        .args(["repair", "packs", &victim_id[..8]])
        .output()
        .unwrap();
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 blob(s) damaged"), "{text}");
    assert!(text.contains("run a backup"), "{text}");
    assert!(!victim.exists());
    // An unknown pack is refused.
    assert_code(
        &w.cv()
            .args(["repair", "packs", "0000000"])
            .output()
            .unwrap(),
        1,
        "no pack in the index starts with",
    );

    // The source still has the file: the next backup stores the blob again.
    assert_ok(&w.cv().arg("backup").arg(&src).output().unwrap());
    assert_ok(&w.cv().args(["check", "--read-data"]).output().unwrap());
    let key = String::from_utf8(
        w.cv()
            .args(["key", "show", "--yes"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .chars()
    .filter(char::is_ascii_hexdigit)
    .collect::<String>();
    let out = w.cv().args(["snapshots", "--json"]).output().unwrap();
    assert_ok(&out);
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 3);
    for (i, s) in snaps.iter().enumerate() {
        let id = s["id"].as_str().unwrap();
        let target = w.p(&format!("restored-{i}"));
        let out = Command::cargo_bin("chatvault")
            .unwrap()
            .env_remove("CHATVAULT_HOME")
            .env("CHATVAULT_KEY", &key)
            .arg("--home")
            .arg(w.p(&format!("new-phone-{i}")))
            .arg("--repo")
            .arg(w.p("repo"))
            .args(["restore", id, "--target"])
            .arg(&target)
            .output()
            .unwrap();
        assert_ok(&out);
    }
    assert_same(&src, &w.p("restored-2/chats"));
}
