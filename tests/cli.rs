//! End-to-end tests of the `hodei` binary as users and CI call it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

#[path = "cli/pod_steps.rs"]
mod pod_steps;

fn hodei() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hodei"))
}

fn run(args: &[&str]) -> Output {
    hodei()
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("the hodei binary starts")
}

fn code(output: &Output) -> i32 {
    output
        .status
        .code()
        .expect("hodei exits by itself, not by a signal")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A directory for this test's files, removed and made anew each time.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn validate_prints_one_summary_line_per_valid_file() {
    let files = [
        example("rust-crate.yml"),
        example("web-app.yml"),
        example("monorepo.yml"),
    ];
    let mut args = vec!["validate"];
    args.extend(files.iter().map(String::as_str));
    let out = run(&args);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[2].ends_with("monorepo.yml: ok: pipeline `monorepo`, 9 jobs, 14 edges"),
        "{stdout}"
    );
    assert!(text(&out.stderr).is_empty());
}

#[test]
fn validate_shows_every_error_rustc_style_and_exits_1() {
    let dir = scratch("errors");
    let file = write(
        &dir,
        "p.yml",
        "name: w\njobs:\n  build: {steps: [make]}\n  deploy:\n    needs: [biuld]\n    stpes: [x]\n    steps: [x]\n",
    );
    let out = run(&["validate", &file]);
    assert_eq!(code(&out), 1);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error[unknown-reference]: unknown job `biuld`"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("--> {file}:5:13")), "{stderr}");
    assert!(stderr.contains("5 |     needs: [biuld]\n"), "{stderr}");
    assert!(
        stderr.contains("  |             ^^^^^ expected the name of a job of this pipeline"),
        "{stderr}"
    );
    assert!(
        stderr.contains("= help: did you mean \"build\"?"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error[unknown-key]: unknown key `stpes` in a job"),
        "{stderr}"
    );
    assert!(stderr.contains("invalid: 2 errors"), "{stderr}");
    assert!(!stderr.contains("\x1b["), "no colour without a terminal");
}

#[test]
fn validate_reports_valid_and_invalid_files_together() {
    let dir = scratch("mixed");
    let bad = write(&dir, "bad.yml", "name: w\njobs: {}\n");
    let out = run(&["validate", &example("web-app.yml"), &bad]);
    assert_eq!(code(&out), 1);
    assert!(text(&out.stdout).contains("web-app.yml: ok"));
    assert!(text(&out.stderr).contains("the pipeline has no job"));
}

#[test]
fn validate_json_is_one_document_for_editors_and_ci() {
    let dir = scratch("json");
    let bad = write(
        &dir,
        "bad.yml",
        "name: w\njobs:\n  a: {needs: [b], steps: [x]}\n  b: {needs: [a], steps: [x]}\n",
    );
    let out = run(&[
        "validate",
        "--format",
        "json",
        &example("rust-crate.yml"),
        &bad,
    ]);
    assert_eq!(code(&out), 1);
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(report["valid"], false);
    let files = report["files"].as_array().unwrap();
    assert_eq!(files[0]["valid"], true);
    assert_eq!(files[0]["pipeline"], "rust-crate");
    assert_eq!(files[0]["jobs"], 6);
    assert_eq!(files[1]["valid"], false);
    assert_eq!(files[1]["errors"], 1);
    let diag = &files[1]["diagnostics"][0];
    assert_eq!(diag["severity"], "error");
    assert_eq!(diag["code"], "cycle");
    assert_eq!(diag["path"], "jobs.a.needs[0]");
    assert_eq!(diag["span"]["start"]["line"], 3);
    assert_eq!(diag["span"]["start"]["column"], 15);
    assert_eq!(
        diag["message"],
        "jobs need each other in a cycle: a -> b -> a"
    );
}

#[test]
fn validate_reads_standard_input() {
    let mut child = hodei()
        .args(["validate", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"name: s\njobs: {a: {steps: [x]}}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "-: ok: pipeline `s`, 1 job, 0 edges\n");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["validate"],
        vec!["validate", "--format", "xml", "x.yml"],
        vec!["frobnicate"],
        vec![],
    ] {
        let out = run(&args);
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out.stderr));
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    let out = run(&["validate", "/nonexistent/pipeline.yml"]);
    assert_eq!(code(&out), 2);
    assert!(text(&out.stderr).contains("cannot read `/nonexistent/pipeline.yml`"));
    let out = run(&["validate", env!("CARGO_MANIFEST_DIR")]);
    assert_eq!(code(&out), 2, "a directory is not a pipeline");
}

#[test]
fn help_and_version_succeed() {
    let out = run(&["--help"]);
    assert_eq!(code(&out), 0);
    assert!(text(&out.stdout).contains("validate"));
    let out = run(&["validate", "--help"]);
    assert_eq!(code(&out), 0);
    assert!(text(&out.stdout).contains("Examples:"));
    let out = run(&["--version"]);
    assert_eq!(code(&out), 0);
    assert!(text(&out.stdout).starts_with("hodei "));
}

#[test]
fn commands_offer_only_the_options_they_use() {
    let dir = scratch("options");
    let file = write(
        &dir,
        "p.yml",
        "name: p\njobs:\n  a:\n    steps: [{ run: \"true\" }]\n",
    );
    // `run`, `validate` and `server` ask no server: no `-o` or `--context` in their help, and
    // either one is a usage error naming it, before anything runs.
    for command in ["run", "validate", "server"] {
        let out = run(&[command, "--help"]);
        assert_eq!(code(&out), 0);
        let help = text(&out.stdout);
        assert!(
            !help.contains("--output") && !help.contains("--context"),
            "hodei {command} --help: {help}"
        );
    }
    for (args, flag) in [
        (vec!["run", file.as_str(), "-o", "json"], "'-o'"),
        (
            vec!["run", file.as_str(), "--context", "prod"],
            "'--context'",
        ),
        (vec!["validate", file.as_str(), "-o", "yaml"], "'-o'"),
        (vec!["server", "--context", "prod"], "'--context'"),
        (vec!["-o", "json", "status"], "'-o'"),
    ] {
        let out = run(&args);
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("unexpected argument {flag}")),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: nothing ran");
    }
    // The commands that ask a server take both, also after a subcommand.
    for args in [
        vec!["runs", "list", "--help"],
        vec!["queue", "--help"],
        vec!["status", "--help"],
    ] {
        let help = text(&run(&args).stdout);
        assert!(
            help.contains("--output") && help.contains("--context"),
            "{args:?}: {help}"
        );
    }
    let help = text(&run(&["contexts", "list", "--help"]).stdout);
    assert!(
        help.contains("--output") && !help.contains("--context"),
        "{help}"
    );
}

