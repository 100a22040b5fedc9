//! # The SQLite store
//!
//! [`SqliteStore`] implements the [`Store`] port on an embedded SQLite database (a file in WAL
//! mode, or in memory for `hodei run` and tests), with sqlx.
//!
//! Where to start reading: this file (the API and its guarantees), then `writer.rs` (group
//! commit: how concurrent appends become one transaction), `projections.rs` (what each event
//! does to the `runs`, `jobs` and `steps` tables, and back), `queries.rs` (the SQL), `schema.rs`
//! (opening, pools, migrations; the tables themselves are in `adapters/migrations/`),
//! `lists.rs` (the API's keyset-paged lists) and `tokens.rs` (the API's tokens, the
//! [`TokenStore`] port).
//!
//! ## Guarantees
//! - [`Store::append`] writes the events and their projections in one transaction, and returns
//!   after it committed. Concurrent calls are committed together (group commit, up to 1,000
//!   events a transaction) and each caller hears only of its own failure.
//! - Events are numbered in the order they were appended: a caller's in the order given, and
//!   callers in the order the writer received them.
//! - Reads ([`Store::run`]) see one committed state: a run, its jobs and steps, never half a
//!   transaction. A read issued after a write returned sees that write.
//! - Durability: `synchronous=NORMAL` in WAL mode. A committed write survives a crash of Hodei;
//!   a power loss or OS crash may lose the last transactions (never corrupt the database).
//!
//! ## Assumptions
//! - The store is opened inside a Tokio runtime (actix's is one) that outlives it: the writer
//!   is a task on it.
//! - One Hodei process writes a database file at a time. Other processes may read it.
//!
//! ## Errors
//! [`StoreError::Unavailable`] when the database is busy, locked, unreachable or full, or the
//! writer task is gone: retry later. [`StoreError::NotFound`] for an event about a run or job
//! that does not exist, or a run of an unknown pipeline version. [`StoreError::Corrupt`] when a
//! stored row cannot be read back as the domain's types (what and why).

mod agents;
pub(crate) mod error;
mod lists;
pub(crate) mod projections;
pub(crate) mod queries;
mod repos;
mod schema;
mod secrets;
mod tokens;
mod writer;

