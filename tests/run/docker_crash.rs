//! A container step outlives a crash of Hodei: `hodei run --store` is killed with `SIGKILL`
//! while the step runs, started again, and takes the step back instead of running it again.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{BUSYBOX, busybox_image, hodei, run, scratch, stored_logs, text, write};

/// Starts `hodei` and reads its output until `needle` shows; the process runs on.
fn spawn_until(command: &mut Command, needle: &str) -> (Child, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("hodei starts");
    let mut stdout = child.stdout.take().expect("piped");
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} never showed within 60 s, likely deadlocked: {seen}"
        );
        let mut buf = [0u8; 4096];
        let n = stdout.read(&mut buf).expect("read hodei's output");
        assert!(n > 0, "hodei ended before {needle:?} showed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // The pipe stays open with the child: closed, Hodei's next line would find no reader and
    // end the run as Ctrl-C does, before the test kills it.
    child.stdout = Some(stdout);
    (child, seen)
}

/// Runs a docker command and returns its output, failing loudly when the engine is missing.
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker client must be installed for the Docker tests");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The `hodei.instance` of the store whose container workspaces are under `workspaces`, read
/// from the labels of one of its containers.
fn instance_of(workspaces: &Path) -> String {
    let wanted = workspaces.to_string_lossy().into_owned();
    for id in docker(&["ps", "-aq", "--filter", "label=hodei.instance"]).lines() {
        let found = docker(&[
            "inspect",
            "-f",
            "{{index .Config.Labels \"hodei.instance\"}} {{range .HostConfig.Binds}}{{.}} {{end}}",
            id,
        ]);
        if let Some((instance, binds)) = found.trim().split_once(' ')
            && binds.contains(&wanted)
        {
            return instance.to_owned();
        }
    }
    panic!("no container of the store with workspaces under {wanted}");
}

/// The containers and networks of `instance` on the engine.
fn left_behind(instance: &str) -> String {
    let filter = format!("label=hodei.instance={instance}");
    let containers = docker(&["ps", "-aq", "--filter", &filter]);
    let networks = docker(&["network", "ls", "-q", "--filter", &filter]);
    format!("{containers}{networks}")
}

