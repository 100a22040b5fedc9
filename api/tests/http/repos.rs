//! Repositories and webhooks against a real git server (`git daemon` of Debian's git) with real
//! pushes, and deliveries in the forges' documented shapes signed as the forges sign them.

use hodei_api::webhook::sign;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::git_support::{GitServer, HttpGitServer, StatusReceiver, ZERO, git, github_push};
use super::{Answer, Server, finished, start};

const HOOK_SECRET: &str = "hook-secret-value";

impl Server {
    /// Stores secret `name` of repository `repo`.
    async fn repo_secret(&self, repo: &str, name: &str, value: &str) {
        let body = Some(("application/json", json!({ "value": value }).to_string()));
        let path = format!("/api/v1/secrets/repository/{repo}/{name}");
        let stored = self
            .call(Method::PUT, &path, Some(&self.admin), body, &[])
            .await;
        assert!(stored.status.is_success(), "{}", stored.text);
    }

    /// Registers repository `name` with `registration`, its webhook secret stored as `HOOK`.
    async fn register(&self, name: &str, mut registration: Value) {
        self.repo_secret(name, "HOOK", HOOK_SECRET).await;
        registration["webhook_secret"] = json!("HOOK");
        let body = Some(("application/json", registration.to_string()));
        let path = format!("/api/v1/repos/{name}");
        let made = self
            .call(Method::PUT, &path, Some(&self.admin), body, &[])
            .await;
        assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    }

    async fn setup_repo(&self, name: &str, forge: &str, url: &str) {
        self.register(name, json!({"forge": forge, "clone_url": url}))
            .await;
    }

    /// A delivery as a forge sends it: the body, its event and delivery headers and the
    /// signature of `forge`, made with `secret`.
    async fn deliver(
        &self,
        repo: &str,
        forge: &str,
        event: &str,
        delivery: &str,
        body: &str,
        secret: &str,
    ) -> Answer {
        let signature = sign(secret, body.as_bytes());
        let github = format!("sha256={signature}");
        let headers: Vec<(&str, &str)> = match forge {
            "github" => vec![
                ("x-github-event", event),
                ("x-github-delivery", delivery),
                ("x-hub-signature-256", &github),
            ],
            "gitlab" => vec![
                ("x-gitlab-event", event),
                ("x-gitlab-event-uuid", delivery),
                ("x-gitlab-token", secret),
            ],
            _ => vec![
                ("x-gitea-event", event),
                ("x-gitea-delivery", delivery),
                ("x-gitea-signature", &signature),
            ],
        };
        let path = format!("/api/v1/repos/{repo}/webhook");
        self.call(
            Method::POST,
            &path,
            None,
            Some(("application/json", body.to_owned())),
            &headers,
        )
        .await
    }
}

const PIPELINE: &str = "\
name: app-ci
on: { push: { branches: [main], tags: ['v*'] }, pull_request: { branches: [main] } }
jobs:
  build:
    steps:
      - run: echo \"built $HODEI_BRANCH\"; cat src/lib.rs; echo \"at $(git rev-parse HEAD) with $(git rev-list --count HEAD) commit(s)\"
";

