//! The event feed: each workspace's committed events, in order, to pollers
//! and to open streams.
//!
//! **Owns** the [`hub`] (the recent events of each workspace in memory, and
//! who listens), each stream's producer task, and catch-up reads from the
//! store on connections of its own.
//!
//! **Promises** to every stream: events in sequence order, each once,
//! nothing uncommitted, no gap: catch-up from a cursor older than the
//! in-memory window reads the store in batches up to the hub's head (every
//! event up to it is committed), then joins the window where it left off.
//! The writer publishes each batch after its commit and in commit order, so
//! the hub's head only ever moves over durable events.
//!
//! **Never** makes the writer wait: publishing is an append in memory. A
//! stream whose client does not take its items within `slow_after` is ended
//! ([`FeedEnd::TooSlow`]) with the last sequence it sent, from which the
//! client resumes without loss; memory per stream is its bounded channel.
//! The feed knows nothing of keys or roles: the use cases hand it a checked
//! [`EventScope`] and a signal to end the stream on.

mod follow;
mod hub;

use std::{collections::VecDeque, sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, oneshot, watch},
    time::timeout,
};

use crate::{
    domain::{WorkspaceId, lifecycle::Event, scope::EventScope},
    store::{Store, StoreError},
};
use follow::Wanted;
use hub::{Hub, Recent, Registration};

/// Store reads a catching-up workspace stream keeps going at once (the
/// feed's connections read them side by side while the stream sends).
const READ_AHEAD: usize = 3;

/// Tuning of the feed.
#[derive(Debug, Clone, Copy)]
pub struct FeedConfig {
    /// Events read from the store at a time, and the channel size of a stream.
    pub batch: usize,
    /// How long a stream may stay silent before a checkpoint tells the client
    /// how far the server has scanned.
    pub heartbeat: Duration,
    /// How long a producer waits for room in a stream's channel before it
    /// ends the stream as too slow.
    pub slow_after: Duration,
    /// Recent events kept in memory per workspace; streams behind them catch
    /// up from the store.
    pub window: usize,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            batch: 256,
            heartbeat: Duration::from_secs(5),
            slow_after: Duration::from_secs(10),
            window: 8192,
        }
    }
}

/// One item of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedItem {
    /// A committed event in the subscriber's scope, shared with every other
    /// stream that delivers it.
    Event(Arc<Event>),
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
    /// The caller's credentials stopped being valid (a revoked key).
    Revoked {
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
            Self::Revoked { .. } => Self::Revoked { last_sequence },
        }
    }
}

/// Events read after a cursor.
#[derive(Debug)]
pub struct FeedRead {
    /// The events in scope, in order.
    pub events: Vec<Arc<Event>>,
    /// Every event up to this sequence was looked at, matched or not.
    pub scanned: i64,
    /// The workspace's head the read was made against.
    pub head: i64,
}

/// An open stream: items until the channel closes, then perhaps why.
pub struct Subscription {
    /// Items in order.
    pub items: mpsc::Receiver<FeedItem>,
    /// Filled when the stream ends for a reason the client must hear.
    pub end: oneshot::Receiver<FeedEnd>,
}

/// The feed. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Feed {
    hub: Arc<Hub>,
    store: Store,
    config: FeedConfig,
    shutdown: Arc<watch::Sender<bool>>,
    /// Heads the follower should bring the hub up to.
    wanted: Arc<Wanted>,
}

impl Feed {
    /// The feed of `store`, each workspace starting at its stored head,
    /// following what other servers commit to the same database.
    pub async fn open(store: Store, config: FeedConfig) -> Result<Self, StoreError> {
        // Watching before the heads are read: no commit falls between.
        let commits = store.watch_commits();
        let heads = store
            .tallies()
            .await?
            .into_iter()
            .map(|(workspace, tally)| (workspace, tally.event_head))
            .collect();
        let feed = Self {
            hub: Arc::new(Hub::new(heads, config.window)),
            store,
            config,
            shutdown: Arc::new(watch::channel(false).0),
            wanted: Arc::default(),
        };
        tokio::spawn(follow::follow(
            feed.hub.clone(),
            feed.store.clone(),
            feed.wanted.clone(),
            commits,
            feed.shutdown.subscribe(),
            config.batch,
        ));
        Ok(feed)
    }

    /// How the feed is tuned.
    pub fn config(&self) -> FeedConfig {
        self.config
    }