/// Waits until the containers of `instance` have all stopped.
fn wait_until_stopped(instance: &str) {
    let filter = format!("label=hodei.instance={instance}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !docker(&["ps", "-q", "--filter", &filter]).trim().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the step's container did not stop within 30 s, likely deadlocked"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The one job workspace under a store's container workspaces.
fn workspace(workspaces: &Path) -> PathBuf {
    let dirs: Vec<_> = std::fs::read_dir(workspaces)
        .expect("the container workspaces exist")
        .map(|e| e.expect("an entry").path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

/// A store whose `hodei run` was killed with `SIGKILL` in a container step.
struct Crashed {
    store: PathBuf,
    /// The container workspaces of the store.
    workspaces: PathBuf,
    /// The store's `hodei.instance`.
    instance: String,
    /// What the killed Hodei printed.
    seen: String,
}

impl Crashed {
    /// Runs `pipeline` with `hodei run --store` (with `args` and `env` added), and kills it
    /// with `SIGKILL` once `needle` shows in its output.
    fn kill_when(
        test: &str,
        pipeline: &str,
        args: &[&str],
        env: &[(&str, &str)],
        needle: &str,
    ) -> Crashed {
        let dir = scratch(test);
        let file = write(&dir, "p.yml", pipeline);
        let store = dir.join("runs.db");
        let mut command = hodei();
        command
            .args(["run", &file, "--store", &store.to_string_lossy()])
            .args(args)
            .envs(env.iter().copied());
        let (mut first, seen) = spawn_until(&mut command, needle);
        let workspaces = dir.join("runs.db.docker");
        let instance = instance_of(&workspaces);
        first.kill().expect("SIGKILL");
        first.wait().expect("the first life ends");
        Crashed {
            store,
            workspaces,
            instance,
            seen,
        }
    }

    /// The next life: `hodei run --store`, which must succeed; its output and the job's log.
    fn resume(&self, env: &[(&str, &str)]) -> (String, String) {
        let resumed = run(hodei()
            .args(["run", "--store", &self.store.to_string_lossy()])
            .envs(env.iter().copied()));
        let stdout = text(&resumed.stdout);
        assert_eq!(
            resumed.status.code(),
            Some(0),
            "{stdout}\n{}",
            text(&resumed.stderr)
        );
        assert!(stdout.contains("Resuming 1 unfinished run"), "{stdout}");
        let log = stored_logs(&self.store).remove(0);
        assert_eq!(
            left_behind(&self.instance),
            "",
            "nothing of the store is left on the engine"
        );
        (stdout, log)
    }
}

#[test]
fn a_container_step_running_when_hodei_is_killed_is_taken_back_not_run_again() {
    let _engine = busybox_image();
    // The step counts its runs in the workspace, then prints 40 numbered lines, slowly; the
    // second step shows how often the first ran.
    let pipeline = format!(
        "name: reattach\njobs:\n  count:\n    image: {BUSYBOX}\n    pull: never\n    steps:\n      - name: count\n        run: |\n          echo ran >> runs\n          i=1\n          while [ $i -le 40 ]; do echo \"line $i\"; i=$((i+1)); sleep 0.05; done\n      - run: 'echo \"runs: $(cat runs)\"'\n"
    );
    let crashed = Crashed::kill_when("reattach", &pipeline, &[], &[], "line 8\n");
    assert!(
        !crashed.seen.contains("line 40"),
        "the step ended too soon: {}",
        crashed.seen
    );

    let (stdout, log) = crashed.resume(&[]);
    assert!(stdout.contains("of `reattach`: succeeded"), "{stdout}");
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("line ")).collect();
    let expected: Vec<String> = (1..=40).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected, "every line once, in order: {log}");
    assert!(log.contains("runs: ran\n"), "the step ran once: {log}");
    assert!(
        log.contains("[hodei] step 1 ran on while Hodei was down"),
        "{log}"
    );
    assert!(!log.contains("was lost"), "{log}");
}

#[test]
fn a_container_step_that_ended_while_hodei_was_down_counts_and_its_secret_stays_masked() {
    let _engine = busybox_image();
    // The secret is printed in two halves: the first before the crash, the second once the
    // test lets the step go on, after Hodei was killed. The step's exit code (3) is collected.
    let pipeline = format!(
        "name: ended\njobs:\n  leak:\n    image: {BUSYBOX}\n    pull: never\n    steps:\n      - run: |\n          echo before\n          printf 'key=%s' \"${{API_TOKEN%-value-42}}\"\n          while [ ! -f go ]; do sleep 0.05; done\n          printf '%s\\nafter\\n' \"${{API_TOKEN#s3cr3t}}\"\n          exit 3\n        continue_on_error: true\n      - echo next step\n"
    );
    let secret = [("API_TOKEN", "s3cr3t-value-42")];
    let crashed = Crashed::kill_when(
        "reattach-ended",
        &pipeline,
        &["--secret", "API_TOKEN"],
        &secret,
        "before\n",
    );
    // While Hodei is down, the step prints the rest of the secret and ends.
    std::fs::write(workspace(&crashed.workspaces).join("go"), b"").expect("let the step go on");
    wait_until_stopped(&crashed.instance);

    let (stdout, log) = crashed.resume(&secret);
    assert!(stdout.contains("of `ended`: succeeded"), "{stdout}");
    assert!(log.starts_with("before\nkey=***\nafter\n"), "{log}");
    assert!(
        !log.contains("s3cr3t") && !log.contains("value-42"),
        "the secret leaked: {log}"
    );
    assert!(
        log.contains("[hodei] step 1 failed (exit code 3); the job goes on"),
        "the exit code collected counts: {log}"
    );
    assert!(log.contains("next step\n"), "{log}");
}
