//! The ports: what the actors need from the outside world, as traits the adapters implement.
//! The domain defines them and stays free of I/O; the binary chooses the implementations.
//!
//! Futures are boxed ([`BoxFuture`]) so that ports can be used as trait objects without any
//! async runtime in the domain.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::ids::{JobId, RunId, Timestamp};
use crate::model::{Env, Image, Name, PullPolicy, Resources, Service};
use crate::state::{Attempt, StepExit};

/// A boxed, sendable future: what port methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The time, as the caller sees it. Tests use a clock they move by hand.
pub trait Clock: Send + Sync {
    /// Now, in milliseconds since the Unix epoch.
    fn now(&self) -> Timestamp;
}

/// What a provider needs to know to prepare a job attempt.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobSpec {
    pub run: RunId,
    pub job: JobId,
    pub attempt: Attempt,
    /// The job's display name, e.g. `test (os=bookworm, rust=stable)`.
    pub name: String,
    pub image: Option<Image>,
    pub pull: PullPolicy,
    pub user: Option<String>,
    pub services: Vec<(Name, Service)>,
    pub resources: Resources,
    /// The code the workspace starts with, for a run from a registered repository.
    pub checkout: Option<Checkout>,
    /// The run's secrets that the job's steps get, by variable name; their values are in the
    /// steps' environments too. A provider that keeps them apart from the rest of a step's
    /// environment (Kubernetes: in a Secret of the job's pod) does so with these. Never
    /// serialised; `Debug` shows only the names.
    #[serde(skip)]
    pub secrets: SecretVars,
    /// The job's `timeout`, which Hodei enforces itself; a provider may hand it to its engine
    /// as a last resort (Kubernetes: the pod's `activeDeadlineSeconds`).
    #[serde(default)]
    pub timeout: Option<std::time::Duration>,
}

/// Secret values by variable name. `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretVars(pub std::collections::BTreeMap<String, String>);

impl std::fmt::Debug for SecretVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// A repository at a commit, for a job's workspace: the provider clones it from the mirror of
/// the repository on its machine before the first step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkout {
    /// The registered repository's name: its mirror is found by it.
    pub repository: String,
    pub commit: String,
    /// Commits of history; `None` for all.
    pub depth: Option<u32>,
    pub submodules: bool,
}

/// One step to run in a prepared workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSpec {
    /// Its position in the job, from 0.
    pub index: u32,
    /// The step's own attempt, from 1.
    pub attempt: Attempt,
    /// The script, handed to the shell as its last argument, never rewritten.
    pub script: String,
    /// The shell's command line, e.g. `["/bin/sh", "-e", "-c"]`.
    pub shell: Vec<String>,
    /// The complete environment of the step: nothing else is inherited.
    pub env: Env,
    /// Relative to the workspace.
    pub working_dir: Option<String>,
}

/// A job attempt's prepared workspace, as the provider identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub run: RunId,
    pub job: JobId,
    pub attempt: Attempt,
    /// Provider-specific: a directory, a container id, a pod name.
    pub id: String,
}

/// A started step, as the provider identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepHandle {
    pub job: JobId,
    pub index: u32,
    pub attempt: Attempt,
    /// Provider-specific: a process group id, a container exec id.
    pub id: String,
}

/// What a job's services wrote, by service name.
pub type ServiceLogs = Vec<(String, Vec<u8>)>;

/// Where a provider delivers a step's output: stdout and stderr interleaved in the order they
/// were written, as raw bytes, in chunks of any size.
pub trait OutputSink: Send + Sync {
    /// Takes one chunk. Must not block for long: it is called from the provider's reader.
    fn output(&self, chunk: &[u8]);
}

/// The error underneath a port's error (an I/O error, the database's, the engine's), kept for
/// the error's chain ([`std::error::Error::source`]). Shared, so that errors stay cheap to
/// clone; two causes are equal when they read the same.
#[derive(Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    /// Keeps `err` as a cause.
    pub fn new(err: impl std::error::Error + Send + Sync + 'static) -> Cause {
        Cause(Arc::new(err))
    }

    /// `Some(Cause::new(err))`, for the `cause` fields of port errors.
    pub fn of(err: impl std::error::Error + Send + Sync + 'static) -> Option<Cause> {
        Some(Cause::new(err))
    }
}

impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Cause) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for Cause {}

