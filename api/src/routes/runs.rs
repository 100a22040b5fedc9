//! Runs: list them by filter, read one with its jobs and steps, cancel one.

use actix_web::{HttpResponse, web};
use hodei_actors::messages::{CancelRun, RerunRun, RetryRun, SubmitError};
use hodei_domain::ids::RunId;
use hodei_domain::model::Role;
use hodei_domain::ports::{RunFilter, RunRecord, StoreError};
use hodei_domain::state::RunState;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::request::page_limit;
use crate::views::{RunListItem, RunPage, RunView};

/// Filters and paging of runs.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunQuery {
    /// Only runs in this state: `pending`, `running`, `cancelling`, `succeeded`, `failed`,
    /// `cancelled`.
    pub status: Option<String>,
    /// Only runs of this pipeline.
    pub pipeline: Option<String>,
    /// Only runs for this branch.
    pub branch: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// List runs, newest first. Role: viewer.
#[utoipa::path(
    get,
    path = "/api/v1/runs",
    tag = "runs",
    params(RunQuery),
    responses(
        (status = 200, body = RunPage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_runs(
    state: web::Data<ApiState>,
    caller: Caller,
    query: web::Query<RunQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(HttpResponse::Ok().json(list(&state, query.into_inner()).await?))
}

/// The page of runs `query` asks for.
pub(crate) async fn list(state: &ApiState, query: RunQuery) -> Result<RunPage, ApiError> {
    let limit = page_limit(query.limit)?;
    let status = match query.status.as_deref() {
        None => None,
        Some(name) => Some(
            RunState::ALL
                .into_iter()
                .find(|s| s.name() == name)
                .ok_or_else(|| {
                    ApiError::argument(
                        "query parameter `status`",
                        name,
                        "one of pending, running, cancelling, succeeded, failed, cancelled",
                    )
                })?,
        ),
    };
    let before = match query.cursor.as_deref() {
        None => None,
        Some(cursor) => Some(RunId(cursor.parse().map_err(|_| {
            ApiError::argument(
                "query parameter `cursor`",
                cursor,
                "the `next_cursor` of a previous page",
            )
        })?)),
    };
    let filter = RunFilter {
        state: status,
        pipeline: query.pipeline,
        branch: query.branch,
    };
    let runs = state.tree.ports.store.runs(&filter, before, limit).await?;
    let next_cursor = (runs.len() == limit as usize)
        .then(|| runs.last().map(|r| r.id.0.to_string()))
        .flatten();
    Ok(RunPage {
        items: runs.iter().map(RunListItem::from).collect(),
        next_cursor,
    })
}

/// A run's record, or 404.
pub(crate) async fn record(state: &ApiState, run: RunId) -> Result<RunRecord, ApiError> {
    state
        .tree
        .ports
        .store
        .run(run)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: format!("run {}", run.0),
        })
}

/// A run's view.
pub(crate) async fn view(state: &ApiState, run: RunId) -> Result<RunView, ApiError> {
    Ok(RunView::new(&record(state, run).await?))
}

