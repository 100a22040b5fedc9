//! Agents under load: the `hodei` binary as a server whose own worker is off, and `hodei agent`
//! processes on the same machine (`cargo bench --bench agents`; figures in
//! `docs/performance.md`). Each figure is printed beside a baseline measured in the same run:
//! the same work on a server's own local worker.
//!
//! - claim latency: a one-step `true` job queued → its step started, on an idle agent (p50,
//!   p99 over `HODEI_BENCH_CLAIMS` runs, default 200, one at a time), from the server's own
//!   event times; the same on the local worker;
//! - no-op jobs per second: a run of 120 parallel `true` jobs through 3 agents of 2 slots,
//!   against the local worker with 6 slots, in turns, the median of `HODEI_BENCH_ROUNDS`
//!   (default 9) rounds each, from the runs' own start and end times;
//! - a 1,000,000-line log (`seq 1 1000000`, 6.9 MB) through an agent: MB/s from the trigger to
//!   the run's end, the log checked whole; the same on the local worker;
//! - the server's memory per connected idle agent: `HODEI_BENCH_AGENTS` (default 1000)
//!   simulated agents, each registered and holding a long poll, against the server's idle
//!   resident memory.
//!
//! Everything shares the machine's cores: the agents, their steps, the server and this client.
//! Under `cargo test` (no `--bench` argument) it runs small, as a smoke test of itself.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binary() -> std::ffi::OsString {
    std::env::var_os("HODEI_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_hodei").into())
}

