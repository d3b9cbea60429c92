//! Deterministic sample chat folders for chatvault's demo, tests and benchmarks.
//!
//! [`generate`] writes what a phone's WhatsApp folder looks like to a backup tool: a
//! WhatsApp-like SQLite message store `Databases/msgstore.db` (tables `jid`, `chat`, `message`,
//! `message_media`, `receipt_user`, reactions, an FTS5 index over message text; WAL journal,
//! 4096-byte pages as on Android), a contacts database `Databases/wa.db`, and media files under
//! `Media/` (`WhatsApp Images/IMG-20240101-WA0001.jpg`, voice notes, videos, documents) whose
//! bytes are incompressible like real media behind a real magic header. Message text is built
//! from a word list and templates, so the store compresses about as well as a real one.
//! [`next_day`] then simulates one day of use: it appends messages and media and makes the
//! scattered in-place edits real activity makes (read receipts, reactions, stars, edits,
//! deletes), so incremental backups can be measured; [`changed_pages`] says which pages moved.
//!
//! The size of everything is a [`SampleSpec`]: [`SampleSpec::small`] (≈ 4 MB store, 8 MB
//! media) for tests and the demo, [`SampleSpec::benchmark`] (≈ 100 MB store, 300 MB media in
//! 683 files) matching the research notes' restic/borg baselines.
//!
//! Output is a pure function of the spec (seed included) and the sequence of days applied:
//! two runs give byte-identical files, and file modification times are the messages' times.
//! Every random choice comes from seeded ChaCha streams; nothing reads the clock.
//!
//! This crate must not touch anything outside the directory it is given, must not be used on
//! a real chat folder (`generate` refuses a non-empty directory, `next_day` one it did not
//! make), and knows nothing about backups, keys or the network.
//!
//! ```no_run
//! use chatvault_sample::{SampleSpec, changed_pages, generate, next_day, MSGSTORE_DB, PAGE_SIZE};
//!
//! let dir = std::path::Path::new("/tmp/phone");
//! let spec = SampleSpec::small();
//! let summary = generate(dir, &spec)?;
//! println!("{} messages, {} media files", summary.messages, summary.media_files);
//!
//! let before = std::env::temp_dir().join("msgstore-before.db");
//! std::fs::copy(dir.join(MSGSTORE_DB), &before).unwrap();
//! let day = next_day(dir, &spec, 1)?;
//! let pages = changed_pages(&before, &dir.join(MSGSTORE_DB), PAGE_SIZE)?;
//! println!("day 1: +{} messages, {} pages changed", day.messages_added, pages.len());
//! # Ok::<(), chatvault_sample::Error>(())
//! ```

mod calendar;
mod error;
mod media;
mod pages;
mod rng;
mod schema;
mod spec;
mod store;
mod text;

pub use error::Error;
pub use media::MediaKind;
pub use pages::changed_pages;
pub use spec::SampleSpec;
pub use store::{
    DaySummary, MEDIA_DIR, MSGSTORE_DB, PAGE_SIZE, Summary, WA_DB, generate, next_day,
};
