//! The SQL of what starts runs: registered repositories and their webhook deliveries
//! (migration 0005), and the ticks of schedules (0008).

use hodei_domain::ids::{RunId, Timestamp};
use hodei_domain::ports::{Claim, RepositoryRecord, StoreError};
use sqlx::SqliteConnection;

use super::error::{store_error, stored_id};
use crate::decode::{RepoRow, repository_record};

/// A write about repositories, through the store's writer.
#[derive(Debug, Clone)]
pub enum RepoWrite {
    Put(RepositoryRecord),
    Delete(String),
    Claim {
        repo: String,
        id: String,
        at: Timestamp,
    },
    Started {
        repo: String,
        id: String,
        run: RunId,
    },
    /// A schedule's tick: `Done(true)` for the one claimer that inserted it.
    ClaimTick {
        pipeline: String,
        entry: String,
        tick: Timestamp,
        at: Timestamp,
    },
}

/// What a [`RepoWrite`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoWritten {
    /// Put: new; Delete: there was one.
    Done(bool),
    Claimed(Claim),
}

macro_rules! select_repositories {
    ($rest:literal) => {
        concat!(
            "SELECT name, forge, clone_url, pipeline_path, credentials, webhook_secret, status_token, created, status_api FROM repositories ",
            $rest
        )
    };
}

pub(super) async fn write(
    conn: &mut SqliteConnection,
    write: &RepoWrite,
) -> Result<RepoWritten, StoreError> {
    match write {
        RepoWrite::Put(repo) => {
            let what = "registering a repository";
            let existed: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM repositories WHERE name = ?1)")
                    .bind(&repo.name)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|err| store_error(what, err))?;
            sqlx::query(
                "INSERT INTO repositories (name, forge, clone_url, pipeline_path, credentials, webhook_secret, status_token, created, status_api) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (name) DO UPDATE SET \
                 forge = excluded.forge, clone_url = excluded.clone_url, pipeline_path = excluded.pipeline_path, \
                 credentials = excluded.credentials, webhook_secret = excluded.webhook_secret, status_token = excluded.status_token, status_api = excluded.status_api",
            )
            .bind(&repo.name)
            .bind(repo.forge.name())
            .bind(&repo.clone_url)
            .bind(&repo.pipeline_path)
            .bind(&repo.credentials)
            .bind(&repo.webhook_secret)
            .bind(&repo.status_token)
            .bind(repo.created.0)
            .bind(&repo.status_api)
            .execute(conn)
            .await
            .map_err(|err| store_error(what, err))?;
            Ok(RepoWritten::Done(!existed))
        }
        RepoWrite::Delete(name) => {
            let done = sqlx::query("DELETE FROM repositories WHERE name = ?1")
                .bind(name)
                .execute(conn)
                .await
                .map_err(|err| store_error("removing a repository", err))?;
            Ok(RepoWritten::Done(done.rows_affected() == 1))
        }
        RepoWrite::Claim { repo, id, at } => {
            let what = "recording a delivery";
            let inserted = sqlx::query(
                "INSERT INTO deliveries (repository, id, received) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            )
            .bind(repo)
            .bind(id)
            .bind(at.0)
            .execute(&mut *conn)
            .await
            .map_err(|err| store_error(what, err))?;
            if inserted.rows_affected() == 1 {
                return Ok(RepoWritten::Claimed(Claim::New));
            }
            let run: Option<i64> = sqlx::query_scalar(
                "SELECT run_id FROM deliveries WHERE repository = ?1 AND id = ?2",
            )
            .bind(repo)
            .bind(id)
            .fetch_one(conn)
            .await
            .map_err(|err| store_error(what, err))?;
            let run = run
                .map(|id| stored_id("run id", id).map(RunId))
                .transpose()?;
            Ok(RepoWritten::Claimed(Claim::Seen { run }))
        }
        RepoWrite::Started { repo, id, run } => {
            sqlx::query("UPDATE deliveries SET run_id = ?3 WHERE repository = ?1 AND id = ?2")
                .bind(repo)
                .bind(id)
                .bind(i64::try_from(run.0).unwrap_or(i64::MAX))
                .execute(conn)
                .await
                .map_err(|err| store_error("recording a delivery's run", err))?;
            Ok(RepoWritten::Done(true))
        }
        RepoWrite::ClaimTick {
            pipeline,
            entry,
            tick,
            at,
        } => {
            let inserted = sqlx::query(
                "INSERT INTO schedule_ticks (pipeline, entry, tick, claimed) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            )
            .bind(pipeline)
            .bind(entry)
            .bind(tick.0)
            .bind(at.0)
            .execute(conn)
            .await
            .map_err(|err| store_error("claiming a schedule's tick", err))?;
            Ok(RepoWritten::Done(inserted.rows_affected() == 1))
        }
    }
}

pub(super) async fn last_tick(
    conn: &mut SqliteConnection,
    pipeline: &str,
    entry: &str,
) -> Result<Option<Timestamp>, StoreError> {
    let tick: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(tick) FROM schedule_ticks WHERE pipeline = ?1 AND entry = ?2",
    )
    .bind(pipeline)
    .bind(entry)
    .fetch_one(conn)
    .await
    .map_err(|err| store_error("reading a schedule's last tick", err))?;
    Ok(tick.map(Timestamp))
}

pub(super) async fn repository(
    conn: &mut SqliteConnection,
    name: &str,
) -> Result<Option<RepositoryRecord>, StoreError> {
    let row: Option<RepoRow> = sqlx::query_as(select_repositories!("WHERE name = ?1"))
        .bind(name)
        .fetch_optional(conn)
        .await
        .map_err(|err| store_error("reading a repository", err))?;
    row.map(repository_record).transpose()
}

pub(super) async fn repositories(
    conn: &mut SqliteConnection,
) -> Result<Vec<RepositoryRecord>, StoreError> {
    let rows: Vec<RepoRow> = sqlx::query_as(select_repositories!("ORDER BY name"))
        .fetch_all(conn)
        .await
        .map_err(|err| store_error("listing repositories", err))?;
    rows.into_iter().map(repository_record).collect()
}
