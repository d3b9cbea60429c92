//! PostgreSQL store (also plain-SQL compatible with CockroachDB): tokio-postgres + deadpool, one
//! statement per operation (prepared once per connection), retried on SQLSTATE 40001
//! (serialization failure). Many vault
//! processes may share one database: the guess counter is a single conditional `UPDATE`.
//!
//! TLS (rustls) when the URL asks for it with `sslmode=verify-full` / `verify-ca` / `require`
//! and a CA file (store/pgtls.rs, PROTOCOL.md §9.2); plain TCP otherwise, with a
//! warning at start for a host that is not a loopback address.

use std::time::Duration;

use chatvault_vault_core::{AccountId, AccountState, GuessCounter, NewRecord};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::pgtls::{PgSslMode, RustlsConnect, non_loopback_hosts, parse_target};
use super::{
    COMMITMENT_ROUNDS, CommitmentWrite, Row, SCHEMA_VERSION, STATUS_DESTROYED, STATUS_NONE,
    STATUS_REGISTERED, Store, counter_from, explain_commitment_miss, i, u,
};
use crate::error::{Error, Result};

/// PostgreSQL-backed [`Store`].
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgStore")
    }
}

const MIGRATION_V1: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS vault_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS vault_records (
        account       TEXT PRIMARY KEY,
        status        SMALLINT NOT NULL,
        generation    BIGINT NOT NULL,
        sealed        BYTEA,
        attempts      INTEGER NOT NULL,
        max_attempts  INTEGER NOT NULL,
        guess_seq     BIGINT NOT NULL,
        success_floor BIGINT NOT NULL,
        last_guess_at BIGINT NOT NULL,
        updated_at    BIGINT NOT NULL
    )",
    "INSERT INTO vault_meta (key, value) VALUES ('schema_version', '1') ON CONFLICT (key) DO NOTHING",
    // Additive: rollback commitment (PROTOCOL.md §9.1); older builds ignore these columns.
    "ALTER TABLE vault_records ADD COLUMN IF NOT EXISTS commitment_seq BIGINT",
    "ALTER TABLE vault_records ADD COLUMN IF NOT EXISTS commitment BYTEA",
];

const MAX_RETRIES: u32 = 10;

fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// `e` and its sources ("error performing TLS handshake: certificate verification failed …"):
/// the pool's and tokio-postgres' own messages leave the cause out. None of them quotes the URL.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

impl PgStore {
    /// Connects (pool of `pool_size` connections) and runs migrations. `url` is a
    /// `postgres://` URL; its `sslmode` and `sslrootcert` select TLS (PROTOCOL.md §9.2).
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self> {
        Self::connect_with_ca(url, pool_size, None).await
    }

