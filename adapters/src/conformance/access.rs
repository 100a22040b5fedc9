//! Agents and what starts runs, on every store: registration tokens and agents, the leases of
//! job attempts and their fenced reports (also from concurrent callers, and with a report that
//! fails as a whole), repositories and their webhook deliveries.

use hodei_domain::forge::Forge;
use hodei_domain::ids::{JobId, RunId, Timestamp};
use hodei_domain::model::Label;
use hodei_domain::ports::{
    Claim, Fenced, NewAgent, NewAgentToken, Registration, RepositoryRecord, StoreError,
};

use super::{Backend, a, conformance, lifecycle, new_run, reload, within};

conformance!(
    registration_tokens_register_agents_until_revoked_or_expired,
    leases_fence_reports_by_epoch_and_sequence,
    a_report_that_fails_changes_neither_the_lease_nor_the_events,
    concurrent_reports_of_one_batch_are_taken_once,
    repositories_are_replaced_by_name_and_deliveries_claimed_once,
);

fn label(name: &str) -> Label {
    name.parse().expect("a valid label")
}

fn digest(n: u8) -> [u8; 32] {
    [n; 32]
}

fn agent(name: &str, token: u8, credential: u8, at: i64) -> NewAgent {
    NewAgent {
        name: name.into(),
        digest: digest(credential),
        labels: vec![label("linux")],
        token: digest(token),
        at: Timestamp(at),
    }
}

async fn registration_tokens_register_agents_until_revoked_or_expired(backend: Backend) {
    let store = backend.store().await;
    let free = within(store.create_agent_token(NewAgentToken {
        name: "builders".into(),
        digest: digest(1),
        labels: None,
        expires: None,
        at: Timestamp(1),
    }))
    .await
    .unwrap();
    let fixed = within(store.create_agent_token(NewAgentToken {
        name: "arm".into(),
        digest: digest(2),
        labels: Some(vec![label("arm64")]),
        expires: Some(Timestamp(100)),
        at: Timestamp(2),
    }))
    .await
    .unwrap();
    assert_ne!(free.id, fixed.id);
    let tokens = within(store.agent_tokens()).await.unwrap();
    assert_eq!(tokens, [free.clone(), fixed.clone()], "oldest first");

    let (registered, one) = within(store.register_agent(agent("one", 1, 11, 5)))
        .await
        .unwrap();
    assert_eq!(registered, Registration::Registered);
    let one = one.unwrap();
    assert_eq!(
        (one.labels.clone(), one.fixed_labels),
        (vec![label("linux")], false)
    );
    let (_, two) = within(store.register_agent(agent("two", 2, 12, 6)))
        .await
        .unwrap();
    let two = two.unwrap();
    assert_eq!(
        (two.labels.clone(), two.fixed_labels),
        (vec![label("arm64")], true)
    );
    let refused = [
        (agent("one", 1, 13, 7), Registration::NameTaken),
        (agent("three", 9, 14, 7), Registration::UnknownToken),
        (agent("three", 2, 15, 100), Registration::ExpiredToken),
    ];
    for (new, expected) in refused {
        let (registration, record) = within(store.register_agent(new)).await.unwrap();
        assert_eq!((registration, record), (expected, None));
    }
    assert_eq!(
        within(store.agent_by_digest(&digest(12))).await.unwrap(),
        Some(two.clone())
    );
    assert_eq!(
        within(store.agent_by_digest(&digest(99))).await.unwrap(),
        None
    );

    assert!(
        within(store.revoke_agent_token(free.id, Timestamp(8)))
            .await
            .unwrap()
    );
    assert!(
        !within(store.revoke_agent_token(free.id, Timestamp(9)))
            .await
            .unwrap()
    );
    assert!(
        !within(store.revoke_agent_token(u64::MAX, Timestamp(9)))
            .await
            .unwrap()
    );
    // The same secret again, revoked or valid: refused, and what is stored stays as it is.
    for secret in [1, 2] {
        let again = within(store.create_agent_token(NewAgentToken {
            name: "again".into(),
            digest: digest(secret),
            labels: None,
            expires: None,
            at: Timestamp(10),
        }))
        .await;
        assert!(
            matches!(again, Err(StoreError::Conflict { .. })),
            "{again:?}"
        );
    }
    assert_eq!(within(store.agent_tokens()).await.unwrap(), [fixed]);
    let (registration, _) = within(store.register_agent(agent("four", 1, 16, 10)))
        .await
        .unwrap();
    assert_eq!(registration, Registration::UnknownToken, "a revoked token");
    assert_eq!(
        within(store.agents()).await.unwrap(),
        [one.clone(), two],
        "agents registered before a revocation stay"
    );
    assert!(within(store.delete_agent("one")).await.unwrap());
    assert!(!within(store.delete_agent("one")).await.unwrap());
    assert_eq!(
        within(store.agent_by_digest(&digest(11))).await.unwrap(),
        None
    );
}

