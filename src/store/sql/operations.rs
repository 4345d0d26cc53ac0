//! The store contract's operations, written once over the backend's
//! connections and transactions (`super::Backend` gives those: how each
//! backend reads, starts a write, commits). Each operation is one
//! transaction or one statement: callers never hold a connection.

use std::collections::HashMap;

use super::{
    Backend, conversations, counters, events, flows, idempotency, keys, messages, sessions,
    settings,
};
use crate::{
    domain::lifecycle::Event,
    domain::{
        Conversation, Message, Micros, WorkspaceId, scope::EventScope, timers::WorkspaceSettings,
        values::ConversationId,
    },
    store::{
        StoreError,
        model::{
            ConversationRows, DefaultFlow, DueTimer, KeySummary, ListCursor, ListFilter, NewKey,
            StoredFlow, StoredKey, Tally, WorkspaceSummary,
        },
    },
};

impl Backend {
    /// Fails unless a write transaction can write: a statement that would
    /// write (and matches no row), rolled back.
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE workspaces SET name = name WHERE 1 = 0")
            .execute(&mut *tx)
            .await?;
        tx.rollback().await?;
        Ok(())
    }

    /// The conversation with this id in this workspace.
    pub async fn conversation(
        &self,
        workspace_id: WorkspaceId,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StoreError> {
        conversations::get(&mut *self.read().await?, workspace_id, id).await
    }

    /// A page of the workspace's conversations, its counters and (for a
    /// scoped filter) the filter's counts per status, from one snapshot.
    pub async fn conversation_page(
        &self,
        workspace_id: WorkspaceId,
        filter: &ListFilter,
        cursor: Option<&ListCursor>,
        limit: i64,
    ) -> Result<ConversationRows, StoreError> {
        let mut tx = self.begin_read().await?;
        let tally = counters::get(&mut tx, workspace_id).await?;
        let page = conversations::list(&mut tx, workspace_id, filter, cursor, limit).await?;
        let scoped_counts = if filter.scoped() {
            Some(conversations::scoped_counts(&mut tx, workspace_id, filter).await?)
        } else {
            None
        };
        tx.commit().await?;
        Ok(ConversationRows {
            conversations: page,
            tally,
            scoped_counts,
        })
    }

    /// The workspace's settings; None when there is no such workspace.
    pub async fn settings(
        &self,
        workspace_id: WorkspaceId,
    ) -> Result<Option<WorkspaceSettings>, StoreError> {
        let mut found = settings::get_many(&mut *self.read().await?, &[workspace_id]).await?;
        Ok(found.remove(&workspace_id))
    }

    /// Replaces the workspace's settings and reschedules its conversations'
    /// timers by them, one after or before any batch of the workspace.
    pub async fn update_settings(
        &self,
        workspace_id: WorkspaceId,
        next: &WorkspaceSettings,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        counters::lock_many(&mut tx, &[workspace_id]).await?;
        settings::put(&mut tx, workspace_id, next).await?;
        self.commit(tx).await
    }

    /// Claims up to `limit` conversations whose timer is due at `now`, for
    /// this server until `until`.
    pub async fn claim_due(
        &self,
        now: Micros,
        until: Micros,
        limit: i64,
    ) -> Result<Vec<DueTimer>, StoreError> {
        // Most polls find nothing due. Asked on a read connection first,
        // they leave the write lock alone: on SQLite a busy writer holds it
        // nearly all the time, and a poll waiting for it held the admin
        // connection for seconds.
        if !conversations::any_due(&mut *self.read().await?, now).await? {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let claimed = conversations::claim_due(&mut tx, now, until, limit).await?;
        self.commit(tx).await?;
        Ok(claimed)
    }

    /// A conversation and a page of its thread, from one snapshot; None when
    /// the workspace has no such conversation.
    pub async fn thread_page(
        &self,
        workspace_id: WorkspaceId,
        id: &ConversationId,
        everyone_only: bool,
        after_position: i64,
        limit: i64,
    ) -> Result<Option<(Conversation, Vec<Message>)>, StoreError> {
        let mut tx = self.begin_read().await?;
        let Some(conversation) = conversations::get(&mut tx, workspace_id, id).await? else {
            return Ok(None);
        };
        let page = messages::list(
            &mut tx,
            workspace_id,
            id,
            everyone_only,
            after_position,
            limit,
        )
        .await?;
        tx.commit().await?;
        Ok(Some((conversation, page)))
    }

    /// The workspace's counters.
    pub async fn tally(&self, workspace_id: WorkspaceId) -> Result<Tally, StoreError> {
        counters::get(&mut *self.read().await?, workspace_id).await
    }

    /// Every workspace's counters.
    pub async fn tallies(&self) -> Result<HashMap<WorkspaceId, Tally>, StoreError> {
        counters::all(&mut *self.read().await?).await
    }

    /// Up to `limit` events in `scope` with `after < sequence <= up_to`.
    pub async fn read_events(
        &self,
        scope: &EventScope,
        after: i64,
        up_to: i64,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        events::read(&mut *self.feed_read().await?, scope, after, up_to, limit).await
    }

    /// The key with this id.
    pub async fn find_key(&self, key_id: &str) -> Result<Option<StoredKey>, StoreError> {
        keys::find_key(&mut *self.read().await?, key_id).await
    }

    /// Ids of keys revoked at or after `since`.
    pub async fn revoked_since(&self, since: Micros) -> Result<Vec<String>, StoreError> {
        keys::revoked_since(&mut *self.read().await?, since).await
    }

    /// Every workspace, by name.
    pub async fn workspaces(&self) -> Result<Vec<WorkspaceSummary>, StoreError> {
        keys::list_workspaces(&mut *self.read().await?).await
    }

    /// The keys of one workspace (None: of all), oldest first.
    pub async fn keys(
        &self,
        workspace_id: Option<WorkspaceId>,
    ) -> Result<Vec<KeySummary>, StoreError> {
        keys::list_keys(&mut *self.read().await?, workspace_id).await
    }

    /// The id of the workspace named `name`.
    pub async fn find_workspace(&self, name: &str) -> Result<Option<WorkspaceId>, StoreError> {
        keys::find_workspace(&mut *self.read().await?, name).await
    }

    /// Creates a workspace; None if the name is taken.
    pub async fn create_workspace(
        &self,
        name: &str,
        now: Micros,
    ) -> Result<Option<WorkspaceId>, StoreError> {
        let mut tx = self.begin_write().await?;
        let id = keys::create_workspace(&mut tx, name, now).await?;
        self.commit(tx).await?;
        Ok(id)
    }

    /// Stores a key of the workspace named `workspace`; false (and nothing
    /// stored) when there is no such workspace.
    pub async fn create_key(
        &self,
        workspace: &str,
        key: &NewKey<'_>,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let Some(workspace_id) = keys::find_workspace(&mut tx, workspace).await? else {
            return Ok(false);
        };
        keys::insert_key(&mut tx, workspace_id, key, now).await?;
        self.commit(tx).await?;
        Ok(true)
    }

    /// Revokes a key; false if there is no such key or it was revoked.
    pub async fn revoke_key(&self, key_id: &str, now: Micros) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let revoked = keys::revoke_key(&mut tx, key_id, now).await?;
        self.commit(tx).await?;
        Ok(revoked)
    }

    /// On a database with no workspace, creates `name` with `keys` and
    /// returns its id; otherwise changes nothing. Servers starting together
    /// on one database bootstrap it once.
    pub async fn bootstrap(
        &self,
        name: &str,
        keys: &[NewKey<'_>],
        now: Micros,
    ) -> Result<Option<WorkspaceId>, StoreError> {
        let mut tx = self.begin_write().await?;
        for statement in super::dialect::BOOTSTRAP_LOCK {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        if keys::count_workspaces(&mut tx).await? > 0 {
            return Ok(None);
        }
        let Some(workspace_id) = keys::create_workspace(&mut tx, name, now).await? else {
            return Ok(None);
        };
        for key in keys {
            keys::insert_key(&mut tx, workspace_id, key, now).await?;
        }
        self.commit(tx).await?;
        Ok(Some(workspace_id))
    }

    /// Stores a new flow.
    pub async fn insert_flow(
        &self,
        workspace_id: WorkspaceId,
        flow: &StoredFlow,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        flows::insert(&mut tx, workspace_id, flow).await?;
        self.commit(tx).await
    }

    /// A flow version (the newest when `version` is None) and whether the
    /// flow is the workspace's default.
    pub async fn flow(
        &self,
        workspace_id: WorkspaceId,
        flow_id: &str,
        version: Option<i64>,
    ) -> Result<Option<(StoredFlow, bool)>, StoreError> {
        let mut tx = self.begin_read().await?;
        let Some(flow) = flows::get(&mut tx, workspace_id, flow_id, version).await? else {
            return Ok(None);
        };
        let default = flows::default_flow_id(&mut tx, workspace_id).await?;
        tx.commit().await?;
        Ok(Some((flow, default.as_deref() == Some(flow_id))))
    }

    /// The newest version of each flow of the workspace, and its default.
    pub async fn flows(
        &self,
        workspace_id: WorkspaceId,
    ) -> Result<(Vec<StoredFlow>, Option<String>), StoreError> {
        let mut tx = self.begin_read().await?;
        let all = flows::list_latest(&mut tx, workspace_id).await?;
        let default = flows::default_flow_id(&mut tx, workspace_id).await?;
        tx.commit().await?;
        Ok((all, default))
    }

    /// Writes the next version of a flow, made by `next` from the newest
    /// one; None when the workspace has no such flow. Returns the version
    /// written and whether the flow is the default.
    pub async fn update_flow(
        &self,
        workspace_id: WorkspaceId,
        flow_id: &str,
        next: impl FnOnce(StoredFlow) -> StoredFlow,
    ) -> Result<Option<(StoredFlow, bool)>, StoreError> {
        let mut tx = self.begin_write().await?;
        lock_workspace(&mut tx, workspace_id).await?;
        let Some(current) = flows::get(&mut tx, workspace_id, flow_id, None).await? else {
            return Ok(None);
        };
        let flow = next(current);
        flows::insert(&mut tx, workspace_id, &flow).await?;
        let default = flows::default_flow_id(&mut tx, workspace_id).await?;
        self.commit(tx).await?;
        Ok(Some((flow, default.as_deref() == Some(flow_id))))
    }

    /// Makes `flow_id` the workspace default, or clears it with None.
    pub async fn set_default_flow(
        &self,
        workspace_id: WorkspaceId,
        flow_id: Option<&str>,
    ) -> Result<DefaultFlow, StoreError> {
        let mut tx = self.begin_write().await?;
        lock_workspace(&mut tx, workspace_id).await?;
        let flow = match flow_id {
            Some(flow_id) => match flows::get(&mut tx, workspace_id, flow_id, None).await? {
                Some(flow) => Some(flow),
                None => return Ok(DefaultFlow::NoSuchFlow),
            },
            None => None,
        };
        flows::set_default(&mut tx, workspace_id, flow_id).await?;
        self.commit(tx).await?;
        Ok(DefaultFlow::Set(flow))
    }

    /// Forgets request ids remembered before `cutoff`; returns how many.
    pub async fn purge_request_ids(&self, cutoff: Micros) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let purged = idempotency::purge_before(&mut tx, cutoff).await?;
        self.commit(tx).await?;
        Ok(purged)
    }

    /// The secret that signs visitor session tokens; `candidate` becomes it
    /// on a database that has none.
    pub async fn session_secret(
        &self,
        candidate: &[u8],
        now: Micros,
    ) -> Result<Vec<u8>, StoreError> {
        let mut tx = self.begin_write().await?;
        let secret = sessions::session_secret(&mut tx, candidate, now).await?;
        self.commit(tx).await?;
        Ok(secret)
    }

    /// Records a visitor session as revoked until `expire_time`.
    pub async fn revoke_session(
        &self,
        workspace_id: WorkspaceId,
        session_id: &str,
        expire_time: Micros,
        now: Micros,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sessions::revoke_session(&mut tx, workspace_id, session_id, expire_time, now).await?;
        self.commit(tx).await
    }

    /// Visitor sessions revoked at or after `since`, not yet expired at `now`.
    pub async fn revoked_sessions_since(
        &self,
        since: Micros,
        now: Micros,
    ) -> Result<Vec<(WorkspaceId, String)>, StoreError> {
        sessions::revoked_sessions_since(&mut *self.read().await?, since, now).await
    }

    /// Forgets revocations of sessions expired before `cutoff`.
    pub async fn purge_revoked_sessions(&self, cutoff: Micros) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let purged = sessions::purge_expired(&mut tx, cutoff).await?;
        self.commit(tx).await?;
        Ok(purged)
    }
}

/// Holds the workspace's row until the transaction ends, so that two
/// servers changing its flows do so one after the other.
async fn lock_workspace(tx: &mut super::Conn, workspace_id: WorkspaceId) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "SELECT workspace_id FROM workspaces WHERE workspace_id = $1{}",
        super::dialect::LOCK_ROWS
    ))
    .bind(workspace_id.0)
    .fetch_optional(tx)
    .await?;
    Ok(())
}
