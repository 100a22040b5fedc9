//! # hodei-api
//!
//! Hodei's HTTP surface on actix-web: the REST API under `/api/v1`, bearer-token
//! authentication with roles, problem+json errors, the OpenAPI 3.1 document, Prometheus
//! metrics, the health probes, workers and the queue, and WebSocket streams of job logs and
//! domain events ([`stream`]), logs by line and searched ([`lines`]), the typed client of all of
//! it ([`client`]), which the CLI uses, and the web console at `/` ([`console`]).
//!
//! Where to start reading:
//! - [`serve`]: how a server is put together from an [`ApiState`] (the supervision tree's
//!   addresses and ports, the token store, the limits).
//! - [`openapi`]: the one list of handlers, from which both the OpenAPI document and the router
//!   are built; then the handlers in `routes/`, one file per resource.
//! - [`replica`]: what a follower of a replicated deployment serves itself, and how it
//!   forwards the rest to the leader.
//! - [`error`]: every error answer, made in one place (`ResponseError for ApiError`).
//! - [`auth`]: tokens (random 256-bit, stored as SHA-256 digests) and the [`auth::Caller`]
//!   extractor; [`views`]: the JSON shapes; [`request`]: bodies, paging and byte ranges;
//!   [`telemetry`]: metrics; [`loads`]: how pipeline loads are bounded; [`revoke`]: how a
//!   revoked token's streams end.
//!
//! ## Guarantees
//! - A client's mistake (bad JSON or YAML, bad path or query, oversized body, missing token,
//!   wrong role, unknown id, illegal transition) is a 4xx problem+json with a stable `code`;
//!   a 5xx means the store, the actors or Hodei itself failed.
//! - Every API route is in the OpenAPI document and every documented operation is routed; the
//!   console's pages (`/`, `/runs`, ...) are not API routes.
//! - Every endpoint except `/healthz`, `/readyz`, `/metrics` and the webhooks of repositories
//!   (authenticated by their signature) needs a valid token, or the console's session cookie
//!   (and its CSRF header for a change); every console page a session.
//!
//! ## Assumptions
//! [`serve`] runs inside an actix `System` whose arbiters run the supervision tree.

pub mod auth;
pub mod client;
pub mod console;
pub mod error;
pub mod finished;
pub mod lines;
pub mod loads;
pub mod openapi;
pub mod replica;
pub mod request;
pub mod revoke;
mod routes;
/// The agent protocol's bodies, for agents.
pub use routes::agents as agent_protocol;
pub mod status;
pub mod stream;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod views;
pub mod webhook;

use std::net::TcpListener;
use std::sync::Arc;

use actix::Actor;
use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use hodei_actors::messages::Subscribe;
use hodei_domain::ports::{Mirrors, RepoStore, SecretVault, TokenStore};
use hodei_supervisors::Tree;

pub use error::ApiError;

/// The size limits of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest request body, in bytes (a pipeline's YAML, a JSON body); larger ones are
    /// refused with 413.
    pub max_body: usize,
    /// The most jobs that unfinished runs may hold (waiting for their needs, queued or
    /// running); a run that would pass it is refused whole: 429 with `Retry-After`, or 409 when
    /// the run alone has more jobs than the limit.
    pub max_queued: usize,
    /// How long a request's body may take to arrive once its headers have (which must arrive
    /// within actix-web's 5 s); a slower one is refused with 408 and its connection closed.
    pub body_timeout: std::time::Duration,
    /// The most bytes of artifacts one job attempt may keep (`artifacts_max_job_mib`): an
    /// agent's upload that declares more is refused at once with 413.
    pub max_artifacts: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body: 1024 * 1024,
            max_queued: 100_000,
            body_timeout: std::time::Duration::from_secs(30),
            max_artifacts: 1 << 30,
        }
    }
}

