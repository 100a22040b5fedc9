//! Following the server's WebSocket streams: a job's log and domain events, over connections
//! that may drop. A follower reconnects by itself, with backoff, and a log follower resumes from
//! the byte it has reached, so that the bytes it yields are the log exactly: nothing missing,
//! nothing twice, whatever happened to the connections in between.
//!
//! A connection that goes quiet is probed with pings; one that answers nothing for
//! [`Reconnect::silence`] counts as dropped (a cable pulled does not close a TCP connection).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hodei_domain::state::DomainEvent;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{Client, ClientError};
use crate::error::Problem;

pub(super) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a follower tries again after a dropped connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// The first wait; each next one doubles, up to `max_wait`.
    pub first_wait: Duration,
    pub max_wait: Duration,
    /// How long the server may stay unreachable before the follower gives up.
    pub give_up_after: Duration,
    /// How long a connection may stay silent, pings unanswered, before it counts as dropped.
    pub silence: Duration,
}

impl Default for Reconnect {
    fn default() -> Reconnect {
        Reconnect {
            first_wait: Duration::from_millis(200),
            max_wait: Duration::from_secs(5),
            give_up_after: Duration::from_secs(600),
            silence: Duration::from_secs(45),
        }
    }
}

/// The frames of the server's streams (see `hodei_api::stream`).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Frame {
    /// `data` when the bytes are UTF-8, `data_base64` when they are not.
    Log {
        offset: u64,
        bytes: u64,
        #[serde(default)]
        data: Option<String>,
        #[serde(default)]
        data_base64: Option<String>,
    },
    /// Carries `resume_from` for a log: the follower resumes from what it has, which is that.
    Lagged {},
    End {
        state: String,
        offset: u64,
    },
    Event {
        event: Box<crate::time::ApiEvent>,
    },
}

/// What a log follower yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogItem {
    /// The log's bytes from `offset`: always where the previous ones ended.
    Output { offset: u64, bytes: Vec<u8> },
    /// The job is over with this state (`succeeded`, `failed`, …); its log is `length` bytes.
    End { state: String, length: u64 },
    /// The connection dropped; the follower waits, then reconnects from `from`.
    Reconnecting {
        attempt: u32,
        from: u64,
        reason: String,
    },
}

/// The bytes a log frame carries: its `data` text or its `data_base64`, `bytes` long.
fn log_bytes(data: Option<String>, base64: Option<String>, bytes: u64) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let data = match (data, base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(&encoded)
            .map_err(|err| format!("a log frame's `data_base64` is not base64: {err}"))?,
        _ => return Err("a log frame without exactly one of `data` and `data_base64`".into()),
    };
    if data.len() as u64 != bytes {
        return Err(format!(
            "a log frame says {bytes} bytes and carries {}",
            data.len()
        ));
    }
    Ok(data)
}

/// What an event follower yields.
#[derive(Debug, Clone, PartialEq)]
pub enum EventItem {
    Event(Box<DomainEvent>),
    /// Events may have been missed (the connection dropped, or the client lagged): read the
    /// state again. Also the first item of every new connection but the first.
    Resync {
        reason: String,
    },
    /// The connection dropped; the follower waits, then reconnects.
    Reconnecting {
        attempt: u32,
        reason: String,
    },
}

/// The part shared by both followers: one socket, reconnected with backoff.
struct Connection {
    client: Client,
    reconnect: Reconnect,
    socket: Option<Socket>,
    /// Consecutive failed connects, and since when the server has been away.
    attempt: u32,
    away_since: Option<Instant>,
    /// What the dropped connection died of, to report with the next try.
    dropped: Option<String>,
}

/// What reading a connection gave.
enum Read {
    Frame(Frame),
    Dropped(String),
}

impl Connection {
    fn new(client: Client, reconnect: Reconnect) -> Connection {
        Connection {
            client,
            reconnect,
            socket: None,
            attempt: 0,
            away_since: None,
            dropped: None,
        }
    }

    fn drop_socket(&mut self, reason: String) {
        self.socket = None;
        self.dropped = Some(reason);
    }

    /// Connects to `path` unless connected. `Ok(Some(reason))`: this try failed and was
    /// waited for; call again.
    async fn ensure(&mut self, path: &str) -> Result<Option<(u32, String)>, ClientError> {
        if self.socket.is_some() {
            return Ok(None);
        }
        if let Some(reason) = self.dropped.take() {
            // A dropped connection is tried again at once, once.
            self.attempt += 1;
            self.away_since.get_or_insert_with(Instant::now);
            return Ok(Some((self.attempt, reason)));
        }
        match connect(&self.client, path).await {
            Ok(socket) => {
                self.socket = Some(socket);
                Ok(None)
            }
            Err(err) if err.is_retryable() => {
                let since = *self.away_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.reconnect.give_up_after {
                    return Err(err);
                }
                self.attempt += 1;
                let wait = self
                    .reconnect
                    .first_wait
                    .saturating_mul(1 << self.attempt.min(16))
                    .min(self.reconnect.max_wait);
                tokio::time::sleep(wait).await;
                Ok(Some((self.attempt, err.to_string())))
            }
            Err(err) => Err(err),
        }
    }

