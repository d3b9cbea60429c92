//! The `chatvault` CLI driven as a user would: through the real binary, with temp folders.
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use assert_cmd::Command;

mod common;
use common::{assert_code, assert_ok};

/// A user's world: a temp folder with homes, a repository and source data.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        World { dir }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn repo(&self) -> String {
        self.p("repo").to_string_lossy().into_owned()
    }
    /// `chatvault --home <home> …` with a clean environment.
    fn cv(&self, home: &str) -> Command {
        let mut c = Command::cargo_bin("chatvault").unwrap();
        c.env_remove("CHATVAULT_KEY")
            .env_remove("CHATVAULT_REPO")
            .env_remove("CHATVAULT_HOME")
            .env("NO_COLOR", "1")
            .arg("--home")
            .arg(self.p(home));
        c
    }
    /// Enables backup with a key on `home`; returns the key text printed once.
    fn init(&self, home: &str) -> String {
        let out = self
            .cv(home)
            .args(["init", "--key", "--repo", &self.repo()])
            .output()
            .unwrap();
        assert_ok(&out);
        let text = String::from_utf8(out.stdout).unwrap();
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.len() == 79 && l.split(' ').count() == 16)
            .unwrap_or_else(|| panic!("no grouped key in output:\n{text}"));
        line.to_string()
    }
}

/// Deterministic pseudo-random bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A chat-like folder: text, a multi-chunk media file, an empty file, a symlink, a non-UTF-8
/// name, nested folders, odd permissions.
fn make_source(root: &Path) {
    std::fs::create_dir_all(root.join("Databases")).unwrap();
    std::fs::create_dir_all(root.join("Media/WhatsApp Images/Sent")).unwrap();
    std::fs::create_dir_all(root.join("empty dir")).unwrap();
    let text: String = (0..20000)
        .map(|i| format!("message {i}: see you at {} o'clock\n", i % 12))
        .collect();
    std::fs::write(root.join("Databases/chat.txt"), text).unwrap();
    std::fs::write(
        root.join("Media/WhatsApp Images/IMG-1.jpg"),
        noise(1, 5 << 20),
    )
    .unwrap();
    std::fs::write(
        root.join("Media/WhatsApp Images/Sent/IMG-2.jpg"),
        noise(2, 300_000),
    )
    .unwrap();
    std::fs::write(root.join("Media/empty"), b"").unwrap();
    std::fs::write(
        root.join(OsStr::from_bytes(b"caf\xe9-latin1.txt")),
        b"non-utf8 name",
    )
    .unwrap();
    std::os::unix::fs::symlink("Databases/chat.txt", root.join("link-to-chat")).unwrap();
    let ro = root.join("Media/readonly.txt");
    std::fs::write(&ro, b"read only").unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o444)).unwrap();
}

#[derive(Debug, PartialEq)]
enum Entry {
    File { mode: u32, mtime: i64, hash: String },
    Dir { mode: u32 },
    Link(Vec<u8>),
}

