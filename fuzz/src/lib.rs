//! The fuzz harnesses. They live next to the regression tests of the crate they exercise, so
//! that `cargo test` replays saved crashing inputs through exactly the code the fuzz targets run;
//! this crate only includes them.

/// Harnesses for `chatvault-format` (`crates/chatvault-format/tests/fuzz_harness/mod.rs`).
#[path = "../../crates/chatvault-format/tests/fuzz_harness/mod.rs"]
pub mod format;

/// Harness for `chatvault-whatsapp` (`crates/chatvault-whatsapp/tests/fuzz_harness/mod.rs`).
#[path = "../../crates/chatvault-whatsapp/tests/fuzz_harness/mod.rs"]
pub mod whatsapp;

/// Harnesses for `chatvault-vault-core` (`crates/chatvault-vault-core/tests/fuzz_harness/mod.rs`).
#[path = "../../crates/chatvault-vault-core/tests/fuzz_harness/mod.rs"]
pub mod vault_core;

/// Harness for `chatvault-vault`'s token verifier (`crates/chatvault-vault/tests/fuzz_harness/mod.rs`).
#[path = "../../crates/chatvault-vault/tests/fuzz_harness/mod.rs"]
pub mod vault;

/// Harnesses for `chatvault-threshold` (`crates/chatvault-threshold/tests/fuzz_harness/mod.rs`).
#[path = "../../crates/chatvault-threshold/tests/fuzz_harness/mod.rs"]
pub mod threshold;

pub mod seeds;

/// Every fuzz target: name and harness.
pub fn targets() -> impl Iterator<Item = (&'static str, fn(&[u8]))> {
    format::TARGETS
        .iter()
        .chain(whatsapp::TARGETS)
        .chain(vault_core::TARGETS)
        .chain(vault::TARGETS)
        .chain(threshold::TARGETS)
        .copied()
}

/// The harness called `name`.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    targets().find(|(n, _)| *n == name).map(|(_, h)| h)
}

/// Setup of the `all` fuzz binary (one binary for every target, used by scripts/ci-fuzz.sh):
/// `CHATVAULT_FUZZ_SEEDS=<dir>` writes the seed corpora and exits; otherwise
/// `CHATVAULT_FUZZ_TARGET=<name>` selects the harness (without it, the names are printed and the
/// process exits with status 2).
pub fn select_from_env() -> fn(&[u8]) {
    if let Some(dir) = std::env::var_os("CHATVAULT_FUZZ_SEEDS") {
        let fixtures = std::env::var_os("WHATSAPP_FIXTURES").map(std::path::PathBuf::from);
        let n = seeds::write(std::path::Path::new(&dir), fixtures.as_deref());
        eprintln!("wrote {n} seeds into {}", dir.to_string_lossy());
        std::process::exit(0);
    }
    let name = std::env::var("CHATVAULT_FUZZ_TARGET").unwrap_or_default();
    match target(&name) {
        Some(h) => h,
        None => {
            for (n, _) in targets() {
                println!("{n}");
            }
            if !name.is_empty() {
                eprintln!("unknown fuzz target {name:?}");
            }
            std::process::exit(2);
        }
    }
}
