//! # hodei-adapters
//!
//! The outside world behind the ports of [`hodei_domain`]: the sqlx stores (SQLite, PostgreSQL),
//! the Docker provider (bollard), the Kubernetes provider (kube), local processes and log files.
//! Each adapter keeps its translation to the outside world a pure, table-tested function and the
//! code that talks to the daemon short.
//!
//! The crate holds no adapter yet; only the binary chooses concrete adapters.
