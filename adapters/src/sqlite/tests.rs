//! What is the SQLite store's own: in-memory databases, files that are not databases, the
//! writer's batches, SQLite's query plans and triggers. What every store must do is in the
//! conformance suite (`crate::conformance`), run against this store too.

use hodei_domain::ids::{JobId, Timestamp};
use hodei_domain::ports::{NewRun, Store, StoreError};

use tokio::sync::oneshot;

use super::writer::{self, Command, Request};
use super::{SqliteStore, queries, schema};
use crate::conformance::{WEB, a, inputs, lifecycle, new_run, within};

#[tokio::test]
async fn instance_ids_tell_databases_apart() {
    let dir = tempfile::tempdir().unwrap();
    let one = SqliteStore::open(&dir.path().join("one.db")).await.unwrap();
    let two = SqliteStore::open(&dir.path().join("two.db")).await.unwrap();
    let memory = SqliteStore::memory().await.unwrap();
    let another = SqliteStore::memory().await.unwrap();
    let ids = [
        one.instance_id(),
        two.instance_id(),
        memory.instance_id(),
        another.instance_id(),
    ];
    for (i, id) in ids.iter().enumerate() {
        assert!(!id.is_empty());
        assert!(!ids[i + 1..].contains(id), "{id} is not unique: {ids:?}");
    }
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Corrupt { .. } | StoreError::Unavailable { .. }
        ),
        "{err:?}"
    );
    let err = SqliteStore::open(dir.path()).await.unwrap_err();
    assert!(err.is_retryable(), "a directory cannot be opened: {err:?}");
}

#[tokio::test]
async fn the_events_table_is_append_only() {
    let store = SqliteStore::memory().await.unwrap();
    let run = new_run(&store, &["build"], 0).await;
    within(store.append(lifecycle(run.id, run.jobs[0].id, a(1), 0)))
        .await
        .unwrap();
    let mut conn = store.reads.acquire().await.unwrap();
    let update = sqlx::query("UPDATE events SET kind = 'forged'")
        .execute(&mut *conn)
        .await;
    assert!(update.is_err());
    let delete = sqlx::query("DELETE FROM events").execute(&mut *conn).await;
    assert!(delete.is_err());
}

#[tokio::test]
async fn projection_batches_use_the_primary_keys() {
    // UPDATE ... FROM json_each must look rows up by key, not scan the tables.
    let store = SqliteStore::memory().await.unwrap();
    let mut conn = store.reads.acquire().await.unwrap();
    for sql in super::queries::PROJECTION_UPDATES {
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                .bind("[]")
                .bind("[]")
                .bind("[]")
                .bind("[]")
                .bind("[]")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        let details: Vec<_> = plan.into_iter().map(|row| row.3).collect();
        assert!(
            details
                .iter()
                .any(|d| d.contains("INTEGER PRIMARY KEY") || d.contains("rowid")),
            "{sql}: {details:?}"
        );
        assert!(
            !details
                .iter()
                .any(|d| d.starts_with("SCAN jobs") || d.starts_with("SCAN runs")),
            "{sql}: {details:?}"
        );
    }
}

#[tokio::test]
async fn in_one_batch_a_bad_append_fails_its_caller_and_the_others_commit() {
    let pools = schema::open_memory().await.unwrap();
    let run = {
        let mut conn = pools.write.acquire().await.unwrap();
        queries::put_pipeline(&mut conn, "web", WEB, Timestamp(0))
            .await
            .unwrap();
        let new = NewRun {
            pipeline: "web".into(),
            version: 1,
            inputs: inputs(),
            jobs: vec!["a".into(), "b".into()],
            at: Timestamp(0),
            opening: None,
        };
        queries::create_run(&mut conn, &new).await.unwrap()
    };
    let first = lifecycle(run.id, run.jobs[0].id, a(1), 0);
    let bad = lifecycle(run.id, JobId(4_242), a(1), 0);
    let last = lifecycle(run.id, run.jobs[1].id, a(1), 0);
    let (mut batch, mut answers) = (Vec::new(), Vec::new());
    for events in [first.clone(), bad, last.clone()] {
        let (reply, answer) = oneshot::channel();
        batch.push(Command::Append(Request::new(events, reply)));
        answers.push(answer);
    }
    let commit = within(writer::write(&pools.write, &mut batch)).await;
    for command in batch {
        command.answer(&commit);
    }
    let results: Vec<_> = futures_results(answers).await;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(
        matches!(&results[1], Err(StoreError::NotFound { what }) if what == "job-4242"),
        "{results:?}"
    );
    let mut conn = pools.read.acquire().await.unwrap();
    let stored = queries::events(&mut conn, 0, 100).await.unwrap();
    let expected: Vec<_> = first.into_iter().chain(last).collect();
    let events: Vec<_> = stored.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(events, expected);
    let numbers: Vec<u64> = stored.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, (1..=12).collect::<Vec<u64>>());
}

