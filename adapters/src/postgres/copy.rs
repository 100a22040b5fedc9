//! # Moving an embedded database to PostgreSQL
//!
//! [`copy_store`] copies everything a SQLite database holds (pipelines, runs, jobs, steps,
//! events, tokens, agents and leases, sealed secrets, repositories and deliveries, schedule
//! ticks, workers, the instance id) and the job logs of a log directory into an empty
//! PostgreSQL database, row for row with the same ids, in ONE transaction, and verifies it
//! before committing: the row count and a checksum of every table, and the length and SHA-256
//! of every log, read back from the target, must equal the source's. Anything else rolls back
//! and leaves the target as empty as it was.
//!
//! Rows travel as JSON: SQLite's `json_object` exports each one (blobs as `\x…` hex), and
//! PostgreSQL's `json_populate_recordset` inserts them by column name, so that the copy follows
//! the schemas rather than a list of columns kept by hand. Checksums are taken over each row as
//! canonical JSON (keys sorted, booleans as 0 and 1), the same on both sides.
//!
//! ## Assumptions
//! Nothing writes to the source while it is copied (the caller holds its lock), and no server
//! uses the target (this takes its server lock).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use hodei_domain::ports::{LogStore, StoreError};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, PgConnection, SqlitePool};

use super::error::store_error;
use super::{Lead, PgStore};
use crate::logs::FileLogStore;
use crate::sqlite::SqliteStore;

/// The tables copied, parents before children (foreign keys).
pub const TABLES: [&str; 15] = [
    "meta",
    "pipelines",
    "runs",
    "jobs",
    "steps",
    "events",
    "workers",
    "tokens",
    "secrets",
    "repositories",
    "deliveries",
    "agent_tokens",
    "agents",
    "leases",
    "schedule_ticks",
];

/// Tables whose `id` PostgreSQL numbers itself: their identities continue after the copy.
const IDENTITIES: [&str; 5] = ["runs", "jobs", "tokens", "agent_tokens", "agents"];

/// Rows inserted by one statement.
const PAGE: usize = 1_000;
/// The most bytes of one log chunk row.
const CHUNK: usize = 1024 * 1024;

/// What was copied, and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Each table: its name, its rows, the SHA-256 (hex) of its rows as canonical JSON.
    pub tables: Vec<(String, u64, String)>,
    /// Jobs whose logs were copied.
    pub logs: u64,
    /// Bytes of logs copied.
    pub log_bytes: u64,
    /// The SHA-256 (hex) of every log's length and digest, in job order.
    pub logs_checksum: String,
}

/// Why the copy was not made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    #[error("cannot open the source {what}: {source}")]
    Source {
        what: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot use the target database: {source}")]
    Target {
        #[source]
        source: StoreError,
    },
    #[error(
        "the target database {url} is not empty ({what}): copy into a new database (createdb), \
         nothing was changed"
    )]
    NotEmpty { url: String, what: String },
    #[error("the copy of {what} does not match the source ({detail}): nothing was committed")]
    Mismatch { what: String, detail: String },
}

/// Copies the SQLite database at `sqlite` and the job logs under `logs` into the empty
/// PostgreSQL database at `url`; see the module documentation.
///
/// # Errors
/// [`CopyError`]: the source or target cannot be opened, the target holds data, or what was
/// written does not read back the same (then nothing is committed).
pub async fn copy_store(sqlite: &Path, logs: &Path, url: &str) -> Result<CopyReport, CopyError> {
    let source_error = |what: &str| {
        let what = what.to_owned();
        move |source| CopyError::Source { what, source }
    };
    // Opening migrates the source to this binary's schema, which the target's matches.
    drop(
        SqliteStore::open(sqlite)
            .await
            .map_err(source_error(&sqlite.display().to_string()))?,
    );
    let source = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(sqlite).read_only(true))
        .await
        .map_err(|err| CopyError::Source {
            what: sqlite.display().to_string(),
            source: store_error("opening", err),
        })?;
    let logs = Arc::new(
        FileLogStore::open(logs, 1).map_err(|err| CopyError::Source {
            what: logs.display().to_string(),
            source: StoreError::Unavailable {
                reason: err.to_string(),
                cause: None,
            },
        })?,
    );
    let target = PgStore::open(url)
        .await
        .map_err(|source| CopyError::Target { source })?;
    // The copy holds the leadership while it writes: no server leads (and writes) meanwhile,
    // and none can start leading until the copy is over.
    let holder = format!("hodei admin copy-store (pid {})", std::process::id());
    match target
        .try_lead(&holder, "", COPY_LEASE)
        .await
        .map_err(|source| CopyError::Target { source })?
    {
        Lead::Led { epoch } => {
            let pool = target.shared.pool.clone();
            let shown = target.shown_url().to_owned();
            let (renewer, name) = (target.clone(), holder.clone());
            let copied = target
                .spawn(async move {
                    // The lease is renewed while the copy runs, and runs out soon after a
                    // copy that was killed.
                    let renew = async {
                        loop {
                            tokio::time::sleep(COPY_LEASE / 3).await;
                            let _ = renewer.renew(&name, epoch, COPY_LEASE).await;
                        }
                    };
                    let result = tokio::select! {
                        result = copy(&source, &logs, &pool, &shown) => result,
                        () = renew => unreachable!("the renewal loop never ends"),
                    };
                    source.close().await;
                    Ok(result)
                })
                .await
                .map_err(|source| CopyError::Target { source })?;
            let _ = target.resign(&holder, epoch).await;
            copied
        }
        Lead::Held(leader) => Err(CopyError::Target {
            source: StoreError::Unavailable {
                reason: format!(
                    "{} is in use by a Hodei server ({} at {}): stop every server that uses it first",
                    target.shown_url(),
                    leader.holder,
                    leader.address
                ),
                cause: None,
            },
        }),
    }
}

