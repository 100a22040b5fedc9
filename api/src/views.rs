//! The JSON shapes of the API: what requests carry and responses return, with their OpenAPI
//! schemas. Domain types are translated here, so that the domain can change without breaking
//! clients. Times are milliseconds since the Unix epoch, as in events.

use std::collections::BTreeMap;

use hodei_domain::diagnostic::{Diagnostic, Severity};
use hodei_domain::ids::RunId;
use hodei_domain::model::Role;
use hodei_domain::plan::JobRef;
use hodei_domain::ports::{
    JobRecord, PipelineSummary, RunRecord, RunSummary, StepRecord, TokenRecord, VersionStamp,
};
use hodei_domain::state::{JobState, StepState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use crate::time::{ApiEvent, Time};

/// One problem of a pipeline, where it is and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiagnosticView {
    /// `error` or `warning`.
    pub severity: String,
    /// The kind of problem, e.g. `unknown-key`.
    pub code: String,
    pub message: String,
    /// Where in the document, e.g. `jobs.deploy.needs[1]`; empty for the whole file.
    pub path: String,
    /// Line of the source, from 1, when known.
    pub line: Option<usize>,
    /// Column of the source, from 1, when known.
    pub column: Option<usize>,
    pub expected: Option<String>,
    pub help: Option<String>,
}

impl From<&Diagnostic> for DiagnosticView {
    fn from(d: &Diagnostic) -> DiagnosticView {
        DiagnosticView {
            severity: match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            }
            .to_owned(),
            code: d.code.as_str().to_owned(),
            message: d.message.clone(),
            path: d.path.to_string(),
            line: d.span.map(|s| s.start.line),
            column: d.span.map(|s| s.start.column),
            expected: d.expected.clone(),
            help: d.help.clone(),
        }
    }
}

/// A stored pipeline version, as answered to `PUT /pipelines/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppliedPipeline {
    pub name: String,
    pub version: u32,
    #[schema(value_type = String, format = DateTime)]
    pub created: Time,
    /// Whether this request stored a new version (`false`: the text equals the latest's).
    pub changed: bool,
    /// Warnings: the pipeline is valid, but these look unintended.
    pub warnings: Vec<DiagnosticView>,
}

/// A pipeline as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PipelineListItem {
    pub name: String,
    /// The latest version.
    pub latest: u32,
    /// When the first version was stored.
    #[schema(value_type = String, format = DateTime)]
    pub created: Time,
    /// When the latest version was stored.
    #[schema(value_type = String, format = DateTime)]
    pub updated: Time,
}

impl From<PipelineSummary> for PipelineListItem {
    fn from(p: PipelineSummary) -> PipelineListItem {
        PipelineListItem {
            name: p.name,
            latest: p.latest,
            created: p.created.into(),
            updated: p.updated.into(),
        }
    }
}

/// One page of pipelines, by name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PipelinePage {
    pub items: Vec<PipelineListItem>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// One version of a pipeline.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionView {
    pub version: u32,
    #[schema(value_type = String, format = DateTime)]
    pub created: Time,
}

impl From<VersionStamp> for VersionView {
    fn from(v: VersionStamp) -> VersionView {
        VersionView {
            version: v.version,
            created: v.created.into(),
        }
    }
}

/// A pipeline: its latest definition and every version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PipelineView {
    pub name: String,
    /// The latest version.
    pub version: u32,
    /// The latest version's YAML text.
    pub source: String,
    /// Oldest first.
    pub versions: Vec<VersionView>,
}

/// What starts a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TriggerRequest {
    /// Values of the pipeline's parameters; the others take their defaults.
    pub params: BTreeMap<String, String>,
    /// The branch the run is for (`branch` in `when`).
    pub branch: String,
    /// What started it: `manual` (the default), `push`, `pull_request`, `tag` or `schedule`.
    pub event: Option<String>,
    /// The tag, for `event: tag`.
    pub tag: String,
    /// Variables for every job, overriding the pipeline's.
    pub env: BTreeMap<String, String>,
    /// Start the run even though the pipeline's `on:` has no `manual` entry. The override is
    /// recorded as the run's first event (`run_start_overridden`, with the caller's name).
    pub override_triggers: bool,
}

