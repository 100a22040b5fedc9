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
