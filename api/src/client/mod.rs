//! The typed client of a Hodei server: every REST operation as a method returning the API's
//! own [`views`](crate::views), and the WebSocket streams as followers that reconnect by
//! themselves ([`follow`]). The admin CLI is built on it, and so is anything else that talks to
//! a server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hodei_api::client::ClientError> {
//! use hodei_api::client::{Client, Target};
//! let client = Client::new(&Target::new("http://127.0.0.1:8080", Some("hodei_…".into())))?;
//! let run = client.trigger("web", &Default::default()).await?;
//! println!("run {} is {}", run.id, run.state);
//! # Ok(()) }
//! ```
//!
//! ## Guarantees
//! - Every failure is a [`ClientError`] that names the server's URL or the request, and says
//!   whether the server could not be reached, refused the token, refused the request (with
//!   the server's problem `code` and detail) or failed.
//! - TLS uses the system's trust store plus the certificates of [`Target::ca_cert`], with ring as
//!   the only crypto provider; the HTTP requests and the WebSockets share one configuration.

mod agent;
mod certificate;
pub mod follow;
mod http;

pub use agent::Doorbell;
pub use certificate::CertificateProblem;

pub(crate) use http::segment;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::error::Problem;
use crate::views::{
    AppliedPipeline, CreatedToken, EventPage, Health, JobView, PipelinePage, PipelineView,
    QueueView, RepositoryList, RepositoryRequest, RepositoryView, RunPage, RunView, SecretList,
    SecretView, TokenList, TriggerRequest, WorkerList,
};

/// Where a server is and how to prove who we are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http://host:port` or `https://host:port`, without a path.
    pub url: String,
    /// Other replicas of the same deployment, tried in turn when the current one cannot be
    /// reached or has no leader to forward to.
    pub replicas: Vec<String>,
    /// The bearer token, if any (health checks need none).
    pub token: Option<String>,
    /// PEM certificates to trust besides the system's, for a server with its own CA.
    pub ca_cert: Option<std::path::PathBuf>,
}

impl Target {
    /// A server by URL; several replicas of one deployment as URLs separated by commas
    /// (`http://hodei-1:8080,http://hodei-2:8080`): the first is used until it cannot be
    /// reached, then the next.
    pub fn new(url: &str, token: Option<String>) -> Target {
        let mut urls = url
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty());
        Target {
            url: urls.next().unwrap_or_default(),
            replicas: urls.collect(),
            token,
            ca_cert: None,
        }
    }
}

/// What went wrong talking to a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is not one a client can use.
    #[error("`{url}` is not a server URL: {reason}")]
    BadUrl { url: String, reason: String },
    /// The TLS configuration cannot be made (an unreadable or invalid CA file).
    #[error("cannot set up TLS: {reason}")]
    Tls { reason: String },
    /// No answer: the connection was refused, timed out, broke, or TLS failed.
    #[error("cannot reach the Hodei server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server answered with a certificate the client does not trust.
    #[error(
        "the Hodei server at {url} presents a certificate this client does not trust: {problem}"
    )]
    Certificate {
        url: String,
        problem: CertificateProblem,
    },
    /// 401 or 403: the token is missing, unknown, revoked, or its role is too low.
    #[error("the server at {url} refused the request {method} {path} ({status}): {detail}")]
    Unauthorized {
        url: String,
        method: &'static str,
        path: String,
        status: u16,
        detail: String,
    },
    /// Any other answer that is not a success, with the server's problem.
    #[error("{method} {path}: {} [{}]", problem.detail, problem.code)]
    Rejected {
        method: &'static str,
        path: String,
        problem: Box<Problem>,
        /// `Retry-After`, in seconds, when the server gave one (429, 503).
        retry_after: Option<u64>,
    },
    /// A success whose body is not what the API documents (another program on that port?).
    #[error("{method} {path}: the answer ({status}) is not what a Hodei server sends: {reason}")]
    Unexpected {
        method: &'static str,
        path: String,
        status: u16,
        reason: String,
    },
}

