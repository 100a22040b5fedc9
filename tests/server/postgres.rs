//! `hodei server --database postgres://...`: the whole server on PostgreSQL (a throwaway cluster
//! of this test binary, a database per test), through a SIGKILL and restarts; and the databases
//! it must refuse at start.

use std::process::{Command, Stdio};

use hodei_adapters::postgres::cluster::TestCluster;
use serde_json::{Value, json};

use super::common::{Server, scratch};
use super::{follow, get, log_of};

/// A server on `url`, once it leads (a restarted one may first follow its earlier life until
/// that one's lease runs out).
fn start(data: &std::path::Path, url: &str) -> Server {
    Server::start_saying(
        data,
        &["--database", url],
        &[("HODEI_LEADER_LEASE_MS", "1000")],
        Stdio::null(),
        "the leader",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_postgres_runs_follows_and_finds_everything_after_a_kill_and_restarts() {
    let cluster = TestCluster::shared();
    let url = cluster.database();
    let data = scratch("postgres-e2e");
    // The same run through a SIGKILL as on SQLite: the log followed live from PostgreSQL.
    let super::Followed {
        server,
        http,
        token,
        auth,
        run: id,
        job,
        log,
    } = super::followed_through_a_sigkill(&data, || start(&data, &url)).await;
    assert!(
        !data.join("hodei.db").exists(),
        "on PostgreSQL there is no database file in the data directory"
    );

    // Another kill, and the next life finds everything: the run (its verdict recorded, or
    // recorded now by the resumed run), its events, its log, the token; runs go on.
    drop(server);
    let server = start(&data, &url);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let run = get(&http, &format!("{}/api/v1/runs/{id}", server.url), &auth).await;
        if run["state"] == "succeeded" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run never succeeded (likely deadlocked): {run}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(log_of(&http, &server.url, job, &auth).await, log);
    let events = get(
        &http,
        &format!("{}/api/v1/events?after=0&limit=500", server.url),
        &auth,
    )
    .await;
    assert!(events.to_string().contains("run_succeeded"), "{events}");
    let (second, second_job) = {
        let run: Value = http
            .post(format!("{}/api/v1/pipelines/count/runs", server.url))
            .header("authorization", &auth)
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            run["id"].as_u64().unwrap(),
            run["jobs"][0]["id"].as_u64().unwrap(),
        )
    };
    assert!(second > id, "run ids go on from the database");
    let (frames, _) = follow(&server.url, &token, second_job, 0, |_, f| {
        f["type"] == "end"
    })
    .await;
    assert_eq!(frames.last().unwrap()["state"], "succeeded", "{frames:?}");
    // The rows are in PostgreSQL itself.
    let stored = cluster
        .psql(&url, "SELECT count(*) FROM runs WHERE state = 'succeeded'")
        .unwrap();
    assert_eq!(stored, "2");
}

/// Runs `hodei server` on a database that must be refused: its exit code and what it said.
fn refused(url: &str, test: &str) -> (Option<i32>, String) {
    let data = scratch(test);
    let out = Command::new(env!("CARGO_BIN_EXE_hodei"))
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--database",
            url,
            "--data",
        ])
        .arg(&data)
        .env_remove("HODEI_FAULT")
        .stdin(Stdio::null())
        .output()
        .expect("hodei runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn databases_that_cannot_be_used_are_refused_at_start_naming_the_url_without_its_password() {
    let cluster = TestCluster::shared();

    // Nothing listens there.
    let unreachable = "postgres://hodei:s3cret-pass@127.0.0.1:1/hodei";
    let (code, stderr) = refused(unreachable, "postgres-unreachable");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot connect to postgres://hodei:***@127.0.0.1:1/hodei"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret-pass"), "{stderr}");

    // A wrong password.
    let good = cluster.database();
    let wrong = good.replace(
        hodei_adapters::postgres::cluster::PASSWORD,
        "not-the-password",
    );
    let (code, stderr) = refused(&wrong, "postgres-password");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("refused the credentials"), "{stderr}");
    assert!(stderr.contains("postgres:***@127.0.0.1"), "{stderr}");
    assert!(!stderr.contains("not-the-password"), "{stderr}");

    // A schema that a newer Hodei made: refused before anything is migrated.
    let newer = cluster.database();
    cluster
        .psql(
            &newer,
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
             installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL, \
             checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL); \
             INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (1, 'initial', true, '\\x00', 0), (99, 'from the future', true, '\\x00', 0)",
        )
        .unwrap();
    let (code, stderr) = refused(&newer, "postgres-newer");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("migration 99, newer than this Hodei knows"),
        "{stderr}"
    );
    assert_eq!(
        cluster
            .psql(&newer, "SELECT to_regclass('runs') IS NULL")
            .unwrap(),
        "t",
        "nothing was migrated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_moved_from_sqlite_with_copy_store_finds_its_runs_logs_and_token() {
    let cluster = TestCluster::shared();
    let data = scratch("copy-store");
    let server = Server::start(&data);
    let token = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    hodei_api::client::install_crypto();
    let http = reqwest::Client::new();
    let auth = format!("Bearer {token}");
    let put = http
        .put(format!("{}/api/v1/pipelines/hello", server.url))
        .header("authorization", &auth)
        .header("content-type", "application/yaml")
        .body("name: hello\njobs:\n  greet: {steps: [{run: 'echo moved along'}]}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let run: Value = http
        .post(format!("{}/api/v1/pipelines/hello/runs", server.url))
        .header("authorization", &auth)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, job) = (
        run["id"].as_u64().unwrap(),
        run["jobs"][0]["id"].as_u64().unwrap(),
    );
    let (frames, _) = follow(&server.url, &token, job, 0, |_, f| f["type"] == "end").await;
    assert_eq!(frames.last().unwrap()["state"], "succeeded", "{frames:?}");
    let log = log_of(&http, &server.url, job, &auth).await;
    // Stopped with SIGTERM, as an operator would before moving the store.
    let mut server = server;
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let _ = server.child.wait();

    let url = cluster.database();
    let db = format!("sqlite:{}", data.join("hodei.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_hodei"))
        .args(["admin", "copy-store", "--from", &db, "--to", &url])
        .output()
        .expect("hodei runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Copied and verified"), "{stdout}");
    assert!(
        !stdout.contains(hodei_adapters::postgres::cluster::PASSWORD),
        "{stdout}"
    );

    // The same data directory (its key and token file), now with the record in PostgreSQL.
    let said = data.join("moved.log");
    let moved = Server::start_saying(
        &data,
        &["--database", &url],
        &[("HODEI_LEADER_LEASE_MS", "1000")],
        std::fs::File::create(&said).unwrap().into(),
        "the leader",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let run = get(&http, &format!("{}/api/v1/runs/{id}", moved.url), &auth).await;
        if run["state"] == "succeeded" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{run}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(log_of(&http, &moved.url, job, &auth).await, log);
    assert!(log.contains("moved along"), "{log}");
    // Stopped cleanly, it hands its leadership back: nothing holds the database.
    let mut moved = moved;
    unsafe { libc::kill(moved.child.id() as i32, libc::SIGTERM) };
    let stopped = moved.child.wait().unwrap();

    // Copying again into the same database is refused, and says so.
    let again = Command::new(env!("CARGO_BIN_EXE_hodei"))
        .args(["admin", "copy-store", "--from", &db, "--to", &url])
        .output()
        .expect("hodei runs");
    let stderr = String::from_utf8_lossy(&again.stderr);
    let why = || {
        format!(
            "{stderr}\nthe moved server ({stopped}) said:\n{}",
            std::fs::read_to_string(&said).unwrap_or_default()
        )
    };
    assert_eq!(again.status.code(), Some(2), "{}", why());
    assert!(stderr.contains("is not empty"), "{}", why());
}
