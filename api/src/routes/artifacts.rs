//! Artifacts: list a run's, download one.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use futures_util::StreamExt as _;
use hodei_domain::ids::{JobId, RunId};
use hodei_domain::model::Role;
use hodei_domain::ports::{Artifact, FileError};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::views::{ArtifactList, ArtifactView};

/// The artifact to download.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ArtifactQuery {
    /// The artifact's path in the job's workspace, e.g. `dist/app.js`.
    path: String,
}

fn file_error(err: FileError) -> ApiError {
    ApiError::Internal {
        reason: err.to_string(),
    }
}

/// The URL of an artifact's download.
pub fn download_url(run: RunId, artifact: &Artifact) -> String {
    let path = crate::client::segment(&artifact.path);
    format!(
        "/api/v1/runs/{}/artifacts/{}?path={path}",
        run.0, artifact.job.0
    )
}

/// The artifacts of a run, as views.
pub(crate) async fn list(state: &ApiState, run: RunId) -> Result<Vec<ArtifactView>, ApiError> {
    // 404 for a run that does not exist.
    super::runs::record(state, run).await?;
    let artifacts = state
        .tree
        .ports
        .files
        .artifacts(run)
        .await
        .map_err(file_error)?;
    Ok(artifacts.into_iter().map(|a| view(run, a)).collect())
}

/// An artifact of a run, as the API shows it.
pub(crate) fn view(run: RunId, artifact: Artifact) -> ArtifactView {
    ArtifactView {
        url: download_url(run, &artifact),
        job_id: artifact.job.0,
        job: artifact.job_name,
        path: artifact.path,
        size: artifact.size,
        sha256: artifact.sha256,
    }
}

/// List the files the run's jobs kept as artifacts. Role: viewer.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/artifacts",
    tag = "runs",
    params(("id" = u64, Path, description = "The run's id")),
    responses(
        (status = 200, body = ArtifactList),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_run_artifacts(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let artifacts = list(&state, RunId(*id)).await?;
    Ok(HttpResponse::Ok().json(ArtifactList { artifacts }))
}

/// Download one artifact of a job of the run, as its bytes. Role: viewer.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/artifacts/{job}",
    tag = "runs",
    params(
        ("id" = u64, Path, description = "The run's id"),
        ("job" = u64, Path, description = "The id of the job that kept it"),
        ArtifactQuery
    ),
    responses(
        (status = 200, description = "The file", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn download_artifact(
    state: web::Data<ApiState>,
    caller: Caller,
    ids: web::Path<(u64, u64)>,
    query: web::Query<ArtifactQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let (run, job) = (RunId(ids.0), JobId(ids.1));
    let not_found = || ApiError::NotFound {
        what: format!(
            "artifact `{}` of job {} of run {}",
            query.path, job.0, run.0
        ),
    };
    let path = state
        .tree
        .ports
        .files
        .artifact_file(run, job, &query.path)
        .ok_or_else(not_found)?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| not_found())?;
    let size = file
        .metadata()
        .await
        .map_err(|err| ApiError::Internal {
            reason: format!("reading an artifact: {err}"),
        })?
        .len();
    let name = query
        .path
        .rsplit('/')
        .next()
        .unwrap_or("artifact")
        .replace(['"', '\\'], "_");
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .body(file_body(file, size)))
}

/// A file of `size` bytes as a response body, read in chunks as the client takes them.
pub(crate) fn file_body(
    file: tokio::fs::File,
    size: u64,
) -> actix_web::body::SizedStream<
    futures_util::stream::LocalBoxStream<'static, Result<web::Bytes, std::io::Error>>,
> {
    let chunks = futures_util::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buffer = vec![0; 64 * 1024];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok(web::Bytes::from(buffer)), file))
            }
            Err(err) => Some((Err(err), file)),
        }
    })
    .boxed_local();
    actix_web::body::SizedStream::new(size, chunks)
}