/// Read a run: its jobs and their steps, with states, attempts, exit codes and times.
/// Role: viewer.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}",
    tag = "runs",
    params(("id" = u64, Path, description = "The run's id")),
    responses(
        (status = 200, body = RunView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_run(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let run = RunId(*id);
    if let Some(kept) = state.finished.get(run) {
        return Ok(json_bytes(kept));
    }
    let record = record(&state, run).await?;
    let finished = record.state.is_terminal() && record.jobs.iter().all(|j| j.state.is_terminal());
    let body = serde_json::to_vec(&RunView::new(&record)).map_err(|err| ApiError::Internal {
        reason: format!("cannot write the view of run {}: {err}", run.0),
    })?;
    let body = web::Bytes::from(body);
    if finished {
        // A finished run never changes again: its view is answered from memory from now on.
        state.finished.keep(run, body.clone());
    }
    Ok(json_bytes(body))
}

fn json_bytes(body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(body)
}

/// Read the definition a run was planned from: the YAML text of its pipeline version, with
/// which a client can draw the run's jobs and their `needs`. Role: viewer.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/definition",
    tag = "runs",
    params(("id" = u64, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The YAML text", body = String, content_type = "application/yaml"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_run_definition(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let record = record(&state, RunId(*id)).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/yaml")
        .body(record.source))
}

/// Cancel a run.
///
/// Asks the run to stop: running steps are stopped, pending jobs cancelled, then its
/// `cancelled` and `always` hooks run. Answers 202 with the run as it is now; the run reaches
/// `cancelled` shortly after. A finished run cannot be cancelled (409). Role: operator.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/cancel",
    tag = "runs",
    params(("id" = u64, Path, description = "The run's id")),
    responses(
        (status = 202, description = "Cancel requested", body = RunView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run is finished", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn cancel_run(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Operator)?;
    let run = RunId(*id);
    let record = record(&state, run).await?;
    if record.state.is_terminal() {
        return Err(ApiError::IllegalTransition {
            what: format!("run {}", run.0),
            state: record.state.name(),
            reason: "a finished run cannot be cancelled",
        });
    }
    state
        .tree
        .orchestrator
        .send(CancelRun {
            run,
            by: caller.name.clone(),
        })
        .await
        .map_err(|err| ApiError::actor("the orchestrator", err))?;
    tracing::info!(run_id = %run, by = %caller.name, "Run cancel requested.");
    Ok(HttpResponse::Accepted().json(view(&state, run).await?))
}

/// Run a run again: a new run of the same stored pipeline version with the same parameters,
/// branch, event and variables, whatever the latest version is now. Answers 201 with the new
/// run. Role: operator.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/rerun",
    tag = "runs",
    params(("id" = u64, Path, description = "The run to run again")),
    responses(
        (status = 201, description = "The new run", body = RunView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The queue is full (`Retry-After`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The server is shutting down (`Retry-After`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn rerun_run(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let earlier = RunId(*id);
    run_again(
        &state,
        &caller,
        earlier,
        RerunRun {
            run: earlier,
            limit: Some(state.limits.max_queued),
        },
        "rerun",
    )
    .await
}

/// Retry what failed in a finished run: a new run of the same pinned version and inputs in
/// which the jobs that succeeded are carried over (succeeded, not run again, with a note in
/// their logs) and the others run. Only a failed or cancelled run (409 otherwise). Answers 201
/// with the new run. Role: operator.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/retry",
    tag = "runs",
    params(("id" = u64, Path, description = "The failed or cancelled run")),
    responses(
        (status = 201, description = "The new run", body = RunView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run did not fail", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The queue is full (`Retry-After`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The server is shutting down (`Retry-After`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn retry_run(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let earlier = RunId(*id);
    run_again(
        &state,
        &caller,
        earlier,
        RetryRun {
            run: earlier,
            limit: Some(state.limits.max_queued),
        },
        "retried",
    )
    .await
}

/// Asks the orchestrator for a new run made from `earlier`, and answers it.
async fn run_again<M>(
    state: &ApiState,
    caller: &Caller,
    earlier: RunId,
    ask: M,
    how: &'static str,
) -> Result<HttpResponse, ApiError>
where
    M: actix::Message<Result = Result<RunId, SubmitError>> + Send + 'static,
    hodei_actors::orchestrator::Orchestrator: actix::Handler<M>,
{
    caller.require(Role::Operator)?;
    state.accepts_runs().await?;
    let created = state
        .tree
        .orchestrator
        .send(ask)
        .await
        .map_err(|err| ApiError::actor("the orchestrator", err))?;
    let run = created.map_err(|err| submit_error(err, &format!("run {}", earlier.0)))?;
    tracing::info!(run_id = %run, from = %earlier, how, by = %caller.name, "Run made from another.");
    // A run of a repository's commit reports its status again.
    crate::status::follow(state, run).await;
    created_run(state, run).await
}

/// `201 Created` with the run and its `Location`.
async fn created_run(state: &ApiState, run: RunId) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created()
        .insert_header((
            actix_web::http::header::LOCATION,
            format!("/api/v1/runs/{}", run.0),
        ))
        .json(view(state, run).await?))
}

/// The answer to a run the orchestrator did not accept; `what` names what was asked for.
pub(crate) fn submit_error(err: SubmitError, what: &str) -> ApiError {
    match err {
        SubmitError::InvalidInputs(errors) => ApiError::InvalidParameters {
            errors: errors.iter().map(ToString::to_string).collect(),
        },
        SubmitError::Store(StoreError::NotFound { .. }) => ApiError::NotFound {
            what: what.to_owned(),
        },
        SubmitError::Store(err) => err.into(),
        SubmitError::Unavailable => ApiError::Unavailable {
            what: "the orchestrator",
            reason: "it is not running".into(),
        },
        SubmitError::NotRetryable { state } => ApiError::IllegalTransition {
            what: what.to_owned(),
            state,
            reason: "only a failed or cancelled run can be retried",
        },
        SubmitError::QueueFull { holding, limit } => ApiError::QueueFull {
            queued: holding,
            limit,
        },
        SubmitError::TooManyJobs { .. } => ApiError::IllegalTransition {
            what: what.to_owned(),
            state: "larger than the queue",
            reason: "it has more jobs than `max_queued_jobs` lets unfinished runs hold; raise the limit",
        },
        SubmitError::Internal(reason) => ApiError::Internal { reason },
        err @ SubmitError::InvalidPipeline(_) => ApiError::Internal {
            reason: err.to_string(),
        },
    }
}
