//! # hodei-adapters
//!
//! The outside world behind the ports of [`hodei_domain`]: the SQLite and PostgreSQL stores
//! (sqlx), the Docker provider (bollard), local processes, log files and the system clock.
//! Each adapter keeps its translation to the outside world a pure, table-tested function and the
//! code that talks to the daemon short.
//!
//! Only the binary chooses concrete adapters; the actors see them through the ports.
//!
//! Providers: [`local::LocalProvider`] runs steps as processes on this machine (start with
//! `local/mod.rs`); [`docker::DockerProvider`] runs the steps of jobs with an `image` in
//! containers on a Docker engine, with services, pull policies and re-attach after a restart
//! (start with `docker/mod.rs`, user docs in `docs/docker.md`); [`route::ByImage`] puts the
//! two behind one provider, by the job's `image`; [`fake::FakeProvider`] is the scripted test
//! double for actor tests and benchmarks (no processes). [`kube::KubernetesProvider`] runs a
//! job attempt as a pod, its steps run by Hodei's entrypoint inside it (`hodei pod-steps`),
//! and takes a running step back after a restart; start with `kube/mod.rs`. [`health`] is the
//! circuit breaker on an engine's health that Docker and Kubernetes share.
//!
//! Stores: [`ServerStore`] is every port of the record a server needs, as one object, with two
//! implementations proven alike by one conformance suite (`conformance/`).
//! [`sqlite::SqliteStore`] is the durable record (pipelines, runs, jobs, steps, events)
//! on SQLite, with group commit (start with `sqlite/mod.rs`); [`logs::FileLogStore`] keeps job
//! logs as append-only chunk files written by dedicated threads (start with `logs/mod.rs`);
//! [`secrets::SealedSecrets`] keeps the secrets of runs in either store, sealed with a key
//! file of the data directory. [`postgres::PgStore`] is the same record on PostgreSQL, with the
//! logs of jobs in the same database ([`postgres::PgLogStore`]); start with `postgres/mod.rs`.
//!
//! [`token_cache::CachedTokens`] remembers the API tokens a server has seen, where it is the
//! database's one writer.
//!
//! Files: [`files::DiskFiles`] keeps the artifacts of runs and the caches of pipelines in the
//! data directory (start with `files/mod.rs`); `files::workspace` copies files out of and into
//! workspaces that are directories of this machine.
//!
//! Sources: [`git::GitMirrors`] keeps a bare mirror of each registered repository, fetched and
//! read with the `git` command (credentials through its environment, never its arguments).

pub mod clock;
#[cfg(test)]
mod conformance;
mod decode;
pub mod docker;
pub mod fake;
pub mod files;
pub mod git;
pub mod health;
pub mod kube;
pub mod local;
pub mod logs;
pub mod pools;
pub mod postgres;
pub mod route;
pub mod secrets;
pub mod sqlite;
pub mod token_cache;

use hodei_domain::ports::{AgentStore, RepoStore, Store, TickStore, TokenStore};

/// Every port of the record that a server needs, as one object: the SQLite store and the
/// PostgreSQL store. The conformance suite runs the same tests against both.
pub trait ServerStore:
    Store + TokenStore + AgentStore + RepoStore + TickStore + secrets::SealedRows
{
    /// The identity of the database, fixed when it was created: the local provider marks
    /// what it starts with it, to recognise its own orphans after a restart.
    fn instance_id(&self) -> &str;
}

impl ServerStore for sqlite::SqliteStore {
    fn instance_id(&self) -> &str {
        sqlite::SqliteStore::instance_id(self)
    }
}

impl ServerStore for postgres::PgStore {
    fn instance_id(&self) -> &str {
        postgres::PgStore::instance_id(self)
    }
}
