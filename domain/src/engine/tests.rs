//! Table tests of the run engine: each rule of [`advance`], [`job_def`] and [`resume_point`] on
//! a small pipeline.

use super::*;
use crate::ids::{JobId, RunId, WorkerId};
use crate::load::load;
use crate::plan::{POST_JOB, RunInputs, plan};
use crate::ports::StepRecord;
use crate::state::{Attempt, DomainEvent, StepExit, StepFailure, StepState, Verdict};

pub(super) const RUN: RunId = RunId(1);

/// A run of a pipeline as its actor would hold it, moved by [`advance`] as the actor does.
pub(super) struct Sim {
    pub plan: Plan,
    pub resolved: ResolvedRun,
    pub run: RunMachine,
    pub jobs: Vec<JobSlot>,
    pub post: Option<JobSlot>,
    pub approvals: Approvals,
    pub now: Timestamp,
    /// Every transition recorded, in order.
    pub events: Vec<DomainEvent>,
}

impl Sim {
    pub fn new(yaml: &str, inputs: RunInputs) -> Sim {
        let loaded = load(yaml);
        let pipeline = loaded
            .pipeline
            .unwrap_or_else(|| panic!("the test pipeline loads: {:?}", loaded.diagnostics));
        let plan = plan(&pipeline);
        let resolved = plan.resolve(inputs).expect("the inputs fit");
        let machine = |i: usize, job: JobRef| {
            let id = JobId(i as u64 + 1);
            JobSlot::home(JobMachine::new(RUN, id, plan.policy(job), Timestamp(0)))
        };
        let jobs = (0..plan.jobs.len())
            .map(|i| machine(i, JobRef::Planned(i)))
            .collect();
        let post = plan
            .has_post_job()
            .then(|| machine(plan.jobs.len(), JobRef::Post));
        Sim {
            plan,
            resolved,
            run: RunMachine::new(RUN, Timestamp(0)),
            jobs,
            post,
            approvals: Approvals::Wait,
            now: Timestamp(0),
            events: Vec::new(),
        }
    }

    pub fn index(&self, name: &str) -> usize {
        self.plan
            .jobs
            .iter()
            .position(|j| j.name == name)
            .unwrap_or_else(|| panic!("no job {name}"))
    }

    pub fn slot(&mut self, job: JobRef) -> &mut JobSlot {
        match job {
            JobRef::Planned(i) => &mut self.jobs[i],
            JobRef::Post => self.post.as_mut().expect("a post job"),
        }
    }

    pub fn state(&self, name: &str) -> &JobState {
        self.jobs[self.index(name)]
            .machine
            .as_ref()
            .expect("held by the run")
            .state()
    }

    /// What [`advance`] says now.
    pub fn decide(&self) -> Vec<Move> {
        advance(&RunSnapshot {
            plan: &self.plan,
            resolved: &self.resolved,
            run: &self.run,
            jobs: &self.jobs,
            post: self.post.as_ref(),
            approvals: self.approvals,
            now: self.now,
        })
    }

    /// Decides and applies the moves as the run actor does; answers them.
    pub fn advance(&mut self) -> Vec<Move> {
        let moves = self.decide();
        for m in &moves {
            match m {
                Move::Run(event) => {
                    let event = self.run.apply(event.clone(), self.now).expect("legal");
                    self.events.push(event);
                }
                Move::Job(job, event) => {
                    let now = self.now;
                    let machine = self.slot(*job).machine.as_mut().expect("held by the run");
                    let event = machine.apply(event.clone(), now).expect("legal");
                    self.events.push(event);
                }
                Move::Enqueue(job) => self.slot(*job).enqueued = true,
                Move::Withdraw(job) => self.slot(*job).enqueued = false,
                Move::StopAttempt(_) | Move::WakeAt(_) => {}
            }
        }
        moves
    }

    /// The scheduler places a queued job: an attempt takes its machine, placed and started.
    pub fn take(&mut self, job: JobRef) -> JobMachine {
        let now = self.now;
        let slot = self.slot(job);
        assert!(slot.enqueued, "only a queued job is placed");
        slot.enqueued = false;
        let mut machine = slot.machine.take().expect("held by the run");
        let worker = WorkerId("local".into());
        machine.apply(JobEvent::Place { worker }, now).unwrap();
        machine.apply(JobEvent::Start, now).unwrap();
        machine
    }

