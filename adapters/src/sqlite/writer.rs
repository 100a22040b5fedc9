//! The writer task: every write of the store goes through it, and it commits them in groups.
//!
//! Callers send a [`Command`] with a oneshot for the answer. The task takes the first command
//! waiting, drains whatever else is queued (up to [`MAX_BATCH`] events' worth), writes all of
//! it in ONE transaction, commits, and only then answers every caller. So the number of commits
//! (each one a WAL write) grows with the number of batches, not of callers: under load a batch
//! fills while the previous one commits, with no added latency when the store is idle.
//!
//! A batch is written optimistically, in a handful of statements (all its events in one
//! append); a batch of appends alone (the common one) goes to SQLite's thread as one query,
//! `BEGIN IMMEDIATE` and `COMMIT` included, one round trip where a transaction opened apart
//! takes three. If one caller's command fails for its own reasons (an event for a run that does not
//! exist), the transaction is rolled back and the batch written again with a savepoint per
//! command, so that the mistake fails that caller alone. A failure of the database itself
//! (busy, I/O, full) fails the whole batch, and every caller in it gets
//! [`StoreError::Unavailable`].
//!
//! One writer also means no two connections ever compete for SQLite's write lock.

use hodei_domain::ids::Timestamp;
use hodei_domain::ports::{
    NewRun, NewToken, PipelineVersion, RunRecord, SecretInfo, SecretScope, StoreError, TokenRecord,
};
use hodei_domain::state::DomainEvent;
use sqlx::{Connection, Sqlite, SqliteConnection, SqlitePool, Transaction};
use std::sync::Arc;

use tokio::sync::{Notify, mpsc, oneshot};

use super::agents::{self, AgentWrite, AgentWritten};
use super::error::store_error;
use super::queries::{self, Frame};
use super::repos::{self, RepoWrite, RepoWritten};
use super::secrets;
use super::tokens;
use crate::secrets::SealedSecret;

/// The most events (or jobs of new runs) written in one transaction.
pub(super) const MAX_BATCH: usize = 1_000;
/// Commands waiting for the writer before senders wait too.
const QUEUE: usize = 4_096;

/// A pipeline definition to store.
pub(super) struct PipelineText {
    pub name: String,
    pub source: String,
    pub at: Timestamp,
}

/// A write, with the channel its answer goes to.
pub(super) enum Command {
    Append(Request<Vec<DomainEvent>, ()>),
    /// Boxed: a run record is much bigger than the other commands.
    CreateRun(Box<Request<NewRun, RunRecord>>),
    PutPipeline(Request<PipelineText, PipelineVersion>),
    CreateToken(Request<NewToken, TokenRecord>),
    /// A token's id and the instant of its revocation.
    RevokeToken(Request<(u64, Timestamp), bool>),
    PutSecret(Request<SealedSecret, (SecretInfo, bool)>),
    DeleteSecret(Request<(SecretScope, String), bool>),
    Repo(Request<RepoWrite, RepoWritten>),
    Agent(Request<AgentWrite, AgentWritten>),
}

impl Command {
    /// How much of a batch the command takes: its rows, roughly.
    fn weight(&self) -> usize {
        match self {
            Command::Append(request) => request.args.len(),
            Command::CreateRun(request) => 1 + request.args.jobs.len(),
            Command::PutPipeline(_)
            | Command::CreateToken(_)
            | Command::RevokeToken(_)
            | Command::PutSecret(_)
            | Command::DeleteSecret(_)
            | Command::Repo(_) => 1,
            Command::Agent(request) => match &request.args {
                AgentWrite::Report { events, .. } | AgentWrite::EndLease { events, .. } => {
                    1 + events.len()
                }
                _ => 1,
            },
        }
    }

    pub fn answer(self, commit: &Result<(), StoreError>) {
        match self {
            Command::Append(request) => request.answer(commit),
            Command::CreateRun(request) => request.answer(commit),
            Command::PutPipeline(request) => request.answer(commit),
            Command::CreateToken(request) => request.answer(commit),
            Command::RevokeToken(request) => request.answer(commit),
            Command::PutSecret(request) => request.answer(commit),
            Command::DeleteSecret(request) => request.answer(commit),
            Command::Repo(request) => request.answer(commit),
            Command::Agent(request) => request.answer(commit),
        }
    }
}

