//! Agents: registration tokens and registered agents (admin), and the agent protocol — the
//! plain, repeatable HTTP calls with which an agent registers, takes jobs, keeps its leases,
//! and reports its jobs' transitions and output. See `docs/agents.md`.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use hodei_actors::agents::{
    AgentBeat, AgentDesk, AgentLog, AgentReport, AgentSeen, Beat, CloseDoorbell, HandBack,
    JobToken, Leaving, LogSeal, OpenDoorbell, TryClaim, Work,
};
use hodei_domain::ids::{JobId, Timestamp};
use hodei_domain::model::{Label, Role};
use hodei_domain::ports::{AgentRecord, AgentStore, Fenced, NewAgent, NewAgentToken, Registration};
use hodei_domain::state::DomainEvent;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::{Caller, digest, generate, same_digest};
use crate::error::{ApiError, Problem};
use crate::request;
use crate::time::Time;

/// The largest log append an agent may send at once.
pub const MAX_LOG_APPEND: usize = 4 * 1024 * 1024;
/// The longest an agent's poll waits for work.
const MAX_POLL_WAIT: Duration = Duration::from_secs(30);
/// The version of the agent protocol this server speaks.
pub const PROTOCOL: u32 = 1;

pub(crate) fn agents(
    state: &ApiState,
) -> Result<(&Arc<dyn AgentStore>, &actix::Addr<AgentDesk>), ApiError> {
    match (&state.agents, &state.tree.desk) {
        (Some(store), Some(desk)) => Ok((store, desk)),
        _ => Err(ApiError::NotFound {
            what: "agents: this server takes none".into(),
        }),
    }
}

// ---- Admin ------------------------------------------------------------------------------------

/// A registration token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentTokenRequest {
    /// What it is for, e.g. `arm-builders`.
    pub name: String,
    /// The labels of every agent it registers, whatever the agent asks.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// Seconds until it registers no one; none: never expires.
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// A registration token; its secret only when just created.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AgentTokenView {
    pub id: u64,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    #[schema(value_type = String, format = DateTime)]
    pub created: Time,
    /// When it stops registering agents; absent: never.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires: Option<Time>,
    /// The secret, shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The registration tokens.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AgentTokenList {
    pub items: Vec<AgentTokenView>,
}

fn parse_labels(what: &str, labels: &[String]) -> Result<Vec<Label>, ApiError> {
    labels
        .iter()
        .map(|l| {
            l.parse::<Label>()
                .map_err(|_| ApiError::argument(what, l, Label::EXPECTED))
        })
        .collect()
}

/// Creates a registration token for agents. Role: admin.
#[utoipa::path(
    post,
    path = "/api/v1/agent-tokens",
    tag = "agents",
    request_body = AgentTokenRequest,
    responses((status = 201, body = AgentTokenView)),
    security(("bearer" = []))
)]
pub async fn create_agent_token(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let (store, _) = agents(&state)?;
    let request: AgentTokenRequest = request::json(&req, payload, &state.limits, None).await?;
    if request.name.trim().is_empty() || request.name.len() > 100 {
        return Err(ApiError::argument(
            "name",
            &request.name,
            "a name of 1 to 100 characters",
        ));
    }
    let labels = request
        .labels
        .as_deref()
        .map(|l| parse_labels("labels", l))
        .transpose()?;
    let now = state.tree.ports.clock.now();
    let expires = request.expires_in.map(|s| {
        Timestamp(
            now.0
                .saturating_add(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)),
        )
    });
    let secret = generate()?;
    let record = store
        .create_agent_token(NewAgentToken {
            name: request.name,
            digest: digest(&secret),
            labels,
            expires,
            at: now,
        })
        .await?;
    Ok(HttpResponse::Created().json(token_view(record, Some(secret))))
}

fn token_view(
    record: hodei_domain::ports::AgentTokenRecord,
    token: Option<String>,
) -> AgentTokenView {
    AgentTokenView {
        id: record.id,
        name: record.name,
        labels: record
            .labels
            .map(|l| l.iter().map(ToString::to_string).collect()),
        created: record.created.into(),
        expires: record.expires.map(Time),
        token,
    }
}

/// 204 when something was removed, 404 naming what was not there otherwise.
fn removed(done: bool, what: impl FnOnce() -> String) -> Result<HttpResponse, ApiError> {
    match done {
        true => Ok(HttpResponse::NoContent().finish()),
        false => Err(ApiError::NotFound { what: what() }),
    }
}

