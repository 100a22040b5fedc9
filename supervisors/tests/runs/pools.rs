//! The worker manager in the tree, with a scripted launcher and an in-memory agent store:
//! it reaps an earlier life's workers, starts one worker per waiting job up to `max`, each with
//! an agent of its own, removes exited ones with their agents, and backs off a failing start
//! while the queue says why.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hodei_actors::messages::{CancelRun, GetQueue};
use hodei_actors::pools::{Pool, PoolSettings};
use hodei_adapters::sqlite::SqliteStore;
use hodei_domain::plan::RunInputs;
use hodei_domain::pools::PoolRule;
use hodei_domain::ports::{AgentStore, BoxFuture, LaunchError, Launched, Launcher, WorkerLaunch};

use super::common::{Harness, Options, harness_with};

/// A launcher that keeps its workers in memory; a test ends them and makes starts fail.
#[derive(Default)]
struct Scripted {
    /// Each worker by name: `None` while it runs, its exit code once it ended.
    workers: Mutex<BTreeMap<String, Option<Option<i64>>>>,
    /// Every launch asked for, with its credential.
    launched: Mutex<Vec<WorkerLaunch>>,
    removed: Mutex<Vec<String>>,
    /// While set, a launch fails with this.
    refuse: Mutex<Option<String>>,
}

impl Scripted {
    fn running(&self) -> usize {
        let workers = self.workers.lock().unwrap();
        workers.values().filter(|w| w.is_none()).count()
    }

    fn end(&self, name: &str, code: i64) {
        self.workers
            .lock()
            .unwrap()
            .insert(name.to_owned(), Some(Some(code)));
    }
}

impl Launcher for Scripted {
    fn engine(&self) -> &'static str {
        "scripted"
    }

    fn launch<'a>(&'a self, worker: &'a WorkerLaunch) -> BoxFuture<'a, Result<(), LaunchError>> {
        Box::pin(async move {
            self.launched.lock().unwrap().push(worker.clone());
            if let Some(reason) = self.refuse.lock().unwrap().clone() {
                return Err(LaunchError::Refused { reason });
            }
            self.workers
                .lock()
                .unwrap()
                .insert(worker.name.clone(), None);
            Ok(())
        })
    }

    fn workers(&self) -> BoxFuture<'_, Result<Vec<Launched>, LaunchError>> {
        Box::pin(async move {
            Ok(self
                .workers
                .lock()
                .unwrap()
                .iter()
                .map(|(name, exited)| Launched {
                    name: name.clone(),
                    exited: *exited,
                })
                .collect())
        })
    }

    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), LaunchError>> {
        Box::pin(async move {
            self.workers.lock().unwrap().remove(name);
            self.removed.lock().unwrap().push(name.to_owned());
            Ok(())
        })
    }
}

async fn pooled(name: &str, launcher: Arc<Scripted>) -> (Harness, Arc<SqliteStore>) {
    let agents = Arc::new(SqliteStore::memory().await.unwrap());
    let pool = Pool {
        name: "gpu".into(),
        rule: PoolRule {
            labels: vec!["gpu".parse().unwrap()],
            max: 2,
            start_deadline: Duration::from_secs(60),
            idle_deadline: Duration::from_secs(60),
        },
        launcher,
        server_url: "http://hodei:8080".into(),
        idle_timeout: Duration::from_secs(30),
    };
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let settings = PoolSettings {
        pools: vec![pool],
        agents: agents.clone(),
        secret: Arc::new(move || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(format!("hodei_{n:04}xsecretabcdefghij"))
        }),
        every: Duration::from_millis(20),
    };
    let h = harness_with(
        name,
        Options {
            config: Box::new(move |config| config.pools = Some(settings)),
            ..Options::default()
        },
    )
    .await;
    (h, agents)
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: likely deadlocked"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The scheduler's queue.
async fn queue(h: &Harness) -> Vec<hodei_actors::messages::Waiting> {
    h.tree
        .scheduler
        .send(GetQueue {
            limit: 10,
            run: None,
        })
        .await
        .unwrap()
}

