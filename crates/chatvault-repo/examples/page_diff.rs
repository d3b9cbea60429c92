//! Which pages of a SQLite database changed between two states, as a backup would see them.
//!
//! ```text
//! cargo run --release -p chatvault-repo --example page_diff -- OLD.db NEW.db
//! cargo run --release -p chatvault-repo --example page_diff -- --copy LIVE.db COPY.db
//! ```
//!
//! `--copy` only writes a consistent copy of `LIVE.db` to `COPY.db` (the benchmark keeps the
//! state before a simulated day this way).
//!
//! Both databases are first copied with [`chatvault_repo::sqlite::consistent_copy`] (exactly what
//! `chatvault backup` stores, WAL content included), then compared page by page. Prints one line
//! of JSON:
//!
//! ```json
//! {"page_size":4096,"pages_old":N,"pages_new":N,"changed_pages":N,"changed_bytes":N,
//!  "changed_zstd_per_page":N,"changed_zstd_concatenated":N}
//! ```
//!
//! Pages past the end of the old copy count as changed; pages only the old copy has don't (a
//! backup of the new state need not store them). `changed_zstd_per_page` is the sum of each
//! changed page compressed alone with zstd level 3; `changed_zstd_concatenated` is all changed
//! pages, in order, compressed as one zstd level-3 stream. Used by `bench/incremental.sh` as the
//! reference for the incremental-backup floor. Not part of the test suite.
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chatvault_repo::sqlite::{consistent_copy, page_size};

const ZSTD_LEVEL: i32 = 3;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if args.len() == 3 && args[0].as_os_str() == "--copy" {
        return match consistent_copy(&args[1], &args[2]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("page_diff: {}: {e}", args[1].display());
                ExitCode::FAILURE
            }
        };
    }
    if args.len() != 2 {
        eprintln!("usage: page_diff OLD.db NEW.db | page_diff --copy LIVE.db COPY.db");
        return ExitCode::from(2);
    }
    match run(&args[0], &args[1]) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("page_diff: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(old: &Path, new: &Path) -> Result<serde_json::Value, String> {
    let tmp = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let old_copy = tmp.path().join("old.db");
    let new_copy = tmp.path().join("new.db");
    consistent_copy(old, &old_copy).map_err(|e| format!("{}: {e}", old.display()))?;
    consistent_copy(new, &new_copy).map_err(|e| format!("{}: {e}", new.display()))?;

    let ps_old = header_page_size(&old_copy)?;
    let ps = header_page_size(&new_copy)?;
    if ps_old != ps {
        return Err(format!("page sizes differ: old {ps_old}, new {ps}"));
    }
    let len = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let pages = |bytes: u64| bytes.div_ceil(ps as u64);
    let pages_old = pages(len(&old_copy)?);
    let pages_new = pages(len(&new_copy)?);

    let mut a = BufReader::new(File::open(&old_copy).map_err(|e| e.to_string())?);
    let mut b = BufReader::new(File::open(&new_copy).map_err(|e| e.to_string())?);
    let (mut pa, mut pb) = (vec![0u8; ps], vec![0u8; ps]);
    let mut changed_pages = 0u64;
    let mut changed_bytes = 0u64;
    let mut per_page = 0u64;
    let mut all = Vec::new();
    loop {
        let nb = read_page(&mut b, &mut pb).map_err(|e| format!("reading new copy: {e}"))?;
        if nb == 0 {
            break;
        }
        let na = read_page(&mut a, &mut pa).map_err(|e| format!("reading old copy: {e}"))?;
        if na != nb || pa[..na] != pb[..nb] {
            changed_pages += 1;
            changed_bytes += nb as u64;
            let page = &pb[..nb];
            per_page += zstd::bulk::compress(page, ZSTD_LEVEL)
                .map_err(|e| format!("zstd: {e}"))?
                .len() as u64;
            all.extend_from_slice(page);
        }
    }
    let concatenated = zstd::bulk::compress(&all, ZSTD_LEVEL)
        .map_err(|e| format!("zstd: {e}"))?
        .len() as u64;
    Ok(serde_json::json!({
        "page_size": ps,
        "pages_old": pages_old,
        "pages_new": pages_new,
        "changed_pages": changed_pages,
        "changed_bytes": changed_bytes,
        "changed_zstd_per_page": per_page,
        "changed_zstd_concatenated": concatenated,
    }))
}

fn header_page_size(path: &Path) -> Result<usize, String> {
    let mut head = [0u8; 100];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    page_size(&head).ok_or_else(|| format!("{}: no valid SQLite page size", path.display()))
}

/// Fills `buf` as far as the file allows; returns how many bytes were read.
fn read_page(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}