    /// The next frame, or why the connection dropped. Pings a quiet server.
    async fn read(&mut self) -> Read {
        let Some(socket) = self.socket.as_mut() else {
            return Read::Dropped("not connected".into());
        };
        let ping_every = self.reconnect.silence / 3;
        let mut quiet = Duration::ZERO;
        loop {
            let message = match tokio::time::timeout(ping_every, socket.next()).await {
                Err(_) => {
                    quiet += ping_every;
                    if quiet >= self.reconnect.silence {
                        return Read::Dropped(format!("no answer for {quiet:?}"));
                    }
                    if let Err(err) = socket.send(Message::Ping(Vec::new().into())).await {
                        return Read::Dropped(err.to_string());
                    }
                    continue;
                }
                Ok(None) => return Read::Dropped("the server closed the connection".into()),
                Ok(Some(Err(err))) => return Read::Dropped(err.to_string()),
                Ok(Some(Ok(message))) => message,
            };
            quiet = Duration::ZERO;
            match message {
                Message::Text(text) => match serde_json::from_str::<Frame>(&text) {
                    Ok(frame) => {
                        self.attempt = 0;
                        self.away_since = None;
                        return Read::Frame(frame);
                    }
                    Err(err) => {
                        return Read::Dropped(format!("a frame that does not decode: {err}"));
                    }
                },
                Message::Close(_) => {
                    return Read::Dropped("the server closed the connection".into());
                }
                _ => {}
            }
        }
    }
}

/// Follows one job's log from a byte offset to its end.
pub struct LogFollower {
    connection: Connection,
    job: u64,
    /// The offset of the next byte to yield.
    next: u64,
    ended: bool,
}

impl LogFollower {
    /// Follows job `job`'s log from byte `from`.
    pub fn new(client: Client, job: u64, from: u64, reconnect: Reconnect) -> LogFollower {
        LogFollower {
            connection: Connection::new(client, reconnect),
            job,
            next: from,
            ended: false,
        }
    }

    /// The offset of the next byte: where a new follower would resume.
    pub fn offset(&self) -> u64 {
        self.next
    }

    /// The next item; `Ok(None)` once the job's end was yielded.
    ///
    /// # Errors
    /// When the server refuses the stream (an unknown job, a refused token), or stays
    /// unreachable for longer than [`Reconnect::give_up_after`].
    pub async fn next(&mut self) -> Result<Option<LogItem>, ClientError> {
        loop {
            if self.ended {
                return Ok(None);
            }
            let path = format!("/api/v1/jobs/{}/log/stream?from={}", self.job, self.next);
            if let Some((attempt, reason)) = self.connection.ensure(&path).await? {
                return Ok(Some(LogItem::Reconnecting {
                    attempt,
                    from: self.next,
                    reason,
                }));
            }
            let frame = match self.connection.read().await {
                Read::Frame(frame) => frame,
                Read::Dropped(reason) => {
                    self.connection.drop_socket(reason);
                    continue;
                }
            };
            match frame {
                Frame::Log {
                    offset,
                    bytes,
                    data,
                    data_base64,
                } => {
                    let data = match log_bytes(data, data_base64, bytes) {
                        Ok(data) => data,
                        Err(reason) => {
                            self.connection.drop_socket(reason);
                            continue;
                        }
                    };
                    let end = offset + bytes;
                    if offset > self.next {
                        // Never sent by a server that keeps its promise; asking again from
                        // where we are is always right.
                        self.connection.drop_socket(format!(
                            "the stream skipped from byte {} to {offset}",
                            self.next
                        ));
                        continue;
                    }
                    if end <= self.next {
                        continue;
                    }
                    let skip = (self.next - offset) as usize;
                    let from = self.next;
                    self.next = end;
                    return Ok(Some(LogItem::Output {
                        offset: from,
                        bytes: data.get(skip..).unwrap_or_default().to_vec(),
                    }));
                }
                Frame::Lagged {} => {
                    self.connection.socket = None;
                }
                Frame::End { state, offset } => {
                    if offset > self.next {
                        self.connection.drop_socket(format!(
                            "the stream ended at byte {offset} before byte {}",
                            self.next
                        ));
                        continue;
                    }
                    self.ended = true;
                    self.connection.socket = None;
                    return Ok(Some(LogItem::End {
                        state,
                        length: offset,
                    }));
                }
                Frame::Event { .. } => {}
            }
        }
    }
}

/// Follows domain events: one run's, or every run's.
pub struct EventFollower {
    connection: Connection,
    path: String,
    connected_once: bool,
}

