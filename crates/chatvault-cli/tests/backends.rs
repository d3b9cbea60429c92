//! The same cycle against every cloud backend chatvault ships, each on a real server that speaks
//! its protocol (tests/common/backends.rs has the table): S3 on moto (scripts/ci-s3.sh), Azure
//! Blob on Azurite, GCS on fake-gcs-server, WebDAV on `rclone serve webdav` with basic auth
//! (scripts/ci-backends.sh); Google Drive, OneDrive and Dropbox against a user's own account
//! when they set it up (README "Running the backend tests"). A backend whose variables are not
//! set prints `SKIPPED` and passes; CI sets them for the four local servers and fails if one
//! cannot start.
//!
//! Per backend (`<backend>::…`):
//! - `standard_cycle`: init, backup, incremental backup, restore byte-identical on a new device,
//!   `check --read-data`; a second `init` on the same location is refused (write-once holds on
//!   this server, atomically or by check-then-write); how chatvault writes (conditional write or
//!   check-then-write, in parts or in one request) is what the table expects; restore reads by
//!   range. Prints the wall time and the requests of the cycle.
//! - `missing_container_fails_fast`: a bucket/container/share that does not exist is a clear
//!   error, exit 1, without a single retry.
//! - `bad_credentials_fail_fast`: credentials the service refuses (or, where the emulator accepts
//!   any, none) are a clear error, exit 1, without a retry, and no secret in the output.
//! - `write_once_on_the_server`: through the storage layer, a second write to a name leaves the
//!   first; with conditional writes exactly one of 8 racing writers wins.
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use assert_cmd::Command;

mod common;
use common::backends::{BadCredentials, Stats, Target, target};
use common::{assert_ok, assert_restored, noise};

struct World {
    dir: tempfile::TempDir,
    repo: String,
    target: Target,
}

impl World {
    fn new(target: Target, tag: &str) -> World {
        World {
            dir: tempfile::tempdir().unwrap(),
            repo: target.repo(tag),
            target,
        }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn cv(&self, home: &str) -> Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("chatvault"));
        c.env_remove("CHATVAULT_KEY")
            .env_remove("CHATVAULT_REPO")
            .env_remove("CHATVAULT_HOME")
            .env("NO_COLOR", "1")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("CHATVAULT_STORAGE_STATS", "1");
        self.target.apply(&mut c);
        c.arg("--home").arg(self.p(home));
        Command::from(c)
    }
    /// No secret of the backend in a command's output.
    fn no_secret(&self, out: &Output, extra: &[String]) {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for s in self.target.secrets.iter().chain(extra) {
            assert!(
                s.len() < 4 || !all.contains(s.as_str()),
                "[{}] a secret leaked into the output",
                self.target.name
            );
        }
    }
}

/// A timed run of one chatvault command that must succeed; its requests go into `stats`.
fn timed(c: &mut Command, spent: &mut Duration, stats: &mut Stats) -> Output {
    let t = Instant::now();
    let out = c.output().unwrap();
    *spent += t.elapsed();
    assert_ok(&out);
    stats.add(&Stats::of(&out.stderr));
    out
}

fn uploaded(out: &Output) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["snapshot"]["summary"]["uploaded_bytes"].as_u64().unwrap()
}

fn grouped_key(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .map(str::trim)
        .find(|l| l.len() == 79 && l.split(' ').count() == 16)
        .unwrap_or_else(|| panic!("no grouped key in output:\n{text}"))
        .to_string()
}

fn describe(s: &Stats) -> String {
    let methods: Vec<String> = s
        .http_by_method
        .iter()
        .map(|(m, n)| format!("{m} {n}"))
        .collect();
    format!(
        "{} HTTP requests ({}), {} storage operations (reads {}, ranged reads {}, writes {}, \
         stats {}, lists {}, deletes {}), {} part uploads, {} retries",
        s.http_requests,
        methods.join(", "),
        s.operations(),
        s.reads,
        s.ranged_reads,
        s.writes,
        s.stats,
        s.lists,
        s.deletes,
        s.part_uploads,
        s.retries
    )
}