    /// An attempt hands its job back, ended by `event`.
    pub fn hand_back(&mut self, job: JobRef, mut machine: JobMachine, event: JobEvent) {
        machine.apply(event, self.now).expect("legal end");
        self.slot(job).machine = Some(machine);
    }

    /// Runs a queued job to `event` in one go.
    pub fn finish(&mut self, name: &str, event: JobEvent) {
        let job = JobRef::Planned(self.index(name));
        let machine = self.take(job);
        self.hand_back(job, machine, event);
    }
}

fn failed() -> JobEvent {
    JobEvent::StepFailed {
        step: 0,
        failure: StepFailure::Exit(StepExit::code(1)),
    }
}

const DIAMOND: &str = "name: p
jobs:
  a: {steps: [{run: a}]}
  b: {needs: [a], steps: [{run: b}]}
  c: {needs: [a], steps: [{run: c}]}
  d: {needs: [b, c], steps: [{run: d}]}
";

#[test]
fn a_new_run_starts_and_queues_only_the_jobs_without_needs() {
    let mut sim = Sim::new(DIAMOND, RunInputs::default());
    let moves = sim.advance();
    let a = JobRef::Planned(0);
    assert_eq!(
        moves,
        [
            Move::Run(RunEvent::Start),
            Move::Job(a, JobEvent::NeedsMet),
            Move::Enqueue(a),
        ]
    );
    // Level-triggered: the state its moves lead to calls for nothing more.
    assert_eq!(sim.decide(), []);
}

#[test]
fn a_job_is_queued_once_all_its_needs_succeeded() {
    let mut sim = Sim::new(DIAMOND, RunInputs::default());
    sim.advance();
    sim.finish("a", JobEvent::Succeed);
    sim.advance();
    assert_eq!(sim.state("b"), &JobState::Queued);
    assert_eq!(sim.state("c"), &JobState::Queued);
    assert_eq!(sim.state("d"), &JobState::Pending);
    sim.finish("b", JobEvent::Succeed);
    sim.advance();
    assert_eq!(sim.state("d"), &JobState::Pending, "c is not done yet");
    sim.finish("c", JobEvent::Succeed);
    sim.advance();
    sim.finish("d", JobEvent::Succeed);
    let moves = sim.advance();
    assert_eq!(moves, [Move::Run(RunEvent::Finish(Verdict::Succeeded))]);
}

#[test]
fn a_failed_need_skips_its_dependents_and_fails_the_run() {
    let mut sim = Sim::new(DIAMOND, RunInputs::default());
    sim.advance();
    sim.finish("a", failed());
    let moves = sim.advance();
    let a = sim.jobs[0].id;
    let skipped = |reason| JobState::Skipped { reason };
    assert_eq!(
        sim.state("b"),
        &skipped(JobSkipReason::NeedFailed { job: a })
    );
    assert_eq!(
        sim.state("c"),
        &skipped(JobSkipReason::NeedFailed { job: a })
    );
    let b = sim.jobs[1].id;
    assert_eq!(
        sim.state("d"),
        &skipped(JobSkipReason::NeedSkipped { job: b })
    );
    let failed_jobs = vec![a];
    assert_eq!(
        moves.last(),
        Some(&Move::Run(RunEvent::Finish(Verdict::Failed {
            failed_jobs
        })))
    );
}

#[test]
fn a_need_allowed_to_fail_lets_its_dependents_run() {
    let yaml = "name: p\njobs:\n  a: {continue_on_error: true, steps: [{run: a}]}\n  b: {needs: [a], steps: [{run: b}]}\n";
    let mut sim = Sim::new(yaml, RunInputs::default());
    sim.advance();
    sim.finish("a", failed());
    sim.advance();
    assert_eq!(sim.state("b"), &JobState::Queued);
    sim.finish("b", JobEvent::Succeed);
    let moves = sim.advance();
    assert_eq!(moves, [Move::Run(RunEvent::Finish(Verdict::Succeeded))]);
}