/// The registration tokens not revoked, without their secrets. Role: admin.
#[utoipa::path(
    get,
    path = "/api/v1/agent-tokens",
    tag = "agents",
    responses((status = 200, body = AgentTokenList)),
    security(("bearer" = []))
)]
pub async fn list_agent_tokens(
    state: web::Data<ApiState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let (store, _) = agents(&state)?;
    let items = store
        .agent_tokens()
        .await?
        .into_iter()
        .map(|t| token_view(t, None))
        .collect();
    Ok(HttpResponse::Ok().json(AgentTokenList { items }))
}

/// Revokes a registration token: it registers no one from now on; agents it registered keep
/// working. Role: admin.
#[utoipa::path(
    delete,
    path = "/api/v1/agent-tokens/{id}",
    tag = "agents",
    params(("id" = u64, Path, description = "The token's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn revoke_agent_token(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let (store, _) = agents(&state)?;
    let now = state.tree.ports.clock.now();
    removed(store.revoke_agent_token(*id, now).await?, || {
        format!("registration token {id}")
    })
}

/// A registered agent.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AgentView {
    pub name: String,
    pub labels: Vec<String>,
    /// The registration token fixed its labels.
    pub fixed_labels: bool,
    #[schema(value_type = String, format = DateTime)]
    pub registered: Time,
}

/// The registered agents.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AgentList {
    pub items: Vec<AgentView>,
}