/// The small sample chat folder (`WhatsApp/`), plus one 12 MB video beside it so that a pack
/// is larger than the 5 MiB part size (multipart where the service has it).
fn make_source(w: &World, src: &Path) {
    assert_ok(
        &w.cv("tools")
            .arg("sample")
            .arg(src.join("WhatsApp"))
            .args(["--preset", "small"])
            .output()
            .unwrap(),
    );
    std::fs::create_dir_all(src.join("Movies")).unwrap();
    std::fs::write(src.join("Movies/VID-cycle.mp4"), noise(15, 12_000_000)).unwrap();
}

fn standard_cycle(name: &'static str) {
    let Some(t) = target(name) else { return };
    let expect = t.expect;
    let w = World::new(t, "cycle");
    let src = w.p("phone");
    make_source(&w, &src);

    let mut spent = Duration::ZERO;
    let mut total = Stats::default();
    let mut backup_stats = Stats::default();
    let mut restore_stats = Stats::default();

    // init and the first backup.
    let out = timed(
        w.cv("phone-a").args(["init", "--key", "--repo", &w.repo]),
        &mut spent,
        &mut total,
    );
    let key = grouped_key(&out);
    let out = timed(
        w.cv("phone-a").args(["backup", "--json"]).arg(&src),
        &mut spent,
        &mut backup_stats,
    );
    let first = uploaded(&out);
    assert!(first > 12_000_000, "[{name}] first backup uploaded {first}");

    // A day of chats later: the incremental backup uploads a fraction.
    assert_ok(
        &w.cv("tools")
            .arg("sample")
            .arg(src.join("WhatsApp"))
            .args(["--next-day", "1"])
            .output()
            .unwrap(),
    );
    let out = timed(
        w.cv("phone-a").args(["backup", "--json"]).arg(&src),
        &mut spent,
        &mut backup_stats,
    );
    let second = uploaded(&out);
    assert!(
        second < first / 4,
        "[{name}] incremental backup uploaded {second} of {first}"
    );

    // A new device with only the URL and the key.
    let out = timed(
        w.cv("phone-b")
            .env("CHATVAULT_KEY", &key)
            .args(["--repo", &w.repo, "restore", "latest", "--target"])
            .arg(w.p("restored")),
        &mut spent,
        &mut restore_stats,
    );
    w.no_secret(&out, &[]);
    assert_restored(&src, &w.p("restored/phone"));
    let out = timed(
        w.cv("phone-b").env("CHATVAULT_KEY", &key).args([
            "--repo",
            &w.repo,
            "-vv",
            "check",
            "--read-data",
        ]),
        &mut spent,
        &mut total,
    );
    w.no_secret(&out, &[]);
    total.add(&backup_stats);
    total.add(&restore_stats);

    eprintln!(
        "[{name}] standard cycle (init, backup {first} B, incremental {second} B, restore, check \
         --read-data): {:.1} s; {}",
        spent.as_secs_f64(),
        describe(&total)
    );

    // Write-once holds on this server: a second init finds the config and leaves it alone.
    let out = w
        .cv("phone-c")
        .args(["init", "--key", "--repo", &w.repo])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "[{name}] a second init on an existing repository must be refused"
    );
    let out = w
        .cv("phone-d")
        .env("CHATVAULT_KEY", &key)
        .args(["--repo", &w.repo, "snapshots", "--json"])
        .output()
        .unwrap();
    assert_ok(&out);

    // How chatvault writes to this service is what the table says.
    let writes = backup_stats
        .backends
        .get(name)
        .unwrap_or_else(|| panic!("[{name}] no stats for the backend: {backup_stats:?}"));
    assert_eq!(
        writes.atomic_write_once, expect.atomic_write_once,
        "[{name}] conditional writes"
    );
    if expect.atomic_write_once {
        // Create-if-absent is one conditional request: no existence check before writes.
        eprintln!("[{name}] write-once: the service's conditional write (create-if-absent)");
    } else {
        // Without conditional writes, every write is preceded by an existence check.
        assert!(
            backup_stats.stats >= backup_stats.writes,
            "[{name}] check-then-write: {backup_stats:?}"
        );
        eprintln!(
            "[{name}] write-once: no conditional writes; chatvault checks the name is free, then \
             writes ({} checks for {} writes in the backups)",
            backup_stats.stats, backup_stats.writes
        );
    }
    if expect.multipart {
        assert!(
            writes.part_size.is_some() && backup_stats.part_uploads >= 2,
            "[{name}] packs over the part size go up in parts: {backup_stats:?}"
        );
    } else {
        assert!(
            writes.part_size.is_none() && backup_stats.part_uploads == 0,
            "[{name}] no multipart on this service: {backup_stats:?}"
        );
        eprintln!("[{name}] no multipart upload: each pack (≤ ~16 MiB) goes up in one request");
    }
    // Restore reads blobs by range; the byte-identical result shows the server honoured it.
    assert!(
        restore_stats.ranged_reads > 0,
        "[{name}] restore uses ranged reads: {restore_stats:?}"
    );
}

