//! Password mode through the `chatvault` CLI and a real `chatvault-vault` server process.
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};

use assert_cmd::Command;

mod common;
use common::{assert_code, assert_ok};

/// A running `chatvault-vault serve` on 127.0.0.1 with SQLite in a temp data dir.
struct Vault {
    child: Child,
    /// Kept open: the server must be able to keep writing to its stdout.
    _stdout: BufReader<std::process::ChildStdout>,
    url: String,
    data: PathBuf,
    /// The vault's server identity (base64url), as `serve` prints it.
    identity: String,
}

impl Vault {
    fn start(data: &Path) -> Vault {
        Self::start_logging(data, None)
    }

    /// Starts the vault; with `log`, at the most verbose level into that file.
    fn start_logging(data: &Path, log: Option<&Path>) -> Vault {
        Self::start_with(data, log, &[])
    }

    /// Starts the vault with extra `serve` arguments.
    fn start_with(data: &Path, log: Option<&Path>, extra: &[&str]) -> Vault {
        let bin = assert_cmd::cargo::cargo_bin("chatvault-vault");
        assert!(
            bin.exists(),
            "{} is missing: build the workspace (cargo nextest run --workspace builds it)",
            bin.display()
        );
        let mut child = StdCommand::new(bin)
            .args([
                "serve",
                "--dev-issuer",
                "--listen",
                "127.0.0.1:0",
                "--rate-limit-ip",
                "0",
                "--rate-limit-account",
                "0",
                "--data-dir",
            ])
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "trace")
            .stdout(Stdio::piped())
            .stderr(match log {
                Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
                None => Stdio::null(),
            })
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .expect("listening line")
            .to_string();
        let mut identity = String::new();
        stdout.read_line(&mut identity).unwrap();
        let identity = identity
            .trim()
            .strip_prefix("server identity ")
            .unwrap_or_else(|| panic!("{identity}"))
            .to_owned();
        Vault {
            child,
            _stdout: stdout,
            url,
            data: data.to_path_buf(),
            identity,
        }
    }

    fn token(&self, account: &str) -> String {
        let out = StdCommand::new(assert_cmd::cargo::cargo_bin("chatvault-vault"))
            .args(["token", "--account", account, "--data-dir"])
            .arg(&self.data)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct World {
    dir: tempfile::TempDir,
    vault: Vault,
    token: String,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::start(&dir.path().join("vault-data"));
        let token = vault.token("alice");
        World { dir, vault, token }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn repo(&self) -> String {
        self.p("repo").to_string_lossy().into_owned()
    }
    /// `chatvault --home H` with the vault, account and token of alice, and a password.
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
            "CHATVAULT_VAULT_IDENTITY",
        ] {
            c.env_remove(v);
        }
        c.env("CHATVAULT_ACCOUNT_TOKEN", &self.token)
            .env("CHATVAULT_INSECURE_TEST_KSF", "1")
            .arg("--home")
            .arg(self.p(home));
        if let Some(p) = password {
            c.env("CHATVAULT_PASSWORD", p);
        }
        c
    }
    /// A new device: only the repository, the vault, the account and the password.
    fn new_device(&self, home: &str, password: &str) -> Command {
        let mut c = self.cv(home, Some(password));
        c.args([
            "--repo",
            &self.repo(),
            "--vault",
            &self.vault.url,
            "--account",
            "alice",
        ]);
        c
    }
    fn init(&self, home: &str, password: &str) {
        let out = self
            .cv(home, None)
            .env("CHATVAULT_NEW_PASSWORD", password)
            .args([
                "init",
                "--password",
                "--repo",
                &self.repo(),
                "--vault",
                &self.vault.url,
                "--account",
                "alice",
            ])
            .output()
            .unwrap();
        assert_ok(&out);
    }
}

fn make_source(root: &Path) {
    std::fs::create_dir_all(root.join("Media")).unwrap();
    std::fs::write(root.join("chat.txt"), "see you tomorrow\n".repeat(5000)).unwrap();
    let media: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(root.join("Media/video.mp4"), media).unwrap();
}

