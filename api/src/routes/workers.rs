//! Workers and the queue: what each worker offers and runs, draining and undraining, and every
//! waiting job with why it waits.

use actix_web::{HttpResponse, web};
use hodei_actors::agents::GetAgentStats;
use hodei_actors::messages::{GetQueue, GetQueueStats, GetWorkers, SetWorkerState};
use hodei_domain::ids::{RunId, WorkerId};
use hodei_domain::model::Role;
use hodei_domain::schedule::{ScheduleError, WorkerState};
use hodei_domain::state::JobState;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::views::{AgentDetail, ApprovalItem, QueueItem, QueueView, WorkerItem, WorkerList};

/// The most queue items one answer holds.
const MAX_QUEUE_ITEMS: usize = 1_000;

/// How much of the queue.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    /// Items from the front of the queue, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Only the jobs of this run; `position` still counts every job ahead.
    run: Option<u64>,
}

/// The waiting jobs, in the order the scheduler will consider them, each with its position, the
/// workers that could take it and why it waits; then the jobs waiting for an approval before
/// they may queue, with the role that may approve each. Role: viewer.
#[utoipa::path(
    get,
    path = "/api/v1/queue",
    tag = "workers",
    params(QueueQuery),
    responses(
        (status = 200, body = QueueView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_queue(
    state: web::Data<ApiState>,
    caller: Caller,
    query: web::Query<QueueQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(HttpResponse::Ok().json(queue(&state, query.limit, query.run).await?))
}

/// The first `limit` (default 100) waiting jobs, of run `run` only when given.
pub(crate) async fn queue(
    state: &ApiState,
    limit: Option<usize>,
    run: Option<u64>,
) -> Result<QueueView, ApiError> {
    let limit = match limit {
        None => 100,
        Some(n) if (1..=MAX_QUEUE_ITEMS).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::argument(
                "query parameter `limit`",
                &n.to_string(),
                &format!("a number from 1 to {MAX_QUEUE_ITEMS}"),
            ));
        }
    };
    let scheduler = &state.tree.scheduler;
    let total = scheduler
        .send(GetQueueStats)
        .await
        .map_err(|err| ApiError::actor("the scheduler", err))?
        .queued;
    let waiting = scheduler
        .send(GetQueue {
            limit,
            run: run.map(RunId),
        })
        .await
        .map_err(|err| ApiError::actor("the scheduler", err))?;
    let items = waiting
        .into_iter()
        .map(|w| QueueItem {
            position: w.position,
            job: w.job.0,
            run: w.run.0,
            pipeline: w.pipeline,
            runs_on: w.runs_on.iter().map(ToString::to_string).collect(),
            priority: w.priority,
            queued_at: w.queued_at.into(),
            candidates: w.candidates.iter().map(|c| c.0.clone()).collect(),
            reason: w.reason,
        })
        .collect();
    let awaiting_approval = awaiting_approval(state, limit, run.map(RunId)).await?;
    Ok(QueueView {
        items,
        total,
        awaiting_approval,
    })
}

/// The jobs of unfinished runs (of `only` when given) that wait at their approval gate, at most
/// `limit`, read from the store with who may approve each.
async fn awaiting_approval(
    state: &ApiState,
    limit: usize,
    only: Option<RunId>,
) -> Result<Vec<ApprovalItem>, ApiError> {
    let runs = match only {
        Some(run) => vec![run],
        None => state.tree.ports.store.unfinished_runs().await?,
    };
    let mut items = Vec::new();
    for run in runs {
        let record = match super::runs::record(state, run).await {
            Ok(record) => record,
            // A run asked for that does not exist has no job waiting.
            Err(ApiError::NotFound { .. }) => continue,
            Err(err) => return Err(err),
        };
        for (position, job) in record.jobs.iter().enumerate() {
            if job.state != JobState::WaitingApproval || items.len() >= limit {
                continue;
            }
            let approver = super::jobs::gate_role(state, record.source.clone(), position).await?;
            items.push(ApprovalItem {
                job: job.id.0,
                run: run.0,
                pipeline: record.pipeline.clone(),
                name: job.name.clone(),
                waiting_since: job.since.into(),
                approver,
            });
        }
    }
    Ok(items)
}

