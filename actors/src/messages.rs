//! The typed messages between actors, one documented struct each. Commands are imperative
//! (`SubmitRun`, `Enqueue`), events past tense (`AttemptEnded`).

use std::sync::Arc;

use actix::{Message, Recipient};
use hodei_domain::ids::{JobId, RunId, WorkerId};
use hodei_domain::model::{Label, Name, Resources};
use hodei_domain::plan::{InputError, RunInputs};
use hodei_domain::ports::{
    JobAttempt, LogError, Orphan, PipelineVersion, ProviderError, StoreError,
};
use hodei_domain::schedule::{ScheduleError, Worker, WorkerState};
use hodei_domain::state::{DomainEvent, JobMachine};

// ---- Event bus --------------------------------------------------------------------------------

/// Announce events that are already durable.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Publish {
    pub events: Vec<DomainEvent>,
}

/// Durable events, as delivered to a subscriber, in the order they were published.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Published {
    pub events: Arc<[DomainEvent]>,
}

/// Receive every event published from now on.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub subscriber: Recipient<Published>,
}

// ---- Logs -------------------------------------------------------------------------------------

/// Start a job attempt's log: mask these secret values in everything it prints.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct OpenLog {
    pub job: JobId,
    pub secrets: Vec<String>,
}

/// Output of a job's step, raw, in the order written.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Output {
    pub job: JobId,
    pub bytes: Vec<u8>,
}

/// A line written by Hodei itself into a job's log (a lost step, a retry, a timeout).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Note {
    pub job: JobId,
    pub text: String,
}

/// The attempt's output is complete: emit what the job's masker held back and wait until the log
/// is written (it survives a crash of Hodei, like the store's transactions); answers its length.
#[derive(Debug, Message)]
#[rtype(result = "Result<u64, HubError>")]
pub struct FlushLog {
    pub job: JobId,
}

/// Bytes of a job's log written elsewhere (by an agent, which masked them), to go at `offset`.
/// The hub appends only what begins at the log's length: bytes it already holds are dropped,
/// and bytes that would leave a gap are refused, with the length the log has.
#[derive(Debug, Message)]
#[rtype(result = "Result<AppendedAt, HubError>")]
pub struct AppendAt {
    pub job: JobId,
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// What became of an [`AppendAt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendedAt {
    /// Taken (all of it, or the part the log did not hold yet): the log's length now.
    Taken { length: u64 },
    /// The bytes begin past the log's end: send from `length`.
    Gap { length: u64 },
}

/// The length of a job's log as appended so far.
#[derive(Debug, Message)]
#[rtype(result = "Result<u64, HubError>")]
pub struct LogLength {
    pub job: JobId,
}

/// A step is about to start: answer the length of the job's log, where the step's output
/// begins (recorded with `StepStarted`), or `None` when the masker still holds bytes of the
/// previous output back (the start of what may be a secret, split across the two steps): they
/// are masked together with this step's output, which is then not a function of its own raw
/// output alone and cannot be taken back after a crash.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<u64>, HubError>")]
pub struct BeginStep {
    pub job: JobId,
}

/// The output of a step taken back after a crash of Hodei comes again from its first byte,
/// through a fresh masker: the same secrets give the same masked bytes, so the hub drops as
/// many of them as the job's log already holds of the step. Sent before the step's output.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SkipOutput {
    pub job: JobId,
    pub skip: OutputSkip,
}

/// Why the log hub could not answer a [`FlushLog`] or a [`BeginStep`].
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The log store refused.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The hub failed while handling the request (it restarts).
    #[error("the log hub failed while handling the request")]
    Failed,
    /// The hub is not running.
    #[error("the log hub is not running")]
    Unavailable(#[from] actix::MailboxError),
}

/// What [`SkipOutput`] drops of a job's next output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputSkip {
    /// The masked bytes the log holds from this offset on (where the step's output began) to
    /// its end.
    StoredSince(u64),
    /// Nothing: the step was not taken back after all.
    Nothing,
}

