//! The OpenAPI 3.1 document and the router, from ONE list of handlers: every route is
//! documented and every documented operation is routed, by construction. The document is
//! generated from the handlers' `#[utoipa::path]` attributes; [`configure`] walks it and binds
//! each operation to the handler of the same name (its `operationId`).

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, Route, web};
use utoipa::openapi::path::PathItem;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ApiError, Problem};
use hodei_domain::model::Role;

/// Declares the documented handlers: the OpenAPI derive and the operation-to-handler table.
macro_rules! api {
    ($($module:ident :: $handler:ident),* $(,)?) => {
        /// The OpenAPI document of the API.
        #[derive(OpenApi)]
        #[openapi(
            info(
                title = "Hodei API",
                description = "Pipelines, runs, jobs, logs, tokens and the audit trail of a Hodei server. \
                    Every endpoint except /healthz, /readyz, /metrics, /api/v1/repos/{name}/webhook (signed by the forge) and /api/v1/agent/register (a registration token in the body) needs `Authorization: Bearer <token>` (for /api/v1/agent/*: the agent's credential). \
                    Errors are application/problem+json with a stable `code`.",
            ),
            paths($(crate::routes::$module::$handler),*),
            components(schemas(Problem)),
            modifiers(&BearerAuth, &ProtectedAnswers, &Enums),
            tags(
                (name = "pipelines", description = "Pipeline definitions and their versions"),
                (name = "runs", description = "Runs of pipelines"),
                (name = "jobs", description = "Jobs of runs and their logs"),
                (name = "tokens", description = "API tokens (admin)"),
                (name = "repos", description = "Repositories and the webhooks of their forges"),
                (name = "secrets", description = "Stored secrets for runs: set, list, delete; values never answered"),
                (name = "events", description = "The audit trail"),
                (name = "workers", description = "Workers and the queue"),
                (name = "agents", description = "Agents on other machines: registration, and the protocol they speak (see docs/agents.md)"),
                (name = "system", description = "Health, metrics and this document"),
            )
        )]
        pub struct ApiDoc;

        /// The handler documented with `operation_id`, as a route for `method`.
        fn handler(operation_id: &str, method: Method) -> Option<Route> {
            match operation_id {
                $(stringify!($handler) => Some(web::method(method).to(crate::routes::$module::$handler)),)*
                _ => None,
            }
        }
    };
}

api!(
    pipelines::put_pipeline,
    pipelines::list_pipelines,
    pipelines::get_pipeline,
    pipelines::get_pipeline_version,
    pipelines::trigger_run,
    runs::list_runs,
    runs::get_run,
    runs::get_run_definition,
    runs::cancel_run,
    runs::rerun_run,
    runs::retry_run,
    artifacts::list_run_artifacts,
    artifacts::download_artifact,
    jobs::get_job,
    jobs::get_job_log,
    lines::get_job_log_lines,
    lines::search_job_log,
    jobs::approve_job,
    tokens::create_token,
    tokens::list_tokens,
    tokens::revoke_token,
    secrets::put_secret,
    secrets::list_secrets,
    secrets::delete_secret,
    repos::put_repo,
    repos::list_repos,
    repos::get_repo,
    repos::delete_repo,
    repos::receive_webhook,
    events::list_events,
    streams::stream_job_log,
    streams::stream_run_events,
    streams::stream_events,
    workers::get_queue,
    workers::list_workers,
    workers::drain_worker,
    workers::undrain_worker,
    agents::create_agent_token,
    agents::list_agent_tokens,
    agents::revoke_agent_token,
    agents::list_agents,
    agents::delete_agent,
    agents::register_agent,
    agents::poll_agent,
    agents::agent_doorbell,
    agents::agent_heartbeat,
    agents::append_agent_log,
    agents::report_agent_events,
    agents::hand_back_job,
    agents::agent_leaving,
    system::healthz,
    system::readyz,
    system::cluster,
    system::metrics,
    system::openapi,
);

