//! The entrypoint of a job's pod: `hodei pod-steps run`, the first process of the steps
//! container. Hodei's binary is copied into the pod by the init container
//! (`hodei pod-steps install`, [`install`]) and started in the job's image.
//!
//! [`run`] waits for the job's services to listen on `localhost`, writes the
//! [`Marker::Ready`] line, then takes [`Request`]s on its standard input, one JSON line each,
//! and runs the steps one after the other: each in a process group of its own, its stdout and
//! stderr on one pipe copied to the entrypoint's standard output (the container's log) between
//! a start and an end marker. The end marker holds the exit code or the signal, and whether
//! the kernel killed a process of the container for memory while the step ran (the cgroup's
//! `oom_kill` count went up).
//!
//! ## Guarantees
//! - A step's environment is the container's own (the image's), without the variables the
//!   cluster adds (`KUBERNETES_*`), with the step's variables on top; a variable that refers to
//!   the Secret gets the content of that key's file.
//! - A request for a step that already ran (same index and attempt) is not run again.
//! - When a step's shell ends, whatever it left running in its process group is killed, so the
//!   step's output is whole when the end marker is written. Long-lived processes belong in
//!   `services`. A process that left the group (`setsid`) does not hold the step's end: its
//!   output is taken until the pipe is empty, then the pipe is closed on it.
//! - A kill request kills the step's whole process group (`SIGKILL`); one for a step that does
//!   not run does nothing.
//!
//! ## Errors
//! [`EntrypointError`] when the entrypoint itself cannot go on: the token of the Secret cannot
//! be read, a service does not listen in time, the log cannot be written. A step that cannot
//! start is a [`Marker::Refused`] line, and the entrypoint goes on.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::{self, BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use hodei_domain::state::StepExit;

use super::protocol::{EnvValue, Marker, Request, RunStep, TOKEN_KEY};
use crate::local::convert::working_dir;

/// Where and how the entrypoint runs, from its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrypointConfig {
    /// The workspace: steps' working directories are relative to it.
    pub workspace: PathBuf,
    /// The mounted Secret: one file per key.
    pub secrets: PathBuf,
    /// TCP ports on `localhost` that must accept connections before the first step.
    pub wait_tcp: Vec<u16>,
    /// How long to wait for them.
    pub ready_timeout: Duration,
}

/// Why the entrypoint stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EntrypointError {
    #[error("cannot read the marker token {}: {source}", path.display())]
    Token {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the job's services do not listen on localhost port(s) {ports:?} after {waited:?}")]
    ServicesNotReady { ports: Vec<u16>, waited: Duration },
    #[error("cannot write to the container's log: {0}")]
    Log(#[source] io::Error),
    #[error("cannot {action}: {source}")]
    Io {
        action: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Copies the running `hodei` binary to `dest` (made executable), for the init container.
///
/// # Errors
/// When the binary cannot be found or copied.
pub fn install(dest: &Path) -> Result<(), EntrypointError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |action| move |source| EntrypointError::Io { action, source };
    let me = std::env::current_exe().map_err(io("find the running binary"))?;
    std::fs::copy(&me, dest).map_err(io("copy the binary"))?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755))
        .map_err(io("make the copy executable"))?;
    Ok(())
}

/// The log, shared by the entrypoint and the copier of the running step's output.
type Log = Arc<Mutex<Box<dyn Write + Send>>>;

fn write_log(log: &Log, bytes: &[u8]) -> io::Result<()> {
    let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
    log.write_all(bytes)?;
    log.flush()
}

/// Runs the steps requested on `requests`, writing their framed output to `log`, until
/// `requests` ends. See the documentation of this module.
///
/// # Errors
/// See [`EntrypointError`].
pub fn run(
    config: &EntrypointConfig,
    requests: impl Read + Send + 'static,
    log: impl Write + Send + 'static,
) -> Result<(), EntrypointError> {
    let log: Log = Arc::new(Mutex::new(Box::new(log)));
    let token_path = config.secrets.join(TOKEN_KEY);
    let token = std::fs::read_to_string(&token_path)
        .map_err(|source| EntrypointError::Token {
            path: token_path,
            source,
        })?
        .trim()
        .to_owned();
    wait_for_services(&config.wait_tcp, config.ready_timeout)?;
    let marker =
        |marker: Marker| write_log(&log, &marker.line(&token)).map_err(EntrypointError::Log);
    marker(Marker::Ready)?;

    let (send, receive) = mpsc::channel();
    thread::spawn(move || {
        for line in io::BufReader::new(requests).lines() {
            let parsed =
                line.map(|line| serde_json::from_str::<Request>(&line).map_err(|e| (line, e)));
            match parsed {
                Ok(Ok(request)) => {
                    if send.send(request).is_err() {
                        return;
                    }
                }
                Ok(Err((line, err))) => {
                    eprintln!("hodei pod-steps: ignored a request that is not one ({err}): {line}");
                }
                Err(_) => return,
            }
        }
    });

    let mut pending = Pending::default();
    loop {
        let step = match pending.queue.pop_front() {
            Some(step) => step,
            None => match receive.recv() {
                Ok(request) => match pending.take(request) {
                    Some(step) => step,
                    None => continue,
                },
                Err(mpsc::RecvError) => return Ok(()),
            },
        };
        let (index, attempt) = (step.index, step.attempt);
        if !pending.done.insert((index, attempt)) {
            continue;
        }
        if pending.cancelled.contains(&(index, attempt)) {
            // Killed before it started: it never runs, and ends as killed.
            marker(Marker::Start { index, attempt })?;
            marker(Marker::end(index, attempt, StepExit::signal(libc::SIGKILL)))?;
            continue;
        }
        let prepared = match prepare(config, &step) {
            Ok(prepared) => prepared,
            Err(reason) => {
                marker(Marker::Refused {
                    index,
                    attempt,
                    reason,
                })?;
                continue;
            }
        };
        marker(Marker::Start { index, attempt })?;
        match run_step(prepared, &log, &receive, &mut pending, (index, attempt)) {
            Ok(exit) => marker(Marker::end(index, attempt, exit))?,
            Err(reason) => marker(Marker::Refused {
                index,
                attempt,
                reason,
            })?,
        }
        reap_strays();
    }
}

