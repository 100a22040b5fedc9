//! The views of finished runs, kept serialized in memory.
//!
//! A run that has reached its final state never changes again (a rerun is a new run, and runs
//! are never deleted), so its view can be answered from memory: `GET /api/v1/runs/{id}` of a
//! finished run, the most read of all (dashboards, CLI follows, status pages), costs no read
//! of the store once it was asked once.
//!
//! ## Guarantees
//! - Only views of runs in a final state are kept: a run that can still change is read from
//!   the store at every request.
//! - At most [`CAPACITY`] bytes of views are kept; when a new one would not fit, the oldest are
//!   forgotten first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use actix_web::web::Bytes;
use hodei_domain::ids::RunId;

/// The most bytes of serialized views kept.
pub const CAPACITY: usize = 16 * 1024 * 1024;

/// Serialized views of finished runs, by run.
#[derive(Default)]
pub struct FinishedRuns {
    state: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    views: HashMap<RunId, Bytes>,
    /// In the order they were kept: the first is forgotten first.
    order: VecDeque<RunId>,
    bytes: usize,
}

impl FinishedRuns {
    /// The serialized view of `run`, if it is kept.
    pub fn get(&self, run: RunId) -> Option<Bytes> {
        self.kept().views.get(&run).cloned()
    }

    /// Keeps the serialized view of `run`, which must be finished.
    pub fn keep(&self, run: RunId, view: Bytes) {
        if view.len() > CAPACITY {
            return;
        }
        let mut kept = self.kept();
        if kept.views.contains_key(&run) {
            return;
        }
        while kept.bytes + view.len() > CAPACITY {
            let Some(oldest) = kept.order.pop_front() else {
                break;
            };
            if let Some(gone) = kept.views.remove(&oldest) {
                kept.bytes -= gone.len();
            }
        }
        kept.bytes += view.len();
        kept.order.push_back(run);
        kept.views.insert(run, view);
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_views_are_forgotten_first_when_full() {
        let finished = FinishedRuns::default();
        let big = Bytes::from(vec![b'x'; CAPACITY / 2]);
        finished.keep(RunId(1), big.clone());
        finished.keep(RunId(2), big.clone());
        assert!(finished.get(RunId(1)).is_some());
        finished.keep(RunId(3), Bytes::from_static(b"{}"));
        assert!(finished.get(RunId(1)).is_none(), "the oldest went");
        assert_eq!(finished.get(RunId(2)), Some(big));
        assert_eq!(finished.get(RunId(3)).as_deref(), Some(&b"{}"[..]));
        finished.keep(RunId(4), Bytes::from(vec![0; CAPACITY + 1]));
        assert!(finished.get(RunId(4)).is_none(), "too big to keep");
        assert!(finished.kept().bytes <= CAPACITY);
    }
}
