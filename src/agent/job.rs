//! One job on the agent: the attempt runs in the same job actor as on the server, its output
//! spooled to the agent's disk by a log hub of its own, its transitions kept in an
//! [`Outbox`]; the uploader sends the output (each append at its offset) and then the
//! transitions to the server, retrying while the server is away, and seals the attempt with
//! its output's length and SHA-256 when it is over.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Context, Handler, Supervisor};
use hodei_actors::Ports;
use hodei_actors::agents::{ClaimedJob, LogSeal};
use hodei_actors::contain::{ActorKind, RestartCounter};
use hodei_actors::fault::Faults;
use hodei_actors::job::{JobActor, JobPeers};
use hodei_actors::loghub::LogHub;
use hodei_actors::messages::{AttemptCrashed, AttemptEnded, Placed, PlacementId, Release};
use hodei_actors::supervise::Restarts;
use hodei_adapters::clock::SystemClock;
use hodei_adapters::logs::FileLogStore;
use hodei_adapters::route::ByImage;
use hodei_adapters::sqlite::SqliteStore;
use hodei_api::client::{Client, ClientError};
use hodei_domain::ids::{JobId, WorkerId};
use hodei_domain::ports::LogStore;
use hodei_domain::restart::RestartPolicy;
use hodei_domain::state::DomainEvent;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::checkout::FetchFirst;
use super::files::AgentFiles;
use super::outbox::Outbox;
use crate::wiring::EnvSecrets;

/// The most output sent in one append.
const CHUNK: u64 = 1024 * 1024;
/// How long the upload waits for more after output or a transition.
const GATHER: Duration = Duration::from_millis(20);

/// Where an attempt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Nothing of it runs any more; its outcome is being recorded.
    Released,
    /// The job actor handed its machine back: every transition is in the outbox.
    Ended,
    /// The job actor failed half-way and stopped what it ran.
    Crashed,
}

/// Follows the job actor of one attempt.
struct Watch {
    phase: watch::Sender<Phase>,
}

impl Actor for Watch {
    type Context = Context<Self>;
}

impl Handler<Release> for Watch {
    type Result = ();

    fn handle(&mut self, _: Release, _: &mut Context<Self>) {
        self.phase.send_if_modified(|phase| {
            let running = *phase == Phase::Running;
            if running {
                *phase = Phase::Released;
            }
            running
        });
    }
}

impl Handler<AttemptEnded> for Watch {
    type Result = ();

    fn handle(&mut self, _: AttemptEnded, _: &mut Context<Self>) {
        let _ = self.phase.send(Phase::Ended);
    }
}

impl Handler<AttemptCrashed> for Watch {
    type Result = ();

    fn handle(&mut self, _: AttemptCrashed, _: &mut Context<Self>) {
        let _ = self.phase.send(Phase::Crashed);
    }
}

/// A job the agent holds.
pub struct Held {
    pub epoch: u64,
    /// The job token of the claim.
    pub token: String,
    pub actor: Addr<JobActor>,
    pub phase: watch::Receiver<Phase>,
}

/// How an attempt's upload ended.
#[derive(Debug)]
pub enum Upload {
    /// The server has the whole attempt.
    Sealed,
    /// The server gave the job to another worker (or it is gone): stop it.
    Lost(String),
    /// The attempt failed on the agent; its lease is left to run out.
    Crashed,
}

/// What a job needs of the agent.
#[derive(Clone)]
pub struct Setting {
    /// Never read on an agent (a job's transitions go to the server through its outbox): an
    /// empty in-memory store stands in the job actor's ports.
    pub store: Arc<SqliteStore>,
    pub provider: Arc<ByImage>,
    pub client: Client,
    pub name: String,
    pub spool: PathBuf,
    /// Caches and scratch directories on the agent's disk (`files.rs`).
    pub files: hodei_adapters::files::DiskFiles,
    /// The agent's mirrors of repositories, which jobs check out from (`checkout.rs`).
    pub mirrors: Arc<hodei_adapters::git::GitMirrors>,
    /// Rung when a job is over: a poll without room is asked again, with room.
    pub freed: Arc<tokio::sync::Notify>,
}

