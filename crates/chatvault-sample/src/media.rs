//! Media files: kinds, size plans, names and incompressible contents with real magic headers.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use rand::seq::SliceRandom;
use rand::{Rng, RngCore};

use crate::error::IoContext;
use crate::{Error, calendar, rng};

/// The kinds of media file a sample chat folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MediaKind {
    /// `WhatsApp Images/IMG-YYYYMMDD-WANNNN.jpg`, 50–400 KB.
    Image,
    /// `WhatsApp Voice Notes/YYYYWW/PTT-YYYYMMDD-WANNNN.opus`, 10–200 KB.
    VoiceNote,
    /// `WhatsApp Video/VID-YYYYMMDD-WANNNN.mp4`, 1–15 MB.
    Video,
    /// `WhatsApp Documents/DOC-YYYYMMDD-WANNNN.pdf`, 20 KB–2 MB.
    Document,
}

impl MediaKind {
    /// All kinds, in a fixed order.
    pub const ALL: [MediaKind; 4] = [
        MediaKind::Image,
        MediaKind::VoiceNote,
        MediaKind::Video,
        MediaKind::Document,
    ];

    /// The folder under `Media/`.
    pub fn dir_name(self) -> &'static str {
        match self {
            MediaKind::Image => "WhatsApp Images",
            MediaKind::VoiceNote => "WhatsApp Voice Notes",
            MediaKind::Video => "WhatsApp Video",
            MediaKind::Document => "WhatsApp Documents",
        }
    }

    /// The sizes, in bytes, a file of this kind can have.
    pub fn size_range(self) -> RangeInclusive<u64> {
        match self {
            MediaKind::Image => 50_000..=400_000,
            MediaKind::VoiceNote => 10_000..=200_000,
            MediaKind::Video => 1_000_000..=15_000_000,
            MediaKind::Document => 20_000..=2_000_000,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            MediaKind::Image => "IMG",
            MediaKind::VoiceNote => "PTT",
            MediaKind::Video => "VID",
            MediaKind::Document => "DOC",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            MediaKind::Image => "jpg",
            MediaKind::VoiceNote => "opus",
            MediaKind::Video => "mp4",
            MediaKind::Document => "pdf",
        }
    }

    pub(crate) fn mime_type(self) -> &'static str {
        match self {
            MediaKind::Image => "image/jpeg",
            MediaKind::VoiceNote => "audio/ogg; codecs=opus",
            MediaKind::Video => "video/mp4",
            MediaKind::Document => "application/pdf",
        }
    }

    /// WhatsApp's `message.message_type` for this kind.
    pub(crate) fn message_type(self) -> i64 {
        match self {
            MediaKind::Image => 1,
            MediaKind::VoiceNote => 2,
            MediaKind::Video => 3,
            MediaKind::Document => 9,
        }
    }

    /// Path relative to the chat folder, e.g. `Media/WhatsApp Images/IMG-20240101-WA0001.jpg`.
    pub(crate) fn relative_path(self, ts_ms: i64, counter: u32) -> String {
        let name = format!(
            "{}-{}-WA{counter:04}.{}",
            self.prefix(),
            calendar::yyyymmdd(ts_ms),
            self.extension()
        );
        match self {
            MediaKind::VoiceNote => format!(
                "Media/{}/{}/{name}",
                self.dir_name(),
                calendar::yyyyww(ts_ms)
            ),
            _ => format!("Media/{}/{name}", self.dir_name()),
        }
    }
}

/// One planned media file: its kind and size; name and time come from its message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Planned {
    pub(crate) kind: MediaKind,
    pub(crate) size: u64,
}

/// Plans `count` media files of about `target` bytes in total: 70 % images, 15 % voice notes,
/// 10 % documents, 5 % videos, sizes skewed to the small end of each kind's range, then scaled
/// (clamped to the range) towards `target`. The order is shuffled.
pub(crate) fn plan(rng: &mut impl Rng, count: u32, target: u64) -> Vec<Planned> {
    let share = |percent: u32| (count * percent + 50) / 100;
    let (videos, documents, voice) = (share(5), share(10), share(15));
    let images = count.saturating_sub(videos + documents + voice);
    let mut files = Vec::with_capacity(count as usize);
    for (kind, n) in [
        (MediaKind::Image, images),
        (MediaKind::VoiceNote, voice),
        (MediaKind::Video, videos),
        (MediaKind::Document, documents),
    ] {
        for _ in 0..n {
            let r = kind.size_range();
            let size = rng::skewed(rng, *r.start(), *r.end());
            files.push(Planned { kind, size });
        }
    }
    files.shuffle(rng);
    scale_to(&mut files, target);
    files
}

/// Scales the sizes towards `target`, keeping each inside its kind's range.
fn scale_to(files: &mut [Planned], target: u64) {
    for _ in 0..8 {
        let total: u64 = files.iter().map(|f| f.size).sum();
        if total == target || files.is_empty() {
            return;
        }
        // Only files that can still move in the needed direction take part.
        let grow = target > total;
        let movable = |f: &Planned| {
            let r = f.kind.size_range();
            if grow {
                f.size < *r.end()
            } else {
                f.size > *r.start()
            }
        };
        let movable_sum: u64 = files.iter().filter(|f| movable(f)).map(|f| f.size).sum();
        if movable_sum == 0 {
            return;
        }
        let fixed = total - movable_sum;
        let want = target.saturating_sub(fixed);
        for f in files.iter_mut().filter(|f| movable(f)) {
            let scaled = (u128::from(f.size) * u128::from(want) / u128::from(movable_sum)) as u64;
            let r = f.kind.size_range();
            f.size = scaled.clamp(*r.start(), *r.end());
        }
    }
    // Put the rounding remainder on the first file that has room for it.
    let total: u64 = files.iter().map(|f| f.size).sum();
    for f in files.iter_mut() {
        let r = f.kind.size_range();
        let wanted = (i128::from(f.size) + i128::from(target) - i128::from(total))
            .clamp(i128::from(*r.start()), i128::from(*r.end())) as u64;
        if wanted != f.size {
            f.size = wanted;
            break;
        }
    }
}

