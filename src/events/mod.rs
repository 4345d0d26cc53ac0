//! The event feed: durable log reads plus live wake-ups.
//!
//! The events table, written in each mutation's transaction, is the only
//! source. After a commit the store publishes the new head on a `watch`; a
//! stream's producer wakes on it and reads its next batch from SQLite by
//! sequence. Catch-up and live follow therefore take the same path, and a
//! stream can never lose an event to lag: it only ever holds a cursor.
//!
//! Writers never wait for a subscriber: they only bump the head. Each stream
//! has one producer task feeding a bounded channel; a producer that cannot
//! hand an item to its client within `slow_after` ends the stream with
//! [`FeedEnd::TooSlow`] and the last sequence it sent, from which the client
//! resumes without loss. Memory per stream is bounded by the channel and one
//! batch, however slow the client.

use std::time::Duration;

use tokio::{
    sync::{mpsc, oneshot, watch},
    time::timeout,
};

use crate::{
    app::{App, AppError, Caller, FieldViolation},
    domain::{
        credentials::Role,
        lifecycle::{Event, EventKind},
        values::{ConversationId, VisitorId},
    },
    store::{
        Store, StoreError, conversations,
        events::{self, EventScope},
    },
};

/// Tuning of the streams.
#[derive(Debug, Clone, Copy)]
pub struct FeedConfig {
    /// Events read from SQLite at a time, and the channel size of a stream.
    pub batch: usize,
    /// How long a stream may stay silent before a checkpoint tells the client
    /// how far the server has scanned.
    pub heartbeat: Duration,
    /// How long a producer waits for room in a stream's channel before it
    /// ends the stream as too slow.
    pub slow_after: Duration,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            batch: 256,
            heartbeat: Duration::from_secs(5),
            slow_after: Duration::from_secs(10),
        }
    }
}

/// Largest `ListEvents` page.
pub const MAX_EVENT_PAGE: u32 = 1000;
/// `ListEvents` page when none is asked for.
pub const DEFAULT_EVENT_PAGE: u32 = 100;

/// What a subscriber asks for.
#[derive(Debug, Clone)]
pub struct EventQuery {
    /// Deliver events after this sequence; 0 means from the oldest.
    pub after_sequence: i64,
    /// Only this conversation's events. Required for visitor keys.
    pub conversation_id: Option<ConversationId>,
    /// The conversation's visitor. Required for visitor keys.
    pub visitor_id: Option<VisitorId>,
    /// Only these kinds; empty means all.
    pub kinds: Vec<EventKind>,
}

/// One item of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedItem {
    /// A committed event in the subscriber's scope (boxed: channel slots
    /// stay small while they wait).
    Event(Box<Event>),
    /// The server has scanned every event up to this sequence.
    Checkpoint(i64),
}

/// Why a stream ended, other than the client leaving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEnd {
    /// The client did not take items fast enough. Resume after `last_sequence`.
    TooSlow {
        /// The last sequence sent on the stream.
        last_sequence: i64,
    },
    /// The server is shutting down. Resume after `last_sequence`.
    ShuttingDown {
        /// The last sequence sent on the stream.
        last_sequence: i64,
    },
    /// Reading the log failed. Resume after `last_sequence`.
    Failed {
        /// The last sequence sent on the stream.
        last_sequence: i64,
    },
}

impl FeedEnd {
    /// The same reason, naming `last_sequence` as the point to resume from.
    pub fn resume_from(self, last_sequence: i64) -> Self {
        match self {
            Self::TooSlow { .. } => Self::TooSlow { last_sequence },
            Self::ShuttingDown { .. } => Self::ShuttingDown { last_sequence },
            Self::Failed { .. } => Self::Failed { last_sequence },
        }
    }
}

/// A page of the feed, for pollers.
#[derive(Debug, Clone)]
pub struct EventPage {
    /// Events in order.
    pub events: Vec<Event>,
    /// Pass as `after_sequence` next time; past filtered-out events too.
    pub next_after_sequence: i64,
    /// The newest committed sequence when the page was read.
    pub head_sequence: i64,
}

