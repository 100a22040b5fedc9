//! A step's processes: the shell spawned in a process group of its own with one pipe for stdout
//! and stderr, its end followed through a pidfd, its output drained into the sink, and its group
//! killed without ever signalling a recycled process group id.
//!
//! ## Why the group id can never be recycled under us
//! The step's shell leads its group (pgid = its pid). Linux does not hand out a pid again while
//! a process, a zombie included, still uses it as a pid or a process group id. Hodei observes
//! the shell's end with `waitid(WNOWAIT)`, which leaves it a zombie, and reaps it only in
//! [`Leader::destroy`], right after killing the group, under the same lock. So every
//! `kill(-pgid)` happens while our unreaped zombie (or the live shell) pins the id, and once we
//! reaped it we never signal that id again. Background processes a step leaves behind (`server &`)
//! therefore keep running, like in GitHub Actions, until `destroy_step` of that step or
//! `tear_down` of its job; processes that leave the group (`setsid`) escape both and are found by
//! `reap_orphans` in the next life, by their marker variables.
//!
//! ## Draining
//! The monitor task reads the pipe until the shell has exited. Then it takes whatever the pipe
//! already holds (everything the shell wrote before it exited, however late the task runs), then
//! keeps reading until end of file or [`GRACE`] after the exit, whichever comes first: a
//! background process holding the pipe open cannot make `wait_step` hang. Bytes it writes after
//! that are lost (it gets `EPIPE`/`SIGPIPE`).

