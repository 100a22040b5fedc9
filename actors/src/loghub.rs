//! The log hub: each job's output is masked (secret values become `***`, also when split across
//! chunks), appended to the job's log, and fanned out to watchers with its byte offset.
//!
//! A job's maskers hold back across its steps: a secret that one step begins to print and the
//! next one finishes is masked all the same. When nothing is held back at a step's start (the
//! usual case: output ends with a newline), the step's masked output is a function of its raw
//! output and the job's secrets alone. That is what lets a step taken back after a crash of
//! Hodei send its output again from the first byte: the hub masks it again and drops what the
//! log already holds ([`SkipOutput`]). A step that starts while bytes are held back gets no
//! offset ([`BeginStep`]), and is not taken back.
//!
//! Maskers live in the actor's fields, which survive a supervised restart, so a restart never
//! lets a secret through. A handler that panics is contained: the hub restarts (after a backoff,
//! with the messages sent meanwhile waiting in its mailbox) and the chunk it was handling is
//! noted as lost in the job's log.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{
    Actor, ActorFutureExt, Addr, Context, Handler, Recipient, ResponseActFuture, Supervised,
    WrapFuture,
};
use hodei_domain::ids::JobId;
use hodei_domain::mask::Masker;
use hodei_domain::ports::{LogStore, OutputSink};

use crate::fault::{Faults, Point};
use crate::messages::{
    AppendAt, AppendedAt, BeginStep, FlushLog, HubError, LogChunk, LogLength, Note, OpenLog,
    Output, OutputSkip, SkipOutput, WatchJob, WatchLogs,
};
use crate::supervise::{Restarts, Supervise, contained};

/// Masks, persists and fans out job output.
pub struct LogHub {
    logs: Arc<dyn LogStore>,
    maskers: HashMap<JobId, Masker>,
    /// How many bytes of each job's next masked output its log already holds (a step taken
    /// back after a crash, whose output comes again from its first byte).
    skips: HashMap<JobId, u64>,
    watchers: Vec<Recipient<LogChunk>>,
    /// Watchers of one job each (a live log stream).
    job_watchers: HashMap<JobId, Vec<Recipient<LogChunk>>>,
    faults: Faults,
    restarts: Restarts,
    /// The job whose output was being handled when the hub failed.
    failed_on: Option<JobId>,
}

impl LogHub {
    /// A hub writing to `logs`.
    pub fn new(logs: Arc<dyn LogStore>, faults: Faults, restarts: Restarts) -> LogHub {
        LogHub {
            logs,
            maskers: HashMap::new(),
            skips: HashMap::new(),
            watchers: Vec::new(),
            job_watchers: HashMap::new(),
            faults,
            restarts,
            failed_on: None,
        }
    }

    /// Runs a handler's body for `job`'s log, contained.
    fn for_job<R>(
        &mut self,
        ctx: &mut Context<Self>,
        job: JobId,
        body: impl FnOnce(&mut LogHub) -> R,
    ) -> Option<R> {
        let result = contained(self, ctx, |act, _| body(act));
        if result.is_none() {
            self.failed_on = Some(job);
        }
        result
    }

