//! Opening a PostgreSQL database: the connection URL (and how it is shown: never with its
//! password), the pool, the schema check and the embedded migrations
//! (`adapters/migrations-postgres/`), and the store's instance id.
//!
//! ## Guarantees
//! - A database whose schema is newer than this binary's is refused before anything is written
//!   to it, with both versions in the message.
//! - Each migration runs in its own transaction (PostgreSQL's DDL is transactional), under
//!   sqlx's advisory lock: two servers starting at once migrate once, and a failed migration
//!   leaves the schema as it was.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hodei_domain::ports::{Cause, StoreError};
use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::error::store_error;

/// The schema, embedded in the binary.
pub(super) static MIGRATOR: Migrator = sqlx::migrate!("./migrations-postgres");

/// Connections of the pool: the actors' writes and the API's reads share them.
const CONNECTIONS: u32 = 16;
/// How long a caller waits for a connection, and a connection for the server, before the
/// store answers "unavailable".
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// `url` as it may be shown: its password (in the user part or as `password=`) replaced by
/// `***`.
pub fn redact(url: &str) -> String {
    let mut shown = url.to_owned();
    if let Some(scheme) = shown.find("://") {
        let rest = scheme + 3;
        let authority_end = shown[rest..]
            .find(['/', '?'])
            .map_or(shown.len(), |i| rest + i);
        if let Some(at) = shown[rest..authority_end].rfind('@') {
            let userinfo = &shown[rest..rest + at];
            if let Some(colon) = userinfo.find(':') {
                shown.replace_range(rest + colon + 1..rest + at, "***");
            }
        }
    }
    if let Some(query) = shown.find('?') {
        let (head, params) = shown.split_at(query + 1);
        let params: Vec<String> = params
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => param.to_owned(),
            })
            .collect();
        shown = format!("{head}{}", params.join("&"));
    }
    shown
}

/// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// Connects to the database at `url`, checks its schema and migrates it to the latest.
pub(super) async fn open(url: &str) -> Result<PgPool, StoreError> {
    let shown = redact(url);
    let options = PgConnectOptions::from_str(url).map_err(|err| StoreError::Unavailable {
        reason: format!("{shown} is not a PostgreSQL URL this Hodei can use: {err}"),
        cause: None,
    })?;
    let options = options.application_name("hodei");
    let pool = PgPoolOptions::new()
        .max_connections(CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|err| connect_error(&shown, err))?;
    check_version(&pool, &shown).await?;
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|err| migrate_error(&shown, err))?;
    Ok(pool)
}

/// Why the database at `shown` cannot be reached or used, said plainly.
fn connect_error(shown: &str, err: sqlx::Error) -> StoreError {
    let reason = match &err {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("28P01") | Some("28000") => format!(
                "cannot connect to {shown}: the server refused the credentials ({}): check the \
                 user and password in the URL",
                db.message()
            ),
            Some("3D000") => format!(
                "cannot connect to {shown}: {} (create it first: createdb)",
                db.message()
            ),
            _ => format!("cannot connect to {shown}: {}", db.message()),
        },
        sqlx::Error::Io(io) => format!(
            "cannot connect to {shown}: {io} (is PostgreSQL running there, and does it accept \
             TCP connections?)"
        ),
        sqlx::Error::PoolTimedOut => format!(
            "cannot connect to {shown}: no answer within {} s",
            ACQUIRE_TIMEOUT.as_secs()
        ),
        other => format!("cannot connect to {shown}: {other}"),
    };
    StoreError::Unavailable {
        reason,
        cause: Cause::of(err),
    }
}

/// The latest migration this binary knows.
pub(super) fn latest_known() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Refuses a database migrated by a newer Hodei: its schema may mean things this binary does
/// not know, and migrating "down" is not a thing.
async fn check_version(pool: &PgPool, shown: &str) -> Result<(), StoreError> {
    let what = format!("reading the schema version of {shown}");
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
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
    newer_schema(shown, applied, latest_known())
}

/// `Err` when the schema version `applied` is past `known`.
pub(crate) fn newer_schema(
    shown: &str,
    applied: Option<i64>,
    known: i64,
) -> Result<(), StoreError> {
    match applied {
        Some(applied) if applied > known => Err(StoreError::Corrupt {
            what: shown.to_owned(),
            reason: format!(
                "its schema is at migration {applied}, newer than this Hodei knows (up to \
                 {known}): it was used by a newer Hodei; run that version or a later one \
                 (nothing was changed)"
            ),
            cause: None,
        }),
        _ => Ok(()),
    }
}

fn migrate_error(shown: &str, err: MigrateError) -> StoreError {
    let what = format!("migrating {shown}");
    match err {
        MigrateError::Execute(err) | MigrateError::ExecuteMigration(err, _) => {
            store_error(&what, err)
        }
        other => StoreError::Corrupt {
            what,
            reason: other.to_string(),
            cause: None,
        },
    }
}

/// The database's instance id: recorded once, by the first Hodei that opens it, and the same
/// for every later one.
pub(super) async fn instance_id(pool: &PgPool) -> Result<String, StoreError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|err| StoreError::Unavailable {
        reason: format!("no randomness for the instance id: {err}"),
        cause: None,
    })?;
    let candidate = format!("{:x}-{:016x}", now.as_millis(), u64::from_le_bytes(random));
    let what = "the instance id";
    sqlx::query(
        "INSERT INTO meta (key, value) VALUES ('instance_id', $1), ('created', $2) \
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        let table = [
            (
                "postgres://hodei:s3cret@db:5432/hodei",
                "postgres://hodei:***@db:5432/hodei",
            ),
            ("postgres://hodei@db/hodei", "postgres://hodei@db/hodei"),
            (
                "postgresql://u:p%40ss@h/d?sslmode=require&password=x",
                "postgresql://u:***@h/d?sslmode=require&password=***",
            ),
            ("postgres://db/hodei?user=u", "postgres://db/hodei?user=u"),
        ];
        for (url, shown) in table {
            assert_eq!(redact(url), shown, "{url}");
        }
        assert!(is_postgres_url("postgres://x/y"));
        assert!(is_postgres_url("PostgreSQL://x/y"));
        assert!(!is_postgres_url("sqlite:hodei.db"));
    }

    #[test]
    fn a_newer_schema_is_refused_with_both_versions() {
        assert!(newer_schema("db", None, 1).is_ok());
        assert!(newer_schema("db", Some(1), 1).is_ok());
        let err = newer_schema("postgres://u:***@h/d", Some(7), 1).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("postgres://u:***@h/d") && text.contains("migration 7"),
            "{text}"
        );
        assert!(text.contains("up to 1"), "{text}");
    }
}
