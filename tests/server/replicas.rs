//! Several `hodei server` replicas on one PostgreSQL database, as processes on this machine:
//! one leads and runs the tree, the others serve logs from the database and forward the rest;
//! a killed leader is replaced, a paused one is deposed and stops, and nothing runs twice.
//! (The compose deployment and its failover suite are in `tests/cluster.rs`.)

use std::process::Stdio;
use std::time::{Duration, Instant};

use hodei_adapters::postgres::cluster::TestCluster;
use serde_json::{Value, json};

use super::common::{Server, scratch};
use super::{follow, get, log_of};

/// The lease of these tests' leaders: short, so that a failover is quick.
const LEASE_MS: &str = "1000";

fn replica(data: &std::path::Path, url: &str, said: &str, env: &[(&str, &str)]) -> Server {
    let mut all = vec![
        ("HODEI_LEADER_LEASE_MS", LEASE_MS),
        ("HODEI_BOOTSTRAP_TOKEN", TOKEN),
    ];
    all.extend_from_slice(env);
    Server::start_saying(data, &["--database", url], &all, Stdio::null(), said)
}

const TOKEN: &str = "hodei_replicas-test-token-0123456789abcdef0123";
const PIPELINE: &str = "name: count\njobs:\n  count:\n    steps:\n      - run: 'for i in $(seq 1 20); do echo \"line $i of $HODEI_RUN_ID\"; sleep 0.05; done'\n";

async fn cluster_of(http: &reqwest::Client, base: &str) -> Value {
    get(
        http,
        &format!("{base}/api/v1/cluster"),
        &format!("Bearer {TOKEN}"),
    )
    .await
}