pub use schema::commit_latency;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use hodei_domain::ids::{JobId, RunId, Timestamp};
use hodei_domain::ports::Cause;
use hodei_domain::ports::{
    AgentRecord, AgentStore, AgentTokenRecord, Fenced, Lease, NewAgent, NewAgentToken, Registration,
};
use hodei_domain::ports::{
    BoxFuture, NewRun, NewToken, PipelineSummary, PipelineVersion, RunFilter, RunRecord,
    RunSummary, SecretInfo, SecretScope, Store, StoreError, TokenRecord, TokenStore, VersionStamp,
};
use hodei_domain::ports::{Claim, RepoStore, RepositoryRecord, TickStore};
use hodei_domain::state::{Attempt, DomainEvent};
use sqlx::{Connection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use self::agents::{AgentWrite, AgentWritten};
use self::error::store_error;
use self::repos::{RepoWrite, RepoWritten};
use self::writer::{Command, PipelineText, Request};
use crate::secrets::{Sealed, SealedRows, SealedSecret};

/// The durable record of Hodei on SQLite. Cheap to clone: clones share the database and its
/// writer, which stops when the last clone is dropped (after writing what was queued).
#[derive(Clone)]
pub struct SqliteStore {
    writes: mpsc::Sender<Command>,
    reads: SqlitePool,
    instance_id: Arc<str>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the database file at `path`, creating it (and its directory) if missing, in WAL
    /// mode with `synchronous=NORMAL`, foreign keys on and a busy timeout of 5 s, and migrates
    /// it to the latest schema.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the file cannot be created or opened or is locked, or
    /// there is no Tokio runtime;
    /// [`StoreError::Corrupt`] if it is not a Hodei database this version can migrate.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        runtime()?;
        let pools = schema::open_file(path).await?;
        let identity = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let instance_id = schema::instance_id(&pools.write, &identity.to_string_lossy()).await?;
        Ok(SqliteStore::start(pools, instance_id))
    }

    /// A new, empty database in memory, gone when the store is dropped.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if SQLite cannot allocate it, or there is no Tokio runtime.
    pub async fn memory() -> Result<SqliteStore, StoreError> {
        runtime()?;
        let pools = schema::open_memory().await?;
        let instance_id = schema::instance_id(&pools.write, &schema::memory_identity()).await?;
        Ok(SqliteStore::start(pools, instance_id))
    }

    fn start(pools: schema::Pools, instance_id: String) -> SqliteStore {
        let committed = Arc::new(tokio::sync::Notify::new());
        let writes = writer::spawn(pools.write, committed.clone());
        if let Some(checkpoints) = pools.checkpoints {
            tokio::spawn(schema::checkpoints(
                checkpoints,
                writes.downgrade(),
                committed,
            ));
        }
        SqliteStore {
            writes,
            reads: pools.read,
            instance_id: instance_id.into(),
        }
    }

    /// The identity of this database, fixed when it was created and the same at every later
    /// opening: the local provider marks what it starts with it, to recognise its own orphans
    /// after a restart. Made of the creation time and a hash of the path, no randomness.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Sends a write to the writer task and waits for its answer, after the commit.
    async fn write<A, T>(
        &self,
        args: A,
        command: fn(Request<A, T>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(command(Request::new(args, reply)))
            .await
            .map_err(|_| writer_stopped())?;
        answer.await.map_err(|_| writer_stopped())?
    }
}

/// The writer is a Tokio task: without a runtime there is no store (rather than a panic).
fn runtime() -> Result<(), StoreError> {
    tokio::runtime::Handle::try_current()
        .map(drop)
        .map_err(|err| StoreError::Unavailable {
            reason: format!("the store needs a Tokio runtime: {err}"),
            cause: Cause::of(err),
        })
}

fn writer_stopped() -> StoreError {
    StoreError::Unavailable {
        reason: "the store's writer has stopped".into(),
        cause: None,
    }
}

impl Store for SqliteStore {
    fn put_pipeline<'a>(
        &'a self,
        name: &'a str,
        source: &'a str,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<PipelineVersion, StoreError>> {
        let text = PipelineText {
            name: name.to_owned(),
            source: source.to_owned(),
            at,
        };
        Box::pin(self.write(text, Command::PutPipeline))
    }

    fn pipeline<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PipelineVersion>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.reads.acquire().await.map_err(read_error)?;
            queries::pipeline(&mut conn, name).await
        })
    }

    fn create_run(&self, run: NewRun) -> BoxFuture<'_, Result<RunRecord, StoreError>> {
        Box::pin(self.write(run, |request| Command::CreateRun(Box::new(request))))
    }

    fn append(&self, events: Vec<DomainEvent>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if events.is_empty() {
                return Ok(());
            }
            self.write(events, Command::Append).await
        })
    }

    fn run(&self, id: RunId) -> BoxFuture<'_, Result<Option<RunRecord>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.reads.acquire().await.map_err(read_error)?;
            // One read transaction: the run, its jobs and steps from one snapshot.
            let mut tx = conn.begin().await.map_err(read_error)?;
            let record = queries::run(&mut tx, id).await?;
            tx.commit().await.map_err(read_error)?;
            Ok(record)
        })
    }

    fn unfinished_runs(&self) -> BoxFuture<'_, Result<Vec<RunId>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.reads.acquire().await.map_err(read_error)?;
            queries::unfinished_runs(&mut conn).await
        })
    }

    fn events(
        &self,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<(u64, DomainEvent)>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.reads.acquire().await.map_err(read_error)?;
            queries::events(&mut conn, after, limit).await
        })
    }

    fn pipelines<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<PipelineSummary>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.reads.acquire().await.map_err(read_error)?;
            lists::pipelines(&mut conn, after, limit).await
        })
    }

    fn pipeline_version<'a>(
        &'a self,
        name: &'a str,
        version: u32,
    ) -> BoxFuture<'a, Result<Option<PipelineVersion>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.reads.acquire().await.map_err(read_error)?;
            lists::pipeline_version(&mut conn, name, version).await
        })
    }

    fn pipeline_versions<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Vec<VersionStamp>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.reads.acquire().await.map_err(read_error)?;
            lists::pipeline_versions(&mut conn, name).await
        })
    }

    fn runs<'a>(
        &'a self,
        filter: &'a RunFilter,
        before: Option<RunId>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<RunSummary>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.reads.acquire().await.map_err(read_error)?;
            lists::runs(&mut conn, filter, before, limit).await
        })
    }

    fn job_run(&self, job: JobId) -> BoxFuture<'_, Result<Option<RunId>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.reads.acquire().await.map_err(read_error)?;
            lists::job_run(&mut conn, job).await
        })
    }

    fn run_events(
        &self,
        run: RunId,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<(u64, DomainEvent)>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.reads.acquire().await.map_err(read_error)?;
            lists::run_events(&mut conn, run, after, limit).await
        })
    }
}

