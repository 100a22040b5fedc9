//! [`DomainEvent`]: what every accepted transition yields, appended to the audit log by the
//! store and streamed by the API. Its JSON shape is a public contract (`docs/states.md`): add
//! variants and fields, never rename or remove them.

use serde::{Deserialize, Serialize};

use super::{Attempt, JobFailure, JobSkipReason, StepFailure, StepSkipReason};
use crate::ids::{JobId, RunId, Timestamp, WorkerId};

/// Something that happened to a run, a job or a step. One per accepted transition.
///
/// JSON: an object with `"type"` (the [`kind`](DomainEvent::kind)), the subject's ids, the
/// payload and `"at"` (milliseconds since the Unix epoch, as stored; the API writes it as an RFC
/// 3339 string, see `hodei_api::time`). Job events carry the job's `attempt`;
/// step events carry `job_attempt`, the step's position `step` (from 0) and the step's own
/// `attempt`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DomainEvent {
    /// The run started walking its jobs. Run state: `running`.
    RunStarted { run: RunId, at: Timestamp },
    /// Someone asked to cancel the run. Run state: `cancelling`.
    RunCancelRequested {
        run: RunId,
        /// Who asked: a user name, or `hodei` for the system.
        by: String,
        at: Timestamp,
    },
    /// Every job is done and none failed. Run state: `succeeded`.
    RunSucceeded { run: RunId, at: Timestamp },
    /// Every job is done and some failed. Run state: `failed`.
    RunFailed {
        run: RunId,
        /// The jobs that failed or timed out without `continue_on_error`.
        failed_jobs: Vec<JobId>,
        at: Timestamp,
    },
    /// The run is done, cancelled. Run state: `cancelled`.
    RunCancelled { run: RunId, at: Timestamp },
    /// Someone started the run by hand although the pipeline's `on:` does not allow `event`
    /// (an explicit override). Written with the run, before any other of its events: an audit
    /// record, not a move. Run state: `pending`.
    RunStartOverridden {
        run: RunId,
        /// Who overrode: a user name.
        by: String,
        /// The start that `on:` does not allow, e.g. `manual`.
        event: String,
        at: Timestamp,
    },

    /// The job's needs are met; it waits for approval. Job state: `waiting_approval`.
    JobAwaitingApproval {
        run: RunId,
        job: JobId,
        attempt: Attempt,
        at: Timestamp,
    },
    /// Someone approved the job. Job state: `queued`.
    JobApproved {
        run: RunId,
        job: JobId,
        attempt: Attempt,
        /// Who approved it.
        by: String,
        at: Timestamp,
    },
    /// The job's needs are met; it waits for a worker. Job state: `queued`.
    JobQueued {
        run: RunId,
        job: JobId,
        attempt: Attempt,
        at: Timestamp,
    },
    /// The scheduler chose a worker. Job state: `placed`.
    JobPlaced {
        run: RunId,
        job: JobId,
        attempt: Attempt,
        worker: WorkerId,
        at: Timestamp,
    },
    /// The worker was lost before the job started; it waits for another, same attempt.
    /// Job state: `queued`.
    JobRequeued {
        run: RunId,
        job: JobId,
        attempt: Attempt,
        /// The lost worker.
        worker: WorkerId,
        at: Timestamp,
    },
    /// The job's steps started on its worker. Job state: `running`.
    JobStarted {
        run: RunId,
        job: JobId,
        attempt: Attempt,
        worker: WorkerId,
        at: Timestamp,
    },
    /// Attempt `attempt` failed and the job is queued again as `next_attempt`.
    /// Job state: `queued`.
    JobRetrying {
        run: RunId,
        job: JobId,
        /// The attempt that failed.
        attempt: Attempt,
        /// Why it failed.
        cause: JobFailure,
        next_attempt: Attempt,
        at: Timestamp,
    },
    /// Job state: `succeeded`.
    JobSucceeded {
        run: RunId,
        job: JobId,
        attempt: Attempt,
        at: Timestamp,
    },
    /// The last attempt failed. Job state: `failed`.
    JobFailed {
        run: RunId,
        job: JobId,
        attempt: Attempt,
        reason: JobFailure,
        at: Timestamp,
    },
    /// The last attempt ran out of time. Job state: `timed_out`.
    JobTimedOut {
        run: RunId,
        job: JobId,
        attempt: Attempt,
        at: Timestamp,
    },
    /// Job state: `cancelled`.
    JobCancelled {
        run: RunId,
        job: JobId,
        attempt: Attempt,
        at: Timestamp,
    },
    /// The job will not run. Job state: `skipped`.
    JobSkipped {
        run: RunId,
        job: JobId,
        attempt: Attempt,
        reason: JobSkipReason,
        at: Timestamp,
    },

    /// Step state: `running`.
    StepStarted {
        run: RunId,
        job: JobId,
        job_attempt: Attempt,
        step: u32,
        attempt: Attempt,
        /// The length of the job's log when the step started: its output begins there. Absent
        /// in events recorded before Hodei kept it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log_offset: Option<u64>,
        at: Timestamp,
    },
    /// The step exited with code 0. Step state: `succeeded`.
    StepSucceeded {
        run: RunId,
        job: JobId,
        job_attempt: Attempt,
        step: u32,
        attempt: Attempt,
        at: Timestamp,
    },
    /// The last attempt failed. Step state: `failed`.
    StepFailed {
        run: RunId,
        job: JobId,
        job_attempt: Attempt,
        step: u32,
        attempt: Attempt,
        failure: StepFailure,
        at: Timestamp,
    },
    /// The last attempt ran out of time. Step state: `timed_out`.
    StepTimedOut {
        run: RunId,
        job: JobId,
        job_attempt: Attempt,
        step: u32,
        attempt: Attempt,
        at: Timestamp,
    },
    /// Step state: `cancelled`.
    StepCancelled {
        run: RunId,
        job: JobId,
        job_attempt: Attempt,
        step: u32,
        attempt: Attempt,
        at: Timestamp,
    },
    /// The step will not run. Step state: `skipped`.
    StepSkipped {
        run: RunId,
        job: JobId,
        job_attempt: Attempt,
        step: u32,
        attempt: Attempt,
        reason: StepSkipReason,
        at: Timestamp,
    },
    /// Attempt `attempt` of the step failed; it will run again as `next_attempt`.
    /// Step state: `pending`.
    StepRetrying {
        run: RunId,
        job: JobId,
        job_attempt: Attempt,
        step: u32,
        /// The attempt that failed.
        attempt: Attempt,
        /// Why it failed.
        cause: StepFailure,
        next_attempt: Attempt,
        at: Timestamp,
    },
}

