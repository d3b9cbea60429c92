#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chatvault_fuzz::threshold::threshold_record(data));
