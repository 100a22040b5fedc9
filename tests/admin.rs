//! The admin CLI end to end: the real `hodei` binary against a real `hodei server` on loopback.
//! Logging in, applying pipelines, starting and following runs, cancelling, the JSON that
//! scripts read, the exit codes, and a follow that survives dropped connections (through a
//! proxy that the test cuts) without losing or repeating a line.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, scratch};
use serde_json::Value;

/// The CLI with its own config file.
struct Cli {
    config: PathBuf,
    env: Vec<(String, String)>,
}

impl Cli {
    fn new(dir: &Path) -> Cli {
        Cli {
            config: dir.join("cli").join("config.toml"),
            env: Vec::new(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hodei"));
        command
            .args(args)
            .env("HODEI_CONFIG", &self.config)
            .env("NO_COLOR", "1")
            .env_remove("HODEI_URL")
            .env_remove("HODEI_TOKEN")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("hodei runs")
    }

    /// Runs and expects exit code `code`; answers standard output.
    fn expect(&self, code: i32, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "hodei {args:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs with `-o json` and parses what it prints.
    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        let text = self.expect(0, &args);
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("{err}: {text}"))
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A server, and a CLI logged in to it as admin.
fn setup(test: &str) -> (PathBuf, Server, Cli) {
    let dir = scratch(&format!("admin-{test}"));
    let server = Server::start(&dir.join("data"));
    let token = std::fs::read_to_string(dir.join("data").join("admin.token")).unwrap();
    let cli = Cli::new(&dir);
    cli.expect(0, &["login", &server.url, "--token", token.trim()]);
    (dir, server, cli)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn login_keeps_a_private_context_and_refusals_exit_3_with_how_to_fix_them() {
    let dir = scratch("admin-login");
    let server = Server::start(&dir.join("data"));
    let token = std::fs::read_to_string(dir.join("data").join("admin.token")).unwrap();
    let cli = Cli::new(&dir);

    // Nothing configured yet: says how to log in.
    let out = cli.run(&["status"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("hodei login URL"), "{}", stderr(&out));

    // A wrong token is refused, names the server, and saves nothing.
    let out = cli.run(&["login", &server.url, "--token", "hodei_wrong"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains(&server.url), "{}", stderr(&out));
    assert!(stderr(&out).contains("hodei login"), "{}", stderr(&out));
    assert!(!cli.config.exists());

    // No server there: unreachable, with the URL tried.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = cli.run(&["login", &nowhere, "--token", token.trim()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains(&format!("cannot reach the Hodei server at {nowhere}")),
        "{}",
        stderr(&out)
    );

    // The token on standard input; the file is the owner's only.
    let mut login = cli
        .command(&["login", &server.url, "--name", "local"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    login
        .stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    assert!(login.wait_with_output().unwrap().status.success());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cli.config).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let status = cli.json(&["status"]);
    assert_eq!(status["status"], "ready");
    assert_eq!(status["workers"][0]["id"], "local");

    // HODEI_TOKEN overrides the context's token; an unknown --context lists the known ones.
    let mut bad = Cli::new(&dir);
    bad.env.push(("HODEI_TOKEN".into(), "hodei_revoked".into()));
    let out = bad.run(&["runs", "list"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = cli.run(&["runs", "list", "--context", "prod"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("known: local"), "{}", stderr(&out));
    let contexts = cli.json(&["contexts", "list"]);
    assert_eq!(contexts[0]["name"], "local");
    assert_eq!(contexts[0]["current"], true);
}

#[test]
fn apply_validates_first_and_a_followed_run_exits_with_its_outcome() {
    let (dir, _server, cli) = setup("follow");
    // An invalid file: diagnostics as `hodei validate` prints them, nothing applied, exit 2.
    let good = write(
        &dir,
        "good.yml",
        "name: greet\njobs:\n  hello:\n    steps:\n      - run: echo one; echo two\n      - run: printf 'no newline'\n  after:\n    needs: [hello]\n    steps: [{ run: echo after }]\n",
    );
    let bad = write(
        &dir,
        "bad.yml",
        "name: broken\njobs:\n  a:\n    needs: [b]\n    steps: [{ run: 'true' }]\n",
    );
    let out = cli.run(&["pipelines", "apply", &good, &bad]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bad.yml:4:"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing was applied"),
        "{}",
        stderr(&out)
    );
    assert_eq!(cli.json(&["pipelines", "list"]), Value::Array(Vec::new()));

    let applied = cli.json(&["pipelines", "apply", &good]);
    assert_eq!(applied[0]["name"], "greet");
    assert_eq!(applied[0]["version"], 1);
    assert_eq!(applied[0]["changed"], true);

    // Followed: every line of every job, prefixed with its job, in order; exit 0.
    let out = cli.expect(0, &["runs", "start", "greet", "--follow"]);
    let lines: Vec<&str> = out.lines().collect();
    let hello: Vec<&&str> = lines.iter().filter(|l| l.starts_with("hello |")).collect();
    assert_eq!(
        hello,
        ["hello | one", "hello | two", "hello | no newline"]
            .iter()
            .collect::<Vec<_>>(),
        "{out}"
    );
    assert!(lines.contains(&"after | after"), "{out}");
    assert!(out.contains("run 1 succeeded"), "{out}");

    // A failing run: exit 1; scripts read the run from JSON.
    let failing = write(
        &dir,
        "fail.yml",
        "name: greet\njobs:\n  hello:\n    steps: [{ run: 'echo bad; exit 4' }]\n",
    );
    assert_eq!(cli.json(&["pipelines", "apply", &failing])[0]["version"], 2);
    let out = cli.run(&["runs", "start", "greet", "-f", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["state"], "failed");
    assert_eq!(run["jobs"][0]["steps"][0]["exit_code"], 4);
    let id = run["id"].as_u64().unwrap();

    let runs = cli.json(&["runs", "list", "--status", "failed"]);
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["id"], id);
    // Instants as RFC 3339 in UTC with milliseconds; durations stay numbers.
    let rfc3339 = |value: &Value| {
        let text = value.as_str().unwrap_or_default();
        let b = text.as_bytes();
        assert!(
            b.len() == 24 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && b[23] == b'Z',
            "not `2026-12-06T21:03:20.123Z`: {value}"
        );
    };
    rfc3339(&runs[0]["created"]);
    rfc3339(&run["finished"]);
    rfc3339(&run["jobs"][0]["steps"][0]["started"]);
    let logs = cli.expect(0, &["runs", "logs", &id.to_string()]);
    assert!(logs.starts_with("bad\n"), "{logs}");
    let logs = cli.expect(0, &["runs", "logs", "1", "--job", "hello", "--from", "4"]);
    assert!(logs.starts_with("two\nno newline"), "{logs}");
    let out = cli.run(&["runs", "logs", "1", "--job", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("its jobs are: hello, after"),
        "{}",
        stderr(&out)
    );
    // An unknown run: the server's refusal, exit 2.
    let out = cli.run(&["runs", "show", "999"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("run 999 not found"),
        "{}",
        stderr(&out)
    );
    let yaml = cli.expect(0, &["runs", "show", "1", "-o", "yaml"]);
    assert!(yaml.starts_with("id: 1\npipeline: greet\n"), "{yaml}");
    let created = yaml
        .lines()
        .find_map(|l| l.strip_prefix("created: "))
        .unwrap_or_else(|| panic!("{yaml}"));
    rfc3339(&Value::from(
        created.trim_matches(|c| c == '"' || c == '\''),
    ));

    // Retry keeps what succeeded: follow the new run.
    let retried = cli.run(&["runs", "retry", &id.to_string(), "-o", "json"]);
    assert!(retried.status.success(), "{}", stderr(&retried));
}

#[test]
fn a_followed_log_that_is_not_text_is_printed_byte_for_byte() {
    let (dir, _server, cli) = setup("binary");
    let file = write(
        &dir,
        "bin.yml",
        "name: bin\njobs:\n  bin:\n    steps: [{ run: \"printf 'a\\\\377\\\\376b\\\\n\\\\200 \\\\303\\\\251t\\\\351\\\\n'\" }]\n",
    );
    cli.expect(0, &["pipelines", "apply", &file]);
    let out = cli.run(&["runs", "start", "bin", "--follow"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let expected: &[u8] = b"a\xff\xfeb\n\x80 \xc3\xa9t\xe9\n";
    let stored = cli.run(&["runs", "logs", "1", "--job", "bin"]);
    assert_eq!(stored.stdout, expected, "the stored log");
    let followed = cli.run(&["runs", "logs", "1", "--job", "bin", "-f"]);
    assert_eq!(followed.status.code(), Some(0), "{}", stderr(&followed));
    // The log's bytes as they are, then the job's outcome.
    assert!(
        followed.stdout.starts_with(expected),
        "followed: {:?}",
        followed.stdout
    );
    let rest = String::from_utf8(followed.stdout[expected.len()..].to_vec()).unwrap();
    assert!(rest.ends_with("bin  succeeded\n"), "{rest}");
}

#[test]
fn cancel_from_another_terminal_ends_a_follow_with_exit_1() {
    let (dir, _server, cli) = setup("cancel");
    let file = write(
        &dir,
        "long.yml",
        "name: long\njobs:\n  wait:\n    steps: [{ run: 'echo started; sleep 60' }]\n",
    );
    cli.expect(0, &["pipelines", "apply", &file]);
    let mut follow = cli
        .command(&["runs", "start", "long", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = read_lines(&mut follow);
    wait_for(&lines, "wait | started");
    // A second follower of the one job's log, from the terminal next door: no prefix.
    let mut logs = cli
        .command(&["runs", "logs", "1", "--job", "wait", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log_lines = read_lines(&mut logs);
    wait_for(&log_lines, "started");
    cli.expect(0, &["runs", "cancel", "1"]);
    let status = wait_exit(&mut follow, Duration::from_secs(30));
    assert_eq!(status, Some(1));
    assert_eq!(wait_exit(&mut logs, Duration::from_secs(30)), Some(1));
    assert_eq!(cli.json(&["runs", "show", "1"])["state"], "cancelled");
}

#[test]
fn a_follow_survives_dropped_connections_without_losing_or_repeating_a_line() {
    let (dir, server, cli) = setup("drop");
    let file = write(
        &dir,
        "count.yml",
        "name: count\njobs:\n  count:\n    steps:\n      - run: i=1; while [ $i -le 400 ]; do echo \"line $i\"; i=$((i+1)); sleep 0.01; done\n",
    );
    cli.expect(0, &["pipelines", "apply", &file]);
    let proxy = Proxy::start(server.url.trim_start_matches("http://"));
    let mut through = Cli::new(&dir);
    through
        .env
        .push(("HODEI_URL".into(), format!("http://{}", proxy.addr)));
    let token = std::fs::read_to_string(dir.join("data").join("admin.token")).unwrap();
    through
        .env
        .push(("HODEI_TOKEN".into(), token.trim().to_owned()));

    let mut follow = through
        .command(&["runs", "start", "count", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = follow.stderr.take().unwrap();
    let lines = read_lines(&mut follow);
    wait_for(&lines, "count | line 60");
    proxy.cut(Duration::from_millis(500));
    wait_for(&lines, "count | line 200");
    proxy.cut(Duration::from_millis(300));
    let status = wait_exit(&mut follow, Duration::from_secs(60));
    let mut errors = String::new();
    err.read_to_string(&mut errors).unwrap();
    assert_eq!(status, Some(0), "{errors}");
    assert!(errors.contains("reconnecting"), "{errors}");

    let out = lines.lock().unwrap().clone();
    let got: Vec<&String> = out.iter().filter(|l| l.starts_with("count | ")).collect();
    let want: Vec<String> = (1..=400).map(|i| format!("count | line {i}")).collect();
    assert_eq!(
        got.len(),
        want.len(),
        "every line exactly once:\n{}",
        out.join("\n")
    );
    assert!(got.iter().zip(&want).all(|(g, w)| *g == w), "in order");
}

#[test]
fn a_follow_outlives_a_sigkill_of_the_server_and_prints_the_log_exactly() {
    let (dir, mut server, cli) = setup("sigkill");
    let file = write(
        &dir,
        "count.yml",
        "name: count\njobs:\n  count:\n    steps:\n      - run: i=1; while [ $i -le 150 ]; do echo \"line $i\"; i=$((i+1)); sleep 0.02; done\n        retry: 1\n",
    );
    cli.expect(0, &["pipelines", "apply", &file]);
    let proxy = Proxy::start(server.url.trim_start_matches("http://"));
    let mut through = Cli::new(&dir);
    through
        .env
        .push(("HODEI_URL".into(), format!("http://{}", proxy.addr)));
    let token = std::fs::read_to_string(dir.join("data").join("admin.token")).unwrap();
    through
        .env
        .push(("HODEI_TOKEN".into(), token.trim().to_owned()));
    let mut follow = through
        .command(&["runs", "start", "count", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = follow.stderr.take().unwrap();
    let lines = read_lines(&mut follow);
    wait_for(&lines, "count | line 40");
    // The server dies mid-step; a new one on the same data resumes the run (the lost step is
    // tried again by its retry), and the CLI, through the same address, goes on.
    server.kill();
    proxy.cut(Duration::from_millis(200));
    let restarted = Server::start(&dir.join("data"));
    proxy.retarget(restarted.url.trim_start_matches("http://"));
    let status = wait_exit(&mut follow, Duration::from_secs(60));
    let mut errors = String::new();
    err.read_to_string(&mut errors).unwrap();
    assert_eq!(status, Some(0), "{errors}");
    assert!(errors.contains("reconnecting"), "{errors}");
    // What the CLI printed for the job is its stored log, byte for byte: nothing lost, nothing
    // twice (the retried step's output follows the lost try's, as the log has it).
    let mut after = Cli::new(&dir);
    after.env = through.env.clone();
    after.env[0].1 = restarted.url.clone();
    let stored = after.expect(0, &["runs", "logs", "1", "--job", "count"]);
    let printed: Vec<String> = lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| l.strip_prefix("count | ").map(str::to_owned))
        .collect();
    assert_eq!(printed, stored.lines().collect::<Vec<_>>());
    assert!(stored.contains("line 150"), "{stored}");
}

#[test]
fn tokens_workers_queue_events_and_completions_speak_json_and_roles() {
    let (dir, _server, cli) = setup("admin");
    let created = cli.json(&["tokens", "create", "--role", "viewer", "--name", "dash"]);
    let secret = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_u64().unwrap();
    let tokens = cli.json(&["tokens", "list"]);
    assert!(
        tokens
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "dash")
    );

    // A viewer reads, but cannot start a run: exit 3 with what to ask for.
    let mut viewer = Cli::new(&dir);
    viewer.config = dir.join("viewer.toml");
    viewer.env.push(("HODEI_URL".into(), _server.url.clone()));
    viewer.env.push(("HODEI_TOKEN".into(), secret));
    viewer.expect(0, &["runs", "list"]);
    let out = viewer.run(&["runs", "start", "anything"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("role"), "{}", stderr(&out));
    cli.expect(0, &["tokens", "revoke", &id.to_string()]);
    assert_eq!(viewer.run(&["runs", "list"]).status.code(), Some(3));

    let workers = cli.json(&["workers", "list"]);
    assert_eq!(workers[0]["id"], "local");
    cli.expect(0, &["workers", "drain", "local"]);
    assert_eq!(cli.json(&["workers", "list"])[0]["state"], "draining");
    // Drained: a run's job waits, and the queue says why.
    let file = write(
        &dir,
        "q.yml",
        "name: q\njobs:\n  j:\n    steps: [{ run: 'true' }]\n",
    );
    cli.expect(0, &["pipelines", "apply", &file]);
    let mut follow = cli
        .command(&["runs", "start", "q", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = read_lines(&mut follow);
    let deadline = Instant::now() + Duration::from_secs(30);
    let queue = loop {
        let queue = cli.json(&["queue"]);
        if queue["total"] == 1 {
            break queue;
        }
        assert!(Instant::now() < deadline, "the job never queued: {queue}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        queue["items"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("drain"),
        "{queue}"
    );
    let only_run = cli.json(&["queue", "--run", "1"]);
    assert_eq!(only_run["items"].as_array().unwrap().len(), 1, "{only_run}");
    assert_eq!(
        cli.json(&["queue", "--run", "2"])["items"],
        Value::Array(Vec::new())
    );
    // The follow view says why the job waits, then goes on once the worker takes jobs again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("queued: ") && l.contains("drain"))
    {
        assert!(Instant::now() < deadline, "{:?}", lines.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    cli.expect(0, &["workers", "undrain", "local"]);
    assert_eq!(wait_exit(&mut follow, Duration::from_secs(30)), Some(0));
    let events = cli.json(&["events", "--limit", "500"]);
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"]["type"] == "run_created" || e["event"]["type"] == "run_started"),
        "{events}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let script = cli.expect(0, &["completions", shell]);
        assert!(
            script.contains("pipelines") && script.contains("undrain"),
            "{shell}"
        );
    }
    let help = cli.expect(0, &["runs", "start", "--help"]);
    assert!(help.contains("Examples:"), "{help}");
}

#[test]
fn the_queue_shows_the_jobs_waiting_for_an_approval_and_who_may_approve_them() {
    let (dir, _server, cli) = setup("approval-queue");
    let file = write(
        &dir,
        "gated.yml",
        "name: gated\njobs:\n  deploy:\n    approval: { role: operator }\n    steps: [{ run: 'true' }]\n",
    );
    cli.expect(0, &["pipelines", "apply", &file]);
    cli.expect(0, &["runs", "start", "gated"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let queue = loop {
        let queue = cli.json(&["queue"]);
        if !queue["awaiting_approval"].as_array().unwrap().is_empty() {
            break queue;
        }
        assert!(Instant::now() < deadline, "the job never waited: {queue}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(queue["awaiting_approval"][0]["name"], "deploy", "{queue}");
    assert_eq!(queue["awaiting_approval"][0]["approver"], "operator");
    let job = queue["awaiting_approval"][0]["job"].as_u64().unwrap();
    let table = cli.expect(0, &["queue"]);
    assert!(table.contains("Waiting for approval"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("{job} ")))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("gated") && row.contains("deploy") && row.contains("operator or admin"),
        "{row}"
    );
    assert!(table.contains("hodei jobs approve JOB"), "{table}");
    cli.expect(0, &["jobs", "approve", &job.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cli.json(&["queue"])["awaiting_approval"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the approval did not take");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Collects a child's standard output lines as they come.
fn read_lines(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = child.stdout.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

fn wait_for(lines: &Mutex<Vec<String>>, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lines.lock().unwrap().iter().any(|l| l == line) {
        assert!(
            Instant::now() < deadline,
            "`{line}` never came (likely deadlocked):\n{}",
            lines.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the CLI did not exit within {limit:?}: likely deadlocked");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP proxy to the server that the test can cut: every open connection is shut, and new
/// ones are refused for a while.
struct Proxy {
    addr: String,
    upstream: Arc<Mutex<String>>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    refusing: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let refusing = Arc::new(AtomicBool::new(false));
        let upstream = Arc::new(Mutex::new(upstream.to_owned()));
        let (target, conns, refuse) = (upstream.clone(), open.clone(), refusing.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                if refuse.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let to = target.lock().unwrap().clone();
                let Ok(server) = TcpStream::connect(&to) else {
                    continue;
                };
                let mut list = conns.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                drop(list);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy {
            addr,
            upstream,
            open,
            refusing,
        }
    }

    /// Forwards new connections to another address.
    fn retarget(&self, upstream: &str) {
        *self.upstream.lock().unwrap() = upstream.to_owned();
    }

    /// Drops every connection, and refuses new ones for `for_how_long`.
    fn cut(&self, for_how_long: Duration) {
        self.refusing.store(true, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let refusing = self.refusing.clone();
        std::thread::spawn(move || {
            std::thread::sleep(for_how_long);
            refusing.store(false, Ordering::SeqCst);
        });
    }
}

#[test]
fn secrets_are_set_from_standard_input_never_shown_and_reach_the_run_masked() {
    let (dir, server, cli) = setup("secrets");
    let value = "piped-secret-value-42";
    // The value comes from standard input: never an argument of the process.
    let mut set = cli
        .command(&["secrets", "set", "DEPLOY_TOKEN", "--pipeline", "ship"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    set.stdin
        .take()
        .unwrap()
        .write_all(format!("{value}\n").as_bytes())
        .unwrap();
    let out = set.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("DEPLOY_TOKEN") && !printed.contains(value),
        "{printed}"
    );

    // A scope is required; an empty value is refused with how to give one.
    let out = cli.run(&["secrets", "set", "DEPLOY_TOKEN"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--pipeline NAME or --repository NAME"),
        "{}",
        stderr(&out)
    );
    let out = cli.run(&["secrets", "set", "EMPTY", "--pipeline", "ship"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is empty"), "{}", stderr(&out));

    let listed = cli.json(&["secrets", "list"]);
    assert_eq!(listed[0]["name"], "DEPLOY_TOKEN");
    assert_eq!(listed[0]["owner"], "ship");
    let table = cli.expect(0, &["secrets", "list", "--pipeline", "ship"]);
    assert!(
        table.contains("DEPLOY_TOKEN") && !table.contains(value),
        "{table}"
    );

    // The pipeline names it; its run gets it, masked; the trailing newline was dropped.
    let pipeline = write(
        &dir,
        "ship.yml",
        "name: ship\nsecrets: [DEPLOY_TOKEN]\njobs:\n  go:\n    steps: [{ run: 'echo \"t=$DEPLOY_TOKEN n=${#DEPLOY_TOKEN}\"' }]\n",
    );
    cli.expect(0, &["pipelines", "apply", &pipeline]);
    let out = cli.expect(0, &["runs", "start", "ship", "--follow"]);
    assert!(out.contains("t=*** n=21"), "{out}");
    assert!(!out.contains(value), "{out}");

    cli.expect(
        0,
        &["secrets", "delete", "DEPLOY_TOKEN", "--pipeline", "ship"],
    );
    let out = cli.run(&["runs", "start", "ship"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("hodei secrets set DEPLOY_TOKEN --pipeline ship"),
        "{}",
        stderr(&out)
    );
    drop(server);
}

#[test]
fn a_push_only_pipeline_starts_by_hand_only_with_override_triggers() {
    let (dir, _server, cli) = setup("override");
    let pipeline = write(
        &dir,
        "pushed.yml",
        "name: pushed\non: { push: { branches: [main] } }\njobs:\n  a: { steps: [{ run: 'echo ran' }] }\n",
    );
    cli.expect(0, &["pipelines", "apply", &pipeline]);
    let out = cli.run(&["runs", "start", "pushed"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--override-triggers"),
        "{}",
        stderr(&out)
    );
    let out = cli.expect(
        0,
        &["runs", "start", "pushed", "--override-triggers", "--follow"],
    );
    assert!(out.contains("a    | ran"), "{out}");
    let events = cli.json(&["events", "--limit", "500"]);
    let overridden: Vec<&Value> = events
        .as_array()
        .or_else(|| events["items"].as_array())
        .unwrap()
        .iter()
        .filter(|e| e["event"]["type"] == "run_start_overridden")
        .collect();
    assert_eq!(overridden.len(), 1, "{events}");
    assert_eq!(overridden[0]["event"]["by"], "admin (bootstrap)");
}

#[test]
fn repositories_are_added_listed_shown_and_removed() {
    let (_dir, _server, cli) = setup("repos");
    let added = cli.json(&[
        "repos",
        "add",
        "app",
        "--forge",
        "github",
        "--url",
        "https://example.invalid/acme/app.git",
        "--webhook-secret",
        "HOOK",
        "--credentials",
        "GIT_TOKEN",
    ]);
    assert_eq!(added["webhook_path"], "/api/v1/repos/app/webhook");
    assert_eq!(added["pipeline_path"], ".hodei.yml");
    let shown = cli.expect(0, &["repos", "show", "app"]);
    assert!(shown.contains("POST /api/v1/repos/app/webhook"), "{shown}");
    assert_eq!(cli.json(&["repos", "list"])[0]["credentials"], "GIT_TOKEN");
    let out = cli.run(&[
        "repos",
        "add",
        "bad",
        "--forge",
        "svn",
        "--url",
        "https://x.invalid/r",
        "--webhook-secret",
        "H",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("github, gitlab or gitea"),
        "{}",
        stderr(&out)
    );
    cli.expect(0, &["repos", "remove", "app"]);
    assert_eq!(cli.json(&["repos", "list"]), Value::Array(Vec::new()));
}

#[test]
fn a_schedule_fires_on_the_real_clock_and_its_run_s_artifacts_download() {
    let (dir, _server, cli) = setup("schedule");
    // Every second: the first tick comes within a second of the apply.
    let file = write(
        &dir,
        "tick.yml",
        "name: tick\non: { schedule: ['* * * * * *'] }\njobs:\n  report:\n    steps: [{ run: 'mkdir -p out && echo \"tick $HODEI_EVENT\" > out/report.txt' }]\n    artifacts: [out/report.txt]\n",
    );
    cli.expect(0, &["pipelines", "apply", &file]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let run = loop {
        let runs = cli.json(&["runs", "list", "--pipeline", "tick"]);
        let done = runs
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["state"] == "succeeded")
            .cloned();
        if let Some(run) = done {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled run succeeded: {runs:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(run["event"], "schedule", "{run:#}");
    let id = run["id"].as_u64().unwrap().to_string();
    let listed = cli.json(&["runs", "artifacts", &id]);
    assert_eq!(listed[0]["path"], "out/report.txt", "{listed:#}");
    assert_eq!(listed[0]["job"], "report");
    let table = cli.expect(0, &["runs", "artifacts", &id, "-o", "table"]);
    assert!(table.contains("out/report.txt"), "{table}");
    let to = dir.join("report.txt");
    cli.expect(
        0,
        &[
            "runs",
            "download",
            &id,
            "out/report.txt",
            "--to",
            to.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read_to_string(&to).unwrap(), "tick schedule\n");
    let printed = cli.expect(0, &["runs", "download", &id, "out/report.txt", "--to", "-"]);
    assert_eq!(printed, "tick schedule\n");
    let out = cli.run(&["runs", "download", &id, "nope.txt"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("has no artifact `nope.txt`; its artifacts are: out/report.txt"),
        "{}",
        stderr(&out)
    );
}
