//! Consistent copies of live SQLite databases (docs/FORMAT.md §5.1).
//!
//! A chat app writes its database while we back it up. Copying the file (and its `-wal`) byte by
//! byte can capture a torn state. Instead, a database — recognised by its 16-byte header, not its
//! name — is read through SQLite inside one read transaction: page by page from the
//! `sqlite_dbpage` table ([`read_pages`]), with no copy on disk; or, where SQLite was built
//! without that table, copied with the online backup API in a single step
//! (`sqlite3_backup_step(-1)`, [`consistent_copy`]). Either way the pages are exactly the
//! database as of one commit, WAL included, and writers are not blocked (WAL mode) or only
//! briefly (rollback journal).
//!
//! One blob per page: SQLite rewrites whole pages in place, so an incremental backup stores only
//! the pages that changed.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

/// The SQLite file header.
pub const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// True if the file at `path` starts with the SQLite header.
pub fn is_sqlite(path: &Path) -> bool {
    let mut head = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map(|()| &head == MAGIC)
        .unwrap_or(false)
}

/// The page size recorded in a database header (bytes 16–17, big-endian; 1 means 65536).
pub fn page_size(header: &[u8]) -> Option<usize> {
    let v = u16::from_be_bytes(header.get(16..18)?.try_into().ok()?);
    let size = if v == 1 { 65536 } else { usize::from(v) };
    (size >= 512 && size.is_power_of_two()).then_some(size)
}

/// Why a consistent copy could not be made (the caller then falls back to a plain read).
#[derive(Debug, thiserror::Error)]
#[error("consistent SQLite copy failed: {0}")]
pub struct CopyError(String);

impl From<rusqlite::Error> for CopyError {
    fn from(e: rusqlite::Error) -> Self {
        CopyError(e.to_string())
    }
}

/// Why [`read_pages`] stopped.
#[derive(Debug)]
pub enum PagesError<E> {
    /// SQLite could not open or read the database (the caller falls back as for a failed copy).
    Sqlite(CopyError),
    /// The page visitor failed.
    Visit(E),
}

