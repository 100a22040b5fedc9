//! What a job on an agent needs beyond its steps, each call authenticated by the job token of
//! the claim and fenced by the lease's epoch (`409 lease-lost` otherwise): where its run's
//! repository is fetched from (with its credentials, which no other answer carries), the
//! upload of the job's artifacts when it ends, and the artifacts of the jobs it needs. The
//! server keeps the artifacts exactly as those of jobs on its own worker
//! ([`FileStore`](hodei_domain::ports::FileStore)). See `docs/agents.md`.

use std::path::Path;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt as _;
use hodei_actors::agents::LeaseRun;
use hodei_domain::ids::{JobId, RunId};
use hodei_domain::ports::FileError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::agents::{agents, job_token};
use crate::ApiState;
use crate::error::{ApiError, Problem};
use crate::views::ArtifactList;

/// The media type of archives of artifacts: a plain tar of regular files and directories.
pub const TAR: &str = "application/x-tar";
/// What a tar adds to each file at most (its headers, a long name, padding), for the cap on an
/// upload's body.
const TAR_OVERHEAD_PER_FILE: u64 = 10 * 1024;

/// The lease a call is about.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LeaseQuery {
    /// The lease's epoch.
    pub epoch: u64,
}

/// An upload of a job's artifacts.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// The lease's epoch.
    pub epoch: u64,
    /// How many files the archive holds.
    pub files: u64,
    /// The bytes of those files together (checked against `artifacts_max_job_mib` before
    /// anything is received).
    pub bytes: u64,
}

/// The artifacts of the jobs a job needs.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NeedsQuery {
    /// The lease's epoch.
    pub epoch: u64,
    /// The ids of the needed jobs of the same run, comma-separated.
    pub jobs: String,
}

/// Where the repository of a job's run is fetched from, for the agent's own mirror.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct CheckoutSource {
    /// The registered repository's name: the agent's mirror is named for it.
    pub repository: String,
    /// `github`, `gitlab` or `gitea`: the user name that goes with a bare token.
    pub forge: String,
    pub url: String,
    /// `USER:TOKEN` or a bare token, sent to `git` as HTTP basic authentication; absent for a
    /// public repository. Only this answer carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    /// Refs to fetch with the commit (the run's branch or tag).
    pub refs: Vec<String>,
    /// The run's commit.
    pub commit: String,
}

impl std::fmt::Debug for CheckoutSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckoutSource")
            .field("repository", &self.repository)
            .field("url", &self.url)
            .field("credentials", &self.credentials.as_ref().map(|_| "***"))
            .field("commit", &self.commit)
            .finish()
    }
}

fn lease_query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|err| {
            ApiError::argument(
                "the query string",
                req.query_string(),
                &format!("the lease's `epoch` and what the endpoint documents ({err})"),
            )
        })
}

/// The run of the job whose lease the job token (by its digest) opens.
async fn lease_run(
    state: &ApiState,
    token: [u8; 32],
    job: JobId,
    epoch: u64,
) -> Result<RunId, ApiError> {
    let (_, desk) = agents(state)?;
    Ok(desk
        .send(LeaseRun { token, job, epoch })
        .await
        .map_err(|err| ApiError::actor("the agent desk", err))??)
}

