//! Stored secrets through the API, and what `on:` lets a caller start by hand.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Server, finished, start};

const VALUE: &str = "s3cr3t-value-that-must-not-leak";

/// A pipeline whose step prints its secret, once plainly and once reversed.
const USES: &str = "\
name: deploy
secrets: [DEPLOY_TOKEN]
jobs:
  ship:
    steps:
      - run: echo \"token=$DEPLOY_TOKEN\"; echo \"length=${#DEPLOY_TOKEN}\"
";

impl Server {
    async fn put_secret(&self, path: &str, value: &str, token: &str) -> super::Answer {
        let body = Some(("application/json", json!({ "value": value }).to_string()));
        self.call(
            Method::PUT,
            &format!("/api/v1/secrets/{path}"),
            Some(token),
            body,
            &[],
        )
        .await
    }
}

#[actix_rt::test]
async fn a_secret_is_set_listed_and_deleted_and_no_answer_ever_holds_its_value() {
    let server = start().await;
    let created = server
        .put_secret("pipeline/deploy/DEPLOY_TOKEN", VALUE, &server.admin)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let body = created.json();
    assert_eq!(body["scope"], "pipeline");
    assert_eq!(body["owner"], "deploy");
    assert_eq!(body["name"], "DEPLOY_TOKEN");
    assert!(!created.text.contains(VALUE));
    let replaced = server
        .put_secret("pipeline/deploy/DEPLOY_TOKEN", "another", &server.admin)
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text);
    assert_eq!(replaced.json()["created"], body["created"]);
    server
        .put_secret("repository/app/REGISTRY", VALUE, &server.admin)
        .await;

    let all = server.get("/api/v1/secrets").await;
    assert_eq!(all.status, StatusCode::OK);
    assert!(!all.text.contains(VALUE) && !all.text.contains("another"));
    let names: Vec<String> = all.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{}/{}/{}", s["scope"], s["owner"], s["name"]).replace('"', ""))
        .collect();
    assert_eq!(
        names,
        ["pipeline/deploy/DEPLOY_TOKEN", "repository/app/REGISTRY"]
    );
    let one = server
        .get("/api/v1/secrets?scope=repository&owner=app")
        .await
        .json();
    assert_eq!(one["items"].as_array().unwrap().len(), 1);

    // Roles: an operator lists, only an admin changes; a viewer does neither.
    let (_, operator) = server.token("ops", "operator").await;
    let (_, viewer) = server.token("view", "viewer").await;
    server
        .put_secret("pipeline/deploy/X", "v", &operator)
        .await
        .problem(403, "forbidden");
    let listed = server
        .call(Method::GET, "/api/v1/secrets", Some(&operator), None, &[])
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    server
        .call(Method::GET, "/api/v1/secrets", Some(&viewer), None, &[])
        .await
        .problem(403, "forbidden");

    // Bad input says what was wrong and what is expected.
    let bad = server
        .put_secret("team/deploy/TOKEN", "v", &server.admin)
        .await
        .problem(400, "invalid-argument");
    assert!(
        bad["detail"]
            .as_str()
            .unwrap()
            .contains("`pipeline` or `repository`")
    );
    let bad = server
        .put_secret("pipeline/deploy/HODEI_X", "v", &server.admin)
        .await
        .problem(400, "invalid-argument");
    assert!(bad["detail"].as_str().unwrap().contains("HODEI_"), "{bad}");
    let bad = server
        .put_secret("pipeline/deploy/EMPTY", "", &server.admin)
        .await
        .problem(400, "invalid-argument");
    assert!(
        bad["detail"].as_str().unwrap().contains("1 to 65536 bytes"),
        "{bad}"
    );
    server
        .get("/api/v1/secrets?scope=pipeline")
        .await
        .problem(400, "invalid-argument");

    let path = "/api/v1/secrets/pipeline/deploy/DEPLOY_TOKEN";
    let deleted = server
        .call(Method::DELETE, path, Some(&server.admin), None, &[])
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    server
        .call(Method::DELETE, path, Some(&server.admin), None, &[])
        .await
        .problem(404, "not-found");
}