/// Everything a byte-identical restore must reproduce, keyed by relative path.
fn snapshot_tree(root: &Path) -> BTreeMap<Vec<u8>, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, Entry>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                out.insert(
                    rel,
                    Entry::Link(
                        std::fs::read_link(&p)
                            .unwrap()
                            .as_os_str()
                            .as_bytes()
                            .to_vec(),
                    ),
                );
            } else if m.is_dir() {
                out.insert(
                    rel,
                    Entry::Dir {
                        mode: m.mode() & 0o7777,
                    },
                );
                walk(root, &p, out);
            } else {
                let data = std::fs::read(&p).unwrap();
                let hash = format!("{}:{:x}", data.len(), fxhash(&data));
                out.insert(
                    rel,
                    Entry::File {
                        mode: m.mode() & 0o7777,
                        mtime: m.mtime(),
                        hash,
                    },
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn fxhash(d: &[u8]) -> u64 {
    d.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn snapshot_ids(w: &World, home: &str) -> Vec<String> {
    let out = w.cv(home).args(["snapshots", "--json"]).output().unwrap();
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn lost_phone_restores_byte_identical_with_only_the_repository_and_the_key() {
    let w = World::new();
    let src = w.p("chats");
    make_source(&src);
    // A folder large enough to be stored in parts (FORMAT §10.2).
    let stickers = src.join("Media/WhatsApp Stickers");
    std::fs::create_dir_all(&stickers).unwrap();
    for i in 0..700 {
        std::fs::write(stickers.join(format!("STK-{i:05}.webp")), noise(i, 40)).unwrap();
    }
    let key = w.init("phone-a");
    assert_ok(&w.cv("phone-a").arg("backup").arg(&src).output().unwrap());
    // A second, incremental backup after a change reuses unchanged files.
    std::fs::write(src.join("Databases/new.txt"), b"hello again").unwrap();
    std::fs::write(stickers.join("STK-00350.webp"), b"edited").unwrap();
    let out = w
        .cv("phone-a")
        .arg("backup")
        .arg("--json")
        .arg(&src)
        .output()
        .unwrap();
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["snapshot"]["summary"]["files_read"], 2,
        "only the new and the edited file are read"
    );
    // The phone is lost: its home is gone.
    std::fs::remove_dir_all(w.p("phone-a")).unwrap();
    let out = w
        .cv("phone-b")
        .env("CHATVAULT_KEY", key.to_uppercase())
        .args(["--repo", &w.repo(), "restore", "latest", "--target"])
        .arg(w.p("restored"))
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(snapshot_tree(&src), snapshot_tree(&w.p("restored/chats")));
    // The key never went to argv or logs: only its single print at init.
    let check = w
        .cv("phone-b")
        .env("CHATVAULT_KEY", &key)
        .args(["--repo", &w.repo(), "-vv", "check", "--read-data"])
        .output()
        .unwrap();
    assert_ok(&check);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(!all.contains(&key.replace(' ', "")) && !all.contains(&key));
}

#[test]
fn key_file_forms_and_include_restore_a_single_path() {
    let w = World::new();
    let src = w.p("chats");
    make_source(&src);
    let out = w
        .cv("a")
        .args(["init", "--key", "--repo", &w.repo(), "--key-out"])
        .arg(w.p("key.txt"))
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(
        std::fs::metadata(w.p("key.txt")).unwrap().mode() & 0o777,
        0o600
    );
    assert_ok(&w.cv("a").arg("backup").arg(&src).output().unwrap());
    let out = w
        .cv("b")
        .args(["--repo", &w.repo(), "--key-file"])
        .arg(w.p("key.txt"))
        .args([
            "restore",
            "latest",
            "--include",
            "chats/Databases",
            "--target",
        ])
        .arg(w.p("only-db"))
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(w.p("only-db/chats/Databases/chat.txt").exists());
    assert!(!w.p("only-db/chats/Media").exists());
    // `key show` needs confirmation; --yes prints the same key.
    let out = w.cv("a").args(["key", "show"]).output().unwrap();
    assert_code(&out, 1, "confirmation");
    let out = w.cv("a").args(["key", "show", "--yes"]).output().unwrap();
    assert_ok(&out);
    let shown = String::from_utf8(out.stdout)
        .unwrap()
        .replace([' ', '\n'], "");
    assert_eq!(
        shown,
        std::fs::read_to_string(w.p("key.txt")).unwrap().trim()
    );
}

#[test]
fn wrong_key_missing_repo_and_bad_key_text_are_clear_errors() {
    let w = World::new();
    let src = w.p("chats");
    make_source(&src);
    w.init("a");
    assert_ok(&w.cv("a").arg("backup").arg(&src).output().unwrap());
    let wrong = "0".repeat(64);
    let out = w
        .cv("b")
        .env("CHATVAULT_KEY", &wrong)
        .args(["--repo", &w.repo(), "snapshots"])
        .output()
        .unwrap();
    assert_code(&out, 4, "wrong backup key");
    let out = w
        .cv("b")
        .env("CHATVAULT_KEY", &wrong)
        .args(["--repo", &w.repo(), "restore", "latest", "--target"])
        .arg(w.p("x"))
        .output()
        .unwrap();
    assert_code(&out, 4, "wrong backup key");
    assert!(!w.p("x").exists(), "nothing written with a wrong key");
    let out = w
        .cv("b")
        .env("CHATVAULT_KEY", "12345")
        .args(["--repo", &w.repo(), "snapshots"])
        .output()
        .unwrap();
    assert_code(&out, 1, "exactly 64 hex digits");
    let out = w
        .cv("b")
        .env("CHATVAULT_KEY", &wrong)
        .args(["--repo"])
        .arg(w.p("nowhere"))
        .arg("snapshots")
        .output()
        .unwrap();
    assert_code(&out, 5, "no chatvault repository");
    let out = w.cv("fresh").arg("snapshots").output().unwrap();
    assert_code(&out, 5, "chatvault init");
    // Without a key on a non-interactive new device: say how to give one.
    let out = w
        .cv("b")
        .args(["--repo", &w.repo(), "snapshots"])
        .output()
        .unwrap();
    assert_code(&out, 1, "CHATVAULT_KEY");
    // init twice on the same repository refuses.
    let out = w
        .cv("c")
        .args(["init", "--key", "--repo", &w.repo()])
        .output()
        .unwrap();
    assert_code(&out, 1, "already exists");
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                v.extend(files_under(&p));
            } else {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

/// Backs up `first` (snapshot 1), then adds `second` (snapshot 2, new packs only for it).
fn two_snapshots(w: &World) -> (PathBuf, Vec<PathBuf>, Vec<PathBuf>) {
    let src = w.p("chats");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("old.bin"), noise(10, 3 << 20)).unwrap();
    w.init("a");
    assert_ok(&w.cv("a").arg("backup").arg(&src).output().unwrap());
    let packs1 = files_under(&w.p("repo/data"));
    std::fs::write(src.join("new.bin"), noise(11, 3 << 20)).unwrap();
    assert_ok(&w.cv("a").arg("backup").arg(&src).output().unwrap());
    let packs2: Vec<_> = files_under(&w.p("repo/data"))
        .into_iter()
        .filter(|p| !packs1.contains(p))
        .collect();
    (src, packs1, packs2)
}

fn flip_byte(path: &Path, pos_from_start: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = pos_from_start.min(b.len() - 1);
    b[i] ^= 0x20;
    std::fs::write(path, b).unwrap();
}

#[test]
fn damaged_new_pack_is_detected_and_older_snapshots_still_restore() {
    let w = World::new();
    let (_src, _packs1, packs2) = two_snapshots(&w);
    let ids = snapshot_ids(&w, "a");
    assert_eq!(ids.len(), 2);
    // Bit flip inside a data blob of the newest pack: only check --read-data can see it.
    let data_pack = packs2
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    flip_byte(data_pack, 1000);
    assert_ok(&w.cv("a").arg("check").output().unwrap());
    let out = w.cv("a").args(["check", "--read-data"]).output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("new.bin") && !stdout.contains("old.bin"),
        "{stdout}"
    );
    // Restoring the newest snapshot writes the intact file, refuses the damaged one.
    let out = w
        .cv("a")
        .args(["restore", &ids[1], "--target"])
        .arg(w.p("r2"))
        .output()
        .unwrap();
    assert_code(&out, 6, "new.bin");
    assert_eq!(
        std::fs::read(w.p("r2/chats/old.bin")).unwrap(),
        noise(10, 3 << 20)
    );
    assert!(
        !w.p("r2/chats/new.bin").exists(),
        "no unverified file under its real name"
    );
    let leftovers: Vec<_> = files_under(&w.p("r2"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The older snapshot restores completely.
    let out = w
        .cv("a")
        .args(["restore", &ids[0], "--target"])
        .arg(w.p("r1"))
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(
        std::fs::read(w.p("r1/chats/old.bin")).unwrap(),
        noise(10, 3 << 20)
    );
}

#[test]
fn truncated_or_deleted_pack_is_reported_by_check_and_restore() {
    let w = World::new();
    let (_src, _p1, packs2) = two_snapshots(&w);
    let data_pack = packs2
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let b = std::fs::read(data_pack).unwrap();
    std::fs::write(data_pack, &b[..b.len() / 2]).unwrap();
    let out = w.cv("a").arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stdout).contains("truncated or replaced"));
    std::fs::remove_file(data_pack).unwrap();
    let out = w.cv("a").arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stdout).contains("missing"));
    let out = w
        .cv("a")
        .args(["restore", "latest", "--target"])
        .arg(w.p("r"))
        .output()
        .unwrap();
    assert_code(&out, 6, "new.bin");
    assert!(w.p("r/chats/old.bin").exists());
}

