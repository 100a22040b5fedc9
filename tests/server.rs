//! `hodei server` end to end: the real binary on a free port, a real HTTP client and a real
//! WebSocket client. A pipeline is pushed, triggered and followed live; the server is killed
//! with SIGKILL in the middle of the run and started again on the same data; the client resumes
//! its log from the offset it had, and the run finishes with nothing lost.

#[path = "server/cluster.rs"]
mod cluster;
mod common;
#[path = "server/postgres.rs"]
mod postgres;
#[path = "server/replicas.rs"]
mod replicas;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, scratch};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Frames of a job's log stream from `from`, until `stop` holds or the stream ends.
async fn follow(
    url: &str,
    token: &str,
    job: u64,
    from: u64,
    stop: impl Fn(&str, &Value) -> bool,
) -> (Vec<Value>, bool) {
    let ws = format!(
        "{}/api/v1/jobs/{job}/log/stream?from={from}",
        url.replacen("http", "ws", 1)
    );
    let mut request = ws.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the WebSocket opens");
    let mut frames = Vec::new();
    let mut text = String::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("no frame within 30 s: likely deadlocked");
        match next {
            Some(Ok(Message::Text(body))) => {
                let frame: Value = serde_json::from_str(&body).unwrap();
                if let Some(data) = frame["data"].as_str() {
                    text.push_str(data);
                }
                let done = stop(&text, &frame);
                frames.push(frame);
                if done {
                    return (frames, true);
                }
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return (frames, false),
            Some(Ok(_)) => {}
        }
    }
}

/// The end of what `log` frames carried, checking that they follow each other from `from`.
fn end_of(frames: &[Value], from: u64) -> u64 {
    let mut next = from;
    for frame in frames.iter().filter(|f| f["type"] == "log") {
        assert_eq!(frame["offset"], next, "no gap, no duplicate: {frame}");
        next += frame["bytes"].as_u64().unwrap();
    }
    next
}

/// A run followed live through a SIGKILL of its server: the server's next life and what the
/// client knows.
pub(crate) struct Followed {
    pub server: Server,
    pub http: reqwest::Client,
    pub token: String,
    pub auth: String,
    pub run: u64,
    pub job: u64,
    /// The job's whole log, as the client has it.
    pub log: String,
}

