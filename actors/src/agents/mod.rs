//! Agents: jobs that run on other machines.
//!
//! - `desk.rs`: the [`AgentDesk`] actor — which agent is connected, which jobs are offered to
//!   it, the leases it holds (epoch, expiry) and its long-polls; every write of an agent goes
//!   through it, checked against the lease.
//! - `remote.rs`: the [`RemoteJob`] actor — the server's side of one attempt on an agent: it
//!   holds the job's machine, checks each reported transition against it, records it fenced by
//!   the lease, and hands the machine back to the run.
//!
//! The agent itself runs the attempt with the same [`crate::job::JobActor`] as the server, its
//! transitions going to its server through a [`crate::record::Ledger`] of its own.

mod desk;
mod remote;

use std::sync::Arc;

use actix::{Addr, Message};
use hodei_domain::engine::JobDef;
use hodei_domain::ids::{JobId, RunId};
use hodei_domain::ports::{Fenced, StoreError};
use hodei_domain::state::{DomainEvent, JobMachine, NotFollowed};
use serde::{Deserialize, Serialize};

pub use desk::{AgentDesk, AgentSettings, DeskOwn};
pub use remote::{RemoteJob, RemotePeers};

use crate::messages::HubError;

/// A job offered to an agent by its [`RemoteJob`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Offer {
    pub job: JobId,
    pub run: RunId,
    /// The agent's name.
    pub agent: String,
    pub def: Arc<JobDef>,
    pub machine: JobMachine,
    pub actor: Addr<RemoteJob>,
}

/// The job's attempt is over (or its actor stopped): the desk forgets it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Withdraw {
    pub job: JobId,
}

/// Cancel a job on its agent: `true` if an agent holds it (it is told), `false` if none does
/// yet (it is no longer offered).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct CancelLeased {
    pub job: JobId,
}

/// The epoch of the lease an agent holds on `job`, if one does.
#[derive(Message)]
#[rtype(result = "Option<u64>")]
pub struct LeaseOf {
    pub job: JobId,
}

/// The run of the job whose lease with `epoch` the job token (by its digest) opens: the calls
/// of an agent about an attempt's checkout and files are checked with it.
#[derive(Message)]
#[rtype(result = "Result<RunId, ReportError>")]
pub struct LeaseRun {
    pub token: [u8; 32],
    pub job: JobId,
    pub epoch: u64,
}

/// The lease of the attempt ran out, or its agent handed the job back.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Lost {
    pub epoch: u64,
    /// The agent handed it back (it was stopped); otherwise it stopped answering.
    pub handed_back: bool,
}

/// An agent that stops hands back a job it holds: the attempt is lost with it at once,
/// rather than when the lease runs out.
#[derive(Message)]
#[rtype(result = "Result<(), ReportError>")]
pub struct HandBack {
    /// The digest of the job token presented.
    pub token: [u8; 32],
    pub job: JobId,
    pub epoch: u64,
}

/// A lease ran out that no actor of the server held (the server restarted, and the agent
/// never came back): the job's run records the attempt as lost with its worker.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct LeaseExpired {
    pub run: RunId,
    pub job: JobId,
    pub agent: String,
    pub epoch: u64,
}

/// Where the desk sends [`LeaseExpired`]: the orchestrator, started after the desk.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wire {
    pub expired: actix::Recipient<LeaseExpired>,
}

/// The agent went away before it claimed the job.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unclaimed;

/// Transitions an agent reports about the attempt it holds.
#[derive(Message)]
#[rtype(result = "Result<Fenced, ReportError>")]
pub struct Reported {
    pub epoch: u64,
    pub seq: u64,
    pub events: Vec<DomainEvent>,
    /// The attempt is over: its lease closes with these transitions.
    pub end: bool,
}

/// Why a report was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("transition refused: {0}")]
    Refused(NotFollowed),
    #[error("the attempt is not over: its last transition must end it")]
    NotOver,
    #[error("the agent does not hold this job (its lease is over or belongs to another)")]
    Stale,
    #[error("the server is taking the job back after a restart; send again")]
    NotReady,
    #[error(
        "the job's log holds {committed} bytes of the attempt, not {expected}: send from {committed}"
    )]
    LogIncomplete { committed: u64, expected: u64 },
    #[error("the job's log does not match the checksum the agent sent")]
    Checksum,
    #[error("cannot record the report")]
    Store(#[source] StoreError),
    #[error("cannot read the job's log")]
    Log(#[source] HubError),
    #[error("the desk is not running")]
    Unavailable,
}

/// A job given to an agent: what it runs, under which lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimedJob {
    pub job: JobId,
    pub run: RunId,
    pub epoch: u64,
    /// Where the attempt's output begins in the job's log on the server.
    pub log_base: u64,
    /// How long the lease lasts without a heartbeat, in milliseconds.
    pub lease_ms: u64,
    /// The job token: the bearer of the attempt's own calls (its log, its transitions), valid
    /// for this job under this lease only.
    pub token: String,
    pub def: JobDef,
    pub machine: JobMachine,
}

