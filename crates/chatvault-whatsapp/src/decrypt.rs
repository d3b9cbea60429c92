//! Decryption: authenticate first, then decrypt and inflate (FORMAT-crypt15.md, "Reading").
//!
//! Pass 1 reads the whole file through MD5 and GHASH and decides between the two layouts
//! (single-file with an MD5 trailer, multi-file without). Only when a tag verifies does pass 2
//! read the ciphertext again, decrypt it and inflate it into the output; pass 2 recomputes the
//! tag and fails if the input changed in between. No plaintext reaches a caller-visible place
//! before the whole file has been authenticated.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use flate2::{Decompress, FlushDecompress, Status};
use md5::{Digest, Md5};
use tempfile::NamedTempFile;
use zeroize::Zeroize;

use crate::error::Error;
use crate::gcm::{Gcm, TAG_LEN};
use crate::kdf::backup_encryption_key;
use crate::prefix::{self, BackupHeader, MAX_HEADER_LEN};

/// Length of the MD5 trailer of single-file backups.
pub(crate) const MD5_LEN: usize = 16;
const CHUNK: usize = 64 * 1024;

/// What the authenticated payload turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PayloadKind {
    /// A zlib stream, inflated: the SQLite database (`msgstore.db` and the like).
    Database,
    /// A ZIP archive (multi-file backups such as stickers or wallpapers), returned as is,
    /// not unpacked. Recognised by the `PK\x03\x04` / `PK\x05\x06` signature either
    /// directly after decryption or after inflating.
    Zip,
}

/// A verified backup decrypted into memory.
#[derive(Debug)]
pub struct Decrypted {
    kind: PayloadKind,
    header: BackupHeader,
    data: Vec<u8>,
}

impl Decrypted {
    /// Database or ZIP.
    pub fn kind(&self) -> PayloadKind {
        self.kind
    }

    /// The parsed cleartext header.
    pub fn header(&self) -> &BackupHeader {
        &self.header
    }

    /// The inflated database (or the ZIP archive).
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Takes the bytes.
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }
}

/// A verified backup decrypted into a temporary file, which is deleted on drop unless
/// [`persist`](Self::persist)ed.
#[derive(Debug)]
pub struct DecryptedFile {
    kind: PayloadKind,
    header: BackupHeader,
    len: u64,
    file: NamedTempFile,
}

impl DecryptedFile {
    /// Database or ZIP.
    pub fn kind(&self) -> PayloadKind {
        self.kind
    }

    /// The parsed cleartext header.
    pub fn header(&self) -> &BackupHeader {
        &self.header
    }

    /// Size of the decrypted output in bytes.
    pub fn output_len(&self) -> u64 {
        self.len
    }

    /// Where the temporary file is (inside the directory given to [`decrypt_to_file`]).
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Renames the temporary file to `dest`, replacing any file there. Atomic when `dest` is
    /// on the same file system as the temporary directory (put it in `dest`'s directory).
    pub fn persist(self, dest: impl AsRef<Path>) -> Result<File, Error> {
        self.file.persist(dest).map_err(|e| Error::Io {
            context: "moving the decrypted file into place",
            source: e.error,
        })
    }

    /// Like [`persist`](Self::persist), but fails if `dest` exists.
    pub fn persist_noclobber(self, dest: impl AsRef<Path>) -> Result<File, Error> {
        self.file.persist_noclobber(dest).map_err(|e| Error::Io {
            context: "moving the decrypted file into place",
            source: e.error,
        })
    }
}

/// Decrypts a crypt15 backup held in memory and returns the verified payload.
///
/// `key` is the 32-byte root key (the 64-digit key, hex-decoded). The payload is returned
/// only after the MD5 trailer (when present) and the AES-GCM tag have been checked; memory
/// use is the input plus the inflated output. For files of hundreds of MB prefer
/// [`decrypt_to_file`].
pub fn decrypt(key: &[u8; 32], input: &[u8]) -> Result<Decrypted, Error> {
    let mut data = Vec::new();
    let (kind, header) = decrypt_stream(key, &mut std::io::Cursor::new(input), &mut data)?;
    Ok(Decrypted { kind, header, data })
}

