//! Stored rows back into the domain's records, for both stores: the SQL differs between SQLite
//! and PostgreSQL, the rows it reads do not. Every integer column is read as `i64` and checked
//! here on its way to the domain's type; a row that does not fit is [`StoreError::Corrupt`],
//! naming what.

use std::collections::HashMap;

use hodei_domain::ids::{JobId, RunId, Timestamp, WorkerId};
use hodei_domain::model::{Label, Role};
use hodei_domain::plan::RunInputs;
use hodei_domain::ports::{
    AgentRecord, AgentTokenRecord, JobRecord, Lease, RepositoryRecord, RunRecord, RunSummary,
    SecretInfo, SecretScope, StepRecord, StoreError, TokenRecord,
};
use hodei_domain::state::Attempt;

use crate::sqlite::error::{corrupt, stored_id};
use crate::sqlite::projections::{job_state, run_state, step_exit, step_state};

/// `pipeline, version, source, inputs, state, since, created, started, finished` of a run.
pub(crate) type RunRow = (
    String,
    i64,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
);
/// `id, name, state, worker, reason, attempt, since, started, finished` of a job.
pub(crate) type JobRow = (
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
);
/// `job_id, job_attempt, idx, attempt, state, reason, exit_code, exit_signal, oom_killed,
/// since, log_offset, started` of a step attempt.
pub(crate) type StepRow = (
    i64,
    i64,
    i64,
    i64,
    String,
    Option<String>,
    Option<i32>,
    Option<i32>,
    Option<bool>,
    i64,
    Option<i64>,
    Option<i64>,
);

/// A small unsigned number (a version, a step index) as stored.
pub(crate) fn number(what: &str, n: i64) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| corrupt(what, format!("number {n} out of range")))
}

/// An attempt number as stored.
pub(crate) fn attempt(what: &str, n: i64) -> Result<Attempt, StoreError> {
    u32::try_from(n)
        .ok()
        .and_then(Attempt::new)
        .ok_or_else(|| corrupt(what, format!("attempt {n}")))
}

/// A run with its jobs (in plan order) and their steps (in order of job attempt, index and
/// step attempt), from rows read in one snapshot.
pub(crate) fn run_record(
    id: RunId,
    run: RunRow,
    jobs: Vec<JobRow>,
    steps: Vec<StepRow>,
) -> Result<RunRecord, StoreError> {
    let (pipeline, version, source, inputs, state, since, created, started, finished) = run;
    let what = id.to_string();
    let inputs: RunInputs =
        serde_json::from_str(&inputs).map_err(|err| corrupt(format!("{id} inputs"), err))?;
    let state = run_state(&state).map_err(|err| corrupt(&what, err))?;
    let mut records = Vec::with_capacity(jobs.len());
    let mut position = HashMap::with_capacity(jobs.len());
    for (job, name, state, worker, reason, job_attempt, since, job_started, job_finished) in jobs {
        let job_id = JobId(stored_id("job id", job)?);
        let what = job_id.to_string();
        position.insert(job_id, records.len());
        records.push(JobRecord {
            id: job_id,
            name,
            state: job_state(&state, worker.clone(), reason.as_deref())
                .map_err(|e| corrupt(&what, e))?,
            attempt: attempt(&what, job_attempt)?,
            since: Timestamp(since),
            started: job_started.map(Timestamp),
            finished: job_finished.map(Timestamp),
            worker: worker.map(WorkerId),
            steps: Vec::new(),
        });
    }
    for (
        job,
        job_attempt,
        index,
        step_attempt,
        state,
        reason,
        code,
        signal,
        oom,
        since,
        log_offset,
        step_started,
    ) in steps
    {
        let job_id = JobId(stored_id("job id", job)?);
        let what = format!("step {index} of {job_id}");
        let record = StepRecord {
            job_attempt: attempt(&what, job_attempt)?,
            index: number(&what, index)?,
            attempt: attempt(&what, step_attempt)?,
            state: step_state(&state, reason.as_deref()).map_err(|e| corrupt(&what, e))?,
            exit: step_exit(code, signal, oom),
            since: Timestamp(since),
            started: step_started.map(Timestamp),
            log_offset: log_offset.and_then(|offset| u64::try_from(offset).ok()),
        };
        match position.get(&job_id).and_then(|&i| records.get_mut(i)) {
            Some(job) => job.steps.push(record),
            None => return Err(corrupt(what, "its job is not in the run")),
        }
    }
    Ok(RunRecord {
        id,
        pipeline,
        version: number(&what, version)?,
        source,
        inputs,
        state,
        since: Timestamp(since),
        created: Timestamp(created),
        started: started.map(Timestamp),
        finished: finished.map(Timestamp),
        jobs: records,
    })
}

/// `id, pipeline, version, inputs, state, since, created` of a listed run.
pub(crate) type SummaryRow = (i64, String, i64, String, String, i64, i64);

pub(crate) fn run_summary(row: SummaryRow) -> Result<RunSummary, StoreError> {
    let (id, pipeline, version, inputs, state, since, created) = row;
    let id = RunId(stored_id("run id", id)?);
    let what = id.to_string();
    let inputs: RunInputs =
        serde_json::from_str(&inputs).map_err(|err| corrupt(format!("{id} inputs"), err))?;
    Ok(RunSummary {
        id,
        pipeline,
        version: number(&what, version)?,
        inputs,
        state: run_state(&state).map_err(|err| corrupt(&what, err))?,
        since: Timestamp(since),
        created: Timestamp(created),
    })
}