    /// Hands committed events (in commit order) to the streams. Only the
    /// writer calls it, after each commit. Events that come after another
    /// server's (not yet followed) are read from the store by the follower.
    pub fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        for (workspace, head) in self.hub.publish(events) {
            self.wanted.want(workspace, head);
        }
    }

    /// The newest sequence of the workspace's feed this server holds.
    pub fn head(&self, workspace: WorkspaceId) -> i64 {
        self.hub.log(workspace).head()
    }

    /// The workspace's head as the store has it, with the feed brought up to
    /// it: for a cursor that another server handed out.
    pub async fn head_in_store(&self, workspace: WorkspaceId) -> Result<i64, StoreError> {
        let head = self.store.tally(workspace).await?.event_head;
        follow::catch_up(&self.hub, &self.store, workspace, head, self.config.batch).await?;
        Ok(self.head(workspace))
    }

    /// Up to `limit` events in `scope` after `after`, how far that read got
    /// and the head it was read against: from memory when the window still
    /// holds them.
    pub async fn page(
        &self,
        scope: &EventScope,
        after: i64,
        limit: usize,
    ) -> Result<FeedRead, StoreError> {
        let log = self.hub.log(scope.workspace_id);
        Ok(self.read(&log, scope, after, limit.max(1), None).await?.0)
    }

    /// The next read after `after`: a scan of the window, or of the store up
    /// to the window's head when the cursor is older than the window, and
    /// which of the two it was. A scan that reaches the head clears
    /// `signal`'s pending flag.
    async fn read(
        &self,
        log: &hub::Log,
        scope: &EventScope,
        after: i64,
        limit: usize,
        signal: Option<&hub::Signal>,
    ) -> Result<(FeedRead, Source), StoreError> {
        match log.scan(scope, after, limit, signal) {
            Recent::Events {
                events,
                scanned,
                head,
            } => Ok((
                FeedRead {
                    events,
                    scanned,
                    head,
                },
                Source::Memory,
            )),
            Recent::Older { head } => Ok((
                self.read_store(scope, after, head, limit).await?,
                Source::Store,
            )),
        }
    }

    /// Up to `limit` events in `scope` with `after < sequence <= head` from
    /// the store (every event up to `head` is committed).
    async fn read_store(
        &self,
        scope: &EventScope,
        after: i64,
        head: i64,
        limit: usize,
    ) -> Result<FeedRead, StoreError> {
        let events = self
            .store
            .read_events(scope, after, head, i64::try_from(limit).unwrap_or(i64::MAX))
            .await?;
        // A short batch scanned everything up to the head.
        let scanned = match events.last() {
            Some(last) if events.len() == limit => last.sequence,
            _ => head,
        };
        Ok(FeedRead {
            events: events.into_iter().map(Arc::new).collect(),
            scanned,
            head,
        })
    }

    /// Opens a stream of `scope` after `after`, which ends (with
    /// [`FeedEnd::Revoked`]) when `revoked` turns true.
    pub fn subscribe(
        &self,
        scope: EventScope,
        after: i64,
        revoked: watch::Receiver<bool>,
    ) -> Subscription {
        let (items, items_rx) = mpsc::channel(self.config.batch.max(1));
        let (end, end_rx) = oneshot::channel();
        // Registered before the first scan, so no commit after it goes unseen.
        let registration = self.hub.register(&scope);
        let producer = Producer {
            feed: self.clone(),
            scope,
            registration,
            items,
            shutdown: self.shutdown.subscribe(),
            revoked,
            sent: after,
        };
        tokio::spawn(async move {
            if let Some(reason) = producer.run().await {
                // The client may be gone already; then nobody needs to know.
                let _ = end.send(reason);
            }
        });
        Subscription {
            items: items_rx,
            end: end_rx,
        }
    }

    /// Ends every stream with [`FeedEnd::ShuttingDown`], so that a graceful
    /// shutdown does not wait on them.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}

/// Where a read found its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Memory,
    Store,
}

/// Why a stream's read failed.
#[derive(Debug, thiserror::Error)]
enum ReadFailed {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The task reading ahead panicked.
    #[error("the read ahead did not finish: {0}")]
    Lost(tokio::task::JoinError),
}

/// A store read of the events after `after` up to `up_to`, running while
/// the stream sends what came before; dropped with the stream, it stops.
struct ReadAhead {
    task: tokio::task::JoinHandle<Result<FeedRead, StoreError>>,
    up_to: i64,
    /// The head the stream is catching up to.
    head: i64,
}

impl ReadAhead {
    fn start(
        feed: &Feed,
        scope: EventScope,
        after: i64,
        up_to: i64,
        head: i64,
        limit: usize,
    ) -> Self {
        let feed = feed.clone();
        let task = tokio::spawn(async move { feed.read_store(&scope, after, up_to, limit).await });
        Self { task, up_to, head }
    }

