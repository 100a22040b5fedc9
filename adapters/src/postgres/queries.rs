//! The SQL of the record (pipelines, runs, jobs, steps, events) and of the API's lists, on a
//! connection or transaction the caller provides.
//!
//! Batches are bound as arrays (`UNNEST`) or as one JSON document (`json_to_recordset`, with the
//! field names of the shared projections, `sqlite/projections.rs`), so that a batch of any size
//! is one statement per table.

use hodei_domain::ids::{JobId, RunId, Timestamp};
use hodei_domain::ports::{
    JobRecord, NewRun, PipelineSummary, PipelineVersion, RunFilter, RunRecord, RunSummary,
    StoreError, VersionStamp,
};
use hodei_domain::state::{Attempt, DomainEvent, JobState, RunState};
use serde::Serialize;
use sqlx::{AssertSqlSafe, PgConnection};

use super::error::{id_of, store_error};
use crate::decode::{JobRow, RunRow, StepRow, SummaryRow, number, run_record, run_summary};
use crate::sqlite::error::{corrupt, stored_id};
use crate::sqlite::projections::Projection;

/// The advisory lock that numbers events: held by each appending transaction until it ends,
/// so that `seq` follows commit order with no gap. ("HODEI" + 1 in ASCII, as a key.)
const EVENTS_LOCK: i64 = 0x484f_4445_4901;

/// An append after the numbering lock, in ONE statement (one round trip): the events, then the
/// rows of the projections, each table written by one data-modifying `WITH` part. Every part
/// sees the snapshot the statement started with, taken after the lock: `seq` continues from
/// the last committed event. Each row is written by one part only (a run's start and its state
/// travel in one row), as PostgreSQL requires.
const APPEND: &str = "\
    WITH appended AS ( \
        INSERT INTO events (seq, run_id, job_id, kind, at, body) \
        SELECT (SELECT coalesce(max(seq), 0) FROM events) + e.n, e.run_id, e.job_id, e.kind, \
            e.at, e.body \
        FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::text[]) \
            WITH ORDINALITY AS e(run_id, job_id, kind, at, body, n) \
        RETURNING 1 \
    ), run_rows AS ( \
        UPDATE runs SET state = coalesce(v.state, runs.state), \
            since = coalesce(v.since, runs.since), \
            finished = coalesce(v.finished, runs.finished), \
            started = coalesce(runs.started, v.started) \
        FROM json_to_recordset($6::json) \
            AS v(id bigint, state text, since bigint, finished bigint, started bigint) \
        WHERE runs.id = v.id \
        RETURNING 1 \
    ), job_rows AS ( \
        UPDATE jobs SET state = v.state, worker = coalesce(v.worker, jobs.worker), \
            reason = v.reason::text, attempt = v.attempt, since = v.since, \
            started = coalesce(jobs.started, v.started), \
            finished = coalesce(v.finished, jobs.finished) \
        FROM json_to_recordset($7::json) \
            AS v(id bigint, state text, worker text, reason json, attempt bigint, since bigint, \
                started bigint, finished bigint) \
        WHERE jobs.id = v.id \
        RETURNING 1 \
    ), step_rows AS ( \
        INSERT INTO steps (job_id, job_attempt, idx, attempt, state, reason, exit_code, \
            exit_signal, oom_killed, since, log_offset, started) \
        SELECT v.job, v.job_attempt, v.index, v.attempt, v.state, v.reason::text, v.code, \
            v.signal, v.oom, v.since, v.log_offset, v.started \
        FROM json_to_recordset($8::json) AS v(job bigint, job_attempt bigint, index bigint, \
            attempt bigint, state text, reason json, code integer, signal integer, oom boolean, \
            since bigint, log_offset bigint, started bigint) \
        ON CONFLICT (job_id, job_attempt, idx, attempt) DO UPDATE SET \
            state = excluded.state, reason = excluded.reason, exit_code = excluded.exit_code, \
            exit_signal = excluded.exit_signal, oom_killed = excluded.oom_killed, \
            since = excluded.since, log_offset = coalesce(excluded.log_offset, steps.log_offset), \
            started = coalesce(excluded.started, steps.started) \
        RETURNING 1 \
    ) \
    SELECT (SELECT count(*) FROM appended), (SELECT count(*) FROM run_rows), \
        (SELECT count(*) FROM job_rows), (SELECT count(*) FROM step_rows)";