#[actix_rt::test]
async fn a_signed_push_starts_one_run_of_that_commits_pipeline_and_a_bad_signature_starts_nothing()
{
    let server = start().await;
    let dir = tempfile::tempdir().unwrap();
    let origin = GitServer::start(dir.path());
    server.setup_repo("app", "github", &origin.url()).await;
    let (before, commit) = origin.push(
        "main",
        &[(".hodei.yml", PIPELINE), ("src/lib.rs", "// code\n")],
    );
    let body = github_push("refs/heads/main", &before, &commit);

    // A bad signature: 401, nothing started.
    let refused = server
        .deliver("app", "github", "push", "d-1", &body, "wrong-secret")
        .await;
    refused.problem(401, "bad-signature");
    let runs = server.get("/api/v1/runs").await.json();
    assert_eq!(runs["items"].as_array().unwrap().len(), 0, "{runs}");

    // A ping is answered.
    let ping = server
        .deliver(
            "app",
            "github",
            "ping",
            "d-0",
            r#"{"zen":"hi","hook_id":1}"#,
            HOOK_SECRET,
        )
        .await;
    assert_eq!(ping.status, StatusCode::OK, "{}", ping.text);
    assert_eq!(ping.json()["started"], false);

    let started = server
        .deliver("app", "github", "push", "d-1", &body, HOOK_SECRET)
        .await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.text);
    let id = started.json()["run"].as_u64().unwrap();
    let run = server.wait_run(id, finished).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["pipeline"], "app-ci");
    assert_eq!(run["branch"], "main");
    assert_eq!(run["event"], "push");
    assert_eq!(run["commit"], commit);
    assert_eq!(run["repository"], "app");
    let job = run["jobs"][0]["id"].as_u64().unwrap();
    let log = server.get(&format!("/api/v1/jobs/{job}/log")).await.text;
    assert!(log.contains("built main"), "{log}");
    // The workspace held the repository at that commit, shallow.
    assert!(log.contains("// code"), "{log}");
    assert!(
        log.contains(&format!("at {commit} with 1 commit(s)")),
        "{log}"
    );

    // The same delivery again: one run.
    let again = server
        .deliver("app", "github", "push", "d-1", &body, HOOK_SECRET)
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.json()["duplicate"], true);
    assert_eq!(again.json()["run"], id);
    let runs = server.get("/api/v1/runs").await.json();
    assert_eq!(runs["items"].as_array().unwrap().len(), 1, "{runs}");

    // A branch `on:` does not list: nothing, with the reason.
    let (before, commit) = origin.push("feature", &[("src/lib.rs", "// more\n")]);
    let other = server
        .deliver(
            "app",
            "github",
            "push",
            "d-2",
            &github_push("refs/heads/feature", &before, &commit),
            HOOK_SECRET,
        )
        .await;
    assert_eq!(other.status, StatusCode::ACCEPTED, "{}", other.text);
    assert!(
        other.json()["reason"]
            .as_str()
            .unwrap()
            .contains("`feature`"),
        "{}",
        other.text
    );

    // A tag `on.push.tags` lists: a run with the tag.
    let tagged = origin.tag("v1.0");
    let body = github_push("refs/tags/v1.0", ZERO, &tagged);
    let answer = server
        .deliver("app", "github", "push", "d-3", &body, HOOK_SECRET)
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let run = server
        .wait_run(answer.json()["run"].as_u64().unwrap(), finished)
        .await;
    assert_eq!(
        (run["event"].as_str(), run["tag"].as_str()),
        (Some("tag"), Some("v1.0"))
    );

    // The pipeline is the one at the pushed commit: a commit without it starts nothing.
    let (before, commit) = origin.push("main", &[]);
    git(&origin.dir.join("work"), &["rm", "--quiet", ".hodei.yml"]);
    git(
        &origin.dir.join("work"),
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@x.invalid",
            "commit",
            "--quiet",
            "-m",
            "drop ci",
        ],
    );
    git(
        &origin.dir.join("work"),
        &["push", "--quiet", "origin", "HEAD:refs/heads/main"],
    );
    let without = git(&origin.dir.join("work"), &["rev-parse", "HEAD"]);
    let answer = server
        .deliver(
            "app",
            "github",
            "push",
            "d-4",
            &github_push("refs/heads/main", &commit, &without),
            HOOK_SECRET,
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    assert!(
        answer.json()["reason"]
            .as_str()
            .unwrap()
            .contains(".hodei.yml")
    );
    let _ = before;
}

#[actix_rt::test]
async fn gitlab_and_gitea_deliveries_are_checked_their_own_way_and_pull_requests_run() {
    let server = start().await;
    let dir = tempfile::tempdir().unwrap();
    let origin = GitServer::start(dir.path());
    server.setup_repo("lab", "gitlab", &origin.url()).await;
    server.setup_repo("tea", "gitea", &origin.url()).await;
    let (before, commit) = origin.push(
        "main",
        &[(".hodei.yml", PIPELINE), ("src/lib.rs", "// code\n")],
    );
    let push = json!({"object_kind": "push", "ref": "refs/heads/main", "before": before,
        "after": commit, "checkout_sha": commit, "commits": [], "total_commits_count": 1,
        "project": {"path_with_namespace": "acme/app"}})
    .to_string();
    server
        .deliver("lab", "gitlab", "Push Hook", "u-1", &push, "not-the-token")
        .await
        .problem(401, "bad-signature");
    let answer = server
        .deliver("lab", "gitlab", "Push Hook", "u-1", &push, HOOK_SECRET)
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let run = server
        .wait_run(answer.json()["run"].as_u64().unwrap(), finished)
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["repository"], "lab");

    // A pull request from a branch into main, on Gitea.
    let (_, head) = origin.push("fix", &[("src/fix.rs", "// fix\n")]);
    let pr = json!({"action": "opened", "number": 4,
        "pull_request": {"number": 4, "head": {"ref": "fix", "sha": head}, "base": {"ref": "main", "sha": commit}},
        "repository": {"full_name": "acme/app"}})
    .to_string();
    let answer = server
        .deliver("tea", "gitea", "pull_request", "g-1", &pr, HOOK_SECRET)
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let run = server
        .wait_run(answer.json()["run"].as_u64().unwrap(), finished)
        .await;
    assert_eq!(run["event"], "pull_request");
    assert_eq!(run["branch"], "fix");
    assert_eq!(run["commit"], head);
    server
        .deliver("tea", "gitea", "pull_request", "g-2", &pr, "forged")
        .await
        .problem(401, "bad-signature");
}

