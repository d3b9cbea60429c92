//! Every target in one binary (scripts/ci-fuzz.sh builds only this): the harness is chosen with
//! `CHATVAULT_FUZZ_TARGET`, see `chatvault_fuzz::select_from_env`.
#![no_main]

use std::sync::OnceLock;

static HARNESS: OnceLock<fn(&[u8])> = OnceLock::new();

libfuzzer_sys::fuzz_target!(
    init: {
        HARNESS.get_or_init(chatvault_fuzz::select_from_env);
    },
    |data: &[u8]| (HARNESS.get().expect("init ran"))(data)
);
