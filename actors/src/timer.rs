//! The timer: fires the `on.schedule` entries of the stored pipelines.
//!
//! Each pass reads the pipelines (their latest versions, loaded again only when a version
//! changes), asks the pure rules of [`hodei_domain::ticks`] which entries are due at the
//! clock's `now`, claims each due tick in the store ([`TickStore::claim_tick`]: one claimer
//! wins, however many replicas run a timer) and submits a run of the pipeline's latest version
//! with the event `schedule`. A pipeline that a repository's webhook started runs, with
//! [`Heads`], at the head of that repository's default branch (fetched when the tick fires):
//! its jobs check it out, and the repository's secrets are its. Then it sleeps until the next tick of any entry, or
//! [`TimerSettings::rescan`] at most, to see new pipelines; [`PipelinesChanged`] (sent when a
//! pipeline is applied) is a doorbell that starts a pass at once.
//!
//! A tick missed while Hodei was down fires once at the first pass (the latest missed tick);
//! the ticks before it are only counted, in a warning. A claimed tick whose run cannot be
//! submitted (the definition no longer loads, the queue is full) is logged and not tried again.
//!
//! The actor holds nothing that matters: after a restart, `started` reads everything again
//! from the store, and the claims make a tick fire once across lives.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, ResponseActFuture,
    Supervised, WrapFuture,
};
use hodei_domain::ids::Timestamp;
use hodei_domain::model::Cron;
use hodei_domain::plan::RunInputs;
use hodei_domain::ports::{Clock, Heads, PipelineVersion, Store, StoreError, TickStore};
use hodei_domain::ticks;

use crate::contain::guard_future;
use crate::fault::{Faults, Point};
use crate::messages::{Definition, SubmitRun};
use crate::orchestrator::Orchestrator;
use crate::supervise::{Restarts, Supervise};

/// How the timer looks for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerSettings {
    /// The longest sleep between two passes: a pipeline applied meanwhile is seen by then.
    pub rescan: Duration,
}

impl Default for TimerSettings {
    fn default() -> TimerSettings {
        TimerSettings {
            rescan: Duration::from_secs(10),
        }
    }
}

/// A pipeline's latest version, as the timer knows it.
#[derive(Clone)]
struct Known {
    version: PipelineVersion,
    entries: Vec<Cron>,
    secrets: Vec<String>,
}

/// What a pass reads and updates.
#[derive(Default)]
struct State {
    pipelines: HashMap<String, Known>,
    /// The last tick claimed (by anyone) per pipeline and entry, once read from the store.
    last: HashMap<(String, String), Option<Timestamp>>,
}

/// Fires scheduled runs. See the documentation of this module.
pub struct Timer {
    faults: Faults,
    store: Arc<dyn Store>,
    ticks: Arc<dyn TickStore>,
    heads: Option<Arc<dyn Heads>>,
    clock: Arc<dyn Clock>,
    orchestrator: Addr<Orchestrator>,
    settings: TimerSettings,
    state: Option<State>,
    /// A doorbell rang during a pass: another pass follows it at once.
    again: bool,
    /// The next pass, as scheduled: one at a time.
    next: Option<actix::SpawnHandle>,
    restarts: Restarts,
}

impl Timer {
    /// A timer on these ports (`faults`, `store` and `clock` are the tree's).
    pub fn new(
        (faults, store, clock): (Faults, Arc<dyn Store>, Arc<dyn Clock>),
        (ticks, heads): (Arc<dyn TickStore>, Option<Arc<dyn Heads>>),
        orchestrator: Addr<Orchestrator>,
        settings: TimerSettings,
        restarts: Restarts,
    ) -> Timer {
        Timer {
            faults,
            store,
            ticks,
            heads,
            clock,
            orchestrator,
            settings,
            state: None,
            again: false,
            next: None,
            restarts,
        }
    }
}

/// Look for due ticks now.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Wake;

/// A pipeline was applied: its schedules may have changed. A doorbell: without it, the timer
/// sees the change within [`TimerSettings::rescan`].
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct PipelinesChanged;

impl Handler<PipelinesChanged> for Timer {
    type Result = ();

    fn handle(&mut self, _: PipelinesChanged, ctx: &mut Context<Self>) {
        match self.state {
            Some(_) => ctx.notify(Wake),
            None => self.again = true,
        }
    }
}

impl Actor for Timer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.restarts.hold(ctx);
        // A new life knows nothing: everything is read again from the store.
        self.state = Some(State::default());
        ctx.notify(Wake);
    }
}

impl Supervised for Timer {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.restarts.restarting();
    }
}

impl Supervise for Timer {
    fn restarts(&mut self) -> &mut Restarts {
        &mut self.restarts
    }
}

impl Handler<Wake> for Timer {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Wake, _: &mut Context<Self>) -> Self::Result {
        let Some(state) = self.state.take() else {
            // A pass is under way; it schedules the next one.
            return Box::pin(actix::fut::ready(()));
        };
        let pass = Pass {
            faults: self.faults.clone(),
            store: self.store.clone(),
            ticks: self.ticks.clone(),
            heads: self.heads.clone(),
            clock: self.clock.clone(),
            orchestrator: self.orchestrator.clone(),
        };
        let rescan = self.settings.rescan;
        Box::pin(
            guard_future(async move { pass.run(state).await })
                .into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok((state, next)) => {
                        act.state = Some(state);
                        if let Some(next) = act.next.take() {
                            ctx.cancel_future(next);
                        }
                        if std::mem::take(&mut act.again) {
                            ctx.notify(Wake);
                            return;
                        }
                        let now = act.clock.now();
                        let delay = next
                            .map(|at| Duration::from_millis(at.millis_since(now)))
                            .map_or(rescan, |d| d.min(rescan));
                        act.next = Some(ctx.run_later(delay, |_, ctx| ctx.notify(Wake)));
                    }
                    Err(panicked) => {
                        act.restarts.failed(panicked.message.clone());
                        actix::ActorContext::stop(ctx);
                    }
                }),
        )
    }
}