/// The requests taken but not run yet, and what was run or cancelled, by (index, attempt).
#[derive(Default)]
struct Pending {
    queue: VecDeque<RunStep>,
    done: HashSet<(u32, u32)>,
    /// Steps killed before they started (the kill came first, or while another step ran).
    cancelled: HashSet<(u32, u32)>,
}

impl Pending {
    /// Takes a request while no step runs: a step to run, or a kill remembered.
    fn take(&mut self, request: Request) -> Option<RunStep> {
        match request {
            Request::Run(step) => Some(step),
            Request::Kill { index, attempt } => {
                self.cancelled.insert((index, attempt));
                None
            }
        }
    }
}

/// A step ready to start: its command.
struct Prepared {
    command: Command,
    shell: String,
}

fn prepare(config: &EntrypointConfig, step: &RunStep) -> Result<Prepared, String> {
    let Some((program, args)) = step.shell.split_first().filter(|(p, _)| !p.is_empty()) else {
        return Err(
            "the shell command line is empty: expected a program such as `/bin/sh -e -c`".into(),
        );
    };
    let dir = working_dir(&config.workspace, step.working_dir.as_deref())
        .map_err(|err| err.to_string())?;
    if !dir.is_dir() {
        return Err(format!(
            "working directory `{}` does not exist in the workspace",
            step.working_dir.as_deref().unwrap_or(".")
        ));
    }
    let mut env = BTreeMap::new();
    for (name, value) in &step.env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(format!(
                "environment variable {name:?}: expected a non-empty name without `=` or NUL"
            ));
        }
        let value = match value {
            EnvValue::Value(value) => value.clone(),
            EnvValue::Secret(key) => secret_value(&config.secrets, key)
                .map_err(|err| format!("environment variable `{name}`: {err}"))?,
        };
        if value.contains('\0') {
            return Err(format!(
                "environment variable `{name}`: the value contains a NUL byte"
            ));
        }
        env.insert(name.clone(), value);
    }
    let mut command = Command::new(program);
    command.args(args).arg(&step.script).current_dir(dir);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KUBERNETES_") {
            command.env_remove(name);
        }
    }
    command.envs(env).stdin(Stdio::null()).process_group(0);
    Ok(Prepared {
        command,
        shell: program.clone(),
    })
}

/// The value of `key` of the mounted Secret. The key must be a file name of its own.
fn secret_value(secrets: &Path, key: &str) -> Result<String, String> {
    if key.is_empty() || key.contains(['/', '\0']) || key.starts_with('.') {
        return Err(format!("`{key}` is not a key of the pod's Secret"));
    }
    std::fs::read_to_string(secrets.join(key))
        .map_err(|err| format!("cannot read the key `{key}` of the pod's Secret: {err}"))
}

