//! Blobs: chunks of file content and directory listings (docs/FORMAT.md §5).
//!
//! `id = BLAKE3-keyed(K_id, label || 0x00 || plaintext)`; the sealed payload is
//! `compression[1] || body`, where compression 0 = stored, 1 = zstd frame.

use rand_core::{CryptoRng, RngCore};

use crate::envelope::{self, EnvelopeError, ObjectKind};
use crate::id::BlobId;
use crate::key::RepoKeys;

/// The largest plaintext a blob may have once decompressed (bounds decompression).
pub const MAX_BLOB_LEN: usize = 64 << 20;

const STORED: u8 = 0;
const ZSTD: u8 = 1;
/// zstd level: 3 is the library default, the best ratio/speed trade-off for chat text.
const ZSTD_LEVEL: i32 = 3;
/// zstd level for plaintexts of at most [`SMALL_LEN`] bytes. Each database page is its own
/// blob and frame, and at level 3 their compression was a quarter of a first backup's cycles;
/// on 4 KiB pages of the benchmark's `msgstore.db`, level 2 compresses 30 % faster into 0.5 %
/// more bytes (level 1: 40 % faster, 2.3 % more), and decompresses as fast.
const ZSTD_LEVEL_SMALL: i32 = 2;
/// zstd level for tree blobs larger than [`SMALL_LEN`]. A tree is mostly hex ids; on the
/// 11,000-entry tree of a year of photos, level 1 compressed twice as fast as level 3 (3.4 against
/// 6.8 ms) into 10 % fewer bytes, and every daily backup writes that tree again.
const ZSTD_LEVEL_TREE: i32 = 1;
/// Plaintexts up to this size are compressed at [`ZSTD_LEVEL_SMALL`].
const SMALL_LEN: usize = 16 << 10;
/// Largest sample used to decide whether a chunk is worth compressing.
const SAMPLE_LEN: usize = 64 << 10;
/// Plaintexts larger than this are compressed only when a sample of them (their first quarter,
/// at most [`SAMPLE_LEN`] bytes) shrinks. WhatsApp's photos, voice notes and stickers are
/// mostly 64–256 KiB files, one chunk each: a whole zstd attempt on each (they never shrink)
/// was 6 % of a first backup's CPU time on the benchmark preset.
const SAMPLED_LEN: usize = 64 << 10;

/// What a blob holds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    /// A chunk of file content.
    Data,
    /// A serialized [`crate::objects::Tree`].
    Tree,
    /// A piece of a large file's content list ([`crate::list`], FORMAT §10.1).
    List,
}

impl BlobType {
    /// The envelope kind of this blob type.
    pub fn kind(self) -> ObjectKind {
        match self {
            BlobType::Data => ObjectKind::DataBlob,
            BlobType::Tree => ObjectKind::TreeBlob,
            BlobType::List => ObjectKind::ListBlob,
        }
    }
    /// Whether blobs of this type are metadata (trees, lists): they go to metadata packs, apart
    /// from file data (FORMAT §7).
    pub fn is_metadata(self) -> bool {
        self != BlobType::Data
    }
    /// Code in pack headers.
    pub fn code(self) -> u8 {
        match self {
            BlobType::Data => 0,
            BlobType::Tree => 1,
            BlobType::List => 2,
        }
    }
    /// Inverse of [`BlobType::code`].
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            2 => Some(BlobType::List),
            _ => None,
        }
    }
}

/// Why a blob could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlobError {
    /// The envelope did not open.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Unknown compression byte or a broken zstd frame.
    #[error("undecodable payload: {0}")]
    Payload(&'static str),
    /// The plaintext does not hash to the blob's id.
    #[error("content does not match its id")]
    IdMismatch,
}

/// Computes a blob id.
pub fn blob_id(keys: &RepoKeys, ty: BlobType, plaintext: &[u8]) -> BlobId {
    BlobId::from_bytes(keys.keyed_id(ty.kind().label(), plaintext))
}

/// Compresses (when worthwhile) and seals a blob whose id was computed with [`blob_id`].
///
/// The payload is built in the buffer that becomes the envelope and encrypted in place: one
/// allocation and one copy of the plaintext per blob (compressing into a fresh vector, copying it
/// behind the nonce and encrypting into a third vector cost two more copies of every backed-up
/// byte). The bytes are those of `envelope::seal(.., &compress(plaintext), ..)`.
pub fn seal_blob<R: RngCore + CryptoRng>(
    keys: &RepoKeys,
    ty: BlobType,
    id: &BlobId,
    plaintext: &[u8],
    rng: &mut R,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(
        envelope::NONCE_LEN + 1 + payload_bound(plaintext.len()) + envelope::TAG_LEN,
    );
    // Room for the nonce, which `seal_in_place` fills.
    buf.resize(envelope::NONCE_LEN, 0);
    compress_into(plaintext, ty, &mut buf);
    envelope::seal_in_place(keys, ty.kind(), id.as_bytes(), &mut buf, rng);
    buf
}

