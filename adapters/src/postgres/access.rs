//! The SQL of who may do what and what starts runs: API tokens, sealed secrets, repositories
//! and their webhook deliveries, schedule ticks, and agents (registration tokens, agents,
//! leases and fenced reports). Each function runs on the caller's transaction.

use hodei_domain::ids::{JobId, RunId, Timestamp};
use hodei_domain::ports::{
    AgentRecord, AgentTokenRecord, Claim, Fenced, Lease, NewAgent, NewAgentToken, NewToken,
    Registration, RepositoryRecord, SecretInfo, SecretScope, StoreError, TokenRecord,
};
use hodei_domain::state::{Attempt, DomainEvent};
use sqlx::PgConnection;

use super::error::{id_of, store_error};
use super::queries::append_events;
use crate::decode::{
    AgentRow, AgentTokenRow, LeaseRow, RepoRow, SecretRow, TokenRow, agent_record,
    agent_token_record, labels_json, labels_of, lease_record, repository_record, secret_info,
    token_record,
};
use crate::secrets::SealedSecret;
use crate::sqlite::error::stored_id;

// --- API tokens ---

const SELECT_TOKENS: &str = "SELECT id, name, role, digest, created, revoked FROM tokens ";

pub(super) async fn create_token(
    conn: &mut PgConnection,
    token: &NewToken,
) -> Result<TokenRecord, StoreError> {
    let what = "creating a token";
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO tokens (name, role, digest, created) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (digest) DO NOTHING RETURNING id",
    )
    .bind(&token.name)
    .bind(token.role.name())
    .bind(&token.digest[..])
    .bind(token.at.0)
    .fetch_optional(conn)
    .await
    .map_err(|err| store_error(what, err))?;
    let id = id.ok_or_else(|| StoreError::Conflict {
        what: "a token with this secret".into(),
    })?;
    Ok(TokenRecord {
        id: stored_id("token id", id)?,
        name: token.name.clone(),
        role: token.role,
        digest: token.digest,
        created: token.at,
        revoked: None,
    })
}

pub(super) async fn revoke_token(
    conn: &mut PgConnection,
    id: u64,
    at: Timestamp,
) -> Result<bool, StoreError> {
    let Ok(key) = i64::try_from(id) else {
        return Ok(false);
    };
    let done = sqlx::query("UPDATE tokens SET revoked = $2 WHERE id = $1 AND revoked IS NULL")
        .bind(key)
        .bind(at.0)
        .execute(conn)
        .await
        .map_err(|err| store_error(&format!("revoking token {id}"), err))?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn token_by_digest(
    conn: &mut PgConnection,
    digest: &[u8; 32],
) -> Result<Option<TokenRecord>, StoreError> {
    let row: Option<TokenRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_TOKENS} WHERE digest = $1"
    )))
    .bind(&digest[..])
    .fetch_optional(conn)
    .await
    .map_err(|err| store_error("looking up a token", err))?;
    row.map(token_record).transpose()
}

pub(super) async fn tokens(conn: &mut PgConnection) -> Result<Vec<TokenRecord>, StoreError> {
    let rows: Vec<TokenRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_TOKENS} WHERE revoked IS NULL ORDER BY id"
    )))
    .fetch_all(conn)
    .await
    .map_err(|err| store_error("listing tokens", err))?;
    rows.into_iter().map(token_record).collect()
}

pub(super) async fn any_token(conn: &mut PgConnection) -> Result<bool, StoreError> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tokens)")
        .fetch_one(conn)
        .await
        .map_err(|err| store_error("counting tokens", err))
}

// --- Sealed secrets ---