/// What a caller asked, its result once the unit ran, and where the result goes once committed.
pub(super) struct Request<A, T> {
    pub args: A,
    reply: oneshot::Sender<Result<T, StoreError>>,
    result: Option<Result<T, StoreError>>,
}

impl<A, T> Request<A, T> {
    pub fn new(args: A, reply: oneshot::Sender<Result<T, StoreError>>) -> Self {
        Request {
            args,
            reply,
            result: None,
        }
    }

    /// Sends the result, which holds only if the transaction committed.
    fn answer(self, commit: &Result<(), StoreError>) {
        let result = match (self.result, commit) {
            (Some(Err(err)), _) => Err(err),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (Some(Ok(_)) | None, Err(err)) => Err(err.clone()),
            (None, Ok(())) => Err(StoreError::Unavailable {
                reason: "the write was not attempted".into(),
                cause: None,
            }),
        };
        // The caller may have given up waiting: nothing to do then.
        let _ = self.reply.send(result);
    }
}

/// Starts the writer task on the current Tokio runtime; it ends when every sender is dropped,
/// after writing what was queued. It notifies `committed` after each commit, and once more as
/// it ends.
pub(super) fn spawn(pool: SqlitePool, committed: Arc<Notify>) -> mpsc::Sender<Command> {
    let (sender, receiver) = mpsc::channel(QUEUE);
    tokio::spawn(run(pool, receiver, committed));
    sender
}

async fn run(pool: SqlitePool, mut commands: mpsc::Receiver<Command>, committed: Arc<Notify>) {
    let mut batch = Vec::new();
    while let Some(first) = commands.recv().await {
        // Let the callers that are ready to send (typically those just answered) do so before
        // draining: otherwise the writer, woken by the first of them, would take it alone.
        tokio::task::yield_now().await;
        let mut weight = first.weight();
        batch.push(first);
        while weight < MAX_BATCH {
            let Ok(next) = commands.try_recv() else {
                break;
            };
            weight += next.weight();
            batch.push(next);
        }
        let commit = write(&pool, &mut batch).await;
        match &commit {
            Ok(()) => committed.notify_one(),
            Err(err) => {
                tracing::warn!(commands = batch.len(), error = %err, "Store batch failed.")
            }
        }
        for command in batch.drain(..) {
            command.answer(&commit);
        }
    }
    pool.close().await;
    committed.notify_one();
}

/// Writes a batch in one transaction; each command's own result is left in it.
///
/// First optimistically, as few statements as possible: every event of the batch in one
/// append, then the other commands in order, no savepoint. If a command fails for its own
/// reasons (an unknown run), that transaction is rolled back and the batch is written again
/// carefully, each command in its own savepoint, so that it fails alone.
pub(super) async fn write(pool: &SqlitePool, batch: &mut [Command]) -> Result<(), StoreError> {
    let what = "writing a batch";
    let mut conn = pool.acquire().await.map_err(|err| store_error(what, err))?;
    match write_fast(&mut conn, batch).await {
        Fast::Committed => Ok(()),
        Fast::Failed(err) => Err(err),
        Fast::OneFailed => write_careful(&mut conn, batch).await,
    }
}

/// The outcome of an optimistic write.
enum Fast {
    Committed,
    /// The database failed: the whole batch fails.
    Failed(StoreError),
    /// Some command failed on its own; nothing was written.
    OneFailed,
}

