//! Every error the API answers with, and how it becomes a response: in ONE place, the
//! [`ResponseError`] impl of [`ApiError`]. Each answer is `application/problem+json`
//! (RFC 9457) with a stable `code` that clients may match on; `title` and `detail` are for
//! people and may change.
//!
//! A client's mistake is always a 4xx; a 5xx means Hodei or its database failed.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use hodei_domain::model::Role;
use hodei_domain::ports::{LogError, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::views::DiagnosticView;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The body is not the JSON the endpoint expects.
    #[error("the request body is not valid JSON for this endpoint: {reason}")]
    InvalidJson { reason: String },
    /// The pipeline does not load: every diagnostic.
    #[error("the pipeline is invalid: {} problem(s)", .diagnostics.len())]
    InvalidPipeline { diagnostics: Vec<DiagnosticView> },
    /// The run's inputs do not fit the pipeline.
    #[error("the run's parameters do not fit the pipeline: {}", .errors.join("; "))]
    InvalidParameters { errors: Vec<String> },
    /// A path segment, query parameter or header has a value the endpoint cannot use.
    #[error("{name} is `{value}`: expected {expected}")]
    InvalidArgument {
        name: String,
        value: String,
        expected: String,
    },
    /// The body's media type is not the one the endpoint reads.
    #[error("the body is `{got}`: expected `{expected}`")]
    UnsupportedMediaType { got: String, expected: &'static str },
    /// The body is larger than the configured limit.
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The body did not arrive in time.
    #[error(
        "the request body did not arrive within {} s ({received} bytes received): expected the whole body in time",
        .after.as_secs()
    )]
    RequestTimeout {
        after: std::time::Duration,
        received: usize,
    },
    /// A byte range outside the log.
    #[error("the range starts at byte {start}, beyond the end of the log ({length} bytes)")]
    RangeNotSatisfiable { start: u64, length: u64 },
    /// No bearer token, or one that is unknown or revoked.
    #[error("{reason}")]
    Unauthenticated { reason: &'static str },
    /// A webhook delivery whose signature does not check out.
    #[error("the delivery is not signed with the repository's webhook secret: {reason}")]
    BadSignature { reason: String },
    /// The token's role may not do this.
    #[error("this needs the role `{needed}`; the token has `{has}`")]
    Forbidden { needed: Role, has: Role },
    /// What the request names does not exist.
    #[error("{what} not found")]
    NotFound { what: String },
    /// No route has this path.
    #[error("no endpoint at `{path}`; see /api/v1/openapi.json")]
    NoRoute { path: String },
    /// The path exists, not with this method.
    #[error("`{method}` is not allowed on `{path}`")]
    MethodNotAllowed { method: String, path: String },
    /// The thing is not in a state that allows the move.
    #[error("{what} is {state}: {reason}")]
    IllegalTransition {
        what: String,
        state: &'static str,
        reason: &'static str,
    },
    /// It already exists.
    #[error("{what} already exists")]
    Conflict { what: String },
    /// The pipeline's `on:` does not let it be started by hand, and no override was asked.
    #[error(
        "pipeline `{pipeline}` cannot be started by hand: its `on:` allows {allowed}; add `manual: {{}}` to its `on:`, or ask for an override (`override_triggers: true`, `hodei runs start --override-triggers`), which the run's events record"
    )]
    StartNotAllowed { pipeline: String, allowed: String },
    /// The pipeline uses secrets that are not stored.
    #[error("pipeline `{pipeline}` uses secret(s) that are not stored: {}; store each, e.g. `hodei secrets set {} --pipeline {pipeline}` (or for the pipeline's repository)", .names.join(", "), .names.first().map_or("NAME", String::as_str))]
    MissingSecrets {
        pipeline: String,
        names: Vec<String>,
    },
    /// Unfinished runs hold as many jobs as they may: no new run until some finish.
    /// An agent's write about a job it does not hold any more, or that does not follow what
    /// the server has (`lease-lost`, `sequence-gap`, `log-incomplete`, `log-checksum`).
    #[error("{detail}")]
    Lease { code: &'static str, detail: String },
    /// An agent reported a transition the job's machine does not allow.
    #[error("{detail}")]
    RefusedReport { detail: String },
    #[error(
        "the queue is full: unfinished runs hold {queued} jobs (the limit is {limit}); try again later"
    )]
    QueueFull { queued: usize, limit: usize },
    /// The store, the log store or the actors cannot serve the request now; retry later.
    #[error("{what} is unavailable: {reason}")]
    Unavailable { what: &'static str, reason: String },
    /// A follower of a replicated deployment cannot forward the request: no replica leads
    /// right now, or the leader cannot be reached; retry in a second.
    #[error("{reason}")]
    NoLeader { reason: String },
    /// Hodei failed: a bug or a damaged database. The detail says what.
    #[error("internal error: {reason}")]
    Internal { reason: String },
}

