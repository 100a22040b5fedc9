//! Pipelines: apply a definition (a new version when its text changes), list them, read one
//! with its versions, and trigger a run of the latest version.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use hodei_actors::messages::{Definition, SubmitError, SubmitRun};
use hodei_domain::load::{load, load_bytes};
use hodei_domain::model::Role;
use hodei_domain::model::is_env_name;
use hodei_domain::plan::RunInputs;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::request::{self, page_limit};
use crate::views::{
    AppliedPipeline, DiagnosticView, PipelineListItem, PipelinePage, PipelineView, RunView,
    TriggerRequest, VersionView,
};

/// Media types accepted for a pipeline's YAML.
const YAML_TYPES: [&str; 5] = [
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/x-yaml",
    "text/plain",
];

/// Events a run may be started by.
pub(crate) const EVENTS: [&str; 5] = ["manual", "push", "pull_request", "tag", "schedule"];

/// Apply a pipeline definition.
///
/// Stores the YAML as the pipeline's next version when its text differs from the latest's
/// (201), or answers the latest version when it is the same (200). An invalid pipeline is
/// refused with every diagnostic. The `name` in the path must be the pipeline's `name`.
/// Role: operator.
#[utoipa::path(
    put,
    path = "/api/v1/pipelines/{name}",
    tag = "pipelines",
    params(("name" = String, Path, description = "The pipeline's `name`")),
    request_body(content = String, content_type = "application/yaml", description = "The pipeline's YAML text"),
    responses(
        (status = 201, description = "A new version was stored", body = AppliedPipeline),
        (status = 200, description = "The text equals the latest version's", body = AppliedPipeline),
        (status = 400, description = "Invalid pipeline: every diagnostic", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not a YAML media type", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn put_pipeline(
    state: web::Data<ApiState>,
    caller: Caller,
    name: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Operator)?;
    if let Some(media) = request::media_type(&req).filter(|m| !YAML_TYPES.contains(&m.as_str())) {
        return Err(ApiError::UnsupportedMediaType {
            got: media,
            expected: "application/yaml",
        });
    }
    let bytes = request::body(&req, payload, &state.limits).await?;
    let (loaded, bytes) = state
        .loads
        .run("loading the pipeline", move || {
            let loaded = load_bytes(&bytes);
            let cost = loaded.tree;
            ((loaded, bytes), cost)
        })
        .await?;
    let diagnostics: Vec<DiagnosticView> = loaded.diagnostics.iter().map(Into::into).collect();
    let Some(pipeline) = loaded.pipeline else {
        return Err(ApiError::InvalidPipeline { diagnostics });
    };
    let name = name.into_inner();
    if pipeline.name.as_str() != name {
        return Err(ApiError::argument(
            "the path's pipeline name",
            &name,
            &format!("the pipeline's own `name`, `{}`", pipeline.name.as_str()),
        ));
    }
    // A loaded pipeline was valid UTF-8.
    let source = String::from_utf8_lossy(&bytes).into_owned();
    let store = &state.tree.ports.store;
    let _applying = state.applying(&name).await;
    let before = store.pipeline(&name).await?.map(|p| p.version);
    let now = state.tree.ports.clock.now();
    let stored = store.put_pipeline(&name, &source, now).await?;
    let changed = before != Some(stored.version);
    if changed && let Some(timer) = &state.tree.timer {
        timer.do_send(hodei_actors::timer::PipelinesChanged);
    }
    tracing::info!(pipeline = %name, version = stored.version, changed, by = %caller.name, "Pipeline applied.");
    let body = AppliedPipeline {
        name: stored.name,
        version: stored.version,
        created: stored.created.into(),
        changed,
        warnings: diagnostics,
    };
    Ok(match changed {
        true => HttpResponse::Created()
            .insert_header((header::LOCATION, format!("/api/v1/pipelines/{name}")))
            .json(body),
        false => HttpResponse::Ok().json(body),
    })
}

/// Paging of pipelines.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PipelineQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// List pipelines, by name. Role: viewer.
#[utoipa::path(
    get,
    path = "/api/v1/pipelines",
    tag = "pipelines",
    params(PipelineQuery),
    responses((status = 200, body = PipelinePage)),
    security(("bearer" = []))
)]
pub async fn list_pipelines(
    state: web::Data<ApiState>,
    caller: Caller,
    query: web::Query<PipelineQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(HttpResponse::Ok().json(list(&state, query.cursor.as_deref(), query.limit).await?))
}

/// A page of pipelines by name, after `cursor`.
pub(crate) async fn list(
    state: &ApiState,
    cursor: Option<&str>,
    limit: Option<u32>,
) -> Result<PipelinePage, ApiError> {
    let limit = page_limit(limit)?;
    let found = state.tree.ports.store.pipelines(cursor, limit).await?;
    let next_cursor = (found.len() == limit as usize)
        .then(|| found.last().map(|p| p.name.clone()))
        .flatten();
    Ok(PipelinePage {
        items: found.into_iter().map(PipelineListItem::from).collect(),
        next_cursor,
    })
}

