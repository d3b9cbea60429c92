#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chatvault_fuzz::vault_core::vault_values(data));
