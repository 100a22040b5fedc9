//! # The run engine: what a run does next, as pure rules
//!
//! The run actor holds a run's machines; this module decides. [`advance`] reads a
//! [`RunSnapshot`] — the run's machine, each job's machine (or that an attempt holds it), the
//! plan, the approvals mode and the time — and returns the [`Move`]s that follow from it: the
//! transitions to record, the jobs to queue or withdraw, the attempts to stop, when to look
//! again. The actor applies the moves in order and records them before it acts on them; it
//! never decides anything itself.
//!
//! [`advance`] is level-triggered: it looks at the whole state, so a missed or repeated
//! message is harmless, and calling it again on the state its moves lead to yields no new
//! transition. [`job_def`] is what one attempt of a job runs (steps, environments, hooks);
//! [`resume_point`] is where an attempt found running after a crash goes on from.
//!
//! **Guarantees** (property-tested in `props.rs`): no job is queued before every job it needs
//! is done and allowed it; a cancel skips every pending job and stops every attempt, and no
//! job starts after it; the post-hooks job starts once, after every other job is done, and the
//! run finishes once, after it; the verdict is [`verdict`] of the jobs; a job whose `when` is
//! false is skipped, and so are the jobs that need it.

mod attempt;
mod opening;
#[cfg(test)]
mod props;
mod resume;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

pub use attempt::{CacheDef, HOOK_TIMEOUT, HookSteps, JobDef, JobFiles, job_def};
pub use opening::{Restored, open, restore};
pub use resume::{ResumePoint, resume_point};

use crate::ids::{JobId, Timestamp};
use crate::plan::{JobRef, Plan, ResolvedRun, Skip};
use crate::state::{
    JobEvent, JobMachine, JobSkipReason, JobState, RunEvent, RunMachine, RunState, verdict,
};

/// How a run treats approval gates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approvals {
    /// Gated jobs wait for someone to approve them.
    Wait,
    /// Gated jobs are approved at once, by the person running `hodei run` on their machine.
    Local,
}

/// A job as its run holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSlot {
    pub id: JobId,
    /// The job's machine while the run holds it; `None` while an attempt (a job actor) holds
    /// it, until the attempt hands it back.
    pub machine: Option<JobMachine>,
    /// The job waits in the scheduler's queue for a placement.
    pub enqueued: bool,
}

impl JobSlot {
    /// A job the run holds, not queued.
    pub fn home(machine: JobMachine) -> JobSlot {
        JobSlot {
            id: machine.id(),
            machine: Some(machine),
            enqueued: false,
        }
    }

    /// Whether the job is done and the run holds its machine.
    pub fn is_done(&self) -> bool {
        self.machine.as_ref().is_some_and(JobMachine::is_terminal)
    }
}

/// What [`advance`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct RunSnapshot<'a> {
    pub plan: &'a Plan,
    pub resolved: &'a ResolvedRun,
    pub run: &'a RunMachine,
    /// One per job of the plan, in the plan's order.
    pub jobs: &'a [JobSlot],
    /// The job of the pipeline's post hooks, if it has any.
    pub post: Option<&'a JobSlot>,
    pub approvals: Approvals,
    pub now: Timestamp,
}

/// One thing a run does, in the order [`advance`] returns them.
#[derive(Debug, Clone, PartialEq)]
pub enum Move {
    /// Apply and record this transition of the run.
    Run(RunEvent),
    /// Apply and record this transition of a job whose machine the run holds.
    Job(JobRef, JobEvent),
    /// Ask the scheduler for a worker: the job is queued (or was found placed or running after
    /// a restart, and goes on once it has a worker again).
    Enqueue(JobRef),
    /// Take the job out of the scheduler's queue.
    Withdraw(JobRef),
    /// Stop the attempt that holds the job: the run is being cancelled.
    StopAttempt(JobRef),
    /// A queued job waits for its retry delay: decide again at this instant.
    WakeAt(Timestamp),
}

