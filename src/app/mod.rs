//! The use cases, between the gRPC handlers and the layers below: who may do
//! what, the commands they hand to the writer, reads through the store and
//! the feed, page tokens, and the administration the CLI does. Free of proto
//! types.

pub mod admin;
pub mod auth;
pub mod feed;
pub mod flows;
pub mod limits;
pub mod mutations;
pub mod queries;
pub mod settings;
pub mod timers;

use crate::{
    domain::DecideError,
    feed::{Feed, FeedConfig},
    store::{Store, StoreError},
    writer::{WriteError, Writer},
};

pub use crate::ids::{UlidIds, now};
pub use auth::{AuthError, Caller, IssuedSession, VisitorSession};
pub use limits::{Limits, LimitsConfig, StreamLimit, StreamPermit};

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
    /// The caller's key, or the server, holds its most event streams.
    #[error(
        "too many event streams: at most {limit} may be open per {} at once; close one first",
        per.as_str()
    )]
    TooManyStreams {
        /// The limit met.
        limit: usize,
        /// Whose limit.
        per: StreamLimit,
    },
    /// The workspace made more calls than its rate allows.
    #[error(
        "too many calls: this workspace may make {calls_per_second} per second; retry after {retry_after:?}"
    )]
    RateLimited {
        /// The workspace's rate.
        calls_per_second: u32,
        /// How long until the next call is admitted.
        retry_after: std::time::Duration,
    },
    /// The server is shutting down and takes no more writes.
    #[error("the server is shutting down; retry on another server or after it restarts")]
    ShuttingDown,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<WriteError> for AppError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::NotFound(id) => Self::NotFound(id.as_str().to_owned()),
            WriteError::RequestIdReused(id) => Self::RequestIdReused(id.as_str().to_owned()),
            WriteError::FlowNotFound(id) => Self::FlowNotFound(id),
            WriteError::Decide(e) => Self::Decide(e),
            WriteError::Store(e) => Self::Store(e),
            WriteError::Stopped => Self::ShuttingDown,
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// How often the WAL is checkpointed beside the writer.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// The use cases, over one store, its writer and its feed.
#[derive(Debug, Clone)]
pub struct App {
    store: Store,
    writer: Writer,
    feed: Feed,
    keys: auth::KeyCache,
    limits: Limits,
    checkpointer: std::sync::Arc<tokio::task::JoinHandle<()>>,
    timers: timers::TimerTask,
}

impl App {
    /// Serves the use cases from `store`: starts the writer task, opens the
    /// feed at the stored heads, and starts the key cache's watch for
    /// revocations. One `App` per database file: the writer assumes it is
    /// the only one writing conversations.
    pub async fn start(
        store: Store,
        feed: FeedConfig,
        limits: LimitsConfig,
    ) -> Result<Self, StoreError> {
        let feed = Feed::open(store.clone(), feed).await?;
        let writer = Writer::start(store.clone(), feed.clone());
        let keys = auth::KeyCache::start(store.clone()).await?;
        let checkpointer = std::sync::Arc::new(tokio::spawn(checkpoint(store.clone())));
        Ok(Self {
            store,
            writer,
            feed,
            keys,
            limits: Limits::new(limits),
            checkpointer,
            timers: timers::TimerTask::default(),
        })
    }

    /// The store behind the use cases.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The event feed.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// The limits callers are held to.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Tells long-lived calls (event streams) to end, so that a graceful
    /// shutdown does not wait on them forever.
    pub fn begin_shutdown(&self) {
        self.feed.begin_shutdown();
    }

    /// Finishes the writes queued, then stops the writer, the key watch and
    /// the checkpoints. Call it once no more calls come in.
    pub async fn stop(&self) {
        self.stop_timers();
        self.writer.stop().await;
        self.keys.stop();
        self.checkpointer.abort();
    }
}

/// Checkpoints the WAL beside the writer (whose commits do not, so that a
/// checkpoint never stalls a batch), so that it does not grow without bound
/// (under steady writes the store has the writer start it over now and
/// then, see `Store::checkpoint`).
async fn checkpoint(store: Store) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(error) = store.checkpoint().await {
            tracing::warn!(%error, "could not checkpoint the WAL");
        }
    }
}