#[actix_rt::test]
async fn a_newer_push_cancels_the_run_it_supersedes_when_the_pipeline_asks() {
    let server = start().await;
    let dir = tempfile::tempdir().unwrap();
    let origin = GitServer::start(dir.path());
    server.setup_repo("app", "github", &origin.url()).await;
    let slow = "name: slow\non: { push: { branches: [main], cancel_superseded: true } }\njobs:\n  wait:\n    steps: [{ run: 'sleep 30' }]\n";
    let (before, first) = origin.push("main", &[(".hodei.yml", slow)]);
    let answer = server
        .deliver(
            "app",
            "github",
            "push",
            "s-1",
            &github_push("refs/heads/main", &before, &first),
            HOOK_SECRET,
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let old = answer.json()["run"].as_u64().unwrap();
    server
        .wait_run(old, |r| r["jobs"][0]["state"] == "running")
        .await;
    let (_, second) = origin.push("main", &[("x", "1")]);
    let answer = server
        .deliver(
            "app",
            "github",
            "push",
            "s-2",
            &github_push("refs/heads/main", &first, &second),
            HOOK_SECRET,
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let body: Value = answer.json();
    assert_eq!(body["superseded"], json!([old]), "{body}");
    let cancelled = server.wait_run(old, finished).await;
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let new = body["run"].as_u64().unwrap();
    let cancel = server
        .call(
            Method::POST,
            &format!("/api/v1/runs/{new}/cancel"),
            Some(&server.admin),
            None,
            &[],
        )
        .await;
    assert!(cancel.status.is_success(), "{}", cancel.text);
    server.wait_run(new, finished).await;
}

#[actix_rt::test]
async fn a_registration_with_credentials_in_its_url_or_a_bad_forge_is_refused() {
    let server = start().await;
    let put = |body: Value| {
        let server = &server;
        async move {
            server
                .call(
                    Method::PUT,
                    "/api/v1/repos/app",
                    Some(&server.admin),
                    Some(("application/json", body.to_string())),
                    &[],
                )
                .await
        }
    };
    let bad = put(json!({"forge": "github", "clone_url": "https://me:tok@example.invalid/a.git", "webhook_secret": "HOOK"}))
        .await
        .problem(400, "invalid-argument");
    assert!(!bad.to_string().contains("tok@"), "{bad}");
    put(json!({"forge": "bitbucket", "clone_url": "https://example.invalid/a.git", "webhook_secret": "HOOK"}))
        .await
        .problem(400, "invalid-argument");
    put(json!({"forge": "gitea", "clone_url": "https://example.invalid/a.git", "webhook_secret": "HOOK", "pipeline_path": "../x"}))
        .await
        .problem(400, "invalid-argument");
    let made = put(json!({"forge": "forgejo", "clone_url": "https://example.invalid/a.git", "webhook_secret": "HOOK", "pipeline_path": "ci/p.yml"})).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    let shown = server.get("/api/v1/repos/app").await.json();
    assert_eq!(shown["forge"], "gitea");
    assert_eq!(shown["webhook_path"], "/api/v1/repos/app/webhook");
    assert_eq!(
        server.get("/api/v1/repos").await.json()["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let gone = server
        .call(
            Method::DELETE,
            "/api/v1/repos/app",
            Some(&server.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    server
        .get("/api/v1/repos/app")
        .await
        .problem(404, "not-found");
}

#[actix_rt::test]
async fn checkout_takes_the_history_and_can_be_turned_off() {
    let server = start().await;
    let dir = tempfile::tempdir().unwrap();
    let origin = GitServer::start(dir.path());
    server.setup_repo("app", "github", &origin.url()).await;
    let full = "name: full\ncheckout: { depth: 0 }\non: push\njobs:\n  count:\n    steps: [{ run: 'echo \"history $(git rev-list --count HEAD)\"' }]\n";
    origin.push("main", &[("a", "1")]);
    origin.push("main", &[("b", "2")]);
    let (before, commit) = origin.push("main", &[(".hodei.yml", full)]);
    let answer = server
        .deliver(
            "app",
            "github",
            "push",
            "c-1",
            &github_push("refs/heads/main", &before, &commit),
            HOOK_SECRET,
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let run = server
        .wait_run(answer.json()["run"].as_u64().unwrap(), finished)
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let job = run["jobs"][0]["id"].as_u64().unwrap();
    let log = server.get(&format!("/api/v1/jobs/{job}/log")).await.text;
    assert!(log.contains("history 3"), "{log}");

    let none = "name: none\ncheckout: false\non: push\njobs:\n  look:\n    steps: [{ run: 'echo \"files: $(ls -A | wc -l)\"' }]\n";
    let (before, commit) = origin.push("main", &[(".hodei.yml", none)]);
    let answer = server
        .deliver(
            "app",
            "github",
            "push",
            "c-2",
            &github_push("refs/heads/main", &before, &commit),
            HOOK_SECRET,
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let run = server
        .wait_run(answer.json()["run"].as_u64().unwrap(), finished)
        .await;
    let job = run["jobs"][0]["id"].as_u64().unwrap();
    let log = server.get(&format!("/api/v1/jobs/{job}/log")).await.text;
    assert!(log.contains("files: 0"), "{log}");
}

/// A job that checks out its run's commit needs a worker that can (`checkout`: the server's
/// machine and agents, not the Kubernetes worker); one with `checkout: false`, or of a run
/// started by hand, does not.
#[actix_rt::test]
async fn jobs_that_check_out_need_a_worker_that_can() {
    let server = start().await;
    let dir = tempfile::tempdir().unwrap();
    let origin = GitServer::start(dir.path());
    server.setup_repo("app", "github", &origin.url()).await;
    let mut runs = Vec::new();
    for (n, checkout) in ["", "checkout: false\n"].into_iter().enumerate() {
        let pipeline = format!(
            "name: gpu-{n}\n{checkout}on: push\njobs:\n  train:\n    runs_on: [gpu]\n    steps: [{{ run: 'true' }}]\n"
        );
        let (before, commit) = origin.push("main", &[(".hodei.yml", pipeline.as_str())]);
        let answer = server
            .deliver(
                "app",
                "github",
                "push",
                &format!("q-{n}"),
                &github_push("refs/heads/main", &before, &commit),
                HOOK_SECRET,
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        runs.push(answer.json()["run"].as_u64().unwrap());
    }
    let needs = |run: u64| {
        let server = &server;
        async move {
            loop {
                let queue = server.get(&format!("/api/v1/queue?run={run}")).await.json();
                if let Some(item) = queue["items"].get(0) {
                    break item.clone();
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    let item = needs(runs[0]).await;
    assert_eq!(item["runs_on"], json!(["checkout", "gpu"]), "{item}");
    assert!(item["reason"].as_str().unwrap().contains("`gpu`"), "{item}");
    let item = needs(runs[1]).await;
    assert_eq!(item["runs_on"], json!(["gpu"]), "{item}");
    for run in runs {
        let cancel = server
            .call(
                Method::POST,
                &format!("/api/v1/runs/{run}/cancel"),
                Some(&server.admin),
                None,
                &[],
            )
            .await;
        assert!(cancel.status.is_success(), "{}", cancel.text);
        server.wait_run(run, finished).await;
    }
}

#[actix_rt::test]
async fn a_private_repository_is_fetched_with_its_stored_credentials_which_nothing_shows() {
    let server = start().await;
    let dir = tempfile::tempdir().unwrap();
    let origin = GitServer::start(dir.path());
    let token = "tok-3f9a1c-very-private";
    let forge = HttpGitServer::start(&dir.path().join("served"), "ci-bot", token);
    for (repo, credentials) in [
        ("private", format!("ci-bot:{token}")),
        ("wrong", "ci-bot:nope-nope".to_owned()),
    ] {
        server.repo_secret(repo, "GIT_CREDS", &credentials).await;
        let registration = json!({"forge": "github", "clone_url": forge.url("origin.git"),
            "credentials": "GIT_CREDS"});
        server.register(repo, registration).await;
    }
    let (before, commit) = origin.push(
        "main",
        &[
            (".hodei.yml", PIPELINE),
            ("src/lib.rs", "// private code\n"),
        ],
    );
    let body = github_push("refs/heads/main", &before, &commit);

    let answer = server
        .deliver("private", "github", "push", "p-1", &body, HOOK_SECRET)
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let run = server
        .wait_run(answer.json()["run"].as_u64().unwrap(), finished)
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let job = run["jobs"][0]["id"].as_u64().unwrap();
    let log = server.get(&format!("/api/v1/jobs/{job}/log")).await.text;
    assert!(log.contains("// private code"), "{log}");
    // The credentials went to the forge in a header, the only way they left Hodei.
    let seen = forge.seen.lock().unwrap().join("\n");
    assert!(
        seen.to_lowercase().contains("authorization: basic"),
        "{seen}"
    );
    assert!(
        !seen.contains(token),
        "a header carries them encoded, never a URL: {seen}"
    );

    // Wrong credentials: the forge refuses, Hodei answers 503 (the forge delivers again), and
    // its answer holds neither the secret nor its encoding.
    let refused = server
        .deliver("wrong", "github", "push", "w-1", &body, HOOK_SECRET)
        .await;
    let problem = refused.problem(503, "unavailable");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("fetch"), "{detail}");
    assert!(
        !refused.text.contains("nope-nope") && !refused.text.contains("Y2ktYm90Om5vcGUtbm9wZQ"),
        "{}",
        refused.text
    );
}

#[actix_rt::test]
async fn the_runs_status_reaches_the_forge_with_a_link_and_a_failed_report_is_tried_again() {
    let server = start().await;
    let dir = tempfile::tempdir().unwrap();
    let origin = GitServer::start(dir.path());
    let receiver = StatusReceiver::start();
    server.repo_secret("app", "STATUS", "status-token-1").await;
    // The clone URL names owner/name as a forge's does (`acme/origin`, the same repository);
    // the status API is the receiver.
    let served = dir.path().join("served");
    std::fs::create_dir_all(served.join("acme")).unwrap();
    std::os::unix::fs::symlink(
        served.join("origin.git"),
        served.join("acme").join("origin.git"),
    )
    .unwrap();
    let url = format!("git://127.0.0.1:{}/acme/origin.git", origin.port);
    let registration = json!({"forge": "github", "clone_url": url, "status_token": "STATUS",
        "status_api": format!("http://127.0.0.1:{}/api", receiver.port)});
    server.register("app", registration).await;
    let (before, commit) = origin.push(
        "main",
        &[(".hodei.yml", PIPELINE), ("src/lib.rs", "// c\n")],
    );
    let answer = server
        .deliver(
            "app",
            "github",
            "push",
            "st-1",
            &github_push("refs/heads/main", &before, &commit),
            HOOK_SECRET,
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let id = answer.json()["run"].as_u64().unwrap();
    let run = server.wait_run(id, finished).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while receiver.calls.lock().unwrap().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no final status within 20 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let calls = receiver.calls.lock().unwrap().clone();
    let states: Vec<&str> = calls
        .iter()
        .map(|(_, _, b)| b["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["pending", "success"], "{calls:#?}");
    for (line, authorization, body) in &calls {
        assert_eq!(
            line,
            &format!("POST /api/repos/acme/origin/statuses/{commit} HTTP/1.1"),
            "{calls:#?}"
        );
        assert_eq!(authorization, "Bearer status-token-1");
        assert!(
            body["target_url"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/api/v1/runs/{id}")),
            "{body}"
        );
        assert_eq!(body["context"], "hodei");
    }

    // A rerun of the run is a run of the same commit: it reports its own status, linked to it.
    let rerun = server
        .call(
            Method::POST,
            &format!("/api/v1/runs/{id}/rerun"),
            Some(&server.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(rerun.status, StatusCode::CREATED, "{}", rerun.text);
    let again = rerun.json()["id"].as_u64().unwrap();
    server.wait_run(again, finished).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while receiver.calls.lock().unwrap().len() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "no final status of the rerun within 20 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let calls = receiver.calls.lock().unwrap().clone();
    let (_, _, last) = &calls[3];
    assert_eq!(last["state"], "success", "{calls:#?}");
    assert!(
        last["target_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/api/v1/runs/{again}")),
        "{last}"
    );
}