/// A provider's failure to do its part. A step's own failure is not one: it is a [`StepExit`].
/// Each variant keeps the error underneath, when there is one, as its `source()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The engine behind the provider cannot be reached (Docker down, API refused); retry later.
    #[error("{provider} is unavailable: {reason}")]
    Unavailable {
        provider: &'static str,
        reason: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The job's workspace could not be set up.
    #[error("cannot set up the workspace: {reason}")]
    SetUp {
        reason: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The step's process could not be started (shell missing, bad working directory, ...).
    #[error("cannot start the step: {reason}")]
    Start {
        reason: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The step ran but its outcome could not be collected.
    #[error("lost track of the step: {reason}")]
    Wait {
        reason: String,
        #[source]
        cause: Option<Cause>,
    },
    /// Anything else the provider could not do.
    #[error("{provider}: {reason}")]
    Other {
        provider: &'static str,
        reason: String,
        #[source]
        cause: Option<Cause>,
    },
}

impl ProviderError {
    /// Whether trying again later may succeed without any change by the user.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProviderError::Unavailable { .. })
    }
}

/// Runs the steps of jobs somewhere: local processes, Docker containers.
///
/// ## Lifecycle
/// For each job attempt: [`set_up`](Provider::set_up) once; then for each step, in order,
/// [`start_step`](Provider::start_step) and [`wait_step`](Provider::wait_step); at the end,
/// [`tear_down`](Provider::tear_down) — also after a failed set-up, a failed step, a cancel or a
/// timeout. [`destroy_step`](Provider::destroy_step) stops a running step at any moment. After a
/// crash of Hodei, [`resume`](Provider::resume) hands back an attempt's workspace, if it can,
/// in place of `set_up`.
///
/// ## Guarantees
/// - A step runs with exactly [`StepSpec::env`], never the environment of Hodei itself.
/// - Output reaches the sink in the order it was written, stdout and stderr interleaved, and
///   all of it has been delivered when `wait_step` returns.
/// - The exit code, the signal and an out-of-memory kill are data ([`StepExit`]), not errors.
/// - `destroy_step` leaves nothing of the step running (every process it started, a container,
///   a pod); it is idempotent and safe on a step that never started or already ended.
/// - `tear_down` is idempotent and safe after a failed or partial `set_up`.
///
/// ## Errors
/// [`ProviderError`] when the provider itself fails; [`ProviderError::is_retryable`] tells the
/// scheduler whether to wait for the engine rather than fail the job.
pub trait Provider: Send + Sync {
    /// A short name for logs and metrics: `local`, `docker`, `kubernetes`, `fake`.
    fn name(&self) -> &'static str;

    /// Prepares the workspace of a job attempt.
    fn set_up<'a>(&'a self, job: &'a JobSpec) -> BoxFuture<'a, Result<Workspace, ProviderError>>;

    /// Starts a step; its output goes to `output` until it ends.
    fn start_step<'a>(
        &'a self,
        workspace: &'a Workspace,
        step: &'a StepSpec,
        output: Arc<dyn OutputSink>,
    ) -> BoxFuture<'a, Result<StepHandle, ProviderError>>;

    /// Waits for a started step to end, after all its output was delivered.
    fn wait_step<'a>(
        &'a self,
        step: &'a StepHandle,
    ) -> BoxFuture<'a, Result<StepExit, ProviderError>>;

    /// Stops a step and everything it started. Idempotent.
    fn destroy_step<'a>(&'a self, step: &'a StepHandle)
    -> BoxFuture<'a, Result<(), ProviderError>>;

    /// Removes the workspace. Idempotent, safe after a failed set-up.
    fn tear_down<'a>(
        &'a self,
        workspace: &'a Workspace,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// Whether tearing `workspace` down takes about as long as a commit of the store (a
    /// directory of this machine removed): the last step's end is then written with the job's
    /// end, after the tear-down, in one commit. Otherwise (containers or pods to stop: the
    /// default) it is recorded before the tear-down, so that a crash during a long tear-down
    /// finds the step ended.
    fn quick_tear_down(&self, workspace: &Workspace) -> bool {
        let _ = workspace;
        false
    }

    /// What each of the job's services wrote so far (stdout and stderr as interleaved), by
    /// service name, in name order: for the job's log, before `tear_down`. Empty for a
    /// provider without services.
    fn service_logs<'a>(
        &'a self,
        workspace: &'a Workspace,
    ) -> BoxFuture<'a, Result<ServiceLogs, ProviderError>> {
        let _ = workspace;
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Copies the files of the workspace whose paths match one of `patterns` (globs relative to
    /// the workspace: `*` and `?` within a path segment, `**` across; a pattern that names a
    /// directory takes everything under it) into the host directory `into`, at the same
    /// relative paths; answers those paths, sorted. Symbolic links are not followed: a link is
    /// skipped. The default has no workspace on this machine to copy from.
    fn copy_out<'a>(
        &'a self,
        workspace: &'a Workspace,
        patterns: &'a [String],
        into: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<Vec<String>, ProviderError>> {
        let _ = (workspace, patterns, into);
        Box::pin(async move {
            Err(ProviderError::Other {
                provider: self.name(),
                reason: "this provider cannot copy files out of a workspace".into(),
                cause: None,
            })
        })
    }

    /// Copies everything under the host directory `from` into the workspace, at the same
    /// relative paths, replacing files of the same path.
    fn copy_in<'a>(
        &'a self,
        workspace: &'a Workspace,
        from: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        let _ = (workspace, from);
        Box::pin(async move {
            Err(ProviderError::Other {
                provider: self.name(),
                reason: "this provider cannot copy files into a workspace".into(),
                cause: None,
            })
        })
    }

    /// The workspace that an earlier life of Hodei set up for this job attempt, as it was left,
    /// for the attempt to go on where it stopped (a lost step tried again by its retry policy).
    /// `Ok(None)` when the provider no longer has it or cannot hand it over: the job then starts
    /// a new attempt. What ran in it before must have been stopped ([`Reconcile`]).
    fn resume<'a>(
        &'a self,
        job: &'a JobSpec,
    ) -> BoxFuture<'a, Result<Option<Workspace>, ProviderError>> {
        let _ = job;
        Box::pin(async { Ok(None) })
    }

    /// Takes back step `index`, attempt `attempt`, of a job attempt, as an earlier life of
    /// Hodei left it: still running, or ended with its exit not collected yet. Its whole
    /// output, **from its first byte**, goes to `output` (the caller skips what its log already
    /// holds), and the handle works with [`wait_step`](Provider::wait_step) (the exit included)
    /// and [`destroy_step`](Provider::destroy_step); the workspace with the job's next steps
    /// and [`tear_down`](Provider::tear_down), as after [`set_up`](Provider::set_up).
    ///
    /// `Ok(None)` when the provider cannot: the step's process died with Hodei (a local
    /// process), or its container is gone or was stopped by this life (an abandoned attempt).
    /// The caller then records the step lost. The default cannot.
    fn reattach_step<'a>(
        &'a self,
        job: &'a JobSpec,
        index: u32,
        attempt: Attempt,
        output: Arc<dyn OutputSink>,
    ) -> BoxFuture<'a, Result<Option<Reattached>, ProviderError>> {
        let _ = (job, index, attempt, output);
        Box::pin(async { Ok(None) })
    }
}

