//! The server itself: liveness, readiness, metrics and the OpenAPI document. `/healthz`,
//! `/readyz` and `/metrics` need no token, for probes and scrapers.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use hodei_actors::messages::{GetQueueStats, GetResuming, Resuming};
use hodei_domain::model::Role;
use utoipa::OpenApi;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::ApiDoc;
use crate::replica::ClusterView;
use crate::telemetry;
use crate::views::Health;

/// The server's version, as `/healthz` and `/readyz` answer it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long `/readyz` waits for the store and the actors.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".to_owned(),
        version: VERSION.to_owned(),
        checks: BTreeMap::new(),
    })
}

/// Readiness: the store answers, the supervision tree is up (the orchestrator and the
/// scheduler answer), and every run found unfinished at start-up is resumed. 503 with what
/// failed otherwise.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "system",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready: see `checks`", body = Health),
    )
)]
pub async fn readyz(state: web::Data<ApiState>) -> HttpResponse {
    let mut checks = BTreeMap::new();
    let store = tokio::time::timeout(READY_TIMEOUT, state.tree.ports.store.pipelines(None, 1));
    let store = match store.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {READY_TIMEOUT:?}")),
    };
    let scheduler = tokio::time::timeout(READY_TIMEOUT, state.tree.scheduler.send(GetQueueStats));
    let actors = match (state.tree.orchestrator.connected(), scheduler.await) {
        (false, _) => Err("the orchestrator is not running".to_owned()),
        (true, Ok(Ok(_))) => Ok(()),
        (true, Ok(Err(err))) => Err(format!("the scheduler: {err}")),
        (true, Err(_)) => Err(format!("the scheduler: no answer within {READY_TIMEOUT:?}")),
    };
    // Ready once every run found unfinished at start-up is loaded and has asked for its
    // workers again (the orchestrator answers after it has listed them).
    let resuming = tokio::time::timeout(READY_TIMEOUT, state.tree.orchestrator.send(GetResuming));
    let runs = match resuming.await {
        Ok(Ok(Resuming { runs: 0 })) => Ok(()),
        Ok(Ok(Resuming { runs })) => Err(format!("resuming {runs} unfinished run(s)")),
        Ok(Err(err)) => Err(format!("the orchestrator: {err}")),
        Err(_) => Err("resuming the unfinished runs".to_owned()),
    };
    // A server that drains after SIGTERM takes no new run: a load balancer must stop sending.
    let server = match state.accepting.load(std::sync::atomic::Ordering::SeqCst) {
        true => Ok(()),
        false => Err("shutting down: running jobs finish, no new run is taken".to_owned()),
    };
    let ready = store.is_ok() && actors.is_ok() && runs.is_ok() && server.is_ok();
    let checks_of = [
        ("store", store),
        ("actors", actors),
        ("runs", runs),
        ("server", server),
    ];
    for (name, result) in checks_of {
        checks.insert(
            name.to_owned(),
            result.err().unwrap_or_else(|| "ok".to_owned()),
        );
    }
    // A provider that is away does not make the server unready: its jobs wait in the queue.
    for (name, health) in &state.providers {
        let found = match health() {
            None => "ok".to_owned(),
            Some(trouble) => format!("unavailable (its jobs wait): {trouble}"),
        };
        checks.insert((*name).to_owned(), found);
    }
    for (name, text) in &state.notices {
        checks.insert((*name).to_owned(), text.clone());
    }
    let health = Health {
        status: if ready { "ready" } else { "not-ready" }.to_owned(),
        version: VERSION.to_owned(),
        checks,
    };
    match ready {
        true => HttpResponse::Ok().json(health),
        false => HttpResponse::ServiceUnavailable().json(health),
    }
}

/// Which replica answers and which one leads: `single` for a server on its own database,
/// `replicated` (with this replica's role and the leader) for one of several servers on a
/// PostgreSQL database. Role: viewer.
#[utoipa::path(
    get,
    path = "/api/v1/cluster",
    tag = "system",
    responses((status = 200, body = ClusterView)),
    security(("bearer" = []))
)]
pub async fn cluster(state: web::Data<ApiState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(HttpResponse::Ok().json(ClusterView::of(state.cluster.as_ref())))
}

/// Metrics in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    responses((status = 200, body = String, content_type = "text/plain; version=0.0.4"))
)]
pub async fn metrics(state: web::Data<ApiState>) -> HttpResponse {
    telemetry::sample(&state).await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(telemetry::prometheus().render())
}

/// This API's OpenAPI 3.1 document. Role: viewer.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "system",
    responses((status = 200, description = "The OpenAPI document", body = Object)),
    security(("bearer" = []))
)]
pub async fn openapi(caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(HttpResponse::Ok().json(ApiDoc::openapi()))
}
