//! Assertions shared by the CLI integration tests.
#![allow(dead_code)] // each test binary uses a different subset

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