/// A step of an earlier life taken back by [`Provider::reattach_step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reattached {
    /// The job attempt's workspace, for its next steps and its tear-down.
    pub workspace: Workspace,
    /// The step, for `wait_step` and `destroy_step`.
    pub step: StepHandle,
}

/// A job attempt, as reconciliation names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobAttempt {
    pub job: JobId,
    pub attempt: Attempt,
}

/// Something a provider started in an earlier life of Hodei and stopped on reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub job: JobId,
    pub job_attempt: Attempt,
    pub step: u32,
    pub step_attempt: Attempt,
    /// Provider-specific: the process group, the container.
    pub id: String,
}

/// Finds what an earlier life of Hodei left running. Part of every provider; separate from
/// [`Provider`] so that the lifecycle above stays about one job.
pub trait Reconcile: Send + Sync {
    /// Stops everything this provider started before the current process and that still runs,
    /// and says what it was. Idempotent: a second call finds nothing.
    ///
    /// `spare` names the job attempts that the store shows running a step, which the current
    /// life means to take back ([`Provider::reattach_step`]): a provider that can re-attach
    /// leaves what belongs to them as it is (their steps, services, network and workspace);
    /// one that cannot reaps them like the rest. Whatever is spared and then not taken back is
    /// removed by the job's `tear_down`.
    fn reap_orphans<'a>(
        &'a self,
        spare: &'a [JobAttempt],
    ) -> BoxFuture<'a, Result<Vec<Orphan>, ProviderError>>;
}

/// A version of a pipeline definition, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineVersion {
    pub name: String,
    /// From 1, one more for each change of the definition's text.
    pub version: u32,
    /// The YAML text.
    pub source: String,
    pub created: Timestamp,
}

/// A run to create: its jobs are the jobs of the plan, in plan order.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub pipeline: String,
    pub version: u32,
    pub inputs: crate::plan::RunInputs,
    /// The planned jobs' names, in plan order; each gets a [`JobId`].
    pub jobs: Vec<String>,
    pub at: Timestamp,
    /// The run's first transitions, written in the transaction that creates it.
    pub opening: Option<Arc<dyn Opening>>,
}

/// What a run does as soon as it exists (see [`crate::engine::open`]), decided by the store's
/// caller and written by the store in the transaction that creates the run.
pub trait Opening: Send + Sync + std::fmt::Debug {
    /// Brings `record` — the run as created, pending, with the ids the store gave it and its
    /// jobs — to the state its opening leaves it in, and returns the transitions that lead
    /// there, which the store appends with the run (events and projections). A store may call
    /// it again for the same run when it writes the transaction again; it returns the same.
    fn open(&self, record: &mut RunRecord) -> Vec<crate::state::DomainEvent>;
}

/// A run as stored: enough to rebuild every machine of it after a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: RunId,
    pub pipeline: String,
    pub version: u32,
    /// The definition the run was planned from.
    pub source: String,
    pub inputs: crate::plan::RunInputs,
    pub state: crate::state::RunState,
    pub since: Timestamp,
    pub created: Timestamp,
    /// When its first job started.
    pub started: Option<Timestamp>,
    /// When it reached its final state.
    pub finished: Option<Timestamp>,
    /// In plan order: `jobs[i]` is the plan's job `i`.
    pub jobs: Vec<JobRecord>,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: JobId,
    pub name: String,
    pub state: crate::state::JobState,
    pub attempt: Attempt,
    pub since: Timestamp,
    /// When its first attempt started.
    pub started: Option<Timestamp>,
    /// When it reached its final state.
    pub finished: Option<Timestamp>,
    /// The worker it was last placed on, kept once it has ended.
    pub worker: Option<crate::ids::WorkerId>,
    /// Steps of every attempt, in order of job attempt, then index, then step attempt.
    pub steps: Vec<StepRecord>,
}

/// A step attempt as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub job_attempt: Attempt,
    pub index: u32,
    pub attempt: Attempt,
    pub state: crate::state::StepState,
    pub exit: Option<StepExit>,
    pub since: Timestamp,
    /// When the step attempt started.
    pub started: Option<Timestamp>,
    /// The length of the job's log when the step attempt started ([`DomainEvent::StepStarted`]):
    /// its output begins there. `None` for a step that never started.
    ///
    /// [`DomainEvent::StepStarted`]: crate::state::DomainEvent::StepStarted
    pub log_offset: Option<u64>,
}

/// A pipeline as listed: its name and its latest version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineSummary {
    pub name: String,
    /// The latest version.
    pub latest: u32,
    /// When the first version was stored.
    pub created: Timestamp,
    /// When the latest version was stored.
    pub updated: Timestamp,
}

/// One version of a pipeline, without its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionStamp {
    pub version: u32,
    pub created: Timestamp,
}

/// Which runs to list; `None` matches any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub state: Option<crate::state::RunState>,
    pub pipeline: Option<String>,
    pub branch: Option<String>,
}

/// A run as listed: without its jobs and definition.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub id: RunId,
    pub pipeline: String,
    pub version: u32,
    pub inputs: crate::plan::RunInputs,
    pub state: crate::state::RunState,
    pub since: Timestamp,
    pub created: Timestamp,
}

/// The store could not do what was asked. Cheap to clone (its cause is shared), so that one
/// failed commit can answer every caller whose writes it held.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database cannot be reached or refused the operation; retry later.
    #[error("the store is unavailable: {reason}")]
    Unavailable {
        reason: String,
        #[source]
        cause: Option<Cause>,
    },
    /// What was asked for does not exist.
    #[error("{what} not found")]
    NotFound { what: String },
    /// What was asked would break a uniqueness rule (a token digest already stored).
    #[error("{what} already exists")]
    Conflict { what: String },
    /// The stored data cannot be read back: a bug or a foreign change to the database.
    #[error("corrupt record {what}: {reason}")]
    Corrupt {
        what: String,
        reason: String,
        #[source]
        cause: Option<Cause>,
    },
}

