//! Each verb of the fake's script language, its faults and its call log.

use std::future::Future;

use hodei_domain::model::{Env, PullPolicy, Resources};

use super::*;

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(3600), future)
        .await
        .unwrap_or_else(|_| {
            panic!("{what}: no answer within an hour of tokio time, likely deadlocked")
        })
}

#[derive(Default)]
struct Collect(Mutex<Vec<u8>>);

impl OutputSink for Collect {
    fn output(&self, chunk: &[u8]) {
        lock(&self.0).extend_from_slice(chunk);
    }
}

fn job_spec() -> JobSpec {
    JobSpec {
        run: RunId(1),
        job: JobId(2),
        attempt: Attempt::FIRST,
        name: "job".into(),
        image: None,
        pull: PullPolicy::Never,
        user: None,
        services: Vec::new(),
        resources: Resources::default(),
        checkout: None,
        secrets: Default::default(),
        timeout: None,
    }
}

fn step(script: &str) -> StepSpec {
    StepSpec {
        index: 0,
        attempt: Attempt::FIRST,
        script: script.into(),
        shell: Vec::new(),
        env: Env::new(),
        working_dir: None,
    }
}

/// Sets up, runs one script to its end, tears down: its exit and output.
async fn run(script: &str) -> (Result<StepExit, ProviderError>, String) {
    let fake = FakeProvider::new();
    let ws = fake.set_up(&job_spec()).await.expect("set up");
    let sink = Arc::new(Collect::default());
    let handle = fake
        .start_step(&ws, &step(script), sink.clone())
        .await
        .expect("started");
    let exit = within("wait_step", fake.wait_step(&handle)).await;
    fake.tear_down(&ws).await.expect("torn down");
    let text = String::from_utf8(lock(&sink.0).clone()).expect("utf-8");
    (exit, text)
}