/// Reads the live database at `src` page by page as of one transaction — WAL content included —
/// and passes each page, in page order, to `visit`; returns the bytes read. No copy is written:
/// the pages come from SQLite's `sqlite_dbpage` table inside one read transaction (docs/FORMAT.md
/// §5.1). `Ok(None)` if this SQLite was built without that table (the caller then makes a
/// [`consistent_copy`]), before any page was visited.
pub fn read_pages<E>(
    src: &Path,
    mut visit: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<Option<u64>, PagesError<E>> {
    let sqlite = |e: rusqlite::Error| PagesError::Sqlite(CopyError::from(e));
    let open = |flags| Connection::open_with_flags(src, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX);
    let conn = open(OpenFlags::SQLITE_OPEN_READ_ONLY)
        .or_else(|_| open(OpenFlags::SQLITE_OPEN_READ_WRITE))
        .map_err(sqlite)?;
    conn.busy_timeout(Duration::from_secs(60)).map_err(sqlite)?;
    // One read transaction for every page: BEGIN is deferred, the first read takes the snapshot.
    conn.execute_batch("BEGIN").map_err(sqlite)?;
    // The table scans in page order (no ORDER BY: SQLite would sort the whole file in memory);
    // the loop checks that it did.
    let mut stmt = match conn.prepare("SELECT pgno, data FROM sqlite_dbpage('main')") {
        Ok(s) => s,
        Err(e) if e.to_string().contains("no such table") => return Ok(None),
        Err(e) => return Err(sqlite(e)),
    };
    let mut rows = stmt.query([]).map_err(sqlite)?;
    let mut read = 0u64;
    let mut page_size = None;
    let mut expect = 1i64;
    while let Some(row) = rows.next().map_err(sqlite)? {
        if row.get::<_, i64>(0).map_err(sqlite)? != expect {
            return Err(PagesError::Sqlite(CopyError(
                "sqlite_dbpage returned pages out of order".into(),
            )));
        }
        expect += 1;
        let page = row.get_ref(1).map_err(sqlite)?.as_blob().map_err(|e| {
            PagesError::Sqlite(CopyError(format!("sqlite_dbpage returned a non-blob: {e}")))
        })?;
        // Every page has the header's page size (the table pads nothing).
        let size = *page_size.get_or_insert(page.len());
        if page.len() != size || size == 0 {
            return Err(PagesError::Sqlite(CopyError(
                "sqlite_dbpage returned pages of different sizes".into(),
            )));
        }
        read += page.len() as u64;
        visit(page).map_err(PagesError::Visit)?;
    }
    drop(rows);
    drop(stmt);
    conn.execute_batch("COMMIT").map_err(sqlite)?;
    Ok(Some(read))
}

/// Copies the live database at `src` into a new file `dst` as of one transaction.
pub fn consistent_copy(src: &Path, dst: &Path) -> Result<(), CopyError> {
    let open = |flags| Connection::open_with_flags(src, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX);
    let source = open(OpenFlags::SQLITE_OPEN_READ_ONLY)
        .or_else(|_| open(OpenFlags::SQLITE_OPEN_READ_WRITE))?;
    source.busy_timeout(Duration::from_secs(10))?;
    let mut dest = Connection::open(dst)?;
    {
        let backup = Backup::new(&source, &mut dest)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked => {
                    if Instant::now() > deadline {
                        return Err(CopyError("database stayed locked for 60 s".into()));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => return Err(CopyError("unexpected backup step result".into())),
            }
        }
    }
    // Closing the copy checkpoints its WAL into the file, so the file alone is complete.
    dest.close().map_err(|(_, e)| CopyError(e.to_string()))?;
    Ok(())
}

/// A digest of a database's logical content: `PRAGMA integrity_check` must say `ok`, then every
/// table's schema and rows (in storage order) are hashed. Two databases with the same digest hold
/// the same data even if their files differ in header counters. Used to verify restores.
pub fn logical_digest(path: &Path) -> Result<String, CopyError> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let ok: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if ok != "ok" {
        return Err(CopyError(format!("integrity_check failed: {ok}")));
    }
    let mut h = blake3::Hasher::new();
    let mut tables = c.prepare(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY name",
    )?;
    let list: Vec<(String, String)> = tables
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            ))
        })?
        .collect::<Result<_, _>>()?;
    for (name, sql) in list {
        h.update(sql.as_bytes());
        let mut stmt = c.prepare(&format!("SELECT * FROM \"{}\"", name.replace('"', "\"\"")))?;
        let cols = stmt.column_count();
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            for i in 0..cols {
                match row.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => h.update(b"n"),
                    rusqlite::types::ValueRef::Integer(v) => {
                        h.update(b"i").update(&v.to_le_bytes())
                    }
                    rusqlite::types::ValueRef::Real(v) => h.update(b"r").update(&v.to_le_bytes()),
                    rusqlite::types::ValueRef::Text(t) => h
                        .update(b"t")
                        .update(&(t.len() as u64).to_le_bytes())
                        .update(t),
                    rusqlite::types::ValueRef::Blob(b) => h
                        .update(b"b")
                        .update(&(b.len() as u64).to_le_bytes())
                        .update(b),
                };
            }
        }
    }
    Ok(h.finalize().to_hex().to_string())
}

/// True for the journal files that belong to database `db_name` in the same folder.
/// A private folder for the consistent copies of one backup run (FORMAT §5.1).
///
/// Copies hold plaintext chat history, so none may outlive the run, even a killed one. Each run
/// works in `<base>/run-<random>/` and holds an exclusive advisory lock on
/// `<base>/run-<random>.lock` while it lives. A new run first deletes every run folder whose lock
/// it can take: the process that made it is gone. The copy itself is unlinked as soon as it is
/// open, so in a normal run it has no name while its pages are read.
pub struct Scratch {
    dir: std::path::PathBuf,
    lock_path: std::path::PathBuf,
    _lock: std::fs::File,
}

