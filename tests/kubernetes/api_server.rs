//! The HTTP half of the fake cluster: what Hodei's kube client uses of the Kubernetes API,
//! served over real HTTP/1 on a loopback port, with every pod run on the Docker engine by
//! [`DockerPod`]. Pods: create, get, list by label, delete (their Secrets go with them, as the
//! cluster's garbage collector does); `pods/log` with `container`, `follow`, `timestamps` and
//! `sinceTime` (from `docker logs`); `pods/attach` for standard input (a WebSocket of the
//! `v4.channel.k8s.io` protocol, through `docker attach`); Secrets: create, get, list by
//! label, delete. A pod starts once
//! its Secret exists, as a kubelet mounts it. Fault injection: the next followed log stream can
//! be cut after a number of bytes ([`FakeApi::drop_next_log_after`]), and every request answered
//! `503` for a while ([`FakeApi::set_down`]). Anything else is answered
//! `404` with a Status, as an API server does for what it does not serve.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{Pod, Secret};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::docker_pod::DockerPod;

type Body = BoxBody<Bytes, Infallible>;

/// A fake API server and the pods it runs; they go when it is dropped.
pub struct FakeApi {
    pub url: String,
    state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
}

struct State {
    objects: Mutex<Objects>,
    /// Where pods' volumes go.
    dir: PathBuf,
    /// The prefix of every container name of this server's pods.
    prefix: String,
    drop_log_after: Mutex<Option<usize>>,
    /// Every request is answered `503` while set, as an API server that is away.
    down: std::sync::atomic::AtomicBool,
    /// Every log request's query, in order.
    log_requests: Mutex<Vec<String>>,
    /// The pod of every attach, in order.
    attaches: Mutex<Vec<String>>,
}

#[derive(Default)]
struct Objects {
    pods: BTreeMap<String, Stored>,
    secrets: BTreeMap<String, Secret>,
    next_uid: u64,
}

struct Stored {
    pod: Pod,
    /// Started on the engine; `None` while it waits for its Secret or starts.
    running: Option<Arc<DockerPod>>,
    starting: bool,
}

impl FakeApi {
    /// Listens on a free loopback port; pods' volumes under `dir`, containers named
    /// `<prefix>-<pod>-<container>`.
    pub async fn start(dir: PathBuf, prefix: &str) -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(State {
            objects: Mutex::new(Objects::default()),
            dir,
            prefix: prefix.to_owned(),
            drop_log_after: Mutex::new(None),
            down: std::sync::atomic::AtomicBool::new(false),
            log_requests: Mutex::new(Vec::new()),
            attaches: Mutex::new(Vec::new()),
        });
        let served = Arc::clone(&state);
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = Arc::clone(&served);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(serve(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        FakeApi { url, state, server }
    }

    /// A kube client of this server, in namespace `ci`.
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url.parse().expect("url"));
        config.default_namespace = "ci".into();
        kube::Client::try_from(config).expect("a kube client")
    }

    /// Answers every request `503` (`down`), as an API server that is away, or serves again.
    pub fn set_down(&self, down: bool) {
        self.state
            .down
            .store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// Cuts the next followed log stream after `bytes` bytes.
    pub fn drop_next_log_after(&self, bytes: usize) {
        *self.state.drop_log_after.lock().expect("lock") = Some(bytes);
    }

    /// The queries of the log requests so far.
    pub fn log_requests(&self) -> Vec<String> {
        self.state.log_requests.lock().expect("lock").clone()
    }

    /// The pod of every attach so far.
    pub fn attaches(&self) -> Vec<String> {
        self.state.attaches.lock().expect("lock").clone()
    }

    /// The engine's name of a pod's container, once it runs.
    pub fn container(&self, pod: &str, container: &str) -> Option<String> {
        let objects = self.state.objects.lock().expect("lock");
        let running = objects.pods.get(pod)?.running.clone()?;
        running.container(container).map(str::to_owned)
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
        // The pods' containers go with their DockerPods.
        let pods = std::mem::take(&mut self.state.objects.lock().expect("lock").pods);
        drop(pods);
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("response")
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(
        code,
        &json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16() }),
    )
}