impl StoreError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// The durable record of pipelines, runs, jobs, steps and events.
///
/// ## Guarantees
/// - [`append`](Store::append) writes the events to the append-only log and updates the
///   projections (the current state of runs, jobs and steps) in one transaction: after it
///   returns, both are durable, and a crash before it returns leaves neither.
/// - Events are numbered in the order they were appended; [`events`](Store::events) pages
///   through them by that number (keyset, not offset).
///
/// ## Assumptions
/// Transitions are checked by the state machines before they are appended; the store records
/// them as they come.
pub trait Store: Send + Sync {
    /// Stores a pipeline definition; the same text as the latest version is that version.
    fn put_pipeline<'a>(
        &'a self,
        name: &'a str,
        source: &'a str,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<PipelineVersion, StoreError>>;

    /// The latest version of a pipeline.
    fn pipeline<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PipelineVersion>, StoreError>>;

    /// Creates a run and its jobs, all pending, then writes its [`NewRun::opening`] in the
    /// same transaction and returns the run in the state the opening left it in.
    fn create_run(&self, run: NewRun) -> BoxFuture<'_, Result<RunRecord, StoreError>>;

    /// Appends events and applies them to the projections, in one transaction.
    fn append(
        &self,
        events: Vec<crate::state::DomainEvent>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// A run with its jobs and steps.
    fn run(&self, id: RunId) -> BoxFuture<'_, Result<Option<RunRecord>, StoreError>>;

    /// The runs that are not finished, oldest first.
    fn unfinished_runs(&self) -> BoxFuture<'_, Result<Vec<RunId>, StoreError>>;

    /// Events numbered after `after`, at most `limit`, with their numbers.
    fn events(
        &self,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<(u64, crate::state::DomainEvent)>, StoreError>>;

    /// Pipelines by name, in name order, those after `after` (keyset), at most `limit`.
    fn pipelines<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<PipelineSummary>, StoreError>>;

    /// One version of a pipeline, with its text.
    fn pipeline_version<'a>(
        &'a self,
        name: &'a str,
        version: u32,
    ) -> BoxFuture<'a, Result<Option<PipelineVersion>, StoreError>>;

    /// Every version of a pipeline, oldest first; empty if there is no such pipeline.
    fn pipeline_versions<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Vec<VersionStamp>, StoreError>>;

    /// Runs matching `filter`, newest first, those created before run `before` (keyset), at
    /// most `limit`.
    fn runs<'a>(
        &'a self,
        filter: &'a RunFilter,
        before: Option<RunId>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<RunSummary>, StoreError>>;

    /// The run a job belongs to, if the job exists.
    fn job_run(&self, job: JobId) -> BoxFuture<'_, Result<Option<RunId>, StoreError>>;

    /// The events of one run numbered after `after`, at most `limit`, with their numbers.
    fn run_events(
        &self,
        run: RunId,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<(u64, crate::state::DomainEvent)>, StoreError>>;
}

/// An API token to store: only the SHA-256 digest of its secret, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// What the token is for, e.g. `ci-bot`.
    pub name: String,
    pub role: crate::model::Role,
    pub digest: [u8; 32],
    pub at: Timestamp,
}

/// An API token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: u64,
    pub name: String,
    pub role: crate::model::Role,
    pub digest: [u8; 32],
    pub created: Timestamp,
    /// When it was revoked; a revoked token authenticates no one.
    pub revoked: Option<Timestamp>,
}

/// The API's tokens, stored by digest.
///
/// ## Guarantees
/// - Digests are unique: [`create_token`](TokenStore::create_token) refuses a second token with
///   the digest of an existing one ([`StoreError::Conflict`]).
/// - A revocation is durable when [`revoke_token`](TokenStore::revoke_token) returns.
pub trait TokenStore: Send + Sync {
    /// Stores a new token.
    fn create_token(&self, token: NewToken) -> BoxFuture<'_, Result<TokenRecord, StoreError>>;

    /// The token with this digest, revoked or not.
    fn token_by_digest<'a>(
        &'a self,
        digest: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<Option<TokenRecord>, StoreError>>;

    /// The tokens not revoked, oldest first.
    fn tokens(&self) -> BoxFuture<'_, Result<Vec<TokenRecord>, StoreError>>;

    /// Revokes a token; `false` if there is no such token or it was already revoked.
    fn revoke_token(&self, id: u64, at: Timestamp) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Whether any token was ever created, revoked ones included: the first start of a server
    /// creates its admin token only when none was.
    fn any_token(&self) -> BoxFuture<'_, Result<bool, StoreError>>;
}

/// The logs of jobs: one append-only byte stream per job, addressed by byte offset.
///
/// ## Guarantees
/// - Bytes are appended in the order `append` is called for a job; offsets never change.
/// - After [`flush`](LogStore::flush) returns, everything appended before it is durable.
/// - `append` never blocks on the disk: writing happens on the store's own threads.
pub trait LogStore: Send + Sync {
    /// Appends to a job's log; returns the offset of the first byte appended.
    fn append(&self, job: JobId, bytes: &[u8]) -> Result<u64, LogError>;

    /// Waits until everything appended to the job's log so far is durable, also against a power
    /// loss; returns its length.
    fn flush(&self, job: JobId) -> BoxFuture<'_, Result<u64, LogError>>;

    /// Waits until everything appended to the job's log so far is written: it survives a crash
    /// of Hodei (as a committed store transaction does), and a power loss only after the
    /// adapter's next sync. Cheaper than [`flush`](LogStore::flush); returns the length.
    fn settle(&self, job: JobId) -> BoxFuture<'_, Result<u64, LogError>>;

    /// The bytes from `from` (inclusive) to `to` (exclusive, or the end), as far as written.
    fn read(
        &self,
        job: JobId,
        from: u64,
        to: Option<u64>,
    ) -> BoxFuture<'_, Result<Vec<u8>, LogError>>;