impl ApiError {
    /// The stable, machine-readable name of the problem.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson { .. } => "invalid-json",
            ApiError::InvalidPipeline { .. } => "invalid-pipeline",
            ApiError::InvalidParameters { .. } => "invalid-parameters",
            ApiError::InvalidArgument { .. } => "invalid-argument",
            ApiError::UnsupportedMediaType { .. } => "unsupported-media-type",
            ApiError::PayloadTooLarge { .. } => "payload-too-large",
            ApiError::RequestTimeout { .. } => "request-timeout",
            ApiError::RangeNotSatisfiable { .. } => "range-not-satisfiable",
            ApiError::Unauthenticated { .. } => "unauthenticated",
            ApiError::BadSignature { .. } => "bad-signature",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::NotFound { .. } => "not-found",
            ApiError::NoRoute { .. } => "no-route",
            ApiError::MethodNotAllowed { .. } => "method-not-allowed",
            ApiError::IllegalTransition { .. } => "illegal-transition",
            ApiError::Conflict { .. } => "conflict",
            ApiError::StartNotAllowed { .. } => "start-not-allowed",
            ApiError::MissingSecrets { .. } => "missing-secret",
            ApiError::Lease { code, .. } => code,
            ApiError::RefusedReport { .. } => "refused-transition",
            ApiError::QueueFull { .. } => "queue-full",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::NoLeader { .. } => "no-leader",
            ApiError::Internal { .. } => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::InvalidJson { .. } => "Invalid JSON body",
            ApiError::InvalidPipeline { .. } => "Invalid pipeline",
            ApiError::InvalidParameters { .. } => "Invalid run parameters",
            ApiError::InvalidArgument { .. } => "Invalid argument",
            ApiError::UnsupportedMediaType { .. } => "Unsupported media type",
            ApiError::PayloadTooLarge { .. } => "Request body too large",
            ApiError::RequestTimeout { .. } => "Request body too slow",
            ApiError::RangeNotSatisfiable { .. } => "Range not satisfiable",
            ApiError::Unauthenticated { .. } => "Authentication required",
            ApiError::BadSignature { .. } => "Bad webhook signature",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::NotFound { .. } => "Not found",
            ApiError::NoRoute { .. } => "No such endpoint",
            ApiError::MethodNotAllowed { .. } => "Method not allowed",
            ApiError::IllegalTransition { .. } => "Illegal state transition",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::StartNotAllowed { .. } => "Start not allowed by the pipeline's triggers",
            ApiError::MissingSecrets { .. } => "Secrets not stored",
            ApiError::Lease { .. } => "Lease conflict",
            ApiError::RefusedReport { .. } => "Transition refused",
            ApiError::QueueFull { .. } => "Queue full",
            ApiError::Unavailable { .. } => "Service unavailable",
            ApiError::NoLeader { .. } => "No leader to forward to",
            ApiError::Internal { .. } => "Internal error",
        }
    }

    /// A store failure while doing `what`: retryable ones are 503, missing things 404,
    /// conflicts 409, corrupt data 500.
    pub fn store(err: StoreError) -> ApiError {
        match err {
            StoreError::NotFound { what } => ApiError::NotFound { what },
            StoreError::Conflict { what } => ApiError::Conflict { what },
            err if err.is_retryable() => ApiError::Unavailable {
                what: "the store",
                reason: err.to_string(),
            },
            err => ApiError::Internal {
                reason: err.to_string(),
            },
        }
    }

    /// A log store failure.
    pub fn logs(err: LogError) -> ApiError {
        ApiError::Unavailable {
            what: "the log store",
            reason: err.to_string(),
        }
    }

    /// An actor that did not answer.
    pub fn actor(what: &'static str, err: actix::MailboxError) -> ApiError {
        ApiError::Unavailable {
            what,
            reason: err.to_string(),
        }
    }

    /// An invalid value of a query parameter or path segment.
    pub fn argument(name: &str, value: &str, expected: &str) -> ApiError {
        ApiError::InvalidArgument {
            name: name.to_owned(),
            value: value.to_owned(),
            expected: expected.to_owned(),
        }
    }
}