pub(super) async fn put_secret(
    conn: &mut PgConnection,
    secret: &SealedSecret,
) -> Result<(SecretInfo, bool), StoreError> {
    let what = "storing a secret";
    // `xmax = 0` only for a row this statement inserted; an update keeps the creation time.
    let (created, inserted): (i64, bool) = sqlx::query_as(
        "INSERT INTO secrets (scope, owner, name, nonce, sealed, created, updated) \
         VALUES ($1, $2, $3, $4, $5, $6, $6) \
         ON CONFLICT (scope, owner, name) DO UPDATE SET \
         nonce = excluded.nonce, sealed = excluded.sealed, updated = excluded.updated \
         RETURNING created, (xmax = 0)",
    )
    .bind(secret.scope.kind())
    .bind(secret.scope.owner())
    .bind(&secret.name)
    .bind(&secret.nonce)
    .bind(&secret.sealed)
    .bind(secret.at.0)
    .fetch_one(conn)
    .await
    .map_err(|err| store_error(what, err))?;
    let info = SecretInfo {
        scope: secret.scope.clone(),
        name: secret.name.clone(),
        created: Timestamp(created),
        updated: secret.at,
    };
    Ok((info, inserted))
}

pub(super) async fn delete_secret(
    conn: &mut PgConnection,
    scope: &SecretScope,
    name: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM secrets WHERE scope = $1 AND owner = $2 AND name = $3")
        .bind(scope.kind())
        .bind(scope.owner())
        .bind(name)
        .execute(conn)
        .await
        .map_err(|err| store_error("deleting a secret", err))?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn sealed(
    conn: &mut PgConnection,
    scope: &SecretScope,
    name: &str,
) -> Result<Option<(Vec<u8>, Vec<u8>)>, StoreError> {
    sqlx::query_as(
        "SELECT nonce, sealed FROM secrets WHERE scope = $1 AND owner = $2 AND name = $3",
    )
    .bind(scope.kind())
    .bind(scope.owner())
    .bind(name)
    .fetch_optional(conn)
    .await
    .map_err(|err| store_error("reading a secret", err))
}

pub(super) async fn secrets(
    conn: &mut PgConnection,
    scope: Option<&SecretScope>,
) -> Result<Vec<SecretInfo>, StoreError> {
    let rows: Vec<SecretRow> = sqlx::query_as(
        "SELECT scope, owner, name, created, updated FROM secrets \
         WHERE $1::text IS NULL OR (scope = $1 AND owner = $2) ORDER BY scope, owner, name",
    )
    .bind(scope.map(SecretScope::kind))
    .bind(scope.map(SecretScope::owner))
    .fetch_all(conn)
    .await
    .map_err(|err| store_error("listing secrets", err))?;
    rows.into_iter().map(secret_info).collect()
}

// --- Repositories, deliveries, schedule ticks ---

const SELECT_REPOSITORIES: &str = "SELECT name, forge, clone_url, pipeline_path, credentials, \
    webhook_secret, status_token, created, status_api FROM repositories ";

pub(super) async fn put_repository(
    conn: &mut PgConnection,
    repo: &RepositoryRecord,
) -> Result<bool, StoreError> {
    let inserted: bool = sqlx::query_scalar(
        "INSERT INTO repositories (name, forge, clone_url, pipeline_path, credentials, \
             webhook_secret, status_token, created, status_api) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (name) DO UPDATE SET \
             forge = excluded.forge, clone_url = excluded.clone_url, \
             pipeline_path = excluded.pipeline_path, credentials = excluded.credentials, \
             webhook_secret = excluded.webhook_secret, status_token = excluded.status_token, \
             status_api = excluded.status_api \
         RETURNING (xmax = 0)",
    )
    .bind(&repo.name)
    .bind(repo.forge.name())
    .bind(&repo.clone_url)
    .bind(&repo.pipeline_path)
    .bind(&repo.credentials)
    .bind(&repo.webhook_secret)
    .bind(&repo.status_token)
    .bind(repo.created.0)
    .bind(&repo.status_api)
    .fetch_one(conn)
    .await
    .map_err(|err| store_error("registering a repository", err))?;
    Ok(inserted)
}

pub(super) async fn delete_repository(
    conn: &mut PgConnection,
    name: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM repositories WHERE name = $1")
        .bind(name)
        .execute(conn)
        .await
        .map_err(|err| store_error("removing a repository", err))?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn claim_delivery(
    conn: &mut PgConnection,
    repo: &str,
    id: &str,
    at: Timestamp,
) -> Result<Claim, StoreError> {
    let what = "recording a delivery";
    let inserted = sqlx::query(
        "INSERT INTO deliveries (repository, id, received) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(repo)
    .bind(id)
    .bind(at.0)
    .execute(&mut *conn)
    .await
    .map_err(|err| store_error(what, err))?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::New);
    }
    let run: Option<Option<i64>> =
        sqlx::query_scalar("SELECT run_id FROM deliveries WHERE repository = $1 AND id = $2")
            .bind(repo)
            .bind(id)
            .fetch_optional(conn)
            .await
            .map_err(|err| store_error(what, err))?;
    let run = run
        .flatten()
        .map(|id| stored_id("run id", id).map(RunId))
        .transpose()?;
    Ok(Claim::Seen { run })
}

pub(super) async fn delivery_started(
    conn: &mut PgConnection,
    repo: &str,
    id: &str,
    run: RunId,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE deliveries SET run_id = $3 WHERE repository = $1 AND id = $2")
        .bind(repo)
        .bind(id)
        .bind(id_of(run.0)?)
        .execute(conn)
        .await
        .map_err(|err| store_error("recording a delivery's run", err))?;
    Ok(())
}

pub(super) async fn repository(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<RepositoryRecord>, StoreError> {
    let row: Option<RepoRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_REPOSITORIES} WHERE name = $1"
    )))
    .bind(name)
    .fetch_optional(conn)
    .await
    .map_err(|err| store_error("reading a repository", err))?;
    row.map(repository_record).transpose()
}

