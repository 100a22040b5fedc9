//! # Replicas: several servers on one PostgreSQL database
//!
//! One replica leads (see `hodei_adapters::postgres` for the lease and its fencing epoch): it
//! runs the supervision tree — the scheduler, the orchestrator, the agent desk, the timer — and
//! serves the whole API ([`crate::serve`]). Every other replica is a **follower**
//! ([`serve_follower`]): it answers what it can from the database itself and forwards the rest
//! to the leader, so that a client, an agent or a load balancer may talk to any replica.
//!
//! A follower serves itself:
//! - `/healthz`, `/readyz` (ready while the database answers), `/metrics`;
//! - `GET /api/v1/cluster`: which replica this is and which one leads;
//! - `GET /api/v1/jobs/{id}/log/stream`: a job's log followed from the database ([`tail`]),
//!   woken by PostgreSQL's notifications and polling as well, so that it keeps working where
//!   notifications are dropped (a pooler in transaction mode).
//!
//! Everything else is forwarded to the leader's `advertise_url` ([`proxy`]): requests and their
//! answers streamed both ways, WebSockets (event streams, the agents' doorbell) relayed frame
//! by frame, with the caller's own credentials (the leader authenticates). While no replica
//! leads — for the seconds after a leader died, until its lease runs out — a forwarded request
//! is answered `503` (`no-leader`, with `Retry-After`), and clients try again.
//!
//! When a follower wins the leadership, its server stops the follower's HTTP server and starts
//! the leader's on the same socket; a leader that finds itself deposed exits, and its
//! supervisor starts it again as a follower.

pub mod proxy;
pub mod tail;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

pub use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hodei_domain::ids::JobId;
use hodei_domain::model::Role;
use hodei_domain::ports::{BoxFuture, LeaderInfo, LogError, Store, TokenStore};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::views::Health;

/// This server's place among replicas, when it shares its database with others.
#[derive(Clone)]
pub struct Cluster {
    /// This replica's name (one life of it).
    pub replica: String,
    /// The replica that leads, as last read from the database.
    pub leader: watch::Receiver<Option<LeaderInfo>>,
}

/// Reads the committed bytes of a job's log from `from` on, at most `max` of them.
pub type ReadTail =
    Arc<dyn Fn(JobId, u64, usize) -> BoxFuture<'static, Result<Vec<u8>, LogError>> + Send + Sync>;

/// What a follower serves with.
#[derive(Clone)]
pub struct Follower {
    pub cluster: Cluster,
    pub store: Arc<dyn Store>,
    pub tokens: Arc<dyn TokenStore>,
    /// The logs, as committed in the database.
    pub read_tail: ReadTail,
    /// Rings with the id of a job whose log grew (PostgreSQL's notifications); never the only
    /// way a follower learns of new bytes.
    pub doorbell: tokio::sync::broadcast::Sender<JobId>,
    /// How often a followed log is read again without a ring.
    pub poll: Duration,
    /// The HTTP client that forwards to the leader.
    pub(crate) client: reqwest::Client,
}

impl Follower {
    /// # Errors
    /// When no HTTP client can be built (no TLS provider).
    pub fn new(
        cluster: Cluster,
        store: Arc<dyn Store>,
        tokens: Arc<dyn TokenStore>,
        read_tail: ReadTail,
        doorbell: tokio::sync::broadcast::Sender<JobId>,
    ) -> Result<Follower, String> {
        crate::client::install_crypto();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|err| format!("cannot build the client that forwards to the leader: {err}"))?;
        Ok(Follower {
            cluster,
            store,
            tokens,
            read_tail,
            doorbell,
            poll: Duration::from_millis(250),
            client,
        })
    }

    /// The leader to forward to, if one holds the lease.
    pub(crate) fn leader(&self) -> Option<LeaderInfo> {
        self.cluster.leader.borrow().clone()
    }

    /// The caller of a request to a follower: a bearer token (console sessions live on the
    /// leader, which their requests are forwarded to).
    pub(crate) async fn caller(&self, req: &HttpRequest) -> Result<Caller, ApiError> {
        let token = crate::auth::bearer(req)?;
        crate::auth::authenticate_digest(self.tokens.as_ref(), crate::auth::digest(&token)).await
    }
}

