//! The fuzz harnesses. They live next to the regression tests of the crate they exercise, so
//! that `cargo test` replays saved crashing inputs through exactly the code the fuzz targets run;
//! this crate only includes them.

/// Harnesses for `chatvault-format` (`crates/chatvault-format/tests/fuzz_harness/mod.rs`).
#[path = "../../crates/chatvault-format/tests/fuzz_harness/mod.rs"]
pub mod format;

/// Harness for `chatvault-whatsapp` (`crates/chatvault-whatsapp/tests/fuzz_harness/mod.rs`).
#[path = "../../crates/chatvault-whatsapp/tests/fuzz_harness/mod.rs"]
pub mod whatsapp;

/// Every fuzz target: name and harness.
pub fn targets() -> impl Iterator<Item = (&'static str, fn(&[u8]))> {
    format::TARGETS.iter().chain(whatsapp::TARGETS).copied()
}
