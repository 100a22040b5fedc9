//! The calls to the API server, against a mock of it that checks each request and answers as
//! a cluster does (`tower-test`): the order of the calls is the contract.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use hodei_domain::ids::{JobId, RunId};
use hodei_domain::state::{Attempt, StepExit};
use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;

use super::*;
use crate::kube::pod::tests::{plain_job as job, settings};
use crate::kube::protocol::Marker;
use crate::kube::status::PodFailure;

type Handle = mock::Handle<Request<Body>, Response<Body>>;
type Send = mock::SendResponse<Response<Body>>;

const POD: &str = "hodei-store-1-run-3-job-7-1";

fn cluster() -> (Cluster, Handle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "ci");
    (Cluster::new(client, settings()), handle)
}

/// The next request: method, path and query, body (JSON, or `Null`), and where to answer.
async fn next(handle: &mut Handle) -> (Method, String, Value, Send) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(600), handle.next_request())
        .await
        .expect("likely deadlocked: no request came")
        .expect("the client is gone");
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.expect("the request's body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON body")
    };
    (parts.method, parts.uri.to_string(), body, send)
}

fn answer(send: Send, status: u16, body: Vec<u8>) {
    let response = Response::builder()
        .status(status)
        .body(Body::from(body))
        .expect("response");
    send.send_response(response);
}

fn answer_json(send: Send, status: u16, body: &Value) {
    answer(send, status, serde_json::to_vec(body).expect("json"));
}

fn not_found(send: Send, what: &str) {
    answer_json(
        send,
        404,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{what} not found"), "reason": "NotFound", "code": 404,
        }),
    );
}

fn pod_with(status: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": POD, "namespace": "ci", "uid": "uid-1" },
        "status": status,
    })
}

fn running() -> Value {
    pod_with(json!({
        "phase": "Running",
        "containerStatuses": [{ "name": "steps", "image": "busybox:1", "imageID": "",
            "ready": true, "restartCount": 0, "state": { "running": {} } }],
    }))
}

fn ended(code: i32) -> Value {
    pod_with(json!({
        "phase": "Succeeded",
        "containerStatuses": [{ "name": "steps", "image": "busybox:1", "imageID": "",
            "ready": false, "restartCount": 0,
            "state": { "terminated": { "exitCode": code, "reason": "Completed" } } }],
    }))
}

/// Creates the pod of the test job with `secrets` and the token `token-word`, on a task.
fn spawn_create(
    cluster: Cluster,
    secrets: BTreeMap<String, String>,
) -> tokio::task::JoinHandle<Result<Created, KubeError>> {
    tokio::spawn(async move {
        let spec = job();
        let job = PodJob {
            spec: &spec,
            epoch: 0,
            timeout: None,
        };
        cluster.create(job, &secrets, "token-word").await
    })
}

#[tokio::test]
async fn create_makes_the_pod_then_its_secret_owned_by_it() {
    let (cluster, mut handle) = cluster();
    let secrets = BTreeMap::from([("API_TOKEN".to_owned(), "s3cr3t".to_owned())]);
    let client = spawn_create(cluster, secrets);
    let (method, uri, body, send) = next(&mut handle).await;
    assert_eq!(
        (method, uri.split('?').next()),
        (Method::POST, Some("/api/v1/namespaces/ci/pods"))
    );
    assert_eq!(body["metadata"]["name"], POD);
    assert!(
        !body.to_string().contains("s3cr3t"),
        "a secret value in the pod"
    );
    let mut made = body.clone();
    made["metadata"]["uid"] = json!("uid-1");
    answer_json(send, 201, &made);
    let (method, uri, body, send) = next(&mut handle).await;
    assert_eq!(
        (method, uri.split('?').next()),
        (Method::POST, Some("/api/v1/namespaces/ci/secrets"))
    );
    assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    assert_eq!(body["data"]["API_TOKEN"], "czNjcjN0");
    answer_json(send, 201, &body);
    let created = client.await.expect("no panic").expect("created");
    assert_eq!(
        created,
        Created {
            name: POD.into(),
            uid: "uid-1".into()
        }
    );
}