async fn futures_results(
    answers: Vec<oneshot::Receiver<Result<(), StoreError>>>,
) -> Vec<Result<(), StoreError>> {
    let mut results = Vec::new();
    for answer in answers {
        results.push(within(answer).await.expect("every caller is answered"));
    }
    results
}

#[tokio::test]
async fn a_store_that_cannot_open_keeps_the_error_underneath_as_its_source() {
    // A regular file where the database's folder should be: the folder cannot be made.
    let dir = std::env::temp_dir().join(format!("hodei-cause-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("not-a-folder");
    std::fs::write(&file, b"x").unwrap();
    let err = match SqliteStore::open(&file.join("sub").join("hodei.db")).await {
        Ok(_) => panic!("a database under a file opened"),
        Err(err) => err,
    };
    let source = std::error::Error::source(&err).expect("the cause is kept");
    assert!(source.to_string().contains("Not a directory"), "{source}");
    assert!(err.to_string().contains("cannot create"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_database_of_a_newer_hodei_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hodei.db");
    drop(SqliteStore::open(&path).await.unwrap());
    {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display()))
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
             execution_time) VALUES (99990101000000, 'from the future', 1, x'00', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let before = std::fs::read(&path).unwrap();
    let err = SqliteStore::open(&path).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("migration 99990101000000, newer than this Hodei knows"),
        "{text}"
    );
    assert!(text.contains("hodei.db"), "names the database: {text}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing was changed");
}

#[tokio::test]
async fn a_database_from_before_stored_times_gets_them_from_its_events() {
    // A database at the schema before times were kept in the projections (migration 9),
    // holding a finished run whose times are only in its events.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        let mut before = sqlx::migrate::Migrator {
            migrations: schema::MIGRATOR.migrations.clone(),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        let earlier: Vec<_> = before
            .migrations
            .iter()
            .filter(|m| m.version <= 9)
            .cloned()
            .collect();
        assert_eq!(earlier.len(), 9);
        before.migrations = earlier.into();
        before.run(&pool).await.unwrap();
        let inputs = serde_json::to_string(&inputs()).unwrap();
        for sql in [
            "INSERT INTO pipelines (name, version, source, created) VALUES ('web', 1, 'x', 0)",
            "INSERT INTO runs (id, pipeline, version, inputs, state, since, created) \
             VALUES (1, 'web', 1, ?1, 'succeeded', 16, 0)",
            "INSERT INTO jobs (id, run_id, position, name, state, worker, attempt, since) \
             VALUES (5, 1, 0, 'build', 'succeeded', 'local', 1, 15)",
            "INSERT INTO steps (job_id, job_attempt, idx, attempt, state, exit_code, oom_killed, \
             since, log_offset) VALUES (5, 1, 0, 1, 'succeeded', 0, 0, 14, 7)",
        ] {
            sqlx::query(sql).bind(&inputs).execute(&pool).await.unwrap();
        }
        let mut events = lifecycle(hodei_domain::ids::RunId(1), JobId(5), a(1), 10);
        events.push(hodei_domain::state::DomainEvent::RunSucceeded {
            run: hodei_domain::ids::RunId(1),
            at: Timestamp(16),
        });
        for event in &events {
            sqlx::query(
                "INSERT INTO events (run_id, job_id, kind, at, body) VALUES (1, ?1, ?2, ?3, ?4)",
            )
            .bind(event.job_id().map(|job| job.0 as i64))
            .bind(event.kind())
            .bind(event.at().0)
            .bind(serde_json::to_string(event).unwrap())
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let record = within(store.run(hodei_domain::ids::RunId(1)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (record.started, record.finished),
        (Some(Timestamp(12)), Some(Timestamp(16)))
    );
    let job = &record.jobs[0];
    assert_eq!(
        (job.started, job.finished),
        (Some(Timestamp(12)), Some(Timestamp(15)))
    );
    assert_eq!(job.steps[0].started, Some(Timestamp(13)));
}

#[tokio::test]
async fn the_wal_is_checkpointed_beside_the_writer_not_by_its_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hodei.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let wal = dir.path().join("hodei.db-wal");
    // The writer's commits never checkpoint.
    let pools = schema::open_file(&path).await.unwrap();
    let autocheckpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(&pools.write)
        .await
        .unwrap();
    assert_eq!(autocheckpoint, 0);
    drop(pools);
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let before = size(&path);
    // Several megabytes of events: well past the 1,000 pages at which a commit would have
    // checkpointed.
    let run = new_run(&store, &["a"], 0).await;
    for i in 0..400 {
        let events = (0..50)
            .flat_map(|j| lifecycle(run.id, run.jobs[0].id, a(1), i * 1_000 + j * 10))
            .collect();
        within(store.append(events)).await.unwrap();
    }
    // The checkpointer copies them into the database file.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while size(&path) < before + 2_000_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the WAL was never checkpointed: database {} bytes, WAL {} bytes",
            size(&path),
            size(&wal)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
