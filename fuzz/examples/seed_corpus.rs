//! Writes seed corpora for every fuzz target into `<corpus>/<target>/seed-*`.
//!
//! Usage: `seed_corpus <corpus dir> [<whatsapp fixture dir>]`. The seeds are real objects and
//! vault protocol messages made by the encoders (with the harnesses' fixed keys), each prefixed
//! with the harness mode byte (`src/seeds.rs`). The WhatsApp fixture (`msgstore.db.crypt15`,
//! `encrypted_backup.key`) is added when its directory is given and exists; it is read, never
//! copied into the repository (`fuzz/corpus` is ignored).
//!
//! The `all` fuzz binary writes the same seeds when run with `CHATVAULT_FUZZ_SEEDS=<corpus dir>`,
//! so CI does not build this example separately (scripts/ci-fuzz.sh).

use std::path::PathBuf;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let root = PathBuf::from(
        args.next()
            .expect("usage: seed_corpus <corpus dir> [<fixture dir>]"),
    );
    let fixtures = args.next().map(PathBuf::from);
    let n = chatvault_fuzz::seeds::write(&root, fixtures.as_deref());
    eprintln!("seed_corpus: wrote {n} seeds into {}", root.display());
}