#[tokio::test]
async fn a_secret_that_cannot_be_created_takes_the_pod_with_it() {
    let (cluster, mut handle) = cluster();
    let client = spawn_create(cluster, BTreeMap::new());
    let (_, _, body, send) = next(&mut handle).await;
    let mut made = body.clone();
    made["metadata"]["uid"] = json!("uid-1");
    answer_json(send, 201, &made);
    let (_, _, _, send) = next(&mut handle).await;
    answer_json(
        send,
        403,
        &json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "secrets is forbidden", "reason": "Forbidden", "code": 403 }),
    );
    let (method, uri, _, send) = next(&mut handle).await;
    assert_eq!(
        (method, uri.split('?').next().map(str::to_owned)),
        (
            Method::DELETE,
            Some(format!("/api/v1/namespaces/ci/pods/{POD}"))
        )
    );
    answer_json(send, 200, &made);
    let (method, uri, _, send) = next(&mut handle).await;
    assert_eq!(
        (method, uri.split('?').next().map(str::to_owned)),
        (
            Method::DELETE,
            Some(format!("/api/v1/namespaces/ci/secrets/{POD}"))
        )
    );
    not_found(send, "secret");
    let err = client.await.expect("no panic").expect_err("refused");
    assert_eq!(
        err.to_string(),
        "cannot create the pod's Secret: the API server answered 403 (Forbidden): secrets is forbidden"
    );
    assert!(!err.is_retryable());
}

#[tokio::test(start_paused = true)]
async fn an_image_that_cannot_be_pulled_ends_the_wait_in_bounded_time() {
    let (cluster, mut handle) = cluster();
    let client = tokio::spawn(async move { cluster.wait_running(POD).await });
    let pulling = pod_with(json!({
        "phase": "Pending",
        "containerStatuses": [{ "name": "steps", "image": "no-such:1", "imageID": "",
            "ready": false, "restartCount": 0,
            "state": { "waiting": { "reason": "ImagePullBackOff", "message": "Back-off pulling image" } } }],
    }));
    let mut reads = 0;
    while !client.is_finished() {
        let Ok(Some((request, send))) =
            tokio::time::timeout(Duration::from_secs(5), handle.next_request()).await
        else {
            break;
        };
        assert_eq!(
            request.uri().path(),
            format!("/api/v1/namespaces/ci/pods/{POD}")
        );
        reads += 1;
        answer_json(send, 200, &pulling);
    }
    let verdict = client.await.expect("no panic").expect("asked");
    assert!(
        matches!(&verdict, PodVerdict::Failed(PodFailure::ImagePull { image, .. }) if image == "no-such:1"),
        "{verdict:?}"
    );
    // One read a second for the 60 s of the grace, and the one that ends it.
    assert!((60..=62).contains(&reads), "{reads} reads");
}

#[tokio::test(start_paused = true)]
async fn a_pod_deleted_from_outside_ends_the_wait() {
    let (cluster, mut handle) = cluster();
    let client = tokio::spawn(async move { cluster.wait_running(POD).await });
    let (_, _, _, send) = next(&mut handle).await;
    answer_json(send, 200, &pod_with(json!({ "phase": "Pending" })));
    let (_, _, _, send) = next(&mut handle).await;
    not_found(send, "pod");
    assert_eq!(
        client.await.expect("no panic").expect("asked"),
        PodVerdict::Failed(PodFailure::Deleted)
    );
}