/// One pass, off the actor's state.
struct Pass {
    faults: Faults,
    store: Arc<dyn Store>,
    ticks: Arc<dyn TickStore>,
    heads: Option<Arc<dyn Heads>>,
    clock: Arc<dyn Clock>,
    orchestrator: Addr<Orchestrator>,
}

impl Pass {
    /// Fires what is due; answers the state and when the next tick of any entry comes.
    async fn run(&self, mut state: State) -> (State, Option<Timestamp>) {
        self.faults.hit(Point::TimerPass);
        if let Err(err) = self.refresh(&mut state).await {
            tracing::warn!(error = %err, "Cannot read the pipelines' schedules; trying again later.");
        }
        let now = self.clock.now();
        let mut next: Option<Timestamp> = None;
        for known in state.pipelines.values() {
            for cron in &known.entries {
                let key = (known.version.name.clone(), cron.as_str().to_owned());
                let last = match state.last.get(&key) {
                    Some(last) => *last,
                    None => match self.ticks.last_tick(&key.0, &key.1).await {
                        Ok(last) => {
                            state.last.insert(key.clone(), last);
                            last
                        }
                        Err(err) => {
                            tracing::warn!(pipeline = %key.0, schedule = %key.1, error = %err, "Cannot read a schedule's last tick.");
                            continue;
                        }
                    },
                };
                let baseline = ticks::baseline(last, known.version.created);
                if let Some(due) = ticks::due(cron, baseline, now)
                    && self.fire(known, cron, due, now).await
                {
                    state.last.insert(key, Some(due.tick));
                }
                if let Some(at) = ticks::next_wake(cron, now) {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            }
        }
        (state, next)
    }

    /// Reads the list of pipelines, and the latest version of those that changed.
    async fn refresh(&self, state: &mut State) -> Result<(), StoreError> {
        let mut after: Option<String> = None;
        let mut seen = Vec::new();
        loop {
            let page = self.store.pipelines(after.as_deref(), 500).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.name.clone());
            for summary in &page {
                seen.push(summary.name.clone());
                if state
                    .pipelines
                    .get(&summary.name)
                    .is_some_and(|k| k.version.version == summary.latest)
                {
                    continue;
                }
                let Some(version) = self.store.pipeline(&summary.name).await? else {
                    continue;
                };
                let loaded = hodei_domain::load::load(&version.source).pipeline;
                let (entries, secrets) = loaded
                    .map(|p| (p.on.schedule, p.secrets))
                    .unwrap_or_default();
                state.pipelines.insert(
                    summary.name.clone(),
                    Known {
                        version,
                        entries,
                        secrets,
                    },
                );
            }
        }
        state.pipelines.retain(|name, _| seen.contains(name));
        Ok(())
    }

    /// Claims the tick and, if this timer won it, submits the run. `false` when the claim
    /// could not be made (the store failed): the next pass tries again.
    async fn fire(&self, known: &Known, cron: &Cron, due: ticks::Due, now: Timestamp) -> bool {
        let pipeline = &known.version.name;
        match self
            .ticks
            .claim_tick(pipeline, cron.as_str(), due.tick, now)
            .await
        {
            Ok(true) => {}
            Ok(false) => return true,
            Err(err) => {
                tracing::warn!(pipeline = %pipeline, schedule = %cron, error = %err, "Cannot claim a schedule's tick; trying again at the next pass.");
                return false;
            }
        }
        if due.late || due.missed > 0 {
            tracing::warn!(
                pipeline = %pipeline,
                schedule = %cron,
                tick = due.tick.0,
                missed = due.missed,
                "A scheduled tick fires late, once; the ticks missed before it do not fire."
            );
        }
        let head = match &self.heads {
            Some(heads) => match heads.head(pipeline).await {
                Ok(head) => head,
                Err(err) => {
                    // The run goes on without the code: its steps say what they miss.
                    tracing::warn!(pipeline = %pipeline, error = %err, "Cannot fetch the head of the repository's default branch for a scheduled run; it runs without a checkout.");
                    None
                }
            },
            None => None,
        };
        let head = head.unwrap_or_default();
        let inputs = RunInputs {
            branch: head.branch.clone(),
            event: "schedule".into(),
            tag: String::new(),
            commit: head.commit,
            params: Default::default(),
            env: Default::default(),
            secrets: known.secrets.clone(),
            repository: head.repository,
            server_url: head.server_url,
            default_branch: head.branch,
            overridden_by: String::new(),
        };
        let submitted = self
            .orchestrator
            .send(SubmitRun {
                definition: Definition::Stored(known.version.clone()),
                inputs,
                limit: None,
            })
            .await;
        match submitted {
            Ok(Ok(run)) => {
                tracing::info!(run_id = %run, pipeline = %pipeline, schedule = %cron, "Scheduled run started.");
            }
            Ok(Err(err)) => {
                tracing::error!(pipeline = %pipeline, schedule = %cron, error = %err, "Cannot start a scheduled run; the tick is skipped.");
            }
            Err(err) => {
                tracing::error!(pipeline = %pipeline, schedule = %cron, error = %err, "The orchestrator did not take a scheduled run; the tick is skipped.");
            }
        }
        true
    }
}