/// The registered agents (their live state, slots and jobs are in `/api/v1/workers`). Role:
/// viewer.
#[utoipa::path(
    get,
    path = "/api/v1/agents",
    tag = "agents",
    responses((status = 200, body = AgentList)),
    security(("bearer" = []))
)]
pub async fn list_agents(
    state: web::Data<ApiState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let (store, _) = agents(&state)?;
    let items = store
        .agents()
        .await?
        .into_iter()
        .map(|a| AgentView {
            name: a.name,
            labels: a.labels.iter().map(ToString::to_string).collect(),
            fixed_labels: a.fixed_labels,
            registered: a.registered.into(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(AgentList { items }))
}

/// Deletes an agent: its credential stops working at once, and the jobs it holds are lost
/// with it when their leases run out. Role: admin.
#[utoipa::path(
    delete,
    path = "/api/v1/agents/{name}",
    tag = "agents",
    params(("name" = String, Path, description = "The agent's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete_agent(
    state: web::Data<ApiState>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let (store, _) = agents(&state)?;
    removed(store.delete_agent(&name).await?, || {
        format!("agent `{name}`")
    })
}

// ---- The agent protocol -----------------------------------------------------------------------

/// The bearer token of a request.
fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The digest of the job token a call about one job presents. Which lease it opens is the
/// desk's to check: a token that opens no lease of the job is answered `409 lease-lost`.
pub(crate) fn job_token(req: &HttpRequest) -> Result<[u8; 32], ApiError> {
    bearer(req).map(digest).ok_or(ApiError::Unauthenticated {
        reason: "no job token: send `Authorization: Bearer <the job token of the claim>`",
    })
}

/// The agent a request comes from, by its credential.
async fn agent_of(req: &HttpRequest, state: &ApiState) -> Result<AgentRecord, ApiError> {
    let token = bearer(req).ok_or(ApiError::Unauthenticated {
        reason: "no agent credential: send `Authorization: Bearer <credential>`",
    })?;
    let wanted = digest(token);
    let (store, _) = agents(state)?;
    match store.agent_by_digest(&wanted).await? {
        Some(agent) if same_digest(&agent.digest, &wanted) => Ok(agent),
        _ => Err(ApiError::Unauthenticated {
            reason: "unknown agent credential (the agent was deleted, or never registered here)",
        }),
    }
}

/// An agent's registration.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The registration token an admin created.
    pub token: String,
    /// The agent's name, unique on the server: 1 to 63 letters, digits, `-`, `_` or `.`.
    pub name: String,
    #[serde(default)]
    pub labels: Vec<String>,
}

/// The agent's own credential: keep it, it is shown once.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct Registered {
    pub name: String,
    pub credential: String,
    pub labels: Vec<String>,
    /// The protocol version of the server.
    pub protocol: u32,
}

/// Exchanges a registration token for the agent's own credential. No bearer token: the
/// registration token is in the body.
#[utoipa::path(
    post,
    path = "/api/v1/agent/register",
    tag = "agents",
    request_body = RegisterRequest,
    responses(
        (status = 201, body = Registered),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn register_agent(
    state: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (store, _) = agents(&state)?;
    let request: RegisterRequest = request::json(&req, payload, &state.limits, None).await?;
    if request.name.parse::<hodei_domain::model::Name>().is_err() {
        return Err(ApiError::argument(
            "name",
            &request.name,
            hodei_domain::model::Name::EXPECTED,
        ));
    }
    let labels = parse_labels("labels", &request.labels)?;
    let credential = generate()?;
    let (outcome, agent) = store
        .register_agent(NewAgent {
            name: request.name.clone(),
            digest: digest(&credential),
            labels,
            token: digest(&request.token),
            at: state.tree.ports.clock.now(),
        })
        .await?;
    match (outcome, agent) {
        (Registration::Registered, Some(agent)) => {
            tracing::info!(agent = %agent.name, "Agent registered.");
            Ok(HttpResponse::Created().json(Registered {
                name: agent.name,
                credential,
                labels: agent.labels.iter().map(ToString::to_string).collect(),
                protocol: PROTOCOL,
            }))
        }
        (Registration::ExpiredToken, _) => Err(ApiError::Unauthenticated {
            reason: "the registration token has expired",
        }),
        (Registration::NameTaken, _) => Err(ApiError::Conflict {
            what: format!(
                "an agent named `{}` is registered: choose another name, or delete it first",
                request.name
            ),
        }),
        _ => Err(ApiError::Unauthenticated {
            reason: "unknown or revoked registration token",
        }),
    }
}

/// An agent asks for work.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PollRequest {
    /// The labels it offers (ignored when its registration token fixed them).
    #[serde(default)]
    pub labels: Vec<String>,
    /// How many jobs it runs at once.
    pub slots: u32,
    /// Whether it has room for another job now.
    pub room: bool,
    /// How many more jobs it can take now (default: one, when it has room): a poll brings at
    /// most that many.
    #[serde(default)]
    pub free: Option<u32>,
    /// How long to wait for work, in milliseconds (at most 30 s).
    #[serde(default)]
    pub wait_ms: u64,
    /// The agent's version.
    #[serde(default)]
    pub version: String,
}

/// Waits (up to `wait_ms`) for a job for this agent, or a cancel of one it holds; the answer
/// carries a job with its lease (`epoch`), or nothing. Agent credential.
#[utoipa::path(
    post,
    path = "/api/v1/agent/poll",
    tag = "agents",
    request_body = PollRequest,
    responses((status = 200, description = "Work: `job` (with its lease) and `cancel`", body = Object)),
    security(("bearer" = []))
)]
pub async fn poll_agent(
    state: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let agent = agent_of(&req, &state).await?;
    let (_, desk) = agents(&state)?;
    let request: PollRequest = request::json(&req, payload, &state.limits, None).await?;
    if request.slots == 0 || request.slots > 1024 {
        return Err(ApiError::argument(
            "slots",
            &request.slots.to_string(),
            "a number of slots from 1 to 1024",
        ));
    }
    let labels = match agent.fixed_labels {
        true => agent.labels.clone(),
        false => {
            let mut labels = agent.labels.clone();
            for label in parse_labels("labels", &request.labels)? {
                if !labels.contains(&label) {
                    labels.push(label);
                }
            }
            labels
        }
    };
    let bell = desk
        .send(AgentSeen {
            agent: agent.name.clone(),
            labels,
            slots: request.slots,
            version: request.version,
        })
        .await
        .map_err(|err| ApiError::actor("the agent desk", err))?;
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(request.wait_ms).min(MAX_POLL_WAIT);
    // The job token of the job this poll may claim: its secret goes to the agent with the
    // job, its digest into the lease.
    let secret = generate()?;
    let token = JobToken {
        digest: digest(&secret),
        secret,
    };
    loop {
        let mut work: Work = desk
            .send(TryClaim {
                agent: agent.name.clone(),
                room: request.room,
                token: token.clone(),
            })
            .await
            .map_err(|err| ApiError::actor("the agent desk", err))??;
        if work.job.is_some() {
            // As many more as it has room for, while jobs wait for it.
            let free = request.free.unwrap_or(1).min(request.slots);
            while (work.more.len() as u32) + 1 < free {
                let secret = generate()?;
                let token = JobToken {
                    digest: digest(&secret),
                    secret,
                };
                let next: Work = desk
                    .send(TryClaim {
                        agent: agent.name.clone(),
                        room: true,
                        token,
                    })
                    .await
                    .map_err(|err| ApiError::actor("the agent desk", err))??;
                match next.job {
                    Some(job) => work.more.push(*job),
                    None => break,
                }
            }
        }
        if work.job.is_some() || !work.cancel.is_empty() {
            return Ok(HttpResponse::Ok().json(work));
        }
        if tokio::time::timeout_at(deadline, bell.notified())
            .await
            .is_err()
        {
            return Ok(HttpResponse::Ok().json(work));
        }
    }
}

