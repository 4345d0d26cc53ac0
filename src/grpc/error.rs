//! The one mapping from application errors to gRPC statuses. Every variant
//! is matched by name, so a new one cannot silently become INTERNAL.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    app::{AppError, AuthError},
    domain::DecideError,
    feed::FeedEnd,
};

/// `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "conversations";

fn status(code: Code, reason: &str, message: String, metadata: HashMap<String, String>) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    )
}

/// One bad field as a status: INVALID_ARGUMENT with a BadRequest detail.
pub fn invalid_field(field: &str, description: impl Into<String>) -> Status {
    AppError::InvalidArgument(vec![crate::app::FieldViolation {
        field: field.to_owned(),
        description: description.into(),
    }])
    .into()
}

impl From<AppError> for Status {
    fn from(error: AppError) -> Self {
        let message = error.to_string();
        match error {
            AppError::InvalidArgument(violations) => {
                let summary = violations
                    .iter()
                    .map(|v| format!("{} {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                let mut details =
                    ErrorDetails::with_error_info("INVALID_REQUEST", ERROR_DOMAIN, HashMap::new());
                for violation in violations {
                    details.add_bad_request_violation(violation.field, violation.description);
                }
                Status::with_error_details(
                    Code::InvalidArgument,
                    format!("invalid request: {summary}"),
                    details,
                )
            }
            AppError::NotFound(id) => status(
                Code::NotFound,
                "CONVERSATION_NOT_FOUND",
                message,
                HashMap::from([("conversation_id".to_owned(), id)]),
            ),
            AppError::PermissionDenied(_) => status(
                Code::PermissionDenied,
                "ROLE_NOT_PERMITTED",
                message,
                HashMap::new(),
            ),
            AppError::Unauthenticated(AuthError::Missing) => status(
                Code::Unauthenticated,
                "API_KEY_MISSING",
                message,
                HashMap::new(),
            ),
            AppError::Unauthenticated(AuthError::Invalid) => status(
                Code::Unauthenticated,
                "API_KEY_INVALID",
                message,
                HashMap::new(),
            ),
            AppError::Unauthenticated(
                reason @ (AuthError::SessionInvalid
                | AuthError::SessionExpired
                | AuthError::SessionRevoked),
            ) => status(
                Code::Unauthenticated,
                match reason {
                    AuthError::SessionExpired => "SESSION_EXPIRED",
                    AuthError::SessionRevoked => "SESSION_REVOKED",
                    _ => "SESSION_INVALID",
                },
                message,
                HashMap::new(),
            ),
            AppError::Decide(DecideError::Refused(refusal)) => status(
                Code::FailedPrecondition,
                refusal.reason(),
                message,
                HashMap::new(),
            ),
            AppError::Decide(DecideError::EtagMismatch { current, .. }) => status(
                Code::Aborted,
                "ETAG_MISMATCH",
                message,
                HashMap::from([("current_etag".to_owned(), current)]),
            ),
            AppError::Decide(DecideError::VisitorMismatch { .. }) => {
                let mut details =
                    ErrorDetails::with_error_info("VISITOR_MISMATCH", ERROR_DOMAIN, HashMap::new());
                details
                    .add_bad_request_violation("visitor_id", "is not this conversation's visitor");
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            AppError::RequestIdReused(_) => status(
                Code::InvalidArgument,
                "REQUEST_ID_REUSED",
                message,
                HashMap::new(),
            ),
            AppError::FlowNotFound(id) => status(
                Code::NotFound,
                "FLOW_NOT_FOUND",
                message,
                HashMap::from([("flow_id".to_owned(), id)]),
            ),
            AppError::CursorAheadOfHead { head, .. } => status(
                Code::OutOfRange,
                "CURSOR_AHEAD_OF_HEAD",
                message,
                HashMap::from([("head_sequence".to_owned(), head.to_string())]),
            ),
            AppError::InvalidPageToken => {
                let mut details = ErrorDetails::with_error_info(
                    "INVALID_PAGE_TOKEN",
                    ERROR_DOMAIN,
                    HashMap::new(),
                );
                details.add_bad_request_violation("page_token", "was not issued for this request");
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            AppError::TooManyStreams { limit, per } => status(
                Code::ResourceExhausted,
                "TOO_MANY_STREAMS",
                message,
                HashMap::from([
                    ("limit".to_owned(), limit.to_string()),
                    ("per".to_owned(), per.as_str().to_owned()),
                ]),
            ),
            AppError::RateLimited {
                calls_per_second,
                retry_after,
            } => {
                let mut details = ErrorDetails::with_error_info(
                    "RATE_LIMITED",
                    ERROR_DOMAIN,
                    HashMap::from([("calls_per_second".to_owned(), calls_per_second.to_string())]),
                );
                details.set_retry_info(Some(retry_after));
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            AppError::ShuttingDown => status(
                Code::Unavailable,
                "SERVER_SHUTTING_DOWN",
                message,
                HashMap::new(),
            ),
            AppError::Decide(DecideError::Misuse) | AppError::Store(_) => {
                // The detail is for operators, never for clients.
                tracing::error!(error = %message, "internal error");
                status(
                    Code::Internal,
                    "INTERNAL",
                    "internal error; retry later".to_owned(),
                    HashMap::new(),
                )
            }
        }
    }
}

/// The status of a request message over the size limit: RESOURCE_EXHAUSTED
/// `REQUEST_TOO_LARGE`, naming the limit when known. tonic refuses such a
/// message (from its length prefix, before reading it) with a bare
/// OUT_OF_RANGE; [`super::refusals::ClearRefusals`] swaps that answer for
/// this one.
pub fn request_too_large(limit: Option<usize>) -> Status {
    match limit {
        Some(limit) => status(
            Code::ResourceExhausted,
            "REQUEST_TOO_LARGE",
            format!("the request message is larger than the {limit} bytes this server accepts"),
            HashMap::from([("limit_bytes".to_owned(), limit.to_string())]),
        ),
        None => status(
            Code::ResourceExhausted,
            "REQUEST_TOO_LARGE",
            "the request message is larger than this server accepts".to_owned(),
            HashMap::new(),
        ),
    }
}

/// A message compressed without `grpc-encoding`: INTERNAL, as the gRPC spec
/// requires, with a reason that says it was the caller's message.
pub fn compressed_without_encoding(why: &str) -> Status {
    status(
        Code::Internal,
        "COMPRESSED_WITHOUT_ENCODING",
        format!("{why}; send grpc-encoding with compressed messages"),
        HashMap::new(),
    )
}

/// The status of a request body that is not a message of the request's
/// type: INVALID_ARGUMENT `MALFORMED_REQUEST` (tonic says INTERNAL).
pub fn malformed_request(why: &str) -> Status {
    status(
        Code::InvalidArgument,
        "MALFORMED_REQUEST",
        format!("the request body is not a valid message of this method's request type ({why})"),
        HashMap::new(),
    )
}

/// How a visitor session's stream ends when its credentials do: the
/// session expired, or it (or its key) was revoked.
pub fn session_stream_ended(last_sequence: i64, expired: bool) -> Status {
    let (reason, why) = if expired {
        (
            "SESSION_EXPIRED",
            "the visitor session of this stream expired; with a new session from the site's backend",
        )
    } else {
        (
            "SESSION_REVOKED",
            "the visitor session of this stream was revoked; with a new session from the site's backend",
        )
    };
    status(
        Code::Unauthenticated,
        reason,
        format!("{why}, reconnect with after_sequence = {last_sequence} to resume without loss"),
        HashMap::from([("last_sequence".to_owned(), last_sequence.to_string())]),
    )
}

impl From<FeedEnd> for Status {
    fn from(end: FeedEnd) -> Self {
        let (code, reason, last_sequence, why) = match end {
            FeedEnd::TooSlow { last_sequence } => (
                Code::ResourceExhausted,
                "SUBSCRIBER_TOO_SLOW",
                last_sequence,
                "the stream fell behind: the client did not read fast enough",
            ),
            FeedEnd::ShuttingDown { last_sequence } => (
                Code::Unavailable,
                "SERVER_SHUTTING_DOWN",
                last_sequence,
                "the server is shutting down",
            ),
            FeedEnd::Failed { last_sequence } => (
                Code::Unavailable,
                "FEED_INTERRUPTED",
                last_sequence,
                "the stream was interrupted",
            ),
            FeedEnd::Revoked { last_sequence } => (
                Code::Unauthenticated,
                "API_KEY_INVALID",
                last_sequence,
                "the API key of this stream was revoked; with a valid key",
            ),
        };
        status(
            code,
            reason,
            format!(
                "{why}; reconnect with after_sequence = {last_sequence} to resume without loss"
            ),
            HashMap::from([("last_sequence".to_owned(), last_sequence.to_string())]),
        )
    }
}
