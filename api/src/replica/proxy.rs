//! Forwarding from a follower to the leader: plain requests with their bodies streamed both
//! ways, and WebSockets relayed frame by frame.
//!
//! ## Guarantees
//! - The leader sees the caller's own method, path, query, headers (its credentials) and body;
//!   `X-Forwarded-For`, `X-Forwarded-Host` and `X-Forwarded-Proto` say where the request came
//!   from, so that links the leader makes point where the client called.
//! - A request is forwarded once: a replica that receives a forwarded request and does not
//!   lead answers `503 no-leader` instead of forwarding it again.
//! - No leader, or one that cannot be reached: `503` problem+json with `Retry-After: 1`; a
//!   request whose answer had begun is cut (the client sees a broken answer, never a wrong one).

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite;

use super::Follower;
use crate::error::ApiError;

/// The header that marks a forwarded request.
pub const FORWARDED_BY: &str = "x-hodei-forwarded-by";

/// Headers that belong to one connection, never forwarded.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

fn hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
}

fn no_leader(reason: String) -> HttpResponse {
    let mut answer = actix_web::ResponseError::error_response(&ApiError::NoLeader { reason });
    answer
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    answer
}

/// Forwards any request the follower does not serve itself to the leader.
pub async fn forward(
    req: HttpRequest,
    body: web::Payload,
    follower: web::Data<Follower>,
) -> HttpResponse {
    if let Some(by) = req.headers().get(FORWARDED_BY) {
        return no_leader(format!(
            "this replica does not lead (the request was forwarded by {})",
            by.to_str().unwrap_or("another replica")
        ));
    }
    let Some(leader) = follower.leader() else {
        return no_leader(
            "no replica leads right now: one takes over when the last leader's lease runs out"
                .into(),
        );
    };
    let base = leader.address.trim_end_matches('/');
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let websocket = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if websocket {
        return relay(&req, body, &follower, base, &path, &leader.holder).await;
    }
    let url = format!("{base}{path}");
    let method = match reqwest::Method::from_bytes(req.method().as_str().as_bytes()) {
        Ok(method) => method,
        Err(_) => return HttpResponse::MethodNotAllowed().finish(),
    };
    let mut request = follower.client.request(method, &url);
    for (name, value) in req.headers() {
        if !hop_by_hop(name.as_str()) {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    request = request
        .headers(forwarded_headers(&req, &follower.cluster.replica))
        .body(reqwest::Body::wrap_stream(sendable(body)));
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(err) => {
            return no_leader(format!(
                "the leader {} at {base} cannot be reached: {err}",
                leader.holder
            ));
        }
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = HttpResponse::build(status);
    for (name, value) in answer.headers() {
        if hop_by_hop(name.as_str()) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            response.append_header((name, value));
        }
    }
    let stream = answer
        .bytes_stream()
        .map(|chunk| chunk.map_err(actix_web::error::ErrorBadGateway));
    response.streaming(stream)
}

/// `X-Forwarded-*` for the leader, and the mark of a forwarded request.
fn forwarded_headers(req: &HttpRequest, replica: &str) -> reqwest::header::HeaderMap {
    let info = req.connection_info();
    let mut headers = reqwest::header::HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(value) = reqwest::header::HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    if let Some(peer) = info.realip_remote_addr() {
        put("x-forwarded-for", peer);
    }
    put("x-forwarded-host", info.host());
    put("x-forwarded-proto", info.scheme());
    put(FORWARDED_BY, replica);
    headers
}

/// The request's body as a stream that may cross threads: actix's payload stays on its
/// worker, and its chunks reach the client through a channel.
fn sendable(
    mut body: web::Payload,
) -> impl futures_util::Stream<Item = Result<web::Bytes, std::io::Error>> + Send + Sync + 'static {
    let (chunks, receiver) = tokio::sync::mpsc::channel::<Result<web::Bytes, std::io::Error>>(4);
    actix_web::rt::spawn(async move {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|err| std::io::Error::other(err.to_string()));
            let failed = chunk.is_err();
            if chunks.send(chunk).await.is_err() || failed {
                return;
            }
        }
    });
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    })
}

