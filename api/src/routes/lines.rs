//! A job's log by line number and searched on the server (see [`crate::lines`]): what the
//! console's log viewer reads, whatever the log's size.

use actix_web::{HttpResponse, web};
use hodei_domain::ids::JobId;
use hodei_domain::model::Role;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::views::{LogLines, LogSearch};

/// The most lines one page holds.
const MAX_LINES: usize = 5_000;
/// The most line numbers one search answers.
const MAX_FOUND: usize = 100_000;
/// The longest text searched for.
const MAX_QUERY: usize = 1_000;

/// Which lines.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LinesQuery {
    /// The first line, from 1 (default 1).
    #[param(minimum = 1)]
    from: Option<u64>,
    /// How many lines, 1 to 5000 (default 500).
    #[param(minimum = 1, maximum = 5000)]
    count: Option<usize>,
}

/// Fails with 404 unless `job` exists.
async fn existing(state: &ApiState, id: u64) -> Result<JobId, ApiError> {
    let job = JobId(id);
    match state.tree.ports.store.job_run(job).await? {
        Some(_) => Ok(job),
        None => Err(ApiError::NotFound {
            what: format!("job {id}"),
        }),
    }
}

/// Read a job's log by line: lines `from` to `from + count - 1`, as far as the log has them,
/// with how many lines it has and the byte length those were counted in (where a live
/// follower starts). Role: viewer.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/log/lines",
    tag = "jobs",
    params(("id" = u64, Path, description = "The job's id"), LinesQuery),
    responses(
        (status = 200, body = LogLines),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_job_log_lines(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<u64>,
    query: web::Query<LinesQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let from = match query.from {
        None => 1,
        Some(0) => {
            return Err(ApiError::argument(
                "query parameter `from`",
                "0",
                "a line number from 1",
            ));
        }
        Some(n) => n,
    };
    let count = match query.count {
        None => 500,
        Some(n) if (1..=MAX_LINES).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::argument(
                "query parameter `count`",
                &n.to_string(),
                &format!("a number from 1 to {MAX_LINES}"),
            ));
        }
    };
    let job = existing(&state, *id).await?;
    let page = state
        .lines
        .page(state.tree.ports.logs.as_ref(), job, from, count)
        .await
        .map_err(ApiError::logs)?;
    Ok(HttpResponse::Ok().json(LogLines {
        from: page.from,
        lines: page.lines,
        total: page.total,
        length: page.length,
        open: page.open,
    }))
}

/// What to search for.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// The text, 1 to 1000 bytes; ASCII letters match either case, colour codes are skipped.
    #[param(min_length = 1, max_length = 1000)]
    q: String,
    /// The most line numbers to answer, 1 to 100000 (default 10000).
    #[param(minimum = 1, maximum = 100000)]
    limit: Option<usize>,
}

/// Search a job's whole log for a text: the numbers of the lines that contain it, in order.
/// Role: viewer.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/log/search",
    tag = "jobs",
    params(("id" = u64, Path, description = "The job's id"), SearchQuery),
    responses(
        (status = 200, body = LogSearch),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn search_job_log(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<u64>,
    query: web::Query<SearchQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    if query.q.is_empty() || query.q.len() > MAX_QUERY || query.q.contains('\n') {
        return Err(ApiError::argument(
            "query parameter `q`",
            &query.q.chars().take(40).collect::<String>(),
            &format!("a text of 1 to {MAX_QUERY} bytes on one line"),
        ));
    }
    let limit = match query.limit {
        None => 10_000,
        Some(n) if (1..=MAX_FOUND).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::argument(
                "query parameter `limit`",
                &n.to_string(),
                &format!("a number from 1 to {MAX_FOUND}"),
            ));
        }
    };
    let job = existing(&state, *id).await?;
    let found = state
        .lines
        .search(state.tree.ports.logs.as_ref(), job, &query.q, limit)
        .await
        .map_err(ApiError::logs)?;
    Ok(HttpResponse::Ok().json(LogSearch {
        lines: found.lines,
        truncated: found.truncated,
        length: found.length,
    }))
}