/// A run as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunListItem {
    pub id: u64,
    pub pipeline: String,
    pub version: u32,
    /// `pending`, `running`, `cancelling`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    pub branch: String,
    pub event: String,
    #[schema(value_type = String, format = DateTime)]
    pub created: Time,
    /// When the run entered its state.
    #[schema(value_type = String, format = DateTime)]
    pub since: Time,
}

impl From<&RunSummary> for RunListItem {
    fn from(r: &RunSummary) -> RunListItem {
        RunListItem {
            id: r.id.0,
            pipeline: r.pipeline.clone(),
            version: r.version,
            state: r.state.name().to_owned(),
            branch: r.inputs.branch.clone(),
            event: r.inputs.event.clone(),
            created: r.created.into(),
            since: r.since.into(),
        }
    }
}

/// One page of runs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunPage {
    pub items: Vec<RunListItem>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A run with its jobs and their steps.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    pub id: u64,
    pub pipeline: String,
    /// The pipeline version the run was planned from.
    pub version: u32,
    pub state: String,
    pub branch: String,
    pub event: String,
    pub tag: String,
    /// The commit the run is for (a run started by a webhook); empty otherwise.
    #[serde(default)]
    pub commit: String,
    /// The registered repository it came from; empty otherwise.
    #[serde(default)]
    pub repository: String,
    pub params: BTreeMap<String, String>,
    #[schema(value_type = String, format = DateTime)]
    pub created: Time,
    /// When the run entered its state.
    #[schema(value_type = String, format = DateTime)]
    pub since: Time,
    /// When its first job started, if one did.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started: Option<Time>,
    /// When it finished, if it did.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished: Option<Time>,
    /// In plan order.
    pub jobs: Vec<JobView>,
}

/// A job with its steps.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: u64,
    pub run: u64,
    /// E.g. `test (os=bookworm)` for a matrix instance.
    pub name: String,
    /// `pending`, `waiting_approval`, `queued`, `placed`, `running`, `succeeded`, `failed`,
    /// `timed_out`, `cancelled` or `skipped`.
    pub state: String,
    /// Why it failed or was skipped, as in events (`kind` and its fields).
    #[schema(value_type = Option<Object>)]
    pub reason: Option<serde_json::Value>,
    /// The worker holding it while placed or running; once it ran, the worker of its last
    /// attempt.
    pub worker: Option<String>,
    /// The ids of the jobs it waits for (`needs`; for the pipeline's `(post)` job, every other
    /// job), when the run's definition still plans.
    pub needs: Vec<u64>,
    /// The current attempt, from 1.
    pub attempt: u32,
    /// When the job entered its state.
    #[schema(value_type = String, format = DateTime)]
    pub since: Time,
    /// When its first attempt started, if one did.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started: Option<Time>,
    /// When it finished, if it did.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished: Option<Time>,
    /// Every attempt of every step, by job attempt, index, step attempt.
    pub steps: Vec<StepView>,
}

/// One attempt of a step.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepView {
    /// The job attempt it belongs to.
    pub job_attempt: u32,
    /// Its position in the job, from 0.
    pub index: u32,
    /// The step's own attempt, from 1.
    pub attempt: u32,
    pub state: String,
    #[schema(value_type = Option<Object>)]
    pub reason: Option<serde_json::Value>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started: Option<Time>,
    /// When the step entered its state.
    #[schema(value_type = String, format = DateTime)]
    pub since: Time,
}

fn reason_of<T: Serialize>(reason: Option<&T>) -> Option<serde_json::Value> {
    reason.and_then(|r| serde_json::to_value(r).ok())
}

impl JobView {
    pub fn new(run: RunId, job: &JobRecord, needs: Vec<u64>) -> JobView {
        let reason = match &job.state {
            JobState::Failed { reason } => reason_of(Some(reason)),
            JobState::Skipped { reason } => reason_of(Some(reason)),
            _ => None,
        };
        JobView {
            id: job.id.0,
            run: run.0,
            name: job.name.clone(),
            state: job.state.name().to_owned(),
            reason,
            worker: job
                .state
                .worker()
                .or(job.worker.as_ref())
                .map(ToString::to_string),
            needs,
            attempt: job.attempt.get(),
            since: job.since.into(),
            started: job.started.map(Time),
            finished: job.finished.map(Time),
            steps: job.steps.iter().map(StepView::new).collect(),
        }
    }
}