pub(super) async fn repositories(
    conn: &mut PgConnection,
) -> Result<Vec<RepositoryRecord>, StoreError> {
    let rows: Vec<RepoRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_REPOSITORIES} ORDER BY name"
    )))
    .fetch_all(conn)
    .await
    .map_err(|err| store_error("listing repositories", err))?;
    rows.into_iter().map(repository_record).collect()
}

pub(super) async fn claim_tick(
    conn: &mut PgConnection,
    pipeline: &str,
    entry: &str,
    tick: Timestamp,
    at: Timestamp,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO schedule_ticks (pipeline, entry, tick, claimed) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(pipeline)
    .bind(entry)
    .bind(tick.0)
    .bind(at.0)
    .execute(conn)
    .await
    .map_err(|err| store_error("claiming a schedule's tick", err))?;
    Ok(inserted.rows_affected() == 1)
}

pub(super) async fn last_tick(
    conn: &mut PgConnection,
    pipeline: &str,
    entry: &str,
) -> Result<Option<Timestamp>, StoreError> {
    let tick: Option<i64> = sqlx::query_scalar(
        "SELECT max(tick) FROM schedule_ticks WHERE pipeline = $1 AND entry = $2",
    )
    .bind(pipeline)
    .bind(entry)
    .fetch_one(conn)
    .await
    .map_err(|err| store_error("reading a schedule's last tick", err))?;
    Ok(tick.map(Timestamp))
}

// --- Agents ---

pub(super) async fn create_agent_token(
    conn: &mut PgConnection,
    token: &NewAgentToken,
) -> Result<AgentTokenRecord, StoreError> {
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO agent_tokens (name, digest, labels, created, expires) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (digest) DO NOTHING RETURNING id",
    )
    .bind(&token.name)
    .bind(&token.digest[..])
    .bind(token.labels.as_deref().map(labels_json))
    .bind(token.at.0)
    .bind(token.expires.map(|t| t.0))
    .fetch_optional(conn)
    .await
    .map_err(|err| store_error("creating a registration token", err))?;
    let id = id.ok_or_else(|| StoreError::Conflict {
        what: "a registration token with this secret".into(),
    })?;
    Ok(AgentTokenRecord {
        id: stored_id("registration token id", id)?,
        name: token.name.clone(),
        labels: token.labels.clone(),
        created: token.at,
        expires: token.expires,
        revoked: None,
    })
}

