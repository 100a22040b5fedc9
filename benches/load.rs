//! The load benchmark of the actor core: every actor, the SQLite store and the log store, with
//! the scripted `FakeProvider` (no-op jobs) or the real `LocalProvider` (`true` jobs).
//!
//! `cargo bench --bench load` prints:
//! - durable no-op jobs/s through every actor (many runs of independent jobs);
//! - submit→start latency (p50, p99) of one-job runs submitted at half that rate, and at a
//!   sixteenth of it;
//! - `true` jobs/s through the LocalProvider against the raw spawn rate of the same command;
//! - resident memory with 100,000 queued jobs, above idle.
//!
//! Sizes can be changed with `HODEI_LOAD_RUNS`, `HODEI_LOAD_JOBS` (jobs per run) and
//! `HODEI_LOAD_QUEUED`; `HODEI_LOAD_ONLY=local` (or `throughput`, `latency`, `memory`, several
//! separated by commas) measures only those. `HODEI_LOAD_STORE=postgres` runs the same on the PostgreSQL store (and its
//! logs), in a throwaway cluster with PostgreSQL's durable defaults that the benchmark starts,
//! and prints the raw commit rate of that cluster beside the figures. The figures are in
//! `docs/performance.md`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler};
use hodei_actors::Ports;
use hodei_actors::fault::Faults;
use hodei_actors::messages::GetQueueStats;
use hodei_actors::messages::{Definition, Published, SubmitRun, Subscribe, WorkerSpec};
use hodei_adapters::clock::SystemClock;
use hodei_adapters::fake::FakeProvider;
use hodei_adapters::local::LocalProvider;
use hodei_adapters::logs::FileLogStore;
use hodei_adapters::postgres::PgStore;
use hodei_adapters::postgres::cluster::TestCluster;
use hodei_adapters::sqlite::SqliteStore;
use hodei_domain::engine::Approvals;
use hodei_domain::ids::{RunId, WorkerId};
use hodei_domain::plan::RunInputs;
use hodei_domain::ports::{
    BoxFuture, LogStore, Provider, Reconcile, SecretScope, SecretStore, StoreError,
};
use hodei_domain::state::DomainEvent;
use hodei_supervisors::{Tree, TreeConfig, start_tree};
use tokio::sync::mpsc;

struct NoSecrets;

impl SecretStore for NoSecrets {
    fn get<'a>(
        &'a self,
        _: &'a [SecretScope],
        _: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        Box::pin(async { Ok(None) })
    }
}

/// The durable PostgreSQL cluster of `HODEI_LOAD_STORE=postgres`, stopped when `main` ends.
static POSTGRES: std::sync::OnceLock<Option<TestCluster>> = std::sync::OnceLock::new();

fn postgres() -> Option<&'static TestCluster> {
    POSTGRES.get().and_then(Option::as_ref)
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hodei-load-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The pipeline stored as its latest version, as the API submits it: runs name the version.
async fn stored(tree: &Tree, source: String) -> Definition {
    let name = source
        .lines()
        .find_map(|line| line.strip_prefix("name: "))
        .expect("the pipeline has a name")
        .to_owned();
    let version = tree
        .ports
        .store
        .put_pipeline(&name, &source, tree.ports.clock.now())
        .await
        .expect("the store keeps the pipeline");
    Definition::Stored(version)
}

async fn tree<P: Provider + Reconcile + 'static>(
    dir: &std::path::Path,
    provider: Arc<P>,
    slots: u32,
) -> Tree {
    let (store, logs): (Arc<dyn hodei_domain::ports::Store>, Arc<dyn LogStore>) = match postgres() {
        Some(cluster) => {
            let store = PgStore::open(&cluster.database()).await.unwrap();
            let logs = Arc::new(store.logs());
            (Arc::new(store), logs)
        }
        None => (
            Arc::new(SqliteStore::open(&dir.join("hodei.db")).await.unwrap()),
            Arc::new(FileLogStore::open(&dir.join("logs"), 2).unwrap()),
        ),
    };
    let ports = Ports {
        store,
        logs,
        provider: provider.clone(),
        worker_providers: Default::default(),
        reconcile: provider,
        clock: Arc::new(SystemClock),
        secrets: Arc::new(NoSecrets),
        files: Arc::new(
            hodei_adapters::files::DiskFiles::open(
                dir.join("files"),
                hodei_adapters::files::FileLimits::default(),
                "main".into(),
            )
            .unwrap(),
        ),
        faults: Faults::none(),
    };
    let worker = WorkerSpec {
        id: WorkerId("local".into()),
        labels: vec![],
        slots,
        agent: false,
        offline: false,
    };
    start_tree(ports, TreeConfig::new(Some(worker), Approvals::Wait))
}

