//! What is PostgreSQL's own: its triggers, the doorbell of new log bytes, connections that the
//! server drops. What every store must do is in the conformance suite (`crate::conformance`).

use std::time::Duration;

use hodei_domain::ids::{JobId, Timestamp};
use hodei_domain::ports::{LogStore, Store};
use sqlx::postgres::PgListener;

use super::PgStore;
use super::cluster::TestCluster;
use super::logs::NOTIFY_CHANNEL;
use crate::conformance::{WEB, a, lifecycle, new_run, within};

async fn store() -> (PgStore, String) {
    let url = TestCluster::shared().database();
    let store = within(PgStore::open(&url)).await.expect("the store opens");
    (store, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_table_is_append_only() {
    let (store, _) = store().await;
    let run = new_run(&store, &["build"], 0).await;
    within(store.append(lifecycle(run.id, run.jobs[0].id, a(1), 0)))
        .await
        .unwrap();
    let pool = store.shared.pool.clone();
    let refused = store
        .spawn(async move {
            let update = sqlx::query("UPDATE events SET kind = 'forged'")
                .execute(&pool)
                .await;
            let delete = sqlx::query("DELETE FROM events").execute(&pool).await;
            Ok((update.is_err(), delete.is_err()))
        })
        .await
        .unwrap();
    assert_eq!(refused, (true, true));
    assert_eq!(within(store.events(0, 100)).await.unwrap().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_log_bytes_ring_the_doorbell_with_their_job() {
    let (store, url) = store().await;
    let mut listener = PgListener::connect(&url).await.unwrap();
    listener.listen(NOTIFY_CHANNEL).await.unwrap();
    let logs = store.logs();
    logs.append(JobId(42), b"hello\n").unwrap();
    within(logs.flush(JobId(42))).await.unwrap();
    let rung = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("a notification within 10 s")
        .unwrap();
    assert_eq!((rung.channel(), rung.payload()), (NOTIFY_CHANNEL, "42"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_server_drops_are_replaced_and_nothing_is_lost() {
    let (store, url) = store().await;
    let logs = store.logs();
    within(store.put_pipeline("web", WEB, Timestamp(1)))
        .await
        .unwrap();
    logs.append(JobId(7), b"before\n").unwrap();
    within(logs.flush(JobId(7))).await.unwrap();
    // As a restart of PostgreSQL or a failover would: every connection of this database ends.
    let name = url.rsplit('/').next().unwrap().to_owned();
    TestCluster::shared()
        .psql(
            &TestCluster::shared().url("postgres"),
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            ),
        )
        .unwrap();
    // The next calls may see the broken connections once; within a few tries all is well.
    let mut tries = 0;
    let pipeline = loop {
        tries += 1;
        match within(store.pipeline("web")).await {
            Ok(pipeline) => break pipeline,
            Err(err) => {
                assert!(err.is_retryable(), "{err}");
                assert!(tries < 20, "the store never came back: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(pipeline.unwrap().version, 1);
    logs.append(JobId(7), b"after\n").unwrap();
    assert_eq!(within(logs.flush(JobId(7))).await.unwrap(), 13);
    assert_eq!(
        within(logs.read(JobId(7), 0, None)).await.unwrap(),
        b"before\nafter\n"
    );
}
