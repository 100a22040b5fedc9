//! The live view of `hodei run`: a line per job state change, step output prefixed with the job
//! name, and the end of each run it waits for.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, WrapFuture};
use hodei_actors::messages::{LogChunk, Published};
use hodei_domain::ids::{JobId, RunId};
use hodei_domain::ports::Store;
use hodei_domain::state::{DomainEvent, JobSkipReason};
use tokio::sync::oneshot;

/// Prints progress and says when every awaited run is over.
pub struct Progress {
    store: Arc<dyn Store>,
    started: Instant,
    color: bool,
    names: HashMap<JobId, String>,
    known_runs: BTreeSet<RunId>,
    width: usize,
    /// Per job, the start of a line printed without its end yet.
    partial: HashMap<JobId, Vec<u8>>,
    awaited: BTreeSet<RunId>,
    finished: BTreeSet<RunId>,
    done: Option<oneshot::Sender<()>>,
}

impl Progress {
    pub fn new(store: Arc<dyn Store>, color: bool, done: oneshot::Sender<()>) -> Progress {
        Progress {
            store,
            started: Instant::now(),
            color,
            names: HashMap::new(),
            known_runs: BTreeSet::new(),
            width: 8,
            partial: HashMap::new(),
            awaited: BTreeSet::new(),
            finished: BTreeSet::new(),
            done: Some(done),
        }
    }

    /// Waits for these runs as well.
    pub fn await_runs(&mut self, runs: impl IntoIterator<Item = RunId>) {
        let pending: Vec<RunId> = runs
            .into_iter()
            .filter(|r| !self.finished.contains(r))
            .collect();
        self.awaited.extend(pending);
        self.check_done();
    }

    fn check_done(&mut self) {
        if self.awaited.is_empty()
            && let Some(done) = self.done.take()
        {
            let _ = done.send(());
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    fn name(&self, job: JobId) -> String {
        self.names
            .get(&job)
            .cloned()
            .unwrap_or_else(|| job.to_string())
    }

    fn line(&self, job: Option<JobId>, text: &str, code: &str) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let stamp = self.paint("2", &format!("[{elapsed:>7.1}s]"));
        let mut out = std::io::stdout().lock();
        match job {
            Some(job) => {
                let who = format!("{:<w$}", self.name(job), w = self.width);
                crate::cli::note_stdout(writeln!(
                    out,
                    "{stamp} {} {}",
                    self.paint("1", &who),
                    self.paint(code, text)
                ));
            }
            None => {
                crate::cli::note_stdout(writeln!(out, "{stamp} {}", self.paint(code, text)));
            }
        }
    }

    fn event(&mut self, event: &DomainEvent) {
        use DomainEvent as E;
        match event {
            E::RunStarted { run, .. } => self.line(None, &format!("{run} started"), "1"),
            E::RunCancelRequested { run, by, .. } => {
                self.line(None, &format!("{run}: cancel requested by {by}"), "33")
            }
            E::RunSucceeded { run, .. } => self.run_over(*run, "succeeded", "32"),
            E::RunFailed { run, .. } => self.run_over(*run, "failed", "31"),
            E::RunCancelled { run, .. } => self.run_over(*run, "cancelled", "33"),
            E::RunStartOverridden { run, by, event, .. } => self.line(
                None,
                &format!("{run}: started by {by} although `on:` does not allow `{event}`"),
                "33",
            ),
            E::JobAwaitingApproval { job, .. } => {
                self.line(Some(*job), "waiting for approval", "33")
            }
            E::JobApproved { job, by, .. } => {
                self.line(Some(*job), &format!("approved by {by}"), "0")
            }
            E::JobQueued { job, .. } => self.line(Some(*job), "queued", "2"),
            E::JobPlaced { job, worker, .. } => {
                self.line(Some(*job), &format!("placed on {worker}"), "2")
            }
            E::JobStarted { job, attempt, .. } => {
                let text = if attempt.get() > 1 {
                    format!("running (attempt {attempt})")
                } else {
                    "running".to_owned()
                };
                self.line(Some(*job), &text, "36");
            }
            E::JobSucceeded { job, .. } => self.line(Some(*job), "succeeded", "32"),
            E::JobFailed { job, reason, .. } => {
                self.line(Some(*job), &format!("failed: {reason}"), "31")
            }
            E::JobTimedOut { job, .. } => self.line(Some(*job), "timed out", "31"),
            E::JobCancelled { job, .. } => self.line(Some(*job), "cancelled", "33"),
            E::JobSkipped { job, reason, .. } => {
                let why = match reason {
                    JobSkipReason::WhenFalse => "its `when` is false".to_owned(),
                    JobSkipReason::NeedFailed { job } => {
                        format!("{} did not succeed", self.name(*job))
                    }
                    JobSkipReason::NeedSkipped { job } => {
                        format!("{} was skipped", self.name(*job))
                    }
                    JobSkipReason::RunCancelled => "the run was cancelled".to_owned(),
                };
                self.line(Some(*job), &format!("skipped: {why}"), "2");
            }
            E::JobRetrying {
                job, next_attempt, ..
            } => self.line(
                Some(*job),
                &format!("failed; retrying (attempt {next_attempt})"),
                "33",
            ),
            _ => {}
        }
    }

    fn run_over(&mut self, run: RunId, how: &str, code: &str) {
        for job in self.partial.keys().copied().collect::<Vec<_>>() {
            self.flush_partial(job);
        }
        self.line(None, &format!("{run} {how}"), code);
        self.finished.insert(run);
        if self.awaited.remove(&run) {
            self.check_done();
        }
    }

    fn output(&mut self, job: JobId, bytes: &[u8]) {
        let mut buffer = self.partial.remove(&job).unwrap_or_default();
        buffer.extend_from_slice(bytes);
        let prefix = self.paint("2", &format!("{:<w$} |", self.name(job), w = self.width));
        let mut out = std::io::stdout().lock();
        let mut rest: &[u8] = &buffer;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&rest[..end]);
            crate::cli::note_stdout(writeln!(out, "{prefix} {}", line.trim_end_matches('\r')));
            rest = &rest[end + 1..];
        }
        if !rest.is_empty() {
            self.partial.insert(job, rest.to_vec());
        }
    }

    fn flush_partial(&mut self, job: JobId) {
        if let Some(rest) = self.partial.remove(&job) {
            let mut rest = rest;
            rest.push(b'\n');
            self.output(job, &rest);
        }
    }
}

