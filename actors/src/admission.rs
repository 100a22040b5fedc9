//! Admission: how many jobs unfinished runs may hold at once. The orchestrator checks and
//! reserves in one step, in its own context, so that concurrent submissions can never pass the
//! limit together; a run that would pass it is refused whole.

use std::collections::HashMap;

use hodei_domain::ids::RunId;

use crate::messages::SubmitError;

/// The jobs of unfinished runs, and those of runs being created.
#[derive(Debug, Default)]
pub struct Admission {
    by_run: HashMap<RunId, usize>,
    /// Jobs of every unfinished run plus the reservations.
    total: usize,
}

impl Admission {
    /// The jobs unfinished runs hold, with the reservations.
    pub fn holding(&self) -> usize {
        self.total
    }

    /// Reserves room for a run of `jobs` jobs, if `limit` allows it: every run's jobs count
    /// from its creation until it is finished, whether they wait for their needs, are queued
    /// or run.
    pub fn reserve(&mut self, limit: Option<usize>, jobs: usize) -> Result<(), SubmitError> {
        if let Some(limit) = limit {
            if jobs > limit {
                return Err(SubmitError::TooManyJobs { jobs, limit });
            }
            if self.total + jobs > limit {
                return Err(SubmitError::QueueFull {
                    holding: self.total,
                    limit,
                });
            }
        }
        self.total += jobs;
        Ok(())
    }

    /// A reservation became the run `run` (or, with `None`, its creation failed).
    pub fn settle(&mut self, jobs: usize, run: Option<RunId>) {
        match run {
            Some(run) => {
                if let Some(before) = self.by_run.insert(run, jobs) {
                    self.total -= before;
                }
            }
            None => self.total -= jobs,
        }
    }

    /// The run is finished: its jobs no longer count.
    pub fn finished(&mut self, run: RunId) {
        if let Some(jobs) = self.by_run.remove(&run) {
            self.total -= jobs;
        }
    }

    /// The unfinished runs found in the store at start-up, with their jobs (reservations in
    /// flight are kept).
    pub fn found(&mut self, runs: impl IntoIterator<Item = (RunId, usize)>) {
        for (run, jobs) in runs {
            self.total += jobs;
            if let Some(before) = self.by_run.insert(run, jobs) {
                self.total -= before;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_pass_the_limit_together() {
        let mut admission = Admission::default();
        let limit = Some(50);
        let accepted = (0..200)
            .filter(|_| admission.reserve(limit, 1).is_ok())
            .count();
        assert_eq!(accepted, 50);
        assert!(matches!(
            admission.reserve(limit, 1),
            Err(SubmitError::QueueFull {
                holding: 50,
                limit: 50
            })
        ));
        // A finished run makes room; a failed creation gives its reservation back.
        admission.settle(1, Some(RunId(1)));
        admission.finished(RunId(1));
        admission.settle(1, None);
        assert_eq!(admission.holding(), 48);
        assert!(admission.reserve(limit, 2).is_ok());
    }

    #[test]
    fn a_run_larger_than_the_limit_is_refused_whole() {
        let mut admission = Admission::default();
        assert!(matches!(
            admission.reserve(Some(50), 5_000),
            Err(SubmitError::TooManyJobs {
                jobs: 5_000,
                limit: 50
            })
        ));
        assert_eq!(admission.holding(), 0);
        assert!(
            admission.reserve(None, 5_000).is_ok(),
            "no limit, no refusal"
        );
    }

    #[test]
    fn runs_found_at_start_count_once() {
        let mut admission = Admission::default();
        admission.found([(RunId(1), 3), (RunId(2), 4)]);
        admission.found([(RunId(1), 3), (RunId(2), 4)]);
        assert_eq!(admission.holding(), 7);
        admission.finished(RunId(2));
        assert_eq!(admission.holding(), 3);
    }
}
