//! The group-commit writer: the one task that writes conversations, on a
//! thread of its own.
//!
//! **Owns** the order of writes. Mutations queue to it; it takes what is
//! queued (up to [`MAX_BATCH`] commands), decides each one in order with the
//! pure rules ([`lifecycle::decide`]), writes the whole batch in one
//! transaction with a few multi-row statements ([`crate::store::BatchTx`]),
//! commits once, hands the committed events to the feed, and only then
//! answers every caller. It also owns the per-workspace event sequences: it
//! hands them out from the workspace's counter inside the same transaction.
//!
//! **Promises**
//! - A caller hears success only once the batch holding its command is
//!   durable (COMMIT returned, with `synchronous=FULL`).
//! - Each command sees the state every earlier command left, in earlier
//!   batches and earlier in its own: two commands on one conversation in one
//!   batch apply one after the other, and a request id repeated within a
//!   batch is answered as a retry of the first.
//! - A refusal answers only its caller; the rest of the batch commits.
//! - If the batch's transaction itself fails, nobody hears success: every
//!   command is tried again alone, so one bad command cannot fail its
//!   neighbours.
//! - Committed events reach the feed in commit order, before any caller of
//!   the batch is answered, so an `event_sequence` a caller holds is on the
//!   feed. (On a database other servers write too, events that come after
//!   theirs wait for the feed's follower to read those first; a cursor ahead
//!   of the feed is then checked against the store, see
//!   `Feed::head_in_store`.)
//!
//! **Never** waits for a subscriber (publishing is an append in memory), and
//! never decides a rule itself.

mod batch;

use std::{collections::HashMap, sync::Arc};

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use crate::{
    domain::{
        Conversation, DecideError, Message, WorkspaceId,
        flow::ValidFlow,
        lifecycle::Command,
        values::{ConversationId, RequestId},
    },
    feed::Feed,
    store::{BatchTx, Store, StoreError, StoredFlow},
};

/// Most commands in one batch (one transaction).
pub const MAX_BATCH: usize = 256;
/// Commands that may wait for the writer before callers wait to queue.
const QUEUE: usize = 4096;
/// Flow versions kept decoded and validated (they never change).
const FLOW_CACHE: usize = 1024;

/// What a mutation answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The conversation after the mutation.
    pub conversation: Conversation,
    /// The message written, for SendMessage.
    pub message: Option<Message>,
    /// The sequence of the mutation's last event in its workspace's feed.
    pub event_sequence: i64,
}

/// One command for the writer, with what it needs to answer retries.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    /// The caller's workspace: the only one the command may touch.
    pub workspace_id: WorkspaceId,
    /// True for agent keys, which may act on any conversation of the
    /// workspace; others act only on the conversations of the visitor the
    /// command acts as.
    pub sees_every_conversation: bool,
    /// The caller's idempotency key, if it gave one.
    pub request_id: Option<RequestId>,
    /// The RPC, remembered with the request id.
    pub method: &'static str,
    /// A hash of the request, remembered with the request id (empty without
    /// one).
    pub fingerprint: Vec<u8>,
    /// What to do.
    pub command: Command,
}

/// Why the writer did not apply a command.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No such conversation for this caller.
    #[error("conversation {0:?} not found")]
    NotFound(ConversationId),
    /// The request id was used for another request.
    #[error("request_id {0:?} was already used for a different request")]
    RequestIdReused(RequestId),
    /// The command names a flow the workspace does not have.
    #[error("flow {0:?} not found")]
    FlowNotFound(String),
    /// The rules refused it.
    #[error(transparent)]
    Decide(#[from] DecideError),
    /// The store failed; the command was not applied.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writer has stopped (the server is shutting down).
    #[error("the writer has stopped")]
    Stopped,
}

struct Job {
    request: WriteRequest,
    reply: oneshot::Sender<Result<Outcome, WriteError>>,
}

