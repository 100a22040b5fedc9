//! Opening a database: connection settings, the two pools, the embedded migrations
//! (`adapters/migrations/`) and the store's instance id.
//!
//! A file database gets a write pool of one connection (the writer task's) and a pool of
//! read-only connections, which WAL lets read while the writer writes. An in-memory database
//! lives and dies with its one connection, so it gets a single pool of exactly one connection
//! that is never closed while the store lives, shared by the writer and the readers.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hodei_domain::ports::Cause;
use hodei_domain::ports::StoreError;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use std::sync::Arc;

use tokio::sync::{Notify, mpsc};

use super::error::{migrate_error, store_error};

/// The schema, embedded in the binary.
pub(super) static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How long a statement waits for a lock held by another connection or process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read-only connections of a file database: reads run beside the writer.
const READERS: u32 = 4;
/// Prepared statements kept per connection (sqlx caches them by SQL text).
const STATEMENT_CACHE: usize = 128;

/// The pools of an open database.
pub(super) struct Pools {
    /// For the writer task only: one connection.
    pub write: SqlitePool,
    /// For reads: read-only connections, or the same pool as `write` in memory.
    pub read: SqlitePool,
    /// For the checkpoints of a file's WAL ([`checkpoints`]); `None` in memory.
    pub checkpoints: Option<SqliteConnection>,
}

/// The raw cost of a commit on a database file set up as the store's (WAL,
/// `synchronous=NORMAL`, one connection): `transactions` transactions one after the other, each
/// `BEGIN IMMEDIATE; INSERT` of one row`; COMMIT` sent as one query (one round trip to SQLite's
/// thread, as the store's writer sends a batch of appends). Answers the median and the 99th percentile, in milliseconds: the
/// baseline that the load benchmark prints beside its latencies.
///
/// # Errors
/// What SQLite said.
pub async fn commit_latency(path: &Path, transactions: usize) -> Result<(f64, f64), String> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query("CREATE TABLE IF NOT EXISTS commit_baseline (id INTEGER PRIMARY KEY, at INTEGER)")
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let mut took = Vec::with_capacity(transactions);
    for i in 0..transactions {
        let started = std::time::Instant::now();
        sqlx::query("BEGIN IMMEDIATE; INSERT INTO commit_baseline (at) VALUES (?1); COMMIT")
            .bind(i as i64)
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        took.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    conn.close().await.map_err(|e| e.to_string())?;
    took.sort_by(f64::total_cmp);
    let at = |p: f64| {
        took.get(((took.len() as f64 * p) as usize).min(took.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Ok((at(0.5), at(0.99)))
}

/// Opens (creating it if missing) the database file at `path`, migrated to the latest schema.
pub(super) async fn open_file(path: &Path) -> Result<Pools, StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|err| StoreError::Unavailable {
            reason: format!("cannot create {}: {err}", parent.display()),
            cause: Cause::of(err),
        })?;
    }
    let what = format!("opening {}", path.display());
    let base = SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(BUSY_TIMEOUT)
        .statement_cache_capacity(STATEMENT_CACHE);
    let write_options = base
        .clone()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        // The writer's commits never checkpoint: see `checkpoints`.
        .pragma("wal_autocheckpoint", "0");
    let write = single_connection()
        .connect_with(write_options)
        .await
        .map_err(|err| store_error(&what, err))?;
    check_version(&write, &path.display().to_string()).await?;
    MIGRATOR
        .run(&write)
        .await
        .map_err(|err| migrate_error(&what, err))?;
    let read = SqlitePoolOptions::new()
        .max_connections(READERS)
        .test_before_acquire(false)
        .connect_with(base.clone().read_only(true))
        .await
        .map_err(|err| store_error(&what, err))?;
    let checkpoints = base
        .connect()
        .await
        .map_err(|err| store_error(&what, err))?;
    Ok(Pools {
        write,
        read,
        checkpoints: Some(checkpoints),
    })
}

/// How often the WAL is checkpointed.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Copies the WAL into the database file from a connection of its own, [`CHECKPOINT_EVERY`]
/// after the writer `committed` (at most that often; nothing while the store is idle), until
/// `writer` is gone. The writer's connection never checkpoints
/// (`wal_autocheckpoint=0`): SQLite's automatic checkpoint runs inside the commit that takes the
/// WAL past 1,000 pages, and its copy and syncs, a few milliseconds, stalled that commit and
/// every caller waiting for it (the p99 of every write). A `PASSIVE` checkpoint runs beside the
/// writer, which goes on appending to the WAL meanwhile; with nothing new in the WAL it costs
/// nothing.
pub(super) async fn checkpoints<T>(
    mut conn: SqliteConnection,
    writer: mpsc::WeakSender<T>,
    committed: Arc<Notify>,
) {
    loop {
        committed.notified().await;
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if writer.upgrade().is_none() {
            break;
        }
        if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            tracing::warn!(error = %err, "Cannot checkpoint the database's WAL.");
        }
    }
    // The last connection to close checkpoints what is left.
    let _ = conn.close().await;
}

/// Refuses a database migrated by a newer Hodei, before anything is written to it.
async fn check_version(pool: &SqlitePool, shown: &str) -> Result<(), StoreError> {
    let what = format!("reading the schema version of {shown}");
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' \
         AND name = '_sqlx_migrations')",
    )
    .fetch_one(pool)
    .await
    .map_err(|err| store_error(&what, err))?;
    if !exists {
        return Ok(());
    }
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .map_err(|err| store_error(&what, err))?;
    let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    crate::postgres::schema::newer_schema(shown, applied, known)
}

/// Opens a new, empty in-memory database.
pub(super) async fn open_memory() -> Result<Pools, StoreError> {
    let options = SqliteConnectOptions::new()
        .in_memory(true)
        .foreign_keys(true)
        .statement_cache_capacity(STATEMENT_CACHE);
    let pool = single_connection()
        .connect_with(options)
        .await
        .map_err(|err| store_error("opening an in-memory database", err))?;
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|err| migrate_error("migrating an in-memory database", err))?;
    Ok(Pools {
        write: pool.clone(),
        read: pool,
        checkpoints: None,
    })
}

/// A pool of exactly one connection, opened now and kept for the life of the pool.
fn single_connection() -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .test_before_acquire(false)
}

/// The database's instance id: recorded once, when the database is created, and the same at
/// every later opening. `identity` tells databases apart (a path); the creation time tells
/// apart databases created at one path one after the other.
pub(super) async fn instance_id(pool: &SqlitePool, identity: &str) -> Result<String, StoreError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut hasher = DefaultHasher::new();
    identity.hash(&mut hasher);
    let candidate = format!("{:x}-{:016x}", now.as_millis(), hasher.finish());
    let what = "the instance id";
    sqlx::query(
        "INSERT INTO meta (key, value) VALUES ('instance_id', ?1), ('created', ?2) \
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(candidate)
    .bind(now.as_millis().to_string())
    .execute(pool)
    .await
    .map_err(|err| store_error(what, err))?;
    sqlx::query_scalar("SELECT value FROM meta WHERE key = 'instance_id'")
        .fetch_one(pool)
        .await
        .map_err(|err| store_error(what, err))
}

/// An identity for an in-memory database: unique in this process.
pub(super) fn memory_identity() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(":memory:{}:{n}", std::process::id())
}