/// Read a pipeline: its latest definition and every version. Role: viewer.
#[utoipa::path(
    get,
    path = "/api/v1/pipelines/{name}",
    tag = "pipelines",
    params(("name" = String, Path, description = "The pipeline's `name`")),
    responses(
        (status = 200, body = PipelineView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_pipeline(
    state: web::Data<ApiState>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(HttpResponse::Ok().json(read(&state, &name).await?))
}

/// A pipeline's latest definition and its versions, or 404.
pub(crate) async fn read(state: &ApiState, name: &str) -> Result<PipelineView, ApiError> {
    let store = &state.tree.ports.store;
    let latest = store
        .pipeline(name)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: format!("pipeline `{name}`"),
        })?;
    let versions = store.pipeline_versions(name).await?;
    Ok(PipelineView {
        name: latest.name,
        version: latest.version,
        source: latest.source,
        versions: versions.into_iter().map(VersionView::from).collect(),
    })
}

/// One stored version of a pipeline, or 404.
pub(crate) async fn version(
    state: &ApiState,
    name: &str,
    version: u32,
) -> Result<hodei_domain::ports::PipelineVersion, ApiError> {
    state
        .tree
        .ports
        .store
        .pipeline_version(name, version)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: format!("pipeline `{name}` version {version}"),
        })
}

/// Read the YAML text of one version of a pipeline. Role: viewer.
#[utoipa::path(
    get,
    path = "/api/v1/pipelines/{name}/versions/{version}",
    tag = "pipelines",
    params(
        ("name" = String, Path, description = "The pipeline's `name`"),
        ("version" = u32, Path, description = "The version, from 1"),
    ),
    responses(
        (status = 200, description = "The YAML text", body = String, content_type = "application/yaml"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_pipeline_version(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<(String, u32)>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let (name, number) = path.into_inner();
    let stored = version(&state, &name, number).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/yaml")
        .body(stored.source))
}

/// Trigger a run of a pipeline's latest version.
///
/// The body may be empty: the run then takes every parameter's default, no branch, event
/// `manual`. A pipeline whose `on:` has no `manual` entry is refused (409 `start-not-allowed`)
/// unless the body sets `override_triggers`, which the run's first event records. The run gets
/// the stored secrets its pipeline names (`secrets:`); one that is not stored is refused (409
/// `missing-secret`). Answers 201 with the run once it is durable. Role: operator.
#[utoipa::path(
    post,
    path = "/api/v1/pipelines/{name}/runs",
    tag = "runs",
    params(("name" = String, Path, description = "The pipeline's `name`")),
    request_body(content = Option<TriggerRequest>, content_type = "application/json", description = "Optional: an empty body takes every default"),
    responses(
        (status = 201, description = "The run, accepted and durable", body = RunView),
        (status = 400, description = "Invalid JSON or parameters", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`start-not-allowed`: `on:` has no `manual`; `missing-secret`: a secret the pipeline names is not stored", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The queue is full (`Retry-After`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The server is shutting down (`Retry-After`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn trigger_run(
    state: web::Data<ApiState>,
    caller: Caller,
    name: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Operator)?;
    let trigger: TriggerRequest = request::json(
        &req,
        payload,
        &state.limits,
        Some(TriggerRequest::default()),
    )
    .await?;
    let run = submit(&state, &caller, &name, trigger).await?;
    let view = super::runs::view(&state, run).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/runs/{}", run.0)))
        .json(view))
}