pub(super) async fn revoke_agent_token(
    conn: &mut PgConnection,
    id: u64,
    at: Timestamp,
) -> Result<bool, StoreError> {
    let Ok(key) = i64::try_from(id) else {
        return Ok(false);
    };
    let done =
        sqlx::query("UPDATE agent_tokens SET revoked = $2 WHERE id = $1 AND revoked IS NULL")
            .bind(key)
            .bind(at.0)
            .execute(conn)
            .await
            .map_err(|err| store_error("revoking a registration token", err))?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn agent_tokens(
    conn: &mut PgConnection,
) -> Result<Vec<AgentTokenRecord>, StoreError> {
    let rows: Vec<AgentTokenRow> = sqlx::query_as(
        "SELECT id, name, labels, created, expires, revoked FROM agent_tokens \
         WHERE revoked IS NULL ORDER BY id",
    )
    .fetch_all(conn)
    .await
    .map_err(|err| store_error("listing registration tokens", err))?;
    rows.into_iter().map(agent_token_record).collect()
}

pub(super) async fn register_agent(
    conn: &mut PgConnection,
    agent: &NewAgent,
) -> Result<(Registration, Option<AgentRecord>), StoreError> {
    let what = "registering an agent";
    // The token's row is locked until the registration commits: a revocation waits for it.
    let token: Option<(i64, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT id, labels, expires FROM agent_tokens WHERE digest = $1 AND revoked IS NULL \
         FOR SHARE",
    )
    .bind(&agent.token[..])
    .fetch_optional(&mut *conn)
    .await
    .map_err(|err| store_error(what, err))?;
    let Some((token, fixed, expires)) = token else {
        return Ok((Registration::UnknownToken, None));
    };
    if expires.is_some_and(|at| at <= agent.at.0) {
        return Ok((Registration::ExpiredToken, None));
    }
    let labels = match &fixed {
        Some(json) => labels_of("a registration token's labels", json)?,
        None => agent.labels.clone(),
    };
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO agents (name, digest, labels, fixed_labels, token, registered) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING RETURNING id",
    )
    .bind(&agent.name)
    .bind(&agent.digest[..])
    .bind(labels_json(&labels))
    .bind(fixed.is_some())
    .bind(token)
    .bind(agent.at.0)
    .fetch_optional(conn)
    .await
    .map_err(|err| store_error(what, err))?;
    let Some(id) = id else {
        return Ok((Registration::NameTaken, None));
    };
    Ok((
        Registration::Registered,
        Some(AgentRecord {
            id: stored_id("agent id", id)?,
            name: agent.name.clone(),
            digest: agent.digest,
            labels,
            fixed_labels: fixed.is_some(),
            registered: agent.at,
        }),
    ))
}

const SELECT_AGENTS: &str =
    "SELECT id, name, digest, labels, fixed_labels, registered FROM agents ";

pub(super) async fn agent_by_digest(
    conn: &mut PgConnection,
    digest: &[u8; 32],
) -> Result<Option<AgentRecord>, StoreError> {
    let row: Option<AgentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_AGENTS} WHERE digest = $1"
    )))
    .bind(&digest[..])
    .fetch_optional(conn)
    .await
    .map_err(|err| store_error("reading an agent", err))?;
    row.map(agent_record).transpose()
}

pub(super) async fn agents(conn: &mut PgConnection) -> Result<Vec<AgentRecord>, StoreError> {
    let rows: Vec<AgentRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT_AGENTS} ORDER BY id")))
            .fetch_all(conn)
            .await
            .map_err(|err| store_error("listing agents", err))?;
    rows.into_iter().map(agent_record).collect()
}