/// Which replica this is and which one leads.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterView {
    /// `single`: one server on its own database (SQLite); `replicated`: one of several
    /// servers on a PostgreSQL database.
    pub mode: String,
    /// This replica's name (`node_name` and a suffix for this life of it).
    pub replica: Option<String>,
    /// `leader` or `follower`, when replicated.
    pub role: Option<String>,
    /// The replica that leads, if one holds the lease.
    pub leader: Option<LeaderView>,
}

/// The replica that leads.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaderView {
    pub replica: String,
    /// Where the other replicas reach it (its `advertise_url`).
    pub address: String,
    /// The fencing epoch of its leadership.
    pub epoch: u64,
    /// How long its lease runs unless renewed, in milliseconds.
    pub expires_in_ms: u64,
}

impl ClusterView {
    /// The view of a server: `None` for a single server.
    pub fn of(cluster: Option<&Cluster>) -> ClusterView {
        let Some(cluster) = cluster else {
            return ClusterView {
                mode: "single".into(),
                replica: None,
                role: None,
                leader: None,
            };
        };
        let leader = cluster.leader.borrow().clone();
        let leads = leader.as_ref().is_some_and(|l| l.holder == cluster.replica);
        ClusterView {
            mode: "replicated".into(),
            replica: Some(cluster.replica.clone()),
            role: Some(if leads { "leader" } else { "follower" }.into()),
            leader: leader.map(|l| LeaderView {
                replica: l.holder,
                address: l.address,
                epoch: l.epoch,
                expires_in_ms: l.expires_in_ms,
            }),
        }
    }
}

/// Starts a follower's HTTP server on `listener` with `workers` threads (over TLS when given).
///
/// # Errors
/// When the listener cannot be used.
pub fn serve_follower(
    follower: Follower,
    listener: TcpListener,
    workers: usize,
    tls: Option<rustls::ServerConfig>,
) -> std::io::Result<Server> {
    crate::telemetry::prometheus();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(follower.clone()))
            .app_data(web::PayloadConfig::new(usize::MAX))
            .route("/healthz", web::get().to(crate::routes::system::healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
            .route("/api/v1/cluster", web::get().to(cluster))
            .route(
                "/api/v1/jobs/{id}/log/stream",
                web::get().to(tail::stream_job_log),
            )
            .default_service(web::to(proxy::forward))
    })
    .workers(workers.max(1))
    .disable_signals()
    .shutdown_timeout(1);
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    };
    Ok(server.run())
}

/// How long a follower's `/readyz` waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// A follower is ready while the database answers: it then serves logs itself and forwards
/// the rest (answering `503 no-leader` itself during a change of leader).
async fn readyz(follower: web::Data<Follower>) -> HttpResponse {
    let store = tokio::time::timeout(READY_TIMEOUT, follower.store.pipelines(None, 1)).await;
    let store = match store {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {READY_TIMEOUT:?}")),
    };
    let mut checks = BTreeMap::new();
    let ready = store.is_ok();
    checks.insert(
        "store".to_owned(),
        store.err().unwrap_or_else(|| "ok".to_owned()),
    );
    let role = match follower.leader() {
        Some(leader) => format!(
            "follower: forwards to {} at {} (epoch {})",
            leader.holder, leader.address, leader.epoch
        ),
        None => "follower: no replica leads right now; one takes over when the last lease runs out"
            .to_owned(),
    };
    checks.insert("replica".to_owned(), role);
    let health = Health {
        status: if ready { "ready" } else { "not-ready" }.to_owned(),
        version: crate::routes::system::VERSION.to_owned(),
        checks,
    };
    match ready {
        true => HttpResponse::Ok().json(health),
        false => HttpResponse::ServiceUnavailable().json(health),
    }
}

async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::telemetry::prometheus().render())
}

async fn cluster(
    follower: web::Data<Follower>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    follower.caller(&req).await?.require(Role::Viewer)?;
    Ok(HttpResponse::Ok().json(ClusterView::of(Some(&follower.cluster))))
}