async fn leases_fence_reports_by_epoch_and_sequence(backend: Backend) {
    let store = backend.store().await;
    let run = new_run(&*store, &["build"], 0).await;
    let job = run.jobs[0].id;
    let events = lifecycle(run.id, job, a(1), 10);
    let first = within(store.claim(job, run.id, a(1), "one".into(), 0, digest(31)))
        .await
        .unwrap();
    assert_eq!((first.epoch, first.next_seq, first.log_base), (1, 0, 0));
    assert_eq!(first.token, digest(31), "the job token's digest is kept");
    assert_eq!(
        within(store.leases()).await.unwrap(),
        std::slice::from_ref(&first)
    );
    let report =
        |epoch, seq, events: &[_], end| store.report(job, epoch, seq, events.to_vec(), end);
    assert_eq!(
        within(report(1, 0, &events[..1], false)).await.unwrap(),
        Fenced::Done
    );
    assert_eq!(
        within(report(1, 0, &events[..1], false)).await.unwrap(),
        Fenced::Duplicate
    );
    assert_eq!(
        within(report(1, 2, &events[1..2], false)).await.unwrap(),
        Fenced::Gap { expected: 1 }
    );
    // Claimed again (the agent was lost): the old epoch is deposed.
    let second = within(store.claim(job, run.id, a(1), "two".into(), 40, digest(32)))
        .await
        .unwrap();
    assert_eq!((second.epoch, second.next_seq, second.log_base), (2, 0, 40));
    assert_eq!(second.token, digest(32), "a new claim, a new token");
    assert_eq!(
        within(report(1, 1, &events[1..2], false)).await.unwrap(),
        Fenced::Stale
    );
    assert_eq!(
        within(report(2, 0, &events[1..], true)).await.unwrap(),
        Fenced::Done
    );
    assert!(within(store.leases()).await.unwrap().is_empty(), "ended");
    assert_eq!(
        within(report(2, 1, &[], false)).await.unwrap(),
        Fenced::Stale,
        "a lease that ended takes nothing"
    );
    assert!(!within(store.end_lease(job, 2, Vec::new())).await.unwrap());
    let record = reload(&*store, run.id).await;
    assert_eq!(record.jobs[0].state, lifecycle_end_state());
    let stored = within(store.events(0, 100)).await.unwrap();
    assert_eq!(stored.len(), events.len(), "each event once");

    // A third claim and the server ending it (the agent gave up).
    let third = within(store.claim(job, run.id, a(2), "one".into(), 80, digest(33)))
        .await
        .unwrap();
    assert_eq!(third.epoch, 3, "epochs only grow");
    let ended = vec![hodei_domain::state::DomainEvent::RunSucceeded {
        run: run.id,
        at: Timestamp(99),
    }];
    assert!(
        !within(store.end_lease(job, 2, ended.clone()))
            .await
            .unwrap()
    );
    assert!(within(store.end_lease(job, 3, ended)).await.unwrap());
    assert_eq!(
        within(store.events(0, 100)).await.unwrap().len(),
        events.len() + 1
    );
    assert!(within(store.leases()).await.unwrap().is_empty());
}

fn lifecycle_end_state() -> hodei_domain::state::JobState {
    hodei_domain::state::JobState::Succeeded
}