impl Actor for Progress {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Runs being resumed write notes into their jobs' logs before their first event: learn
        // their jobs' names first (output and events wait in the mailbox meanwhile).
        let store = self.store.clone();
        ctx.wait(
            async move {
                let runs = store.unfinished_runs().await.unwrap_or_default();
                job_names(store.as_ref(), runs).await
            }
            .into_actor(self)
            .map(|names, act, _| act.learn(names)),
        );
    }
}

/// The names of the jobs of these runs.
async fn job_names(store: &dyn Store, runs: Vec<RunId>) -> Vec<(RunId, Vec<(JobId, String)>)> {
    let mut names = Vec::new();
    for run in runs {
        if let Ok(Some(record)) = store.run(run).await {
            names.push((
                run,
                record.jobs.into_iter().map(|j| (j.id, j.name)).collect(),
            ));
        }
    }
    names
}

impl Progress {
    fn learn(&mut self, names: Vec<(RunId, Vec<(JobId, String)>)>) {
        for (run, jobs) in names {
            self.known_runs.insert(run);
            for (id, name) in jobs {
                self.width = self.width.max(name.chars().count().min(40));
                self.names.insert(id, name);
            }
        }
    }
}

impl Handler<Published> for Progress {
    type Result = ();

    fn handle(&mut self, msg: Published, ctx: &mut Context<Self>) {
        // Learn the names of a run's jobs before printing its first event.
        let unknown: Vec<RunId> = msg
            .events
            .iter()
            .map(DomainEvent::run_id)
            .filter(|r| !self.known_runs.contains(r))
            .collect();
        if unknown.is_empty() {
            for event in msg.events.iter() {
                self.event(event);
            }
            return;
        }
        let store = self.store.clone();
        ctx.wait(
            async move { job_names(store.as_ref(), unknown).await }
                .into_actor(self)
                .map(move |names, act, _| {
                    act.learn(names);
                    for event in msg.events.iter() {
                        act.event(event);
                    }
                }),
        );
    }
}

impl Handler<LogChunk> for Progress {
    type Result = ();

    fn handle(&mut self, msg: LogChunk, _: &mut Context<Self>) {
        self.output(msg.job, &msg.bytes);
    }
}

/// A job's line in the summary table.
pub struct Row {
    pub name: String,
    pub state: String,
    pub attempts: u32,
    pub duration: Option<f64>,
}

/// Prints the summary table.
pub fn summary(rows: &[Row]) {
    let width = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(3)
        .max(3);
    let mut out = std::io::stdout().lock();
    crate::cli::note_stdout(writeln!(
        out,
        "\n{:<width$}  {:<10}  {:>8}  {:>9}",
        "JOB", "STATE", "ATTEMPTS", "DURATION"
    ));
    for row in rows {
        let duration = match row.duration {
            None => "-".to_owned(),
            Some(d) if d < 1.0 => format!("{}ms", (d * 1000.0).round()),
            Some(d) => format!("{d:.1}s"),
        };
        crate::cli::note_stdout(writeln!(
            out,
            "{:<width$}  {:<10}  {:>8}  {:>9}",
            row.name, row.state, row.attempts, duration
        ));
    }
}
