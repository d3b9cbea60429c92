//! Threshold password mode through the `chatvault` CLI and three real `chatvault-vault` realms,
//! each with its own data directory, key file, SQLite database and token issuer (so each needs
//! its own `--account-token-file`). PostgreSQL realms and the attacker test are in
//! crates/chatvault-vault/tests/threshold.rs.
//!
//! Plan: `init --password --vault R1 --vault R2 --vault R3 --threshold 2` and a backup; realm 2
//! stopped; a new device restores byte-identical with the password; `key change-password` with
//! one realm down; a wrong password counts down (exit 4); with two realms down the restore fails
//! naming them; `key to-key` deletes the registrations; `key to-password` and `disable`.
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};

use assert_cmd::Command;

mod common;
use common::{assert_code, assert_ok};

struct Realm {
    child: Option<Child>,
    _stdout: Option<BufReader<std::process::ChildStdout>>,
    url: String,
}

impl Realm {
    fn start(data: &Path) -> Realm {
        let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("chatvault-vault"))
            .args(["serve", "--dev-issuer", "--listen", "127.0.0.1:0"])
            .args([
                "--rate-limit-ip",
                "0",
                "--rate-limit-account",
                "0",
                "--data-dir",
            ])
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap()
            .to_string();
        Realm {
            child: Some(child),
            _stdout: Some(stdout),
            url,
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Realm {
    fn drop(&mut self) {
        self.stop();
    }
}

fn token(data: &Path, account: &str) -> String {
    let out = StdCommand::new(assert_cmd::cargo::cargo_bin("chatvault-vault"))
        .args(["token", "--account", account, "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

struct World {
    dir: tempfile::TempDir,
    realms: Vec<Realm>,
    tokens: Vec<PathBuf>,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let mut realms = Vec::new();
        let mut tokens = Vec::new();
        for k in 0..3 {
            let data = dir.path().join(format!("realm{k}"));
            realms.push(Realm::start(&data));
            let t = dir.path().join(format!("token{k}"));
            std::fs::write(&t, token(&data, "alice")).unwrap();
            tokens.push(t);
        }
        World {
            dir,
            realms,
            tokens,
        }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn repo(&self) -> String {
        self.p("repo").to_string_lossy().into_owned()
    }
    fn cv(&self, home: &str, password: Option<&str>) -> Command {
        let mut c = Command::cargo_bin("chatvault").unwrap();
        for v in [
            "CHATVAULT_KEY",
            "CHATVAULT_REPO",
            "CHATVAULT_HOME",
            "CHATVAULT_PASSWORD",
            "CHATVAULT_NEW_PASSWORD",
            "CHATVAULT_VAULT",
            "CHATVAULT_ACCOUNT",
            "CHATVAULT_ACCOUNT_TOKEN",
            "CHATVAULT_VAULT_IDENTITY",
        ] {
            c.env_remove(v);
        }
        c.env("CHATVAULT_INSECURE_TEST_KSF", "1")
            .arg("--home")
            .arg(self.p(home));
        for t in &self.tokens {
            c.arg("--account-token-file").arg(t);
        }
        if let Some(p) = password {
            c.env("CHATVAULT_PASSWORD", p);
        }
        c
    }
    /// Adds `--vault` ×3, `--threshold 2`, `--account alice`.
    fn realm_args(&self, c: &mut Command) {
        for r in &self.realms {
            c.arg("--vault").arg(&r.url);
        }
        c.args(["--threshold", "2", "--account", "alice"]);
    }
    fn new_device(&self, home: &str, password: &str) -> Command {
        let mut c = self.cv(home, Some(password));
        c.args(["--repo", &self.repo()]);
        self.realm_args(&mut c);
        c
    }
}

fn make_source(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(root.join("chat.txt"), "see you tomorrow\n".repeat(5000)).unwrap();
}

#[test]
fn threshold_init_restore_change_password_to_key_disable() {
    let mut w = World::new();
    let src = w.p("chats");
    make_source(&src);
    let mut init = w.cv("phone-a", None);
    init.env("CHATVAULT_NEW_PASSWORD", "correct horse").args([
        "init",
        "--password",
        "--repo",
        &w.repo(),
    ]);
    w.realm_args(&mut init);
    let out = init.output().unwrap();
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("2 of 3 realms"), "{stdout}");
    let cfg = std::fs::read_to_string(w.p("phone-a/config.json")).unwrap();
    assert!(
        cfg.contains("\"threshold\"") && cfg.contains("realm_id"),
        "{cfg}"
    );
    assert_ok(
        &w.cv("phone-a", None)
            .arg("backup")
            .arg(&src)
            .output()
            .unwrap(),
    );

    // Realm 2 goes down; a new phone restores with the password and two realms.
    w.realms[1].stop();
    let out = w
        .new_device("phone-b", "correct horse")
        .args(["restore", "latest", "--target"])
        .arg(w.p("r1"))
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&w.realms[1].url));
    assert_eq!(
        std::fs::read(src.join("chat.txt")).unwrap(),
        std::fs::read(w.p("r1/chats/chat.txt")).unwrap()
    );
    assert!(w.p("phone-b/config.json").exists());

    // Change the password from the configured device (realm 2 still down: stored at 2 of 3).
    let out = w
        .cv("phone-b", Some("correct horse"))
        .env("CHATVAULT_NEW_PASSWORD", "battery staple")
        .args(["key", "change-password"])
        .output()
        .unwrap();
    assert_ok(&out);
    // The old password no longer works; a wrong one counts down.
    let out = w
        .new_device("thief", "correct horse")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_code(&out, 4, "9 attempt(s) left");
    assert_ok(
        &w.new_device("phone-c", "battery staple")
            .arg("snapshots")
            .output()
            .unwrap(),
    );

    // Two realms down: the restore fails and names both.
    w.realms[2].stop();
    let out = w
        .new_device("phone-d", "battery staple")
        .arg("snapshots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&w.realms[1].url) && err.contains(&w.realms[2].url),
        "{err}"
    );
    assert!(!err.contains("battery staple"));
}

#[test]
fn threshold_to_key_then_to_password_then_disable() {
    let w = World::new();
    let mut init = w.cv("a", None);
    init.env("CHATVAULT_NEW_PASSWORD", "pw one")
        .args(["init", "--password", "--repo", &w.repo()]);
    w.realm_args(&mut init);
    assert_ok(&init.output().unwrap());

    let out = w
        .cv("a", Some("pw one"))
        .args(["key", "to-key"])
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("64-digit key"));
    // The realms no longer hold it.
    let out = w
        .new_device("b", "pw one")
        .arg("snapshots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no backup key is registered"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut to_pw = w.cv("a", None);
    to_pw
        .env("CHATVAULT_NEW_PASSWORD", "pw two")
        .args(["key", "to-password"]);
    w.realm_args(&mut to_pw);
    assert_ok(&to_pw.output().unwrap());
    assert_ok(
        &w.new_device("c", "pw two")
            .arg("snapshots")
            .output()
            .unwrap(),
    );
    assert_ok(
        &w.cv("a", Some("pw two"))
            .args(["disable", "--yes"])
            .output()
            .unwrap(),
    );
    let out = w
        .new_device("d", "pw two")
        .arg("snapshots")
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn demo_realms_tells_the_threshold_story() {
    let out = Command::cargo_bin("chatvault")
        .unwrap()
        .env_remove("CHATVAULT_INSECURE_TEST_KSF")
        .args(["demo", "--realms", "3", "--quiet"])
        .output()
        .unwrap();
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "Realm 2 is stopped",
        "verified: ",
        "realm 1: 1 of 10 guesses used",
        "realm 2: 0 of 10 guesses used (down: saw nothing)",
        "realm 3: 1 of 10 guesses used",
        "one realm's dump cannot check a password",
        "Threshold demo passed",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

/// Each realm carries the rollback commitment (PROTOCOL.md §13.15): after two backups every realm
/// holds the sealed commitment to snapshot #2. The storage provider hides it: a new device, with
/// one realm down, learns from the others that it existed (exit 9). A commitment at one realm
/// that does not open is an alarm (exit 9) whatever the other realms hold, and a backup cannot
/// commit over it.
#[test]
fn threshold_realms_carry_the_rollback_commitment() {
    let mut w = World::new();
    let src = w.p("chats");
    make_source(&src);
    let mut init = w.cv("phone-a", None);
    init.env("CHATVAULT_NEW_PASSWORD", "correct horse").args([
        "init",
        "--password",
        "--repo",
        &w.repo(),
    ]);
    w.realm_args(&mut init);
    assert_ok(&init.output().unwrap());
    for k in 0..2 {
        std::fs::write(src.join("chat.txt"), format!("message {k}\n")).unwrap();
        let out = w
            .cv("phone-a", None)
            .arg("backup")
            .arg(&src)
            .output()
            .unwrap();
        assert_ok(&out);
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("warning"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let urls: Vec<String> = w.realms.iter().map(|r| r.url.clone()).collect();
    let tokens = w.tokens.clone();
    let realm_client = |k: usize| {
        chatvault_vault_client::VaultClient::new(
            &urls[k],
            "alice",
            chatvault_vault_client::SecretString::from(
                std::fs::read_to_string(&tokens[k])
                    .unwrap()
                    .trim()
                    .to_string(),
            ),
        )
        .unwrap()
    };
    for k in 0..3 {
        let (seq, _) = realm_client(k)
            .get_commitment()
            .unwrap()
            .expect("a commitment");
        assert_eq!(seq, 2, "realm {k}");
    }

    // The provider hides the newest snapshot; realm 1 is down. A new device notices through the
    // commitments of realms 2 and 3 and restores nothing.
    let seen = std::fs::read_to_string(w.p("phone-a/seen.json")).unwrap();
    let newest = std::fs::read_dir(w.p("repo/snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| seen.contains(p.file_name().unwrap().to_str().unwrap()))
        .expect("device remembers the newest snapshot");
    let hidden = std::fs::read(&newest).unwrap();
    std::fs::remove_file(&newest).unwrap();
    w.realms[0].stop();
    let out = w
        .new_device("phone-b", "correct horse")
        .args(["restore", "latest", "--target"])
        .arg(w.p("r1"))
        .output()
        .unwrap();
    assert_code(&out, 9, "rolled back");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the realm http://"), "{err}");
    assert!(!w.p("r1").exists());
    std::fs::write(&newest, hidden).unwrap();
    assert_ok(&w.cv("phone-a", None).arg("snapshots").output().unwrap());

    // Realm 3's commitment replaced by one that does not open: an alarm, even though realm 2
    // holds the genuine one.
    realm_client(2).put_commitment(1000, &[0u8; 64]).unwrap();
    let out = w.cv("phone-a", None).arg("snapshots").output().unwrap();
    assert_code(&out, 9, "does not open");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&w.realms[2].url));
    let out = w
        .new_device("phone-c", "correct horse")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_code(&out, 9, "does not open");
    // With --accept-rollback a backup goes on, commits at realm 2, cannot commit over realm 3's
    // commitment and says so (the backup itself stands).
    std::fs::write(src.join("chat.txt"), "message 3\n").unwrap();
    let out = w
        .cv("phone-a", None)
        .args(["--accept-rollback", "backup"])
        .arg(&src)
        .output()
        .unwrap();
    assert_ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot be committed"), "{err}");
    assert_eq!(realm_client(1).get_commitment().unwrap().unwrap().0, 3);
}