/// An attempt just started: what the agent holds, and what its upload reads.
pub struct Started {
    pub held: Held,
    pub outbox: Arc<Outbox>,
    pub logs: Arc<dyn LogStore>,
}

/// Starts the attempt: its spool, its log hub and its job actor.
pub fn start(claimed: &ClaimedJob, setting: &Setting) -> Result<Started, String> {
    let dir = setting
        .spool
        .join(format!("job-{}-epoch-{}", claimed.job.0, claimed.epoch));
    let logs: Arc<dyn LogStore> = Arc::new(
        FileLogStore::open(&dir, 1)
            .map_err(|err| format!("cannot open the spool {}: {err}", dir.display()))?,
    );
    // The attempt's own calls (its checkout, its files) present its job token.
    let client = setting.client.with_token(&claimed.token);
    let provider = FetchFirst {
        inner: setting.provider.clone(),
        mirrors: setting.mirrors.clone(),
        client: client.clone(),
        epoch: claimed.epoch,
    };
    let files = AgentFiles {
        disk: setting.files.clone(),
        client,
        job: claimed.job,
        epoch: claimed.epoch,
    };
    let ports = Ports {
        store: setting.store.clone(),
        logs: logs.clone(),
        provider: Arc::new(provider),
        worker_providers: Default::default(),
        reconcile: setting.provider.clone(),
        clock: Arc::new(SystemClock),
        secrets: Arc::new(EnvSecrets::default()),
        files: Arc::new(files),
        faults: Faults::none(),
    };
    let restarts = Restarts::new(
        ActorKind::LogHub,
        RestartPolicy::default(),
        ports.clock.clone(),
        hodei_actors::supervise::exit_on_escalation(),
        Arc::new(RestartCounter::default()),
    );
    let (for_hub, faults) = (logs.clone(), ports.faults.clone());
    let hub = Supervisor::start(move |_| LogHub::new(for_hub, faults, restarts));
    let outbox = Arc::new(Outbox::default());
    let (phase, watching) = watch::channel(Phase::Running);
    let watch = Watch { phase }.start();
    let peers = JobPeers {
        hub,
        ledger: outbox.clone(),
        slots: watch.clone().recipient(),
        ended: watch.clone().recipient(),
        crashed: watch.recipient(),
    };
    let placement = Placed {
        job: claimed.job,
        worker: WorkerId(setting.name.clone()),
        placement: PlacementId(claimed.epoch),
        agent: true,
    };
    let actor = JobActor::new(
        Arc::new(claimed.def.clone()),
        claimed.machine.clone(),
        placement,
        ports,
        peers,
    )
    .start();
    Ok(Started {
        held: Held {
            epoch: claimed.epoch,
            token: claimed.token.clone(),
            actor,
            phase: watching,
        },
        outbox,
        logs,
    })
}

/// The offsets the agent's log hub gives are of the attempt's own output; the server's log
/// holds earlier attempts before it.
fn rebase(events: &mut [DomainEvent], base: u64) {
    for event in events {
        if let DomainEvent::StepStarted {
            log_offset: Some(offset),
            ..
        } = event
        {
            *offset += base;
        }
    }
}