#[test]
fn damaged_snapshot_index_and_config_objects_give_clear_errors() {
    let w = World::new();
    let (_src, _p1, _p2) = two_snapshots(&w);
    let ids = snapshot_ids(&w, "a");
    // Snapshot object bit flip: listed as damaged, the other snapshot restores.
    flip_byte(&w.p(&format!("repo/snapshots/{}", ids[1])), 30);
    let out = w.cv("a").arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stdout).contains("DAMAGED"));
    let out = w
        .cv("a")
        .args(["restore", &ids[1][..8], "--target"])
        .arg(w.p("x"))
        .output()
        .unwrap();
    assert_code(&out, 6, "repository corrupted: snapshot");
    assert_ok(
        &w.cv("a")
            .args(["restore", "latest", "--target"])
            .arg(w.p("ok"))
            .output()
            .unwrap(),
    );
    assert!(w.p("ok/chats/old.bin").exists());
    // Index object truncated: check reports it; files it covered fail, a new backup heals.
    let idx = files_under(&w.p("repo/index"));
    for i in &idx {
        let b = std::fs::read(i).unwrap();
        std::fs::write(i, &b[..b.len() - 7]).unwrap();
    }
    let out = w.cv("a").arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stdout).contains("index"));
    let out = w
        .cv("a")
        .args(["backup", "--force"])
        .arg(w.p("chats"))
        .output()
        .unwrap();
    assert_ok(&out);
    // --durable: every file synced before its rename (FORMAT §12.1 rule 13).
    assert_ok(
        &w.cv("a")
            .args(["restore", "latest", "--durable", "--target"])
            .arg(w.p("healed"))
            .output()
            .unwrap(),
    );
    assert_eq!(
        std::fs::read(w.p("healed/chats/new.bin")).unwrap(),
        noise(11, 3 << 20)
    );
    // Config damage is corruption, not a wrong key.
    flip_byte(&w.p("repo/config"), 60);
    let out = w.cv("a").arg("snapshots").output().unwrap();
    assert_code(&out, 6, "repository corrupted: config");
    std::fs::write(w.p("repo/config"), b"").unwrap();
    let out = w.cv("a").arg("snapshots").output().unwrap();
    assert_code(&out, 6, "config");
}