/// Relays a WebSocket: connects to the leader first (so that a refusal is an HTTP answer the
/// client can act on), then accepts the client's upgrade and pumps frames both ways until
/// either side closes.
async fn relay(
    req: &HttpRequest,
    body: web::Payload,
    follower: &Follower,
    base: &str,
    path: &str,
    holder: &str,
) -> HttpResponse {
    let url = match base.split_once("://") {
        Some(("https", rest)) => format!("wss://{rest}{path}"),
        Some((_, rest)) => format!("ws://{rest}{path}"),
        None => format!("ws://{base}{path}"),
    };
    let mut upstream = match tungstenite::client::IntoClientRequest::into_client_request(&url) {
        Ok(request) => request,
        Err(err) => return no_leader(format!("the leader's address {base} is unusable: {err}")),
    };
    let mut put = |name: &str, value: &[u8]| {
        if let (Ok(name), Ok(value)) = (
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()),
            tungstenite::http::HeaderValue::from_bytes(value),
        ) {
            upstream.headers_mut().insert(name, value);
        }
    };
    for name in [header::AUTHORIZATION, header::COOKIE] {
        if let Some(value) = req.headers().get(&name) {
            put(name.as_str(), value.as_bytes());
        }
    }
    for (name, value) in &forwarded_headers(req, &follower.cluster.replica) {
        put(name.as_str(), value.as_bytes());
    }
    let connected = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio_tungstenite::connect_async(upstream),
    )
    .await;
    let leader = match connected {
        Ok(Ok((leader, _))) => leader,
        Ok(Err(tungstenite::Error::Http(answer))) => {
            // The leader refused the upgrade (a 401, a 404, a 503): its answer, as it is.
            let status =
                StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut response = HttpResponse::build(status);
            for (name, value) in answer.headers() {
                if !hop_by_hop(name.as_str()) {
                    response.append_header((name.as_str(), value.as_bytes()));
                }
            }
            return response.body(answer.into_body().unwrap_or_default());
        }
        Ok(Err(err)) => {
            return no_leader(format!(
                "the leader {holder} at {base} cannot be reached: {err}"
            ));
        }
        Err(_) => {
            return no_leader(format!(
                "the leader {holder} at {base} did not answer within 5 s"
            ));
        }
    };
    let (response, mut session, mut incoming) = match actix_ws::handle(req, body) {
        Ok(upgraded) => upgraded,
        Err(err) => return err.error_response(),
    };
    actix_web::rt::spawn(async move {
        let (mut to_leader, mut from_leader) = leader.split();
        loop {
            tokio::select! {
                message = incoming.next() => {
                    let forwarded = match message {
                        Some(Ok(actix_ws::Message::Text(text))) => tungstenite::Message::text(text.to_string()),
                        Some(Ok(actix_ws::Message::Binary(bytes))) => tungstenite::Message::binary(bytes),
                        Some(Ok(actix_ws::Message::Ping(bytes))) => tungstenite::Message::Ping(bytes),
                        Some(Ok(actix_ws::Message::Pong(bytes))) => tungstenite::Message::Pong(bytes),
                        Some(Ok(actix_ws::Message::Continuation(_) | actix_ws::Message::Nop)) => continue,
                        Some(Ok(actix_ws::Message::Close(_))) | Some(Err(_)) | None => {
                            let _ = to_leader.send(tungstenite::Message::Close(None)).await;
                            break;
                        }
                    };
                    if to_leader.send(forwarded).await.is_err() {
                        let _ = session.clone().close(None).await;
                        break;
                    }
                }
                message = from_leader.next() => {
                    let sent = match message {
                        Some(Ok(tungstenite::Message::Text(text))) => session.text(text.as_str().to_owned()).await,
                        Some(Ok(tungstenite::Message::Binary(bytes))) => session.binary(bytes).await,
                        Some(Ok(tungstenite::Message::Ping(bytes))) => session.ping(&bytes).await,
                        Some(Ok(tungstenite::Message::Pong(bytes))) => session.pong(&bytes).await,
                        Some(Ok(tungstenite::Message::Frame(_))) => Ok(()),
                        Some(Ok(tungstenite::Message::Close(frame))) => {
                            let reason = frame.map(|f| actix_ws::CloseReason {
                                code: u16::from(f.code).into(),
                                description: Some(f.reason.as_str().to_owned()),
                            });
                            let _ = session.close(reason).await;
                            break;
                        }
                        Some(Err(_)) | None => {
                            // The leader went away: the client reconnects (to a new leader).
                            let _ = session.close(Some(actix_ws::CloseReason {
                                code: actix_ws::CloseCode::Away,
                                description: Some("the leader went away".into()),
                            })).await;
                            break;
                        }
                    };
                    if sent.is_err() {
                        let _ = to_leader.send(tungstenite::Message::Close(None)).await;
                        break;
                    }
                }
            }
        }
    });
    response
}
