//! kill -9 safety (docs/FORMAT.md §12, docs/SECURITY.md "Crash safety"): `chatvault backup` is
//! killed with SIGKILL at random points, over and over; after every kill the repository must pass
//! `check`, every earlier snapshot must restore byte-identical, and the next backup must work
//! (stale locks of killed processes never block it).
//!
//! Runs against the local S3 server when `CHATVAULT_TEST_S3=1` (see `scripts/ci-s3.sh`; 15
//! trials), and always against a local folder repository (30 trials without S3, else 10).
//! `kill9_one_trial::<backend>` runs one trial, killed mid-run, against every other backend of
//! tests/common/backends.rs whose server is configured (scripts/ci-backends.sh).
//! `CHATVAULT_CRASH_TRIALS`, `CHATVAULT_CRASH_SEED` and `CHATVAULT_CRASH_CHANGE_MIB` (default
//! 20) change the trial count, the seed of the kill points and the data changed per trial.
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;

mod common;
use common::{Tree, assert_ok, noise, tree};

struct World {
    dir: tempfile::TempDir,
    repo: String,
    /// Extra environment for every command (backend settings).
    env: Vec<(String, String)>,
    /// Variables removed for every command.
    remove: Vec<String>,
}

impl World {
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn cv(&self, home: &str) -> Command {
        Command::from(self.std_cv(home))
    }
    /// The same as [`World::cv`] as a plain std command (to spawn and kill).
    fn std_cv(&self, home: &str) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("chatvault"));
        self.prepare(&mut c, home);
        c
    }
    fn prepare(&self, c: &mut std::process::Command, home: &str) {
        c.env_remove("CHATVAULT_KEY")
            .env_remove("CHATVAULT_REPO")
            .env_remove("CHATVAULT_HOME")
            .env("NO_COLOR", "1")
            .env("NO_PROXY", "127.0.0.1,localhost");
        for k in &self.remove {
            c.env_remove(k);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.arg("--home").arg(self.p(home));
    }
    fn init(&self, home: &str) -> String {
        let out = self
            .cv(home)
            .args(["init", "--key", "--repo", &self.repo])
            .output()
            .unwrap();
        assert_ok(&out);
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines()
            .map(str::trim)
            .find(|l| l.len() == 79 && l.split(' ').count() == 16)
            .unwrap_or_else(|| panic!("no grouped key in output:\n{text}"))
            .to_string()
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
}

/// A seeded RNG for kill points (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

fn base_source(root: &Path) {
    std::fs::create_dir_all(root.join("Databases")).unwrap();
    std::fs::create_dir_all(root.join("Media")).unwrap();
    let text: String = (0..20000)
        .map(|i| format!("message {i}: see you at {} o'clock\n", i % 12))
        .collect();
    std::fs::write(root.join("Databases/chat.txt"), text).unwrap();
    std::fs::write(root.join("Media/IMG-1.jpg"), noise(1, 2 << 20)).unwrap();
}

/// The trial's change: a new media file of `size` bytes (replacing the previous trial's) and a
/// changed chat log.
fn change_source(root: &Path, trial: u64, size: usize) {
    std::fs::write(root.join("Media/VID-trial.mp4"), noise(1000 + trial, size)).unwrap();
    let mut text = std::fs::read(root.join("Databases/chat.txt")).unwrap();
    text.extend_from_slice(format!("message after trial {trial}\n").as_bytes());
    std::fs::write(root.join("Databases/chat.txt"), text).unwrap();
}

fn uploaded_bytes(out: &Output) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["snapshot"]["summary"]["uploaded_bytes"].as_u64().unwrap()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Default, Debug)]
struct Outcomes {
    killed: usize,
    completed_before_kill: usize,
    /// Killed after the snapshot was published (while releasing the lock or recording the
    /// snapshot on the device): the snapshot is complete and must restore.
    killed_after_publishing: usize,
}

/// Where in a run the kills land, in percent of a measured backup's duration.
#[derive(Clone, Copy)]
struct KillWindow {
    from_pct: u64,
    to_pct: u64,
}

