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

/// Declares the documented handlers: the OpenAPI derive and the operation-to-handler table.
macro_rules! api {
    ($($module:ident :: $handler:ident),* $(,)?) => {
        /// The OpenAPI document of the API.
        #[derive(OpenApi)]
        #[openapi(
            info(
                title = "Hodei API",
                description = "Pipelines, runs, jobs, logs, tokens and the audit trail of a Hodei server. \
                    Every endpoint except /healthz, /readyz, /metrics and /api/v1/repos/{name}/webhook (signed by the forge) needs `Authorization: Bearer <token>`. \
                    Errors are application/problem+json with a stable `code`.",
            ),
            paths($(crate::routes::$module::$handler),*),
            components(schemas(Problem)),
            modifiers(&BearerAuth),
            tags(
                (name = "pipelines", description = "Pipeline definitions and their versions"),
                (name = "runs", description = "Runs of pipelines"),
                (name = "jobs", description = "Jobs of runs and their logs"),
                (name = "tokens", description = "API tokens (admin)"),
                (name = "repos", description = "Repositories and the webhooks of their forges"),
                (name = "secrets", description = "Stored secrets for runs: set, list, delete; values never answered"),
                (name = "events", description = "The audit trail"),
                (name = "workers", description = "Workers and the queue"),
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
    pipelines::trigger_run,
    runs::list_runs,
    runs::get_run,
    runs::get_run_definition,
    runs::cancel_run,
    runs::rerun_run,
    runs::retry_run,
    jobs::get_job,
    jobs::get_job_log,
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
    system::healthz,
    system::readyz,
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
    fn the_document_is_openapi_3_1() {
        let json = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
    }
}
