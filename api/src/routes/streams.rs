//! WebSocket streams: a job's log live from a byte offset, and domain events live (see
//! [`crate::stream`] for the frames and the guarantees).

use actix_web::{HttpRequest, HttpResponse, web};
use hodei_domain::ids::{JobId, RunId};
use hodei_domain::model::Role;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::stream::{EventStream, LogStream};

/// Where to start.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// The byte offset to start from (default 0): the `resume_from` of a `lagged` frame, or the
    /// end of what a client has.
    from: Option<u64>,
}

/// The upgrade to a WebSocket, or a 400 that says what is missing.
pub(crate) fn upgrade(
    req: &HttpRequest,
    body: web::Payload,
) -> Result<(HttpResponse, actix_ws::Session, actix_ws::MessageStream), ApiError> {
    actix_ws::handle(req, body).map_err(|err| {
        ApiError::argument(
            "the request",
            "an HTTP request",
            &format!("a WebSocket handshake (`Upgrade: websocket`): {err}"),
        )
    })
}

/// Follow a job's log over a WebSocket: the stored log from `from`, then live output, with no gap
/// and no duplicate, in `log` frames batched every 20 ms, each with its byte offset; `lagged`
/// (with the offset to resume from) if the client cannot keep up; `end` with the job's outcome.
/// Role: viewer.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/log/stream",
    tag = "jobs",
    params(("id" = u64, Path, description = "The job's id"), StreamQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn stream_job_log(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<u64>,
    query: web::Query<StreamQuery>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let job = JobId(*id);
    let store = &state.tree.ports.store;
    let not_found = || ApiError::NotFound {
        what: format!("job {}", job.0),
    };
    let run = store.job_run(job).await?.ok_or_else(not_found)?;
    let (response, session, incoming) = upgrade(&req, body)?;
    LogStream::start(
        job,
        run,
        query.from.unwrap_or(0),
        state.tree.ports.store.clone(),
        state.tree.ports.logs.clone(),
        state.tree.hub.clone(),
        state.tree.bus.clone(),
        (&state.streams, caller.token),
        session,
        incoming,
    );
    Ok(response)
}

/// Follow a run's domain events over a WebSocket, as they are recorded, in `event` frames.
/// Role: viewer.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/events/stream",
    tag = "runs",
    params(("id" = u64, Path, description = "The run's id")),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn stream_run_events(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<u64>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let run = RunId(*id);
    if state.tree.ports.store.run(run).await?.is_none() {
        return Err(ApiError::NotFound {
            what: format!("run {}", run.0),
        });
    }
    let (response, session, incoming) = upgrade(&req, body)?;
    EventStream::start(
        Some(run),
        state.tree.bus.clone(),
        (&state.streams, caller.token),
        session,
        incoming,
    );
    Ok(response)
}

/// Follow every domain event over a WebSocket, as they are recorded, in `event` frames; the
/// past ones are in `GET /api/v1/events`. Role: viewer.
#[utoipa::path(
    get,
    path = "/api/v1/events/stream",
    tag = "events",
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn stream_events(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let (response, session, incoming) = upgrade(&req, body)?;
    EventStream::start(
        None,
        state.tree.bus.clone(),
        (&state.streams, caller.token),
        session,
        incoming,
    );
    Ok(response)
}