/// Declares the bearer token scheme.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Documents on every protected operation the answers every protected operation may give: 401
/// (no token, unknown or revoked) and 400 (a path segment, query or header the handler cannot
/// use).
struct ProtectedAnswers;

impl Modify for ProtectedAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, ResponseBuilder};
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(utoipa::openapi::Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            for operation in operations_mut(item) {
                if operation.security.as_ref().is_none_or(Vec::is_empty) {
                    continue;
                }
                let answers = &mut operation.responses.responses;
                answers.entry("401".into()).or_insert_with(|| {
                    problem("No token, or an unknown or revoked one (`WWW-Authenticate: Bearer`)")
                        .into()
                });
                answers.entry("400".into()).or_insert_with(|| {
                    problem("A path segment, query parameter or header with an unusable value")
                        .into()
                });
            }
        }
    }
}

/// The values of the fields and parameters that take one of a few words: the document lists
/// them as enums, from the same lists the handlers use.
struct Enums;

/// The names of run states, as `GET /runs?status=` takes them and runs show them.
pub fn run_states() -> Vec<&'static str> {
    hodei_domain::state::RunState::ALL
        .iter()
        .map(|s| s.name())
        .collect()
}

/// Job states, as the API shows them; a step has those a job has outside a queue.
const JOB_STATES: [&str; 10] = hodei_domain::state::JobState::NAMES;

fn step_states() -> Vec<&'static str> {
    JOB_STATES
        .into_iter()
        .filter(|s| !["waiting_approval", "queued", "placed"].contains(s))
        .collect()
}

impl Modify for Enums {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::Schema;
        let runs = run_states();
        let steps = step_states();
        let roles: Vec<String> = [Role::Viewer, Role::Operator, Role::Admin]
            .iter()
            .map(Role::to_string)
            .collect();
        let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
        let properties: [(&str, &str, &[&str]); 12] = [
            ("TokenRequest", "role", &roles),
            ("TokenView", "role", &roles),
            ("CreatedToken", "role", &roles),
            ("RunListItem", "state", &runs),
            ("RunView", "state", &runs),
            ("JobView", "state", &JOB_STATES),
            ("StepView", "state", &steps),
            ("DiagnosticView", "severity", &["error", "warning"]),
            ("TriggerRequest", "event", &crate::routes::pipelines::EVENTS),
            ("RunListItem", "event", &crate::routes::pipelines::EVENTS),
            (
                "WorkerItem",
                "state",
                &crate::routes::workers::WORKER_STATES,
            ),
            ("Health", "status", &["ok", "ready", "not-ready"]),
        ];
        let schemas = &mut openapi
            .components
            .get_or_insert_with(Default::default)
            .schemas;
        for (schema, property, values) in properties {
            let Some(RefOr::T(Schema::Object(object))) = schemas.get_mut(schema) else {
                continue;
            };
            if let Some(RefOr::T(Schema::Object(field))) = object.properties.get_mut(property) {
                let mut words: Vec<serde_json::Value> =
                    values.iter().map(|v| (*v).into()).collect();
                // An optional field may also be null.
                if serde_json::to_value(&field.schema_type)
                    .is_ok_and(|t| t.as_array().is_some_and(|t| t.contains(&"null".into())))
                {
                    words.push(serde_json::Value::Null);
                }
                field.enum_values = Some(words);
            }
        }
        if let Some(list) = openapi
            .paths
            .paths
            .get_mut("/api/v1/runs")
            .and_then(|item| item.get.as_mut())
        {
            for param in list.parameters.iter_mut().flatten() {
                let RefOr::T(param) = param else { continue };
                if param.name == "status"
                    && let Some(RefOr::T(Schema::Object(field))) = param.schema.as_mut()
                {
                    field.enum_values = Some(runs.iter().map(|v| (*v).into()).collect());
                }
            }
        }
    }
}

