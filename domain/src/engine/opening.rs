//! A new run's opening: the transitions of its first reconcile, decided while the run is
//! created, so that the store writes them in the transaction that creates it. A run's first
//! job then waits for two commits before it starts (the run with its opening; the job placed
//! and started), not three.

use super::{Approvals, JobSlot, Move, RunSnapshot, advance};
use crate::ids::Timestamp;
use crate::plan::{JobRef, Plan, ResolvedRun};
use crate::ports::RunRecord;
use crate::state::{DomainEvent, JobMachine, RunEvent, RunMachine, RunState};

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
    let count = plan.jobs.len() + usize::from(plan.has_post_job());
    if record.state != RunState::Pending || record.jobs.len() != count {
        return Vec::new();
    }
    let mut run = RunMachine::restore(record.id, record.state, record.since);
    let mut jobs = Vec::with_capacity(plan.jobs.len());
    let mut post = None;
    for (position, job) in record.jobs.iter().enumerate() {
        let Some(which) = plan.job_at(position) else {
            return Vec::new();
        };
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