    /// The length of the job's log as appended so far.
    fn len(&self, job: JobId) -> Result<u64, LogError>;
}

/// A log could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("log of {job}: {reason}")]
    Io {
        job: JobId,
        reason: String,
        #[source]
        cause: Option<Cause>,
    },
    #[error("log of {job}: the writer has stopped")]
    Closed { job: JobId },
}

/// Where a stored secret applies: the runs of one pipeline, or the runs of every pipeline of
/// one repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecretScope {
    Pipeline(String),
    Repository(String),
}

impl SecretScope {
    /// `pipeline` or `repository`: the scope's kind as the API and the store spell it.
    pub fn kind(&self) -> &'static str {
        match self {
            SecretScope::Pipeline(_) => "pipeline",
            SecretScope::Repository(_) => "repository",
        }
    }

    /// The pipeline's or the repository's name.
    pub fn owner(&self) -> &str {
        match self {
            SecretScope::Pipeline(name) | SecretScope::Repository(name) => name,
        }
    }

    /// The scope of `kind` (`pipeline` or `repository`) named `owner`; `None` for another kind.
    pub fn new(kind: &str, owner: &str) -> Option<SecretScope> {
        match kind {
            "pipeline" => Some(SecretScope::Pipeline(owner.to_owned())),
            "repository" => Some(SecretScope::Repository(owner.to_owned())),
            _ => None,
        }
    }

    /// Where a run looks its secrets up, first match first: its pipeline, then its repository.
    pub fn of_run(pipeline: &str, repository: Option<&str>) -> Vec<SecretScope> {
        std::iter::once(SecretScope::Pipeline(pipeline.to_owned()))
            .chain(repository.map(|r| SecretScope::Repository(r.to_owned())))
            .collect()
    }
}

impl std::fmt::Display for SecretScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} `{}`", self.kind(), self.owner())
    }
}

/// A stored secret as listed: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    pub scope: SecretScope,
    pub name: String,
    pub created: Timestamp,
    pub updated: Timestamp,
}

/// Secret values by name, from wherever the deployment keeps them: Hodei's own encrypted store
/// for a server, the environment of the process for `hodei run`.
pub trait SecretStore: Send + Sync {
    /// The value of the secret `name` for a run, looked up in `scopes` in order (the first that
    /// has it wins; see [`SecretScope::of_run`]). A store without scopes ignores them.
    ///
    /// ## Errors
    /// [`StoreError`] when the store cannot be read or a stored value cannot be opened.
    fn get<'a>(
        &'a self,
        scopes: &'a [SecretScope],
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>>;
}

/// Secrets that Hodei keeps itself and that the API manages: set, list, delete.
///
/// ## Guarantees
/// - Values are sealed at rest; nothing here reads one back: only [`SecretStore::get`], for a
///   run, does.
/// - [`put_secret`](SecretVault::put_secret) replaces the value of an existing secret, keeping
///   its creation time.
pub trait SecretVault: SecretStore {
    /// Stores `value` as secret `name` of `scope`; the answer says whether it was new.
    fn put_secret<'a>(
        &'a self,
        scope: &'a SecretScope,
        name: &'a str,
        value: &'a str,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<(SecretInfo, bool), StoreError>>;

    /// The secrets of `scope` (of every scope with `None`), by scope and name.
    fn secrets<'a>(
        &'a self,
        scope: Option<&'a SecretScope>,
    ) -> BoxFuture<'a, Result<Vec<SecretInfo>, StoreError>>;

    /// Deletes a secret; `false` if there was none.
    fn delete_secret<'a>(
        &'a self,
        scope: &'a SecretScope,
        name: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
}

/// A repository registered with Hodei: where its code is, where its pipeline file is in it,
/// and the names of the stored secrets (of the repository's scope) that open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryRecord {
    /// Its name in Hodei, e.g. `app`.
    pub name: String,
    pub forge: crate::forge::Forge,
    /// What `git clone` takes: `https://…`, `http://…`, `git://…` or a path.
    pub clone_url: String,
    /// The pipeline file's path in the repository, e.g. `.hodei.yml`.
    pub pipeline_path: String,
    /// The stored secret (repository scope) with the credentials to fetch: `USER:TOKEN`, or
    /// a bare token. `None` for a public repository.
    pub credentials: Option<String>,
    /// The stored secret (repository scope) that signs the forge's webhooks.
    pub webhook_secret: String,
    /// The stored secret (repository scope) with a token for reporting commit statuses;
    /// `None` reports nothing.
    pub status_token: Option<String>,
    /// The forge's API base URL for commit statuses; `None` derives it from the clone URL.
    pub status_api: Option<String>,
    pub created: Timestamp,
}

/// What recording a webhook delivery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The first time this delivery is seen: it is the caller's to act on.
    New,
    /// Seen before, and the run it started, if any.
    Seen { run: Option<RunId> },
}

/// The registered repositories and the webhook deliveries they received.
///
/// ## Guarantees
/// - [`claim_delivery`](RepoStore::claim_delivery) answers [`Claim::New`] once per repository
///   and delivery id, also to concurrent callers: a delivery sent twice starts one run.
pub trait RepoStore: Send + Sync {
    /// Registers a repository, or replaces the one of the same name; `true` if it is new.
    fn put_repository<'a>(
        &'a self,
        repo: &'a RepositoryRecord,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    fn repository<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<RepositoryRecord>, StoreError>>;

    /// Every repository, by name.
    fn repositories(&self) -> BoxFuture<'_, Result<Vec<RepositoryRecord>, StoreError>>;

    /// Forgets a repository and its deliveries; `false` if there was none.
    fn delete_repository<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Records delivery `id` of repository `repo`, unless it was recorded before.
    fn claim_delivery<'a>(
        &'a self,
        repo: &'a str,
        id: &'a str,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<Claim, StoreError>>;