impl StepView {
    fn new(step: &StepRecord) -> StepView {
        let reason = match &step.state {
            StepState::Failed { failure } => reason_of(Some(failure)),
            StepState::Skipped { reason } => reason_of(Some(reason)),
            _ => None,
        };
        StepView {
            job_attempt: step.job_attempt.get(),
            index: step.index,
            attempt: step.attempt.get(),
            state: step.state.name().to_owned(),
            reason,
            exit_code: step.exit.and_then(|e| e.code),
            signal: step.exit.and_then(|e| e.signal),
            oom_killed: step.exit.is_some_and(|e| e.oom_killed),
            started: step.started.map(Time),
            since: step.since.into(),
        }
    }
}

impl RunView {
    pub fn new(run: &RunRecord) -> RunView {
        RunView {
            id: run.id.0,
            pipeline: run.pipeline.clone(),
            version: run.version,
            state: run.state.name().to_owned(),
            branch: run.inputs.branch.clone(),
            event: run.inputs.event.clone(),
            tag: run.inputs.tag.clone(),
            commit: run.inputs.commit.clone(),
            repository: run.inputs.repository.clone(),
            params: run.inputs.params.clone(),
            created: run.created.into(),
            since: run.since.into(),
            started: run.started.map(Time),
            finished: run.finished.map(Time),
            jobs: run
                .jobs
                .iter()
                .enumerate()
                .map(|(position, job)| JobView::new(run.id, job, needs(run, position)))
                .collect(),
        }
    }
}

/// The ids of the jobs that the job at `position` of `run` waits for, from the run's plan.
fn needs(run: &RunRecord, position: usize) -> Vec<u64> {
    let Some(plan) = hodei_actors::run::shared_plan(&run.source) else {
        return Vec::new();
    };
    let id = |i: usize| run.jobs.get(i).map(|job| job.id.0);
    match plan.job_at(position) {
        Some(JobRef::Planned(i)) => plan.jobs[i].needs.iter().filter_map(|&n| id(n)).collect(),
        Some(JobRef::Post) => (0..plan.jobs.len()).filter_map(id).collect(),
        None => Vec::new(),
    }
}

/// A token to create.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// What the token is for, e.g. `ci-bot`: 1 to 100 visible characters (no control, invisible
    /// or text-direction ones), not the name of an active token.
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    #[schema(value_type = String)]
    pub role: Role,
}

/// A token, without its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub id: u64,
    pub name: String,
    #[schema(value_type = String)]
    pub role: Role,
    #[schema(value_type = String, format = DateTime)]
    pub created: Time,
}

impl From<&TokenRecord> for TokenView {
    fn from(t: &TokenRecord) -> TokenView {
        TokenView {
            id: t.id,
            name: t.name.clone(),
            role: t.role,
            created: t.created.into(),
        }
    }
}

/// A new token with its secret, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    pub id: u64,
    pub name: String,
    #[schema(value_type = String)]
    pub role: Role,
    #[schema(value_type = String, format = DateTime)]
    pub created: Time,
    /// The bearer token: `Authorization: Bearer <token>`. Not stored; shown only now.
    pub token: String,
}

/// The tokens not revoked.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    pub items: Vec<TokenView>,
}

/// One numbered event of the audit trail.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// Its number: pass the last one seen as `after`.
    pub seq: u64,
    /// The domain event: `type`, the subject's ids, its payload and `at`, an RFC 3339 time
    /// (docs/states.md).
    #[schema(value_type = Object)]
    pub event: ApiEvent,
}

/// One page of events, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    pub items: Vec<EventView>,
    /// Pass as `after` for the next page: the last event's number, or `after` itself when the
    /// page is empty.
    pub next_after: u64,
}

/// Whether the server is up.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `not-ready`.
    pub status: String,
    /// The server's version.
    pub version: String,
    /// Each check and what it found (for `/readyz`).
    pub checks: BTreeMap<String, String>,
}