/// The largest body [`compress_into`] appends after the compression byte for a plaintext of
/// `len` bytes (a zstd frame may be slightly larger than its input before it is rejected).
fn payload_bound(len: usize) -> usize {
    len.max(zstd::zstd_safe::compress_bound(len))
}

/// Opens a sealed blob, decompresses it and checks it against its id.
pub fn open_blob(
    keys: &RepoKeys,
    ty: BlobType,
    id: &BlobId,
    sealed: &[u8],
) -> Result<Vec<u8>, BlobError> {
    let payload = envelope::open(keys, ty.kind(), id.as_bytes(), sealed)?;
    let plain = decompress(&payload)?;
    check_id(keys, ty, id, &plain)?;
    Ok(plain)
}

/// The id is a keyed MAC of the content; the AEAD already authenticated it, this re-check
/// catches a writer (a bug, or a hostile holder of the key) that stored other content under
/// an id.
fn check_id(keys: &RepoKeys, ty: BlobType, id: &BlobId, plain: &[u8]) -> Result<(), BlobError> {
    let actual = blob_id(keys, ty, plain);
    if bool::from(subtle::ConstantTimeEq::ct_eq(
        actual.as_bytes().as_slice(),
        id.as_bytes().as_slice(),
    )) {
        Ok(())
    } else {
        Err(BlobError::IdMismatch)
    }
}

/// Runs `f` with this thread's zstd compression context for `level`: creating a context per
/// blob (`ZSTD_createCCtx`) cost ~6 % of a first backup's cycles on 4 KiB database pages.
fn with_compressor<T>(
    level: i32,
    f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> Option<T>,
) -> Option<T> {
    use std::cell::RefCell;
    thread_local! {
        static CCTX: RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> =
            const { RefCell::new(Vec::new()) };
    }
    CCTX.with(|cell| {
        let mut contexts = cell.borrow_mut();
        let i = match contexts.iter().position(|(l, _)| *l == level) {
            Some(i) => i,
            None => {
                contexts.push((level, zstd::bulk::Compressor::new(level).ok()?));
                contexts.len() - 1
            }
        };
        // Every call is a whole new frame with the context's parameters; a failed call leaves
        // the context reusable.
        f(&mut contexts[i].1)
    })
}

/// Appends the zstd frame of `data` at `level` to `out`; returns its length, or `None` (with
/// `out` as it was) if zstd failed. The frame is the one `zstd::bulk::compress` makes (the same
/// `ZSTD_compress2` call), written straight into `out`'s spare room rather than a new vector.
fn zstd_append(data: &[u8], level: i32, out: &mut Vec<u8>) -> Option<usize> {
    let start = out.len();
    out.reserve(zstd::zstd_safe::compress_bound(data.len()));
    let written = with_compressor(level, |c| {
        let mut cursor = std::io::Cursor::new(&mut *out);
        cursor.set_position(start as u64);
        c.compress_to_buffer(data, &mut cursor).ok()
    });
    if written.is_none() {
        out.truncate(start);
    }
    written
}

/// Whether a large plaintext's `sample` (its first bytes) shrinks by more than 1/16 at level 1,
/// so that the whole is worth trying (FORMAT §4.3). The sample's frame goes to a buffer this
/// thread keeps, as only its length matters.
fn sample_compresses(sample: &[u8]) -> bool {
    use std::cell::RefCell;
    thread_local! {
        static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        scratch.clear();
        zstd_append(sample, 1, &mut scratch).is_some_and(|n| n < sample.len() - sample.len() / 16)
    })
}

/// `compression || body`: zstd unless the data does not shrink (media, already-compressed).
pub fn compress(plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + payload_bound(plaintext.len()));
    compress_into(plaintext, BlobType::Data, &mut out);
    out
}

