//! Jobs: read one with its steps, read its log by byte range.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use hodei_actors::messages::ApproveJob;
use hodei_domain::ids::{JobId, RunId};
use hodei_domain::model::Role;
use hodei_domain::state::JobState;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::request::{ByteRange, parse_range, query_range};
use crate::views::JobView;

/// The most bytes of a log one answer to a `Range` request holds.
const MAX_RANGE: u64 = 8 * 1024 * 1024;
/// The bytes read from storage at a time while a log is streamed: what an answer without a
/// `Range` holds in memory, whatever the log's size.
const STREAM_CHUNK: u64 = 256 * 1024;

/// The run a job belongs to, or 404.
async fn run_of(state: &ApiState, job: JobId) -> Result<RunId, ApiError> {
    state
        .tree
        .ports
        .store
        .job_run(job)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: format!("job {}", job.0),
        })
}

/// A job's run as stored and the job's position in it, or 404.
pub(crate) async fn locate(
    state: &ApiState,
    job: JobId,
) -> Result<(hodei_domain::ports::RunRecord, usize), ApiError> {
    let run = run_of(state, job).await?;
    let record = super::runs::record(state, run).await?;
    let position = record
        .jobs
        .iter()
        .position(|j| j.id == job)
        .ok_or_else(|| ApiError::NotFound {
            what: format!("job {}", job.0),
        })?;
    Ok((record, position))
}

/// Read a job with every attempt of its steps. Role: viewer.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = u64, Path, description = "The job's id")),
    responses(
        (status = 200, body = JobView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_job(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let job = JobId(*id);
    let run = run_of(&state, job).await?;
    Ok(HttpResponse::Ok().json(view(&state, run, job).await?))
}

/// A job's view, from its run's.
async fn view(state: &ApiState, run: RunId, job: JobId) -> Result<JobView, ApiError> {
    let view = super::runs::view(state, run).await?;
    view.jobs
        .into_iter()
        .find(|j| j.id == job.0)
        .ok_or_else(|| ApiError::Internal {
            reason: format!("job {} is not among the jobs of its run {}", job.0, run.0),
        })
}

/// A part of a log by offsets.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// The first byte, from 0 (default 0).
    from: Option<u64>,
    /// The byte after the last one (default: the end of the log as written so far).
    to: Option<u64>,
}

/// Read a job's log, as written so far.
///
/// Plain text, the output of every step and Hodei's own notes, secrets masked. Without a
/// `Range` header the answer is 200 with the whole log as written when the request came (or the
/// part from `?from=` to `?to=`, byte offsets), whatever its size: it is streamed from storage
/// with a `Content-Length`, so `curl URL > file` keeps all of it. With `Range: bytes=START-END`
/// it is 206 with `Content-Range`; a range answer holds at most 8 MiB (a longer range is cut, and
/// `Content-Range` says what the answer holds). `Hodei-Log-Length` gives the log's length, to
/// resume from. Role: viewer.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/log",
    tag = "jobs",
    params(
        ("id" = u64, Path, description = "The job's id"),
        ("Range" = Option<String>, Header, description = "`bytes=START-END`, `bytes=START-` or `bytes=-SUFFIX`"),
        LogQuery
    ),
    responses(
        (status = 200, description = "The whole log, or the part from `from` to `to`", body = String, content_type = "text/plain"),
        (status = 206, description = "The requested range, at most 8 MiB of it", body = String, content_type = "text/plain"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "The range starts beyond the log", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_job_log(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<u64>,
    query: web::Query<LogQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let job = JobId(*id);
    run_of(&state, job).await?;
    let logs = state.tree.ports.logs.clone();
    let length = logs.len(job).map_err(ApiError::logs)?;
    let range_header = match req.headers().get(header::RANGE) {
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::argument("header `Range`", "(not ASCII)", "`bytes=START-END`")
        })?),
        None => None,
    };
    let mut response = match range_header {
        Some(_) => HttpResponse::PartialContent(),
        None => HttpResponse::Ok(),
    };
    response
        .content_type("text/plain; charset=utf-8")
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header(("Hodei-Log-Length", length.to_string()));
    let Some(text) = range_header else {
        let range = query_range(query.from, query.to, length)?;
        return Ok(response
            .no_chunking(range.end - range.start)
            .streaming(stream_log(logs, job, range)));
    };
    let mut range = parse_range(text, length)?;
    // One range answer holds at most MAX_RANGE bytes: a longer range is read in parts, each
    // answer saying with `Content-Range` which part it is.
    range.end = range.end.min(range.start.saturating_add(MAX_RANGE));
    let bytes = logs
        .read(job, range.start, Some(range.end))
        .await
        .map_err(ApiError::logs)?;
    if !bytes.is_empty() {
        let last = range.start + bytes.len() as u64 - 1;
        response.insert_header((
            header::CONTENT_RANGE,
            format!("bytes {}-{last}/{length}", range.start),
        ));
    }
    Ok(response.body(bytes))
}