pub(super) async fn delete_agent(conn: &mut PgConnection, name: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM agents WHERE name = $1")
        .bind(name)
        .execute(conn)
        .await
        .map_err(|err| store_error("deleting an agent", err))?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn claim(
    conn: &mut PgConnection,
    job: JobId,
    run: RunId,
    attempt: Attempt,
    agent: &str,
    log_base: u64,
    token: &[u8; 32],
) -> Result<Lease, StoreError> {
    let row: LeaseRow = sqlx::query_as(
        "INSERT INTO leases (job, run, attempt, agent, epoch, next_seq, log_base, ended, token) \
         VALUES ($1, $2, $3, $4, 1, 0, $5, false, $6) \
         ON CONFLICT (job) DO UPDATE SET run = excluded.run, attempt = excluded.attempt, \
         agent = excluded.agent, epoch = leases.epoch + 1, next_seq = 0, \
         log_base = excluded.log_base, ended = false, token = excluded.token \
         RETURNING job, run, attempt, agent, epoch, next_seq, log_base, token",
    )
    .bind(id_of(job.0)?)
    .bind(id_of(run.0)?)
    .bind(i64::from(attempt.get()))
    .bind(agent)
    .bind(id_of(log_base)?)
    .bind(&token[..])
    .fetch_one(conn)
    .await
    .map_err(|err| store_error("claiming a job", err))?;
    lease_record(row)
}

pub(super) async fn leases(conn: &mut PgConnection) -> Result<Vec<Lease>, StoreError> {
    let rows: Vec<LeaseRow> = sqlx::query_as(
        "SELECT job, run, attempt, agent, epoch, next_seq, log_base, token FROM leases \
         WHERE NOT ended ORDER BY job",
    )
    .fetch_all(conn)
    .await
    .map_err(|err| store_error("listing leases", err))?;
    rows.into_iter().map(lease_record).collect()
}

pub(super) async fn report(
    conn: &mut PgConnection,
    job: JobId,
    epoch: u64,
    seq: u64,
    events: &[DomainEvent],
    end: bool,
) -> Result<Fenced, StoreError> {
    let what = "recording an agent's report";
    // The lease's row is locked until the report commits: reports of one job are serialised.
    let lease: Option<(i64, i64, bool)> =
        sqlx::query_as("SELECT epoch, next_seq, ended FROM leases WHERE job = $1 FOR UPDATE")
            .bind(id_of(job.0)?)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|err| store_error(what, err))?;
    let Some((current, next, ended)) = lease else {
        return Ok(Fenced::Stale);
    };
    let (current, next) = (stored_id(what, current)?, stored_id(what, next)?);
    if current != epoch {
        return Ok(Fenced::Stale);
    }
    if seq < next {
        return Ok(Fenced::Duplicate);
    }
    if ended {
        return Ok(Fenced::Stale);
    }
    if seq > next {
        return Ok(Fenced::Gap { expected: next });
    }
    sqlx::query("UPDATE leases SET next_seq = $2, ended = $3 WHERE job = $1")
        .bind(id_of(job.0)?)
        .bind(id_of(seq + 1)?)
        .bind(end)
        .execute(&mut *conn)
        .await
        .map_err(|err| store_error(what, err))?;
    let events: Vec<&DomainEvent> = events.iter().collect();
    append_events(conn, &events).await?;
    Ok(Fenced::Done)
}

pub(super) async fn end_lease(
    conn: &mut PgConnection,
    job: JobId,
    epoch: u64,
    events: &[DomainEvent],
) -> Result<bool, StoreError> {
    let done =
        sqlx::query("UPDATE leases SET ended = true WHERE job = $1 AND epoch = $2 AND NOT ended")
            .bind(id_of(job.0)?)
            .bind(id_of(epoch)?)
            .execute(&mut *conn)
            .await
            .map_err(|err| store_error("ending a lease", err))?;
    let ended = done.rows_affected() == 1;
    if ended {
        let events: Vec<&DomainEvent> = events.iter().collect();
        append_events(conn, &events).await?;
    }
    Ok(ended)
}