/// [`compress`] appending to `out` (so a caller can put the payload where it is sealed), at
/// the level for a blob of type `ty`.
fn compress_into(plaintext: &[u8], ty: BlobType, out: &mut Vec<u8>) {
    let worth_trying = if plaintext.len() > SAMPLED_LEN {
        // A cheap sample decides for large chunks: JPEG/MP4/Opus do not compress.
        sample_compresses(&plaintext[..(plaintext.len() / 4).min(SAMPLE_LEN)])
    } else {
        plaintext.len() > 64
    };
    let start = out.len();
    if worth_trying {
        out.push(ZSTD);
        let level = if plaintext.len() <= SMALL_LEN {
            ZSTD_LEVEL_SMALL
        } else if ty == BlobType::Tree {
            ZSTD_LEVEL_TREE
        } else {
            ZSTD_LEVEL
        };
        match zstd_append(plaintext, level, out) {
            Some(c) if c + c / 32 < plaintext.len() => return,
            _ => out.truncate(start),
        }
    }
    out.push(STORED);
    out.extend_from_slice(plaintext);
}

/// Inverse of [`compress`]; refuses outputs larger than [`MAX_BLOB_LEN`].
pub fn decompress(payload: &[u8]) -> Result<Vec<u8>, BlobError> {
    match payload.split_first() {
        Some((&STORED, body)) => Ok(body.to_vec()),
        Some((&ZSTD, body)) => decompress_zstd(body),
        Some(_) => Err(BlobError::Payload("unknown compression")),
        None => Err(BlobError::Payload("empty payload")),
    }
}

/// `zstd::bulk::decompress(body, MAX_BLOB_LEN)`, without allocating the whole 64 MiB cap up
/// front for every blob: first into a buffer of the size the frame declares (or 1 MiB), and
/// only if that fails with the full cap, so results and errors are those of the one-shot call.
fn decompress_zstd(body: &[u8]) -> Result<Vec<u8>, BlobError> {
    let mut out = Vec::new();
    decompress_zstd_into(body, &mut out)?;
    Ok(out)
}

/// [`decompress_zstd`] appended to `dst` (its capacity is reused); on error `dst` is as it was.
///
/// Each thread keeps one decompression context and reuses it: creating one per blob
/// (`ZSTD_createDCtx`, which allocates and zeroes ~100 KiB) cost about a tenth of a restore's
/// cycles when most blobs are 4 KiB database pages.
fn decompress_zstd_into(body: &[u8], dst: &mut Vec<u8>) -> Result<(), BlobError> {
    use std::cell::RefCell;
    thread_local! {
        static DCTX: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    }
    let guess = match zstd::zstd_safe::get_frame_content_size(body) {
        Ok(Some(n)) if n <= MAX_BLOB_LEN as u64 => n as usize,
        _ => 1 << 20,
    };
    DCTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(
                zstd::bulk::Decompressor::new()
                    .map_err(|_| BlobError::Payload("no zstd decompression context"))?,
            );
        }
        let d = slot.as_mut().expect("context just made");
        // A failed call leaves the context reusable: every call starts a new frame. The frame
        // is written after the buffer's content (a cursor at its end: no copy through a
        // scratch buffer), up to its capacity: reserved exactly, so that the retry's room is
        // MAX_BLOB_LEN, not a doubling past it (the restore's buffer keeps at most 32 MiB of
        // capacity between regions, below the cap).
        let start = dst.len();
        let mut attempt = |cap: usize| {
            dst.truncate(start);
            dst.reserve_exact(cap);
            let mut end = std::io::Cursor::new(&mut *dst);
            end.set_position(start as u64);
            d.decompress_to_buffer(body, &mut end)
        };
        let done = attempt(guess)
            .or_else(|_| attempt(MAX_BLOB_LEN))
            .map(|_| ())
            .map_err(|_| BlobError::Payload("broken zstd frame"));
        if done.is_err() {
            dst.truncate(start);
        }
        done
    })
}

/// Where [`open_blob_into`] left a blob's verified plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// A stored (uncompressed) blob: decrypted where it lay, this range of the sealed buffer.
    InPlace(std::ops::Range<usize>),
    /// A compressed blob: decompressed and appended to `out`, this range of it.
    Appended(std::ops::Range<usize>),
}

