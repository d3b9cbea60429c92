//! Replays every saved fuzz input in `tests/fuzz_regressions/<target>/` through the fuzz
//! harness of that target (`tests/fuzz_harness/mod.rs`, the same code the libFuzzer targets in
//! `fuzz/` run), with the replay all crates share ([`chatvault_fuzz_support::replay_regressions`]).
//! Add a crashing input found by `scripts/fuzz.sh` by copying it from
//! `fuzz/artifacts/<target>/` into `tests/fuzz_regressions/<target>/` with a descriptive name.
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

mod fuzz_harness;

use std::path::Path;

#[test]
fn fuzz_regressions_do_not_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    chatvault_fuzz_support::replay_regressions(&root, fuzz_harness::TARGETS, 1);
}
