//! The web console in a real browser: the `hodei server` binary on a free port, Debian's
//! headless Chromium driven over WebDriver. Signing in, triggering a run from the form, its
//! graph changing state live, a live log followed, cancel, an approval, a viewer refused, text
//! that looks like HTML shown as text, deep links into a log, search. Screenshots of the main
//! pages are kept in `target/tmp/console-screenshots/`.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::time::Duration;

use browser::{Browser, Scheme};
use common::{Server, scratch};
use fantoccini::Locator;
use serde_json::{Value, json};

/// A streaming job whose matrix value and output try to inject HTML, and a gated deploy.
const FLOW: &str = r#"name: flow
parameters:
  WHO: { default: world, description: "who <script>window.pwned = 1</script> greets" }
jobs:
  build:
    matrix: { os: ["<script>window.pwned = 2</script>"] }
    steps:
      - name: stream
        run: 'i=1; while [ $i -le 40 ]; do printf "\033[32mok\033[0m line %s <script>window.pwned = 3</script>\n" $i; i=$((i+1)); sleep 0.1; done'
  deploy:
    needs: [build]
    approval: { role: operator }
    steps: [{ run: 'sleep 2; echo "deployed $WHO"' }]
"#;

/// 500,000 lines: taller than the viewer's scroll limit, so drawn with proportional positions.
const HUGE: &str = r#"name: huge
jobs:
  print:
    steps:
      - run: "awk 'BEGIN { for (i = 1; i <= 500000; i++) printf \"huge %d\\n\", i }'"
"#;

const SLOW: &str = "name: slow\njobs:\n  wait:\n    steps: [{ run: sleep 60 }]\n";

/// 5000 lines, with markers to find.
const BIG: &str = r#"name: big
jobs:
  print:
    steps:
      - name: first
        run: 'i=1; while [ $i -le 3000 ]; do case $i in 1234) echo "needle one";; 2500) echo "ERROR: boom";; *) echo "row $i";; esac; i=$((i+1)); done'
      - name: second
        run: 'i=3001; while [ $i -le 5000 ]; do if [ $i = 4444 ]; then echo "needle two"; else echo "row $i"; fi; i=$((i+1)); done'
"#;

struct Api {
    url: String,
    auth: String,
    http: reqwest::Client,
}

impl Api {
    fn new(server: &Server, data: &std::path::Path) -> Api {
        hodei_api::client::install_crypto();
        let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
        Api {
            url: server.url.clone(),
            auth: format!("Bearer {}", token.trim()),
            http: reqwest::Client::new(),
        }
    }

    fn token(&self) -> &str {
        self.auth.trim_start_matches("Bearer ")
    }

    async fn apply(&self, yaml: &str) {
        let name = yaml.lines().next().unwrap().trim_start_matches("name: ");
        let answer = self
            .http
            .put(format!("{}/api/v1/pipelines/{name}", self.url))
            .header("authorization", &self.auth)
            .header("content-type", "application/yaml")
            .body(yaml.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 201, "{}", answer.text().await.unwrap());
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("authorization", &self.auth);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.unwrap();
        let status = answer.status();
        let text = answer.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn trigger(&self, pipeline: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            &format!("/api/v1/pipelines/{pipeline}/runs"),
            Some(json!({})),
        )
        .await
    }

    async fn run(&self, id: u64) -> Value {
        self.call(reqwest::Method::GET, &format!("/api/v1/runs/{id}"), None)
            .await
    }

