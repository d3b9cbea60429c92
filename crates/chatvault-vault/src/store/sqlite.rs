//! SQLite store (default): WAL, `synchronous = FULL` (a counted guess survives power loss),
//! `secure_delete = ON` (erased records are zeroed in the file). Several processes may share one
//! database file; SQLite serializes writers.
//!
//! **Group commit.** One connection per process, owned by a dedicated database thread. Requests
//! queue their operation; the thread takes everything queued (up to [`MAX_BATCH`]), runs each
//! operation inside its own savepoint of one `BEGIN IMMEDIATE` transaction, commits once, and only
//! then answers each request. So an answer (a KE2 after a counted guess) still leaves only after
//! its write is durable, but concurrent requests share one fsync instead of paying one each, and
//! no request thread waits on a connection mutex. An operation that fails is rolled back to its
//! savepoint alone; a failed commit fails every operation of the batch.

use std::cell::Cell;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use chatvault_vault_core::{AccountId, AccountState, GuessCounter, NewRecord};
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    CommitmentWrite, Row, SCHEMA_VERSION, STATUS_DESTROYED, STATUS_NONE, STATUS_REGISTERED, Store,
    counter_from, explain_commitment_miss, i, u,
};
use crate::error::{Error, Result};

/// Copies the WAL into the database and truncates it, so old frames holding an erased or replaced
/// sealed record do not outlive the change in `vault.sqlite3-wal` (`secure_delete` zeroes freed
/// content only in the database file). Best effort: a reader in another process can keep the
/// checkpoint from completing; the next one finishes the job.
///
/// A checkpoint cannot run inside the batch's transaction: operations ask for one with this, and
/// the database thread runs it after the commit.
fn erase_wal(_: &Connection) {
    ERASE_WAL_AFTER_COMMIT.with(|e| e.set(true));
}

thread_local! {
    /// Set by [`erase_wal`] on the database thread; read after each commit.
    static ERASE_WAL_AFTER_COMMIT: Cell<bool> = const { Cell::new(false) };
}

/// Most operations committed together.
pub const MAX_BATCH: usize = 256;

/// One queued operation: runs on the database thread, answers after the commit.
trait Job: Send {
    /// Runs the operation inside its savepoint.
    fn run(&mut self, c: &Connection);
    /// Answers the request: the operation's result if the batch committed, else `failed`.
    fn finish(self: Box<Self>, failed: Option<&str>);
}

struct Op<T, F> {
    f: Option<F>,
    result: Option<rusqlite::Result<T>>,
    reply: tokio::sync::oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Op<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> rusqlite::Result<T> + Send,
{
    fn run(&mut self, c: &Connection) {
        let Some(f) = self.f.take() else { return };
        if let Err(e) = cached_execute(c, "SAVEPOINT op", []) {
            self.result = Some(Err(e));
            return;
        }
        // A panicking operation is rolled back alone and answered `Task`; the thread lives on.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(c))) {
            Ok(Ok(v)) => self.result = Some(cached_execute(c, "RELEASE op", []).map(|_| v)),
            Ok(Err(e)) => {
                let _ = c.execute_batch("ROLLBACK TO op; RELEASE op");
                self.result = Some(Err(e));
            }
            Err(_) => {
                let _ = c.execute_batch("ROLLBACK TO op; RELEASE op");
            }
        }
    }

    fn finish(self: Box<Self>, failed: Option<&str>) {
        let answer = match (failed, self.result) {
            (Some(why), _) => Err(Error::Commit(why.to_owned())),
            (None, Some(r)) => r.map_err(Error::from),
            (None, None) => Err(Error::Task),
        };
        let _ = self.reply.send(answer);
    }
}

/// `Connection::query_row` through the connection's statement cache: the store runs the same
/// few statements for every request, and preparing them each time (with the transaction's
/// `BEGIN`, `SAVEPOINT`, `RELEASE` and `COMMIT`) was a tenth of a realm's CPU under load.
fn cached_query_row<T, P: rusqlite::Params>(
    c: &Connection,
    sql: &str,
    params: P,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    c.prepare_cached(sql)?.query_row(params, f)
}

/// `Connection::execute` through the statement cache (see [`cached_query_row`]).
fn cached_execute<P: rusqlite::Params>(
    c: &Connection,
    sql: &str,
    params: P,
) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(params)
}

/// The database thread: batches, commits, answers. Ends when every store handle is dropped.
fn database_thread(conn: Connection, jobs: mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        if let Err(e) = cached_execute(&conn, "BEGIN IMMEDIATE", []) {
            let why = e.to_string();
            batch.into_iter().for_each(|j| j.finish(Some(&why)));
            continue;
        }
        for job in &mut batch {
            job.run(&conn);
        }
        let failed = cached_execute(&conn, "COMMIT", []).err().map(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            e.to_string()
        });
        if ERASE_WAL_AFTER_COMMIT.with(|e| e.replace(false)) && failed.is_none() {
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
        batch.into_iter().for_each(|j| j.finish(failed.as_deref()));
    }
}