    /// Notes the run that delivery `id` started.
    fn delivery_started<'a>(
        &'a self,
        repo: &'a str,
        id: &'a str,
        run: RunId,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// A repository to mirror, with the value of its credentials (never logged).
#[derive(Clone, PartialEq, Eq)]
pub struct MirrorSource {
    pub repository: String,
    pub forge: crate::forge::Forge,
    pub url: String,
    /// `USER:TOKEN` or a bare token, sent as HTTP basic authentication.
    pub credentials: Option<String>,
}

impl std::fmt::Debug for MirrorSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorSource")
            .field("repository", &self.repository)
            .field("url", &self.url)
            .field("credentials", &self.credentials.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A mirror could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MirrorError {
    /// `git` failed: what it was doing and what it said (credentials never in it).
    #[error("cannot {doing} of repository `{repository}`: {reason}")]
    Git {
        repository: String,
        doing: &'static str,
        reason: String,
    },
}

/// A bare mirror of each repository on this machine, fetched when asked, read at a commit.
///
/// ## Guarantees
/// - Credentials reach `git` through its environment, never its arguments or any log.
/// - Fetches of one repository are serialised; different repositories fetch in parallel.
pub trait Mirrors: Send + Sync {
    /// Fetches `wanted` (commit ids or ref names) into the repository's mirror, creating it on
    /// first use. When `wanted` names commits and all of them are in the mirror already,
    /// nothing is fetched (the refs it names may then be older than the forge's).
    fn fetch<'a>(
        &'a self,
        source: &'a MirrorSource,
        wanted: &'a [String],
    ) -> BoxFuture<'a, Result<(), MirrorError>>;

    /// The file at `path` in `commit`, or `None` if the commit has no such file.
    fn read_file<'a>(
        &'a self,
        repository: &'a str,
        commit: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, MirrorError>>;

    /// The paths that differ between `from` and `to` (from their merge base when `merge_base`).
    fn changed_paths<'a>(
        &'a self,
        repository: &'a str,
        from: &'a str,
        to: &'a str,
        merge_base: bool,
    ) -> BoxFuture<'a, Result<Vec<String>, MirrorError>>;
}

/// Where a scheduled run of a pipeline from a registered repository takes its code: the head
/// of the repository's default branch when the tick fires.
pub trait Heads: Send + Sync {
    /// The repository that pipeline `pipeline` comes from (the one its latest webhook run came
    /// from) at the head of its default branch, fetched into this machine's mirror now; `None`
    /// for a pipeline that no webhook ever started.
    fn head<'a>(&'a self, pipeline: &'a str) -> BoxFuture<'a, Result<Option<Head>, HeadError>>;
}

/// A repository at the head of a branch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    pub repository: String,
    pub branch: String,
    pub commit: String,
    /// The server's address as the repository's webhook reached it (for links), if known.
    pub server_url: String,
}

/// Why the head of a repository's branch could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    /// The repository's credentials are a secret that is not stored.
    #[error("the credentials of repository `{repository}` (secret `{secret}`) are not stored")]
    MissingCredentials { repository: String, secret: String },
}

/// The ticks of `on.schedule` entries that fired, so that each fires once across restarts and
/// replicas.
///
/// ## Guarantees
/// - [`claim_tick`](TickStore::claim_tick) answers `true` once per pipeline, entry and tick,
///   also to concurrent callers and to other replicas on the same database (one unique row,
///   written in one transaction): the loser of a race answers `false`.
pub trait TickStore: Send + Sync {
    /// Claims the tick `tick` of the entry `entry` (its text) of `pipeline`.
    fn claim_tick<'a>(
        &'a self,
        pipeline: &'a str,
        entry: &'a str,
        tick: Timestamp,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// The latest tick claimed for the entry, if any.
    fn last_tick<'a>(
        &'a self,
        pipeline: &'a str,
        entry: &'a str,
    ) -> BoxFuture<'a, Result<Option<Timestamp>, StoreError>>;
}

/// A file that a job kept as an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub job: JobId,
    /// The job's display name.
    pub job_name: String,
    /// Its path in the job's workspace, with `/` between segments.
    pub path: String,
    pub size: u64,
    /// SHA-256 of the content, in hex.
    pub sha256: String,
}

/// Where a cache entry belongs: a pipeline and a branch. A job restores from its branch, then
/// from the default branch (its repository's, else the store's), and saves to its branch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheScope {
    pub pipeline: String,
    /// Empty for a run without a branch.
    pub branch: String,
    /// The branch to fall back to: the repository's default branch; empty for the store's
    /// own default.
    #[serde(default)]
    pub default_branch: String,
}

/// The cache entry that a restore found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheHit {
    /// The key it was saved under.
    pub key: String,
    /// The branch it was saved on.
    pub branch: String,
    pub size: u64,
}

/// Why artifacts or caches could not be kept or given back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// More than a limit of the server allows.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes (`{setting}`)")]
    TooLarge {
        what: String,
        size: u64,
        limit: u64,
        /// The setting that raises it.
        setting: &'static str,
    },
    /// Where this attempt runs, the files cannot go.
    #[error("{what}")]
    Unsupported { what: String },
    /// An archive of artifacts that an agent sent is not one of plain files: a link, a path
    /// outside, a damaged archive.
    #[error("{what}")]
    Malformed { what: String },
    /// The server that keeps the artifacts of an agent's jobs refused them, or is away.
    #[error("{what}")]
    Remote { what: String },
    /// The disk or the data directory failed.
    #[error("{what}: {reason}")]
    Io {
        what: String,
        reason: String,
        #[source]
        cause: Option<Cause>,
    },
}

/// The artifacts of runs and the caches of pipelines, kept on the server's disk.
///
/// ## Guarantees
/// - A job's artifacts are all kept or none: a limit hit keeps nothing of the job.
/// - Saving a cache entry writes it whole under a temporary name and renames it into place:
///   two jobs saving one key at once leave one whole entry (the later rename wins), and a
///   reader never sees half of one.
pub trait FileStore: Send + Sync {
    /// A new empty directory on the store's disk, for the caller to fill and pass back (or
    /// remove with [`discard`](FileStore::discard)).
    fn scratch(&self) -> Result<std::path::PathBuf, FileError>;

