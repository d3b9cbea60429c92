//! `uniffi-bindgen`: generates the Kotlin, Swift and Python bindings of `chatvault-ffi` from
//! its compiled library (`generate --library target/…/libchatvault_ffi.so --language kotlin`).
//! A separate crate so that the FFI library does not depend on the generator.
//!
//! This binary must not be shipped in an app; it only writes source files.

#![forbid(unsafe_code)]

fn main() {
    uniffi::uniffi_bindgen_main()
}
