//! Repositories and their webhooks: register, list, show, remove; and the webhook endpoint that
//! a forge calls on a push, a tag or a pull/merge request. A delivery is checked against the
//! repository's webhook secret, read, deduplicated by its id, and, when the pipeline file at
//! the pushed commit wants it (`on:`), starts a run of that commit.

use actix_web::{HttpRequest, HttpResponse, web};
use hodei_actors::messages::{CancelRun, SubmitRun};
use hodei_domain::forge::{Event, Forge, decide, parse_delivery};
use hodei_domain::ids::RunId;
use hodei_domain::load::load_bytes;
use hodei_domain::model::{Name, Role};
use hodei_domain::plan::RunInputs;
use hodei_domain::ports::{Claim, MirrorSource, RepositoryRecord, RunFilter, SecretScope};
use hodei_domain::state::RunState;
use hodei_domain::validate::is_secret_name;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::request;
use crate::views::{
    DeliveryView, DiagnosticView, RepositoryList, RepositoryRequest, RepositoryView,
};

/// The default path of a repository's pipeline file.
pub const DEFAULT_PIPELINE_PATH: &str = ".hodei.yml";

fn valid_name(name: &str) -> Result<(), ApiError> {
    name.parse::<Name>()
        .map(drop)
        .map_err(|err| ApiError::argument("the repository's name", name, err.expected))
}

fn secret_ref(field: &str, name: &str) -> Result<(), ApiError> {
    match is_secret_name(name) {
        true => Ok(()),
        false => Err(ApiError::argument(
            &format!("`{field}`"),
            name,
            "the name of a stored secret of the repository (a variable name)",
        )),
    }
}

/// Checks a registration and makes the record.
fn record(name: &str, wanted: RepositoryRequest, now: i64) -> Result<RepositoryRecord, ApiError> {
    valid_name(name)?;
    let forge: Forge = wanted.forge.parse().map_err(|_| {
        ApiError::argument(
            "`forge`",
            &wanted.forge,
            "github, gitlab or gitea (also for Forgejo)",
        )
    })?;
    let url = wanted.clone_url.trim();
    let scheme_ok = ["https://", "http://", "git://", "ssh://", "file://", "/"]
        .iter()
        .any(|s| url.starts_with(s));
    if !scheme_ok || url.chars().any(char::is_whitespace) {
        return Err(ApiError::argument(
            "`clone_url`",
            url,
            "an https://, http://, git://, ssh:// or file:// URL, or an absolute path",
        ));
    }
    // Credentials belong in a stored secret, not in the URL, which is shown and logged.
    if let Some((_, rest)) = url.split_once("://")
        && rest
            .split('/')
            .next()
            .is_some_and(|host| host.contains('@') && !url.starts_with("ssh://"))
    {
        return Err(ApiError::argument(
            "`clone_url`",
            "(a URL with credentials, not shown)",
            "a URL without `user:password@`: put the credentials in a stored secret and name it in `credentials`",
        ));
    }
    let pipeline_path = wanted
        .pipeline_path
        .unwrap_or_else(|| DEFAULT_PIPELINE_PATH.to_owned());
    if pipeline_path.is_empty()
        || pipeline_path.starts_with('/')
        || pipeline_path.split('/').any(|p| p == ".." || p.is_empty())
    {
        return Err(ApiError::argument(
            "`pipeline_path`",
            &pipeline_path,
            "a relative path in the repository, e.g. `.hodei.yml` or `ci/pipeline.yml`",
        ));
    }
    if let Some(api) = &wanted.status_api
        && !(api.starts_with("https://") || api.starts_with("http://"))
    {
        return Err(ApiError::argument(
            "`status_api`",
            api,
            "the forge's API base URL, e.g. https://api.github.com",
        ));
    }
    secret_ref("webhook_secret", &wanted.webhook_secret)?;
    for (field, value) in [
        ("credentials", &wanted.credentials),
        ("status_token", &wanted.status_token),
    ] {
        if let Some(value) = value {
            secret_ref(field, value)?;
        }
    }
    Ok(RepositoryRecord {
        name: name.to_owned(),
        forge,
        clone_url: url.to_owned(),
        pipeline_path,
        credentials: wanted.credentials,
        webhook_secret: wanted.webhook_secret,
        status_token: wanted.status_token,
        status_api: wanted.status_api,
        created: hodei_domain::ids::Timestamp(now),
    })
}