fn same_files(a: &Path, b: &Path) {
    for rel in ["chat.txt", "Media/video.mp4"] {
        assert_eq!(
            std::fs::read(a.join(rel)).unwrap(),
            std::fs::read(b.join(rel)).unwrap(),
            "{rel}"
        );
    }
}

#[test]
fn password_restore_on_a_new_device_then_ten_wrong_guesses_destroy_the_key() {
    let w = World::new();
    let src = w.p("chats");
    make_source(&src);
    w.init("phone-a", "correct horse");
    assert_ok(
        &w.cv("phone-a", None)
            .arg("backup")
            .arg(&src)
            .output()
            .unwrap(),
    );
    std::fs::remove_dir_all(w.p("phone-a")).unwrap();

    // New phone, right password: byte-identical restore, and the device is set up.
    let out = w
        .new_device("phone-b", "correct horse")
        .args(["restore", "latest", "--target"])
        .arg(w.p("r1"))
        .output()
        .unwrap();
    assert_ok(&out);
    same_files(&src, &w.p("r1/chats"));
    assert!(w.p("phone-b/config.json").exists());

    // Ten wrong passwords count down, then the key is gone for good.
    for left in (0..10).rev() {
        let out = w
            .new_device(&format!("thief-{left}"), "wrong guess")
            .args(["snapshots"])
            .output()
            .unwrap();
        assert_code(&out, 4, &format!("{left} attempt(s) left"));
    }
    let out = w
        .new_device("phone-c", "correct horse")
        .args(["restore", "latest", "--target"])
        .arg(w.p("r2"))
        .output()
        .unwrap();
    assert_code(&out, 7, "destroyed");
    assert!(!w.p("r2").exists());
    // The device that already has the key keeps working (the key never depended on the vault).
    assert_ok(&w.cv("phone-b", None).arg("snapshots").output().unwrap());
    // Secrets are not echoed anywhere.
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("correct horse") && !all.contains(&w.token));
}