/// A run's row in an append: its new state, its start, or both.
#[derive(Serialize)]
struct RunUpdate {
    id: hodei_domain::ids::RunId,
    state: Option<&'static str>,
    since: Option<i64>,
    finished: Option<i64>,
    started: Option<i64>,
}

/// Appends `events` to the log and applies them to the projections, in the caller's
/// transaction.
///
/// # Errors
/// [`StoreError::NotFound`] when an event names a run or job that does not exist (the caller's
/// transaction is then aborted).
pub(super) async fn append_events(
    conn: &mut PgConnection,
    events: &[&DomainEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let what = "appending events";
    let fail = |err| store_error(what, err);
    let mut runs = Vec::with_capacity(events.len());
    let mut jobs = Vec::with_capacity(events.len());
    let mut kinds = Vec::with_capacity(events.len());
    let mut ats = Vec::with_capacity(events.len());
    let mut bodies = Vec::with_capacity(events.len());
    for event in events {
        runs.push(id_of(event.run_id().0)?);
        jobs.push(event.job_id().map(|job| id_of(job.0)).transpose()?);
        kinds.push(event.kind());
        ats.push(event.at().0);
        bodies.push(to_json(event)?);
    }
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(EVENTS_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(fail)?;
    let projection = Projection::of(events.iter().copied());
    let mut run_rows: Vec<RunUpdate> = projection
        .runs
        .iter()
        .map(|row| RunUpdate {
            id: row.id,
            state: Some(row.state),
            since: Some(row.since),
            finished: row.finished,
            started: None,
        })
        .collect();
    for start in &projection.run_starts {
        match run_rows.iter_mut().find(|row| row.id == start.id) {
            Some(row) => row.started = Some(start.started),
            None => run_rows.push(RunUpdate {
                id: start.id,
                state: None,
                since: None,
                finished: None,
                started: Some(start.started),
            }),
        }
    }
    sqlx::query(APPEND)
        .bind(runs)
        .bind(jobs)
        .bind(kinds)
        .bind(ats)
        .bind(bodies)
        .bind(to_json(&run_rows)?)
        .bind(to_json(&projection.jobs)?)
        .bind(to_json(&projection.steps)?)
        .execute(&mut *conn)
        .await
        .map_err(fail)?;
    Ok(())
}

/// The first run or job named by `events` that does not exist, as `run-3` or `job-7`.
pub(super) async fn missing_subject(
    conn: &mut PgConnection,
    events: &[DomainEvent],
) -> Option<String> {
    for event in events {
        let run = i64::try_from(event.run_id().0).unwrap_or(-1);
        if !exists(
            conn,
            "SELECT EXISTS (SELECT 1 FROM runs WHERE id = $1)",
            run,
        )
        .await
        {
            return Some(event.run_id().to_string());
        }
        if let Some(job_id) = event.job_id() {
            let job = i64::try_from(job_id.0).unwrap_or(-1);
            if !exists(
                conn,
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1)",
                job,
            )
            .await
            {
                return Some(job_id.to_string());
            }
        }
    }
    None
}

async fn exists(conn: &mut PgConnection, sql: &'static str, id: i64) -> bool {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(conn)
        .await
        .unwrap_or(true)
}

/// Creates a run of a stored pipeline version and its jobs, all pending, at attempt 1.
pub(super) async fn create_run(
    conn: &mut PgConnection,
    run: &NewRun,
) -> Result<RunRecord, StoreError> {
    let what = "creating a run";
    let version = i64::from(run.version);
    let source: Option<String> =
        sqlx::query_scalar("SELECT source FROM pipelines WHERE name = $1 AND version = $2")
            .bind(&run.pipeline)
            .bind(version)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|err| store_error(what, err))?;
    let source = source.ok_or_else(|| StoreError::NotFound {
        what: format!("pipeline `{}` version {}", run.pipeline, run.version),
    })?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO runs (pipeline, version, inputs, state, since, created) \
         VALUES ($1, $2, $3, 'pending', $4, $4) RETURNING id",
    )
    .bind(&run.pipeline)
    .bind(version)
    .bind(to_json(&run.inputs)?)
    .bind(run.at.0)
    .fetch_one(&mut *conn)
    .await
    .map_err(|err| store_error(what, err))?;
    let run_id = RunId(stored_id("run id", id)?);
    if !run.inputs.overridden_by.is_empty() {
        // The override is the run's first event, in the transaction that creates it.
        let event = DomainEvent::RunStartOverridden {
            run: run_id,
            by: run.inputs.overridden_by.clone(),
            event: run.inputs.event.clone(),
            at: run.at,
        };
        append_events(conn, &[&event]).await?;
    }
    let positions: Vec<i64> = (0..run.jobs.len())
        .map(|i| i64::try_from(i).unwrap_or(i64::MAX))
        .collect();
    let mut jobs: Vec<(i64, i64)> = sqlx::query_as(
        "INSERT INTO jobs (run_id, position, name, state, attempt, since) \
         SELECT $1, j.position, j.name, 'pending', 1, $2 \
         FROM UNNEST($3::bigint[], $4::text[]) AS j(position, name) RETURNING position, id",
    )
    .bind(id)
    .bind(run.at.0)
    .bind(positions)
    .bind(&run.jobs)
    .fetch_all(&mut *conn)
    .await
    .map_err(|err| store_error(what, err))?;
    jobs.sort_unstable();
    if jobs.len() != run.jobs.len() {
        return Err(corrupt(
            "the jobs of a new run",
            format!("{} planned, {} created", run.jobs.len(), jobs.len()),
        ));
    }
    let jobs = jobs
        .into_iter()
        .zip(&run.jobs)
        .map(|((_, job), name)| {
            Ok(JobRecord {
                id: JobId(stored_id("job id", job)?),
                name: name.clone(),
                state: JobState::Pending,
                attempt: Attempt::FIRST,
                since: run.at,
                started: None,
                finished: None,
                worker: None,
                steps: Vec::new(),
            })
        })
        .collect::<Result<_, StoreError>>()?;
    let mut record = RunRecord {
        id: run_id,
        pipeline: run.pipeline.clone(),
        version: run.version,
        source,
        inputs: run.inputs.clone(),
        state: RunState::Pending,
        since: run.at,
        created: run.at,
        started: None,
        finished: None,
        jobs,
    };
    if let Some(opening) = &run.opening {
        let events = opening.open(&mut record);
        if !events.is_empty() {
            append_events(conn, &events.iter().collect::<Vec<_>>()).await?;
        }
    }
    Ok(record)
}