/// Everything the run's state calls for now. See the [module](self) for what it guarantees.
pub fn advance(snapshot: &RunSnapshot<'_>) -> Vec<Move> {
    let mut moves = Vec::new();
    let mut run = snapshot.run.clone();
    if run.state() == RunState::Pending && run.apply(RunEvent::Start, snapshot.now).is_ok() {
        moves.push(Move::Run(RunEvent::Start));
    }
    if run.is_terminal() {
        return moves;
    }
    let mut walk = Walk {
        snapshot,
        cancelling: run.state() == RunState::Cancelling,
        changed: HashMap::new(),
        changed_post: None,
        moves,
    };
    for &i in &snapshot.plan.order {
        walk.job(JobRef::Planned(i));
    }
    let jobs = snapshot.plan.jobs.len();
    let all_done = (0..jobs).all(|i| walk.machine(i).is_some_and(JobMachine::is_terminal));
    if !all_done {
        return walk.moves;
    }
    let post_done = match snapshot.post {
        None => true,
        Some(post) => {
            walk.job(JobRef::Post);
            walk.changed_post
                .as_ref()
                .or(post.machine.as_ref())
                .is_some_and(JobMachine::is_terminal)
        }
    };
    if post_done {
        let machines: Vec<&JobMachine> = (0..jobs).filter_map(|i| walk.machine(i)).collect();
        if let Some(verdict) = verdict(machines) {
            walk.moves.push(Move::Run(RunEvent::Finish(verdict)));
        }
    }
    walk.moves
}

/// One pass of [`advance`] over the jobs, with the machines it changed so far.
struct Walk<'a, 's> {
    snapshot: &'s RunSnapshot<'a>,
    cancelling: bool,
    /// Copies of the machines of planned jobs this pass moved, by index.
    changed: HashMap<usize, JobMachine>,
    changed_post: Option<JobMachine>,
    moves: Vec<Move>,
}

/// What a job at rest calls for.
enum Next {
    Event(JobEvent),
    Effect(Move),
    Rest,
}

impl Walk<'_, '_> {
    /// The machine of planned job `i` as this pass left it, if the run holds it.
    fn machine(&self, i: usize) -> Option<&JobMachine> {
        self.changed
            .get(&i)
            .or_else(|| self.snapshot.jobs.get(i)?.machine.as_ref())
    }

    /// The machine of `job` as this pass left it, if the run holds it.
    fn current<'x>(&'x self, job: JobRef, slot: &'x JobSlot) -> Option<&'x JobMachine> {
        match job {
            JobRef::Planned(i) => self.changed.get(&i).or(slot.machine.as_ref()),
            JobRef::Post => self.changed_post.as_ref().or(slot.machine.as_ref()),
        }
    }

    /// Moves one job as far as its state allows: a transition can call for another (needs met
    /// → waiting for approval → approved here → queued), then for an effect.
    fn job(&mut self, job: JobRef) {
        let snapshot = self.snapshot;
        let slot = match job {
            JobRef::Planned(i) => snapshot.jobs.get(i),
            JobRef::Post => snapshot.post,
        };
        let Some(slot) = slot else { return };
        if slot.machine.is_none() {
            if self.cancelling && job != JobRef::Post {
                self.moves.push(Move::StopAttempt(job));
            }
            return;
        }
        // Every transition leaves the state it came from: a job moves a few times at most.
        for _ in 0..8 {
            let Some(current) = self.current(job, slot) else {
                return;
            };
            let (before, next) = self.next(job, current, slot.enqueued);
            let moved = match &next {
                Next::Event(event) => {
                    let mut machine = current.clone();
                    machine
                        .apply(event.clone(), snapshot.now)
                        .ok()
                        .map(|_| machine)
                }
                _ => None,
            };
            self.moves.extend(before);
            match (next, moved) {
                (Next::Event(event), Some(machine)) => {
                    self.moves.push(Move::Job(job, event));
                    match job {
                        JobRef::Planned(i) => {
                            self.changed.insert(i, machine);
                        }
                        JobRef::Post => self.changed_post = Some(machine),
                    }
                }
                (Next::Effect(effect), _) => {
                    self.moves.push(effect);
                    return;
                }
                _ => return,
            }
        }
    }

