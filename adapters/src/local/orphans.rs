//! Reconciliation: finding, through `/proc`, the processes an earlier life of this Hodei store
//! left running, killing their process groups and naming the steps they belonged to.
//!
//! A process is ours when its environment holds `HODEI_PROVIDER_INSTANCE=<instance>` (every
//! process a step starts inherits it, unless it clears its environment). The scan runs on a
//! blocking thread; it tolerates processes that vanish while it runs and entries it cannot read.
//! Zombies are ignored: their `environ` reads empty.
//!
//! ## The residual race
//! Between reading a process's `environ` and `kill(-pgid)`, its whole group could end and the id
//! be handed to a new group leader. That takes the group dying and the kernel cycling through
//! the pid space within microseconds; we accept it, and never signal our own group, pid 1, or a
//! group of a step this provider runs.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io;
use std::time::{Duration, Instant};

use hodei_domain::ports::Cause;
use hodei_domain::ports::{Orphan, ProviderError};

use super::convert::{INSTANCE_VAR, STEP_VAR, StepMarker};

/// How long the reaper waits for killed processes to be gone, so that a second call finds
/// nothing.
const SETTLE: Duration = Duration::from_secs(2);

/// What the current life runs, and must be spared.
#[derive(Debug, Default)]
pub struct Spare {
    /// Process groups of steps whose leader is not reaped.
    pub pgids: HashSet<i32>,
    /// Markers of steps this provider started and has not torn down.
    pub markers: HashSet<String>,
}

/// One process of an earlier life.
struct Found {
    pid: i32,
    pgid: i32,
    step: Option<String>,
}

/// Kills every process group left by an earlier life of `instance` and names their steps.
pub fn reap(instance: &str, spare: &Spare) -> Result<Vec<Orphan>, ProviderError> {
    let found = scan(instance, spare).map_err(|err| ProviderError::Other {
        provider: "local",
        reason: format!("cannot list /proc: {err}"),
        cause: Cause::of(err),
    })?;
    let groups: BTreeSet<i32> = found.iter().map(|f| f.pgid).collect();
    for &pgid in &groups {
        // SAFETY: kill has no memory effects; `scan` excluded pgid <= 1 and our own group.
        if unsafe { libc::kill(-pgid, libc::SIGKILL) } == -1 {
            let err = io::Error::last_os_error();
            tracing::warn!(pgid, error = %err, "Cannot kill an orphaned process group.");
        }
    }
    settle(&found);

    let mut steps: BTreeMap<&str, BTreeSet<i32>> = BTreeMap::new();
    for process in &found {
        match process.step.as_deref() {
            Some(step) => {
                steps.entry(step).or_default().insert(process.pgid);
            }
            None => tracing::warn!(
                pid = process.pid,
                "Killed an orphaned process that names no step."
            ),
        }
    }
    let mut orphans = Vec::with_capacity(steps.len());
    for (step, pgids) in steps {
        let Some(marker) = StepMarker::parse(step) else {
            tracing::warn!(
                marker = step,
                "Killed orphaned processes with an unreadable step marker."
            );
            continue;
        };
        let id = pgids
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        tracing::info!(
            job_id = %marker.job, step = marker.step, pgid = %id,
            "Reaped an orphaned step."
        );
        orphans.push(Orphan {
            job: marker.job,
            job_attempt: marker.job_attempt,
            step: marker.step,
            step_attempt: marker.step_attempt,
            id,
        });
    }
    Ok(orphans)
}

fn scan(instance: &str, spare: &Spare) -> io::Result<Vec<Found>> {
    let own_pid = std::process::id();
    // SAFETY: getpgrp cannot fail.
    let own_pgid = unsafe { libc::getpgrp() };
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if u32::try_from(pid) == Ok(own_pid) {
            continue;
        }
        // Vanished, a kernel thread, or not ours to read: none of them is an orphan of ours.
        let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let Some(marked) = markers(&environ, instance) else {
            continue;
        };
        let Some(pgid) = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| stat_pgid(&stat))
        else {
            continue;
        };
        let spared =
            spare.pgids.contains(&pgid) || marked.is_some_and(|step| spare.markers.contains(step));
        if spared || pgid <= 1 || pgid == own_pgid {
            continue;
        }
        found.push(Found {
            pid,
            pgid,
            step: marked.map(str::to_owned),
        });
    }
    Ok(found)
}

/// Waits (bounded by [`SETTLE`]) until every killed process is gone or a zombie.
fn settle(found: &[Found]) {
    let until = Instant::now() + SETTLE;
    for process in found {
        while is_running(process.pid) {
            if Instant::now() >= until {
                tracing::warn!(pid = process.pid, "An orphaned process survived SIGKILL.");
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Whether `pid` exists and is not a zombie.
pub fn is_running(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(stat_state(&stat), Some('Z' | 'X' | 'x') | None),
        Err(_) => false,
    }
}

/// `Some(step marker)` when `environ` (NUL-separated `NAME=value`) carries our instance.
fn markers<'a>(environ: &'a [u8], instance: &str) -> Option<Option<&'a str>> {
    let mut ours = false;
    let mut step = None;
    for var in environ.split(|&b| b == 0) {
        let Ok(var) = std::str::from_utf8(var) else {
            continue;
        };
        match var.split_once('=') {
            Some((INSTANCE_VAR, value)) => ours = value == instance,
            Some((STEP_VAR, value)) => step = Some(value),
            _ => {}
        }
    }
    ours.then_some(step)
}

/// The fields after the command name in `/proc/<pid>/stat` (which may contain spaces and `)`).
fn after_comm(stat: &str) -> Option<std::str::SplitWhitespace<'_>> {
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace())
}

fn stat_state(stat: &str) -> Option<char> {
    after_comm(stat)?.next()?.chars().next()
}

fn stat_pgid(stat: &str) -> Option<i32> {
    // state, ppid, pgrp
    after_comm(stat)?.nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_instance_is_recognised_and_its_step_read() {
        let env = b"HOME=/root\0HODEI_PROVIDER_INSTANCE=a\0HODEI_STEP=7/1/0/1\0";
        assert_eq!(markers(env, "a"), Some(Some("7/1/0/1")));
        assert_eq!(markers(env, "b"), None);
        assert_eq!(markers(env, ""), None);
        assert_eq!(markers(b"HODEI_PROVIDER_INSTANCE=a", "a"), Some(None));
        assert_eq!(markers(b"HODEI_PROVIDER_INSTANCE=ab\0", "a"), None);
        assert_eq!(markers(b"", "a"), None, "a zombie's environ is empty");
        assert_eq!(
            markers(b"\xff\xfe\0HODEI_PROVIDER_INSTANCE=a\0", "a"),
            Some(None)
        );
    }

    #[test]
    fn stat_lines_are_read_past_odd_command_names() {
        let stat = "4242 (sl) eep) 600) S 1 4240 4240 0 -1 4194560 90 0 0 0";
        assert_eq!(stat_state(stat), Some('S'));
        assert_eq!(stat_pgid(stat), Some(4240));
        assert_eq!(stat_state("4242 (zombie) Z 1 4242 4242"), Some('Z'));
        assert_eq!(stat_pgid("garbage"), None);
    }

    #[test]
    fn this_process_is_running_and_a_missing_one_is_not() {
        let own = i32::try_from(std::process::id()).expect("pid fits");
        assert!(is_running(own));
        assert!(!is_running(i32::MAX));
    }
}
