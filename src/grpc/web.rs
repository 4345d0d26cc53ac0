//! What browsers need on the normal port, around the gRPC services:
//! - CORS for the origins the operator admits (`--cors-origin`), so a
//!   widget on a customer's site may call; no origin is admitted unless
//!   named, so by default no cross-origin page can;
//! - the static files of `--web-root` for GET requests (gRPC and grpc-web
//!   calls are all POST), so the demo widget and Inbox can be served from
//!   the server's own origin.
//!
//! The grpc-web translation itself is tonic-web's `GrpcWebLayer`, inside
//! these; plain gRPC requests pass through all three untouched.

use std::{
    convert::Infallible,
    future::Future,
    path::Path,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderName, HeaderValue, Method};
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    services::ServeDir,
};

use crate::config::CorsOrigin;

/// Request headers a grpc-web client sends (connect-web, grpc-web,
/// improbable-eng's), besides our `authorization`.
const REQUEST_HEADERS: [&str; 7] = [
    "authorization",
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "grpc-accept-encoding",
    "grpc-encoding",
];
/// Response headers a browser script may read: a call refused before any
/// message has its status in the headers (trailers-only).
const RESPONSE_HEADERS: [&str; 4] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "grpc-encoding",
];

/// CORS for `origins` (none: every cross-origin preflight is refused).
/// Browsers may cache a preflight for 2 hours, Chromium's most.
pub fn cors(origins: &[CorsOrigin]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.as_str()).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers(REQUEST_HEADERS.map(HeaderName::from_static))
        .expose_headers(RESPONSE_HEADERS.map(HeaderName::from_static))
        .max_age(Duration::from_secs(2 * 60 * 60))
}

/// Serves GET and HEAD requests from a directory when one is given; every
/// other request goes on to the services.
#[derive(Debug, Clone)]
pub struct WebRootLayer {
    files: Option<ServeDir>,
}

impl WebRootLayer {
    /// Serves `root` (index.html for a directory), or nothing.
    pub fn new(root: Option<&Path>) -> Self {
        Self {
            files: root.map(|root| ServeDir::new(root).append_index_html_on_directories(true)),
        }
    }
}

impl<S> tower_layer::Layer<S> for WebRootLayer {
    type Service = WebRoot<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WebRoot {
            inner,
            files: self.files.clone(),
        }
    }
}

/// See [`WebRootLayer`].
#[derive(Debug, Clone)]
pub struct WebRoot<S> {
    inner: S,
    files: Option<ServeDir>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> tower_service::Service<http::Request<tonic::body::Body>> for WebRoot<S>
where
    S: tower_service::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        >,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let is_page = matches!(*request.method(), Method::GET | Method::HEAD);
        match (&mut self.files, is_page) {
            (Some(files), true) => {
                let served = tower_service::Service::call(files, request);
                Box::pin(async move {
                    let response: Result<_, Infallible> = served.await;
                    let Ok(response) = response;
                    let mut response = response.map(tonic::body::Body::new);
                    response.headers_mut().insert(
                        http::header::X_CONTENT_TYPE_OPTIONS,
                        HeaderValue::from_static("nosniff"),
                    );
                    Ok(response)
                })
            }
            _ => Box::pin(self.inner.call(request)),
        }
    }
}