impl TokenStore for SqliteStore {
    fn create_token(&self, token: NewToken) -> BoxFuture<'_, Result<TokenRecord, StoreError>> {
        Box::pin(self.write(token, Command::CreateToken))
    }

    fn token_by_digest<'a>(
        &'a self,
        digest: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<Option<TokenRecord>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.reads.acquire().await.map_err(read_error)?;
            tokens::token_by_digest(&mut conn, digest).await
        })
    }

    fn tokens(&self) -> BoxFuture<'_, Result<Vec<TokenRecord>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.reads.acquire().await.map_err(read_error)?;
            tokens::tokens(&mut conn).await
        })
    }

    fn revoke_token(&self, id: u64, at: Timestamp) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.write((id, at), Command::RevokeToken))
    }

    fn any_token(&self) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut conn = self.reads.acquire().await.map_err(read_error)?;
            tokens::any_token(&mut conn).await
        })
    }
}

/// Stored secrets, as sealed bytes: [`crate::secrets::SealedSecrets`] seals and opens them.
impl SealedRows for SqliteStore {
    fn put_sealed(
        &self,
        secret: SealedSecret,
    ) -> BoxFuture<'_, Result<(SecretInfo, bool), StoreError>> {
        Box::pin(self.write(secret, Command::PutSecret))
    }

    fn sealed<'a>(
        &'a self,
        scope: &'a SecretScope,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Sealed>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.reads.acquire().await.map_err(read_error)?;
            secrets::sealed(&mut conn, scope, name).await
        })
    }

    fn secret_list<'a>(
        &'a self,
        scope: Option<&'a SecretScope>,
    ) -> BoxFuture<'a, Result<Vec<SecretInfo>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.reads.acquire().await.map_err(read_error)?;
            secrets::secrets(&mut conn, scope).await
        })
    }

    fn delete_sealed<'a>(
        &'a self,
        scope: &'a SecretScope,
        name: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.write((scope.clone(), name.to_owned()), Command::DeleteSecret))
    }
}

impl RepoStore for SqliteStore {
    fn put_repository<'a>(
        &'a self,
        repo: &'a RepositoryRecord,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            match self
                .write(RepoWrite::Put(repo.clone()), Command::Repo)
                .await?
            {
                RepoWritten::Done(new) => Ok(new),
                RepoWritten::Claimed(_) => Err(unexpected_answer()),
            }
        })
    }

    fn repository<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<RepositoryRecord>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.reads.acquire().await.map_err(read_error)?;
            repos::repository(&mut conn, name).await
        })
    }

    fn repositories(&self) -> BoxFuture<'_, Result<Vec<RepositoryRecord>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.reads.acquire().await.map_err(read_error)?;
            repos::repositories(&mut conn).await
        })
    }

    fn delete_repository<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            match self
                .write(RepoWrite::Delete(name.to_owned()), Command::Repo)
                .await?
            {
                RepoWritten::Done(done) => Ok(done),
                RepoWritten::Claimed(_) => Err(unexpected_answer()),
            }
        })
    }

    fn claim_delivery<'a>(
        &'a self,
        repo: &'a str,
        id: &'a str,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        Box::pin(async move {
            let claim = RepoWrite::Claim {
                repo: repo.to_owned(),
                id: id.to_owned(),
                at,
            };
            match self.write(claim, Command::Repo).await? {
                RepoWritten::Claimed(claim) => Ok(claim),
                RepoWritten::Done(_) => Err(unexpected_answer()),
            }
        })
    }

    fn delivery_started<'a>(
        &'a self,
        repo: &'a str,
        id: &'a str,
        run: RunId,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let started = RepoWrite::Started {
                repo: repo.to_owned(),
                id: id.to_owned(),
                run,
            };
            self.write(started, Command::Repo).await.map(drop)
        })
    }
}

impl TickStore for SqliteStore {
    fn claim_tick<'a>(
        &'a self,
        pipeline: &'a str,
        entry: &'a str,
        tick: Timestamp,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let claim = RepoWrite::ClaimTick {
                pipeline: pipeline.to_owned(),
                entry: entry.to_owned(),
                tick,
                at,
            };
            match self.write(claim, Command::Repo).await? {
                RepoWritten::Done(new) => Ok(new),
                RepoWritten::Claimed(_) => Err(unexpected_answer()),
            }
        })
    }

    fn last_tick<'a>(
        &'a self,
        pipeline: &'a str,
        entry: &'a str,
    ) -> BoxFuture<'a, Result<Option<Timestamp>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.reads.acquire().await.map_err(read_error)?;
            repos::last_tick(&mut conn, pipeline, entry).await
        })
    }
}

