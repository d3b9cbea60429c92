//! What the fuzz harnesses (`crates/*/tests/fuzz_harness/mod.rs`, also built into `fuzz/`) and
//! their regression tests share, so that it exists once: [`FixedRng`], the deterministic RNG
//! the harnesses seal and encrypt with, and [`replay_regressions`], which replays every saved
//! fuzz input of a crate through its harnesses. A dev-dependency only; never linked into a
//! release build.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use rand_core::{CryptoRng, RngCore};

/// A deterministic RNG (SplitMix64). Claims `CryptoRng` only so it can be passed to sealing,
/// encryption and protocol steps; fuzzing does not care about nonce reuse.
pub struct FixedRng(pub u64);

impl RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for FixedRng {}

/// A fuzz target: its name and the function the fuzzer calls.
pub type Harness = (&'static str, fn(&[u8]));

/// Replays every file in `root/<target>/` through the harness of `<target>` (every folder must
/// name one of `targets`), and panics, naming the inputs, if any harness panicked or if fewer
/// than `min_inputs` inputs were found. Returns how many inputs were replayed.
///
/// Add a crashing input found by `scripts/fuzz.sh` by copying it from
/// `fuzz/artifacts/<target>/` into the crate's `tests/fuzz_regressions/<target>/` with a
/// descriptive name.
pub fn replay_regressions(root: &Path, targets: &[Harness], min_inputs: usize) -> usize {
    let mut ran = 0;
    let mut failures = Vec::new();
    for dir in sorted_entries(root, |p| p.is_dir()) {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let Some(&(_, harness)) = targets.iter().find(|(t, _)| *t == name) else {
            panic!("{}: no fuzz target of that name", dir.display());
        };
        for file in sorted_entries(&dir, |p| p.is_file()) {
            let data =
                std::fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
            ran += 1;
            if catch_unwind(AssertUnwindSafe(|| harness(&data))).is_err() {
                let shown = file.strip_prefix(root).unwrap_or(&file);
                failures.push(shown.display().to_string());
            }
        }
    }
    assert!(
        ran >= min_inputs.max(1),
        "only {ran} regression inputs found in {} (expected at least {min_inputs})",
        root.display()
    );
    assert!(
        failures.is_empty(),
        "fuzz regressions panicked: {failures:?}"
    );
    eprintln!("replayed {ran} fuzz regression inputs");
    ran
}

/// The entries of `dir` that pass `keep`, sorted by path.
fn sorted_entries(dir: &Path, keep: fn(&Path) -> bool) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
                .path()
        })
        .filter(|p| keep(p))
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_rng_is_splitmix64() {
        // The first output of SplitMix64 seeded with 0 (the reference implementation's).
        assert_eq!(FixedRng(0).next_u64(), 0xe220_a839_7b1d_cdaf);
        let mut a = [0u8; 13];
        let mut b = [0u8; 13];
        FixedRng(7).fill_bytes(&mut a);
        FixedRng(7).fill_bytes(&mut b);
        assert_eq!(a, b);
    }
}
