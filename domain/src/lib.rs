//! # hodei-domain
//!
//! The pure core of Hodei: no I/O, no actix, no tokio, no sqlx. Time and ids come in as inputs.
//!
//! Where to start reading:
//! - [`model`]: the pipeline as users write it, with validating newtypes ([`model::Name`],
//!   [`model::Duration`], [`model::Cpu`], [`model::Memory`]).
//! - [`load`]: YAML text to a [`model::Pipeline`] plus every [`diagnostic::Diagnostic`] at once,
//!   each with a line, a column and a path such as `jobs.deploy.needs[1]`.
//! - [`builder`] and the macros `pipeline!`, `job!`, `sh!`, `retry!`, `timeout!`: the same model
//!   written in Rust.
//! - [`validate`]: the rules that span the whole pipeline (references, cycles, limits).
//! - [`plan`]: matrix expansion, the `needs` DAG and the resolution of a run's inputs.
//! - [`expr`]: the `when` expression language.
//! - [`forge`]: webhook deliveries of GitHub, GitLab and Gitea, and whether `on:` wants a run.
//! - [`pools`]: what the worker manager does for a pool of ephemeral workers (start, remove,
//!   back off), as a pure function of the queue and the pool's workers.
//! - [`ticks`]: when `on.schedule` entries fire (due and missed ticks), over explicit times.
//! - [`state`]: the state machines of runs, jobs and steps, and the [`state::DomainEvent`]s
//!   their transitions yield.
//! - [`engine`]: what a run does next ([`engine::advance`]), what an attempt of a job runs
//!   ([`engine::job_def`]) and where an attempt goes on after a crash
//!   ([`engine::resume_point`]): the run actor's decisions, as pure functions.

pub mod builder;
pub mod cache_key;
pub mod diagnostic;
pub mod engine;
pub mod expr;
pub mod forge;
pub mod ids;
pub mod load;
pub mod mask;
pub mod model;
pub mod plan;
pub mod pools;
pub mod ports;
pub mod restart;
pub mod schedule;
pub mod state;
pub mod suggest;
pub mod ticks;
pub mod validate;
pub mod yaml;
