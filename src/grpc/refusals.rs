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

/// The start of the message tonic gives a request over the decoding limit.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";
/// The starts of the messages of undecodable request bodies (prost's
/// `DecodeError`, and tonic's for a body that ends inside a message).
const TONIC_MALFORMED: [&str; 2] = [
    "failed to decode Protobuf message",
    "Unexpected EOF decoding stream",
];

/// Wraps services so that the transport's refusals get clear answers.
#[derive(Debug, Clone, Copy)]
pub struct ClearRefusalsLayer {
    /// The limit the services decode with, for the answer.
    pub limit: usize,
}

impl<S> tower_layer::Layer<S> for ClearRefusalsLayer {
    type Service = ClearRefusals<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClearRefusals {
            inner,
            limit: self.limit,
        }
    }
}

/// See [`ClearRefusalsLayer`].
#[derive(Debug, Clone)]
pub struct ClearRefusals<S> {
    inner: S,
    limit: usize,
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
        let limit = self.limit;
        Box::pin(async move {
            let response = answer.await?;
            let Some(status) = Status::from_header_map(response.headers()) else {
                return Ok(response);
            };
            let message = status.message();
            Ok(match status.code() {
                Code::OutOfRange if message.starts_with(TONIC_TOO_LARGE) => {
                    super::error::request_too_large(limit).into_http()
                }
                Code::Internal if TONIC_MALFORMED.iter().any(|m| message.starts_with(m)) => {
                    super::error::malformed_request(message).into_http()
                }
                _ => response,
            })
        })
    }
}
