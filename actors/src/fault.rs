//! Fault injection: crash the process, or panic an actor, at the worst moments, to prove that
//! nothing is lost.
//!
//! - In debug builds only (the tests' builds), `HODEI_FAULT=<point>[:<n>]` makes the process
//!   abort — no destructor, no flush, as with `SIGKILL` — the `n`-th time (default 1st)
//!   execution reaches that point. Release builds compile the check away.
//! - [`Faults`], handed to one supervision tree, makes the actor that reaches a point panic: the
//!   in-process tests use it to prove that every actor is restarted and reloads its state.
//! - [`Faults::pause_at`] stops a job attempt at a point and hands the test a [`Stepper`]: the
//!   test waits until the attempt is there, inspects the store and the logs between two
//!   writes, then lets the attempt go on or crash there.

/// The places where a crash hurts most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// The job's placement and start are recorded; its workspace is set up, no step has started.
    AfterPlace,
    /// A step's start is recorded; its process runs.
    AfterStepStart,
    /// A step's process exited; its exit is not recorded yet.
    AfterStepExit,
    /// A chunk of output was handed to the log store; it may not be on disk.
    MidLogWrite,
    /// Every job is done; the run's verdict is not recorded yet.
    BeforeRunFinish,
    /// The event bus is about to deliver events.
    Publish,
    /// The scheduler is about to place jobs.
    Place,
    /// The worker registry is about to register a worker.
    RegisterWorker,
    /// The orchestrator is about to accept a run.
    SubmitRun,
    /// A run actor is about to decide its run's next moves.
    Reconcile,
    /// The timer is about to look for due ticks of schedules.
    TimerPass,
    /// The agent desk is about to answer an agent's claim.
    AgentClaim,
}

impl Point {
    /// The spelling in `HODEI_FAULT`.
    pub fn name(self) -> &'static str {
        match self {
            Point::AfterPlace => "after_place",
            Point::AfterStepStart => "after_step_start",
            Point::AfterStepExit => "after_step_exit",
            Point::MidLogWrite => "mid_log_write",
            Point::BeforeRunFinish => "before_run_finish",
            Point::Publish => "publish",
            Point::Place => "place",
            Point::RegisterWorker => "register_worker",
            Point::SubmitRun => "submit_run",
            Point::Reconcile => "reconcile",
            Point::TimerPass => "timer_pass",
            Point::AgentClaim => "agent_claim",
        }
    }
}

/// Aborts the process if `HODEI_FAULT` names this point and this is the chosen hit.
#[inline]
pub fn maybe_fail(point: Point) {
    #[cfg(debug_assertions)]
    {
        use std::sync::OnceLock;
        use std::sync::atomic::{AtomicU32, Ordering};
        static PLAN: OnceLock<Option<(String, u32)>> = OnceLock::new();
        static HITS: AtomicU32 = AtomicU32::new(0);
        let plan = PLAN.get_or_init(|| {
            let value = std::env::var("HODEI_FAULT").ok()?;
            let (name, nth) = value.split_once(':').unwrap_or((value.as_str(), "1"));
            Some((name.to_owned(), nth.parse().unwrap_or(1)))
        });
        if let Some((name, nth)) = plan
            && name == point.name()
            && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *nth
        {
            eprintln!("hodei: fault injection: crashing at {name}");
            std::process::abort();
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}

/// Which hits of a point panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hits {
    /// Only the `n`-th, from 1.
    Nth(u32),
    /// Every one, from the `n`-th on.
    From(u32),
    /// The first `n`, then none.
    UpTo(u32),
}

#[derive(Debug)]
struct FaultPlan {
    point: Point,
    hits: Hits,
    count: std::sync::atomic::AtomicU32,
    action: Action,
}

/// What a due hit does.
#[derive(Debug)]
enum Action {
    Panic,
    /// Wait for the test's word ([`Stepper`]).
    Pause(tokio::sync::watch::Sender<Step>),
}

/// Where a paused point stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Not reached yet.
    Ahead,
    /// An attempt waits there.
    Paused,
    /// The test let it go on.
    GoOn,
    /// The test made it crash there.
    Crash,
}

/// The points where [`Faults::pause_at`] can hold a job attempt: those its future reaches.
const PAUSABLE: [Point; 3] = [
    Point::AfterPlace,
    Point::AfterStepStart,
    Point::AfterStepExit,
];

