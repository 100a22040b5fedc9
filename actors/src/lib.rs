//! # hodei-actors
//!
//! The actix actors of Hodei and the typed messages they exchange: the `Orchestrator` that accepts
//! runs, one `RunActor` per active run walking its DAG, one `JobActor` per job attempt, the
//! `Scheduler` that holds the cluster state, the `WorkerRegistry`, the `LogHub` and the `EventBus`.
//!
//! Actors are thin: their handlers call the pure rules of [`hodei_domain`] and the ports it defines
//! (`Store`, `Provider`, `LogStore`, `SecretStore`, `Clock`). This crate never imports
//! `hodei-adapters`; the binary hands concrete adapters to the actors at start-up.
//!
//! The crate is a placeholder for the actor core: it holds no actor yet. Start reading at
//! [`hodei_domain`] for the model the actors will drive.