/// Register a repository, or change its registration. 201 when new, 200 when changed. The
/// secrets it names are stored separately (`PUT /api/v1/secrets/repository/{name}/...`).
/// Role: admin.
#[utoipa::path(
    put,
    path = "/api/v1/repos/{name}",
    tag = "repos",
    params(("name" = String, Path, description = "The repository's name in Hodei")),
    request_body(content = RepositoryRequest, content_type = "application/json"),
    responses(
        (status = 201, body = RepositoryView),
        (status = 200, body = RepositoryView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn put_repo(
    state: web::Data<ApiState>,
    caller: Caller,
    name: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let wanted: RepositoryRequest = request::json(&req, payload, &state.limits, None).await?;
    let now = state.tree.ports.clock.now().0;
    let mut repo = record(&name, wanted, now)?;
    if let Some(existing) = state.repos.repository(&name).await? {
        repo.created = existing.created;
    }
    let new = state.repos.put_repository(&repo).await?;
    tracing::info!(repository = %repo.name, forge = %repo.forge, new, by = %caller.name, "Repository registered.");
    let view = RepositoryView::from(&repo);
    Ok(match new {
        true => HttpResponse::Created().json(view),
        false => HttpResponse::Ok().json(view),
    })
}

/// List the registered repositories. Role: viewer.
#[utoipa::path(
    get,
    path = "/api/v1/repos",
    tag = "repos",
    responses((status = 200, body = RepositoryList)),
    security(("bearer" = []))
)]
pub async fn list_repos(
    state: web::Data<ApiState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let repos = state.repos.repositories().await?;
    Ok(HttpResponse::Ok().json(RepositoryList {
        items: repos.iter().map(RepositoryView::from).collect(),
    }))
}