/// A test's handle on a paused point: wait until an attempt is there, then let it go on or
/// crash.
#[derive(Debug, Clone)]
pub struct Stepper(std::sync::Arc<FaultPlan>);

impl Stepper {
    fn send(&self, step: Step) {
        if let Action::Pause(state) = &self.0.action {
            state.send_replace(step);
        }
    }

    /// Waits until an attempt is paused at the point; fails with "likely deadlocked" after 20 s.
    pub async fn reached(&self) {
        let Action::Pause(state) = &self.0.action else {
            return;
        };
        let mut state = state.subscribe();
        let paused = state.wait_for(|step| *step == Step::Paused);
        if tokio::time::timeout(std::time::Duration::from_secs(20), paused)
            .await
            .is_err()
        {
            panic!(
                "no attempt reached {} within 20 s: likely deadlocked",
                self.0.point.name()
            );
        }
    }

    /// The paused attempt goes on as if nothing happened.
    pub fn go_on(&self) {
        self.send(Step::GoOn);
    }

    /// The paused attempt panics there, between the write before the point and the one after.
    pub fn crash(&self) {
        self.send(Step::Crash);
    }
}

/// The panics planned for one supervision tree; none by default.
#[derive(Debug, Clone, Default)]
pub struct Faults(Option<std::sync::Arc<FaultPlan>>);

impl Faults {
    /// No panic: what every real tree has.
    pub fn none() -> Faults {
        Faults(None)
    }

    /// The actor that reaches `point` panics on these hits.
    pub fn panic_at(point: Point, hits: Hits) -> Faults {
        Faults(Some(std::sync::Arc::new(FaultPlan {
            point,
            hits,
            count: Default::default(),
            action: Action::Panic,
        })))
    }

    /// The job attempt that reaches `point` on its `nth` hit waits there until the test says
    /// what happens next through the [`Stepper`]. Only the points an attempt's future reaches
    /// can pause: `after_place`, `after_step_start` and `after_step_exit`.
    pub fn pause_at(point: Point, nth: u32) -> (Faults, Stepper) {
        assert!(
            PAUSABLE.contains(&point),
            "{} is not a point a job attempt can pause at",
            point.name()
        );
        let plan = std::sync::Arc::new(FaultPlan {
            point,
            hits: Hits::Nth(nth),
            count: Default::default(),
            action: Action::Pause(tokio::sync::watch::channel(Step::Ahead).0),
        });
        (Faults(Some(plan.clone())), Stepper(plan))
    }

    /// Counts a hit of `point`: the plan's action, if this hit is due.
    fn due(&self, point: Point) -> Option<(&Action, u32)> {
        let plan = self.0.as_ref().filter(|plan| plan.point == point)?;
        let n = plan.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let due = match plan.hits {
            Hits::Nth(nth) => n == nth,
            Hits::From(first) => n >= first,
            Hits::UpTo(last) => n <= last,
        };
        due.then_some((&plan.action, n))
    }

    /// Aborts the process ([`maybe_fail`]) or panics the caller, if planned for this hit.
    #[inline]
    pub fn hit(&self, point: Point) {
        maybe_fail(point);
        if let Some((Action::Panic, n)) = self.due(point) {
            panic!("fault injection: panic at {} (hit {n})", point.name());
        }
    }

    /// [`Faults::hit`] for a job attempt's future, which can also pause there
    /// ([`Faults::pause_at`]) until the test lets it go on or crash.
    pub async fn reach(&self, point: Point) {
        maybe_fail(point);
        match self.due(point) {
            Some((Action::Panic, n)) => {
                panic!("fault injection: panic at {} (hit {n})", point.name())
            }
            Some((Action::Pause(state), _)) => {
                state.send_replace(Step::Paused);
                let mut word = state.subscribe();
                let said = word
                    .wait_for(|step| matches!(step, Step::GoOn | Step::Crash))
                    .await
                    .map(|step| *step);
                if matches!(said, Ok(Step::Crash)) {
                    panic!("fault injection: crash at {} after a pause", point.name());
                }
            }
            None => {}
        }
    }

    /// How many times the planned point was reached.
    pub fn count(&self) -> u32 {
        self.0.as_ref().map_or(0, |plan| {
            plan.count.load(std::sync::atomic::Ordering::SeqCst)
        })
    }
}