impl DomainEvent {
    /// Every [`kind`](DomainEvent::kind), in declaration order.
    pub const KINDS: [&'static str; 25] = [
        "run_started",
        "run_cancel_requested",
        "run_succeeded",
        "run_failed",
        "run_cancelled",
        "run_start_overridden",
        "job_awaiting_approval",
        "job_approved",
        "job_queued",
        "job_placed",
        "job_requeued",
        "job_started",
        "job_retrying",
        "job_succeeded",
        "job_failed",
        "job_timed_out",
        "job_cancelled",
        "job_skipped",
        "step_started",
        "step_succeeded",
        "step_failed",
        "step_timed_out",
        "step_cancelled",
        "step_skipped",
        "step_retrying",
    ];

    /// The event's kind: its JSON `"type"`, and the name of metrics and subscriptions.
    pub fn kind(&self) -> &'static str {
        match self {
            DomainEvent::RunStarted { .. } => "run_started",
            DomainEvent::RunCancelRequested { .. } => "run_cancel_requested",
            DomainEvent::RunSucceeded { .. } => "run_succeeded",
            DomainEvent::RunFailed { .. } => "run_failed",
            DomainEvent::RunCancelled { .. } => "run_cancelled",
            DomainEvent::RunStartOverridden { .. } => "run_start_overridden",
            DomainEvent::JobAwaitingApproval { .. } => "job_awaiting_approval",
            DomainEvent::JobApproved { .. } => "job_approved",
            DomainEvent::JobQueued { .. } => "job_queued",
            DomainEvent::JobPlaced { .. } => "job_placed",
            DomainEvent::JobRequeued { .. } => "job_requeued",
            DomainEvent::JobStarted { .. } => "job_started",
            DomainEvent::JobRetrying { .. } => "job_retrying",
            DomainEvent::JobSucceeded { .. } => "job_succeeded",
            DomainEvent::JobFailed { .. } => "job_failed",
            DomainEvent::JobTimedOut { .. } => "job_timed_out",
            DomainEvent::JobCancelled { .. } => "job_cancelled",
            DomainEvent::JobSkipped { .. } => "job_skipped",
            DomainEvent::StepStarted { .. } => "step_started",
            DomainEvent::StepSucceeded { .. } => "step_succeeded",
            DomainEvent::StepFailed { .. } => "step_failed",
            DomainEvent::StepTimedOut { .. } => "step_timed_out",
            DomainEvent::StepCancelled { .. } => "step_cancelled",
            DomainEvent::StepSkipped { .. } => "step_skipped",
            DomainEvent::StepRetrying { .. } => "step_retrying",
        }
    }

    /// The job this event ends, if it ends one (succeeded, failed, timed out, cancelled or
    /// skipped); its final state is [`DomainEvent::state_after`].
    pub fn ends_job(&self) -> Option<JobId> {
        match self {
            DomainEvent::JobSucceeded { job, .. }
            | DomainEvent::JobFailed { job, .. }
            | DomainEvent::JobTimedOut { job, .. }
            | DomainEvent::JobCancelled { job, .. }
            | DomainEvent::JobSkipped { job, .. } => Some(*job),
            _ => None,
        }
    }

    /// The name of the state the event's subject is in afterwards (a run, job or step state).
    pub fn state_after(&self) -> &'static str {
        match self {
            DomainEvent::RunCancelRequested { .. } => "cancelling",
            DomainEvent::JobAwaitingApproval { .. } => "waiting_approval",
            DomainEvent::JobApproved { .. }
            | DomainEvent::JobQueued { .. }
            | DomainEvent::JobRequeued { .. }
            | DomainEvent::JobRetrying { .. } => "queued",
            DomainEvent::JobPlaced { .. } => "placed",
            DomainEvent::RunStarted { .. }
            | DomainEvent::JobStarted { .. }
            | DomainEvent::StepStarted { .. } => "running",
            DomainEvent::StepRetrying { .. } | DomainEvent::RunStartOverridden { .. } => "pending",
            DomainEvent::RunSucceeded { .. }
            | DomainEvent::JobSucceeded { .. }
            | DomainEvent::StepSucceeded { .. } => "succeeded",
            DomainEvent::RunFailed { .. }
            | DomainEvent::JobFailed { .. }
            | DomainEvent::StepFailed { .. } => "failed",
            DomainEvent::JobTimedOut { .. } | DomainEvent::StepTimedOut { .. } => "timed_out",
            DomainEvent::RunCancelled { .. }
            | DomainEvent::JobCancelled { .. }
            | DomainEvent::StepCancelled { .. } => "cancelled",
            DomainEvent::JobSkipped { .. } | DomainEvent::StepSkipped { .. } => "skipped",
        }
    }

    /// The run the event belongs to: every event has one, so subscriptions filter by run.
    pub fn run_id(&self) -> RunId {
        self.header().0
    }

    /// The job the event is about, for job and step events.
    pub fn job_id(&self) -> Option<JobId> {
        self.header().1
    }

    /// When it happened, as the caller's clock told the transition.
    pub fn at(&self) -> Timestamp {
        self.header().2
    }

    pub(crate) fn header(&self) -> (RunId, Option<JobId>, Timestamp) {
        match self {
            DomainEvent::RunStarted { run, at }
            | DomainEvent::RunCancelRequested { run, at, .. }
            | DomainEvent::RunSucceeded { run, at }
            | DomainEvent::RunFailed { run, at, .. }
            | DomainEvent::RunCancelled { run, at }
            | DomainEvent::RunStartOverridden { run, at, .. } => (*run, None, *at),
            DomainEvent::JobAwaitingApproval { run, job, at, .. }
            | DomainEvent::JobApproved { run, job, at, .. }
            | DomainEvent::JobQueued { run, job, at, .. }
            | DomainEvent::JobPlaced { run, job, at, .. }
            | DomainEvent::JobRequeued { run, job, at, .. }
            | DomainEvent::JobStarted { run, job, at, .. }
            | DomainEvent::JobRetrying { run, job, at, .. }
            | DomainEvent::JobSucceeded { run, job, at, .. }
            | DomainEvent::JobFailed { run, job, at, .. }
            | DomainEvent::JobTimedOut { run, job, at, .. }
            | DomainEvent::JobCancelled { run, job, at, .. }
            | DomainEvent::JobSkipped { run, job, at, .. }
            | DomainEvent::StepStarted { run, job, at, .. }
            | DomainEvent::StepSucceeded { run, job, at, .. }
            | DomainEvent::StepFailed { run, job, at, .. }
            | DomainEvent::StepTimedOut { run, job, at, .. }
            | DomainEvent::StepCancelled { run, job, at, .. }
            | DomainEvent::StepSkipped { run, job, at, .. }
            | DomainEvent::StepRetrying { run, job, at, .. } => (*run, Some(*job), *at),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde::Deserialize;
    use serde::de::value::{Error, MapDeserializer};

    use super::*;

    /// Deserializes `{"type": kind}`: a known tag then fails on the first missing field, an
    /// unknown one on the tag itself.
    fn tag_error(kind: &str) -> String {
        let map = MapDeserializer::<_, Error>::new(std::iter::once(("type", kind)));
        match DomainEvent::deserialize(map) {
            Ok(event) => format!("unexpectedly parsed {event:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn every_kind_is_a_distinct_serde_tag() {
        let distinct: BTreeSet<_> = DomainEvent::KINDS.iter().collect();
        assert_eq!(distinct.len(), DomainEvent::KINDS.len());
        for kind in DomainEvent::KINDS {
            let err = tag_error(kind);
            assert!(err.starts_with("missing field"), "{kind}: {err}");
        }
        assert!(tag_error("run_exploded").starts_with("unknown variant"));
    }

    #[test]
    fn events_keep_their_json_shape_and_round_trip() {
        let placed = DomainEvent::JobPlaced {
            run: RunId(3),
            job: JobId(7),
            attempt: Attempt::FIRST,
            worker: WorkerId("local".into()),
            at: Timestamp(1_700_000_000_000),
        };
        let json = serde_json::to_value(&placed).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "job_placed", "run": 3, "job": 7, "attempt": 1, "worker": "local", "at": 1_700_000_000_000i64})
        );
        assert_eq!(json["type"], placed.kind());
        let back: DomainEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, placed);
    }

    #[test]
    fn every_event_names_its_run_job_and_instant() {
        let (run, job, at) = (RunId(1), JobId(3), Timestamp(2));
        let run_failed = DomainEvent::RunFailed {
            run,
            failed_jobs: vec![job],
            at,
        };
        assert_eq!(
            (run_failed.run_id(), run_failed.job_id(), run_failed.at()),
            (run, None, at)
        );
        let retrying = DomainEvent::StepRetrying {
            run,
            job,
            job_attempt: Attempt::FIRST,
            step: 0,
            attempt: Attempt::FIRST,
            cause: StepFailure::Lost,
            next_attempt: Attempt::FIRST,
            at,
        };
        assert_eq!(
            (retrying.run_id(), retrying.job_id(), retrying.at()),
            (run, Some(job), at)
        );
        assert_eq!(
            (retrying.kind(), retrying.state_after()),
            ("step_retrying", "pending")
        );
    }
}
