//! `chatvault restore` stays inside its target (docs/FORMAT.md §12.1), through the real binary.
//!
//! Data: a folder `chats/` with a directory `x/file` and a file `ok`, backed up once. Target:
//! prepared with links to a sibling `outside/` folder where the snapshot has a directory (`x`)
//! and a file (`ok`). Expected: without `--overwrite` both items fail (exit 6, "not followed" /
//! "already exists"), with it the links themselves are replaced; `outside/` never changes.
//! (The hostile-snapshot cases are in chatvault-repo's tests/hostile_restore.rs.)
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};

use assert_cmd::Command;

mod common;
use common::{assert_code, assert_ok};

/// Relative path → (is link, mode, mtime, bytes or link target) of everything under `root`.
fn fingerprint(root: &Path) -> BTreeMap<PathBuf, (bool, u32, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let data = if m.file_type().is_symlink() {
            std::fs::read_link(&p)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else if m.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            Vec::new()
        } else {
            std::fs::read(&p).unwrap()
        };
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        out.insert(
            rel,
            (
                m.file_type().is_symlink(),
                m.mode() & 0o7777,
                m.mtime(),
                data,
            ),
        );
    }
    out
}

#[test]
fn restore_never_writes_through_links_already_in_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let p = |rel: &str| dir.path().join(rel);
    let cv = || {
        let mut c = Command::cargo_bin("chatvault").unwrap();
        c.env_remove("CHATVAULT_KEY")
            .env_remove("CHATVAULT_REPO")
            .env_remove("CHATVAULT_HOME")
            .env("NO_COLOR", "1")
            .arg("--home")
            .arg(p("home"))
            .arg("--repo")
            .arg(p("repo"));
        c
    };
    std::fs::create_dir_all(p("chats/x")).unwrap();
    std::fs::write(p("chats/x/file"), b"restored into x").unwrap();
    std::fs::write(p("chats/ok"), b"restored ok").unwrap();
    assert_ok(&cv().args(["init", "--key"]).output().unwrap());
    assert_ok(&cv().arg("backup").arg(p("chats")).output().unwrap());

    std::fs::create_dir_all(p("outside")).unwrap();
    std::fs::write(p("outside/secret"), b"outside secret").unwrap();
    std::fs::create_dir_all(p("restored/chats")).unwrap();
    symlink(p("outside"), p("restored/chats/x")).unwrap();
    symlink(p("outside/secret"), p("restored/chats/ok")).unwrap();
    let before = fingerprint(&p("outside"));

    let out = cv()
        .args(["restore", "latest", "--target"])
        .arg(p("restored"))
        .output()
        .unwrap();
    assert_code(&out, 6, "2 item(s) could not be restored");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("chats/x/: directory not restored: a symbolic link is in its place"),
        "{err}"
    );
    assert!(
        err.contains("chats/ok: a symbolic link already exists in the target"),
        "{err}"
    );
    assert_eq!(fingerprint(&p("outside")), before);

    let out = cv()
        .args(["restore", "latest", "--overwrite", "--target"])
        .arg(p("restored"))
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(fingerprint(&p("outside")), before);
    let x = std::fs::symlink_metadata(p("restored/chats/x")).unwrap();
    assert!(x.file_type().is_dir());
    let ok = std::fs::symlink_metadata(p("restored/chats/ok")).unwrap();
    assert!(ok.file_type().is_file());
    assert_eq!(
        std::fs::read(p("restored/chats/x/file")).unwrap(),
        b"restored into x"
    );
    assert_eq!(
        std::fs::read(p("restored/chats/ok")).unwrap(),
        b"restored ok"
    );
}