impl Scratch {
    /// Creates this run's folder under `base` (made 0700 if missing) after removing what dead
    /// runs left behind.
    pub fn new(base: &Path) -> std::io::Result<Scratch> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(base)?;
        std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o700))?;
        Self::clean(base);
        let name = format!(
            "run-{:016x}",
            rand_core::RngCore::next_u64(&mut rand_core::OsRng)
        );
        let lock_path = base.join(format!("{name}.lock"));
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock_path)?;
        lock.lock()?;
        let dir = base.join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(Scratch {
            dir,
            lock_path,
            _lock: lock,
        })
    }

    /// This run's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes the folders of runs whose lock is free (their process died).
    pub fn clean(base: &Path) {
        let Ok(rd) = std::fs::read_dir(base) else {
            return;
        };
        for e in rd.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "lock") {
                continue;
            }
            let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) else {
                continue;
            };
            if f.try_lock().is_ok() {
                let dir = path.with_extension("");
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => {
                        tracing::warn!(dir = %dir.display(), "removed the database copy of an interrupted backup")
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a stale database copy");
                        continue;
                    }
                }
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// Whether a rollback journal next to the database holds data (a crashed writer's hot journal,
/// or a transaction in progress): then the database file alone does not show its state.
pub fn has_hot_journal(db: &Path) -> bool {
    let mut j = db.as_os_str().to_owned();
    j.push("-journal");
    std::fs::symlink_metadata(j).is_ok_and(|m| m.len() > 0)
}

/// The path of a database's write-ahead log.
pub fn wal_path(db: &Path) -> std::path::PathBuf {
    let mut j = db.as_os_str().to_owned();
    j.push("-wal");
    j.into()
}

/// The database name whose journal `name` would be (`x-wal`, `x-shm`, `x-journal` → `x`).
pub fn journal_base(name: &[u8]) -> Option<&[u8]> {
    [b"-wal".as_slice(), b"-shm", b"-journal"]
        .into_iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .filter(|base| !base.is_empty())
}

/// Whether a SQLite journal of the file at `path` exists beside it.
pub fn has_journal_file(path: &Path) -> bool {
    ["-wal", "-shm", "-journal"].iter().any(|suffix| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        std::fs::symlink_metadata(p).is_ok()
    })
}

/// Whether `name` is the `-wal`, `-shm` or `-journal` file of the database file `db_name`.
pub fn is_journal_of(name: &[u8], db_name: &[u8]) -> bool {
    name.len() > db_name.len()
        && name.starts_with(db_name)
        && matches!(&name[db_name.len()..], b"-wal" | b"-shm" | b"-journal")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistent_copy_of_a_wal_database_has_every_committed_row() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("live.db");
        let c = Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE m(id INTEGER PRIMARY KEY, t TEXT);")
            .unwrap();
        for i in 0..500 {
            c.execute("INSERT INTO m(t) VALUES (?1)", [format!("message {i}")])
                .unwrap();
        }
        // Connection still open: rows live in the WAL, not the main file.
        assert!(is_sqlite(&db));
        let copy = dir.path().join("copy.db");
        consistent_copy(&db, &copy).unwrap();
        let k = Connection::open(&copy).unwrap();
        let n: i64 = k
            .query_row("SELECT count(*) FROM m", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 500);
        let ok: String = k
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        assert!(is_journal_of(b"live.db-wal", b"live.db"));
        assert!(!is_journal_of(b"live.db2", b"live.db"));
        assert_eq!(
            journal_base(b"live.db-journal"),
            Some(b"live.db".as_slice())
        );
        assert_eq!(journal_base(b"live.db-shm"), Some(b"live.db".as_slice()));
        assert_eq!(journal_base(b"-wal"), None);
        assert_eq!(journal_base(b"live.db"), None);
        assert_eq!(page_size(&std::fs::read(&copy).unwrap()), Some(4096));
    }
}