/// A media file to write.
pub(crate) struct Job {
    pub(crate) relative_path: String,
    pub(crate) kind: MediaKind,
    pub(crate) size: u64,
    pub(crate) day: u32,
    pub(crate) index: u32,
    pub(crate) mtime_ms: i64,
}

/// Writes media files on a second thread while the database is being built.
pub(crate) struct Writer {
    tx: SyncSender<Job>,
    handle: JoinHandle<Result<(u32, u64), Error>>,
}

impl Writer {
    pub(crate) fn spawn(root: PathBuf, seed: u64) -> Self {
        let (tx, rx) = sync_channel(64);
        let handle = std::thread::spawn(move || write_all(&root, seed, rx));
        Self { tx, handle }
    }

    /// Queues a file; if the writer has failed, the error surfaces in [`Writer::finish`].
    pub(crate) fn send(&self, job: Job) {
        let _ = self.tx.send(job);
    }

    /// Waits for all files; returns their count and total bytes.
    pub(crate) fn finish(self) -> Result<(u32, u64), Error> {
        drop(self.tx);
        self.handle.join().expect("media writer thread panicked")
    }
}

fn write_all(root: &Path, seed: u64, rx: Receiver<Job>) -> Result<(u32, u64), Error> {
    let (mut files, mut bytes) = (0, 0);
    // Keep draining after an error so the sender never blocks; report the first error.
    let mut first_error = None;
    for job in rx {
        if first_error.is_some() {
            continue;
        }
        let path = root.join(&job.relative_path);
        match write_file(&path, &job, seed) {
            Ok(()) => {
                files += 1;
                bytes += job.size;
            }
            Err(e) => first_error = Some(e),
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok((files, bytes)),
    }
}

fn write_file(path: &Path, job: &Job, seed: u64) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).at(parent)?;
    }
    let mut rng = rng::content(seed, job.day, job.index);
    let (mut head, tail) = magic(job.kind, job.size, &mut rng);
    let size = job.size as usize;
    head.truncate(size);
    let body = size.saturating_sub(head.len() + tail.len());
    let file = File::create(path).at(path)?;
    let mut out = BufWriter::with_capacity(1 << 16, file);
    out.write_all(&head).at(path)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut left = body;
    while left > 0 {
        let n = left.min(buf.len());
        rng.fill_bytes(&mut buf[..n]);
        out.write_all(&buf[..n]).at(path)?;
        left -= n;
    }
    let tail_len = size - head.len() - body;
    out.write_all(&tail[tail.len() - tail_len..]).at(path)?;
    let file = out.into_inner().map_err(|e| e.into_error()).at(path)?;
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_millis(job.mtime_ms.max(0) as u64);
    file.set_modified(mtime).at(path)?;
    Ok(())
}

/// A plausible header (and trailer) for each kind, so `file(1)` and backup tools that sniff
/// content see real-looking media.
fn magic(kind: MediaKind, size: u64, rng: &mut impl RngCore) -> (Vec<u8>, Vec<u8>) {
    match kind {
        MediaKind::Image => {
            let mut h = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
            h.extend_from_slice(b"JFIF\0\x01\x01\x00\x00\x01\x00\x01\x00\x00");
            h.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x43, 0x00]);
            (h, vec![0xFF, 0xD9])
        }
        MediaKind::VoiceNote => {
            let mut serial = [0u8; 4];
            rng.fill_bytes(&mut serial);
            let mut h = b"OggS\x00\x02".to_vec();
            h.extend_from_slice(&[0; 8]); // granule position
            h.extend_from_slice(&serial);
            h.extend_from_slice(&[0; 8]); // sequence number, CRC
            h.extend_from_slice(&[1, 19]); // one segment of 19 bytes
            h.extend_from_slice(b"OpusHead\x01\x01\x38\x01\x80\x3E\x00\x00\x00\x00\x00");
            (h, Vec::new())
        }
        MediaKind::Video => {
            let mut h = vec![0, 0, 0, 0x20];
            h.extend_from_slice(b"ftypisom\x00\x00\x02\x00isomiso2avc1mp41");
            let mdat = u32::try_from(size.saturating_sub(0x20)).unwrap_or(1);
            h.extend_from_slice(&mdat.to_be_bytes());
            h.extend_from_slice(b"mdat");
            (h, Vec::new())
        }
        MediaKind::Document => (
            b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n".to_vec(),
            b"\n%%EOF\n".to_vec(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_hits_target_within_ranges() {
        let mut rng = rng::stream(9, 9);
        let files = plan(&mut rng, 681, 300_000_000);
        assert_eq!(files.len(), 681);
        assert_eq!(files.iter().map(|f| f.size).sum::<u64>(), 300_000_000);
        for f in &files {
            assert!(f.kind.size_range().contains(&f.size), "{f:?}");
        }
    }

    #[test]
    fn plan_with_unreachable_target_stays_in_ranges() {
        let mut rng = rng::stream(9, 10);
        let files = plan(&mut rng, 10, 1);
        for f in &files {
            assert_eq!(f.size, *f.kind.size_range().start());
        }
    }

    #[test]
    fn voice_notes_go_to_week_folders() {
        let p = MediaKind::VoiceNote.relative_path(calendar::HISTORY_START_MS, 7);
        assert_eq!(
            p,
            "Media/WhatsApp Voice Notes/202401/PTT-20240101-WA0007.opus"
        );
    }
}
