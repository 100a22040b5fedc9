//! The provider actor: owns a provider's housekeeping. At start-up it reaps what an earlier life
//! of Hodei left running (level-triggered: a second pass finds nothing), sparing the job
//! attempts whose steps the resumed runs will try to take back, and logs what it reaped.

use std::sync::Arc;

use actix::{Actor, ActorFutureExt, Context, Handler, ResponseActFuture, Supervised, WrapFuture};
use hodei_domain::ports::{Orphan, ProviderError, Reconcile};

use crate::contain::guard_future;
use crate::messages::ReapOrphans;
use crate::supervise::{Restarts, Supervise};

/// Owns a provider's reconciliation.
pub struct ProviderActor {
    name: &'static str,
    reconcile: Arc<dyn Reconcile>,
    restarts: Restarts,
}

impl ProviderActor {
    pub fn new(
        name: &'static str,
        reconcile: Arc<dyn Reconcile>,
        restarts: Restarts,
    ) -> ProviderActor {
        ProviderActor {
            name,
            reconcile,
            restarts,
        }
    }
}

impl Actor for ProviderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.restarts.hold(ctx);
    }
}

impl Supervised for ProviderActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.restarts.restarting();
    }
}

impl Supervise for ProviderActor {
    fn restarts(&mut self) -> &mut Restarts {
        &mut self.restarts
    }
}

impl Handler<ReapOrphans> for ProviderActor {
    type Result = ResponseActFuture<Self, Result<Vec<Orphan>, ProviderError>>;

    fn handle(&mut self, msg: ReapOrphans, _: &mut Context<Self>) -> Self::Result {
        let reconcile = self.reconcile.clone();
        let name = self.name;
        Box::pin(
            guard_future(async move { reconcile.reap_orphans(&msg.spare).await })
                .into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(Ok(orphans)) => {
                        if !orphans.is_empty() {
                            tracing::warn!(
                                provider = name,
                                reaped = orphans.len(),
                                "Stopped what an earlier Hodei left running."
                            );
                        }
                        Ok(orphans)
                    }
                    Ok(Err(err)) => Err(err),
                    Err(panicked) => {
                        act.restarts.failed(panicked.message.clone());
                        actix::ActorContext::stop(ctx);
                        Err(ProviderError::Other {
                            provider: name,
                            reason: panicked.to_string(),
                            cause: None,
                        })
                    }
                }),
        )
    }
}