/// `%XX` decoded.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(request: &Request<Incoming>) -> BTreeMap<String, String> {
    request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Whether `labels` match a selector of `key=value` pairs separated by commas.
fn selected(labels: Option<&BTreeMap<String, String>>, selector: Option<&String>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    selector.split(',').all(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        labels
            .and_then(|l| l.get(k))
            .is_some_and(|value| value == v)
    })
}

/// The request's body, read as a `T` (a malformed one is a bug of the client under test).
async fn body_json<T: serde::de::DeserializeOwned>(request: Request<Incoming>) -> T {
    let body = request
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    serde_json::from_slice(&body).expect("a JSON object of the expected kind")
}

async fn serve(state: &Arc<State>, request: Request<Incoming>) -> Response<Body> {
    let path: Vec<String> = request
        .uri()
        .path()
        .trim_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect();
    let parts: Vec<&str> = path.iter().map(String::as_str).collect();
    let method = request.method().clone();
    if state.down.load(std::sync::atomic::Ordering::SeqCst) {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the API server is down (set by the test)",
        );
    }
    let query = query(&request);
    match (method, parts.as_slice()) {
        (Method::POST, ["api", "v1", "namespaces", _, "pods"]) => {
            let pod: Pod = body_json(request).await;
            create_pod(state, pod)
        }
        (Method::POST, ["api", "v1", "namespaces", _, "secrets"]) => {
            let secret: Secret = body_json(request).await;
            create_secret(state, secret)
        }
        (Method::GET, ["api", "v1", "namespaces", _, "pods"]) => {
            let listed: Vec<(Pod, Option<Arc<DockerPod>>)> = {
                let objects = state.objects.lock().expect("lock");
                objects
                    .pods
                    .values()
                    .filter(|stored| {
                        selected(
                            stored.pod.metadata.labels.as_ref(),
                            query.get("labelSelector"),
                        )
                    })
                    .map(|stored| (stored.pod.clone(), stored.running.clone()))
                    .collect()
            };
            // As a cluster lists them: with their status.
            let mut items = Vec::with_capacity(listed.len());
            for (pod, running) in listed {
                items.push(with_status(pod, running).await);
            }
            json_response(
                StatusCode::OK,
                &json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items }),
            )
        }
        (Method::GET, ["api", "v1", "namespaces", _, "secrets"]) => {
            let objects = state.objects.lock().expect("lock");
            let items: Vec<&Secret> = objects
                .secrets
                .values()
                .filter(|s| selected(s.metadata.labels.as_ref(), query.get("labelSelector")))
                .collect();
            json_response(
                StatusCode::OK,
                &json!({ "apiVersion": "v1", "kind": "SecretList", "metadata": {}, "items": items }),
            )
        }
        (Method::GET, ["api", "v1", "namespaces", _, "pods", name]) => get_pod(state, name).await,
        (Method::GET, ["api", "v1", "namespaces", _, "secrets", name]) => {
            match state.objects.lock().expect("lock").secrets.get(*name) {
                Some(secret) => json_response(StatusCode::OK, &json!(secret)),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("secrets \"{name}\" not found"),
                ),
            }
        }
        (Method::DELETE, ["api", "v1", "namespaces", _, "pods", name]) => delete_pod(state, name),
        (Method::DELETE, ["api", "v1", "namespaces", _, "secrets", name]) => {
            match state.objects.lock().expect("lock").secrets.remove(*name) {
                Some(secret) => json_response(StatusCode::OK, &json!(secret)),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("secrets \"{name}\" not found"),
                ),
            }
        }
        (Method::GET, ["api", "v1", "namespaces", _, "pods", name, "log"]) => {
            state
                .log_requests
                .lock()
                .expect("lock")
                .push(request.uri().query().unwrap_or("").to_owned());
            log(state, name, &query)
        }
        (Method::GET, ["api", "v1", "namespaces", _, "pods", name, "attach"]) => {
            let name = (*name).to_owned();
            attach(state, &name, &query, request)
        }
        (method, _) => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!(
                "the fake API server does not serve {method} {}",
                request.uri()
            ),
        ),
    }
}

