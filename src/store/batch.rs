//! The write path of mutations, as one transaction per batch.
//!
//! This is the boundary a second backend implements: the batch writer
//! (`crate::writer`) opens a [`BatchTx`], reads what its commands need
//! (conversations, remembered request ids, counters, flows), decides every
//! command with the pure domain rules, then hands the decided [`Writes`] to
//! [`BatchTx::apply`] and commits once. Nothing here decides anything; it only
//! reads and writes rows.
//!
//! SQLite specifics: the transaction starts with `BEGIN IMMEDIATE` on the one
//! connection reserved for the batch writer, so reads inside it see exactly
//! the state the writes apply to (no other process writes conversations,
//! events or counters: one server serves a database file). `apply` costs a
//! fixed handful of multi-row statements however many commands the batch
//! holds, which is what makes group commit pay: sqlx's SQLite driver spends
//! ~50 µs per statement.

use std::collections::HashMap;

use sqlx::{Sqlite, Transaction};

use super::{
    StoreError, conversations,
    counters::{self, Tally},
    events, flows,
    idempotency::{self, NewRecord, Record},
    messages,
};
use crate::domain::{
    Conversation, Message, WorkspaceId,
    lifecycle::Event,
    values::{ConversationId, RequestId},
};

/// Everything a batch writes.
#[derive(Debug, Default)]
pub struct Writes {
    /// Each conversation the batch created or changed, in its final state.
    pub conversations: Vec<Conversation>,
    /// New messages.
    pub messages: Vec<Message>,
    /// New events, with the sequences the writer assigned.
    pub events: Vec<Event>,
    /// First responses of requests that carried a request id.
    pub idempotency: Vec<NewRecord>,
    /// The counters of each workspace the batch touched, as they end.
    pub tallies: Vec<(WorkspaceId, Tally)>,
}

/// An open batch transaction.
pub struct BatchTx {
    tx: Transaction<'static, Sqlite>,
}

impl BatchTx {
    pub(super) fn new(tx: Transaction<'static, Sqlite>) -> Self {
        Self { tx }
    }

    /// The conversations with these ids (any workspace: the caller checks).
    pub async fn conversations(
        &mut self,
        ids: &[&ConversationId],
    ) -> Result<Vec<Conversation>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        conversations::get_many(&mut self.tx, ids).await
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

    /// The counters of these workspaces.
    pub async fn tallies(
        &mut self,
        workspaces: &[WorkspaceId],
    ) -> Result<HashMap<WorkspaceId, Tally>, StoreError> {
        counters::get_many(&mut self.tx, workspaces).await
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
    ) -> Result<Option<flows::StoredFlow>, StoreError> {
        flows::get(&mut self.tx, workspace_id, flow_id, version).await
    }

    /// Writes the batch's rows: a few multi-row statements in all.
    pub async fn apply(&mut self, writes: &Writes) -> Result<(), StoreError> {
        let tx = &mut *self.tx;
        if !writes.conversations.is_empty() {
            let all: Vec<_> = writes.conversations.iter().collect();
            conversations::upsert(tx, &all).await?;
        }
        if !writes.messages.is_empty() {
            let all: Vec<_> = writes.messages.iter().collect();
            messages::insert_many(tx, &all).await?;
        }
        if !writes.events.is_empty() {
            events::insert_many(tx, &writes.events).await?;
        }
        if !writes.idempotency.is_empty() {
            idempotency::insert_many(tx, &writes.idempotency).await?;
        }
        counters::put_many(tx, &writes.tallies).await?;
        Ok(())
    }

    /// Commits the batch: when this returns Ok, every write is durable.
    pub async fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit().await?)
    }
}
