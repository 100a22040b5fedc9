//! The console over real HTTP: sign-in, the session cookie, CSRF, roles, the trigger form, and
//! the API's log-by-line endpoints the log viewer reads. (The pages in a real browser are
//! tested end to end in the workspace's `tests/console.rs`.)

use super::*;
use hodei_api::console::html::encode;

/// A browser-like client of the console: no redirect followed, its cookies kept by hand.
struct Browser {
    base: String,
    http: reqwest::Client,
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn new(server: &Server) -> Browser {
        Browser {
            base: server.base.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Answer {
        let request = request.header("cookie", self.cookie_header());
        let response = tokio::time::timeout(Duration::from_secs(30), request.send())
            .await
            .expect("no answer within 30 s: likely deadlocked")
            .expect("the request is sent");
        for set in response.headers().get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (pair, _) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(k, _)| k != name);
            if !value.is_empty() {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        Answer {
            status: response.status(),
            headers: response.headers().clone(),
            text: response.text().await.expect("a body"),
        }
    }

    async fn get(&mut self, path: &str) -> Answer {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(request).await
    }

    /// Signs in with `token`; answers the session's CSRF token.
    async fn sign_in(&mut self, token: &str) -> String {
        let page = self.get("/login?next=/pipelines").await;
        let nonce = hidden(&page.text, "csrf");
        let answer = self
            .post(
                "/login",
                &[("token", token), ("csrf", &nonce), ("next", "/pipelines")],
            )
            .await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);
        assert_eq!(answer.header("location"), "/pipelines");
        let set = answer
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|v| v.starts_with("hodei_session="))
            .expect("a session cookie");
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        let page = self.get("/pipelines").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        meta(&page.text, "hodei-csrf")
    }
}

/// The value of the first hidden input named `name`.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("the hidden input") + marker.len();
    html[start..][..html[start..].find('"').unwrap()].to_owned()
}

/// The content of the meta tag named `name`.
fn meta(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" content=\"");
    let start = html.find(&marker).expect("the meta tag") + marker.len();
    html[start..][..html[start..].find('"').unwrap()].to_owned()
}

#[actix_rt::test]
async fn console_pages_need_a_session_opened_with_a_token_and_closed_by_signing_out() {
    let server = start().await;
    let mut browser = Browser::new(&server);
    let away = browser.get("/runs?state=failed").await;
    assert_eq!(away.status, StatusCode::SEE_OTHER);
    assert_eq!(
        away.header("location"),
        "/login?next=%2Fruns%3Fstate%3Dfailed"
    );

    // The sign-in form's own CSRF token must come back with it.
    let page = browser.get("/login").await;
    assert!(
        page.header("content-security-policy")
            .contains("script-src 'self'")
    );
    let forged = browser
        .post("/login", &[("token", &server.admin), ("csrf", "forged")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.text);
    let page = browser.get("/login").await;
    let nonce = hidden(&page.text, "csrf");
    let wrong = browser
        .post("/login", &[("token", "hodei_nope"), ("csrf", &nonce)])
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.text.contains("unknown token"), "{}", wrong.text);

    let csrf = browser.sign_in(&server.admin).await;
    // The API answers the session too; a change needs the CSRF header.
    let runs = browser.get("/api/v1/runs").await;
    assert_eq!(runs.status, StatusCode::OK, "{}", runs.text);
    let path = format!("{}/api/v1/runs/999/cancel", server.base);
    let bare = browser.send(browser.http.post(&path)).await;
    bare.problem(401, "unauthenticated");
    let with = browser
        .send(browser.http.post(&path).header("x-hodei-csrf", &csrf))
        .await;
    with.problem(404, "not-found");
    let other_site = browser
        .send(
            browser
                .http
                .get(format!("{}/api/v1/runs", server.base))
                .header("origin", "http://evil.example"),
        )
        .await;
    other_site.problem(401, "unauthenticated");

    // A form without the session's token changes nothing.
    let refused = browser.post("/logout", &[("csrf", "forged")]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
    assert_eq!(browser.get("/runs").await.status, StatusCode::OK);
    let out = browser.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(browser.get("/runs").await.status, StatusCode::SEE_OTHER);
    browser
        .get("/api/v1/runs")
        .await
        .problem(401, "unauthenticated");
}

#[actix_rt::test]
async fn a_revoked_token_ends_its_console_sessions_at_once() {
    let server = start().await;
    let (id, token) = server.token("laptop", "operator").await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&token).await;
    let revoked = server
        .call(
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            Some(&server.admin),
            None,
            &[],
        )
        .await;
    assert!(revoked.status.is_success(), "{}", revoked.text);
    let page = browser.get("/pipelines").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(page.header("location").starts_with("/login"));
}

