//! The SQL, one function per operation, on a connection the caller provides (the writer's
//! transaction for writes, a read transaction for reads).
//!
//! Batches are passed as one JSON array parameter and unpacked by SQLite's `json_each`, so that a
//! batch of any size is one prepared statement per table: the SQL text never varies, sqlx keeps
//! it prepared, and SQLite does the per-row work in C.

use hodei_domain::ids::{JobId, RunId, Timestamp};
use hodei_domain::ports::{JobRecord, NewRun, PipelineVersion, RunRecord, StoreError};
use hodei_domain::state::{Attempt, DomainEvent};
use serde::Serialize;
use sqlx::{Row, SqliteConnection};

use super::error::{corrupt, store_error, stored_id};
use super::projections::Projection;
use crate::decode::{JobRow, RunRow, StepRow};

// The statements of an append, as macros so that they can be joined into one query (one
// round trip to SQLite's thread) and still be examined one by one in the tests.
//
// Each statement starts with the same `batch` row naming the five JSON array parameters and
// reads its own. Every statement binds ?1 to ?5, all of them: sqlx numbers the parameters of a
// multi-statement query across its statements, and a statement that used only ?4 would get a
// wrong argument. SQLite copies each bound text per statement; the extra copies of a batch
// cost far less than more round trips.
macro_rules! batch {
    () => {
        "WITH batch (events, runs, jobs, steps, starts) AS (SELECT ?1, ?2, ?3, ?4, ?5) "
    };
}

/// Appends events in the order given; each row's `seq` follows the previous one's.
macro_rules! insert_events {
    () => {
        concat!(
            batch!(),
            "INSERT INTO events (run_id, job_id, kind, at, body) \
             SELECT e.value ->> 'run', e.value ->> 'job', e.value ->> 'type', e.value ->> 'at', \
                 e.value \
             FROM batch, json_each(batch.events) AS e ORDER BY e.key"
        )
    };
}

macro_rules! update_runs {
    () => {
        concat!(
            batch!(),
            "UPDATE runs SET state = v.value ->> 'state', since = v.value ->> 'since', \
                 finished = coalesce(v.value ->> 'finished', runs.finished) \
             FROM batch, json_each(batch.runs) AS v WHERE runs.id = v.value ->> 'id'"
        )
    };
}

/// A run's start is its first job's: written once.
macro_rules! start_runs {
    () => {
        concat!(
            batch!(),
            "UPDATE runs SET started = v.value ->> 'started' \
             FROM batch, json_each(batch.starts) AS v \
             WHERE runs.id = v.value ->> 'id' AND runs.started IS NULL"
        )
    };
}

macro_rules! update_jobs {
    () => {
        concat!(
            batch!(),
            "UPDATE jobs SET state = v.value ->> 'state', \
                 worker = coalesce(v.value ->> 'worker', jobs.worker), \
                 reason = v.value ->> 'reason', attempt = v.value ->> 'attempt', \
                 since = v.value ->> 'since', \
                 started = coalesce(jobs.started, v.value ->> 'started'), \
                 finished = coalesce(v.value ->> 'finished', jobs.finished) \
             FROM batch, json_each(batch.jobs) AS v WHERE jobs.id = v.value ->> 'id'"
        )
    };
}

// `WHERE true` resolves the parsing ambiguity of INSERT ... SELECT ... ON CONFLICT.
macro_rules! upsert_steps {
    () => {
        concat!(
            batch!(),
            "INSERT INTO steps (job_id, job_attempt, idx, attempt, state, reason, \
                 exit_code, exit_signal, oom_killed, since, log_offset, started) \
             SELECT v.value ->> 'job', v.value ->> 'job_attempt', v.value ->> 'index', \
                 v.value ->> 'attempt', v.value ->> 'state', v.value ->> 'reason', \
                 v.value ->> 'code', v.value ->> 'signal', v.value ->> 'oom', \
                 v.value ->> 'since', v.value ->> 'log_offset', v.value ->> 'started' \
             FROM batch, json_each(batch.steps) AS v WHERE true \
             ON CONFLICT (job_id, job_attempt, idx, attempt) DO UPDATE SET \
                 state = excluded.state, reason = excluded.reason, \
                 exit_code = excluded.exit_code, exit_signal = excluded.exit_signal, \
                 oom_killed = excluded.oom_killed, since = excluded.since, \
                 log_offset = coalesce(excluded.log_offset, steps.log_offset), \
                 started = coalesce(excluded.started, steps.started)"
        )
    };
}

