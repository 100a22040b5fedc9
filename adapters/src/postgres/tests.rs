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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_a_deposed_leaders_writes_fail() {
    use super::{Lead, Renewal};
    let (first, url) = store().await;
    let second = within(PgStore::open(&url)).await.unwrap();
    let lease = Duration::from_millis(600);
    let Lead::Led { epoch: one } = within(first.try_lead("a-1", "http://a:1", lease))
        .await
        .unwrap()
    else {
        panic!("the first replica leads a fresh database");
    };
    // The lease holds the other one off, and is renewed.
    let held = within(second.try_lead("b-1", "http://b:1", lease))
        .await
        .unwrap();
    assert!(matches!(&held, Lead::Held(info) if info.holder == "a-1" && info.epoch == one));
    let (deposed, heard) = std::sync::mpsc::channel();
    first.fence(one, move |now| deposed.send(now).unwrap());
    assert_eq!(
        within(first.renew("a-1", one, lease)).await.unwrap(),
        Renewal::Renewed
    );
    let run = new_run(&first, &["build"], 0).await;
    first
        .logs()
        .append(run.jobs[0].id, b"written while leading\n")
        .unwrap();
    within(first.logs().flush(run.jobs[0].id)).await.unwrap();

    // The leader stops renewing (a pause, a partition): its lease runs out, the other takes
    // over with a higher epoch.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let Lead::Led { epoch: two } = within(second.try_lead("b-1", "http://b:1", lease))
        .await
        .unwrap()
    else {
        panic!("an expired lease is taken over");
    };
    assert!(two > one);
    assert_eq!(
        within(second.leader()).await.unwrap().map(|l| l.holder),
        Some("b-1".to_owned())
    );

    // Every write of the deposed leader fails: events, runs, log bytes; it is told once.
    let events = within(first.append(lifecycle(run.id, run.jobs[0].id, a(1), 0))).await;
    let err = events.expect_err("a deposed leader's events are refused");
    assert!(err.to_string().contains("no longer leads"), "{err}");
    assert_eq!(heard.recv_timeout(Duration::from_secs(5)).unwrap(), two);
    assert!(first.is_deposed());
    assert!(
        within(first.put_pipeline("late", WEB, Timestamp(2)))
            .await
            .is_err()
    );
    let logs = first.logs();
    let job = run.jobs[0].id;
    let _ = logs.append(job, b"written after the takeover\n");
    assert!(within(logs.flush(job)).await.is_err(), "its log bytes fail");
    assert!(matches!(
        within(first.renew("a-1", one, lease)).await.unwrap(),
        Renewal::Deposed { by } if by.holder == "b-1" && by.epoch == two
    ));
    // Nothing of it reached the database; the new leader's writes go through.
    let stored = within(second.read_committed(job, 0, 1 << 20))
        .await
        .unwrap();
    assert_eq!(stored, b"written while leading\n");
    assert!(within(second.pipeline("late")).await.unwrap().is_none());
    second.fence(two, |_| panic!("the new leader is not deposed"));
    within(second.append(lifecycle(run.id, job, a(1), 0)))
        .await
        .expect("the new leader writes");

    // A clean stop hands the leadership over at once, and a renewal still in flight when the
    // replica stopped, landing after it, does not bring the lease back.
    within(second.resign("b-1", two)).await.unwrap();
    assert!(matches!(
        within(second.renew("b-1", two, lease)).await.unwrap(),
        Renewal::Deposed { .. }
    ));
    assert_eq!(within(second.leader()).await.unwrap(), None);
    assert!(matches!(
        within(first.try_lead("a-2", "http://a:1", lease)).await.unwrap(),
        Lead::Led { epoch } if epoch > two
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_takes_its_earlier_lifes_lease_at_once() {
    use super::Lead;
    let (first, url) = store().await;
    let lease = Duration::from_secs(60);
    assert!(matches!(
        within(first.try_lead("node-1-aaaa", "http://node-1:8080", lease))
            .await
            .unwrap(),
        Lead::Led { .. }
    ));
    let restarted = within(PgStore::open(&url)).await.unwrap();
    // Another node, or the same node at another address, waits for the lease.
    assert!(matches!(
        within(restarted.try_lead("node-2-bbbb", "http://node-2:8080", lease))
            .await
            .unwrap(),
        Lead::Held(_)
    ));
    assert!(matches!(
        within(restarted.try_lead("node-1-bbbb", "http://node-1:9090", lease))
            .await
            .unwrap(),
        Lead::Held(_)
    ));
    // The same node at the same address is its next life.
    assert!(matches!(
        within(restarted.try_lead("node-1-bbbb", "http://node-1:8080", lease))
            .await
            .unwrap(),
        Lead::Led { epoch: 2 }
    ));
}
