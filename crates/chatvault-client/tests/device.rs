//! `Device` end to end: a local-folder repository, and a real `chatvault-vault serve` process
//! (SQLite in a temp folder) for the password flows.
//!
//! Plan:
//! - key mode: enable, back up with progress observed, list, status, restore on this home and
//!   on a new home with the key text; a wrong key is `WrongKey`; enabling twice is `Invalid`;
//! - cancellation: a backup cancelled from its progress callback is `Cancelled`, adds no
//!   snapshot, and `check` reports neither errors nor warnings; the next backup works;
//! - rollback: deleting the newest snapshot from storage makes the next backup `RolledBack`;
//! - password mode: enable; a new home restores with the password after wrong passwords that
//!   count down `attempts_left` 9, 8; change the password (the old one is then wrong); switch
//!   to the key and restore with it on a third home; disable.
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use chatvault_client::device::{CancelToken, Device, DeviceError, ProgressListener};
use chatvault_vault_client::SecretString;

/// A running `chatvault-vault serve` on 127.0.0.1.
struct Vault {
    child: Child,
    _stdout: BufReader<std::process::ChildStdout>,
    url: String,
    data: PathBuf,
}

impl Vault {
    fn start(data: &Path) -> Vault {
        let bin = assert_cmd::cargo::cargo_bin("chatvault-vault");
        assert!(
            bin.exists(),
            "{} is missing: build it first (cargo build -p chatvault-vault, or the workspace's \
             test build)",
            bin.display()
        );
        let mut child = Command::new(bin)
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
            .expect("listening line")
            .to_string();
        let mut identity = String::new();
        stdout.read_line(&mut identity).unwrap();
        Vault {
            child,
            _stdout: stdout,
            url,
            data: data.to_path_buf(),
        }
    }