/// The projection updates alone, for the tests of their query plans.
#[cfg(test)]
pub(super) const PROJECTION_UPDATES: [&str; 3] = [update_runs!(), start_runs!(), update_jobs!()];

/// An append: the events, then the projections, in one query.
/// The statements of an append: the events, then the rows of the projections.
macro_rules! append_statements {
    () => {
        concat!(
            insert_events!(),
            ";\n",
            update_runs!(),
            ";\n",
            start_runs!(),
            ";\n",
            update_jobs!(),
            ";\n",
            upsert_steps!()
        )
    };
}

/// Where a query stands in the transaction of the writer's batch: whether it begins it, ends
/// it, both or neither. `BEGIN IMMEDIATE` and `COMMIT` go in the same query as the statements
/// they frame (they take no parameters): one round trip to SQLite's thread instead of three.
/// The caller rolls back when a framed query fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Frame {
    pub begin: bool,
    pub commit: bool,
}

impl Frame {
    /// Inside a transaction the caller opened (and will close).
    pub const INSIDE: Frame = Frame {
        begin: false,
        commit: false,
    };
}

/// The statements of `body` in `frame`.
macro_rules! framed {
    ($frame:expr, $body:expr) => {
        match ($frame.begin, $frame.commit) {
            (false, false) => $body,
            (true, false) => concat!("BEGIN IMMEDIATE;\n", $body),
            (false, true) => concat!($body, ";\nCOMMIT"),
            (true, true) => concat!("BEGIN IMMEDIATE;\n", $body, ";\nCOMMIT"),
        }
    };
}

/// A new run and its jobs: the pipeline's text (no row when the version is not stored, and then
/// the foreign key fails the insert), the run's id, each job's position and id. The run just
/// inserted has the highest id (one writer, in its transaction).
macro_rules! create_statements {
    () => {
        concat!(
            "SELECT source FROM pipelines WHERE name = ?1 AND version = ?2;\n",
            "INSERT INTO runs (pipeline, version, inputs, state, since, created) \
             VALUES (?1, ?2, ?3, 'pending', ?4, ?4) RETURNING id;\n",
            "INSERT INTO jobs (run_id, position, name, state, attempt, since) \
             SELECT (SELECT max(id) FROM runs), key, value, 'pending', 1, ?4 FROM json_each(?5) \
             RETURNING position, id"
        )
    };
}

const LATEST_PIPELINE: &str = "\
    SELECT version, source, created FROM pipelines WHERE name = ?1 \
    ORDER BY version DESC LIMIT 1";

/// Appends `events` to the log and applies them to the projections.
///
/// # Errors
/// [`StoreError::NotFound`] naming the first run or job that does not exist.
pub(super) async fn append_events(
    conn: &mut SqliteConnection,
    events: &[&DomainEvent],
) -> Result<(), StoreError> {
    append_framed(conn, events, Frame::INSIDE).await
}

/// Appends `events` as [`append_events`], with `BEGIN IMMEDIATE` and `COMMIT` as `frame` says,
/// in one round trip to SQLite's thread. A query that began the transaction and failed rolls
/// it back: nothing is written.
///
/// # Errors
/// As [`append_events`]; [`StoreError::Unavailable`] when the commit fails.
pub(super) async fn append_framed(
    conn: &mut SqliteConnection,
    events: &[&DomainEvent],
    frame: Frame,
) -> Result<(), StoreError> {
    let projection = Projection::of(events.iter().copied());
    let appended = sqlx::query(framed!(frame, append_statements!()))
        .bind(to_json(events)?)
        .bind(to_json(&projection.runs)?)
        .bind(to_json(&projection.jobs)?)
        .bind(to_json(&projection.steps)?)
        .bind(to_json(&projection.run_starts)?)
        .execute(&mut *conn)
        .await;
    if appended.is_err() && frame != Frame::INSIDE {
        // Whichever statement failed, what the batch began is undone ("no transaction is
        // active" when it was `BEGIN` itself). The missing subject is then looked up in what
        // is committed.
        rollback(conn).await;
    }
    match appended {
        Ok(_) => Ok(()),
        Err(err) => Err(match store_error("appending events", err) {
            // The only foreign keys an append can break: an unknown run or job.
            StoreError::NotFound { what } => match missing_subject(conn, events).await {
                Some(subject) => StoreError::NotFound { what: subject },
                None => StoreError::NotFound { what },
            },
            other => other,
        }),
    }
}