/// The lease of the leadership a copy holds, renewed while it runs.
const COPY_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

async fn copy(
    source: &SqlitePool,
    logs: &Arc<FileLogStore>,
    pool: &sqlx::PgPool,
    shown: &str,
) -> Result<CopyReport, CopyError> {
    let target = |source| CopyError::Target { source };
    let fail = |what: &str| {
        let what = what.to_owned();
        move |err| CopyError::Target {
            source: store_error(&what, err),
        }
    };
    let mut tx = pool.begin().await.map_err(fail("starting the copy"))?;
    check_empty(&mut tx, shown).await?;
    let mut tables = Vec::new();
    for table in TABLES {
        let rows = export(source, table).await?;
        // The target's own instance id gives way to the source's: the copy is the same store.
        if table == "meta" {
            sqlx::query("DELETE FROM meta")
                .execute(&mut *tx)
                .await
                .map_err(fail("copying meta"))?;
        }
        for page in rows.chunks(PAGE) {
            let json = format!("[{}]", page.join(","));
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {table} SELECT * FROM json_populate_recordset(NULL::{table}, $1::json)"
            )))
            .bind(json)
            .execute(&mut *tx)
            .await
            .map_err(fail(&format!("copying {table}")))?;
        }
        let expected = checksum(table, rows.iter().map(String::as_str))?;
        let copied: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT row_to_json(t)::text FROM {table} AS t"
        )))
        .fetch_all(&mut *tx)
        .await
        .map_err(fail(&format!("reading {table} back")))?;
        let actual = checksum(table, copied.iter().map(String::as_str))?;
        if expected != actual {
            return Err(CopyError::Mismatch {
                what: format!("table {table}"),
                detail: format!(
                    "{} rows with checksum {}, {} read back with checksum {}",
                    rows.len(),
                    expected,
                    copied.len(),
                    actual
                ),
            });
        }
        tables.push((table.to_owned(), rows.len() as u64, expected));
    }
    for table in IDENTITIES {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 1), \
             max(id) IS NOT NULL) FROM {table}"
        )))
        .execute(&mut *tx)
        .await
        .map_err(fail(&format!("continuing the ids of {table}")))?;
    }
    let (count, bytes, logs_checksum) = copy_logs(logs, &mut tx).await?;
    tx.commit()
        .await
        .map_err(|err| target(store_error("committing the copy", err)))?;
    Ok(CopyReport {
        tables,
        logs: count,
        log_bytes: bytes,
        logs_checksum,
    })
}

/// Refuses a target that holds anything but what its migration made.
async fn check_empty(conn: &mut PgConnection, shown: &str) -> Result<(), CopyError> {
    for table in TABLES
        .iter()
        .filter(|t| **t != "meta")
        .chain(&["log_chunks"])
    {
        let any: bool = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM {table})"
        )))
        .fetch_one(&mut *conn)
        .await
        .map_err(|err| CopyError::Target {
            source: store_error("looking into the target", err),
        })?;
        if any {
            return Err(CopyError::NotEmpty {
                url: shown.to_owned(),
                what: format!("table {table} has rows"),
            });
        }
    }
    Ok(())
}

/// Every row of a SQLite table as a JSON object, blobs as `\x…` hex (PostgreSQL's `bytea`).
async fn export(source: &SqlitePool, table: &str) -> Result<Vec<String>, CopyError> {
    let fail = |err| CopyError::Source {
        what: format!("table {table}"),
        source: store_error("reading", err),
    };
    let columns: Vec<(String, String)> =
        sqlx::query_as("SELECT name, upper(type) FROM pragma_table_info(?1) ORDER BY cid")
            .bind(table)
            .fetch_all(source)
            .await
            .map_err(fail)?;
    if columns.is_empty() {
        return Ok(Vec::new());
    }
    let fields: Vec<String> = columns
        .iter()
        .map(|(name, kind)| match kind.as_str() {
            "BLOB" => format!("'{name}', '\\x' || lower(hex({name}))"),
            _ => format!("'{name}', {name}"),
        })
        .collect();
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT json_object({}) FROM {table}",
        fields.join(", ")
    )))
    .fetch_all(source)
    .await
    .map_err(fail)
}

