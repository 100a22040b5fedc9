//! Webhook received → first step started, on an in-process server with the repository already
//! mirrored, against a start through `POST /api/v1/pipelines/{name}/runs` → first step started
//! in the same run (`cargo bench -p hodei-api --bench webhook`; figures in
//! `docs/performance.md`).
//!
//! The server is the tests' (SQLite file store, file logs, local provider, repository mirrors);
//! the forge is `git daemon` on loopback. Each round posts one signed GitHub push delivery
//! (a new delivery id, the same commit: already in the mirror) and waits for the run's first
//! `step_started` event on the event bus, then for the run's end; the API rounds alternate
//! with them. The step runs in a fresh shallow checkout of the commit, which the figure
//! includes. `HODEI_WEBHOOK_ROUNDS` (default 40) sets the rounds.

#[path = "../tests/support/git.rs"]
mod git_support;
#[path = "../tests/support/server.rs"]
mod support;

use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler};
use hodei_actors::messages::{Published, Subscribe};
use hodei_api::webhook::sign;
use hodei_domain::ids::RunId;
use hodei_domain::state::DomainEvent;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use git_support::{GitServer, github_push};

const SECRET: &str = "bench-hook-secret";

/// Forwards the step starts and the end of every run, with when they were published.
struct Tap(mpsc::UnboundedSender<(Instant, RunId, bool)>);

impl Actor for Tap {
    type Context = Context<Self>;
}

impl Handler<Published> for Tap {
    type Result = ();

    fn handle(&mut self, msg: Published, _: &mut Context<Self>) {
        let now = Instant::now();
        for event in msg.events.iter() {
            let ended = matches!(
                event,
                DomainEvent::RunSucceeded { .. }
                    | DomainEvent::RunFailed { .. }
                    | DomainEvent::RunCancelled { .. }
            );
            if ended || matches!(event, DomainEvent::StepStarted { .. }) {
                let _ = self.0.send((now, event.run_id(), ended));
            }
        }
    }
}

fn percentile(values: &mut [Duration], p: f64) -> Duration {
    values.sort();
    values[((values.len() - 1) as f64 * p).round() as usize]
}

/// Waits for run `run`'s first step start (answers how long after `from`), then for its end.
async fn first_step(
    rx: &mut mpsc::UnboundedReceiver<(Instant, RunId, bool)>,
    run: RunId,
    from: Instant,
) -> Duration {
    let mut started = None;
    loop {
        let (at, of, ended) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("the run did not go on within 60 s: likely deadlocked")
            .expect("the tap is alive");
        if of != run {
            continue;
        }
        if !ended && started.is_none() {
            started = Some(at.duration_since(from));
        }
        if ended {
            return started.expect("a step started before the run ended");
        }
    }
}

fn main() {
    // `cargo test --benches` runs this without `--bench`: a short pass that checks it works.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = std::env::var("HODEI_WEBHOOK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 3 } else { 40 });
    actix_rt::System::new().block_on(async move {
        let server = support::start().await;
        let dir = tempfile::tempdir().expect("a scratch directory");
        let origin = GitServer::start(dir.path());
        let http = &server.http;
        let put = |path: &str, body: Value| {
            http.put(format!("{}{path}", server.base))
                .bearer_auth(&server.admin)
                .json(&body)
                .send()
        };
        let stored = put("/api/v1/secrets/repository/app/HOOK", json!({"value": SECRET}))
            .await
            .expect("the secret is stored");
        assert!(stored.status().is_success());
        let registered = put(
            "/api/v1/repos/app",
            json!({"forge": "github", "clone_url": origin.url(), "webhook_secret": "HOOK"}),
        )
        .await
        .expect("the repository is registered");
        assert!(registered.status().is_success());
        let pipeline =
            "name: hooked\non: [push, manual]\njobs:\n  a: { steps: [{ run: 'true' }] }\n";
        let (before, commit) = origin.push("main", &[(".hodei.yml", pipeline), ("src/x", "x\n")]);
        let body = github_push("refs/heads/main", &before, &commit);
        let signature = format!("sha256={}", sign(SECRET, body.as_bytes()));
        let (tx, mut rx) = mpsc::unbounded_channel();
        server.tree.bus.do_send(Subscribe {
            subscriber: Tap(tx).start().recipient(),
        });
        let deliver = |id: String| {
            http.post(format!("{}/api/v1/repos/app/webhook", server.base))
                .header("x-github-event", "push")
                .header("x-github-delivery", id)
                .header("x-hub-signature-256", &signature)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
        };
        let trigger = || {
            http.post(format!("{}/api/v1/pipelines/hooked/runs", server.base))
                .bearer_auth(&server.admin)
                .send()
        };
        let run_of = |answer: &Value, field: &str| RunId(answer[field].as_u64().expect("a run"));
        // The first delivery mirrors the repository; the rounds start from there.
        let first: Value = deliver("warm-up".into())
            .await
            .expect("delivered")
            .json()
            .await
            .expect("JSON");
        first_step(&mut rx, run_of(&first, "run"), Instant::now()).await;
        let (mut hooked, mut triggered) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let from = Instant::now();
            let answer = deliver(format!("round-{round}")).await.expect("delivered");
            assert_eq!(answer.status().as_u16(), 201, "a run is started");
            let answer: Value = answer.json().await.expect("JSON");
            hooked.push(first_step(&mut rx, run_of(&answer, "run"), from).await);

            let from = Instant::now();
            let answer = trigger().await.expect("triggered");
            assert_eq!(answer.status().as_u16(), 201, "a run is started");
            let answer: Value = answer.json().await.expect("JSON");
            triggered.push(first_step(&mut rx, run_of(&answer, "id"), from).await);
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (h50, h90) = (percentile(&mut hooked, 0.5), percentile(&mut hooked, 0.9));
        let (t50, t90) = (percentile(&mut triggered, 0.5), percentile(&mut triggered, 0.9));
        println!(
            "webhook received -> first step started (repository mirrored, shallow checkout): p50 {:.1} ms, p90 {:.1} ms; API trigger -> first step started (no checkout): p50 {:.1} ms, p90 {:.1} ms ({rounds} rounds each)",
            ms(h50),
            ms(h90),
            ms(t50),
            ms(t90)
        );
        drop(origin);
        // The store lives in the actors until the System goes, outside any runtime: end here,
        // as the figures are printed, rather than drop it there.
        std::process::exit(0);
    });
}
