//! # The PostgreSQL store
//!
//! [`PgStore`] implements the same ports as [`crate::sqlite::SqliteStore`] — [`Store`],
//! [`TokenStore`], [`AgentStore`], [`RepoStore`], [`TickStore`] and the rows of sealed secrets —
//! on a PostgreSQL database, with sqlx; [`PgLogStore`] keeps the logs of jobs in the same
//! database, so that any server using it can read any job's log. One conformance suite
//! (`adapters/src/conformance/`) runs the same tests against both stores.
//!
//! Where to start reading: this file (opening, the store's own runtime, the ports), then
//! `queries.rs` (the record and the lists), `access.rs` (tokens, secrets, repositories, ticks,
//! agents), `logs.rs` (the logs), `leader.rs` (the leadership of replicas and its fencing), `schema.rs` (URL, migrations, schema check; the tables are in
//! `adapters/migrations-postgres/`), `cluster.rs` (throwaway clusters for tests).
//!
//! ## Guarantees
//! - [`Store::append`] writes the events and their projections in one transaction and returns
//!   after it committed; appends of concurrent callers are group-committed by one writer task
//!   (`writer.rs`). Events are numbered in commit order, without gaps, also across servers
//!   sharing the database (a transaction-scoped advisory lock around the numbering).
//! - Every other write is one transaction; [`Store::run`] reads in one repeatable-read
//!   snapshot.
//! - Durability is PostgreSQL's: a write is durable when it returns (with the server's default
//!   `synchronous_commit = on`).
//!
//! ## Assumptions
//! - The store runs its database work on a small runtime of its own (two threads), whatever
//!   runtime its callers use: connections live and die with it, so callers on the actix
//!   arbiters, the HTTP workers and tests may come and go.
//!
//! ## Errors
//! [`StoreError::Unavailable`] when the server cannot be reached, refuses the credentials, is
//! shutting down or out of connections: retry later. [`StoreError::NotFound`] for an event
//! about a run or job that does not exist. [`StoreError::Corrupt`] for rows that cannot be read
//! back, and for a schema newer than this binary's.

mod access;
pub mod cluster;
pub mod copy;
#[cfg(test)]
mod copy_tests;
mod error;
mod leader;
mod logs;
mod queries;
pub(crate) mod schema;
#[cfg(test)]
mod tests;
mod writer;

use std::future::Future;
use std::sync::Arc;

use hodei_domain::ids::{JobId, RunId, Timestamp};
use hodei_domain::ports::{
    AgentRecord, AgentStore, AgentTokenRecord, BoxFuture, Claim, Fenced, Lease, NewAgent,
    NewAgentToken, NewRun, NewToken, PipelineSummary, PipelineVersion, Registration, RepoStore,
    RepositoryRecord, RunFilter, RunRecord, RunSummary, SecretInfo, SecretScope, Store, StoreError,
    TickStore, TokenRecord, TokenStore, VersionStamp,
};
use hodei_domain::state::{Attempt, DomainEvent};
use sqlx::{Connection, PgConnection, PgPool};

pub use self::leader::{Lead, Renewal};
pub use self::logs::{NOTIFY_CHANNEL, PgLogStore};
pub use self::schema::{is_postgres_url, redact};

use self::error::store_error;
use crate::secrets::{Sealed, SealedRows, SealedSecret};

/// The most jobs remembered as having an empty log.
const MAX_FRESH: usize = 200_000;

/// The durable record of Hodei on PostgreSQL. Cheap to clone: clones share the pool and the
/// store's runtime, which stops when the last clone (and the last [`PgLogStore`]) is dropped.
#[derive(Clone)]
pub struct PgStore {
    shared: Arc<Shared>,
}

