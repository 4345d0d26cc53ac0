//! The group-commit writer: the one task that writes conversations, on a
//! thread of its own.
//!
//! **Owns** the order of writes. Mutations queue to it; it takes what is
//! queued (up to [`MAX_BATCH`] commands), decides each one in order with the
//! pure rules ([`lifecycle::decide`]), writes the whole batch in one
//! transaction with a few multi-row statements ([`crate::store::BatchTx`],
//! or [`crate::store::Store::commit_batch`] for a batch decided ahead),
//! commits once, hands the committed events to the feed, and only then
//! answers every caller. It also owns the per-workspace event sequences: it
//! hands them out from the workspace's counter, and writes them in the
//! batch's transaction.
//!
//! **Two batches at a time where the store allows it** (a serving SQLite
//! store, [`crate::store::AheadReads`]): while one batch commits on a thread
//! of its own, the commands that arrive meanwhile are read and decided into
//! the next, over the state the one in flight leaves; the next commits once
//! that one has, or is decided again from the store if it failed. On
//! PostgreSQL, where other servers write too, each batch reads and decides
//! inside its own transaction, holding its workspaces.
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

use std::{collections::HashMap, sync::Arc, time::Instant};

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
    store::{AheadReads, BatchReads, Store, StoreError, StoredFlow, Writes},
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

/// A batch decided, not yet written.
struct Decided {
    answers: Vec<Result<Outcome, WriteError>>,
    writes: Writes,
}

/// The batch whose transaction runs on the commit thread while the writer
/// decides the next one.
struct InFlight {
    jobs: Vec<Job>,
    answers: Vec<Result<Outcome, WriteError>>,
    /// Shared with the commit task, and laid over the next batch's reads.
    writes: Arc<Writes>,
    started: Instant,
    commit: tokio::task::JoinHandle<Result<(), StoreError>>,
}

/// The batch taking shape while another is in flight: each command is
/// decided as it arrives, over the one in flight.
struct Next {
    jobs: Vec<Job>,
    state: batch::Batch,
    answers: Vec<Result<Outcome, WriteError>>,
    started: Instant,
    /// Reading ahead failed on the way: every command is decided again once
    /// nothing is in flight.
    failed: bool,
}

/// What woke the writer.
enum Wake {
    /// The batch in flight is done.
    Landed(Result<Result<(), StoreError>, tokio::task::JoinError>),
    /// A command, or None once the queue is closed and empty.
    Job(Option<Job>),
}

