//! What can go wrong turning a job into Kubernetes objects and asking a cluster for them, in
//! one enum.

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
    /// The API server answered, and refused.
    #[error("cannot {action}: the API server answered {code} ({reason}): {message}")]
    Refused {
        action: &'static str,
        code: u16,
        reason: String,
        message: String,
    },
    /// The API server could not be asked (not reachable, broken connection, bad answer).
    #[error("cannot reach the Kubernetes API server to {action}: {message}")]
    Unreachable {
        action: &'static str,
        message: String,
    },
    /// A pod's log is not what Hodei's entrypoint writes.
    #[error("the log of pod {pod}: {source}")]
    Log {
        pod: String,
        #[source]
        source: super::logs::NoTimestamp,
    },
    /// No client of the API server can be made from the configuration (the kubeconfig, or
    /// the service account of the pod Hodei runs in).
    #[error("cannot configure the Kubernetes client from {from}: {message}")]
    Config { from: String, message: String },
    /// The operating system gave no randomness.
    #[error("cannot make a random token: {message}")]
    Random { message: String },
}

impl KubeError {
    /// Classifies an error of the kube client for the request that was to `action`.
    pub fn api(action: &'static str, err: &kube::Error) -> KubeError {
        match err {
            kube::Error::Api(status) => KubeError::Refused {
                action,
                code: status.code,
                reason: status.reason.clone(),
                message: status.message.clone(),
            },
            other => KubeError::Unreachable {
                action,
                message: other.to_string(),
            },
        }
    }

    /// Whether trying again later may succeed without any change: the API server could not
    /// be asked, or answered that it is overloaded or unavailable.
    pub fn is_retryable(&self) -> bool {
        match self {
            KubeError::Unreachable { .. } => true,
            KubeError::Refused { code, .. } => matches!(code, 429 | 500 | 502 | 503 | 504),
            _ => false,
        }
    }
}
