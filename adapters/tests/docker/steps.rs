//! Steps: output, exits, signals, memory, environment, directories, users, destroy.

use std::time::{Duration, Instant};

use hodei_domain::model::{Env, Memory, Resources};
use hodei_domain::ports::{Provider, ProviderError, StepHandle};
use hodei_domain::state::StepExit;

use crate::support::{Fixture, attempt, step, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_and_stderr_arrive_interleaved_in_the_order_written() {
    let fx = Fixture::new("interleave").await;
    let ws = fx.set_up(1, |_| {}).await;
    let script =
        r#"i=1; while [ $i -le 2000 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done"#;
    let (exit, output) = fx.run(&ws, &step(0, script)).await;
    assert_eq!(exit, StepExit::code(0));
    let expected: String = (1..=2000).map(|i| format!("out {i}\nerr {i}\n")).collect();
    assert!(
        output == expected,
        "output out of order or incomplete: {} bytes, expected {}",
        output.len(),
        expected.len()
    );
    fx.finish(&ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_output_is_delivered_whole_before_wait_returns() {
    let fx = Fixture::new("large").await;
    let ws = fx.set_up(1, |_| {}).await;
    let (exit, output) = fx
        .run(
            &ws,
            &step(0, "seq 1 200000; printf 'no newline at the end'"),
        )
        .await;
    assert_eq!(exit, StepExit::code(0));
    let mut expected: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    expected.push_str("no newline at the end");
    assert_eq!(output.len(), expected.len(), "bytes lost or added");
    assert!(output == expected, "the output differs from seq's");
    fx.finish(&ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_are_data() {
    let fx = Fixture::new("exit").await;
    let ws = fx.set_up(1, |_| {}).await;
    assert_eq!(fx.run(&ws, &step(0, "true")).await.0, StepExit::code(0));
    let (exit, output) = fx.run(&ws, &step(1, "echo before; exit 3")).await;
    assert_eq!((exit, output.as_str()), (StepExit::code(3), "before\n"));
    // `-e`: the first failing command ends the script.
    let (exit, output) = fx.run(&ws, &step(2, "false; echo never")).await;
    assert_eq!((exit, output.as_str()), (StepExit::code(1), ""));
    // A shell killed by a signal from inside reports 128 + N, as in a terminal.
    let (exit, _) = fx.run(&ws, &step(3, "kill -TERM $$; sleep 5")).await;
    assert_eq!(exit, StepExit::code(128 + 15));
    fx.finish(&ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_step_stops_a_long_step_at_once() {
    let fx = Fixture::new("destroy").await;
    let ws = fx.set_up(1, |_| {}).await;
    let (handle, sink) = fx.start(&ws, &step(0, "echo started; sleep 600")).await;
    sink.wait_for("started\n").await;
    let began = Instant::now();
    within("destroy_step", fx.provider.destroy_step(&handle))
        .await
        .expect("destroyed");
    let exit = within("wait_step", fx.provider.wait_step(&handle))
        .await
        .expect("the destroyed step's exit");
    assert_eq!(exit, StepExit::signal(9), "killed by SIGKILL");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "a destroyed `sleep 600` took {:?} to end",
        began.elapsed()
    );
    let record = fx
        .docker
        .inspect_container(&handle.id, None)
        .await
        .expect("the container is kept until tear_down");
    assert_eq!(record.state.and_then(|s| s.running), Some(false));
    // Idempotent, and safe on a step that never started.
    within("destroy again", fx.provider.destroy_step(&handle))
        .await
        .expect("idempotent");
    let never = StepHandle {
        index: 5,
        id: String::new(),
        ..handle.clone()
    };
    within("destroy unknown", fx.provider.destroy_step(&never))
        .await
        .expect("nothing to destroy");
    let foreign = StepHandle {
        index: 6,
        id: "0000000000000000000000000000000000000000000000000000000000000000".into(),
        ..handle
    };
    within("destroy gone", fx.provider.destroy_step(&foreign))
        .await
        .expect("a container that does not exist is destroyed already");
    fx.finish(&ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_memory_is_data() {
    let fx = Fixture::new("oom").await;
    let ws = fx
        .set_up(1, |job| {
            job.resources = Resources {
                cpu: None,
                memory: Memory::from_bytes(16 << 20),
            };
        })
        .await;
    // dd allocates its 64 MiB block at once: the kernel kills it in the 16 MiB container.
    let (exit, _) = fx
        .run(&ws, &step(0, "dd if=/dev/zero of=/dev/null bs=64M count=1"))
        .await;
    assert!(exit.oom_killed, "{exit:?}");
    assert!(!exit.is_success());
    fx.finish(&ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_sees_only_its_environment_and_the_images() {
    let fx = Fixture::new("env").await;
    let ws = fx.set_up(1, |_| {}).await;
    let mut s = step(0, "env | cut -d= -f1 | sort");
    s.env = Env::from([
        ("GREETING".into(), "hello world".into()),
        ("EMPTY".into(), String::new()),
    ]);
    let (exit, output) = fx.run(&ws, &s).await;
    assert_eq!(exit, StepExit::code(0));
    // The step's variables, the image's PATH, and what the engine (HOSTNAME, HOME) and the
    // shell (PWD, SHLVL) always set: nothing of this test process (CARGO_*, RUST_*, ...).
    let names: Vec<&str> = output.lines().collect();
    assert_eq!(
        names,
        [
            "EMPTY", "GREETING", "HOME", "HOSTNAME", "PATH", "PWD", "SHLVL"
        ],
        "{output}"
    );
    let mut s = step(1, r#"printf '%s|' "$GREETING" "$PATH""#);
    s.env = Env::from([("GREETING".into(), "hello world".into())]);
    assert_eq!(fx.run(&ws, &s).await.1, "hello world|/bin|");
    fx.finish(&ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_share_the_workspace_and_work_in_their_directory() {
    let fx = Fixture::new("workspace").await;
    let ws = fx.set_up(1, |_| {}).await;
    let (exit, output) = fx
        .run(
            &ws,
            &step(0, "pwd; mkdir -p sub/dir; echo hello > sub/dir/file"),
        )
        .await;
    assert_eq!((exit, output.as_str()), (StepExit::code(0), "/workspace\n"));
    let host = std::path::Path::new(&ws.id).join("sub/dir/file");
    assert_eq!(
        std::fs::read_to_string(&host).expect("on the host"),
        "hello\n"
    );

    let mut read = step(1, "pwd; cat file");
    read.working_dir = Some("sub/dir".into());
    let (exit, output) = fx.run(&ws, &read).await;
    assert_eq!(
        (exit, output.as_str()),
        (StepExit::code(0), "/workspace/sub/dir\nhello\n")
    );

    let mut missing = step(2, "true");
    missing.working_dir = Some("nowhere".into());
    let err = within(
        "start",
        fx.provider.start_step(
            &ws,
            &missing,
            std::sync::Arc::new(crate::support::Collect::default()),
        ),
    )
    .await
    .expect_err("a missing working directory");
    assert!(
        matches!(&err, ProviderError::Start { reason, .. } if reason.contains("`nowhere`")),
        "{err:?}"
    );
    fx.finish(&ws).await;
    assert!(
        !std::path::Path::new(&ws.id).exists(),
        "tear_down removes the workspace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_run_as_the_jobs_user() {
    let fx = Fixture::new("user").await;
    let ws = fx
        .set_up(1, |job| job.user = Some("65534:65534".into()))
        .await;
    let (exit, output) = fx
        .run(
            &ws,
            &step(0, "id -u; id -g; echo x > mine; ls -n mine | cut -c1-30"),
        )
        .await;
    assert_eq!(exit, StepExit::code(0), "{output}");
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines[..2], ["65534", "65534"], "{output}");
    assert!(
        lines[2].contains("65534"),
        "the file belongs to the user: {output}"
    );
    fx.finish(&ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_outlasting_the_request_timeout_is_still_waited_for() {
    let fx = Fixture::with("long", |config| {
        config.request_timeout = Duration::from_secs(1)
    })
    .await;
    let ws = fx.set_up(1, |_| {}).await;
    let (exit, output) = fx.run(&ws, &step(0, "sleep 2; echo done")).await;
    assert_eq!((exit, output.as_str()), (StepExit::code(0), "done\n"));
    fx.finish(&ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_retry_gets_a_container_of_its_own() {
    let fx = Fixture::new("retry").await;
    let ws = fx.set_up(1, |_| {}).await;
    let first = fx.run(&ws, &step(0, "exit 1")).await.0;
    let mut again = step(0, "echo second");
    again.attempt = attempt(2);
    let (exit, output) = fx.run(&ws, &again).await;
    assert_eq!(
        (first, exit, output.as_str()),
        (StepExit::code(1), StepExit::code(0), "second\n")
    );
    fx.finish(&ws).await;
}