/// The first run or job named by `events` that does not exist, as `run-3` or `job-7`.
async fn missing_subject(conn: &mut SqliteConnection, events: &[&DomainEvent]) -> Option<String> {
    for event in events {
        let run = i64::try_from(event.run_id().0).unwrap_or(-1);
        if !exists(
            conn,
            "SELECT EXISTS (SELECT 1 FROM runs WHERE id = ?1)",
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
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = ?1)",
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

async fn exists(conn: &mut SqliteConnection, sql: &'static str, id: i64) -> bool {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(conn)
        .await
        .unwrap_or(true)
}

/// Rolls back the transaction a framed query began; harmless when none is open.
pub(super) async fn rollback(conn: &mut SqliteConnection) {
    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
}

/// Creates a run of a stored pipeline version and its jobs, all pending, at attempt 1, then
/// writes its opening (after the override of `on:`, if any).
///
/// # Errors
/// [`StoreError::NotFound`] if the pipeline version is not stored.
pub(super) async fn create_run(
    conn: &mut SqliteConnection,
    run: &NewRun,
) -> Result<RunRecord, StoreError> {
    create_run_framed(conn, run, Frame::INSIDE).await
}

/// [`create_run`] in two round trips to SQLite's thread (the run and its jobs; its first
/// events), the first beginning the transaction and the last committing it as `frame` says.
/// On an error, the caller rolls the transaction back.
pub(super) async fn create_run_framed(
    conn: &mut SqliteConnection,
    run: &NewRun,
    frame: Frame,
) -> Result<RunRecord, StoreError> {
    let mut record = create_rows(conn, run, frame.begin).await?;
    let mut events = Vec::new();
    if !run.inputs.overridden_by.is_empty() {
        // The override is the run's first event, in the transaction that creates it.
        events.push(DomainEvent::RunStartOverridden {
            run: record.id,
            by: run.inputs.overridden_by.clone(),
            event: run.inputs.event.clone(),
            at: run.at,
        });
    }
    if let Some(opening) = &run.opening {
        events.extend(opening.open(&mut record));
    }
    let tail = Frame {
        begin: false,
        commit: frame.commit,
    };
    if !events.is_empty() {
        append_framed(conn, &events.iter().collect::<Vec<_>>(), tail).await?;
    } else if frame.commit {
        sqlx::query("COMMIT")
            .execute(&mut *conn)
            .await
            .map_err(|err| store_error("committing a new run", err))?;
    }
    Ok(record)
}

/// The rows of a new run and its jobs, in one query; the record they make, pending.
async fn create_rows(
    conn: &mut SqliteConnection,
    run: &NewRun,
    begin: bool,
) -> Result<RunRecord, StoreError> {
    let what = "creating a run";
    let sql = match begin {
        true => concat!("BEGIN IMMEDIATE;\n", create_statements!()),
        false => create_statements!(),
    };
    let rows = sqlx::query(sql)
        .bind(&run.pipeline)
        .bind(run.version)
        .bind(to_json(&run.inputs)?)
        .bind(run.at.0)
        .bind(to_json(&run.jobs)?)
        .fetch_all(&mut *conn)
        .await;
    let not_stored = || StoreError::NotFound {
        what: format!("pipeline `{}` version {}", run.pipeline, run.version),
    };
    let rows = match rows {
        Ok(rows) => rows,
        // The only foreign key of a new run: its pipeline version.
        Err(err) => {
            return Err(match store_error(what, err) {
                StoreError::NotFound { .. } => not_stored(),
                other => other,
            });
        }
    };
    let mut rows = rows.into_iter();
    let (Some(source), Some(id)) = (rows.next(), rows.next()) else {
        return Err(not_stored());
    };
    let source: String = source.try_get(0).map_err(|err| store_error(what, err))?;
    let id: i64 = id.try_get(0).map_err(|err| store_error(what, err))?;
    let run_id = RunId(stored_id("run id", id)?);
    // RETURNING gives rows in no particular order: sort by position.
    let mut jobs: Vec<(i64, i64)> = rows
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()
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
                state: hodei_domain::state::JobState::Pending,
                attempt: Attempt::FIRST,
                since: run.at,
                started: None,
                finished: None,
                worker: None,
                steps: Vec::new(),
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(RunRecord {
        id: run_id,
        pipeline: run.pipeline.clone(),
        version: run.version,
        source,
        inputs: run.inputs.clone(),
        state: hodei_domain::state::RunState::Pending,
        since: run.at,
        created: run.at,
        started: None,
        finished: None,
        jobs,
    })
}

/// Stores `source` as the next version of pipeline `name`, unless it is the latest's text.
pub(super) async fn put_pipeline(
    conn: &mut SqliteConnection,
    name: &str,
    source: &str,
    at: Timestamp,
) -> Result<PipelineVersion, StoreError> {
    let latest = pipeline(conn, name).await?;
    if let Some(latest) = latest.as_ref().filter(|p| p.source == source) {
        return Ok(latest.clone());
    }
    let version = latest.map_or(1, |p| p.version.saturating_add(1));
    sqlx::query("INSERT INTO pipelines (name, version, source, created) VALUES (?1, ?2, ?3, ?4)")
        .bind(name)
        .bind(version)
        .bind(source)
        .bind(at.0)
        .execute(conn)
        .await
        .map_err(|err| store_error("storing a pipeline", err))?;
    Ok(PipelineVersion {
        name: name.to_owned(),
        version,
        source: source.to_owned(),
        created: at,
    })
}

/// The latest version of pipeline `name`.
pub(super) async fn pipeline(
    conn: &mut SqliteConnection,
    name: &str,
) -> Result<Option<PipelineVersion>, StoreError> {
    let row: Option<(u32, String, i64)> = sqlx::query_as(LATEST_PIPELINE)
        .bind(name)
        .fetch_optional(conn)
        .await
        .map_err(|err| store_error(&format!("pipeline `{name}`"), err))?;
    Ok(row.map(|(version, source, created)| PipelineVersion {
        name: name.to_owned(),
        version,
        source,
        created: Timestamp(created),
    }))
}

/// A run with its jobs in plan order and their steps; call it in a read transaction so that the
/// three reads see one state.
pub(super) async fn run(
    conn: &mut SqliteConnection,
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
         WHERE r.id = ?1",
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
         WHERE run_id = ?1 ORDER BY position",
    )
    .bind(key)
    .fetch_all(&mut *conn)
    .await
    .map_err(fail)?;
    let steps: Vec<StepRow> = sqlx::query_as(
        "SELECT s.job_id, s.job_attempt, s.idx, s.attempt, s.state, s.reason, \
                s.exit_code, s.exit_signal, s.oom_killed, s.since, s.log_offset, s.started \
         FROM jobs j JOIN steps s ON s.job_id = j.id WHERE j.run_id = ?1 \
         ORDER BY s.job_id, s.job_attempt, s.idx, s.attempt",
    )
    .bind(key)
    .fetch_all(&mut *conn)
    .await
    .map_err(fail)?;

    crate::decode::run_record(id, row, jobs, steps).map(Some)
}

/// The runs not in a terminal state, oldest first.
pub(super) async fn unfinished_runs(conn: &mut SqliteConnection) -> Result<Vec<RunId>, StoreError> {
    // The condition is the partial index's, word for word, so that SQLite uses it.
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

/// At most `limit` events numbered after `after`, in order.
pub(super) async fn events(
    conn: &mut SqliteConnection,
    after: u64,
    limit: u32,
) -> Result<Vec<(u64, DomainEvent)>, StoreError> {
    let Ok(after) = i64::try_from(after) else {
        return Ok(Vec::new());
    };
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT seq, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")
            .bind(after)
            .bind(limit)
            .fetch_all(conn)
            .await
            .map_err(|err| store_error("events", err))?;
    decode_events(rows)
}

/// Event rows (`seq`, `body`) read back as numbered domain events.
pub(crate) fn decode_events(
    rows: Vec<(i64, String)>,
) -> Result<Vec<(u64, DomainEvent)>, StoreError> {
    rows.into_iter()
        .map(|(seq, body)| {
            let what = format!("event {seq}");
            let event = serde_json::from_str(&body).map_err(|err| corrupt(&what, err))?;
            Ok((stored_id(&what, seq)?, event))
        })
        .collect()
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|err| corrupt("a value to store", err))
}
