//! The handlers, one file per resource. Each handler is documented with `#[utoipa::path]`;
//! [`crate::openapi`] builds both the OpenAPI document and the router from that one list, so a
//! route cannot exist undocumented.

pub mod agent_files;
pub mod agents;
pub mod artifacts;
pub mod events;
pub mod jobs;
pub mod lines;
pub mod pipelines;
pub mod repos;
pub mod runs;
pub mod secrets;
pub mod streams;
pub mod system;
pub mod tokens;
pub mod workers;
