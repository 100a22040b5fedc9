//! Leader failover among replicas on PostgreSQL (`cargo bench --bench failover`; the figure is in
//! `docs/performance.md`): two `hodei server` replicas on one database (a throwaway PostgreSQL
//! cluster), the leader killed with SIGKILL, and the time from the kill to the first job of a
//! run — submitted through the surviving replica from the moment of the kill — being placed (its
//! `placed` time as the new leader records it). The killed replica is started again as a
//! follower, and the next kill takes the other one: `HODEI_BENCH_KILLS` kills (default 20).
//!
//! Printed beside it, the lease (`leader_lease_ms`, default 2000 ms here as in production): a
//! failover cannot be shorter than what is left of the dead leader's lease, so the figure minus
//! the lease is what Hodei adds (the next try for the lease, starting the tree, resuming runs).
//! Under `cargo test` (no `--bench` argument) it runs two kills, as a smoke test of itself.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use hodei_adapters::postgres::cluster::TestCluster;
use serde_json::{Value, json};

const TOKEN: &str = "hodei_failover-bench-token-0123456789abcdef0123";

struct Replica {
    child: Child,
    url: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> std::ffi::OsString {
    std::env::var_os("HODEI_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_hodei").into())
}

fn start(data: &Path, db: &str, lease: &str) -> Replica {
    let mut child = Command::new(binary())
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--database",
            db,
            "--data",
        ])
        .arg(data)
        .env("HODEI_LEADER_LEASE_MS", lease)
        .env("HODEI_BOOTSTRAP_TOKEN", TOKEN)
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
    Replica { child, url }
}

fn millis_since_epoch(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// RFC 3339 UTC with milliseconds, as the API writes times, to milliseconds since the epoch.
fn parse_time(text: &str) -> i64 {
    let (date, time) = text.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let (hms, ms) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + t[0]) * 60 + t[1]) * 60_000 + t[2] * 1000 + ms.parse::<i64>().unwrap()
}

/// `GET /api/v1/cluster` of a replica, if it answers.
async fn cluster_view(http: &reqwest::Client, url: &str) -> Option<Value> {
    http.get(format!("{url}/api/v1/cluster"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Submits a run through `url` until one is taken; its first job's id.
async fn submit(http: &reqwest::Client, url: &str) -> u64 {
    loop {
        if let Ok(answer) = http
            .post(format!("{url}/api/v1/pipelines/noop/runs"))
            .bearer_auth(TOKEN)
            .json(&json!({}))
            .send()
            .await
            && answer.status().as_u16() == 201
        {
            let run: Value = answer.json().await.unwrap();
            return run["jobs"][0]["id"].as_u64().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// When the job was placed, as its server recorded it (milliseconds since the epoch), from the
/// audit trail read on from `after` (which moves on past what was read).
async fn placed_at(http: &reqwest::Client, url: &str, job: u64, after: &mut u64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = http
            .get(format!("{url}/api/v1/events?after={after}&limit=500"))
            .bearer_auth(TOKEN)
            .send()
            .await;
        if let Ok(answer) = answer
            && answer.status().is_success()
            && let Ok(page) = answer.json::<Value>().await
        {
            for item in page["items"].as_array().into_iter().flatten() {
                let event = &item["event"];
                if event["type"] == "job_placed" && event["job"].as_u64() == Some(job) {
                    let at = &event["at"];
                    return at
                        .as_str()
                        .map(parse_time)
                        .or_else(|| at.as_i64())
                        .unwrap_or_else(|| panic!("an event without a time: {item}"));
                }
            }
            if let Some(next) = page["next_after"].as_u64()
                && next > *after
            {
                *after = next;
                continue;
            }
        }
        assert!(Instant::now() < deadline, "job {job} was never placed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let kills: usize = if full {
        std::env::var("HODEI_BENCH_KILLS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20)
    } else {
        2
    };
    let lease = std::env::var("HODEI_BENCH_LEASE_MS").unwrap_or_else(|_| "2000".into());
    let cluster = TestCluster::start_durable().expect("a PostgreSQL cluster");
    let db = cluster.database();
    let base: PathBuf = std::env::temp_dir().join(format!("hodei-failover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    hodei_api::client::install_crypto();
    let http = reqwest::Client::new();
    let mut replicas = [
        Some(start(&base.join("a"), &db, &lease)),
        Some(start(&base.join("b"), &db, &lease)),
    ];
    let first = replicas[0].as_ref().unwrap().url.clone();
    while cluster_view(&http, &first)
        .await
        .is_none_or(|view| view["leader"].is_null())
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let put = http
        .put(format!("{first}/api/v1/pipelines/noop"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/yaml")
        .body("name: noop\njobs:\n  noop: {steps: [{run: 'true'}]}\n")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let mut took = Vec::new();
    let mut after = 0;
    for _ in 0..kills {
        // Which one leads, and a job through it first (the tree is warm).
        let mut leading = None;
        while leading.is_none() {
            for (i, replica) in replicas.iter().enumerate() {
                let url = &replica.as_ref().unwrap().url;
                if cluster_view(&http, url)
                    .await
                    .is_some_and(|view| view["role"] == "leader")
                {
                    leading = Some(i);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let leading = leading.unwrap();
        let other = 1 - leading;
        let survivor = replicas[other].as_ref().unwrap().url.clone();
        let warm = submit(&http, &survivor).await;
        placed_at(&http, &survivor, warm, &mut after).await;
        let killed_at = SystemTime::now();
        let dead = replicas[leading].take().unwrap();
        unsafe { libc::kill(dead.child.id() as i32, libc::SIGKILL) };
        drop(dead);
        let job = submit(&http, &survivor).await;
        let placed = placed_at(&http, &survivor, job, &mut after).await;
        took.push((placed - millis_since_epoch(killed_at)) as f64);
        // The killed one comes back as a follower.
        let data = base.join(if leading == 0 { "a" } else { "b" });
        replicas[leading] = Some(start(&data, &db, &lease));
    }
    took.sort_by(f64::total_cmp);
    println!(
        "leader failover (SIGKILL of the leader -> next job placed), {} kills: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms; lease {lease} ms (baseline: no failover can be shorter than what is left of it)",
        took.len(),
        percentile(&took, 0.5),
        percentile(&took, 0.95),
        took.last().unwrap()
    );
    drop(replicas);
    let _ = std::fs::remove_dir_all(&base);
}
