//! A step's processes: the shell spawned in a process group of its own (see `group.rs` for how
//! the group is followed and killed) with one pipe for stdout and stderr, and the monitor task
//! that drains that pipe into the sink and publishes the step's outcome.
//!
//! ## Draining
//! The monitor task reads the pipe until the shell has exited. Then it takes whatever the pipe
//! already holds (everything the shell wrote before it exited, however late the task runs), then
//! keeps reading until end of file or [`GRACE`] after the exit, whichever comes first: a
//! background process holding the pipe open cannot make `wait_step` hang. Bytes it writes after
//! that are lost (it gets `EPIPE`/`SIGPIPE`).

use std::io::{self, ErrorKind};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hodei_domain::ids::JobId;
use hodei_domain::ports::Cause;
use hodei_domain::ports::{OutputSink, ProviderError};
use hodei_domain::state::StepExit;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use super::group::{ExitWatch, Leader};

/// How long output is still read after the shell exited, when something else holds the pipe.
pub const GRACE: Duration = Duration::from_millis(100);
/// The size of one read, and so the largest chunk handed to the sink.
const CHUNK: usize = 64 * 1024;
/// Bound on the bytes taken without waiting right after the exit, against a writer that never
/// pauses; the pipe holds at most 1 MiB by default.
const AFTER_EXIT_BUDGET: usize = 4 * 1024 * 1024;

/// A step's end as `wait_step` reports it: `None` while the step runs.
pub type Outcome = Option<Result<StepExit, ProviderError>>;

/// What to run: the shell, its arguments, the script, where, and with which environment.
pub struct Launch<'a> {
    /// For logs: the job and the step's index.
    pub job: JobId,
    pub step: u32,
    pub program: &'a str,
    pub args: &'a [String],
    pub script: &'a str,
    pub cwd: &'a Path,
    pub env: &'a [(&'a str, &'a str)],
    /// The uid and gid to run as, if not this process's.
    pub user: Option<(u32, u32)>,
}

/// A started step: its group's leader and the outcome its monitor task will publish.
pub struct Spawned {
    pub leader: Arc<Leader>,
    pub outcome: watch::Receiver<Outcome>,
}

/// Starts the shell and its monitor task on the current tokio runtime (which needs I/O enabled,
/// as actix's and `#[tokio::test]`'s have). Errors are [`ProviderError::Start`].
pub fn spawn(launch: &Launch<'_>, output: Arc<dyn OutputSink>) -> Result<Spawned, ProviderError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|err| ProviderError::Other {
        provider: "local",
        reason: format!("start_step must run inside a tokio runtime: {err}"),
        cause: Cause::of(err),
    })?;
    let start = |what: &str, err: io::Error| ProviderError::Start {
        reason: format!("{what}: {err}"),
        cause: Cause::of(err),
    };
    let (reader, writer) = io::pipe().map_err(|err| start("cannot create the output pipe", err))?;
    let writer_too = writer
        .try_clone()
        .map_err(|err| start("cannot duplicate the output pipe", err))?;
    let mut command = Command::new(launch.program);
    command
        .args(launch.args)
        .arg(launch.script)
        .current_dir(launch.cwd)
        .env_clear()
        .envs(launch.env.iter().copied())
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer_too)
        .process_group(0);
    if let Some((uid, gid)) = launch.user {
        // Started as root, the step drops to the user: its gid, its uid and (by the standard
        // library, when it drops root) no supplementary groups.
        command.uid(uid).gid(gid);
    }
    let spawned = command.spawn();
    // The command owns our copies of the pipe's write end: drop them, or EOF never comes.
    drop(command);
    let child =
        spawned.map_err(|err| start(&format!("cannot run the shell `{}`", launch.program), err))?;
    let pid = i32::try_from(child.id()).map_err(|_| ProviderError::Start {
        reason: format!("the kernel gave a pid out of range: {}", child.id()),
        cause: None,
    })?;
    let leader = Arc::new(Leader::new(pid));
    let pipe = match pipe::Receiver::from_owned_fd(OwnedFd::from(reader)) {
        Ok(pipe) => pipe,
        Err(err) => {
            leader.abandon();
            return Err(start("cannot read the output pipe", err));
        }
    };
    let exit = ExitWatch::new(pid);
    let (publish, outcome) = watch::channel(None);
    let span = tracing::debug_span!("step", job_id = %launch.job, step = launch.step, pid);
    let monitor = monitor(pipe, exit, Arc::clone(&leader), output, publish);
    runtime.spawn(monitor.instrument(span));
    Ok(Spawned { leader, outcome })
}

