//! After a crash of Hodei: the next life lists what the last one left, re-attaches to a step
//! and resumes its output at an offset, and reaps the rest.

use std::sync::Arc;

use hodei_domain::model::{Env, Name, Service};
use hodei_domain::ports::{JobAttempt, Orphan, Provider, Reconcile, Workspace};
use hodei_domain::state::{Attempt, StepExit};

use crate::support::{Collect, Fixture, IMAGE, assert_clean, job_spec, step, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_life_reaps_what_a_crashed_one_left() {
    let fx = Fixture::new("reap").await;
    let sidecar = Service {
        image: IMAGE.parse().expect("image"),
        env: Env::new(),
        command: vec!["sleep".into(), "600".into()],
        ports: Vec::new(),
    };
    let ws = fx
        .set_up(4, |job| {
            job.services = vec![("side".parse::<Name>().expect("name"), sidecar)]
        })
        .await;
    let (handle, sink) = fx.start(&ws, &step(0, "echo up; sleep 600")).await;
    sink.wait_for("up\n").await;
    let workspace_dir = std::path::PathBuf::from(&ws.id);

    // The crash: the provider goes without tearing anything down.
    let next = fx.next_life().await;
    let live = within("live_steps", next.live_steps())
        .await
        .expect("listed");
    assert_eq!(live.len(), 1, "{live:?}");
    assert!(live[0].running);
    assert_eq!((live[0].job, live[0].index), (handle.job, 0));

    let orphans = within("reap", next.reap_orphans(&[]))
        .await
        .expect("reaped");
    assert_eq!(
        orphans,
        [Orphan {
            job: handle.job,
            job_attempt: Attempt::FIRST,
            step: 0,
            step_attempt: Attempt::FIRST,
            id: handle.id.clone(),
        }]
    );
    assert_clean(&fx.docker, &fx.instance).await;
    assert!(
        !workspace_dir.exists(),
        "the reaped job's workspace is removed"
    );
    let again = within("reap again", next.reap_orphans(&[]))
        .await
        .expect("reaped");
    assert!(again.is_empty(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_life_reattaches_and_resumes_the_output_at_an_offset() {
    let fx = Fixture::new("reattach").await;
    let ws = fx.set_up(5, |_| {}).await;
    let (handle, sink) = fx
        .start(
            &ws,
            &step(
                0,
                "echo one; while [ ! -f go ]; do sleep 0.1; done; echo two; exit 7",
            ),
        )
        .await;
    sink.wait_for("one\n").await;
    let delivered = sink.text().len() as u64;

    let next = fx.next_life().await;
    let live = within("live_steps", next.live_steps())
        .await
        .expect("listed");
    assert_eq!(live.len(), 1, "{live:?}");
    let resumed = Arc::new(Collect::default());
    let reattached = within(
        "reattach",
        next.reattach(&live[0], delivered, resumed.clone()),
    )
    .await
    .expect("re-attached");
    assert_eq!(reattached.id, handle.id);
    // The earlier life's steps are spared by the reaper of this one.
    assert!(
        within("reap", next.reap_orphans(&[]))
            .await
            .expect("reaped")
            .is_empty()
    );

    std::fs::write(std::path::Path::new(&ws.id).join("go"), b"").expect("release the step");
    let exit = within("wait", next.wait_step(&reattached))
        .await
        .expect("the exit");
    assert_eq!(
        (exit, resumed.text().as_str()),
        (StepExit::code(7), "two\n")
    );

    // The job goes on in the same workspace, with the settings read back from the container.
    let workspace = Workspace { ..ws.clone() };
    let (exit, output) = {
        let sink = Arc::new(Collect::default());
        let h = within(
            "start",
            next.start_step(&workspace, &step(1, "ls go && echo next"), sink.clone()),
        )
        .await
        .expect("the next step starts");
        (
            within("wait", next.wait_step(&h)).await.expect("exit"),
            sink.text(),
        )
    };
    assert_eq!((exit, output.as_str()), (StepExit::code(0), "go\nnext\n"));
    within("tear_down", next.tear_down(&workspace))
        .await
        .expect("torn down");
    assert_clean(&fx.docker, &fx.instance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_next_life_resumes_is_spared_and_its_step_taken_back_from_its_first_byte() {
    let fx = Fixture::new("spare").await;
    let sidecar = Service {
        image: IMAGE.parse().expect("image"),
        env: Env::new(),
        command: vec!["sleep".into(), "600".into()],
        ports: Vec::new(),
    };
    let side = vec![("side".parse::<Name>().expect("name"), sidecar)];
    let ws = fx.set_up(6, |job| job.services = side.clone()).await;
    let (handle, sink) = fx
        .start(
            &ws,
            &step(
                0,
                "echo one; while [ ! -f go ]; do sleep 0.1; done; echo two; exit 3",
            ),
        )
        .await;
    sink.wait_for("one\n").await;
    // Another job of the same life, not resumed: reaped.
    let other = fx.set_up(7, |_| {}).await;
    let (other_step, other_sink) = fx.start(&other, &step(0, "echo up; sleep 600")).await;
    other_sink.wait_for("up\n").await;

    let next = fx.next_life().await;
    let spare = [JobAttempt {
        job: handle.job,
        attempt: Attempt::FIRST,
    }];
    let orphans = within("reap", next.reap_orphans(&spare))
        .await
        .expect("reaped");
    assert_eq!(
        orphans.iter().map(|o| o.job).collect::<Vec<_>>(),
        [other_step.job],
        "only the job not resumed is reaped"
    );

    let mut spec = job_spec(6);
    spec.services = side;
    let output = Arc::new(Collect::default());
    let reattached = within(
        "reattach_step",
        next.reattach_step(&spec, 0, Attempt::FIRST, output.clone()),
    )
    .await
    .expect("no engine failure")
    .expect("the step's container is taken back");
    assert_eq!(
        (&reattached.step.id, &reattached.workspace.id),
        (&handle.id, &ws.id)
    );
    // Asked again, this life already follows it: it is not handed out twice.
    let again = within(
        "reattach_step again",
        next.reattach_step(&spec, 0, Attempt::FIRST, Arc::new(Collect::default())),
    )
    .await
    .expect("no engine failure");
    assert!(again.is_none());

    std::fs::write(std::path::Path::new(&ws.id).join("go"), b"").expect("release the step");
    let exit = within("wait", next.wait_step(&reattached.step))
        .await
        .expect("the exit");
    assert_eq!(
        (exit, output.text().as_str()),
        (StepExit::code(3), "one\ntwo\n")
    );
    // The service outlived the crash, on the job's network.
    let services = within(
        "service_logs",
        Provider::service_logs(&next, &reattached.workspace),
    )
    .await
    .expect("the services' output");
    assert_eq!(
        services.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["side"]
    );
    within("tear_down", next.tear_down(&reattached.workspace))
        .await
        .expect("torn down");
    assert_clean(&fx.docker, &fx.instance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_whose_container_is_gone_is_not_taken_back() {
    let fx = Fixture::new("gone").await;
    let spec = job_spec(8);
    let next = fx.next_life().await;
    let found = within(
        "reattach_step",
        next.reattach_step(&spec, 0, Attempt::FIRST, Arc::new(Collect::default())),
    )
    .await
    .expect("no engine failure");
    assert!(found.is_none());
}
