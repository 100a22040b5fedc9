//! `hodei run` end to end: the real binary, real processes, a real SQLite store, real signals.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

fn hodei() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hodei"));
    command.env("NO_COLOR", "1").env_remove("HODEI_FAULT");
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Output with runs of spaces collapsed, so that checks do not depend on column widths.
fn compact(bytes: &[u8]) -> String {
    let text = text(bytes);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !(c == ' ' && out.ends_with(' ')) {
            out.push(c);
        }
    }
    out
}

fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("run-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_string_lossy().into_owned()
}

/// Runs hodei to the end, failing the test if it takes more than a minute (likely deadlocked).
fn run(command: &mut Command) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hodei starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "hodei did not finish in 60 s: likely deadlocked\n{}\n{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_local_example_runs_green_with_live_progress_and_a_summary() {
    let out = run(hodei().args([
        "run",
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/local.yml"),
    ]));
    let stdout = compact(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("generate") && stdout.contains("| part1.sh"),
        "step output is prefixed with the job name: {stdout}"
    );
    assert!(
        stdout.contains("test (shell=sh, mode=full) | case 3 ok"),
        "{stdout}"
    );
    assert!(
        stdout.contains("JOB") && stdout.contains("DURATION"),
        "a summary table: {stdout}"
    );
    assert!(stdout.contains("of `local-demo`: succeeded"), "{stdout}");
    let summary = stdout.split("JOB STATE").nth(1).unwrap_or_default();
    assert_eq!(
        summary.matches(" succeeded 1 ").count(),
        7,
        "every job succeeded at its first attempt: {stdout}"
    );
}

#[test]
fn a_failing_step_fails_the_run_with_exit_1_and_says_why() {
    let dir = scratch("fail");
    let file = write(
        &dir,
        "p.yml",
        "name: p\njobs:\n  build: {steps: [{name: compile, run: 'echo compiling; exit 3'}]}\n  deploy: {needs: [build], steps: [echo never]}\n",
    );
    let out = run(hodei().args(["run", &file]));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("[hodei] step 1 (compile) failed: exit code 3"),
        "{stdout}"
    );
    assert!(
        stdout.contains("skipped: build did not succeed"),
        "{stdout}"
    );
    assert!(!stdout.contains("never"), "{stdout}");
}