const THREE_GPU_JOBS: &str = "name: p\njobs:\n  a: { runs_on: [gpu], steps: [{ run: echo a }] }\n  b: { runs_on: [gpu], steps: [{ run: echo b }] }\n  c: { runs_on: [gpu], steps: [{ run: echo c }] }\n";

#[actix_rt::test]
async fn the_manager_reaps_leftovers_starts_up_to_max_with_one_agent_each_and_removes_exited_workers()
 {
    let launcher = Arc::new(Scripted::default());
    launcher
        .workers
        .lock()
        .unwrap()
        .insert("hodei-pool-gpu-leftover".into(), None);
    let (h, agents) = pooled("pools-max", launcher.clone()).await;
    wait_until("the leftover is reaped", || {
        launcher.removed.lock().unwrap().len() == 1
    })
    .await;
    assert!(
        launcher.launched.lock().unwrap().is_empty(),
        "nothing waits"
    );
    let run = h.submit(THREE_GPU_JOBS, RunInputs::default()).await;
    wait_until("two workers start", || launcher.running() == 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(launcher.running(), 2, "never past max for three jobs");
    // Each worker has an agent of its own, opened by its credential alone.
    let launched = launcher.launched.lock().unwrap().clone();
    assert_eq!(launched.len(), 2);
    for worker in &launched {
        assert!(worker.name.starts_with("hodei-pool-gpu-"), "{worker:?}");
        let digest: [u8; 32] = {
            use sha2::Digest as _;
            sha2::Sha256::digest(worker.credential.as_bytes()).into()
        };
        let agent = agents
            .agent_by_digest(&digest)
            .await
            .unwrap()
            .expect("its agent");
        assert_eq!(agent.name, worker.name);
        assert_eq!(agent.labels, vec!["gpu".parse().unwrap()]);
    }
    assert!(
        agents.agent_tokens().await.unwrap().is_empty(),
        "the registration tokens made for the workers are revoked"
    );
    // A worker that exits is removed with its agent; the room it leaves takes the third job.
    launcher.end(&launched[0].name, 0);
    wait_until("the exited worker is removed", || {
        launcher.removed.lock().unwrap().contains(&launched[0].name)
    })
    .await;
    wait_until("a third worker starts", || {
        launcher.launched.lock().unwrap().len() == 3
    })
    .await;
    let names: Vec<String> = agents
        .agents()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert!(!names.contains(&launched[0].name), "{names:?}");
    // Nothing waits any more: as the workers exit, the pool goes back to zero.
    h.tree.orchestrator.do_send(CancelRun {
        run,
        by: "test".into(),
    });
    h.finished(run).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let queue = queue(&h).await;
        if queue.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a cancelled run leaves its jobs in the queue: {queue:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for worker in launcher.launched.lock().unwrap().clone() {
        launcher.end(&worker.name, 0);
    }
    wait_until("the pool is empty", || {
        launcher.workers.lock().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(launcher.launched.lock().unwrap().len(), 3);
    assert!(agents.agents().await.unwrap().is_empty());
}

#[actix_rt::test]
async fn a_failing_start_backs_off_and_the_queue_says_why() {
    let launcher = Arc::new(Scripted::default());
    *launcher.refuse.lock().unwrap() = Some("no such image `gpu:1`".into());
    let (h, agents) = pooled("pools-refused", launcher.clone()).await;
    h.submit(
        "name: p\njobs:\n  a: { runs_on: [gpu], steps: [{ run: echo a }] }\n",
        RunInputs::default(),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let queue = queue(&h).await;
        if queue
            .first()
            .is_some_and(|w| w.reason == "pool gpu: cannot start a worker: no such image `gpu:1`")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue says: {queue:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A pass every 20 ms: without a backoff, 50 starts in a second; with it, one more.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let tries = launcher.launched.lock().unwrap().len();
    assert!((2..=3).contains(&tries), "{tries} starts in 1.5 s");
    assert!(
        agents.agents().await.unwrap().is_empty(),
        "a worker that did not start keeps no agent"
    );
}
