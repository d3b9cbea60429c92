//! Untrusted object storage (docs/FORMAT.md §2) over Apache OpenDAL.
//!
//! The engine sees a flat namespace of write-once objects. [`Storage`] hides OpenDAL's async API
//! behind blocking calls on a private Tokio runtime, so the engine can use plain threads.
//! Backends are chosen by URL: a path or `file://` URL selects `fs` (the default), `memory://`
//! the in-memory service for tests. Further services are added behind cargo features without
//! changing the engine.

use std::sync::Arc;

use opendal::{ErrorKind, Operator};

use crate::error::{RepoError, Result};

/// A repository's storage location.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

struct Inner {
    rt: tokio::runtime::Runtime,
    op: Operator,
    location: String,
}

/// An object listed in a folder.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Object name within the folder (the last path component).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

impl Storage {
    /// Opens the storage named by `location`: a local path, `file:///abs/path`, or `memory://`.
    pub fn open(location: &str) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("chatvault-io")
            .enable_all()
            .build()
            .map_err(|e| RepoError::io("starting the I/O runtime for", location, e))?;
        let (op, display) = if let Some(rest) = location.strip_prefix("memory://") {
            let b = opendal::services::Memory::default().root(&format!("/{rest}"));
            (
                Operator::new(b).map_err(|e| bad_location(location, e))?,
                location.to_string(),
            )
        } else {
            let path = location.strip_prefix("file://").unwrap_or(location);
            if path.contains("://") {
                return Err(RepoError::Invalid(format!(
                    "unsupported repository URL {location:?}: this build supports local paths, file:// and memory://"
                )));
            }
            if path.is_empty() {
                return Err(RepoError::Invalid("empty repository location".into()));
            }
            let abs = std::path::absolute(path)
                .map_err(|e| RepoError::io("resolving the repository path", path, e))?;
            let root = abs.to_string_lossy().into_owned();
            // Objects are written under tmp/ and renamed into place, so a crash never leaves a
            // partial object under its final name.
            let b = opendal::services::Fs::default()
                .root(&root)
                .atomic_write_dir(&format!("{root}/tmp"));
            (
                Operator::new(b).map_err(|e| bad_location(location, e))?,
                root,
            )
        };
        Ok(Storage {
            inner: Arc::new(Inner {
                rt,
                op,
                location: display,
            }),
        })
    }

    /// The location as shown to the user.
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    fn block_on<F: std::future::IntoFuture>(&self, f: F) -> F::Output {
        self.inner.rt.block_on(f.into_future())
    }

    /// Reads a whole object. A missing object is `Ok(None)`.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match self.block_on(self.inner.op.read(path)) {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(storage_err(path, e)),
        }
    }

    /// Reads `len` bytes at `offset` of an object.
    pub fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Option<Vec<u8>>> {
        match self.block_on(self.inner.op.read_with(path).range(offset..offset + len)) {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(storage_err(path, e)),
        }
    }

    /// Writes a new object. Objects are write-once: if `path` exists, returns `Ok(false)` and
    /// leaves it untouched.
    pub fn write_new(&self, path: &str, bytes: Vec<u8>) -> Result<bool> {
        let r = self.block_on(self.inner.op.write_with(path, bytes).if_not_exists(true));
        match r {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConditionNotMatch | ErrorKind::AlreadyExists
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(storage_err(path, e)),
        }
    }

    /// Size of an object, or `None` if missing.
    pub fn size(&self, path: &str) -> Result<Option<u64>> {
        match self.block_on(self.inner.op.stat(path)) {
            Ok(m) => Ok(Some(m.content_length())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(storage_err(path, e)),
        }
    }

    /// Lists the objects directly in `folder` (ending in `/`), or recursively.
    pub fn list(&self, folder: &str, recursive: bool) -> Result<Vec<Listed>> {
        let entries = match self.block_on(self.inner.op.list_with(folder).recursive(recursive)) {
            Ok(v) => v,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(storage_err(folder, e)),
        };
        let mut out = Vec::new();
        for e in entries {
            if e.metadata().is_dir() {
                continue;
            }
            let name = e.name().to_string();
            let size = if e.metadata().content_length() > 0 || !e.metadata().is_file() {
                e.metadata().content_length()
            } else {
                // Some services list without sizes; ask.
                self.size(e.path())?.unwrap_or(0)
            };
            out.push(Listed { name, size });
        }
        Ok(out)
    }

    /// Deletes an object (missing objects are not an error).
    pub fn delete(&self, path: &str) -> Result<()> {
        self.block_on(self.inner.op.delete(path))
            .map_err(|e| storage_err(path, e))
    }
}

fn storage_err(path: &str, source: opendal::Error) -> RepoError {
    RepoError::Storage {
        path: path.to_string(),
        source,
    }
}

fn bad_location(location: &str, e: opendal::Error) -> RepoError {
    RepoError::Invalid(format!("cannot use repository location {location:?}: {e}"))
}
