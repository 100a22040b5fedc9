//! The log hub: each job's output is masked (secret values become `***`, also when split across
//! chunks), appended to the job's log, and fanned out to watchers with its byte offset.
//!
//! Maskers live in the actor's fields, which survive a supervised restart, so a restart never
//! lets a secret through.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{
    Actor, ActorFutureExt, Addr, Context, Handler, Recipient, ResponseActFuture, Supervised,
    WrapFuture,
};
use hodei_domain::ids::JobId;
use hodei_domain::mask::Masker;
use hodei_domain::ports::{LogStore, OutputSink};

use crate::contain::{ActorKind, restarts};
use crate::messages::{FlushLog, LogChunk, Note, OpenLog, Output, WatchLogs};

/// Masks, persists and fans out job output.
pub struct LogHub {
    logs: Arc<dyn LogStore>,
    maskers: HashMap<JobId, Masker>,
    watchers: Vec<Recipient<LogChunk>>,
}

impl LogHub {
    /// A hub writing to `logs`.
    pub fn new(logs: Arc<dyn LogStore>) -> LogHub {
        LogHub {
            logs,
            maskers: HashMap::new(),
            watchers: Vec::new(),
        }
    }

    fn write(&mut self, job: JobId, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        match self.logs.append(job, bytes) {
            Ok(offset) => {
                crate::fault::maybe_fail(crate::fault::Point::MidLogWrite);
                if self.watchers.is_empty() {
                    return;
                }
                let bytes: Arc<[u8]> = bytes.into();
                self.watchers.retain(|w| w.connected());
                for watcher in &self.watchers {
                    watcher.do_send(LogChunk {
                        job,
                        offset,
                        bytes: bytes.clone(),
                    });
                }
            }
            Err(err) => {
                tracing::error!(job_id = %job, error = %err, "Cannot append to a job's log.")
            }
        }
    }

    /// Takes raw output: masks it when the job has secrets, then writes what is safe.
    fn take(&mut self, job: JobId, bytes: &[u8]) {
        match self.maskers.get_mut(&job) {
            Some(masker) => {
                let safe = masker.push(bytes);
                self.write(job, &safe);
            }
            None => self.write(job, bytes),
        }
    }

    /// Emits what the job's masker held back.
    fn drain(&mut self, job: JobId) {
        if let Some(masker) = self.maskers.get_mut(&job) {
            let rest = masker.finish();
            self.write(job, &rest);
        }
    }
}

impl Actor for LogHub {
    type Context = Context<Self>;
}

impl Supervised for LogHub {
    fn restarting(&mut self, _: &mut Context<Self>) {
        restarts().record(ActorKind::LogHub);
    }
}

impl Handler<OpenLog> for LogHub {
    type Result = ();

    fn handle(&mut self, msg: OpenLog, _: &mut Context<Self>) {
        let secrets: Vec<&str> = msg
            .secrets
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        if secrets.is_empty() {
            self.maskers.remove(&msg.job);
        } else {
            self.maskers.insert(msg.job, Masker::new(secrets));
        }
    }
}

impl Handler<Output> for LogHub {
    type Result = ();

    fn handle(&mut self, msg: Output, _: &mut Context<Self>) {
        self.take(msg.job, &msg.bytes);
    }
}

impl Handler<Note> for LogHub {
    type Result = ();

    fn handle(&mut self, msg: Note, _: &mut Context<Self>) {
        // Whatever the step printed comes first, masked, then Hodei's own line.
        self.drain(msg.job);
        let mut text = msg.text;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        self.take(msg.job, format!("[hodei] {text}").as_bytes());
    }
}

impl Handler<FlushLog> for LogHub {
    type Result = ResponseActFuture<Self, Result<u64, String>>;

    fn handle(&mut self, msg: FlushLog, _: &mut Context<Self>) -> Self::Result {
        // The attempt's output is complete: its masker has nothing more to watch.
        self.drain(msg.job);
        self.maskers.remove(&msg.job);
        let logs = self.logs.clone();
        Box::pin(
            async move { logs.settle(msg.job).await.map_err(|e| e.to_string()) }
                .into_actor(self)
                .map(|result, _, _| result),
        )
    }
}

impl Handler<WatchLogs> for LogHub {
    type Result = ();

    fn handle(&mut self, msg: WatchLogs, _: &mut Context<Self>) {
        self.watchers.push(msg.watcher);
    }
}

/// Where a provider delivers a job's output: straight into the hub's mailbox, in order.
pub struct HubSink {
    pub hub: Addr<LogHub>,
    pub job: JobId,
}

impl OutputSink for HubSink {
    fn output(&self, chunk: &[u8]) {
        self.hub.do_send(Output {
            job: self.job,
            bytes: chunk.to_vec(),
        });
    }
}