/// What the handlers work with: the running tree (its addresses and ports), the token store,
/// the stored secrets and the limits. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub tree: Tree,
    pub tokens: Arc<dyn TokenStore>,
    /// The stored secrets, managed through `/api/v1/secrets`.
    pub secrets: Arc<dyn SecretVault>,
    /// The registered repositories and their webhook deliveries (`/api/v1/repos`).
    pub repos: Arc<dyn RepoStore>,
    /// The mirrors of the repositories, from which webhooks read pipelines.
    pub mirrors: Arc<dyn Mirrors>,
    pub limits: Limits,
    /// The providers whose health `/readyz` and `/metrics` show, by name.
    pub providers: Vec<(&'static str, ProviderHealth)>,
    /// Cleared when the server shuts down: no new run is accepted from then on.
    pub accepting: Arc<std::sync::atomic::AtomicBool>,
    /// One lock per pipeline name: written while a definition is applied, read while a run of
    /// it is submitted.
    pipelines: Arc<PipelineLocks>,
    /// The places for pipeline loads ([`loads`]).
    pub(crate) loads: loads::Loads,
    /// The open streams of each token ([`revoke`]).
    pub(crate) streams: revoke::StreamsByToken,
    /// Held while a token is created, so that names stay distinct.
    pub(crate) creating_token: Arc<tokio::sync::Mutex<()>>,
    /// The line indexes of the logs read by line lately.
    pub lines: Arc<lines::LineCache>,
    /// The views of finished runs, serialized ([`finished`]).
    pub(crate) finished: Arc<finished::FinishedRuns>,
    /// The console's sessions.
    pub sessions: Arc<console::session::Sessions>,
    /// Agents' registrations and leases, when this server takes agents.
    pub agents: Option<Arc<dyn hodei_domain::ports::AgentStore>>,
    /// Facts `/readyz` shows beside its checks without making the server unready (how local
    /// steps run: as which user, or not at all).
    pub notices: Vec<(&'static str, String)>,
    /// This server's place among replicas, when it shares a PostgreSQL database with others.
    pub cluster: Option<replica::Cluster>,
}

impl ApiState {
    pub fn new(
        tree: Tree,
        tokens: Arc<dyn TokenStore>,
        secrets: Arc<dyn SecretVault>,
        sources: Sources,
        limits: Limits,
    ) -> ApiState {
        ApiState {
            tree,
            tokens,
            secrets,
            repos: sources.repos,
            mirrors: sources.mirrors,
            limits,
            providers: Vec::new(),
            accepting: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            pipelines: Arc::default(),
            loads: loads::Loads::default(),
            streams: revoke::StreamsByToken::default(),
            creating_token: Arc::default(),
            lines: Arc::default(),
            finished: Arc::default(),
            sessions: Arc::default(),
            agents: None,
            notices: Vec::new(),
            cluster: None,
        }
    }

    /// Shows `text` as the check `name` of `/readyz`, without making the server unready.
    pub fn with_notice(mut self, name: &'static str, text: String) -> ApiState {
        self.notices.push((name, text));
        self
    }

    /// Takes agents: their registrations and leases are in `store` (the tree's agent desk
    /// holds them live).
    pub fn with_agents(mut self, store: Arc<dyn hodei_domain::ports::AgentStore>) -> ApiState {
        self.agents = Some(store);
        self
    }

    /// Serves as the leader of replicas (`GET /api/v1/cluster` says so).
    pub fn with_cluster(mut self, cluster: replica::Cluster) -> ApiState {
        self.cluster = Some(cluster);
        self
    }

    /// Shows the health of a provider (`docker`) in `/readyz` and `/metrics`.
    pub fn with_provider(mut self, name: &'static str, health: ProviderHealth) -> ApiState {
        self.providers.push((name, health));
        self
    }
}

impl ApiState {
    /// Refuses a new run while the server shuts down (503, with `Retry-After`).
    pub async fn accepts_runs(&self) -> Result<(), ApiError> {
        if !self.accepting.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ApiError::Unavailable {
                what: "the server",
                reason: "it is shutting down; try again when it is back".into(),
            });
        }
        // The limit on queued jobs is checked by the orchestrator, in the same step that
        // reserves room for the run (`SubmitRun::limit`).
        Ok(())
    }
}

/// Where code comes from: the registered repositories and their mirrors.
#[derive(Clone)]
pub struct Sources {
    pub repos: Arc<dyn RepoStore>,
    pub mirrors: Arc<dyn Mirrors>,
}

/// Why a provider cannot be used now, or `None` when it can.
pub type ProviderHealth = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Serialises the writes of one pipeline's definitions.
///
/// Submitting a run stores its definition's text again (the same text is the same version):
/// were a new version applied between reading the latest text and submitting it, the old text
/// would be stored as a newer version still. Applying a definition holds its pipeline's lock
/// for writing, submitting a run holds it for reading, so that this cannot happen within one
/// server; runs of one pipeline are submitted concurrently, and different pipelines never wait
/// for each other.
#[derive(Default)]
struct PipelineLocks {
    locks: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
}

impl ApiState {
    fn pipeline_lock(&self, name: &str) -> Arc<tokio::sync::RwLock<()>> {
        let mut locks = self
            .pipelines
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        locks.entry(name.to_owned()).or_default().clone()
    }

    /// Holds pipeline `name`'s lock for applying a definition, until the guard is dropped.
    pub(crate) async fn applying(&self, name: &str) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.pipeline_lock(name).write_owned().await
    }

    /// Holds pipeline `name`'s lock for submitting a run, until the guard is dropped.
    pub(crate) async fn submitting(&self, name: &str) -> tokio::sync::OwnedRwLockReadGuard<()> {
        self.pipeline_lock(name).read_owned().await
    }
}

/// Adds the API to an actix-web app: its state, its routes, the error answers of extractors
/// and of unknown paths.
pub fn configure(state: ApiState) -> impl Fn(&mut web::ServiceConfig) + Clone {
    move |cfg| {
        cfg.app_data(web::Data::new(state.clone()))
            .app_data(web::PathConfig::default().error_handler(request::path_error))
            .app_data(web::QueryConfig::default().error_handler(request::query_error))
            .configure(openapi::configure)
            .configure(console::configure)
            .default_service(web::to(openapi::no_route));
    }
}

/// Starts serving the API on `listener` with `workers` threads (over TLS when `tls` is given), and counts run, job and step
/// outcomes from the tree's event bus for the metrics. The returned server runs once awaited
/// (or spawned); stop it with its handle. It does not handle signals: the caller does.
///
/// # Errors
/// When the listener cannot be used.
pub fn serve(
    state: ApiState,
    listener: TcpListener,
    workers: usize,
    tls: Option<rustls::ServerConfig>,
) -> std::io::Result<Server> {
    telemetry::prometheus();
    let counter = telemetry::OutcomeCounter::default().start();
    state.tree.bus.do_send(Subscribe {
        subscriber: counter.clone().recipient(),
    });
    state.tree.hub.do_send(hodei_actors::messages::WatchLogs {
        watcher: counter.recipient(),
    });
    state.streams.sweep(state.tokens.clone());
    let config = configure(state);
    let server = HttpServer::new(move || {
        App::new()
            .wrap(from_fn(telemetry::count_requests))
            .configure(config.clone())
    })
    .workers(workers.max(1))
    .disable_signals()
    .shutdown_timeout(5);
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    };
    Ok(server.run())
}