#[test]
fn change_password_and_switching_between_key_and_password() {
    let w = World::new();
    let src = w.p("chats");
    make_source(&src);
    w.init("a", "first password");
    assert_ok(&w.cv("a", None).arg("backup").arg(&src).output().unwrap());

    let out = w
        .cv("a", Some("first password"))
        .env("CHATVAULT_NEW_PASSWORD", "second password")
        .args(["key", "change-password"])
        .output()
        .unwrap();
    assert_ok(&out);
    let out = w
        .new_device("b", "first password")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_code(&out, 4, "attempt(s) left");
    assert_ok(
        &w.new_device("c", "second password")
            .arg("snapshots")
            .output()
            .unwrap(),
    );

    // to-key: prints the key, deletes the vault record.
    let out = w
        .cv("a", Some("second password"))
        .args(["key", "to-key"])
        .output()
        .unwrap();
    assert_ok(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    let key = text
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 79)
        .expect("grouped key")
        .to_string();
    let out = w
        .new_device("d", "second password")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_code(&out, 4, "no backup key is registered");
    let out = w
        .cv("e", None)
        .env("CHATVAULT_KEY", &key)
        .args(["--repo", &w.repo(), "restore", "latest", "--target"])
        .arg(w.p("r"))
        .output()
        .unwrap();
    assert_ok(&out);
    same_files(&src, &w.p("r/chats"));

    // to-password: the vault keeps it again.
    let out = w
        .cv("a", None)
        .env("CHATVAULT_NEW_PASSWORD", "third password")
        .args([
            "key",
            "to-password",
            "--vault",
            &w.vault.url,
            "--account",
            "alice",
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    assert_ok(
        &w.new_device("f", "third password")
            .arg("snapshots")
            .output()
            .unwrap(),
    );

    // disable: vault record and repository gone.
    let out = w
        .cv("a", Some("third password"))
        .args(["disable", "--yes"])
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(!w.p("repo/config").exists());
    assert!(!w.p("a/config.json").exists());
    let out = w
        .new_device("g", "third password")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn init_refuses_without_token_and_with_a_different_pinned_vault() {
    let w = World::new();
    let mut c = w.cv("a", None);
    c.env_remove("CHATVAULT_ACCOUNT_TOKEN")
        .env("CHATVAULT_NEW_PASSWORD", "pw123456")
        .args([
            "init",
            "--password",
            "--repo",
            &w.repo(),
            "--vault",
            &w.vault.url,
            "--account",
            "alice",
        ]);
    assert_code(&c.output().unwrap(), 1, "account token");
    assert!(!w.p("repo/config").exists());
    w.init("a", "pw123456");
    // A device that pins another server key refuses this vault.
    let other = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let out = w
        .new_device("b", "pw123456")
        .args(["--vault-identity", other, "snapshots"])
        .output()
        .unwrap();
    assert_code(&out, 1, "");
    assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    // Token for another account is refused.
    let bob = w.vault.token("bob");
    let out = w
        .new_device("c", "pw123456")
        .env("CHATVAULT_ACCOUNT_TOKEN", bob)
        .arg("snapshots")
        .output()
        .unwrap();
    assert_code(&out, 1, "different account");
}

/// Secret hygiene: with every log at the most verbose level, the password, the account token and
/// the backup key (hex and base64) appear in no output or log of the client or the vault.
#[test]
fn secrets_never_appear_in_output_logs_or_argv() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("vault.log");
    let vault = Vault::start_logging(&dir.path().join("vault-data"), Some(&log));
    let token = vault.token("alice");
    let w = World { dir, vault, token };
    let src = w.p("chats");
    make_source(&src);
    let password = "Tr0ub4dor&3-secret";
    let mut outputs = Vec::new();
    let mut run = |mut c: Command| {
        // Secrets go in through the environment only: the CLI has no flag that takes one, so
        // argv (visible to every user in /proc) never holds them.
        c.env("CHATVAULT_LOG", "trace").arg("-vv");
        let out = c.output().unwrap();
        outputs.push(format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
        out
    };
    let mut init = w.cv("a", None);
    init.env("CHATVAULT_NEW_PASSWORD", password).args([
        "init",
        "--password",
        "--repo",
        &w.repo(),
        "--vault",
        &w.vault.url,
        "--account",
        "alice",
    ]);
    assert_ok(&run(init));
    let mut b = w.cv("a", None);
    b.arg("backup").arg(&src);
    assert_ok(&run(b));
    let mut wrong = w.new_device("b", "not it");
    wrong.arg("snapshots");
    assert_eq!(run(wrong).status.code(), Some(4));
    let mut r = w.new_device("c", password);
    r.args(["restore", "latest", "--target"]).arg(w.p("r"));
    assert_ok(&run(r));
    let mut cp = w.cv("c", Some(password));
    cp.env("CHATVAULT_NEW_PASSWORD", "another-secret-pw")
        .args(["key", "change-password"]);
    assert_ok(&run(cp));

    let key_hex = std::fs::read_to_string(w.p("a/backup.key"))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(key_hex.len(), 64);
    let key_bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&key_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let b64 = |alphabet: &[u8; 64]| -> String {
        key_bytes
            .chunks(3)
            .flat_map(|c| {
                let n = (u32::from(c[0]) << 16)
                    | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                    | u32::from(*c.get(2).unwrap_or(&0));
                (0..=c.len()).map(move |i| alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char)
            })
            .collect()
    };
    let std_b64 = b64(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
    let url_b64 = b64(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");
    let grouped: String = key_hex
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    drop(w.vault);
    outputs.push(std::fs::read_to_string(&log).unwrap());
    let everything = outputs.join("\n");
    assert!(
        everything.contains("recover"),
        "the logs are really verbose: {}",
        &everything[..everything.len().min(500)]
    );
    for (what, secret) in [
        ("password", password.to_string()),
        ("new password", "another-secret-pw".to_string()),
        ("account token", w.token.clone()),
        ("backup key (hex)", key_hex.clone()),
        ("backup key (grouped)", grouped),
        ("backup key (base64)", std_b64[..40].to_string()),
        ("backup key (base64url)", url_b64[..40].to_string()),
    ] {
        assert!(!everything.contains(&secret), "{what} leaked");
    }
    // Tokens of any account: no JWT in any output.
    assert!(!everything.contains("eyJ"), "a JWT leaked");
}

/// The storage provider hides the newest snapshot. A new device, which remembers nothing, learns
/// from the vault's sealed commitment that a newer snapshot existed: exit 9 unless
/// --accept-rollback. A forged commitment at the vault is ignored with a warning.
#[test]
fn new_device_detects_a_rolled_back_repository_through_the_vault_commitment() {
    let w = World::new();
    let src = w.p("chats");
    make_source(&src);
    w.init("phone-a", "correct horse");
    for _ in 0..2 {
        std::fs::write(
            src.join("chat.txt"),
            format!("{:?}", std::time::SystemTime::now()),
        )
        .unwrap();
        assert_ok(
            &w.cv("phone-a", None)
                .arg("backup")
                .arg(&src)
                .output()
                .unwrap(),
        );
    }
    let snaps: Vec<PathBuf> = std::fs::read_dir(w.p("repo/snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(snaps.len(), 2);
    // Newest = the one the phone's device memory names.
    let seen = std::fs::read_to_string(w.p("phone-a/seen.json")).unwrap();
    let newest = snaps
        .iter()
        .find(|p| seen.contains(p.file_name().unwrap().to_str().unwrap()))
        .expect("device remembers the newest snapshot")
        .clone();
    let hidden = std::fs::read(&newest).unwrap();
    std::fs::remove_file(&newest).unwrap();

    // The phone itself notices (device memory).
    let out = w.cv("phone-a", None).arg("snapshots").output().unwrap();
    assert_code(&out, 9, "rolled back");
    assert!(String::from_utf8_lossy(&out.stderr).contains("this device"));

    // A new device notices through the vault, and restores nothing.
    let out = w
        .new_device("phone-b", "correct horse")
        .args(["restore", "latest", "--target"])
        .arg(w.p("r1"))
        .output()
        .unwrap();
    assert_code(&out, 9, "rolled back");
    assert!(String::from_utf8_lossy(&out.stderr).contains("the vault"));
    assert!(!w.p("r1").exists());
    // With --accept-rollback it restores the older snapshot, loudly.
    let out = w
        .new_device("phone-b", "correct horse")
        .args(["--accept-rollback", "restore", "latest", "--target"])
        .arg(w.p("r1"))
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARNING"));

    // The provider gives the snapshot back: everyone is happy again.
    std::fs::write(&newest, hidden).unwrap();
    assert_ok(&w.cv("phone-a", None).arg("snapshots").output().unwrap());

    // A forged commitment (the vault cannot seal one) is an alarm (PROTOCOL.md §9.1), not a
    // warning: exit 9 until --accept-rollback.
    let client = chatvault_vault_client::VaultClient::new(
        &w.vault.url,
        "alice",
        chatvault_vault_client::SecretString::from(w.token.clone()),
    )
    .unwrap();
    client.put_commitment(1000, &[0u8; 64]).unwrap();
    let out = w.cv("phone-a", None).arg("snapshots").output().unwrap();
    assert_code(&out, 9, "does not open");
    // With --accept-rollback a backup goes on, cannot commit over the jammed commitment and
    // says so (the backup itself stands).
    let out = w
        .cv("phone-a", None)
        .args(["--accept-rollback", "backup"])
        .arg(&src)
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be committed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// PROTOCOL.md §9.1, the token holder's jam: the genuine commitment PUT back with seq 2^63-1, so
/// that every honest PUT gets 409. The authenticated seq inside is the witness: the next backup
/// and a new device both stop with exit 9.
#[test]
fn commitment_replayed_with_max_seq_is_exit_9_on_next_backup_and_on_a_new_device() {
    let w = World::new();
    let src = w.p("chats");
    make_source(&src);
    w.init("phone-a", "correct horse");
    let backup = |extra: &[&str]| {
        w.cv("phone-a", None)
            .args(extra)
            .arg("backup")
            .arg(&src)
            .output()
            .unwrap()
    };
    assert_ok(&backup(&[]));
    let attacker = chatvault_vault_client::VaultClient::new(
        &w.vault.url,
        "alice",
        chatvault_vault_client::SecretString::from(w.token.clone()),
    )
    .unwrap();
    let (seq, genuine) = attacker.get_commitment().unwrap().expect("a commitment");
    assert_eq!(seq, 1);
    let max = (1u64 << 63) - 1;
    assert_eq!(
        attacker.put_commitment(max, &genuine).unwrap(),
        chatvault_vault_client::CommitmentPut::Stored
    );
    // The next backup on the phone.
    std::fs::write(src.join("chat.txt"), "new message\n").unwrap();
    let out = backup(&[]);
    assert_code(
        &out,
        9,
        "declares #9223372036854775807 but commits to snapshot #1",
    );
    // A new device.
    let out = w
        .new_device("phone-b", "correct horse")
        .args(["restore", "latest", "--target"])
        .arg(w.p("r1"))
        .output()
        .unwrap();
    assert_code(&out, 9, "declares #9223372036854775807");
    assert!(!w.p("r1").exists());
    // A backup that races the jam (the jam lands between the check and the commit) ends in
    // exit 9 too, after saving its snapshot: simulated by accepting the check only.
    let out = backup(&["--accept-rollback"]);
    assert_ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be committed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A man in the middle for registration: forwards every HTTP request to `upstream` (another
/// vault) and, if `splice` is given, writes that key into the `register/start` answer in place of
/// the upstream vault's own (the pinned key is public, so a real attacker would). Records every
/// request line it forwards.
struct Mitm {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Mitm {
    fn start(upstream: &str, splice: Option<[u8; 32]>) -> Mitm {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.strip_prefix("http://").unwrap().to_owned();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        /// Reads one HTTP message (head and Content-Length body) from `s`.
        fn read_message(s: &mut std::net::TcpStream, to_eof: bool) -> Option<(String, Vec<u8>)> {
            let mut buf = Vec::new();
            let mut byte = [0u8; 1];
            while !buf.ends_with(b"\r\n\r\n") {
                if s.read(&mut byte).ok()? == 0 {
                    return None;
                }
                buf.push(byte[0]);
            }
            let head = String::from_utf8(buf).ok()?;
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).ok()?;
            if to_eof {
                s.read_to_end(&mut body).ok()?;
            }
            Some((head, body))
        }
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut client) = conn else { return };
                let Some((head, body)) = read_message(&mut client, false) else {
                    continue;
                };
                let request_line = head.lines().next().unwrap_or("").to_owned();
                log.lock().unwrap().push(request_line.clone());
                let mut up = std::net::TcpStream::connect(&upstream).unwrap();
                let head: String = head
                    .lines()
                    .filter(|l| !l.to_ascii_lowercase().starts_with("connection:") && !l.is_empty())
                    .map(|l| format!("{l}\r\n"))
                    .collect();
                up.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())
                    .unwrap();
                up.write_all(&body).unwrap();
                let Some((rhead, mut rbody)) = read_message(&mut up, true) else {
                    continue;
                };
                if let Some(key) = splice
                    && request_line.contains("/register/start")
                    && rhead.starts_with("HTTP/1.1 200")
                {
                    // Name the pinned identity instead of the other vault's own; the other
                    // vault's signature cannot verify under it.
                    let mut v: serde_json::Value = serde_json::from_slice(&rbody).unwrap();
                    v["server_identity"] = chatvault_vault_core::api::b64_encode(&key).into();
                    rbody = serde_json::to_vec(&v).unwrap();
                }
                let rhead: String = rhead
                    .lines()
                    .filter(|l| {
                        let l = l.to_ascii_lowercase();
                        !l.starts_with("content-length:")
                            && !l.starts_with("connection:")
                            && !l.is_empty()
                    })
                    .map(|l| format!("{l}\r\n"))
                    .collect();
                let _ = client.write_all(
                    format!(
                        "{rhead}Content-Length: {}\r\nConnection: close\r\n\r\n",
                        rbody.len()
                    )
                    .as_bytes(),
                );
                let _ = client.write_all(&rbody);
            }
        });
        Mitm { url, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// PROTOCOL.md §4.1: a proxy that forwards registration to a different vault (and splices the
/// pinned vault's public key into the answer) is refused by a client that pins the real vault,
/// before anything is uploaded; the same proxy in front of the pinned vault works (it is
/// transparent), and `key to-password` honours `--vault-identity` the same way.
#[test]
fn registration_through_a_proxy_to_another_vault_is_refused_by_a_pinned_client() {
    let dir = tempfile::tempdir().unwrap();
    let real = Vault::start(&dir.path().join("real"));
    let other = Vault::start(&dir.path().join("other"));
    let pinned_key: [u8; 32] = chatvault_vault_core::ServerIdentity::from_b64(&real.identity)
        .unwrap()
        .as_bytes()
        .to_owned();
    let run = |home: &str, url: &str, token: &str, args: &[&str]| {
        let mut c = Command::cargo_bin("chatvault").unwrap();
        for v in [
            "CHATVAULT_KEY",
            "CHATVAULT_REPO",
            "CHATVAULT_HOME",
            "CHATVAULT_PASSWORD",
            "CHATVAULT_VAULT",
            "CHATVAULT_ACCOUNT",
            "CHATVAULT_VAULT_IDENTITY",
        ] {
            c.env_remove(v);
        }
        c.env("CHATVAULT_ACCOUNT_TOKEN", token)
            .env("CHATVAULT_INSECURE_TEST_KSF", "1")
            .env("CHATVAULT_NEW_PASSWORD", "correct horse")
            .arg("--home")
            .arg(dir.path().join(home))
            .args(["--vault", url, "--account", "alice"])
            .args(["--vault-identity", &real.identity])
            .args(args)
            .output()
            .unwrap()
    };
    let repo = |name: &str| dir.path().join(name).to_string_lossy().into_owned();

    // The attack: the proxy forwards to the other vault and splices in the pinned key.
    let mitm = Mitm::start(&other.url, Some(pinned_key));
    let out = run(
        "phone",
        &mitm.url,
        &other.token("alice"),
        &["init", "--password", "--repo", &repo("repo-a")],
    );
    assert_code(&out, 1, "server key differs from the pinned one");
    let seen = mitm.seen();
    assert!(
        seen.iter().any(|l| l.contains("/register/start")),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|l| l.contains("/register/finish")),
        "something was uploaded: {seen:?}"
    );
    assert!(!dir.path().join("repo-a/config").exists());
    // Without splicing, the other vault's own key is refused just the same.
    let plain = Mitm::start(&other.url, None);
    let out = run(
        "phone",
        &plain.url,
        &other.token("alice"),
        &["init", "--password", "--repo", &repo("repo-a")],
    );
    assert_code(&out, 1, "server key differs from the pinned one");
    assert!(!plain.seen().iter().any(|l| l.contains("/register/finish")));

    // Control: the same proxy in front of the pinned vault is transparent.
    let good = Mitm::start(&real.url, None);
    let out = run(
        "phone",
        &good.url,
        &real.token("alice"),
        &["init", "--password", "--repo", &repo("repo-b")],
    );
    assert_ok(&out);
    assert!(good.seen().iter().any(|l| l.contains("/register/finish")));

    // `key to-password` on a device in key mode honours --vault-identity too.
    let mut c = Command::cargo_bin("chatvault").unwrap();
    c.env_remove("CHATVAULT_KEY")
        .arg("--home")
        .arg(dir.path().join("keyphone"))
        .args(["init", "--key", "--repo", &repo("repo-c")]);
    assert_ok(&c.output().unwrap());
    let bob_mitm = Mitm::start(&other.url, Some(pinned_key));
    let out = run(
        "keyphone",
        &bob_mitm.url,
        &other.token("alice"),
        &["key", "to-password"],
    );
    assert_code(&out, 1, "server key differs from the pinned one");
    assert!(
        !bob_mitm
            .seen()
            .iter()
            .any(|l| l.contains("/register/finish"))
    );
}

/// The pin is kept when the vault URL is spelled with a trailing slash (PROTOCOL.md §1).
#[test]
fn pin_kept_when_the_url_differs_by_a_trailing_slash() {
    let w = World::new();
    // No pin on a new device: trust on first use, and the CLI says so.
    let out = w
        .cv("phone-a", None)
        .env("CHATVAULT_NEW_PASSWORD", "correct horse")
        .args(["init", "--password", "--repo", &w.repo(), "--vault"])
        .arg(&w.vault.url)
        .args(["--account", "alice"])
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("on first use (TOFU)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = w
        .cv("phone-a", None)
        .env("CHATVAULT_PASSWORD", "correct horse")
        .env("CHATVAULT_NEW_PASSWORD", "new horse battery")
        .args([
            "--vault",
            &format!("{}/", w.vault.url),
            "--account",
            "alice",
        ])
        .args(["key", "change-password"])
        .output()
        .unwrap();
    assert_ok(&out);
    // A URL with user info is refused outright.
    let port = w.vault.url.rsplit(':').next().unwrap();
    let out = w
        .cv("phone-b", Some("new horse battery"))
        .args([
            "--repo",
            &w.repo(),
            "--vault",
            &format!("http://localhost:{port}@evil.example/"),
            "--account",
            "alice",
            "snapshots",
        ])
        .output()
        .unwrap();
    assert_code(&out, 1, "user name or password");
}

/// PROTOCOL.md §9.2 through the CLI: a vault serving TLS with a certificate of a private CA is
/// reached with `--vault-ca`; without it the web PKI does not know the CA and nothing happens.
#[test]
fn https_vault_with_a_private_ca_through_vault_ca() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("cert.pem"), cert.pem()).unwrap();
    std::fs::write(p("key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(p("ca.pem"), ca_cert.pem()).unwrap();
    let vault = Vault::start_with(
        &p("vault-data"),
        None,
        &[
            "--tls-cert",
            p("cert.pem").to_str().unwrap(),
            "--tls-key",
            p("key.pem").to_str().unwrap(),
        ],
    );
    assert!(vault.url.starts_with("https://"), "{}", vault.url);
    let init = |home: &str, ca: Option<&Path>| {
        let mut c = Command::cargo_bin("chatvault").unwrap();
        for v in [
            "CHATVAULT_KEY",
            "CHATVAULT_REPO",
            "CHATVAULT_HOME",
            "CHATVAULT_VAULT_CA",
        ] {
            c.env_remove(v);
        }
        c.env("CHATVAULT_ACCOUNT_TOKEN", vault.token("alice"))
            .env("CHATVAULT_INSECURE_TEST_KSF", "1")
            .env("CHATVAULT_NEW_PASSWORD", "correct horse")
            .arg("--home")
            .arg(p(home));
        if let Some(ca) = ca {
            c.arg("--vault-ca").arg(ca);
        }
        c.args(["init", "--password", "--repo"])
            .arg(p(&format!("repo-{home}")))
            .args(["--vault", &vault.url, "--account", "alice"])
            .output()
            .unwrap()
    };
    let out = init("untrusting", None);
    assert_code(&out, 1, "cannot reach the vault");
    assert_ok(&init("phone", Some(&p("ca.pem"))));
}