/// Runs one step to its end. Requests that come meanwhile: a kill of this step kills its
/// group; other steps wait in `pending`, and kills of them are remembered.
fn run_step(
    prepared: Prepared,
    log: &Log,
    requests: &mpsc::Receiver<Request>,
    pending: &mut Pending,
    this: (u32, u32),
) -> Result<StepExit, String> {
    let Prepared { mut command, shell } = prepared;
    let (mut reader, writer) = io::pipe().map_err(|err| format!("cannot make a pipe: {err}"))?;
    let writer_too = writer
        .try_clone()
        .map_err(|err| format!("cannot make a pipe: {err}"))?;
    command.stdout(writer).stderr(writer_too);
    let oom_before = oom_kills();
    let child = command.spawn();
    drop(command);
    let child = child.map_err(|err| format!("cannot run the shell `{shell}`: {err}"))?;
    let pid =
        i32::try_from(child.id()).map_err(|_| "the kernel gave a pid out of range".to_owned())?;
    let ended = Arc::new(AtomicBool::new(false));
    let copier = {
        let log = Arc::clone(log);
        let ended = Arc::clone(&ended);
        thread::spawn(move || copy_output(&mut reader, &log, &ended))
    };
    let lost = loop {
        match leader(pid) {
            Leader::Running => {}
            Leader::Ended => break false,
            Leader::Lost => break true,
        }
        match requests.recv_timeout(Duration::from_millis(20)) {
            Ok(Request::Kill { index, attempt }) if (index, attempt) == this => {
                // The leader is not reaped yet: its pid pins the group id.
                // SAFETY: a plain signal to our own child's group.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            Ok(Request::Kill { index, attempt }) => {
                pending.cancelled.insert((index, attempt));
            }
            Ok(Request::Run(step)) => pending.queue.push_back(step),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        }
    };
    if lost {
        // Its group id is no longer pinned by it: never signal it again.
        ended.store(true, Ordering::SeqCst);
        let _ = copier.join();
        return Err("lost track of the step's shell: another process reaped it".to_owned());
    }
    // What the step left in its group goes with it; then the leader is reaped.
    // SAFETY: a plain signal to our own child's group, pinned by its unreaped leader.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let status = reap(pid).map_err(|err| format!("lost track of the step's shell: {err}"))?;
    ended.store(true, Ordering::SeqCst);
    let _ = copier.join();
    let oom_killed = oom_kills()
        .zip(oom_before)
        .is_some_and(|(after, before)| after > before);
    let exit = if libc::WIFSIGNALED(status) {
        StepExit::signal(libc::WTERMSIG(status))
    } else {
        StepExit::code(libc::WEXITSTATUS(status))
    };
    Ok(StepExit { oom_killed, ..exit })
}

/// Copies a step's output to the log until the pipe closes, or, once the step has `ended`,
/// until nothing more is waiting in it: a process that left the step's group (`setsid`) and
/// holds the pipe open must not hold the step's end. What it writes later is lost (the pipe is
/// closed on it).
fn copy_output(reader: &mut io::PipeReader, log: &Log, ended: &AtomicBool) {
    let mut buf = vec![0; 64 * 1024];
    loop {
        let mut poll = libc::pollfd {
            fd: reader.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, 50) };
        if ready == 0 {
            if ended.load(Ordering::SeqCst) {
                return;
            }
            continue;
        }
        if ready < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if write_log(log, &buf[..n]).is_err() {
                    return;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Where a step's shell stands.
enum Leader {
    Running,
    /// Ended and not reaped: its pid still pins its group id.
    Ended,
    /// Not our child any more (someone else reaped it).
    Lost,
}

/// Where the process `pid` (our child) stands, leaving it a zombie if it ended.
fn leader(pid: i32) -> Leader {
    // SAFETY: an all-zero siginfo_t is a valid value to be filled.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let pid_t = libc::id_t::try_from(pid).unwrap_or_default();
    // SAFETY: `info` is a valid siginfo_t to fill.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc == -1 {
        return match io::Error::last_os_error().kind() {
            io::ErrorKind::Interrupted => Leader::Running,
            _ => Leader::Lost,
        };
    }
    // SAFETY: filled by waitid (zeroed when no child changed state).
    let changed = unsafe { info.si_pid() };
    if changed == pid {
        Leader::Ended
    } else {
        Leader::Running
    }
}

/// Reaps `pid` and answers its wait status.
fn reap(pid: i32) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid int to fill.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// As the first process of its container, the entrypoint inherits every orphan: reap those
/// that ended, between steps. Elsewhere (a test) orphans are not ours, and the children of
/// other threads must be left to them.
fn reap_strays() {
    if std::process::id() != 1 {
        return;
    }
    let mut status = 0;
    // SAFETY: `status` is a valid int to fill.
    while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {}
}

/// The kernel's count of out-of-memory kills in this container's cgroup (v2, then v1); `None`
/// where it cannot be read.
fn oom_kills() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.events",
        "/sys/fs/cgroup/memory/memory.oom_control",
    ]
    .iter()
    .find_map(|path| std::fs::read_to_string(path).ok())
    .and_then(|text| oom_kill_count(&text))
}

/// The `oom_kill N` line of `memory.events` or `memory.oom_control`.
fn oom_kill_count(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// Waits until every port accepts a connection on `localhost`, or `timeout` passes.
fn wait_for_services(ports: &[u16], timeout: Duration) -> Result<(), EntrypointError> {
    let start = Instant::now();
    let mut waiting: Vec<u16> = ports.to_vec();
    while !waiting.is_empty() {
        waiting.retain(|port| {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, *port));
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
        });
        if waiting.is_empty() {
            break;
        }
        if start.elapsed() >= timeout {
            return Err(EntrypointError::ServicesNotReady {
                ports: waiting,
                waited: timeout,
            });
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[cfg(test)]
#[path = "entrypoint_tests.rs"]
mod tests;