/// Decrypts a crypt15 backup read from `input` into a new temporary file in `temp_dir`,
/// with memory use bounded by a few buffers whatever the backup's size.
///
/// The file is read twice: once to check the MD5 trailer and the AES-GCM tag, and, only if
/// they verify, once more to decrypt and inflate. On any error the temporary file is removed;
/// on success the caller moves it into place with [`DecryptedFile::persist`] — so no
/// unverified or partial plaintext is ever left at the destination. Choose `temp_dir` on the
/// destination's file system (its directory) so that the rename is atomic.
pub fn decrypt_to_file<R: Read + Seek>(
    key: &[u8; 32],
    mut input: R,
    temp_dir: &Path,
) -> Result<DecryptedFile, Error> {
    let file = tempfile::Builder::new()
        .prefix(".chatvault-whatsapp-")
        .suffix(".tmp")
        .tempfile_in(temp_dir)
        .map_err(Error::io("creating the temporary output file"))?;
    let mut out = CountingWriter {
        inner: BufWriter::with_capacity(CHUNK, file.as_file()),
        len: 0,
    };
    let (kind, header) = decrypt_stream(key, &mut input, &mut out)?;
    let len = out.len;
    out.inner
        .flush()
        .map_err(Error::io("writing the decrypted file"))?;
    drop(out);
    file.as_file()
        .sync_data()
        .map_err(Error::io("writing the decrypted file"))?;
    Ok(DecryptedFile {
        kind,
        header,
        len,
        file,
    })
}

struct CountingWriter<W> {
    inner: W,
    len: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The whole decryption; writes to `sink` only after pass 1 authenticated the file.
fn decrypt_stream<R: Read + Seek, W: Write>(
    root_key: &[u8; 32],
    input: &mut R,
    sink: &mut W,
) -> Result<(PayloadKind, BackupHeader), Error> {
    const READING: &str = "reading the backup";
    let total = input.seek(SeekFrom::End(0)).map_err(Error::io(READING))?;
    input.seek(SeekFrom::Start(0)).map_err(Error::io(READING))?;

    let head_len = usize::try_from(total).map_or(MAX_HEADER_LEN, |t| t.min(MAX_HEADER_LEN));
    let mut head = vec![0u8; head_len];
    read_exact(input, &mut head)?;
    let parsed = prefix::parse(&head)?;
    let body_len = total - parsed.len as u64;
    if body_len < TAG_LEN as u64 {
        return Err(Error::Truncated {
            part: "authentication tag",
        });
    }

    let key = backup_encryption_key(root_key);
    let gcm = Gcm::new(&key, &parsed.iv);
    drop(key);

    // Pass 1: MD5 over everything before the last 16 bytes, GHASH over the ciphertext of
    // either layout. The last (up to) 32 bytes are held back: `tag | md5` or `ct… | tag`.
    input
        .seek(SeekFrom::Start(parsed.len as u64))
        .map_err(Error::io(READING))?;
    let mut md5 = Md5::new();
    md5.update(&head[..parsed.len]);
    let mut hasher = gcm.hasher();
    let tail_len = body_len.min((TAG_LEN + MD5_LEN) as u64) as usize;
    let front = body_len - tail_len as u64;
    copy_through(input, front, |chunk| {
        md5.update(&*chunk);
        hasher.update(chunk);
        Ok(())
    })?;
    let mut tail = [0u8; TAG_LEN + MD5_LEN];
    let tail = &mut tail[..tail_len];
    read_exact(input, tail)?;

    let single_tag = (tail_len == TAG_LEN + MD5_LEN).then(|| &tail[..TAG_LEN]);
    let md5_ok = single_tag.is_some() && {
        md5.update(&tail[..TAG_LEN]);
        md5.finalize().as_slice() == &tail[TAG_LEN..]
    };
    let single_ok =
        |h: &crate::gcm::TagHasher| single_tag.is_some_and(|t| gcm.verify(h.clone(), t));
    // Single-file layout `ct | tag | md5`, or multi-file layout `ct | tag`.
    let (ct_len, tag, multi_file) = if md5_ok {
        if !single_ok(&hasher) {
            return Err(Error::WrongKey);
        }
        (front, &tail[..TAG_LEN], false)
    } else {
        let split = tail_len - TAG_LEN;
        let mut multi = hasher.clone();
        multi.update(&tail[..split]);
        if gcm.verify(multi, &tail[split..]) {
            (front + split as u64, &tail[split..], true)
        } else if single_ok(&hasher) {
            // GCM covers only the ciphertext, MD5 also the cleartext header.
            return Err(Error::corrupted(
                "the MD5 checksum does not match although the ciphertext authenticates: the \
                 cleartext header or the checksum trailer is damaged",
            ));
        } else if parsed.header.feature_table {
            // Only msgstore backups carry the feature table, and they always have a trailer.
            return Err(damaged());
        } else {
            return Err(diagnose(&gcm, input, parsed.len as u64, body_len)?);
        }
    };

    // Pass 2: decrypt and inflate what pass 1 authenticated, re-checking the tag.
    input
        .seek(SeekFrom::Start(parsed.len as u64))
        .map_err(Error::io(READING))?;
    let mut hasher = gcm.hasher();
    let mut keystream = gcm.keystream();
    let mut decoder = PayloadDecoder::new(sink, multi_file);
    copy_through(input, ct_len, |chunk| {
        hasher.update(chunk);
        keystream.apply(chunk);
        decoder.write(chunk)
    })?;
    if !gcm.verify(hasher, tag) {
        return Err(Error::corrupted(
            "the input changed while it was being decrypted",
        ));
    }
    let kind = decoder.finish()?;
    Ok((kind, parsed.header))
}

/// Nothing authenticated and there is no intact MD5 trailer. Decrypts (never releasing it)
/// the first ciphertext block: if it starts like a payload (zlib header or ZIP signature) the
/// key is right and the file is damaged or truncated; otherwise the key may be wrong too.
fn diagnose<R: Read + Seek>(
    gcm: &Gcm,
    input: &mut R,
    ct_start: u64,
    body_len: u64,
) -> Result<Error, Error> {
    let damaged = damaged();
    let available = (body_len - TAG_LEN as u64).min(16) as usize;
    if available < 2 {
        return Ok(damaged);
    }
    input
        .seek(SeekFrom::Start(ct_start))
        .map_err(Error::io("reading the backup"))?;
    let mut block = [0u8; 16];
    read_exact(input, &mut block[..available])?;
    gcm.keystream().apply(&mut block[..available]);
    let looks_right = is_zlib_header(&block) || block.starts_with(b"PK");
    block.zeroize();
    Ok(if looks_right {
        damaged
    } else {
        Error::WrongKeyOrCorrupted
    })
}

fn damaged() -> Error {
    Error::corrupted(
        "neither the MD5 checksum nor the authentication tag matches: the file is damaged or \
         truncated",
    )
}

fn is_zlib_header(b: &[u8]) -> bool {
    b.len() >= 2
        && b[0] & 0x0f == 8
        && b[0] >> 4 <= 7
        && (u16::from(b[0]) << 8 | u16::from(b[1])) % 31 == 0
}

fn read_exact<R: Read>(input: &mut R, buf: &mut [u8]) -> Result<(), Error> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        // The length came from seeking to the end, so a short read means the file shrank.
        std::io::ErrorKind::UnexpectedEof => {
            Error::corrupted("the input changed while it was being read")
        }
        _ => Error::Io {
            context: "reading the backup",
            source: e,
        },
    })
}

