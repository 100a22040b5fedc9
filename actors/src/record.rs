//! How an actor records transitions: appended to the store (event and projection in one
//! transaction) before they are announced on the event bus.

use actix::Addr;
use hodei_domain::ports::StoreError;
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
    if events.is_empty() {
        return Ok(());
    }
    ports.store.append(events.clone()).await?;
    bus.do_send(Publish { events });
    Ok(())
}