    async fn result(mut self) -> Result<(FeedRead, Source), ReadFailed> {
        match (&mut self.task).await {
            Ok(read) => {
                let read = read?;
                Ok((
                    FeedRead {
                        head: self.head,
                        ..read
                    },
                    Source::Store,
                ))
            }
            Err(error) => Err(ReadFailed::Lost(error)),
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a send did not go through.
enum Stop {
    /// The client left: end quietly.
    Gone,
    /// End with this reason.
    End(FeedEnd),
}

struct Producer {
    feed: Feed,
    scope: EventScope,
    registration: Registration,
    items: mpsc::Sender<FeedItem>,
    shutdown: watch::Receiver<bool>,
    revoked: watch::Receiver<bool>,
    /// The last sequence handed to the client (event or checkpoint), or
    /// scanned past.
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

    /// Sends every matching event up to the head: from the store while the
    /// cursor is behind the window, then from memory. While a batch from the
    /// store is being sent, the next one is already being read.
    async fn catch_up(&mut self) -> Result<(), Stop> {
        let limit = self.feed.config.batch.max(1);
        let mut ahead: VecDeque<ReadAhead> = VecDeque::new();
        loop {
            if *self.shutdown.borrow() {
                return Err(self.ending(FeedEnd::ShuttingDown { last_sequence: 0 }));
            }
            let read = match ahead.pop_front() {
                Some(next) => next.result().await,
                None => self
                    .feed
                    .read(
                        &self.registration.log,
                        &self.scope,
                        self.sent,
                        limit,
                        Some(&self.registration.signal),
                    )
                    .await
                    .map_err(ReadFailed::from),
            };
            let (
                FeedRead {
                    events,
                    scanned,
                    head,
                },
                source,
            ) = match read {
                Ok(read) => read,
                Err(error) => {
                    tracing::error!(%error, "event feed read failed");
                    return Err(self.ending(FeedEnd::Failed { last_sequence: 0 }));
                }
            };
            if source == Source::Store {
                self.read_ahead(&mut ahead, scanned, head, limit);
            }
            for event in events {
                let sequence = event.sequence;
                self.send(FeedItem::Event(event)).await?;
                self.sent = sequence;
            }
            self.sent = self.sent.max(scanned);
            if scanned >= head {
                return Ok(());
            }
        }
    }

    /// Keeps the store reads after `scanned` going while a batch is sent.
    /// A workspace stream reads ranges of `limit` sequences, [`READ_AHEAD`]
    /// of them at once: each range holds at most `limit` events, so each
    /// read scans its range whole and the next can start before it ends. A
    /// conversation's next batch starts after the last event of this one,
    /// so it reads one batch ahead.
    fn read_ahead(&self, ahead: &mut VecDeque<ReadAhead>, scanned: i64, head: i64, limit: usize) {
        let ranged = self.scope.conversation_id.is_none();
        let step = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut from = ahead.back().map_or(scanned, |last| last.up_to);
        while from < head && ahead.len() < if ranged { READ_AHEAD } else { 1 } {
            let up_to = if ranged {
                from.saturating_add(step).min(head)
            } else {
                head
            };
            ahead.push_back(ReadAhead::start(
                &self.feed,
                self.scope.clone(),
                from,
                up_to,
                head,
                limit,
            ));
            from = up_to;
        }
    }

    /// Waits for a commit this stream may want, sending heartbeats meanwhile.
    async fn idle(&mut self) -> Result<(), Stop> {
        let signal = self.registration.signal.clone();
        loop {
            tokio::select! {
                () = signal.notify.notified() => return Ok(()),
                () = tokio::time::sleep(self.feed.config.heartbeat) => {
                    // Nothing matching arrived: everything up to the head is
                    // scanned, and the checkpoint says so.
                    match self.registration.log.quiet_head(&signal) {
                        Some(head) => {
                            self.sent = self.sent.max(head);
                            self.send(FeedItem::Checkpoint(self.sent)).await?;
                        }
                        None => return Ok(()),
                    }
                }
                _ = self.shutdown.changed() => {
                    return Err(self.ending(FeedEnd::ShuttingDown { last_sequence: 0 }));
                }
                Ok(()) = self.revoked.changed() => {
                    if *self.revoked.borrow() {
                        return Err(self.ending(FeedEnd::Revoked { last_sequence: 0 }));
                    }
                }
                () = self.items.closed() => return Err(Stop::Gone),
            }
        }
    }

    /// Hands `item` to the client, waiting at most `slow_after` for room,
    /// and giving up at once when the server shuts down or the key is
    /// revoked.
    async fn send(&mut self, item: FeedItem) -> Result<(), Stop> {
        if *self.revoked.borrow() {
            return Err(self.ending(FeedEnd::Revoked { last_sequence: 0 }));
        }
        // While the client keeps up there is room: then no timer is armed
        // and no select is polled for the event.
        let item = match self.items.try_send(item) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stop::Gone),
            Err(mpsc::error::TrySendError::Full(item)) => item,
        };
        tokio::select! {
            sent = timeout(self.feed.config.slow_after, self.items.send(item)) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(Stop::Gone),
                Err(_) => Err(self.ending(FeedEnd::TooSlow { last_sequence: 0 })),
            },
            _ = self.shutdown.changed() => {
                Err(self.ending(FeedEnd::ShuttingDown { last_sequence: 0 }))
            }
            Ok(()) = self.revoked.changed() => {
                Err(self.ending(FeedEnd::Revoked { last_sequence: 0 }))
            }
        }
    }

    fn ending(&self, reason: FeedEnd) -> Stop {
        Stop::End(reason.resume_from(self.sent))
    }
}
