//! A new run's opening: the transitions of its first reconcile, decided while the run is
//! created, so that the store writes them in the transaction that creates it. A run's first
//! job then waits for two commits before it starts (the run with its opening; the job placed
//! and started), not three. And [`restore`]: a stored run's machines, which the opening and the
//! run actor's load both start from.

use super::{Approvals, JobSlot, Move, RunSnapshot, advance};
use crate::ids::Timestamp;
use crate::plan::{JobRef, Plan, ResolvedRun};
use crate::ports::RunRecord;
use crate::state::{DomainEvent, JobMachine, RunEvent, RunMachine, RunState};

/// A stored run's machines, as its actor holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    pub run: RunMachine,
    /// The plan's jobs, in the plan's order.
    pub jobs: Vec<JobSlot>,
    /// The job of the pipeline's post hooks, if it has any.
    pub post: Option<JobSlot>,
}

/// The machines of a stored run of `plan`, each job at rest (held by the run, not queued);
/// `None` when the record's jobs are not the plan's ([`Plan::run_jobs`], by count).
pub fn restore(plan: &Plan, record: &RunRecord) -> Option<Restored> {
    if record.jobs.len() != plan.jobs.len() + usize::from(plan.has_post_job()) {
        return None;
    }
    let mut jobs = Vec::with_capacity(plan.jobs.len());
    let mut post = None;
    for (position, job) in record.jobs.iter().enumerate() {
        let which = plan.job_at(position)?;
        let slot = JobSlot::home(JobMachine::restore(
            record.id,
            job.id,
            plan.policy(which),
            job.attempt,
            job.state.clone(),
            job.since,
        ));
        match which {
            JobRef::Planned(_) => jobs.push(slot),
            JobRef::Post => post = Some(slot),
        }
    }
    Some(Restored {
        run: RunMachine::restore(record.id, record.state, record.since),
        jobs,
        post,
    })
}

/// Applies to `record` — a run just created: pending, its jobs pending, with the ids the store
/// gave them — the transitions that [`advance`] makes on it at `now`, and returns them for the
/// store to write with the run: the run starts; the jobs that need nothing are queued, wait for
/// an approval (approved at once under [`Approvals::Local`]) or are skipped.
///
/// The opening stops before the run would finish, and at the first transition a machine
/// refuses: what it leaves is a state that [`advance`] reached, and the run's actor goes on
/// from there as from any state. A record that is not a run just created of `plan` opens to
/// nothing.
pub fn open(
    plan: &Plan,
    resolved: &ResolvedRun,
    approvals: Approvals,
    now: Timestamp,
    record: &mut RunRecord,
) -> Vec<DomainEvent> {
    if record.state != RunState::Pending {
        return Vec::new();
    }
    let Some(Restored {
        mut run,
        mut jobs,
        mut post,
    }) = restore(plan, record)
    else {
        return Vec::new();
    };
    let moves = advance(&RunSnapshot {
        plan,
        resolved,
        run: &run,
        jobs: &jobs,
        post: post.as_ref(),
        approvals,
        now,
    });
    let mut events = Vec::new();
    for m in moves {
        let applied = match m {
            Move::Run(RunEvent::Finish(_)) => break,
            Move::Run(event) => run.apply(event, now).ok(),
            Move::Job(job, event) => {
                let slot = match job {
                    JobRef::Planned(i) => jobs.get_mut(i),
                    JobRef::Post => post.as_mut(),
                };
                match slot.and_then(|s| s.machine.as_mut()) {
                    Some(machine) => machine.apply(event, now).ok(),
                    None => break,
                }
            }
            // Effects are the actor's: it decides them again from the state left here.
            Move::Enqueue(_) | Move::Withdraw(_) | Move::StopAttempt(_) | Move::WakeAt(_) => {
                continue;
            }
        };
        match applied {
            Some(event) => events.push(event),
            None => break,
        }
    }
    record.state = run.state();
    record.since = run.since();
    for (stored, slot) in record.jobs.iter_mut().zip(jobs.iter().chain(post.as_ref())) {
        if let Some(machine) = &slot.machine {
            stored.state = machine.state().clone();
            stored.since = machine.since();
            if machine.is_terminal() {
                stored.finished = Some(machine.since());
            }
        }
    }
    events
}