/// Submits a run of pipeline `name`'s latest version, unless the server refuses new runs now;
/// the caller's role is checked already.
pub(crate) async fn submit(
    state: &ApiState,
    caller: &Caller,
    name: &str,
    trigger: TriggerRequest,
) -> Result<hodei_domain::ids::RunId, ApiError> {
    state.accepts_runs().await?;
    check_values(&trigger)?;
    let event = trigger.event.unwrap_or_else(|| "manual".to_owned());
    if !EVENTS.contains(&event.as_str()) {
        return Err(ApiError::argument(
            "`event`",
            &event,
            &format!("one of {}", EVENTS.join(", ")),
        ));
    }
    if let Some(bad) = trigger
        .env
        .keys()
        .find(|k| !is_env_name(k) || k.starts_with("HODEI_"))
    {
        return Err(ApiError::argument(
            "a key of `env`",
            bad,
            "a variable name (letters, digits and `_`, not starting with a digit or `HODEI_`)",
        ));
    }
    let store = &state.tree.ports.store;
    // Held until the run is submitted: no version is applied between reading and submitting.
    let submitting = state.submitting(name).await;
    let pipeline = store
        .pipeline(name)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: format!("pipeline `{name}`"),
        })?;
    // What the definition allows and needs: who may start it, which secrets it takes.
    let source = pipeline.source.clone();
    let loaded = web::block(move || load(&source).pipeline)
        .await
        .map_err(|err| ApiError::Internal {
            reason: format!("loading the pipeline stopped: {err}"),
        })?;
    let Some(loaded) = loaded else {
        return Err(ApiError::IllegalTransition {
            what: format!("pipeline `{name}` version {}", pipeline.version),
            state: "no longer valid",
            reason: "apply a corrected definition with PUT /api/v1/pipelines/{name}",
        });
    };
    let overridden_by = match (loaded.on.manual, trigger.override_triggers) {
        (true, _) => String::new(),
        (false, true) => caller.name.clone(),
        (false, false) => {
            let kinds = loaded.on.kinds();
            return Err(ApiError::StartNotAllowed {
                pipeline: name.to_owned(),
                allowed: match kinds.is_empty() {
                    true => "nothing".into(),
                    false => format!("{} only", kinds.join(", ")),
                },
            });
        }
    };
    let missing = super::secrets::missing(state, name, None, &loaded.secrets).await?;
    if !missing.is_empty() {
        return Err(ApiError::MissingSecrets {
            pipeline: name.to_owned(),
            names: missing,
        });
    }
    let inputs = RunInputs {
        branch: trigger.branch,
        event,
        tag: trigger.tag,
        commit: String::new(),
        params: trigger.params,
        env: trigger.env.into_iter().collect(),
        secrets: loaded.secrets,
        repository: String::new(),
        server_url: String::new(),
        default_branch: String::new(),
        overridden_by,
    };
    let submitted = state
        .tree
        .orchestrator
        .send(SubmitRun {
            definition: Definition::Stored(pipeline.clone()),
            inputs,
            limit: Some(state.limits.max_queued),
        })
        .await
        .map_err(|err| ApiError::actor("the orchestrator", err))?;
    drop(submitting);
    let run = match submitted {
        Ok(run) => run,
        // A stored version that no longer loads: this Hodei's rules changed since it was
        // applied. The client can apply it again once fixed.
        Err(err @ SubmitError::InvalidPipeline(_)) => {
            return Err(ApiError::IllegalTransition {
                what: format!("pipeline `{name}` version {}", pipeline.version),
                state: "no longer valid",
                reason: stale_pipeline(err),
            });
        }
        Err(err) => return Err(super::runs::submit_error(err, name)),
    };
    tracing::info!(run_id = %run, pipeline = %name, by = %caller.name, "Run triggered.");
    Ok(run)
}

/// The longest environment variable (`NAME=value` and its ending NUL) a process may be given:
/// Linux's `MAX_ARG_STRLEN`, 128 KiB.
pub const MAX_VARIABLE: usize = 128 * 1024;

/// Refuses values that can never reach a step, where each is an environment variable (`branch`
/// as `HODEI_BRANCH`, `tag` as `HODEI_TAG`, a parameter or an `env` entry under its name): a
/// NUL byte (a variable ends at the first one), or a variable over [`MAX_VARIABLE`].
fn check_values(trigger: &TriggerRequest) -> Result<(), ApiError> {
    let fields = [
        ("`branch`".to_owned(), "HODEI_BRANCH", &trigger.branch),
        ("`tag`".to_owned(), "HODEI_TAG", &trigger.tag),
    ];
    let params = trigger
        .params
        .iter()
        .map(|(k, v)| (format!("`params.{}`", k.escape_debug()), k.as_str(), v));
    let env = trigger
        .env
        .iter()
        .map(|(k, v)| (format!("`env.{k}`"), k.as_str(), v));
    for (field, variable, value) in fields.into_iter().chain(params).chain(env) {
        let room = MAX_VARIABLE.saturating_sub(variable.len() + 2);
        let expected = format!(
            "text without NUL bytes, of at most {room} bytes (`{}=` and the value within \
             128 KiB, the most a process's environment variable may hold)",
            variable.escape_debug()
        );
        if let Some(at) = variable.find('\0') {
            return Err(ApiError::argument(
                &field,
                &format!("a name with a NUL byte at byte {at}"),
                "a name without NUL bytes",
            ));
        }
        if let Some(at) = value.find('\0') {
            return Err(ApiError::argument(
                &field,
                &format!("a text with a NUL byte at byte {at}"),
                &expected,
            ));
        }
        if value.len() > room {
            return Err(ApiError::argument(
                &field,
                &format!("a text of {} bytes", value.len()),
                &expected,
            ));
        }
    }
    Ok(())
}

/// The reason of an invalid stored pipeline, logged in full; the answer names the fix.
fn stale_pipeline(err: SubmitError) -> &'static str {
    tracing::warn!(error = %err, "A stored pipeline no longer loads.");
    "apply a corrected definition with PUT /api/v1/pipelines/{name}"
}
