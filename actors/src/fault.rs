//! Fault injection: crash the process, or panic an actor, at the worst moments, to prove that
//! nothing is lost.
//!
//! - In debug builds only (the tests' builds), `HODEI_FAULT=<point>[:<n>]` makes the process
//!   abort — no destructor, no flush, as with `SIGKILL` — the `n`-th time (default 1st)
//!   execution reaches that point. Release builds compile the check away.
//! - [`Faults`], handed to one supervision tree, makes the actor that reaches a point panic: the
//!   in-process tests use it to prove that every actor is restarted and reloads its state.

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
struct Plan {
    point: Point,
    hits: Hits,
    count: std::sync::atomic::AtomicU32,
}

/// The panics planned for one supervision tree; none by default.
#[derive(Debug, Clone, Default)]
pub struct Faults(Option<std::sync::Arc<Plan>>);

impl Faults {
    /// No panic: what every real tree has.
    pub fn none() -> Faults {
        Faults(None)
    }

    /// The actor that reaches `point` panics on these hits.
    pub fn panic_at(point: Point, hits: Hits) -> Faults {
        Faults(Some(std::sync::Arc::new(Plan {
            point,
            hits,
            count: Default::default(),
        })))
    }

    /// Aborts the process ([`maybe_fail`]) or panics the caller, if planned for this hit.
    #[inline]
    pub fn hit(&self, point: Point) {
        maybe_fail(point);
        let Some(plan) = &self.0 else { return };
        if plan.point != point {
            return;
        }
        let n = plan.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let due = match plan.hits {
            Hits::Nth(nth) => n == nth,
            Hits::From(first) => n >= first,
            Hits::UpTo(last) => n <= last,
        };
        if due {
            panic!("fault injection: panic at {} (hit {n})", point.name());
        }
    }

    /// How many times the planned point was reached.
    pub fn count(&self) -> u32 {
        self.0.as_ref().map_or(0, |plan| {
            plan.count.load(std::sync::atomic::Ordering::SeqCst)
        })
    }
}