    /// Removes a scratch directory. Never fails: what cannot be removed is logged.
    fn discard(&self, dir: &std::path::Path);

    /// Keeps the files under `dir` (a scratch directory, consumed) as the artifacts of `job`.
    fn keep_artifacts<'a>(
        &'a self,
        run: RunId,
        job: JobId,
        job_name: &'a str,
        dir: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<Vec<Artifact>, FileError>>;

    /// The artifacts of a run, by job id then path.
    fn artifacts(&self, run: RunId) -> BoxFuture<'_, Result<Vec<Artifact>, FileError>>;

    /// The file of one artifact on the store's disk, if the run's job kept that path.
    fn artifact_file(&self, run: RunId, job: JobId, path: &str) -> Option<std::path::PathBuf>;

    /// Gives job `to` the artifacts that job `from` kept (a retry's job carried over from the
    /// run it retries); nothing when `from` kept none.
    fn carry_artifacts<'a>(
        &'a self,
        from: (RunId, JobId),
        to: (RunId, JobId),
    ) -> BoxFuture<'a, Result<(), FileError>>;

    /// Copies the artifacts of `jobs` of `run` into `into` (a scratch directory) at their
    /// paths; answers how many files.
    fn stage_artifacts<'a>(
        &'a self,
        run: RunId,
        jobs: &'a [JobId],
        into: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<usize, FileError>>;

    /// Keeps the files of the tar archive `archive` (a file in a scratch directory that an
    /// agent uploaded, consumed) as the artifacts of `job`, as
    /// [`keep_artifacts`](FileStore::keep_artifacts) does: regular files and directories only,
    /// within the same limit, all or nothing.
    fn receive_artifacts<'a>(
        &'a self,
        run: RunId,
        job: JobId,
        job_name: &'a str,
        archive: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<Vec<Artifact>, FileError>>;

    /// Writes to the new file `out` a tar archive of the artifacts of `jobs` of `run` at their
    /// paths (what [`stage_artifacts`](FileStore::stage_artifacts) copies), for an agent;
    /// answers how many files.
    fn pack_artifacts<'a>(
        &'a self,
        run: RunId,
        jobs: &'a [JobId],
        out: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<usize, FileError>>;

    /// Restores into `into` (a scratch directory) the entry saved under `key`, else the newest
    /// one whose key starts with one of `prefixes` (in order), looking in the scope's branch,
    /// then in the default branch. `None` when nothing matches.
    fn restore_cache<'a>(
        &'a self,
        scope: &'a CacheScope,
        key: &'a str,
        prefixes: &'a [String],
        into: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<Option<CacheHit>, FileError>>;

    /// Saves the files under `dir` (a scratch directory, consumed) as the entry `key` of the
    /// scope's branch; answers its size in bytes.
    fn save_cache<'a>(
        &'a self,
        scope: &'a CacheScope,
        key: &'a str,
        dir: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<u64, FileError>>;
}

/// A token that lets an agent register once: only the SHA-256 digest of its secret is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAgentToken {
    /// What the token is for, e.g. `arm-builders`.
    pub name: String,
    pub digest: [u8; 32],
    /// The labels every agent registered with it gets, whatever it asks; `None`: its own.
    pub labels: Option<Vec<crate::model::Label>>,
    /// After this instant it registers no one.
    pub expires: Option<Timestamp>,
    pub at: Timestamp,
}

/// A registration token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTokenRecord {
    pub id: u64,
    pub name: String,
    pub labels: Option<Vec<crate::model::Label>>,
    pub created: Timestamp,
    pub expires: Option<Timestamp>,
    pub revoked: Option<Timestamp>,
}

/// An agent to register, in exchange for a registration token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAgent {
    pub name: String,
    /// The digest of the agent's own credential.
    pub digest: [u8; 32],
    /// The labels it offers (the token's, when the token fixes them).
    pub labels: Vec<crate::model::Label>,
    /// The digest of the registration token it presents.
    pub token: [u8; 32],
    pub at: Timestamp,
}

/// Whether two digests (of tokens, credentials) are equal, in a time that does not depend on
/// where they differ.
pub fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the compiler from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub id: u64,
    pub name: String,
    pub digest: [u8; 32],
    pub labels: Vec<crate::model::Label>,
    /// The registration token fixed the labels: the agent's own are ignored.
    pub fixed_labels: bool,
    pub registered: Timestamp,
}

/// Why a registration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Registered,
    /// No such token, or it was revoked.
    UnknownToken,
    /// The token's time is over.
    ExpiredToken,
    /// Another agent has the name.
    NameTaken,
}

/// The lease of a job attempt that an agent holds: every write about the attempt names the
/// lease's epoch, and a write with another epoch is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job: JobId,
    pub run: RunId,
    pub attempt: crate::state::Attempt,
    /// The agent's name.
    pub agent: String,
    /// Bumped at each claim of the job: a higher epoch deposes every lower one.
    pub epoch: u64,
    /// The sequence number of the next batch of events the store takes from the agent.
    pub next_seq: u64,
    /// Where the attempt's output begins in the job's log.
    pub log_base: u64,
    /// The digest of the job token given with the claim: the attempt's own calls present the
    /// token, valid for this job and this lease only.
    pub token: [u8; 32],
}

/// The replica of a replicated deployment (several servers on one PostgreSQL database) that
/// leads: it runs the scheduler and the singleton duties, and the others forward to it what
/// needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The replica's name (its `node_name`, with a suffix that tells one life from the next).
    pub holder: String,
    /// Where the other replicas reach it (its `advertise_url`).
    pub address: String,
    /// The leadership's fencing epoch: bumped at every change of leader; every write of the
    /// leader checks it, so that a deposed leader's writes fail.
    pub epoch: u64,
    /// How long the lease still runs unless it is renewed, in milliseconds (0: expired).
    pub expires_in_ms: u64,
}

