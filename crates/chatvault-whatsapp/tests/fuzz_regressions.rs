//! Replays every saved fuzz input in `tests/fuzz_regressions/<target>/` through the fuzz
//! harness of that target (`tests/fuzz_harness/mod.rs`, the same code the libFuzzer targets in
//! `fuzz/` run). Add a crashing input found by `scripts/fuzz.sh` by copying it from
//! `fuzz/artifacts/<target>/` into `tests/fuzz_regressions/<target>/` with a descriptive name.
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

mod fuzz_harness;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

#[test]
fn fuzz_regressions_do_not_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut ran = 0;
    let mut failures = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .expect("tests/fuzz_regressions exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
        let Some(&(_, harness)) = fuzz_harness::TARGETS.iter().find(|(t, _)| *t == name) else {
            panic!("tests/fuzz_regressions/{name}: no fuzz target of that name");
        };
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            ran += 1;
            if catch_unwind(AssertUnwindSafe(|| harness(&data))).is_err() {
                failures.push(file.strip_prefix(&root).unwrap().display().to_string());
            }
        }
    }
    assert!(ran > 0, "no regression inputs found in {}", root.display());
    assert!(
        failures.is_empty(),
        "fuzz regressions panicked: {failures:?}"
    );
    eprintln!("replayed {ran} fuzz regression inputs");
}