/// What the clones of a store share.
struct Shared {
    pool: PgPool,
    runtime: Runtime,
    /// What every write checks once this store writes for the leader of replicas.
    fence: Arc<leader::Fence>,
    /// The task that group-commits appended events.
    writer: writer::Writer,
    /// Jobs this store created whose logs have not been used yet: their logs are empty, so
    /// the log store need not ask the database for their length.
    fresh: std::sync::Mutex<std::collections::HashSet<JobId>>,
    instance_id: String,
    /// The URL without its password, for messages.
    shown: String,
}

/// The store's own Tokio runtime; shut down without blocking when dropped, so that a store can
/// be dropped anywhere (also inside another runtime).
struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    fn new() -> Result<Runtime, StoreError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hodei-postgres")
            .enable_all()
            .build()
            .map(|runtime| Runtime(Some(runtime)))
            .map_err(|err| StoreError::Unavailable {
                reason: format!("cannot start the PostgreSQL store's threads: {err}"),
                cause: hodei_domain::ports::Cause::of(err),
            })
    }

    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(tokio::runtime::Runtime::handle)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the pool says goodbye to the server; it needs the runtime, which is still
        // here (fields drop after this).
        if let Some(handle) = self.runtime.handle() {
            let pool = self.pool.clone();
            let (done, wait) = std::sync::mpsc::channel();
            handle.spawn(async move {
                pool.close().await;
                let _ = done.send(());
            });
            let _ = wait.recv_timeout(std::time::Duration::from_secs(5));
        }
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.shared.shown)
            .field("instance_id", &self.shared.instance_id)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, with
    /// the usual parameters such as `sslmode`), checks that its schema is not newer than this
    /// binary's, and migrates it to the latest schema.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the server cannot be reached or refuses the credentials
    /// (the message names the URL without its password); [`StoreError::Corrupt`] if the schema
    /// is newer than this binary's or cannot be migrated.
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        let runtime = Runtime::new()?;
        let shown = redact(url);
        let handle = runtime.handle().cloned().ok_or_else(stopped)?;
        let owned = url.to_owned();
        let opened = handle
            .spawn(async move {
                let pool = schema::open(&owned).await?;
                let instance_id = schema::instance_id(&pool).await?;
                Ok::<_, StoreError>((pool, instance_id))
            })
            .await
            .map_err(|_| stopped())??;
        let (pool, instance_id) = opened;
        let fence = Arc::<leader::Fence>::default();
        let writer = writer::Writer::spawn(&handle, pool.clone(), fence.clone());
        Ok(PgStore {
            shared: Arc::new(Shared {
                pool,
                runtime,
                fence,
                writer,
                fresh: std::sync::Mutex::default(),
                instance_id,
                shown,
            }),
        })
    }

    /// The identity of this database, fixed by the first Hodei that opened it.
    pub fn instance_id(&self) -> &str {
        &self.shared.instance_id
    }

    /// The database's URL without its password.
    pub fn shown_url(&self) -> &str {
        &self.shared.shown
    }

    /// The logs of jobs in this database, on this store's pool and runtime.
    pub fn logs(&self) -> PgLogStore {
        PgLogStore::new(self.clone())
    }

    /// Notes that the logs of `jobs`, just created, are empty.
    fn remember_fresh(&self, jobs: impl Iterator<Item = JobId>) {
        let mut fresh = self
            .shared
            .fresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if fresh.len() >= MAX_FRESH {
            // Jobs that never logged (skipped, cancelled): their logs' lengths will be asked.
            fresh.clear();
        }
        fresh.extend(jobs);
    }

    /// Whether `job`'s log is known to be empty (a job this store created, whose log was not
    /// used yet); forgets it.
    pub(super) fn take_fresh(&self, job: JobId) -> bool {
        self.shared
            .fresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&job)
    }

    /// Runs `work` on the store's runtime with a connection of the pool.
    fn with_conn<T, W>(&self, work: W) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        W: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        let pool = self.shared.pool.clone();
        self.spawn(async move {
            let mut conn = pool
                .acquire()
                .await
                .map_err(|err| store_error("reading", err))?;
            work(&mut conn).await
        })
    }

    /// Runs `work` in one transaction on the store's runtime: committed if it succeeds, rolled
    /// back otherwise.
    fn in_transaction<T, W>(&self, work: W) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        W: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        let pool = self.shared.pool.clone();
        let fence = self.shared.fence.clone();
        self.spawn(async move {
            let what = "writing";
            let mut tx = pool.begin().await.map_err(|err| store_error(what, err))?;
            fence.check(&mut tx).await?;
            let value = work(&mut tx).await?;
            tx.commit().await.map_err(|err| store_error(what, err))?;
            Ok(value)
        })
    }

    /// Runs a future on the store's runtime and hands its result back to the caller's.
    fn spawn<T, F>(&self, future: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let handle = self.shared.runtime.handle().cloned();
        Box::pin(async move {
            let handle = handle.ok_or_else(stopped)?;
            handle.spawn(future).await.map_err(|_| stopped())?
        })
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable {
        reason: "the PostgreSQL store has stopped".into(),
        cause: None,
    }
}

