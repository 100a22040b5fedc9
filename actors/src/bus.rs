//! The event bus: domain events, already durable, delivered to every subscriber in order.
//!
//! Its subscribers survive a restart (the actor's fields are kept); an event whose delivery
//! panicked is not delivered again: subscribers that must not miss one read the store's event
//! log, which has every event.

use std::sync::Arc;

use actix::{Actor, Context, Handler, Recipient, Supervised};

use crate::fault::{Faults, Point};
use crate::messages::{Publish, Published, Subscribe};
use crate::supervise::{Restarts, Supervise, contained};

/// Fans out published events. Subscribers that have gone away are dropped.
pub struct EventBus {
    subscribers: Vec<Recipient<Published>>,
    faults: Faults,
    restarts: Restarts,
}

impl EventBus {
    pub fn new(faults: Faults, restarts: Restarts) -> EventBus {
        EventBus {
            subscribers: Vec::new(),
            faults,
            restarts,
        }
    }
}

impl Actor for EventBus {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.restarts.hold(ctx);
    }
}

impl Supervised for EventBus {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.restarts.restarting();
    }
}

impl Supervise for EventBus {
    fn restarts(&mut self) -> &mut Restarts {
        &mut self.restarts
    }
}

impl Handler<Subscribe> for EventBus {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        self.subscribers.push(msg.subscriber);
    }
}

impl Handler<Publish> for EventBus {
    type Result = ();

    fn handle(&mut self, msg: Publish, ctx: &mut Context<Self>) {
        contained(self, ctx, |act, _| {
            act.faults.hit(Point::Publish);
            if msg.events.is_empty() || act.subscribers.is_empty() {
                return;
            }
            let events: Arc<[_]> = msg.events.into();
            // A subscriber whose mailbox is closed is gone for good; a full one still gets the
            // event (its mailbox grows): subscribers are local and must keep up.
            act.subscribers.retain(|subscriber| subscriber.connected());
            for subscriber in &act.subscribers {
                subscriber.do_send(Published {
                    events: events.clone(),
                });
            }
        });
    }
}