#[test]
fn a_false_when_skips_the_job_and_the_jobs_that_need_it() {
    let yaml = "name: p\njobs:\n  a: {steps: [{run: a}]}\n  deploy: {needs: [a], when: \"branch == 'main'\", steps: [{run: d}]}\n  notify: {needs: [deploy], steps: [{run: n}]}\n";
    let inputs = RunInputs {
        branch: "feature".into(),
        ..RunInputs::default()
    };
    let mut sim = Sim::new(yaml, inputs);
    sim.advance();
    sim.finish("a", JobEvent::Succeed);
    let moves = sim.advance();
    let deploy = sim.jobs[1].id;
    assert_eq!(
        sim.state("deploy"),
        &JobState::Skipped {
            reason: JobSkipReason::WhenFalse
        }
    );
    assert_eq!(
        sim.state("notify"),
        &JobState::Skipped {
            reason: JobSkipReason::NeedSkipped { job: deploy }
        }
    );
    assert_eq!(
        moves.last(),
        Some(&Move::Run(RunEvent::Finish(Verdict::Succeeded)))
    );
}

#[test]
fn a_gate_waits_for_approval_unless_the_run_is_local() {
    let yaml = "name: p\njobs:\n  deploy: {approval: {role: admin}, steps: [{run: d}]}\n";
    let mut sim = Sim::new(yaml, RunInputs::default());
    sim.advance();
    assert_eq!(sim.state("deploy"), &JobState::WaitingApproval);
    assert_eq!(sim.decide(), []);
    let mut local = Sim::new(yaml, RunInputs::default());
    local.approvals = Approvals::Local;
    let moves = local.advance();
    let deploy = JobRef::Planned(0);
    assert_eq!(
        moves[1..],
        [
            Move::Job(deploy, JobEvent::NeedsMet),
            Move::Job(deploy, JobEvent::Approve { by: "local".into() }),
            Move::Enqueue(deploy),
        ]
    );
}

#[test]
fn a_cancel_withdraws_skips_and_stops_everything_then_runs_the_post_hooks() {
    let yaml = "name: p
jobs:
  a: {steps: [{run: a}]}
  b: {steps: [{run: b}]}
  c: {needs: [a], steps: [{run: c}]}
  gate: {approval: {role: admin}, steps: [{run: g}]}
post: {cancelled: [{run: bye}]}
";
    let mut sim = Sim::new(yaml, RunInputs::default());
    sim.advance();
    let (a, b) = (JobRef::Planned(0), JobRef::Planned(1));
    let running = sim.take(a);
    sim.run
        .apply(RunEvent::Cancel { by: "ana".into() }, sim.now)
        .unwrap();
    let moves = sim.advance();
    assert!(moves.contains(&Move::StopAttempt(a)), "{moves:?}");
    assert!(moves.contains(&Move::Withdraw(b)), "{moves:?}");
    assert!(moves.contains(&Move::Job(b, JobEvent::Cancel)), "{moves:?}");
    assert_eq!(
        sim.state("c"),
        &JobState::Skipped {
            reason: JobSkipReason::RunCancelled
        }
    );
    assert_eq!(sim.state("gate"), &JobState::Cancelled);
    assert!(
        !moves.iter().any(|m| matches!(m, Move::Run(_))),
        "a runs on"
    );
    // The attempt stops and hands its job back: the post hooks run, then the run ends.
    sim.hand_back(a, running, JobEvent::Cancel);
    let moves = sim.advance();
    assert_eq!(
        moves,
        [
            Move::Job(JobRef::Post, JobEvent::NeedsMet),
            Move::Enqueue(JobRef::Post)
        ]
    );
    let post = sim.take(JobRef::Post);
    assert!(!sim.decide().contains(&Move::StopAttempt(JobRef::Post)));
    sim.hand_back(JobRef::Post, post, JobEvent::Succeed);
    assert_eq!(
        sim.advance(),
        [Move::Run(RunEvent::Finish(Verdict::Cancelled))]
    );
}

#[test]
fn a_retried_job_waits_for_its_delay_counted_from_when_it_was_queued_again() {
    let yaml = "name: p\njobs:\n  a: {retry: {max: 1, delay: 5s}, steps: [{run: a}]}\n";
    let mut sim = Sim::new(yaml, RunInputs::default());
    sim.advance();
    let a = JobRef::Planned(0);
    let machine = sim.take(a);
    sim.now = Timestamp(1_000);
    sim.hand_back(a, machine, failed());
    assert_eq!(sim.state("a"), &JobState::Queued);
    assert_eq!(sim.decide(), [Move::WakeAt(Timestamp(6_000))]);
    sim.now = Timestamp(6_000);
    assert_eq!(sim.decide(), [Move::Enqueue(a)]);
}

