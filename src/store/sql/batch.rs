//! The write path of mutations, as one transaction per batch.
//!
//! The batch writer (`crate::writer`) opens a [`BatchTx`], reads what its
//! commands need, decides every command with the pure domain rules, then
//! hands the decided [`Writes`] to [`BatchTx::commit`]. Nothing here decides
//! anything; it only reads and writes rows.
//!
//! (On a serving SQLite store the writer may instead read ahead, outside
//! the transaction, see `AheadReads`; the transaction then only writes.)
//!
//! The order of the reads is part of the contract: [`BatchTx::tallies`]
//! comes first and holds the batch's workspaces until the commit (SQLite:
//! the transaction began with the write lock; PostgreSQL: their counter
//! rows are locked), so every read after it sees every batch committed
//! before, from any server, and sequences are handed out in commit order.
//! `commit` costs a fixed handful of multi-row statements however many
//! commands the batch holds, which is what makes group commit pay.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use sqlx::pool::Pool;

use super::{
    Backend, Conn, Db,
    batch_conn::{self, WriterConn},
    conversations, counters, events, flows, idempotency, messages,
    rows::Insert,
    settings,
};
use crate::{
    domain::{
        Conversation, WorkspaceId,
        timers::WorkspaceSettings,
        values::{ConversationId, RequestId},
    },
    store::{
        StoreError,
        model::{Record, StoredFlow, Tally, Writes},
    },
};

/// The batch writer's connection, kept between batches outside its pool.
///
/// sqlx pings a connection each time it goes back to its pool (a round trip
/// to SQLite's worker thread, or to PostgreSQL), and the writer, whose
/// batches run one after another, would pay that between every two of them.
/// So the connection leaves the pool (detached) and only a batch that
/// committed puts it back here; after any failure it is dropped, which
/// closes it and rolls back what it held, and the next batch opens a fresh
/// one from the pool.
#[derive(Debug, Clone)]
pub(super) struct WriterConnection {
    pool: Pool<Db>,
    kept: Arc<Mutex<Option<WriterConn>>>,
    /// Batches open now (0 or 1): their connection is out of the pool too.
    open: Arc<AtomicUsize>,
}

/// Counts an open batch while it lives.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl WriterConnection {
    pub fn new(pool: Pool<Db>) -> Self {
        Self {
            pool,
            kept: Arc::default(),
            open: Arc::default(),
        }
    }

    /// The pool the connection comes from (for its settings).
    pub fn pool(&self) -> &Pool<Db> {
        &self.pool
    }

    /// Sets the connection gauges of the pool `name`, counting the
    /// connection held outside it: idle between batches, in use in one.
    pub fn observe(&self, name: &'static str) {
        let kept = self
            .kept
            .lock()
            .map_or(0, |kept| usize::from(kept.is_some()));
        let open = self.open.load(Ordering::Relaxed);
        crate::store::observe_pool_with(name, &self.pool, open, kept);
    }

    /// The kept connection, or a new one; counted open until dropped.
    async fn take(&self) -> Result<(WriterConn, Open), StoreError> {
        let kept = self.kept.lock().ok().and_then(|mut kept| kept.take());
        let conn = match kept {
            Some(conn) => conn,
            None => batch_conn::wrap(
                crate::store::acquired("batch", self.pool.acquire())
                    .await?
                    .detach(),
            ),
        };
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok((conn, Open(self.open.clone())))
    }

    /// Begins a batch on the kept connection, or on a new one.
    pub async fn begin(&self, backend: Backend) -> Result<BatchTx, StoreError> {
        let (mut conn, open) = self.take().await?;
        batch_conn::begin(&mut conn).await?;
        Ok(BatchTx {
            conn,
            kept: self.kept.clone(),
            backend,
            _open: open,
        })
    }

    /// Writes a batch decided outside any transaction (see `AheadReads`)
    /// in a transaction of its own, and commits it: when this returns Ok,
    /// every write is durable. After a failure the backend forgets what it
    /// remembered.
    pub async fn write_alone(&self, backend: &Backend, writes: &Writes) -> Result<(), StoreError> {
        let (mut conn, _open) = self.take().await?;
        let done = batch_conn::write_alone(&mut conn, backend, writes).await;
        match &done {
            Ok(()) => {
                backend.committed(writes);
                if let Ok(mut kept) = self.kept.lock() {
                    *kept = Some(conn);
                }
            }
            Err(_) => backend.forget(),
        }
        done
    }

    /// Closes the kept connection and the pool.
    pub async fn close(&self) {
        let kept = self.kept.lock().ok().and_then(|mut kept| kept.take());
        if let Some(conn) = kept
            && let Err(error) = sqlx::Connection::close(batch_conn::unwrap(conn)).await
        {
            tracing::warn!(%error, "closing the batch connection failed");
        }
        self.pool.close().await;
    }
}

/// An open batch transaction. Dropped without [`BatchTx::commit`], it
/// closes its connection, which rolls the transaction back.
pub struct BatchTx {
    conn: WriterConn,
    kept: Arc<Mutex<Option<WriterConn>>>,
    backend: Backend,
    _open: Open,
}

