//! Persists a domain [`Change`]: the conversation, its messages and its
//! events, inside the caller's transaction.

use sqlx::SqliteConnection;

use super::{StoreError, conversations, events, messages};
use crate::domain::Change;

/// What applying a change ran into.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The conversation's stored version moved since it was read: the caller
    /// read outside this transaction, a bug.
    #[error("conversation changed underneath the transaction")]
    Conflict,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes `change`; returns the sequence of its last event.
pub async fn apply(conn: &mut SqliteConnection, change: &Change) -> Result<i64, ApplyError> {
    let conversation = &change.conversation;
    if change.created {
        conversations::insert(conn, conversation).await?;
    } else if !conversations::update(conn, conversation).await? {
        return Err(ApplyError::Conflict);
    }
    messages::insert(conn, &change.messages).await?;
    let last = events::append(
        conn,
        conversation.workspace_id,
        conversation.id.as_str(),
        &change.events,
    )
    .await?;
    last.ok_or_else(|| StoreError::Corrupt("a change without events".into()).into())
}