#[actix_rt::test]
async fn a_viewer_sees_no_action_and_the_server_refuses_it_anyway() {
    let server = start().await;
    server.apply(SLOW).await;
    let run = server.trigger("slow", json!({})).await.json()["id"]
        .as_u64()
        .unwrap();
    let (_, viewer) = server.token("reader", "viewer").await;
    let mut browser = Browser::new(&server);
    let csrf = browser.sign_in(&viewer).await;
    let page = browser.get(&format!("/runs/{run}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("<svg"), "the graph is drawn");
    assert!(
        !page.text.contains("/cancel"),
        "no cancel button: {}",
        page.text
    );
    let pipeline = browser.get("/pipelines/slow").await;
    assert!(!pipeline.text.contains("Trigger"), "no trigger form");

    let refused = browser
        .post(&format!("/runs/{run}/cancel"), &[("csrf", &csrf)])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    assert!(refused.text.contains("operator"), "{}", refused.text);
    let still = server.get(&format!("/api/v1/runs/{run}")).await.json();
    assert!(!finished(&still), "{still}");
    server
        .call(
            Method::POST,
            &format!("/api/v1/runs/{run}/cancel"),
            Some(&server.admin),
            None,
            &[],
        )
        .await;
}

#[actix_rt::test]
async fn the_trigger_form_starts_a_run_with_its_parameters_and_escapes_names() {
    let server = start().await;
    server.apply(HELLO).await;
    let mut browser = Browser::new(&server);
    let csrf = browser.sign_in(&server.admin).await;
    let page = browser.get("/pipelines/hello").await;
    assert!(
        page.text.contains("name=\"param.WHO\" value=\"world\""),
        "{}",
        page.text
    );
    let answer = browser
        .post(
            "/pipelines/hello/runs",
            &[
                ("csrf", &csrf),
                ("param.WHO", "<b>console</b>"),
                ("branch", "main"),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);
    let id: u64 = answer
        .header("location")
        .strip_prefix("/runs/")
        .unwrap()
        .parse()
        .unwrap();
    let run = server.wait_run(id, finished).await;
    assert_eq!(run["params"]["WHO"], "<b>console</b>");
    assert_eq!(run["branch"], "main");
    let page = browser.get(&format!("/runs/{id}")).await;
    assert!(
        page.text.contains("&lt;b&gt;console&lt;/b&gt;"),
        "{}",
        page.text
    );
    assert!(!page.text.contains("<b>console"), "parameters are escaped");

    // A bad parameter is a page that says what was wrong.
    let bad = browser
        .post(
            "/pipelines/hello/runs",
            &[("csrf", &csrf), ("param.NOPE", "x")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text.contains("NOPE"), "{}", bad.text);

    let version = server.get("/api/v1/pipelines/hello/versions/1").await;
    assert_eq!(version.text, HELLO);
    server
        .get("/api/v1/pipelines/hello/versions/9")
        .await
        .problem(404, "not-found");
}

const LINES: &str = "\
name: lines
jobs:
  print:
    steps:
      - run: 'i=1; while [ $i -le 3000 ]; do echo \"line $i\"; i=$((i+1)); done; printf \"\\033[31mERROR\\033[0m at the end\\nlast\"'
";

#[actix_rt::test]
async fn a_log_is_served_by_line_number_and_searched_on_the_server() {
    let server = start().await;
    server.apply(LINES).await;
    let id = server.trigger("lines", json!({})).await.json()["id"]
        .as_u64()
        .unwrap();
    let run = server.wait_run(id, finished).await;
    let job = run["jobs"][0]["id"].as_u64().unwrap();
    let page = server
        .get(&format!("/api/v1/jobs/{job}/log/lines?from=1500&count=3"))
        .await
        .json();
    assert_eq!(page["from"], 1500);
    let lines: Vec<&str> = page["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(lines, ["line 1500", "line 1501", "line 1502"]);
    let total = page["total"].as_u64().unwrap();
    let log = server.get(&format!("/api/v1/jobs/{job}/log")).await.text;
    assert_eq!(total as usize, log.lines().count());
    assert_eq!(page["length"], log.len());
    assert_eq!(page["open"], !log.ends_with('\n'));

    let end = server
        .get(&format!(
            "/api/v1/jobs/{job}/log/lines?from={}&count=10",
            total - 1
        ))
        .await
        .json();
    assert_eq!(
        end["lines"][1], "last",
        "a last line without newline: {end}"
    );
    let found = server
        .get(&format!("/api/v1/jobs/{job}/log/search?q=error+AT"))
        .await
        .json();
    assert_eq!(
        found["lines"],
        json!([total - 1]),
        "colour codes are skipped"
    );
    let many = server
        .get(&format!("/api/v1/jobs/{job}/log/search?q=line+2&limit=5"))
        .await
        .json();
    assert_eq!(many["lines"].as_array().unwrap().len(), 5);
    assert_eq!(many["truncated"], true);
    server
        .get(&format!("/api/v1/jobs/{job}/log/lines?from=0"))
        .await
        .problem(400, "invalid-argument");
    server
        .get(&format!("/api/v1/jobs/{job}/log/search?q="))
        .await
        .problem(400, "invalid-argument");
    server
        .get("/api/v1/jobs/999999/log/lines")
        .await
        .problem(404, "not-found");
}

#[actix_rt::test]
async fn the_approve_button_shows_only_for_the_role_the_gate_names() {
    let server = start().await;
    server.apply(GATED).await;
    let id = server.trigger("gated", json!({})).await.json()["id"]
        .as_u64()
        .unwrap();
    let run = server
        .wait_run(id, |run| run["jobs"][1]["state"] == "waiting_approval")
        .await;
    let deploy = run["jobs"][1]["id"].as_u64().unwrap();
    let (_, operator) = server.token("release-bot", "operator").await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&operator).await;
    for page in [format!("/runs/{id}"), format!("/jobs/{deploy}")] {
        let text = browser.get(&page).await.text;
        assert!(text.contains("waiting approval"), "{text}");
        assert!(
            !text.contains("/approve"),
            "the gate needs an admin: {text}"
        );
    }
    let mut admin = Browser::new(&server);
    admin.sign_in(&server.admin).await;
    let text = admin.get(&format!("/jobs/{deploy}")).await.text;
    assert!(text.contains(&format!("/jobs/{deploy}/approve")), "{text}");
}

#[actix_rt::test]
async fn retry_rerun_drain_and_undrain_are_buttons_that_call_the_api() {
    let server = start().await;
    server
        .apply(
            "name: fails\njobs:\n  ok:\n    steps: ['echo fine']\n  bad:\n    steps: ['exit 3']\n",
        )
        .await;
    let id = server.trigger("fails", json!({})).await.json()["id"]
        .as_u64()
        .unwrap();
    server.wait_run(id, finished).await;
    let mut browser = Browser::new(&server);
    let csrf = browser.sign_in(&server.admin).await;
    let page = browser.get(&format!("/runs/{id}")).await.text;
    for action in ["retry", "rerun"] {
        assert!(page.contains(&format!("/runs/{id}/{action}")), "{page}");
    }
    assert!(!page.contains("/cancel"), "a finished run has no cancel");
    for action in ["retry", "rerun"] {
        let answer = browser
            .post(&format!("/runs/{id}/{action}"), &[("csrf", &csrf)])
            .await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);
        let new: u64 = answer.header("location")[6..].parse().unwrap();
        assert!(new > id, "{action} made a new run");
        let run = server.wait_run(new, finished).await;
        assert_eq!(run["state"], "failed", "{run}");
    }
    let unknown = browser
        .post(&format!("/runs/{id}/explode"), &[("csrf", &csrf)])
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // A job no worker can take says why it waits; the worker drains and comes back.
    server
        .apply("name: stuck\njobs:\n  gpu:\n    runs_on: [gpu]\n    steps: ['true']\n")
        .await;
    let stuck = server.trigger("stuck", json!({})).await.json()["id"]
        .as_u64()
        .unwrap();
    // The run is durable when the trigger answers; its job joins the queue a moment later.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let queue = loop {
        let queue = browser.get("/queue").await.text;
        if queue.contains("gpu") {
            break queue;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never queued: likely deadlocked: {queue}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(queue.contains("why it waits") || queue.contains("Why it waits"));
    assert!(queue.contains(&format!("/runs/{stuck}")), "{queue}");
    let drained = browser
        .post("/workers/local/drain", &[("csrf", &csrf)])
        .await;
    assert_eq!(drained.status, StatusCode::SEE_OTHER, "{}", drained.text);
    let queue = browser.get("/queue").await.text;
    assert!(queue.contains("state-draining"), "{queue}");
    assert!(queue.contains("/workers/local/undrain"), "{queue}");
    let back = browser
        .post("/workers/local/undrain", &[("csrf", &csrf)])
        .await;
    assert_eq!(back.status, StatusCode::SEE_OTHER);
    assert!(
        browser
            .get("/queue")
            .await
            .text
            .contains("/workers/local/drain")
    );
    server
        .call(
            Method::POST,
            &format!("/api/v1/runs/{stuck}/cancel"),
            Some(&server.admin),
            None,
            &[],
        )
        .await;
}