fn create_pod(state: &Arc<State>, mut pod: Pod) -> Response<Body> {
    let name = pod.metadata.name.clone().expect("a name");
    let mut objects = state.objects.lock().expect("lock");
    if objects.pods.contains_key(&name) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("pods \"{name}\" already exists"),
        );
    }
    objects.next_uid += 1;
    pod.metadata.uid = Some(format!("uid-{}", objects.next_uid));
    let made = pod.clone();
    objects.pods.insert(
        name.clone(),
        Stored {
            pod,
            running: None,
            starting: false,
        },
    );
    drop(objects);
    start_if_ready(state, &name);
    json_response(StatusCode::CREATED, &json!(made))
}

fn create_secret(state: &Arc<State>, secret: Secret) -> Response<Body> {
    let name = secret.metadata.name.clone().expect("a name");
    let mut objects = state.objects.lock().expect("lock");
    if objects.secrets.contains_key(&name) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("secrets \"{name}\" already exists"),
        );
    }
    objects.secrets.insert(name.clone(), secret.clone());
    let owners: Vec<String> = secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .map(|owner| owner.name.clone())
        .collect();
    drop(objects);
    for owner in owners {
        start_if_ready(state, &owner);
    }
    json_response(StatusCode::CREATED, &json!(secret))
}

/// Starts the pod `name` on the engine once the Secret its volume names exists.
fn start_if_ready(state: &Arc<State>, name: &str) {
    let mut objects = state.objects.lock().expect("lock");
    let Objects { pods, secrets, .. } = &mut *objects;
    let Some(stored) = pods.get_mut(name) else {
        return;
    };
    let spec = stored.pod.spec.iter();
    let by_env = spec
        .clone()
        .flat_map(|spec| spec.containers.iter())
        .flat_map(|c| c.env.iter().flatten())
        .find_map(|var| {
            Some(
                var.value_from
                    .as_ref()?
                    .secret_key_ref
                    .as_ref()?
                    .name
                    .clone(),
            )
        });
    let wanted = spec
        .flat_map(|spec| spec.volumes.iter().flatten())
        .find_map(|v| v.secret.as_ref().and_then(|s| s.secret_name.clone()))
        .or(by_env);
    let secret = match wanted {
        Some(wanted) => match secrets.get(&wanted) {
            Some(secret) => secret.clone(),
            None => return,
        },
        None => Secret::default(),
    };
    if stored.starting || stored.running.is_some() {
        return;
    }
    stored.starting = true;
    let pod = stored.pod.clone();
    let state = Arc::clone(state);
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        let dir = state.dir.join(&name);
        let running = Arc::new(DockerPod::run(
            &pod,
            &secret,
            &dir,
            &format!("{}-{name}", state.prefix),
        ));
        let mut objects = state.objects.lock().expect("lock");
        // A pod deleted while it started: its containers go with `running`.
        if let Some(stored) = objects.pods.get_mut(&name) {
            stored.running = Some(running);
        }
    });
}

async fn get_pod(state: &Arc<State>, name: &str) -> Response<Body> {
    let (pod, running) = {
        let objects = state.objects.lock().expect("lock");
        match objects.pods.get(name) {
            Some(stored) => (stored.pod.clone(), stored.running.clone()),
            None => {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("pods \"{name}\" not found"),
                );
            }
        }
    };
    json_response(StatusCode::OK, &json!(with_status(pod, running).await))
}

/// The pod with its status read from the engine (`Pending` until its containers run).
async fn with_status(mut pod: Pod, running: Option<Arc<DockerPod>>) -> Pod {
    pod.status = Some(match running {
        Some(running) => tokio::task::spawn_blocking(move || running.status())
            .await
            .expect("status"),
        None => serde_json::from_value(json!({ "phase": "Pending" })).expect("status"),
    });
    pod
}

fn delete_pod(state: &Arc<State>, name: &str) -> Response<Body> {
    let mut objects = state.objects.lock().expect("lock");
    let Some(stored) = objects.pods.remove(name) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pods \"{name}\" not found"),
        );
    };
    // The garbage collector: what the pod owned goes with it.
    let uid = stored.pod.metadata.uid.clone();
    objects.secrets.retain(|_, secret| {
        !secret
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|owner| Some(&owner.uid) == uid.as_ref())
    });
    drop(objects);
    let pod = stored.pod.clone();
    tokio::task::spawn_blocking(move || drop(stored));
    json_response(StatusCode::OK, &json!(pod))
}