    fn write(&mut self, job: JobId, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        match self.logs.append(job, bytes) {
            Ok(offset) => {
                self.faults.hit(Point::MidLogWrite);
                let of_job = self.job_watchers.get_mut(&job);
                if self.watchers.is_empty() && of_job.is_none() {
                    return;
                }
                let chunk = LogChunk {
                    job,
                    offset,
                    bytes: bytes.into(),
                };
                if let Some(watchers) = of_job {
                    watchers.retain(|w| w.connected());
                    for watcher in watchers.iter() {
                        watcher.do_send(chunk.clone());
                    }
                    if watchers.is_empty() {
                        self.job_watchers.remove(&job);
                    }
                }
                self.watchers.retain(|w| w.connected());
                for watcher in &self.watchers {
                    watcher.do_send(chunk.clone());
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

    /// Takes a step's raw output: masks it, drops what the log already holds (see
    /// [`SkipOutput`]), writes the rest.
    fn take_output(&mut self, job: JobId, bytes: &[u8]) {
        let Some(skip) = self.skips.get_mut(&job) else {
            return self.take(job, bytes);
        };
        let safe = match self.maskers.get_mut(&job) {
            Some(masker) => masker.push(bytes),
            None => bytes.to_vec(),
        };
        let dropped = usize::try_from(*skip).unwrap_or(usize::MAX).min(safe.len());
        *skip -= dropped as u64;
        if *skip == 0 {
            self.skips.remove(&job);
        }
        self.write(job, &safe[dropped..]);
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

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.restarts.hold(ctx);
        if let Some(job) = self.failed_on.take() {
            // Say so in the log itself: its reader must not take it for complete.
            self.write(
                job,
                b"\n[hodei] output may be missing here: Hodei's log hub failed and restarted\n",
            );
        }
    }
}

impl Supervised for LogHub {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.restarts.restarting();
    }
}

impl Supervise for LogHub {
    fn restarts(&mut self) -> &mut Restarts {
        &mut self.restarts
    }
}

impl Handler<OpenLog> for LogHub {
    type Result = ();

    fn handle(&mut self, msg: OpenLog, ctx: &mut Context<Self>) {
        self.for_job(ctx, msg.job, |act| {
            let secrets: Vec<&str> = msg
                .secrets
                .iter()
                .map(String::as_str)
                .filter(|s| !s.is_empty())
                .collect();
            if secrets.is_empty() {
                act.maskers.remove(&msg.job);
            } else {
                act.maskers.insert(msg.job, Masker::new(secrets));
            }
        });
    }
}

impl Handler<Output> for LogHub {
    type Result = ();

    fn handle(&mut self, msg: Output, ctx: &mut Context<Self>) {
        self.for_job(ctx, msg.job, |act| act.take_output(msg.job, &msg.bytes));
    }
}

impl Handler<BeginStep> for LogHub {
    type Result = Result<Option<u64>, HubError>;

    fn handle(&mut self, msg: BeginStep, ctx: &mut Context<Self>) -> Self::Result {
        self.for_job(ctx, msg.job, |act| {
            act.skips.remove(&msg.job);
            let held = act.maskers.get(&msg.job).map_or(0, Masker::pending);
            let len = act.logs.len(msg.job)?;
            Ok((held == 0).then_some(len))
        })
        .unwrap_or(Err(HubError::Failed))
    }
}

impl Handler<SkipOutput> for LogHub {
    type Result = ();

    fn handle(&mut self, msg: SkipOutput, ctx: &mut Context<Self>) {
        self.for_job(ctx, msg.job, |act| {
            let stored = match msg.skip {
                OutputSkip::StoredSince(from) => act
                    .logs
                    .len(msg.job)
                    .map_or(0, |len| len.saturating_sub(from)),
                OutputSkip::Nothing => 0,
            };
            if stored == 0 {
                act.skips.remove(&msg.job);
            } else {
                act.skips.insert(msg.job, stored);
            }
        });
    }
}

impl Handler<Note> for LogHub {
    type Result = ();

    fn handle(&mut self, msg: Note, ctx: &mut Context<Self>) {
        self.for_job(ctx, msg.job, |act| {
            // Whatever the step printed comes first, masked, then Hodei's own line.
            act.drain(msg.job);
            let mut text = msg.text;
            if !text.ends_with('\n') {
                text.push('\n');
            }
            act.take(msg.job, format!("[hodei] {text}").as_bytes());
        });
    }
}

impl Handler<FlushLog> for LogHub {
    type Result = ResponseActFuture<Self, Result<u64, HubError>>;

    fn handle(&mut self, msg: FlushLog, ctx: &mut Context<Self>) -> Self::Result {
        // The attempt's output is complete: its masker has nothing more to watch.
        self.for_job(ctx, msg.job, |act| {
            act.drain(msg.job);
            act.maskers.remove(&msg.job);
            act.skips.remove(&msg.job);
        });
        let logs = self.logs.clone();
        Box::pin(
            async move { Ok(logs.settle(msg.job).await?) }
                .into_actor(self)
                .map(|result, _, _| result),
        )
    }
}

impl Handler<AppendAt> for LogHub {
    type Result = Result<AppendedAt, HubError>;

    fn handle(&mut self, msg: AppendAt, _: &mut Context<Self>) -> Self::Result {
        let AppendAt { job, offset, bytes } = msg;
        let length = self.logs.len(job)?;
        if offset > length {
            return Ok(AppendedAt::Gap { length });
        }
        let held = usize::try_from(length - offset).unwrap_or(usize::MAX);
        if held < bytes.len() {
            self.write(job, &bytes[held..]);
        }
        Ok(AppendedAt::Taken {
            length: self.logs.len(job)?,
        })
    }
}

impl Handler<LogLength> for LogHub {
    type Result = Result<u64, HubError>;

    fn handle(&mut self, msg: LogLength, _: &mut Context<Self>) -> Self::Result {
        Ok(self.logs.len(msg.job)?)
    }
}

impl Handler<WatchJob> for LogHub {
    type Result = ();

    fn handle(&mut self, msg: WatchJob, _: &mut Context<Self>) {
        self.job_watchers
            .entry(msg.job)
            .or_default()
            .push(msg.watcher);
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