/// Spread over a whole run and a little past it, so some runs finish before the kill.
const WHOLE_RUN: KillWindow = KillWindow {
    from_pct: 0,
    to_pct: 115,
};
/// Well inside a run: a single trial that must really be killed mid-run.
const MID_RUN: KillWindow = KillWindow {
    from_pct: 15,
    to_pct: 60,
};

/// The kill -9 loop against `repo` (with `env` for every command, `remove` removed).
fn kill9_trials(
    label: &str,
    repo: String,
    env: Vec<(String, String)>,
    remove: Vec<String>,
    default_trials: u64,
    window: KillWindow,
) {
    let started = Instant::now();
    let trials = env_u64("CHATVAULT_CRASH_TRIALS", default_trials);
    let seed = env_u64("CHATVAULT_CRASH_SEED", 0x5eed_c0de);
    let mut rng = Rng(seed | 1);
    let w = World {
        dir: tempfile::tempdir().unwrap(),
        repo,
        env,
        remove,
    };
    let src = w.p("chats");
    base_source(&src);
    let key = w.init("phone");

    // Snapshot 1, and what every snapshot must restore to.
    assert_ok(&w.cv("phone").arg("backup").arg(&src).output().unwrap());
    let mut expected: Vec<(String, Tree)> = vec![(w.snapshot_ids("phone")[0].clone(), tree(&src))];

    // Each trial changes ~20 MiB: more than one 16 MiB pack, so a pack is uploaded while the
    // run goes on and kills land before, during and after pack uploads, index and snapshot
    // writes. Time one such backup (in a throwaway repository on the same backend, so the real
    // one only holds the snapshots checked below) to spread the kill points over a whole run.
    let size = env_u64("CHATVAULT_CRASH_CHANGE_MIB", 20) as usize * (1 << 20);
    let calib = World {
        dir: tempfile::tempdir().unwrap(),
        repo: format!("{}-calibration", w.repo.trim_end_matches('/')),
        env: w.env.clone(),
        remove: w.remove.clone(),
    };
    let calib_src = calib.p("chats");
    base_source(&calib_src);
    calib.init("phone");
    assert_ok(
        &calib
            .cv("phone")
            .arg("backup")
            .arg(&calib_src)
            .output()
            .unwrap(),
    );
    change_source(&calib_src, 999, size);
    let t = Instant::now();
    assert_ok(
        &calib
            .cv("phone")
            .arg("backup")
            .arg(&calib_src)
            .output()
            .unwrap(),
    );
    let duration = t.elapsed();
    let kill_from = duration.as_millis() as u64 * window.from_pct / 100;
    let kill_range = duration.as_millis() as u64 * window.to_pct / 100;
    eprintln!(
        "[{label}] a backup of a {:.1} MB change takes {duration:.2?}; {trials} trials, kill within {kill_from}..{kill_range} ms, seed {seed:#x}",
        size as f64 / 1e6
    );

    let mut outcomes = Outcomes::default();
    let mut kill_points = Vec::new();
    let mut restored_newest = 0;
    let mut last_completed = false;
    for trial in 0..trials {
        change_source(&src, trial, size);
        let delay = Duration::from_millis(kill_from + rng.below(kill_range - kill_from + 1));
        let mut child = w
            .std_cv("phone")
            .args(["backup", "--json"])
            .arg(&src)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap();
        match finished {
            Some(status) => {
                // The backup beat the kill: it must have succeeded.
                let mut err = String::new();
                use std::io::Read;
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                assert!(
                    status.success(),
                    "trial {trial}: backup failed: {status:?}\n{err}"
                );
                outcomes.completed_before_kill += 1;
                let ids = w.snapshot_ids("phone");
                let new: Vec<&String> = ids
                    .iter()
                    .filter(|id| !expected.iter().any(|(e, _)| e == *id))
                    .collect();
                assert_eq!(new.len(), 1, "trial {trial}: one new snapshot");
                last_completed = true;
                expected.push((new[0].clone(), tree(&src)));
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                let status = child.wait().unwrap();
                use std::os::unix::process::ExitStatusExt;
                last_completed = status.signal() != Some(9);
                if status.signal() == Some(9) {
                    outcomes.killed += 1;
                    kill_points.push(delay.as_millis());
                    // A kill that lands after the snapshot write (the lock release and the
                    // device's rollback memory come after it) leaves a complete snapshot: it
                    // is expected, and must restore like any other. Never more than one.
                    let ids = w.snapshot_ids("phone");
                    let new: Vec<String> = ids
                        .into_iter()
                        .filter(|id| !expected.iter().any(|(e, _)| e == id))
                        .collect();
                    assert!(new.len() <= 1, "trial {trial}: {} new snapshots", new.len());
                    if let Some(id) = new.into_iter().next() {
                        outcomes.killed_after_publishing += 1;
                        last_completed = true;
                        expected.push((id, tree(&src)));
                    }
                } else {
                    // It exited between try_wait and kill.
                    assert!(status.success(), "trial {trial}: {status:?}");
                    outcomes.completed_before_kill += 1;
                    let ids = w.snapshot_ids("phone");
                    for id in ids {
                        if !expected.iter().any(|(e, _)| *e == id) {
                            expected.push((id, tree(&src)));
                        }
                    }
                }
            }
        }

        // The repository is consistent: check passes (unreferenced packs are only a warning),
        // and the visible snapshots are exactly the completed ones.
        let out = w.cv("phone").args(["check"]).output().unwrap();
        assert_ok(&out);
        let ids = w.snapshot_ids("phone");
        assert_eq!(
            ids.len(),
            expected.len(),
            "trial {trial}: a killed backup published a snapshot"
        );
        // Every earlier snapshot restores byte-identical: the first and the newest each trial
        // (restoring all of them every time would take minutes), all of them at the end.
        let mut to_restore = vec![0];
        if expected.len() > 1 && expected.len() != restored_newest {
            to_restore.push(expected.len() - 1);
            restored_newest = expected.len();
        }
        for i in to_restore {
            restore_and_compare(&w, &key, &expected[i], &format!("t{trial}-s{i}"));
        }
    }

    // A normal backup completes despite the stale locks of killed processes, and reuses what
    // killed runs stored and indexed (the engine indexes every 4 packs or 60 s, and at the end).
    let full = size as u64 + 4096;
    let out = w
        .cv("phone")
        .args(["backup", "--json"])
        .arg(&src)
        .output()
        .unwrap();
    assert_ok(&out);
    let uploaded = uploaded_bytes(&out);
    let ids = w.snapshot_ids("phone");
    let newest = ids
        .iter()
        .find(|id| !expected.iter().any(|(e, _)| e == *id))
        .expect("final snapshot")
        .clone();
    expected.push((newest, tree(&src)));
    for (i, e) in expected.iter().enumerate() {
        restore_and_compare(&w, &key, e, &format!("final-s{i}"));
    }
    let out = w
        .cv("phone")
        .args(["check", "--read-data"])
        .output()
        .unwrap();
    assert_ok(&out);
    let check_out =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let unreferenced = check_out
        .lines()
        .find(|l| l.contains("not referenced"))
        .unwrap_or("no unreferenced packs")
        .trim()
        .to_string();
    eprintln!(
        "[{label}] {trials} trials in {:.1?}: {} killed (at {:?} ms; {} of them after publishing \
         their snapshot), {} completed before the kill; final backup uploaded {uploaded} bytes \
         for a {full}-byte change (the last trial {}); check: {unreferenced}",
        started.elapsed(),
        outcomes.killed,
        kill_points,
        outcomes.killed_after_publishing,
        outcomes.completed_before_kill,
        if last_completed {
            "had completed"
        } else {
            "was killed"
        },
    );
    assert!(outcomes.killed > 0, "no trial was actually killed");
    // Never more than a full upload of the change (plus trees and index).
    assert!(
        uploaded <= full + (1 << 20),
        "final backup uploaded {uploaded} for a {full}-byte change"
    );
}