impl BatchTx {
    /// The batch's reads, in its transaction: [`Reads::tallies`] first.
    pub fn reads(&mut self) -> Reads<'_> {
        Reads::new(batch_conn::conn(&mut self.conn), &self.backend)
    }

    /// Writes the batch's rows and commits: when this returns Ok, every
    /// write is durable. After a failure nothing is known for sure: the
    /// backend forgets what it remembered.
    pub async fn commit(mut self, writes: &Writes) -> Result<(), StoreError> {
        let done = batch_conn::commit(&mut self.conn, writes).await;
        match &done {
            Ok(()) => {
                self.backend.committed(writes);
                if let Ok(mut kept) = self.kept.lock() {
                    *kept = Some(self.conn);
                }
            }
            Err(_) => self.backend.forget(),
        }
        done
    }
}

/// What a batch reads before it is decided, on one connection: in the
/// batch's transaction ([`BatchTx::reads`]), or, on a serving SQLite store,
/// ahead of it. Conversations and counters the backend remembers come from
/// memory.
pub struct Reads<'a> {
    conn: &'a mut Conn,
    backend: &'a Backend,
}

impl<'a> Reads<'a> {
    pub(super) fn new(conn: &'a mut Conn, backend: &'a Backend) -> Self {
        Self { conn, backend }
    }

    /// The counters of these workspaces (in a transaction: held for the
    /// batch; call first).
    pub async fn tallies(
        &mut self,
        workspaces: &[WorkspaceId],
    ) -> Result<HashMap<WorkspaceId, Tally>, StoreError> {
        let mut found = HashMap::new();
        let mut unknown = Vec::new();
        for &workspace in workspaces {
            match self.backend.remembered_tally(workspace) {
                Some(tally) => {
                    found.insert(workspace, tally);
                }
                None => unknown.push(workspace),
            }
        }
        if !unknown.is_empty() {
            found.extend(counters::lock_many(self.conn, &unknown).await?);
        }
        Ok(found)
    }

    /// The conversations with these ids in these workspaces (a row may be
    /// of another of the listed workspaces: the caller checks the pair).
    pub async fn conversations(
        &mut self,
        ids: &[(WorkspaceId, &ConversationId)],
    ) -> Result<Vec<Conversation>, StoreError> {
        let mut found = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        for &(workspace, id) in ids {
            match self.backend.remembered_conversation(id) {
                Some(conversation) => found.push(conversation),
                None => missing.push((workspace, id)),
            }
        }
        if !missing.is_empty() {
            found.extend(conversations::get_many(self.conn, &missing).await?);
        }
        Ok(found)
    }

    /// The remembered first responses of these request ids.
    pub async fn idempotency_records(
        &mut self,
        keys: &[(WorkspaceId, &RequestId)],
    ) -> Result<Vec<(WorkspaceId, String, Record)>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        idempotency::find_many(self.conn, keys).await
    }

    /// The settings of these workspaces, as the batch decides with them (in
    /// a transaction: read after [`Self::tallies`], so a settings change is
    /// either wholly before the batch or wholly after it).
    pub async fn settings(
        &mut self,
        workspaces: &[WorkspaceId],
    ) -> Result<HashMap<WorkspaceId, WorkspaceSettings>, StoreError> {
        settings::get_many(self.conn, workspaces).await
    }

    /// The workspace's default flow id.
    pub async fn default_flow_id(
        &mut self,
        workspace_id: WorkspaceId,
    ) -> Result<Option<String>, StoreError> {
        flows::default_flow_id(self.conn, workspace_id).await
    }

    /// A flow version (the newest when `version` is None).
    pub async fn flow(
        &mut self,
        workspace_id: WorkspaceId,
        flow_id: &str,
        version: Option<i64>,
    ) -> Result<Option<StoredFlow>, StoreError> {
        flows::get(self.conn, workspace_id, flow_id, version).await
    }
}

/// The rows of `writes`, table by table in the order they are written:
/// conversations first (messages and events refer to them).
pub(super) fn inserts(writes: &Writes) -> Result<Vec<Insert<'_>>, StoreError> {
    let mut inserts = Vec::with_capacity(5);
    if !writes.conversations.is_empty() {
        inserts.push(conversations::upsert(
            &writes.conversations,
            &writes.due_times,
        )?);
    }
    if !writes.messages.is_empty() {
        let workspaces: HashMap<&ConversationId, WorkspaceId> = writes
            .conversations
            .iter()
            .map(|c| (&c.id, c.workspace_id))
            .collect();
        let rows = writes
            .messages
            .iter()
            .map(|m| {
                workspaces
                    .get(&m.conversation_id)
                    .map(|w| (*w, m))
                    .ok_or_else(|| StoreError::Corrupt("a message without its conversation".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        inserts.push(messages::insert(&rows)?);
    }
    if !writes.events.is_empty() {
        inserts.push(events::insert(&writes.events)?);
    }
    if !writes.idempotency.is_empty() {
        inserts.push(idempotency::insert(&writes.idempotency));
    }
    if !writes.tallies.is_empty() {
        inserts.push(counters::put(&writes.tallies));
    }
    Ok(inserts)
}