/// The exit code and stderr of a command expected to fail; with its stats.
fn failing(w: &World, c: &mut Command) -> (Output, String, Stats) {
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "[{}] expected exit 1; stderr:\n{err}",
        w.target.name
    );
    assert!(!err.contains("panicked"), "{err}");
    let stats = Stats::of(&out.stderr);
    (out, err, stats)
}

fn missing_container_fails_fast(name: &'static str) {
    let Some(t) = target(name) else { return };
    let url = match &t.missing_container {
        Ok(url) => url.clone(),
        Err(why) => {
            eprintln!("SKIPPED: [{name}] {why}");
            return;
        }
    };
    let mut w = World::new(t, "missing");
    w.repo = url;
    let (out, err, stats) = failing(
        &w,
        w.cv("a")
            .env("CHATVAULT_STORAGE_ATTEMPTS", "5")
            .args(["init", "--key", "--repo", &w.repo]),
    );
    eprintln!("[{name}] missing container: {err}");
    assert!(err.contains("does not exist"), "[{name}] stderr:\n{err}");
    // Fast: a permanent error, not retried (5 attempts would back off for seconds).
    assert_eq!(stats.retries, 0, "[{name}] retried: {stats:?}");
    w.no_secret(&out, &[]);
}

fn bad_credentials_fail_fast(name: &'static str) {
    let Some(mut t) = target(name) else { return };
    let (set, remove, wanted, why) = match &t.bad_credentials {
        BadCredentials::Wrong { set, remove } => {
            (set.clone(), remove.clone(), "access denied", None)
        }
        BadCredentials::Missing { set, remove, why } => (
            set.clone(),
            remove.clone(),
            "no usable credentials",
            Some(*why),
        ),
    };
    if let Some(why) = why {
        eprintln!("[{name}] {why}: testing missing credentials instead of wrong ones");
    }
    t.env
        .retain(|(k, _)| !remove.contains(k) && !set.iter().any(|(s, _)| s == k));
    t.remove.extend(remove);
    let wrong: Vec<String> = set.iter().map(|(_, v)| v.clone()).collect();
    t.env.extend(set);
    let w = World::new(t, "creds");
    let (out, err, stats) = failing(
        &w,
        w.cv("a")
            .env("CHATVAULT_STORAGE_ATTEMPTS", "5")
            .args(["init", "--key", "--repo", &w.repo]),
    );
    eprintln!("[{name}] bad credentials: {err}");
    assert!(err.contains(wanted), "[{name}] stderr:\n{err}");
    assert_eq!(stats.retries, 0, "[{name}] retried: {stats:?}");
    w.no_secret(&out, &wrong);
}