fn restore_and_compare(w: &World, key: &str, (id, want): &(String, Tree), tag: &str) {
    let target = w.p(&format!("restore-{tag}"));
    let out = w
        .cv("new-device")
        .env("CHATVAULT_KEY", key)
        .args(["--repo", &w.repo, "restore", id, "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(&tree(&target.join("chats")), want, "{tag}: snapshot {id}");
    std::fs::remove_dir_all(&target).unwrap();
}

#[test]
fn kill9_during_backup_never_damages_a_local_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo").to_string_lossy().into_owned();
    // The S3 variant is the main one when a server is there; then this one is a shorter check of
    // the fs backend's own mechanism (tmp/ + rename).
    let s3 =
        cfg!(feature = "s3") && std::env::var("CHATVAULT_TEST_S3").ok().as_deref() == Some("1");
    kill9_trials(
        "local",
        repo,
        Vec::new(),
        Vec::new(),
        if s3 { 10 } else { 30 },
        WHOLE_RUN,
    );
}

/// A fresh repository URL under `prefix` on the local S3 server, or `None` (and a SKIPPED line)
/// when no server is configured.
#[cfg(feature = "s3")]
fn s3_repo(prefix: &str) -> Option<String> {
    if std::env::var("CHATVAULT_TEST_S3").ok().as_deref() != Some("1") {
        eprintln!("SKIPPED: no S3 server (run scripts/ci-s3.sh)");
        return None;
    }
    let bucket =
        std::env::var("CHATVAULT_TEST_S3_BUCKET").unwrap_or_else(|_| "chatvault-test".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    Some(format!(
        "s3://{bucket}/{prefix}-{}-{nanos:x}",
        std::process::id()
    ))
}

#[cfg(feature = "s3")]
#[test]
fn kill9_during_backup_never_damages_an_s3_repository() {
    let Some(repo) = s3_repo("crash") else {
        return;
    };
    kill9_trials(
        "s3",
        repo,
        vec![("CHATVAULT_S3_PART_SIZE".into(), "5MiB".into())],
        Vec::new(),
        // 15 seeded points keep CI well under 30 minutes; CHATVAULT_CRASH_TRIALS=100 for more.
        15,
        WHOLE_RUN,
    );
}

/// One trial against a backend of the table, killed mid-run (S3 has its 15 trials above).
fn kill9_one_trial(name: &'static str) {
    let Some(t) = common::backends::target(name) else {
        return;
    };
    let repo = t.repo("crash");
    kill9_trials(name, repo, t.env, t.remove, 1, MID_RUN);
}

/// `kill9_one_trial::gcs`, …: one module per backend.
macro_rules! one_trial_per_backend {
    ($($backend:ident),* $(,)?) => {
        mod kill9_one_trial {
            $(
                #[test]
                fn $backend() {
                    super::kill9_one_trial(stringify!($backend));
                }
            )*
        }
    };
}

one_trial_per_backend!(gcs, azblob, webdav, gdrive, onedrive, dropbox);

// ---------------------------------------------------------------------------------------------
// kill -9 during restore (docs/FORMAT.md §12.1 rule 12, README "Restoring"): `chatvault restore` is
// killed at seeded random points of its progress (after a random number of its `--json` events and
// a random delay; a trial that completes first is not counted, and the next point is drawn earlier,
// so at least the asked number of runs is really killed); at every kill, each file under its real
// name in the target is complete and equal to the snapshot (temporary entries are the only partial
// ones); the rerun with the same target completes, keeps the files that were complete (same inode:
// not written again), removes the dead run's temporary entries, downloads at most what was still
// missing plus one read region (4 MiB, `READ_RUN`) per parallel reader — tighter than the issue's
// one 16 MiB pack per reader — and leaves exactly the snapshot (databases and media byte for byte,
// compared with a clean restore of the same snapshot). Nothing beside the target changes.
// `CHATVAULT_RESTORE_CRASH_TRIALS` overrides the number of killed trials (default 20 each).

/// What a rerun may download beyond the missing files, per parallel reader: one read region
/// (`chatvault_repo::repository::READ_RUN`; metadata and the small gaps a region may span).
const ALLOWANCE_PER_READER: u64 = chatvault_repo::repository::READ_RUN;
/// Parallel readers the trials use.
const READERS: u64 = 2;

/// Chats with a real SQLite database (restored first) and `media_mib` MiB of media in files of
/// 1–5 MiB.
fn restore_source(root: &Path, media_mib: usize) {
    std::fs::create_dir_all(root.join("Databases")).unwrap();
    std::fs::create_dir_all(root.join("Media")).unwrap();
    let db = rusqlite::Connection::open(root.join("Databases/msgstore.db")).unwrap();
    db.execute_batch("CREATE TABLE message(id INTEGER PRIMARY KEY, body TEXT);")
        .unwrap();
    let tx = db.unchecked_transaction().unwrap();
    for i in 0..20_000 {
        tx.execute(
            "INSERT INTO message(body) VALUES (?1)",
            [format!("message {i}: see you at {} o'clock", i % 12)],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    drop(db);
    std::fs::write(root.join("Databases/notes.txt"), b"backup notes\n").unwrap();
    let mut left = media_mib << 20;
    let mut i = 0u64;
    while left > 0 {
        let size = (((i % 5) + 1) as usize) << 20;
        let size = size.min(left);
        std::fs::write(root.join(format!("Media/IMG-{i}.jpg")), noise(50 + i, size)).unwrap();
        left -= size;
        i += 1;
    }
}

fn is_partial(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(".chatvault-partial-"))
}

fn inodes(root: &Path, files: &Tree) -> std::collections::BTreeMap<PathBuf, u64> {
    use std::os::unix::fs::MetadataExt;
    files
        .keys()
        .map(|p| (p.clone(), std::fs::metadata(root.join(p)).unwrap().ino()))
        .collect()
}

/// The last line of `restore --json`: the summary event.
fn summary(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().expect("restore printed events");
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["event"], "summary", "{text}");
    v
}

fn restore_kill9_trials(label: &str, repo: String, env: Vec<(String, String)>, media_mib: usize) {
    let started = Instant::now();
    let trials = env_u64("CHATVAULT_RESTORE_CRASH_TRIALS", 20);
    let seed = env_u64("CHATVAULT_CRASH_SEED", 0x5eed_c0de);
    let mut rng = Rng(seed | 1);
    let w = World {
        dir: tempfile::tempdir().unwrap(),
        repo,
        env,
        remove: Vec::new(),
    };
    let src = w.p("chats");
    restore_source(&src, media_mib);
    let key = w.init("phone");
    assert_ok(&w.cv("phone").arg("backup").arg(&src).output().unwrap());
    let id = w.snapshot_ids("phone")[0].clone();
    // Something beside the targets that must never change.
    std::fs::create_dir_all(w.p("outside")).unwrap();
    std::fs::write(w.p("outside/keep.txt"), b"not yours").unwrap();
    let outside = tree(&w.p("outside"));

    let restore = |home: &str, target: &Path| {
        let mut c = w.std_cv(home);
        c.env("CHATVAULT_KEY", &key)
            .args(["--repo", &w.repo, "restore", &id, "--json", "--readers"])
            .arg(READERS.to_string())
            .arg("--target")
            .arg(target);
        c
    };
    // A clean restore: what every trial must end with, and how long a restore takes.
    let reference = w.p("reference");
    let t = Instant::now();
    let out = restore("reference-device", &reference).output().unwrap();
    let duration = t.elapsed();
    assert_ok(&out);
    let want = tree(&reference);
    assert!(want.keys().any(|p| p.ends_with("msgstore.db")), "{want:?}");
    // Kill points follow the restore's own progress, not the clock (a loaded machine makes a
    // run several times slower or faster than the reference): a trial is killed once it has
    // printed a random number of its events (fewer than all: the last is the summary), after a
    // further random delay of up to one event's share of the reference run.
    let events = String::from_utf8_lossy(&out.stdout).lines().count() as u64;
    assert!(events >= 2, "the reference restore printed {events} events");
    let step_ms = duration.as_millis() as u64 / events;
    eprintln!(
        "[{label}] a restore of {} files ({:.1} MB) takes {duration:.2?} and prints {events} \
         events; {trials} kills, each after 0..{} events and 0..={step_ms} ms, seed {seed:#x}",
        want.len(),
        want.values().map(|v| v.0).sum::<u64>() as f64 / 1e6,
        events - 1
    );

    let (mut killed, mut kept_total, mut cleaned_total, mut worst_extra) = (0, 0, 0, 0i64);
    let (mut trial, mut completed_before_kill) = (0, 0);
    // A trial that completes before its kill point is checked like the others, and the next
    // trial's point is drawn below its event count, until `trials` runs were really killed.
    let mut events_below = events;
    while killed < trials {
        assert!(
            trial < trials * 3,
            "[{label}] too few trials were killed: {killed} of {trial}"
        );
        let target = w.p(&format!("t{trial}/target"));
        let home = format!("device-{trial}");
        let wait_events = rng.below(events_below);
        let delay = Duration::from_millis(rng.below(step_ms + 1));
        let mut child = restore(&home, &target)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The rest of the events (a few hundred bytes) fit in the pipe: the run never blocks
        // on them.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for _ in 0..wait_events {
            if !matches!(lines.next(), Some(Ok(_))) {
                break;
            }
        }
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
        }
        let status = child.wait().unwrap();
        drop(lines);
        // Killed only if the signal ended it (it may have exited between the two calls).
        if status.signal() == Some(9) {
            killed += 1;
            events_below = events;
        } else {
            assert!(
                status.success(),
                "[{label}] trial {trial}: restore failed: {status}"
            );
            completed_before_kill += 1;
            events_below = wait_events.max(1);
        }

        // At the kill: every file under its real name is complete; only temporary entries
        // may be partial.
        let at_kill = if target.exists() {
            tree(&target)
        } else {
            Tree::new()
        };
        let partial = at_kill.keys().filter(|p| is_partial(p)).count();
        let complete: Tree = at_kill
            .into_iter()
            .filter(|(p, _)| !is_partial(p))
            .collect();
        for (p, v) in &complete {
            assert_eq!(
                want.get(p),
                Some(v),
                "[{label}] trial {trial}: {} is under its real name but not complete",
                p.display()
            );
        }
        let missing: u64 = want
            .iter()
            .filter(|(p, _)| !complete.contains_key(*p))
            .map(|(_, v)| v.0)
            .sum();
        let before = inodes(&target, &complete);

        // The rerun continues.
        let out = restore(&home, &target).output().unwrap();
        assert_ok(&out);
        let s = summary(&out);
        assert_eq!(
            tree(&target),
            want,
            "[{label}] trial {trial}: the resumed restore differs from the snapshot"
        );
        assert_eq!(
            inodes(&target, &complete),
            before,
            "[{label}] trial {trial}: complete files were written again"
        );
        assert_eq!(s["kept"].as_u64(), Some(complete.len() as u64), "{s}");
        assert_eq!(s["cleaned"].as_u64(), Some(partial as u64), "{s}");
        let downloaded = s["downloaded_bytes"].as_u64().unwrap();
        assert!(
            downloaded <= missing + READERS * ALLOWANCE_PER_READER,
            "[{label}] trial {trial}: the rerun downloaded {downloaded} bytes; {missing} were \
             missing"
        );
        worst_extra = worst_extra.max(downloaded as i64 - missing as i64);
        kept_total += complete.len();
        cleaned_total += partial;
        std::fs::remove_dir_all(w.p(&format!("t{trial}"))).unwrap();
        trial += 1;
    }
    assert_eq!(tree(&w.p("outside")), outside, "something outside changed");
    let mut top: Vec<String> = std::fs::read_dir(w.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("device-"))
        .collect();
    top.sort();
    assert_eq!(
        top,
        ["chats", "outside", "phone", "reference", "reference-device"],
        "entries appeared beside the targets"
    );
    eprintln!(
        "[{label}] {trial} trials in {:.1?}: {killed} killed, {completed_before_kill} completed \
         before their kill point; reruns kept {kept_total} complete files and removed \
         {cleaned_total} temporary entries; worst download beyond what was missing: \
         {worst_extra} bytes (allowed {})",
        started.elapsed(),
        READERS * ALLOWANCE_PER_READER
    );
    assert!(killed >= trials, "too few trials were killed: {killed}");
}

#[test]
fn kill9_during_restore_resumes_from_a_local_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo").to_string_lossy().into_owned();
    restore_kill9_trials("restore-local", repo, Vec::new(), 16);
}

#[cfg(feature = "s3")]
#[test]
fn kill9_during_restore_resumes_from_an_s3_repository() {
    let Some(repo) = s3_repo("restore-crash") else {
        return;
    };
    restore_kill9_trials("restore-s3", repo, Vec::new(), 12);
}