/// Read a repository's registration. Role: viewer.
#[utoipa::path(
    get,
    path = "/api/v1/repos/{name}",
    tag = "repos",
    params(("name" = String, Path, description = "The repository's name in Hodei")),
    responses(
        (status = 200, body = RepositoryView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_repo(
    state: web::Data<ApiState>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let repo = find(&state, &name).await?;
    Ok(HttpResponse::Ok().json(RepositoryView::from(&repo)))
}

/// Remove a repository: its webhooks are refused from now on. Its runs stay. Role: admin.
#[utoipa::path(
    delete,
    path = "/api/v1/repos/{name}",
    tag = "repos",
    params(("name" = String, Path, description = "The repository's name in Hodei")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete_repo(
    state: web::Data<ApiState>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    if !state.repos.delete_repository(&name).await? {
        return Err(ApiError::NotFound {
            what: format!("repository `{name}`"),
        });
    }
    tracing::info!(repository = %name, by = %caller.name, "Repository removed.");
    Ok(HttpResponse::NoContent().finish())
}

/// Where the repository is fetched from, with the value of its credentials (never logged).
pub(crate) async fn mirror_source(
    state: &ApiState,
    repo: &RepositoryRecord,
) -> Result<MirrorSource, ApiError> {
    let scope = [SecretScope::Repository(repo.name.clone())];
    let credentials = match &repo.credentials {
        Some(secret) => Some(
            state
                .tree
                .ports
                .secrets
                .get(&scope, secret)
                .await?
                .ok_or_else(|| ApiError::MissingSecrets {
                    pipeline: format!("(repository {})", repo.name),
                    names: vec![secret.clone()],
                })?,
        ),
        None => None,
    };
    Ok(MirrorSource {
        repository: repo.name.clone(),
        forge: repo.forge,
        url: repo.clone_url.clone(),
        credentials,
    })
}

pub(crate) async fn find(state: &ApiState, name: &str) -> Result<RepositoryRecord, ApiError> {
    state
        .repos
        .repository(name)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: format!("repository `{name}`"),
        })
}

/// Receive a webhook delivery from the repository's forge.
///
/// Authenticated by the delivery's signature with the repository's webhook secret (GitHub
/// `X-Hub-Signature-256`, Gitea/Forgejo `X-Gitea-Signature`, GitLab `X-Gitlab-Token`), not by a
/// bearer token: a bad or missing one is 401 and starts nothing. A ping is answered 200. A push
/// of a branch or tag, or an opened or updated pull/merge request, reads the pipeline file at
/// its commit from the repository's mirror and, when its `on:` wants it, starts a run of that
/// commit (201). A delivery received again (same delivery id) starts nothing (200,
/// `duplicate`). An event `on:` does not want is 202 with the reason.
#[utoipa::path(
    post,
    path = "/api/v1/repos/{name}/webhook",
    tag = "repos",
    params(("name" = String, Path, description = "The repository's name in Hodei")),
    request_body(content = String, content_type = "application/json", description = "The forge's payload"),
    responses(
        (status = 201, description = "A run was started", body = DeliveryView),
        (status = 200, description = "A ping, or a delivery received before", body = DeliveryView),
        (status = 202, description = "Nothing to start, and why", body = DeliveryView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Bad or missing signature", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The repository cannot be fetched now: the forge retries", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn receive_webhook(
    state: web::Data<ApiState>,
    name: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let repo = find(&state, &name).await?;
    // A push event of many commits is larger than the API's bodies.
    let limits = crate::Limits {
        max_body: state.limits.max_body.max(4 * 1024 * 1024),
        ..state.limits
    };
    let body = request::body(&req, payload, &limits).await?;
    let headers: Vec<(&str, &str)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect();
    let scope = [SecretScope::Repository(repo.name.clone())];
    let Some(secret) = state
        .tree
        .ports
        .secrets
        .get(&scope, &repo.webhook_secret)
        .await?
    else {
        return Err(ApiError::BadSignature {
            reason: format!(
                "the webhook secret `{}` of repository `{}` is not stored (hodei secrets set {} --repository {})",
                repo.webhook_secret, repo.name, repo.webhook_secret, repo.name
            ),
        });
    };
    crate::webhook::verify(repo.forge, &headers[..], &body, &secret).map_err(|err| {
        tracing::warn!(repository = %repo.name, error = %err, "Webhook refused.");
        ApiError::BadSignature {
            reason: err.to_string(),
        }
    })?;
    let delivery = parse_delivery(repo.forge, &headers[..], &body)
        .map_err(|err| ApiError::argument("the webhook payload", "(the body)", &err.to_string()))?;
    let answer = |started: bool, run: Option<RunId>, reason: Option<String>| DeliveryView {
        delivery: delivery.id.clone(),
        started,
        run: run.map(|r| r.0),
        duplicate: false,
        reason,
        superseded: Vec::new(),
    };
    let Some(commit) = delivery.event.commit().map(str::to_owned) else {
        let reason = match &delivery.event {
            Event::Ping => "pong: the hook works".to_owned(),
            Event::Ignored { what } => format!("{what} starts nothing"),
            _ => String::new(),
        };
        let status = match delivery.event {
            Event::Ping => actix_web::http::StatusCode::OK,
            _ => actix_web::http::StatusCode::ACCEPTED,
        };
        return Ok(HttpResponse::build(status).json(answer(false, None, Some(reason))));
    };
    // Fetch what the event names (and, for a pull request, its base) into the mirror.
    let source = mirror_source(&state, &repo).await?;
    let mut wanted = match &delivery.event {
        Event::Push { branch, .. } => vec![format!("refs/heads/{branch}")],
        Event::Tag { tag, .. } => vec![format!("refs/tags/{tag}")],
        Event::PullRequest { base_branch, .. } => vec![format!("refs/heads/{base_branch}")],
        _ => Vec::new(),
    };
    wanted.push(commit.clone());
    let unavailable = |err: hodei_domain::ports::MirrorError| ApiError::Unavailable {
        what: "the repository",
        reason: err.to_string(),
    };
    // A commit the mirror has already (a delivery sent again, a second hook of one push) is
    // read without fetching; otherwise the mirror fetches it first.
    let read = state
        .mirrors
        .read_file(&repo.name, &commit, &repo.pipeline_path)
        .await;
    let text = match read {
        Ok(text) => text,
        Err(_) => {
            state
                .mirrors
                .fetch(&source, &wanted)
                .await
                .map_err(unavailable)?;
            state
                .mirrors
                .read_file(&repo.name, &commit, &repo.pipeline_path)
                .await
                .map_err(unavailable)?
        }
    };
    let Some(text) = text else {
        let reason = format!("commit {commit} has no `{}`", repo.pipeline_path);
        return Ok(HttpResponse::Accepted().json(answer(false, None, Some(reason))));
    };
    let loaded = web::block(move || (load_bytes(&text), text))
        .await
        .map_err(|err| ApiError::Internal {
            reason: format!("loading the pipeline stopped: {err}"),
        })?;
    let (loaded, text) = loaded;
    let Some(pipeline) = loaded.pipeline else {
        return Err(ApiError::InvalidPipeline {
            diagnostics: loaded
                .diagnostics
                .iter()
                .map(DiagnosticView::from)
                .collect(),
        });
    };
    // Changed paths cost a diff: only when a `paths` filter asks for them.
    let filter = match &delivery.event {
        Event::PullRequest { .. } => pipeline.on.pull_request.as_ref(),
        _ => pipeline.on.push.as_ref(),
    };
    let wants_paths = filter.is_some_and(|f| !f.paths.is_empty());
    let changed = match &delivery.event {
        _ if !wants_paths => None,
        Event::Push {
            before: Some(before),
            ..
        } => state
            .mirrors
            .changed_paths(&repo.name, before, &commit, false)
            .await
            .ok(),
        Event::PullRequest { base_branch, .. } => state
            .mirrors
            .changed_paths(
                &repo.name,
                &format!("refs/heads/{base_branch}"),
                &commit,
                true,
            )
            .await
            .ok(),
        _ => None,
    };
    if let Err(reason) = decide(&pipeline.on, &delivery.event, changed.as_deref()) {
        return Ok(HttpResponse::Accepted().json(answer(false, None, Some(reason))));
    }
    let pipeline_name = pipeline.name.to_string();
    let missing =
        super::secrets::missing(&state, &pipeline_name, Some(&repo.name), &pipeline.secrets)
            .await?;
    if !missing.is_empty() {
        return Err(ApiError::MissingSecrets {
            pipeline: pipeline_name,
            names: missing,
        });
    }
    state.accepts_runs().await?;
    let now = state.tree.ports.clock.now();
    if let Claim::Seen { run } = state
        .repos
        .claim_delivery(&repo.name, &delivery.id, now)
        .await?
    {
        let mut seen = answer(false, run, Some("this delivery was received before".into()));
        seen.duplicate = true;
        return Ok(HttpResponse::Ok().json(seen));
    }
    let source_text = String::from_utf8_lossy(&text).into_owned();
    let event = delivery.event.run_event().unwrap_or("push").to_owned();
    let inputs = RunInputs {
        branch: delivery.event.branch().to_owned(),
        event: event.clone(),
        tag: delivery.event.tag().to_owned(),
        commit: commit.clone(),
        secrets: pipeline.secrets.clone(),
        repository: repo.name.clone(),
        server_url: crate::status::server_url(&req),
        default_branch: delivery.default_branch.clone(),
        ..RunInputs::default()
    };
    let submitting = state.submitting(&pipeline_name).await;
    let submitted = state
        .tree
        .orchestrator
        .send(SubmitRun {
            definition: hodei_actors::messages::Definition::Text(source_text),
            inputs,
            limit: Some(state.limits.max_queued),
        })
        .await
        .map_err(|err| ApiError::actor("the orchestrator", err))?;
    drop(submitting);
    let run = submitted.map_err(|err| super::runs::submit_error(err, &pipeline_name))?;
    state
        .repos
        .delivery_started(&repo.name, &delivery.id, run)
        .await?;
    tracing::info!(run_id = %run, repository = %repo.name, delivery = %delivery.id, event = %event, commit = %commit, "Run started by a webhook.");
    let superseded = match &delivery.event {
        Event::Push { branch, .. }
        | Event::PullRequest {
            head_branch: branch,
            ..
        } => {
            let wants = match &delivery.event {
                Event::Push { .. } => pipeline.on.push.as_ref(),
                _ => pipeline.on.pull_request.as_ref(),
            }
            .is_some_and(|f| f.cancel_superseded);
            match wants {
                true => {
                    cancel_superseded(&state, &pipeline_name, &repo.name, branch, &event, run)
                        .await?
                }
                false => Vec::new(),
            }
        }
        _ => Vec::new(),
    };
    crate::status::report(
        &state,
        &repo,
        &commit,
        run,
        &crate::status::server_url(&req),
    );
    let mut started = answer(true, Some(run), None);
    started.superseded = superseded.iter().map(|r| r.0).collect();
    Ok(HttpResponse::Created()
        .insert_header((
            actix_web::http::header::LOCATION,
            format!("/api/v1/runs/{}", run.0),
        ))
        .json(started))
}

/// Cancels the runs of `pipeline` from `repository` for `branch` and `event` that are still
/// going and older than `newer`: a newer push supersedes them.
async fn cancel_superseded(
    state: &ApiState,
    pipeline: &str,
    repository: &str,
    branch: &str,
    event: &str,
    newer: RunId,
) -> Result<Vec<RunId>, ApiError> {
    let filter = RunFilter {
        state: None,
        pipeline: Some(pipeline.to_owned()),
        branch: Some(branch.to_owned()),
    };
    let runs = state
        .tree
        .ports
        .store
        .runs(&filter, Some(newer), 100)
        .await?;
    let mut cancelled = Vec::new();
    for run in runs {
        let going = matches!(run.state, RunState::Pending | RunState::Running);
        if going && run.inputs.repository == repository && run.inputs.event == event {
            state.tree.orchestrator.do_send(CancelRun {
                run: run.id,
                by: format!("hodei (superseded by {newer})"),
            });
            cancelled.push(run.id);
        }
    }
    if !cancelled.is_empty() {
        tracing::info!(run_id = %newer, superseded = ?cancelled, "Superseded runs cancelled.");
    }
    Ok(cancelled)
}
