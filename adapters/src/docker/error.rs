//! What can go wrong talking to the Docker engine, and how each failure becomes a
//! [`ProviderError`]: an engine that cannot be reached is [`ProviderError::Unavailable`]
//! (retryable), anything else fails the phase the provider was in.

use std::io;
use std::path::PathBuf;

use bollard::errors::Error as Bollard;
use hodei_domain::ports::{Cause, ProviderError};

/// The provider's name in errors, logs and metrics.
pub const PROVIDER: &str = "docker";

/// What the provider was doing: picks the [`ProviderError`] a failure becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    SetUp,
    Start,
    Wait,
    Other,
}

/// A failure of the Docker provider.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DockerError {
    /// The engine did not answer: socket missing, connection refused or broken, timeout.
    #[error("cannot reach the Docker engine to {action}: {source}")]
    Unreachable {
        action: String,
        #[source]
        source: Bollard,
    },
    /// The engine answered, and refused.
    #[error("the Docker engine could not {action}: {message}{}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Refused {
        action: String,
        /// The HTTP status, when the refusal came as a response rather than in a stream.
        status: Option<u16>,
        message: String,
    },
    /// The engine's answer could not be understood.
    #[error("unexpected answer of the Docker engine to {action}: {source}")]
    Protocol {
        action: String,
        #[source]
        source: Bollard,
    },
    /// `pull: never` and the image is not on the machine.
    #[error(
        "the image `{image}` is not on this machine, and `pull: never` forbids pulling it (pull it first, or use `pull: if-not-present`)"
    )]
    ImageAbsent { image: String },
    /// The image could not be pulled from its registry.
    #[error("cannot pull the image `{image}`: {reason}")]
    PullFailed { image: String, reason: String },
    /// A service did not become ready.
    #[error("the service `{service}` (image `{image}`) {problem}")]
    ServiceNotReady {
        service: String,
        image: String,
        problem: String,
    },
    /// The workspace directory on the host could not be made or removed.
    #[error("cannot {action} the workspace directory {}: {source}", path.display())]
    Workspace {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The job's code could not be checked out into its workspace.
    #[error(transparent)]
    Checkout(#[from] hodei_domain::ports::MirrorError),
    /// A job or step the provider cannot run as given.
    #[error("{what}: expected {expected}")]
    Invalid {
        what: String,
        expected: &'static str,
    },
    /// A step handle or workspace this provider does not know.
    #[error("{what} is not known to this Docker provider ({why})")]
    Unknown { what: String, why: &'static str },
    /// A step's output could not be followed to its end.
    #[error("the output of container {container} {problem}")]
    Output { container: String, problem: String },
}

impl DockerError {
    /// Classifies a bollard error of the request that was to `action`.
    pub fn engine(action: impl Into<String>, err: Bollard) -> DockerError {
        let action = action.into();
        match err {
            Bollard::DockerResponseServerError {
                status_code,
                message,
            } => DockerError::Refused {
                action,
                status: Some(status_code),
                message,
            },
            Bollard::DockerStreamError { error } => DockerError::Refused {
                action,
                status: None,
                message: error,
            },
            err @ (Bollard::RequestTimeoutError
            | Bollard::IOError { .. }
            | Bollard::HyperResponseError { .. }
            | Bollard::HyperLegacyError { .. }
            | Bollard::HttpClientError { .. }
            | Bollard::SocketNotFoundError(_)) => DockerError::Unreachable {
                action,
                source: err,
            },
            err => DockerError::Protocol {
                action,
                source: err,
            },
        }
    }

    /// Whether the engine answered that the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            DockerError::Refused {
                status: Some(404),
                ..
            }
        )
    }

    /// Whether the engine answered that the object is in a conflicting state or name.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            DockerError::Refused {
                status: Some(409),
                ..
            }
        )
    }

    /// The port's error for a failure during `phase`; an unreachable engine is always
    /// [`ProviderError::Unavailable`], whatever the phase.
    pub fn into_provider(self, phase: Phase) -> ProviderError {
        let reason = self.to_string();
        let unreachable = matches!(self, DockerError::Unreachable { .. });
        // The Docker error stays the port error's cause, with its own chain (bollard's).
        let cause = Cause::of(self);
        match (unreachable, phase) {
            (true, _) => ProviderError::Unavailable {
                provider: PROVIDER,
                reason,
                cause,
            },
            (false, Phase::SetUp) => ProviderError::SetUp { reason, cause },
            (false, Phase::Start) => ProviderError::Start { reason, cause },
            (false, Phase::Wait) => ProviderError::Wait { reason, cause },
            (false, Phase::Other) => ProviderError::Other {
                provider: PROVIDER,
                reason,
                cause,
            },
        }
    }
}

/// `result`, with a bollard error classified as the failure to `action`.
pub fn engine<T>(
    result: Result<T, Bollard>,
    action: impl FnOnce() -> String,
) -> Result<T, DockerError> {
    result.map_err(|err| DockerError::engine(action(), err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_engine_is_retryable_in_every_phase() {
        for phase in [Phase::SetUp, Phase::Start, Phase::Wait, Phase::Other] {
            let err = DockerError::engine(
                "list containers",
                Bollard::SocketNotFoundError("/var/run/docker.sock".into()),
            );
            let port = err.into_provider(phase);
            assert!(port.is_retryable(), "{phase:?}: {port:?}");
            assert!(port.to_string().contains("/var/run/docker.sock"), "{port}");
        }
    }

    #[test]
    fn a_refusal_fails_the_phase_with_the_engines_message() {
        let refusal = || {
            DockerError::engine(
                "create the container of step 0",
                Bollard::DockerResponseServerError {
                    status_code: 404,
                    message: "No such image: x:1".into(),
                },
            )
        };
        assert!(refusal().is_not_found());
        assert!(!refusal().is_conflict());
        type IsVariant = fn(&ProviderError) -> bool;
        let cases: [(Phase, IsVariant); 4] = [
            (Phase::SetUp, |e| matches!(e, ProviderError::SetUp { .. })),
            (Phase::Start, |e| matches!(e, ProviderError::Start { .. })),
            (Phase::Wait, |e| matches!(e, ProviderError::Wait { .. })),
            (Phase::Other, |e| matches!(e, ProviderError::Other { .. })),
        ];
        for (phase, expected) in cases {
            let port = refusal().into_provider(phase);
            assert!(expected(&port), "{phase:?}: {port:?}");
            assert!(!port.is_retryable());
            assert!(
                port.to_string().contains(
                    "could not create the container of step 0: No such image: x:1 (HTTP 404)"
                ),
                "{port}"
            );
        }
    }

    #[test]
    fn a_stream_error_is_a_refusal_without_status() {
        let err = DockerError::engine(
            "pull `x:1`",
            Bollard::DockerStreamError {
                error: "manifest unknown".into(),
            },
        );
        assert_eq!(
            err.to_string(),
            "the Docker engine could not pull `x:1`: manifest unknown"
        );
    }
}