#[actix_rt::test]
async fn a_run_gets_the_stored_secret_its_pipeline_names_masked_in_its_log() {
    let server = start().await;
    server.apply(USES).await;
    // Not stored yet: the start is refused and says how to store it.
    let refused = server
        .trigger("deploy", json!({}))
        .await
        .problem(409, "missing-secret");
    let detail = refused["detail"].as_str().unwrap();
    assert!(detail.contains("DEPLOY_TOKEN"), "{detail}");
    assert!(
        detail.contains("hodei secrets set DEPLOY_TOKEN --pipeline deploy"),
        "{detail}"
    );
    // A secret of another pipeline is not this one's.
    server
        .put_secret("pipeline/other/DEPLOY_TOKEN", "wrong", &server.admin)
        .await;
    server
        .trigger("deploy", json!({}))
        .await
        .problem(409, "missing-secret");

    server
        .put_secret("pipeline/deploy/DEPLOY_TOKEN", VALUE, &server.admin)
        .await;
    let created = server.trigger("deploy", json!({})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.json()["id"].as_u64().unwrap();
    let run = server.wait_run(id, finished).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let job = run["jobs"][0]["id"].as_u64().unwrap();
    let log = server.get(&format!("/api/v1/jobs/{job}/log")).await.text;
    assert!(log.contains("token=***"), "{log}");
    assert!(
        log.contains(&format!("length={}", VALUE.len())),
        "the step got the value: {log}"
    );
    assert!(!log.contains(VALUE), "{log}");
    // Neither the run, its definition nor the audit trail holds the value.
    for path in [
        format!("/api/v1/runs/{id}"),
        format!("/api/v1/runs/{id}/definition"),
        "/api/v1/events?after=0&limit=500".to_owned(),
    ] {
        let text = server.get(&path).await.text;
        assert!(!text.contains(VALUE), "{path}: {text}");
    }
}

#[actix_rt::test]
async fn a_pipeline_without_manual_in_on_starts_by_hand_only_with_an_override_that_is_recorded() {
    let server = start().await;
    let push_only = "name: pushed\non: { push: { branches: [main] } }\njobs:\n  a: { steps: [{ run: 'true' }] }\n";
    server.apply(push_only).await;
    let refused = server
        .trigger("pushed", json!({}))
        .await
        .problem(409, "start-not-allowed");
    let detail = refused["detail"].as_str().unwrap();
    assert!(detail.contains("push only"), "{detail}");
    assert!(detail.contains("override_triggers"), "{detail}");
    // Claiming another event is still a start by hand.
    server
        .trigger("pushed", json!({"event": "push", "branch": "main"}))
        .await
        .problem(409, "start-not-allowed");
    let nothing = "name: never\non: []\njobs:\n  a: { steps: [{ run: 'true' }] }\n";
    server.apply(nothing).await;
    let refused = server
        .trigger("never", json!({}))
        .await
        .problem(409, "start-not-allowed");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("allows nothing")
    );

    let (_, operator) = server.token("release-bot", "operator").await;
    let body = Some((
        "application/json",
        json!({"override_triggers": true}).to_string(),
    ));
    let created = server
        .call(
            Method::POST,
            "/api/v1/pipelines/pushed/runs",
            Some(&operator),
            body,
            &[],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.json()["id"].as_u64().unwrap();
    let run = server.wait_run(id, finished).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let all = server.get("/api/v1/events?after=0&limit=500").await.json();
    let of_run: Vec<&Value> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["event"])
        .filter(|e| e["run"] == id)
        .collect();
    let kinds: Vec<&str> = of_run.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"run_start_overridden"), "{kinds:?}");
    let first = of_run[0];
    assert_eq!(first["by"], "release-bot");
    assert_eq!(first["event"], "manual");
    assert_eq!(first["run"], id);

    // A rerun repeats the run, not its override.
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
    let all = server.get("/api/v1/events?after=0&limit=500").await.json();
    let overrides = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["type"] == "run_start_overridden")
        .count();
    assert_eq!(overrides, 1);

    // A pipeline with `manual` (or without `on:`) needs no override.
    let manual =
        "name: handy\non: { push: {}, manual: {} }\njobs:\n  a: { steps: [{ run: 'true' }] }\n";
    server.apply(manual).await;
    let created = server.trigger("handy", json!({})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
}