/// What a long-poll of an agent brings back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Work {
    /// A job to run, if one waited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Box<ClaimedJob>>,
    /// More jobs, when the poll said it has room for more than one (`free`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more: Vec<ClaimedJob>,
    /// Jobs the agent holds that are cancelled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cancel: Vec<JobId>,
}

/// An agent's claim: give it a job, or tell it about cancels.
#[derive(Message)]
#[rtype(result = "Result<Work, ReportError>")]
pub struct TryClaim {
    pub agent: String,
    /// It has room for another job.
    pub room: bool,
    /// The job token for the job claimed, if one is: the secret goes to the agent, the
    /// digest into the lease.
    pub token: JobToken,
}

/// A job token: the secret and its SHA-256 digest.
#[derive(Clone)]
pub struct JobToken {
    pub secret: String,
    pub digest: [u8; 32],
}

/// An agent is connected: its worker is offered to the scheduler.
#[derive(Message)]
#[rtype(result = "Arc<tokio::sync::Notify>")]
pub struct AgentSeen {
    pub agent: String,
    pub labels: Vec<hodei_domain::model::Label>,
    pub slots: u32,
    pub version: String,
}

/// An agent stops: it takes no new job, and what was offered to it and not claimed goes to
/// other workers; once `gone` (its running jobs ended or handed back), it is no longer a
/// worker.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leaving {
    pub agent: String,
    pub gone: bool,
}

/// An agent opened its doorbell (a WebSocket): the answer is the bell that rings when work or
/// a cancel is there for it.
#[derive(Message)]
#[rtype(result = "Arc<tokio::sync::Notify>")]
pub struct OpenDoorbell {
    pub agent: String,
}

/// An agent's doorbell closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseDoorbell {
    pub agent: String,
}

/// What the desk knows of the agents now, for `/api/v1/workers` and the metrics.
#[derive(Message)]
#[rtype(result = "AgentStats")]
pub struct GetAgentStats {
    /// Hand over the claim latencies measured since the last such ask, and forget them (the
    /// metrics' scrape); otherwise none are answered.
    pub take_claims: bool,
}

/// The agents now, and the desk's counts since the server started.
#[derive(Debug, Clone, Default)]
pub struct AgentStats {
    pub connected: Vec<AgentLive>,
    /// Leases that ran out.
    pub lease_expiries: u64,
    /// Bytes of job output taken from agents.
    pub log_bytes: u64,
    /// Seconds from a job's offer to an agent to its claim, since the last `take_claims`.
    pub claim_seconds: Vec<f64>,
}

/// A connected agent.
#[derive(Debug, Clone)]
pub struct AgentLive {
    pub name: String,
    pub version: String,
    /// When it was last heard of (a poll or a heartbeat).
    pub last_seen: hodei_domain::ids::Timestamp,
    /// The jobs it holds a lease on.
    pub leases: usize,
    /// Its doorbell (a WebSocket) is open; otherwise it long-polls.
    pub doorbell: bool,
}

/// An agent's heartbeat: the leases it holds; answers those it does not hold any more.
#[derive(Message)]
#[rtype(result = "Beat")]
pub struct AgentBeat {
    pub agent: String,
    pub jobs: Vec<(JobId, u64)>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Beat {
    /// Jobs whose lease the agent no longer holds: it stops them.
    pub lost: Vec<JobId>,
    /// Jobs it holds that are cancelled.
    pub cancel: Vec<JobId>,
}

/// Bytes of a job's log from the agent that holds it, at an offset of the attempt's output.
#[derive(Message)]
#[rtype(result = "Result<u64, ReportError>")]
pub struct AgentLog {
    /// The digest of the job token presented.
    pub token: [u8; 32],
    pub job: JobId,
    pub epoch: u64,
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// Transitions from the agent that holds a job; with `end`, the attempt's output's length
/// and SHA-256, checked against the log before the lease closes.
#[derive(Message)]
#[rtype(result = "Result<Fenced, ReportError>")]
pub struct AgentReport {
    /// The digest of the job token presented.
    pub token: [u8; 32],
    pub job: JobId,
    pub epoch: u64,
    pub seq: u64,
    pub events: Vec<DomainEvent>,
    pub end: Option<LogSeal>,
}

/// The length and SHA-256 of an attempt's output, as the agent has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSeal {
    pub length: u64,
    #[serde(with = "hex32")]
    pub sha256: [u8; 32],
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return Err(serde::de::Error::custom("expected 64 hexadecimal digits"));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let pair = std::str::from_utf8(pair).map_err(serde::de::Error::custom)?;
            out[i] = u8::from_str_radix(pair, 16)
                .map_err(|_| serde::de::Error::custom("expected hexadecimal digits"))?;
        }
        Ok(out)
    }
}