/// Sends the attempt's output and transitions until the server has all of it, or the lease
/// is lost.
pub async fn upload(
    client: Client,
    job: JobId,
    epoch: u64,
    base: u64,
    outbox: Arc<Outbox>,
    logs: Arc<dyn LogStore>,
    mut phase: watch::Receiver<Phase>,
) -> Upload {
    let mut sent = 0u64;
    let mut seq = 0u64;
    let mut batch: Vec<DomainEvent> = Vec::new();
    let mut sealing = false;
    let mut backoff = Backoff::default();
    // The start goes at once (the server then knows that steps may have run: an attempt lost
    // after it is a new attempt); what follows is gathered.
    loop {
        let now = *phase.borrow_and_update();
        if now == Phase::Crashed {
            return Upload::Crashed;
        }
        let ended = now == Phase::Ended;
        if ended {
            // The hub's writes are done: the spool holds the whole output.
            let _ = logs.settle(job).await;
        }
        let step = async {
            if batch.is_empty() && !sealing {
                batch = outbox.drain();
                rebase(&mut batch, base);
                // Once the attempt is over, what the outbox holds is the last of it.
                sealing = ended;
            }
            // Then the output, measured after the transitions were taken: the job actor records
            // a transition only once the output before it is in the spool, so everything a
            // transition follows is sent before it (a server that takes a job's end holds all
            // of its output: one killed right after cannot keep the end and lose the tail).
            let length = logs.len(job).map_err(|e| Fail::Local(e.to_string()))?;
            while sent < length {
                let to = length.min(sent + CHUNK);
                let bytes = logs
                    .read(job, sent, Some(to))
                    .await
                    .map_err(|e| Fail::Local(e.to_string()))?;
                sent = client.append_log(job, epoch, sent, bytes).await?;
            }
            if sealing {
                let whole = logs
                    .read(job, 0, Some(length))
                    .await
                    .map_err(|e| Fail::Local(e.to_string()))?;
                let seal = LogSeal {
                    length,
                    sha256: Sha256::digest(&whole).into(),
                };
                // Sent again as it is until the server takes it: a batch keeps its number
                // and its events.
                client
                    .report(job, epoch, seq, batch.clone(), Some(seal))
                    .await?;
                return Ok(true);
            }
            if !batch.is_empty() {
                client.report(job, epoch, seq, batch.clone(), None).await?;
                batch.clear();
                seq += 1;
            }
            Ok::<bool, Fail>(false)
        };
        match step.await {
            Ok(true) => return Upload::Sealed,
            Ok(false) => backoff.reset(),
            Err(Fail::Server(err)) if err.code() == Some("lease-lost") => {
                return Upload::Lost(err.to_string());
            }
            Err(Fail::Server(err)) if err.code() == Some("log-incomplete") => {
                // The server lost output it had taken (it crashed before writing it): ask
                // where its log ends and send again from there.
                match client.append_log(job, epoch, 0, Vec::new()).await {
                    Ok(committed) => sent = committed,
                    Err(err) => {
                        tracing::warn!(job_id = %job, error = %err, "Cannot ask the server for the job's log length.")
                    }
                }
            }
            Err(Fail::Server(err)) if err.status() == Some(401) => {
                return Upload::Lost(err.to_string());
            }
            Err(err) => {
                tracing::warn!(job_id = %job, error = %err, "Cannot send the job's progress to the server; trying again.");
                backoff.wait().await;
                continue;
            }
        }
        if !ended {
            // Wait for more: output, a transition, or the end of the attempt.
            tokio::select! {
                _ = outbox.bell.notified() => {}
                _ = phase.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            // What follows closely goes with it (a short step's end, the attempt's end): one
            // exchange for the rest of a short job, at the price of 20 ms more before the
            // server sees a later step start.
            tokio::select! {
                _ = phase.wait_for(|p| matches!(p, Phase::Ended | Phase::Crashed)) => {}
                _ = tokio::time::sleep(GATHER) => {}
            }
        }
    }
}

/// Why a round of the upload failed.
#[derive(Debug, thiserror::Error)]
enum Fail {
    #[error(transparent)]
    Server(#[from] ClientError),
    #[error("cannot read the spool: {0}")]
    Local(String),
}

/// Waits longer after each failure, up to 5 s.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn reset(&mut self) {
        self.failures = 0;
    }

    async fn wait(&mut self) {
        self.failures = self.failures.saturating_add(1);
        let millis = 100u64.saturating_mul(1 << self.failures.min(6)).min(5_000);
        tokio::time::sleep(Duration::from_millis(millis)).await;
    }
}
