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
    chatvault_fuzz_support::replay_regressions(&root, fuzz_harness::TARGETS, 4);
}

/// Valid inputs reach the deep paths: a real record and real messages of the fixture.
#[test]
fn fuzz_harness_real_inputs_reach_the_steps() {
    let f = fuzz_harness::fixture();
    let mut rec = vec![0u8];
    rec.extend_from_slice(&f.records[0].to_bytes());
    fuzz_harness::threshold_record(&rec);
    rec[0] = 2;
    fuzz_harness::threshold_record(&rec);
    let mut msg = vec![3u8];
    msg.extend(serde_json::to_vec(&f.records[0].recover1()).unwrap());
    fuzz_harness::threshold_messages(&msg);
}