#[test]
fn hostile_files_exit_1_with_a_positioned_diagnostic_never_101() {
    let dir = scratch("hostile");
    let mut bomb = String::from("name: w\nl0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..12 {
        bomb.push_str(&format!(
            "l{i}: &l{i} [{}]\n",
            vec![format!("*l{}", i - 1); 9].join(", ")
        ));
    }
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bomb.yml", bomb.into_bytes(), "error[limit]"),
        ("deep.yml", format!("name: w\njobs: {}", "[".repeat(10_000)).into_bytes(), "error[limit]"),
        ("huge.yml", vec![b'#'; 5 << 20], "error[limit]"),
        ("garbage.yml", (0..=255u8).cycle().take(4096).collect(), "error[syntax]"),
        ("empty.yml", Vec::new(), "the file holds no pipeline"),
        ("matrix.yml", b"name: w\njobs:\n  t:\n    matrix: {a: [1,2,3,4,5,6,7,8,9], b: [1,2,3,4,5,6,7,8,9], c: [1,2,3,4]}\n    steps: [x]\n".to_vec(), "the matrix expands to 324 instances"),
    ];
    for (name, bytes, expected) in cases {
        let file = write(&dir, name, bytes);
        let out = run(&["validate", &file]);
        assert_eq!(code(&out), 1, "{name}: {}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(stderr.contains(&format!("--> {file}")), "{name}: {stderr}");
    }
}

#[test]
fn server_refuses_a_bad_setting_naming_where_it_came_from() {
    let dir = scratch("server-config");
    let config = write(&dir, "hodei.toml", "lisen = \"0.0.0.0:1\"\n");
    let out = run(&["server", "--config", &config]);
    assert_eq!(code(&out), 2, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("unknown key `lisen` (did you mean `listen`?)"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["server", "--listen", "localhost"]);
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stderr).contains("flag --listen: `listen` is \"localhost\": expected"),
        "{}",
        text(&out.stderr)
    );
}

/// Starts `hodei server` on a free port; answers the child and its stdout up to the URL line.
fn start_server(data: &Path) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = hodei()
        .args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env_remove("HODEI_BOOTSTRAP_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the hodei binary starts");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        match stdout.read_line(&mut line) {
            Ok(read) if read > 0 => {}
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server stopped before listening: {seen}");
            }
        }
        seen.push_str(&line);
        if line.contains("listening on http://") {
            return (child, seen);
        }
    }
}

fn stop_server(mut child: std::process::Child) -> i32 {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap().code().expect("exits by itself")
}

#[test]
fn server_prints_its_admin_token_once_writes_it_0600_and_stops_on_sigterm() {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("server-start");
    let data = dir.join("data");
    let (child, stdout) = start_server(&data);
    let token_file = data.join("admin.token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(token.trim().starts_with("hodei_"), "{token}");
    assert!(
        stdout.contains(token.trim()),
        "the token is printed: {stdout}"
    );
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let url = stdout.lines().last().unwrap();
    let addr = url
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(stop_server(child), 0);

    // The second start finds its token: nothing is printed or rewritten.
    let (child, stdout) = start_server(&data);
    assert!(!stdout.contains("hodei_"), "{stdout}");
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), token);
    assert_eq!(stop_server(child), 0);
}

#[test]
fn a_command_whose_reader_goes_away_ends_quietly() {
    // `hodei completions bash | head -3`.
    use std::os::unix::process::ExitStatusExt;
    let mut child = hodei()
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Gone before the first line is written: every write of the script meets a closed pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "{stderr}");
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}",
        out.status
    );
}