/// An open stream: items until the channel closes, then perhaps why.
pub struct Subscription {
    /// Items in order.
    pub items: mpsc::Receiver<FeedItem>,
    /// Filled when the stream ends for a reason the client must hear.
    pub end: oneshot::Receiver<FeedEnd>,
}

impl App {
    /// Checks the query against the caller's role, the data and the current
    /// head, and returns the scope to read.
    async fn event_scope(
        &self,
        caller: &Caller,
        query: &EventQuery,
    ) -> Result<EventScope, AppError> {
        caller.require_conversation_access()?;
        if query.after_sequence < 0 {
            return Err(AppError::InvalidArgument(vec![FieldViolation {
                field: "after_sequence".into(),
                description: "must not be negative".into(),
            }]));
        }
        if query.visitor_id.is_some() && query.conversation_id.is_none() {
            return Err(AppError::InvalidArgument(vec![FieldViolation {
                field: "visitor_id".into(),
                description: "narrows a conversation_id; give the conversation too".into(),
            }]));
        }
        if caller.role == Role::Visitor {
            let mut missing = Vec::new();
            for (field, given) in [
                ("conversation_id", query.conversation_id.is_some()),
                ("visitor_id", query.visitor_id.is_some()),
            ] {
                if !given {
                    missing.push(FieldViolation {
                        field: field.into(),
                        description: "is required with a visitor key".into(),
                    });
                }
            }
            if !missing.is_empty() {
                return Err(AppError::InvalidArgument(missing));
            }
        }
        let mut tx = self.store().begin_read().await?;
        if let Some(id) = &query.conversation_id {
            let visible = conversations::get(&mut tx, caller.workspace_id, id)
                .await?
                .is_some_and(|c| query.visitor_id.as_ref().is_none_or(|v| *v == c.visitor_id));
            if !visible {
                return Err(AppError::NotFound(id.as_str().to_owned()));
            }
        }
        let head = events::head(&mut tx).await?;
        tx.commit().await?;
        if query.after_sequence > head {
            return Err(AppError::CursorAheadOfHead {
                after: query.after_sequence,
                head,
            });
        }
        let scope = EventScope {
            workspace_id: caller.workspace_id,
            conversation_id: query.conversation_id.clone(),
            everyone_only: caller.role == Role::Visitor,
            kinds: query.kinds.clone(),
        };
        Ok(scope)
    }

    /// A page of the feed after `query.after_sequence`.
    pub async fn list_events(
        &self,
        caller: &Caller,
        query: &EventQuery,
        page_size: u32,
    ) -> Result<EventPage, AppError> {
        let scope = self.event_scope(caller, query).await?;
        let limit = match page_size {
            0 => DEFAULT_EVENT_PAGE,
            n => n.min(MAX_EVENT_PAGE),
        } as usize;
        let (head, events) = read_batch(self.store(), &scope, query.after_sequence, limit).await?;
        let next_after_sequence = match events.last() {
            Some(last) if events.len() == limit => last.sequence,
            // Fewer than asked: everything up to the head was scanned.
            _ => head,
        };
        Ok(EventPage {
            events,
            next_after_sequence,
            head_sequence: head,
        })
    }

    /// Opens a stream of the feed after `query.after_sequence`.
    pub async fn watch_events(
        &self,
        caller: &Caller,
        query: &EventQuery,
    ) -> Result<Subscription, AppError> {
        let scope = self.event_scope(caller, query).await?;
        let config = self.feed_config();
        let (items, items_rx) = mpsc::channel(config.batch.max(1));
        let (end, end_rx) = oneshot::channel();
        let producer = Producer {
            store: self.store().clone(),
            scope,
            config,
            items,
            head: self.store().subscribe_head(),
            shutdown: self.shutdown_signal(),
            sent: query.after_sequence,
        };
        tokio::spawn(async move {
            if let Some(reason) = producer.run().await {
                // The client may be gone already; then nobody needs to know.
                let _ = end.send(reason);
            }
        });
        Ok(Subscription {
            items: items_rx,
            end: end_rx,
        })
    }
}