/// The SHA-256 of a table's rows as canonical JSON: keys sorted, booleans as 0 and 1, rows
/// sorted.
fn checksum<'a>(table: &str, rows: impl Iterator<Item = &'a str>) -> Result<String, CopyError> {
    let mut canonical = Vec::new();
    for row in rows {
        let value: Value = serde_json::from_str(row).map_err(|err| CopyError::Mismatch {
            what: format!("table {table}"),
            detail: format!("a row is not JSON: {err}"),
        })?;
        canonical.push(canonical_json(value).to_string());
    }
    canonical.sort_unstable();
    let mut hash = Sha256::new();
    for row in &canonical {
        hash.update(row.as_bytes());
        hash.update(b"\n");
    }
    Ok(hex(&hash.finalize()))
}

fn canonical_json(value: Value) -> Value {
    match value {
        Value::Bool(b) => Value::from(i64::from(b)),
        Value::Object(map) => {
            let sorted: BTreeMap<String, Value> = map
                .into_iter()
                .map(|(k, v)| (k, canonical_json(v)))
                .collect();
            Value::Object(sorted.into_iter().collect())
        }
        other => other,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies every log of the directory into `log_chunks`, and checks each one read back.
async fn copy_logs(
    logs: &Arc<FileLogStore>,
    tx: &mut PgConnection,
) -> Result<(u64, u64, String), CopyError> {
    let jobs = logs.jobs().map_err(|err| CopyError::Source {
        what: logs.dir().display().to_string(),
        source: StoreError::Unavailable {
            reason: format!("cannot list the logs: {err}"),
            cause: None,
        },
    })?;
    let fail = |what: String| {
        move |err| CopyError::Target {
            source: store_error(&what, err),
        }
    };
    let (mut count, mut total) = (0, 0);
    let mut all = Sha256::new();
    for job in jobs {
        let bytes = logs
            .read(job, 0, None)
            .await
            .map_err(|err| CopyError::Source {
                what: format!("the log of {job}"),
                source: StoreError::Unavailable {
                    reason: err.to_string(),
                    cause: None,
                },
            })?;
        if bytes.is_empty() {
            continue;
        }
        let key = super::error::id_of(job.0).map_err(|source| CopyError::Target { source })?;
        for (i, chunk) in bytes.chunks(CHUNK).enumerate() {
            sqlx::query("INSERT INTO log_chunks (job_id, start, bytes) VALUES ($1, $2, $3)")
                .bind(key)
                .bind((i * CHUNK) as i64)
                .bind(chunk)
                .execute(&mut *tx)
                .await
                .map_err(fail(format!("copying the log of {job}")))?;
        }
        let back: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT string_agg(bytes, ''::bytea ORDER BY start) FROM log_chunks WHERE job_id = $1",
        )
        .bind(key)
        .fetch_one(&mut *tx)
        .await
        .map_err(fail(format!("reading the log of {job} back")))?;
        let (expected, actual) = (
            Sha256::digest(&bytes),
            Sha256::digest(back.unwrap_or_default()),
        );
        if expected != actual {
            return Err(CopyError::Mismatch {
                what: format!("the log of {job}"),
                detail: format!("SHA-256 {} copied as {}", hex(&expected), hex(&actual)),
            });
        }
        all.update(format!("{job} {} {}\n", bytes.len(), hex(&expected)).as_bytes());
        count += 1;
        total += bytes.len() as u64;
    }
    Ok((count, total, hex(&all.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_do_not_depend_on_key_order_row_order_or_boolean_spelling() {
        let sqlite = [
            "{\"a\":1,\"b\":\"x\",\"c\":1}",
            "{\"a\":2,\"b\":null,\"c\":0}",
        ];
        let postgres = [
            "{\"c\":false,\"a\":2,\"b\":null}",
            "{\"b\":\"x\",\"a\":1,\"c\":true}",
        ];
        assert_eq!(
            checksum("t", sqlite.into_iter()).unwrap(),
            checksum("t", postgres.into_iter()).unwrap()
        );
        let other = [
            "{\"a\":1,\"b\":\"y\",\"c\":1}",
            "{\"a\":2,\"b\":null,\"c\":0}",
        ];
        assert_ne!(
            checksum("t", sqlite.into_iter()).unwrap(),
            checksum("t", other.into_iter()).unwrap()
        );
    }
}
