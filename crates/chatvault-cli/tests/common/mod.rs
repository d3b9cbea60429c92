//! Assertions shared by the CLI integration tests.
#![allow(dead_code)] // each test binary uses a different subset

pub mod backends;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

/// The command succeeded; otherwise show its exit code and output.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "panic:\n{err}");
}

/// The command exited with `code`, said `stderr_has` on stderr, and did not panic.
pub fn assert_code(out: &Output, code: i32, stderr_has: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{err}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        err.contains(stderr_has),
        "stderr lacks {stderr_has:?}:\n{err}"
    );
    assert!(!err.contains("panicked"), "panic:\n{err}");
}

/// Deterministic pseudo-random bytes (incompressible), xorshift64 seeded by `seed`.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Relative path → (size, mode, FNV hash) of every file under `root`.
pub type Tree = BTreeMap<PathBuf, (u64, u32, u64)>;
pub fn tree(root: &Path) -> Tree {
    fn walk(root: &Path, dir: &Path, out: &mut Tree) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                walk(root, &p, out);
            } else {
                let d = std::fs::read(&p).unwrap();
                let h = d.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
                });
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    (m.len(), m.mode() & 0o7777, h),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// `restored` holds what `src` held: every file byte for byte, except SQLite databases, which
/// are compared logically (a backup stores a consistent copy, docs/FORMAT.md §5.1), and their
/// `-wal`/`-shm`/`-journal` files, which are never stored.
pub fn assert_restored(src: &Path, restored: &Path) {
    let is_db = |p: &Path| {
        std::fs::read(p)
            .map(|b| b.starts_with(b"SQLite format 3\0"))
            .unwrap_or(false)
    };
    let skip = |p: &Path| {
        let n = p.to_string_lossy();
        n.ends_with("-wal") || n.ends_with("-shm") || n.ends_with("-journal")
    };
    let want = tree(src);
    let got = tree(restored);
    let names = |t: &Tree| -> Vec<PathBuf> { t.keys().filter(|p| !skip(p)).cloned().collect() };
    assert_eq!(names(&got), names(&want), "restored file names");
    for (rel, w) in want.iter().filter(|(p, _)| !skip(p)) {
        if is_db(&src.join(rel)) {
            assert_eq!(
                chatvault_repo::sqlite::logical_digest(&restored.join(rel)).unwrap(),
                chatvault_repo::sqlite::logical_digest(&src.join(rel)).unwrap(),
                "{}",
                rel.display()
            );
        } else {
            assert_eq!(&got[rel], w, "{}", rel.display());
        }
    }
}
