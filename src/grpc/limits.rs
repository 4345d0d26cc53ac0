//! A layer in front of every service: a request message over the size limit
//! is answered RESOURCE_EXHAUSTED `REQUEST_TOO_LARGE` with the limit, rather
//! than tonic's bare OUT_OF_RANGE. tonic refuses such a message from its
//! length prefix before reading it (a 4 GB claim costs nothing), and answers
//! in the response headers; this layer only rewrites that one answer.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::{Code, Status};

/// The start of the message tonic gives a request over the decoding limit.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";

/// Wraps services so that over-sized requests get a clear answer.
#[derive(Debug, Clone, Copy)]
pub struct RequestTooLargeLayer {
    /// The limit the services decode with, for the answer.
    pub limit: usize,
}

impl<S> tower_layer::Layer<S> for RequestTooLargeLayer {
    type Service = RequestTooLarge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestTooLarge {
            inner,
            limit: self.limit,
        }
    }
}

/// See [`RequestTooLargeLayer`].
#[derive(Debug, Clone)]
pub struct RequestTooLarge<S> {
    inner: S,
    limit: usize,
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for RequestTooLarge<S>
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
            match Status::from_header_map(response.headers()) {
                Some(status)
                    if status.code() == Code::OutOfRange
                        && status.message().starts_with(TONIC_TOO_LARGE) =>
                {
                    Ok(super::error::request_too_large(limit).into_http())
                }
                _ => Ok(response),
            }
        })
    }
}
