//! The agent's ledger: a job attempt's transitions wait here, in order, until the server has
//! them. Recording never waits for the server: the job goes on while it is away.

use std::sync::Mutex;

use hodei_actors::record::Ledger;
use hodei_domain::ports::{BoxFuture, StoreError};
use hodei_domain::state::DomainEvent;
use tokio::sync::Notify;

/// The transitions of one attempt not yet sent.
#[derive(Default)]
pub struct Outbox {
    pending: Mutex<Vec<DomainEvent>>,
    /// Rung at each record.
    pub bell: Notify,
}

impl Outbox {
    /// Everything recorded since the last call, in order.
    pub fn drain(&self) -> Vec<DomainEvent> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Ledger for Outbox {
    fn record(&self, events: Vec<DomainEvent>) -> BoxFuture<'_, Result<(), StoreError>> {
        if !events.is_empty() {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(events);
            self.bell.notify_one();
        }
        Box::pin(std::future::ready(Ok(())))
    }
}