#[test]
fn a_job_found_placed_or_running_after_a_restart_asks_for_a_worker_again() {
    let mut sim = Sim::new(DIAMOND, RunInputs::default());
    sim.advance();
    let a = JobRef::Planned(0);
    let machine = sim.take(a);
    // A new run actor reads it back from the store.
    sim.jobs[0] = JobSlot::home(machine);
    assert!(matches!(sim.state("a"), JobState::Running { .. }));
    assert_eq!(sim.decide(), [Move::Enqueue(a)]);
}

#[test]
fn the_post_job_waits_for_every_job_and_the_run_for_the_post_job() {
    let yaml = "name: p\njobs:\n  a: {steps: [{run: a}]}\npost: {failure: [{run: f}], always: [{run: x}]}\n";
    let mut sim = Sim::new(yaml, RunInputs::default());
    sim.advance();
    assert_eq!(
        sim.post.as_ref().unwrap().machine.as_ref().unwrap().state(),
        &JobState::Pending
    );
    sim.finish("a", failed());
    sim.advance();
    let post = sim.take(JobRef::Post);
    // Held by its attempt: the run does not finish.
    assert_eq!(sim.decide(), []);
    sim.hand_back(JobRef::Post, post, failed());
    let failed_jobs = vec![sim.jobs[0].id];
    assert_eq!(
        sim.advance(),
        [Move::Run(RunEvent::Finish(Verdict::Failed { failed_jobs }))],
        "a failing post hook does not change the verdict"
    );
}

