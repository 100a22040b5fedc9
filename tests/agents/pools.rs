//! Pools of ephemeral workers on the real Docker engine: a server container (given the
//! engine's socket) whose `[[pools]]` start one-job agents as containers on a network the test
//! creates. Each worker takes one job and exits; the pool never goes past `max` and goes back
//! to zero; a pool whose image cannot start backs off and the queue says why.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Deployment, docker, finished, hodei_image, scratch};

/// A server container with pools, on a network of its own ([`Deployment`]); removed when
/// dropped, the pools' workers too.
struct Pooled {
    deployment: Deployment,
    /// The pools' names, whose containers are removed at the end.
    pools: Vec<String>,
}

impl std::ops::Deref for Pooled {
    type Target = Deployment;

    fn deref(&self) -> &Deployment {
        &self.deployment
    }
}

impl Pooled {
    /// Starts the server, given the engine's socket, with `pools` (TOML of `[[pools]]`
    /// entries, where `NET` stands for the network's name).
    async fn start(test: &str, pools: &str, names: &[&str]) -> Pooled {
        let dir = scratch(&format!("pools-{test}"));
        let net = Deployment::network(test);
        std::fs::write(dir.join("hodei.toml"), pools.replace("NET", &net)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = format!("{}:/etc/hodei:ro", dir.display());
        let extra = [
            // The manager talks to the engine through its socket (root's to open).
            "--user",
            "0",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "-v",
            &config,
            "-e",
            "HODEI_CONFIG=/etc/hodei/hodei.toml",
        ];
        Pooled {
            deployment: Deployment::start_with(test, 60, &extra).await,
            pools: names.iter().map(|n| (*n).to_owned()).collect(),
        }
    }

    /// The containers of a pool, running or not.
    fn workers(&self, pool: &str, only_running: bool) -> Vec<String> {
        let filter = format!("label=hodei.pool={pool}");
        let mut args = vec!["ps", "-q", "--filter", filter.as_str()];
        if !only_running {
            args.push("-a");
        }
        docker(&args)
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect()
    }

    async fn agents(&self) -> Vec<Value> {
        let (status, body) = self
            .call(reqwest::Method::GET, "/api/v1/agents", None)
            .await;
        assert_eq!(status, 200, "{body}");
        body.as_array()
            .or_else(|| body["items"].as_array())
            .cloned()
            .unwrap_or_default()
    }

    /// The sum of a metric's series.
    async fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.call(reqwest::Method::GET, "/metrics", None).await;
        text.as_str()
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        // The server stops first, so that it starts no worker while they go (its output stays
        // for the deployment to show if the test failed).
        let _ = Command::new("docker").args(["kill", &self.server]).output();
        for pool in &self.pools {
            for container in self.workers(pool, false) {
                let _ = Command::new("docker")
                    .args(["rm", "-f", &container])
                    .output();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_workers_take_one_job_each_never_exceed_max_and_go_back_to_zero() {
    let pool = format!("t{}", std::process::id());
    let config = format!(
        "[[pools]]\nname = \"{pool}\"\nprovider = \"docker\"\nlabels = [\"ephemeral\"]\nimage = \"{}\"\nmax = 2\nidle_timeout = \"20s\"\nnetwork = \"NET\"\nserver_url = \"http://server:8080\"\n",
        hodei_image()
    );
    let cluster = Pooled::start("pool-max", &config, &[&pool]).await;
    assert!(
        cluster.workers(&pool, false).is_empty(),
        "nothing waits: no worker"
    );
    cluster
        .apply(
            "burst",
            "name: burst\non: { manual: {} }\njobs:\n  work:\n    runs_on: [ephemeral]\n    steps:\n      - run: echo \"on $HOSTNAME\"; sleep 2\n",
        )
        .await;
    // Three times the pool's `max` of jobs.
    let mut runs = Vec::new();
    for _ in 0..6 {
        runs.push(cluster.trigger("burst").await);
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut most = 0;
    let mut done = Vec::new();
    while done.len() < runs.len() {
        let running = cluster.workers(&pool, true).len();
        most = most.max(running);
        assert!(running <= 2, "{running} workers run at once: max is 2");
        done.clear();
        for run in &runs {
            let view = cluster.run(*run).await;
            if finished(&view) {
                done.push(view);
            }
        }
        if Instant::now() > deadline {
            let mut states = Vec::new();
            for run in &runs {
                states.push(cluster.run(*run).await["jobs"][0].clone());
            }
            let (_, queue) = cluster
                .call(reqwest::Method::GET, "/api/v1/queue", None)
                .await;
            panic!(
                "the runs never ended: {} of {} done; jobs {states:#?}; queue {queue:#}; containers {:?}",
                done.len(),
                runs.len(),
                docker(&["ps", "-a", "--filter", &format!("label=hodei.pool={pool}")])
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(most, 2, "the pool used its room");
    let mut workers = BTreeSet::new();
    for run in &done {
        assert_eq!(run["state"], "succeeded", "{run:#}");
        let worker = run["jobs"][0]["worker"].as_str().unwrap().to_owned();
        assert!(
            worker.starts_with(&format!("hodei-pool-{pool}-")),
            "{worker}"
        );
        let log = cluster.log(run["jobs"][0]["id"].as_u64().unwrap()).await;
        assert!(
            String::from_utf8_lossy(&log).contains("on "),
            "the log arrived: {:?}",
            String::from_utf8_lossy(&log)
        );
        workers.insert(worker);
    }
    assert_eq!(workers.len(), 6, "each worker took one job: {workers:?}");
    // Nothing waits: the pool goes back to zero, containers and agents alike.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = cluster.workers(&pool, false).len();
        let agents = cluster.agents().await;
        if left == 0 && agents.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} container(s) and agents {agents:?} are left"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(cluster.metric("hodei_pool_workers_failed_total").await, 0.0);
    assert!(cluster.metric("hodei_pool_workers_started_total").await >= 6.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_whose_image_cannot_start_backs_off_and_the_queue_says_why() {
    let pool = format!("b{}", std::process::id());
    // Debian's image is on the engine (the hodei image is built from it) but has no `hodei`.
    let config = format!(
        "[[pools]]\nname = \"{pool}\"\nprovider = \"docker\"\nlabels = [\"broken\"]\nimage = \"debian:bookworm\"\nmax = 2\nnetwork = \"NET\"\nserver_url = \"http://server:8080\"\n"
    );
    let cluster = Pooled::start("pool-broken", &config, &[&pool]).await;
    cluster
        .apply(
            "stuck",
            "name: stuck\non: { manual: {} }\njobs:\n  work:\n    runs_on: [broken]\n    steps:\n      - run: echo never\n",
        )
        .await;
    let run = cluster.trigger("stuck").await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    let reason = loop {
        let (_, queue) = cluster
            .call(reqwest::Method::GET, "/api/v1/queue", None)
            .await;
        let reason = queue["items"][0]["reason"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if reason.starts_with(&format!("pool {pool}: cannot start a worker: ")) {
            break reason;
        }
        assert!(Instant::now() < deadline, "the queue says: {queue:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(reason.contains("hodei"), "the engine's reason: {reason}");
    // A pass a second would have tried 8 times by now; backing off (1 s, 2 s, 4 s...) tries
    // far fewer, and still tries again.
    let wait = Duration::from_secs(8).saturating_sub(started.elapsed());
    tokio::time::sleep(wait).await;
    let failures = cluster.metric("hodei_pool_workers_failed_total").await;
    assert!(
        (2.0..=5.0).contains(&failures),
        "{failures} failed starts in 8 s"
    );
    assert!(
        cluster.workers(&pool, false).is_empty(),
        "a worker that cannot start is removed"
    );
    let view = cluster.run(run).await;
    assert!(!finished(&view), "the job still waits: {view:#}");
    cluster.cancel(run).await;
}
