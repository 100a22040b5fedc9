//! # hodei-api
//!
//! Hodei's HTTP surface on actix-web: the REST API under `/api/v1`, WebSocket live logs and events,
//! authentication, the OpenAPI document, the web console assets, and the typed HTTP client that the
//! CLI and the agent use.
//!
//! The crate holds no route yet; today the only user-facing surface is the `hodei` binary's
//! `validate` command, which uses the domain crate directly.