/// Pushes a pipeline that prints 30 lines and triggers it (as the README says), follows its log
/// live until a few lines are there, kills the server with SIGKILL, starts it again with
/// `start` (on the same data) and follows on from the offset it had: the run succeeds and the
/// client has the whole log, nothing lost.
pub(crate) async fn followed_through_a_sigkill(
    data: &std::path::Path,
    start: impl Fn() -> Server,
) -> Followed {
    let mut server = start();
    let token = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    hodei_api::client::install_crypto();
    let http = reqwest::Client::new();
    let auth = format!("Bearer {token}");
    let pipeline = "name: count\njobs:\n  count:\n    steps:\n      - run: 'for i in $(seq 1 30); do echo \"line $i\"; sleep 0.1; done'\n        retry: 1\n";
    let put = http
        .put(format!("{}/api/v1/pipelines/count", server.url))
        .header("authorization", &auth)
        .header("content-type", "application/yaml")
        .body(pipeline)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201, "{}", put.text().await.unwrap());
    let run: Value = http
        .post(format!("{}/api/v1/pipelines/count/runs", server.url))
        .header("authorization", &auth)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, job) = (
        run["id"].as_u64().unwrap(),
        run["jobs"][0]["id"].as_u64().unwrap(),
    );

    // Follow its log live until a few lines are there, then kill the server.
    let (frames, _) = follow(&server.url, &token, job, 0, |text, _| {
        text.contains("line 3\n")
    })
    .await;
    let resume_from = end_of(&frames, 0);
    server.kill();

    // Start it again on the same data: the run resumes; the client resumes where it was.
    let server = start();
    let (frames, _) = follow(&server.url, &token, job, resume_from, |_, f| {
        f["type"] == "end"
    })
    .await;
    let end = frames.last().expect("frames after the restart");
    assert_eq!(end["type"], "end", "{frames:?}");
    assert_eq!(end["state"], "succeeded", "{frames:?}");
    let total = end_of(&frames, resume_from);
    assert_eq!(end["offset"], total);

    let log = log_of(&http, &server.url, job, &auth).await;
    assert_eq!(log.len() as u64, total, "the client has the whole log");
    assert!(log.ends_with("line 29\nline 30\n"), "{log}");
    Followed {
        server,
        http,
        token,
        auth,
        run: id,
        job,
        log,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_followed_live_survives_a_sigkill_of_the_server_and_finishes() {
    let data = scratch("sigkill");
    let Followed {
        server,
        http,
        auth,
        run,
        log,
        ..
    } = followed_through_a_sigkill(&data, || Server::start(&data)).await;
    assert!(
        log.contains("was lost"),
        "the log says what happened: {log}"
    );
    let run = get(&http, &format!("{}/api/v1/runs/{run}", server.url), &auth).await;
    assert_eq!(run["state"], "succeeded", "{run}");
}

async fn log_of(http: &reqwest::Client, base: &str, job: u64, auth: &str) -> String {
    http.get(format!("{base}/api/v1/jobs/{job}/log"))
        .header("authorization", auth)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Applies `pipeline` as `p`, starts a run of it and waits for its end: the run and the log of
/// its first job.
async fn run_to_the_end(
    http: &reqwest::Client,
    base: &str,
    auth: &str,
    pipeline: &str,
) -> (Value, String) {
    let applied = http
        .put(format!("{base}/api/v1/pipelines/p"))
        .header("authorization", auth)
        .header("content-type", "application/yaml")
        .body(pipeline.to_owned())
        .send()
        .await
        .unwrap();
    assert!(applied.status().is_success());
    let run: Value = http
        .post(format!("{base}/api/v1/pipelines/p/runs"))
        .header("authorization", auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = run["id"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = get(http, &format!("{base}/api/v1/runs/{id}"), auth).await;
        if matches!(
            run["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            let job = run["jobs"][0]["id"].as_u64().unwrap();
            let log = log_of(http, base, job, auth).await;
            return (run, log);
        }
        assert!(Instant::now() < deadline, "{run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get(http: &reqwest::Client, url: &str, auth: &str) -> Value {
    http.get(url)
        .header("authorization", auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_new_runs_lets_jobs_finish_within_the_grace_and_the_rest_resumes() {
    let data = scratch("sigterm");
    let mark = data.join("first-try");
    let mut server = Server::start_with(&data, &[("HODEI_SHUTDOWN_GRACE_SECONDS", "2")]);
    let token = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    hodei_api::client::install_crypto();
    let http = reqwest::Client::new();
    let auth = format!("Bearer {token}");
    // `short` ends within the grace; `long` does not, the first time.
    let pipeline = format!(
        "name: two\njobs:\n  short:\n    steps: ['sleep 1; echo short done']\n  long:\n    steps:\n      - run: 'if [ -e {m} ]; then echo second try; else touch {m}; echo first try; sleep 60; fi'\n        retry: 1\n",
        m = mark.display()
    );
    let put = http
        .put(format!("{}/api/v1/pipelines/two", server.url))
        .header("authorization", &auth)
        .header("content-type", "application/yaml")
        .body(pipeline)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let trigger = format!("{}/api/v1/pipelines/two/runs", server.url);
    let run: Value = http
        .post(&trigger)
        .header("authorization", &auth)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = run["id"].as_u64().unwrap();
    let run_url = format!("{}/api/v1/runs/{id}", server.url);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !mark.exists() || get(&http, &run_url, &auth).await["jobs"][0]["state"] != "running" {
        assert!(Instant::now() < deadline, "the jobs never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    // Not ready while it drains: a load balancer stops sending it work. (The signal reaches the
    // server's handler a moment after `kill` returns: a request in between is still taken.)
    let deadline = Instant::now() + Duration::from_secs(5);
    let ready = loop {
        let ready = http
            .get(format!("{}/readyz", server.url))
            .send()
            .await
            .unwrap();
        if ready.status() == 503 {
            break ready;
        }
        assert!(Instant::now() < deadline, "still ready after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let ready: Value = ready.json().await.unwrap();
    assert!(
        ready["checks"]["server"]
            .as_str()
            .is_some_and(|s| s.starts_with("shutting down")),
        "{ready}"
    );
    // Still serving, no longer accepting runs.
    let refused = http
        .post(&trigger)
        .header("authorization", &auth)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let status = tokio::task::spawn_blocking(move || {
        let status = server.child.wait();
        (server, status)
    });
    let (server, status) = tokio::time::timeout(Duration::from_secs(30), status)
        .await
        .expect("the server stops within its grace and the HTTP timeout")
        .unwrap();
    assert!(status.unwrap().success(), "SIGTERM is a clean stop");
    drop(server);

    let server = Server::start(&data);
    let run_url = format!("{}/api/v1/runs/{id}", server.url);
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let run = get(&http, &run_url, &auth).await;
        if run["state"] == "succeeded" || run["state"] == "failed" {
            break run;
        }
        assert!(Instant::now() < deadline, "the run never finished: {run}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run["state"], "succeeded", "{run}");
    let short = &run["jobs"][0];
    assert_eq!(short["state"], "succeeded");
    assert_eq!(short["attempt"], 1, "it finished within the grace: {run}");
    let long_job = run["jobs"][1]["id"].as_u64().unwrap();
    let log = log_of(&http, &server.url, long_job, &auth).await;
    assert!(log.contains("first try\n"), "{log}");
    assert!(
        log.contains(
            "Hodei shut down (SIGTERM) and the job did not finish within the grace period of 2 s"
        ),
        "{log}"
    );
    assert!(log.ends_with("second try\n"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_speaks_https_with_the_configured_certificate() {
    let data = scratch("tls");
    let (cert, key, ca) = (
        data.join("cert.pem"),
        data.join("key.pem"),
        data.join("ca.pem"),
    );
    // A test authority, and the server's certificate signed by it for 127.0.0.1.
    std::fs::write(
        data.join("leaf.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let made = Command::new("openssl")
            .args(args)
            .current_dir(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl makes the test certificates");
        assert!(made.success(), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=hodei-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        "cert.pem",
        "-extfile",
        "leaf.cnf",
    ]);
    let server = Server::start_with(
        &data,
        &[
            ("HODEI_TLS_CERT", cert.to_str().unwrap()),
            ("HODEI_TLS_KEY", key.to_str().unwrap()),
        ],
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    // curl, trusting only the test authority: the certificate chain and the name check out.
    let url = format!("{}/healthz", server.url);
    let answer = Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--cacert"])
        .arg(&ca)
        .arg(&url)
        .output()
        .expect("curl runs");
    assert!(
        answer.status.success(),
        "{}",
        String::from_utf8_lossy(&answer.stderr)
    );
    // Plain HTTP on the same port gets no HTTP answer.
    hodei_api::client::install_crypto();
    let plain = reqwest::get(server.url.replacen("https", "http", 1) + "/healthz").await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    // The CLI: refused without the authority (exit 3), then logged in with it, and a run
    // followed over a TLS WebSocket.
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hodei"))
            .args(args)
            .env("HODEI_CONFIG", data.join("cli.toml"))
            .env("NO_COLOR", "1")
            .env_remove("HODEI_URL")
            .env_remove("HODEI_TOKEN")
            .output()
            .expect("hodei runs")
    };
    let refused = cli(&["login", &server.url, "--token", token.trim()]);
    assert_eq!(refused.status.code(), Some(3));
    let why = String::from_utf8_lossy(&refused.stderr);
    // What is wrong with the certificate and how to fix it, not "is the server running?".
    assert!(
        why.contains("presents a certificate this client does not trust: it is not signed by an authority this client trusts"),
        "{why}"
    );
    assert!(
        why.contains("hint: give the client the certificate of the CA"),
        "{why}"
    );
    assert!(why.contains("--ca-cert ca.pem"), "{why}");
    assert!(!why.contains("running"), "{why}");
    let ca_path = ca.to_str().unwrap();
    let login = cli(&[
        "login",
        &server.url,
        "--token",
        token.trim(),
        "--ca-cert",
        ca_path,
    ]);
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    let pipeline = data.join("tls.yml");
    std::fs::write(
        &pipeline,
        "name: tls\njobs:\n  hi:\n    steps: [{ run: echo secure }]\n",
    )
    .unwrap();
    assert!(
        cli(&["pipelines", "apply", pipeline.to_str().unwrap()])
            .status
            .success()
    );
    let followed = cli(&["runs", "start", "tls", "--follow"]);
    let out = String::from_utf8_lossy(&followed.stdout);
    assert!(
        followed.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&followed.stderr)
    );
    let logged = out
        .lines()
        .any(|l| l.starts_with("hi ") && l.ends_with("| secure"));
    assert!(logged, "{out}");

    // The CA's own certificate served as the server's, named in a configuration file by
    // paths relative to that file (the server runs elsewhere): the server starts with it, and
    // the CLI, even given the CA, says what is wrong with it.
    let conf = scratch("tls-ca-as-server");
    std::fs::copy(&ca, conf.join("ca.pem")).unwrap();
    std::fs::copy(data.join("ca.key"), conf.join("ca.key")).unwrap();
    std::fs::write(
        conf.join("hodei.toml"),
        "tls_cert = \"ca.pem\"\ntls_key = \"ca.key\"\n",
    )
    .unwrap();
    let config = conf.join("hodei.toml");
    let wrong = Server::start_with(
        &conf.join("data"),
        &[("HODEI_CONFIG", config.to_str().unwrap())],
    );
    assert!(wrong.url.starts_with("https://"), "{}", wrong.url);
    let refused = cli(&[
        "login",
        &wrong.url,
        "--token",
        token.trim(),
        "--ca-cert",
        ca_path,
    ]);
    assert_eq!(refused.status.code(), Some(3));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("it is a CA certificate (basicConstraints CA:TRUE"),
        "{why}"
    );
    assert!(
        why.contains("hint: the server must present a certificate signed by a CA"),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_with_a_postgres_service_runs_green_through_the_server() {
    // The images come from Debian's packages: scripts/images keeps those the engine has.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/images");
    let built = Command::new(script).output().expect("scripts/images runs");
    assert!(
        built.status.success(),
        "{script} failed: this test needs its images\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let data = scratch("postgres-example");
    let server = Server::start(&data);
    let token = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let http = reqwest::Client::new();
    let auth = format!("Bearer {token}");
    let example = include_str!("../examples/postgres-service.yml");
    let put = http
        .put(format!("{}/api/v1/pipelines/postgres-service", server.url))
        .header("authorization", &auth)
        .header("content-type", "application/yaml")
        .body(example)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201, "{}", put.text().await.unwrap());
    let run: Value = http
        .post(format!(
            "{}/api/v1/pipelines/postgres-service/runs",
            server.url
        ))
        .header("authorization", &auth)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = run["id"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let run = loop {
        let run = get(&http, &format!("{}/api/v1/runs/{id}", server.url), &auth).await;
        if ["succeeded", "failed", "cancelled"].contains(&run["state"].as_str().unwrap_or("")) {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not finish within 120 s, likely deadlocked: {run}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(run["state"], "succeeded", "{run}");
    let schema = run["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "schema")
        .and_then(|j| j["id"].as_u64())
        .unwrap_or_else(|| panic!("no job `schema` in {run}"));
    let log = log_of(&http, &server.url, schema, &auth).await;
    assert!(log.contains("3 users, the first ada\n"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_is_ready_only_once_every_unfinished_run_is_resumed() {
    let data = scratch("ready-after-resume");
    let mut server = Server::start(&data);
    let token = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let auth = format!("Bearer {token}");
    hodei_api::client::install_crypto();
    let http = reqwest::Client::new();
    // No worker has the label: every run's job waits in the queue.
    let pipeline = "name: waits\njobs:\n  j: {runs_on: [gpu], steps: [{run: 'true'}]}\n";
    let put = http
        .put(format!("{}/api/v1/pipelines/waits", server.url))
        .header("authorization", &auth)
        .header("content-type", "application/yaml")
        .body(pipeline)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    const RUNS: usize = 1_000;
    for batch in 0..RUNS / 50 {
        let triggers = (0..50).map(|_| {
            http.post(format!("{}/api/v1/pipelines/waits/runs", server.url))
                .header("authorization", &auth)
                .json(&json!({}))
                .send()
        });
        for answer in futures_util::future::join_all(triggers).await {
            assert_eq!(answer.unwrap().status(), 201, "batch {batch}");
        }
    }
    server.kill();
    let server = Server::start(&data);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = http
            .get(format!("{}/readyz", server.url))
            .send()
            .await
            .unwrap();
        if ready.status() == 200 {
            break;
        }
        let body: Value = ready.json().await.unwrap();
        assert!(
            Instant::now() < deadline,
            "never ready (likely deadlocked): {body}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Ready means resumed: every waiting job is back in the queue.
    let queue = get(
        &http,
        &format!("{}/api/v1/queue?limit=1", server.url),
        &auth,
    )
    .await;
    assert_eq!(queue["total"], RUNS, "{queue}");
}

#[test]
fn a_second_server_on_the_same_data_directory_is_refused_naming_the_first() {
    let data = scratch("second-server");
    let first = Server::start(&data);
    let second = Command::new(env!("CARGO_BIN_EXE_hodei"))
        .args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env_remove("HODEI_FAULT")
        .stdin(Stdio::null())
        .output()
        .expect("hodei runs");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "is in use by another Hodei (pid {})",
            first.child.id()
        )),
        "{stderr}"
    );
    // The first one serves on.
    let health = Command::new("curl")
        .args(["-sf", &format!("{}/healthz", first.url)])
        .output()
        .expect("curl runs");
    assert!(health.status.success());
}

#[test]
fn a_revoked_bootstrap_agent_token_stays_revoked_when_the_server_starts_with_it_again() {
    // Compose and Kubernetes deployments keep HODEI_BOOTSTRAP_AGENT_TOKEN set for good.
    let data = scratch("bootstrap-agent-token");
    let secret = format!("hodei_bootstrap-agents-{}", "b".repeat(32));
    let env = [("HODEI_BOOTSTRAP_AGENT_TOKEN", secret.as_str())];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    hodei_api::client::install_crypto();
    let http = reqwest::Client::new();
    let register = |url: String, name: &'static str| {
        let (http, secret) = (http.clone(), secret.clone());
        async move {
            http.post(format!("{url}/api/v1/agent/register"))
                .json(&json!({"token": secret, "name": name, "labels": ["linux"]}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let mut first = Server::start_with(&data, &env);
    let auth = format!(
        "Bearer {}",
        std::fs::read_to_string(data.join("admin.token"))
            .unwrap()
            .trim()
    );
    runtime.block_on(async {
        let tokens = get(&http, &format!("{}/api/v1/agent-tokens", first.url), &auth).await;
        let bootstrap = tokens["items"]
            .as_array()
            .unwrap_or_else(|| panic!("a list of tokens: {tokens}"))
            .iter()
            .find(|t| t["name"] == "bootstrap")
            .unwrap_or_else(|| panic!("the bootstrap token is stored: {tokens}"))
            .clone();
        assert_eq!(register(first.url.clone(), "builder-1").await, 201);
        // It leaked: an admin revokes it.
        let revoked = http
            .delete(format!(
                "{}/api/v1/agent-tokens/{}",
                first.url, bootstrap["id"]
            ))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status().as_u16(), 204);
    });
    first.kill();
    // The same deployment starts again, the variable still set: the server starts, and the
    // token stays revoked.
    let second = Server::start_with(&data, &env);
    runtime.block_on(async {
        let tokens = get(&http, &format!("{}/api/v1/agent-tokens", second.url), &auth).await;
        assert!(
            !tokens.to_string().contains("bootstrap"),
            "not valid again: {tokens}"
        );
        assert_eq!(
            register(second.url.clone(), "builder-2").await,
            401,
            "refused"
        );
    });
}

#[test]
fn the_data_directory_is_private_to_hodei_s_user_whatever_the_umask() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let data = scratch("private").join("data");
    // A data directory an older Hodei left open to everyone.
    std::fs::create_dir_all(data.join("logs")).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Server::start(&data);
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let log = runtime.block_on(async {
        hodei_api::client::install_crypto();
        let http = reqwest::Client::new();
        let auth = format!("Bearer {}", token.trim());
        let pipeline = "name: p\njobs:\n  a: {steps: [echo hi]}\n";
        run_to_the_end(&http, &server.url, &auth, pipeline).await.1
    });
    assert_eq!(log, "hi\n");
    let mut seen = 0;
    let mut todo = vec![data.clone()];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.mode() & 0o777;
        let relative = path.strip_prefix(&data).unwrap().to_path_buf();
        let top = relative
            .components()
            .next()
            .map(|c| c.as_os_str().to_owned());
        // Workspaces hold what steps made, with the modes the steps chose.
        if top.as_deref() == Some("workspaces".as_ref())
            || top.as_deref() == Some("docker".as_ref())
        {
            continue;
        }
        seen += 1;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{} is {mode:o}", path.display());
            todo.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
        }
    }
    for name in ["hodei.db", "hodei.db-wal", "admin.token", "logs"] {
        assert!(data.join(name).exists(), "{name}");
    }
    assert!(
        seen >= 7,
        "the data directory, the database and its WAL, the log of the job"
    );
}

/// Sends `request` as it is on a new connection; answers what came back until the server
/// closed it.
fn raw_request(address: &str, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    socket.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_nul_byte_in_a_header_is_a_400_not_an_error_in_the_log() {
    let data = scratch("nul-header");
    let log_file = data.join("stderr.log");
    let stderr = std::fs::File::create(&log_file).unwrap();
    let server = Server::start_logging(&data.join("data"), &[], Stdio::from(stderr));
    let address = server.url.trim_start_matches("http://");
    let answer = raw_request(
        address,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Note: a\x00b\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // The server still answers, and has logged nothing at ERROR.
    let answer = raw_request(
        address,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(server);
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(!log.contains("ERROR"), "{log}");
}

/// The unprivileged user the `run_as` tests' steps run as (`./scripts/test` creates it).
const STEP_USER: &str = "hodei-step";

/// The uid of [`STEP_USER`]; fails loudly when the test cannot switch users.
fn step_user_uid() -> String {
    // SAFETY: geteuid cannot fail and touches no memory.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "run_as switches users: run the tests as root (as CI does)"
    );
    let out = Command::new("id").args(["-u", STEP_USER]).output().unwrap();
    assert!(
        out.status.success(),
        "the user {STEP_USER} is missing: ./scripts/test creates it (useradd --system --create-home --home-dir /var/lib/{STEP_USER} {STEP_USER})"
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn with_run_as_local_steps_run_as_that_user_who_reaches_nothing_else_of_hodei() {
    let uid = step_user_uid();
    let data = scratch("run-as").join("data");
    let server = Server::start_with(&data, &[("HODEI_RUN_AS", STEP_USER)]);
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (log, ready) = runtime.block_on(async {
        hodei_api::client::install_crypto();
        let http = reqwest::Client::new();
        let auth = format!("Bearer {}", token.trim());
        let pipeline = "name: p\njobs:\n  a:\n    steps:\n      - run: id -un; echo \"home=$HOME\"; echo made > mine; stat -c 'owner=%u' mine .\n      - run: |\n          if cat ../../admin.token >/dev/null 2>&1; then echo TOKEN-READ; else echo token unreadable; fi\n          if ls .. >/dev/null 2>&1; then echo WORKSPACES-LISTED; else echo workspaces unlisted; fi\n          if ls ../../logs >/dev/null 2>&1; then echo LOGS-LISTED; else echo logs unlisted; fi\n";
        let (run, log) = run_to_the_end(&http, &server.url, &auth, pipeline).await;
        assert_eq!(run["state"], "succeeded", "{log}");
        let ready = http
            .get(format!("{}/readyz", server.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        (log, ready)
    });
    assert_eq!(
        log,
        format!(
            "{STEP_USER}\nhome=/var/lib/{STEP_USER}\nowner={uid}\nowner={uid}\ntoken unreadable\nworkspaces unlisted\nlogs unlisted\n"
        )
    );
    assert!(
        ready.contains(&format!("as the user `{STEP_USER}` (uid {uid})")),
        "{ready}"
    );
}

#[test]
fn a_run_as_user_that_does_not_exist_stops_the_start_with_what_to_do() {
    let data = scratch("run-as-missing").join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_hodei"))
        .args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env("HODEI_RUN_AS", "no-such-user-of-hodei")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("run_as: there is no user `no-such-user-of-hodei` on this machine"),
        "{err}"
    );
}
