//! The agent protocol, from the agent's side: register, poll for work, heartbeat, append a
//! job's output at an offset, report its transitions. Every call is safe to repeat.

use hodei_actors::agents::{Beat, LogSeal, Work};
use hodei_domain::ids::JobId;
use hodei_domain::state::DomainEvent;
use reqwest::Method;

use super::http::Body;
use super::{Client, ClientError};
use crate::routes::agent_files::CheckoutSource;
use crate::routes::agents::{
    AgentList, AgentTokenList, AgentTokenView, Committed, HeartbeatRequest, HeldLease, PollRequest,
    RING, RegisterRequest, Registered, ReportAnswer, ReportRequest,
};
use crate::views::ArtifactList;

impl Client {
    /// Exchanges a registration token for the agent's own credential.
    pub async fn register_agent(
        &self,
        token: &str,
        name: &str,
        labels: &[String],
    ) -> Result<Registered, ClientError> {
        let body = RegisterRequest {
            token: token.to_owned(),
            name: name.to_owned(),
            labels: labels.to_vec(),
        };
        self.send(Method::POST, "/api/v1/agent/register", json(&body))
            .await
    }

    /// Waits up to `wait_ms` for a job or a cancel.
    pub async fn poll(&self, request: &PollRequest) -> Result<Work, ClientError> {
        self.send(Method::POST, "/api/v1/agent/poll", json(request))
            .await
    }

    /// Extends the leases held; answers those lost and those cancelled.
    pub async fn heartbeat(&self, jobs: &[(JobId, u64)]) -> Result<Beat, ClientError> {
        let body = HeartbeatRequest {
            jobs: jobs
                .iter()
                .map(|(job, epoch)| HeldLease {
                    job: job.0,
                    epoch: *epoch,
                })
                .collect(),
        };
        self.send(Method::POST, "/api/v1/agent/heartbeat", json(&body))
            .await
    }

    /// Appends a job's output at `offset` of the attempt's output; answers how much of it the
    /// server holds.
    pub async fn append_log(
        &self,
        job: JobId,
        epoch: u64,
        offset: u64,
        bytes: Vec<u8>,
    ) -> Result<u64, ClientError> {
        let path = format!(
            "/api/v1/agent/jobs/{}/log?epoch={epoch}&offset={offset}",
            job.0
        );
        let committed: Committed = self.send(Method::PUT, &path, Body::Bytes(bytes)).await?;
        Ok(committed.committed)
    }

    /// Reports a batch of transitions; with `end`, the last one, sealed with the output's
    /// length and SHA-256.
    pub async fn report(
        &self,
        job: JobId,
        epoch: u64,
        seq: u64,
        events: Vec<DomainEvent>,
        end: Option<LogSeal>,
    ) -> Result<ReportAnswer, ClientError> {
        let body = ReportRequest {
            epoch,
            seq,
            events,
            end,
        };
        let path = format!("/api/v1/agent/jobs/{}/events", job.0);
        self.send(Method::POST, &path, json(&body)).await
    }
}

impl Client {
    /// Where the repository of the job's run is fetched from, with its credentials.
    pub async fn job_checkout(
        &self,
        job: JobId,
        epoch: u64,
    ) -> Result<CheckoutSource, ClientError> {
        let path = format!("/api/v1/agent/jobs/{}/checkout?epoch={epoch}", job.0);
        self.get(&path).await
    }

    /// Uploads the tar file `archive` of the job's artifacts, which holds `files` files of
    /// `bytes` bytes together; answers what the server kept.
    pub async fn upload_artifacts(
        &self,
        job: JobId,
        epoch: u64,
        archive: &std::path::Path,
        files: u64,
        bytes: u64,
    ) -> Result<ArtifactList, ClientError> {
        let path = format!(
            "/api/v1/agent/jobs/{}/artifacts?epoch={epoch}&files={files}&bytes={bytes}",
            job.0
        );
        self.send(Method::PUT, &path, Body::Tar(archive.to_owned()))
            .await
    }

