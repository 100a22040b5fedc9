//! The deployment of `deploy/compose.yml` as users run it: PostgreSQL, three replicas behind
//! HAProxy and two agents, all containers on private Docker networks, with images built on this
//! machine (`scripts/images`, and Hodei's from this test's binary). Runs are submitted through
//! the load balancer while the leader is killed with SIGKILL three times, a replica is cut off
//! from PostgreSQL and PostgreSQL itself restarts: every run finishes, each step ran once
//! (steps leave a mark with their run, job and attempt on a volume the agents share), and every
//! log is whole.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ADMIN: &str = "hodei_cluster-test-admin-token-0123456789abcdef";
const AGENT: &str = "hodei_cluster-test-agent-token-0123456789abcdef";
const RUNS: u64 = 200;
const LINES: usize = 5;

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("{program} cannot run: {err}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A compose project of this test, taken down (with its volumes) however the test ends.
struct Cluster {
    project: String,
    image: String,
    files: Vec<PathBuf>,
    env: Vec<(String, String)>,
    url: String,
}

impl Cluster {
    fn compose(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new("docker-compose");
        command.arg("-p").arg(&self.project);
        for file in &self.files {
            command.arg("-f").arg(file);
        }
        command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("docker-compose runs (it is installed on these machines)")
    }

    /// What the replicas and agents logged about the jobs `jobs`, and the agents' warnings and
    /// errors (for a failure's message).
    fn said_about(&self, jobs: &[u64]) -> String {
        let mut said = String::new();
        for service in ["hodei-1", "hodei-2", "hodei-3", "agent-1", "agent-2"] {
            let Ok(out) = Command::new("docker")
                .args(["logs", &self.container(service)])
                .output()
            else {
                continue;
            };
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            for line in text.lines() {
                let about = jobs.iter().any(|job| {
                    let needle = format!("job_id=job-{job}");
                    line.ends_with(&needle) || line.contains(&format!("{needle} "))
                });
                // The agents' troubles too: a report refused, a lease lost.
                let trouble = service.starts_with("agent")
                    && (line.contains(" WARN ") || line.contains(" ERROR "));
                if about || trouble {
                    said.push_str(&format!("{service}: {line}\n"));
                }
            }
        }
        said
    }

    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.project)
    }

    /// SIGKILL to a container's main process, from the host: the process dies as a crash
    /// would, and the restart policy starts it again.
    fn kill(&self, service: &str) {
        let pid = sh(
            "docker",
            &["inspect", "-f", "{{.State.Pid}}", &self.container(service)],
        );
        sh("kill", &["-KILL", &pid]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // HODEI_TEST_KEEP_CLUSTER=1 leaves it up for a look after a failure.
        if std::env::var_os("HODEI_TEST_KEEP_CLUSTER").is_some() {
            eprintln!("The cluster {} is left up.", self.project);
            return;
        }
        let _ = self.compose(&["down", "-v", "--remove-orphans"]);
        let _ = Command::new("docker")
            .args(["image", "rm", &self.image])
            .output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Builds Hodei's image from this test's binary, writes the test's additions to the compose
/// file (the shared volume of marks), and starts the cluster.
fn start(scratch: &Path) -> Cluster {
    let image = format!("hodei-test/cluster:{}", std::process::id());
    sh(
        repository().join("scripts/hodei-image").to_str().unwrap(),
        &["--binary", env!("CARGO_BIN_EXE_hodei"), "--tag", &image],
    );
    let marks = scratch.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    std::fs::set_permissions(&marks, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let extra = scratch.join("compose.test.yml");
    std::fs::write(
        &extra,
        format!(
            "services:\n  agent-1:\n    volumes: [\"{m}:/marks\"]\n    environment: {{HODEI_LOG: info}}\n  agent-2:\n    volumes: [\"{m}:/marks\"]\n    environment: {{HODEI_LOG: info}}\n  hodei-1:\n    environment: {{HODEI_LOG: info}}\n  hodei-2:\n    environment: {{HODEI_LOG: info}}\n  hodei-3:\n    environment: {{HODEI_LOG: info}}\n",
            m = marks.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let cluster = Cluster {
        project: format!("hodeicluster{}", std::process::id()),
        image: image.clone(),
        files: vec![repository().join("deploy/compose.yml"), extra],
        env: vec![
            ("HODEI_IMAGE".into(), image),
            ("HODEI_PORT".into(), format!("127.0.0.1:{port}")),
            ("HODEI_ADMIN_TOKEN".into(), ADMIN.into()),
            ("HODEI_AGENT_TOKEN".into(), AGENT.into()),
            (
                "POSTGRES_PASSWORD".into(),
                "cluster-test-db-password".into(),
            ),
        ],
        url: format!("http://127.0.0.1:{port}"),
    };
    let up = cluster.compose(&["up", "-d"]);
    assert!(
        up.status.success(),
        "the cluster starts: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    cluster
}

/// A request through the load balancer, tried again while the cluster changes hands (a
/// connection refused or cut, `502`/`503`); the final answer's status and body.
async fn call(
    http: &reqwest::Client,
    request: impl Fn() -> reqwest::RequestBuilder,
    patience: Duration,
) -> (u16, Value) {
    let deadline = Instant::now() + patience;
    loop {
        if let Ok(answer) = request().send().await {
            let status = answer.status().as_u16();
            if ![502, 503, 504].contains(&status) {
                let body = answer.json().await.unwrap_or(Value::Null);
                return (status, body);
            }
        }
        let _ = http;
        assert!(
            Instant::now() < deadline,
            "no answer through the load balancer within {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn leader(http: &reqwest::Client, cluster: &Cluster) -> (String, u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, view) = call(
            http,
            || {
                http.get(format!("{}/api/v1/cluster", cluster.url))
                    .bearer_auth(ADMIN)
            },
            Duration::from_secs(60),
        )
        .await;
        if let (Some(name), Some(epoch)) = (
            view["leader"]["replica"].as_str(),
            view["leader"]["epoch"].as_u64(),
        ) {
            // `hodei-2-<life>` is the service hodei-2.
            let service = name.rsplit_once('-').unwrap().0.to_owned();
            return (service, epoch);
        }
        assert!(Instant::now() < deadline, "no leader: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn submit(http: &reqwest::Client, cluster: &Cluster) -> u64 {
    let (status, run) = call(
        http,
        || {
            http.post(format!("{}/api/v1/pipelines/marks/runs", cluster.url))
                .bearer_auth(ADMIN)
                .json(&json!({}))
        },
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(status, 201, "{run}");
    run["id"].as_u64().unwrap()
}

/// Waits until every run is over; their records.
async fn finished(http: &reqwest::Client, cluster: &Cluster, runs: &[u64]) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut done = BTreeMap::new();
    let mut open_records = BTreeMap::new();
    while done.len() < runs.len() {
        let open: Vec<u64> = runs
            .iter()
            .copied()
            .filter(|id| !done.contains_key(id))
            .collect();
        for id in open {
            let (status, run) = call(
                http,
                || {
                    http.get(format!("{}/api/v1/runs/{id}", cluster.url))
                        .bearer_auth(ADMIN)
                },
                Duration::from_secs(60),
            )
            .await;
            assert_eq!(status, 200, "{run}");
            if ["succeeded", "failed", "cancelled"].contains(&run["state"].as_str().unwrap_or("")) {
                open_records.remove(&id);
                done.insert(id, run);
            } else {
                open_records.insert(id, run);
            }
        }
        eprintln!("{} of {} runs finished", done.len(), runs.len());
        if Instant::now() >= deadline {
            let jobs: Vec<u64> = open_records
                .values()
                .flat_map(|run| run["jobs"].as_array().cloned().unwrap_or_default())
                .filter_map(|job| job["id"].as_u64())
                .collect();
            eprintln!(
                "What the replicas and agents said:\n{}",
                cluster.said_about(&jobs)
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} runs never finished: {}\nthe queue: {}",
            runs.len() - done.len(),
            runs.len(),
            serde_json::to_string(&open_records).unwrap_or_default(),
            call(
                http,
                || http
                    .get(format!("{}/api/v1/queue", cluster.url))
                    .bearer_auth(ADMIN),
                Duration::from_secs(60),
            )
            .await
            .1
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    done.into_values().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_cluster_loses_nothing_through_leader_kills_a_cut_replica_and_a_database_restart()
 {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cluster");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let cluster = start(&scratch);
    hodei_api::client::install_crypto();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let lines: String = (1..=LINES)
        .map(|i| format!("echo \"line {i} of $HODEI_RUN_ID\"; sleep 0.1; "))
        .collect();
    let pipeline = format!(
        "name: marks\njobs:\n  mark:\n    steps:\n      - run: 'echo \"$HODEI_RUN_ID $HODEI_JOB_ID $HODEI_ATTEMPT\" >> /marks/steps; {lines}'\n"
    );
    let (status, body) = call(
        &http,
        || {
            http.put(format!("{}/api/v1/pipelines/marks", cluster.url))
                .bearer_auth(ADMIN)
                .header("content-type", "application/yaml")
                .body(pipeline.clone())
        },
        Duration::from_secs(120),
    )
    .await;
    assert!(status == 200 || status == 201, "{status} {body}");

    // 200 runs, while the leader is killed three times and a replica loses the database for
    // a while.
    let mut runs = Vec::new();
    let mut epochs = vec![leader(&http, &cluster).await.1];
    for n in 0..RUNS {
        runs.push(submit(&http, &cluster).await);
        if [30, 80, 130].contains(&n) {
            let (service, epoch) = leader(&http, &cluster).await;
            cluster.kill(&service);
            epochs.push(epoch);
        }
        if n == 160 {
            let (leading, _) = leader(&http, &cluster).await;
            let cut = ["hodei-1", "hodei-2", "hodei-3"]
                .into_iter()
                .find(|s| *s != leading)
                .unwrap();
            let network = format!("{}_db", cluster.project);
            sh(
                "docker",
                &["network", "disconnect", &network, &cluster.container(cut)],
            );
            tokio::time::sleep(Duration::from_secs(4)).await;
            sh(
                "docker",
                &["network", "connect", &network, &cluster.container(cut)],
            );
        }
    }
    let (_, last_epoch) = leader(&http, &cluster).await;
    assert!(
        last_epoch > epochs[0] + 2,
        "each kill made another replica lead: {epochs:?} then {last_epoch}"
    );

    // PostgreSQL restarts while runs go: they pause and go on.
    for _ in 0..20 {
        runs.push(submit(&http, &cluster).await);
    }
    sh("docker", &["restart", &cluster.container("db")]);
    for _ in 0..10 {
        runs.push(submit(&http, &cluster).await);
    }

    let records = finished(&http, &cluster, &runs).await;
    let failed: Vec<&Value> = records
        .iter()
        .filter(|r| r["state"] != "succeeded")
        .collect();
    assert!(failed.is_empty(), "every run succeeds: {failed:?}");
    // Each step ran once: one mark per run, and no (run, job, attempt) twice.
    let marks = std::fs::read_to_string(scratch.join("marks/steps")).unwrap();
    let mut per_run: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for line in marks.lines() {
        let run: u64 = line.split(' ').next().unwrap().parse().unwrap();
        per_run.entry(run).or_default().push(line);
    }
    for id in &runs {
        assert_eq!(
            per_run.get(id).map(Vec::len),
            Some(1),
            "run {id}'s step ran once: {:?}",
            per_run.get(id)
        );
    }
    // Every log is whole.
    for record in &records {
        let (run, job) = (
            record["id"].as_u64().unwrap(),
            record["jobs"][0]["id"].as_u64().unwrap(),
        );
        let log = loop {
            let answer = http
                .get(format!("{}/api/v1/jobs/{job}/log", cluster.url))
                .bearer_auth(ADMIN)
                .send()
                .await;
            if let Ok(answer) = answer
                && answer.status().is_success()
            {
                break answer.text().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let expected: String = (1..=LINES)
            .map(|i| format!("line {i} of {run}\n"))
            .collect();
        assert_eq!(log, expected, "the log of run {run}");
    }
}