/// Where the repository of the job's run is fetched from, with its credentials, for the
/// agent's own mirror; the job's workspace is then checked out from that mirror at the run's
/// commit. Answered with `Cache-Control: no-store`; `404` when the run has no repository.
/// Job token of the claim.
#[utoipa::path(
    get,
    path = "/api/v1/agent/jobs/{id}/checkout",
    tag = "agents",
    params(("id" = u64, Path, description = "The job"), LeaseQuery),
    responses(
        (status = 200, body = CheckoutSource),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn agent_job_checkout(
    state: web::Data<ApiState>,
    req: HttpRequest,
    job: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let token = job_token(&req)?;
    let query: LeaseQuery = lease_query(&req)?;
    let job = JobId(*job);
    let run = lease_run(&state, token, job, query.epoch).await?;
    let record = super::runs::record(&state, run).await?;
    let inputs = &record.inputs;
    let (Some(name), false) = (inputs.repository(), inputs.commit.is_empty()) else {
        return Err(ApiError::NotFound {
            what: format!("a repository and commit of run {} to check out", run.0),
        });
    };
    let repo = super::repos::find(&state, name).await?;
    let source = super::repos::mirror_source(&state, &repo).await?;
    let refs = match inputs.event.as_str() {
        "push" if !inputs.branch.is_empty() => vec![format!("refs/heads/{}", inputs.branch)],
        "tag" if !inputs.tag.is_empty() => vec![format!("refs/tags/{}", inputs.tag)],
        _ => Vec::new(),
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(CheckoutSource {
            repository: source.repository,
            forge: source.forge.name().to_owned(),
            url: source.url,
            credentials: source.credentials,
            refs,
            commit: inputs.commit.clone(),
        }))
}

/// Writes the body to the new file `to`: refused with 413 past `cap` bytes, and with 408 when
/// no byte comes for the body timeout.
async fn body_to_file(
    mut payload: web::Payload,
    to: &Path,
    cap: u64,
    idle: Duration,
) -> Result<u64, ApiError> {
    use tokio::io::AsyncWriteExt as _;
    let disk = |err: std::io::Error| ApiError::Internal {
        reason: format!("cannot write an upload to {}: {err}", to.display()),
    };
    let mut file = tokio::fs::File::create(to).await.map_err(disk)?;
    let mut received = 0u64;
    loop {
        let chunk = match tokio::time::timeout(idle, payload.next()).await {
            Ok(Some(chunk)) => chunk.map_err(|err| ApiError::InvalidArgument {
                name: "the request body".into(),
                value: "unreadable".into(),
                expected: format!("a complete body ({err})"),
            })?,
            Ok(None) => break,
            Err(_) => {
                return Err(ApiError::RequestTimeout {
                    after: idle,
                    received: usize::try_from(received).unwrap_or(usize::MAX),
                });
            }
        };
        received += chunk.len() as u64;
        if received > cap {
            return Err(ApiError::PayloadTooLarge {
                limit: usize::try_from(cap).unwrap_or(usize::MAX),
            });
        }
        file.write_all(&chunk).await.map_err(disk)?;
    }
    file.sync_all().await.map_err(disk)?;
    Ok(received)
}

/// Keeps the job's artifacts: a tar (`application/x-tar`) of regular files and directories at
/// their workspace paths, sent by the agent when the job's steps succeeded, before the
/// attempt's last report. All or nothing, within `artifacts_max_job_mib` (`413
/// artifacts-too-large`, said before anything is received when `bytes` is over it); they
/// replace what an earlier upload of the job kept. Listed and downloaded as any run's
/// artifacts. Job token of the claim.
#[utoipa::path(
    put,
    path = "/api/v1/agent/jobs/{id}/artifacts",
    tag = "agents",
    params(("id" = u64, Path, description = "The job"), UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses(
        (status = 201, body = ArtifactList),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn upload_agent_artifacts(
    state: web::Data<ApiState>,
    req: HttpRequest,
    job: web::Path<u64>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let token = job_token(&req)?;
    let query: UploadQuery = lease_query(&req)?;
    let job = JobId(*job);
    let run = lease_run(&state, token, job, query.epoch).await?;
    let limit = state.limits.max_artifacts;
    if query.bytes > limit {
        return Err(ApiError::files(FileError::TooLarge {
            what: format!("the job's artifacts ({} files)", query.files),
            size: query.bytes,
            limit,
            setting: "artifacts_max_job_mib",
        }));
    }
    let record = super::runs::record(&state, run).await?;
    let name = record
        .jobs
        .iter()
        .find(|j| j.id == job)
        .map(|j| j.name.clone())
        .ok_or_else(|| ApiError::NotFound {
            what: format!("job {} in run {}", job.0, run.0),
        })?;
    let files = state.tree.ports.files.clone();
    let dir = files.scratch().map_err(ApiError::files)?;
    let archive = dir.join("artifacts.tar");
    let cap = query
        .bytes
        .saturating_add(TAR_OVERHEAD_PER_FILE.saturating_mul(query.files.saturating_add(2)));
    let kept = match body_to_file(payload, &archive, cap, state.limits.body_timeout).await {
        Ok(_) => files
            .receive_artifacts(run, job, &name, &archive)
            .await
            .map_err(ApiError::files),
        Err(err) => Err(err),
    };
    files.discard(&dir);
    let artifacts = kept?
        .into_iter()
        .map(|a| super::artifacts::view(run, a))
        .collect();
    Ok(HttpResponse::Created().json(ArtifactList { artifacts }))
}

/// The artifacts of the jobs of the same run that the job needs, as one tar
/// (`application/x-tar`) at their workspace paths, for the agent to put in the job's workspace
/// before its steps; `Hodei-Files` says how many files it holds. Job token of the claim.
#[utoipa::path(
    get,
    path = "/api/v1/agent/jobs/{id}/needed-artifacts",
    tag = "agents",
    params(("id" = u64, Path, description = "The job"), NeedsQuery),
    responses(
        (status = 200, description = "The archive", body = Vec<u8>, content_type = "application/x-tar"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn download_needed_artifacts(
    state: web::Data<ApiState>,
    req: HttpRequest,
    job: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let token = job_token(&req)?;
    let query: NeedsQuery = lease_query(&req)?;
    let run = lease_run(&state, token, JobId(*job), query.epoch).await?;
    let jobs = query
        .jobs
        .split(',')
        .filter(|id| !id.is_empty())
        .map(|id| id.trim().parse().map(JobId))
        .collect::<Result<Vec<JobId>, _>>()
        .map_err(|_| {
            ApiError::argument(
                "query parameter `jobs`",
                &query.jobs,
                "job ids, comma-separated",
            )
        })?;
    let files = state.tree.ports.files.clone();
    let dir = files.scratch().map_err(ApiError::files)?;
    let archive = dir.join("needs.tar");
    let packed = files.pack_artifacts(run, &jobs, &archive).await;
    // Open, the file outlives its directory: nothing is left behind, whatever the client does.
    let opened = tokio::fs::File::open(&archive).await;
    files.discard(&dir);
    let count = packed.map_err(ApiError::files)?;
    let file = opened.map_err(|err| ApiError::Internal {
        reason: format!("cannot read the archive of artifacts: {err}"),
    })?;
    let size = file
        .metadata()
        .await
        .map_err(|err| ApiError::Internal {
            reason: format!("cannot read the archive of artifacts: {err}"),
        })?
        .len();
    Ok(HttpResponse::Ok()
        .content_type(TAR)
        .insert_header(("Hodei-Files", count.to_string()))
        .body(super::artifacts::file_body(file, size)))
}