/// A job waiting in the scheduler's queue, and why.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueItem {
    /// How many queued jobs are ahead of it (0: it is next).
    pub position: usize,
    pub job: u64,
    pub run: u64,
    pub pipeline: String,
    /// The labels its worker must have (`docker` for a job with an `image`).
    pub runs_on: Vec<String>,
    pub priority: i32,
    #[schema(value_type = String, format = DateTime)]
    pub queued_at: Time,
    /// The ready workers that could take it, whether or not they have room now.
    pub candidates: Vec<String>,
    /// Why it waits, e.g. ``all 2 eligible worker(s) are busy`` or ``no worker has the
    /// label(s) `gpu` ``.
    pub reason: String,
}

/// A job waiting at its approval gate: it enters the scheduler's queue once approved.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApprovalItem {
    pub job: u64,
    pub run: u64,
    pub pipeline: String,
    /// The job's name in its run.
    pub name: String,
    /// When it began to wait for its approval.
    #[schema(value_type = String, format = DateTime)]
    pub waiting_since: Time,
    /// The least role that may approve it (`POST /api/v1/jobs/{id}/approve`): the role its
    /// `approval` names, and at least `operator`.
    #[schema(value_type = String)]
    pub approver: Role,
}

/// The queue, front first, and the jobs that wait for an approval before they may queue.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueView {
    pub items: Vec<QueueItem>,
    /// How many jobs wait in all (the items are the first of them).
    pub total: usize,
    /// The jobs waiting for an approval, oldest run first (of the run asked for only, when one
    /// is), at most as many as `limit`.
    pub awaiting_approval: Vec<ApprovalItem>,
}

/// A worker: what it offers and what it runs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerItem {
    pub id: String,
    pub labels: Vec<String>,
    pub slots: u32,
    /// `ready`, `draining` (keeps its jobs, takes no new one) or `offline`.
    pub state: String,
    /// The jobs placed on it, in placement order.
    pub jobs: Vec<u64>,
    /// For an agent: its version and when it was last heard of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentDetail>,
}

/// What a worker that is an agent says of itself.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentDetail {
    pub version: String,
    /// Its last poll or heartbeat; absent for an agent not heard of since the server started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_heartbeat: Option<crate::time::Time>,
    /// Its doorbell (a WebSocket) is open: work and cancels reach it at once. Otherwise it
    /// long-polls.
    #[serde(default)]
    pub doorbell: bool,
}

/// Every worker, by id.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    pub items: Vec<WorkerItem>,
}

/// A page of a job's log by line.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogLines {
    /// The first line's number, from 1.
    pub from: u64,
    /// The lines, without their newlines; ANSI escape sequences kept; a line over 16 KiB cut.
    pub lines: Vec<String>,
    /// How many lines the log has so far (a last line without its newline counts).
    pub total: u64,
    /// The log's length in bytes that `total` counts: follow the log live from there
    /// (`/log/stream?from=`).
    pub length: u64,
    /// Whether the last line has no newline yet: the bytes after `length` continue it.
    pub open: bool,
}

/// The lines of a job's log that contain a text.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogSearch {
    /// Line numbers, from 1, in order.
    pub lines: Vec<u64>,
    /// Whether more lines matched than `limit`.
    pub truncated: bool,
    /// The log's length in bytes when it was searched.
    pub length: u64,
}

/// A duration in milliseconds, short: `850ms`, `12.3s`, `5m10s`, `3h05m`, `2d04h` (the CLI's
/// and the console's wording).
pub fn short_duration(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..60 => format!("{:.1}s", ms as f64 / 1000.0),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// A secret's value, to store (`PUT /api/v1/secrets/{scope}/{owner}/{name}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRequest {
    /// The value: 1 byte to 64 KiB of UTF-8 without NUL. Never shown again by any endpoint.
    pub value: String,
}

/// A stored secret, without its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretView {
    /// `pipeline` or `repository`.
    pub scope: String,
    /// The pipeline's or the repository's name.
    pub owner: String,
    /// The secret's name: the variable steps get it as.
    pub name: String,
    #[schema(value_type = String, format = DateTime)]
    pub created: Time,
    #[schema(value_type = String, format = DateTime)]
    pub updated: Time,
}

