//! Restart policies for the long-lived actors, on top of actix's `Supervisor`.
//!
//! actix restarts a supervised actor as soon as it stops, with no delay and no limit. Each
//! long-lived actor keeps a [`Restarts`] to add what a supervisor needs: a handler that panics is
//! contained ([`contained`]) and stops the actor; `Supervised::restarting` asks the
//! [`RestartPolicy`] what to do — restart after a backoff (the new life's `started` waits it out
//! before the mailbox is read again, so no message is lost), or, after too many restarts in the
//! window, escalate to the parent: the tree's [`Escalation`], which by default stops the process
//! (everything is durable; the next start resumes every run).

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, Context};
use hodei_domain::ports::Clock;
use hodei_domain::restart::{RestartDecision, RestartHistory, RestartPolicy};

use crate::contain::{ActorKind, Panicked, RestartCounter, guard};

/// The exit code of a process stopped by [`exit_on_escalation`]: an internal error.
pub const EXIT_INTERNAL: i32 = 70;

/// A supervised actor that failed more often than its policy allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalated {
    pub actor: ActorKind,
    /// Restarts within the policy's window before this one.
    pub restarts: u32,
    /// Why it stopped the last time.
    pub reason: String,
}

/// What the parent of the long-lived actors does with an [`Escalated`] actor.
pub type Escalation = Arc<dyn Fn(Escalated) + Send + Sync>;

/// The restart bookkeeping of one long-lived actor.
pub struct Restarts {
    kind: ActorKind,
    policy: RestartPolicy,
    history: RestartHistory,
    clock: Arc<dyn Clock>,
    escalation: Escalation,
    /// Why the actor is stopping, if it failed.
    reason: Option<String>,
    /// The backoff the next life waits out before it reads its mailbox.
    delay: Option<Duration>,
    /// The tree's restart counts.
    counter: Arc<RestartCounter>,
}

impl Restarts {
    pub fn new(
        kind: ActorKind,
        policy: RestartPolicy,
        clock: Arc<dyn Clock>,
        escalation: Escalation,
        counter: Arc<RestartCounter>,
    ) -> Restarts {
        Restarts {
            kind,
            policy,
            history: RestartHistory::default(),
            clock,
            escalation,
            reason: None,
            delay: None,
            counter,
        }
    }

    /// The tree's restart counts.
    pub fn counter(&self) -> &Arc<RestartCounter> {
        &self.counter
    }

    /// Notes why the actor is about to stop.
    pub fn failed(&mut self, reason: String) {
        tracing::error!(actor = self.kind.name(), error = %reason, "A supervised actor failed; restarting it.");
        self.reason = Some(reason);
    }

    /// Call from `Supervised::restarting`: counts the restart and decides on its backoff, or
    /// escalates.
    pub fn restarting(&mut self) {
        self.counter.record(self.kind);
        let reason = self
            .reason
            .take()
            .unwrap_or_else(|| "it stopped".to_owned());
        match self.history.on_stop(&self.policy, self.clock.now()) {
            RestartDecision::Restart { delay_ms, .. } => {
                self.delay = Some(Duration::from_millis(delay_ms));
            }
            RestartDecision::Escalate { restarts_in_window } => {
                self.delay = Some(Duration::from_millis(self.policy.backoff_max_ms));
                tracing::error!(
                    actor = self.kind.name(),
                    restarts = restarts_in_window,
                    error = %reason,
                    "A supervised actor keeps failing; escalating."
                );
                (self.escalation)(Escalated {
                    actor: self.kind,
                    restarts: restarts_in_window,
                    reason,
                });
            }
        }
    }

    /// Call first in `Actor::started`: after a restart, the actor reads no message until the
    /// backoff has passed. Messages sent meanwhile wait in its mailbox.
    pub fn hold<A>(&mut self, ctx: &mut Context<A>)
    where
        A: Actor<Context = Context<A>>,
    {
        if let Some(delay) = self.delay.take() {
            ctx.wait(actix::fut::wrap_future::<_, A>(actix::clock::sleep(delay)));
        }
    }
}

