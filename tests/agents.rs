//! `hodei agent` end to end, with real processes: a server whose own worker is off, agents
//! that register with a token and run its jobs, and the failures of `docs/agents.md`: an agent
//! killed or frozen past its lease, the server killed in the middle of a job, SIGTERM, and bad
//! credentials and writes. Each check is on what a user sees: the run's outcome, its log byte
//! for byte, and side effects counted once. `agents/pools.rs`: ephemeral workers of pools,
//! started by the server as containers.

mod common;
#[path = "../api/tests/support/git.rs"]
mod git_support;
#[path = "agents/pools.rs"]
mod pools;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::scratch;
use serde_json::{Value, json};

/// A free loopback port for a test's server, which must come back on the same address after
/// a restart: below the ephemeral range (where every other socket of the machine gets its
/// port), one per test, so that no other server takes it while this one is down.
fn server_port(test: &str) -> u16 {
    let spread = test
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    (0..100)
        .map(|i| 20_000 + ((spread + i * 101) % 10_000) as u16)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port below the ephemeral range")
}

struct Process {
    child: Child,
}

impl Process {
    fn signal(&self, signal: i32) {
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Waits for the process to exit; its exit code.
    fn exit_code(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit: likely deadlocked"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server's API, with its admin token: what the tests of both kinds ask of it.
struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    fn url(&self) -> &str {
        &self.base
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A registration token.
    async fn registration_token(&self) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/agent-tokens",
                Some(json!({"name": "test agents"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    async fn apply(&self, name: &str, yaml: &str) {
        let response = self
            .http
            .put(format!("{}/api/v1/pipelines/{name}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/yaml")
            .body(yaml.to_owned())
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{}",
            response.text().await.unwrap()
        );
    }

    async fn trigger(&self, name: &str) -> u64 {
        let (status, run) = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/pipelines/{name}/runs"),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, 201, "{run}");
        run["id"].as_u64().unwrap()
    }

    async fn run(&self, id: u64) -> Value {
        self.call(reqwest::Method::GET, &format!("/api/v1/runs/{id}"), None)
            .await
            .1
    }

    /// Waits until the run is in a state where `until` holds.
    async fn wait_run(&self, id: u64, within: Duration, until: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let run = self.run(id).await;
            if until(&run) {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "the run never got there: {run:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Cancels a run and waits for its end.
    async fn cancel(&self, run: u64) -> Value {
        let (status, _) = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/runs/{run}/cancel"),
                None,
            )
            .await;
        assert_eq!(status, 202);
        self.wait_run(run, Duration::from_secs(30), finished).await
    }

    async fn log(&self, job: u64) -> Vec<u8> {
        self.http
            .get(format!("{}/api/v1/jobs/{job}/log", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }
}

/// A server on a fixed port with no local worker, and its admin token.
struct Cluster {
    api: Api,
    data: PathBuf,
    port: u16,
    lease: u64,
    server: Option<Process>,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl std::ops::Deref for Cluster {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// One cluster at a time: each test counts processes and side effects of its own, and its
/// agents' timing is part of what it checks.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Cluster {
    fn start(test: &str, lease: u64) -> Cluster {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let data = scratch(&format!("agents-{test}"));
        let port = server_port(test);
        let mut cluster = Cluster {
            api: Api {
                base: format!("http://127.0.0.1:{port}"),
                token: String::new(),
                http: reqwest::Client::new(),
            },
            data,
            port,
            lease,
            server: None,
            _turn: turn,
        };
        cluster.start_server();
        cluster.api.token = std::fs::read_to_string(cluster.data.join("srv/admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        cluster
    }

    fn start_server(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.join("server.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hodei"))
            .args([
                "server",
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--data",
            ])
            .arg(self.data.join("srv"))
            .env("HODEI_LOCAL_SLOTS", "0")
            .env("HODEI_AGENT_LEASE_SECONDS", self.lease.to_string())
            .env("HODEI_ARTIFACTS_MAX_JOB_MIB", "1")
            .env_remove("HODEI_LOG")
            .env("NO_COLOR", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("hodei server starts");
        self.server = Some(Process { child });
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the server never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill_server(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.kill();
        }
    }

    /// Starts an agent named `name` with its data in `DATA/<name>`.
    fn agent(&self, name: &str, token: &str, extra: &[&str]) -> Process {
        self.agent_via(self.url(), name, token, extra)
    }

    /// Starts an agent that reaches the server at `server` (a proxy, say).
    fn agent_via(&self, server: &str, name: &str, token: &str, extra: &[&str]) -> Process {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.join(format!("{name}.log")))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hodei"))
            .args([
                "agent", "--server", server, "--token", token, "--name", name,
            ])
            .args(["--slots", "2", "--data"])
            .arg(self.data.join(name))
            .args(extra)
            .env_remove("HODEI_LOG")
            .env("NO_COLOR", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("hodei agent starts");
        Process { child }
    }

    fn agent_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.data.join(format!("{name}.log"))).unwrap_or_default()
    }
}

fn finished(run: &Value) -> bool {
    matches!(
        run["state"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

fn wait_for_file(path: &Path, within: Duration) {
    let deadline = Instant::now() + within;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_an_agent_runs_there_and_its_log_arrives_byte_for_byte() {
    hodei_api::client::install_crypto();
    let cluster = Cluster::start("log", 30);
    let token = cluster.registration_token().await;
    let _agent = cluster.agent("builder-1", &token, &["--labels", "linux,arm64"]);
    cluster
        .apply(
            "big",
            "name: big\non: { manual: {} }\njobs:\n  build:\n    runs_on: [arm64]\n    steps:\n      - run: seq 1 300000\n      - run: printf 'no newline at the end'\n",
        )
        .await;
    let run = cluster.trigger("big").await;
    let run = cluster
        .wait_run(run, Duration::from_secs(120), finished)
        .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(run["jobs"][0]["worker"], "builder-1");
    let mut expected: Vec<u8> = (1..=300_000)
        .flat_map(|n| format!("{n}\n").into_bytes())
        .collect();
    expected.extend_from_slice(b"no newline at the end");
    let log = cluster.log(run["jobs"][0]["id"].as_u64().unwrap()).await;
    assert_eq!(log.len(), expected.len());
    assert!(
        log == expected,
        "the log is the steps' output, byte for byte"
    );
    // The agent is a worker of the server, with its labels.
    let (_, workers) = cluster
        .call(reqwest::Method::GET, "/api/v1/workers", None)
        .await;
    let agent = workers["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == "builder-1")
        .expect("the agent is listed");
    assert_eq!(
        agent["agent"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{agent}"
    );
    assert!(agent["agent"]["last_heartbeat"].is_string(), "{agent}");
    // The metrics count the agent and what it sent; /readyz says the server runs no job itself.
    let metrics = cluster
        .http
        .get(format!("{}/metrics", cluster.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("hodei_agents{state=\"connected\"} 1"),
        "{metrics}"
    );
    let sent = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hodei_agent_log_bytes_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("the log bytes from agents are counted");
    assert!(sent >= expected.len() as f64, "{sent}");
    assert!(metrics.contains("hodei_agent_claim_seconds"), "{metrics}");
    let ready: Value = cluster
        .http
        .get(format!("{}/readyz", cluster.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready["checks"]["local_steps"],
        "off: every job runs on an agent"
    );
    let labels: Vec<&str> = agent["labels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        labels.contains(&"arm64") && labels.contains(&"agent") && labels.contains(&"checkout"),
        "{labels:?}"
    );
    // An agent whose token fixes its labels checks out all the same.
    let (status, fixed) = cluster
        .call(
            reqwest::Method::POST,
            "/api/v1/agent-tokens",
            Some(json!({"name": "fixed", "labels": ["gpu"]})),
        )
        .await;
    assert_eq!(status, 201, "{fixed}");
    let _fixed = cluster.agent("builder-2", fixed["token"].as_str().unwrap(), &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let labels = loop {
        let (_, workers) = cluster
            .call(reqwest::Method::GET, "/api/v1/workers", None)
            .await;
        if let Some(agent) = workers["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"] == "builder-2")
        {
            break agent["labels"].clone();
        }
        assert!(Instant::now() < deadline, "builder-2 never came: {workers}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        labels,
        json!(["agent", "checkout", "gpu", "worker=builder-2"]),
        "{labels}"
    );
    // Its credential is kept private in its data directory.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cluster.data.join("builder-1/agent.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// A proxy in front of the server that holds each piece of the server's answers for `delay`, as
/// a slow link does, and goes dead (every connection cut, new ones refused) once it has passed
/// on a request that holds `mark`, until `revive` is set.
struct TripProxy {
    port: u16,
    tripped: Arc<std::sync::atomic::AtomicBool>,
    revive: Arc<std::sync::atomic::AtomicBool>,
}

async fn trip_proxy(target: u16, delay: Duration, mark: &'static [u8]) -> TripProxy {
    use std::sync::atomic::AtomicBool;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tripped, revive) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let dead = {
        let (tripped, revive) = (tripped.clone(), revive.clone());
        move || tripped.load(Ordering::SeqCst) && !revive.load(Ordering::SeqCst)
    };
    let trip = tripped.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            if dead() {
                continue;
            }
            let (dead, trip) = (dead.clone(), trip.clone());
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    return;
                };
                let (mut client_in, mut client_out) = client.into_split();
                let (mut server_in, mut server_out) = server.into_split();
                let up_dead = dead.clone();
                let up = tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut tail: Vec<u8> = Vec::new();
                    loop {
                        let n = match client_in.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if up_dead() || server_out.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        tail.extend_from_slice(&buf[..n]);
                        if tail.windows(mark.len()).any(|w| w == mark) {
                            trip.store(true, Ordering::SeqCst);
                        }
                        let keep = tail.len().saturating_sub(mark.len());
                        tail.drain(..keep);
                    }
                });
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match server_in.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            tokio::time::sleep(delay).await;
                            if dead() || client_out.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                up.abort();
            });
        }
    });
    TripProxy {
        port,
        tripped,
        revive,
    }
}

/// Nothing of a job's output is lost when the server dies right after it took the job's end:
/// the agent sends the output that came before a transition before that transition, and the
/// server commits that output before it records it. Here the agent talks to the server
/// through a slow link, its job prints until its very end (so the job ends while the agent is
/// sending output), and the link goes dead the moment the job's success has gone to the
/// server, which is then killed and started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_right_after_a_jobs_end_still_has_all_of_its_output() {
    hodei_api::client::install_crypto();
    let mut cluster = Cluster::start("whole", 30);
    let token = cluster.registration_token().await;
    cluster
        .apply(
            "steady",
            "name: steady\non: { manual: {} }\njobs:\n  build:\n    steps:\n      - run: for i in $(seq 1 40); do echo \"line $i\"; sleep 0.01; done\n",
        )
        .await;
    let expected: String = (1..=40).map(|i| format!("line {i}\n")).collect();
    for round in 0..3 {
        let proxy = trip_proxy(
            cluster.port,
            Duration::from_millis(150),
            br#""type":"job_succeeded""#,
        )
        .await;
        let agent = cluster.agent_via(
            &format!("http://127.0.0.1:{}", proxy.port),
            &format!("builder-{round}"),
            &token,
            &[],
        );
        let id = cluster.trigger("steady").await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !proxy.tripped.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the job's end never went out");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The server takes what came before the link died, and dies.
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.kill_server();
        cluster.start_server();
        proxy.revive.store(true, Ordering::SeqCst);
        let run = cluster
            .wait_run(id, Duration::from_secs(90), finished)
            .await;
        assert_eq!(run["state"], "succeeded", "{run:#}");
        let log = cluster.log(run["jobs"][0]["id"].as_u64().unwrap()).await;
        assert_eq!(
            String::from_utf8_lossy(&log),
            expected,
            "run {id}: the log is the step's whole output"
        );
        drop(agent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_the_step_on_the_agent_and_runs_its_hooks() {
    hodei_api::client::install_crypto();
    let cluster = Cluster::start("cancel", 30);
    let token = cluster.registration_token().await;
    let _agent = cluster.agent("a1", &token, &[]);
    let marks = cluster.data.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    cluster
        .apply(
            "slow",
            &format!(
                "name: slow\non: {{ manual: {{}} }}\njobs:\n  wait:\n    steps:\n      - run: touch {m}/started; sleep 120; touch {m}/finished\n    post:\n      cancelled: [{{ run: echo hook ran }}]\n",
                m = marks.display()
            ),
        )
        .await;
    let run = cluster.trigger("slow").await;
    wait_for_file(&marks.join("started"), Duration::from_secs(30));
    let run = cluster.cancel(run).await;
    assert_eq!(run["state"], "cancelled", "{run:#}");
    assert!(!marks.join("finished").exists(), "the step was stopped");
    let log = cluster.log(run["jobs"][0]["id"].as_u64().unwrap()).await;
    let log = String::from_utf8_lossy(&log);
    assert!(log.contains("hook ran"), "{log}");
}

/// A proxy in front of the server that cuts WebSockets, as some proxies do: it forwards plain
/// HTTP, and answers `502` to a connection whose first request asks for an upgrade. Its port,
/// and how many upgrades it refused.
async fn proxy_without_websockets(target: u16) -> (u16, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let refused = Arc::new(AtomicUsize::new(0));
    let counter = refused.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if text.contains("upgrade: websocket") {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let _ = client
                        .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    return;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                else {
                    return;
                };
                if server.write_all(&head).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (port, refused)
}

/// The agent's doorbell as the workers' list shows it.
async fn doorbell_of(api: &Api, agent: &str) -> Option<bool> {
    let (_, workers) = api
        .call(reqwest::Method::GET, "/api/v1/workers", None)
        .await;
    workers["items"]
        .as_array()?
        .iter()
        .find(|w| w["id"] == agent)
        .and_then(|w| w["agent"]["doorbell"].as_bool())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_that_cuts_websockets_an_agent_long_polls_and_still_takes_cancels() {
    hodei_api::client::install_crypto();
    let cluster = Cluster::start("no-websockets", 30);
    let (proxy, refused) = proxy_without_websockets(cluster.port).await;
    let token = cluster.registration_token().await;
    let _direct = cluster.agent("direct", &token, &["--labels", "direct"]);
    let _proxied = cluster.agent_via(&format!("http://127.0.0.1:{proxy}"), "proxied", &token, &[]);
    // The direct agent holds its doorbell; the proxied one cannot and long-polls.
    let deadline = Instant::now() + Duration::from_secs(30);
    while doorbell_of(&cluster, "direct").await != Some(true)
        || doorbell_of(&cluster, "proxied").await != Some(false)
    {
        assert!(Instant::now() < deadline, "the agents never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused.load(Ordering::SeqCst) >= 1,
        "the proxy refused the upgrade"
    );
    let marks = cluster.data.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    // One job for each: each runs where its labels send it, and each is cancelled.
    cluster
        .apply(
            "both",
            &format!(
                "name: both\non: {{ manual: {{}} }}\njobs:\n  near:\n    runs_on: [direct]\n    steps:\n      - run: touch {m}/near; sleep 120; touch {m}/near-finished\n  far:\n    runs_on: [worker=proxied]\n    steps:\n      - run: touch {m}/far; sleep 120; touch {m}/far-finished\n",
                m = marks.display()
            ),
        )
        .await;
    let run = cluster.trigger("both").await;
    wait_for_file(&marks.join("near"), Duration::from_secs(30));
    wait_for_file(&marks.join("far"), Duration::from_secs(30));
    let run = cluster.cancel(run).await;
    assert_eq!(run["state"], "cancelled", "{run:#}");
    for job in run["jobs"].as_array().unwrap() {
        assert_eq!(job["state"], "cancelled", "{run:#}");
        assert_eq!(
            job["worker"],
            if job["name"] == "near" {
                "direct"
            } else {
                "proxied"
            }
        );
    }
    assert!(
        !marks.join("near-finished").exists(),
        "the step was stopped"
    );
    assert!(!marks.join("far-finished").exists(), "the step was stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_token_opens_its_own_job_only_and_the_doorbell_rings_for_work_and_cancels() {
    hodei_api::client::install_crypto();
    let cluster = Cluster::start("job-token", 30);
    let token = cluster.registration_token().await;
    let registered: Value = cluster
        .http
        .post(format!("{}/api/v1/agent/register", cluster.url()))
        .json(&json!({"token": token, "name": "raw", "labels": ["raw"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let credential = registered["credential"].as_str().unwrap().to_owned();
    let target = hodei_api::client::Target::new(cluster.url(), Some(credential.clone()));
    let client = hodei_api::client::Client::new(&target).unwrap();
    let poll = hodei_api::agent_protocol::PollRequest {
        labels: Vec::new(),
        slots: 2,
        room: true,
        free: None,
        wait_ms: 0,
        version: "test".into(),
    };
    // Seen by the server, nothing to do yet; the doorbell open.
    let work = client.poll(&poll).await.unwrap();
    assert!(work.job.is_none() && work.cancel.is_empty());
    let mut bell = client.doorbell().await.unwrap();
    cluster
        .apply(
            "two",
            "name: two\non: { manual: {} }\njobs:\n  a:\n    runs_on: [raw]\n    steps: [{ run: 'true' }]\n  b:\n    runs_on: [raw]\n    steps: [{ run: 'true' }]\n",
        )
        .await;
    let run = cluster.trigger("two").await;
    // The doorbell rings for the work; polls take the two jobs, each with its own token.
    tokio::time::timeout(Duration::from_secs(30), bell.ring())
        .await
        .expect("the doorbell rang for the work")
        .unwrap();
    // A poll with room for two brings both, once both are offered.
    let two = hodei_api::agent_protocol::PollRequest {
        free: Some(2),
        ..poll.clone()
    };
    let mut claimed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while claimed.is_empty() {
        assert!(Instant::now() < deadline, "the jobs were never claimed");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let work = client.poll(&two).await.unwrap();
        claimed.extend(work.job.map(|job| *job));
        claimed.extend(work.more);
    }
    assert_eq!(claimed.len(), 2, "one poll brought both jobs");
    let (a, b) = (&claimed[0], &claimed[1]);
    assert_ne!(a.token, b.token);
    assert!(!a.token.contains(&credential) && a.token != credential);
    let append = |job: u64, bearer: Option<&str>, epoch: u64| {
        let request = cluster
            .http
            .put(format!(
                "{}/api/v1/agent/jobs/{job}/log?epoch={epoch}&offset=0",
                cluster.url()
            ))
            .body("hello");
        match bearer {
            Some(bearer) => request.bearer_auth(bearer),
            None => request,
        }
    };
    // Its own job's token opens its job.
    let answer = append(a.job.0, Some(&a.token), a.epoch)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let committed: Value = answer.json().await.unwrap();
    assert_eq!(committed["committed"], 5);
    // Not another job, not the agent's credential, not without a token.
    for (job, bearer, epoch) in [
        (b.job.0, Some(a.token.as_str()), b.epoch),
        (a.job.0, Some(b.token.as_str()), a.epoch),
        (a.job.0, Some(credential.as_str()), a.epoch),
    ] {
        let answer = append(job, bearer, epoch).send().await.unwrap();
        assert_eq!(answer.status(), 409);
        let problem: Value = answer.json().await.unwrap();
        assert_eq!(problem["code"], "lease-lost", "{problem}");
    }
    let answer = append(a.job.0, None, a.epoch).send().await.unwrap();
    assert_eq!(answer.status(), 401);
    assert_eq!(doorbell_of(&cluster, "raw").await, Some(true));
    // A cancel rings too, and the next poll brings it.
    let (status, _) = cluster
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/runs/{run}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 202);
    tokio::time::timeout(Duration::from_secs(30), bell.ring())
        .await
        .expect("the doorbell rang for the cancel")
        .unwrap();
    // The bell may have rung for the first of the two jobs (or rung before, for work): the
    // polls bring both cancels within a moment.
    let mut jobs = vec![a.job, b.job];
    jobs.sort();
    let mut cancelled = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        cancelled.extend(client.poll(&poll).await.unwrap().cancel);
        cancelled.sort();
        cancelled.dedup();
        if cancelled == jobs {
            break;
        }
        assert!(Instant::now() < deadline, "the polls brought {cancelled:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_run_as_runs_its_local_steps_as_that_user() {
    hodei_api::client::install_crypto();
    let out = Command::new("id")
        .args(["-u", "hodei-step"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the user hodei-step is missing: ./scripts/test creates it"
    );
    let uid = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let cluster = Cluster::start("run-as", 30);
    let token = cluster.registration_token().await;
    let _agent = cluster.agent("a1", &token, &["--run-as", "hodei-step"]);
    cluster
        .apply(
            "who",
            "name: who\non: { manual: {} }\njobs:\n  who:\n    steps:\n      - run: id -u; if ls ../.. >/dev/null 2>&1; then echo DATA-LISTED; else echo data unlisted; fi\n",
        )
        .await;
    let run = cluster.trigger("who").await;
    let run = cluster
        .wait_run(run, Duration::from_secs(30), finished)
        .await;
    let log = cluster.log(run["jobs"][0]["id"].as_u64().unwrap()).await;
    assert_eq!(
        run["state"],
        "succeeded",
        "{}",
        String::from_utf8_lossy(&log)
    );
    assert_eq!(
        String::from_utf8_lossy(&log),
        format!("{uid}\ndata unlisted\n")
    );
}

/// How long the first attempt of a counted job sleeps: `base` seconds and a fraction that
/// differs between test processes, so that its `sleep` is told apart from any other on the
/// machine (another run of these tests, say).
fn long_sleep(base: u32) -> String {
    format!("{base}.{:03}", std::process::id() % 1000)
}

/// A job that counts its attempts and its one side effect in `marks`: the first attempt
/// takes `long` seconds (it is cut off long before), the next ones a second.
fn counted_job(marks: &Path, long: &str) -> String {
    format!(
        "name: counted\non: {{ manual: {{}} }}\njobs:\n  work:\n    retry: 1\n    steps:\n      - run: |\n          if [ -e {m}/starts ]; then d=1; else d={long}; fi\n          echo start >> {m}/starts\n          echo working\n          sleep $d\n          echo done >> {m}/effects\n          echo finished\n",
        m = marks.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_with_sigkill_loses_its_job_to_another_and_reaps_what_it_left() {
    hodei_api::client::install_crypto();
    let cluster = Cluster::start("sigkill", 3);
    let token = cluster.registration_token().await;
    let mut first = cluster.agent("first", &token, &[]);
    let marks = cluster.data.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    cluster
        .apply("counted", &counted_job(&marks, &long_sleep(30)))
        .await;
    let run = cluster.trigger("counted").await;
    wait_for_file(&marks.join("starts"), Duration::from_secs(30));
    // Killed once the server knows the job runs there.
    cluster
        .wait_run(run, Duration::from_secs(30), |r| {
            r["jobs"][0]["state"] == "running"
        })
        .await;
    first.kill();
    let _second = cluster.agent("second", &token, &[]);
    let run = cluster
        .wait_run(run, Duration::from_secs(60), finished)
        .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(run["jobs"][0]["worker"], "second");
    assert_eq!(run["jobs"][0]["attempt"], 2);
    // The step the killed agent left behind is stopped when it starts again on its data.
    let _again = cluster.agent("first", &token, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster
        .agent_log("first")
        .contains("an earlier run of this agent left behind")
    {
        assert!(Instant::now() < deadline, "{}", cluster.agent_log("first"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let left = step_processes(&format!("sleep {}", long_sleep(30)));
    assert!(
        left.is_empty(),
        "the orphaned step is gone: {}",
        describe(&left)
    );
    assert_eq!(
        lines_of(&marks.join("effects")),
        ["done"],
        "one attempt counted"
    );
    let log = String::from_utf8_lossy(&cluster.log(run["jobs"][0]["id"].as_u64().unwrap()).await)
        .into_owned();
    assert!(log.contains("stopped answering"), "{log}");
    assert!(log.ends_with("working\nfinished\n"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agent_past_its_lease_is_refused_when_it_wakes_and_stops_its_job() {
    hodei_api::client::install_crypto();
    let cluster = Cluster::start("frozen", 3);
    let token = cluster.registration_token().await;
    let first = cluster.agent("first", &token, &[]);
    let marks = cluster.data.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    cluster
        .apply("counted", &counted_job(&marks, &long_sleep(31)))
        .await;
    let run = cluster.trigger("counted").await;
    wait_for_file(&marks.join("starts"), Duration::from_secs(30));
    cluster
        .wait_run(run, Duration::from_secs(30), |r| {
            r["jobs"][0]["state"] == "running"
        })
        .await;
    // Frozen (as `docker pause` does), its step frozen with it: the lease runs out.
    first.signal(libc::SIGSTOP);
    let step = step_processes(&format!("sleep {}", long_sleep(31)));
    assert!(!step.is_empty());
    for pid in &step {
        unsafe { libc::kill(*pid, libc::SIGSTOP) };
    }
    let _second = cluster.agent("second", &token, &[]);
    let run = cluster
        .wait_run(run, Duration::from_secs(60), finished)
        .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(run["jobs"][0]["worker"], "second");
    // It wakes: the server refuses it, and it stops what it ran.
    first.signal(libc::SIGCONT);
    for pid in &step {
        unsafe { libc::kill(*pid, libc::SIGCONT) };
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster.agent_log("first").contains("stopping it") {
        assert!(Instant::now() < deadline, "{}", cluster.agent_log("first"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while !step_processes(&format!("sleep {}", long_sleep(31))).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the stale attempt's step is stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        lines_of(&marks.join("effects")),
        ["done"],
        "one attempt counted"
    );
    let run = cluster.run(run["id"].as_u64().unwrap()).await;
    assert_eq!(run["state"], "succeeded");
}

/// What the processes are, for a failure's message.
fn describe(pids: &[i32]) -> String {
    pids.iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            format!(
                "{stat} [{}]",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The processes whose command line is `text`.
fn step_processes(text: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.trim_end() == text {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_killed_in_the_middle_of_a_job_comes_back_and_the_job_finishes_whole() {
    hodei_api::client::install_crypto();
    let mut cluster = Cluster::start("server-sigkill", 10);
    let token = cluster.registration_token().await;
    let _agent = cluster.agent("a1", &token, &[]);
    cluster
        .apply(
            "ticks",
            "name: ticks\non: { manual: {} }\njobs:\n  work:\n    steps:\n      - run: for i in $(seq 1 20); do echo \"tick $i\"; sleep 0.25; done\n      - run: echo second step\n",
        )
        .await;
    let run = cluster.trigger("ticks").await;
    cluster
        .wait_run(run, Duration::from_secs(30), |r| {
            r["jobs"][0]["state"] == "running"
        })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.kill_server();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.start_server();
    let run = cluster
        .wait_run(run, Duration::from_secs(60), finished)
        .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(run["jobs"][0]["attempt"], 1, "the same attempt went on");
    let mut expected: String = (1..=20).map(|i| format!("tick {i}\n")).collect();
    expected.push_str("second step\n");
    let log = cluster.log(run["jobs"][0]["id"].as_u64().unwrap()).await;
    assert_eq!(String::from_utf8_lossy(&log), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_jobs_finish_and_takes_no_new_one() {
    hodei_api::client::install_crypto();
    let cluster = Cluster::start("sigterm", 30);
    let token = cluster.registration_token().await;
    let mut agent = cluster.agent("a1", &token, &[]);
    let marks = cluster.data.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    cluster
        .apply(
            "short",
            &format!(
                "name: short\non: {{ manual: {{}} }}\njobs:\n  work:\n    steps:\n      - run: touch {m}/started; sleep 2; echo ok\n",
                m = marks.display()
            ),
        )
        .await;
    let run = cluster.trigger("short").await;
    wait_for_file(&marks.join("started"), Duration::from_secs(30));
    agent.signal(libc::SIGTERM);
    assert_eq!(agent.exit_code(Duration::from_secs(30)), 0);
    let run = cluster
        .wait_run(run, Duration::from_secs(30), finished)
        .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    // A job triggered now waits: no agent takes it.
    let waiting = cluster.trigger("short").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(cluster.run(waiting).await["jobs"][0]["state"], "queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_job_agent_runs_one_job_then_leaves_and_one_without_a_job_leaves_at_its_idle_timeout()
{
    hodei_api::client::install_crypto();
    let cluster = Cluster::start("one-job", 30);
    let token = cluster.registration_token().await;
    cluster
        .apply(
            "two",
            "name: two\non: { manual: {} }\njobs:\n  first:\n    steps:\n      - run: echo first; sleep 1\n  second:\n    steps:\n      - run: echo second; sleep 1\n",
        )
        .await;
    let run = cluster.trigger("two").await;
    // Two jobs wait; the agent (two slots asked for) takes one, finishes it and exits 0.
    let mut agent = cluster.agent("once", &token, &["--one-job"]);
    assert_eq!(agent.exit_code(Duration::from_secs(60)), 0);
    let view = cluster.run(run).await;
    let states: Vec<&str> = view["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["state"].as_str().unwrap())
        .collect();
    let mut sorted = states.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["queued", "succeeded"], "{view:#}");
    let done = view["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["state"] == "succeeded")
        .unwrap();
    let log = cluster.log(done["id"].as_u64().unwrap()).await;
    assert!(
        log.ends_with(b"first\n") || log.ends_with(b"second\n"),
        "its whole log is with the server: {:?}",
        String::from_utf8_lossy(&log)
    );
    assert!(
        cluster
            .agent_log("once")
            .contains("The one job is done: leaving."),
        "{}",
        cluster.agent_log("once")
    );
    cluster.cancel(run).await;
    // Nothing waits: a one-job agent leaves at its idle timeout.
    let mut idle = cluster.agent("idle", &token, &["--one-job", "--idle-timeout", "1"]);
    assert_eq!(idle.exit_code(Duration::from_secs(30)), 0);
    assert!(
        cluster
            .agent_log("idle")
            .contains("No job came within the idle timeout: leaving."),
        "{}",
        cluster.agent_log("idle")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_grace_hands_the_job_back_and_another_agent_retries_it_at_once() {
    hodei_api::client::install_crypto();
    // A lease far longer than the test waits: the job moves on because it is handed back.
    let cluster = Cluster::start("hand-back", 600);
    let token = cluster.registration_token().await;
    let mut first = cluster.agent("a1", &token, &["--grace", "1"]);
    let marks = cluster.data.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    cluster
        .apply("counted", &counted_job(&marks, &long_sleep(300)))
        .await;
    let run = cluster.trigger("counted").await;
    wait_for_file(&marks.join("starts"), Duration::from_secs(30));
    let _second = cluster.agent("a2", &token, &[]);
    first.signal(libc::SIGTERM);
    assert_eq!(first.exit_code(Duration::from_secs(30)), 0);
    assert!(
        cluster.agent_log("a1").contains("back to the server"),
        "{}",
        cluster.agent_log("a1")
    );
    let run = cluster
        .wait_run(run, Duration::from_secs(60), finished)
        .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(run["jobs"][0]["attempt"], 2, "{run:#}");
    assert_eq!(run["jobs"][0]["worker"], "a2", "{run:#}");
    assert_eq!(
        lines_of(&marks.join("effects")),
        ["done"],
        "one side effect"
    );
    let log = cluster.log(run["jobs"][0]["id"].as_u64().unwrap()).await;
    let log = String::from_utf8_lossy(&log);
    assert!(
        log.contains("the agent `a1` was stopped and handed this job back"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_and_bad_writes_are_refused_clearly() {
    hodei_api::client::install_crypto();
    let cluster = Cluster::start("refused", 30);
    // A wrong registration token: exit code 3, with what to do.
    let mut agent = cluster.agent("nobody", "hodei_not-a-token", &[]);
    assert_eq!(agent.exit_code(Duration::from_secs(30)), 3);
    assert!(
        cluster
            .agent_log("nobody")
            .contains("refused the registration token"),
        "{}",
        cluster.agent_log("nobody")
    );
    // A registered agent whose credential is then deleted: exit code 3.
    let token = cluster.registration_token().await;
    let registered: Value = cluster
        .http
        .post(format!("{}/api/v1/agent/register", cluster.url()))
        .json(&json!({"token": token, "name": "raw"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let credential = registered["credential"].as_str().unwrap().to_owned();
    let agent_call = |method: reqwest::Method, path: &str| {
        cluster
            .http
            .request(method, format!("{}{path}", cluster.url()))
            .bearer_auth(&credential)
    };
    // A malformed request: 400 problem+json.
    let answer = agent_call(reqwest::Method::POST, "/api/v1/agent/poll")
        .header("content-type", "application/json")
        .body("{\"slots\": \"many\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    assert_eq!(answer.headers()["content-type"], "application/problem+json");
    // A write for a job the agent does not hold: 409.
    let answer = agent_call(
        reqwest::Method::PUT,
        "/api/v1/agent/jobs/1/log?epoch=1&offset=0",
    )
    .body("hello")
    .send()
    .await
    .unwrap();
    assert_eq!(answer.status(), 409);
    let problem: Value = answer.json().await.unwrap();
    assert_eq!(problem["code"], "lease-lost");
    // An oversized append: 413.
    let answer = agent_call(
        reqwest::Method::PUT,
        "/api/v1/agent/jobs/1/log?epoch=1&offset=0",
    )
    .body(vec![b'x'; 5 * 1024 * 1024])
    .send()
    .await
    .unwrap();
    assert_eq!(answer.status(), 413);
    // Deleted: its credential stops working at once, and the agent exits with code 3.
    let mut raw = cluster.agent("raw", "unused", &[]);
    std::fs::create_dir_all(cluster.data.join("raw")).unwrap();
    drop(raw);
    std::fs::write(
        cluster.data.join("raw/agent.json"),
        json!({"server": cluster.url(), "name": "raw", "credential": credential, "instance": "agent-raw-test"}).to_string(),
    )
    .unwrap();
    let (status, _) = cluster
        .call(reqwest::Method::DELETE, "/api/v1/agents/raw", None)
        .await;
    assert_eq!(status, 204);
    raw = cluster.agent("raw", "unused", &[]);
    assert_eq!(raw.exit_code(Duration::from_secs(30)), 3);
    assert!(
        cluster.agent_log("raw").contains("register again"),
        "{}",
        cluster.agent_log("raw")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_agent_a_cache_is_kept_on_its_disk_and_artifacts_go_through_the_server() {
    hodei_api::client::install_crypto();
    let cluster = Cluster::start("files", 30);
    let token = cluster.registration_token().await;
    let _agent = cluster.agent("cacher", &token, &["--labels", "linux,arm64"]);
    cluster
        .apply(
            "cached",
            "name: cached\non: { manual: {} }\njobs:\n  build:\n    runs_on: [arm64]\n    cache: { key: deps, paths: [deps] }\n    steps:\n      - run: 'if [ -f deps/made ]; then echo restored; else mkdir -p deps && echo x > deps/made && echo made; fi'\n",
        )
        .await;
    let mut logs = Vec::new();
    for _ in 0..2 {
        let run = cluster.trigger("cached").await;
        let run = cluster
            .wait_run(run, Duration::from_secs(60), finished)
            .await;
        assert_eq!(run["state"], "succeeded", "{run:#}");
        let log = cluster.log(run["jobs"][0]["id"].as_u64().unwrap()).await;
        logs.push(String::from_utf8_lossy(&log).into_owned());
    }
    assert!(
        logs[0].contains("made\n") && logs[0].contains("cache `deps` saved"),
        "{}",
        logs[0]
    );
    assert!(
        logs[1].contains("restored\n") && logs[1].contains("cache `deps` restored"),
        "{}",
        logs[1]
    );

    // Artifacts: kept by the server, listed and downloaded as any run's, given to the job
    // that needs them on the agent.
    cluster
        .apply(
            "kept",
            "name: kept\non: { manual: {} }\njobs:\n  build:\n    runs_on: [arm64]\n    artifacts: [out]\n    steps:\n      - run: mkdir -p out/sub && printf 'alpha\\n' > out/a && printf 'beta' > out/sub/b && ln -s /etc/passwd out/link\n  use:\n    runs_on: [arm64]\n    needs: [build]\n    steps:\n      - run: cat out/a out/sub/b && test ! -e out/link\n",
        )
        .await;
    let run = cluster.trigger("kept").await;
    let run = cluster
        .wait_run(run, Duration::from_secs(60), finished)
        .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let id = run["id"].as_u64().unwrap();
    let job_of = |name: &str| {
        run["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .unwrap()["id"]
            .as_u64()
            .unwrap()
    };
    let build_log = String::from_utf8_lossy(&cluster.log(job_of("build")).await).into_owned();
    assert!(
        build_log.contains("kept 2 artifact file(s), 10 bytes"),
        "{build_log}"
    );
    let use_log = String::from_utf8_lossy(&cluster.log(job_of("use")).await).into_owned();
    assert!(
        use_log.contains("restored 2 artifact file(s) of the jobs this one needs")
            && use_log.contains("alpha\nbeta"),
        "{use_log}"
    );
    let (status, listed) = cluster
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/runs/{id}/artifacts"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{listed}");
    let listed = listed["artifacts"].as_array().unwrap().clone();
    let paths: Vec<&str> = listed.iter().filter_map(|a| a["path"].as_str()).collect();
    assert_eq!(paths, ["out/a", "out/sub/b"], "{listed:?}");
    assert_eq!(listed[0]["job"], "build");
    assert_eq!(listed[0]["size"], 6);
    let downloaded = cluster
        .http
        .get(format!(
            "{}{}",
            cluster.url(),
            listed[1]["url"].as_str().unwrap()
        ))
        .bearer_auth(&cluster.token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&downloaded[..], b"beta");
    // Kept on the server's disk, as those of jobs on its own worker.
    assert!(
        cluster
            .data
            .join(format!(
                "srv/files/artifacts/run-{id}/job-{}/files/out/sub/b",
                job_of("build")
            ))
            .is_file()
    );

    // Over the server's limit (1 MiB here): the job fails, says why, and keeps nothing.
    cluster
        .apply(
            "huge",
            "name: huge\non: { manual: {} }\njobs:\n  build:\n    runs_on: [arm64]\n    artifacts: [big]\n    steps:\n      - run: head -c 2097152 /dev/zero > big\n",
        )
        .await;
    let run = cluster.trigger("huge").await;
    let run = cluster
        .wait_run(run, Duration::from_secs(60), finished)
        .await;
    assert_eq!(run["state"], "failed", "{run:#}");
    let log = cluster.log(run["jobs"][0]["id"].as_u64().unwrap()).await;
    let log = String::from_utf8_lossy(&log);
    assert!(
        log.contains("cannot keep the job's artifacts: cannot send the artifacts to the server: the job's artifacts (1 files) is 2097152 bytes, over the limit of 1048576 bytes (`artifacts_max_job_mib`)"),
        "{log}"
    );
    let (_, listed) = cluster
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/runs/{}/artifacts", run["id"]),
            None,
        )
        .await;
    assert_eq!(listed["artifacts"], json!([]), "{listed}");
}

const HOOK_SECRET: &str = "hook-secret-value";

/// Registers repository `name`, its webhook secret stored as `HOOK` and `secrets` beside it.
async fn register_repo(cluster: &Cluster, name: &str, secrets: &[(&str, &str)], mut repo: Value) {
    for (secret, value) in [("HOOK", HOOK_SECRET)].iter().chain(secrets) {
        let (status, body) = cluster
            .call(
                reqwest::Method::PUT,
                &format!("/api/v1/secrets/repository/{name}/{secret}"),
                Some(json!({ "value": value })),
            )
            .await;
        assert!(status < 300, "{body}");
    }
    repo["webhook_secret"] = json!("HOOK");
    let (status, body) = cluster
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/repos/{name}"),
            Some(repo),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// A push delivery of GitHub, signed with [`HOOK_SECRET`].
async fn deliver_push(cluster: &Cluster, repo: &str, delivery: &str, body: &str) -> Value {
    let signature = hodei_api::webhook::sign(HOOK_SECRET, body.as_bytes());
    let response = cluster
        .http
        .post(format!("{}/api/v1/repos/{repo}/webhook", cluster.url()))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", format!("sha256={signature}"))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{answer}");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_agent_a_job_checks_out_the_runs_commit_from_its_own_mirror() {
    use git_support::{GitServer, HttpGitServer, github_push};
    hodei_api::client::install_crypto();
    let cluster = Cluster::start("checkout", 30);
    let token = cluster.registration_token().await;
    let _agent = cluster.agent("fetcher", &token, &["--labels", "linux,arm64"]);
    let origin = GitServer::start(&cluster.data.join("git"));
    let secret = "tok-5e7b2d-very-private";
    let forge = HttpGitServer::start(&cluster.data.join("git/served"), "ci-bot", secret);
    let registration = json!({"forge": "github", "clone_url": forge.url("origin.git"),
        "credentials": "GIT_CREDS"});
    let creds = format!("ci-bot:{secret}");
    register_repo(&cluster, "private", &[("GIT_CREDS", &creds)], registration).await;
    let pipeline = "name: private-ci\non: { push: { branches: [main] } }\ncheckout: { depth: 2 }\njobs:\n  build:\n    runs_on: [arm64]\n    steps:\n      - run: cat src/lib.rs; echo \"at $(git rev-parse HEAD) with $(git rev-list --count HEAD) commit(s)\"\n";
    origin.push("main", &[("src/lib.rs", "// first\n")]);
    origin.push("main", &[("src/lib.rs", "// second\n")]);
    let (before, commit) = origin.push(
        "main",
        &[
            (".hodei.yml", pipeline),
            ("src/lib.rs", "// private code\n"),
        ],
    );
    let body = github_push("refs/heads/main", &before, &commit);
    let answer = deliver_push(&cluster, "private", "d-1", &body).await;
    let run = cluster
        .wait_run(
            answer["run"].as_u64().unwrap(),
            Duration::from_secs(60),
            finished,
        )
        .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(run["jobs"][0]["worker"], "fetcher");
    let log = cluster.log(run["jobs"][0]["id"].as_u64().unwrap()).await;
    let log = String::from_utf8_lossy(&log);
    assert!(
        log.contains("// private code") && log.contains(&format!("at {commit} with 2 commit(s)")),
        "{log}"
    );
    // The agent fetched into its own mirror, with the credentials in a header only; they are
    // in no log of the agent or the server, and in no answer but the job's checkout call.
    assert!(
        cluster
            .data
            .join("fetcher/mirrors/private.git/HEAD")
            .is_file()
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cluster.data.join("fetcher/mirrors"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the mirrors are the agent's alone");
    let seen = forge.seen.lock().unwrap().join("\n");
    assert!(
        seen.to_lowercase().contains("authorization: basic"),
        "{seen}"
    );
    assert!(!seen.contains(secret), "{seen}");
    let server_log = std::fs::read_to_string(cluster.data.join("server.log")).unwrap();
    assert!(!cluster.agent_log("fetcher").contains(secret));
    assert!(!server_log.contains(secret));
    assert!(!log.contains(secret));

    // The same commit again (a second delivery): nothing is fetched, from the mirrors.
    let asked = forge.seen.lock().unwrap().len();
    let answer = deliver_push(&cluster, "private", "d-2", &body).await;
    let run = cluster
        .wait_run(
            answer["run"].as_u64().unwrap(),
            Duration::from_secs(60),
            finished,
        )
        .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(forge.seen.lock().unwrap().len(), asked);

    // The job token opens the checkout of its own job only, under its lease: another
    // bearer is refused.
    let (status, refused) = cluster
        .call(
            reqwest::Method::GET,
            &format!(
                "/api/v1/agent/jobs/{}/checkout?epoch=1",
                run["jobs"][0]["id"]
            ),
            None,
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    assert!(!refused.to_string().contains(secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_agent_jobs_in_containers_check_out_and_pass_artifacts() {
    use git_support::{GitServer, github_push};
    hodei_api::client::install_crypto();
    let engine = Command::new("docker").args(["version"]).output();
    assert!(
        engine.is_ok_and(|o| o.status.success()),
        "this test needs the Docker engine"
    );
    common::import_busybox();
    let cluster = Cluster::start("checkout-docker", 30);
    let token = cluster.registration_token().await;
    let _agent = cluster.agent("agentfiles-docker", &token, &["--labels", "linux"]);
    let origin = GitServer::start(&cluster.data.join("git"));
    let registration = json!({"forge": "github", "clone_url": origin.url()});
    register_repo(&cluster, "boxed", &[], registration).await;
    let pipeline = "name: boxed-ci\non: { push: {} }\ndefaults: { image: BUSYBOX, pull: never }\njobs:\n  build:\n    runs_on: [docker]\n    artifacts: [out]\n    steps:\n      - run: mkdir -p out && cat src/lib.rs > out/copy && echo built in a container\n  use:\n    runs_on: [docker]\n    needs: [build]\n    steps:\n      - run: test ! -e /etc/os-release && cat out/copy\n"
        .replace("BUSYBOX", common::BUSYBOX);
    let pipeline = pipeline.as_str();
    let (before, commit) = origin.push(
        "main",
        &[(".hodei.yml", pipeline), ("src/lib.rs", "// boxed code\n")],
    );
    let body = github_push("refs/heads/main", &before, &commit);
    let answer = deliver_push(&cluster, "boxed", "b-1", &body).await;
    let run = cluster
        .wait_run(
            answer["run"].as_u64().unwrap(),
            Duration::from_secs(120),
            finished,
        )
        .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let use_job = run["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "use")
        .unwrap();
    assert_eq!(use_job["worker"], "agentfiles-docker");
    let log = cluster.log(use_job["id"].as_u64().unwrap()).await;
    let log = String::from_utf8_lossy(&log);
    assert!(
        log.contains("restored 1 artifact file(s)") && log.contains("// boxed code"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_going_when_the_server_stopped_still_reports_its_final_commit_status() {
    use git_support::{GitServer, StatusReceiver, github_push};
    hodei_api::client::install_crypto();
    let mut cluster = Cluster::start("status-restart", 30);
    let token = cluster.registration_token().await;
    let _agent = cluster.agent("reporter", &token, &["--labels", "linux,arm64"]);
    let origin = GitServer::start(&cluster.data.join("git"));
    let receiver = StatusReceiver::start();
    // The clone URL names owner/name as a forge's does; the status API is the receiver.
    let served = cluster.data.join("git/served");
    std::fs::create_dir_all(served.join("acme")).unwrap();
    std::os::unix::fs::symlink(served.join("origin.git"), served.join("acme/origin.git")).unwrap();
    let registration = json!({"forge": "github",
        "clone_url": format!("git://127.0.0.1:{}/acme/origin.git", origin.port),
        "status_token": "STATUS",
        "status_api": format!("http://127.0.0.1:{}/api", receiver.port)});
    register_repo(
        &cluster,
        "app",
        &[("STATUS", "status-token-2")],
        registration,
    )
    .await;
    let pipeline = "name: app-ci\non: { push: {} }\njobs:\n  build:\n    runs_on: [arm64]\n    steps:\n      - run: sleep 4\n";
    let (before, commit) = origin.push("main", &[(".hodei.yml", pipeline)]);
    let body = github_push("refs/heads/main", &before, &commit);
    let answer = deliver_push(&cluster, "app", "s-1", &body).await;
    let id = answer["run"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.calls.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no pending status within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.kill_server();
    cluster.start_server();
    let run = cluster
        .wait_run(id, Duration::from_secs(90), finished)
        .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let calls = receiver.calls.lock().unwrap().clone();
        if let Some((line, authorization, body)) = calls.last()
            && body["state"] == "success"
        {
            assert_eq!(
                line,
                &format!("POST /api/repos/acme/origin/statuses/{commit} HTTP/1.1")
            );
            assert_eq!(authorization, "Bearer status-token-2");
            assert_eq!(
                body["target_url"],
                format!("{}/api/v1/runs/{id}", cluster.url()),
                "{calls:#?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no final status after the restart: {calls:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_run_of_a_repositorys_pipeline_checks_out_the_head_of_its_default_branch() {
    use git_support::{GitServer, github_push};
    hodei_api::client::install_crypto();
    let cluster = Cluster::start("scheduled-head", 30);
    let token = cluster.registration_token().await;
    let _agent = cluster.agent("nightly", &token, &["--labels", "linux,arm64"]);
    let origin = GitServer::start(&cluster.data.join("git"));
    let registration = json!({"forge": "github", "clone_url": origin.url()});
    register_repo(&cluster, "sched", &[], registration).await;
    // A secret of the repository: a scheduled run of its pipeline gets it too.
    let (status, body) = cluster
        .call(
            reqwest::Method::PUT,
            "/api/v1/secrets/repository/sched/REPO_TOKEN",
            Some(json!({ "value": "repo-secret-value" })),
        )
        .await;
    assert!(status < 300, "{body}");
    let pipeline = "name: nightly\non: { push: { branches: [trunk] }, schedule: ['* * * * * *'] }\nsecrets: [REPO_TOKEN]\njobs:\n  build:\n    runs_on: [arm64]\n    steps:\n      - run: cat src/lib.rs; test -n \"$REPO_TOKEN\" && echo \"on $HODEI_EVENT\"\n";
    let (before, first) = origin.push(
        "trunk",
        &[(".hodei.yml", pipeline), ("src/lib.rs", "// first\n")],
    );
    let mut body: Value =
        serde_json::from_str(&github_push("refs/heads/trunk", &before, &first)).unwrap();
    body["repository"]["default_branch"] = json!("trunk");
    deliver_push(&cluster, "sched", "h-1", &body.to_string()).await;
    // A later push that no webhook announces: the next tick fetches it.
    let (_, second) = origin.push("trunk", &[("src/lib.rs", "// second\n")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let (_, runs) = cluster
            .call(
                reqwest::Method::GET,
                "/api/v1/runs?pipeline=nightly&limit=50",
                None,
            )
            .await;
        let mut found = None;
        for item in runs["items"].as_array().into_iter().flatten() {
            if item["event"] != "schedule" {
                continue;
            }
            let run = cluster.run(item["id"].as_u64().unwrap()).await;
            if run["commit"] == second.as_str() {
                found = Some(run);
                break;
            }
        }
        if let Some(run) = found {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled run of {second}: {runs:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let run = cluster
        .wait_run(
            run["id"].as_u64().unwrap(),
            Duration::from_secs(60),
            finished,
        )
        .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(run["repository"], "sched", "{run:#}");
    assert_eq!(run["branch"], "trunk", "{run:#}");
    let log = cluster.log(run["jobs"][0]["id"].as_u64().unwrap()).await;
    let log = String::from_utf8_lossy(&log);
    assert!(
        log.contains("// second") && log.contains("on schedule"),
        "{log}"
    );
}

// ---- Servers and agents as containers on a private network --------------------------------

/// Hodei's image, built once per test run from this test's binary.
fn hodei_image() -> &'static str {
    common::hodei_image()
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker command runs: the container tests need the Docker engine");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A server container and its agents on a network of their own; all removed when dropped.
struct Deployment {
    api: Api,
    net: String,
    server: String,
    registration: String,
    marks: PathBuf,
    containers: Vec<String>,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl std::ops::Deref for Deployment {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Deployment {
    // The turn is held for the test's life, across its awaits, on purpose: tests run on
    // runtimes of their own, and the holder goes on while the others wait.
    async fn start(test: &str, lease: u64) -> Deployment {
        Deployment::start_with(test, lease, &[]).await
    }

    /// The network of a test's deployment.
    fn network(test: &str) -> String {
        format!("hodei-test-{test}-{}", std::process::id())
    }

    /// Starts the deployment with `extra` arguments of `docker run` for the server container.
    #[allow(clippy::await_holding_lock)]
    async fn start_with(test: &str, lease: u64, extra: &[&str]) -> Deployment {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        hodei_api::client::install_crypto();
        let image = hodei_image();
        let net = Deployment::network(test);
        let _ = Command::new("docker")
            .args(["network", "rm", &net])
            .output();
        docker(&["network", "create", &net]);
        let marks = scratch(&format!("containers-{test}"));
        // The steps run as the image's unprivileged user: the marks are theirs to write.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o777)).unwrap();
        let token = format!("hodei_containers{}", "x".repeat(40));
        let server = format!("{net}-server");
        let lease = format!("HODEI_AGENT_LEASE_SECONDS={lease}");
        let bootstrap = format!("HODEI_BOOTSTRAP_TOKEN={token}");
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &server,
            "--network",
            &net,
            "--network-alias",
            "server",
            "-p",
            "127.0.0.1::8080",
            "-e",
            "HODEI_LOCAL_SLOTS=0",
            "-e",
            &lease,
            "-e",
            &bootstrap,
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[image, "server", "--listen", "0.0.0.0:8080"]);
        docker(&args);
        let port = docker(&["port", &server, "8080/tcp"]);
        let url = format!("http://{}", port.lines().next().unwrap());
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while http.get(format!("{url}/readyz")).send().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the server container never answered"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut deployment = Deployment {
            api: Api {
                base: url,
                token,
                http,
            },
            net,
            server: server.clone(),
            registration: String::new(),
            marks,
            containers: vec![server],
            _turn: turn,
        };
        deployment.registration = deployment.registration_token().await;
        deployment
    }

    /// Starts an agent container named `name`; answers the container's name.
    fn agent(&mut self, name: &str) -> String {
        let container = format!("{}-{name}", self.net);
        let marks = format!("{}:/marks", self.marks.display());
        docker(&[
            "run",
            "-d",
            "--name",
            &container,
            "--network",
            &self.net,
            "-v",
            &marks,
            hodei_image(),
            "agent",
            "--server",
            "http://server:8080",
            "--token",
            &self.registration,
            "--name",
            name,
            "--slots",
            "1",
        ]);
        self.containers.push(container.clone());
        container
    }

    fn logs(&self, container: &str) -> String {
        let out = Command::new("docker")
            .args(["logs", container])
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        // A failed test says what the server said.
        if std::thread::panicking() {
            eprintln!("server container's output:\n{}", self.logs(&self.server));
        }
        for container in &self.containers {
            let _ = Command::new("docker")
                .args(["rm", "-f", container])
                .output();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.net])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_a_network_cut_shorter_than_the_lease_loses_no_byte() {
    let mut deployment = Deployment::start("short-cut", 30).await;
    let agent = deployment.agent("a1");
    deployment.apply("ticks", "name: ticks\non: { manual: {} }\njobs:\n  work:\n    steps:\n      - run: for i in $(seq 1 24); do echo \"tick $i\"; sleep 0.5; done\n").await;
    let run = deployment.trigger("ticks").await;
    deployment
        .wait_run(run, Duration::from_secs(60), |r| {
            r["jobs"][0]["state"] == "running"
        })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    docker(&["network", "disconnect", &deployment.net, &agent]);
    tokio::time::sleep(Duration::from_secs(6)).await;
    docker(&["network", "connect", &deployment.net, &agent]);
    let run = deployment
        .wait_run(run, Duration::from_secs(60), finished)
        .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(run["jobs"][0]["attempt"], 1, "the same attempt went on");
    let expected: String = (1..=24).map(|i| format!("tick {i}\n")).collect();
    let log = deployment.log(run["jobs"][0]["id"].as_u64().unwrap()).await;
    assert_eq!(String::from_utf8_lossy(&log), expected);
}

/// How an agent is cut off from its server for longer than its lease.
#[derive(Debug, Clone, Copy)]
enum CutOff {
    Disconnect,
    Pause,
    Kill,
}

async fn an_agent_cut_off_past_its_lease(test: &str, how: CutOff) {
    let mut deployment = Deployment::start(test, 4).await;
    let first = deployment.agent("first");
    deployment.apply("counted", "name: counted\non: { manual: {} }\njobs:\n  work:\n    retry: 1\n    steps:\n      - run: |\n          if [ -e /marks/starts ]; then d=1; else d=60; fi\n          echo start >> /marks/starts\n          echo working\n          sleep $d\n          echo done >> /marks/effects\n          echo finished\n").await;
    let run = deployment.trigger("counted").await;
    wait_for_file(&deployment.marks.join("starts"), Duration::from_secs(60));
    deployment
        .wait_run(run, Duration::from_secs(30), |r| {
            r["jobs"][0]["state"] == "running"
        })
        .await;
    // Once the server holds the first attempt's output, the agent is cut off.
    let job = deployment
        .wait_run(run, Duration::from_secs(30), |r| {
            r["jobs"][0]["id"].is_u64()
        })
        .await["jobs"][0]["id"]
        .as_u64()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while deployment.log(job).await != b"working\n" {
        assert!(
            Instant::now() < deadline,
            "the first attempt's output never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match how {
        CutOff::Disconnect => docker(&["network", "disconnect", &deployment.net, &first]),
        CutOff::Pause => docker(&["pause", &first]),
        CutOff::Kill => docker(&["kill", &first]),
    };
    let _second = deployment.agent("second");
    let run = deployment
        .wait_run(run, Duration::from_secs(90), finished)
        .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(run["jobs"][0]["worker"], "second");
    assert_eq!(run["jobs"][0]["attempt"], 2);
    // The first agent comes back: its writes are refused and it stops what it ran.
    match how {
        CutOff::Disconnect => {
            docker(&["network", "connect", &deployment.net, &first]);
        }
        CutOff::Pause => {
            docker(&["unpause", &first]);
        }
        CutOff::Kill => {
            docker(&["start", &first]);
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    // Killed, its step died with its container: it comes back with nothing to stop.
    let back = |logs: &str| match how {
        CutOff::Kill => logs.matches("Agent `first`").count() == 2,
        _ => logs.contains("stopping it"),
    };
    while !back(&deployment.logs(&first)) {
        assert!(
            Instant::now() < deadline,
            "the first agent never stopped its job: {}",
            deployment.logs(&first)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        lines_of(&deployment.marks.join("effects")),
        ["done"],
        "one attempt counted"
    );
    let log = deployment.log(run["jobs"][0]["id"].as_u64().unwrap()).await;
    let log = String::from_utf8_lossy(&log);
    assert!(
        log.starts_with("working\n"),
        "the first attempt's output is kept: {log}"
    );
    assert!(log.ends_with("working\nfinished\n"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_an_agent_disconnected_past_its_lease_is_refused_when_back() {
    an_agent_cut_off_past_its_lease("disconnect", CutOff::Disconnect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_an_agent_paused_past_its_lease_is_refused_when_back() {
    an_agent_cut_off_past_its_lease("pause", CutOff::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_an_agent_killed_loses_its_job_to_another() {
    an_agent_cut_off_past_its_lease("kill", CutOff::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_times_out_a_job_an_agent_holds_but_never_ends() {
    hodei_api::client::install_crypto();
    let cluster = Cluster::start("backstop", 2);
    let token = cluster.registration_token().await;
    // An agent that speaks the protocol, starts the job, keeps its lease, and says no more.
    let registered: Value = cluster
        .http
        .post(format!("{}/api/v1/agent/register", cluster.url()))
        .json(&json!({"token": token, "name": "silent"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let credential = registered["credential"].as_str().unwrap().to_owned();
    let agent = |method: reqwest::Method, path: String| {
        cluster
            .http
            .request(method, format!("{}{path}", cluster.url()))
            .bearer_auth(&credential)
    };
    cluster
        .apply(
            "stuck",
            "name: stuck\non: { manual: {} }\njobs:\n  work:\n    timeout: 1s\n    steps:\n      - run: sleep 600\n",
        )
        .await;
    let run = cluster.trigger("stuck").await;
    let work: Value = agent(reqwest::Method::POST, "/api/v1/agent/poll".into())
        .json(&json!({"slots": 1, "room": true, "wait_ms": 10_000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = work["job"]["job"]
        .as_u64()
        .expect("the job is given to the agent");
    let epoch = work["job"]["epoch"].as_u64().unwrap();
    // The job's own calls present its job token.
    let job_token = work["job"]["token"].as_str().unwrap().to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let started_events = json!([
        {"type": "job_placed", "run": run, "job": job, "attempt": 1, "worker": "silent", "at": now},
        {"type": "job_started", "run": run, "job": job, "attempt": 1, "worker": "silent", "at": now},
    ]);
    let events_path = format!("/api/v1/agent/jobs/{job}/events");
    let answer = cluster
        .http
        .post(format!("{}{events_path}", cluster.url()))
        .bearer_auth(&job_token)
        .json(&json!({"epoch": epoch, "seq": 0, "events": started_events}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    let started = Instant::now();
    let run = loop {
        agent(reqwest::Method::POST, "/api/v1/agent/heartbeat".into())
            .json(&json!({"jobs": [{"job": job, "epoch": epoch}]}))
            .send()
            .await
            .unwrap();
        let run = cluster.run(run).await;
        if finished(&run) {
            break run;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{run:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(run["jobs"][0]["state"], "timed_out", "{run:#}");
    // Its writes are refused from now on: the job token ended with the job.
    let answer = cluster
        .http
        .post(format!("{}{events_path}", cluster.url()))
        .bearer_auth(&job_token)
        .json(&json!({"epoch": epoch, "seq": 1, "events": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 409);
    let log = String::from_utf8_lossy(&cluster.log(job).await).into_owned();
    assert!(
        log.contains("did not end the job within its timeout"),
        "{log}"
    );
}