/// Reads exactly `len` bytes in chunks, handing each (mutable, for in-place decryption) to `f`.
fn copy_through<R: Read>(
    input: &mut R,
    len: u64,
    mut f: impl FnMut(&mut [u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        read_exact(input, &mut buf[..n])?;
        f(&mut buf[..n])?;
        left -= n as u64;
    }
    buf.zeroize();
    Ok(())
}

const ZIP_SIGNATURES: [&[u8; 4]; 2] = [b"PK\x03\x04", b"PK\x05\x06"];

/// Turns authenticated plaintext into output: raw ZIP, or inflated zlib.
struct PayloadDecoder<'w, W: Write> {
    sink: &'w mut W,
    state: DecoderState,
    /// No MD5 trailer: only a multi-file backup (a raw ZIP) may lack one.
    require_zip: bool,
    /// The first bytes of the output, to recognise a ZIP.
    out_head: Vec<u8>,
}

enum DecoderState {
    /// Fewer than 4 plaintext bytes seen.
    Sniffing(Vec<u8>),
    Zip,
    Zlib {
        inflater: Box<Decompress>,
        ended: bool,
    },
}

impl<'w, W: Write> PayloadDecoder<'w, W> {
    fn new(sink: &'w mut W, require_zip: bool) -> Self {
        PayloadDecoder {
            sink,
            require_zip,
            state: DecoderState::Sniffing(Vec::with_capacity(4)),
            out_head: Vec::with_capacity(4),
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        if let DecoderState::Sniffing(seen) = &mut self.state {
            let take = (4 - seen.len()).min(data.len());
            seen.extend_from_slice(&data[..take]);
            if seen.len() < 4 {
                return Ok(());
            }
            let seen = std::mem::take(seen);
            self.choose(&seen)?;
            self.feed(&seen)?;
            return self.feed(&data[take..]);
        }
        self.feed(data)
    }

    fn choose(&mut self, head: &[u8]) -> Result<(), Error> {
        self.state = if ZIP_SIGNATURES.iter().any(|s| head.starts_with(&s[..])) {
            DecoderState::Zip
        } else if self.require_zip {
            // An authenticated zlib payload without a trailer: a single-file backup whose
            // last 16 bytes were cut off (the ciphertext and tag happen to be whole).
            return Err(Error::Truncated {
                part: "MD5 checksum trailer",
            });
        } else {
            DecoderState::Zlib {
                inflater: Box::new(Decompress::new(true)),
                ended: false,
            }
        };
        Ok(())
    }

    fn emit(sink: &mut W, out_head: &mut Vec<u8>, bytes: &[u8]) -> Result<(), Error> {
        if out_head.len() < 4 {
            let take = (4 - out_head.len()).min(bytes.len());
            out_head.extend_from_slice(&bytes[..take]);
        }
        sink.write_all(bytes)
            .map_err(Error::io("writing the decrypted output"))
    }

    fn feed(&mut self, mut data: &[u8]) -> Result<(), Error> {
        match &mut self.state {
            DecoderState::Sniffing(_) => unreachable!("feed is called after choose"),
            DecoderState::Zip => Self::emit(self.sink, &mut self.out_head, data),
            DecoderState::Zlib { inflater, ended } => {
                let mut out = vec![0u8; CHUNK];
                while !data.is_empty() {
                    if *ended {
                        return Err(Error::corrupted("trailing data after the zlib stream"));
                    }
                    let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
                    let status = inflater
                        .decompress(data, &mut out, FlushDecompress::None)
                        .map_err(|e| {
                            Error::corrupted_by("the payload is not a valid zlib stream", e)
                        })?;
                    let used = (inflater.total_in() - before_in) as usize;
                    let made = (inflater.total_out() - before_out) as usize;
                    Self::emit(self.sink, &mut self.out_head, &out[..made])?;
                    data = &data[used..];
                    match status {
                        Status::StreamEnd => *ended = true,
                        Status::Ok => {}
                        Status::BufError if used == 0 && made == 0 => {
                            return Err(Error::corrupted("the zlib stream makes no progress"));
                        }
                        Status::BufError => {}
                    }
                }
                out.zeroize();
                Ok(())
            }
        }
    }

    /// Flushes the inflater and says what the payload was.
    fn finish(mut self) -> Result<PayloadKind, Error> {
        if let DecoderState::Sniffing(seen) = &mut self.state {
            if seen.is_empty() {
                return Err(Error::corrupted("the payload is empty"));
            }
            let seen = std::mem::take(seen);
            self.choose(&seen)?;
            self.feed(&seen)?;
        }
        match &mut self.state {
            DecoderState::Sniffing(_) => unreachable!("chosen above"),
            DecoderState::Zip => Ok(PayloadKind::Zip),
            DecoderState::Zlib { inflater, ended } => {
                let mut out = vec![0u8; CHUNK];
                while !*ended {
                    let before_out = inflater.total_out();
                    let status = inflater
                        .decompress(&[], &mut out, FlushDecompress::Finish)
                        .map_err(|e| {
                            Error::corrupted_by("the payload is not a valid zlib stream", e)
                        })?;
                    let made = (inflater.total_out() - before_out) as usize;
                    Self::emit(self.sink, &mut self.out_head, &out[..made])?;
                    match status {
                        Status::StreamEnd => *ended = true,
                        _ if made == 0 => {
                            return Err(Error::corrupted("the zlib stream is incomplete"));
                        }
                        _ => {}
                    }
                }
                let zip = ZIP_SIGNATURES
                    .iter()
                    .any(|s| self.out_head.starts_with(&s[..]));
                Ok(if zip {
                    PayloadKind::Zip
                } else {
                    PayloadKind::Database
                })
            }
        }
    }
}