/// A piece of a job's log as stored, for watchers.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct LogChunk {
    pub job: JobId,
    /// The byte offset of `bytes` in the job's log.
    pub offset: u64,
    pub bytes: Arc<[u8]>,
}

/// Receive every job's output from now on.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct WatchLogs {
    pub watcher: Recipient<LogChunk>,
}

/// Receive one job's output from now on (until the watcher goes away).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct WatchJob {
    pub job: JobId,
    pub watcher: Recipient<LogChunk>,
}

// ---- Scheduler and workers --------------------------------------------------------------------

/// A worker the scheduler may place jobs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    pub id: WorkerId,
    pub labels: Vec<Label>,
    pub slots: u32,
    /// An agent on another machine: its jobs run there, through the agent desk.
    pub agent: bool,
    /// What the worker runs its jobs on does not answer (the Kubernetes API server): it is
    /// offline, takes no new job and keeps those it has, until it is offered again without.
    pub offline: bool,
}

/// Make a worker available to the scheduler.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AddWorker {
    pub worker: WorkerSpec,
}

/// Find a worker for a job; the answer comes as a [`Placed`] to `reply`. Jobs of one run
/// share one reply address in the scheduler: the latest one sent.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Enqueue {
    pub job: JobId,
    pub run: RunId,
    /// Jobs of one pipeline share fairly with other pipelines.
    pub pipeline: Name,
    pub runs_on: Vec<Label>,
    pub resources: Resources,
    pub priority: i32,
    pub concurrency: Option<Name>,
    /// The worker the job already runs on (found placed or running there after a restart): it
    /// goes back there first, whatever else was placed there meanwhile.
    pub resume_on: Option<WorkerId>,
    /// Where the placement goes.
    pub reply: Recipient<Placed>,
    /// Where the scheduler asks for the run's requests again after a restart.
    pub again: Recipient<AskAgain>,
}

/// Forget a queued job (cancelled before it was placed).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Dequeue {
    pub job: JobId,
}

/// One placement of a job on a worker, numbered by the scheduler: a release names the
/// placement it ends, so that a late release of an earlier placement never frees a later one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlacementId(pub u64);

/// A placed job is done with its worker: free the slot and the concurrency group, if that
/// placement still holds them.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Release {
    pub job: JobId,
    pub placement: PlacementId,
}

/// The scheduler's answer to an [`Enqueue`]: it chose a worker for the job, which holds one of
/// its slots from now on. The asker answers whether it took the placement up; one it does not
/// take up, or never handles (it stopped first), is released by the scheduler itself, so that
/// no slot outlives the job it was given to.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Taken")]
pub struct Placed {
    pub job: JobId,
    pub worker: WorkerId,
    pub placement: PlacementId,
    /// The worker is an agent.
    pub agent: bool,
}

/// Whether an asker took a placement up: a job actor now holds it, and releases it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, actix::MessageResponse)]
pub enum Taken {
    Yes,
    /// Not wanted any more (cancelled, or the run reloaded meanwhile): the scheduler frees it.
    No,
}

/// The scheduler restarted and may have lost requests of the run: send again every job still
/// waiting for a placement (a job still queued is not queued twice).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct AskAgain {
    pub run: RunId,
}

// ---- Runs and jobs ----------------------------------------------------------------------------