/// Every worker: its labels, slots, state and the jobs it runs. Role: viewer.
#[utoipa::path(
    get,
    path = "/api/v1/workers",
    tag = "workers",
    responses((status = 200, body = WorkerList)),
    security(("bearer" = []))
)]
pub async fn list_workers(
    state: web::Data<ApiState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(HttpResponse::Ok().json(workers(&state).await?))
}

/// Every worker, by id.
pub(crate) async fn workers(state: &ApiState) -> Result<WorkerList, ApiError> {
    let workers = state
        .tree
        .scheduler
        .send(GetWorkers)
        .await
        .map_err(|err| ApiError::actor("the scheduler", err))?;
    let live = match &state.tree.desk {
        Some(desk) => {
            desk.send(GetAgentStats { take_claims: false })
                .await
                .map_err(|err| ApiError::actor("the agent desk", err))?
                .connected
        }
        None => Vec::new(),
    };
    let mut items: Vec<WorkerItem> = workers
        .into_iter()
        .map(|view| {
            let agent = live
                .iter()
                .find(|a| a.name == view.worker.id.0)
                .map(|a| AgentDetail {
                    version: a.version.clone(),
                    last_heartbeat: Some(a.last_seen.into()),
                    doorbell: a.doorbell,
                });
            WorkerItem {
                id: view.worker.id.0.clone(),
                labels: view.worker.labels.iter().map(ToString::to_string).collect(),
                slots: view.worker.slots,
                state: state_name(view.worker.state).to_owned(),
                jobs: view.jobs.iter().map(|job| job.0).collect(),
                agent,
            }
        })
        .collect();
    // Registered agents that are not connected (or whose lease ran out) are offline.
    if let Some(store) = &state.agents {
        for agent in store.agents().await? {
            if items.iter().any(|w| w.id == agent.name) {
                continue;
            }
            items.push(WorkerItem {
                id: agent.name,
                labels: agent.labels.iter().map(ToString::to_string).collect(),
                slots: 0,
                state: "offline".to_owned(),
                jobs: Vec::new(),
                agent: Some(AgentDetail {
                    version: String::new(),
                    last_heartbeat: None,
                    doorbell: false,
                }),
            });
        }
    }
    Ok(WorkerList { items })
}

/// Drain a worker: it keeps the jobs it runs and takes no new one. Role: admin.
#[utoipa::path(
    post,
    path = "/api/v1/workers/{id}/drain",
    tag = "workers",
    params(("id" = String, Path, description = "The worker's id, e.g. `local`")),
    responses(
        (status = 204, description = "Draining"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn drain_worker(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_state(&state, &caller, id.into_inner(), WorkerState::Draining).await
}

/// Make a drained worker take jobs again. Role: admin.
#[utoipa::path(
    post,
    path = "/api/v1/workers/{id}/undrain",
    tag = "workers",
    params(("id" = String, Path, description = "The worker's id, e.g. `local`")),
    responses(
        (status = 204, description = "Ready"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn undrain_worker(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_state(&state, &caller, id.into_inner(), WorkerState::Ready).await
}

async fn set_state(
    state: &ApiState,
    caller: &Caller,
    id: String,
    wanted: WorkerState,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let worker = WorkerId(id);
    let result = state
        .tree
        .scheduler
        .send(SetWorkerState {
            worker: worker.clone(),
            state: wanted,
        })
        .await
        .map_err(|err| ApiError::actor("the scheduler", err))?;
    match result {
        Ok(()) => {
            tracing::info!(worker = %worker, state = state_name(wanted), by = %caller.name, "Worker state set.");
            Ok(HttpResponse::NoContent().finish())
        }
        Err(ScheduleError::UnknownWorker { worker }) => Err(ApiError::NotFound {
            what: format!("worker `{worker}`"),
        }),
        Err(err) => Err(ApiError::argument("worker", &worker.0, &err.to_string())),
    }
}

/// Every worker state's name, as [`state_name`] gives them.
pub(crate) const WORKER_STATES: [&str; 3] = ["ready", "draining", "offline"];

fn state_name(state: WorkerState) -> &'static str {
    match state {
        WorkerState::Ready => "ready",
        WorkerState::Draining => "draining",
        WorkerState::Offline => "offline",
    }
}