/// An escalation that stops the process with [`EXIT_INTERNAL`]: the whole of Hodei restarts
/// under its own supervisor (systemd, a container runtime) and resumes every run from the store.
pub fn exit_on_escalation() -> Escalation {
    Arc::new(move |escalated: Escalated| {
        eprintln!(
            "hodei: the {} actor failed {} times in a row ({}); stopping. Unfinished runs resume at the next start.",
            escalated.actor.name(),
            escalated.restarts + 1,
            escalated.reason
        );
        std::process::exit(EXIT_INTERNAL);
    })
}

/// An actor whose handlers are contained.
pub trait Supervise: Actor<Context = Context<Self>> {
    fn restarts(&mut self) -> &mut Restarts;
}

/// Runs a handler's body; a panic in it stops the actor (its supervisor restarts it) and yields
/// `None`.
pub fn contained<A: Supervise, R>(
    act: &mut A,
    ctx: &mut Context<A>,
    body: impl FnOnce(&mut A, &mut Context<A>) -> R,
) -> Option<R> {
    match guard(|| body(act, ctx)) {
        Ok(result) => Some(result),
        Err(Panicked { message }) => {
            act.restarts().failed(message);
            ctx.stop();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use actix::{Handler, Message, Supervised, Supervisor};
    use hodei_domain::ids::Timestamp;

    struct Fixed;

    impl Clock for Fixed {
        fn now(&self) -> Timestamp {
            Timestamp(1_000)
        }
    }

    #[derive(Message)]
    #[rtype(result = "Option<u32>")]
    struct Bump {
        panic: bool,
    }

    struct Counter {
        value: u32,
        restarts: Restarts,
    }

    impl Actor for Counter {
        type Context = Context<Self>;
        fn started(&mut self, ctx: &mut Context<Self>) {
            self.restarts.hold(ctx);
        }
    }

    impl Supervised for Counter {
        fn restarting(&mut self, _: &mut Context<Self>) {
            self.restarts.restarting();
        }
    }

    impl Supervise for Counter {
        fn restarts(&mut self) -> &mut Restarts {
            &mut self.restarts
        }
    }

    impl Handler<Bump> for Counter {
        type Result = Option<u32>;
        fn handle(&mut self, msg: Bump, ctx: &mut Context<Self>) -> Option<u32> {
            contained(self, ctx, |act, _| {
                assert!(!msg.panic, "a scripted panic");
                act.value += 1;
                act.value
            })
        }
    }

    #[actix_rt::test]
    async fn a_panicking_handler_restarts_the_actor_then_escalates_past_the_limit() {
        let escalated = Arc::new(Mutex::new(Vec::new()));
        let seen = escalated.clone();
        let policy = RestartPolicy {
            max_restarts: 2,
            window_ms: 60_000,
            backoff_base_ms: 1,
            backoff_max_ms: 5,
        };
        let addr = Supervisor::start(move |_| Counter {
            value: 0,
            restarts: Restarts::new(
                ActorKind::Scheduler,
                policy,
                Arc::new(Fixed),
                Arc::new(move |e| seen.lock().unwrap().push(e)),
                Arc::default(),
            ),
        });
        let quiet = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        assert_eq!(addr.send(Bump { panic: false }).await.unwrap(), Some(1));
        for _ in 0..3 {
            assert_eq!(addr.send(Bump { panic: true }).await.unwrap(), None);
            // The actor came back: its mailbox still answers, its state is kept.
            assert!(addr.send(Bump { panic: false }).await.unwrap().is_some());
        }
        std::panic::set_hook(quiet);
        assert_eq!(addr.send(Bump { panic: false }).await.unwrap(), Some(5));
        let escalated = escalated.lock().unwrap();
        assert_eq!(
            escalated.len(),
            1,
            "two restarts are allowed, the third escalates"
        );
        assert_eq!(escalated[0].actor, ActorKind::Scheduler);
        assert_eq!(escalated[0].restarts, 2);
        assert!(escalated[0].reason.contains("a scripted panic"));
    }
}