/// The answer to a fenced report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fenced {
    /// Appended.
    Done,
    /// This batch was taken before (a retry): nothing appended again.
    Duplicate,
    /// The lease has another epoch, or is over: nothing appended.
    Stale,
    /// A batch before this one is missing: send from `expected`.
    Gap { expected: u64 },
}

/// Agents, their registration tokens and the leases of the attempts they hold.
///
/// ## Guarantees
/// - A registration consumes nothing: a token registers agents until it expires or is revoked,
///   and revoking it leaves registered agents working. It is checked and the agent stored in
///   one transaction.
/// - Epochs of a job only grow, across restarts: [`claim`](AgentStore::claim) bumps it in the
///   same transaction that records the holder.
/// - A report's events are appended, and the lease's sequence moved, in one transaction, and
///   only when the report names the lease's current epoch and next sequence number.
pub trait AgentStore: Send + Sync {
    /// Stores a registration token; [`StoreError::Conflict`] if a token with the same digest
    /// was ever stored (revoked or not), which stays as it is.
    fn create_agent_token(
        &self,
        token: NewAgentToken,
    ) -> BoxFuture<'_, Result<AgentTokenRecord, StoreError>>;

    /// The registration tokens not revoked, oldest first.
    fn agent_tokens(&self) -> BoxFuture<'_, Result<Vec<AgentTokenRecord>, StoreError>>;

    /// Revokes a registration token; `false` if there is none or it was revoked.
    fn revoke_agent_token(&self, id: u64, at: Timestamp)
    -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Registers an agent if its token is valid at `agent.at`.
    fn register_agent(
        &self,
        agent: NewAgent,
    ) -> BoxFuture<'_, Result<(Registration, Option<AgentRecord>), StoreError>>;

    /// The agent whose credential has this digest (deleted agents have none).
    fn agent_by_digest<'a>(
        &'a self,
        digest: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<Option<AgentRecord>, StoreError>>;

    /// The registered agents, oldest first.
    fn agents(&self) -> BoxFuture<'_, Result<Vec<AgentRecord>, StoreError>>;

    /// Deletes an agent: its credential stops working at once. `false` if there is none.
    fn delete_agent<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Gives `job`'s attempt `attempt` to `agent` under a new epoch, with the digest of its
    /// job token.
    fn claim(
        &self,
        job: JobId,
        run: RunId,
        attempt: crate::state::Attempt,
        agent: String,
        log_base: u64,
        token: [u8; 32],
    ) -> BoxFuture<'_, Result<Lease, StoreError>>;

    /// The leases not over.
    fn leases(&self) -> BoxFuture<'_, Result<Vec<Lease>, StoreError>>;

    /// Appends `events` of the lease's attempt when `epoch` and `seq` are the lease's; `end`
    /// closes the lease in the same transaction.
    fn report(
        &self,
        job: JobId,
        epoch: u64,
        seq: u64,
        events: Vec<crate::state::DomainEvent>,
        end: bool,
    ) -> BoxFuture<'_, Result<Fenced, StoreError>>;

    /// Closes the lease of `job` if it still has `epoch`, recording `events` (what became of
    /// the attempt) in the same transaction; `false` if the lease had moved on.
    fn end_lease(
        &self,
        job: JobId,
        epoch: u64,
        events: Vec<crate::state::DomainEvent>,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;
}

/// One ephemeral worker to start: a one-job agent of a pool (`hodei agent --one-job`).
#[derive(Clone, PartialEq, Eq)]
pub struct WorkerLaunch {
    /// The worker's name: its agent's name, and its container's or pod's.
    pub name: String,
    /// Where it reaches the server.
    pub server_url: String,
    /// Its one-job credential: the agent record of this worker alone, deleted when it exits.
    pub credential: String,
    /// How long it waits for a job before it leaves.
    pub idle_timeout: std::time::Duration,
}

impl std::fmt::Debug for WorkerLaunch {
    /// Never the credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerLaunch")
            .field("name", &self.name)
            .field("server_url", &self.server_url)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

/// A pool's worker as its engine shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launched {
    pub name: String,
    /// `None` while it runs; its exit code once it ended (`Some(None)`: ended, code unknown).
    pub exited: Option<Option<i64>>,
}

/// Why a pool's worker could not be started, listed or removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    /// The engine did not answer: the start is tried again after the pool's backoff.
    #[error("{engine} is unavailable: {reason}")]
    Unavailable {
        engine: &'static str,
        reason: String,
    },
    /// The engine refused (a missing image, a bad network, a quota).
    #[error("{reason}")]
    Refused { reason: String },
}

/// Starts the ephemeral workers of one pool on its engine (a Docker engine, a Kubernetes
/// cluster), and finds and removes them by the labels it gives them.
///
/// ## Guarantees
/// - What [`launch`](Launcher::launch) creates carries labels naming the pool and the Hodei
///   store it belongs to: [`workers`](Launcher::workers) finds it after a restart of Hodei.
/// - [`remove`](Launcher::remove) is idempotent: a worker that is gone is fine.
/// - The credential reaches the worker without showing in Hodei's logs.
pub trait Launcher: Send + Sync {
    /// The engine's name in messages (`docker`, `kubernetes`).
    fn engine(&self) -> &'static str;

    /// Starts the worker; it runs until it has taken one job (or its idle timeout) and exits.
    fn launch<'a>(&'a self, worker: &'a WorkerLaunch) -> BoxFuture<'a, Result<(), LaunchError>>;

    /// Every worker of the pool that exists, running or ended.
    fn workers(&self) -> BoxFuture<'_, Result<Vec<Launched>, LaunchError>>;

    /// Removes a worker (stops it if it runs).
    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), LaunchError>>;
}