#[tokio::test(start_paused = true)]
async fn exit_signal_and_oom_end_the_step_as_scripted() {
    assert_eq!(run("exit 3").await.0, Ok(StepExit::code(3)));
    assert_eq!(
        run("exit 0; exit 5").await.0,
        Ok(StepExit::code(0)),
        "exit ends the program"
    );
    assert_eq!(run("signal 15").await.0, Ok(StepExit::signal(15)));
    let oom = run("oom").await.0.expect("an exit");
    assert!(
        oom.oom_killed && oom.signal == Some(libc::SIGKILL),
        "{oom:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn emit_writes_numbered_lines_before_the_exit() {
    assert_eq!(
        run("emit 3").await,
        (Ok(StepExit::code(0)), "line 1\nline 2\nline 3\n".into())
    );
    assert_eq!(
        run("emit 1; exit 2").await,
        (Ok(StepExit::code(2)), "line 1\n".into())
    );
}

#[tokio::test(start_paused = true)]
async fn sleep_follows_tokios_clock() {
    let started = tokio::time::Instant::now();
    assert_eq!(
        run("sleep 5000; emit 1").await,
        (Ok(StepExit::code(0)), "line 1\n".into())
    );
    assert_eq!(started.elapsed(), Duration::from_millis(5000));
}

#[tokio::test(start_paused = true)]
async fn a_hanging_step_ends_only_when_destroyed() {
    let fake = FakeProvider::new();
    let ws = fake.set_up(&job_spec()).await.expect("set up");
    let sink = Arc::new(Collect::default());
    let handle = fake
        .start_step(&ws, &step("emit 1; hang"), sink)
        .await
        .expect("started");
    let still = tokio::time::timeout(Duration::from_secs(86_400), fake.wait_step(&handle)).await;
    assert!(still.is_err(), "still hanging a day later: {still:?}");

    within("destroy", fake.destroy_step(&handle))
        .await
        .expect("destroyed");
    let exit = within("wait", fake.wait_step(&handle)).await;
    assert_eq!(exit, Ok(StepExit::signal(libc::SIGKILL)));
    within("destroy again", fake.destroy_step(&handle))
        .await
        .expect("idempotent");
}

#[tokio::test(start_paused = true)]
async fn fail_start_and_malformed_programs_are_start_errors() {
    let fake = FakeProvider::new();
    let ws = fake.set_up(&job_spec()).await.expect("set up");
    for script in [
        "fail-start",
        "emit 2; fail-start",
        "exit x",
        "emit",
        "hang 3",
        "exit 1; frobnicate",
    ] {
        let started = fake
            .start_step(&ws, &step(script), Arc::new(Collect::default()))
            .await;
        assert!(
            matches!(started, Err(ProviderError::Start { .. })),
            "{script}: {started:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn panic_panics_inside_start_step() {
    let fake = Arc::new(FakeProvider::new());
    let ws = fake.set_up(&job_spec()).await.expect("set up");
    let task = tokio::spawn({
        let fake = Arc::clone(&fake);
        async move {
            let _ = fake
                .start_step(&ws, &step("panic"), Arc::new(Collect::default()))
                .await;
        }
    });
    let joined = within("the panicking task", task).await;
    assert!(joined.is_err_and(|err| err.is_panic()));
    assert!(matches!(fake.calls().last(), Some(Call::StartStep { .. })));
}

#[tokio::test(start_paused = true)]
async fn any_other_script_is_a_no_op_that_succeeds_at_once() {
    for script in ["", "cargo build", "make; exit 3", "  echo hi"] {
        let fake = FakeProvider::new();
        let ws = fake.set_up(&job_spec()).await.expect("set up");
        let handle = fake
            .start_step(&ws, &step(script), Arc::new(Collect::default()))
            .await
            .expect("started");
        assert_eq!(handle.id, "", "{script}: the cheap path");
        assert_eq!(
            fake.wait_step(&handle).await,
            Ok(StepExit::code(0)),
            "{script}"
        );
        fake.destroy_step(&handle)
            .await
            .expect("nothing to destroy");
    }
}

#[tokio::test(start_paused = true)]
async fn an_engine_that_is_down_fails_every_call_until_it_is_back() {
    let fake = FakeProvider::new();
    fake.set_fail_set_up(true);
    assert!(matches!(
        fake.set_up(&job_spec()).await,
        Err(ProviderError::SetUp { .. })
    ));
    fake.set_fail_set_up(false);
    let ws = fake.set_up(&job_spec()).await.expect("set up");

    fake.set_unavailable(true);
    let down = fake
        .start_step(&ws, &step("exit 0"), Arc::new(Collect::default()))
        .await;
    assert!(down.is_err_and(|err| err.is_retryable()));
    assert!(
        fake.set_up(&job_spec())
            .await
            .is_err_and(|err| err.is_retryable())
    );
    assert!(
        fake.tear_down(&ws)
            .await
            .is_err_and(|err| err.is_retryable())
    );
    assert!(
        fake.reap_orphans(&[])
            .await
            .is_err_and(|err| err.is_retryable())
    );
    fake.set_unavailable(false);
    fake.tear_down(&ws).await.expect("back");
}

#[tokio::test(start_paused = true)]
async fn every_call_is_recorded_in_order() {
    let fake = FakeProvider::new();
    let ws = fake.set_up(&job_spec()).await.expect("set up");
    let handle = fake
        .start_step(&ws, &step("exit 1"), Arc::new(Collect::default()))
        .await
        .expect("started");
    fake.wait_step(&handle).await.expect("waited");
    fake.destroy_step(&handle).await.expect("destroyed");
    fake.tear_down(&ws).await.expect("torn down");
    let (run, job, attempt, index) = (RunId(1), JobId(2), Attempt::FIRST, 0);
    assert_eq!(
        fake.take_calls(),
        [
            Call::SetUp { run, job, attempt },
            Call::StartStep {
                job,
                index,
                attempt
            },
            Call::WaitStep {
                job,
                index,
                attempt
            },
            Call::DestroyStep {
                job,
                index,
                attempt
            },
            Call::TearDown { run, job, attempt },
        ]
    );
    assert_eq!(fake.calls(), []);
    assert!(
        matches!(
            fake.wait_step(&handle).await,
            Err(ProviderError::Wait { .. })
        ),
        "torn down"
    );

    let quiet = FakeProvider::quiet();
    quiet.set_up(&job_spec()).await.expect("set up");
    assert_eq!(quiet.calls(), []);
}

#[tokio::test(start_paused = true)]
async fn tear_down_stops_the_steps_of_its_job() {
    let fake = FakeProvider::new();
    let ws = fake.set_up(&job_spec()).await.expect("set up");
    let handle = fake
        .start_step(&ws, &step("hang"), Arc::new(Collect::default()))
        .await
        .expect("started");
    let (_, mut outcome) = fake.step(&handle).expect("running");
    fake.tear_down(&ws).await.expect("torn down");
    let exit = *within("the step to end", outcome.wait_for(Option::is_some))
        .await
        .expect("published");
    assert_eq!(exit, Some(StepExit::signal(libc::SIGKILL)));
}

#[tokio::test(start_paused = true)]
async fn scripted_orphans_are_reported_once() {
    let fake = FakeProvider::new();
    let orphan = Orphan {
        job: JobId(4),
        job_attempt: Attempt::FIRST,
        step: 1,
        step_attempt: Attempt::FIRST,
        id: "c1".into(),
    };
    fake.add_orphan(orphan.clone());
    assert_eq!(fake.reap_orphans(&[]).await, Ok(vec![orphan]));
    assert_eq!(fake.reap_orphans(&[]).await, Ok(vec![]));
}

#[tokio::test(start_paused = true)]
async fn a_broken_lifecycle_is_refused_as_a_real_engine_would() {
    let fake = FakeProvider::new();
    let spec = job_spec();
    let unset = Workspace {
        run: spec.run,
        job: spec.job,
        attempt: spec.attempt,
        id: String::new(),
    };
    let sink = Arc::new(Collect::default());
    let before = fake.start_step(&unset, &step("emit 1"), sink.clone()).await;
    assert!(
        matches!(&before, Err(ProviderError::Start { reason, .. }) if reason.contains("outside a set-up workspace")),
        "{before:?}"
    );
    let ws = fake.set_up(&spec).await.expect("set up");
    fake.start_step(&ws, &step("emit 1"), sink.clone())
        .await
        .expect("started once");
    let twice = fake.start_step(&ws, &step("emit 1"), sink.clone()).await;
    assert!(
        matches!(&twice, Err(ProviderError::Start { reason, .. }) if reason.contains("started twice")),
        "{twice:?}"
    );
    let retry = StepSpec {
        attempt: Attempt::new(2).unwrap(),
        ..step("emit 1")
    };
    fake.start_step(&ws, &retry, sink.clone())
        .await
        .expect("a new try of the step starts");
    fake.tear_down(&ws).await.expect("torn down");
    let after = fake.start_step(&ws, &step("emit 1"), sink).await;
    assert!(
        matches!(after, Err(ProviderError::Start { .. })),
        "{after:?}"
    );
}
