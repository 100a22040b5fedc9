//! Artifacts through the API on the local provider: kept by one job, given to the job that
//! needs it, listed and downloaded; and shown with download links on the console's run page.

use reqwest::StatusCode;
use serde_json::json;

use super::{finished, start};

const BUILD_AND_TEST: &str = "\
name: arts
jobs:
  build:
    steps:
      - run: mkdir -p dist/css && printf 'app v1' > dist/app.js && echo a > dist/css/a.css && echo no > notes.txt
    artifacts: [dist]
  test:
    needs: [build]
    steps:
      - run: test \"$(cat dist/app.js)\" = 'app v1' && test -f dist/css/a.css && test ! -f notes.txt
";

#[actix_rt::test]
async fn artifacts_pass_between_jobs_and_are_listed_and_downloaded() {
    let server = start().await;
    server.apply(BUILD_AND_TEST).await;
    let run = server.trigger("arts", json!({})).await.json()["id"]
        .as_u64()
        .unwrap();
    let record = server.wait_run(run, finished).await;
    assert_eq!(record["state"], "succeeded", "{record:#}");
    let listed = server
        .get(&format!("/api/v1/runs/{run}/artifacts"))
        .await
        .json();
    let artifacts = listed["artifacts"].as_array().unwrap();
    let paths: Vec<&str> = artifacts
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["dist/app.js", "dist/css/a.css"]);
    assert_eq!(artifacts[0]["job"], "build");
    assert_eq!(artifacts[0]["size"], 6);
    let url = artifacts[0]["url"].as_str().unwrap();
    let file = server.get(url).await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(file.text, "app v1");
    assert_eq!(file.header("content-type"), "application/octet-stream");
    let job = artifacts[0]["job_id"].as_u64().unwrap();
    server
        .get(&format!(
            "/api/v1/runs/{run}/artifacts/{job}?path=notes.txt"
        ))
        .await
        .problem(404, "not-found");
    server
        .get("/api/v1/runs/999999/artifacts")
        .await
        .problem(404, "not-found");
}

#[actix_rt::test]
async fn a_retry_gives_the_artifacts_of_carried_over_jobs_to_the_jobs_that_need_them() {
    let server = start().await;
    let marker = server._dir.path().join("tried-once");
    let yaml = format!(
        "name: flaky\njobs:\n  build:\n    steps:\n      - run: mkdir -p dist && echo built > dist/app.js\n    artifacts: [dist]\n  test:\n    needs: [build]\n    steps:\n      - run: cat dist/app.js && if [ ! -e '{marker}' ]; then touch '{marker}'; exit 1; fi\n",
        marker = marker.display()
    );
    server.apply(&yaml).await;
    let first = server.trigger("flaky", json!({})).await.json()["id"]
        .as_u64()
        .unwrap();
    assert_eq!(server.wait_run(first, finished).await["state"], "failed");
    let retried = server
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/runs/{first}/retry"),
            Some(&server.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(retried.status, StatusCode::CREATED, "{}", retried.text);
    let retry = retried.json()["id"].as_u64().unwrap();
    let record = server.wait_run(retry, finished).await;
    assert_eq!(record["state"], "succeeded", "{record:#}");
    let listed = server
        .get(&format!("/api/v1/runs/{retry}/artifacts"))
        .await
        .json();
    assert_eq!(listed["artifacts"][0]["path"], "dist/app.js", "{listed:#}");
    let file = server
        .get(listed["artifacts"][0]["url"].as_str().unwrap())
        .await;
    assert_eq!(file.text, "built\n");
}