/// Forwards the events the benchmark looks at, with the instant they were seen.
struct Tap(mpsc::UnboundedSender<(Instant, DomainEvent)>);

impl Actor for Tap {
    type Context = Context<Self>;
}

impl Handler<Published> for Tap {
    type Result = ();

    fn handle(&mut self, msg: Published, _: &mut Context<Self>) {
        let now = Instant::now();
        for event in msg.events.iter() {
            if matches!(
                event,
                DomainEvent::JobStarted { .. }
                    | DomainEvent::RunSucceeded { .. }
                    | DomainEvent::RunFailed { .. }
                    | DomainEvent::RunCancelled { .. }
            ) {
                let _ = self.0.send((now, event.clone()));
            }
        }
    }
}

fn tap(tree: &Tree) -> mpsc::UnboundedReceiver<(Instant, DomainEvent)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let tap = Tap(tx).start();
    tree.bus.do_send(Subscribe {
        subscriber: tap.recipient(),
    });
    rx
}

fn pipeline(jobs: usize, script: &str) -> String {
    let mut yaml = String::from("name: load\njobs:\n");
    for i in 0..jobs {
        yaml.push_str(&format!("  j{i}: {{steps: ['{script}']}}\n"));
    }
    yaml
}

async fn wait_runs(
    rx: &mut mpsc::UnboundedReceiver<(Instant, DomainEvent)>,
    runs: usize,
) -> Instant {
    let mut done = 0;
    let mut last = Instant::now();
    while done < runs {
        let (at, event) = tokio::time::timeout(Duration::from_secs(300), rx.recv())
            .await
            .expect("runs finish: likely deadlocked")
            .unwrap();
        if matches!(
            event,
            DomainEvent::RunSucceeded { .. }
                | DomainEvent::RunFailed { .. }
                | DomainEvent::RunCancelled { .. }
        ) {
            assert!(
                matches!(event, DomainEvent::RunSucceeded { .. }),
                "{event:?}"
            );
            done += 1;
            last = at;
        }
    }
    last
}

