//! # The stores' conformance suite
//!
//! One suite, the same test code, run against every store: each test is a function of a
//! [`Backend`], and [`conformance!`] makes a `#[tokio::test]` of it for SQLite (files in a
//! temporary directory, [`crate::logs::FileLogStore`] for logs) and for PostgreSQL (a database
//! of its own in the test binary's throwaway cluster, [`crate::postgres::PgLogStore`]).
//!
//! Where to start reading: this file (the backends, [`Place`], the helpers), then `record.rs`
//! (pipelines, runs, events, projections, transactions, concurrent writers, reopening),
//! `lists.rs` (the API's lists and tokens), `access.rs` (agents, leases, repositories,
//! deliveries, ticks), `secrets.rs` (sealed secrets) and `logs.rs` (job logs).
//!
//! A PostgreSQL test that cannot start PostgreSQL fails with the reason; it never skips.

mod access;
mod lists;
mod logs;
mod record;
mod secrets;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hodei_domain::ids::{JobId, RunId, Timestamp, WorkerId};
use hodei_domain::plan::RunInputs;
use hodei_domain::ports::{LogStore, NewRun, RunRecord};
use hodei_domain::state::{Attempt, DomainEvent};

use crate::logs::{FileLogStore, LogOptions};
use crate::postgres::PgStore;
use crate::postgres::cluster::TestCluster;
use crate::sqlite::SqliteStore;

/// Every port a store implements, as one object.
pub(crate) use crate::ServerStore as AnyStore;

/// A kind of store under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// A new, empty database of a backend, that can be opened (again) as often as a test likes.
pub(crate) struct Place {
    backend: Backend,
    /// SQLite: the directory of the database file and the logs.
    dir: tempfile::TempDir,
    /// PostgreSQL: the database's URL.
    url: Option<String>,
}

impl Backend {
    /// A new, empty database.
    pub(crate) fn place(self) -> Place {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestCluster::shared().database()),
        };
        Place {
            backend: self,
            dir,
            url,
        }
    }

    /// A store on a new, empty database: in memory for SQLite, as the actors' tests use it.
    pub(crate) async fn store(self) -> Arc<dyn AnyStore> {
        match self {
            Backend::Sqlite => Arc::new(
                within(SqliteStore::memory())
                    .await
                    .expect("an in-memory SQLite store opens"),
            ),
            Backend::Postgres => self.place().open().await,
        }
    }
}

impl Place {
    fn db_path(&self) -> PathBuf {
        self.dir.path().join("hodei.db")
    }

    /// Opens the database, as a server starting would.
    pub(crate) async fn open(&self) -> Arc<dyn AnyStore> {
        match self.backend {
            Backend::Sqlite => Arc::new(
                within(SqliteStore::open(&self.db_path()))
                    .await
                    .expect("the SQLite store opens"),
            ),
            Backend::Postgres => Arc::new(self.open_postgres().await),
        }
    }

    async fn open_postgres(&self) -> PgStore {
        let url = self.url.as_deref().expect("a PostgreSQL place has a URL");
        within(PgStore::open(url))
            .await
            .expect("the PostgreSQL store opens")
    }

    /// Opens the logs of the database: files beside an SQLite database (small chunks, so that
    /// reads cross chunk boundaries), the `log_chunks` table of a PostgreSQL one.
    pub(crate) async fn open_logs(&self) -> Arc<dyn LogStore> {
        match self.backend {
            Backend::Sqlite => {
                let options = LogOptions {
                    writers: 2,
                    chunk_size: 64,
                    ..LogOptions::default()
                };
                Arc::new(
                    FileLogStore::open_with(&self.dir.path().join("logs"), options)
                        .expect("the log directory opens"),
                )
            }
            Backend::Postgres => Arc::new(self.open_postgres().await.logs()),
        }
    }
}

/// Makes a `#[tokio::test]` of each named test function for each backend, in the modules
/// `sqlite` and `postgres`.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::conformance::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::conformance::Backend::Postgres).await
                }
            )*
        }
    };
}
pub(crate) use conformance;

/// Fails the test instead of hanging it.
pub(crate) async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("the store did not answer within 30 s: likely deadlocked")
}

pub(crate) const WEB: &str = "name: web\njobs:\n  build:\n    steps: [{ run: make }]\n";

pub(crate) fn a(n: u32) -> Attempt {
    Attempt::new(n).expect("attempts are numbered from 1")
}

pub(crate) fn worker(name: &str) -> WorkerId {
    WorkerId(name.into())
}

pub(crate) fn inputs() -> RunInputs {
    RunInputs {
        branch: "main".into(),
        event: "manual".into(),
        params: [("TARGET".to_owned(), "release".to_owned())].into(),
        ..RunInputs::default()
    }
}

/// A run of pipeline `web` with `jobs`, created at `at`.
pub(crate) async fn new_run(store: &dyn AnyStore, jobs: &[&str], at: i64) -> RunRecord {
    let pipeline = within(store.put_pipeline("web", WEB, Timestamp(0)))
        .await
        .expect("pipeline stored");
    within(store.create_run(NewRun {
        pipeline: "web".into(),
        version: pipeline.version,
        inputs: inputs(),
        jobs: jobs.iter().map(|j| (*j).to_owned()).collect(),
        at: Timestamp(at),
        opening: None,
    }))
    .await
    .expect("run created")
}

/// The events of one successful attempt of a job with one step, from queued on.
pub(crate) fn lifecycle(run: RunId, job: JobId, attempt: Attempt, at: i64) -> Vec<DomainEvent> {
    let w = worker("local");
    vec![
        DomainEvent::JobQueued {
            run,
            job,
            attempt,
            at: Timestamp(at),
        },
        DomainEvent::JobPlaced {
            run,
            job,
            attempt,
            worker: w.clone(),
            at: Timestamp(at + 1),
        },
        DomainEvent::JobStarted {
            run,
            job,
            attempt,
            worker: w,
            at: Timestamp(at + 2),
        },
        DomainEvent::StepStarted {
            run,
            job,
            job_attempt: attempt,
            step: 0,
            attempt: a(1),
            log_offset: Some(7),
            at: Timestamp(at + 3),
        },
        DomainEvent::StepSucceeded {
            run,
            job,
            job_attempt: attempt,
            step: 0,
            attempt: a(1),
            at: Timestamp(at + 4),
        },
        DomainEvent::JobSucceeded {
            run,
            job,
            attempt,
            at: Timestamp(at + 5),
        },
    ]
}

pub(crate) async fn reload(store: &dyn AnyStore, id: RunId) -> RunRecord {
    within(store.run(id))
        .await
        .expect("run readable")
        .expect("run exists")
}