async fn write_fast(conn: &mut SqliteConnection, batch: &mut [Command]) -> Fast {
    let what = "writing a batch";
    if batch
        .iter()
        .all(|c| matches!(c, Command::Append(_) | Command::CreateRun(_)))
    {
        return write_runs_fast(conn, batch).await;
    }
    let mut tx = match conn.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(err) => return Fast::Failed(store_error(what, err)),
    };
    // Appends never depend on a run created in the same batch (their ids are not known
    // before the commit), so all of them can go first, in the order received.
    let events: Vec<&DomainEvent> = batch.iter().flat_map(events_of).collect();
    let appended = match events.is_empty() {
        true => Ok(()),
        false => queries::append_events(&mut tx, &events).await,
    };
    let mut outcome = settle_fast(appended);
    for command in batch.iter_mut() {
        if outcome.is_some() {
            break;
        }
        match command {
            Command::CreateRun(request) => {
                let result = queries::create_run(&mut tx, &request.args).await;
                outcome = keep(&mut request.result, result);
            }
            Command::PutPipeline(request) => {
                let PipelineText { name, source, at } = &request.args;
                let result = queries::put_pipeline(&mut tx, name, source, *at).await;
                outcome = keep(&mut request.result, result);
            }
            Command::CreateToken(request) => {
                let result = tokens::create_token(&mut tx, &request.args).await;
                outcome = keep(&mut request.result, result);
            }
            Command::RevokeToken(request) => {
                let (id, at) = request.args;
                let result = tokens::revoke_token(&mut tx, id, at).await;
                outcome = keep(&mut request.result, result);
            }
            Command::PutSecret(request) => {
                let result = secrets::put_secret(&mut tx, &request.args).await;
                outcome = keep(&mut request.result, result);
            }
            Command::DeleteSecret(request) => {
                let (scope, name) = &request.args;
                let result = secrets::delete_secret(&mut tx, scope, name).await;
                outcome = keep(&mut request.result, result);
            }
            Command::Repo(request) => {
                let result = repos::write(&mut tx, &request.args).await;
                outcome = keep(&mut request.result, result);
            }
            Command::Agent(request) => {
                let result = agents::write(&mut tx, &request.args).await;
                outcome = keep(&mut request.result, result);
            }
            Command::Append(request) => request.result = Some(Ok(())),
        }
    }
    if let Some(outcome) = outcome {
        // Dropping the transaction would roll it back too, but later: the careful pass
        // needs the connection out of it now.
        if let Err(err) = tx.rollback().await {
            return Fast::Failed(store_error(what, err));
        }
        return outcome;
    }
    match tx.commit().await {
        Ok(()) => Fast::Committed,
        Err(err) => Fast::Failed(store_error(what, err)),
    }
}

/// The common batch, appends and new runs, written optimistically with `BEGIN IMMEDIATE` sent
/// with its first query and `COMMIT` with its last: all its events in one query, then two
/// queries per new run (see [`queries::create_run_framed`]). A batch of appends alone is one
/// round trip to SQLite's thread.
async fn write_runs_fast(conn: &mut SqliteConnection, batch: &mut [Command]) -> Fast {
    let mut creates = batch
        .iter()
        .filter(|c| matches!(c, Command::CreateRun(_)))
        .count();
    let mut frame = Frame {
        begin: true,
        commit: false,
    };
    let events: Vec<&DomainEvent> = batch.iter().flat_map(events_of).collect();
    let mut written = Ok(());
    if !events.is_empty() {
        frame.commit = creates == 0;
        written = queries::append_framed(conn, &events, frame).await;
        frame.begin = false;
    }
    drop(events);
    for command in batch.iter_mut() {
        if written.is_err() {
            break;
        }
        if let Command::CreateRun(request) = command {
            creates -= 1;
            frame.commit = creates == 0;
            match queries::create_run_framed(conn, &request.args, frame).await {
                Ok(record) => request.result = Some(Ok(record)),
                Err(err) => written = Err(err),
            }
            frame.begin = false;
        }
    }
    if written.is_err() {
        // Whatever failed (a query, or the arguments of one not sent), nothing is written.
        queries::rollback(conn).await;
    }
    match settle_fast(written) {
        Some(failed) => failed,
        None => {
            for command in batch.iter_mut() {
                if let Command::Append(request) = command {
                    request.result = Some(Ok(()));
                }
            }
            Fast::Committed
        }
    }
}