/// Why a run could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The pipeline does not load: every diagnostic, rendered.
    #[error("the pipeline is invalid:\n{0}")]
    InvalidPipeline(String),
    /// The run's parameters do not fit the pipeline.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidInputs(Vec<InputError>),
    /// The store refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The orchestrator is not running.
    #[error("the orchestrator is not running")]
    Unavailable,
    /// The run cannot be retried in its state (only a failed or cancelled run can).
    #[error("the run is {state}: only a failed or cancelled run can be retried")]
    NotRetryable { state: &'static str },
    /// Unfinished runs hold as many jobs as the limit allows: try again later.
    #[error("unfinished runs hold {holding} jobs: the limit is {limit}")]
    QueueFull { holding: usize, limit: usize },
    /// The run has more jobs than unfinished runs may ever hold.
    #[error("the run has {jobs} jobs, more than unfinished runs may hold: the limit is {limit}")]
    TooManyJobs { jobs: usize, limit: usize },
    /// Hodei failed while accepting the run: a bug, logged with its cause.
    #[error("internal error while accepting the run: {0}")]
    Internal(String),
}

/// Run again what a run ran: a new run of the same stored pipeline version, with the same
/// inputs; answers with its id once it is durable. An unknown run is
/// [`StoreError::NotFound`].
#[derive(Debug, Message)]
#[rtype(result = "Result<RunId, SubmitError>")]
pub struct RerunRun {
    pub run: RunId,
    /// The most jobs unfinished runs may hold with this one ([`SubmitError::QueueFull`]).
    pub limit: Option<usize>,
}

/// Retry what failed in a finished run: a new run of the same pinned version and inputs, in
/// which the jobs that succeeded in the earlier run are carried over (succeeded, not run
/// again) and the others run. Only a failed or cancelled run can be retried.
#[derive(Debug, Message)]
#[rtype(result = "Result<RunId, SubmitError>")]
pub struct RetryRun {
    pub run: RunId,
    /// The most jobs unfinished runs may hold with this one ([`SubmitError::QueueFull`]).
    pub limit: Option<usize>,
}

/// What a submitted run runs.
#[derive(Debug, Clone)]
pub enum Definition {
    /// A version the store already holds, as the caller read it: the run records this version.
    Stored(PipelineVersion),
    /// A pipeline's YAML text (`hodei run FILE`): stored as a new version of its pipeline,
    /// unless it is the text of the latest stored version, which the run then records.
    Text(String),
}

impl Definition {
    /// The pipeline's YAML text.
    pub fn source(&self) -> &str {
        match self {
            Definition::Stored(version) => &version.source,
            Definition::Text(source) => source,
        }
    }
}

/// Accept a run of a pipeline; answers with its id once it is durable.
#[derive(Debug, Message)]
#[rtype(result = "Result<RunId, SubmitError>")]
pub struct SubmitRun {
    pub definition: Definition,
    pub inputs: RunInputs,
    /// The most jobs unfinished runs may hold with this one: a run that would pass it is
    /// refused whole ([`SubmitError::QueueFull`], or [`SubmitError::TooManyJobs`] for a run
    /// that never fits); `None` for no limit. Checked and reserved in one step.
    pub limit: Option<usize>,
}

/// Cancel a run: running steps are stopped, pending jobs cancelled, `cancelled` and `always`
/// hooks run.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct CancelRun {
    pub run: RunId,
    /// Who asked: a user, or `hodei`.
    pub by: String,
}

/// Approve a job that waits at an approval gate.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ApproveJob {
    pub run: RunId,
    pub job: JobId,
    pub by: String,
}

/// A run actor is done: its run is finished, or it gave up (the orchestrator decides whether
/// and when a new actor takes the run up).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RunActorStopped {
    pub run: RunId,
    /// It gave up because the store could not be reached: not the run's fault, and no reason
    /// to spend its restart budget.
    pub store_unavailable: bool,
}

/// A run actor loaded its run and acted on its first reconcile: its queued jobs are asked for.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RunLoaded {
    pub run: RunId,
}

/// How far the orchestrator is with resuming the unfinished runs it found at start-up.
#[derive(Debug, Message)]
#[rtype(result = "Resuming")]
pub struct GetResuming;

/// The answer to [`GetResuming`]: how many runs found at start-up are not loaded yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, actix::MessageResponse)]
pub struct Resuming {
    pub runs: usize,
}

