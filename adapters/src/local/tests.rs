//! The local provider against real processes: `/bin/sh`, `sleep`, `seq`, no mocks.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use hodei_domain::model::{Env, PullPolicy, Resources};
use tokio::time::timeout;

use super::*;

/// Every wait of these tests is bounded: a hang is a bug, reported as such.
pub(super) async fn within<F: Future>(what: &str, future: F) -> F::Output {
    timeout(Duration::from_secs(20), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 20 s, likely deadlocked"))
}

/// Collects a step's output.
#[derive(Default)]
pub(super) struct Collect(Mutex<Vec<u8>>);

impl OutputSink for Collect {
    fn output(&self, chunk: &[u8]) {
        self.0
            .lock()
            .expect("not poisoned")
            .extend_from_slice(chunk);
    }
}

impl Collect {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
    }

    /// Waits for the first line and reads it as a pid.
    async fn first_pid(&self) -> i32 {
        within("the step printing a pid", async {
            loop {
                if let Some((line, _)) = self.text().split_once('\n') {
                    return line.trim().parse().expect("a pid");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }
}

/// A provider with its own base directory and instance, removed at the end of the test.
pub(super) struct Fixture {
    pub(super) provider: LocalProvider,
    pub(super) workspace: Workspace,
}

impl Fixture {
    pub(super) async fn new(test: &str) -> Fixture {
        let base = std::env::temp_dir().join(format!("hodei-local-{}-{test}", std::process::id()));
        let provider = LocalProvider::new(base, instance(test));
        let workspace = within("set_up", provider.set_up(&job(1)))
            .await
            .expect("set up");
        Fixture {
            provider,
            workspace,
        }
    }

    pub(super) async fn start(&self, script: &str) -> (StepHandle, Arc<Collect>) {
        let sink = Arc::new(Collect::default());
        let handle = self
            .provider
            .start_step(&self.workspace, &step(script), sink.clone())
            .await
            .expect("started");
        (handle, sink)
    }

    pub(super) async fn run(&self, script: &str) -> (StepExit, String) {
        let (handle, sink) = self.start(script).await;
        let exit = within("wait_step", self.provider.wait_step(&handle)).await;
        (exit.expect("waited"), sink.text())
    }

    pub(super) async fn done(self) {
        within("tear_down", self.provider.tear_down(&self.workspace))
            .await
            .expect("torn down");
        let _ = std::fs::remove_dir_all(self.provider.workspaces());
    }
}

pub(super) fn instance(test: &str) -> String {
    format!("test-{}-{test}", std::process::id())
}

pub(super) fn job(id: u64) -> JobSpec {
    JobSpec {
        run: RunId(1),
        job: JobId(id),
        attempt: Attempt::FIRST,
        name: "job".into(),
        image: None,
        pull: PullPolicy::IfNotPresent,
        user: None,
        services: Vec::new(),
        resources: Resources::default(),
        checkout: None,
        secrets: Default::default(),
        timeout: None,
    }
}

pub(super) fn step(script: &str) -> StepSpec {
    StepSpec {
        index: 0,
        attempt: Attempt::FIRST,
        script: script.into(),
        shell: ["/bin/sh", "-e", "-c"].map(String::from).to_vec(),
        env: Env::new(),
        working_dir: None,
    }
}

pub(super) fn running(pid: i32) -> bool {
    orphans::is_running(pid)
}

/// Waits until `pid` is gone (or a zombie nobody reaped yet).
pub(super) async fn gone(pid: i32) {
    within("a killed process to end", async {
        while running(pid) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_step_sees_exactly_its_environment_and_the_markers() {
    let ws = Fixture::new("env").await;
    let mut spec = step("env");
    spec.env = Env::from([("GIVEN".into(), "yes".into())]);
    let sink = Arc::new(Collect::default());
    let handle = ws
        .provider
        .start_step(&ws.workspace, &spec, sink.clone())
        .await
        .expect("started");
    let exit = within("wait", ws.provider.wait_step(&handle))
        .await
        .expect("waited");
    assert!(exit.is_success(), "{exit:?}");

    let text = sink.text();
    let mut names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(n, _)| n)
        .collect();
    names.sort_unstable();
    // `PWD` is set by the shell itself.
    assert_eq!(
        names,
        [
            "GIVEN",
            "HODEI_PROVIDER_INSTANCE",
            "HODEI_STEP",
            "PATH",
            "PWD"
        ],
        "{text}"
    );
    assert!(text.contains("GIVEN=yes\n"));
    assert!(text.contains(&format!("PATH={DEFAULT_PATH}\n")));
    assert!(text.contains(&format!("HODEI_PROVIDER_INSTANCE={}\n", instance("env"))));
    assert!(text.contains("HODEI_STEP=1/1/0/1\n"), "{text}");
    if let Ok(home) = std::env::var("HOME") {
        assert!(
            !text.contains(&format!("={home}\n")),
            "Hodei's HOME leaked: {text}"
        );
    }
    ws.done().await;
}

#[tokio::test]
async fn stdout_and_stderr_arrive_interleaved_in_the_order_written() {
    let ws = Fixture::new("interleave").await;
    let (exit, text) = ws.run("echo a; echo b >&2; echo c; echo d >&2").await;
    assert_eq!((exit, text.as_str()), (StepExit::code(0), "a\nb\nc\nd\n"));
    ws.done().await;
}

#[tokio::test]
async fn exit_codes_and_signals_are_data() {
    let ws = Fixture::new("exits").await;
    assert_eq!(ws.run("exit 3").await.0, StepExit::code(3));
    assert_eq!(ws.run("true").await.0, StepExit::code(0));
    assert_eq!(
        ws.run("kill -TERM $$").await.0,
        StepExit::signal(libc::SIGTERM)
    );
    ws.done().await;
}

#[tokio::test]
async fn the_default_shell_stops_at_the_first_failing_command() {
    let ws = Fixture::new("set-e").await;
    let (exit, text) = ws.run("echo before; false; echo after").await;
    assert_eq!((exit, text.as_str()), (StepExit::code(1), "before\n"));
    ws.done().await;
}

#[tokio::test]
async fn a_step_runs_in_its_working_directory_inside_the_workspace() {
    let ws = Fixture::new("workdir").await;
    std::fs::create_dir(Path::new(&ws.workspace.id).join("sub")).expect("made sub");
    let mut spec = step("pwd");
    spec.working_dir = Some("sub".into());
    let sink = Arc::new(Collect::default());
    let handle = ws
        .provider
        .start_step(&ws.workspace, &spec, sink.clone())
        .await
        .expect("started");
    within("wait", ws.provider.wait_step(&handle))
        .await
        .expect("waited");
    assert_eq!(sink.text(), format!("{}/sub\n", ws.workspace.id));

    let (_, text) = ws.run("pwd").await;
    assert_eq!(
        text,
        format!("{}\n", ws.workspace.id),
        "the workspace by default"
    );
    ws.done().await;
}

#[tokio::test]
async fn a_job_that_needs_a_container_is_refused_rather_than_run_on_the_host() {
    let base = std::env::temp_dir().join(format!("hodei-local-{}-refused", std::process::id()));
    let provider = LocalProvider::new(base, instance("refused"));
    let image = JobSpec {
        image: Some("alpine:3".parse().unwrap()),
        ..job(1)
    };
    let user = JobSpec {
        user: Some("1000:1000".into()),
        ..job(2)
    };
    for (job, says) in [(image, "`alpine:3`"), (user, "`user: 1000:1000`")] {
        let err = within("set_up", provider.set_up(&job)).await.unwrap_err();
        assert!(
            matches!(&err, ProviderError::SetUp { reason, .. } if reason.contains(says)),
            "{err}"
        );
    }
}

#[tokio::test]
async fn bad_working_directories_are_refused_at_start() {
    let ws = Fixture::new("bad-workdir").await;
    for dir in ["../escape", "/tmp", "missing"] {
        let mut spec = step("true");
        spec.working_dir = Some(dir.into());
        let err = ws
            .provider
            .start_step(&ws.workspace, &spec, Arc::new(Collect::default()))
            .await;
        match err {
            Err(ProviderError::Start { reason, .. }) => assert!(reason.contains(dir), "{reason}"),
            other => panic!("{dir}: {other:?}"),
        }
    }
    ws.done().await;
}

#[tokio::test]
async fn a_missing_shell_is_a_start_error_that_names_it() {
    let ws = Fixture::new("no-shell").await;
    let mut spec = step("true");
    spec.shell = vec!["/nonexistent/sh".into(), "-c".into()];
    match ws
        .provider
        .start_step(&ws.workspace, &spec, Arc::new(Collect::default()))
        .await
    {
        Err(ProviderError::Start { reason, .. }) => {
            assert!(reason.contains("/nonexistent/sh"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    ws.done().await;
}

#[tokio::test]
async fn ten_megabytes_of_output_arrive_whole_and_in_order() {
    let ws = Fixture::new("large").await;
    let (exit, text) = ws.run("seq 1 1300000; echo end >&2").await;
    assert!(exit.is_success(), "{exit:?}");
    let mut expected: String = (1..=1_300_000).map(|n| format!("{n}\n")).collect();
    expected.push_str("end\n");
    assert!(expected.len() > 9_000_000, "{}", expected.len());
    assert!(
        text == expected,
        "{} bytes instead of {}",
        text.len(),
        expected.len()
    );
    ws.done().await;
}

#[tokio::test]
async fn wait_does_not_hang_on_a_background_process_holding_the_pipe() {
    let ws = Fixture::new("background").await;
    let (handle, sink) = ws.start("sleep 600 & echo $!; echo done").await;
    let exit = within("wait_step", ws.provider.wait_step(&handle))
        .await
        .expect("waited");
    assert_eq!(
        (exit, sink.text().lines().nth(1)),
        (StepExit::code(0), Some("done"))
    );

    let background = sink.first_pid().await;
    assert!(
        running(background),
        "background processes live on until destroyed"
    );
    within("destroy", ws.provider.destroy_step(&handle))
        .await
        .expect("destroyed");
    gone(background).await;
    ws.done().await;
}

#[tokio::test]
async fn destroy_kills_the_step_and_its_grandchildren() {
    let ws = Fixture::new("destroy").await;
    let (handle, sink) = ws.start("sleep 600 & echo $!; sleep 600").await;
    let grandchild = sink.first_pid().await;
    let shell: i32 = handle.id.parse().expect("a pid");
    assert!(running(grandchild) && running(shell));

    within("destroy", ws.provider.destroy_step(&handle))
        .await
        .expect("destroyed");
    let exit = within("wait", ws.provider.wait_step(&handle))
        .await
        .expect("waited");
    assert_eq!(exit, StepExit::signal(libc::SIGKILL));
    gone(grandchild).await;
    assert!(!running(shell));

    within("destroy again", ws.provider.destroy_step(&handle))
        .await
        .expect("idempotent");
    ws.done().await;
}

#[tokio::test]
async fn destroying_a_step_that_never_started_kills_nothing() {
    let ws = Fixture::new("never-started").await;
    let own = StepHandle {
        job: JobId(1),
        index: 0,
        attempt: Attempt::FIRST,
        id: std::process::id().to_string(),
    };
    within("destroy", ws.provider.destroy_step(&own))
        .await
        .expect("nothing to do");
    let garbage = StepHandle {
        id: "not a pid".into(),
        ..own.clone()
    };
    within("destroy", ws.provider.destroy_step(&garbage))
        .await
        .expect("nothing to do");
    assert!(matches!(
        ws.provider.wait_step(&own).await,
        Err(ProviderError::Wait { .. })
    ));

    let (handle, _) = ws.start("true").await;
    within("wait", ws.provider.wait_step(&handle))
        .await
        .expect("waited");
    within("destroy an ended step", ws.provider.destroy_step(&handle))
        .await
        .expect("safe");
    within("destroy it again", ws.provider.destroy_step(&handle))
        .await
        .expect("idempotent");
    ws.done().await;
}

#[tokio::test]
async fn tear_down_kills_what_the_job_left_and_removes_the_workspace() {
    let ws = Fixture::new("tear-down").await;
    let (first, sink) = ws.start("sleep 600 & echo $!").await;
    within("wait", ws.provider.wait_step(&first))
        .await
        .expect("waited");
    let left = sink.first_pid().await;
    let (_running, _) = ws.start("sleep 600").await;
    let dir = PathBuf::from(&ws.workspace.id);
    assert!(dir.is_dir());

    within("tear_down", ws.provider.tear_down(&ws.workspace))
        .await
        .expect("torn down");
    gone(left).await;
    assert!(!dir.exists());
    within("tear_down again", ws.provider.tear_down(&ws.workspace))
        .await
        .expect("idempotent");
    ws.done().await;
}

#[tokio::test]
async fn tear_down_is_safe_after_a_failed_set_up() {
    let base = std::env::temp_dir().join(format!("hodei-local-{}-file-base", std::process::id()));
    std::fs::write(&base, b"not a directory").expect("wrote");
    let provider = LocalProvider::new(base.clone(), instance("failed-set-up"));
    let failed = within("set_up", provider.set_up(&job(1))).await;
    assert!(
        matches!(failed, Err(ProviderError::SetUp { .. })),
        "{failed:?}"
    );
    let made_by_hand = Workspace {
        run: RunId(1),
        job: JobId(1),
        attempt: Attempt::FIRST,
        id: String::new(),
    };
    within("tear_down", provider.tear_down(&made_by_hand))
        .await
        .expect("safe");
    assert!(base.is_file(), "nothing outside the workspace is removed");
    std::fs::remove_file(base).expect("cleaned up");
}

#[tokio::test]
async fn a_panicking_sink_fails_the_wait_without_killing_the_provider() {
    struct Panics;
    impl OutputSink for Panics {
        fn output(&self, _: &[u8]) {
            panic!("sink bug");
        }
    }
    let ws = Fixture::new("sink-panic").await;
    let handle = ws
        .provider
        .start_step(&ws.workspace, &step("echo x"), Arc::new(Panics))
        .await
        .expect("started");
    let waited = within("wait", ws.provider.wait_step(&handle)).await;
    assert!(
        matches!(waited, Err(ProviderError::Wait { .. })),
        "{waited:?}"
    );
    assert_eq!(ws.run("echo still works").await.1, "still works\n");
    ws.done().await;
}
