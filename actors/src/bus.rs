//! The event bus: domain events, already durable, delivered to every subscriber in order.

use std::sync::Arc;

use actix::{Actor, Context, Handler, Recipient, Supervised};

use crate::contain::{ActorKind, restarts};
use crate::messages::{Publish, Published, Subscribe};

/// Fans out published events. Subscribers that have gone away are dropped.
#[derive(Default)]
pub struct EventBus {
    subscribers: Vec<Recipient<Published>>,
}

impl Actor for EventBus {
    type Context = Context<Self>;
}

impl Supervised for EventBus {
    fn restarting(&mut self, _: &mut Context<Self>) {
        restarts().record(ActorKind::EventBus);
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

    fn handle(&mut self, msg: Publish, _: &mut Context<Self>) {
        if msg.events.is_empty() || self.subscribers.is_empty() {
            return;
        }
        let events: Arc<[_]> = msg.events.into();
        // A subscriber whose mailbox is closed is gone for good; a full one still gets the
        // event (its mailbox grows): subscribers are local and must keep up.
        self.subscribers.retain(|subscriber| subscriber.connected());
        for subscriber in &self.subscribers {
            subscriber.do_send(Published {
                events: events.clone(),
            });
        }
    }
}
