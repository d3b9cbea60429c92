//! Generates a preset into a directory, applies some days and reports times, sizes and changed
//! pages: `cargo run --release -p chatvault-sample --example sample -- small|benchmark DIR [DAYS]`.
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use std::path::PathBuf;
use std::time::Instant;

use chatvault_sample::{MSGSTORE_DB, PAGE_SIZE, SampleSpec, changed_pages, generate, next_day};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: sample small|benchmark DIR [DAYS]";
    let spec = match args.next().as_deref() {
        Some("small") => SampleSpec::small(),
        Some("benchmark") => SampleSpec::benchmark(),
        _ => return Err(usage.into()),
    };
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let days: u32 = args.next().map(|d| d.parse()).transpose()?.unwrap_or(1);

    let t = Instant::now();
    let s = generate(&dir, &spec)?;
    println!(
        "generate: {:.2} s; {} messages, msgstore {:.1} MB ({} pages), {} media files {:.1} MB",
        t.elapsed().as_secs_f64(),
        s.messages,
        s.msgstore_bytes as f64 / 1e6,
        s.msgstore_bytes / PAGE_SIZE as u64,
        s.media_files,
        s.media_bytes as f64 / 1e6
    );
    let db = dir.join(MSGSTORE_DB);
    for day in 1..=days {
        let before = dir.with_extension(format!("day{day}-before.db"));
        std::fs::copy(&db, &before)?;
        let t = Instant::now();
        let d = next_day(&dir, &spec, day)?;
        let elapsed = t.elapsed().as_secs_f64();
        let pages = changed_pages(&before, &db, PAGE_SIZE)?;
        let total = d.msgstore_bytes / PAGE_SIZE as u64;
        let old_pages = std::fs::metadata(&before)?.len() / PAGE_SIZE as u64;
        let appended = pages.iter().filter(|&&p| p >= old_pages).count();
        if std::env::var_os("KEEP_BEFORE").is_none() {
            std::fs::remove_file(&before)?;
        }
        println!(
            "day {day}: {elapsed:.2} s; {d:?}\n  changed pages {} of {total} ({:.2} MB; {} appended, {} in place)",
            pages.len(),
            (pages.len() * PAGE_SIZE) as f64 / 1e6,
            appended,
            pages.len() - appended
        );
    }
    Ok(())
}
