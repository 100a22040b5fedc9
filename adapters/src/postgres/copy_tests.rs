//! `copy_store` from a real SQLite database and log directory into a database of the test
//! binary's PostgreSQL cluster: everything read back through the ports is the same.

use std::sync::Arc;

use hodei_domain::ids::{JobId, Timestamp};
use hodei_domain::model::Role;
use hodei_domain::ports::{
    AgentStore, LogStore, NewAgent, NewAgentToken, NewRun, NewToken, RepoStore, RepositoryRecord,
    SecretScope, Store, TickStore, TokenStore,
};
use hodei_domain::state::DomainEvent;

use super::PgStore;
use super::cluster::TestCluster;
use super::copy::{CopyError, copy_store};
use crate::conformance::{WEB, a, inputs, lifecycle, within};
use crate::logs::FileLogStore;
use crate::secrets::{SealedRows, SealedSecret};
use crate::sqlite::SqliteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_database_moves_to_postgres_whole_and_an_occupied_target_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hodei.db");
    let logs_dir = dir.path().join("logs");
    let source = SqliteStore::open(&db).await.unwrap();
    source.put_pipeline("web", WEB, Timestamp(1)).await.unwrap();
    let run = source
        .create_run(NewRun {
            pipeline: "web".into(),
            version: 1,
            inputs: inputs(),
            jobs: vec!["build".into(), "test".into()],
            at: Timestamp(2),
            opening: None,
        })
        .await
        .unwrap();
    let mut events = vec![DomainEvent::RunStarted {
        run: run.id,
        at: Timestamp(3),
    }];
    events.extend(lifecycle(run.id, run.jobs[0].id, a(1), 4));
    source.append(events).await.unwrap();
    source
        .create_token(NewToken {
            name: "ci".into(),
            role: Role::Operator,
            digest: [7; 32],
            at: Timestamp(5),
        })
        .await
        .unwrap();
    source
        .create_agent_token(NewAgentToken {
            name: "builders".into(),
            digest: [8; 32],
            labels: None,
            expires: None,
            at: Timestamp(6),
        })
        .await
        .unwrap();
    source
        .register_agent(NewAgent {
            name: "one".into(),
            digest: [9; 32],
            labels: vec!["linux".parse().unwrap()],
            token: [8; 32],
            at: Timestamp(7),
        })
        .await
        .unwrap();
    source
        .claim(run.jobs[1].id, run.id, a(1), "one".into(), 0, [5; 32])
        .await
        .unwrap();
    let scope = SecretScope::Pipeline("web".into());
    source
        .put_sealed(SealedSecret {
            scope: scope.clone(),
            name: "TOKEN".into(),
            nonce: vec![1; 24],
            sealed: vec![2, 0, 255],
            at: Timestamp(8),
        })
        .await
        .unwrap();
    let repo = RepositoryRecord {
        name: "app".into(),
        forge: hodei_domain::forge::Forge::GitHub,
        clone_url: "https://forge.example/app.git".into(),
        pipeline_path: ".hodei.yml".into(),
        credentials: None,
        webhook_secret: "HOOK".into(),
        status_token: Some("STATUS".into()),
        status_api: None,
        created: Timestamp(9),
    };
    source.put_repository(&repo).await.unwrap();
    source
        .claim_delivery("app", "d-1", Timestamp(10))
        .await
        .unwrap();
    source
        .claim_tick("web", "@daily", Timestamp(86_400_000), Timestamp(11))
        .await
        .unwrap();
    let log: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    {
        let logs = FileLogStore::open(&logs_dir, 1).unwrap();
        logs.append(run.jobs[0].id, &log).unwrap();
        logs.append(run.jobs[1].id, b"second\n").unwrap();
        within(logs.flush(run.jobs[0].id)).await.unwrap();
        within(logs.flush(run.jobs[1].id)).await.unwrap();
    }
    let instance = source.instance_id().to_owned();
    let before = (
        source.run(run.id).await.unwrap(),
        source.events(0, 100).await.unwrap(),
        source.tokens().await.unwrap(),
        source.agents().await.unwrap(),
        source.leases().await.unwrap(),
    );
    drop(source);

    let url = TestCluster::shared().database();
    let report = within(copy_store(&db, &logs_dir, &url)).await.unwrap();
    let rows = |table: &str| report.tables.iter().find(|t| t.0 == table).unwrap().1;
    assert_eq!((rows("runs"), rows("jobs"), rows("events")), (1, 2, 7));
    assert_eq!((report.logs, report.log_bytes), (2, 3_000_007));

    let target = PgStore::open(&url).await.unwrap();
    assert_eq!(target.instance_id(), instance, "the same store, moved");
    let after = (
        target.run(run.id).await.unwrap(),
        target.events(0, 100).await.unwrap(),
        target.tokens().await.unwrap(),
        target.agents().await.unwrap(),
        target.leases().await.unwrap(),
    );
    assert_eq!(after, before);
    assert_eq!(
        target.sealed(&scope, "TOKEN").await.unwrap(),
        Some((vec![1; 24], vec![2, 0, 255]))
    );
    assert_eq!(target.repository("app").await.unwrap(), Some(repo));
    assert_eq!(
        target
            .claim_delivery("app", "d-1", Timestamp(12))
            .await
            .unwrap(),
        hodei_domain::ports::Claim::Seen { run: None }
    );
    assert_eq!(
        target.last_tick("web", "@daily").await.unwrap(),
        Some(Timestamp(86_400_000))
    );
    let logs: Arc<dyn LogStore> = Arc::new(target.logs());
    assert_eq!(logs.len(run.jobs[0].id).unwrap(), log.len() as u64);
    assert_eq!(
        within(logs.read(run.jobs[0].id, 0, None)).await.unwrap(),
        log
    );
    assert_eq!(
        within(logs.read(run.jobs[1].id, 0, None)).await.unwrap(),
        b"second\n"
    );
    // Ids go on after the copied ones.
    let next = target
        .create_run(NewRun {
            pipeline: "web".into(),
            version: 1,
            inputs: inputs(),
            jobs: vec!["build".into()],
            at: Timestamp(20),
            opening: None,
        })
        .await
        .unwrap();
    assert!(next.id > run.id && next.jobs[0].id > JobId(run.jobs[1].id.0));
    drop((logs, target));

    // A second copy into the same database is refused, and changes nothing.
    let err = within(copy_store(&db, &logs_dir, &url)).await.unwrap_err();
    assert!(matches!(err, CopyError::NotEmpty { .. }), "{err}");
    assert!(err.to_string().contains("not empty"), "{err}");
}
