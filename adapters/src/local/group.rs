//! A step's process group: its leader (the shell), how its end is observed without reaping it,
//! and how the group is killed without ever signalling a recycled process group id.
//!
//! ## Why the group id can never be recycled under us
//! The step's shell leads its group (pgid = its pid). Linux does not hand out a pid again while
//! a process, a zombie included, still uses it as a pid or a process group id. Hodei observes
//! the shell's end with `waitid(WNOWAIT)`, which leaves it a zombie, and reaps it only in
//! [`Leader::destroy`] (or when the monitor sees the end of a step already destroyed), right
//! after killing the group, under the same lock. So every `kill(-pgid)` happens while our
//! unreaped zombie (or the live shell) pins the id, and once we reaped it we never signal that
//! id again. Background processes a step leaves behind (`server &`) therefore keep running, like
//! in GitHub Actions, until `destroy_step` of that step or `tear_down` of its job; processes
//! that leave the group (`setsid`) escape both and are found by `reap_orphans` in the next life,
//! by their marker variables.
//!
//! ## Observing the end
//! A pidfd (Linux 5.3+) becomes readable when the shell exits: the monitor task awaits it on
//! the runtime's reactor, no thread per step. Without pidfd, a blocking `waitid` on tokio's
//! blocking pool does the same.

use std::io::{self, ErrorKind};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Mutex, PoisonError};

use hodei_domain::state::StepExit;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::convert::step_exit;

/// The leader of a step's process group (the shell), and whether it has been reaped.
#[derive(Debug)]
pub struct Leader {
    pub(super) pid: i32,
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
    pub(super) fn new(pid: i32) -> Leader {
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
    pub(super) fn exited(&self) {
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
    pub(super) fn lost(&self) {
        *self.lock() = LeaderState::Reaped;
    }

    /// Gives up on a step that could not be followed: kills it and reaps it, blocking briefly.
    pub(super) fn abandon(&self) {
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
pub enum ExitWatch {
    /// A pidfd, readable once the process exited: no thread needed.
    Pidfd(AsyncFd<OwnedFd>),
    /// Kernels without pidfd (before 5.3): a blocking `waitid` on tokio's blocking pool.
    Blocking,
}

impl ExitWatch {
    pub fn new(pid: i32) -> ExitWatch {
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

    pub async fn wait(self, pid: i32) -> io::Result<StepExit> {
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

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::Command;
    use std::time::Duration;

    use super::*;
    use crate::local::orphans::is_running;

    // The tests reap the child themselves, through the code under test (`waitid`).
    #[allow(clippy::zombie_processes)]
    fn spawn(script: &str) -> i32 {
        let child = Command::new("/bin/sh")
            .args(["-c", script])
            .process_group(0)
            .spawn()
            .expect("spawned");
        i32::try_from(child.id()).expect("pid fits")
    }

    fn state(pid: i32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.chars().next()
    }

    async fn observe(watch: ExitWatch, pid: i32) -> StepExit {
        tokio::time::timeout(Duration::from_secs(20), watch.wait(pid))
            .await
            .expect("no exit within 20 s, likely deadlocked")
            .expect("an exit")
    }

    #[tokio::test]
    async fn both_watches_see_the_end_and_leave_a_zombie_until_destroy() {
        for (blocking, code) in [(false, 7), (true, 9)] {
            let pid = spawn(&format!("exit {code}"));
            let watch = if blocking {
                ExitWatch::Blocking
            } else {
                ExitWatch::new(pid)
            };
            assert_eq!(observe(watch, pid).await, StepExit::code(code));
            assert_eq!(state(pid), Some('Z'), "the id stays pinned");

            let leader = Leader::new(pid);
            leader.exited();
            assert!(leader.is_pinned());
            leader.destroy();
            assert!(!leader.is_pinned());
            assert_eq!(state(pid), None, "reaped");
            leader.destroy();
        }
    }

    #[tokio::test]
    async fn a_step_destroyed_while_running_is_reaped_when_it_ends() {
        let pid = spawn("sleep 600");
        let leader = Leader::new(pid);
        leader.destroy();
        let exit = observe(ExitWatch::new(pid), pid).await;
        assert_eq!(exit, StepExit::signal(libc::SIGKILL));
        assert!(
            leader.is_pinned(),
            "not reaped before the monitor saw the end"
        );
        leader.exited();
        assert!(!leader.is_pinned() && !is_running(pid) && state(pid).is_none());
    }
}