/// The bytes `range` of a job's log, read from storage [`STREAM_CHUNK`] bytes at a time as the
/// client takes them. The range was within the log when it was measured, and a log only grows,
/// so every read is whole; a read that comes back short (storage lost bytes) ends the stream
/// with an error rather than with an answer shorter than its `Content-Length`.
fn stream_log(
    logs: std::sync::Arc<dyn hodei_domain::ports::LogStore>,
    job: JobId,
    range: ByteRange,
) -> impl futures_util::Stream<Item = Result<web::Bytes, ApiError>> {
    futures_util::stream::try_unfold(range.start, move |offset| {
        let logs = logs.clone();
        async move {
            if offset >= range.end {
                return Ok(None);
            }
            let to = range.end.min(offset + STREAM_CHUNK);
            let bytes = logs
                .read(job, offset, Some(to))
                .await
                .map_err(ApiError::logs)?;
            if bytes.len() as u64 != to - offset {
                return Err(ApiError::Internal {
                    reason: format!(
                        "the log of job {} has {} bytes from offset {offset}, {} expected",
                        job.0,
                        bytes.len(),
                        to - offset
                    ),
                });
            }
            Ok(Some((web::Bytes::from(bytes), to)))
        }
    })
}

/// Who may approve a job at its gate: the role its `approval` names, and at least an operator.
pub(crate) fn approver(job: &hodei_domain::plan::PlannedJob) -> Role {
    match job.approval {
        Some(approval) if approval.role.allows(Role::Operator) => approval.role,
        _ => Role::Operator,
    }
}

/// The role a gated job's `approval` asks for: its position in the plan of the run's
/// definition is its position in the run.
pub(crate) async fn gate_role(
    state: &ApiState,
    source: String,
    position: usize,
) -> Result<Role, ApiError> {
    let role = state
        .loads
        .run("planning the run's definition", move || {
            let loaded = hodei_domain::load::load(&source);
            let cost = loaded.tree;
            let role = loaded.pipeline.and_then(|pipeline| {
                let plan = hodei_domain::plan::plan(&pipeline);
                let job = plan.jobs.get(position)?;
                Some(approver(job))
            });
            (role, cost)
        })
        .await?;
    role.ok_or_else(|| ApiError::Internal {
        reason: "the run's definition no longer plans to its jobs".into(),
    })
}

/// Approve a job waiting at its approval gate.
///
/// The job is queued at once. Needs the role its `approval` names, and at least operator.
/// A job that does not wait for approval answers 409.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/approve",
    tag = "jobs",
    params(("id" = u64, Path, description = "The job's id")),
    responses(
        (status = 202, description = "Approved; the job is queued", body = JobView),
        (status = 403, description = "The gate needs a stronger role", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job does not wait for approval", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn approve_job(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Operator)?;
    let job = JobId(*id);
    let (record, position) = locate(&state, job).await?;
    let (run, current) = (record.id, &record.jobs[position]);
    if current.state != JobState::WaitingApproval {
        return Err(ApiError::IllegalTransition {
            what: format!("job {}", job.0),
            state: current.state.name(),
            reason: "only a job waiting for approval can be approved",
        });
    }
    caller.require(gate_role(&state, record.source.clone(), position).await?)?;
    state
        .tree
        .orchestrator
        .send(ApproveJob {
            run,
            job,
            by: caller.name.clone(),
        })
        .await
        .map_err(|err| ApiError::actor("the orchestrator", err))?;
    tracing::info!(job_id = %job, run_id = %run, by = %caller.name, "Job approved.");
    Ok(HttpResponse::Accepted().json(view(&state, run, job).await?))
}