    /// [`PgStore::connect`] with the CA file of `serve --db-ca` (instead of `sslrootcert` in the
    /// URL; giving both is an error). A CA without `sslmode` means `verify-full`. The first
    /// connection is made here, so a certificate that fails verification fails the call.
    pub async fn connect_with_ca(
        url: &str,
        pool_size: usize,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self> {
        let target = parse_target(url, ca_file)?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let hosts = target
            .config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect::<Vec<_>>()
            .join(",");
        let manager = match (&target.ca, target.mode) {
            (Some(ca), PgSslMode::VerifyCa | PgSslMode::VerifyFull) => {
                let tls = RustlsConnect::new(target.mode, ca)?;
                tracing::info!(
                    %hosts,
                    sslmode = target.mode.as_str(),
                    ca = %ca.display(),
                    "PostgreSQL over TLS"
                );
                Manager::from_config(target.config, tls, manager_config)
            }
            _ => {
                let exposed = non_loopback_hosts(&target.config);
                if exposed.is_empty() {
                    tracing::info!(%hosts, "PostgreSQL over plain TCP (loopback or Unix socket)");
                } else {
                    tracing::warn!(
                        hosts = %exposed.join(","),
                        "PostgreSQL over plain TCP to a host that is not a loopback address: \
                         anyone on the path can read records and reset guess counters; use \
                         sslmode=verify-full with sslrootcert=FILE or --db-ca FILE"
                    );
                }
                Manager::from_config(target.config, tokio_postgres::NoTls, manager_config)
            }
        };
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .wait_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Pool(e.to_string()))?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        // Concurrent first starts may race on CREATE TABLE IF NOT EXISTS (unique violation in the
        // catalog); retry a few times.
        let mut last = None;
        for attempt in 0..5 {
            let client = self.client().await?;
            let mut ok = true;
            for stmt in MIGRATION_V1 {
                if let Err(e) = client.batch_execute(stmt).await {
                    last = Some(e);
                    ok = false;
                    break;
                }
            }
            if ok {
                let row = client
                    .query_one(
                        "SELECT value FROM vault_meta WHERE key = 'schema_version'",
                        &[],
                    )
                    .await?;
                let version: String = row.get(0);
                if version != SCHEMA_VERSION {
                    return Err(Error::UnsupportedSchema {
                        found: version,
                        supported: SCHEMA_VERSION,
                    });
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
        }
        Err(Error::Postgres(last.expect("a failure was recorded")))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|e| Error::Pool(with_causes(&e)))
    }

    /// Runs one statement returning rows, retrying on serialization failures.
    ///
    /// The statement is prepared once per connection (`prepare_cached`): every later call is a
    /// single round trip (Bind/Execute/Sync) that PostgreSQL neither parses nor, once it settled
    /// on a generic plan, plans again. An unprepared `query(&str)` costs two round trips and two
    /// implicit transactions (Parse/Describe, then Bind/Execute).
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let mut attempt = 0;
        loop {
            let client = self.client().await?;
            let result = match client.prepare_cached(sql).await {
                Ok(stmt) => client.query(&stmt, params).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(rows) => return Ok(rows),
                Err(e) if retryable(&e) && attempt < MAX_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(5 << attempt.min(6))).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Runs one statement returning the number of rows it changed; prepared and retried like
    /// [`PgStore::query`].
    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let mut attempt = 0;
        loop {
            let client = self.client().await?;
            let result = match client.prepare_cached(sql).await {
                Ok(stmt) => client.execute(&stmt, params).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(n) => return Ok(n),
                Err(e) if retryable(&e) && attempt < MAX_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(5 << attempt.min(6))).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Store for PgStore {
    async fn load(&self, account: &AccountId) -> Result<AccountState> {
        let rows = self
            .query(
                "SELECT status, generation, sealed, attempts, max_attempts, guess_seq,
                        success_floor, updated_at
                 FROM vault_records WHERE account = $1",
                &[&account.as_str()],
            )
            .await?;
        match rows.first() {
            None => Ok(AccountState::NoRecord { generation: 0 }),
            Some(r) => Row {
                status: i64::from(r.get::<_, i16>(0)),
                generation: r.get(1),
                sealed: r.get(2),
                attempts: i64::from(r.get::<_, i32>(3)),
                max_attempts: i64::from(r.get::<_, i32>(4)),
                guess_seq: r.get(5),
                success_floor: r.get(6),
                updated_at: r.get(7),
            }
            .into_state(),
        }
    }

    async fn count_guess(
        &self,
        account: &AccountId,
        generation: u64,
        now: u64,
    ) -> Result<Option<GuessCounter>> {
        let rows = self
            .query(
                "UPDATE vault_records
                 SET attempts = attempts + 1, guess_seq = guess_seq + 1,
                     last_guess_at = $3, updated_at = $3
                 WHERE account = $1 AND generation = $2 AND status = 1
                   AND attempts < max_attempts
                 RETURNING attempts, max_attempts, guess_seq, success_floor",
                &[&account.as_str(), &i(generation), &i(now)],
            )
            .await?;
        Ok(rows.first().map(|r| GuessCounter {
            attempts: u(i64::from(r.get::<_, i32>(0))) as u32,
            max_attempts: u(i64::from(r.get::<_, i32>(1))) as u32,
            guess_seq: u(r.get(2)),
            success_floor: u(r.get(3)),
        }))
    }

    async fn destroy_exhausted(
        &self,
        account: &AccountId,
        generation: u64,
        now: u64,
    ) -> Result<bool> {
        let n = self
            .execute(
                "UPDATE vault_records SET status = $4, sealed = NULL, updated_at = $3,
                     commitment_seq = NULL, commitment = NULL
                 WHERE account = $1 AND generation = $2 AND status = 1
                   AND attempts >= max_attempts",
                &[
                    &account.as_str(),
                    &i(generation),
                    &i(now),
                    &(STATUS_DESTROYED as i16),
                ],
            )
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
        let n = self
            .execute(
                "UPDATE vault_records SET attempts = 0, success_floor = guess_seq, updated_at = $4
                 WHERE account = $1 AND generation = $2 AND status = 1
                   AND success_floor < $3 AND guess_seq >= $3",
                &[
                    &account.as_str(),
                    &i(generation),
                    &i(state_guess_seq),
                    &i(now),
                ],
            )
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
        let rows = self
            .query(
                "UPDATE vault_records SET attempts = 0, success_floor = guess_seq, updated_at = $4
                 WHERE account = $1 AND generation = $2 AND status = 1
                   AND success_floor < $3 AND guess_seq >= $3
                 RETURNING sealed, attempts, max_attempts, guess_seq, success_floor",
                &[
                    &account.as_str(),
                    &i(generation),
                    &i(state_guess_seq),
                    &i(now),
                ],
            )
            .await?;
        rows.first()
            .map(|r| {
                let sealed: Option<Vec<u8>> = r.get(0);
                let sealed = sealed.ok_or(Error::CorruptRow("registered without record"))?;
                let counter = counter_from(
                    i64::from(r.get::<_, i32>(1)),
                    i64::from(r.get::<_, i32>(2)),
                    r.get(3),
                    r.get(4),
                )?;
                Ok((sealed, counter))
            })
            .transpose()
    }

    async fn write_record(
        &self,
        account: &AccountId,
        record: &NewRecord,
        now: u64,
    ) -> Result<bool> {
        let max = i32::try_from(record.counter.max_attempts).unwrap_or(i32::MAX);
        let status = STATUS_REGISTERED as i16;
        let n = if record.expected_generation == 0 {
            self.execute(
                "INSERT INTO vault_records (account, status, generation, sealed, attempts,
                     max_attempts, guess_seq, success_floor, last_guess_at, updated_at)
                 VALUES ($1, $2, $3, $4, 0, $5, 0, 0, 0, $6)
                 ON CONFLICT (account) DO NOTHING",
                &[
                    &account.as_str(),
                    &status,
                    &i(record.generation),
                    &record.sealed,
                    &max,
                    &i(now),
                ],
            )
            .await?
        } else {
            self.execute(
                "UPDATE vault_records SET status = $2, generation = $3, sealed = $4,
                     attempts = 0, max_attempts = $5, guess_seq = 0, success_floor = 0,
                     last_guess_at = 0, updated_at = $6
                 WHERE account = $1 AND generation = $7",
                &[
                    &account.as_str(),
                    &status,
                    &i(record.generation),
                    &record.sealed,
                    &max,
                    &i(now),
                    &i(record.expected_generation),
                ],
            )
            .await?
        };
        Ok(n == 1)
    }

    async fn remove(
        &self,
        account: &AccountId,
        expected_generation: Option<u64>,
        now: u64,
    ) -> Result<bool> {
        let status = STATUS_NONE as i16;
        let n = match expected_generation {
            Some(g) => {
                self.execute(
                    "UPDATE vault_records SET status = $2, sealed = NULL, generation = generation + 1,
                         attempts = 0, guess_seq = 0, success_floor = 0, updated_at = $3,
                         commitment_seq = NULL, commitment = NULL
                     WHERE account = $1 AND generation = $4",
                    &[&account.as_str(), &status, &i(now), &i(g)],
                )
                .await?
            }
            None => {
                self.execute(
                    "UPDATE vault_records SET status = $2, sealed = NULL, generation = generation + 1,
                         attempts = 0, guess_seq = 0, success_floor = 0, updated_at = $3,
                         commitment_seq = NULL, commitment = NULL
                     WHERE account = $1",
                    &[&account.as_str(), &status, &i(now)],
                )
                .await?
            }
        };
        Ok(n == 1)
    }

    async fn sweep(&self, now: u64, state_ttl: u64) -> Result<u64> {
        self.execute(
            "UPDATE vault_records SET status = $1, sealed = NULL, updated_at = $2,
                 commitment_seq = NULL, commitment = NULL
             WHERE status = 1 AND attempts >= max_attempts AND last_guess_at < $3",
            &[
                &(STATUS_DESTROYED as i16),
                &i(now),
                &i(now.saturating_sub(state_ttl)),
            ],
        )
        .await
    }

    async fn get_commitment(&self, account: &AccountId) -> Result<Option<(u64, Vec<u8>)>> {
        let rows = self
            .query(
                "SELECT commitment_seq, commitment FROM vault_records
                 WHERE account = $1 AND status = 1
                   AND commitment_seq IS NOT NULL AND commitment IS NOT NULL",
                &[&account.as_str()],
            )
            .await?;
        Ok(rows
            .first()
            .map(|r| (u(r.get::<_, i64>(0)), r.get::<_, Vec<u8>>(1))))
    }

    async fn put_commitment(
        &self,
        account: &AccountId,
        seq: u64,
        commitment: &[u8],
    ) -> Result<CommitmentWrite> {
        // The conditional UPDATE is the compare-and-set: under READ COMMITTED a concurrent writer
        // of the same row waits for the row lock and then re-checks the WHERE clause against the
        // committed row, so a lower seq can never overwrite a higher one.
        for _ in 0..COMMITMENT_ROUNDS {
            let n = self
                .execute(
                    "UPDATE vault_records SET commitment_seq = $2, commitment = $3
                     WHERE account = $1 AND status = 1
                       AND (commitment_seq IS NULL OR commitment_seq < $2)",
                    &[&account.as_str(), &i(seq), &commitment],
                )
                .await?;
            if n == 1 {
                return Ok(CommitmentWrite::Stored);
            }
            let rows = self
                .query(
                    "SELECT status, commitment_seq FROM vault_records WHERE account = $1",
                    &[&account.as_str()],
                )
                .await?;
            let row = rows
                .first()
                .map(|r| (i64::from(r.get::<_, i16>(0)), r.get::<_, Option<i64>>(1)));
            if let Some(outcome) =
                explain_commitment_miss(row.map(|r| r.0), row.and_then(|r| r.1), seq)
            {
                return Ok(outcome);
            }
        }
        Err(Error::Conflict)
    }

    async fn ping(&self) -> Result<()> {
        self.query("SELECT 1", &[]).await.map(|_| ())
    }
}