/// Stores `source` as the next version of pipeline `name`, unless it is the latest's text.
/// Two writers of one pipeline at once: the second waits for the first's row lock.
pub(super) async fn put_pipeline(
    conn: &mut PgConnection,
    name: &str,
    source: &str,
    at: Timestamp,
) -> Result<PipelineVersion, StoreError> {
    let what = "storing a pipeline";
    // One writer per pipeline name at a time, across replicas.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(name)
        .execute(&mut *conn)
        .await
        .map_err(|err| store_error(what, err))?;
    let latest = pipeline(conn, name).await?;
    if let Some(latest) = latest.as_ref().filter(|p| p.source == source) {
        return Ok(latest.clone());
    }
    let version = latest.map_or(1, |p| p.version.saturating_add(1));
    sqlx::query("INSERT INTO pipelines (name, version, source, created) VALUES ($1, $2, $3, $4)")
        .bind(name)
        .bind(i64::from(version))
        .bind(source)
        .bind(at.0)
        .execute(conn)
        .await
        .map_err(|err| store_error(what, err))?;
    Ok(PipelineVersion {
        name: name.to_owned(),
        version,
        source: source.to_owned(),
        created: at,
    })
}

/// The latest version of pipeline `name`.
pub(super) async fn pipeline(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<PipelineVersion>, StoreError> {
    let what = format!("pipeline `{name}`");
    let row: Option<(i64, String, i64)> = sqlx::query_as(
        "SELECT version, source, created FROM pipelines WHERE name = $1 \
         ORDER BY version DESC LIMIT 1",
    )
    .bind(name)
    .fetch_optional(conn)
    .await
    .map_err(|err| store_error(&what, err))?;
    row.map(|(version, source, created)| {
        Ok(PipelineVersion {
            name: name.to_owned(),
            version: number(&what, version)?,
            source,
            created: Timestamp(created),
        })
    })
    .transpose()
}

/// A run with its jobs in plan order and their steps; call it in a repeatable-read
/// transaction so that the three reads see one state.
pub(super) async fn run(
    conn: &mut PgConnection,
    id: RunId,
) -> Result<Option<RunRecord>, StoreError> {
    let Ok(key) = i64::try_from(id.0) else {
        return Ok(None);
    };
    let what = id.to_string();
    let fail = |err| store_error(&what, err);
    let row: Option<RunRow> = sqlx::query_as(
        "SELECT r.pipeline, r.version, p.source, r.inputs, r.state, r.since, r.created, \
                r.started, r.finished \
         FROM runs r JOIN pipelines p ON p.name = r.pipeline AND p.version = r.version \
         WHERE r.id = $1",
    )
    .bind(key)
    .fetch_optional(&mut *conn)
    .await
    .map_err(fail)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let jobs: Vec<JobRow> = sqlx::query_as(
        "SELECT id, name, state, worker, reason, attempt, since, started, finished FROM jobs \
         WHERE run_id = $1 ORDER BY position",
    )
    .bind(key)
    .fetch_all(&mut *conn)
    .await
    .map_err(fail)?;
    let steps: Vec<StepRow> = sqlx::query_as(
        "SELECT s.job_id, s.job_attempt, s.idx, s.attempt, s.state, s.reason, \
                s.exit_code, s.exit_signal, s.oom_killed, s.since, s.log_offset, s.started \
         FROM jobs j JOIN steps s ON s.job_id = j.id WHERE j.run_id = $1 \
         ORDER BY s.job_id, s.job_attempt, s.idx, s.attempt",
    )
    .bind(key)
    .fetch_all(&mut *conn)
    .await
    .map_err(fail)?;

    run_record(id, row, jobs, steps).map(Some)
}

/// The runs not in a terminal state, oldest first.
pub(super) async fn unfinished_runs(conn: &mut PgConnection) -> Result<Vec<RunId>, StoreError> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM runs WHERE state NOT IN ('succeeded', 'failed', 'cancelled') \
         ORDER BY created, id",
    )
    .fetch_all(conn)
    .await
    .map_err(|err| store_error("unfinished runs", err))?;
    ids.into_iter()
        .map(|id| stored_id("run id", id).map(RunId))
        .collect()
}