/// The log of the steps container as the API server sends it from `since`: each line of
/// `lines` with its time (`(seconds, nanoseconds)` after a fixed second).
fn served(lines: &[((i64, u32), Vec<u8>)], since: Option<&str>) -> Vec<u8> {
    let since = since.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .expect("since")
            .with_timezone(&Utc)
    });
    let mut out = Vec::new();
    for ((seconds, nanos), line) in lines {
        let at = DateTime::<Utc>::from_timestamp(1_796_000_000 + seconds, *nanos).expect("time");
        if since.is_some_and(|since| at < since) {
            continue;
        }
        out.extend(at.to_rfc3339_opts(SecondsFormat::AutoSi, true).into_bytes());
        out.push(b' ');
        out.extend(line);
    }
    out
}

fn query(uri: &str) -> Vec<(String, String)> {
    let query = uri.split_once('?').map_or("", |(_, q)| q);
    url_pairs(query)
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k.to_owned(), v.replace("%3A", ":"))
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_dropped_log_stream_resumes_without_a_gap_or_a_duplicate() {
    const TOKEN: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let mut log = Marker::Ready.line(TOKEN);
    log.extend(
        Marker::Start {
            index: 0,
            attempt: 1,
        }
        .line(TOKEN),
    );
    log.extend(b"first line\nsecond line\nthird\n");
    log.extend(Marker::end(0, 1, StepExit::code(0)).line(TOKEN));
    // Its lines, several at one time, across three seconds.
    let lines: Vec<((i64, u32), Vec<u8>)> = log
        .split_inclusive(|b| *b == b'\n')
        .enumerate()
        .map(|(i, line)| {
            let i = i64::try_from(i).expect("few");
            ((i / 3, 500), line.to_vec())
        })
        .collect();
    let (cluster, mut handle) = cluster();
    let frames = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&frames);
    let client = tokio::spawn(async move {
        let mut cursor = LogCursor::new();
        let mut on_frame = move |frame: Frame| seen.lock().expect("frames").push(frame);
        cluster.follow(POD, TOKEN, &mut cursor, &mut on_frame).await
    });

    let (method, uri, _, send) = next(&mut handle).await;
    assert_eq!(method, Method::GET);
    assert!(
        uri.starts_with(&format!("/api/v1/namespaces/ci/pods/{POD}/log?")),
        "{uri}"
    );
    let params = query(&uri);
    for wanted in [
        ("container", "steps"),
        ("follow", "true"),
        ("timestamps", "true"),
    ] {
        assert!(
            params.contains(&(wanted.0.into(), wanted.1.into())),
            "{uri}"
        );
    }
    assert!(!params.iter().any(|(k, _)| k == "sinceTime"), "{uri}");
    // The stream drops in the middle of a line of the step's output.
    let whole = served(&lines, None);
    let cut = whole
        .windows(6)
        .position(|w| w == b"second")
        .expect("the second line")
        + 3;
    answer(send, 200, whole[..cut].to_vec());

    let (_, uri, _, send) = next(&mut handle).await;
    assert_eq!(
        uri.split('?').next().map(str::to_owned),
        Some(format!("/api/v1/namespaces/ci/pods/{POD}"))
    );
    answer_json(send, 200, &running());

    let (_, uri, _, send) = next(&mut handle).await;
    let since = query(&uri)
        .into_iter()
        .find(|(k, _)| k == "sinceTime")
        .map(|(_, v)| v)
        .expect("the second stream starts at a time");
    assert!(query(&uri).contains(&("follow".into(), "true".into())));
    answer(send, 200, served(&lines, Some(&since)));

    let (_, _, _, send) = next(&mut handle).await;
    answer_json(send, 200, &ended(0));
    // The last read, not followed, repeats what came: nothing new.
    let (_, uri, _, send) = next(&mut handle).await;
    assert!(
        !query(&uri).contains(&("follow".into(), "true".into())),
        "{uri}"
    );
    let since = query(&uri)
        .into_iter()
        .find(|(k, _)| k == "sinceTime")
        .map(|(_, v)| v);
    answer(send, 200, served(&lines, since.as_deref()));

    let verdict = client.await.expect("no panic").expect("followed");
    assert_eq!(verdict, PodVerdict::Ended(StepExit::code(0)));
    let frames = frames.lock().expect("frames").clone();
    let mut output = Vec::new();
    let mut markers = Vec::new();
    for frame in frames {
        match frame {
            Frame::Output(bytes) => output.extend(bytes),
            Frame::Marker(marker) => markers.push(marker),
        }
    }
    assert_eq!(
        markers,
        [
            Marker::Ready,
            Marker::Start {
                index: 0,
                attempt: 1
            },
            Marker::end(0, 1, StepExit::code(0))
        ]
    );
    assert_eq!(output, b"first line\nsecond line\nthird\n");
}