struct Server {
    process: Process,
    url: String,
    token: String,
    http: reqwest::Client,
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-agents-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn start_server(data: &Path, local_slots: u32) -> Server {
    let mut child = Command::new(binary())
        .args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.join("srv"))
        .env("HODEI_LOCAL_SLOTS", local_slots.to_string())
        .env("HODEI_MAX_QUEUED_JOBS", "10000000")
        .env("HODEI_SHUTDOWN_GRACE_SECONDS", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("hodei starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("the server prints its URL").unwrap();
        if let Some(rest) = line.strip_prefix("Hodei server listening on ") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let token = std::fs::read_to_string(data.join("srv/admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    Server {
        process: Process(child),
        url,
        token,
        http: reqwest::Client::new(),
    }
}

impl Server {
    async fn post(&self, path: &str, body: Value) -> Value {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn apply(&self, name: &str, yaml: &str) {
        let answer = self
            .http
            .put(format!("{}/api/v1/pipelines/{name}", self.url))
            .bearer_auth(&self.token)
            .header("content-type", "application/yaml")
            .body(yaml.to_owned())
            .send()
            .await
            .unwrap();
        assert!(
            answer.status().is_success(),
            "{}",
            answer.text().await.unwrap()
        );
    }

    async fn registration(&self) -> String {
        self.post("/api/v1/agent-tokens", json!({"name": "bench"}))
            .await["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn agent(&self, data: &Path, name: &str, token: &str, slots: u32) -> Process {
        Process(
            Command::new(binary())
                .args([
                    "agent", "--server", &self.url, "--token", token, "--name", name,
                ])
                .args(["--slots", &slots.to_string(), "--data"])
                .arg(data.join(name))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("hodei agent starts"),
        )
    }

    /// Waits until `count` agents are ready workers.
    async fn wait_agents(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let workers = self.get("/api/v1/workers").await;
            let ready = workers["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|w| w["agent"].is_object() && w["state"] == "ready")
                .count();
            if ready >= count {
                return;
            }
            assert!(Instant::now() < deadline, "the agents never connected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Triggers a run of `pipeline` and waits for its end; answers the run.
    async fn run(&self, pipeline: &str) -> Value {
        let run = self
            .post(&format!("/api/v1/pipelines/{pipeline}/runs"), json!({}))
            .await;
        let id = run["id"].as_u64().expect("a run");
        loop {
            let run = self.get(&format!("/api/v1/runs/{id}")).await;
            if matches!(
                run["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                assert_eq!(run["state"], "succeeded", "{run:#}");
                return run;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn millis(time: &Value) -> i64 {
    let text = time.as_str().expect("an RFC 3339 time");
    hodei_domain::ids::Timestamp::parse_rfc3339(text)
        .expect("an RFC 3339 time")
        .0
}

/// Queued → first step started, in milliseconds, for each of `runs` one-job runs, one at a time.
async fn claim_latencies(server: &Server, runs: u64) -> Vec<i64> {
    server
        .apply(
            "noop",
            "name: noop\non: { manual: {} }\njobs:\n  job:\n    steps:\n      - run: \"true\"\n",
        )
        .await;
    let mut latencies = Vec::new();
    for _ in 0..runs {
        let run = server.run("noop").await;
        // A one-job run queues its job as it starts (one transaction).
        let step = &run["jobs"][0]["steps"][0]["started"];
        latencies.push(millis(step) - millis(&run["started"]));
    }
    latencies.sort_unstable();
    latencies
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Applies the pipeline of one run of `jobs` parallel `true` jobs.
async fn apply_fan(server: &Server, jobs: usize) {
    let mut yaml = String::from("name: fan\non: { manual: {} }\njobs:\n");
    for i in 0..jobs {
        yaml.push_str(&format!("  j{i}:\n    steps:\n      - run: \"true\"\n"));
    }
    server.apply("fan", &yaml).await;
}

/// Seconds of one run of the fan-out, from its start to its end by the server's own records.
async fn fan_out(server: &Server) -> f64 {
    let run = server.run("fan").await;
    (millis(&run["finished"]) - millis(&run["started"])) as f64 / 1000.0
}

/// MB/s of a `lines`-line log from the trigger to the run's end, the log checked whole.
async fn big_log(server: &Server, lines: u64) -> f64 {
    server
        .apply(
            "big",
            &format!("name: big\non: {{ manual: {{}} }}\njobs:\n  job:\n    steps:\n      - run: seq 1 {lines}\n"),
        )
        .await;
    let began = Instant::now();
    let run = server.run("big").await;
    let seconds = began.elapsed().as_secs_f64();
    let job = run["jobs"][0]["id"].as_u64().unwrap();
    let log = server
        .http
        .get(format!("{}/api/v1/jobs/{job}/log", server.url))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let expected: Vec<u8> = (1..=lines)
        .flat_map(|n| format!("{n}\n").into_bytes())
        .collect();
    assert!(
        log[..] == expected[..],
        "the log arrived whole and identical"
    );
    expected.len() as f64 / 1e6 / seconds
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    hodei_api::client::install_crypto();
    let quick = !std::env::args().any(|a| a == "--bench");
    let claims = env_or("HODEI_BENCH_CLAIMS", if quick { 5 } else { 200 });
    let simulated = env_or("HODEI_BENCH_AGENTS", if quick { 20 } else { 1000 });
    let lines = if quick { 10_000 } else { 1_000_000 };
    let fan = if quick { 12 } else { 120 };

    let rounds = env_or("HODEI_BENCH_ROUNDS", if quick { 1 } else { 9 });

    // Baselines: the server's own worker.
    let data = scratch("local");
    let local = start_server(&data, 6);
    let local_claims = claim_latencies(&local, claims).await;
    let local_log = big_log(&local, lines).await;

    let data = scratch("agents");
    let server = start_server(&data, 0);
    let token = server.registration().await;
    let one = server.agent(&data, "bench-1", &token, 2);
    server.wait_agents(1).await;
    let agent_claims = claim_latencies(&server, claims).await;
    let agent_log = big_log(&server, lines).await;
    let _two = server.agent(&data, "bench-2", &token, 2);
    let _three = server.agent(&data, "bench-3", &token, 2);
    server.wait_agents(3).await;
    // The fan-outs in turns, agents and local worker, each figure the median of its rounds:
    // whatever else the machine does weighs on both alike.
    apply_fan(&local, fan).await;
    apply_fan(&server, fan).await;
    let (mut local_fans, mut agent_fans) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        local_fans.push(fan_out(&local).await);
        agent_fans.push(fan_out(&server).await);
    }
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (local_fan, agent_fan) = (median(local_fans), median(agent_fans));
    drop(local);
    drop(one);

    println!(
        "claim latency, queued -> step started, {claims} runs: agent p50 {} ms, p99 {} ms; local worker (baseline) p50 {} ms, p99 {} ms",
        percentile(&agent_claims, 0.5),
        percentile(&agent_claims, 0.99),
        percentile(&local_claims, 0.5),
        percentile(&local_claims, 0.99),
    );
    println!(
        "no-op jobs, {fan} in one run, median of {rounds} rounds in turns: 3 agents x 2 slots {:.0} jobs/s; local worker x 6 slots (baseline) {:.0} jobs/s: {:.0} %",
        fan as f64 / agent_fan,
        fan as f64 / local_fan,
        100.0 * local_fan / agent_fan
    );
    println!(
        "{lines}-line log: through an agent {agent_log:.1} MB/s, identical; local worker (baseline) {local_log:.1} MB/s"
    );
    drop(server);

    // Idle agents: simulated, each registered and holding a long poll.
    let data = scratch("idle");
    let server = start_server(&data, 0);
    let token = server.registration().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = server.process.0.id();
    let idle = rss_kib(pid);
    let mut clients = Vec::new();
    for i in 0..simulated {
        let registered = server
            .http
            .post(format!("{}/api/v1/agent/register", server.url))
            .json(&json!({"token": token, "name": format!("sim-{i}")}))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        clients.push(registered["credential"].as_str().unwrap().to_owned());
    }
    let registered = rss_kib(pid);
    let mut polls = Vec::new();
    for credential in clients {
        let (http, url) = (reqwest::Client::new(), server.url.clone());
        polls.push(tokio::spawn(async move {
            loop {
                let answer = http
                    .post(format!("{url}/api/v1/agent/poll"))
                    .bearer_auth(&credential)
                    .json(&json!({"slots": 1, "room": true, "wait_ms": 25_000}))
                    .send()
                    .await;
                if answer.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let workers = server.get("/api/v1/workers").await;
        let connected = workers["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["state"] == "ready")
            .count() as u64;
        if connected >= simulated || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let connected = rss_kib(pid);
    println!(
        "idle agents: {simulated} connected, each holding a long poll: server resident memory {} KiB idle (baseline), {} KiB once registered, {} KiB connected: {:.1} KiB per connected agent",
        idle,
        registered,
        connected,
        (connected.saturating_sub(idle)) as f64 / simulated as f64
    );
    for poll in polls {
        poll.abort();
    }
}
