//! Restart policies for supervised actors: exponential backoff between restarts, at most N
//! restarts in a sliding window, then escalation to the parent. Pure: the caller passes the time.

use std::collections::VecDeque;

use crate::ids::Timestamp;

/// How a supervisor treats an actor that stopped unexpectedly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restarts allowed within `window_ms`; one more escalates.
    pub max_restarts: u32,
    /// The sliding window, in milliseconds.
    pub window_ms: u64,
    /// The delay before the first restart in a window, in milliseconds; doubled for each further
    /// restart in the window.
    pub backoff_base_ms: u64,
    /// The longest delay, in milliseconds.
    pub backoff_max_ms: u64,
}

impl Default for RestartPolicy {
    /// At most 5 restarts a minute, waiting 100 ms, 200 ms, 400 ms ... up to 5 s.
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 5,
            window_ms: 60_000,
            backoff_base_ms: 100,
            backoff_max_ms: 5_000,
        }
    }
}

impl RestartPolicy {
    /// The delay before a restart that follows `earlier` ones: the base, doubled for each,
    /// up to the longest.
    pub fn delay_ms(&self, earlier: u32) -> u64 {
        self.backoff_base_ms
            .saturating_mul(1u64 << earlier.min(32))
            .min(self.backoff_max_ms)
    }
}

/// What to do about a stopped actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart it after this many milliseconds.
    Restart {
        delay_ms: u64,
        restarts_in_window: u32,
    },
    /// It stopped too often: hand the problem to the parent.
    Escalate { restarts_in_window: u32 },
}

/// The recent restarts of one actor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestartHistory {
    restarts: VecDeque<Timestamp>,
    total: u64,
}

impl RestartHistory {
    /// Records that the actor stopped at `now` and decides what to do.
    pub fn on_stop(&mut self, policy: &RestartPolicy, now: Timestamp) -> RestartDecision {
        while let Some(&oldest) = self.restarts.front() {
            if now.millis_since(oldest) >= policy.window_ms {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        let in_window = self.restarts.len() as u32;
        if in_window >= policy.max_restarts {
            return RestartDecision::Escalate {
                restarts_in_window: in_window,
            };
        }
        self.restarts.push_back(now);
        self.total += 1;
        RestartDecision::Restart {
            delay_ms: policy.delay_ms(in_window),
            restarts_in_window: in_window + 1,
        }
    }

    /// Restarts since the actor was first started.
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn backoff_doubles_then_escalates_after_the_limit() {
        let policy = RestartPolicy {
            max_restarts: 3,
            window_ms: 1_000,
            backoff_base_ms: 10,
            backoff_max_ms: 25,
        };
        let mut history = RestartHistory::default();
        let delays: Vec<RestartDecision> = (0..4)
            .map(|i| history.on_stop(&policy, Timestamp(i)))
            .collect();
        assert_eq!(
            delays,
            [
                RestartDecision::Restart {
                    delay_ms: 10,
                    restarts_in_window: 1
                },
                RestartDecision::Restart {
                    delay_ms: 20,
                    restarts_in_window: 2
                },
                RestartDecision::Restart {
                    delay_ms: 25,
                    restarts_in_window: 3
                },
                RestartDecision::Escalate {
                    restarts_in_window: 3
                },
            ]
        );
    }

    #[test]
    fn restarts_outside_the_window_are_forgotten() {
        let policy = RestartPolicy {
            max_restarts: 1,
            window_ms: 100,
            backoff_base_ms: 1,
            backoff_max_ms: 1,
        };
        let mut history = RestartHistory::default();
        assert!(matches!(
            history.on_stop(&policy, Timestamp(0)),
            RestartDecision::Restart { .. }
        ));
        assert!(matches!(
            history.on_stop(&policy, Timestamp(50)),
            RestartDecision::Escalate { .. }
        ));
        assert!(matches!(
            history.on_stop(&policy, Timestamp(100)),
            RestartDecision::Restart { .. }
        ));
        assert_eq!(history.total(), 2);
    }

    proptest! {
        #[test]
        fn backoff_stays_in_bounds(
            base in 0u64..10_000,
            max in 0u64..100_000,
            limit in 0u32..50,
            stops in proptest::collection::vec(0i64..10_000, 0..200),
        ) {
            let policy = RestartPolicy { max_restarts: limit, window_ms: 1_000, backoff_base_ms: base, backoff_max_ms: max };
            let mut history = RestartHistory::default();
            let mut now = 0i64;
            for step in stops {
                now += step;
                match history.on_stop(&policy, Timestamp(now)) {
                    RestartDecision::Restart { delay_ms, restarts_in_window } => {
                        prop_assert!(delay_ms <= max);
                        prop_assert!(delay_ms >= base.min(max));
                        prop_assert!(restarts_in_window <= limit);
                    }
                    RestartDecision::Escalate { restarts_in_window } => prop_assert_eq!(restarts_in_window, limit),
                }
            }
        }
    }
}
