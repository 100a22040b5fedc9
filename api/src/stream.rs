//! Live streams over WebSocket: a job's log from a byte offset — the stored part first, then live
//! output, with no gap and no duplicate — and domain events as they are recorded.
//!
//! Each connection is an actor fed by the log hub (one job's chunks, each with its byte offset)
//! or the event bus, and a writer task that owns the socket. The hub and the bus never wait for
//! a client: they hand chunks to the actor's mailbox, and the actor to the writer's queue. A
//! client that lets more than [`LAG_LIMIT`] bytes pile up in that queue gets a `lagged` frame
//! with the offset to resume from, and the connection closes; the job is never slowed.
//!
//! Frames (JSON text):
//! - `{"type": "log", "offset": N, "bytes": B, "data": "..."}`: bytes `N..N+B` of the log, when
//!   they are UTF-8 text (a character split across chunks is held back until it is whole);
//!   `{"type": "log", "offset": N, "bytes": B, "data_base64": "..."}` when they are not: the
//!   exact bytes in standard base64 (RFC 4648, padded). A log is followed byte for byte either
//!   way;
//! - `{"type": "lagged", "resume_from": N}`: reconnect with `?from=N`;
//! - `{"type": "end", "state": "succeeded", "offset": N}`: the job is over, its log is `N` bytes;
//! - `{"type": "event", "event": {...}}`: a domain event, as in `GET /api/v1/events`.
//!
//! A stream ends with a close frame of code 1008 when the token that opened it is revoked
//! ([`crate::revoke`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, WrapFuture,
};
use base64::Engine as _;
use futures_util::StreamExt;
use hodei_actors::loghub::LogHub;
use hodei_actors::messages::{LogChunk, Published, Subscribe, WatchJob};
use hodei_domain::ids::{JobId, RunId};
use hodei_domain::ports::{LogStore, Store};
use hodei_domain::state::{DomainEvent, JobState};
use serde_json::json;
use tokio::sync::mpsc;

use crate::revoke::{StreamsByToken, TokenRevoked};

/// Open streams, for the metrics.
static SUBSCRIBERS: AtomicUsize = AtomicUsize::new(0);

/// How many log and event streams are open.
pub fn subscribers() -> usize {
    SUBSCRIBERS.load(Ordering::SeqCst)
}

/// Bytes a client may let pile up before it is told it lags.
pub const LAG_LIMIT: usize = 4 * 1024 * 1024;
/// How often output is sent: chunks arriving within this are one frame.
const BATCH: Duration = Duration::from_millis(20);
/// The largest log frame.
const MAX_FRAME: usize = 256 * 1024;

/// What the writer task sends.
enum Frame {
    Text { text: String, weight: usize },
    Close(Option<actix_ws::CloseReason>),
}

/// The socket's writing end: a task that sends frames in order, and the weight not yet sent.
struct Writer {
    frames: mpsc::UnboundedSender<Frame>,
    unsent: Arc<AtomicUsize>,
}

impl Writer {
    fn start(mut session: actix_ws::Session) -> Writer {
        SUBSCRIBERS.fetch_add(1, Ordering::SeqCst);
        let (frames, mut queue) = mpsc::unbounded_channel::<Frame>();
        let unsent = Arc::new(AtomicUsize::new(0));
        let counter = unsent.clone();
        actix::spawn(async move {
            // One stream fewer once the socket's writer ends, however it ends.
            struct Open;
            impl Drop for Open {
                fn drop(&mut self) {
                    SUBSCRIBERS.fetch_sub(1, Ordering::SeqCst);
                }
            }
            let _open = Open;
            while let Some(frame) = queue.recv().await {
                match frame {
                    Frame::Text { text, weight } => {
                        if session.text(text).await.is_err() {
                            return;
                        }
                        counter.fetch_sub(weight, Ordering::SeqCst);
                    }
                    Frame::Close(reason) => {
                        let _ = session.close(reason).await;
                        return;
                    }
                }
            }
        });
        Writer { frames, unsent }
    }

    fn send(&self, value: serde_json::Value, weight: usize) {
        self.unsent.fetch_add(weight, Ordering::SeqCst);
        let _ = self.frames.send(Frame::Text {
            text: value.to_string(),
            weight,
        });
    }

    fn lags(&self) -> bool {
        self.unsent.load(Ordering::SeqCst) > LAG_LIMIT
    }

    fn close(&self) {
        let _ = self.frames.send(Frame::Close(None));
    }

    /// Closes the socket because its token was revoked.
    fn revoked(&self) {
        let _ = self.frames.send(Frame::Close(Some(actix_ws::CloseReason {
            code: actix_ws::CloseCode::Policy,
            description: Some("the token was revoked".into()),
        })));
    }
}

/// The client closed the connection.
#[derive(Message)]
#[rtype(result = "()")]
struct ClientGone;

