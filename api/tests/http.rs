//! The API over real HTTP: a server on a loopback port, a real SQLite store and log store in a
//! temporary directory, the local provider running real shell steps, and reqwest as the client.

use std::time::Duration;

use hodei_api::Limits;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[path = "support/git.rs"]
mod git_support;
#[path = "support/server.rs"]
mod support;

use support::{Server, start, start_with};

#[path = "http/artifacts.rs"]
mod artifacts;
mod conformance;
#[path = "http/console.rs"]
mod console;
#[path = "http/logs.rs"]
mod logs;
#[path = "http/repos.rs"]
mod repos;
#[path = "http/secrets.rs"]
mod secrets;

const HELLO: &str = "\
name: hello
parameters: { WHO: { default: world } }
jobs:
  greet:
    steps:
      - run: echo \"hello $WHO\"
      - run: echo second step
";

const SLOW: &str = "\
name: slow
jobs:
  wait:
    steps:
      - run: sleep 30
";

const GATED: &str = "\
name: gated
jobs:
  build:
    steps: [{ run: echo built }]
  deploy:
    needs: [build]
    approval: { role: admin }
    steps: [{ run: echo deployed }]
";

/// A response's status, headers and body.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}", self.text))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Asserts a problem+json answer with this status and code, and returns its body.
    fn problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(self.header("content-type"), "application/problem+json");
        let body = self.json();
        assert_eq!(body["code"], code, "{body}");
        assert_eq!(body["status"], status);
        assert_eq!(body["type"], format!("urn:hodei:problem:{code}"));
        assert!(
            body["title"].is_string() && body["detail"].is_string(),
            "{body}"
        );
        body
    }
}

impl Server {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, String)>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some((content_type, body)) = body {
            request = request.header("content-type", content_type).body(body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = tokio::time::timeout(Duration::from_secs(30), request.send())
            .await
            .expect("no answer within 30 s: likely deadlocked")
            .expect("the request is sent");
        Answer {
            status: response.status(),
            headers: response.headers().clone(),
            text: response.text().await.expect("a body"),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, Some(&self.admin), None, &[])
            .await
    }

    async fn apply(&self, yaml: &str) -> Answer {
        let name = yaml
            .lines()
            .find_map(|l| l.strip_prefix("name: "))
            .expect("a name");
        let body = Some(("application/yaml", yaml.to_owned()));
        let path = format!("/api/v1/pipelines/{name}");
        self.call(Method::PUT, &path, Some(&self.admin), body, &[])
            .await
    }

    async fn trigger(&self, pipeline: &str, body: Value) -> Answer {
        let path = format!("/api/v1/pipelines/{pipeline}/runs");
        let body = Some(("application/json", body.to_string()));
        self.call(Method::POST, &path, Some(&self.admin), body, &[])
            .await
    }

    /// Polls the run until `done` holds, failing after 30 s.
    async fn wait_run(&self, id: u64, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let run = self.get(&format!("/api/v1/runs/{id}")).await.json();
            if done(&run) {
                return run;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {id} did not get there within 30 s (likely deadlocked): {run}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn token(&self, name: &str, role: &str) -> (u64, String) {
        let body = Some((
            "application/json",
            json!({"name": name, "role": role}).to_string(),
        ));
        let answer = self
            .call(Method::POST, "/api/v1/tokens", Some(&self.admin), body, &[])
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        let created = answer.json();
        (
            created["id"].as_u64().unwrap(),
            created["token"].as_str().unwrap().to_owned(),
        )
    }
}

fn finished(run: &Value) -> bool {
    ["succeeded", "failed", "cancelled"].contains(&run["state"].as_str().unwrap_or_default())
}

#[actix_rt::test]
async fn applying_a_pipeline_stores_versions_and_an_invalid_one_answers_every_diagnostic() {
    let server = start().await;
    let first = server.apply(HELLO).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.json()["version"], 1);
    assert_eq!(first.json()["changed"], true);
    let same = server.apply(HELLO).await;
    assert_eq!(same.status, StatusCode::OK);
    assert_eq!(same.json()["changed"], false);
    let changed = server.apply(&HELLO.replace("second", "2nd")).await;
    assert_eq!(changed.status, StatusCode::CREATED);
    assert_eq!(changed.json()["version"], 2);

    let pipeline = server.get("/api/v1/pipelines/hello").await.json();
    assert_eq!(pipeline["version"], 2);
    assert!(pipeline["source"].as_str().unwrap().contains("2nd step"));
    let versions: Vec<u64> = pipeline["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2]);
    let list = server.get("/api/v1/pipelines").await.json();
    assert_eq!(list["items"][0]["name"], "hello");
    assert_eq!(list["items"][0]["latest"], 2);
    server
        .get("/api/v1/pipelines/nope")
        .await
        .problem(404, "not-found");

    // Two problems in one file: both come back, each with its place.
    let invalid = "name: broken\njobs:\n  a:\n    needs: [biuld]\n    stepz: []\n";
    let answer = server.apply(invalid).await;
    let problem = answer.problem(400, "invalid-pipeline");
    let diagnostics = problem["diagnostics"].as_array().unwrap();
    assert!(diagnostics.len() >= 2, "{problem}");
    for d in diagnostics {
        assert!(d["line"].as_u64().unwrap() >= 1, "{d}");
        assert!(d["column"].as_u64().unwrap() >= 1, "{d}");
        assert!(d["message"].is_string() && d["path"].is_string(), "{d}");
    }
    assert!(
        diagnostics.iter().any(|d| d["path"] == "jobs.a.stepz"),
        "{problem}"
    );

    let path = "/api/v1/pipelines/other";
    let body = Some(("application/yaml", HELLO.to_owned()));
    let mismatch = server
        .call(Method::PUT, path, Some(&server.admin), body, &[])
        .await;
    mismatch.problem(400, "invalid-argument");
    let form = Some(("application/x-www-form-urlencoded", HELLO.to_owned()));
    let path = "/api/v1/pipelines/hello";
    let wrong_type = server
        .call(Method::PUT, path, Some(&server.admin), form, &[])
        .await;
    wrong_type.problem(415, "unsupported-media-type");
}

#[actix_rt::test]
async fn a_triggered_run_finishes_and_its_log_reads_by_range() {
    let server = start().await;
    server.apply(HELLO).await;
    let created = server
        .trigger("hello", json!({"params": {"WHO": "api"}, "branch": "main"}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let run = created.json();
    let id = run["id"].as_u64().unwrap();
    assert_eq!(created.header("location"), format!("/api/v1/runs/{id}"));
    assert_eq!(run["branch"], "main");
    assert_eq!(run["params"]["WHO"], "api");

    let run = server.wait_run(id, finished).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    // Times are RFC 3339 in UTC with milliseconds: `2026-12-06T21:03:20.123Z`.
    let time = |value: &Value| -> hodei_domain::ids::Timestamp {
        let text = value.as_str().unwrap_or_else(|| panic!("a time: {value}"));
        assert!(
            text.len() == 24 && text.ends_with('Z') && text.as_bytes()[19] == b'.',
            "{text}"
        );
        hodei_domain::ids::Timestamp::parse_rfc3339(text).unwrap()
    };
    assert!(time(&run["finished"]) >= time(&run["created"]), "{run}");
    assert!(time(&run["started"]) <= time(&run["finished"]), "{run}");
    let job = &run["jobs"][0];
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["attempt"], 1);
    assert!(time(&job["started"]) <= time(&job["finished"]), "{job}");
    time(&job["since"]);
    let steps = job["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    for step in steps {
        assert_eq!(step["exit_code"], 0, "{step}");
        assert_eq!(step["state"], "succeeded");
        time(&step["started"]);
    }

    // A finished run is answered from memory from now on, the same view, as JSON.
    for _ in 0..2 {
        let again = server.get(&format!("/api/v1/runs/{id}")).await;
        assert_eq!(again.header("content-type"), "application/json");
        assert_eq!(again.json(), run);
    }

    let job_id = job["id"].as_u64().unwrap();
    let one = server.get(&format!("/api/v1/jobs/{job_id}")).await.json();
    assert_eq!(one["run"], id);
    assert_eq!(one["name"], "greet");

    let log_path = format!("/api/v1/jobs/{job_id}/log");
    let full = server.get(&log_path).await;
    assert_eq!(full.status, StatusCode::OK);
    assert!(full.text.contains("hello api\n"), "{}", full.text);
    assert!(full.text.contains("second step\n"), "{}", full.text);
    let length = full.text.len();
    assert_eq!(full.header("hodei-log-length"), length.to_string());

    let start = full.text.find("hello api").unwrap();
    let range = format!("bytes={start}-{}", start + 4);
    let part = server
        .call(
            Method::GET,
            &log_path,
            Some(&server.admin),
            None,
            &[("range", &range)],
        )
        .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.text, "hello");
    assert_eq!(
        part.header("content-range"),
        format!("bytes {start}-{}/{length}", start + 4)
    );
    let query = server
        .get(&format!("{log_path}?from={}&to={}", start + 6, start + 9))
        .await;
    assert_eq!(query.status, StatusCode::OK);
    assert_eq!(query.text, "api");
    let beyond = format!("bytes={}-", length + 10);
    let answer = server
        .call(
            Method::GET,
            &log_path,
            Some(&server.admin),
            None,
            &[("range", &beyond)],
        )
        .await;
    answer.problem(416, "range-not-satisfiable");
    assert_eq!(answer.header("content-range"), format!("bytes */{length}"));
    server
        .get("/api/v1/jobs/999999/log")
        .await
        .problem(404, "not-found");

    let events = server.get("/api/v1/events?limit=500").await.json();
    let kinds: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"run_started"));
    assert_eq!(kinds.last(), Some(&"run_succeeded"));
    for item in events["items"].as_array().unwrap() {
        time(&item["event"]["at"]);
    }
    let last = events["next_after"].as_u64().unwrap();
    let after = server
        .get(&format!("/api/v1/events?after={last}"))
        .await
        .json();
    assert!(after["items"].as_array().unwrap().is_empty());

