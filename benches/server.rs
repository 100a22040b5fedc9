//! `hodei server` under load: the release binary on a loopback port, driven from this process
//! (`cargo bench --bench server`; figures in `docs/performance.md`). It prints:
//!
//! - the server's resident memory once idle;
//! - 40 alias bombs uploaded at once (`PUT /api/v1/pipelines/{name}`, 600-odd bytes that would
//!   expand to gigabytes): the peak resident memory while they are refused, beside the idle
//!   figure measured just before, and the resident memory once they are answered;
//! - `GET /api/v1/runs/{id}` requests per second, `HODEI_BENCH_CLIENTS` (default 32) at a time,
//!   from this process; then, when `oha` is installed (`cargo install oha`; `HODEI_BENCH_OHA`
//!   names it, else it is looked for on the `PATH` and in `/opt/oha/bin`), from `oha` pinned to
//!   one CPU with `taskset`, so that the figure is the server's: a finished run (answered from
//!   memory), a run that is not finished (read from the store), and `GET /healthz` (a minimal
//!   answer, the baseline);
//! - run triggers accepted per second (runs whose job waits for a label no worker has, so that
//!   only accepting is measured), 16 at a time;
//! - one-step `true` runs through the API with the default settings, 1,000 runs from 8 clients,
//!   trigger to `succeeded`: runs per second, beside the raw spawn rate of the same step;
//! - a 1,000,000-line job log (`seq 1 1000000`) followed over a WebSocket: lines per second
//!   from the trigger to the `end` frame;
//! - output-to-client latency: a job prints the time every 10 ms (200 lines) and the client
//!   compares it with the time it receives each line: p50 and p99.
//!
//! The client shares the machine's two cores with the server: the request rates are bounded by
//! both together. `cargo bench --bench server -- alias-bombs` runs the bomb measurement alone.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

struct Server {
    child: Child,
    url: String,
    auth: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &std::path::Path) -> Server {
    // `HODEI_BENCH_BIN` measures another build of `hodei` (a copy kept aside, say).
    let binary =
        std::env::var_os("HODEI_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_hodei").into());
    let mut child = Command::new(binary)
        .args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
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
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    Server {
        child,
        url,
        auth: format!("Bearer {}", token.trim()),
    }
}

