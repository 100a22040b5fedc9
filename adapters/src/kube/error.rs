//! What can go wrong turning a job into Kubernetes objects, in one enum.

/// The provider's name in errors, logs and metrics.
pub const PROVIDER: &str = "kubernetes";

/// A failure of the Kubernetes provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KubeError {
    /// A job, step or setting the provider cannot run as given.
    #[error("{what}: expected {expected}")]
    Invalid {
        what: String,
        expected: &'static str,
    },
}