impl Store for PgStore {
    fn put_pipeline<'a>(
        &'a self,
        name: &'a str,
        source: &'a str,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<PipelineVersion, StoreError>> {
        let (name, source) = (name.to_owned(), source.to_owned());
        self.in_transaction(move |c| {
            Box::pin(async move { queries::put_pipeline(c, &name, &source, at).await })
        })
    }

    fn pipeline<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PipelineVersion>, StoreError>> {
        let name = name.to_owned();
        self.with_conn(move |c| Box::pin(async move { queries::pipeline(c, &name).await }))
    }

    fn create_run(&self, run: NewRun) -> BoxFuture<'_, Result<RunRecord, StoreError>> {
        let created = self
            .in_transaction(move |c| Box::pin(async move { queries::create_run(c, &run).await }));
        Box::pin(async move {
            let record = created.await?;
            self.remember_fresh(record.jobs.iter().map(|job| job.id));
            Ok(record)
        })
    }

    fn append(&self, events: Vec<DomainEvent>) -> BoxFuture<'_, Result<(), StoreError>> {
        let writer = self.shared.writer.clone();
        Box::pin(async move {
            if events.is_empty() {
                return Ok(());
            }
            writer.append(events).await
        })
    }

    fn run(&self, id: RunId) -> BoxFuture<'_, Result<Option<RunRecord>, StoreError>> {
        let pool = self.shared.pool.clone();
        self.spawn(async move {
            let what = id.to_string();
            let mut conn = pool
                .acquire()
                .await
                .map_err(|err| store_error(&what, err))?;
            // One snapshot: the run, its jobs and steps as of one commit.
            let mut tx = conn
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(|err| store_error(&what, err))?;
            let record = queries::run(&mut tx, id).await?;
            tx.commit().await.map_err(|err| store_error(&what, err))?;
            Ok(record)
        })
    }

    fn unfinished_runs(&self) -> BoxFuture<'_, Result<Vec<RunId>, StoreError>> {
        self.with_conn(|c| Box::pin(queries::unfinished_runs(c)))
    }

    fn events(
        &self,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<(u64, DomainEvent)>, StoreError>> {
        self.with_conn(move |c| Box::pin(queries::events(c, None, after, limit)))
    }

    fn pipelines<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<PipelineSummary>, StoreError>> {
        let after = after.map(str::to_owned);
        self.with_conn(move |c| {
            Box::pin(async move { queries::pipelines(c, after.as_deref(), limit).await })
        })
    }

    fn pipeline_version<'a>(
        &'a self,
        name: &'a str,
        version: u32,
    ) -> BoxFuture<'a, Result<Option<PipelineVersion>, StoreError>> {
        let name = name.to_owned();
        self.with_conn(move |c| {
            Box::pin(async move { queries::pipeline_version(c, &name, version).await })
        })
    }

    fn pipeline_versions<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Vec<VersionStamp>, StoreError>> {
        let name = name.to_owned();
        self.with_conn(move |c| Box::pin(async move { queries::pipeline_versions(c, &name).await }))
    }

    fn runs<'a>(
        &'a self,
        filter: &'a RunFilter,
        before: Option<RunId>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<RunSummary>, StoreError>> {
        let filter = filter.clone();
        self.with_conn(move |c| {
            Box::pin(async move { queries::runs(c, &filter, before, limit).await })
        })
    }

    fn job_run(&self, job: JobId) -> BoxFuture<'_, Result<Option<RunId>, StoreError>> {
        self.with_conn(move |c| Box::pin(queries::job_run(c, job)))
    }

    fn run_events(
        &self,
        run: RunId,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<(u64, DomainEvent)>, StoreError>> {
        self.with_conn(move |c| Box::pin(queries::events(c, Some(run), after, limit)))
    }
}

