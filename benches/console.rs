//! The web console in headless Chromium (`cargo bench --bench console`; figures in
//! `docs/performance.md`): the release `hodei server` on a loopback port, Debian's Chromium
//! driven over WebDriver from this process. It prints:
//!
//! - a 100 MB, 1.5M-line log: the first lines on screen after navigating to the job's page
//!   (first view, when the server indexes the log, and again with the index kept), the last line
//!   on screen after "Bottom", a word found by the server's search across the whole log, and the
//!   tab's JavaScript heap after all that; next to the baseline of reading the same log's bytes
//!   through `GET /api/v1/jobs/{id}/log` from this process;
//! - a log written at about 10,000 lines/s, followed for `HODEI_BENCH_FOLLOW_SECONDS` (default
//!   60): lines received per second, the longest task on the page's main thread and how many
//!   took over 200 ms; the same for a page left idle as the baseline;
//! - a run of 500 jobs: its page's graph drawn, from navigation to the 500 nodes in the page,
//!   and when its document was loaded; next to a run of 5 jobs.
//!
//! Each wall-clock figure includes WebDriver's polling (every 10 ms).

#[path = "../tests/common/browser.rs"]
mod browser;
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use browser::Browser;
use common::{Server, scratch};
use fantoccini::Locator;
use serde_json::{Value, json};

/// `lines` lines of 67 bytes (1.5M: 100.5 MB), line `needle` with the word `needle`.
fn big(lines: u64, needle: u64) -> String {
    format!(
        r#"name: big
jobs:
  print:
    steps:
      - run: "awk 'BEGIN {{ for (i = 1; i <= {lines}; i++) printf \"line %07d %s\\n\", i, (i == {needle} ? \"needle in the haystack of this log, found by search!!\" : \"lorem ipsum dolor sit amet, consectetur adipiscing el\") }}'"
"#
    )
}

/// About 10,000 lines a second: 1,000 lines every 100 ms.
fn live(seconds: u64) -> String {
    format!(
        "name: live\njobs:\n  tail:\n    steps:\n      - run: \"i=0; while [ $i -lt {} ]; do seq 1 1000 | sed \\\"s/^/tick $i line /\\\"; i=$((i+1)); sleep 0.1; done\"\n",
        seconds * 10
    )
}

/// `jobs` jobs in layers of up to 25, each needing two of the layer before; no worker has
/// their label, so they stay queued and only the drawing is measured.
fn wide(name: &str, jobs: usize) -> String {
    let mut yaml = format!("name: {name}\njobs:\n");
    for i in 0..jobs {
        let needs = match i {
            0..25 => String::new(),
            _ => {
                let (a, b) = (i - 25, (i / 25 - 1) * 25 + (i * 7) % 25);
                match a == b {
                    true => format!(", needs: [j{a}]"),
                    false => format!(", needs: [j{a}, j{b}]"),
                }
            }
        };
        yaml.push_str(&format!(
            "  j{i}: {{ runs_on: [nowhere], steps: [{{ run: echo {i} }}]{needs} }}\n"
        ));
    }
    yaml
}

struct Api {
    url: String,
    auth: String,
    http: reqwest::Client,
}