    /// What a job the run holds calls for in its state, and a move that must come before.
    fn next(&self, job: JobRef, machine: &JobMachine, enqueued: bool) -> (Option<Move>, Next) {
        // The post hooks run after a cancel too.
        let cancelling = self.cancelling && job != JobRef::Post;
        let next = match machine.state() {
            JobState::Pending if cancelling => Next::Event(JobEvent::Skip {
                reason: JobSkipReason::RunCancelled,
            }),
            JobState::Pending => match job {
                JobRef::Planned(i) => self.readiness(i).map_or(Next::Rest, Next::Event),
                // Only looked at once every planned job is done.
                JobRef::Post => Next::Event(JobEvent::NeedsMet),
            },
            JobState::WaitingApproval if cancelling => Next::Event(JobEvent::Cancel),
            JobState::WaitingApproval if self.snapshot.approvals == Approvals::Local => {
                Next::Event(JobEvent::Approve { by: "local".into() })
            }
            JobState::Queued | JobState::Placed { .. } | JobState::Running { .. } if cancelling => {
                let withdraw = enqueued.then_some(Move::Withdraw(job));
                return (withdraw, Next::Event(JobEvent::Cancel));
            }
            JobState::Queued if !enqueued => match self.retry_due(job, machine) {
                Some(due) if due > self.snapshot.now => Next::Effect(Move::WakeAt(due)),
                _ => Next::Effect(Move::Enqueue(job)),
            },
            // Found placed or running after a restart: it goes on once it has a worker again.
            JobState::Placed { .. } | JobState::Running { .. } if !enqueued => {
                Next::Effect(Move::Enqueue(job))
            }
            _ => Next::Rest,
        };
        (None, next)
    }

    /// When a job queued again for a retry may be placed: its retry delay after it was queued
    /// again (a restart of Hodei neither skips nor restarts the wait).
    fn retry_due(&self, job: JobRef, machine: &JobMachine) -> Option<Timestamp> {
        let JobRef::Planned(i) = job else { return None };
        let delay = self.snapshot.plan.jobs.get(i)?.retry.delay?;
        if machine.attempt().get() <= 1 {
            return None;
        }
        let millis = i64::try_from(delay.to_std().as_millis()).unwrap_or(i64::MAX);
        Some(Timestamp(machine.since().0.saturating_add(millis)))
    }

    /// What a pending job's needs allow: wait (`None`), skip, or go.
    fn readiness(&self, i: usize) -> Option<JobEvent> {
        let plan = self.snapshot.plan;
        let mut all_done = true;
        for &need in &plan.jobs[i].needs {
            let Some(machine) = self.machine(need).filter(|m| m.is_terminal()) else {
                all_done = false;
                continue;
            };
            match machine.state() {
                JobState::Succeeded => {}
                JobState::Failed { .. } | JobState::TimedOut
                    if machine.policy().continue_on_error => {}
                JobState::Skipped { .. } => {
                    return Some(JobEvent::Skip {
                        reason: JobSkipReason::NeedSkipped { job: machine.id() },
                    });
                }
                _ => {
                    return Some(JobEvent::Skip {
                        reason: JobSkipReason::NeedFailed { job: machine.id() },
                    });
                }
            }
        }
        if !all_done {
            return None;
        }
        match self.snapshot.resolved.skips.get(i).copied().flatten() {
            Some(Skip::WhenFalse) => Some(JobEvent::Skip {
                reason: JobSkipReason::WhenFalse,
            }),
            // A skip that follows from a skipped need was found above, with the need's id.
            Some(Skip::NeedSkipped { .. }) | None => Some(JobEvent::NeedsMet),
        }
    }
}