impl From<&hodei_domain::ports::SecretInfo> for SecretView {
    fn from(s: &hodei_domain::ports::SecretInfo) -> SecretView {
        SecretView {
            scope: s.scope.kind().to_owned(),
            owner: s.scope.owner().to_owned(),
            name: s.name.clone(),
            created: s.created.into(),
            updated: s.updated.into(),
        }
    }
}

/// Stored secrets, by scope, owner and name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretList {
    pub items: Vec<SecretView>,
}

/// A repository to register (`PUT /api/v1/repos/{name}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepositoryRequest {
    /// `github`, `gitlab` or `gitea` (also for Forgejo).
    pub forge: String,
    /// What `git clone` takes (`https://…`, `http://…`, `git://…`, `ssh://…` or a path), without
    /// credentials in it.
    pub clone_url: String,
    /// The pipeline file's path in the repository (default `.hodei.yml`).
    #[serde(default)]
    pub pipeline_path: Option<String>,
    /// The stored secret (scope `repository/{name}`) with the credentials to fetch:
    /// `USER:TOKEN` or a bare token.
    #[serde(default)]
    pub credentials: Option<String>,
    /// The stored secret (scope `repository/{name}`) that the forge signs webhooks with.
    pub webhook_secret: String,
    /// The stored secret (scope `repository/{name}`) with a token that may set commit
    /// statuses; without one, no status is reported.
    #[serde(default)]
    pub status_token: Option<String>,
    /// The forge's API base URL for commit statuses, e.g. `https://api.github.com`; by default
    /// derived from `clone_url`.
    #[serde(default)]
    pub status_api: Option<String>,
}

/// A registered repository: the names of its secrets, never their values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RepositoryView {
    pub name: String,
    pub forge: String,
    pub clone_url: String,
    pub pipeline_path: String,
    pub credentials: Option<String>,
    pub webhook_secret: String,
    pub status_token: Option<String>,
    pub status_api: Option<String>,
    /// Where the forge sends webhooks: `/api/v1/repos/{name}/webhook` on this server.
    pub webhook_path: String,
    #[schema(value_type = String, format = DateTime)]
    pub created: Time,
}

impl From<&hodei_domain::ports::RepositoryRecord> for RepositoryView {
    fn from(r: &hodei_domain::ports::RepositoryRecord) -> RepositoryView {
        RepositoryView {
            name: r.name.clone(),
            forge: r.forge.name().to_owned(),
            clone_url: r.clone_url.clone(),
            pipeline_path: r.pipeline_path.clone(),
            credentials: r.credentials.clone(),
            webhook_secret: r.webhook_secret.clone(),
            status_token: r.status_token.clone(),
            status_api: r.status_api.clone(),
            webhook_path: format!("/api/v1/repos/{}/webhook", r.name),
            created: r.created.into(),
        }
    }
}

/// The registered repositories, by name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RepositoryList {
    pub items: Vec<RepositoryView>,
}

/// What a webhook delivery did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    /// The delivery's id, as the forge named it.
    pub delivery: String,
    /// Whether this delivery started a run.
    pub started: bool,
    /// The run it started (or, for a delivery seen before, the run that one started).
    pub run: Option<u64>,
    /// The delivery was received before: nothing new was started.
    pub duplicate: bool,
    /// Why no run was started: a ping, an event `on:` does not want, no pipeline file.
    pub reason: Option<String>,
    /// Runs of the same pipeline and branch cancelled because this push supersedes them.
    pub superseded: Vec<u64>,
}

/// A file a job kept.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ArtifactView {
    /// The id of the job that kept it.
    pub job_id: u64,
    /// The job's name, e.g. `build`.
    pub job: String,
    /// Its path in the job's workspace.
    pub path: String,
    pub size: u64,
    /// SHA-256 of the content, in hex.
    pub sha256: String,
    /// Where to download it.
    pub url: String,
}

/// A run's artifacts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ArtifactList {
    /// By job, then path.
    pub artifacts: Vec<ArtifactView>,
}