/// Answers pings and notices the client's close, on its own task.
fn read_client<A>(session: actix_ws::Session, mut incoming: actix_ws::MessageStream, actor: Addr<A>)
where
    A: Actor<Context = Context<A>> + Handler<ClientGone>,
{
    actix::spawn(async move {
        let mut session = session;
        while let Some(message) = incoming.next().await {
            match message {
                Ok(actix_ws::Message::Ping(bytes)) => {
                    if session.pong(&bytes).await.is_err() {
                        break;
                    }
                }
                Ok(actix_ws::Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        actor.do_send(ClientGone);
    });
}

/// The end state of a job, if `event` ends it.
fn job_end(event: &DomainEvent, job: JobId) -> Option<&'static str> {
    (event.ends_job() == Some(job)).then(|| event.state_after())
}

/// The end state of a job in `state`, if it is over.
pub fn end_state(state: &JobState) -> Option<&'static str> {
    state.is_terminal().then(|| state.name())
}

/// One client following one job's log.
pub struct LogStream {
    job: JobId,
    run: RunId,
    store: Arc<dyn Store>,
    logs: Arc<dyn LogStore>,
    hub: Addr<LogHub>,
    bus: Addr<hodei_actors::bus::EventBus>,
    writer: Writer,
    /// Bytes before this offset are queued to the client.
    sent: u64,
    /// Bytes from `sent` on, not queued yet.
    pending: Vec<u8>,
}

impl LogStream {
    /// Starts following `job` (of `run`)'s log from byte `from` on this connection, opened
    /// with token `token`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        job: JobId,
        run: RunId,
        from: u64,
        store: Arc<dyn Store>,
        logs: Arc<dyn LogStore>,
        hub: Addr<LogHub>,
        bus: Addr<hodei_actors::bus::EventBus>,
        opened: (&StreamsByToken, u64),
        session: actix_ws::Session,
        incoming: actix_ws::MessageStream,
    ) {
        let writer = Writer::start(session.clone());
        let actor = LogStream {
            job,
            run,
            store,
            logs,
            hub,
            bus,
            writer,
            sent: from,
            pending: Vec::new(),
        }
        .start();
        opened.0.add(opened.1, actor.clone().recipient());
        read_client(session, incoming, actor);
    }

    /// The offset the next live byte should have.
    fn upto(&self) -> u64 {
        self.sent + self.pending.len() as u64
    }

    /// Takes bytes at `offset`: what is already there is skipped, a gap is read from the store.
    fn take(&mut self, ctx: &mut Context<Self>, offset: u64, bytes: &[u8]) {
        let end = offset + bytes.len() as u64;
        let upto = self.upto();
        if end <= upto {
            return;
        }
        if offset > upto {
            // A gap (a chunk lost on the way): read it from the store, then this chunk.
            let (logs, job) = (self.logs.clone(), self.job);
            let rest = bytes.to_vec();
            ctx.wait(
                async move { logs.read(job, upto, Some(offset)).await }
                    .into_actor(self)
                    .map(move |read, act, ctx| match read {
                        Ok(gap) if gap.len() as u64 == offset - upto => {
                            act.pending.extend_from_slice(&gap);
                            act.take(ctx, offset, &rest);
                        }
                        _ => act.lagged(ctx),
                    }),
            );
            return;
        }
        let skip = (upto - offset) as usize;
        self.pending.extend_from_slice(&bytes[skip..]);
    }

    /// Queues what is pending, up to the last whole character unless `all`.
    fn flush(&mut self, all: bool) {
        while !self.pending.is_empty() {
            let mut n = self.pending.len().min(MAX_FRAME);
            if !all || n < self.pending.len() {
                n = whole_chars(&self.pending[..n]);
                if n == 0 {
                    return;
                }
            }
            let chunk: Vec<u8> = self.pending.drain(..n).collect();
            self.writer.send(log_frame(self.sent, chunk), n);
            self.sent += n as u64;
        }
    }

    fn lagged(&mut self, ctx: &mut Context<Self>) {
        self.pending.clear();
        self.writer
            .send(json!({"type": "lagged", "resume_from": self.sent}), 0);
        self.writer.close();
        ctx.stop();
    }

    fn end(&mut self, ctx: &mut Context<Self>, state: &'static str) {
        self.flush(true);
        self.writer.send(
            json!({"type": "end", "state": state, "offset": self.sent}),
            0,
        );
        self.writer.close();
        ctx.stop();
    }
}

/// The `log` frame of `chunk`, the bytes from `offset`: as text when they are UTF-8, else
/// base64-encoded.
pub(crate) fn log_frame(offset: u64, chunk: Vec<u8>) -> serde_json::Value {
    let mut frame = json!({"type": "log", "offset": offset, "bytes": chunk.len()});
    match String::from_utf8(chunk) {
        Ok(text) => frame["data"] = text.into(),
        Err(binary) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(binary.as_bytes());
            frame["data_base64"] = encoded.into();
        }
    }
    frame
}

/// The length of the longest prefix of `bytes` that does not end inside a UTF-8 character.
pub(crate) fn whole_chars(bytes: &[u8]) -> usize {
    let n = bytes.len();
    // A character is at most 4 bytes: look at the last 3 for the start of an unfinished one.
    for back in 1..=n.min(3) {
        let byte = bytes[n - back];
        if byte & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte
        }
        let width = match byte {
            b if b < 0x80 => 1,
            b if b >> 5 == 0b110 => 2,
            b if b >> 4 == 0b1110 => 3,
            b if b >> 3 == 0b11110 => 4,
            _ => 1, // not UTF-8: send as it is
        };
        return if width > back { n - back } else { n };
    }
    n
}

