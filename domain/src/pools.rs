//! Pools of ephemeral workers: what the worker manager decides, as plain functions.
//!
//! A pool starts one-job workers (agents that take one job and exit) when queued jobs ask for
//! labels its workers offer, never more than its `max` at once, and none when nothing waits.
//! [`decide`] reads what the manager observed (the queue, the pool's workers) and returns the
//! [`Move`]s to make; [`Backoff`] spaces out the starts of a pool whose workers fail to start.
//!
//! ## Guarantees
//! - Never more workers than `max`, counting those starting, idle and busy ([`decide`] only
//!   starts into the room left).
//! - A worker that is starting or idle stands for one queued job: no second worker is started
//!   for a job that one already waits for.
//! - Each exited worker is removed exactly once per observation; one that exited before it took
//!   a job with a failure code, or did not register in time, is a failed start.

use std::time::Duration;

use crate::ids::Timestamp;
use crate::model::Label;

/// What the manager knows of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRule {
    /// The labels its workers offer.
    pub labels: Vec<Label>,
    /// The most workers at once.
    pub max: u32,
    /// How long a worker may take to register before it counts as failed.
    pub start_deadline: Duration,
    /// How long a registered worker may stay without a job before it is removed (it should
    /// have left by itself at its idle timeout).
    pub idle_deadline: Duration,
}

impl PoolRule {
    /// Whether a worker of the pool can take a job that runs on `runs_on`: it offers every
    /// one of those labels.
    pub fn serves(&self, runs_on: &[Label]) -> bool {
        runs_on.iter().all(|label| self.labels.contains(label))
    }
}

/// Where one of a pool's workers is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Launched; it has not registered with the scheduler yet.
    Starting,
    /// Registered, without a job yet.
    Idle,
    /// It took its job.
    Busy,
    /// Its container or pod ended, with this exit code if known.
    Exited { code: Option<i64>, took_job: bool },
}

/// One of a pool's workers as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub name: String,
    pub phase: Phase,
    /// When it was launched.
    pub launched: Timestamp,
    /// When it registered, if it has.
    pub registered: Option<Timestamp>,
}

/// What the manager does next for a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Move {
    /// Start this many workers.
    Start { count: u32 },
    /// Remove a worker (its container or pod, and its agent record). `failure`: why it counts
    /// as a failed start.
    Remove {
        name: String,
        failure: Option<String>,
    },
}

/// The moves for a pool, given the `runs_on` of every queued job, its workers, its backoff and
/// the time. Removals come first, then at most one [`Move::Start`].
pub fn decide(
    rule: &PoolRule,
    queue: &[&[Label]],
    workers: &[Observed],
    backoff: &Backoff,
    now: Timestamp,
) -> Vec<Move> {
    let mut moves = Vec::new();
    let mut live = 0u32;
    let mut waiting = 0u32;
    let over =
        |since: Timestamp, limit: Duration| u128::from(now.millis_since(since)) > limit.as_millis();
    for worker in workers {
        let failure = match &worker.phase {
            Phase::Exited {
                took_job: false,
                code,
            } if *code != Some(0) => Some(match code {
                Some(code) => format!("the worker exited with code {code} before it took a job"),
                None => "the worker ended before it took a job".to_owned(),
            }),
            Phase::Exited { .. } => None,
            Phase::Starting if over(worker.launched, rule.start_deadline) => Some(format!(
                "the worker did not reach the server within {} s",
                rule.start_deadline.as_secs()
            )),
            Phase::Idle
                if over(
                    worker.registered.unwrap_or(worker.launched),
                    rule.idle_deadline,
                ) =>
            {
                None
            }
            Phase::Starting | Phase::Idle => {
                live += 1;
                waiting += 1;
                continue;
            }
            Phase::Busy => {
                live += 1;
                continue;
            }
        };
        moves.push(Move::Remove {
            name: worker.name.clone(),
            failure,
        });
    }
    let demand = queue.iter().filter(|runs_on| rule.serves(runs_on)).count() as u32;
    let wanted = demand.saturating_sub(waiting);
    let room = rule.max.saturating_sub(live);
    let count = wanted.min(room);
    if count > 0 && backoff.ready(now) {
        moves.push(Move::Start { count });
    }
    moves
}

/// The spacing of a pool's starts after failed ones: none after a success, then 1 s, 2 s, 4 s…
/// up to [`Backoff::MAX`] after consecutive failures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    /// Failed starts since the last success.
    pub failures: u32,
    /// No start before this instant.
    pub until: Option<Timestamp>,
}

impl Backoff {
    /// The first delay.
    pub const BASE: Duration = Duration::from_secs(1);
    /// The longest delay.
    pub const MAX: Duration = Duration::from_secs(60);

    /// The delay after `failures` consecutive failures (at least one).
    pub fn delay(failures: u32) -> Duration {
        let factor = 1u64 << failures.saturating_sub(1).min(16);
        Self::BASE
            .saturating_mul(factor.min(u64::from(u32::MAX)) as u32)
            .min(Self::MAX)
    }

    /// A start failed at `now`.
    pub fn failed(&mut self, now: Timestamp) {
        self.failures = self.failures.saturating_add(1);
        let delay = Self::delay(self.failures).as_millis() as i64;
        self.until = Some(Timestamp(now.0.saturating_add(delay)));
    }

    /// A worker started and reached the server: starts go at full speed again.
    pub fn succeeded(&mut self) {
        *self = Backoff::default();
    }

    /// Whether a start may be made at `now`.
    pub fn ready(&self, now: Timestamp) -> bool {
        self.until.is_none_or(|until| now >= until)
    }
}

#[cfg(test)]
#[path = "pools_tests.rs"]
mod tests;