async fn a_report_that_fails_changes_neither_the_lease_nor_the_events(backend: Backend) {
    let store = backend.store().await;
    let run = new_run(&*store, &["build"], 0).await;
    let job = run.jobs[0].id;
    within(store.claim(job, run.id, a(1), "one".into(), 0, digest(31)))
        .await
        .unwrap();
    let mut events = lifecycle(run.id, job, a(1), 10);
    events.push(lifecycle(run.id, JobId(4_242), a(1), 20).remove(0));
    let err = within(store.report(job, 1, 0, events.clone(), true))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    let lease = within(store.leases()).await.unwrap();
    assert_eq!(
        (lease.len(), lease[0].next_seq),
        (1, 0),
        "the lease is as it was"
    );
    assert!(within(store.events(0, 100)).await.unwrap().is_empty());
    events.pop();
    assert_eq!(
        within(store.report(job, 1, 0, events, true)).await.unwrap(),
        Fenced::Done,
        "the same batch, corrected, is taken"
    );
}

async fn concurrent_reports_of_one_batch_are_taken_once(backend: Backend) {
    let store = backend.store().await;
    let run = new_run(&*store, &["build"], 0).await;
    let job = run.jobs[0].id;
    within(store.claim(job, run.id, a(1), "one".into(), 0, digest(31)))
        .await
        .unwrap();
    let events = lifecycle(run.id, job, a(1), 10);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, events) = (store.clone(), events.clone());
            tokio::spawn(async move { store.report(job, 1, 0, events, false).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(within(task).await.unwrap().unwrap());
    }
    assert_eq!(answers.iter().filter(|f| **f == Fenced::Done).count(), 1);
    assert!(
        answers
            .iter()
            .all(|f| matches!(f, Fenced::Done | Fenced::Duplicate))
    );
    assert_eq!(
        within(store.events(0, 100)).await.unwrap().len(),
        events.len()
    );
}

fn repository(name: &str, url: &str) -> RepositoryRecord {
    RepositoryRecord {
        name: name.into(),
        forge: Forge::Gitea,
        clone_url: url.into(),
        pipeline_path: ".hodei.yml".into(),
        credentials: Some("GIT_TOKEN".into()),
        webhook_secret: "HOOK".into(),
        status_token: None,
        status_api: Some("https://forge.example/api/v1".into()),
        created: Timestamp(3),
    }
}

async fn repositories_are_replaced_by_name_and_deliveries_claimed_once(backend: Backend) {
    let store = backend.store().await;
    let app = repository("app", "https://forge.example/app.git");
    assert!(within(store.put_repository(&app)).await.unwrap());
    let moved = repository("app", "https://forge.example/moved.git");
    assert!(!within(store.put_repository(&moved)).await.unwrap());
    let lib = repository("lib", "/srv/git/lib");
    assert!(within(store.put_repository(&lib)).await.unwrap());
    assert_eq!(
        within(store.repository("app")).await.unwrap(),
        Some(moved.clone())
    );
    assert_eq!(within(store.repository("nope")).await.unwrap(), None);
    assert_eq!(within(store.repositories()).await.unwrap(), [moved, lib]);

    let claims: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.claim_delivery("app", "d-1", Timestamp(i)).await })
        })
        .collect();
    let mut answers = Vec::new();
    for claim in claims {
        answers.push(within(claim).await.unwrap().unwrap());
    }
    assert_eq!(answers.iter().filter(|c| **c == Claim::New).count(), 1);
    assert!(answers.contains(&Claim::Seen { run: None }));
    within(store.delivery_started("app", "d-1", RunId(7)))
        .await
        .unwrap();
    assert_eq!(
        within(store.claim_delivery("app", "d-1", Timestamp(9)))
            .await
            .unwrap(),
        Claim::Seen {
            run: Some(RunId(7))
        }
    );
    assert!(within(store.delete_repository("app")).await.unwrap());
    assert!(!within(store.delete_repository("app")).await.unwrap());
    assert_eq!(within(store.repository("app")).await.unwrap(), None);
    within(store.put_repository(&repository("app", "/srv/git/app")))
        .await
        .unwrap();
    assert_eq!(
        within(store.claim_delivery("app", "d-1", Timestamp(10)))
            .await
            .unwrap(),
        Claim::New,
        "its deliveries went with it"
    );
}