use std::io::{self, ErrorKind};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hodei_domain::ids::JobId;
use hodei_domain::ports::{OutputSink, ProviderError};
use hodei_domain::state::StepExit;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::unix::pipe;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use super::convert::step_exit;

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
    })?;
    let start = |what: &str, err: io::Error| ProviderError::Start {
        reason: format!("{what}: {err}"),
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
    let spawned = command.spawn();
    // The command owns our copies of the pipe's write end: drop them, or EOF never comes.
    drop(command);
    let child =
        spawned.map_err(|err| start(&format!("cannot run the shell `{}`", launch.program), err))?;
    let pid = i32::try_from(child.id()).map_err(|_| ProviderError::Start {
        reason: format!("the kernel gave a pid out of range: {}", child.id()),
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

/// The leader of a step's process group (the shell), and whether it has been reaped.
#[derive(Debug)]
pub struct Leader {
    pid: i32,
    state: Mutex<LeaderState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaderState {
    /// Running, or exited but not yet seen by the monitor.
    Running { destroyed: bool },
    /// Exited and left a zombie by us: the group id is still pinned.
    Exited,
    /// Reaped (or lost to someone else's `wait`): never signal its group again.
    Reaped,
}

impl Leader {
    fn new(pid: i32) -> Leader {
        Leader {
            pid,
            state: Mutex::new(LeaderState::Running { destroyed: false }),
        }
    }

    /// The process group id, which is the leader's pid.
    pub fn pgid(&self) -> i32 {
        self.pid
    }

    /// Whether the group id is still ours (the leader runs or is our unreaped zombie).
    pub fn is_pinned(&self) -> bool {
        *self.lock() != LeaderState::Reaped
    }

    /// Kills the whole group and, if the leader has exited, reaps it. Idempotent; a group that
    /// was reaped is never signalled.
    pub fn destroy(&self) {
        let mut state = self.lock();
        match *state {
            LeaderState::Running { .. } => {
                kill_group(self.pid);
                *state = LeaderState::Running { destroyed: true };
            }
            LeaderState::Exited => {
                kill_group(self.pid);
                reap(self.pid);
                *state = LeaderState::Reaped;
            }
            LeaderState::Reaped => {}
        }
    }

    /// The monitor saw the leader exit: reap it now if the step was destroyed meanwhile (killing
    /// the group once more, against a fork racing the first kill), else keep the zombie.
    fn exited(&self) {
        let mut state = self.lock();
        if let LeaderState::Running { destroyed } = *state {
            if destroyed {
                kill_group(self.pid);
                reap(self.pid);
                *state = LeaderState::Reaped;
            } else {
                *state = LeaderState::Exited;
            }
        }
    }

    /// The leader's status could not be read (someone else reaped it): forget the group.
    fn lost(&self) {
        *self.lock() = LeaderState::Reaped;
    }

    /// Gives up on a step that could not be followed: kills it and reaps it, blocking briefly.
    fn abandon(&self) {
        let mut state = self.lock();
        kill_group(self.pid);
        // SAFETY: waitpid on our own child with a null status pointer.
        unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
        *state = LeaderState::Reaped;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LeaderState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn kill_group(pgid: i32) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill has no memory effects; the group is pinned by our child (see the module doc).
    if unsafe { libc::kill(-pgid, libc::SIGKILL) } == -1 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(pgid, error = %err, "Cannot kill a step's process group.");
        }
    }
}

fn reap(pid: i32) {
    // SAFETY: waitpid on our own exited child; WNOHANG never blocks.
    let reaped = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
    if reaped != pid {
        tracing::warn!(pid, "A step's exited shell could not be reaped.");
    }
}

/// How the monitor learns that the leader exited, without reaping it.
enum ExitWatch {
    /// A pidfd, readable once the process exited: no thread needed.
    Pidfd(AsyncFd<OwnedFd>),
    /// Kernels without pidfd (before 5.3): a blocking `waitid` on tokio's blocking pool.
    Blocking,
}

impl ExitWatch {
    fn new(pid: i32) -> ExitWatch {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let Ok(fd) = i32::try_from(fd) else {
            return ExitWatch::Blocking;
        };
        if fd < 0 {
            return ExitWatch::Blocking;
        }
        // SAFETY: the kernel just gave us this fd and nobody else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an OwnedFd keeps its fd open and returns the same one until it is dropped.
        match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
            Ok(fd) => ExitWatch::Pidfd(fd),
            Err(_) => ExitWatch::Blocking,
        }
    }

    async fn wait(self, pid: i32) -> io::Result<StepExit> {
        match self {
            ExitWatch::Pidfd(fd) => loop {
                let mut ready = fd.readable().await?;
                if let Some(exit) = peek_exit(pid, Block::No)? {
                    return Ok(exit);
                }
                ready.clear_ready();
            },
            ExitWatch::Blocking => tokio::task::spawn_blocking(move || peek_exit(pid, Block::Yes))
                .await
                .map_err(io::Error::other)?
                .and_then(|exit| exit.ok_or_else(|| io::Error::other("waitid returned no status"))),
        }
    }
}

#[derive(Clone, Copy)]
enum Block {
    Yes,
    No,
}

/// The leader's end, if it has ended, leaving it a zombie (`WNOWAIT`).
fn peek_exit(pid: i32, block: Block) -> io::Result<Option<StepExit>> {
    let mut flags = libc::WEXITED | libc::WNOWAIT;
    if let Block::No = block {
        flags |= libc::WNOHANG;
    }
    // SAFETY: siginfo_t is plain data; zeroed is a valid value and makes si_pid 0 if no child
    // changed state.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waitid writes into `info`, which lives for the call.
        let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
        if rc == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != ErrorKind::Interrupted {
            return Err(err);
        }
    }
    // SAFETY: waitid filled the SIGCHLD fields, or left the zeroed struct.
    let (child, status) = unsafe { (info.si_pid(), info.si_status()) };
    if child == 0 {
        return Ok(None);
    }
    step_exit(info.si_code, status)
        .map(Some)
        .ok_or_else(|| io::Error::other(format!("unexpected waitid code {}", info.si_code)))
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
                    tracing::debug!("Stopped reading a step's output: its background processes hold the pipe.");
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
        }),
        Ok(exit) => Ok(exit),
        Err(err) => Err(ProviderError::Wait {
            reason: format!("cannot read the exit status of pid {}: {err}", leader.pid),
        }),
    };
    drop(drain);
    publish.send_replace(Some(outcome));
}