impl EventFollower {
    /// Follows run `run`'s events, or every event for `None`.
    pub fn new(client: Client, run: Option<u64>, reconnect: Reconnect) -> EventFollower {
        let path = match run {
            Some(run) => format!("/api/v1/runs/{run}/events/stream"),
            None => "/api/v1/events/stream".to_owned(),
        };
        EventFollower {
            connection: Connection::new(client, reconnect),
            path,
            connected_once: false,
        }
    }

    /// Connects now (the first time), so that no event recorded after this returns is missed.
    /// Only later connections are retried: a server that cannot be reached now is an error.
    ///
    /// # Errors
    /// When the server cannot be reached or refuses the stream.
    pub async fn connect(&mut self) -> Result<(), ClientError> {
        if self.connection.socket.is_none() {
            self.connection.socket = Some(connect(&self.connection.client, &self.path).await?);
        }
        self.connected_once = true;
        Ok(())
    }

    /// The next item.
    ///
    /// # Errors
    /// When the server refuses the stream, or stays unreachable for longer than
    /// [`Reconnect::give_up_after`].
    pub async fn next(&mut self) -> Result<EventItem, ClientError> {
        loop {
            let was_connected = self.connection.socket.is_some();
            if let Some((attempt, reason)) = self.connection.ensure(&self.path).await? {
                return Ok(EventItem::Reconnecting { attempt, reason });
            }
            if !was_connected {
                let first = !self.connected_once;
                self.connected_once = true;
                if !first {
                    return Ok(EventItem::Resync {
                        reason: "reconnected".into(),
                    });
                }
            }
            match self.connection.read().await {
                Read::Frame(Frame::Event { event }) => {
                    return Ok(EventItem::Event(Box::new(event.0)));
                }
                Read::Frame(Frame::Lagged {}) => {
                    self.connection.socket = None;
                }
                Read::Frame(_) => {}
                Read::Dropped(reason) => self.connection.drop_socket(reason),
            }
        }
    }
}

/// Opens a WebSocket to `path` with the client's token and TLS configuration. A replica that
/// cannot be reached, or has no leader to relay to, is left for the next (if the client has
/// several): the caller's next try goes there.
pub(super) async fn connect(client: &Client, path: &str) -> Result<Socket, ClientError> {
    let url = client.url().to_owned();
    let connected = connect_to(client, &url, path).await;
    let moves_on = match &connected {
        Err(ClientError::Unreachable { .. }) => true,
        Err(err) => err.code() == Some("no-leader"),
        Ok(_) => false,
    };
    if moves_on {
        client.next_replica(&url);
    }
    connected
}

async fn connect_to(client: &Client, url: &str, path: &str) -> Result<Socket, ClientError> {
    let ws_url = match url.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}{path}"),
        None => format!("ws://{}{path}", url.trim_start_matches("http://")),
    };
    let unreachable = |reason: String| ClientError::Unreachable {
        url: url.to_owned(),
        reason,
    };
    let mut request = ws_url
        .as_str()
        .into_client_request()
        .map_err(|err| ClientError::BadUrl {
            url: ws_url.clone(),
            reason: err.to_string(),
        })?;
    if let Some(token) = &client.target.token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| ClientError::Tls {
                reason: "the token holds characters a header cannot carry".into(),
            })?;
        request.headers_mut().insert("Authorization", value);
    }
    let connector = tokio_tungstenite::Connector::Rustls(client.tls.clone());
    let handshake =
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector));
    match tokio::time::timeout(super::CONNECT_TIMEOUT, handshake).await {
        Err(_) => Err(unreachable(format!(
            "no WebSocket handshake within {:?}",
            super::CONNECT_TIMEOUT
        ))),
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status = response.status().as_u16();
            let body = response.body().clone().unwrap_or_default();
            let problem = serde_json::from_slice::<Problem>(&body).ok();
            if status == 401 || status == 403 {
                return Err(ClientError::Unauthorized {
                    url: url.to_owned(),
                    method: "GET",
                    path: path.to_owned(),
                    status,
                    detail: problem
                        .map(|p| p.detail)
                        .unwrap_or_else(|| "the token was refused".into()),
                });
            }
            Err(match problem {
                Some(problem) => ClientError::Rejected {
                    method: "GET",
                    path: path.to_owned(),
                    problem: Box::new(problem),
                    retry_after: None,
                },
                None if status >= 500 => {
                    unreachable(format!("the handshake was answered {status}"))
                }
                None => ClientError::Unexpected {
                    method: "GET",
                    path: path.to_owned(),
                    status,
                    reason: "a refused WebSocket handshake without a problem document".into(),
                },
            })
        }
        Ok(Err(err)) => Err(match super::CertificateProblem::of(&err) {
            Some(problem) => ClientError::Certificate {
                url: url.to_owned(),
                problem,
            },
            None => unreachable(super::http::chain(&err)),
        }),
    }
}