    async fn wait_run(&self, id: u64, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let run = self.run(id).await;
            if done(&run) {
                return run;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "run {id} did not get there in 60 s (likely stuck): {run}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A script that is true when the graph node of job position `n` shows `state`.
fn node_is(n: usize, state: &str) -> String {
    format!(
        "const n = document.querySelectorAll('.graph a.node')[{n}]; \
         return !!n && n.classList.contains('state-{state}');"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_triggers_follows_approves_and_cancels_in_the_browser() {
    let data = scratch("console-flow");
    let server = Server::start(&data);
    let api = Api::new(&server, &data);
    api.apply(FLOW).await;
    api.apply(SLOW).await;
    let browser = Browser::start(1280, 900).await;
    browser
        .client
        .goto(&format!("{}/runs", server.url))
        .await
        .unwrap();
    browser
        .until("the sign-in page", "return location.pathname === '/login'")
        .await;
    browser.screenshot("login").await;
    browser.sign_in(&server.url, api.token()).await;

    // Trigger from the form, with a parameter and a branch that try to inject HTML.
    browser
        .client
        .goto(&format!("{}/pipelines/flow", server.url))
        .await
        .unwrap();
    browser.screenshot("pipeline").await;
    let who = browser.client.find(Locator::Id("param-WHO")).await.unwrap();
    who.clear().await.unwrap();
    who.send_keys("browser").await.unwrap();
    let branch = browser.client.find(Locator::Id("branch")).await.unwrap();
    branch
        .send_keys("<img src=x onerror=\"window.pwned = 4\">")
        .await
        .unwrap();
    browser.click("form.trigger button").await;
    browser
        .until(
            "the new run's page",
            "return /^\\/runs\\/\\d+$/.test(location.pathname)",
        )
        .await;
    let id: u64 = browser
        .js("return location.pathname.split('/')[2]")
        .await
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // The graph changes state live, without a reload.
    browser.js("window.sameDocument = true; return true").await;
    let live = format!(
        "return window.sameDocument === true && (function () {{ {} }})()",
        node_is(0, "running")
    );
    browser
        .until("the build running in the graph, live", &live)
        .await;
    browser.screenshot("run").await;
    let shown = browser
        .js("return document.querySelector('main').innerText")
        .await;
    let shown = shown.as_str().unwrap();
    assert!(
        shown.contains("<img src=x onerror=\"window.pwned = 4\">"),
        "{shown}"
    );
    let title = browser
        .js("return document.querySelector('.graph a.node title').textContent")
        .await;
    assert!(
        title
            .as_str()
            .unwrap()
            .contains("<script>window.pwned = 2</script>"),
        "{title}"
    );

    // Follow the live log: lines arrive while the step runs, their markup shown as text.
    browser.click(".graph a.node").await;
    browser
        .until(
            "the log viewer following",
            "return document.getElementById('log-follow').getAttribute('aria-pressed') === 'true'",
        )
        .await;
    browser
        .until(
            "a line streamed live",
            "return [...document.querySelectorAll('#log .row .txt')].some(e => e.textContent === 'ok line 5 <script>window.pwned = 3</script>')",
        )
        .await;
    let colour = browser
        .js("const s = document.querySelector('#log .row .txt span.f2'); return s ? s.textContent : null")
        .await;
    assert_eq!(colour, json!("ok"), "ANSI green is drawn as a span");
    browser.screenshot("log-follow").await;
    // The running job's duration counts on its own.
    let counted = browser
        .js("const d = document.querySelector('dl.summary [data-since]'); return d ? d.textContent : null")
        .await;
    assert!(counted.is_string(), "a running job shows its duration");
    browser
        .until(
            "the duration counting",
            &format!("const d = document.querySelector('dl.summary [data-since]'); return !d || d.textContent !== {counted}"),
        )
        .await;
    browser
        .until_within(
            "the last line followed live",
            "return [...document.querySelectorAll('#log .row .txt')].some(e => e.textContent.startsWith('ok line 40 '))",
            Duration::from_secs(60),
        )
        .await;
    browser
        .until(
            "the follow mode ended with the job",
            "return document.getElementById('log-follow').disabled",
        )
        .await;

    // The gate: approve from the run page; the deploy then runs and the run succeeds.
    browser
        .client
        .goto(&format!("{}/runs/{id}", server.url))
        .await
        .unwrap();
    browser
        .until("the deploy at its gate", &node_is(1, "waiting_approval"))
        .await;
    browser.screenshot("run-gate").await;
    // The form posts from the run page and comes back to it: a mark on this document tells
    // the page before the post from the one after it.
    browser
        .js("window.beforeApproving = true; return true")
        .await;
    browser.click("form.action button.primary").await;
    // Back on the run page, the deploy (two seconds long) runs and succeeds while it is shown.
    browser
        .until(
            "the run page after approving, the deploy not finished",
            &format!(
                "return window.beforeApproving !== true && location.pathname === '/runs/{id}' \
                 && (function () {{ {} }})() === false",
                node_is(1, "succeeded")
            ),
        )
        .await;
    browser.js("window.approvedHere = true; return true").await;
    let done = format!(
        "return window.approvedHere === true && (function () {{ {} }})()",
        node_is(1, "succeeded")
    );
    browser.until("the deploy succeeded, live", &done).await;
    let run = api.wait_run(id, |r| r["state"] == "succeeded").await;
    assert_eq!(run["params"]["WHO"], "browser");
    let pwned = browser.js("return typeof window.pwned").await;
    assert_eq!(pwned, json!("undefined"), "nothing injected ran");

    // Cancel a running run with its button.
    let slow = api.trigger("slow").await["id"].as_u64().unwrap();
    api.wait_run(slow, |r| r["jobs"][0]["state"] == "running")
        .await;
    browser
        .client
        .goto(&format!("{}/queue", server.url))
        .await
        .unwrap();
    browser
        .until(
            "the worker listed",
            "return document.body.innerText.includes('local')",
        )
        .await;
    browser.screenshot("queue").await;
    browser
        .client
        .goto(&format!("{}/runs/{slow}", server.url))
        .await
        .unwrap();
    browser.click("form.action button.danger").await;
    browser
        .until(
            "the run cancelled",
            "return !!document.querySelector('dl.summary .state-cancelled')",
        )
        .await;
    browser
        .client
        .goto(&format!("{}/runs", server.url))
        .await
        .unwrap();
    browser.screenshot("runs").await;
    // The list updates live: a run started elsewhere shows up without a reload.
    browser.js("window.stillHere = true; return true").await;
    let another = api.trigger("slow").await["id"].as_u64().unwrap();
    browser
        .until(
            "the new run in the list, live",
            &format!("return window.stillHere === true && !!document.querySelector('tr[data-run=\"{another}\"]')"),
        )
        .await;
    api.call(
        reqwest::Method::POST,
        &format!("/api/v1/runs/{another}/cancel"),
        None,
    )
    .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_button_and_a_forged_action_is_refused() {
    let data = scratch("console-viewer");
    let server = Server::start(&data);
    let api = Api::new(&server, &data);
    api.apply(SLOW).await;
    let run = api.trigger("slow").await["id"].as_u64().unwrap();
    let viewer = api
        .call(
            reqwest::Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "reader", "role": "viewer"})),
        )
        .await;
    let browser = Browser::start(1280, 900).await;
    browser
        .sign_in(&server.url, viewer["token"].as_str().unwrap())
        .await;
    browser
        .client
        .goto(&format!("{}/runs/{run}", server.url))
        .await
        .unwrap();
    browser
        .until("the graph", "return !!document.querySelector('.graph svg')")
        .await;
    let buttons = browser
        .js("return document.querySelectorAll('main form.action').length")
        .await;
    assert_eq!(buttons, json!(0), "a viewer sees no action");

    // The same POST a button would make, with the session's CSRF token: refused all the same.
    browser
        .js(&format!(
            "const f = document.createElement('form'); f.method = 'post'; f.action = '/runs/{run}/cancel'; \
             const i = document.createElement('input'); i.type = 'hidden'; i.name = 'csrf'; \
             i.value = document.querySelector('meta[name=hodei-csrf]').content; f.appendChild(i); \
             document.body.appendChild(f); f.submit(); return true"
        ))
        .await;
    browser
        .until(
            "the refusal",
            "return document.title.startsWith('Forbidden')",
        )
        .await;
    let text = browser
        .js("return document.querySelector('main').innerText")
        .await;
    assert!(text.as_str().unwrap().contains("operator"), "{text}");
    assert_ne!(api.run(run).await["state"], "cancelled");
    api.call(
        reqwest::Method::POST,
        &format!("/api/v1/runs/{run}/cancel"),
        None,
    )
    .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_link_loads_only_its_part_and_search_and_steps_jump_to_lines() {
    let data = scratch("console-log");
    let server = Server::start(&data);
    let api = Api::new(&server, &data);
    api.apply(BIG).await;
    let run = api.trigger("big").await["id"].as_u64().unwrap();
    let done = api.wait_run(run, |r| r["state"] == "succeeded").await;
    let job = done["jobs"][0]["id"].as_u64().unwrap();
    let browser = Browser::start(1280, 900).await;
    browser.sign_in(&server.url, api.token()).await;

    browser
        .client
        .goto(&format!("{}/jobs/{job}#L4321", server.url))
        .await
        .unwrap();
    browser
        .until(
            "line 4321 shown and marked",
            "const r = document.querySelector('#log .row.target'); return !!r && r.querySelector('.txt').textContent === 'row 4321'",
        )
        .await;
    browser.screenshot("log-deep-link").await;
    let rows = browser
        .js("return document.querySelectorAll('#log .row').length")
        .await;
    assert!(
        rows.as_u64().unwrap() < 80,
        "only the rows on screen: {rows}"
    );
    let fetched = browser
        .js("return performance.getEntriesByType('resource').map(e => e.name).filter(n => n.includes('/log/lines')).map(n => new URL(n).searchParams.get('from'))")
        .await;
    assert_eq!(
        fetched,
        json!(["4001"]),
        "only the page of the line was read"
    );

    // The first error, the search on the server, and each step's start.
    browser.click("#log-error").await;
    browser
        .until("the first error", "const r = document.querySelector('#log .row.target'); return !!r && r.querySelector('.txt').textContent === 'ERROR: boom'")
        .await;
    let q = browser.client.find(Locator::Id("log-q")).await.unwrap();
    q.send_keys("NEEDLE").await.unwrap();
    browser.click("#log-search button[type=submit]").await;
    browser
        .until("a match shown", "const r = document.querySelector('#log .row.target'); return !!r && r.querySelector('.txt').textContent.startsWith('needle')")
        .await;
    let status = browser
        .js("return document.getElementById('log-status').textContent")
        .await;
    assert!(status.as_str().unwrap().contains("of 2"), "{status}");
    let before = browser
        .js("return document.querySelector('#log .row.target .txt').textContent")
        .await;
    browser.click("#log-next").await;
    browser
        .until("the other match", &format!("const r = document.querySelector('#log .row.target'); return !!r && r.querySelector('.txt').textContent.startsWith('needle') && r.querySelector('.txt').textContent !== {before}"))
        .await;
    let steps = browser
        .js("return [...document.querySelectorAll('nav.steps a')].map(a => a.getAttribute('href'))")
        .await;
    let second: String = steps[1].as_str().unwrap().to_owned();
    browser.click("nav.steps li:nth-child(2) a").await;
    browser
        .until("the second step's first line", "const r = document.querySelector('#log .row.target'); return !!r && r.querySelector('.txt').textContent === 'row 3001'")
        .await;
    assert!(second.starts_with("#L"), "{steps}");
    // The keyboard: `g` goes to the top of the focused log.
    let log = browser.client.find(Locator::Id("log")).await.unwrap();
    log.send_keys("g").await.unwrap();
    browser
        .until("the first line on top", "const r = document.querySelector('#log .row'); return !!r && !r.hidden && r.querySelector('.ln').textContent === '1'")
        .await;

    // A log taller than the scroll limit: deep links, the last line and the first all reach.
    api.apply(HUGE).await;
    let run = api.trigger("huge").await["id"].as_u64().unwrap();
    let done = api.wait_run(run, |r| r["state"] == "succeeded").await;
    let job = done["jobs"][0]["id"].as_u64().unwrap();
    browser
        .client
        .goto(&format!("{}/jobs/{job}#L450000", server.url))
        .await
        .unwrap();
    browser
        .until(
            "line 450000 of 500000 shown and marked",
            "const r = document.querySelector('#log .row.target'); return !!r && !r.hidden && r.querySelector('.txt').textContent === 'huge 450000'",
        )
        .await;
    browser.click("#log-bottom").await;
    browser
        .until(
            "the last of 500000 lines on screen",
            "return [...document.querySelectorAll('#log .row:not([hidden]) .txt')].some(e => e.textContent === 'huge 500000')",
        )
        .await;
    browser.click("#log-top").await;
    browser
        .until(
            "the first line on screen",
            "const r = document.querySelector('#log .row .txt'); return !!r && r.textContent === 'huge 1'",
        )
        .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_dark_when_the_system_prefers_dark() {
    let data = scratch("console-dark");
    let server = Server::start(&data);
    let api = Api::new(&server, &data);
    api.apply(BIG).await;
    let run = api.trigger("big").await["id"].as_u64().unwrap();
    api.wait_run(run, |r| r["state"] == "succeeded").await;
    let browser = Browser::start_in(1280, 900, Scheme::Dark).await;
    browser.sign_in(&server.url, api.token()).await;
    let background = browser
        .js("return getComputedStyle(document.body).backgroundColor")
        .await;
    assert_eq!(background, json!("rgb(15, 18, 22)"), "the dark palette");
    browser
        .client
        .goto(&format!("{}/runs/{run}", server.url))
        .await
        .unwrap();
    browser
        .until("the graph", "return !!document.querySelector('.graph svg')")
        .await;
    browser.screenshot("run-dark").await;
    browser.close().await;
}