/// The queue to the writer task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Writer {
    queue: mpsc::Sender<Job>,
    stop: Arc<watch::Sender<bool>>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("request", &self.request)
            .finish()
    }
}

impl Writer {
    /// Starts the writer task on `store`, publishing to `feed`.
    pub fn start(store: Store, feed: Feed) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let (stop, stopped) = watch::channel(false);
        let task = WriterTask {
            store,
            feed,
            flows: HashMap::new(),
        };
        // Its own thread, with a runtime of its own: the store's answers
        // (SQLite's worker thread, PostgreSQL's socket) wake the writer at
        // once instead of queueing behind every RPC on the shared runtime,
        // and the writer's chain of statements is the one serial path of
        // every mutation.
        let thread = std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(task.run(jobs, stopped)),
                    // Callers then hear Stopped: the queue's receiver is gone.
                    Err(error) => tracing::error!(%error, "the writer's runtime failed to start"),
                }
            });
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(error) => {
                tracing::error!(%error, "the writer's thread failed to start");
                None
            }
        };
        Self {
            queue,
            stop: Arc::new(stop),
            thread: Arc::new(Mutex::new(thread)),
        }
    }

    /// Queues `request` and waits for its answer, which comes once its batch
    /// is durable (or refused). Dropping the future does not withdraw the
    /// command: it may still commit.
    pub async fn submit(&self, request: WriteRequest) -> Result<Outcome, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { request, reply })
            .await
            .map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }

    /// Lets the queued commands finish, then stops the task. Commands
    /// submitted afterwards get [`WriteError::Stopped`].
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        if let Some(thread) = self.thread.lock().await.take() {
            match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => tracing::error!("the writer's thread panicked"),
                Err(error) => tracing::error!(%error, "waiting for the writer's thread failed"),
            }
        }
    }
}

/// A flow version, decoded and validated once.
type CachedFlow = Arc<(StoredFlow, ValidFlow)>;

struct WriterTask {
    store: Store,
    feed: Feed,
    /// Flow versions by (workspace, flow id, version): immutable once written.
    flows: HashMap<(WorkspaceId, String, i64), CachedFlow>,
}

impl WriterTask {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>, mut stop: watch::Receiver<bool>) {
        let mut stopping = false;
        loop {
            let first = tokio::select! {
                job = jobs.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
                changed = stop.changed(), if !stopping => {
                    // Refuse new commands; drain the queued ones, then end.
                    if changed.is_err() || *stop.borrow() {
                        stopping = true;
                        jobs.close();
                    }
                    continue;
                }
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.process(batch).await;
        }
        tracing::debug!("writer stopped");
    }

    /// Commits `jobs` as one batch, or, when that transaction fails, each
    /// alone; then publishes and answers.
    async fn process(&mut self, jobs: Vec<Job>) {
        let requests: Vec<&WriteRequest> = jobs.iter().map(|j| &j.request).collect();
        match self.commit(&requests).await {
            Ok(done) => self.finish(jobs, done),
            Err(error) if jobs.len() == 1 => {
                tracing::error!(%error, "a write failed");
                if let Some(job) = jobs.into_iter().next() {
                    let _ = job.reply.send(Err(WriteError::Store(error)));
                }
            }
            Err(error) => {
                tracing::warn!(%error, commands = jobs.len(), "a batch failed; retrying its commands one by one");
                for job in jobs {
                    match self.commit(&[&job.request]).await {
                        Ok(done) => self.finish(vec![job], done),
                        Err(error) => {
                            tracing::error!(%error, "a write failed");
                            let _ = job.reply.send(Err(WriteError::Store(error)));
                        }
                    }
                }
            }
        }
    }

    fn finish(&self, jobs: Vec<Job>, done: batch::Done) {
        self.feed.publish(done.events);
        for (job, answer) in jobs.into_iter().zip(done.answers) {
            // A caller that gave up does not need its answer.
            let _ = job.reply.send(answer);
        }
    }

