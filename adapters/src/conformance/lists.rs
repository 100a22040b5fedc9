//! The API's lists (keyset pages of pipelines, runs and events) and its tokens, for every
//! store.

use hodei_domain::ids::{JobId, RunId, Timestamp};
use hodei_domain::model::Role;
use hodei_domain::plan::RunInputs;
use hodei_domain::ports::{NewRun, NewToken, RunFilter, StoreError};
use hodei_domain::state::{DomainEvent, RunState};

use super::{AnyStore, Backend, conformance};

conformance!(
    pipelines_page_by_name_with_their_latest_version,
    runs_list_newest_first_by_keyset_and_filter,
    a_job_knows_its_run_and_a_run_its_events,
    tokens_are_found_by_digest_listed_until_revoked_and_unique,
);

use super::WEB;

async fn run_of(store: &dyn AnyStore, pipeline: &str, branch: &str, at: i64) -> RunId {
    let version = store
        .put_pipeline(pipeline, WEB, Timestamp(0))
        .await
        .unwrap();
    let record = store
        .create_run(NewRun {
            pipeline: pipeline.into(),
            version: version.version,
            inputs: RunInputs {
                branch: branch.into(),
                ..RunInputs::default()
            },
            jobs: vec!["build".into()],
            at: Timestamp(at),
            opening: None,
        })
        .await
        .unwrap();
    record.id
}

async fn pipelines_page_by_name_with_their_latest_version(backend: Backend) {
    let store = backend.store().await;
    for (name, at) in [("web", 1), ("api", 2), ("docs", 3)] {
        store.put_pipeline(name, WEB, Timestamp(at)).await.unwrap();
    }
    store
        .put_pipeline("web", "name: web\njobs: {}\n", Timestamp(9))
        .await
        .unwrap();
    let first = store.pipelines(None, 2).await.unwrap();
    let names: Vec<&str> = first.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["api", "docs"]);
    let rest = store.pipelines(Some("docs"), 2).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(
        (
            rest[0].name.as_str(),
            rest[0].latest,
            rest[0].created,
            rest[0].updated
        ),
        ("web", 2, Timestamp(1), Timestamp(9))
    );
    let versions = store.pipeline_versions("web").await.unwrap();
    let numbers: Vec<u32> = versions.iter().map(|v| v.version).collect();
    assert_eq!(numbers, [1, 2]);
    assert!(store.pipeline_versions("nope").await.unwrap().is_empty());
}

async fn runs_list_newest_first_by_keyset_and_filter(backend: Backend) {
    let store = backend.store().await;
    let a = run_of(&*store, "web", "main", 1).await;
    let b = run_of(&*store, "api", "main", 2).await;
    let c = run_of(&*store, "web", "dev", 3).await;
    store
        .append(vec![DomainEvent::RunStarted {
            run: c,
            at: Timestamp(4),
        }])
        .await
        .unwrap();
    let all = RunFilter::default();
    let page = store.runs(&all, None, 2).await.unwrap();
    let ids: Vec<RunId> = page.iter().map(|r| r.id).collect();
    assert_eq!(ids, [c, b]);
    let next = store.runs(&all, Some(b), 2).await.unwrap();
    assert_eq!(next.iter().map(|r| r.id).collect::<Vec<_>>(), [a]);

    let web = RunFilter {
        pipeline: Some("web".into()),
        ..RunFilter::default()
    };
    let ids: Vec<RunId> = store
        .runs(&web, None, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [c, a]);
    let main_web = RunFilter {
        branch: Some("main".into()),
        ..web.clone()
    };
    let ids: Vec<RunId> = store
        .runs(&main_web, None, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [a]);
    let running = RunFilter {
        state: Some(RunState::Running),
        ..RunFilter::default()
    };
    let found = store.runs(&running, None, 10).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].id, found[0].state), (c, RunState::Running));
    assert_eq!(found[0].inputs.branch, "dev");
}

async fn a_job_knows_its_run_and_a_run_its_events(backend: Backend) {
    let store = backend.store().await;
    let run = run_of(&*store, "web", "main", 1).await;
    let other = run_of(&*store, "web", "main", 2).await;
    let record = store.run(run).await.unwrap().unwrap();
    let job = record.jobs[0].id;
    assert_eq!(store.job_run(job).await.unwrap(), Some(run));
    assert_eq!(store.job_run(JobId(999)).await.unwrap(), None);
    store
        .append(vec![
            DomainEvent::RunStarted {
                run,
                at: Timestamp(3),
            },
            DomainEvent::RunStarted {
                run: other,
                at: Timestamp(4),
            },
            DomainEvent::RunSucceeded {
                run,
                at: Timestamp(5),
            },
        ])
        .await
        .unwrap();
    let events = store.run_events(run, 0, 10).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|(_, e)| e.kind()).collect();
    assert_eq!(kinds, ["run_started", "run_succeeded"]);
    let after_first = store.run_events(run, events[0].0, 10).await.unwrap();
    assert_eq!(after_first.len(), 1);
}

async fn tokens_are_found_by_digest_listed_until_revoked_and_unique(backend: Backend) {
    let store = backend.store().await;
    assert!(!store.any_token().await.unwrap());
    let new = |name: &str, byte: u8| NewToken {
        name: name.into(),
        role: Role::Operator,
        digest: [byte; 32],
        at: Timestamp(7),
    };
    let ci = store.create_token(new("ci", 1)).await.unwrap();
    let bot = store.create_token(new("bot", 2)).await.unwrap();
    assert!(store.any_token().await.unwrap());
    let found = store.token_by_digest(&[1; 32]).await.unwrap().unwrap();
    assert_eq!(found, ci);
    assert_eq!(store.token_by_digest(&[3; 32]).await.unwrap(), None);
    let twice = store.create_token(new("again", 1)).await.unwrap_err();
    assert!(matches!(twice, StoreError::Conflict { .. }), "{twice:?}");

    assert!(store.revoke_token(ci.id, Timestamp(8)).await.unwrap());
    assert!(!store.revoke_token(ci.id, Timestamp(9)).await.unwrap());
    assert!(!store.revoke_token(12345, Timestamp(9)).await.unwrap());
    let listed = store.tokens().await.unwrap();
    assert_eq!(listed, [bot]);
    let revoked = store.token_by_digest(&[1; 32]).await.unwrap().unwrap();
    assert_eq!(revoked.revoked, Some(Timestamp(8)));
}
