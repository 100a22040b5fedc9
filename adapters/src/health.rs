//! The health of an engine a provider talks to (the Docker engine, a Kubernetes API server),
//! watched as a circuit breaker: a probe every 5 s while the engine answers; while it does not,
//! a new probe after 1 s, 2 s, 4 s … at most 30 s, so that an engine that is down is not
//! hammered. Each change is told to the caller, who withdraws or offers what the engine runs
//! (a worker's `docker` label, the Kubernetes worker), so that its jobs wait in the queue while
//! the engine is away and go on by themselves when it is back.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hodei_domain::ports::BoxFuture;

/// What a watcher is told: `None` when the engine answers again, the reason when it stops
/// answering.
pub type EngineHealth = Arc<dyn Fn(Option<String>) + Send + Sync>;

/// How often an engine that answers is probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
/// The first wait before an engine that does not answer is probed again; it doubles each time.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between probes of an engine that does not answer.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why an engine cannot be used now, if it cannot: one fact, read by the provider before it
/// sends a job, by `/readyz` and by the watcher.
#[derive(Debug, Default)]
pub struct Breaker {
    trouble: Mutex<Option<String>>,
}

impl Breaker {
    /// A breaker that is open (`Some`) or closed (`None`) from the start.
    pub fn new(trouble: Option<String>) -> Breaker {
        Breaker {
            trouble: Mutex::new(trouble),
        }
    }

    /// Why the engine cannot be used now, or `None` when it can.
    pub fn trouble(&self) -> Option<String> {
        self.trouble
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records the engine's health; says whether it changed (answers ⇄ does not).
    pub fn set(&self, trouble: Option<String>) -> bool {
        let mut current = self.trouble.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = current.is_some() != trouble.is_some();
        *current = trouble;
        changed
    }
}

/// An engine whose health can be probed.
pub trait Probe: Send + Sync + 'static {
    /// Asks the engine whether it answers and records the answer in its [`Breaker`]; says
    /// whether the health changed.
    fn probe(&self) -> BoxFuture<'_, bool>;

    /// The breaker the probe records in.
    fn breaker(&self) -> &Breaker;
}

/// The next wait of the watch, after a probe that left the engine with `trouble`.
pub fn next_backoff(backoff: Duration, trouble: bool) -> Duration {
    match trouble {
        false => FIRST_BACKOFF,
        true => (backoff * 2).min(MAX_BACKOFF),
    }
}

/// Watches `target` for as long as it lives, on the current Tokio runtime, and tells `health`
/// of every change ([`Breaker::trouble`] says how it is now).
pub fn watch<P: Probe>(target: &Arc<P>, health: EngineHealth) {
    let target = Arc::downgrade(target);
    tokio::spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let wait = match target.upgrade().map(|t| t.breaker().trouble()) {
                None => return,
                Some(None) => PROBE_EVERY,
                Some(Some(_)) => backoff,
            };
            tokio::time::sleep(wait).await;
            let Some(target) = target.upgrade() else {
                return;
            };
            let changed = target.probe().await;
            let trouble = target.breaker().trouble();
            backoff = next_backoff(backoff, trouble.is_some());
            if changed {
                health(trouble);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_bound_and_starts_again_once_the_engine_answers() {
        let mut backoff = FIRST_BACKOFF;
        let mut seen = Vec::new();
        for _ in 0..7 {
            backoff = next_backoff(backoff, true);
            seen.push(backoff.as_secs());
        }
        assert_eq!(seen, [2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(next_backoff(backoff, false), FIRST_BACKOFF);
    }

    #[test]
    fn a_breaker_tells_only_changes_between_answering_and_not() {
        let breaker = Breaker::new(Some("not connected yet".into()));
        assert!(!breaker.set(Some("refused".into())));
        assert_eq!(breaker.trouble().as_deref(), Some("refused"));
        assert!(breaker.set(None));
        assert!(!breaker.set(None));
        assert!(breaker.set(Some("gone".into())));
    }

    struct Flaky {
        breaker: Breaker,
        answers: Mutex<Vec<bool>>,
    }

    impl Probe for Flaky {
        fn probe(&self) -> BoxFuture<'_, bool> {
            let answers = self.answers.lock().unwrap().pop().unwrap_or(true);
            let trouble = (!answers).then(|| "down".to_owned());
            Box::pin(async move { self.breaker.set(trouble) })
        }

        fn breaker(&self) -> &Breaker {
            &self.breaker
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_tells_each_change_after_its_backoff_and_stops_with_its_target() {
        // Answers popped from the end: up, down, down, up.
        let target = Arc::new(Flaky {
            breaker: Breaker::new(None),
            answers: Mutex::new(vec![true, false, false, true]),
        });
        let told = Arc::new(Mutex::new(Vec::new()));
        let sink = told.clone();
        let start = tokio::time::Instant::now();
        watch(
            &target,
            Arc::new(move |trouble| {
                sink.lock()
                    .unwrap()
                    .push((start.elapsed().as_secs(), trouble.is_some()))
            }),
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        // Up at 5 s (no change), down at 10 s, still down at 12 s (2 s later), up at 16 s.
        assert_eq!(*told.lock().unwrap(), [(10, true), (16, false)]);
        drop(target);
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}