/// Reads the pipe into the sink; a panicking sink is contained and stops the delivery.
struct Drain {
    pipe: pipe::Receiver,
    buf: Vec<u8>,
    output: Arc<dyn OutputSink>,
    eof: bool,
    sink_panicked: bool,
}

impl Drain {
    /// One read; cancel safe.
    async fn read_some(&mut self) {
        match self.pipe.read(&mut self.buf).await {
            Ok(0) => self.eof = true,
            Ok(n) => self.deliver(n),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => self.fail(&err),
        }
    }

    /// Everything already in the pipe, without waiting (up to [`AFTER_EXIT_BUDGET`]), then
    /// more until end of file or `deadline`.
    async fn finish(&mut self, deadline: Instant) {
        let mut budget = AFTER_EXIT_BUDGET;
        while !self.eof && budget > 0 {
            match self.pipe.try_read(&mut self.buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.deliver(n);
                    budget = budget.saturating_sub(n);
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => self.fail(&err),
            }
        }
        while !self.eof {
            tokio::select! {
                () = self.read_some() => {}
                () = tokio::time::sleep_until(deadline) => {
                    tracing::debug!(
                        "Stopped reading a step's output: its background processes hold the pipe."
                    );
                    break;
                }
            }
        }
    }

    fn deliver(&mut self, n: usize) {
        if self.sink_panicked {
            return;
        }
        let chunk = &self.buf[..n];
        if catch_unwind(AssertUnwindSafe(|| self.output.output(chunk))).is_err() {
            tracing::error!("The output sink panicked; the rest of the step's output is dropped.");
            self.sink_panicked = true;
        }
    }

    fn fail(&mut self, err: &io::Error) {
        tracing::warn!(error = %err, "Cannot read a step's output.");
        self.eof = true;
    }
}

/// Kills the step if its monitor is dropped before the end (its runtime shut down).
struct Abandoned(Option<Arc<Leader>>);

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let Some(leader) = self.0.take() {
            leader.destroy();
        }
    }
}

/// Follows one step from spawn to its published outcome.
async fn monitor(
    pipe: pipe::Receiver,
    exit: ExitWatch,
    leader: Arc<Leader>,
    output: Arc<dyn OutputSink>,
    publish: watch::Sender<Outcome>,
) {
    let mut abandoned = Abandoned(Some(Arc::clone(&leader)));
    let mut drain = Drain {
        pipe,
        buf: vec![0; CHUNK],
        output,
        eof: false,
        sink_panicked: false,
    };
    let exited = exit.wait(leader.pid);
    tokio::pin!(exited);
    let status = loop {
        tokio::select! {
            status = &mut exited => break status,
            () = drain.read_some(), if !drain.eof => {}
        }
    };
    match status {
        Ok(_) => leader.exited(),
        Err(_) => leader.lost(),
    }
    abandoned.0 = None;
    drain.finish(Instant::now() + GRACE).await;
    let outcome = match status {
        Ok(_) if drain.sink_panicked => Err(ProviderError::Wait {
            reason: "the output sink panicked; the step's output is incomplete".into(),
            cause: None,
        }),
        Ok(exit) => Ok(exit),
        Err(err) => Err(ProviderError::Wait {
            reason: format!("cannot read the exit status of pid {}: {err}", leader.pid),
            cause: Cause::of(err),
        }),
    };
    drop(drain);
    publish.send_replace(Some(outcome));
}