impl WriterTask {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>, mut stop: watch::Receiver<bool>) {
        let mut stopping = false;
        match self.store.read_ahead().await {
            Ok(Some(ahead)) => match Committer::start() {
                Ok(committer) => {
                    self.run_ahead(ahead, &committer, &mut jobs, &mut stop, &mut stopping)
                        .await;
                    committer.stop();
                }
                Err(error) => {
                    tracing::warn!(%error, "the writer's commit thread failed to start; deciding each batch in its transaction");
                    self.run_in_transaction(&mut jobs, &mut stop, &mut stopping)
                        .await;
                }
            },
            Ok(None) => {
                self.run_in_transaction(&mut jobs, &mut stop, &mut stopping)
                    .await
            }
            Err(error) => {
                tracing::warn!(%error, "no connection to read ahead of batches; deciding each batch in its transaction");
                self.run_in_transaction(&mut jobs, &mut stop, &mut stopping)
                    .await;
            }
        }
        tracing::debug!("writer stopped");
    }

    /// One batch at a time: read, decide, write and commit in one
    /// transaction (PostgreSQL, where other servers write too and the
    /// batch's reads must hold its workspaces).
    async fn run_in_transaction(
        &mut self,
        jobs: &mut mpsc::Receiver<Job>,
        stop: &mut watch::Receiver<bool>,
        stopping: &mut bool,
    ) {
        while let Some(first) = next_job(jobs, stop, stopping).await {
            let batch = gather(first, jobs, MAX_BATCH);
            self.process(batch).await;
        }
    }

    /// Two batches at a time: while one commits on the commit thread, the
    /// commands that arrive meanwhile are read (ahead, over the one in
    /// flight) and decided one by one into the next batch, which commits as
    /// soon as the one before it has, or is decided again if that one
    /// failed. The serial path of a mutation is then the commit alone.
    async fn run_ahead(
        &mut self,
        ahead: AheadReads,
        committer: &Committer,
        jobs: &mut mpsc::Receiver<Job>,
        stop: &mut watch::Receiver<bool>,
        stopping: &mut bool,
    ) {
        let mut ahead = Some(ahead);
        let mut flight: Option<InFlight> = None;
        let mut next: Option<Next> = None;
        let mut closed = false;
        loop {
            let room = MAX_BATCH - next.as_ref().map_or(0, |n| n.jobs.len());
            let wake = match flight.as_mut() {
                None if closed => break,
                None => Wake::Job(next_job(jobs, stop, stopping).await),
                Some(flying) => tokio::select! {
                    biased;
                    landed = &mut flying.commit => Wake::Landed(landed),
                    job = next_job(jobs, stop, stopping), if room > 0 && !closed => Wake::Job(job),
                },
            };
            match wake {
                Wake::Job(None) => closed = true,
                Wake::Job(Some(first)) => {
                    let arrived = gather(first, jobs, room);
                    let Some(flying) = flight.as_ref() else {
                        flight = self.start(committer, &mut ahead, arrived).await;
                        continue;
                    };
                    let before = flying.writes.clone();
                    let next = next.get_or_insert_with(|| Next {
                        jobs: Vec::new(),
                        state: batch::Batch::new(),
                        answers: Vec::new(),
                        started: Instant::now(),
                        failed: false,
                    });
                    if !next.failed {
                        let requests: Vec<&WriteRequest> =
                            arrived.iter().map(|j| &j.request).collect();
                        let decided = self
                            .decide_ahead(
                                &mut ahead,
                                &mut next.state,
                                &requests,
                                Some(&before),
                                &mut next.answers,
                            )
                            .await;
                        next.failed = decided.is_err();
                    }
                    next.jobs.extend(arrived);
                }
                Wake::Landed(result) => {
                    let Some(flying) = flight.take() else {
                        continue;
                    };
                    let committed = matches!(result, Ok(Ok(())));
                    let mut again = None;
                    match next.take() {
                        // Decided over a batch that committed: it starts at
                        // once, while the writer answers the one before.
                        Some(ready) if committed && !ready.failed => {
                            let writes = ready.state.into_writes();
                            flight = Some(self.launch(
                                committer,
                                ready.jobs,
                                Decided {
                                    answers: ready.answers,
                                    writes,
                                },
                                ready.started,
                            ));
                        }
                        Some(stale) => {
                            let why = if stale.failed {
                                "read_failed"
                            } else {
                                "before_failed"
                            };
                            ::metrics::counter!(crate::metrics::BATCHES_DECIDED_AGAIN, "why" => why)
                                .increment(1);
                            again = Some(stale.jobs);
                        }
                        None => {}
                    }
                    self.land(flying, result).await;
                    if let Some(jobs) = again {
                        flight = self.start(committer, &mut ahead, jobs).await;
                    }
                }
            }
        }
    }

    /// Decides `jobs` with nothing in flight and hands them to the commit
    /// thread; if reading ahead fails, commits them in a transaction of
    /// their own instead (then nothing is in flight).
    async fn start(
        &mut self,
        committer: &Committer,
        ahead: &mut Option<AheadReads>,
        jobs: Vec<Job>,
    ) -> Option<InFlight> {
        let started = Instant::now();
        let mut state = batch::Batch::new();
        let mut answers = Vec::with_capacity(jobs.len());
        let requests: Vec<&WriteRequest> = jobs.iter().map(|j| &j.request).collect();
        let decided = self
            .decide_ahead(ahead, &mut state, &requests, None, &mut answers)
            .await;
        drop(requests);
        match decided {
            Ok(()) => {
                let writes = state.into_writes();
                Some(self.launch(committer, jobs, Decided { answers, writes }, started))
            }
            Err(_) => {
                self.process(jobs).await;
                None
            }
        }
    }

    /// Reads for `requests` on the read-ahead connection (opening a new one
    /// if the last failed), over `before`, and decides them into `state`.
    async fn decide_ahead(
        &mut self,
        ahead: &mut Option<AheadReads>,
        state: &mut batch::Batch,
        requests: &[&WriteRequest],
        before: Option<&Writes>,
        answers: &mut Vec<Result<Outcome, WriteError>>,
    ) -> Result<(), StoreError> {
        let mut reads = match ahead.take() {
            Some(reads) => reads,
            None => self
                .store
                .read_ahead()
                .await?
                .ok_or_else(|| StoreError::Corrupt("the store no longer reads ahead".into()))?,
        };
        let decided = self
            .decide_into(&mut reads.reads(), state, requests, before, answers)
            .await;
        match &decided {
            Ok(()) => *ahead = Some(reads),
            // A connection that failed goes back to its pool; the next
            // batch takes one again.
            Err(error) => tracing::warn!(%error, "reading ahead of a batch failed"),
        }
        decided
    }

    /// Hands `decided` to the commit thread.
    fn launch(
        &self,
        committer: &Committer,
        jobs: Vec<Job>,
        decided: Decided,
        started: Instant,
    ) -> InFlight {
        let writes = Arc::new(decided.writes);
        let store = self.store.clone();
        let shared = writes.clone();
        let commit = committer.spawn(async move { store.commit_batch(&shared).await });
        InFlight {
            jobs,
            answers: decided.answers,
            writes,
            started,
            commit,
        }
    }

    /// Answers the batch that was in flight, or retries its commands one by
    /// one when its transaction failed.
    async fn land(
        &mut self,
        flying: InFlight,
        result: Result<Result<(), StoreError>, tokio::task::JoinError>,
    ) {
        let committed = match result {
            Ok(committed) => committed,
            // The commit task panicked, so whether the batch committed is
            // unknown: nobody hears success, nothing is tried again (it may
            // be in the database), and the store forgets what it remembers.
            Err(error) => {
                tracing::error!(%error, commands = flying.jobs.len(), "the commit task failed");
                self.store.forget_remembered();
                record_batch(false, flying.jobs.len(), 0, flying.started);
                for job in flying.jobs {
                    let failed = StoreError::Corrupt(format!("the commit task failed: {error}"));
                    let _ = job.reply.send(Err(WriteError::Store(failed)));
                }
                return;
            }
        };
        record_batch(
            committed.is_ok(),
            flying.jobs.len(),
            flying.writes.events.len(),
            flying.started,
        );
        match committed {
            Ok(()) => {
                let events = Arc::try_unwrap(flying.writes)
                    .map(|writes| writes.events)
                    .unwrap_or_else(|writes| writes.events.clone());
                self.finish(
                    flying.jobs,
                    batch::Done {
                        answers: flying.answers,
                        events,
                    },
                );
            }
            Err(error) => self.retry(flying.jobs, error).await,
        }
    }

    /// Commits `jobs` as one batch, or, when that transaction fails, each
    /// alone; then publishes and answers.
    async fn process(&mut self, jobs: Vec<Job>) {
        let requests: Vec<&WriteRequest> = jobs.iter().map(|j| &j.request).collect();
        match self.commit(&requests).await {
            Ok(done) => self.finish(jobs, done),
            Err(error) => self.retry(jobs, error).await,
        }
    }

    /// After the transaction of `jobs` failed with `error`: nobody heard
    /// success; each command is tried again alone, so one bad command cannot
    /// fail its neighbours.
    async fn retry(&mut self, jobs: Vec<Job>, error: StoreError) {
        if jobs.len() == 1 {
            tracing::error!(%error, "a write failed");
            if let Some(job) = jobs.into_iter().next() {
                let _ = job.reply.send(Err(WriteError::Store(error)));
            }
            return;
        }
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

    fn finish(&self, jobs: Vec<Job>, done: batch::Done) {
        self.feed.publish(done.events);
        for (job, answer) in jobs.into_iter().zip(done.answers) {
            // A caller that gave up does not need its answer.
            let _ = job.reply.send(answer);
        }
    }

    /// One transaction: load, decide each request in order, write, commit.
    async fn commit(&mut self, requests: &[&WriteRequest]) -> Result<batch::Done, StoreError> {
        let started = Instant::now();
        let mut tx = self.store.begin_batch().await?;
        let decided = self.decide(&mut tx.reads(), requests).await?;
        let committed = tx.commit(&decided.writes).await;
        record_batch(
            committed.is_ok(),
            requests.len(),
            decided.writes.events.len(),
            started,
        );
        committed?;
        Ok(batch::Done {
            answers: decided.answers,
            events: decided.writes.events,
        })
    }

    /// Loads what `requests` need from `reads` and decides each in order,
    /// in one batch.
    async fn decide(
        &mut self,
        reads: &mut BatchReads<'_>,
        requests: &[&WriteRequest],
    ) -> Result<Decided, StoreError> {
        let mut state = batch::Batch::new();
        let mut answers = Vec::with_capacity(requests.len());
        self.decide_into(reads, &mut state, requests, None, &mut answers)
            .await?;
        Ok(Decided {
            answers,
            writes: state.into_writes(),
        })
    }

    /// Loads what `requests` need into `state` from `reads` (over `before`,
    /// the batch in flight) and decides each in order after the commands
    /// `state` holds, pushing their answers.
    async fn decide_into(
        &mut self,
        reads: &mut BatchReads<'_>,
        state: &mut batch::Batch,
        requests: &[&WriteRequest],
        before: Option<&Writes>,
        answers: &mut Vec<Result<Outcome, WriteError>>,
    ) -> Result<(), StoreError> {
        state.load(reads, requests, before).await?;
        for request in requests {
            let current = match state.begin(request)? {
                batch::Step::Answered(answer) => {
                    answers.push(*answer);
                    continue;
                }
                batch::Step::Decide(current) => current,
            };
            let flow = match self
                .flow_for(reads, state, request, current.as_deref())
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
        Ok(())
    }

    /// The flow `request` runs, if any: for a start, the named flow or the
    /// workspace default (newest version); for a visitor's message or a
    /// restart, the flow and version the conversation's run started with.
    async fn flow_for(
        &mut self,
        tx: &mut BatchReads<'_>,
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

/// The next command, or None once the queue is closed and empty. A stop
/// closes the queue: commands queued before it still come.
async fn next_job(
    jobs: &mut mpsc::Receiver<Job>,
    stop: &mut watch::Receiver<bool>,
    stopping: &mut bool,
) -> Option<Job> {
    loop {
        tokio::select! {
            job = jobs.recv() => return job,
            changed = stop.changed(), if !*stopping => {
                if changed.is_err() || *stop.borrow() {
                    *stopping = true;
                    jobs.close();
                }
            }
        }
    }
}

/// `first` and what else is queued, `most` in all.
fn gather(first: Job, jobs: &mut mpsc::Receiver<Job>, most: usize) -> Vec<Job> {
    let mut batch = vec![first];
    while batch.len() < most {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    batch
}

/// A batch's transaction ended: counted, and timed from its first read.
fn record_batch(committed: bool, commands: usize, events: usize, started: Instant) {
    let result = if committed { "committed" } else { "failed" };
    ::metrics::counter!(crate::metrics::BATCHES, "result" => result).increment(1);
    if committed {
        ::metrics::histogram!(crate::metrics::BATCH_COMMANDS).record(commands as f64);
        ::metrics::histogram!(crate::metrics::BATCH_COMMIT).record(started.elapsed().as_secs_f64());
        tracing::debug!(commands, events, took = ?started.elapsed(), "batch committed");
    }
}

/// The thread batches commit on while the writer decides the next: a
/// runtime of its own, so a transaction's statements follow one another as
/// soon as the database answers, whatever the writer is busy with.
struct Committer {
    handle: tokio::runtime::Handle,
    done: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Committer {
    fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (done, until) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("writer-commit".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = until.await;
                });
            })?;
        Ok(Self {
            handle,
            done: Some(done),
            thread: Some(thread),
        })
    }

    fn spawn(
        &self,
        commit: impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static,
    ) -> tokio::task::JoinHandle<Result<(), StoreError>> {
        self.handle.spawn(commit)
    }

    /// Ends the thread (nothing is in flight by then).
    fn stop(mut self) {
        drop(self.done.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the writer's commit thread panicked");
        }
    }
}