/// Starts a run of `count` through `base`, trying again while no replica leads (`503`).
async fn trigger(http: &reqwest::Client, base: &str) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = http
            .post(format!("{base}/api/v1/pipelines/count/runs"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .json(&json!({}))
            .send()
            .await;
        if let Ok(answer) = answer {
            let status = answer.status().as_u16();
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            if status == 201 || status == 200 {
                return (
                    body["id"].as_u64().unwrap(),
                    body["jobs"][0]["id"].as_u64().unwrap(),
                );
            }
            assert_eq!(
                status, 503,
                "only `no-leader` while the leader changes: {body}"
            );
            assert!(
                ["no-leader", "unavailable"].contains(&body["code"].as_str().unwrap_or("")),
                "{body}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "no replica took the run within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_state(http: &reqwest::Client, base: &str, run: u64, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = http
            .get(format!("{base}/api/v1/runs/{run}"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .send()
            .await;
        if let Ok(answer) = answer
            && answer.status().is_success()
        {
            let body: Value = answer.json().await.unwrap();
            if body["state"] == state {
                return body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "run {run} never became {state} (likely deadlocked)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Applies `count`, whose step leaves a mark (its run's id) in `marks` at each attempt: a step
/// that ran twice would leave two.
async fn put_marking(http: &reqwest::Client, base: &str, marks: &std::path::Path) {
    let pipeline = format!(
        "name: count\njobs:\n  count:\n    steps:\n      - run: 'echo \"$HODEI_RUN_ID\" >> {}; echo done'\n",
        marks.display()
    );
    let put = http
        .put(format!("{base}/api/v1/pipelines/count"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/yaml")
        .body(pipeline)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
}

/// Each of `runs` left exactly one mark, and nothing else did.
fn assert_each_ran_once(marks: &std::path::Path, runs: &[u64]) {
    let marks = std::fs::read_to_string(marks).unwrap();
    let mut lines: Vec<&str> = marks.lines().collect();
    lines.sort_unstable();
    let mut expected: Vec<String> = runs.iter().map(u64::to_string).collect();
    expected.sort_unstable();
    assert_eq!(lines, expected, "each run's step ran exactly once");
}

/// The exit code of `server`, which must stop within `within` (`never` says what it means if
/// it does not).
async fn exit_code(server: &mut Server, within: Duration, never: &str) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < deadline, "{never}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_forward_serve_logs_from_the_database_and_a_killed_leader_is_replaced() {
    let db = TestCluster::shared().database();
    let data = scratch("replicas-e2e");
    let mut a = replica(&data.join("a"), &db, "the leader", &[]);
    let b = replica(&data.join("b"), &db, "a follower of", &[]);
    // This one follows logs by polling only, as behind a pooler that drops notifications.
    let c = replica(
        &data.join("c"),
        &db,
        "a follower of",
        &[("HODEI_LOG_NOTIFICATIONS", "false")],
    );
    hodei_api::client::install_crypto();
    let http = reqwest::Client::new();
    let auth = format!("Bearer {TOKEN}");

    // Who leads, as every replica says it.
    let leader = cluster_of(&http, &a.url).await;
    assert_eq!(leader["mode"], "replicated");
    assert_eq!(leader["role"], "leader");
    let first_epoch = leader["leader"]["epoch"].as_u64().unwrap();
    for follower in [&b, &c] {
        let view = cluster_of(&http, &follower.url).await;
        assert_eq!(view["role"], "follower", "{view}");
        assert_eq!(view["leader"]["replica"], leader["replica"], "{view}");
        let ready = http
            .get(format!("{}/readyz", follower.url))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
    }

    // A pipeline applied through one follower, a run started through the other: both
    // forwarded to the leader, which runs it.
    let put = http
        .put(format!("{}/api/v1/pipelines/count", b.url))
        .header("authorization", &auth)
        .header("content-type", "application/yaml")
        .body(PIPELINE)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());
    let (run, job) = trigger(&http, &c.url).await;

    // Its log followed live on both followers (one by notifications, one by polling), from
    // the database: every line once, in order, then the end.
    let (on_b, on_c) = tokio::join!(
        follow(&b.url, TOKEN, job, 0, |_, f| f["type"] == "end"),
        follow(&c.url, TOKEN, job, 0, |_, f| f["type"] == "end"),
    );
    let text =
        |frames: &[Value]| -> String { frames.iter().filter_map(|f| f["data"].as_str()).collect() };
    let expected: String = (1..=20).map(|i| format!("line {i} of {run}\n")).collect();
    for (frames, finished) in [on_b, on_c] {
        assert!(finished, "the stream ended with `end`: {frames:?}");
        assert_eq!(text(&frames), expected);
        assert_eq!(frames.last().unwrap()["state"], "succeeded");
        assert_eq!(frames.last().unwrap()["offset"], expected.len() as u64);
    }
    assert_eq!(
        log_of(&http, &b.url, job, &auth).await,
        expected,
        "forwarded GET"
    );
    // An events stream relayed through a follower (a WebSocket forwarded to the leader) sees
    // the next run's events.
    let events = format!("{}/api/v1/events/stream", c.url.replacen("http", "ws", 1));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(events)
            .unwrap();
    request
        .headers_mut()
        .insert("authorization", auth.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the events stream opens through a follower");
    let (second, _) = trigger(&http, &b.url).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        use futures_util::StreamExt;
        let frame = tokio::time::timeout_at(deadline.into(), socket.next())
            .await
            .expect("the run's events arrive through the follower")
            .expect("the stream is open")
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = frame
            && text.contains("run_succeeded")
            && text.contains(&format!("\"run\":{second}"))
        {
            break;
        }
    }

    // The leader is killed: another replica leads within a few seconds, with a higher epoch,
    // and takes runs; the runs started before are there.
    a.kill();
    let killed = Instant::now();
    let (third, third_job) = trigger(&http, &b.url).await;
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "a new leader took runs after {took:?}"
    );
    let done = wait_for_state(&http, &c.url, third, "succeeded").await;
    assert_eq!(done["jobs"][0]["state"], "succeeded");
    let (view_b, view_c) = (
        cluster_of(&http, &b.url).await,
        cluster_of(&http, &c.url).await,
    );
    for key in ["replica", "epoch", "address"] {
        assert_eq!(
            view_b["leader"][key], view_c["leader"][key],
            "{view_b} {view_c}"
        );
    }
    assert!(view_b["leader"]["epoch"].as_u64().unwrap() > first_epoch);
    assert_ne!(view_b["leader"]["replica"], leader["replica"]);
    let third_log = log_of(&http, &b.url, third_job, &auth).await;
    assert_eq!(
        third_log,
        (1..=20)
            .map(|i| format!("line {i} of {third}\n"))
            .collect::<String>()
    );
    for id in [run, second] {
        wait_for_state(&http, &b.url, id, "succeeded").await;
    }

    // A client given every replica's address (the CLI's and the agent's `--server a,b,c`)
    // moves past the dead one, for plain requests and for a log followed over a WebSocket.
    let every = format!("{},{},{}", a.url, b.url, c.url);
    let client =
        hodei_api::client::Client::new(&hodei_api::client::Target::new(&every, Some(TOKEN.into())))
            .unwrap();
    let listed = client.run(third).await.expect("the next replica answers");
    assert_eq!(listed.state, "succeeded");
    assert_ne!(client.url(), a.url, "it moved on from the dead replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_is_deposed_stops_and_its_job_runs_once() {
    let db = TestCluster::shared().database();
    let data = scratch("replicas-deposed");
    let marks = data.join("marks");
    std::fs::create_dir_all(&data).unwrap();
    let mut a = replica(&data.join("a"), &db, "the leader", &[]);
    let b = replica(&data.join("b"), &db, "a follower of", &[]);
    hodei_api::client::install_crypto();
    let http = reqwest::Client::new();
    put_marking(&http, &b.url, &marks).await;
    let (before, _) = trigger(&http, &b.url).await;
    wait_for_state(&http, &b.url, before, "succeeded").await;

    // Paused past its lease (as `docker pause` or a stalled VM would): the follower takes
    // over and runs what is started meanwhile.
    let pid = a.child.id() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let (during, _) = trigger(&http, &b.url).await;
    wait_for_state(&http, &b.url, during, "succeeded").await;
    let view = cluster_of(&http, &b.url).await;
    assert_eq!(view["role"], "leader", "{view}");

    // Woken up, the old leader finds itself deposed and stops (exit 75); it ran nothing more.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let code = exit_code(
        &mut a,
        Duration::from_secs(20),
        "the deposed leader never stopped",
    )
    .await;
    assert_eq!(code, Some(75));
    let (after, _) = trigger(&http, &b.url).await;
    wait_for_state(&http, &b.url, after, "succeeded").await;
    assert_each_ran_once(&marks, &[before, during, after]);
}

/// A TCP link to the database that can be cut: every connection through it is dropped and new
/// ones are closed at once, as when a replica loses its network to the database.
struct DbLink {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

async fn db_link(target: u16) -> DbLink {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (cut, watch) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if *watch.borrow() {
                continue;
            }
            let mut watch = watch.clone();
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = watch.wait_for(|cut| *cut) => {}
                }
            });
        }
    });
    DbLink { port, cut }
}

/// A leader that loses the database stops before its lease can run out (three quarters of it
/// without a renewal): it must not go on driving jobs beside the replica that takes over. The
/// other replica leads, and every step runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_database_stops_before_its_lease_runs_out() {
    let db = TestCluster::shared().database();
    let data = scratch("replicas-cut");
    let marks = data.join("marks");
    std::fs::create_dir_all(&data).unwrap();
    // The leader reaches the database through a link the test cuts.
    let port: u16 = db
        .split_once("@127.0.0.1:")
        .and_then(|(_, rest)| rest.split_once('/'))
        .and_then(|(port, _)| port.parse().ok())
        .expect("the test database's URL names its port");
    let link = db_link(port).await;
    let through = db.replace(
        &format!("@127.0.0.1:{port}/"),
        &format!("@127.0.0.1:{}/", link.port),
    );
    let errors = data.join("a.stderr");
    let mut a = Server::start_saying(
        &data.join("a"),
        &["--database", &through],
        &[
            ("HODEI_LEADER_LEASE_MS", LEASE_MS),
            ("HODEI_BOOTSTRAP_TOKEN", TOKEN),
        ],
        Stdio::from(std::fs::File::create(&errors).unwrap()),
        "the leader",
    );
    let b = replica(&data.join("b"), &db, "a follower of", &[]);
    hodei_api::client::install_crypto();
    let http = reqwest::Client::new();
    put_marking(&http, &b.url, &marks).await;
    let (before, _) = trigger(&http, &b.url).await;
    wait_for_state(&http, &b.url, before, "succeeded").await;

    link.cut.send(true).unwrap();
    let code = exit_code(
        &mut a,
        Duration::from_secs(10),
        "a leader without its database went on leading",
    )
    .await;
    assert_eq!(code, Some(75));
    let said = std::fs::read_to_string(&errors).unwrap();
    assert!(
        said.contains("this replica no longer leads: its lease could not be renewed for"),
        "{said}"
    );
    // The other replica takes over and runs what comes.
    let (after, _) = trigger(&http, &b.url).await;
    wait_for_state(&http, &b.url, after, "succeeded").await;
    let view = cluster_of(&http, &b.url).await;
    assert_eq!(view["role"], "leader", "{view}");
    assert_each_ran_once(&marks, &[before, after]);
}