/// What the server sends on an agent's doorbell when work or a cancel is there for it: the
/// agent then polls (with `wait_ms` 0) to take it.
pub const RING: &str = "ring";

/// Opens the agent's doorbell: a WebSocket on which the server sends a text frame `ring` as
/// soon as a job or a cancel is there for the agent, which then polls to take it. It carries
/// nothing else: the work itself always comes from the poll, so an agent whose doorbell cannot
/// be held (a proxy that cuts WebSockets) long-polls instead and loses nothing. The server
/// pings every 15 s. Agent credential.
#[utoipa::path(
    get,
    path = "/api/v1/agent/doorbell",
    tag = "agents",
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn agent_doorbell(
    state: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    use futures_util::StreamExt as _;
    let agent = agent_of(&req, &state).await?;
    let (_, desk) = agents(&state)?;
    let (response, mut session, mut incoming) = super::streams::upgrade(&req, payload)?;
    let bell = desk
        .send(OpenDoorbell {
            agent: agent.name.clone(),
        })
        .await
        .map_err(|err| ApiError::actor("the agent desk", err))?;
    let (desk, accepting) = (desk.clone(), state.accepting.clone());
    actix::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut ticks = 0u32;
        loop {
            tokio::select! {
                _ = bell.notified() => {
                    if session.text(RING).await.is_err() {
                        break;
                    }
                }
                _ = tick.tick() => {
                    // The server drains: the agent long-polls until it is back.
                    if !accepting.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    ticks += 1;
                    if ticks.is_multiple_of(15) && session.ping(b"").await.is_err() {
                        break;
                    }
                }
                message = incoming.next() => match message {
                    Some(Ok(actix_ws::Message::Ping(bytes))) => {
                        if session.pong(&bytes).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(actix_ws::Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
            }
        }
        let _ = session.close(None).await;
        desk.do_send(CloseDoorbell { agent: agent.name });
    });
    Ok(response)
}

/// The leases an agent holds.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    #[serde(default)]
    pub jobs: Vec<HeldLease>,
}

/// A job and the epoch of its lease.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeldLease {
    pub job: u64,
    pub epoch: u64,
}

/// Extends the leases the agent holds; answers the jobs whose lease it lost (it stops them)
/// and those cancelled. Agent credential.
#[utoipa::path(
    post,
    path = "/api/v1/agent/heartbeat",
    tag = "agents",
    request_body = HeartbeatRequest,
    responses((status = 200, description = "`lost` and `cancel`: job ids", body = Object)),
    security(("bearer" = []))
)]
pub async fn agent_heartbeat(
    state: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let agent = agent_of(&req, &state).await?;
    let (_, desk) = agents(&state)?;
    let body: HeartbeatRequest = request::json(&req, payload, &state.limits, None).await?;
    let beat: Beat = desk
        .send(AgentBeat {
            agent: agent.name,
            jobs: body.jobs.iter().map(|l| (JobId(l.job), l.epoch)).collect(),
        })
        .await
        .map_err(|err| ApiError::actor("the agent desk", err))?;
    Ok(HttpResponse::Ok().json(beat))
}

/// Where a log append goes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AppendQuery {
    /// The lease's epoch.
    pub epoch: u64,
    /// Where the bytes begin in the attempt's output.
    pub offset: u64,
}

/// How much of the attempt's output the server holds.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct Committed {
    pub committed: u64,
}

/// Appends the attempt's output at `offset` (`application/octet-stream`, at most 4 MiB): taken
/// when it begins at or before the end of what the server holds, which the answer gives (send
/// again from there after a gap). Job token of the claim.
#[utoipa::path(
    put,
    path = "/api/v1/agent/jobs/{id}/log",
    tag = "agents",
    params(("id" = u64, Path, description = "The job"), AppendQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, body = Committed),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn append_agent_log(
    state: web::Data<ApiState>,
    req: HttpRequest,
    job: web::Path<u64>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let token = job_token(&req)?;
    let (_, desk) = agents(&state)?;
    let query = web::Query::<AppendQuery>::from_query(req.query_string()).map_err(|err| {
        ApiError::argument(
            "the query string",
            req.query_string(),
            &format!("`epoch` and `offset` as numbers ({err})"),
        )
    })?;
    let limits = crate::Limits {
        max_body: MAX_LOG_APPEND,
        ..state.limits
    };
    let bytes = request::body(&req, payload, &limits).await?.to_vec();
    let committed = desk
        .send(AgentLog {
            token,
            job: JobId(*job),
            epoch: query.epoch,
            offset: query.offset,
            bytes,
        })
        .await
        .map_err(|err| ApiError::actor("the agent desk", err))??;
    Ok(HttpResponse::Ok().json(Committed { committed }))
}

