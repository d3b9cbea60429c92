//! Replays every saved fuzz input in `tests/fuzz_regressions/<target>/` through the harness of
//! that target (`tests/fuzz_harness/mod.rs`, the code the libFuzzer targets in `fuzz/` run).
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

mod fuzz_harness;

use std::path::Path;

#[test]
fn fuzz_regressions_do_not_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut ran = 0;
    for (name, harness) in fuzz_harness::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|_| panic!("{} missing", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            harness(&std::fs::read(&file).unwrap());
            ran += 1;
        }
    }
    assert!(ran >= 4, "only {ran} regression inputs");
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
