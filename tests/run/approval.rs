//! Approval gates under `hodei run`: approved beforehand with `--approve`, asked about on a
//! terminal, refused (the run cancelled, its post hooks run) where there is nobody to ask.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{compact, hodei, run, scratch, text, write};

const GATED: &str = "\
name: gated
jobs:
  build:
    steps: [{ run: echo built }]
  deploy:
    needs: [build]
    approval: { role: operator }
    steps: [{ run: echo deployed }]
post:
  always: [{ run: echo post-hook }]
";

#[test]
fn without_a_terminal_a_gated_job_is_refused_unless_approved_beforehand() {
    let dir = scratch("approval-refused");
    let file = write(&dir, "gated.yml", GATED);

    // Nobody to ask: the gated job does not run, the run is cancelled with the reason said
    // and how to approve, and the post hooks run.
    let out = run(hodei().args(["run", &file]).stdin(Stdio::null()));
    let (stdout, stderr) = (compact(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(
            "job `deploy` of run-1 waits for an approval and there is no terminal to ask on"
        ) && stderr.contains("--approve deploy"),
        "{stderr}"
    );
    assert!(stdout.contains("build | built"), "{stdout}");
    assert!(
        !stdout.contains("deployed"),
        "the gated job never ran: {stdout}"
    );
    assert!(stdout.contains("(post) | post-hook"), "{stdout}");
    assert!(stdout.contains("deploy cancelled"), "{stdout}");
    assert!(stdout.contains("run-1 of `gated`: cancelled"), "{stdout}");

    // Approved by name, or all at once: it runs.
    for approve in ["deploy", "all"] {
        let out = run(hodei()
            .args(["run", &file, "--approve", approve])
            .stdin(Stdio::null()));
        let stdout = compact(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}\n{}",
            text(&out.stderr)
        );
        assert!(stdout.contains("deploy | deployed"), "{stdout}");
        assert!(stdout.contains("run-1 of `gated`: succeeded"), "{stdout}");
    }
    let out = run(hodei()
        .args(["run", &file, "--approve", "deploy"])
        .stdin(Stdio::null()));
    assert!(
        compact(&out.stdout).contains("deploy approved by local user (--approve)"),
        "{}",
        text(&out.stdout)
    );

    // A name that is no gated job is a usage error before anything runs.
    let out = run(hodei()
        .args(["run", &file, "--approve", "build"])
        .stdin(Stdio::null()));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(
            "--approve `build`: the pipeline has no job `build` with `approval:` (its jobs with an approval gate: deploy; or `all`)"
        ),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

/// Runs `hodei run FILE` on a pseudo-terminal (util-linux's `script`), answers its question
/// with `answer`, and gives back its exit code and everything it printed.
fn on_a_terminal(file: &str, answer: &str) -> (Option<i32>, String) {
    let command = format!("'{}' run '{file}'", env!("CARGO_BIN_EXE_hodei"));
    let mut child = Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env("NO_COLOR", "1")
        .env_remove("HODEI_FAULT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("`script` (util-linux) runs hodei on a pseudo-terminal");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answered = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(bytes) => seen.extend(bytes),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if !answered && text(&seen).contains("[y/N] ") {
            let stdin = child.stdin.as_mut().unwrap();
            stdin.write_all(answer.as_bytes()).unwrap();
            stdin.flush().unwrap();
            answered = true;
        }
        assert!(
            Instant::now() < deadline,
            "no end in 60 s: likely deadlocked\n{}",
            text(&seen)
        );
    }
    let status = child.wait().unwrap();
    assert!(answered, "never asked:\n{}", text(&seen));
    (status.code(), text(&seen).replace('\r', ""))
}

#[test]
fn on_a_terminal_a_gated_job_is_asked_about_by_name() {
    let dir = scratch("approval-asked");
    let file = write(&dir, "gated.yml", GATED);
    let (code, out) = on_a_terminal(&file, "y\n");
    assert!(
        out.contains("Approve job `deploy` of run-1 (pipeline `gated`)? [y/N] "),
        "{out}"
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("approved by local user (asked)"), "{out}");
    assert!(out.contains("deployed"), "{out}");

    // Anything but yes, an empty answer included, refuses it.
    let (code, out) = on_a_terminal(&file, "\n");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("job `deploy` was not approved: cancelling run-1"),
        "{out}"
    );
    assert!(!out.contains("deployed"), "{out}");
    assert!(out.contains("post-hook"), "{out}");
}