/// Creates the database file with mode 0600 (before SQLite does, with the umask), and tightens
/// an existing one: it holds sealed records and the guess counters. SQLite gives its `-wal` and
/// `-shm` files the database file's permissions.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    if file.metadata()?.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    for suffix in ["-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(m) = std::fs::metadata(&p)
            && m.permissions().mode() & 0o077 != 0
        {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

const MIGRATION_V1: &str = "
CREATE TABLE IF NOT EXISTS vault_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vault_records (
    account       TEXT PRIMARY KEY,
    status        INTEGER NOT NULL,
    generation    INTEGER NOT NULL,
    sealed        BLOB,
    attempts      INTEGER NOT NULL,
    max_attempts  INTEGER NOT NULL,
    guess_seq     INTEGER NOT NULL,
    success_floor INTEGER NOT NULL,
    last_guess_at INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS vault_records_exhausted ON vault_records (status, last_guess_at)
    WHERE status = 1 AND attempts >= max_attempts;
INSERT INTO vault_meta (key, value) VALUES ('schema_version', '1') ON CONFLICT (key) DO NOTHING;
";

/// Additive migration: rollback-commitment columns (PROTOCOL.md §9.1). SQLite has no
/// `ADD COLUMN IF NOT EXISTS`, so [`add_commitment_columns`] checks first.
const COMMITMENT_COLUMNS: &[(&str, &str)] =
    &[("commitment_seq", "INTEGER"), ("commitment", "BLOB")];

fn add_commitment_columns(conn: &Connection) -> rusqlite::Result<()> {
    for (name, ty) in COMMITMENT_COLUMNS {
        let present: i64 = conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('vault_records') WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )?;
        if present == 0 {
            conn.execute_batch(&format!("ALTER TABLE vault_records ADD COLUMN {name} {ty}"))?;
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and runs migrations.
    pub fn open(path: &Path) -> Result<Self> {
        create_private(path).map_err(|source| Error::Io {
            what: format!("creating {} with mode 0600", path.display()),
            source,
        })?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        // Every statement the store runs stays prepared (cached_query_row, cached_execute).
        conn.set_prepared_statement_cache_capacity(64);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Overwrite freed content (destroyed records) with zeros in the database file.
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {MIGRATION_V1}"))?;
        if let Err(e) = add_commitment_columns(&conn) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e.into());
        }
        conn.execute_batch("COMMIT")?;
        let version: String = conn.query_row(
            "SELECT value FROM vault_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )?;
        if version != SCHEMA_VERSION {
            return Err(Error::UnsupportedSchema {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        let (jobs, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("vault-sqlite".into())
            .spawn(move || database_thread(conn, rx))
            .map_err(|source| Error::Io {
                what: "starting the database thread".into(),
                source,
            })?;
        Ok(Self { jobs })
    }

    /// Runs `f` on the database thread in the next batch; answers once that batch committed.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let op: Box<dyn Job> = Box::new(Op {
            f: Some(f),
            result: None,
            reply,
        });
        self.jobs.send(op).map_err(|_| Error::Task)?;
        answer.await.map_err(|_| Error::Task)?
    }
}

impl Store for SqliteStore {
    async fn load(&self, account: &AccountId) -> Result<AccountState> {
        let account = account.as_str().to_owned();
        let row = self
            .with(move |c| {
                cached_query_row(
                    c,
                    "SELECT status, generation, sealed, attempts, max_attempts, guess_seq,
                            success_floor, updated_at
                     FROM vault_records WHERE account = ?1",
                    params![account],
                    |r| {
                        Ok(Row {
                            status: r.get(0)?,
                            generation: r.get(1)?,
                            sealed: r.get(2)?,
                            attempts: r.get(3)?,
                            max_attempts: r.get(4)?,
                            guess_seq: r.get(5)?,
                            success_floor: r.get(6)?,
                            updated_at: r.get(7)?,
                        })
                    },
                )
                .optional()
            })
            .await?;
        match row {
            Some(row) => row.into_state(),
            None => Ok(AccountState::NoRecord { generation: 0 }),
        }
    }

    async fn count_guess(
        &self,
        account: &AccountId,
        generation: u64,
        now: u64,
    ) -> Result<Option<GuessCounter>> {
        let account = account.as_str().to_owned();
        let row = self
            .with(move |c| {
                cached_query_row(
                    c,
                    "UPDATE vault_records
                     SET attempts = attempts + 1, guess_seq = guess_seq + 1,
                         last_guess_at = ?3, updated_at = ?3
                     WHERE account = ?1 AND generation = ?2 AND status = 1
                       AND attempts < max_attempts
                     RETURNING attempts, max_attempts, guess_seq, success_floor",
                    params![account, i(generation), i(now)],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                        ))
                    },
                )
                .optional()
            })
            .await?;
        Ok(row.map(|(a, m, g, s)| GuessCounter {
            attempts: u(a) as u32,
            max_attempts: u(m) as u32,
            guess_seq: u(g),
            success_floor: u(s),
        }))
    }

    async fn destroy_exhausted(
        &self,
        account: &AccountId,
        generation: u64,
        now: u64,
    ) -> Result<bool> {
        let account = account.as_str().to_owned();
        let n = self
            .with(move |c| {
                cached_execute(
                    c,
                    "UPDATE vault_records SET status = ?4, sealed = NULL, updated_at = ?3,
                         commitment_seq = NULL, commitment = NULL
                     WHERE account = ?1 AND generation = ?2 AND status = 1
                       AND attempts >= max_attempts",
                    params![account, i(generation), i(now), STATUS_DESTROYED],
                )
                .inspect(|&n| {
                    if n > 0 {
                        erase_wal(c)
                    }
                })
            })
            .await?;
        Ok(n == 1)
    }

    async fn record_success(
        &self,
        account: &AccountId,
        generation: u64,
        state_guess_seq: u64,
        now: u64,
    ) -> Result<bool> {
        let account = account.as_str().to_owned();
        let n = self
            .with(move |c| {
                cached_execute(
                    c,
                    "UPDATE vault_records SET attempts = 0, success_floor = guess_seq, updated_at = ?4
                     WHERE account = ?1 AND generation = ?2 AND status = 1
                       AND success_floor < ?3 AND guess_seq >= ?3",
                    params![account, i(generation), i(state_guess_seq), i(now)],
                )
            })
            .await?;
        Ok(n == 1)
    }

    async fn record_success_returning(
        &self,
        account: &AccountId,
        generation: u64,
        state_guess_seq: u64,
        now: u64,
    ) -> Result<Option<(Vec<u8>, GuessCounter)>> {
        let account = account.as_str().to_owned();
        let row = self
            .with(move |c| {
                cached_query_row(
                    c,
                    "UPDATE vault_records SET attempts = 0, success_floor = guess_seq, updated_at = ?4
                     WHERE account = ?1 AND generation = ?2 AND status = 1
                       AND success_floor < ?3 AND guess_seq >= ?3
                     RETURNING sealed, attempts, max_attempts, guess_seq, success_floor",
                    params![account, i(generation), i(state_guess_seq), i(now)],
                    |r| {
                        Ok((
                            r.get::<_, Option<Vec<u8>>>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    },
                )
                .optional()
            })
            .await?;
        row.map(|(sealed, a, m, g, s)| {
            let sealed = sealed.ok_or(Error::CorruptRow("registered without record"))?;
            Ok((sealed, counter_from(a, m, g, s)?))
        })
        .transpose()
    }

    async fn write_record(
        &self,
        account: &AccountId,
        record: &NewRecord,
        now: u64,
    ) -> Result<bool> {
        let account = account.as_str().to_owned();
        let expected = i(record.expected_generation);
        let generation = i(record.generation);
        let sealed = record.sealed.clone();
        let max = i64::from(record.counter.max_attempts);
        let n = self
            .with(move |c| {
                if expected == 0 {
                    cached_execute(
                        c,
                        "INSERT INTO vault_records (account, status, generation, sealed, attempts,
                             max_attempts, guess_seq, success_floor, last_guess_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, 0, ?5, 0, 0, 0, ?6)
                         ON CONFLICT (account) DO NOTHING",
                        params![account, STATUS_REGISTERED, generation, sealed, max, i(now)],
                    )
                } else {
                    cached_execute(
                        c,
                        "UPDATE vault_records SET status = ?2, generation = ?3, sealed = ?4,
                             attempts = 0, max_attempts = ?5, guess_seq = 0, success_floor = 0,
                             last_guess_at = 0, updated_at = ?6
                         WHERE account = ?1 AND generation = ?7",
                        params![
                            account,
                            STATUS_REGISTERED,
                            generation,
                            sealed,
                            max,
                            i(now),
                            expected
                        ],
                    )
                    .inspect(|&n| {
                        if n > 0 {
                            erase_wal(c)
                        }
                    })
                }
            })
            .await?;
        Ok(n == 1)
    }

    async fn remove(
        &self,
        account: &AccountId,
        expected_generation: Option<u64>,
        now: u64,
    ) -> Result<bool> {
        let account = account.as_str().to_owned();
        let expected = expected_generation.map(i);
        let n = self
            .with(move |c| {
                cached_execute(
                    c,
                    "UPDATE vault_records SET status = ?2, sealed = NULL, generation = generation + 1,
                         attempts = 0, guess_seq = 0, success_floor = 0, updated_at = ?3,
                         commitment_seq = NULL, commitment = NULL
                     WHERE account = ?1 AND (?4 IS NULL OR generation = ?4)",
                    params![account, STATUS_NONE, i(now), expected],
                )
                .inspect(|&n| {
                    if n > 0 {
                        erase_wal(c)
                    }
                })
            })
            .await?;
        Ok(n == 1)
    }

    async fn sweep(&self, now: u64, state_ttl: u64) -> Result<u64> {
        let cutoff = i(now.saturating_sub(state_ttl));
        let n = self
            .with(move |c| {
                cached_execute(
                    c,
                    "UPDATE vault_records SET status = ?1, sealed = NULL, updated_at = ?2,
                         commitment_seq = NULL, commitment = NULL
                     WHERE status = 1 AND attempts >= max_attempts AND last_guess_at < ?3",
                    params![STATUS_DESTROYED, i(now), cutoff],
                )
                .inspect(|&n| {
                    if n > 0 {
                        erase_wal(c)
                    }
                })
            })
            .await?;
        Ok(n as u64)
    }

    async fn get_commitment(&self, account: &AccountId) -> Result<Option<(u64, Vec<u8>)>> {
        let account = account.as_str().to_owned();
        let row = self
            .with(move |c| {
                cached_query_row(
                    c,
                    "SELECT commitment_seq, commitment FROM vault_records
                     WHERE account = ?1 AND status = 1
                       AND commitment_seq IS NOT NULL AND commitment IS NOT NULL",
                    params![account],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
                )
                .optional()
            })
            .await?;
        Ok(row.map(|(seq, blob)| (u(seq), blob)))
    }

    async fn put_commitment(
        &self,
        account: &AccountId,
        seq: u64,
        commitment: &[u8],
    ) -> Result<CommitmentWrite> {
        let account = account.as_str().to_owned();
        let blob = commitment.to_vec();
        // The batch's immediate transaction makes the update and the read that explains a miss
        // atomic; across processes SQLite serializes the writers.
        let outcome = self
            .with(move |c| {
                let n = cached_execute(
                    c,
                    "UPDATE vault_records SET commitment_seq = ?2, commitment = ?3
                         WHERE account = ?1 AND status = 1
                           AND (commitment_seq IS NULL OR commitment_seq < ?2)",
                    params![account, i(seq), blob],
                )?;
                if n == 1 {
                    return Ok(Some(CommitmentWrite::Stored));
                }
                let row: Option<(i64, Option<i64>)> = c
                    .query_row(
                        "SELECT status, commitment_seq FROM vault_records WHERE account = ?1",
                        params![account],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                Ok(explain_commitment_miss(
                    row.map(|r| r.0),
                    row.and_then(|r| r.1),
                    seq,
                ))
            })
            .await?;
        // Inside one transaction a miss is always explained; `None` cannot happen.
        outcome.ok_or(Error::Conflict)
    }

    async fn ping(&self) -> Result<()> {
        self.with(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failing_operation_rolls_back_alone_and_its_batch_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.sqlite3");
        let store = SqliteStore::open(&path).unwrap();
        let tasks: Vec<_> = (0..300)
            .map(|n: u32| {
                let s = store.clone();
                tokio::spawn(async move {
                    s.with(move |c| {
                        c.execute(
                            "INSERT INTO vault_meta (key, value) VALUES (?1, 'x')",
                            params![format!("k{n}")],
                        )?;
                        if n.is_multiple_of(3) {
                            // Fails after the insert: the insert must not survive.
                            c.execute("INSERT INTO no_such_table VALUES (1)", [])?;
                        }
                        if n == 7 {
                            panic!("an operation that panics");
                        }
                        Ok(n)
                    })
                    .await
                })
            })
            .collect();
        let mut ok = 0;
        for (n, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(v) => {
                    assert_eq!(v as usize, n);
                    assert!(n % 3 != 0 && n != 7);
                    ok += 1;
                }
                Err(Error::Sqlite(_)) => assert_eq!(n % 3, 0, "{n}"),
                Err(Error::Task) => assert_eq!(n, 7),
                Err(e) => panic!("{n}: {e}"),
            }
        }
        assert_eq!(ok, 199);
        // Every answered success is in the file (read by another connection), no failure is.
        let c = Connection::open(&path).unwrap();
        let keys: Vec<String> = c
            .prepare("SELECT key FROM vault_meta WHERE key LIKE 'k%'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(keys.len(), 199);
        assert!(!keys.iter().any(|k| {
            let n: u32 = k[1..].parse().unwrap();
            n.is_multiple_of(3) || n == 7
        }));
        // The thread lives on after the panic.
        store.ping().await.unwrap();
    }
}