/// `id, name, role, digest, created, revoked` of an API token.
pub(crate) type TokenRow = (i64, String, String, Vec<u8>, i64, Option<i64>);

pub(crate) fn token_record(row: TokenRow) -> Result<TokenRecord, StoreError> {
    let (id, name, role, digest, created, revoked) = row;
    let what = format!("token {id}");
    let role: Role = role.parse().map_err(|err| corrupt(&what, err))?;
    Ok(TokenRecord {
        id: stored_id("token id", id)?,
        name,
        role,
        digest: digest_of(&what, &digest)?,
        created: Timestamp(created),
        revoked: revoked.map(Timestamp),
    })
}

/// A SHA-256 digest as stored.
pub(crate) fn digest_of(what: &str, bytes: &[u8]) -> Result<[u8; 32], StoreError> {
    bytes
        .try_into()
        .map_err(|_| corrupt(what, format!("a digest of {} bytes", bytes.len())))
}

/// Labels as stored: a JSON array of strings.
pub(crate) fn labels_json(labels: &[Label]) -> String {
    let names: Vec<&str> = labels.iter().map(Label::as_str).collect();
    serde_json::to_string(&names).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn labels_of(what: &str, json: &str) -> Result<Vec<Label>, StoreError> {
    serde_json::from_str::<Vec<Label>>(json).map_err(|err| corrupt(what, err))
}

/// `id, name, labels, created, expires, revoked` of a registration token.
pub(crate) type AgentTokenRow = (i64, String, Option<String>, i64, Option<i64>, Option<i64>);

pub(crate) fn agent_token_record(row: AgentTokenRow) -> Result<AgentTokenRecord, StoreError> {
    let (id, name, labels, created, expires, revoked) = row;
    let what = "a registration token";
    Ok(AgentTokenRecord {
        id: stored_id(what, id)?,
        name,
        labels: labels.map(|l| labels_of(what, &l)).transpose()?,
        created: Timestamp(created),
        expires: expires.map(Timestamp),
        revoked: revoked.map(Timestamp),
    })
}

/// `id, name, digest, labels, fixed_labels, registered` of an agent.
pub(crate) type AgentRow = (i64, String, Vec<u8>, String, bool, i64);

pub(crate) fn agent_record(row: AgentRow) -> Result<AgentRecord, StoreError> {
    let (id, name, digest, labels, fixed_labels, registered) = row;
    let what = "an agent";
    Ok(AgentRecord {
        id: stored_id(what, id)?,
        name,
        digest: digest_of(what, &digest)?,
        labels: labels_of(what, &labels)?,
        fixed_labels,
        registered: Timestamp(registered),
    })
}

/// `job, run, attempt, agent, epoch, next_seq, log_base, token` of a lease.
pub(crate) type LeaseRow = (i64, i64, i64, String, i64, i64, i64, Option<Vec<u8>>);

pub(crate) fn lease_record(row: LeaseRow) -> Result<Lease, StoreError> {
    let (job, run, job_attempt, agent, epoch, next_seq, log_base, token) = row;
    let what = "a lease";
    Ok(Lease {
        job: JobId(stored_id(what, job)?),
        run: RunId(stored_id(what, run)?),
        attempt: attempt(what, job_attempt)?,
        agent,
        epoch: stored_id(what, epoch)?,
        next_seq: stored_id(what, next_seq)?,
        log_base: stored_id(what, log_base)?,
        // A lease claimed before job tokens existed has none: no token opens it.
        token: match token {
            Some(token) => digest_of(what, &token)?,
            None => [0; 32],
        },
    })
}

/// `name, forge, clone_url, pipeline_path, credentials, webhook_secret, status_token, created,
/// status_api` of a repository.
pub(crate) type RepoRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    i64,
    Option<String>,
);

pub(crate) fn repository_record(row: RepoRow) -> Result<RepositoryRecord, StoreError> {
    let (name, forge, clone_url, pipeline_path, credentials, webhook_secret, status_token) =
        (row.0, row.1, row.2, row.3, row.4, row.5, row.6);
    let forge = forge
        .parse()
        .map_err(|err: String| corrupt(format!("repository {name}"), err))?;
    Ok(RepositoryRecord {
        name,
        forge,
        clone_url,
        pipeline_path,
        credentials,
        webhook_secret,
        status_token,
        status_api: row.8,
        created: Timestamp(row.7),
    })
}

/// `scope, owner, name, created, updated` of a stored secret.
pub(crate) type SecretRow = (String, String, String, i64, i64);

pub(crate) fn secret_info(row: SecretRow) -> Result<SecretInfo, StoreError> {
    let (kind, owner, name, created, updated) = row;
    let scope = SecretScope::new(&kind, &owner)
        .ok_or_else(|| corrupt(format!("secret {name}"), format!("scope `{kind}`")))?;
    Ok(SecretInfo {
        scope,
        name,
        created: Timestamp(created),
        updated: Timestamp(updated),
    })
}
