//! A job's log read whole: without a `Range` header the answer is the whole log, however long.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{finished, start};

/// A log longer than a range answer may hold (8 MiB): 9 MiB of `x`, then a last line.
const LONG: &str = "\
name: long
jobs:
  print:
    steps:
      - run: head -c 9437184 /dev/zero | tr '\\0' x; echo; echo the-end
";

#[actix_rt::test]
async fn a_log_read_without_a_range_is_whole_whatever_its_size() {
    let server = start().await;
    server.apply(LONG).await;
    let run = server.trigger("long", json!({})).await.json();
    let run = server.wait_run(run["id"].as_u64().unwrap(), finished).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let job = run["jobs"][0]["id"].as_u64().unwrap();
    let path = format!("/api/v1/jobs/{job}/log");

    let whole = server
        .http
        .get(format!("{}{path}", server.base))
        .bearer_auth(&server.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    let length: u64 = whole.headers()["hodei-log-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(length > 9 * 1024 * 1024, "{length}");
    assert_eq!(whole.content_length(), Some(length));
    assert!(whole.headers().get("content-range").is_none());
    let body = whole.bytes().await.unwrap();
    assert_eq!(
        body.len() as u64,
        length,
        "the whole log, not its first 8 MiB"
    );
    assert!(
        body.ends_with(b"the-end\n"),
        "{:?}",
        &body[body.len() - 20..]
    );
    assert_eq!(body.iter().filter(|b| **b == b'x').count(), 9_437_184);

    // A range still answers one part of at most 8 MiB, saying which.
    let part = server
        .call(
            Method::GET,
            &path,
            Some(&server.admin),
            None,
            &[("range", "bytes=0-")],
        )
        .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.text.len(), 8 * 1024 * 1024);
    assert_eq!(
        part.header("content-range"),
        format!("bytes 0-{}/{length}", 8 * 1024 * 1024 - 1)
    );
    // And `?from=` reads the rest, whole.
    let rest = server
        .get(&format!("{path}?from={}", 8 * 1024 * 1024))
        .await;
    assert_eq!(rest.status, StatusCode::OK);
    assert_eq!(rest.text.len() as u64, length - 8 * 1024 * 1024);
    assert!(rest.text.ends_with("the-end\n"));
}