fn unexpected_answer() -> StoreError {
    StoreError::Corrupt {
        what: "a repository write".into(),
        reason: "the writer answered another kind of write".into(),
        cause: None,
    }
}

fn read_error(err: sqlx::Error) -> StoreError {
    store_error("reading", err)
}

impl SqliteStore {
    async fn agent_write(&self, write: AgentWrite) -> Result<AgentWritten, StoreError> {
        self.write(write, Command::Agent).await
    }
}

impl AgentStore for SqliteStore {
    fn create_agent_token(
        &self,
        token: NewAgentToken,
    ) -> BoxFuture<'_, Result<AgentTokenRecord, StoreError>> {
        Box::pin(async move {
            match self.agent_write(AgentWrite::CreateToken(token)).await? {
                AgentWritten::Token(token) => Ok(token),
                _ => Err(unexpected_answer()),
            }
        })
    }

    fn agent_tokens(&self) -> BoxFuture<'_, Result<Vec<AgentTokenRecord>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.reads.acquire().await.map_err(read_error)?;
            agents::agent_tokens(&mut conn).await
        })
    }

    fn revoke_agent_token(
        &self,
        id: u64,
        at: Timestamp,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            match self.agent_write(AgentWrite::RevokeToken(id, at)).await? {
                AgentWritten::Done(done) => Ok(done),
                _ => Err(unexpected_answer()),
            }
        })
    }

    fn register_agent(
        &self,
        agent: NewAgent,
    ) -> BoxFuture<'_, Result<(Registration, Option<AgentRecord>), StoreError>> {
        Box::pin(async move {
            match self.agent_write(AgentWrite::Register(agent)).await? {
                AgentWritten::Registered(registration, agent) => Ok((registration, agent)),
                _ => Err(unexpected_answer()),
            }
        })
    }

    fn agent_by_digest<'a>(
        &'a self,
        digest: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<Option<AgentRecord>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.reads.acquire().await.map_err(read_error)?;
            agents::agent_by_digest(&mut conn, digest).await
        })
    }

    fn agents(&self) -> BoxFuture<'_, Result<Vec<AgentRecord>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.reads.acquire().await.map_err(read_error)?;
            agents::agents(&mut conn).await
        })
    }

    fn delete_agent<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            match self
                .agent_write(AgentWrite::Delete(name.to_owned()))
                .await?
            {
                AgentWritten::Done(done) => Ok(done),
                _ => Err(unexpected_answer()),
            }
        })
    }

    fn claim(
        &self,
        job: JobId,
        run: RunId,
        attempt: Attempt,
        agent: String,
        log_base: u64,
        token: [u8; 32],
    ) -> BoxFuture<'_, Result<Lease, StoreError>> {
        Box::pin(async move {
            let claim = AgentWrite::Claim {
                job,
                run,
                attempt,
                agent,
                log_base,
                token,
            };
            match self.agent_write(claim).await? {
                AgentWritten::Claimed(lease) => Ok(lease),
                _ => Err(unexpected_answer()),
            }
        })
    }

    fn leases(&self) -> BoxFuture<'_, Result<Vec<Lease>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.reads.acquire().await.map_err(read_error)?;
            agents::leases(&mut conn).await
        })
    }

    fn report(
        &self,
        job: JobId,
        epoch: u64,
        seq: u64,
        events: Vec<DomainEvent>,
        end: bool,
    ) -> BoxFuture<'_, Result<Fenced, StoreError>> {
        Box::pin(async move {
            let report = AgentWrite::Report {
                job,
                epoch,
                seq,
                events,
                end,
            };
            match self.agent_write(report).await? {
                AgentWritten::Reported(fenced) => Ok(fenced),
                _ => Err(unexpected_answer()),
            }
        })
    }

    fn end_lease(
        &self,
        job: JobId,
        epoch: u64,
        events: Vec<DomainEvent>,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            match self
                .agent_write(AgentWrite::EndLease { job, epoch, events })
                .await?
            {
                AgentWritten::Done(done) => Ok(done),
                _ => Err(unexpected_answer()),
            }
        })
    }
}