impl Actor for LogStream {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Subscribe first, then read what is stored: a chunk written in between arrives both
        // ways, and `take` keeps it once.
        self.hub.do_send(WatchJob {
            job: self.job,
            watcher: ctx.address().recipient(),
        });
        self.bus.do_send(Subscribe {
            subscriber: ctx.address().recipient(),
        });
        // Then whether the job is already over: if it ended before the subscription, its end
        // is in the store; if after, its event comes on the bus.
        let (logs, store, job, run, from) = (
            self.logs.clone(),
            self.store.clone(),
            self.job,
            self.run,
            self.sent,
        );
        ctx.wait(
            async move {
                let read = logs.read(job, from, None).await;
                let ended = match store.run(run).await {
                    Ok(Some(record)) => record
                        .jobs
                        .iter()
                        .find(|j| j.id == job)
                        .and_then(|j| end_state(&j.state)),
                    _ => None,
                };
                (read, ended)
            }
            .into_actor(self)
            .map(|(read, ended), act, ctx| {
                match read {
                    Ok(stored) => {
                        let from = act.sent;
                        act.take(ctx, from, &stored);
                    }
                    Err(err) => {
                        tracing::warn!(job_id = %act.job, error = %err, "Cannot read a log for a stream.");
                    }
                }
                if let Some(state) = ended {
                    act.end(ctx, state);
                }
            }),
        );
        ctx.run_interval(BATCH, |act, ctx| {
            act.flush(false);
            if act.writer.lags() {
                act.lagged(ctx);
            }
        });
    }
}

impl Handler<LogChunk> for LogStream {
    type Result = ();

    fn handle(&mut self, msg: LogChunk, ctx: &mut Context<Self>) {
        if msg.job == self.job {
            self.take(ctx, msg.offset, &msg.bytes);
        }
    }
}

impl Handler<Published> for LogStream {
    type Result = ();

    fn handle(&mut self, msg: Published, ctx: &mut Context<Self>) {
        // The log is settled before the job's end is recorded: every chunk is already here.
        if let Some(state) = msg.events.iter().find_map(|e| job_end(e, self.job)) {
            self.end(ctx, state);
        }
    }
}

impl Handler<ClientGone> for LogStream {
    type Result = ();

    fn handle(&mut self, _: ClientGone, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<TokenRevoked> for LogStream {
    type Result = ();

    fn handle(&mut self, _: TokenRevoked, ctx: &mut Context<Self>) {
        self.pending.clear();
        self.writer.revoked();
        ctx.stop();
    }
}

/// One client following domain events: all of them, or one run's.
pub struct EventStream {
    run: Option<RunId>,
    writer: Writer,
}

impl EventStream {
    /// Starts sending the events of `run` (or all) on this connection, opened with token
    /// `token`.
    pub(crate) fn start(
        run: Option<RunId>,
        bus: Addr<hodei_actors::bus::EventBus>,
        opened: (&StreamsByToken, u64),
        session: actix_ws::Session,
        incoming: actix_ws::MessageStream,
    ) {
        let writer = Writer::start(session.clone());
        let actor = EventStream { run, writer }.start();
        opened.0.add(opened.1, actor.clone().recipient());
        bus.do_send(Subscribe {
            subscriber: actor.clone().recipient(),
        });
        read_client(session, incoming, actor);
    }
}

impl Actor for EventStream {
    type Context = Context<Self>;
}

impl Handler<Published> for EventStream {
    type Result = ();

    fn handle(&mut self, msg: Published, ctx: &mut Context<Self>) {
        for event in msg.events.iter() {
            if self.run.is_some_and(|run| event.run_id() != run) {
                continue;
            }
            let frame = json!({"type": "event", "event": crate::time::ApiEvent(event.clone())});
            let weight = frame.to_string().len();
            self.writer.send(frame, weight);
        }
        if self.writer.lags() {
            self.writer.send(json!({"type": "lagged"}), 0);
            self.writer.close();
            ctx.stop();
        }
    }
}

impl Handler<ClientGone> for EventStream {
    type Result = ();

    fn handle(&mut self, _: ClientGone, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<TokenRevoked> for EventStream {
    type Result = ();

    fn handle(&mut self, _: TokenRevoked, ctx: &mut Context<Self>) {
        self.writer.revoked();
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::whole_chars;

    #[test]
    fn a_character_split_across_chunks_is_held_back() {
        assert_eq!(whole_chars(b"abc"), 3);
        let euro = "a€".as_bytes(); // 'a' then 3 bytes
        assert_eq!(whole_chars(euro), 4);
        assert_eq!(whole_chars(&euro[..3]), 1);
        assert_eq!(whole_chars(&euro[..2]), 1);
        assert_eq!(whole_chars(&[0xff, 0xfe]), 2, "not UTF-8: sent as it is");
    }
}
