//! The one error type of this crate.

use std::borrow::Cow;

/// Why a crypt15 backup could not be decrypted or produced.
///
/// Messages never contain key material or plaintext. The variants a user can act on are
/// [`Error::WrongKey`] (try another key), [`Error::Truncated`] / [`Error::Corrupted`] (copy the
/// file again), [`Error::WrongKeyOrCorrupted`] (either), and the `Unsupported*` kinds (this
/// backup is not a 64-digit-key crypt15 backup).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The MD5 trailer matches, so the file is intact, but the AES-GCM tag does not verify:
    /// the key is not the one the backup was made with.
    #[error("wrong key: the 64-digit key does not decrypt this backup")]
    WrongKey,

    /// The backup has no intact MD5 trailer (a multi-file backup has none; a damaged file's
    /// does not match), the tag does not verify, and the start of the payload does not look
    /// like one: either the key is wrong or the file is damaged, and the file cannot tell
    /// which.
    #[error(
        "wrong key or damaged file: the backup has no intact checksum, so a wrong key cannot be \
         told apart from damage"
    )]
    WrongKeyOrCorrupted,

    /// The file ends before the named part is complete (too short to hold a header, an
    /// authentication tag or a checksum).
    #[error("truncated backup: the file ends inside the {part}")]
    Truncated {
        /// Which part of the layout is cut short.
        part: &'static str,
    },

    /// The file is damaged or malformed: MD5 trailer mismatch, unparsable header protobuf,
    /// bad IV, invalid zlib stream, trailing data, or an input that changed while it was read.
    #[error("corrupted backup: {reason}")]
    Corrupted {
        /// What is wrong, for humans.
        reason: Cow<'static, str>,
        /// The underlying decoder error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },

    /// The header names a key type other than the 64-digit key (for example a password- or
    /// passkey-derived key), which this crate does not derive.
    #[error(
        "unsupported key type {key_type}: only backups encrypted with the 64-digit key are \
         supported"
    )]
    UnsupportedKeyType {
        /// The key type number found in the header.
        key_type: i32,
    },

    /// The file is a WhatsApp backup of another generation (crypt14 and older).
    #[error("unsupported backup format: {what}")]
    UnsupportedFormat {
        /// Which format was recognised.
        what: &'static str,
    },

    /// [`EncryptOptions`](crate::EncryptOptions) that cannot be written in a crypt15 header.
    #[error("invalid encrypt options: {reason}")]
    InvalidOptions {
        /// What is wrong with the options.
        reason: Cow<'static, str>,
    },

    /// Reading the input or writing the output failed.
    #[error("I/O error while {context}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn corrupted(reason: impl Into<Cow<'static, str>>) -> Self {
        Error::Corrupted {
            reason: reason.into(),
            source: None,
        }
    }

    pub(crate) fn corrupted_by(
        reason: impl Into<Cow<'static, str>>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Corrupted {
            reason: reason.into(),
            source: Some(Box::new(source)),
        }
    }

    pub(crate) fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Error::Io { context, source }
    }
}