impl Api {
    async fn send(&self, request: reqwest::RequestBuilder) -> Value {
        let answer = request
            .header("authorization", &self.auth)
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let text = answer.text().await.unwrap();
        assert!(status.is_success(), "{status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Applies `yaml` and triggers it; answers the run's id and its first job's.
    async fn start(&self, name: &str, yaml: &str) -> (u64, u64) {
        let put = self
            .http
            .put(format!("{}/api/v1/pipelines/{name}", self.url))
            .header("content-type", "application/yaml")
            .body(yaml.to_owned());
        self.send(put).await;
        let post = self
            .http
            .post(format!("{}/api/v1/pipelines/{name}/runs", self.url))
            .json(&json!({}));
        let run = self.send(post).await;
        (
            run["id"].as_u64().unwrap(),
            run["jobs"][0]["id"].as_u64().unwrap(),
        )
    }

    async fn wait_finished(&self, run: u64) {
        loop {
            let get = self.http.get(format!("{}/api/v1/runs/{run}", self.url));
            let run = self.send(get).await;
            match run["state"].as_str() {
                Some("succeeded") => return,
                Some("failed" | "cancelled") => panic!("the run did not succeed: {run}"),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Reads a job's whole log through the byte API, 8 MiB at a time: its length.
    async fn read_log(&self, job: u64) -> usize {
        let mut from = 0;
        loop {
            let get = self
                .http
                .get(format!("{}/api/v1/jobs/{job}/log?from={from}", self.url))
                .header("authorization", &self.auth);
            let bytes = get.send().await.unwrap().bytes().await.unwrap();
            if bytes.is_empty() {
                return from;
            }
            from += bytes.len();
        }
    }
}

/// Waits until `script` is true, polling every 10 ms; answers the time since `start`.
async fn timed(browser: &Browser, start: Instant, what: &str, script: &str) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if browser.client.execute(script, Vec::new()).await.ok() == Some(Value::Bool(true)) {
            return start.elapsed();
        }
        assert!(Instant::now() < deadline, "{what}: not within 120 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How many lines the log viewer says the log has.
async fn lines_on_screen(browser: &Browser) -> u64 {
    let script = "const s = document.getElementById('log-status').textContent; \
        const m = / of ([0-9,]+)/.exec(s); return m ? Number(m[1].replace(/,/g, '')) : 0";
    browser.js(script).await.as_u64().unwrap_or(0)
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// Watches the page's long tasks from now on.
const OBSERVE: &str = "window.longTasks = []; new PerformanceObserver(l => { \
    for (const e of l.getEntries()) window.longTasks.push(e.duration); \
    }).observe({ type: 'longtask' }); return true";
/// The longest task and how many took over 200 ms.
const LONGEST: &str = "return [Math.max(0, ...window.longTasks), \
    window.longTasks.filter(d => d > 200).length, window.longTasks.length]";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo test` runs benchmarks once, small: the same steps on a 15,000-line log, a 3 s
    // follow and a 50-job graph.
    let full = std::env::args().any(|a| a == "--bench");
    let (lines, graph) = if full { (1_500_000, 500) } else { (15_000, 50) };
    let data = scratch("console-bench");
    let server = Server::start(&data);
    hodei_api::client::install_crypto();
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let api = Api {
        url: server.url.clone(),
        auth: format!("Bearer {}", token.trim()),
        http: reqwest::Client::new(),
    };
    let browser = Browser::start(1280, 900).await;
    browser.sign_in(&server.url, token.trim()).await;

    // A 100 MB log.
    let needle = lines * 823 / 1000;
    let (run, job) = api.start("big", &big(lines, needle)).await;
    api.wait_finished(run).await;
    let start = Instant::now();
    let bytes = api.read_log(job).await;
    println!(
        "baseline: the same log's {:.1} MB read through GET /api/v1/jobs/{{id}}/log: {}",
        bytes as f64 / 1e6,
        secs(start.elapsed())
    );
    let first_row = "const r = document.querySelector('#log .row .txt'); \
        return !!r && r.textContent.startsWith('line 0000001 ')";
    let size = format!("{:.0} MB log ({lines} lines)", bytes as f64 / 1e6);
    for view in [
        "first view (the server indexes the log)",
        "second view (index kept)",
    ] {
        let start = Instant::now();
        browser
            .client
            .goto(&format!("{}/jobs/{job}", server.url))
            .await
            .unwrap();
        let took = timed(&browser, start, "first lines", first_row).await;
        println!(
            "{size}, first lines on screen after navigation, {view}: {}",
            secs(took)
        );
    }
    let total = browser
        .js("return document.getElementById('log-status').textContent")
        .await;
    println!("  ({})", total.as_str().unwrap_or_default());
    let start = Instant::now();
    browser.click("#log-bottom").await;
    let took = timed(
        &browser,
        start,
        "last line",
        &format!("return [...document.querySelectorAll('#log .row:not([hidden]) .txt')].some(e => e.textContent.startsWith('line {lines:07} '))"),
    )
    .await;
    println!("{size}, jump to the last line: {}", secs(took));
    let q = browser.client.find(Locator::Id("log-q")).await.unwrap();
    q.send_keys("needle").await.unwrap();
    let start = Instant::now();
    browser.click("#log-search button[type=submit]").await;
    let took = timed(
        &browser,
        start,
        "search",
        &format!("const r = document.querySelector('#log .row.target .txt'); return !!r && r.textContent.startsWith('line {needle:07} needle')"),
    )
    .await;
    println!(
        "{size}, search for a word across the whole log, match on screen: {}",
        secs(took)
    );
    let heap = browser
        .js("return [performance.memory.usedJSHeapSize, performance.memory.totalJSHeapSize]")
        .await;
    println!(
        "{size}, the tab's JavaScript heap after these: used {:.1} MB, total {:.1} MB",
        heap[0].as_f64().unwrap() / 1e6,
        heap[1].as_f64().unwrap() / 1e6
    );
    let rows = browser
        .js("return document.querySelectorAll('#log .row').length")
        .await;
    println!("  (rows in the page: {rows})");

    // A live log followed.
    let seconds: u64 = std::env::var("HODEI_BENCH_FOLLOW_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 60 } else { 3 });
    browser
        .client
        .goto(&format!("{}/runs", server.url))
        .await
        .unwrap();
    browser.js(OBSERVE).await;
    tokio::time::sleep(Duration::from_secs(seconds.min(10))).await;
    let idle = browser.js(LONGEST).await;
    println!(
        "baseline: the runs page idle for {} s: longest task {:.0} ms, {} over 200 ms ({} long tasks)",
        seconds.min(10),
        idle[0].as_f64().unwrap(),
        idle[1],
        idle[2]
    );
    let (_, job) = api.start("live", &live(seconds)).await;
    browser
        .client
        .goto(&format!("{}/jobs/{job}", server.url))
        .await
        .unwrap();
    browser.js(OBSERVE).await;
    let started = Instant::now();
    let before = lines_on_screen(&browser).await;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = lines_on_screen(&browser).await;
    let following = browser
        .js("return document.getElementById('log-follow').getAttribute('aria-pressed')")
        .await;
    let long = browser.js(LONGEST).await;
    let heap = browser.js("return performance.memory.usedJSHeapSize").await;
    println!(
        "live log followed for {} s: {:.0} lines/s on screen (following: {following}), longest task {:.0} ms, {} over 200 ms ({} long tasks), heap {:.1} MB",
        seconds,
        (after - before) as f64 / started.elapsed().as_secs_f64(),
        long[0].as_f64().unwrap(),
        long[1],
        long[2],
        heap.as_f64().unwrap() / 1e6
    );

    // Graphs.
    for jobs in [5, graph] {
        let name = format!("wide{jobs}");
        let (run, _) = api.start(&name, &wide(&name, jobs)).await;
        let start = Instant::now();
        browser
            .client
            .goto(&format!("{}/runs/{run}", server.url))
            .await
            .unwrap();
        let took = timed(
            &browser,
            start,
            "graph",
            &format!("return document.querySelectorAll('.graph a.node').length === {jobs}"),
        )
        .await;
        let loaded = browser
            .js("return performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd")
            .await;
        println!(
            "a run of {jobs} jobs: graph drawn {} after navigation (DOMContentLoaded at {:.0} ms)",
            secs(took),
            loaded.as_f64().unwrap_or(f64::NAN)
        );
    }
    browser.close().await;
    drop(server);
}