/// At most `limit` events numbered after `after` (of one run with `run`), in order.
pub(super) async fn events(
    conn: &mut PgConnection,
    run: Option<RunId>,
    after: u64,
    limit: u32,
) -> Result<Vec<(u64, DomainEvent)>, StoreError> {
    let Ok(after) = i64::try_from(after) else {
        return Ok(Vec::new());
    };
    let run = match run.map(|run| i64::try_from(run.0)) {
        Some(Ok(run)) => Some(run),
        Some(Err(_)) => return Ok(Vec::new()),
        None => None,
    };
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT seq, body FROM events WHERE seq > $1 AND ($2::bigint IS NULL OR run_id = $2) \
         ORDER BY seq LIMIT $3",
    )
    .bind(after)
    .bind(run)
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await
    .map_err(|err| store_error("events", err))?;
    crate::sqlite::queries::decode_events(rows)
}

/// Pipelines in name order after `after`, at most `limit`, each with its latest version.
pub(super) async fn pipelines(
    conn: &mut PgConnection,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<PipelineSummary>, StoreError> {
    let what = "listing pipelines";
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT name, max(version), min(created), max(created) FROM pipelines \
         WHERE $1::text IS NULL OR name > $1 GROUP BY name ORDER BY name LIMIT $2",
    )
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await
    .map_err(|err| store_error(what, err))?;
    rows.into_iter()
        .map(|(name, latest, created, updated)| {
            Ok(PipelineSummary {
                latest: number(what, latest)?,
                name,
                created: Timestamp(created),
                updated: Timestamp(updated),
            })
        })
        .collect()
}

