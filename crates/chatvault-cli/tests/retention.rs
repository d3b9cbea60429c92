//! Retention (`forget`, `prune`), rollback detection with the device memory, and concurrent
//! devices, through the `chatvault` binary on a local repository.
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use std::path::{Path, PathBuf};
use std::process::Stdio;

use assert_cmd::Command;

mod common;
use common::{assert_code, assert_ok, noise};

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
    fn repo(&self) -> String {
        self.p("repo").to_string_lossy().into_owned()
    }
    fn cv(&self, home: &str) -> Command {
        let mut c = Command::cargo_bin("chatvault").unwrap();
        c.env_remove("CHATVAULT_KEY")
            .env_remove("CHATVAULT_REPO")
            .env_remove("CHATVAULT_HOME")
            .arg("--home")
            .arg(self.p(home));
        c
    }
    /// Initializes the repository from `home`; returns the key text.
    fn init(&self, home: &str) -> String {
        let out = self
            .cv(home)
            .args(["init", "--key", "--repo", &self.repo()])
            .output()
            .unwrap();
        assert_ok(&out);
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines()
            .map(str::trim)
            .find(|l| l.len() == 79 && l.split(' ').count() == 16)
            .expect("grouped key")
            .to_string()
    }
    fn backup(&self, home: &str, src: &Path) -> String {
        let out = self
            .cv(home)
            .args(["backup", "--json"])
            .arg(src)
            .output()
            .unwrap();
        assert_ok(&out);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["id"].as_str().unwrap().to_string()
    }
    fn snapshot_ids(&self, home: &str) -> Vec<String> {
        let out = self
            .cv(home)
            .args(["snapshots", "--json"])
            .output()
            .unwrap();
        assert_ok(&out);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }
    fn restore_matches(&self, home: &str, id: &str, want: &[(&str, Vec<u8>)]) {
        let target = self.p(&format!("restore-{}-{}", &id[..8], rand_suffix()));
        let out = self
            .cv(home)
            .args(["restore", id, "--target"])
            .arg(&target)
            .output()
            .unwrap();
        assert_ok(&out);
        for (rel, data) in want {
            assert_eq!(
                &std::fs::read(target.join("src").join(rel)).unwrap(),
                data,
                "{rel} of {id}"
            );
        }
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn dir_size(p: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        n += if m.is_dir() {
            dir_size(&e.path())
        } else {
            m.len()
        };
    }
    n
}