/// `None` while the batch goes on; how it ends otherwise.
fn settle_fast(result: Result<(), StoreError>) -> Option<Fast> {
    match result {
        Ok(()) => None,
        Err(err) if err.is_retryable() => Some(Fast::Failed(err)),
        Err(_) => Some(Fast::OneFailed),
    }
}

fn keep<T>(
    slot: &mut Option<Result<T, StoreError>>,
    result: Result<T, StoreError>,
) -> Option<Fast> {
    match result {
        Ok(value) => {
            *slot = Some(Ok(value));
            None
        }
        Err(err) => settle_fast(Err(err)),
    }
}

/// Writes each command of the batch in its own savepoint, in order.
async fn write_careful(
    conn: &mut SqliteConnection,
    batch: &mut [Command],
) -> Result<(), StoreError> {
    let what = "writing a batch";
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|err| store_error(what, err))?;
    for command in batch.iter_mut() {
        let mut savepoint = begin_savepoint(&mut tx).await?;
        match command {
            Command::Append(request) => {
                let events: Vec<&DomainEvent> = request.args.iter().collect();
                let result = queries::append_events(&mut savepoint, &events).await;
                request.result = Some(settle(savepoint, result).await?);
            }
            Command::CreateRun(request) => {
                let result = queries::create_run(&mut savepoint, &request.args).await;
                request.result = Some(settle(savepoint, result).await?);
            }
            Command::PutPipeline(request) => {
                let PipelineText { name, source, at } = &request.args;
                let result = queries::put_pipeline(&mut savepoint, name, source, *at).await;
                request.result = Some(settle(savepoint, result).await?);
            }
            Command::CreateToken(request) => {
                let result = tokens::create_token(&mut savepoint, &request.args).await;
                request.result = Some(settle(savepoint, result).await?);
            }
            Command::RevokeToken(request) => {
                let (id, at) = request.args;
                let result = tokens::revoke_token(&mut savepoint, id, at).await;
                request.result = Some(settle(savepoint, result).await?);
            }
            Command::PutSecret(request) => {
                let result = secrets::put_secret(&mut savepoint, &request.args).await;
                request.result = Some(settle(savepoint, result).await?);
            }
            Command::DeleteSecret(request) => {
                let (scope, name) = &request.args;
                let result = secrets::delete_secret(&mut savepoint, scope, name).await;
                request.result = Some(settle(savepoint, result).await?);
            }
            Command::Repo(request) => {
                let result = repos::write(&mut savepoint, &request.args).await;
                request.result = Some(settle(savepoint, result).await?);
            }
            Command::Agent(request) => {
                let result = agents::write(&mut savepoint, &request.args).await;
                request.result = Some(settle(savepoint, result).await?);
            }
        }
    }
    tx.commit().await.map_err(|err| store_error(what, err))
}

fn events_of(command: &Command) -> &[DomainEvent] {
    match command {
        Command::Append(request) => &request.args,
        _ => &[],
    }
}

async fn begin_savepoint<'t>(
    tx: &'t mut Transaction<'_, Sqlite>,
) -> Result<Transaction<'t, Sqlite>, StoreError> {
    Connection::begin(&mut **tx)
        .await
        .map_err(|err| store_error("starting a savepoint", err))
}

/// Keeps a unit's writes if it succeeded, undoes them if it failed for its own reasons; a
/// failure of the database (retryable) is returned as the batch's.
async fn settle<T>(
    savepoint: Transaction<'_, Sqlite>,
    result: Result<T, StoreError>,
) -> Result<Result<T, StoreError>, StoreError> {
    match result {
        Ok(value) => {
            savepoint
                .commit()
                .await
                .map_err(|err| store_error("releasing a savepoint", err))?;
            Ok(Ok(value))
        }
        Err(err) if err.is_retryable() => Err(err),
        Err(err) => {
            savepoint
                .rollback()
                .await
                .map_err(|err| store_error("rolling back a savepoint", err))?;
            Ok(Err(err))
        }
    }
}