impl From<hodei_actors::agents::ReportError> for ApiError {
    fn from(err: hodei_actors::agents::ReportError) -> ApiError {
        use hodei_actors::agents::ReportError as R;
        let detail = err.to_string();
        match err {
            R::Refused(_) | R::NotOver => ApiError::RefusedReport { detail },
            R::Stale => ApiError::Lease {
                code: "lease-lost",
                detail,
            },
            R::LogIncomplete { .. } => ApiError::Lease {
                code: "log-incomplete",
                detail,
            },
            R::Checksum => ApiError::Lease {
                code: "log-checksum",
                detail,
            },
            R::NotReady | R::Unavailable => ApiError::Unavailable {
                what: "the agent desk",
                reason: detail,
            },
            R::Store(err) => ApiError::store(err),
            R::Log(err) => ApiError::Unavailable {
                what: "the log store",
                reason: err.to_string(),
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        ApiError::store(err)
    }
}

/// The body of every error response (`application/problem+json`, RFC 9457).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// `urn:hodei:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong this time, where, and what was expected.
    pub detail: String,
    /// The stable name of the problem: match on this.
    pub code: String,
    /// For `invalid-pipeline`: every problem of the pipeline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Vec<DiagnosticView>>,
    /// For `invalid-parameters`: every parameter problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<String>>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson { .. }
            | ApiError::InvalidPipeline { .. }
            | ApiError::InvalidParameters { .. }
            | ApiError::InvalidArgument { .. }
            | ApiError::RefusedReport { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Unauthenticated { .. } | ApiError::BadSignature { .. } => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } | ApiError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::IllegalTransition { .. }
            | ApiError::Conflict { .. }
            | ApiError::StartNotAllowed { .. }
            | ApiError::MissingSecrets { .. }
            | ApiError::Lease { .. } => StatusCode::CONFLICT,
            ApiError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } | ApiError::NoLeader { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            // Expected while the leadership changes hands: clients try again.
            ApiError::NoLeader { .. } => {
                tracing::info!(code = self.code(), error = %self, "Request not forwarded.");
            }
            _ if status.is_server_error() => {
                tracing::error!(code = self.code(), error = %self, "Request failed.");
            }
            _ => {}
        }
        let problem = Problem {
            kind: format!("urn:hodei:problem:{}", self.code()),
            title: self.title().to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            code: self.code().to_owned(),
            diagnostics: match self {
                ApiError::InvalidPipeline { diagnostics } => Some(diagnostics.clone()),
                _ => None,
            },
            errors: match self {
                ApiError::InvalidParameters { errors } => Some(errors.clone()),
                _ => None,
            },
        };
        let mut response = HttpResponse::build(status);
        response.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        match self {
            ApiError::Unauthenticated { .. } => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::RangeNotSatisfiable { length, .. } => {
                response.insert_header((header::CONTENT_RANGE, format!("bytes */{length}")));
            }
            ApiError::Unavailable { .. } | ApiError::NoLeader { .. } => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            ApiError::QueueFull { .. } => {
                response.insert_header((header::RETRY_AFTER, "5"));
            }
            // The rest of the body is not read: the connection cannot serve another request.
            ApiError::RequestTimeout { .. } => {
                response.insert_header((header::CONNECTION, "close"));
            }
            _ => {}
        }
        response.body(serde_json::to_string(&problem).unwrap_or_else(|err| {
            format!(r#"{{"code":"internal","detail":"cannot render a problem: {err}"}}"#)
        }))
    }
}
