//! Fault injection: crash the process at the worst moments, to prove that nothing is lost.
//!
//! In debug builds only (the tests' builds), `HODEI_FAULT=<point>[:<n>]` makes the process abort
//! — no destructor, no flush, as with `SIGKILL` — the `n`-th time (default 1st) execution reaches
//! that point. Release builds compile the check away.

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