    /// Writes into `out` the tar of the artifacts of the jobs `needs` of the same run; answers
    /// its bytes.
    pub async fn needed_artifacts(
        &self,
        job: JobId,
        epoch: u64,
        needs: &[JobId],
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64, ClientError> {
        let jobs: Vec<String> = needs.iter().map(|j| j.0.to_string()).collect();
        let path = format!(
            "/api/v1/agent/jobs/{}/needed-artifacts?epoch={epoch}&jobs={}",
            job.0,
            jobs.join(",")
        );
        self.download(&path, out).await
    }

    /// Says that the agent stops (`gone`: it is gone).
    pub async fn leaving(&self, gone: bool) -> Result<(), ClientError> {
        let body = crate::routes::agents::LeavingRequest { gone };
        self.answer(Method::POST, "/api/v1/agent/leaving", json(&body))
            .await
            .map(drop)
    }

    /// Hands a job back (the agent stops): the server loses the attempt at once.
    pub async fn hand_back(&self, job: JobId, epoch: u64) -> Result<(), ClientError> {
        let body = crate::routes::agents::HandBackRequest { epoch };
        let path = format!("/api/v1/agent/jobs/{}/hand-back", job.0);
        self.answer(Method::POST, &path, json(&body))
            .await
            .map(drop)
    }
}

/// An agent's open doorbell: rings when work or a cancel is there for it.
pub struct Doorbell {
    socket: super::follow::Socket,
}

impl Doorbell {
    /// Waits for the next ring; `Err` when the doorbell closed (the agent then long-polls,
    /// and opens it again later).
    pub async fn ring(&mut self) -> Result<(), String> {
        use futures_util::{SinkExt as _, StreamExt as _};
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Text(text))) if text.as_str() == RING => return Ok(()),
                Some(Ok(Message::Ping(bytes))) => {
                    let _ = self.socket.send(Message::Pong(bytes)).await;
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(frame.map_or_else(
                        || "the server closed it".to_owned(),
                        |f| format!("the server closed it: {}", f.reason),
                    ));
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err.to_string()),
                None => return Err("the connection ended".into()),
            }
        }
    }
}

impl Client {
    /// Opens the agent's doorbell (a WebSocket).
    pub async fn doorbell(&self) -> Result<Doorbell, ClientError> {
        let socket = super::follow::connect(self, "/api/v1/agent/doorbell").await?;
        Ok(Doorbell { socket })
    }
}

fn json(value: &impl serde::Serialize) -> Body {
    Body::Json(serde_json::to_value(value).unwrap_or_default())
}

// --- administration of agents ---

impl Client {
    /// Creates a registration token; its secret is in the answer, once.
    pub async fn create_agent_token(
        &self,
        name: &str,
        labels: Option<&[String]>,
        expires_in: Option<u64>,
    ) -> Result<AgentTokenView, ClientError> {
        let body = serde_json::json!({
            "name": name,
            "labels": labels,
            "expires_in": expires_in,
        });
        self.send(Method::POST, "/api/v1/agent-tokens", Body::Json(body))
            .await
    }

    /// The registration tokens not revoked.
    pub async fn agent_tokens(&self) -> Result<AgentTokenList, ClientError> {
        self.get("/api/v1/agent-tokens").await
    }

    /// Revokes a registration token.
    pub async fn revoke_agent_token(&self, id: u64) -> Result<(), ClientError> {
        self.no_content(Method::DELETE, &format!("/api/v1/agent-tokens/{id}"))
            .await
    }

    /// The registered agents.
    pub async fn agents(&self) -> Result<AgentList, ClientError> {
        self.get("/api/v1/agents").await
    }

    /// Deletes an agent: its credential stops working at once.
    pub async fn delete_agent(&self, name: &str) -> Result<(), ClientError> {
        self.no_content(Method::DELETE, &format!("/api/v1/agents/{name}"))
            .await
    }
}