fn log(state: &Arc<State>, name: &str, query: &BTreeMap<String, String>) -> Response<Body> {
    let container = query.get("container").cloned().unwrap_or_default();
    let running = {
        let objects = state.objects.lock().expect("lock");
        match objects.pods.get(name) {
            Some(stored) => stored.running.clone(),
            None => {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("pods \"{name}\" not found"),
                );
            }
        }
    };
    let Some(engine) = running
        .as_ref()
        .and_then(|r| r.container(&container))
        .map(str::to_owned)
    else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("container \"{container}\" in pod \"{name}\" is waiting to start"),
        );
    };
    let follow = query.get("follow").is_some_and(|v| v == "true");
    let mut command = tokio::process::Command::new("docker");
    command.arg("logs");
    if query.get("timestamps").is_some_and(|v| v == "true") {
        command.arg("--timestamps");
    }
    if follow {
        command.arg("--follow");
    }
    if let Some(since) = query.get("sinceTime") {
        command.args(["--since", since]);
    }
    command
        .arg(&engine)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let cut = if follow {
        state.drop_log_after.lock().expect("lock").take()
    } else {
        None
    };
    let (send, receive) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        let mut child = command.spawn().expect("docker logs");
        let mut stdout = child.stdout.take().expect("stdout");
        let mut sent = 0;
        let mut buf = vec![0; 8192];
        loop {
            let n = match stdout.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let n = cut.map_or(n, |cut| n.min(cut - sent));
            if send
                .send(Ok(Frame::data(Bytes::copy_from_slice(&buf[..n]))))
                .await
                .is_err()
            {
                break;
            }
            sent += n;
            if cut == Some(sent) {
                break;
            }
        }
        let _ = child.kill().await;
    });
    let stream = tokio_stream_of(receive);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("response")
}

/// `pods/attach` for standard input: a WebSocket of the `v4.channel.k8s.io` protocol whose
/// channel 0 goes to the container's standard input (through `docker attach`).
fn attach(
    state: &Arc<State>,
    name: &str,
    query: &BTreeMap<String, String>,
    request: Request<Incoming>,
) -> Response<Body> {
    use futures_util::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    use tokio_tungstenite::tungstenite::protocol::{Message, Role};

    let container = query.get("container").cloned().unwrap_or_default();
    let engine = {
        let objects = state.objects.lock().expect("lock");
        match objects.pods.get(name) {
            Some(stored) => stored
                .running
                .as_ref()
                .and_then(|r| r.container(&container))
                .map(str::to_owned),
            None => {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("pods \"{name}\" not found"),
                );
            }
        }
    };
    let Some(engine) = engine else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("container \"{container}\" in pod \"{name}\" is not running"),
        );
    };
    let Some(key) = request.headers().get("sec-websocket-key").cloned() else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "not a WebSocket upgrade",
        );
    };
    state.attaches.lock().expect("lock").push(name.to_owned());
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(request).await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        let mut child = tokio::process::Command::new("docker")
            .args(["attach", "--sig-proxy=false", &engine])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("docker attach");
        let mut stdin = child.stdin.take().expect("stdin");
        while let Some(Ok(message)) = ws.next().await {
            let data = match message {
                Message::Binary(data) if data.first() == Some(&0) => data,
                Message::Close(_) => break,
                _ => continue,
            };
            let written = async {
                stdin.write_all(&data[1..]).await?;
                stdin.flush().await
            };
            if written.await.is_err() {
                break;
            }
        }
        let _ = child.kill().await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", accept)
        .header("sec-websocket-protocol", "v4.channel.k8s.io")
        .body(Full::new(Bytes::new()).boxed())
        .expect("response")
}

/// A receiver as a stream of body frames.
fn tokio_stream_of(
    mut receive: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Sync + 'static {
    futures_util::stream::poll_fn(move |cx| receive.poll_recv(cx))
}