fn operations_mut(
    item: &mut PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// The operations of a path, with their methods.
pub fn operations(item: &PathItem) -> Vec<(Method, &utoipa::openapi::path::Operation)> {
    [
        (Method::GET, &item.get),
        (Method::PUT, &item.put),
        (Method::POST, &item.post),
        (Method::DELETE, &item.delete),
        (Method::PATCH, &item.patch),
        (Method::HEAD, &item.head),
        (Method::OPTIONS, &item.options),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_ref().map(|op| (method, op)))
    .collect()
}

/// Registers one resource per documented path, with a route per documented operation, and
/// answers other methods on it with 405.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for (path, item) in ApiDoc::openapi().paths.paths {
        let mut resource = web::resource(path.as_str());
        for (method, operation) in operations(&item) {
            let id = operation.operation_id.as_deref().unwrap_or_default();
            match handler(id, method) {
                Some(route) => resource = resource.route(route),
                // Cannot happen: the document and the table come from one list.
                None => {
                    tracing::error!(path = %path, operation = id, "A documented operation has no handler.")
                }
            }
        }
        cfg.service(resource.default_service(web::to(method_not_allowed)));
    }
}

async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        path: req.path().to_owned(),
    })
}

/// Any path no route has.
pub async fn no_route(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NoRoute {
        path: req.path().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_operation_has_a_handler_and_a_bearer_unless_public() {
        let doc = ApiDoc::openapi();
        // Webhook deliveries are authenticated by their signature, not by a bearer token.
        let public = [
            "/healthz",
            "/readyz",
            "/metrics",
            "/api/v1/repos/{name}/webhook",
            "/api/v1/agent/register",
        ];
        for (path, item) in &doc.paths.paths {
            for (method, operation) in operations(item) {
                let id = operation.operation_id.as_deref().unwrap_or_default();
                assert!(handler(id, method.clone()).is_some(), "{method} {path}");
                let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                assert_eq!(secured, !public.contains(&path.as_str()), "{method} {path}");
            }
        }
    }

    #[test]
    fn query_parameters_are_in_the_query_and_optional() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let params = doc["paths"]["/api/v1/runs"]["get"]["parameters"]
            .as_array()
            .unwrap();
        assert!(!params.is_empty());
        for param in params {
            assert_eq!(param["in"], "query", "{param}");
            assert_ne!(param["required"], true, "{param}");
        }
    }

    #[test]
    fn words_are_enums_limits_have_bounds_and_protected_operations_list_401_and_400() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let event = &schemas["TriggerRequest"]["properties"]["event"]["enum"];
        assert!(
            event.as_array().unwrap().contains(&"manual".into()),
            "{event}"
        );
        assert!(
            event.as_array().unwrap().contains(&serde_json::Value::Null),
            "{event}"
        );
        for schema in ["TokenRequest", "TokenView", "CreatedToken"] {
            let role = &schemas[schema]["properties"]["role"]["enum"];
            assert_eq!(
                role,
                &serde_json::json!(["viewer", "operator", "admin"]),
                "{schema}"
            );
        }
        assert_eq!(
            schemas["JobView"]["properties"]["state"]["enum"][1],
            "waiting_approval"
        );
        let list = &doc["paths"]["/api/v1/runs"]["get"];
        for param in list["parameters"].as_array().unwrap() {
            match param["name"].as_str().unwrap() {
                "limit" => {
                    assert_eq!(param["schema"]["minimum"], 1, "{param}");
                    assert_eq!(param["schema"]["maximum"], 500, "{param}");
                }
                "status" => assert_eq!(param["schema"]["enum"][2], "cancelling", "{param}"),
                _ => {}
            }
        }
        for code in ["400", "401"] {
            assert!(list["responses"][code].is_object(), "{code}");
        }
        let trigger = &doc["paths"]["/api/v1/pipelines/{name}/runs"]["post"];
        assert_ne!(trigger["requestBody"]["required"], true, "{trigger}");
    }

    #[test]
    fn the_document_is_openapi_3_1() {
        let json = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
    }
}