    let unknown = server
        .trigger("hello", json!({"params": {"WHOM": "x"}}))
        .await;
    let problem = unknown.problem(400, "invalid-parameters");
    assert!(
        problem["errors"][0].as_str().unwrap().contains("WHO"),
        "{problem}"
    );
}

#[actix_rt::test]
async fn runs_page_newest_first_by_cursor_and_filter() {
    let server = start().await;
    server.apply(HELLO).await;
    let mut ids = Vec::new();
    for branch in ["main", "dev", "main"] {
        let run = server
            .trigger("hello", json!({"branch": branch}))
            .await
            .json();
        ids.push(run["id"].as_u64().unwrap());
    }
    let page = server.get("/api/v1/runs?limit=2").await.json();
    let first: Vec<u64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(first, [ids[2], ids[1]]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = server
        .get(&format!("/api/v1/runs?limit=2&cursor={cursor}"))
        .await
        .json();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["items"][0]["id"], ids[0]);
    assert!(rest["next_cursor"].is_null());

    let main = server
        .get("/api/v1/runs?pipeline=hello&branch=main")
        .await
        .json();
    assert_eq!(main["items"].as_array().unwrap().len(), 2);
    for id in &ids {
        server.wait_run(*id, finished).await;
    }
    let succeeded = server.get("/api/v1/runs?status=succeeded").await.json();
    assert_eq!(succeeded["items"].as_array().unwrap().len(), 3);
    server
        .get("/api/v1/runs?status=done")
        .await
        .problem(400, "invalid-argument");
    server
        .get("/api/v1/runs?cursor=abc")
        .await
        .problem(400, "invalid-argument");
    server
        .get("/api/v1/runs?limit=0")
        .await
        .problem(400, "invalid-argument");
    server
        .get("/api/v1/runs?colour=red")
        .await
        .problem(400, "invalid-argument");
}

#[actix_rt::test]
async fn cancel_stops_a_running_run_and_a_finished_run_answers_409() {
    let server = start().await;
    server.apply(SLOW).await;
    let id = server.trigger("slow", json!({})).await.json()["id"]
        .as_u64()
        .unwrap();
    server
        .wait_run(id, |run| run["jobs"][0]["state"] == "running")
        .await;
    let path = format!("/api/v1/runs/{id}/cancel");
    let answer = server
        .call(Method::POST, &path, Some(&server.admin), None, &[])
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    let run = server.wait_run(id, finished).await;
    assert_eq!(run["state"], "cancelled", "{run}");
    assert_eq!(run["jobs"][0]["state"], "cancelled");
    let again = server
        .call(Method::POST, &path, Some(&server.admin), None, &[])
        .await;
    let problem = again.problem(409, "illegal-transition");
    assert!(
        problem["detail"].as_str().unwrap().contains("cancelled"),
        "{problem}"
    );
    server
        .call(
            Method::POST,
            "/api/v1/runs/424242/cancel",
            Some(&server.admin),
            None,
            &[],
        )
        .await
        .problem(404, "not-found");
}

#[actix_rt::test]
async fn tokens_carry_roles_and_a_revoked_token_is_refused() {
    let server = start().await;
    server.apply(HELLO).await;
    let none = server
        .call(Method::GET, "/api/v1/runs", None, None, &[])
        .await;
    none.problem(401, "unauthenticated");
    assert_eq!(none.header("www-authenticate"), "Bearer");
    server
        .call(
            Method::GET,
            "/api/v1/runs",
            Some("hodei_not-a-token"),
            None,
            &[],
        )
        .await
        .problem(401, "unauthenticated");

    let (viewer_id, viewer) = server.token("dashboard", "viewer").await;
    let (_, operator) = server.token("ci", "operator").await;
    let listed = server.get("/api/v1/tokens").await.json();
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin (bootstrap)", "dashboard", "ci"]);
    assert!(
        !listed.to_string().contains(&viewer),
        "secrets are never listed"
    );

    let read = server
        .call(Method::GET, "/api/v1/runs", Some(&viewer), None, &[])
        .await;
    assert_eq!(read.status, StatusCode::OK);
    let body = Some(("application/json", "{}".to_owned()));
    let trigger = "/api/v1/pipelines/hello/runs";
    let refused = server
        .call(Method::POST, trigger, Some(&viewer), body.clone(), &[])
        .await;
    let problem = refused.problem(403, "forbidden");
    assert!(
        problem["detail"].as_str().unwrap().contains("operator"),
        "{problem}"
    );
    let allowed = server
        .call(Method::POST, trigger, Some(&operator), body.clone(), &[])
        .await;
    assert_eq!(allowed.status, StatusCode::CREATED, "{}", allowed.text);
    server
        .call(Method::GET, "/api/v1/tokens", Some(&operator), None, &[])
        .await
        .problem(403, "forbidden");
    let bad_role = Some((
        "application/json",
        json!({"name": "x", "role": "root"}).to_string(),
    ));
    server
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&server.admin),
            bad_role,
            &[],
        )
        .await
        .problem(400, "invalid-json");

    let revoke = format!("/api/v1/tokens/{viewer_id}");
    let revoked = server
        .call(Method::DELETE, &revoke, Some(&server.admin), None, &[])
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let refused = server
        .call(Method::GET, "/api/v1/runs", Some(&viewer), None, &[])
        .await;
    let problem = refused.problem(401, "unauthenticated");
    assert!(
        problem["detail"].as_str().unwrap().contains("revoked"),
        "{problem}"
    );
    server
        .call(Method::DELETE, &revoke, Some(&server.admin), None, &[])
        .await
        .problem(404, "not-found");
}

