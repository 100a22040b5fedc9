//! The SQL of agents (migration 0007): registration tokens, agents, and the leases of the job
//! attempts they hold, with the fenced append of what an agent reports.

use hodei_domain::ids::{JobId, RunId, Timestamp};
use hodei_domain::ports::{
    AgentRecord, AgentTokenRecord, Fenced, Lease, NewAgent, NewAgentToken, Registration, StoreError,
};
use hodei_domain::state::{Attempt, DomainEvent};
use sqlx::SqliteConnection;

use super::error::{corrupt, store_error, stored_id};
use super::queries;
use crate::decode::{
    AgentRow, AgentTokenRow, LeaseRow, agent_record, agent_token_record, labels_json, labels_of,
    lease_record,
};

/// A write about agents, through the store's writer.
#[derive(Debug, Clone)]
pub enum AgentWrite {
    CreateToken(NewAgentToken),
    RevokeToken(u64, Timestamp),
    Register(NewAgent),
    Delete(String),
    Claim {
        job: JobId,
        run: RunId,
        attempt: Attempt,
        agent: String,
        log_base: u64,
        token: [u8; 32],
    },
    Report {
        job: JobId,
        epoch: u64,
        seq: u64,
        events: Vec<DomainEvent>,
        end: bool,
    },
    EndLease {
        job: JobId,
        epoch: u64,
        events: Vec<DomainEvent>,
    },
}

/// What an [`AgentWrite`] answers.
#[derive(Debug, Clone)]
pub enum AgentWritten {
    Token(AgentTokenRecord),
    /// Revoke, Delete, EndLease: whether there was something to change.
    Done(bool),
    Registered(Registration, Option<AgentRecord>),
    Claimed(Lease),
    Reported(Fenced),
}

pub(super) async fn write(
    conn: &mut SqliteConnection,
    write: &AgentWrite,
) -> Result<AgentWritten, StoreError> {
    match write {
        AgentWrite::CreateToken(token) => create_token(conn, token).await.map(AgentWritten::Token),
        AgentWrite::RevokeToken(id, at) => {
            let Ok(key) = i64::try_from(*id) else {
                return Ok(AgentWritten::Done(false));
            };
            let done = sqlx::query(
                "UPDATE agent_tokens SET revoked = ?2 WHERE id = ?1 AND revoked IS NULL",
            )
            .bind(key)
            .bind(at.0)
            .execute(conn)
            .await
            .map_err(|err| store_error("revoking a registration token", err))?;
            Ok(AgentWritten::Done(done.rows_affected() == 1))
        }
        AgentWrite::Register(agent) => register(conn, agent)
            .await
            .map(|(r, a)| AgentWritten::Registered(r, a)),
        AgentWrite::Delete(name) => {
            let done = sqlx::query("DELETE FROM agents WHERE name = ?1")
                .bind(name)
                .execute(conn)
                .await
                .map_err(|err| store_error("deleting an agent", err))?;
            Ok(AgentWritten::Done(done.rows_affected() == 1))
        }
        AgentWrite::Claim {
            job,
            run,
            attempt,
            agent,
            log_base,
            token,
        } => claim(conn, *job, *run, *attempt, agent, *log_base, token)
            .await
            .map(AgentWritten::Claimed),
        AgentWrite::Report {
            job,
            epoch,
            seq,
            events,
            end,
        } => report(conn, *job, *epoch, *seq, events, *end)
            .await
            .map(AgentWritten::Reported),
        AgentWrite::EndLease { job, epoch, events } => {
            let what = "ending a lease";
            let done = sqlx::query(
                "UPDATE leases SET ended = 1 WHERE job = ?1 AND epoch = ?2 AND ended = 0",
            )
            .bind(id_of(job.0)?)
            .bind(id_of(*epoch)?)
            .execute(&mut *conn)
            .await
            .map_err(|err| store_error(what, err))?;
            let ended = done.rows_affected() == 1;
            if ended && !events.is_empty() {
                let events: Vec<&DomainEvent> = events.iter().collect();
                queries::append_events(conn, &events).await?;
            }
            Ok(AgentWritten::Done(ended))
        }
    }
}

fn id_of(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| corrupt("an id to store", format!("{value} is too large")))
}

async fn create_token(
    conn: &mut SqliteConnection,
    token: &NewAgentToken,
) -> Result<AgentTokenRecord, StoreError> {
    let what = "creating a registration token";
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO agent_tokens (name, digest, labels, created, expires) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (digest) DO NOTHING RETURNING id",
    )
    .bind(&token.name)
    .bind(&token.digest[..])
    .bind(token.labels.as_deref().map(labels_json))
    .bind(token.at.0)
    .bind(token.expires.map(|t| t.0))
    .fetch_optional(conn)
    .await
    .map_err(|err| store_error(what, err))?;
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