#[test]
fn invalid_input_exits_2_with_a_message() {
    let dir = scratch("invalid");
    let good = write(
        &dir,
        "good.yml",
        "name: p\nparameters: {T: {default: a, choices: [a, b]}}\njobs: {x: {steps: [true]}}\n",
    );
    let bad = write(&dir, "bad.yml", "name: p\njobs: {x: {stpes: [true]}}\n");
    for (args, expected) in [
        (vec!["run", bad.as_str()], "unknown key `stpes`"),
        (
            vec!["run", good.as_str(), "-p", "T=c"],
            "parameter `T` is `c`",
        ),
        (
            vec!["run", good.as_str(), "-p", "X=1"],
            "unknown parameter `X`",
        ),
        (vec!["run", good.as_str(), "-p", "novalue"], "expected K=V"),
        (
            vec!["run", good.as_str(), "-e", "1BAD=x"],
            "not a valid variable name",
        ),
        (
            vec!["run", good.as_str(), "--secret", "TEST_UNSET_SECRET_4711"],
            "is not set",
        ),
        (
            vec!["run", good.as_str(), "--secret", "HODEI_TOKEN"],
            "not starting with `HODEI_`",
        ),
        (vec!["run", "/nonexistent.yml"], "cannot read"),
        (vec!["run"], "give a pipeline FILE"),
    ] {
        let out = run(hodei().args(&args));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(expected),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn steps_see_only_the_job_environment_and_secrets_are_masked() {
    let dir = scratch("env");
    let file = write(
        &dir,
        "p.yml",
        "name: p\nparameters: {LEVEL: {default: low}}\nenv: {FROM_PIPELINE: yes}\njobs:\n  show:\n    env: {FROM_JOB: j}\n    steps:\n      - run: env | sort\n      - run: 'echo \"token is $API_TOKEN\"; printf \"%s\" \"$API_TOKEN\" | cut -c1-4'\n",
    );
    let out = run(hodei()
        .args([
            "run",
            &file,
            "-p",
            "LEVEL=high",
            "-e",
            "EXTRA=1",
            "--secret",
            "API_TOKEN",
        ])
        .env("API_TOKEN", "s3cr3t-value-42")
        .env("HODEI_TEST_LEAK", "leaked"));
    let stdout = compact(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    for expected in [
        "show | FROM_PIPELINE=yes",
        "show | FROM_JOB=j",
        "show | LEVEL=high",
        "show | EXTRA=1",
        "show | CI=true",
        "show | HODEI_JOB=show",
        "show | token is ***",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in {stdout}"
        );
    }
    assert!(
        !stdout.contains("HODEI_TEST_LEAK"),
        "Hodei's own environment leaked: {stdout}"
    );
    assert!(
        !stdout.contains("s3cr3t-value-42"),
        "the secret leaked: {stdout}"
    );
}

#[test]
fn a_secret_split_across_two_steps_is_masked_in_the_live_view_and_the_stored_log() {
    // One step prints the first bytes of the secret without a newline, the next the rest.
    let dir = scratch("split-secret");
    let file = write(
        &dir,
        "p.yml",
        "name: p\njobs:\n  show:\n    steps:\n      - run: 'printf \"key=%s\" \"$(printf %s \"$API_TOKEN\" | cut -c1-6)\"'\n      - run: 'printf \"%s\\n\" \"$(printf %s \"$API_TOKEN\" | cut -c7-)\"'\n",
    );
    let store = dir.join("runs.db");
    let store_arg = store.to_string_lossy().into_owned();
    let out = run(hodei()
        .args(["run", &file, "--store", &store_arg, "--secret", "API_TOKEN"])
        .env("API_TOKEN", "s3cr3t-value-42"));
    let stdout = compact(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let log = &stored_logs(&store)[0];
    assert_eq!(log, "key=***\n");
    assert!(stdout.contains("key=***"), "{stdout}");
    assert!(
        !stdout.contains("s3cr3t") && !stdout.contains("value-42"),
        "{stdout}"
    );
}

fn alive(pid: i32) -> bool {
    // A zombie still answers kill(pid, 0); look at its state instead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or_default()
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn a_closed_stdout_cancels_the_run_quietly_and_leaves_no_process() {
    // `hodei run … | head -1`: the reader goes away after the first line.
    let dir = scratch("closed-stdout");
    let pidfile = dir.join("pid");
    let file = write(
        &dir,
        "p.yml",
        "name: p\njobs:\n  long:\n    steps: [{run: 'sleep 600 & echo $! > \"$PIDFILE\"; while true; do echo tick; sleep 0.05; done'}]\n",
    );
    let mut child = hodei()
        .args([
            "run",
            &file,
            "-e",
            &format!("PIDFILE={}", pidfile.display()),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sleeper: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The reader goes away while the step prints.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "cancelled: {stderr}");
    assert!(!stderr.contains("internal error"), "{stderr}");
    assert!(stderr.contains("Cancelling (stdout closed)"), "{stderr}");
    let gone = Instant::now() + Duration::from_secs(5);
    while alive(sleeper) {
        assert!(Instant::now() < gone, "the step's `sleep 600` survived");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_cancels_the_run_runs_the_hooks_and_leaves_no_process() {
    cancelled_by(libc::SIGINT, "ctrlc");
}

#[test]
fn sigterm_and_sighup_cancel_the_run_as_ctrl_c_does() {
    // How `timeout`, CI runners, systemd and `docker stop` end a process.
    cancelled_by(libc::SIGTERM, "sigterm");
    cancelled_by(libc::SIGHUP, "sighup");
}

/// Runs a job with a long step and hooks, sends `signal` once the step runs: the run is
/// cancelled, its hooks run, its exit code is 1, and the step's processes are gone.
fn cancelled_by(signal: i32, name: &str) {
    let dir = scratch(name);
    let pidfile = dir.join("pid");
    let file = write(
        &dir,
        "p.yml",
        "name: p\njobs:\n  long:\n    steps: [{run: 'sleep 600 & echo $! > \"$PIDFILE\"; wait'}]\n    post: {cancelled: [echo cleaning up], always: [echo always]}\n  next: {needs: [long], steps: [echo never]}\n",
    );
    let child = hodei()
        .args([
            "run",
            &file,
            "-e",
            &format!("PIDFILE={}", pidfile.display()),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the step never started: likely deadlocked"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let sleeper: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(sleeper));
    unsafe { libc::kill(child.id() as i32, signal) };
    let out = child.wait_with_output().unwrap();
    let stdout = compact(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{:?}\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        stdout.contains("long | cleaning up") && stdout.contains("long | always"),
        "{stdout}"
    );
    assert!(stdout.contains("cancelled"), "{stdout}");
    assert!(!stdout.contains("never"), "{stdout}");
    let gone = Instant::now() + Duration::from_secs(5);
    while alive(sleeper) {
        assert!(
            Instant::now() < gone,
            "the step's `sleep 600` survived the cancel"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The log of a job as stored: the chunk files of `<store>.logs/<job>/`, in offset order.
fn stored_logs(store: &Path) -> Vec<String> {
    let logs = PathBuf::from(format!("{}.logs", store.display()));
    let mut jobs: Vec<PathBuf> = std::fs::read_dir(&logs)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    jobs.sort();
    jobs.iter()
        .map(|dir| {
            let mut chunks: Vec<PathBuf> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            chunks.sort();
            chunks
                .iter()
                .map(|c| text(&std::fs::read(c).unwrap()))
                .collect::<String>()
        })
        .collect()
}

#[test]
fn a_run_killed_at_any_failure_point_resumes_to_the_same_end_with_complete_logs() {
    let pipeline = "name: crash\njobs:\n  a:\n    retry: 1\n    steps: [{run: 'echo a-start; echo a-end', retry: 1}]\n  b:\n    needs: [a]\n    retry: 1\n    steps: [{run: 'echo b-start; sleep 0.2; echo b-end', retry: 1}]\n";
    for point in [
        "after_place",
        "after_step_start",
        "after_step_exit",
        "mid_log_write",
        "before_run_finish",
    ] {
        let dir = scratch(&format!("crash-{point}"));
        let file = write(&dir, "p.yml", pipeline);
        let store = dir.join("runs.db");
        let store_arg = store.to_string_lossy().into_owned();
        let crashed = run(hodei()
            .args(["run", &file, "--store", &store_arg])
            .env("HODEI_FAULT", point));
        assert!(
            !crashed.status.success(),
            "{point}: the fault did not fire: {}",
            text(&crashed.stdout)
        );
        assert!(
            text(&crashed.stderr).contains(&format!("crashing at {point}")),
            "{point}: {}",
            text(&crashed.stderr)
        );

        let resumed = run(hodei().args(["run", "--store", &store_arg]));
        let stdout = text(&resumed.stdout);
        assert_eq!(
            resumed.status.code(),
            Some(0),
            "{point}: {stdout}\n{}",
            text(&resumed.stderr)
        );
        assert!(
            stdout.contains("Resuming 1 unfinished run"),
            "{point}: {stdout}"
        );
        assert!(
            stdout.contains("of `crash`: succeeded"),
            "{point}: {stdout}"
        );
        let logs = stored_logs(&store);
        assert_eq!(logs.len(), 2, "{point}: {logs:?}");
        assert!(
            logs[0].ends_with("a-start\na-end\n"),
            "{point}: log of a: {:?}",
            logs[0]
        );
        assert!(
            logs[1].ends_with("b-start\nb-end\n"),
            "{point}: log of b: {:?}",
            logs[1]
        );

        // Nothing left to resume, and finished jobs are not run again.
        let again = run(hodei().args(["run", "--store", &store_arg]));
        assert_eq!(again.status.code(), Some(0));
        assert!(
            text(&again.stdout).contains("Nothing to run"),
            "{point}: {}",
            text(&again.stdout)
        );
    }
}

#[test]
fn a_step_lost_in_a_crash_is_tried_again_in_its_workspace_by_its_retry_policy() {
    // The crash comes when the second step has started: the first step's file is still in the
    // workspace, and the job goes on from the second step, without a new job attempt.
    let pipeline = "name: lost\njobs:\n  a:\n    steps:\n      - echo prepared > marker\n      - {run: 'cat marker; echo again', retry: 1}\n";
    let dir = scratch("lost-step");
    let file = write(&dir, "p.yml", pipeline);
    let store = dir.join("runs.db");
    let store_arg = store.to_string_lossy().into_owned();
    let crashed = run(hodei()
        .args(["run", &file, "--store", &store_arg])
        .env("HODEI_FAULT", "after_step_start:2"));
    assert!(
        text(&crashed.stderr).contains("crashing at after_step_start"),
        "{}",
        text(&crashed.stderr)
    );
    let resumed = run(hodei().args(["run", "--store", &store_arg]));
    let stdout = text(&resumed.stdout);
    assert_eq!(resumed.status.code(), Some(0), "{stdout}");
    let log = &stored_logs(&store)[0];
    assert!(
        log.contains("[hodei] step 2 (`cat marker; echo again`) was lost"),
        "{log}"
    );
    assert!(
        log.contains(
            "[hodei] trying step 2 again, attempt 2, in the job's workspace\nprepared\nagain\n"
        ),
        "{log}"
    );
    let summary = compact(&resumed.stdout);
    assert!(
        summary.contains("a succeeded 1 "),
        "one job attempt: {summary}"
    );
}

#[test]
fn a_step_lost_in_a_crash_on_its_second_try_goes_on_from_its_latest_try() {
    // The second step fails its first try, and Hodei is killed once its second try has
    // started: the job goes on in its workspace with the step's third try, in the same job
    // attempt, and the step before it does not run again.
    let dir = scratch("lost-second-try");
    let flag = dir.join("failed-once");
    let file = write(
        &dir,
        "p.yml",
        &format!(
            "name: again\njobs:\n  a:\n    steps:\n      - echo prepared > marker\n      - {{run: 'test -e {0} || {{ touch {0}; exit 1; }}; cat marker', retry: 3}}\n",
            flag.display()
        ),
    );
    let store = dir.join("runs.db");
    let store_arg = store.to_string_lossy().into_owned();
    let crashed = run(hodei()
        .args(["run", &file, "--store", &store_arg])
        .env("HODEI_FAULT", "after_step_start:3"));
    assert!(
        text(&crashed.stderr).contains("crashing at after_step_start"),
        "{}",
        text(&crashed.stderr)
    );
    let resumed = run(hodei().args(["run", "--store", &store_arg]));
    let stdout = text(&resumed.stdout);
    assert_eq!(resumed.status.code(), Some(0), "{stdout}");
    let log = &stored_logs(&store)[0];
    assert!(log.contains("was lost"), "{log}");
    assert!(
        log.contains("[hodei] trying step 2 again, attempt 3, in the job's workspace\nprepared\n"),
        "{log}"
    );
    let summary = compact(&resumed.stdout);
    assert!(
        summary.contains("a succeeded 1 "),
        "one job attempt: {summary}"
    );
}

#[test]
fn a_retry_delay_is_kept_across_a_crash() {
    // The first attempt fails, the retry waits 3 s; Hodei is killed during the wait. The
    // resumed run waits for the rest of the delay, not for nothing and not for all of it anew.
    let dir = scratch("retry-delay");
    let flag = dir.join("failed-once");
    let file = write(
        &dir,
        "p.yml",
        &format!(
            "name: delay\njobs:\n  a:\n    retry: {{max: 1, delay: 3s}}\n    steps: ['test -e {0} || {{ touch {0}; exit 1; }}']\n",
            flag.display()
        ),
    );
    let store = dir.join("runs.db");
    let store_arg = store.to_string_lossy().into_owned();
    let mut child = hodei()
        .args(["run", &file, "--store", &store_arg])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !flag.exists() {
        assert!(
            Instant::now() < deadline,
            "the first attempt never ran: likely deadlocked"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Past the recording of the retry, well within its delay.
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let resumed = run(hodei().args(["run", "--store", &store_arg]));
    let stdout = compact(&resumed.stdout);
    assert_eq!(resumed.status.code(), Some(0), "{stdout}");
    // Progress lines start with the seconds since this process started.
    let placed: f64 = stdout
        .lines()
        .find(|l| l.contains("a placed on local"))
        .and_then(|l| l.trim_start_matches('[').split('s').next())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("no placement in {stdout}"));
    assert!(
        (0.5..3.0).contains(&placed),
        "the rest of the delay (about 2.7 s) was waited for, placed at {placed} s: {stdout}"
    );
}

/// The busybox image of these tests (see `common::import_busybox`).
const BUSYBOX: &str = common::BUSYBOX;

/// Builds the image once, and keeps the Docker tests one at a time, so that each counts only
/// its own containers.
fn busybox_image() -> std::sync::MutexGuard<'static, ()> {
    static BUILT: std::sync::Once = std::sync::Once::new();
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    BUILT.call_once(common::import_busybox);
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Containers on the engine that carry Hodei's labels.
fn hodei_containers() -> usize {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=hodei.instance"])
        .output()
        .expect("the docker client must be installed for the Docker tests");
    assert!(out.status.success(), "the Docker engine must be running");
    text(&out.stdout).lines().count()
}

#[test]
fn a_pipeline_mixing_container_and_local_jobs_runs_green_and_leaves_nothing() {
    let _engine = busybox_image();
    let before = hodei_containers();
    let dir = scratch("mixed");
    let file = write(
        &dir,
        "p.yml",
        "name: mixed\njobs:\n  boxed:\n    image: hodei-test/busybox-run:1\n    pull: never\n    steps:\n      - test ! -e /etc/os-release && echo inside a container\n      - echo \"greeting=$GREETING\"\n    env: {GREETING: hello}\n  host:\n    needs: [boxed]\n    steps: ['test -e /etc/os-release && echo on the host']\n",
    );
    let out = run(hodei().args(["run", &file]));
    let stdout = compact(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("boxed | inside a container"), "{stdout}");
    assert!(stdout.contains("boxed | greeting=hello"), "{stdout}");
    assert!(stdout.contains("host | on the host"), "{stdout}");
    assert_eq!(hodei_containers(), before, "no container is left behind");
}

#[test]
fn a_container_job_reaches_its_service_by_name_and_keeps_its_output() {
    let _engine = busybox_image();
    let before = hodei_containers();
    let dir = scratch("service");
    let file = write(
        &dir,
        "p.yml",
        &format!(
            "name: svc\njobs:\n  probe:\n    image: {BUSYBOX}\n    pull: never\n    services:\n      web:\n        image: {BUSYBOX}\n        command: [sh, -c, 'echo web is up; mkdir -p /www; echo hello from web > /www/index.html; exec httpd -f -p 8080 -h /www']\n        ports: [8080]\n    steps:\n      - wget -q -O - http://web:8080/index.html\n"
        ),
    );
    let store = dir.join("runs.db");
    let out = run(hodei().args(["run", &file, "--store", &store.to_string_lossy()]));
    let stdout = compact(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("probe | hello from web"), "{stdout}");
    let log = &stored_logs(&store)[0];
    assert!(
        log.contains("[hodei] output of the service `web`:\nweb is up\n"),
        "the service's output is kept in the job's log: {log}"
    );
    assert_eq!(hodei_containers(), before, "no container is left behind");
}

#[test]
fn container_jobs_wait_while_the_engine_is_away_and_go_on_when_it_is_back() {
    let _engine = busybox_image();
    let dir = scratch("engine-away");
    // The engine's socket is not there yet: Hodei is pointed at a path that will lead to it.
    let socket = dir.join("docker.sock");
    let file = write(
        &dir,
        "p.yml",
        &format!(
            "name: away\njobs:\n  boxed:\n    image: {BUSYBOX}\n    pull: never\n    steps: [echo in the box]\n  local:\n    steps: [echo on the host]\n"
        ),
    );
    let child = hodei()
        .args(["run", &file])
        .env("HODEI_DOCKER_HOST", format!("unix://{}", socket.display()))
        .env("HODEI_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    std::os::unix::fs::symlink("/var/run/docker.sock", &socket).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = compact(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("Jobs with an image wait until the Docker engine answers")
            && stderr.contains("The Docker engine answers again"),
        "{stderr}"
    );
    assert!(stdout.contains("local | on the host"), "{stdout}");
    assert!(stdout.contains("boxed | in the box"), "{stdout}");
    // The local job did not wait for the engine; the container job did.
    let placed = |job: &str| {
        stdout
            .lines()
            .find(|l| l.contains(&format!("{job} placed on local")))
            .and_then(|l| l.trim_start_matches('[').split('s').next())
            .and_then(|t| t.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{job} was never placed: {stdout}"))
    };
    assert!(placed("local") < 1.0, "{stdout}");
    assert!(placed("boxed") >= 1.5, "{stdout}");
}

#[test]
fn ctrl_c_stops_a_container_step_and_leaves_no_container() {
    let _engine = busybox_image();
    let before = hodei_containers();
    let dir = scratch("ctrlc-docker");
    let file = write(
        &dir,
        "p.yml",
        &format!(
            "name: long\njobs:\n  boxed:\n    image: {BUSYBOX}\n    pull: never\n    steps: ['echo box-is-up; sleep 600']\n"
        ),
    );
    let mut child = hodei()
        .args(["run", &file])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the step's first line, then cancel.
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.contains("box-is-up") {
        assert!(Instant::now() < deadline, "the step never started: {seen}");
        let mut buf = [0u8; 4096];
        let n = std::io::Read::read(&mut stdout, &mut buf).unwrap();
        assert!(n > 0, "hodei ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{seen}{rest}");
    assert!(rest.contains("cancelled"), "{seen}{rest}");
    assert_eq!(
        hodei_containers(),
        before,
        "the container was stopped and removed"
    );
}

#[test]
fn slots_limit_how_many_jobs_run_at_once() {
    let dir = scratch("slots");
    let trace = dir.join("trace");
    let job = |name: &str| {
        format!(
            "  {name}: {{steps: ['echo start >> \"$TRACE\"; sleep 0.2; echo end >> \"$TRACE\"']}}\n"
        )
    };
    let file = write(
        &dir,
        "p.yml",
        &format!("name: one\njobs:\n{}{}{}", job("a"), job("b"), job("c")),
    );
    let out = run(hodei().args([
        "run",
        &file,
        "--slots",
        "1",
        "-e",
        &format!("TRACE={}", trace.display()),
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let trace = std::fs::read_to_string(&trace).unwrap();
    assert_eq!(
        trace, "start\nend\nstart\nend\nstart\nend\n",
        "one job at a time"
    );
}

#[path = "run/docker_crash.rs"]
mod docker_crash;

#[path = "run/postgres.rs"]
mod postgres;

#[path = "run/shutdown.rs"]
mod shutdown;

#[path = "run/approval.rs"]
mod approval;

#[test]
fn the_secrets_a_pipeline_names_come_from_the_environment_under_hodei_run() {
    let dir = scratch("named-secrets");
    let file = write(
        &dir,
        "p.yml",
        "name: p\nsecrets: [NAMED_TOKEN]\njobs:\n  show:\n    steps:\n      - run: 'echo \"token is $NAMED_TOKEN\"'\n",
    );
    let out = run(hodei()
        .args(["run", &file])
        .env("NAMED_TOKEN", "named-s3cr3t"));
    let stdout = compact(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("show | token is ***"), "{stdout}");
    assert!(!stdout.contains("named-s3cr3t"), "{stdout}");

    let out = run(hodei().args(["run", &file]).env_remove("NAMED_TOKEN"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .contains("secret `NAMED_TOKEN`: the environment variable `NAMED_TOKEN` is not set"),
        "{}",
        text(&out.stderr)
    );
}