/// Transitions of a job attempt, in order.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    pub epoch: u64,
    /// The batch's number, from 0: a batch sent again is taken once.
    pub seq: u64,
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<DomainEvent>,
    /// The attempt is over: the length and SHA-256 of its whole output, checked before the
    /// lease closes.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub end: Option<LogSeal>,
}

/// Whether a report was new.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct ReportAnswer {
    /// It had been taken before.
    pub duplicate: bool,
}

/// Records transitions of the attempt the agent holds, checked against the job's state and
/// fenced by the lease's epoch. Job token of the claim.
#[utoipa::path(
    post,
    path = "/api/v1/agent/jobs/{id}/events",
    tag = "agents",
    params(("id" = u64, Path, description = "The job")),
    request_body = ReportRequest,
    responses(
        (status = 200, body = ReportAnswer),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn report_agent_events(
    state: web::Data<ApiState>,
    req: HttpRequest,
    job: web::Path<u64>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let token = job_token(&req)?;
    let (_, desk) = agents(&state)?;
    let request: ReportRequest = request::json(&req, payload, &state.limits, None).await?;
    let fenced = desk
        .send(AgentReport {
            token,
            job: JobId(*job),
            epoch: request.epoch,
            seq: request.seq,
            events: request.events,
            end: request.end,
        })
        .await
        .map_err(|err| ApiError::actor("the agent desk", err))??;
    match fenced {
        Fenced::Done => Ok(HttpResponse::Ok().json(ReportAnswer { duplicate: false })),
        Fenced::Duplicate => Ok(HttpResponse::Ok().json(ReportAnswer { duplicate: true })),
        Fenced::Stale => Err(ApiError::Lease {
            code: "lease-lost",
            detail: format!("the agent does not hold job-{job} any more: stop it"),
        }),
        Fenced::Gap { expected } => Err(ApiError::Lease {
            code: "sequence-gap",
            detail: format!(
                "batch {} of job-{job} is missing: send from batch {expected}",
                request.seq
            ),
        }),
    }
}

/// A job handed back.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandBackRequest {
    /// The lease's epoch.
    pub epoch: u64,
}

/// Hands a job back: an agent that stops (SIGTERM, its grace period over) has stopped the
/// job's processes; the attempt is lost with it at once, and the job goes on by its retry
/// policy elsewhere, without waiting for the lease to run out. Job token of the claim.
#[utoipa::path(
    post,
    path = "/api/v1/agent/jobs/{id}/hand-back",
    tag = "agents",
    params(("id" = u64, Path, description = "The job")),
    request_body = HandBackRequest,
    responses(
        (status = 204, description = "Handed back"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn hand_back_job(
    state: web::Data<ApiState>,
    req: HttpRequest,
    job: web::Path<u64>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let token = job_token(&req)?;
    let (_, desk) = agents(&state)?;
    let request: HandBackRequest = request::json(&req, payload, &state.limits, None).await?;
    desk.send(HandBack {
        token,
        job: JobId(*job),
        epoch: request.epoch,
    })
    .await
    .map_err(|err| ApiError::actor("the agent desk", err))??;
    Ok(HttpResponse::NoContent().finish())
}

/// An agent that stops.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeavingRequest {
    /// `false` when it starts to stop (its running jobs may end), `true` when it is gone.
    #[serde(default)]
    pub gone: bool,
}

/// Says that the agent stops: from now on it is draining (no new job; what was offered to it
/// and not claimed goes to other workers); with `gone`, it is no longer a worker (until it
/// polls again). Agent credential.
#[utoipa::path(
    post,
    path = "/api/v1/agent/leaving",
    tag = "agents",
    request_body = LeavingRequest,
    responses((status = 204, description = "Taken")),
    security(("bearer" = []))
)]
pub async fn agent_leaving(
    state: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let agent = agent_of(&req, &state).await?;
    let (_, desk) = agents(&state)?;
    let request: LeavingRequest = request::json(&req, payload, &state.limits, None).await?;
    desk.send(Leaving {
        agent: agent.name,
        gone: request.gone,
    })
    .await
    .map_err(|err| ApiError::actor("the agent desk", err))?;
    Ok(HttpResponse::NoContent().finish())
}