/// Reads `socket` until the server closes it for a revoked token; fails after `within`.
async fn closed_for_revocation(socket: &mut Socket, what: &str, within: Duration) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .unwrap_or_else(|_| panic!("{what}: still open {within:?} after the revocation"));
        match next {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(frame.code, CloseCode::Policy, "{what}: {frame:?}");
                assert!(frame.reason.contains("revoked"), "{what}: {frame:?}");
                return;
            }
            Some(Ok(Message::Close(None))) | None => panic!("{what}: closed without a reason"),
            Some(Ok(_)) => {}
            Some(Err(err)) => panic!("{what}: the stream broke: {err}"),
        }
    }
}

#[actix_rt::test]
async fn revoking_a_token_ends_its_open_streams_within_a_second() {
    use futures_util::StreamExt;
    use hodei_domain::ports::TokenStore;
    use tokio_tungstenite::tungstenite::Message;
    let server = start().await;
    server.apply(SLOW).await;
    let run = server.trigger("slow", json!({})).await.json();
    let (id, job) = (
        run["id"].as_u64().unwrap(),
        run["jobs"][0]["id"].as_u64().unwrap(),
    );
    let (viewer_id, viewer) = server.token("wall", "viewer").await;
    let paths = [
        "/api/v1/events/stream".to_owned(),
        format!("/api/v1/runs/{id}/events/stream"),
        format!("/api/v1/jobs/{job}/log/stream?from=0"),
    ];
    let mut sockets = Vec::new();
    for path in &paths {
        sockets.push((path, ws_connect(&server, path, &viewer).await));
    }
    let mut admin = ws_connect(&server, "/api/v1/events/stream", &server.admin).await;

    let revoke = format!("/api/v1/tokens/{viewer_id}");
    let revoked = server
        .call(Method::DELETE, &revoke, Some(&server.admin), None, &[])
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    for (path, socket) in &mut sockets {
        closed_for_revocation(socket, path, Duration::from_secs(1)).await;
    }

    // Revoked in the store by someone else (another replica): the sweep notices.
    let (other_id, other) = server.token("wall 2", "viewer").await;
    let mut socket = ws_connect(&server, &paths[0], &other).await;
    assert!(
        server
            .store
            .revoke_token(other_id, hodei_domain::ids::Timestamp(1))
            .await
            .unwrap()
    );
    closed_for_revocation(&mut socket, "revoked in the store", Duration::from_secs(1)).await;

    // The admin's stream is untouched.
    server.apply(HELLO).await;
    server.trigger("hello", json!({})).await;
    let frame = tokio::time::timeout(Duration::from_secs(30), admin.next())
        .await
        .expect("no event within 30 s: likely deadlocked");
    assert!(
        matches!(frame, Some(Ok(Message::Text(_)))),
        "the admin's stream still delivers: {frame:?}"
    );
}

#[actix_rt::test]
async fn trigger_values_no_step_could_be_given_are_refused() {
    let server = start().await;
    server.apply(HELLO).await;
    let refused = [
        (json!({"branch": "ma\u{0}in"}), "`branch`", "NUL"),
        (json!({"tag": "v1\u{0}"}), "`tag`", "NUL"),
        (json!({"env": {"A": "x\u{0}y"}}), "`env.A`", "NUL"),
        (json!({"params": {"WHO": "\u{0}"}}), "`params.WHO`", "NUL"),
        (
            json!({"params": {"W\u{0}HO": "x"}}),
            "`params.W\\0HO`",
            "name",
        ),
        (
            json!({"params": {"WHO": "w".repeat(128 * 1024 - 4)}}),
            "`params.WHO`",
            "131067",
        ),
        (
            json!({"branch": "b".repeat(200_000)}),
            "`branch`",
            "200000 bytes",
        ),
    ];
    for (body, field, says) in refused {
        let problem = server
            .trigger("hello", body)
            .await
            .problem(400, "invalid-argument");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(field) && detail.contains(says), "{detail}");
        assert!(
            detail.len() < 1000,
            "the value is described, not echoed: {detail}"
        );
    }
    // The longest value that fits one environment variable reaches the step whole.
    let longest = "w".repeat(128 * 1024 - "WHO".len() - 2);
    let run = server
        .trigger("hello", json!({"params": {"WHO": longest}}))
        .await;
    assert_eq!(run.status, StatusCode::CREATED, "{}", run.text);
    let run = run.json();
    let done = server.wait_run(run["id"].as_u64().unwrap(), finished).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let job = run["jobs"][0]["id"].as_u64().unwrap();
    let log = server.get(&format!("/api/v1/jobs/{job}/log")).await.text;
    assert!(
        log.contains(&format!("hello {longest}")),
        "the value reached the step"
    );
}

#[actix_rt::test]
async fn a_body_that_trickles_in_is_refused_with_408_and_the_connection_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start_with(Limits {
        body_timeout: Duration::from_secs(1),
        ..Limits::default()
    })
    .await;
    let address = server.base.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "PUT /api/v1/pipelines/hello HTTP/1.1\r\nHost: {address}\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/yaml\r\n\
         Content-Length: {}\r\n\r\n",
        server.admin,
        HELLO.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&HELLO.as_bytes()[..10]).await.unwrap();
    // The rest never comes; the answer does, and then the end of the connection.
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut answer))
        .await
        .expect("no answer and no close within 20 s: a slow body is never timed out")
        .expect("the answer is read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("request-timeout") && answer.contains("10 bytes"),
        "{answer}"
    );
    // Nothing was applied.
    server
        .get("/api/v1/pipelines/hello")
        .await
        .problem(404, "not-found");
}