/// Root reads everything, so the unreadable-file test runs the CLI as `nobody` when root.
fn as_user(w: &World, home: &str) -> Command {
    let is_root = unsafe_geteuid() == 0;
    if !is_root {
        return w.cv(home);
    }
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(assert_cmd::cargo::cargo_bin("chatvault"))
        .env_remove("CHATVAULT_KEY")
        .env_remove("CHATVAULT_REPO")
        .env_remove("CHATVAULT_HOME")
        .arg("--home")
        .arg(w.p(home));
    c
}

fn unsafe_geteuid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
}

#[test]
fn unreadable_file_is_reported_and_the_snapshot_is_partial() {
    let w = World::new();
    let src = w.p("chats");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(src.join("ok.txt"), b"fine").unwrap();
    std::fs::write(src.join("secret.db"), b"cannot read me").unwrap();
    std::fs::set_permissions(src.join("ok.txt"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(
        src.join("secret.db"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let out = as_user(&w, "a")
        .args(["init", "--key", "--repo", &w.repo()])
        .output()
        .unwrap();
    assert_ok(&out);
    let out = as_user(&w, "a").arg("backup").arg(&src).output().unwrap();
    assert_code(&out, 3, "secret.db");
    let out = as_user(&w, "a")
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["complete"], false);
    let out = as_user(&w, "a")
        .args(["restore", "latest", "--target"])
        .arg(w.p("r"))
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(std::fs::read(w.p("r/chats/ok.txt")).unwrap(), b"fine");
    assert!(!w.p("r/chats/secret.db").exists());
}

#[test]
fn whatsapp_fixture_decrypts_byte_identical_through_the_cli() {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/whatsapp");
    if !fx.join("msgstore.db.crypt15").exists() {
        eprintln!("SKIPPED: {} not found", fx.display());
        return;
    }
    let w = World::new();
    let out = w
        .cv("a")
        .args(["whatsapp", "decrypt", "--key"])
        .arg(fx.join("encrypted_backup.key"))
        .arg(fx.join("msgstore.db.crypt15"))
        .arg(w.p("msgstore.db"))
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(
        std::fs::read(w.p("msgstore.db")).unwrap(),
        std::fs::read(fx.join("msgstore.db")).unwrap()
    );
    // Re-encrypt with the key from the environment, decrypt again.
    let hex = "6730a595a1484d0c39c101dc0ac82ec5e401bb6f0e1b8ee2dc104a6b3687f017";
    let out = w
        .cv("a")
        .env("CHATVAULT_KEY", hex)
        .args(["whatsapp", "encrypt"])
        .arg(w.p("msgstore.db"))
        .arg(w.p("again.crypt15"))
        .output()
        .unwrap();
    assert_ok(&out);
    let out = w
        .cv("a")
        .env("CHATVAULT_KEY", hex)
        .args(["whatsapp", "decrypt"])
        .arg(w.p("again.crypt15"))
        .arg(w.p("again.db"))
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(
        std::fs::read(w.p("again.db")).unwrap(),
        std::fs::read(fx.join("msgstore.db")).unwrap()
    );
    // Wrong key: exit 4, no output file.
    let out = w
        .cv("a")
        .env("CHATVAULT_KEY", "1".repeat(64))
        .args(["whatsapp", "decrypt"])
        .arg(fx.join("msgstore.db.crypt15"))
        .arg(w.p("wrong.db"))
        .output()
        .unwrap();
    assert_code(&out, 4, "wrong key");
    assert!(!w.p("wrong.db").exists());
    // A decrypted WhatsApp database backs up and restores like any other file.
    w.init("b");
    assert_ok(
        &w.cv("b")
            .arg("backup")
            .arg(w.p("msgstore.db"))
            .output()
            .unwrap(),
    );
    assert_ok(
        &w.cv("b")
            .args(["restore", "latest", "--target"])
            .arg(w.p("r"))
            .output()
            .unwrap(),
    );
    // It went through the consistent-copy path: same logical content, integrity_check ok.
    assert_eq!(
        chatvault_repo::sqlite::logical_digest(&w.p("r/msgstore.db")).unwrap(),
        chatvault_repo::sqlite::logical_digest(&fx.join("msgstore.db")).unwrap()
    );
}

#[test]
fn demo_runs_the_whole_story_and_leaves_nothing_behind() {
    let w = World::new();
    let out = w
        .cv("unused")
        .arg("demo")
        .arg("--keep")
        .arg(w.p("demo"))
        .output()
        .unwrap();
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("files identical") && text.contains("Demo passed"),
        "{text}"
    );
    assert!(text.contains("wrong backup key"), "{text}");
}

/// A chat app inserts messages every few milliseconds while backups run: every snapshot restores
/// to a database that passes integrity_check and holds every message committed before the backup
/// began.
#[test]
fn backup_during_concurrent_writes_always_restores_an_intact_database() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    let w = World::new();
    let src = w.p("chats");
    std::fs::create_dir_all(src.join("Databases")).unwrap();
    let db = src.join("Databases/msgstore.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE message(id INTEGER PRIMARY KEY, chat INTEGER, text TEXT);
             CREATE INDEX by_chat ON message(chat);",
        )
        .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicI64::new(0));
    let writer = {
        let (stop, committed, db) = (stop.clone(), committed.clone(), db.clone());
        std::thread::spawn(move || {
            let c = rusqlite::Connection::open(&db).unwrap();
            c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
            let mut i = 0i64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let text = format!("message {i} {}", "lorem ipsum ".repeat((i % 40) as usize));
                c.execute(
                    "INSERT INTO message(id, chat, text) VALUES (?1, ?2, ?3)",
                    rusqlite::params![i, i % 17, text],
                )
                .unwrap();
                if i % 50 == 0 {
                    c.execute("UPDATE message SET text = 'edited' WHERE id = ?1", [i / 2])
                        .unwrap();
                }
                committed.store(i, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            i
        })
    };
    w.init("a");
    let mut before = Vec::new();
    for _ in 0..5 {
        std::thread::sleep(std::time::Duration::from_millis(150));
        before.push(committed.load(Ordering::SeqCst));
        let out = w.cv("a").arg("backup").arg(&src).output().unwrap();
        assert_ok(&out);
    }
    stop.store(true, Ordering::SeqCst);
    let total = writer.join().unwrap();
    assert!(
        total > before[0],
        "the writer kept writing during the backups"
    );
    let ids = snapshot_ids(&w, "a");
    assert_eq!(ids.len(), 5);
    for (i, id) in ids.iter().enumerate() {
        let target = w.p(&format!("r{i}"));
        assert_ok(
            &w.cv("a")
                .args(["restore", id, "--target"])
                .arg(&target)
                .output()
                .unwrap(),
        );
        let restored = target.join("chats/Databases/msgstore.db");
        assert!(
            !target.join("chats/Databases/msgstore.db-wal").exists(),
            "a stale WAL was restored next to the consistent copy"
        );
        let c = rusqlite::Connection::open(&restored).unwrap();
        let ok: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok", "snapshot {i}");
        let max: i64 = c
            .query_row("SELECT coalesce(max(id), 0) FROM message", [], |r| r.get(0))
            .unwrap();
        let count: i64 = c
            .query_row("SELECT count(*) FROM message", [], |r| r.get(0))
            .unwrap();
        assert!(
            max >= before[i],
            "snapshot {i} lost committed messages: {max} < {}",
            before[i]
        );
        assert_eq!(count, max, "snapshot {i} has gaps: a torn copy");
    }
}

/// Swapping two objects of the same kind, duplicating objects under other names, and damaged
/// locks: every case is either detected (non-zero exit, object named) or provably harmless.
#[test]
fn swapped_duplicated_and_lock_faults_are_detected_or_harmless() {
    let w = World::new();
    let (_src, packs1, packs2) = two_snapshots(&w);
    let ids = snapshot_ids(&w, "a");
    // A garbage lock and a lock copied under another name: ignored, backup and check still run.
    std::fs::create_dir_all(w.p("repo/locks")).unwrap();
    std::fs::write(w.p(&format!("repo/locks/{}", "ab".repeat(32))), b"garbage").unwrap();
    assert_ok(&w.cv("a").arg("backup").arg(w.p("chats")).output().unwrap());
    assert_ok(&w.cv("a").arg("check").output().unwrap());
    // A pack duplicated under another name: unreferenced (a warning), never trusted.
    let dup = w.p(&format!("repo/data/cd/{}", "cd".repeat(32)));
    std::fs::create_dir_all(dup.parent().unwrap()).unwrap();
    std::fs::copy(&packs1[0], &dup).unwrap();
    let out = w.cv("a").args(["check", "--read-data"]).output().unwrap();
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("not referenced"));
    std::fs::remove_file(&dup).unwrap();
    // Two packs swapped (each under the other's name): authentication fails for both.
    let (a, b) = (&packs1[0], &packs2[0]);
    let (ba, bb) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    std::fs::write(a, &bb).unwrap();
    std::fs::write(b, &ba).unwrap();
    let out = w.cv("a").args(["check", "--read-data"]).output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    std::fs::write(a, &ba).unwrap();
    std::fs::write(b, &bb).unwrap();
    assert_ok(&w.cv("a").args(["check", "--read-data"]).output().unwrap());
    // Two snapshots swapped: both are reported damaged, nothing restores from them.
    let (s0, s1) = (
        w.p(&format!("repo/snapshots/{}", ids[0])),
        w.p(&format!("repo/snapshots/{}", ids[1])),
    );
    let (b0, b1) = (std::fs::read(&s0).unwrap(), std::fs::read(&s1).unwrap());
    std::fs::write(&s0, &b1).unwrap();
    std::fs::write(&s1, &b0).unwrap();
    let out = w.cv("a").arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    let out = w
        .cv("a")
        .args(["restore", &ids[0], "--target"])
        .arg(w.p("x"))
        .output()
        .unwrap();
    assert_code(&out, 6, "snapshot");
    assert!(!w.p("x/chats").exists());
    // A snapshot duplicated under a new name: detected as damaged, the real one still restores.
    std::fs::write(&s0, &b0).unwrap();
    std::fs::write(&s1, &b1).unwrap();
    std::fs::write(w.p(&format!("repo/snapshots/{}", "ef".repeat(32))), &b0).unwrap();
    let out = w.cv("a").arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert_ok(
        &w.cv("a")
            .args(["restore", &ids[0], "--target"])
            .arg(w.p("y"))
            .output()
            .unwrap(),
    );
    assert_eq!(
        std::fs::read(w.p("y/chats/old.bin")).unwrap(),
        noise(10, 3 << 20)
    );
}

