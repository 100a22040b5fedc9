//! The SQL of the API's lists: pipelines and their versions, runs by filter, a job's run and a
//! run's events. Every list pages by keyset (a name, an id or an event number), never by offset,
//! so that a page costs the same at any depth and a concurrent insert never shifts it.

use hodei_domain::ids::{JobId, RunId, Timestamp};
use hodei_domain::ports::{
    PipelineSummary, PipelineVersion, RunFilter, RunSummary, StoreError, VersionStamp,
};
use hodei_domain::state::DomainEvent;
use sqlx::{AssertSqlSafe, SqliteConnection};

use super::error::{store_error, stored_id};
use crate::decode::{SummaryRow, run_summary};

/// Pipelines in name order after `after`, at most `limit`, each with its latest version.
pub(super) async fn pipelines(
    conn: &mut SqliteConnection,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<PipelineSummary>, StoreError> {
    let rows: Vec<(String, u32, i64, i64)> = sqlx::query_as(
        "SELECT name, max(version), min(created), max(created) FROM pipelines \
         WHERE ?1 IS NULL OR name > ?1 GROUP BY name ORDER BY name LIMIT ?2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(|err| store_error("listing pipelines", err))?;
    Ok(rows
        .into_iter()
        .map(|(name, latest, created, updated)| PipelineSummary {
            name,
            latest,
            created: Timestamp(created),
            updated: Timestamp(updated),
        })
        .collect())
}

/// Version `version` of pipeline `name`, with its text.
pub(super) async fn pipeline_version(
    conn: &mut SqliteConnection,
    name: &str,
    version: u32,
) -> Result<Option<PipelineVersion>, StoreError> {
    let row: Option<(String, i64)> =
        sqlx::query_as("SELECT source, created FROM pipelines WHERE name = ?1 AND version = ?2")
            .bind(name)
            .bind(version)
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
    conn: &mut SqliteConnection,
    name: &str,
) -> Result<Vec<VersionStamp>, StoreError> {
    let rows: Vec<(u32, i64)> =
        sqlx::query_as("SELECT version, created FROM pipelines WHERE name = ?1 ORDER BY version")
            .bind(name)
            .fetch_all(conn)
            .await
            .map_err(|err| store_error(&format!("versions of pipeline `{name}`"), err))?;
    Ok(rows
        .into_iter()
        .map(|(version, created)| VersionStamp {
            version,
            created: Timestamp(created),
        })
        .collect())
}

/// Runs matching `filter`, newest first, with an id below `before`, at most `limit`.
pub(super) async fn runs(
    conn: &mut SqliteConnection,
    filter: &RunFilter,
    before: Option<RunId>,
    limit: u32,
) -> Result<Vec<RunSummary>, StoreError> {
    let before = before.map(|id| i64::try_from(id.0).unwrap_or(i64::MAX));
    // Only fixed fragments go into the text; every value is a bound parameter.
    let mut sql = String::from(
        "SELECT id, pipeline, version, inputs, state, since, created FROM runs WHERE true",
    );
    if filter.state.is_some() {
        sql.push_str(" AND state = ?");
    }
    if filter.pipeline.is_some() {
        sql.push_str(" AND pipeline = ?");
    }
    if filter.branch.is_some() {
        sql.push_str(" AND inputs ->> 'branch' = ?");
    }
    if before.is_some() {
        sql.push_str(" AND id < ?");
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
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
        .bind(limit)
        .fetch_all(conn)
        .await
        .map_err(|err| store_error("listing runs", err))?;
    rows.into_iter().map(run_summary).collect()
}

/// The run job `job` belongs to.
pub(super) async fn job_run(
    conn: &mut SqliteConnection,
    job: JobId,
) -> Result<Option<RunId>, StoreError> {
    let Ok(key) = i64::try_from(job.0) else {
        return Ok(None);
    };
    let run: Option<i64> = sqlx::query_scalar("SELECT run_id FROM jobs WHERE id = ?1")
        .bind(key)
        .fetch_optional(conn)
        .await
        .map_err(|err| store_error(&job.to_string(), err))?;
    run.map(|id| stored_id("run id", id).map(RunId)).transpose()
}

/// At most `limit` events of run `run` numbered after `after`, in order.
pub(super) async fn run_events(
    conn: &mut SqliteConnection,
    run: RunId,
    after: u64,
    limit: u32,
) -> Result<Vec<(u64, DomainEvent)>, StoreError> {
    let (Ok(key), Ok(after)) = (i64::try_from(run.0), i64::try_from(after)) else {
        return Ok(Vec::new());
    };
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT seq, body FROM events WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )
    .bind(key)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(|err| store_error(&format!("events of {run}"), err))?;
    super::queries::decode_events(rows)
}