#[actix_rt::test]
async fn token_names_are_visible_and_tell_tokens_apart() {
    let server = start().await;
    let create = |name: &str| {
        let body = Some((
            "application/json",
            json!({"name": name, "role": "admin"}).to_string(),
        ));
        server.call(
            Method::POST,
            "/api/v1/tokens",
            Some(&server.admin),
            body,
            &[],
        )
    };
    for hidden in [
        "admin\u{202E}nimda",
        "ci\u{200B}bot",
        "\u{2066}ci\u{2069}",
        "bot\u{FEFF}",
        "a\u{0007}b",
        "\u{E0061}dmin",
    ] {
        let problem = create(hidden).await.problem(400, "invalid-argument");
        assert!(
            problem["detail"].as_str().unwrap().contains("U+"),
            "{problem}"
        );
    }
    for taken in ["admin (bootstrap)", "  ADMIN (Bootstrap) "] {
        let problem = create(taken).await.problem(409, "conflict");
        assert!(
            problem["detail"].as_str().unwrap().contains("token 1"),
            "{problem}"
        );
    }
    assert_eq!(create("ci-bot").await.status, StatusCode::CREATED);
    create("CI-bot").await.problem(409, "conflict");
    // Requests at once for one name: one token gets it.
    let racing = futures_util::future::join_all((0..8).map(|_| create("racer"))).await;
    let created = racing
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "one of the concurrent requests gets the name");
    // A revoked token's name is free again; names in any script are welcome.
    let (id, _) = server.token("kaixo mundua ☀ ñ 日本", "viewer").await;
    let revoke = format!("/api/v1/tokens/{id}");
    server
        .call(Method::DELETE, &revoke, Some(&server.admin), None, &[])
        .await;
    assert_eq!(
        create("kaixo mundua ☀ ñ 日本").await.status,
        StatusCode::CREATED
    );
}

#[actix_rt::test]
async fn client_mistakes_are_4xx_problems_never_5xx() {
    let server = start_with(Limits {
        max_body: 2048,
        ..Limits::default()
    })
    .await;
    let big = format!("{HELLO}# {}\n", "x".repeat(4096));
    server.apply(&big).await.problem(413, "payload-too-large");
    server.apply(HELLO).await;
    let json_path = "/api/v1/pipelines/hello/runs";
    let huge = Some((
        "application/json",
        format!("{{\"branch\": \"{}\"}}", "b".repeat(4096)),
    ));
    server
        .call(Method::POST, json_path, Some(&server.admin), huge, &[])
        .await
        .problem(413, "payload-too-large");
    let broken = Some(("application/json", "{\"params\": ".to_owned()));
    server
        .call(Method::POST, json_path, Some(&server.admin), broken, &[])
        .await
        .problem(400, "invalid-json");
    let typo = Some(("application/json", "{\"parms\": {}}".to_owned()));
    server
        .call(Method::POST, json_path, Some(&server.admin), typo, &[])
        .await
        .problem(400, "invalid-json");
    let text = Some(("text/plain", "{}".to_owned()));
    server
        .call(Method::POST, json_path, Some(&server.admin), text, &[])
        .await
        .problem(415, "unsupported-media-type");
    server
        .trigger("hello", json!({"event": "sneeze"}))
        .await
        .problem(400, "invalid-argument");
    server
        .trigger("hello", json!({"env": {"HODEI_X": "1"}}))
        .await
        .problem(400, "invalid-argument");
    server
        .trigger("nope", json!({}))
        .await
        .problem(404, "not-found");
    server
        .get("/api/v1/runs/abc")
        .await
        .problem(400, "invalid-argument");
    server
        .get("/api/v1/runs/99999999999999999999999")
        .await
        .problem(400, "invalid-argument");
    server
        .get("/api/v1/runs/77")
        .await
        .problem(404, "not-found");
    server.get("/api/v1/nothing").await.problem(404, "no-route");
    server
        .call(
            Method::DELETE,
            "/api/v1/runs",
            Some(&server.admin),
            None,
            &[],
        )
        .await
        .problem(405, "method-not-allowed");
    let binary = Some(("application/yaml", "\u{0}\u{1}".to_owned()));
    server
        .call(
            Method::PUT,
            "/api/v1/pipelines/hello",
            Some(&server.admin),
            binary,
            &[],
        )
        .await
        .problem(400, "invalid-pipeline");
}