#[test]
fn forget_and_prune_shrink_the_repository_and_every_kept_snapshot_restores() {
    let w = World::new();
    w.init("phone");
    let src = w.p("src");
    std::fs::create_dir_all(&src).unwrap();
    let keep = noise(1, 1 << 20);
    std::fs::write(src.join("keep.bin"), &keep).unwrap();
    // Four days: each adds a 2 MiB video that the next day deletes.
    let mut ids = Vec::new();
    let mut states = Vec::new();
    for day in 0..4u64 {
        let _ = std::fs::remove_file(src.join(format!("day{}.mp4", day.wrapping_sub(1))));
        let v = noise(100 + day, 2 << 20);
        std::fs::write(src.join(format!("day{day}.mp4")), &v).unwrap();
        ids.push(w.backup("phone", &src));
        states.push(v);
    }
    // Dry runs change nothing.
    let out = w
        .cv("phone")
        .args(["forget", "--keep-last", "2", "--dry-run"])
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("would remove"));
    assert_eq!(w.snapshot_ids("phone").len(), 4);
    // forget needs a policy.
    let out = w.cv("phone").args(["forget"]).output().unwrap();
    assert_code(&out, 1, "needs a policy");

    let out = w
        .cv("phone")
        .args(["forget", "--keep-last", "2", "--json"])
        .output()
        .unwrap();
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["remove"].as_array().unwrap().len(), 2);
    let left = w.snapshot_ids("phone");
    assert_eq!(left.len(), 2);
    assert!(left.contains(&ids[2]) && left.contains(&ids[3]));

    let size_before = dir_size(&w.p("repo"));
    let out = w
        .cv("phone")
        .args(["prune", "--dry-run", "--grace", "0"])
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("would condemn"));
    assert_eq!(dir_size(&w.p("repo")), size_before);

    // Default grace: the plan is written, nothing deleted yet.
    let out = w.cv("phone").args(["prune", "--json"]).output().unwrap();
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["plan"].is_string(), "{v}");
    assert_eq!(v["deleted_packs"], 0);
    // day0.mp4 and day1.mp4 (2 MiB each) are garbage: whole packs, or repacked out of one.
    let freed = v["unused_bytes"].as_u64().unwrap() + v["repacked_bytes"].as_u64().unwrap()
        - v["new_bytes"].as_u64().unwrap();
    assert!(freed >= 4 << 20, "{v}");
    // A backup between mark and sweep works and still restores after the sweep.
    std::fs::write(src.join("late.txt"), b"written between mark and sweep").unwrap();
    let late = w.backup("phone", &src);

    let out = w
        .cv("phone")
        .args(["prune", "--grace", "0", "--json"])
        .output()
        .unwrap();
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["deleted_packs"].as_u64().unwrap() >= 2, "{v}");
    let size_after = dir_size(&w.p("repo"));
    eprintln!("repository {size_before} → {size_after} bytes");
    assert!(
        size_after + (4 << 20) <= size_before + (1 << 20),
        "{size_before} → {size_after}"
    );

    w.restore_matches(
        "phone",
        &ids[2],
        &[("keep.bin", keep.clone()), ("day2.mp4", states[2].clone())],
    );
    w.restore_matches(
        "phone",
        &ids[3],
        &[("keep.bin", keep.clone()), ("day3.mp4", states[3].clone())],
    );
    w.restore_matches("phone", &late, &[("keep.bin", keep)]);
    let out = w
        .cv("phone")
        .args(["check", "--read-data"])
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("warning"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn keep_daily_weekly_monthly_keep_the_newest_per_period() {
    // All snapshots of this test are made today: --keep-daily 1 keeps only the newest.
    let w = World::new();
    w.init("phone");
    let src = w.p("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        std::fs::write(src.join("f"), format!("{i}")).unwrap();
        ids.push(w.backup("phone", &src));
    }
    let out = w
        .cv("phone")
        .args([
            "forget",
            "--keep-daily",
            "1",
            "--keep-weekly",
            "1",
            "--keep-monthly",
            "1",
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(w.snapshot_ids("phone"), vec![ids[2].clone()]);
}

#[test]
fn a_hidden_newest_snapshot_is_a_rollback_for_the_device_that_saw_it() {
    let w = World::new();
    let key = w.init("phone");
    let src = w.p("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), "one").unwrap();
    w.backup("phone", &src);
    std::fs::write(src.join("a"), "two").unwrap();
    let newest = w.backup("phone", &src);
    let path = w.p(&format!("repo/snapshots/{newest}"));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();

    for args in [
        &["snapshots"][..],
        &["check"][..],
        &["restore", "latest", "--target", "/nonexistent-target"][..],
    ] {
        let out = w.cv("phone").args(args).output().unwrap();
        assert_code(&out, 9, "rolled back");
    }
    // Backing up over a rolled-back repository is refused too (it would hide the rollback).
    let out = w.cv("phone").arg("backup").arg(&src).output().unwrap();
    assert_code(&out, 9, "--accept-rollback");
    let out = w
        .cv("phone")
        .args(["--accept-rollback", "snapshots"])
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARNING"));

    // A fresh device with only the key cannot know (documented limit of key mode).
    let out = w
        .cv("fresh")
        .env("CHATVAULT_KEY", &key)
        .args(["--repo", &w.repo(), "snapshots"])
        .output()
        .unwrap();
    assert_ok(&out);

    // Storage gives it back: fine again.
    std::fs::write(&path, bytes).unwrap();
    assert_ok(&w.cv("phone").arg("snapshots").output().unwrap());
}

/// Two devices back up to one repository at the same time, while a third runs forget + prune:
/// every backup succeeds, no snapshot is lost, and everything restores.
#[test]
fn concurrent_devices_and_prune_lose_nothing() {
    let w = World::new();
    let key = w.init("phone-a");
    let mut srcs = Vec::new();
    for d in ["a", "b"] {
        let s = w.p(&format!("src-{d}"));
        std::fs::create_dir_all(&s).unwrap();
        srcs.push(s);
    }
    let spawn = |home: &str, src: &Path, round: u64| {
        std::fs::write(
            src.join("big.bin"),
            noise(round * 7 + src.as_os_str().len() as u64, 12 << 20),
        )
        .unwrap();
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("chatvault"));
        c.env_remove("CHATVAULT_REPO")
            .env_remove("CHATVAULT_HOME")
            .env("CHATVAULT_KEY", &key)
            .arg("--home")
            .arg(w.p(home))
            .args(["--repo", &w.repo(), "backup", "--json"])
            .arg(src)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let mut all_ids = Vec::new();
    for round in 0..3u64 {
        let a = spawn("phone-a", &srcs[0], round);
        let b = spawn("phone-b", &srcs[1], round);
        // Meanwhile: forget everything but the newest per device, and prune immediately.
        let out = w
            .cv("admin")
            .env("CHATVAULT_KEY", &key)
            .args(["--repo", &w.repo(), "forget", "--keep-last", "1"])
            .output()
            .unwrap();
        assert_ok(&out);
        let out = w
            .cv("admin")
            .env("CHATVAULT_KEY", &key)
            .args(["--repo", &w.repo(), "prune", "--grace", "0"])
            .output()
            .unwrap();
        assert_ok(&out);
        for child in [a, b] {
            let out = child.wait_with_output().unwrap();
            assert_ok(&out);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            all_ids.push(v["id"].as_str().unwrap().to_string());
        }
        // Both new snapshots are there (forget ran while they were being written).
        let listed = w.snapshot_ids_with_key(&key);
        for id in &all_ids[all_ids.len() - 2..] {
            assert!(listed.contains(id), "round {round}: {id} lost");
        }
    }
    // A final prune with nothing running sweeps every plan; the newest snapshot of each device
    // restores and check --read-data passes.
    let out = w
        .cv("admin")
        .env("CHATVAULT_KEY", &key)
        .args(["--repo", &w.repo(), "prune", "--grace", "0"])
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("not swept"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for (i, src) in srcs.iter().enumerate() {
        let id = &all_ids[all_ids.len() - 2 + i];
        let target = w.p(&format!("final-{i}"));
        let out = w
            .cv("admin")
            .env("CHATVAULT_KEY", &key)
            .args(["--repo", &w.repo(), "restore", id, "--target"])
            .arg(&target)
            .output()
            .unwrap();
        assert_ok(&out);
        let name = src.file_name().unwrap();
        assert_eq!(
            std::fs::read(target.join(name).join("big.bin")).unwrap(),
            std::fs::read(src.join("big.bin")).unwrap()
        );
    }
    let out = w
        .cv("admin")
        .env("CHATVAULT_KEY", &key)
        .args(["--repo", &w.repo(), "check", "--read-data"])
        .output()
        .unwrap();
    assert_ok(&out);
}

impl World {
    fn snapshot_ids_with_key(&self, key: &str) -> Vec<String> {
        let out = self
            .cv("admin")
            .env("CHATVAULT_KEY", key)
            .args(["--repo", &self.repo(), "snapshots", "--json"])
            .output()
            .unwrap();
        assert_ok(&out);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Two phones that both call themselves `localhost` (as every Android phone does) back up the
/// same path into one repository, interleaved. Each home has its own device id: each
/// incremental backup continues from its own phone's snapshot, `snapshots` tells them apart,
/// and `forget --keep-last 1` keeps the newest snapshot of each phone.
#[test]
fn two_localhost_phones_have_their_own_parents_and_retention_groups() {
    let w = World::new();
    let key = w.init("phone-a");
    let src = w.p("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("msgstore.bin"), noise(40, 200_000)).unwrap();
    let backup = |home: &str| -> serde_json::Value {
        let out = w
            .cv(home)
            .env("CHATVAULT_KEY", &key)
            .args([
                "--repo",
                &w.repo(),
                "backup",
                "--json",
                "--host",
                "localhost",
            ])
            .arg(&src)
            .output()
            .unwrap();
        assert_ok(&out);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let a1 = backup("phone-a");
    let b1 = backup("phone-b");
    let a2 = backup("phone-a");
    let b2 = backup("phone-b");
    let device = |v: &serde_json::Value| v["snapshot"]["device"].as_str().unwrap().to_string();
    let (da, db) = (device(&a1), device(&b1));
    assert_eq!(da.len(), 32);
    assert_ne!(da, db, "a new phone (home) gets a new device id");
    assert_eq!(device(&a2), da, "the id is stable");
    assert_eq!(
        std::fs::read_to_string(w.p("phone-a/device-id"))
            .unwrap()
            .trim(),
        da
    );
    assert!(
        b1["snapshot"]["parent"].is_null(),
        "never another phone's snapshot"
    );
    assert_eq!(a2["snapshot"]["parent"], a1["id"]);
    assert_eq!(b2["snapshot"]["parent"], b1["id"]);
    assert_eq!(a2["snapshot"]["summary"]["files_read"], 0);

    let out = w
        .cv("phone-a")
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    assert_ok(&out);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 4);
    assert!(list.iter().all(|s| s["hostname"] == "localhost"));
    assert!(list.iter().any(|s| s["device_short"] == da[..8]));
    let out = w.cv("phone-a").arg("snapshots").output().unwrap();
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&da[..8]) && text.contains(&db[..8]), "{text}");

    let out = w
        .cv("phone-a")
        .args(["forget", "--keep-last", "1", "--json"])
        .output()
        .unwrap();
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut kept: Vec<&str> = v["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    kept.sort();
    let mut want = vec![a2["id"].as_str().unwrap(), b2["id"].as_str().unwrap()];
    want.sort();
    assert_eq!(kept, want, "the newest snapshot of each phone");
    assert_eq!(v["remove"].as_array().unwrap().len(), 2);
}