    /// One transaction: load, decide each request in order, write, commit.
    async fn commit(&mut self, requests: &[&WriteRequest]) -> Result<batch::Done, StoreError> {
        let started = std::time::Instant::now();
        let mut tx = self.store.begin_batch().await?;
        let mut state = batch::Batch::load(&mut tx, requests).await?;
        let mut answers = Vec::with_capacity(requests.len());
        for request in requests {
            let current = match state.begin(request)? {
                batch::Step::Answered(answer) => {
                    answers.push(*answer);
                    continue;
                }
                batch::Step::Decide(current) => current,
            };
            let flow = match self
                .flow_for(&mut tx, &mut state, request, current.as_deref())
                .await?
            {
                Ok(flow) => flow,
                Err(refused) => {
                    answers.push(Err(refused));
                    continue;
                }
            };
            answers.push(state.decide(request, current.as_deref(), flow.as_deref())?);
        }
        let writes = state.into_writes();
        let committed = tx.commit(&writes).await;
        let result = if committed.is_ok() {
            "committed"
        } else {
            "failed"
        };
        ::metrics::counter!(crate::metrics::BATCHES, "result" => result).increment(1);
        committed?;
        ::metrics::histogram!(crate::metrics::BATCH_COMMANDS).record(requests.len() as f64);
        ::metrics::histogram!(crate::metrics::BATCH_COMMIT).record(started.elapsed().as_secs_f64());
        tracing::debug!(
            commands = requests.len(),
            events = writes.events.len(),
            took = ?started.elapsed(),
            "batch committed"
        );
        Ok(batch::Done {
            answers,
            events: writes.events,
        })
    }

    /// The flow `request` runs, if any: for a start, the named flow or the
    /// workspace default (newest version); for a visitor's message or a
    /// restart, the flow and version the conversation's run started with.
    async fn flow_for(
        &mut self,
        tx: &mut BatchTx,
        state: &mut batch::Batch,
        request: &WriteRequest,
        current: Option<&Conversation>,
    ) -> Result<Result<Option<CachedFlow>, WriteError>, StoreError> {
        let workspace_id = request.workspace_id;
        let Some(wanted) = batch::wanted_flow(&request.command, current) else {
            return Ok(Ok(None));
        };
        let (flow_id, version, named) = match wanted {
            batch::WantedFlow::Named(flow_id) => (flow_id, None, true),
            batch::WantedFlow::Default => match state.default_flow_id(tx, workspace_id).await? {
                Some(flow_id) => (flow_id, None, false),
                None => return Ok(Ok(None)),
            },
            batch::WantedFlow::Running { flow_id, version } => (flow_id, Some(version), false),
        };
        let version = match version {
            Some(version) => version,
            None => match state
                .latest_flow_version(tx, workspace_id, &flow_id)
                .await?
            {
                Some(version) => version,
                None if named => return Ok(Err(WriteError::FlowNotFound(flow_id))),
                None => {
                    return Err(StoreError::Corrupt(format!(
                        "default flow {flow_id} is missing"
                    )));
                }
            },
        };
        let key = (workspace_id, flow_id, version);
        if let Some(cached) = self.flows.get(&key) {
            return Ok(Ok(Some(cached.clone())));
        }
        let Some(stored) = tx.flow(workspace_id, &key.1, Some(version)).await? else {
            // A running version that vanished is a fault of ours.
            return Err(StoreError::Corrupt(format!(
                "flow {} version {version} is missing",
                key.1
            )));
        };
        let valid = stored.definition.validate().map_err(|violations| {
            StoreError::Corrupt(format!(
                "stored flow {} no longer validates: {violations:?}",
                key.1
            ))
        })?;
        if self.flows.len() >= FLOW_CACHE {
            self.flows.clear();
        }
        let cached = Arc::new((stored, valid));
        self.flows.insert(key, cached.clone());
        Ok(Ok(Some(cached)))
    }
}
