//! SQLite store (default): WAL, `synchronous = FULL` (a counted guess survives power loss),
//! `secure_delete = ON` (erased records are zeroed in the file), one
//! connection per process, blocking calls on tokio's blocking pool. Several processes may share
//! one database file; SQLite serializes writers and each method is one statement.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatvault_vault_core::{AccountId, AccountState, GuessCounter, NewRecord};
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    CommitmentWrite, Row, SCHEMA_VERSION, STATUS_DESTROYED, STATUS_NONE, STATUS_REGISTERED, Store,
    explain_commitment_miss, i, u,
};
use crate::error::{Error, Result};

/// Copies the WAL into the database and truncates it, so old frames holding an erased or replaced
/// sealed record do not outlive the change in `vault.sqlite3-wal` (`secure_delete` zeroes freed
/// content only in the database file). Best effort: a reader in another process can keep the
/// checkpoint from completing; the next one finishes the job.
fn erase_wal(c: &Connection) {
    let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
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
    conn: Arc<Mutex<Connection>>,
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
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn.lock().map_err(|_| Error::Task)?;
            f(&guard).map_err(Error::from)
        })
        .await
        .map_err(|_| Error::Task)?
    }
}

impl Store for SqliteStore {
    async fn load(&self, account: &AccountId) -> Result<AccountState> {
        let account = account.as_str().to_owned();
        let row = self
            .with(move |c| {
                c.query_row(
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
                c.query_row(
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
                c.execute(
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
                c.execute(
                    "UPDATE vault_records SET attempts = 0, success_floor = guess_seq, updated_at = ?4
                     WHERE account = ?1 AND generation = ?2 AND status = 1
                       AND success_floor < ?3 AND guess_seq >= ?3",
                    params![account, i(generation), i(state_guess_seq), i(now)],
                )
            })
            .await?;
        Ok(n == 1)
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
                    c.execute(
                        "INSERT INTO vault_records (account, status, generation, sealed, attempts,
                             max_attempts, guess_seq, success_floor, last_guess_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, 0, ?5, 0, 0, 0, ?6)
                         ON CONFLICT (account) DO NOTHING",
                        params![account, STATUS_REGISTERED, generation, sealed, max, i(now)],
                    )
                } else {
                    c.execute(
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
                c.execute(
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
                c.execute(
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
                c.query_row(
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
        // One connection per process and the immediate transaction make the update and the read
        // that explains a miss atomic; across processes SQLite serializes the writers.
        let outcome = self
            .with(move |c| {
                c.execute_batch("BEGIN IMMEDIATE")?;
                let result = (|| {
                    let n = c.execute(
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
                })();
                match result {
                    Ok(outcome) => {
                        c.execute_batch("COMMIT")?;
                        Ok(outcome)
                    }
                    Err(e) => {
                        let _ = c.execute_batch("ROLLBACK");
                        Err(e)
                    }
                }
            })
            .await?;
        // Inside one transaction a miss is always explained; `None` cannot happen.
        outcome.ok_or(Error::Conflict)
    }

    async fn ping(&self) -> Result<()> {
        self.with(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }
}
