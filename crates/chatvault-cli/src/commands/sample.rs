//! `chatvault sample`: generates a sample chat folder (or the next day of one).

use anyhow::Result;

use crate::args::{Preset, SampleArgs};
use crate::exit;

pub(super) fn run(a: &SampleArgs) -> Result<u8> {
    use chatvault_sample::SampleSpec;
    let spec = match a.preset {
        Preset::Small => SampleSpec::small(),
        Preset::Benchmark => SampleSpec::benchmark(),
    }
    .with_seed(a.seed);
    match a.next_day {
        None => {
            let s = chatvault_sample::generate(&a.dir, &spec)?;
            println!(
                "generated {}: {} messages in {} chats, {} media files ({} bytes), msgstore.db {} bytes",
                a.dir.display(),
                s.messages,
                s.chats,
                s.media_files,
                s.media_bytes,
                s.msgstore_bytes
            );
        }
        Some(day) => {
            let d = chatvault_sample::next_day(&a.dir, &spec, day)?;
            println!(
                "day {}: {} messages, {} media files ({} bytes) added; {} edited, {} deleted",
                d.day,
                d.messages_added,
                d.media_files_added,
                d.media_bytes_added,
                d.messages_edited,
                d.messages_deleted
            );
        }
    }
    Ok(exit::OK)
}