    fn token(&self, account: &str) -> SecretString {
        let out = Command::new(assert_cmd::cargo::cargo_bin("chatvault-vault"))
            .args(["token", "--account", account, "--data-dir"])
            .arg(&self.data)
            .output()
            .unwrap();
        assert!(out.status.success());
        SecretString::from(String::from_utf8(out.stdout).unwrap().trim().to_string())
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Records every progress call.
#[derive(Default)]
struct Calls(Mutex<Vec<(u64, u64, String)>>);
impl ProgressListener for Calls {
    fn on_progress(&self, done: u64, total: u64, path: String) {
        self.0.lock().unwrap().push((done, total, path));
    }
}

/// Cancels its token when the backup starts reading the file whose name ends in `at`.
struct CancelAt {
    token: CancelToken,
    at: &'static str,
}
impl ProgressListener for CancelAt {
    fn on_progress(&self, _: u64, _: u64, path: String) {
        if path.ends_with(self.at) {
            self.token.cancel();
        }
    }
}

/// A chat folder: a few files of pseudo-random bytes (several chunks each) and a small one.
fn chats(root: &Path) -> PathBuf {
    let dir = root.join("chats");
    std::fs::create_dir_all(dir.join("Media")).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..4 {
        let bytes: Vec<u8> = (0..600_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(dir.join("Media").join(format!("img-{i}.jpg")), bytes).unwrap();
    }
    std::fs::write(dir.join("notes.txt"), b"hello from the chats\n").unwrap();
    dir
}

fn same_tree(a: &Path, b: &Path) {
    for e in std::fs::read_dir(a).unwrap() {
        let e = e.unwrap();
        let other = b.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            same_tree(&e.path(), &other);
        } else {
            assert_eq!(
                std::fs::read(e.path()).unwrap(),
                std::fs::read(&other).unwrap(),
                "{}",
                other.display()
            );
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn key_mode_backs_up_lists_and_restores_on_a_new_home() {
    let dir = tempfile::tempdir().unwrap();
    let src = chats(dir.path());
    let repo = dir.path().join("repo");
    let phone = Device::open(dir.path().join("phone-a"));
    let key_text = phone.enable_with_key(s(&repo)).unwrap();
    assert!(matches!(
        phone.enable_with_key(s(&repo)),
        Err(DeviceError::Invalid { .. })
    ));

    let calls = Calls::default();
    let first = phone
        .backup_now(std::slice::from_ref(&src), Some(&calls), None)
        .unwrap();
    assert_eq!(first.files, 5);
    assert_eq!(first.bytes, 4 * 600_000 + 21);
    assert!(first.uploaded_bytes > 2_400_000, "{first:?}");
    let calls = calls.0.into_inner().unwrap();
    assert!(
        calls.iter().any(|c| c.2.ends_with("img-0.jpg")),
        "{calls:?}"
    );
    let last = calls.last().unwrap();
    assert_eq!(last.0, first.bytes, "the final callback reports every byte");
    assert!(calls.iter().all(|c| c.0 <= c.1), "done never exceeds total");
    assert!(
        calls.windows(2).all(|w| w[0].0 <= w[1].0),
        "done never goes back"
    );

    std::fs::write(src.join("notes.txt"), b"a second day\n").unwrap();
    let second = phone
        .backup_now(std::slice::from_ref(&src), None, None)
        .unwrap();
    assert!(second.uploaded_bytes < 100_000, "unchanged media is reused");
    let list = phone.snapshots().unwrap();
    assert_eq!(
        list.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        [first.id.clone(), second.id.clone()],
        "newest last"
    );
    let st = phone.status().unwrap();
    assert_eq!(st.mode, "key");
    assert_eq!(st.repo.as_deref(), Some(s(&repo)));
    assert_eq!(st.last_snapshot.as_ref().map(|i| &i.id), Some(&second.id));
    assert_eq!(st.vault_url, None);

    let here = dir.path().join("restored-here");
    let r = phone.restore(&first.id[..8], &here, None, None).unwrap();
    assert_eq!((r.snapshot_id.as_str(), r.files), (first.id.as_str(), 5));
    assert_eq!(
        std::fs::read(here.join("chats/notes.txt")).unwrap(),
        b"hello from the chats\n"
    );

    // A new phone: a wrong key, then the written-down key.
    let wrong = Device::open(dir.path().join("phone-x"));
    let other_key = Device::open(dir.path().join("other"))
        .enable_with_key(s(&dir.path().join("other-repo")))
        .unwrap();
    assert!(matches!(
        wrong.restore_with_key(
            s(&repo),
            &other_key,
            "latest",
            &dir.path().join("x"),
            None,
            None
        ),
        Err(DeviceError::WrongKey { .. })
    ));
    assert_eq!(
        wrong.status().unwrap().mode,
        "off",
        "a wrong key adopts nothing"
    );
    let phone_b = Device::open(dir.path().join("phone-b"));
    let calls = Calls::default();
    let target = dir.path().join("restored");
    let r = phone_b
        .restore_with_key(s(&repo), &key_text, "latest", &target, Some(&calls), None)
        .unwrap();
    assert_eq!(r.snapshot_id, second.id);
    assert_eq!(r.bytes, 4 * 600_000 + 13);
    same_tree(&src, &target.join("chats"));
    let calls = calls.0.into_inner().unwrap();
    assert_eq!(calls.last().map(|c| (c.0, c.1)), Some((r.bytes, r.bytes)));
    // The new phone now backs up to the same repository.
    assert_eq!(phone_b.status().unwrap().mode, "key");
    phone_b.backup_now(&[src], None, None).unwrap();
    assert_eq!(phone_b.snapshots().unwrap().len(), 3);
}

#[test]
fn a_cancelled_backup_publishes_nothing_and_check_stays_clean() {
    let dir = tempfile::tempdir().unwrap();
    let src = chats(dir.path());
    let phone = Device::open(dir.path().join("phone"));
    phone.enable_with_key(s(&dir.path().join("repo"))).unwrap();
    let before = phone
        .backup_now(std::slice::from_ref(&src), None, None)
        .unwrap();
    // New content, so the cancelled run has data to upload.
    for i in 0..4 {
        let p = src.join("Media").join(format!("img-{i}.jpg"));
        let mut b = std::fs::read(&p).unwrap();
        b.reverse();
        std::fs::write(&p, b).unwrap();
    }
    let token = CancelToken::new();
    let at = CancelAt {
        token: token.clone(),
        at: "img-2.jpg",
    };
    assert!(matches!(
        phone.backup_now(std::slice::from_ref(&src), Some(&at), Some(&token)),
        Err(DeviceError::Cancelled)
    ));
    assert!(token.is_cancelled());
    let list = phone.snapshots().unwrap();
    assert_eq!(list.len(), 1, "no snapshot published");
    assert_eq!(
        phone.status().unwrap().last_snapshot.map(|i| i.id),
        Some(before.id)
    );
    let c = phone.check().unwrap();
    assert!(c.errors.is_empty(), "{c:?}");
    assert!(c.warnings.is_empty(), "{c:?}");
    assert_eq!(c.snapshots, 1);
    // An already-cancelled token stops the next run at once; a fresh one completes.
    assert!(matches!(
        phone.backup_now(std::slice::from_ref(&src), None, Some(&token)),
        Err(DeviceError::Cancelled)
    ));
    phone
        .backup_now(&[src], None, Some(&CancelToken::new()))
        .unwrap();
    assert_eq!(phone.snapshots().unwrap().len(), 2);
    assert!(phone.check().unwrap().errors.is_empty());
}

#[test]
fn a_rolled_back_repository_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = chats(dir.path());
    let repo = dir.path().join("repo");
    let phone = Device::open(dir.path().join("phone"));
    phone.enable_with_key(s(&repo)).unwrap();
    phone
        .backup_now(std::slice::from_ref(&src), None, None)
        .unwrap();
    let newest = phone
        .backup_now(std::slice::from_ref(&src), None, None)
        .unwrap();
    std::fs::remove_file(repo.join("snapshots").join(&newest.id)).unwrap();
    match phone.backup_now(&[src], None, None) {
        Err(DeviceError::RolledBack { message }) => {
            assert!(message.contains("rolled back"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        phone.snapshots(),
        Err(DeviceError::RolledBack { .. })
    ));
}

#[test]
fn password_mode_from_enable_to_a_new_phone_and_back_to_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::start(&dir.path().join("vault-data"));
    let src = chats(dir.path());
    let repo = dir.path().join("repo");
    let pw = SecretString::from("correct horse".to_string());
    let phone = Device::open(dir.path().join("phone-a"));
    phone
        .enable_with_password(s(&repo), &vault.url, "alice", vault.token("alice"), &pw)
        .unwrap();
    let st = phone.status().unwrap();
    assert_eq!(st.mode, "password");
    assert_eq!(st.vault_url.as_deref(), Some(vault.url.as_str()));
    assert!(st.vault_identity.is_some());
    let snap = phone
        .backup_now(std::slice::from_ref(&src), None, None)
        .unwrap();

    // Lose the phone: wrong passwords count down, the right one restores.
    let phone_b = Device::open(dir.path().join("phone-b"));
    let target = dir.path().join("restored-b");
    for left in [9, 8] {
        match phone_b.restore_with_password(
            s(&repo),
            &vault.url,
            "alice",
            vault.token("alice"),
            &SecretString::from("wrong guess".to_string()),
            "latest",
            &target,
            None,
            None,
        ) {
            Err(DeviceError::WrongPassword { attempts_left }) => assert_eq!(attempts_left, left),
            other => panic!("{other:?}"),
        }
        assert_eq!(phone_b.status().unwrap().mode, "off");
    }
    let r = phone_b
        .restore_with_password(
            s(&repo),
            &vault.url,
            "alice",
            vault.token("alice"),
            &pw,
            "latest",
            &target,
            None,
            None,
        )
        .unwrap();
    assert_eq!(r.snapshot_id, snap.id);
    same_tree(&src, &target.join("chats"));
    assert_eq!(phone_b.status().unwrap().mode, "password");
    let second = phone_b
        .backup_now(std::slice::from_ref(&src), None, None)
        .unwrap();

    // Change the password: the old one is now a (counted) wrong guess.
    let new_pw = SecretString::from("battery staple".to_string());
    phone_b.change_password(&pw, &new_pw).unwrap();
    assert!(matches!(
        phone_b.switch_to_key(&pw),
        Err(DeviceError::WrongPassword { .. })
    ));
    let key_text = phone_b.switch_to_key(&new_pw).unwrap();
    assert_eq!(phone_b.status().unwrap().mode, "key");
    assert_eq!(phone_b.status().unwrap().vault_url, None);

    // The vault no longer has the key; the key text restores on a third phone.
    let phone_c = Device::open(dir.path().join("phone-c"));
    assert!(matches!(
        phone_c.restore_with_password(
            s(&repo),
            &vault.url,
            "alice",
            vault.token("alice"),
            &new_pw,
            "latest",
            &dir.path().join("nope"),
            None,
            None,
        ),
        Err(DeviceError::WrongPassword { .. } | DeviceError::Vault { .. })
    ));
    let target_c = dir.path().join("restored-c");
    let r = phone_c
        .restore_with_key(s(&repo), &key_text, "latest", &target_c, None, None)
        .unwrap();
    assert_eq!(r.snapshot_id, second.id);

    // Back to a password on phone C, then off.
    phone_c
        .switch_to_password(&vault.url, "alice", vault.token("alice"), &pw)
        .unwrap();
    assert_eq!(phone_c.status().unwrap().mode, "password");
    assert!(matches!(
        phone_c.disable(None),
        Err(DeviceError::Invalid { .. })
    ));
    assert!(phone_c.disable(Some(&pw)).unwrap() > 0);
    assert_eq!(phone_c.status().unwrap().mode, "off");
    assert!(matches!(
        phone.snapshots(),
        Err(DeviceError::NoRepository { .. })
    ));
}

#[test]
fn a_cancelled_restore_stops_and_a_rerun_completes() {
    let dir = tempfile::tempdir().unwrap();
    let src = chats(dir.path());
    let phone = Device::open(dir.path().join("phone"));
    phone.enable_with_key(s(&dir.path().join("repo"))).unwrap();
    let snap = phone
        .backup_now(std::slice::from_ref(&src), None, None)
        .unwrap();
    let target = dir.path().join("restored");
    let token = CancelToken::new();
    // Cancelled at the first callback (the restore's start, before any file is written).
    let at = CancelAt {
        token: token.clone(),
        at: "",
    };
    assert!(matches!(
        phone.restore("latest", &target, Some(&at), Some(&token)),
        Err(DeviceError::Cancelled)
    ));
    assert!(!target.join("chats/notes.txt").exists(), "nothing placed");
    let r = phone.restore("latest", &target, None, None).unwrap();
    assert_eq!((r.snapshot_id, r.files), (snap.id, 5));
    same_tree(&src, &target.join("chats"));
}