/// [`open_blob`] without copies or allocations per blob: the sealed blob is decrypted where it
/// lies, in `sealed` (the caller's read buffer); a stored blob's plaintext stays there, a
/// compressed one's is appended to `out`, the buffer the caller reuses for them. Returns where
/// the verified plaintext is. On error `out` is as it was (and `sealed` may be decrypted). A
/// restore opens tens of thousands of blobs: a media chunk costs no copy at all, a database
/// page one (of its decompressed 4 KiB), where [`open_blob`] costs two or three copies and as
/// many allocations (for 1 MiB media chunks, each an `mmap`).
pub fn open_blob_into(
    keys: &RepoKeys,
    ty: BlobType,
    id: &BlobId,
    sealed: &mut [u8],
    out: &mut Vec<u8>,
) -> Result<Opened, BlobError> {
    let payload_len = envelope::open_in_place(keys, ty.kind(), id.as_bytes(), sealed)?.len();
    let payload = envelope::NONCE_LEN..envelope::NONCE_LEN + payload_len;
    match sealed[payload.clone()].first().copied() {
        Some(STORED) => {
            let plain = payload.start + 1..payload.end;
            check_id(keys, ty, id, &sealed[plain.clone()])?;
            Ok(Opened::InPlace(plain))
        }
        Some(ZSTD) => {
            let start = out.len();
            decompress_zstd_into(&sealed[payload.start + 1..payload.end], out)?;
            if let Err(e) = check_id(keys, ty, id, &out[start..]) {
                out.truncate(start);
                return Err(e);
            }
            Ok(Opened::Appended(start..out.len()))
        }
        Some(_) => Err(BlobError::Payload("unknown compression")),
        None => Err(BlobError::Payload("empty payload")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::RepoId;
    use crate::key::BackupKey;
    use proptest::prelude::*;
    use rand_core::{OsRng, RngCore};

    fn keys() -> RepoKeys {
        BackupKey::from_bytes([4; 32]).derive(&RepoId::from_bytes([2; 32]))
    }

    #[test]
    fn text_is_compressed_and_random_is_stored() {
        let text = b"hello, are we still on for dinner tonight? ".repeat(2000);
        assert_eq!(compress(&text)[0], ZSTD);
        let mut random = vec![0u8; 1 << 20];
        OsRng.fill_bytes(&mut random);
        let c = compress(&random);
        assert_eq!(c[0], STORED);
        assert_eq!(c.len(), random.len() + 1);
    }

    #[test]
    fn blob_type_is_bound() {
        let k = keys();
        let id = blob_id(&k, BlobType::Data, b"abc");
        assert_ne!(id, blob_id(&k, BlobType::Tree, b"abc"));
        let sealed = seal_blob(&k, BlobType::Data, &id, b"abc", &mut OsRng);
        assert!(open_blob(&k, BlobType::Tree, &id, &sealed).is_err());
        let other = blob_id(&k, BlobType::Data, b"abd");
        assert!(open_blob(&k, BlobType::Data, &other, &sealed).is_err());
    }

    #[test]
    fn seal_blob_is_seal_of_compress() {
        // seal_blob builds the payload in place; it must write exactly what sealing the
        // separately compressed payload writes (same random nonce draw).
        use chatvault_fuzz_support::FixedRng;
        let k = keys();
        let mut random = vec![0u8; 3 << 20];
        OsRng.fill_bytes(&mut random);
        let text = b"see you at eight, bring the photos from the trip ".repeat(40_000);
        let mut mixed = text[..300 << 10].to_vec();
        mixed.extend_from_slice(&random[..300 << 10]);
        let cases: Vec<&[u8]> = vec![
            b"",
            b"tiny",
            &text[..64],
            &text[..65],
            &text[..4096],
            &random[..4096],
            &random[..200 << 10],
            &text[..(256 << 10) + 1],
            &random[..(256 << 10) + 1],
            &mixed,
            &random,
            &text,
        ];
        for (n, plain) in cases.into_iter().enumerate() {
            let id = blob_id(&k, BlobType::Data, plain);
            let fast = seal_blob(&k, BlobType::Data, &id, plain, &mut FixedRng(n as u64));
            let slow = envelope::seal(
                &k,
                BlobType::Data.kind(),
                id.as_bytes(),
                &compress(plain),
                &mut FixedRng(n as u64),
            );
            assert_eq!(fast, slow, "case {n}");
            // The in-place frame is the one-shot call's.
            let payload = compress(plain);
            if payload[0] == ZSTD {
                assert_eq!(
                    payload[1..],
                    zstd::bulk::compress(plain, 3).unwrap(),
                    "case {n}"
                );
            }
            assert_eq!(open_blob(&k, BlobType::Data, &id, &fast).unwrap(), plain);
        }
    }

    proptest! {
        #[test]
        fn blob_round_trips(data in proptest::collection::vec(any::<u8>(), 0..5000), text in any::<bool>()) {
            let data = if text { data.iter().map(|b| b"abc "[*b as usize % 4]).collect() } else { data };
            let k = keys();
            let id = blob_id(&k, BlobType::Data, &data);
            let sealed = seal_blob(&k, BlobType::Data, &id, &data, &mut OsRng);
            prop_assert_eq!(open_blob(&k, BlobType::Data, &id, &sealed).unwrap(), data);
        }

        /// `open_blob_into` gives what `open_blob` gives, plaintext or error, in place or after
        /// whatever the buffer already held, and leaves the buffer as it was on an error (a
        /// restore keeps opening the region's other blobs into it).
        #[test]
        fn open_blob_into_agrees_with_open_blob(
            data in proptest::collection::vec(any::<u8>(), 0..5000),
            text in any::<bool>(),
            before in proptest::collection::vec(any::<u8>(), 0..100),
            flip in proptest::option::of(any::<proptest::sample::Index>()),
            wrong_id in any::<bool>(),
        ) {
            let data: Vec<u8> = if text { data.iter().map(|b| b"abc "[*b as usize % 4]).collect() } else { data };
            let k = keys();
            let id = blob_id(&k, BlobType::Data, &data);
            let mut sealed = seal_blob(&k, BlobType::Data, &id, &data, &mut OsRng);
            if let Some(i) = flip {
                let i = i.index(sealed.len());
                sealed[i] ^= 0x40;
            }
            let asked = if wrong_id { blob_id(&k, BlobType::Data, b"other") } else { id };
            let mut buf = before.clone();
            let want = open_blob(&k, BlobType::Data, &asked, &sealed);
            let mut in_place = sealed.clone();
            match (open_blob_into(&k, BlobType::Data, &asked, &mut in_place, &mut buf), want) {
                (Ok(Opened::InPlace(r)), Ok(p)) => {
                    prop_assert_eq!(&buf, &before);
                    prop_assert_eq!(&in_place[r], &p[..]);
                }
                (Ok(Opened::Appended(r)), Ok(p)) => {
                    prop_assert_eq!(&buf[..before.len()], &before[..]);
                    prop_assert!(r.start >= before.len());
                    prop_assert_eq!(&buf[r], &p[..]);
                }
                (Err(a), Err(b)) => {
                    prop_assert_eq!(a, b);
                    prop_assert_eq!(buf, before);
                }
                (a, b) => prop_assert!(false, "open_blob_into {:?}, open_blob {:?}", a.map(|_| ()), b.map(|_| ())),
            }
        }
    }

    /// An envelope whose payload is empty is refused as by `open_blob`; the byte after it in the
    /// buffer (the first byte of its tag) is not taken for a compression byte. Found by fuzzing
    /// (`blob_payload` mode 2, the regression input `empty-payload-into`).
    #[test]
    fn open_blob_into_refuses_an_empty_payload_like_open_blob() {
        let k = keys();
        let id = blob_id(&k, BlobType::Data, b"");
        for _ in 0..64 {
            let sealed = envelope::seal(&k, ObjectKind::DataBlob, id.as_bytes(), b"", &mut OsRng);
            let mut buf = vec![1, 2, 3];
            assert_eq!(
                open_blob_into(&k, BlobType::Data, &id, &mut sealed.clone(), &mut buf),
                Err(BlobError::Payload("empty payload"))
            );
            assert_eq!(buf, [1, 2, 3]);
            assert_eq!(
                open_blob(&k, BlobType::Data, &id, &sealed),
                Err(BlobError::Payload("empty payload"))
            );
        }
    }

    #[test]
    fn open_blob_into_opens_stored_blobs_in_place_and_appends_compressed_ones() {
        let k = keys();
        let text = b"see you at eight ".repeat(500);
        let mut random = vec![0u8; 300_000];
        OsRng.fill_bytes(&mut random);
        let mut buf = Vec::new();
        let mut plains = Vec::new();
        for d in [&text[..], &random[..], &text[..100], &[][..]] {
            let id = blob_id(&k, BlobType::Data, d);
            let mut sealed = seal_blob(&k, BlobType::Data, &id, d, &mut OsRng);
            match open_blob_into(&k, BlobType::Data, &id, &mut sealed, &mut buf).unwrap() {
                Opened::Appended(r) => plains.push((true, r)),
                Opened::InPlace(r) => plains.push((false, r.clone())),
            }
            if let (false, r) = plains.last().unwrap() {
                assert_eq!(&sealed[r.clone()], d);
            }
        }
        assert_eq!(plains[0], (true, 0..text.len()));
        assert_eq!(&buf[plains[0].1.clone()], &text[..]);
        assert!(!plains[1].0, "random data is stored, opened in place");
        assert_eq!(&buf[plains[2].1.clone()], &text[..100]);
        assert_eq!(plains[2].1.start, text.len(), "appended after the first");
        assert!(plains[3].1.is_empty());
    }
}
