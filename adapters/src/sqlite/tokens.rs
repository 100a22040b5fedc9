//! The SQL of API tokens (`tokens` table, migration 0002): stored by the SHA-256 digest of their
//! secret, never the secret; revoked tokens stay so that an id is never reused.

use hodei_domain::ids::Timestamp;
use hodei_domain::ports::{NewToken, StoreError, TokenRecord};
use sqlx::SqliteConnection;

use super::error::{store_error, stored_id};
use crate::decode::{TokenRow, token_record};

macro_rules! select_tokens {
    ($rest:literal) => {
        concat!(
            "SELECT id, name, role, digest, created, revoked FROM tokens ",
            $rest
        )
    };
}

/// Stores a new token.
///
/// # Errors
/// [`StoreError::Conflict`] if a token with the same digest exists, revoked or not.
pub(super) async fn create_token(
    conn: &mut SqliteConnection,
    token: &NewToken,
) -> Result<TokenRecord, StoreError> {
    let what = "creating a token";
    let taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tokens WHERE digest = ?1)")
        .bind(&token.digest[..])
        .fetch_one(&mut *conn)
        .await
        .map_err(|err| store_error(what, err))?;
    if taken {
        return Err(StoreError::Conflict {
            what: "a token with this secret".into(),
        });
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO tokens (name, role, digest, created) VALUES (?1, ?2, ?3, ?4) RETURNING id",
    )
    .bind(&token.name)
    .bind(token.role.name())
    .bind(&token.digest[..])
    .bind(token.at.0)
    .fetch_one(conn)
    .await
    .map_err(|err| store_error(what, err))?;
    Ok(TokenRecord {
        id: stored_id("token id", id)?,
        name: token.name.clone(),
        role: token.role,
        digest: token.digest,
        created: token.at,
        revoked: None,
    })
}

/// Revokes token `id` at `at`; `false` if it does not exist or was already revoked.
pub(super) async fn revoke_token(
    conn: &mut SqliteConnection,
    id: u64,
    at: Timestamp,
) -> Result<bool, StoreError> {
    let Ok(key) = i64::try_from(id) else {
        return Ok(false);
    };
    let done = sqlx::query("UPDATE tokens SET revoked = ?2 WHERE id = ?1 AND revoked IS NULL")
        .bind(key)
        .bind(at.0)
        .execute(conn)
        .await
        .map_err(|err| store_error(&format!("revoking token {id}"), err))?;
    Ok(done.rows_affected() == 1)
}

/// The token with `digest`, revoked or not.
pub(super) async fn token_by_digest(
    conn: &mut SqliteConnection,
    digest: &[u8; 32],
) -> Result<Option<TokenRecord>, StoreError> {
    let row: Option<TokenRow> = sqlx::query_as(select_tokens!("WHERE digest = ?1"))
        .bind(&digest[..])
        .fetch_optional(conn)
        .await
        .map_err(|err| store_error("looking up a token", err))?;
    row.map(token_record).transpose()
}

/// The tokens not revoked, oldest first.
pub(super) async fn tokens(conn: &mut SqliteConnection) -> Result<Vec<TokenRecord>, StoreError> {
    let rows: Vec<TokenRow> = sqlx::query_as(select_tokens!("WHERE revoked IS NULL ORDER BY id"))
        .fetch_all(conn)
        .await
        .map_err(|err| store_error("listing tokens", err))?;
    rows.into_iter().map(token_record).collect()
}

/// Whether any token was ever created.
pub(super) async fn any_token(conn: &mut SqliteConnection) -> Result<bool, StoreError> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tokens)")
        .fetch_one(conn)
        .await
        .map_err(|err| store_error("counting tokens", err))
}
