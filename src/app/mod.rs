//! The use cases, between the gRPC handlers and the store: who may do what,
//! one transaction per mutation with its idempotency record, page tokens, and
//! the administration the CLI does. Free of proto types.

pub mod admin;
pub mod auth;
pub mod flows;
pub mod mutations;
pub mod queries;

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::sync::watch;

use crate::{
    domain::{
        DecideError, Micros,
        lifecycle::IdSource,
        values::{ConversationId, MessageId},
    },
    events::FeedConfig,
    store::{Store, StoreError, changes::ApplyError},
};

pub use auth::{AuthError, Caller};

/// A request field that is not acceptable, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field path, e.g. `agent.agent_id`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

/// Why a use case did not happen. Every variant maps to one gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is malformed, whatever the state.
    #[error("the request is invalid")]
    InvalidArgument(Vec<FieldViolation>),
    /// No such conversation in the caller's workspace (or not the visitor's).
    #[error("conversation {0:?} not found")]
    NotFound(String),
    /// The caller's role may not do this.
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// No usable credentials.
    #[error(transparent)]
    Unauthenticated(#[from] AuthError),
    /// The domain refused the change.
    #[error(transparent)]
    Decide(#[from] DecideError),
    /// A request id was reused for a different request.
    #[error(
        "request_id {0:?} was already used for a different request; use a new request_id for a new request"
    )]
    RequestIdReused(String),
    /// No such flow in the caller's workspace.
    #[error("flow {0:?} not found")]
    FlowNotFound(String),
    /// A feed cursor beyond the newest event.
    #[error(
        "after_sequence {after} is ahead of the newest event ({head}); resume from a sequence this server sent"
    )]
    CursorAheadOfHead {
        /// What the caller sent.
        after: i64,
        /// The newest sequence.
        head: i64,
    },
    /// A page token that this server did not issue for these filters.
    #[error(
        "page_token is not valid for this request; start again without one, or repeat the filters it was issued for"
    )]
    InvalidPageToken,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ApplyError> for AppError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Store(e) => Self::Store(e),
            ApplyError::Conflict => Self::Store(StoreError::Corrupt(e.to_string())),
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// The use cases, over one store.
#[derive(Debug, Clone)]
pub struct App {
    store: Store,
    feed: FeedConfig,
    shutdown: Arc<watch::Sender<bool>>,
}

impl App {
    /// Serves the use cases from `store`, with streams tuned by `feed`.
    pub fn new(store: Store, feed: FeedConfig) -> Self {
        Self {
            store,
            feed,
            shutdown: Arc::new(watch::channel(false).0),
        }
    }

    /// The store behind the use cases.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// How event streams are tuned.
    pub fn feed_config(&self) -> FeedConfig {
        self.feed
    }

    /// Turns true when the server begins to shut down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells long-lived calls (event streams) to end, so that a graceful
    /// shutdown does not wait on them forever.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}

/// The wall clock, in microseconds.
pub fn now() -> Micros {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    Micros(micros)
}

/// ULID-based ids: sortable by creation time, unguessable enough to be
/// opaque, and prefixed so a stray id says what it names.
pub struct UlidIds;

impl IdSource for UlidIds {
    fn conversation_id(&mut self) -> ConversationId {
        ConversationId::from_trusted(format!("conv_{}", ulid::Ulid::new()))
    }

    fn message_id(&mut self) -> MessageId {
        MessageId::from_trusted(format!("msg_{}", ulid::Ulid::new()))
    }

    fn event_id(&mut self) -> String {
        format!("evt_{}", ulid::Ulid::new())
    }
}