/// Write-once on the server itself, through the storage layer (no `init` check before it): a
/// second write to a name must leave the first in place, and of writers racing on one fresh name
/// exactly one may win where the service has conditional writes. Without them (WebDAV, the
/// drives) chatvault checks, then writes: the race shows how many writers "won" (harmless for
/// chatvault, whose names are random or keyed hashes of the content, README "Storage backends").
fn write_once_on_the_server(name: &'static str) {
    use chatvault_repo::storage::{Storage, stats};
    let Some(t) = target(name) else { return };
    let mut settings: Vec<(&str, &str)> = t.remove.iter().map(|k| (k.as_str(), "")).collect();
    settings.extend(t.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let st = Storage::open_with(&t.repo("writeonce"), &settings).unwrap();

    let path = "locks/write-once";
    assert!(st.write_new(path, b"first".to_vec()).unwrap());
    let before = stats();
    let second = st.write_new(path, b"second".to_vec()).unwrap();
    let after = stats();
    let stored = st.read(path).unwrap().unwrap();
    let (checks, writes) = (after.stats - before.stats, after.writes - before.writes);
    let ignored = t.expect.atomic_write_once && !t.expect.server_enforces_conditions;
    if ignored {
        // The server ignores the condition: the second write replaced the first. chatvault then
        // relies on what it does everywhere: `init` checks for a config before writing one, and
        // every other name is random or a keyed hash of its content, never reused. (If this
        // fails, the server now enforces conditional writes: update the table.)
        assert!(
            second && stored == b"second",
            "[{name}] expected this server to ignore the conditional write"
        );
        eprintln!(
            "[{name}] the server IGNORES conditional writes: a second write replaced the object"
        );
        st.delete(path).unwrap();
        return;
    }
    assert!(
        !second,
        "[{name}] a second write to one name must report it taken"
    );
    assert_eq!(
        stored, b"first",
        "[{name}] a second write to one name must not replace it"
    );
    if t.expect.atomic_write_once {
        // The server refused it: one conditional write, no existence check.
        assert_eq!((checks, writes), (0, 1), "[{name}] {after:?}");
    } else {
        // chatvault saw the name taken and did not write.
        assert_eq!((checks, writes), (1, 0), "[{name}] {after:?}");
    }

    // Writers racing on one fresh name.
    let race = "locks/write-once-race";
    let n = 8;
    let winners: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let st = st.clone();
                s.spawn(move || {
                    st.write_new(race, format!("writer {i}").into_bytes())
                        .unwrap()
                        .then_some(i)
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect()
    });
    let stored = String::from_utf8(st.read(race).unwrap().unwrap()).unwrap();
    assert!(
        winners.iter().any(|i| stored == format!("writer {i}")),
        "[{name}] the stored object is a winner's: {stored:?}, winners {winners:?}"
    );
    if t.expect.atomic_write_once {
        assert_eq!(winners.len(), 1, "[{name}] conditional writes: one winner");
    }
    eprintln!(
        "[{name}] {} write-once: a second write was refused {}; {} of {n} writers racing on one \
         name were told they won",
        if t.expect.atomic_write_once {
            "atomic"
        } else {
            "check-then-write"
        },
        if t.expect.atomic_write_once {
            "by the server (conditional write)"
        } else {
            "by chatvault's check"
        },
        winners.len()
    );
    st.delete(path).unwrap();
    st.delete(race).unwrap();
}

/// One module per backend: `s3::standard_cycle`, `webdav::bad_credentials_fail_fast`, …
macro_rules! backend_suite {
    ($($backend:ident),* $(,)?) => {$(
        mod $backend {
            #[test]
            fn standard_cycle() {
                super::standard_cycle(stringify!($backend));
            }
            #[test]
            fn missing_container_fails_fast() {
                super::missing_container_fails_fast(stringify!($backend));
            }
            #[test]
            fn bad_credentials_fail_fast() {
                super::bad_credentials_fail_fast(stringify!($backend));
            }
            #[test]
            fn write_once_on_the_server() {
                super::write_once_on_the_server(stringify!($backend));
            }
        }
    )*};
}

backend_suite!(s3, gcs, azblob, webdav, gdrive, onedrive, dropbox);

#[test]
fn the_suite_covers_every_backend_in_the_table() {
    let here = include_str!("backends.rs");
    let line = here
        .lines()
        .find(|l| l.starts_with("backend_suite!("))
        .unwrap();
    for b in common::backends::ALL {
        assert!(line.contains(b), "{b} missing from {line}");
    }
}
