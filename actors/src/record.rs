//! How an actor records transitions: appended to the store (event and projection in one
//! transaction) before they are announced on the event bus.
//!
//! A job attempt records through a [`Ledger`]: on the server (and in `hodei run`) that is the
//! store and the bus ([`StoreLedger`]); on an agent, the outbox that carries the attempt's
//! transitions to its server under the attempt's lease.

use std::sync::Arc;

use actix::Addr;
use hodei_domain::ports::{BoxFuture, Store, StoreError};
use hodei_domain::state::DomainEvent;

use crate::Ports;
use crate::bus::EventBus;
use crate::messages::Publish;

/// Appends `events` to the store, then announces them. Nothing is announced that is not
/// durable; an empty batch costs nothing.
pub async fn record(
    ports: &Ports,
    bus: &Addr<EventBus>,
    events: Vec<DomainEvent>,
) -> Result<(), StoreError> {
    append_then_publish(&*ports.store, bus, events).await
}

async fn append_then_publish(
    store: &dyn Store,
    bus: &Addr<EventBus>,
    events: Vec<DomainEvent>,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    store.append(events.clone()).await?;
    bus.do_send(Publish { events });
    Ok(())
}

/// Where a job attempt's transitions go.
///
/// ## Guarantees
/// - Transitions are kept in the order they are recorded.
/// - When `record` returns `Ok`, the transitions will reach the store (at once for
///   [`StoreLedger`]; an agent's outbox keeps them until its server has them).
pub trait Ledger: Send + Sync {
    fn record(&self, events: Vec<DomainEvent>) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// The server's ledger: the store, then the event bus.
pub struct StoreLedger {
    pub store: Arc<dyn Store>,
    pub bus: Addr<EventBus>,
}

impl Ledger for StoreLedger {
    fn record(&self, events: Vec<DomainEvent>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(append_then_publish(&*self.store, &self.bus, events))
    }
}
