//! Group commit of appended events on PostgreSQL.
//!
//! Every [`Store::append`](hodei_domain::ports::Store::append) of a [`PgStore`](super::PgStore)
//! goes to one writer task on the store's runtime, with a oneshot for its answer. The task takes
//! the first append waiting, drains whatever else is queued (up to [`MAX_BATCH`] events), writes
//! all of it in ONE transaction — the leader's fence read once, the numbering lock taken once,
//! every event in one insert, the projections in one update per table — commits, and only then
//! answers every caller. So the number of commits grows with the number of batches, not of
//! callers: under load a batch fills while the previous one commits, with no added latency when
//! the store is idle. This is what the SQLite store's writer does, for the same reason: a commit
//! costs a round trip and a WAL flush, and the numbering of events in commit order serialises
//! appends across the database anyway.
//!
//! If one caller's events fail for their own reasons (a run or job that does not exist), nothing
//! of the batch is written, and each append is then written again in a transaction of its own,
//! so that the mistake fails that caller alone. A failure of the database itself (unreachable,
//! a deposed leader) fails every caller of the batch with the same error.

use hodei_domain::ports::StoreError;
use hodei_domain::state::DomainEvent;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};

use super::error::store_error;
use super::leader::Fence;
use super::queries;
use std::sync::Arc;

/// The most events written in one transaction.
const MAX_BATCH: usize = 2_000;
/// Appends waiting for the writer before callers wait too.
const QUEUE: usize = 4_096;

/// One caller's events and where their answer goes.
pub(super) struct Append {
    events: Vec<DomainEvent>,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The sending side of the writer: cheap to clone.
#[derive(Clone)]
pub(super) struct Writer {
    sender: mpsc::Sender<Append>,
}

impl Writer {
    /// Starts the writer task on `runtime`; it ends when every [`Writer`] is dropped, after
    /// writing what was queued.
    pub(super) fn spawn(
        runtime: &tokio::runtime::Handle,
        pool: PgPool,
        fence: Arc<Fence>,
    ) -> Writer {
        let (sender, receiver) = mpsc::channel(QUEUE);
        runtime.spawn(run(pool, fence, receiver));
        Writer { sender }
    }

    /// Appends `events` in commit order; returns once they are committed.
    pub(super) async fn append(&self, events: Vec<DomainEvent>) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Append { events, reply })
            .await
            .map_err(|_| super::stopped())?;
        answer.await.map_err(|_| super::stopped())?
    }
}

async fn run(pool: PgPool, fence: Arc<Fence>, mut appends: mpsc::Receiver<Append>) {
    let mut batch: Vec<Append> = Vec::new();
    while let Some(first) = appends.recv().await {
        // Let the callers that are ready to send (typically those just answered) do so before
        // draining: otherwise the writer, woken by the first of them, would take it alone.
        tokio::task::yield_now().await;
        let mut weight = first.events.len();
        batch.push(first);
        while weight < MAX_BATCH {
            let Ok(next) = appends.try_recv() else {
                break;
            };
            weight += next.events.len();
            batch.push(next);
        }
        write(&pool, &fence, &mut batch).await;
    }
}

/// Writes a batch and answers each of its callers.
async fn write(pool: &PgPool, fence: &Fence, batch: &mut Vec<Append>) {
    let outcome = match pool.acquire().await {
        Ok(mut conn) => match write_together(&mut conn, fence, batch).await {
            Ok(()) => Ok(()),
            Err(StoreError::NotFound { .. }) if batch.len() > 1 => {
                // One append names a run or job that does not exist: write each alone.
                for append in batch.drain(..) {
                    let result = write_alone(&mut conn, fence, &append.events).await;
                    let _ = append.reply.send(result);
                }
                return;
            }
            Err(StoreError::NotFound { what }) => {
                Err(missing(&mut conn, &batch[0].events, what).await)
            }
            Err(err) => Err(err),
        },
        Err(err) => Err(store_error("appending events", err)),
    };
    if let Err(err) = &outcome {
        tracing::debug!(appends = batch.len(), error = %err, "An append batch failed.");
    }
    for append in batch.drain(..) {
        // The caller may have given up waiting: nothing to do then.
        let _ = append.reply.send(outcome.clone());
    }
}

/// Every event of the batch in one transaction, in the order the appends came.
async fn write_together(
    conn: &mut PgConnection,
    fence: &Fence,
    batch: &[Append],
) -> Result<(), StoreError> {
    let events: Vec<&DomainEvent> = batch.iter().flat_map(|a| a.events.iter()).collect();
    commit(conn, fence, &events).await
}

/// One caller's events in a transaction of their own, the missing subject named if any.
async fn write_alone(
    conn: &mut PgConnection,
    fence: &Fence,
    events: &[DomainEvent],
) -> Result<(), StoreError> {
    let refs: Vec<&DomainEvent> = events.iter().collect();
    match commit(conn, fence, &refs).await {
        Err(StoreError::NotFound { what }) => Err(missing(conn, events, what).await),
        other => other,
    }
}

/// The error of an append that names a run or job that does not exist, naming which one.
async fn missing(conn: &mut PgConnection, events: &[DomainEvent], what: String) -> StoreError {
    let subject = queries::missing_subject(conn, events).await;
    StoreError::NotFound {
        what: subject.unwrap_or(what),
    }
}

async fn commit(
    conn: &mut PgConnection,
    fence: &Fence,
    events: &[&DomainEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let what = "appending events";
    let mut tx = conn.begin().await.map_err(|err| store_error(what, err))?;
    fence.check(&mut tx).await?;
    queries::append_events(&mut tx, events).await?;
    tx.commit().await.map_err(|err| store_error(what, err))
}
