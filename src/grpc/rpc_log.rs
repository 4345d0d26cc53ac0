//! One log line per RPC, when it ends: its method, gRPC code, ErrorInfo
//! reason, duration, and, once the handler knows them, the caller's
//! workspace and key id and the request id. A stream's line comes when the
//! stream ends, with why (its code and reason) and the last sequence it
//! delivered. Never a secret (a key's secret part, a database password) and
//! never a message's text: only these fields are ever logged.
//!
//! The layer wraps every service. Handlers fill in what only they know
//! through [`note_caller`] and [`note_request_id`]: a task-local note the
//! layer scopes around each call, so handlers need no extra parameter and a
//! note outside a call does nothing. Health and reflection calls (probes,
//! tools) are logged at DEBUG, every other call at INFO.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Instant,
};

use http_body::{Body, Frame, SizeHint};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::app::Caller;

tokio::task_local! {
    static NOTE: Arc<Mutex<Note>>;
}

/// What a handler learned about its call.
#[derive(Debug, Default)]
struct Note {
    workspace: Option<i64>,
    key_id: Option<String>,
    /// A visitor session's id (never its token).
    session_id: Option<String>,
    request_id: Option<String>,
}

fn note(fill: impl FnOnce(&mut Note)) {
    let _ = NOTE.try_with(|note| {
        if let Ok(mut note) = note.lock() {
            fill(&mut note);
        }
    });
}

/// Records the authenticated caller of the current call.
pub fn note_caller(caller: &Caller) {
    note(|n| {
        n.workspace = Some(caller.workspace_id.0);
        n.key_id = Some(caller.key_id.clone());
        n.session_id = caller.session.as_ref().map(|s| s.session_id.clone());
    });
}

/// Records the request id of the current call, if it has one.
pub fn note_request_id(request_id: Option<&str>) {
    if let Some(id) = request_id {
        note(|n| n.request_id = Some(id.to_owned()));
    }
}

/// Logs every RPC the wrapped services serve.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcLogLayer;

impl<S> tower_layer::Layer<S> for RpcLogLayer {
    type Service = RpcLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcLog { inner }
    }
}

/// See [`RpcLogLayer`].
#[derive(Debug, Clone)]
pub struct RpcLog<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for RpcLog<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body + Send + Unpin + 'static,
{
    type Response = http::Response<LoggedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = request.uri().path().trim_start_matches('/').to_owned();
        let started = Instant::now();
        let shared = Arc::new(Mutex::new(Note::default()));
        let answer = NOTE.scope(shared.clone(), self.inner.call(request));
        Box::pin(async move {
            let response = answer.await?;
            // An error answered at once comes in the headers
            // ("trailers-only"); otherwise the status is in the trailers.
            let status = Status::from_header_map(response.headers());
            let (parts, body) = response.into_parts();
            let pending = Pending {
                method,
                started,
                note: shared,
                status,
            };
            Ok(http::Response::from_parts(
                parts,
                LoggedBody {
                    inner: body,
                    pending: Some(pending),
                },
            ))
        })
    }
}

/// What the line of a call still waiting for its end holds.
struct Pending {
    method: String,
    started: Instant,
    note: Arc<Mutex<Note>>,
    status: Option<Status>,
}

impl Pending {
    fn log(self) {
        let (code, reason, last_sequence) = match &self.status {
            Some(status) => {
                let info = status.get_details_error_info();
                (
                    status.code(),
                    info.as_ref().map(|i| i.reason.clone()).unwrap_or_default(),
                    info.and_then(|i| i.metadata.get("last_sequence").cloned()),
                )
            }
            // The body ended with no status: the client went away.
            None => (Code::Cancelled, String::new(), None),
        };
        let note = self
            .note
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default();
        // To the microsecond.
        let elapsed = self.started.elapsed();
        let duration_ms = elapsed.as_micros() as f64 / 1000.0;
        let code = code_name(code);
        let method = self.method.as_str();
        record(method, code, &reason, elapsed);
        let workspace = note.workspace;
        let key_id = note.key_id.as_deref();
        let session_id = note.session_id.as_deref();
        let request_id = note.request_id.as_deref();
        let last_sequence = last_sequence.as_deref();
        if method.starts_with("grpc.") {
            tracing::debug!(
                target: "conversations::rpc",
                method, code, reason, duration_ms, workspace, key_id, session_id, request_id,
                last_sequence,
                "rpc"
            );
        } else {
            tracing::info!(
                target: "conversations::rpc",
                method, code, reason, duration_ms, workspace, key_id, session_id, request_id,
                last_sequence,
                "rpc"
            );
        }
    }
}

/// The methods that answer with a stream: their duration is how long the
/// stream stayed open, not a latency.
const STREAMING: [&str; 2] = [
    "conversations.v1.ConversationService/WatchEvents",
    "grpc.health.v1.Health/Watch",
];

/// The call's metrics: its count by method and code, its latency (unary),
/// its refusal reason, and why a stream ended.
fn record(method: &str, code: &'static str, reason: &str, elapsed: std::time::Duration) {
    use crate::metrics as m;
    // Only methods the server implements become label values: any other
    // path is answered UNIMPLEMENTED, so a client cannot grow the series
    // with made-up paths (a prefix test would let `/grpc.x1/…` through).
    let method = if code == "UNIMPLEMENTED" {
        "other".to_owned()
    } else {
        method.to_owned()
    };
    ::metrics::counter!(m::RPC_REQUESTS, "method" => method.clone(), "code" => code).increment(1);
    if !reason.is_empty() {
        ::metrics::counter!(m::REFUSALS, "reason" => reason.to_owned()).increment(1);
    }
    if STREAMING.contains(&method.as_str()) {
        if method.starts_with("conversations.") {
            let why = if reason.is_empty() {
                code.to_owned()
            } else {
                reason.to_owned()
            };
            ::metrics::counter!(m::STREAMS_ENDED, "reason" => why).increment(1);
        }
    } else {
        ::metrics::histogram!(m::RPC_DURATION, "method" => method).record(elapsed.as_secs_f64());
    }
}

/// A gRPC code as the protocol spells it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A response body that logs its call's line once it ends (or is dropped,
/// when the client goes away first).
pub struct LoggedBody<B> {
    inner: B,
    pending: Option<Pending>,
}

impl<B: Default> Default for LoggedBody<B> {
    fn default() -> Self {
        Self {
            inner: B::default(),
            pending: None,
        }
    }
}

impl<B> Drop for LoggedBody<B> {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.log();
        }
    }
}

impl<B> Body for LoggedBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(pending) = self.pending.as_mut()
                {
                    pending.status = Status::from_header_map(trailers).or(pending.status.take());
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                if let Some(pending) = self.pending.take() {
                    pending.log();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
