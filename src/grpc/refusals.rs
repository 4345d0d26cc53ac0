//! A layer in front of every service that gives the transport's own refusals
//! of a request the same clear answers as ours (a code that blames the right
//! side, and an ErrorInfo reason):
//! - a request message over the size limit: RESOURCE_EXHAUSTED
//!   `REQUEST_TOO_LARGE` with the limit, rather than tonic's bare
//!   OUT_OF_RANGE. tonic refuses it from its length prefix, before reading
//!   it, so a 4 GB claim costs nothing;
//! - bytes that are not a protobuf message of the request's type, or a body
//!   cut short: INVALID_ARGUMENT `MALFORMED_REQUEST`, rather than INTERNAL,
//!   which would tell the caller the fault was ours.
//!
//! tonic answers these before any handler runs, in the response headers;
//! the layer rewrites only those answers, recognised by code and message.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::{Code, Status};

/// The start of the message tonic gives a request over the decoding limit;
/// the limit follows "the limit is: ".
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";
/// The starts of tonic's messages for request bodies that are no message of
/// the request's type: prost's `DecodeError`, a body that ends inside a
/// message, a unary call without one, a compression flag that is neither 0
/// nor 1.
const TONIC_MALFORMED: [&str; 4] = [
    "failed to decode Protobuf message",
    "Unexpected EOF decoding stream",
    "Missing request message",
    "protocol error: received message with invalid compression flag",
];
/// A compressed message without `grpc-encoding`: the gRPC spec says this
/// MUST be INTERNAL, so only the reason is added.
const TONIC_COMPRESSED_WITHOUT_ENCODING: &str =
    "protocol error: received message with compressed-flag but no grpc-encoding";

/// Wraps services so that the transport's refusals get clear answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClearRefusalsLayer;

/// The limit a tonic "too large" message names.
fn named_limit(message: &str) -> Option<usize> {
    let (_, rest) = message.split_once("the limit is: ")?;
    rest.split_whitespace().next()?.parse().ok()
}

impl<S> tower_layer::Layer<S> for ClearRefusalsLayer {
    type Service = ClearRefusals<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClearRefusals { inner }
    }
}

/// See [`ClearRefusalsLayer`].
#[derive(Debug, Clone)]
pub struct ClearRefusals<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for ClearRefusals<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            let Some(status) = Status::from_header_map(response.headers()) else {
                return Ok(response);
            };
            let message = status.message();
            Ok(match status.code() {
                Code::OutOfRange if message.starts_with(TONIC_TOO_LARGE) => {
                    super::error::request_too_large(named_limit(message)).into_http()
                }
                Code::Internal if TONIC_MALFORMED.iter().any(|m| message.starts_with(m)) => {
                    super::error::malformed_request(message).into_http()
                }
                Code::Internal if message.starts_with(TONIC_COMPRESSED_WITHOUT_ENCODING) => {
                    super::error::compressed_without_encoding(message).into_http()
                }
                _ => response,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_read_from_tonics_message() {
        let message = "Error, decoded message length too large: found 4294967295 bytes, the limit is: 65536 bytes";
        assert_eq!(named_limit(message), Some(65536));
        assert_eq!(named_limit("Error, decoded message length too large"), None);
    }
}