/// Reads the head and the next batch after `after` in one snapshot.
async fn read_batch(
    store: &Store,
    scope: &EventScope,
    after: i64,
    limit: usize,
) -> Result<(i64, Vec<Event>), StoreError> {
    let mut tx = store.begin_read().await?;
    let head = events::head(&mut tx).await?;
    let batch = events::read(
        &mut tx,
        scope,
        after,
        head,
        i64::try_from(limit).unwrap_or(i64::MAX),
    )
    .await?;
    tx.commit().await?;
    Ok((head, batch))
}

/// Why a send did not go through.
enum Stop {
    /// The client left: end quietly.
    Gone,
    /// End with this reason.
    End(FeedEnd),
}

struct Producer {
    store: Store,
    scope: EventScope,
    config: FeedConfig,
    items: mpsc::Sender<FeedItem>,
    head: watch::Receiver<i64>,
    shutdown: watch::Receiver<bool>,
    /// The last sequence handed to the client (event or checkpoint).
    sent: i64,
}

impl Producer {
    async fn run(mut self) -> Option<FeedEnd> {
        match self.follow().await {
            Stop::Gone => None,
            Stop::End(reason) => Some(reason),
        }
    }

    async fn follow(&mut self) -> Stop {
        loop {
            if let Err(stop) = self.catch_up().await {
                return stop;
            }
            if let Err(stop) = self.send(FeedItem::Checkpoint(self.sent)).await {
                return stop;
            }
            if let Err(stop) = self.idle().await {
                return stop;
            }
        }
    }

    /// Sends every event up to the head, batch by batch.
    async fn catch_up(&mut self) -> Result<(), Stop> {
        let limit = self.config.batch.max(1);
        loop {
            if *self.shutdown.borrow() {
                return Err(self.ending(false));
            }
            // Mark the head seen before reading, so a commit that lands after
            // the read still wakes `idle`.
            self.head.borrow_and_update();
            let (head, batch) = match read_batch(&self.store, &self.scope, self.sent, limit).await {
                Ok(read) => read,
                Err(error) => {
                    tracing::error!(%error, "event feed read failed");
                    return Err(Stop::End(FeedEnd::Failed {
                        last_sequence: self.sent,
                    }));
                }
            };
            let complete = batch.len() < limit;
            for event in batch {
                let sequence = event.sequence;
                self.send(FeedItem::Event(Box::new(event))).await?;
                self.sent = sequence;
            }
            if complete {
                // Everything up to the head was scanned, matched or not.
                self.sent = self.sent.max(head);
                return Ok(());
            }
        }
    }

    /// Waits for a new commit, sending heartbeats meanwhile.
    async fn idle(&mut self) -> Result<(), Stop> {
        loop {
            tokio::select! {
                changed = self.head.changed() => {
                    if changed.is_err() {
                        return Err(self.ending(false));
                    }
                    if *self.head.borrow() > self.sent {
                        return Ok(());
                    }
                }
                () = tokio::time::sleep(self.config.heartbeat) => {
                    // A commit nobody announced (another process writing the
                    // same file) is found here at the latest.
                    if self.database_head().await > self.sent {
                        return Ok(());
                    }
                    self.send(FeedItem::Checkpoint(self.sent)).await?;
                }
                _ = self.shutdown.changed() => return Err(self.ending(false)),
                () = self.items.closed() => return Err(Stop::Gone),
            }
        }
    }

    /// The newest committed sequence in the database; 0 if it cannot be read
    /// (the next batch read reports the fault).
    async fn database_head(&self) -> i64 {
        match self.store.read().await {
            Ok(mut conn) => events::head(&mut conn).await.unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// Hands `item` to the client, waiting at most `slow_after` for room,
    /// and giving up at once when the server shuts down.
    async fn send(&mut self, item: FeedItem) -> Result<(), Stop> {
        tokio::select! {
            sent = timeout(self.config.slow_after, self.items.send(item)) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(Stop::Gone),
                Err(_) => Err(self.ending(true)),
            },
            _ = self.shutdown.changed() => Err(self.ending(false)),
        }
    }

    fn ending(&self, too_slow: bool) -> Stop {
        let last_sequence = self.sent;
        Stop::End(if too_slow {
            FeedEnd::TooSlow { last_sequence }
        } else {
            FeedEnd::ShuttingDown { last_sequence }
        })
    }
}