/// Version `version` of pipeline `name`, with its text.
pub(super) async fn pipeline_version(
    conn: &mut PgConnection,
    name: &str,
    version: u32,
) -> Result<Option<PipelineVersion>, StoreError> {
    let key = i64::from(version);
    let row: Option<(String, i64)> =
        sqlx::query_as("SELECT source, created FROM pipelines WHERE name = $1 AND version = $2")
            .bind(name)
            .bind(key)
            .fetch_optional(conn)
            .await
            .map_err(|err| store_error(&format!("pipeline `{name}` version {version}"), err))?;
    Ok(row.map(|(source, created)| PipelineVersion {
        name: name.to_owned(),
        version,
        source,
        created: Timestamp(created),
    }))
}

/// Every version of pipeline `name`, oldest first.
pub(super) async fn pipeline_versions(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Vec<VersionStamp>, StoreError> {
    let what = format!("versions of pipeline `{name}`");
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT version, created FROM pipelines WHERE name = $1 ORDER BY version")
            .bind(name)
            .fetch_all(conn)
            .await
            .map_err(|err| store_error(&what, err))?;
    rows.into_iter()
        .map(|(version, created)| {
            Ok(VersionStamp {
                version: number(&what, version)?,
                created: Timestamp(created),
            })
        })
        .collect()
}

/// Runs matching `filter`, newest first, with an id below `before`, at most `limit`.
pub(super) async fn runs(
    conn: &mut PgConnection,
    filter: &RunFilter,
    before: Option<RunId>,
    limit: u32,
) -> Result<Vec<RunSummary>, StoreError> {
    let before = before.map(|id| i64::try_from(id.0).unwrap_or(i64::MAX));
    // Only fixed fragments go into the text; every value is a bound parameter.
    let mut sql = String::from(
        "SELECT id, pipeline, version, inputs, state, since, created FROM runs WHERE true",
    );
    let mut n = 0;
    let mut param = |sql: &mut String, fragment: &str| {
        n += 1;
        sql.push_str(&fragment.replace('?', &format!("${n}")));
    };
    if filter.state.is_some() {
        param(&mut sql, " AND state = ?");
    }
    if filter.pipeline.is_some() {
        param(&mut sql, " AND pipeline = ?");
    }
    if filter.branch.is_some() {
        param(&mut sql, " AND inputs::jsonb ->> 'branch' = ?");
    }
    if before.is_some() {
        param(&mut sql, " AND id < ?");
    }
    param(&mut sql, " ORDER BY id DESC LIMIT ?");
    let mut query = sqlx::query_as::<_, SummaryRow>(AssertSqlSafe(sql));
    if let Some(state) = filter.state {
        query = query.bind(state.name());
    }
    if let Some(pipeline) = &filter.pipeline {
        query = query.bind(pipeline);
    }
    if let Some(branch) = &filter.branch {
        query = query.bind(branch);
    }
    if let Some(before) = before {
        query = query.bind(before);
    }
    let rows = query
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await
        .map_err(|err| store_error("listing runs", err))?;
    rows.into_iter().map(run_summary).collect()
}

/// The run job `job` belongs to.
pub(super) async fn job_run(
    conn: &mut PgConnection,
    job: JobId,
) -> Result<Option<RunId>, StoreError> {
    let Ok(key) = i64::try_from(job.0) else {
        return Ok(None);
    };
    let run: Option<i64> = sqlx::query_scalar("SELECT run_id FROM jobs WHERE id = $1")
        .bind(key)
        .fetch_optional(conn)
        .await
        .map_err(|err| store_error(&job.to_string(), err))?;
    run.map(|id| stored_id("run id", id).map(RunId)).transpose()
}

pub(super) fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|err| corrupt("a value to store", err))
}