impl TokenStore for PgStore {
    fn create_token(&self, token: NewToken) -> BoxFuture<'_, Result<TokenRecord, StoreError>> {
        self.in_transaction(move |c| Box::pin(async move { access::create_token(c, &token).await }))
    }

    fn token_by_digest<'a>(
        &'a self,
        digest: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<Option<TokenRecord>, StoreError>> {
        let digest = *digest;
        self.with_conn(move |c| Box::pin(async move { access::token_by_digest(c, &digest).await }))
    }

    fn tokens(&self) -> BoxFuture<'_, Result<Vec<TokenRecord>, StoreError>> {
        self.with_conn(|c| Box::pin(access::tokens(c)))
    }

    fn revoke_token(&self, id: u64, at: Timestamp) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.in_transaction(move |c| Box::pin(access::revoke_token(c, id, at)))
    }

    fn any_token(&self) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.with_conn(|c| Box::pin(access::any_token(c)))
    }
}

impl SealedRows for PgStore {
    fn put_sealed(
        &self,
        secret: SealedSecret,
    ) -> BoxFuture<'_, Result<(SecretInfo, bool), StoreError>> {
        self.in_transaction(move |c| Box::pin(async move { access::put_secret(c, &secret).await }))
    }

    fn sealed<'a>(
        &'a self,
        scope: &'a SecretScope,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Sealed>, StoreError>> {
        let (scope, name) = (scope.clone(), name.to_owned());
        self.with_conn(move |c| Box::pin(async move { access::sealed(c, &scope, &name).await }))
    }

    fn secret_list<'a>(
        &'a self,
        scope: Option<&'a SecretScope>,
    ) -> BoxFuture<'a, Result<Vec<SecretInfo>, StoreError>> {
        let scope = scope.cloned();
        self.with_conn(move |c| Box::pin(async move { access::secrets(c, scope.as_ref()).await }))
    }

    fn delete_sealed<'a>(
        &'a self,
        scope: &'a SecretScope,
        name: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let (scope, name) = (scope.clone(), name.to_owned());
        self.in_transaction(move |c| {
            Box::pin(async move { access::delete_secret(c, &scope, &name).await })
        })
    }
}

impl RepoStore for PgStore {
    fn put_repository<'a>(
        &'a self,
        repo: &'a RepositoryRecord,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let repo = repo.clone();
        self.in_transaction(move |c| {
            Box::pin(async move { access::put_repository(c, &repo).await })
        })
    }

    fn repository<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<RepositoryRecord>, StoreError>> {
        let name = name.to_owned();
        self.with_conn(move |c| Box::pin(async move { access::repository(c, &name).await }))
    }

    fn repositories(&self) -> BoxFuture<'_, Result<Vec<RepositoryRecord>, StoreError>> {
        self.with_conn(|c| Box::pin(access::repositories(c)))
    }

    fn delete_repository<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        let name = name.to_owned();
        self.in_transaction(move |c| {
            Box::pin(async move { access::delete_repository(c, &name).await })
        })
    }

    fn claim_delivery<'a>(
        &'a self,
        repo: &'a str,
        id: &'a str,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        let (repo, id) = (repo.to_owned(), id.to_owned());
        self.in_transaction(move |c| {
            Box::pin(async move { access::claim_delivery(c, &repo, &id, at).await })
        })
    }

    fn delivery_started<'a>(
        &'a self,
        repo: &'a str,
        id: &'a str,
        run: RunId,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (repo, id) = (repo.to_owned(), id.to_owned());
        self.in_transaction(move |c| {
            Box::pin(async move { access::delivery_started(c, &repo, &id, run).await })
        })
    }
}

