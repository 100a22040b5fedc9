//! The SQL of stored secrets (`secrets` table, migration 0004): sealed values only. Sealing and
//! opening are the business of [`crate::secrets`]; this file stores and finds the bytes.

use hodei_domain::ids::Timestamp;
use hodei_domain::ports::{SecretInfo, SecretScope, StoreError};
use sqlx::SqliteConnection;

use super::error::store_error;
use crate::decode::{SecretRow, secret_info};
use crate::secrets::SealedSecret;

/// Stores a sealed value, replacing the one of an existing secret (which keeps its creation
/// time); answers the secret and whether it is new.
pub(super) async fn put_secret(
    conn: &mut SqliteConnection,
    secret: &SealedSecret,
) -> Result<(SecretInfo, bool), StoreError> {
    let what = "storing a secret";
    let created: Option<i64> = sqlx::query_scalar(
        "SELECT created FROM secrets WHERE scope = ?1 AND owner = ?2 AND name = ?3",
    )
    .bind(secret.scope.kind())
    .bind(secret.scope.owner())
    .bind(&secret.name)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|err| store_error(what, err))?;
    sqlx::query(
        "INSERT INTO secrets (scope, owner, name, nonce, sealed, created, updated) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) \
         ON CONFLICT (scope, owner, name) DO UPDATE SET \
         nonce = excluded.nonce, sealed = excluded.sealed, updated = excluded.updated",
    )
    .bind(secret.scope.kind())
    .bind(secret.scope.owner())
    .bind(&secret.name)
    .bind(&secret.nonce)
    .bind(&secret.sealed)
    .bind(secret.at.0)
    .execute(conn)
    .await
    .map_err(|err| store_error(what, err))?;
    let info = SecretInfo {
        scope: secret.scope.clone(),
        name: secret.name.clone(),
        created: Timestamp(created.unwrap_or(secret.at.0)),
        updated: secret.at,
    };
    Ok((info, created.is_none()))
}

/// Deletes a secret; `false` if there was none.
pub(super) async fn delete_secret(
    conn: &mut SqliteConnection,
    scope: &SecretScope,
    name: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM secrets WHERE scope = ?1 AND owner = ?2 AND name = ?3")
        .bind(scope.kind())
        .bind(scope.owner())
        .bind(name)
        .execute(conn)
        .await
        .map_err(|err| store_error("deleting a secret", err))?;
    Ok(done.rows_affected() == 1)
}

/// The nonce and sealed value of secret `name` of `scope`.
pub(super) async fn sealed(
    conn: &mut SqliteConnection,
    scope: &SecretScope,
    name: &str,
) -> Result<Option<(Vec<u8>, Vec<u8>)>, StoreError> {
    sqlx::query_as(
        "SELECT nonce, sealed FROM secrets WHERE scope = ?1 AND owner = ?2 AND name = ?3",
    )
    .bind(scope.kind())
    .bind(scope.owner())
    .bind(name)
    .fetch_optional(conn)
    .await
    .map_err(|err| store_error("reading a secret", err))
}

/// The secrets of `scope`, or of every scope, by scope, owner and name: never their values.
pub(super) async fn secrets(
    conn: &mut SqliteConnection,
    scope: Option<&SecretScope>,
) -> Result<Vec<SecretInfo>, StoreError> {
    let what = "listing secrets";
    let rows: Vec<SecretRow> = match scope {
        Some(scope) => {
            sqlx::query_as(
                "SELECT scope, owner, name, created, updated FROM secrets \
             WHERE scope = ?1 AND owner = ?2 ORDER BY name",
            )
            .bind(scope.kind())
            .bind(scope.owner())
            .fetch_all(conn)
            .await
        }
        None => sqlx::query_as(
            "SELECT scope, owner, name, created, updated FROM secrets ORDER BY scope, owner, name",
        )
        .fetch_all(conn)
        .await,
    }
    .map_err(|err| store_error(what, err))?;
    rows.into_iter().map(secret_info).collect()
}
