//! The write path of mutations, as one transaction per batch.
//!
//! The batch writer (`crate::writer`) opens a [`BatchTx`], reads what its
//! commands need, decides every command with the pure domain rules, then
//! hands the decided [`Writes`] to [`BatchTx::commit`]. Nothing here decides
//! anything; it only reads and writes rows.
//!
//! The order of the reads is part of the contract: [`BatchTx::tallies`]
//! comes first and holds the batch's workspaces until the commit (SQLite:
//! the transaction began with the write lock; PostgreSQL: their counter
//! rows are locked), so every read after it sees every batch committed
//! before, from any server, and sequences are handed out in commit order.
//! `commit` costs a fixed handful of multi-row statements however many
//! commands the batch holds, which is what makes group commit pay.

use std::collections::HashMap;

use sqlx::Transaction;

use super::{Backend, Db, conversations, counters, events, flows, idempotency, messages, settings};
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

/// An open batch transaction.
pub struct BatchTx {
    tx: Transaction<'static, Db>,
    backend: Backend,
}

impl BatchTx {
    pub(super) fn new(tx: Transaction<'static, Db>, backend: Backend) -> Self {
        Self { tx, backend }
    }

    /// The counters of these workspaces, held for the batch: call first.
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
            found.extend(counters::lock_many(&mut self.tx, &unknown).await?);
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
            found.extend(conversations::get_many(&mut self.tx, &missing).await?);
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
        idempotency::find_many(&mut self.tx, keys).await
    }

    /// The settings of these workspaces, as the batch decides with them
    /// (read after [`Self::tallies`], so a settings change is either wholly
    /// before the batch or wholly after it).
    pub async fn settings(
        &mut self,
        workspaces: &[WorkspaceId],
    ) -> Result<HashMap<WorkspaceId, WorkspaceSettings>, StoreError> {
        settings::get_many(&mut self.tx, workspaces).await
    }

    /// The workspace's default flow id.
    pub async fn default_flow_id(
        &mut self,
        workspace_id: WorkspaceId,
    ) -> Result<Option<String>, StoreError> {
        flows::default_flow_id(&mut self.tx, workspace_id).await
    }

    /// A flow version (the newest when `version` is None).
    pub async fn flow(
        &mut self,
        workspace_id: WorkspaceId,
        flow_id: &str,
        version: Option<i64>,
    ) -> Result<Option<StoredFlow>, StoreError> {
        flows::get(&mut self.tx, workspace_id, flow_id, version).await
    }

    /// Writes the batch's rows and commits: when this returns Ok, every
    /// write is durable. After a failure nothing is known for sure: the
    /// backend forgets what it remembered.
    pub async fn commit(mut self, writes: &Writes) -> Result<(), StoreError> {
        let done = async {
            write(&mut self.tx, writes).await?;
            self.tx.commit().await?;
            Ok::<_, StoreError>(())
        }
        .await;
        match &done {
            Ok(()) => self.backend.committed(writes),
            Err(_) => self.backend.forget(),
        }
        done
    }
}

async fn write(tx: &mut super::Conn, writes: &Writes) -> Result<(), StoreError> {
    if !writes.conversations.is_empty() {
        conversations::upsert(tx, &writes.conversations, &writes.due_times).await?;
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
        messages::insert_many(tx, &rows).await?;
    }
    if !writes.events.is_empty() {
        events::insert_many(tx, &writes.events).await?;
    }
    if !writes.idempotency.is_empty() {
        idempotency::insert_many(tx, &writes.idempotency).await?;
    }
    counters::put_many(tx, &writes.tallies).await
}