#[test]
fn a_job_definition_has_every_environment_layer_and_secrets_but_not_over_hodei_s_own() {
    let yaml = "name: p
env: {LEVEL: pipeline, KEEP: p}
parameters: {WHO: {default: ana}}
jobs:
  a:
    env: {LEVEL: job}
    timeout: 45m
    steps: [{run: a, env: {STEP: s}}]
    post: {always: [{run: bye}]}
post: {success: [{run: ok, timeout: 1m}]}
";
    let sim = Sim::new(yaml, RunInputs::default());
    let machine = sim.jobs[0].machine.clone().unwrap();
    let secrets = [
        ("TOKEN".to_owned(), "s3cret".to_owned()),
        ("HODEI_JOB".to_owned(), "forged".to_owned()),
    ];
    let def = job_def(
        &sim.plan,
        &sim.resolved,
        &machine,
        JobRef::Planned(0),
        &secrets,
        None,
    );
    let env = &def.envs[0];
    assert_eq!(env["LEVEL"], "job");
    assert_eq!(env["KEEP"], "p");
    assert_eq!(env["WHO"], "ana");
    assert_eq!(env["STEP"], "s");
    assert_eq!(env["TOKEN"], "s3cret");
    assert_eq!(env["HODEI_JOB"], "a");
    assert_eq!(def.secrets, ["s3cret", "forged"]);
    // The provider gets them by name, but Hodei's own; printing them shows the names only.
    assert_eq!(
        def.spec.secrets.0,
        std::collections::BTreeMap::from([("TOKEN".to_owned(), "s3cret".to_owned())])
    );
    assert_eq!(format!("{:?}", def.spec.secrets), r#"{"TOKEN"}"#);
    assert!(!format!("{:?}", def.spec).contains("s3cret"));
    let json = serde_json::to_string(&def.spec).expect("json");
    assert!(!json.contains("s3cret"), "{json}");
    // The provider gets the job's timeout too (a pod's last-resort deadline); a spec written
    // before it had one still reads.
    assert_eq!(
        def.spec.timeout,
        Some(std::time::Duration::from_secs(45 * 60))
    );
    let mut older: serde_json::Value = serde_json::from_str(&json).expect("json");
    older.as_object_mut().expect("an object").remove("timeout");
    let older: crate::ports::JobSpec = serde_json::from_value(older).expect("an older spec");
    assert_eq!(older.timeout, None);
    assert_eq!(def.hooks.always[0].0.timeout, Some(HOOK_TIMEOUT));
    assert_eq!(def.hooks.always[0].1["HODEI_JOB"], "a");

    let post = sim.post.as_ref().unwrap().machine.clone().unwrap();
    let succeeded = Verdict::Succeeded;
    let def = job_def(
        &sim.plan,
        &sim.resolved,
        &post,
        JobRef::Post,
        &secrets,
        Some(&succeeded),
    );
    assert_eq!(def.spec.name, POST_JOB);
    assert_eq!(def.spec.timeout, None);
    assert_eq!(def.steps.len(), 1);
    assert!(def.steps[0].continue_on_error);
    assert_eq!(def.steps[0].timeout.map(|t| t.to_std().as_secs()), Some(60));
    assert_eq!(def.envs[0]["LEVEL"], "pipeline", "no job layer");
    assert_eq!(def.envs[0]["HODEI_JOB"], POST_JOB);
}

#[test]
fn a_jobs_cache_is_scoped_to_its_branch_and_falls_back_to_its_repositorys_default_branch() {
    let yaml =
        "name: p\njobs:\n  a:\n    cache: {key: deps, paths: [deps]}\n    steps: [{run: a}]\n";
    let inputs = RunInputs {
        branch: "topic".into(),
        default_branch: "trunk".into(),
        ..RunInputs::default()
    };
    let sim = Sim::new(yaml, inputs);
    let machine = sim.jobs[0].machine.clone().unwrap();
    let def = job_def(
        &sim.plan,
        &sim.resolved,
        &machine,
        JobRef::Planned(0),
        &[],
        None,
    );
    let scope = &def.files.cache.as_ref().unwrap().scope;
    assert_eq!(
        (scope.pipeline.as_str(), scope.branch.as_str()),
        ("p", "topic")
    );
    assert_eq!(scope.default_branch, "trunk");
}

fn record(index: u32, attempt: u32, state: StepState) -> StepRecord {
    StepRecord {
        job_attempt: Attempt::FIRST,
        index,
        attempt: Attempt::new(attempt).unwrap(),
        state,
        exit: None,
        since: Timestamp(0),
        started: None,
        log_offset: Some(u64::from(index) * 10),
    }
}

fn resumed(records: &[StepRecord]) -> ResumePoint {
    let yaml = "name: p\njobs:\n  a:\n    steps:\n      - run: one\n      - {run: two, retry: 3}\n      - {run: three, continue_on_error: true}\n      - run: four\n";
    let sim = Sim::new(yaml, RunInputs::default());
    let machine = sim.jobs[0].machine.clone().unwrap();
    resume_point(&machine, records, &sim.plan.jobs[0].steps)
}

#[test]
fn a_step_on_its_second_try_resumes_from_its_latest_try() {
    let exit = StepFailure::Exit(StepExit::code(1));
    let records = [
        record(0, 1, StepState::Succeeded),
        record(1, 1, StepState::Failed { failure: exit }),
        record(1, 2, StepState::Running),
    ];
    match resumed(&records) {
        ResumePoint::InStep {
            index,
            machine,
            log_offset,
        } => {
            assert_eq!(index, 1);
            assert_eq!(machine.attempt().get(), 2);
            assert_eq!(machine.state(), &StepState::Running);
            assert_eq!(log_offset, Some(10));
        }
        other => panic!("the job goes on in step 2, not {other:?}"),
    }
}

#[test]
fn the_resume_point_follows_the_steps_that_ended() {
    assert_eq!(resumed(&[]), ResumePoint::Before(0));
    assert_eq!(
        resumed(&[record(0, 1, StepState::Succeeded)]),
        ResumePoint::Before(1)
    );
    let exit = StepFailure::Exit(StepExit::code(1));
    let lenient = [
        record(0, 1, StepState::Succeeded),
        record(1, 1, StepState::Succeeded),
        record(
            2,
            1,
            StepState::Failed {
                failure: exit.clone(),
            },
        ),
    ];
    assert_eq!(resumed(&lenient), ResumePoint::Before(3));
    let failed = [record(0, 1, StepState::Failed { failure: exit })];
    assert_eq!(resumed(&failed), ResumePoint::Ending);
    let hook = [record(4, 1, StepState::Running)];
    assert_eq!(resumed(&hook), ResumePoint::Ending);
}

/// The record of `sim`'s run as a store creates it: pending, with the sim's ids.
fn created(sim: &Sim) -> crate::ports::RunRecord {
    let job = |slot: &JobSlot, name: &str| crate::ports::JobRecord {
        id: slot.id,
        name: name.to_owned(),
        state: JobState::Pending,
        attempt: Attempt::FIRST,
        since: Timestamp(0),
        started: None,
        finished: None,
        worker: None,
        steps: Vec::new(),
    };
    let mut jobs: Vec<_> = sim
        .jobs
        .iter()
        .zip(&sim.plan.jobs)
        .map(|(slot, planned)| job(slot, &planned.name))
        .collect();
    jobs.extend(sim.post.as_ref().map(|slot| job(slot, POST_JOB)));
    crate::ports::RunRecord {
        id: RUN,
        pipeline: "p".into(),
        version: 1,
        source: String::new(),
        inputs: RunInputs::default(),
        state: RunState::Pending,
        since: Timestamp(0),
        created: Timestamp(0),
        started: None,
        finished: None,
        jobs,
    }
}

#[test]
fn a_new_run_opens_with_the_transitions_of_its_first_reconcile() {
    let yaml = "name: p
jobs:
  a: {steps: [{run: a}]}
  b: {needs: [a], steps: [{run: b}]}
  deploy: {when: \"branch == 'main'\", steps: [{run: d}]}
  notify: {needs: [deploy], steps: [{run: n}]}
  gate: {approval: {role: admin}, steps: [{run: g}]}
post: {success: [{run: s}]}
";
    let inputs = RunInputs {
        branch: "feature".into(),
        ..RunInputs::default()
    };
    for approvals in [Approvals::Wait, Approvals::Local] {
        let mut sim = Sim::new(yaml, inputs.clone());
        sim.approvals = approvals;
        let mut record = created(&sim);
        let opened = open(&sim.plan, &sim.resolved, approvals, sim.now, &mut record);
        // The same transitions as the actor's first reconcile, and the same states after them.
        let moves = sim.advance();
        assert_eq!(opened, sim.events, "{approvals:?}");
        assert_eq!(record.state, RunState::Running);
        for (stored, slot) in record.jobs.iter().zip(sim.jobs.iter().chain(&sim.post)) {
            let machine = slot.machine.as_ref().expect("held by the run");
            assert_eq!(&stored.state, machine.state(), "{}", stored.name);
            assert_eq!(stored.finished.is_some(), machine.is_terminal());
        }
        assert_eq!(
            record.jobs[sim.index("notify")].state,
            JobState::Skipped {
                reason: JobSkipReason::NeedSkipped {
                    job: sim.jobs[2].id
                }
            }
        );
        // What is left to the actor: queuing, nothing to record.
        let enqueued: Vec<_> = moves
            .iter()
            .filter(|m| matches!(m, Move::Enqueue(_)))
            .collect();
        let queued = if approvals == Approvals::Local { 2 } else { 1 };
        assert_eq!(enqueued.len(), queued, "{moves:?}");
        let mut reopened = record.clone();
        assert_eq!(
            open(&sim.plan, &sim.resolved, approvals, sim.now, &mut reopened),
            [],
            "a run that is not pending opens to nothing"
        );
        assert_eq!(reopened, record);
    }
}

#[test]
fn an_opening_stops_before_the_run_would_finish() {
    let yaml = "name: p\njobs:\n  deploy: {when: \"branch == 'main'\", steps: [{run: d}]}\n";
    let inputs = RunInputs {
        branch: "feature".into(),
        ..RunInputs::default()
    };
    let sim = Sim::new(yaml, inputs);
    let mut record = created(&sim);
    let opened = open(
        &sim.plan,
        &sim.resolved,
        sim.approvals,
        sim.now,
        &mut record,
    );
    assert_eq!(
        opened.iter().map(DomainEvent::kind).collect::<Vec<_>>(),
        ["run_started", "job_skipped"]
    );
    assert_eq!(
        record.state,
        RunState::Running,
        "the run's actor finishes it"
    );
}
