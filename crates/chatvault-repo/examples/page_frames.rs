//! What one zstd frame per database page costs a restore, against frames of several
//! consecutive pages: `cargo run --release -p chatvault-repo --example page_frames -- DB [N…]`.
//!
//! Cuts the SQLite file `DB` into its pages, compresses them at the level a backup uses for a
//! page (2; another with `LEVEL=n`), one frame per page and one frame per run of `N` pages
//! (default 1, 4, 16, 64), and reports the compressed bytes and the best of five decompressions
//! of the whole file (one reused context, as a restore reader keeps). What a page-grouped format
//! or another level would change in the restore of a database, whose pages are one frame each
//! (FORMAT §5.1). On the benchmark preset's 95 MB `msgstore.db` (2026-12-04): one page per frame
//! at level 2, 58 % of the file, 178 ms; 16 pages per frame, 55 %, 94 ms; level −1 (literals
//! stored raw), 75 %, 69 ms.
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let db = args.next().expect("usage: page_frames DB [N…]");
    let groups: Vec<usize> = {
        let g: Vec<usize> = args.map(|a| a.parse().expect("a page count")).collect();
        if g.is_empty() { vec![1, 4, 16, 64] } else { g }
    };
    let bytes = std::fs::read(&db).unwrap();
    let page = chatvault_repo::sqlite::page_size(&bytes[..100]).expect("a SQLite database");
    let pages = bytes.len() / page;
    println!(
        "{db}: {pages} pages of {page} bytes ({} MB)",
        bytes.len() >> 20
    );
    let level: i32 = std::env::var("LEVEL")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(2);
    let mut cctx = zstd::bulk::Compressor::new(level).unwrap();
    let mut dctx = zstd::bulk::Decompressor::new().unwrap();
    let mut base = None;
    for n in groups {
        let frames: Vec<Vec<u8>> = bytes
            .chunks(page * n)
            .map(|c| cctx.compress(c).unwrap())
            .collect();
        let stored: usize = frames.iter().map(Vec::len).sum();
        let mut out = vec![0u8; page * n];
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for f in &frames {
                let k = dctx.decompress_to_buffer(f, &mut out[..]).unwrap();
                std::hint::black_box(&out[..k]);
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let mbs = bytes.len() as f64 / best / 1e6;
        let base_s = *base.get_or_insert(best);
        println!(
            "{n:>3} page(s) per frame: {:>5} frames, {:>6.1} MB stored ({:.1} % of the file), \
             decompressed in {:>6.1} ms ({mbs:>6.0} MB/s, {:.2}x one page per frame)",
            frames.len(),
            stored as f64 / 1e6,
            100.0 * stored as f64 / bytes.len() as f64,
            best * 1e3,
            base_s / best
        );
    }
}