impl TickStore for PgStore {
    fn claim_tick<'a>(
        &'a self,
        pipeline: &'a str,
        entry: &'a str,
        tick: Timestamp,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let (pipeline, entry) = (pipeline.to_owned(), entry.to_owned());
        self.in_transaction(move |c| {
            Box::pin(async move { access::claim_tick(c, &pipeline, &entry, tick, at).await })
        })
    }

    fn last_tick<'a>(
        &'a self,
        pipeline: &'a str,
        entry: &'a str,
    ) -> BoxFuture<'a, Result<Option<Timestamp>, StoreError>> {
        let (pipeline, entry) = (pipeline.to_owned(), entry.to_owned());
        self.with_conn(move |c| {
            Box::pin(async move { access::last_tick(c, &pipeline, &entry).await })
        })
    }
}

impl AgentStore for PgStore {
    fn create_agent_token(
        &self,
        token: NewAgentToken,
    ) -> BoxFuture<'_, Result<AgentTokenRecord, StoreError>> {
        self.in_transaction(move |c| {
            Box::pin(async move { access::create_agent_token(c, &token).await })
        })
    }

    fn agent_tokens(&self) -> BoxFuture<'_, Result<Vec<AgentTokenRecord>, StoreError>> {
        self.with_conn(|c| Box::pin(access::agent_tokens(c)))
    }

    fn revoke_agent_token(
        &self,
        id: u64,
        at: Timestamp,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.in_transaction(move |c| Box::pin(access::revoke_agent_token(c, id, at)))
    }

    fn register_agent(
        &self,
        agent: NewAgent,
    ) -> BoxFuture<'_, Result<(Registration, Option<AgentRecord>), StoreError>> {
        self.in_transaction(move |c| {
            Box::pin(async move { access::register_agent(c, &agent).await })
        })
    }

    fn agent_by_digest<'a>(
        &'a self,
        digest: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<Option<AgentRecord>, StoreError>> {
        let digest = *digest;
        self.with_conn(move |c| Box::pin(async move { access::agent_by_digest(c, &digest).await }))
    }

    fn agents(&self) -> BoxFuture<'_, Result<Vec<AgentRecord>, StoreError>> {
        self.with_conn(|c| Box::pin(access::agents(c)))
    }

    fn delete_agent<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        let name = name.to_owned();
        self.in_transaction(move |c| Box::pin(async move { access::delete_agent(c, &name).await }))
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
        self.in_transaction(move |c| {
            Box::pin(
                async move { access::claim(c, job, run, attempt, &agent, log_base, &token).await },
            )
        })
    }

    fn leases(&self) -> BoxFuture<'_, Result<Vec<Lease>, StoreError>> {
        self.with_conn(|c| Box::pin(access::leases(c)))
    }

    fn report(
        &self,
        job: JobId,
        epoch: u64,
        seq: u64,
        events: Vec<DomainEvent>,
        end: bool,
    ) -> BoxFuture<'_, Result<Fenced, StoreError>> {
        self.in_transaction(move |c| {
            Box::pin(async move { access::report(c, job, epoch, seq, &events, end).await })
        })
    }

    fn end_lease(
        &self,
        job: JobId,
        epoch: u64,
        events: Vec<DomainEvent>,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.in_transaction(move |c| {
            Box::pin(async move { access::end_lease(c, job, epoch, &events).await })
        })
    }
}