/// A job attempt is over: the machine is terminal, or queued again for its next attempt.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AttemptEnded {
    pub job: JobId,
    pub machine: JobMachine,
}

/// A job attempt failed half-way (a panic, a store refusal) and stopped what it ran, without
/// handing its machine back: its run reloads the job from the store.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AttemptCrashed {
    pub job: JobId,
}

/// Stop the job: kill the running step, run the `cancelled` and `always` hooks.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct CancelJob;

/// The attempt's lease is lost (an agent's job that its server gave to another worker): stop
/// its step and tear its workspace down, recording nothing more.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct LoseJob;

/// The job's run actor failed: stop the attempt where it is — its step killed, nothing
/// recorded — for the run's next actor to take it over from there.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct AbandonJob;

// ---- Scheduler queries and workers ------------------------------------------------------------

/// A worker is gone (its lease ran out): place nothing more on it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RemoveWorker {
    pub worker: WorkerId,
}

/// Every waiting job in the order the policy would consider it, with why it waits: the queue
/// view of the API.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Waiting>")]
pub struct GetQueue {
    /// At most this many, from the front of the queue.
    pub limit: usize,
    /// Only the jobs of this run (their positions still count every job ahead).
    pub run: Option<RunId>,
}

/// A pool of ephemeral workers cannot start a worker (`trouble`), or can again (`None`): the
/// queued jobs its workers would take say so as the reason they wait.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct PoolTrouble {
    pub pool: String,
    /// The labels its workers offer.
    pub labels: Vec<Label>,
    pub trouble: Option<String>,
}

/// A job in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub job: JobId,
    pub run: RunId,
    /// How many queued jobs are ahead of it (0: it is next).
    pub position: usize,
    /// Its pipeline (its fair-share project).
    pub pipeline: String,
    /// The labels its worker must have.
    pub runs_on: Vec<Label>,
    pub priority: i32,
    pub queued_at: hodei_domain::ids::Timestamp,
    /// The ready workers that could take it (whether or not they have room now).
    pub candidates: Vec<WorkerId>,
    /// Why it waits, in words.
    pub reason: String,
}

/// Every worker with what it offers and runs.
#[derive(Debug, Message)]
#[rtype(result = "Vec<WorkerView>")]
pub struct GetWorkers;

/// A worker as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    pub worker: Worker,
    /// The jobs placed on it, in placement order.
    pub jobs: Vec<JobId>,
}

/// Drain a worker (it keeps its jobs and takes no new one) or make it ready again.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), ScheduleError>")]
pub struct SetWorkerState {
    pub worker: WorkerId,
    pub state: WorkerState,
}

/// How many jobs wait and how many hold a slot: the queue depth of the metrics.
#[derive(Debug, Message)]
#[rtype(result = "QueueStats")]
pub struct GetQueueStats;

/// The answer to [`GetQueueStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, actix::MessageResponse)]
pub struct QueueStats {
    pub queued: usize,
    pub placed: usize,
}

/// Register a worker, or offer a known one again with a new spec (its labels or slots
/// changed); answers when the registry has it. Every change of a worker's spec goes through
/// the registry, which keeps the spec and hands it to the scheduler.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RegisterWorker {
    pub worker: WorkerSpec,
    /// How long the worker may stay silent before it is considered lost; `None` for the local
    /// machine, which lives and dies with Hodei.
    pub lease: Option<std::time::Duration>,
}

/// A worker is alive.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Heartbeat {
    pub worker: WorkerId,
}

// ---- Providers --------------------------------------------------------------------------------

/// Stop whatever an earlier life of Hodei left running, except what belongs to the job attempts
/// in `spare` (the store shows them running a step, and their job actors will try to take the
/// step back); answers with what was stopped.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Orphan>, ProviderError>")]
pub struct ReapOrphans {
    pub spare: Vec<JobAttempt>,
}