/// The `oha` load generator, if installed.
fn oha() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("HODEI_BENCH_OHA") {
        return Some(path.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/opt/oha/bin")])
        .map(|dir| dir.join("oha"))
        .find(|candidate| candidate.is_file())
}

/// Requests per second that `oha`, pinned to the last CPU, gets from `url` with `clients`
/// connections for `seconds`; `None` if not every answer was a success.
fn oha_rate(
    oha: &std::path::Path,
    url: &str,
    auth: &str,
    clients: u64,
    seconds: f64,
) -> Option<f64> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let out = Command::new("taskset")
        .args(["-c", &(cpus - 1).to_string()])
        .arg(oha)
        .args(["--no-tui", "--output-format", "json", "-c"])
        .arg(clients.to_string())
        .arg("-z")
        .arg(format!("{seconds}s"))
        .args(["-H", &format!("authorization: {auth}")])
        .arg(url)
        .output()
        .expect("taskset and oha run");
    assert!(
        out.status.success(),
        "oha: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("oha's JSON report");
    let summary = &report["summary"];
    let codes = &report["statusCodeDistribution"];
    let ok = codes
        .as_object()
        .is_some_and(|c| c.keys().all(|k| k == "200"));
    (summary["successRate"].as_f64() == Some(1.0) && ok)
        .then(|| summary["requestsPerSec"].as_f64())
        .flatten()
}

/// Processes of `/bin/sh -e -c true` started and waited for per second, `parallel` at a time.
fn raw_spawn_rate(parallel: usize, duration: Duration) -> f64 {
    let began = Instant::now();
    let threads: Vec<_> = (0..parallel)
        .map(|_| {
            std::thread::spawn(move || {
                let mut count = 0u64;
                while began.elapsed() < duration {
                    let status = Command::new("/bin/sh")
                        .args(["-e", "-c", "true"])
                        .status()
                        .unwrap();
                    assert!(status.success());
                    count += 1;
                }
                count
            })
        })
        .collect();
    let count: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    count as f64 / began.elapsed().as_secs_f64()
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A figure of `/proc/PID/status` in KiB (`key` with its colon).
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

async fn apply(http: &reqwest::Client, s: &Server, name: &str, yaml: &str) {
    let answer = http
        .put(format!("{}/api/v1/pipelines/{name}", s.url))
        .header("authorization", &s.auth)
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

async fn trigger(http: &reqwest::Client, s: &Server, name: &str) -> Value {
    http.post(format!("{}/api/v1/pipelines/{name}/runs", s.url))
        .header("authorization", &s.auth)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Runs `request` from `clients` tasks for `duration`; answers the successes per second.
async fn hammer<F, Fut>(clients: u64, duration: Duration, request: F) -> f64
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let done = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (request, done) = (request.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while began.elapsed() < duration {
                if request().await {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / began.elapsed().as_secs_f64()
}

/// Follows every run's events from now on; the task ends once `count` runs have succeeded.
async fn finished_runs(s: &Server, count: usize) -> tokio::task::JoinHandle<()> {
    let url = format!("{}/api/v1/events/stream", s.url.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", s.auth.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    tokio::spawn(async move {
        let mut succeeded = 0;
        while succeeded < count {
            let Some(Ok(message)) = socket.next().await else {
                panic!("the events stream ended after {succeeded} runs");
            };
            if let Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text).unwrap();
                match (value["type"].as_str(), value["event"]["type"].as_str()) {
                    (Some("event"), Some("run_succeeded")) => succeeded += 1,
                    (Some("event"), Some("run_failed" | "run_cancelled")) => {
                        panic!("a run did not succeed: {value}")
                    }
                    (Some("lagged"), _) => panic!("the events stream lagged: {value}"),
                    _ => {}
                }
            }
        }
    })
}

/// Follows a job's log from 0 to its end; calls `frame` with each log frame's text.
async fn follow(s: &Server, job: u64, mut frame: impl FnMut(&str)) {
    // As a client does: a stream that drops before its `end` frame, or that the server closes
    // because the client lagged, is opened again from the offset reached, so nothing is missed
    // or counted twice.
    let mut from = 0u64;
    for _ in 0..50 {
        let url = format!(
            "{}/api/v1/jobs/{job}/log/stream?from={from}",
            s.url.replacen("http", "ws", 1)
        );
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", s.auth.parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text).unwrap();
                match value["type"].as_str() {
                    Some("log") => {
                        frame(value["data"].as_str().unwrap());
                        from = value["offset"].as_u64().unwrap() + value["bytes"].as_u64().unwrap();
                    }
                    Some("end") => return,
                    Some("lagged") => {
                        let resume = value["resume_from"].as_u64().unwrap();
                        assert_eq!(resume, from, "a lagged stream resumes where it stopped");
                        eprintln!("the bench client lagged at byte {resume}: following again");
                        break;
                    }
                    _ => {}
                }
            }
        }
    }
    panic!("the log stream of job {job} dropped 50 times before its end");
}

/// Nine levels of ten aliases over a 200-byte text: 10^9 copies when expanded.
fn alias_bomb() -> String {
    let mut yaml = format!(
        "name: bomb\njobs: {{x: {{steps: [echo]}}}}\na0: &a0 [\"{}\"]\n",
        "x".repeat(200)
    );
    for i in 1..9 {
        let aliases = vec![format!("*a{}", i - 1); 10].join(",");
        yaml.push_str(&format!("a{i}: &a{i} [{aliases}]\n"));
    }
    yaml
}

/// Uploads `count` alias bombs at once while sampling the server's resident memory every
/// millisecond; prints the peak beside the idle figure measured just before.
async fn alias_bombs(http: &reqwest::Client, s: &Server, count: usize) {
    let pid = s.child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_kib(pid);
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(1));
            }
            peak
        })
    };
    let yaml = alias_bomb();
    let began = Instant::now();
    let uploads = (0..count).map(|i| {
        http.put(format!("{}/api/v1/pipelines/bomb{i}", s.url))
            .header("authorization", &s.auth)
            .header("content-type", "application/yaml")
            .body(yaml.clone())
            .send()
    });
    for answer in futures_util::future::join_all(uploads).await {
        let answer = answer.unwrap();
        assert_eq!(answer.status().as_u16(), 400, "a bomb is refused");
        let problem: Value = answer.json().await.unwrap();
        assert_eq!(problem["diagnostics"][0]["code"], "limit", "{problem}");
    }
    let elapsed = began.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    sampling.store(false, Ordering::Relaxed);
    let peak = sampler.join().unwrap().max(idle);
    let after = rss_kib(pid);
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "{count} concurrent alias bombs ({} bytes each, refused in {elapsed:.2} s): peak resident \
         memory {:.1} MiB = {:.1} MiB above idle ({:.1} MiB just before); {:.1} MiB once answered",
        yaml.len(),
        mib(peak),
        mib(peak - idle),
        mib(idle),
        mib(after)
    );
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let only_bombs = std::env::args().any(|a| a == "alias-bombs");
    let seconds = if quick { 0.3 } else { 3.0 };
    let duration = Duration::from_secs_f64(seconds);
    let clients = env_or("HODEI_BENCH_CLIENTS", 32);
    let lines = if quick { 10_000 } else { 1_000_000 };
    let dir = std::env::temp_dir().join(format!("hodei-bench-server-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = Arc::new(start(&dir));
    std::thread::sleep(Duration::from_secs(1));
    let status = |key: &str| status_kib(server.child.id(), key) as f64 / 1024.0;
    println!(
        "idle resident memory of `hodei server`: {:.1} MiB (anonymous {:.1} MiB, mapped from files {:.1} MiB)",
        rss_kib(server.child.id()) as f64 / 1024.0,
        status("RssAnon:"),
        status("RssFile:")
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        hodei_api::client::install_crypto();
        let http = reqwest::Client::new();
        let s = server.as_ref();
        alias_bombs(&http, s, 40).await;
        if only_bombs {
            return;
        }
        apply(&http, s, "noop", "name: noop\njobs:\n  a: {steps: ['true']}\n").await;
        apply(
            &http,
            s,
            "parked",
            "name: parked\njobs:\n  a: {runs_on: [nowhere], steps: ['true']}\n",
        )
        .await;
        apply(
            &http,
            s,
            "flood",
            &format!("name: flood\njobs:\n  a: {{steps: ['seq 1 {lines}']}}\n"),
        )
        .await;
        apply(
            &http,
            s,
            "clock",
            "name: clock\njobs:\n  a: {steps: ['for i in $(seq 1 200); do date +%s%N; sleep 0.01; done']}\n",
        )
        .await;

        // GET a finished run.
        let run = trigger(&http, s, "noop").await;
        let run_url = format!("{}/api/v1/runs/{}", s.url, run["id"]);
        loop {
            let now: Value = http
                .get(&run_url)
                .header("authorization", &s.auth)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if now["state"] == "succeeded" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (client, auth, url) = (http.clone(), s.auth.clone(), run_url.clone());
        let rate = hammer(clients, duration, move || {
            let request = client.get(&url).header("authorization", &auth).send();
            async move { request.await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
        println!("GET /api/v1/runs/{{id}}, {clients} clients: {rate:.0} requests/s");
        if let Some(oha) = oha() {
            let parked = trigger(&http, s, "parked").await;
            let parked_url = format!("{}/api/v1/runs/{}", s.url, parked["id"]);
            let healthz = format!("{}/healthz", s.url);
            let measure = |url: &str| {
                oha_rate(&oha, url, &s.auth, clients, seconds)
                    .map_or("not every answer was 200".to_owned(), |r| format!("{r:.0} requests/s"))
            };
            println!(
                "oha on one CPU, {clients} connections: GET /api/v1/runs/{{id}} (finished): {}; \
                 GET /api/v1/runs/{{id}} (waiting, read from the store): {}; \
                 baseline GET /healthz: {}",
                measure(&run_url),
                measure(&parked_url),
                measure(&healthz)
            );
        } else {
            println!("oha is not installed: `cargo install oha` for the figures from one CPU");
        }

        // Triggers.
        let (client, auth) = (http.clone(), s.auth.clone());
        let trigger_url = format!("{}/api/v1/pipelines/parked/runs", s.url);
        let rate = hammer(16, duration, move || {
            let request = client
                .post(&trigger_url)
                .header("authorization", &auth)
                .json(&json!({}))
                .send();
            async move { request.await.is_ok_and(|r| r.status().as_u16() == 201) }
        })
        .await;
        println!("run triggers accepted, 16 clients: {rate:.0} runs/s");

        // One-step `true` runs through the API with the default settings, from trigger to
        // `succeeded` (told by the events stream, as a CI tool following its runs is), beside the
        // raw spawn rate of the same step.
        let total = if quick { 80 } else { 1_000 };
        let ended = finished_runs(s, total).await;
        let began = Instant::now();
        let mut clients_done = Vec::new();
        for _ in 0..8 {
            let (client, auth, base) = (http.clone(), s.auth.clone(), s.url.clone());
            clients_done.push(tokio::spawn(async move {
                for _ in 0..total / 8 {
                    let answer = client
                        .post(format!("{base}/api/v1/pipelines/noop/runs"))
                        .header("authorization", &auth)
                        .json(&json!({}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(answer.status().as_u16(), 201);
                }
            }));
        }
        for client in clients_done {
            client.await.unwrap();
        }
        ended.await.unwrap();
        let elapsed = began.elapsed().as_secs_f64();
        let spawns = raw_spawn_rate(2, Duration::from_secs(1));
        println!(
            "one-step `true` runs through the API (default settings), {total} runs from 8 clients: \
             {elapsed:.2} s = {:.0} runs/s; raw spawn of `/bin/sh -e -c true`, 2 at a time: {spawns:.0}/s",
            total as f64 / elapsed
        );

        // A big log over a WebSocket.
        let began = Instant::now();
        let run = trigger(&http, s, "flood").await;
        let mut received = 0u64;
        follow(s, run["jobs"][0]["id"].as_u64().unwrap(), |data| {
            received += data.bytes().filter(|&b| b == b'\n').count() as u64;
        })
        .await;
        let elapsed = began.elapsed().as_secs_f64();
        assert_eq!(received, lines, "every line arrived");
        println!(
            "a {lines}-line log over a WebSocket, trigger to end frame: {:.2} s = {:.0} lines/s",
            elapsed,
            lines as f64 / elapsed
        );

        // Output-to-client latency.
        let run = trigger(&http, s, "clock").await;
        let mut latencies = Vec::new();
        follow(s, run["jobs"][0]["id"].as_u64().unwrap(), |data| {
            let received = now_ns();
            for line in data.lines() {
                if let Ok(printed) = line.trim().parse::<u128>() {
                    latencies.push((received.saturating_sub(printed)) as f64 / 1e6);
                }
            }
        })
        .await;
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!(
            "output-to-client latency over a WebSocket ({} lines, one every 10 ms): p50 {:.1} ms, p99 {:.1} ms",
            latencies.len(),
            pct(0.5),
            pct(0.99)
        );
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