async fn throughput(runs: usize, jobs: usize) -> f64 {
    let dir = scratch("throughput");
    let tree = tree(&dir, Arc::new(FakeProvider::quiet()), 256).await;
    let mut rx = tap(&tree);
    let source = stored(&tree, pipeline(jobs, "noop")).await;
    let started = Instant::now();
    let mut pending = Vec::new();
    for _ in 0..runs {
        pending.push(tree.orchestrator.send(SubmitRun {
            definition: source.clone(),
            inputs: RunInputs::default(),
            limit: None,
        }));
    }
    for submit in pending {
        submit.await.unwrap().unwrap();
    }
    let end = wait_runs(&mut rx, runs).await;
    let rate = (runs * jobs) as f64 / end.duration_since(started).as_secs_f64();
    println!(
        "durable no-op jobs through every actor: {} jobs in {:.2} s = {rate:.0} jobs/s",
        runs * jobs,
        end.duration_since(started).as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    rate
}

async fn latency(rate: f64, count: usize) {
    let dir = scratch("latency");
    let tree = tree(&dir, Arc::new(FakeProvider::quiet()), 256).await;
    let mut rx = tap(&tree);
    let source = stored(&tree, pipeline(1, "noop")).await;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let submitted: Arc<Mutex<HashMap<RunId, Instant>>> = Arc::default();
    let mut started: HashMap<RunId, Instant> = HashMap::new();
    let mut answered = Vec::with_capacity(count);
    let begin = Instant::now();
    for i in 0..count {
        let at = begin + interval * i as u32;
        tokio::time::sleep_until(at.into()).await;
        let sent = Instant::now();
        let run = tree
            .orchestrator
            .send(SubmitRun {
                definition: source.clone(),
                inputs: RunInputs::default(),
                limit: None,
            })
            .await
            .unwrap()
            .unwrap();
        answered.push(sent.elapsed().as_secs_f64() * 1000.0);
        submitted.lock().unwrap().insert(run, sent);
        while let Ok((at, event)) = rx.try_recv() {
            if let DomainEvent::JobStarted { run, .. } = event {
                started.insert(run, at);
            }
        }
    }
    while started.len() < count {
        let (at, event) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("jobs start")
            .unwrap();
        if let DomainEvent::JobStarted { run, .. } = event {
            started.insert(run, at);
        }
    }
    let submitted = submitted.lock().unwrap();
    let mut latencies: Vec<f64> = started
        .iter()
        .map(|(run, at)| at.duration_since(submitted[run]).as_secs_f64() * 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    answered.sort_by(f64::total_cmp);
    let pct = |of: &[f64], p: f64| of[((of.len() as f64 * p) as usize).min(of.len() - 1)];
    println!(
        "submit→start at {rate:.0} runs/s ({count} one-job runs): p50 {:.2} ms, p99 {:.2} ms (the submission answered, the run created: p50 {:.2} ms)",
        pct(&latencies, 0.50),
        pct(&latencies, 0.99),
        pct(&answered, 0.50),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// CPU time used so far, in milliseconds: by this process (every thread), and by its children
/// that were waited for.
fn cpu_ms() -> (f64, f64) {
    let ms = |who| {
        // SAFETY: getrusage writes the struct it is given, nothing else.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut usage) };
        let tv = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
        tv(usage.ru_utime) + tv(usage.ru_stime)
    };
    (ms(libc::RUSAGE_SELF), ms(libc::RUSAGE_CHILDREN))
}

async fn local_spawn(jobs: usize, parallel: usize) {
    let dir = scratch("local");
    // The raw rate: the same command, spawned and waited for, `parallel` at a time.
    let cpu_before = cpu_ms();
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..jobs {
        if set.len() >= parallel {
            set.join_next().await;
        }
        set.spawn(async move {
            let status = tokio::process::Command::new("/bin/sh")
                .args(["-e", "-c", "true"])
                .env_clear()
                .current_dir("/")
                .status()
                .await;
            assert!(status.unwrap().success(), "spawn {i}");
        });
    }
    while set.join_next().await.is_some() {}
    let raw = jobs as f64 / started.elapsed().as_secs_f64();
    let cpu_raw = cpu_ms();
    let provider = Arc::new(LocalProvider::new(
        dir.join("workspaces"),
        "load-bench".into(),
    ));
    let tree = tree(&dir, provider, parallel as u32).await;
    let mut rx = tap(&tree);
    let runs = jobs / 10;
    let source = stored(&tree, pipeline(10, "true")).await;
    let cpu_start = cpu_ms();
    let started = Instant::now();
    for _ in 0..runs {
        tree.orchestrator
            .send(SubmitRun {
                definition: source.clone(),
                inputs: RunInputs::default(),
                limit: None,
            })
            .await
            .unwrap()
            .unwrap();
    }
    let end = wait_runs(&mut rx, runs).await;
    let cpu_hodei = cpu_ms();
    let hodei = (runs * 10) as f64 / end.duration_since(started).as_secs_f64();
    println!(
        "`true` jobs through LocalProvider, {parallel} at a time: {hodei:.0} jobs/s; raw spawn of `/bin/sh -e -c true`, {parallel} at a time: {raw:.0}/s; ratio {:.1}%",
        hodei / raw * 100.0
    );
    // Where the time goes: CPU per job (the two cores give 2 ms of CPU per millisecond).
    let per = |cpu: f64| cpu / jobs as f64;
    println!(
        "  CPU per job: raw loop {:.2} ms in this process, {:.2} ms in `sh`; through Hodei {:.2} ms in Hodei, {:.2} ms in `sh`; wall per job and slot {:.2} ms raw, {:.2} ms through Hodei",
        per(cpu_raw.0 - cpu_before.0),
        per(cpu_raw.1 - cpu_before.1),
        per(cpu_hodei.0 - cpu_start.0),
        per(cpu_hodei.1 - cpu_start.1),
        parallel as f64 * 1000.0 / raw,
        parallel as f64 * 1000.0 / hodei,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn queued_memory(jobs: usize) {
    let dir = scratch("memory");
    // No slot: every job stays queued.
    let tree = tree(&dir, Arc::new(FakeProvider::quiet()), 0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = rss_kib();
    let per_run = 100;
    let source = stored(&tree, pipeline(per_run, "noop")).await;
    for _ in 0..jobs / per_run {
        tree.orchestrator
            .send(SubmitRun {
                definition: source.clone(),
                inputs: RunInputs::default(),
                limit: None,
            })
            .await
            .unwrap()
            .unwrap();
    }
    // Wait until every job waits in the scheduler's queue.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let stats = tree.scheduler.send(GetQueueStats).await.unwrap();
        if stats.queued >= jobs {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "jobs never all queued: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded = rss_kib();
    println!(
        "resident memory with {jobs} queued jobs: {:.1} MiB above idle ({:.1} MiB idle, {:.1} MiB loaded, {:.0} bytes per queued job)",
        (loaded.saturating_sub(idle)) as f64 / 1024.0,
        idle as f64 / 1024.0,
        loaded as f64 / 1024.0,
        (loaded.saturating_sub(idle)) as f64 * 1024.0 / jobs as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether to measure `name` (`throughput`, `latency`, `local`, `memory`): all of them
/// unless `HODEI_LOAD_ONLY` lists some, separated by commas (for a profile of one of them).
fn phase(name: &str) -> bool {
    std::env::var("HODEI_LOAD_ONLY").map_or(true, |only| only.split(',').any(|p| p.trim() == name))
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent: keep that pass quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs = env_or("HODEI_LOAD_RUNS", if quick { 4 } else { 400 });
    let jobs = env_or("HODEI_LOAD_JOBS", if quick { 5 } else { 50 });
    let queued = env_or("HODEI_LOAD_QUEUED", if quick { 200 } else { 100_000 });
    let on_postgres = std::env::var("HODEI_LOAD_STORE").is_ok_and(|s| s == "postgres");
    let cluster = on_postgres.then(|| TestCluster::start_durable().expect("a PostgreSQL cluster"));
    let _ = POSTGRES.set(cluster);
    let system = actix::System::new();
    system.block_on(async move {
        if let Some(cluster) = postgres() {
            let url = cluster.database();
            let count = if quick { 200 } else { 20_000 };
            for parallel in [1, 16] {
                let rate = hodei_adapters::postgres::cluster::commit_rate(&url, count, parallel)
                    .await
                    .unwrap();
                println!(
                    "raw PostgreSQL commits (a one-row INSERT per transaction, durable defaults), {parallel} at a time: {rate:.0}/s"
                );
            }
        }
        if postgres().is_none() {
            let dir = scratch("commits");
            let count = if quick { 50 } else { 5_000 };
            let (p50, p99) = hodei_adapters::sqlite::commit_latency(&dir.join("raw.db"), count)
                .await
                .unwrap();
            println!(
                "raw SQLite commits (`BEGIN IMMEDIATE; INSERT` of one row`; COMMIT` as one query; WAL, synchronous=NORMAL), one after the other: p50 {p50:.3} ms, p99 {p99:.3} ms"
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
        if phase("latency") || phase("throughput") {
            let rate = throughput(runs, jobs).await;
            if phase("latency") {
                let half = (rate / 2.0).max(1.0);
                latency(half, if quick { 20 } else { 2_000 }).await;
                // Below that rate, where queues do not build up: what the path itself costs.
                if !quick {
                    latency((half / 8.0).max(1.0), 500).await;
                }
            }
        }
        if phase("local") {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            local_spawn(if quick { 20 } else { 1_000 }, cores).await;
            local_spawn(if quick { 20 } else { 2_000 }, cores * 4).await;
        }
        if phase("memory") {
            queued_memory(queued).await;
        }
    });
    if let Some(cluster) = postgres() {
        cluster.stop();
    }
}