fn listed(kind: &str, names: &[(&str, PodKey)]) -> Value {
    let items: Vec<Value> = names
        .iter()
        .map(|(name, key)| {
            json!({ "apiVersion": "v1", "kind": kind,
                "metadata": { "name": name, "namespace": "ci",
                    "labels": crate::kube::labels("store-1", *key) } })
        })
        .collect();
    json!({ "apiVersion": "v1", "kind": format!("{kind}List"), "metadata": {}, "items": items })
}

#[tokio::test]
async fn reap_adopts_live_pods_and_deletes_the_rest() {
    let key = |job: u64, epoch: u64| PodKey {
        run: RunId(3),
        job: JobId(job),
        attempt: Attempt::new(1).expect("attempt"),
        epoch,
    };
    let (live, stale) = (key(7, 2), key(8, 1));
    let (cluster, mut handle) = cluster();
    let client = tokio::spawn(async move { cluster.reap(&[live, key(8, 2)]).await });
    let (method, uri, _, send) = next(&mut handle).await;
    assert_eq!(method, Method::GET);
    assert!(uri.starts_with("/api/v1/namespaces/ci/pods?"), "{uri}");
    assert!(
        uri.contains("labelSelector=hodei.io%2Finstance%3Dstore-1"),
        "{uri}"
    );
    answer_json(
        send,
        200,
        &listed("Pod", &[("live", live), ("stale", stale)]),
    );
    let (_, uri, _, send) = next(&mut handle).await;
    assert!(uri.starts_with("/api/v1/namespaces/ci/secrets?"), "{uri}");
    answer_json(
        send,
        200,
        &listed("Secret", &[("live", live), ("stale", stale)]),
    );
    let (method, uri, _, send) = next(&mut handle).await;
    assert_eq!(
        (method, uri.split('?').next()),
        (Method::DELETE, Some("/api/v1/namespaces/ci/pods/stale"))
    );
    not_found(send, "pod");
    let (method, uri, _, send) = next(&mut handle).await;
    assert_eq!(
        (method, uri.split('?').next()),
        (Method::DELETE, Some("/api/v1/namespaces/ci/secrets/stale"))
    );
    answer_json(
        send,
        200,
        &listed("Secret", &[("stale", stale)])["items"][0],
    );
    let moves = client.await.expect("no panic").expect("reaped");
    assert_eq!(
        moves,
        [
            Move::Adopt {
                key: live,
                pod: "live".into()
            },
            Move::Delete {
                kind: Kind::Pod,
                name: "stale".into()
            },
            Move::Delete {
                kind: Kind::Secret,
                name: "stale".into()
            },
        ]
    );
}

#[tokio::test]
async fn an_api_server_that_cannot_be_reached_is_retryable() {
    let (cluster, handle) = cluster();
    drop(handle);
    let err = cluster.delete(POD).await.expect_err("no server");
    assert!(err.is_retryable(), "{err}");
    assert!(
        err.to_string()
            .starts_with("cannot reach the Kubernetes API server to delete the pod"),
        "{err}"
    );
}

#[test]
fn tokens_are_random_hex_words() {
    let (a, b) = (new_token().expect("token"), new_token().expect("token"));
    assert_eq!(a.len(), 32);
    assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b);
}