#[actix_rt::test]
async fn probes_and_metrics_need_no_token_and_metrics_count_what_happened() {
    let server = start().await;
    let health = server.call(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!(health.status, StatusCode::OK);
    let ready = server.call(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!(ready.json()["checks"]["store"], "ok");
    assert_eq!(
        ready.json()["checks"]["docker"],
        "unavailable (its jobs wait): the engine is away (scripted)"
    );

    server.apply(HELLO).await;
    let id = server.trigger("hello", json!({})).await.json()["id"]
        .as_u64()
        .unwrap();
    server.wait_run(id, finished).await;
    let metrics = server.call(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.text;
    for expected in [
        "hodei_http_requests_total{method=\"PUT\",route=\"/api/v1/pipelines/{name}\",status=\"201\"}",
        "hodei_runs_total{outcome=\"succeeded\"}",
        "hodei_jobs_total{outcome=\"succeeded\"}",
        "hodei_steps_total{outcome=\"succeeded\"}",
        "hodei_queue_jobs{state=\"queued\"}",
        "hodei_actor_restarts_total{actor=\"orchestrator\"}",
        "hodei_http_request_duration_seconds",
        "hodei_provider_up{provider=\"docker\"} 0",
        "hodei_job_wait_seconds",
        "hodei_job_run_seconds{outcome=\"succeeded\"",
        "hodei_log_bytes_total",
        "hodei_workers{state=\"ready\"}",
        "hodei_websocket_subscribers",
    ] {
        assert!(text.contains(expected), "no `{expected}` in:\n{text}");
    }
}

#[actix_rt::test]
async fn the_openapi_document_lists_every_route_and_every_route_answers() {
    let server = start().await;
    server
        .call(Method::GET, "/api/v1/openapi.json", None, None, &[])
        .await
        .problem(401, "unauthenticated");
    let doc = server.get("/api/v1/openapi.json").await.json();
    assert_eq!(doc["openapi"], "3.1.0");
    // Instants are date-time strings; durations stay numbers.
    let schemas = &doc["components"]["schemas"];
    for (schema, field) in [
        ("RunView", "created"),
        ("RunView", "started"),
        ("JobView", "finished"),
        ("StepView", "since"),
        ("QueueItem", "queued_at"),
        ("ApprovalItem", "waiting_since"),
        ("TokenView", "created"),
    ] {
        let property = &schemas[schema]["properties"][field];
        assert_eq!(
            property["format"], "date-time",
            "{schema}.{field}: {property}"
        );
        let types = property["type"].to_string();
        assert!(types.contains("string"), "{schema}.{field}: {property}");
    }
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let Ok(method) = Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            operations += 1;
            let concrete = path
                .replace("{name}", "nope")
                .replace("{id}", "999999")
                .replace("{job}", "999999")
                .replace("{version}", "1");
            let answer = server
                .call(method.clone(), &concrete, Some(&server.admin), None, &[])
                .await;
            assert_ne!(
                answer.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            if answer.status == StatusCode::NOT_FOUND {
                assert_ne!(
                    answer.json()["code"],
                    "no-route",
                    "{method} {path} is not routed"
                );
            }
            assert!(
                !answer.status.is_server_error(),
                "{method} {path}: {}",
                answer.text
            );
            let secured = operation["security"]
                .as_array()
                .is_some_and(|s| !s.is_empty());
            let anonymous = server
                .call(method.clone(), &concrete, None, None, &[])
                .await;
            assert_eq!(
                anonymous.status == StatusCode::UNAUTHORIZED,
                secured,
                "{method} {path}: {}",
                anonymous.text
            );
        }
    }
    assert_eq!(operations, 58, "a route was added: document and test it");
    // Routes come from the document: what it does not list does not exist.
    for undocumented in ["/api/v1/agentz", "/api/v1/runs/1/logs", "/api/v1"] {
        server.get(undocumented).await.problem(404, "no-route");
    }
}

#[actix_rt::test]
async fn the_live_server_answers_as_its_openapi_document_says() {
    let server = start().await;
    server.apply(HELLO).await;
    server.apply(GATED).await;
    let hello = server.trigger("hello", json!({})).await.json();
    let run = hello["id"].as_u64().unwrap();
    server.wait_run(run, finished).await;
    let gated = server.trigger("gated", json!({})).await.json();
    let gated_run = gated["id"].as_u64().unwrap();
    let gated_run = server
        .wait_run(gated_run, |r| r["jobs"][1]["state"] == "waiting_approval")
        .await;
    let gate = gated_run["jobs"][1]["id"].as_u64().unwrap();
    let job = hello["jobs"][0]["id"].as_u64().unwrap();
    let (token, _) = server.token("to revoke", "viewer").await;
    let doc = server.get("/api/v1/openapi.json").await.json();

    // An answer checked against the document, and its status.
    let exchange = |method: Method,
                    template: String,
                    path: String,
                    token: Option<String>,
                    body: Option<(&'static str, String)>| {
        let server = &server;
        let doc = &doc;
        async move {
            let answer = server
                .call(method.clone(), &path, token.as_deref(), body, &[])
                .await;
            let content_type = answer.header("content-type").to_owned();
            conformance::check(
                doc,
                method.as_str(),
                &template,
                answer.status.as_u16(),
                &content_type,
                &answer.text,
            )
            .unwrap_or_else(|err| panic!("{path}: {err}"));
            answer.status
        }
    };
    let mut checked = 0;
    let paths = doc["paths"].as_object().unwrap().clone();
    for (template, item) in &paths {
        for (method, operation) in item.as_object().unwrap() {
            let Ok(method) = Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            let id = if template.starts_with("/api/v1/runs/") {
                run.to_string()
            } else if template == "/api/v1/jobs/{id}/approve" {
                gate.to_string()
            } else if template.starts_with("/api/v1/jobs/") {
                job.to_string()
            } else if template.starts_with("/api/v1/tokens/") {
                token.to_string()
            } else if template.starts_with("/api/v1/agent/jobs/") {
                job.to_string()
            } else if template.starts_with("/api/v1/agent-tokens/") {
                "1".to_owned()
            } else {
                "local".to_owned()
            };
            let path = template
                .replace("{name}", "hello")
                .replace("{id}", &id)
                .replace("{job}", &job.to_string())
                .replace("{scope}", "pipeline")
                .replace("{owner}", "hello");
            let required = operation["requestBody"]["required"] == true;
            let yaml = operation["requestBody"]["content"]["application/yaml"].is_object();
            // A body of the media type the document names, with what the operation takes.
            let body = match (required, yaml) {
                (false, _) => None,
                (true, true) => Some(("application/yaml", HELLO.to_owned())),
                (true, false) => {
                    let value = if template.starts_with("/api/v1/repos/") {
                        json!({
                            "forge": "gitea",
                            "clone_url": "http://127.0.0.1:9/conformance.git",
                            "webhook_secret": "hook"
                        })
                    } else if template.starts_with("/api/v1/secrets/") {
                        json!({"value": "s3cret-conformance"})
                    } else if template == "/api/v1/agent-tokens" {
                        json!({"name": format!("conformance {checked}"), "expires_in": 60})
                    } else if template == "/api/v1/agent/register" {
                        json!({"token": "hodei_unknown", "name": "conformance"})
                    } else if template == "/api/v1/agent/poll" {
                        json!({"slots": 1, "room": false})
                    } else if template == "/api/v1/agent/leaving" {
                        json!({"gone": false})
                    } else if template == "/api/v1/agent/heartbeat" {
                        json!({"jobs": []})
                    } else if template.ends_with("/hand-back") {
                        json!({"epoch": 1})
                    } else if template.starts_with("/api/v1/agent/jobs/") {
                        json!({"epoch": 1, "seq": 0, "events": []})
                    } else {
                        json!({"name": format!("conformance {checked}"), "role": "viewer"})
                    };
                    Some(("application/json", value.to_string()))
                }
            };
            let secured = operation["security"]
                .as_array()
                .is_some_and(|s| !s.is_empty());
            if secured {
                let status = exchange(
                    method.clone(),
                    template.clone(),
                    path.clone(),
                    None,
                    body.clone(),
                )
                .await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
            }
            // The required query parameters, with a value their schema takes (a required text
            // such as a search's `q`), so that each other parameter is tried on its own.
            let required: Vec<(String, String)> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query" && p["required"] == true)
                .map(|p| (p["name"].as_str().unwrap().to_owned(), "x".to_owned()))
                .collect();
            let with_required = |path: &str, skip: &str| -> String {
                let mut path = path.to_owned();
                for (name, value) in required.iter().filter(|(n, _)| n != skip) {
                    let join = if path.contains('?') { '&' } else { '?' };
                    path.push_str(&format!("{join}{name}={value}"));
                }
                path
            };
            // With every query parameter at its bounds and beyond, and each of its words.
            for param in operation["parameters"].as_array().into_iter().flatten() {
                if param["in"] != "query" {
                    continue;
                }
                let name = param["name"].as_str().unwrap();
                let schema = &param["schema"];
                let mut cases = Vec::new();
                if let (Some(min), Some(max)) =
                    (schema["minimum"].as_i64(), schema["maximum"].as_i64())
                {
                    cases.extend(
                        [(min, true), (max, true), (min - 1, false), (max + 1, false)]
                            .map(|(v, ok)| (v.to_string(), ok)),
                    );
                } else if schema["type"]
                    .as_array()
                    .is_some_and(|t| t.contains(&json!("integer")))
                    || schema["type"] == "integer"
                {
                    assert!(
                        name != "limit",
                        "{method} {path}: `limit` without bounds: {param}"
                    );
                }
                for word in schema["enum"].as_array().into_iter().flatten() {
                    if let Some(word) = word.as_str() {
                        cases.push((word.to_owned(), true));
                    }
                }
                if schema["enum"].is_array() {
                    cases.push(("bogus".to_owned(), false));
                }
                for (value, ok) in cases {
                    let path = with_required(&format!("{path}?{name}={value}"), name);
                    let status = exchange(
                        method.clone(),
                        template.clone(),
                        path.clone(),
                        Some(server.admin.clone()),
                        body.clone(),
                    )
                    .await;
                    assert_eq!(status.is_success(), ok, "{method} {path}: {status}");
                    if !ok {
                        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}");
                    }
                }
            }
            // A path segment that is not what the document says.
            if template.contains("{id}")
                && operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"] == "id" && p["schema"]["type"] == "integer")
            {
                let bad = template.replace("{id}", "x");
                let status = exchange(
                    method.clone(),
                    template.clone(),
                    bad.clone(),
                    Some(server.admin.clone()),
                    body.clone(),
                )
                .await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {bad}");
            }
            // The call itself, as a client that follows the document would make it.
            let status = exchange(
                method.clone(),
                template.clone(),
                path.clone(),
                Some(server.admin.clone()),
                body,
            )
            .await;
            assert!(!status.is_server_error(), "{method} {path}: {status}");
            checked += 1;
        }
    }
    assert_eq!(checked, 58, "every operation was held against the document");
    // The trigger's body is optional, as documented: none takes every default.
    let trigger = &doc["paths"]["/api/v1/pipelines/{name}/runs"]["post"];
    assert_ne!(trigger["requestBody"]["required"], true, "{trigger}");
}

#[actix_rt::test]
async fn a_gated_job_waits_for_an_approval_by_the_role_its_gate_names() {
    let server = start().await;
    let applied = server.apply(GATED).await;
    assert_eq!(applied.status, StatusCode::CREATED, "{}", applied.text);
    let id = server.trigger("gated", json!({})).await.json()["id"]
        .as_u64()
        .unwrap();
    let run = server
        .wait_run(id, |run| run["jobs"][1]["state"] == "waiting_approval")
        .await;
    assert_eq!(run["jobs"][0]["state"], "succeeded", "{run}");
    let build = run["jobs"][0]["id"].as_u64().unwrap();
    let deploy = run["jobs"][1]["id"].as_u64().unwrap();
    // Not in the scheduler's queue, but in the queue's view, with who may approve it.
    let queue = server.get("/api/v1/queue").await.json();
    assert_eq!(queue["total"], 0, "{queue}");
    let waiting = &queue["awaiting_approval"];
    assert_eq!(waiting.as_array().unwrap().len(), 1, "{queue}");
    assert_eq!(waiting[0]["job"], deploy);
    assert_eq!(waiting[0]["run"], id);
    assert_eq!(waiting[0]["pipeline"], "gated");
    assert_eq!(waiting[0]["name"], "deploy");
    assert_eq!(waiting[0]["approver"], "admin");
    let other = server
        .get(&format!("/api/v1/queue?run={}", id + 1))
        .await
        .json();
    assert_eq!(other["awaiting_approval"], json!([]), "{other}");

    let (_, operator) = server.token("release-bot", "operator").await;
    let path = format!("/api/v1/jobs/{deploy}/approve");
    let refused = server
        .call(Method::POST, &path, Some(&operator), None, &[])
        .await;
    let problem = refused.problem(403, "forbidden");
    assert!(
        problem["detail"].as_str().unwrap().contains("admin"),
        "{problem}"
    );
    let not_gated = format!("/api/v1/jobs/{build}/approve");
    server
        .call(Method::POST, &not_gated, Some(&server.admin), None, &[])
        .await
        .problem(409, "illegal-transition");

    let approved = server
        .call(Method::POST, &path, Some(&server.admin), None, &[])
        .await;
    assert_eq!(approved.status, StatusCode::ACCEPTED, "{}", approved.text);
    let run = server.wait_run(id, finished).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let queue = server.get("/api/v1/queue").await.json();
    assert_eq!(queue["awaiting_approval"], json!([]), "{queue}");
    let events = server.get("/api/v1/events?limit=500").await.json();
    let approval = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"]["type"] == "job_approved")
        .expect("the approval is in the audit trail");
    assert_eq!(approval["event"]["by"], "admin (bootstrap)");
    server
        .call(Method::POST, &path, Some(&server.admin), None, &[])
        .await
        .problem(409, "illegal-transition");
}

#[actix_rt::test]
async fn a_drained_worker_takes_nothing_and_the_queue_says_why_each_job_waits() {
    let server = start().await;
    let workers = server.get("/api/v1/workers").await;
    assert_eq!(workers.status, StatusCode::OK, "{}", workers.text);
    let local = &workers.json()["items"][0];
    assert_eq!(local["id"], "local");
    assert_eq!(local["state"], "ready");
    assert_eq!(local["slots"], 4);

    let (_, viewer) = server.token("wall-screen", "viewer").await;
    server
        .call(
            Method::POST,
            "/api/v1/workers/local/drain",
            Some(&viewer),
            None,
            &[],
        )
        .await
        .problem(403, "forbidden");
    server
        .call(
            Method::POST,
            "/api/v1/workers/nowhere/drain",
            Some(&server.admin),
            None,
            &[],
        )
        .await
        .problem(404, "not-found");
    let drained = server
        .call(
            Method::POST,
            "/api/v1/workers/local/drain",
            Some(&server.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(drained.status, StatusCode::NO_CONTENT, "{}", drained.text);
    assert_eq!(
        server.get("/api/v1/workers").await.json()["items"][0]["state"],
        "draining"
    );

    server.apply(HELLO).await;
    let id = server.trigger("hello", json!({})).await.json()["id"]
        .as_u64()
        .unwrap();
    // The job waits, and the queue says why.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let queue = loop {
        let queue = server
            .call(Method::GET, "/api/v1/queue", Some(&viewer), None, &[])
            .await;
        assert_eq!(queue.status, StatusCode::OK, "{}", queue.text);
        let queue = queue.json();
        if queue["total"] == 1 {
            break queue;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never queued: {queue}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let waiting = &queue["items"][0];
    assert_eq!(waiting["position"], 0);
    assert_eq!(waiting["run"], id);
    assert_eq!(waiting["pipeline"], "hello");
    assert_eq!(waiting["candidates"], json!([]));
    assert_eq!(
        waiting["reason"],
        "every worker with the labels is unavailable (1 draining, 0 offline)"
    );
    assert_eq!(
        server.get(&format!("/api/v1/runs/{id}")).await.json()["state"],
        "running"
    );

    let undrained = server
        .call(
            Method::POST,
            "/api/v1/workers/local/undrain",
            Some(&server.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(undrained.status, StatusCode::NO_CONTENT);
    let run = server.wait_run(id, finished).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(server.get("/api/v1/queue").await.json()["total"], 0);
    server
        .call(
            Method::GET,
            "/api/v1/queue?limit=0",
            Some(&viewer),
            None,
            &[],
        )
        .await
        .problem(400, "invalid-argument");
}

#[actix_rt::test]
async fn a_rerun_runs_the_same_version_with_the_same_parameters() {
    let server = start().await;
    server.apply(HELLO).await;
    let first = server
        .trigger("hello", json!({"params": {"WHO": "kaixo"}}))
        .await
        .json()["id"]
        .as_u64()
        .unwrap();
    server.wait_run(first, finished).await;
    // A newer version exists: the rerun keeps the one the run was made of.
    let changed = HELLO.replace("second step", "changed step");
    assert_eq!(server.apply(&changed).await.json()["version"], 2);
    let rerun = server
        .call(
            Method::POST,
            &format!("/api/v1/runs/{first}/rerun"),
            Some(&server.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(rerun.status, StatusCode::CREATED, "{}", rerun.text);
    let second = rerun.json();
    assert_ne!(second["id"], first);
    assert_eq!(second["version"], 1);
    assert_eq!(second["params"]["WHO"], "kaixo");
    let second = server
        .wait_run(second["id"].as_u64().unwrap(), finished)
        .await;
    assert_eq!(second["state"], "succeeded", "{second}");
    let job = second["jobs"][0]["id"].as_u64().unwrap();
    let log = server.get(&format!("/api/v1/jobs/{job}/log")).await.text;
    assert_eq!(log, "hello kaixo\nsecond step\n");
    server
        .call(
            Method::POST,
            "/api/v1/runs/999999/rerun",
            Some(&server.admin),
            None,
            &[],
        )
        .await
        .problem(404, "not-found");
}

#[actix_rt::test]
async fn a_run_records_the_version_the_pipeline_has_when_it_is_triggered() {
    let server = start().await;
    let changed = HELLO.replace("second step", "changed step");
    // A, then B, then A again: the latest version is 3, whose text is A's.
    for (yaml, version) in [(HELLO, 1), (changed.as_str(), 2), (HELLO, 3)] {
        assert_eq!(server.apply(yaml).await.json()["version"], version);
        let run = server.trigger("hello", json!({})).await.json();
        assert_eq!(run["version"], version, "{run}");
        let run = server.wait_run(run["id"].as_u64().unwrap(), finished).await;
        assert_eq!(run["version"], version, "{run}");
    }
    let latest = server.get("/api/v1/pipelines/hello").await.json();
    assert_eq!(latest["version"], 3, "{latest}");
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket to `path`, opened with `token`.
async fn ws_connect(server: &Server, path: &str, token: &str) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}{path}", server.base.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (socket, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("no handshake within 10 s")
    .expect("the WebSocket opens");
    socket
}

/// A WebSocket client's view of a stream: its frames, in order.
async fn ws_frames(
    server: &Server,
    path: &str,
    until: impl Fn(&Value) -> bool,
    pause: Option<Duration>,
) -> Vec<Value> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut socket = ws_connect(server, path, &server.admin).await;
    if let Some(pause) = pause {
        // A slow client: it reads nothing for a while.
        tokio::time::sleep(pause).await;
    }
    let mut frames = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("no frame within 30 s: likely deadlocked");
        match next {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                let done = until(&frame);
                frames.push(frame);
                if done {
                    return frames;
                }
            }
            Some(Ok(Message::Close(_))) | None => return frames,
            Some(Ok(_)) => {}
            Some(Err(err)) => panic!("the stream broke: {err}"),
        }
    }
}

/// The log that `log` frames carry, checking that each starts where the last ended.
fn assembled(frames: &[Value], from: u64) -> String {
    let mut next = from;
    let mut text = String::new();
    for frame in frames.iter().filter(|f| f["type"] == "log") {
        assert_eq!(frame["offset"], next, "no gap, no duplicate: {frame}");
        next += frame["bytes"].as_u64().unwrap();
        text.push_str(frame["data"].as_str().unwrap());
    }
    text
}

#[actix_rt::test]
async fn a_log_that_is_not_text_streams_byte_for_byte() {
    use base64::Engine as _;
    use hodei_api::client::follow::{LogFollower, LogItem, Reconnect};
    let server = start().await;
    // Invalid UTF-8, then text with a character split across two writes, then more bytes.
    server
        .apply(concat!(
            "name: binary\njobs:\n  bin:\n    steps:\n",
            "      - run: \"printf 'a\\\\377\\\\376b\\\\n'; printf '\\\\303'; sleep 0.5; ",
            "printf '\\\\251t\\\\n'; head -c 3000000 /dev/urandom\"\n",
        ))
        .await;
    let run = server.trigger("binary", json!({})).await.json();
    let job = run["jobs"][0]["id"].as_u64().unwrap();
    let path = format!("/api/v1/jobs/{job}/log/stream?from=0");
    let frames = ws_frames(&server, &path, |f| f["type"] == "end", None).await;
    assert_eq!(frames.last().unwrap()["state"], "succeeded", "{frames:?}");
    let mut live = Vec::new();
    for frame in frames.iter().filter(|f| f["type"] == "log") {
        assert_eq!(frame["offset"], live.len(), "no gap, no duplicate");
        let bytes = match (frame["data"].as_str(), frame["data_base64"].as_str()) {
            (Some(text), None) => text.as_bytes().to_vec(),
            (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap(),
            _ => panic!("one of `data` and `data_base64`: {frame}"),
        };
        assert_eq!(frame["bytes"], bytes.len());
        live.extend_from_slice(&bytes);
    }
    let stored = server
        .http
        .get(format!("{}/api/v1/jobs/{job}/log", server.base))
        .bearer_auth(&server.admin)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(stored.len() > 3_000_000);
    assert!(
        stored.starts_with(b"a\xff\xfeb\n\xc3\xa9t\n"),
        "{:?}",
        &stored[..12]
    );
    assert!(
        live == stored,
        "the stream is the stored log, byte for byte"
    );
    // Only bytes that are not text are encoded.
    for frame in &frames {
        if let Some(encoded) = frame["data_base64"].as_str() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap();
            assert!(std::str::from_utf8(&bytes).is_err(), "text sent as base64");
        }
    }

    // The typed client yields the same bytes.
    let client = hodei_api::client::Client::new(&hodei_api::client::Target::new(
        &server.base,
        Some(server.admin.clone()),
    ))
    .unwrap();
    let mut follower = LogFollower::new(client, job, 0, Reconnect::default());
    let mut followed = Vec::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(30), follower.next())
        .await
        .expect("no item within 30 s: likely deadlocked")
        .unwrap()
    {
        match item {
            LogItem::Output { offset, bytes } => {
                assert_eq!(offset, followed.len() as u64);
                followed.extend_from_slice(&bytes);
            }
            LogItem::End { length, .. } => assert_eq!(length, stored.len() as u64),
            LogItem::Reconnecting { reason, .. } => panic!("reconnected: {reason}"),
        }
    }
    assert!(followed == stored, "the client's bytes are the stored log");
}

const TICKER: &str = "\
name: ticker
jobs:
  tick:
    steps:
      - run: for i in 1 2 3 4 5 6; do echo \"tick $i\"; sleep 0.1; done
";

#[actix_rt::test]
async fn a_job_log_streams_live_from_an_offset_with_no_gap_and_ends_with_the_outcome() {
    let server = start().await;
    server.apply(TICKER).await;
    let run = server.trigger("ticker", json!({})).await.json();
    let job = run["jobs"][0]["id"].as_u64().unwrap();
    let path = format!("/api/v1/jobs/{job}/log/stream?from=0");
    let frames = ws_frames(&server, &path, |f| f["type"] == "end", None).await;
    let end = frames.last().unwrap();
    assert_eq!(end["type"], "end", "{frames:?}");
    assert_eq!(end["state"], "succeeded");
    let live = assembled(&frames, 0);
    let stored = server.get(&format!("/api/v1/jobs/{job}/log")).await.text;
    assert_eq!(live, stored, "the stream is the stored log, whole");
    assert!(
        live.contains("tick 1\n") && live.contains("tick 6\n"),
        "{live}"
    );
    assert_eq!(end["offset"], stored.len());

    // Reconnecting from an offset gives the rest, then the end at once (the job is over).
    let from = stored.find("tick 4").unwrap() as u64;
    let path = format!("/api/v1/jobs/{job}/log/stream?from={from}");
    let frames = ws_frames(&server, &path, |f| f["type"] == "end", None).await;
    assert_eq!(assembled(&frames, from), stored[from as usize..]);
    assert_eq!(frames.last().unwrap()["state"], "succeeded");
}

#[actix_rt::test]
async fn a_client_too_slow_to_keep_up_is_told_where_to_resume_and_never_slows_the_job() {
    let server = start().await;
    server
        .apply("name: flood\njobs:\n  flood:\n    steps:\n      - run: head -c 24000000 /dev/zero | tr '\\\\0' x; sleep 1\n")
        .await;
    let run = server.trigger("flood", json!({})).await.json();
    let (id, job) = (
        run["id"].as_u64().unwrap(),
        run["jobs"][0]["id"].as_u64().unwrap(),
    );
    let path = format!("/api/v1/jobs/{job}/log/stream?from=0");
    let watch = async {
        ws_frames(
            &server,
            &path,
            |f| f["type"] == "lagged" || f["type"] == "end",
            Some(Duration::from_secs(4)),
        )
        .await
    };
    // While the client reads nothing, the job runs to its end.
    let (frames, finished_run) = futures_util::join!(watch, server.wait_run(id, finished));
    assert_eq!(finished_run["state"], "succeeded", "{finished_run}");
    let last = frames.last().unwrap();
    assert_eq!(last["type"], "lagged", "{last}");
    let received: u64 = frames
        .iter()
        .filter(|f| f["type"] == "log")
        .map(|f| f["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(
        last["resume_from"], received,
        "resume where the frames stopped"
    );
}

#[actix_rt::test]
async fn a_run_s_events_stream_live() {
    let server = start().await;
    server.apply(TICKER).await;
    let run = server.trigger("ticker", json!({})).await.json();
    let id = run["id"].as_u64().unwrap();
    let frames = ws_frames(
        &server,
        &format!("/api/v1/runs/{id}/events/stream"),
        |f| f["event"]["type"] == "run_succeeded",
        None,
    )
    .await;
    let kinds: Vec<&str> = frames
        .iter()
        .filter_map(|f| f["event"]["type"].as_str())
        .collect();
    assert!(kinds.contains(&"job_succeeded"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"run_succeeded"));
    assert!(frames.iter().all(|f| f["event"]["run"] == id), "{frames:?}");
    // Their times as RFC 3339, as in `GET /api/v1/events`.
    for frame in frames.iter().filter(|f| f["type"] == "event") {
        let at = frame["event"]["at"].as_str().unwrap_or_default();
        assert!(
            hodei_domain::ids::Timestamp::parse_rfc3339(at).is_some() && at.ends_with('Z'),
            "{frame}"
        );
    }
}

#[actix_rt::test]
async fn a_full_queue_refuses_new_runs_with_429_and_retry_after() {
    let server = start_with(Limits {
        max_queued: 1,
        ..Limits::default()
    })
    .await;
    server.apply(HELLO).await;
    // Nothing leaves the queue while the only worker is drained.
    let drained = server
        .call(
            Method::POST,
            "/api/v1/workers/local/drain",
            Some(&server.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(drained.status, StatusCode::NO_CONTENT);
    let first = server.trigger("hello", json!({})).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while server.get("/api/v1/queue").await.json()["total"] != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never queued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = server.trigger("hello", json!({})).await;
    assert_eq!(
        refused
            .headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("5")
    );
    let problem = refused.problem(429, "queue-full");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("the limit is 1"),
        "{problem}"
    );
}

#[actix_rt::test]
async fn the_queue_limit_is_a_hard_bound_under_concurrent_triggers_and_large_runs() {
    let server = start_with(Limits {
        max_queued: 50,
        ..Limits::default()
    })
    .await;
    server.apply(HELLO).await;
    // A run of more jobs than the limit is refused whole: it could never fit.
    let mut big = String::from("name: big\njobs:\n");
    for i in 0..5_000 {
        big.push_str(&format!("  j{i}: {{steps: [{{run: 'true'}}]}}\n"));
    }
    assert_eq!(server.apply(&big).await.status, StatusCode::CREATED);
    let refused = server.trigger("big", json!({})).await;
    refused.problem(409, "illegal-transition");
    assert_eq!(server.get("/api/v1/runs").await.json()["items"], json!([]));
    // Nothing finishes while the only worker is drained: of 200 concurrent one-job triggers on
    // an empty queue, exactly 50 are accepted and the others answer 429.
    let drained = server
        .call(
            Method::POST,
            "/api/v1/workers/local/drain",
            Some(&server.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(drained.status, StatusCode::NO_CONTENT);
    let triggers = (0..200).map(|_| server.trigger("hello", json!({})));
    let answers = futures_util::future::join_all(triggers).await;
    let created = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .count();
    let full = answers
        .iter()
        .filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((created, full), (50, 150));
}

#[actix_rt::test]
async fn a_retry_runs_what_failed_and_carries_over_what_succeeded() {
    let server = start().await;
    let mark = std::env::temp_dir().join(format!("hodei-retry-mark-{}", std::process::id()));
    let _ = std::fs::remove_file(&mark);
    let pipeline = format!(
        "name: flaky\njobs:\n  first:\n    steps: ['echo first ran']\n  flaky:\n    steps: ['test -e {m} || {{ touch {m}; exit 1; }}']\n  after:\n    needs: [flaky]\n    steps: ['echo after ran']\n",
        m = mark.display()
    );
    server.apply(&pipeline).await;
    let id = server.trigger("flaky", json!({})).await.json()["id"]
        .as_u64()
        .unwrap();
    let failed = server.wait_run(id, finished).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    server
        .call(
            Method::POST,
            "/api/v1/runs/999999/retry",
            Some(&server.admin),
            None,
            &[],
        )
        .await
        .problem(404, "not-found");

    let retried = server
        .call(
            Method::POST,
            &format!("/api/v1/runs/{id}/retry"),
            Some(&server.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(retried.status, StatusCode::CREATED, "{}", retried.text);
    let second = retried.json()["id"].as_u64().unwrap();
    assert_ne!(second, id);
    let run = server.wait_run(second, finished).await;
    let _ = std::fs::remove_file(&mark);
    assert_eq!(run["state"], "succeeded", "{run}");
    let first = &run["jobs"][0];
    assert_eq!(first["name"], "first");
    assert_eq!(first["state"], "succeeded");
    assert_eq!(
        first["steps"],
        json!([]),
        "carried over, not run again: {first}"
    );
    let log = server
        .get(&format!("/api/v1/jobs/{}/log", first["id"]))
        .await
        .text;
    assert!(
        log.contains(&format!("succeeded in run-{id}: carried over")),
        "{log}"
    );
    assert_eq!(
        run["jobs"][1]["state"], "succeeded",
        "the failed job ran again"
    );
    assert_eq!(
        run["jobs"][2]["state"], "succeeded",
        "its dependent ran too"
    );

    // A run that succeeded has nothing to retry.
    server
        .call(
            Method::POST,
            &format!("/api/v1/runs/{second}/retry"),
            Some(&server.admin),
            None,
            &[],
        )
        .await
        .problem(409, "illegal-transition");
}