impl ClientError {
    /// Whether trying again later may succeed: the server is away, busy or failing, not
    /// refusing this request for what it is.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Rejected { problem, .. } => problem.status == 429 || problem.status >= 500,
            _ => false,
        }
    }

    /// The HTTP status of a refusal, if the server answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Unauthorized { status, .. } => Some(*status),
            ClientError::Rejected { problem, .. } => Some(problem.status),
            ClientError::Unexpected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's stable problem code, if it answered one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Rejected { problem, .. } => Some(&problem.code),
            _ => None,
        }
    }
}

/// Filters of [`Client::runs`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// A client of one server (or of the replicas of one deployment). Cheap to clone: clones
/// share their connections and which replica they talk to.
#[derive(Clone)]
pub struct Client {
    target: Target,
    http: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
    /// The server's URL and its replicas', and the one in use.
    urls: Arc<[String]>,
    current: Arc<std::sync::atomic::AtomicUsize>,
}

/// How long a request may take before the server counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes of a log [`Client::log`] asks for at once: what the client holds in memory.
pub const LOG_PART: u64 = 8 * 1024 * 1024;

impl Client {
    /// A client of the server at `target`. Nothing is sent yet.
    ///
    /// # Errors
    /// [`ClientError::BadUrl`] for a URL that is not `http(s)://host[:port]`;
    /// [`ClientError::Tls`] when the CA file cannot be used.
    pub fn new(target: &Target) -> Result<Client, ClientError> {
        let target = Target {
            url: target.url.trim_end_matches('/').to_owned(),
            ..target.clone()
        };
        check_url(&target.url)?;
        for replica in &target.replicas {
            check_url(replica)?;
        }
        let urls: Arc<[String]> = std::iter::once(target.url.clone())
            .chain(target.replicas.iter().cloned())
            .collect();
        install_crypto();
        let https = target.url.starts_with("https://");
        let tls = Arc::new(tls_config(target.ca_cert.as_deref(), https)?);
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("hodei/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| ClientError::Tls {
                reason: http::chain(&err),
            })?;
        Ok(Client {
            target,
            http,
            tls,
            urls,
            current: Arc::default(),
        })
    }

    /// The same client (its connections shared) with another bearer token: an agent's calls
    /// about one job present that job's token.
    pub fn with_token(&self, token: &str) -> Client {
        let mut client = self.clone();
        client.target.token = Some(token.to_owned());
        client
    }

    /// The URL of the server (the replica) in use.
    pub fn url(&self) -> &str {
        let at = self.current.load(std::sync::atomic::Ordering::Relaxed);
        &self.urls[at % self.urls.len()]
    }

    /// Moves on to the next replica after `failed` (the URL that could not serve), unless
    /// another request already moved on; `false` when there is no other replica.
    pub(crate) fn next_replica(&self, failed: &str) -> bool {
        use std::sync::atomic::Ordering;
        if self.urls.len() < 2 {
            return false;
        }
        let at = self.current.load(Ordering::Relaxed);
        if self.urls[at % self.urls.len()] == failed {
            let _ = self.current.compare_exchange(
                at,
                (at + 1) % self.urls.len(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        true
    }

    // --- pipelines ---

    /// Stores a definition as pipeline `name`'s next version (or finds it equal to the latest).
    pub async fn apply_pipeline(
        &self,
        name: &str,
        yaml: String,
    ) -> Result<AppliedPipeline, ClientError> {
        self.send(
            reqwest::Method::PUT,
            &format!("/api/v1/pipelines/{}", http::segment(name)),
            http::Body::Yaml(yaml),
        )
        .await
    }

    /// One page of pipelines, by name.
    pub async fn pipelines(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<PipelinePage, ClientError> {
        let mut path = format!("/api/v1/pipelines?limit={limit}");
        if let Some(cursor) = cursor {
            path.push_str(&format!("&cursor={}", http::segment(cursor)));
        }
        self.get(&path).await
    }

    /// A pipeline's latest definition and its versions.
    pub async fn pipeline(&self, name: &str) -> Result<PipelineView, ClientError> {
        self.get(&format!("/api/v1/pipelines/{}", http::segment(name)))
            .await
    }

    // --- runs ---

    /// Starts a run of pipeline `name`'s latest version.
    pub async fn trigger(
        &self,
        name: &str,
        request: &TriggerRequest,
    ) -> Result<RunView, ClientError> {
        self.send(
            reqwest::Method::POST,
            &format!("/api/v1/pipelines/{}/runs", http::segment(name)),
            http::Body::Json(serde_json::to_value(request).unwrap_or_default()),
        )
        .await
    }

    /// One page of runs, newest first.
    pub async fn runs(
        &self,
        filter: &RunFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<RunPage, ClientError> {
        let mut query = vec![("limit", limit.to_string())];
        for (key, value) in [
            ("status", &filter.status),
            ("pipeline", &filter.pipeline),
            ("branch", &filter.branch),
        ] {
            if let Some(value) = value {
                query.push((key, value.clone()));
            }
        }
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_owned()));
        }
        self.get(&format!("/api/v1/runs?{}", http::query(&query)))
            .await
    }

    /// A run with its jobs and steps.
    pub async fn run(&self, id: u64) -> Result<RunView, ClientError> {
        self.get(&format!("/api/v1/runs/{id}")).await
    }

    /// The YAML text run `id` was planned from.
    pub async fn run_definition(&self, id: u64) -> Result<String, ClientError> {
        let (bytes, _) = self.raw(&format!("/api/v1/runs/{id}/definition")).await?;
        String::from_utf8(bytes).map_err(|err| ClientError::Unexpected {
            method: "GET",
            path: format!("/api/v1/runs/{id}/definition"),
            status: 200,
            reason: format!("the definition is not UTF-8: {err}"),
        })
    }

    /// Asks a run to stop; answers the run as it is then.
    pub async fn cancel(&self, id: u64) -> Result<RunView, ClientError> {
        self.post(&format!("/api/v1/runs/{id}/cancel")).await
    }

    /// A new run with the same inputs as run `id`: every job again.
    pub async fn rerun(&self, id: u64) -> Result<RunView, ClientError> {
        self.post(&format!("/api/v1/runs/{id}/rerun")).await
    }

    /// A new run of run `id` that keeps the jobs that succeeded and runs the rest.
    pub async fn retry(&self, id: u64) -> Result<RunView, ClientError> {
        self.post(&format!("/api/v1/runs/{id}/retry")).await
    }

    /// The files the run's jobs kept as artifacts.
    pub async fn artifacts(&self, run: u64) -> Result<crate::views::ArtifactList, ClientError> {
        self.get(&format!("/api/v1/runs/{run}/artifacts")).await
    }

    /// Writes artifact `path` of job `job` of run `run` into `out`; answers its size.
    pub async fn download_artifact(
        &self,
        run: u64,
        job: u64,
        path: &str,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64, ClientError> {
        let query = http::query(&[("path", path.to_owned())]);
        self.download(&format!("/api/v1/runs/{run}/artifacts/{job}?{query}"), out)
            .await
    }

    // --- jobs ---

    /// A job with its steps.
    pub async fn job(&self, id: u64) -> Result<JobView, ClientError> {
        self.get(&format!("/api/v1/jobs/{id}")).await
    }

    /// Approves a job waiting at its approval gate.
    pub async fn approve(&self, id: u64) -> Result<JobView, ClientError> {
        self.post(&format!("/api/v1/jobs/{id}/approve")).await
    }

    /// Bytes of a job's log from `from` on, at most [`LOG_PART`] of them, and the log's length.
    pub async fn log(&self, job: u64, from: u64) -> Result<(Vec<u8>, u64), ClientError> {
        let to = from.saturating_add(LOG_PART);
        self.bytes(&format!("/api/v1/jobs/{job}/log?from={from}&to={to}"))
            .await
    }

    // --- workers and the queue ---

    /// Every worker.
    pub async fn workers(&self) -> Result<WorkerList, ClientError> {
        self.get("/api/v1/workers").await
    }

    /// Stops placing jobs on a worker; its jobs go on.
    pub async fn drain(&self, id: &str) -> Result<(), ClientError> {
        self.no_content(
            reqwest::Method::POST,
            &format!("/api/v1/workers/{}/drain", http::segment(id)),
        )
        .await
    }

    /// Places jobs on a drained worker again.
    pub async fn undrain(&self, id: &str) -> Result<(), ClientError> {
        self.no_content(
            reqwest::Method::POST,
            &format!("/api/v1/workers/{}/undrain", http::segment(id)),
        )
        .await
    }

    /// The queue, front first (at most `limit` items; only run `run`'s jobs if given), with
    /// why each job waits.
    pub async fn queue(&self, limit: u32, run: Option<u64>) -> Result<QueueView, ClientError> {
        let mut path = format!("/api/v1/queue?limit={limit}");
        if let Some(run) = run {
            path.push_str(&format!("&run={run}"));
        }
        self.get(&path).await
    }

    // --- tokens ---

    /// Creates a token; its secret is in the answer only.
    pub async fn create_token(&self, name: &str, role: &str) -> Result<CreatedToken, ClientError> {
        self.send(
            reqwest::Method::POST,
            "/api/v1/tokens",
            http::Body::Json(serde_json::json!({ "name": name, "role": role })),
        )
        .await
    }

    /// The tokens not revoked.
    pub async fn tokens(&self) -> Result<TokenList, ClientError> {
        self.get("/api/v1/tokens").await
    }

    /// Revokes a token.
    pub async fn revoke_token(&self, id: u64) -> Result<(), ClientError> {
        self.no_content(reqwest::Method::DELETE, &format!("/api/v1/tokens/{id}"))
            .await
    }

    // --- repositories ---

    /// Registers (or changes) a repository.
    pub async fn put_repo(
        &self,
        name: &str,
        request: &RepositoryRequest,
    ) -> Result<RepositoryView, ClientError> {
        self.send(
            reqwest::Method::PUT,
            &format!("/api/v1/repos/{}", http::segment(name)),
            http::Body::Json(serde_json::to_value(request).unwrap_or_default()),
        )
        .await
    }

    /// The registered repositories.
    pub async fn repos(&self) -> Result<RepositoryList, ClientError> {
        self.get("/api/v1/repos").await
    }

    /// One repository.
    pub async fn repo(&self, name: &str) -> Result<RepositoryView, ClientError> {
        self.get(&format!("/api/v1/repos/{}", http::segment(name)))
            .await
    }

    /// Removes a repository.
    pub async fn remove_repo(&self, name: &str) -> Result<(), ClientError> {
        self.no_content(
            reqwest::Method::DELETE,
            &format!("/api/v1/repos/{}", http::segment(name)),
        )
        .await
    }

    // --- secrets ---

    /// Stores a secret's value (creating or replacing it); answers it without the value.
    pub async fn set_secret(
        &self,
        scope: &str,
        owner: &str,
        name: &str,
        value: &str,
    ) -> Result<SecretView, ClientError> {
        self.send(
            reqwest::Method::PUT,
            &secret_path(scope, owner, name),
            http::Body::Json(serde_json::json!({ "value": value })),
        )
        .await
    }

    /// The stored secrets of one pipeline or repository (`Some((scope, owner))`), or all.
    pub async fn secrets(&self, of: Option<(&str, &str)>) -> Result<SecretList, ClientError> {
        match of {
            Some((scope, owner)) => {
                self.get(&format!(
                    "/api/v1/secrets?scope={}&owner={}",
                    http::segment(scope),
                    http::segment(owner)
                ))
                .await
            }
            None => self.get("/api/v1/secrets").await,
        }
    }

    /// Deletes a secret.
    pub async fn delete_secret(
        &self,
        scope: &str,
        owner: &str,
        name: &str,
    ) -> Result<(), ClientError> {
        self.no_content(reqwest::Method::DELETE, &secret_path(scope, owner, name))
            .await
    }

    // --- events and the server ---

    /// Events after number `after`, oldest first.
    pub async fn events(&self, after: u64, limit: u32) -> Result<EventPage, ClientError> {
        self.get(&format!("/api/v1/events?after={after}&limit={limit}"))
            .await
    }

    /// Readiness and version (`/readyz`): answered also when not ready.
    pub async fn ready(&self) -> Result<Health, ClientError> {
        self.health_of("/readyz").await
    }
}

/// Makes ring the process's default rustls crypto provider, unless one is set already.
/// [`Client::new`] does it; call it before building any other `reqwest::Client` in a process
/// that links this crate (reqwest is built without a provider of its own, and panics without
/// one).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Refuses URLs a client cannot use, with what is expected.
fn check_url(url: &str) -> Result<(), ClientError> {
    let bad = |reason: &str| ClientError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| bad("expected http://HOST:PORT or https://HOST:PORT"))?;
    if rest.is_empty() {
        return Err(bad("it names no host; expected http://HOST:PORT"));
    }
    if rest.contains('/') || rest.contains('?') || rest.contains('#') {
        return Err(bad(
            "expected no path after the host and port, e.g. http://127.0.0.1:8080",
        ));
    }
    Ok(())
}

/// The one TLS configuration of a client: the system's roots, plus `ca_cert`'s.
/// The TLS configuration of a client. A plain-HTTP server needs no trust store: a machine (or
/// a container) without CA certificates still talks to it.
fn tls_config(
    ca_cert: Option<&std::path::Path>,
    https: bool,
) -> Result<rustls::ClientConfig, ClientError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut extra = Vec::new();
    if let Some(path) = ca_cert {
        let tls = |reason: String| ClientError::Tls {
            reason: format!("CA certificate file `{}`: {reason}", path.display()),
        };
        let pem = std::fs::read(path).map_err(|err| tls(err.to_string()))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            extra.push(cert.map_err(|err| tls(format!("not a PEM certificate: {err}")))?);
        }
        if extra.is_empty() {
            return Err(tls("it holds no PEM certificate".into()));
        }
    }
    if !https && extra.is_empty() {
        return rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|config| {
                config
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            })
            .map_err(|err| ClientError::Tls {
                reason: err.to_string(),
            });
    }
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone()).map_err(
            |err| ClientError::Tls {
                reason: format!("the system's trust store: {err}"),
            },
        )?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| ClientError::Tls {
            reason: err.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

/// The path of one secret.
fn secret_path(scope: &str, owner: &str, name: &str) -> String {
    format!(
        "/api/v1/secrets/{}/{}/{}",
        http::segment(scope),
        http::segment(owner),
        http::segment(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_without_a_scheme_or_with_a_path_are_refused_with_what_is_expected() {
        for (url, expected) in [
            ("127.0.0.1:8080", "expected http://HOST:PORT"),
            ("ftp://x", "expected http://HOST:PORT"),
            ("http://", "not a server URL"),
            ("http://h:1/api", "no path"),
        ] {
            let err = Client::new(&Target::new(url, None)).err().unwrap();
            assert!(err.to_string().contains(expected), "{url}: {err}");
        }
        assert!(Client::new(&Target::new("https://ci.example:8443/", None)).is_ok());
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let mut target = Target::new("https://h:1", None);
        target.ca_cert = Some("/nonexistent/ca.pem".into());
        let err = Client::new(&target).err().unwrap().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
