//! Where a job attempt found running after a crash of Hodei goes on from, read from what the
//! store recorded of its steps.

use crate::model::Step;
use crate::ports::StepRecord;
use crate::state::{JobMachine, MaxAttempts, StepKey, StepMachine, StepState};

/// Where an attempt stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum ResumePoint {
    /// In step `index`: its machine as recorded (running when Hodei stopped, or waiting for its
    /// next try), and where its output began in the job's log, if it started.
    InStep {
        index: usize,
        machine: StepMachine,
        log_offset: Option<u64>,
    },
    /// Between steps: the next one to run (the number of steps: only the hooks are left).
    Before(usize),
    /// It was ending — a step failed for good, steps were skipped, hooks ran — or cannot be
    /// told: it does not go on, and the job's retry policy decides.
    Ending,
}

/// Where the current attempt of `job` stands, from its step records (of any attempt; only the
/// job's current attempt counts, and of each step only its latest try) and its steps' definitions.
pub fn resume_point(job: &JobMachine, records: &[StepRecord], steps: &[Step]) -> ResumePoint {
    // The latest try of each step of this job attempt: an earlier try that failed and was
    // retried says nothing about where the step stands.
    let mut latest: Vec<&StepRecord> = Vec::new();
    for record in records.iter().filter(|r| r.job_attempt == job.attempt()) {
        match latest.iter_mut().find(|r| r.index == record.index) {
            Some(seen) if seen.attempt < record.attempt => *seen = record,
            Some(_) => {}
            None => latest.push(record),
        }
    }
    latest.sort_by_key(|r| r.index);
    let ending = latest.iter().any(|r| {
        let Some(step) = steps.get(r.index as usize) else {
            // A hook's record: the steps were over.
            return true;
        };
        matches!(r.state, StepState::Skipped { .. })
            || (!step.continue_on_error
                && matches!(
                    r.state,
                    StepState::Failed { .. } | StepState::TimedOut | StepState::Cancelled
                ))
    });
    if ending {
        return ResumePoint::Ending;
    }
    let Some(last) = latest.last() else {
        return ResumePoint::Before(0);
    };
    let index = last.index as usize;
    match last.state {
        StepState::Running | StepState::Pending => {
            let retries = steps[index].retry.map_or(0, |r| r.max);
            let key = StepKey {
                run: job.run(),
                job: job.id(),
                job_attempt: job.attempt(),
                index: last.index,
            };
            ResumePoint::InStep {
                index,
                machine: StepMachine::restore(
                    key,
                    MaxAttempts::from_retries(retries),
                    last.attempt,
                    last.state.clone(),
                    last.since,
                ),
                log_offset: last.log_offset,
            }
        }
        _ => ResumePoint::Before(index + 1),
    }
}