pub(super) async fn agent_tokens(
    conn: &mut SqliteConnection,
) -> Result<Vec<AgentTokenRecord>, StoreError> {
    let rows: Vec<AgentTokenRow> = sqlx::query_as(
        "SELECT id, name, labels, created, expires, revoked FROM agent_tokens WHERE revoked IS NULL ORDER BY id",
    )
    .fetch_all(conn)
    .await
    .map_err(|err| store_error("listing registration tokens", err))?;
    rows.into_iter().map(agent_token_record).collect()
}

async fn register(
    conn: &mut SqliteConnection,
    agent: &NewAgent,
) -> Result<(Registration, Option<AgentRecord>), StoreError> {
    let what = "registering an agent";
    let token: Option<(i64, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT id, labels, expires FROM agent_tokens WHERE digest = ?1 AND revoked IS NULL",
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
    let taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM agents WHERE name = ?1)")
        .bind(&agent.name)
        .fetch_one(&mut *conn)
        .await
        .map_err(|err| store_error(what, err))?;
    if taken {
        return Ok((Registration::NameTaken, None));
    }
    let labels = match &fixed {
        Some(json) => labels_of("a registration token's labels", json)?,
        None => agent.labels.clone(),
    };
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO agents (name, digest, labels, fixed_labels, token, registered) VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
    )
    .bind(&agent.name)
    .bind(&agent.digest[..])
    .bind(labels_json(&labels))
    .bind(fixed.is_some())
    .bind(token)
    .bind(agent.at.0)
    .fetch_one(conn)
    .await
    .map_err(|err| store_error(what, err))?;
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
    conn: &mut SqliteConnection,
    digest: &[u8; 32],
) -> Result<Option<AgentRecord>, StoreError> {
    let row: Option<AgentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_AGENTS} WHERE digest = ?1"
    )))
    .bind(&digest[..])
    .fetch_optional(conn)
    .await
    .map_err(|err| store_error("reading an agent", err))?;
    row.map(agent_record).transpose()
}

pub(super) async fn agents(conn: &mut SqliteConnection) -> Result<Vec<AgentRecord>, StoreError> {
    let rows: Vec<AgentRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT_AGENTS} ORDER BY id")))
            .fetch_all(conn)
            .await
            .map_err(|err| store_error("listing agents", err))?;
    rows.into_iter().map(agent_record).collect()
}

async fn claim(
    conn: &mut SqliteConnection,
    job: JobId,
    run: RunId,
    attempt: Attempt,
    agent: &str,
    log_base: u64,
    token: &[u8; 32],
) -> Result<Lease, StoreError> {
    let row: LeaseRow = sqlx::query_as(
        "INSERT INTO leases (job, run, attempt, agent, epoch, next_seq, log_base, ended, token) \
         VALUES (?1, ?2, ?3, ?4, 1, 0, ?5, 0, ?6) \
         ON CONFLICT (job) DO UPDATE SET run = excluded.run, attempt = excluded.attempt, \
         agent = excluded.agent, epoch = leases.epoch + 1, next_seq = 0, \
         log_base = excluded.log_base, ended = 0, token = excluded.token \
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

pub(super) async fn leases(conn: &mut SqliteConnection) -> Result<Vec<Lease>, StoreError> {
    let rows: Vec<LeaseRow> = sqlx::query_as(
        "SELECT job, run, attempt, agent, epoch, next_seq, log_base, token FROM leases WHERE ended = 0 ORDER BY job",
    )
    .fetch_all(conn)
    .await
    .map_err(|err| store_error("listing leases", err))?;
    rows.into_iter().map(lease_record).collect()
}

async fn report(
    conn: &mut SqliteConnection,
    job: JobId,
    epoch: u64,
    seq: u64,
    events: &[DomainEvent],
    end: bool,
) -> Result<Fenced, StoreError> {
    let what = "recording an agent's report";
    let lease: Option<(i64, i64, bool)> =
        sqlx::query_as("SELECT epoch, next_seq, ended FROM leases WHERE job = ?1")
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
    sqlx::query("UPDATE leases SET next_seq = ?2, ended = ?3 WHERE job = ?1")
        .bind(id_of(job.0)?)
        .bind(id_of(seq + 1)?)
        .bind(end)
        .execute(&mut *conn)
        .await
        .map_err(|err| store_error(what, err))?;
    if !events.is_empty() {
        let events: Vec<&DomainEvent> = events.iter().collect();
        queries::append_events(conn, &events).await?;
    }
    Ok(Fenced::Done)
}
