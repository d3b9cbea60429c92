//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// Why generating or advancing a sample chat folder failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The spec is inconsistent (for example more media files than messages).
    #[error("invalid sample spec: {0}")]
    InvalidSpec(&'static str),
    /// `generate` refuses to write into a directory that already has content.
    #[error("target directory {0} is not empty")]
    NotEmpty(PathBuf),
    /// `next_day` found no sample database at the expected place.
    #[error("no sample chat folder at {0} (missing Databases/msgstore.db)")]
    NotASample(PathBuf),
    /// `next_day` was called with a spec other than the one the folder was generated with.
    #[error("the sample folder was generated from a different spec or seed")]
    SpecMismatch,
    /// Days must be applied in order 1, 2, 3, … so that the result is reproducible.
    #[error("next_day called for day {got}, but the folder expects day {expected}")]
    DayOutOfOrder {
        /// The day the folder is ready for.
        expected: u32,
        /// The day that was asked for.
        got: u32,
    },
    /// Reading or writing a file failed.
    #[error("I/O error on {path}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A SQLite statement failed.
    #[error("SQLite error")]
    Sqlite(#[from] rusqlite::Error),
}

pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T, Error>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T, Error> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}