#[test]
fn migrate_on_a_new_repository_is_a_no_op_and_its_packs_are_padded() {
    let w = World::new();
    w.init("a");
    let src = w.p("chats");
    make_source(&src);
    assert_ok(&w.cv("a").arg("backup").arg(&src).output().unwrap());
    let out = w.cv("a").args(["migrate", "--json"]).output().unwrap();
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["upgraded"], false);
    assert_eq!(v["to"], 2);
    for p in files_under(&w.p("repo/data")) {
        let len = std::fs::metadata(&p).unwrap().len();
        // Padmé: the low E − S bits of the length are zero.
        let e = 63 - len.leading_zeros() as u64;
        let s = 64 - e.leading_zeros() as u64;
        assert_eq!(
            len % (1 << (e - s)),
            0,
            "{} ({len} B) is not padded",
            p.display()
        );
    }
}

/// `restore --json` (README "Restoring"): newline-delimited events; every database and the rest
/// of its folder are placed before `messages_ready`, which comes before the first media file is
/// even started (no `file` event, and no temporary entry, in Media/ until then — the observer
/// sees it in order; the library test `restore::tests::…messages_ready…` checks the start of each
/// temporary file too); a `summary` ends the stream. The same restore under `--limit-download`
/// completes identically (the rate itself is a bench figure, bench/restore.sh), so does a backup
/// under `--limit-upload`, and without `--json` the terminal gets the `messages ready` line.
#[test]
fn restore_json_puts_the_databases_first_and_signals_messages_ready() {
    let w = World::new();
    let src = w.p("chats");
    std::fs::create_dir_all(src.join("Databases")).unwrap();
    std::fs::create_dir_all(src.join("Media/Video")).unwrap();
    // Media sorts before and after the database folder, so tree order alone would interleave.
    std::fs::create_dir_all(src.join("AMedia")).unwrap();
    std::fs::write(src.join("AMedia/first.jpg"), noise(7, 300_000)).unwrap();
    for i in 0..4 {
        std::fs::write(src.join(format!("Media/Video/v{i}.mp4")), noise(i, 700_000)).unwrap();
    }
    let db = rusqlite::Connection::open(src.join("Databases/msgstore.db")).unwrap();
    db.execute_batch(
        "CREATE TABLE m(id INTEGER PRIMARY KEY, t TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 5000)
         INSERT INTO m(t) SELECT 'hello ' || i FROM n;",
    )
    .unwrap();
    drop(db);
    std::fs::write(src.join("Databases/wa.txt"), b"contacts").unwrap();
    let key = w.init("phone");
    assert_ok(&w.cv("phone").arg("backup").arg(&src).output().unwrap());

    for (n, limit) in [(1, None), (2, Some("4096"))] {
        let target = w.p(&format!("restored-{n}"));
        let mut c = w.cv("new");
        c.env("CHATVAULT_KEY", &key)
            .args([
                "--repo",
                &w.repo(),
                "restore",
                "latest",
                "--json",
                "--target",
            ])
            .arg(&target);
        if let Some(l) = limit {
            c.args(["--limit-download", l]);
        }
        let out = c.output().unwrap();
        assert_ok(&out);
        let events: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
            .collect();
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert_eq!(kinds.first(), Some(&"started"), "{kinds:?}");
        assert_eq!(kinds.last(), Some(&"summary"), "{kinds:?}");
        assert_eq!(events[0]["databases"], 1);
        let ready = kinds
            .iter()
            .position(|k| *k == "messages_ready")
            .expect("a messages_ready event");
        assert_eq!(kinds.iter().filter(|k| **k == "messages_ready").count(), 1);
        assert_eq!(events[ready]["databases"], 1);
        assert_eq!(events[ready]["failed"], 0);
        let path_of = |e: &serde_json::Value| e["path"].as_str().unwrap().to_string();
        let files: Vec<(usize, String)> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e["event"] == "file")
            .map(|(i, e)| (i, path_of(e)))
            .collect();
        assert_eq!(files.len(), 7, "{events:?}");
        for (i, p) in &files {
            if p.contains("/Databases/") {
                assert!(*i < ready, "{p} placed after messages_ready");
            } else {
                assert!(*i > ready, "media {p} placed before messages_ready");
            }
        }
        let summary = events.last().unwrap();
        assert_eq!(summary["files"], 7);
        assert_eq!(summary["failed"].as_array().unwrap().len(), 0);
        assert!(summary["downloaded_bytes"].as_u64().unwrap() > 2_800_000);
        assert_eq!(
            std::fs::read(target.join("chats/Media/Video/v3.mp4")).unwrap(),
            noise(3, 700_000)
        );
        let restored =
            rusqlite::Connection::open(target.join("chats/Databases/msgstore.db")).unwrap();
        let count: i64 = restored
            .query_row("SELECT count(*) FROM m", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 5000);
    }
    // Uploads go through the limiter too: a paced backup stores a new file that restores.
    std::fs::write(src.join("AMedia/second.jpg"), noise(8, 900_000)).unwrap();
    let out = w
        .cv("phone")
        .args(["--limit-upload", "8192", "backup"])
        .arg(&src)
        .output()
        .unwrap();
    assert_ok(&out);
    let target = w.p("restored-3");
    let out = w
        .cv("new")
        .env("CHATVAULT_KEY", &key)
        .args(["--repo", &w.repo(), "restore", "latest", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("messages ready: 1 database(s)"), "{text}");
    assert_eq!(
        std::fs::read(target.join("chats/AMedia/second.jpg")).unwrap(),
        noise(8, 900_000)
    );
}
