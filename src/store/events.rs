//! The durable event feed: appended with each change, read by sequence.
//!
//! Readers rely on one invariant: sequences become visible in order. It holds
//! because every write goes through the single writer connection under
//! `BEGIN IMMEDIATE` (see the module above), so transactions commit one after
//! another and AUTOINCREMENT hands out their sequences in commit order. A
//! reader that has seen sequence N has therefore seen everything before N,
//! and can resume with `sequence > N` without missing a late commit.

use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::StoreError;
use crate::domain::{
    Micros, WorkspaceId,
    lifecycle::{Event, EventKind, NewEvent},
    values::ConversationId,
};

/// Which events a reader may see and wants.
#[derive(Debug, Clone)]
pub struct EventScope {
    /// Only this workspace's events.
    pub workspace_id: WorkspaceId,
    /// Only this conversation's, when set.
    pub conversation_id: Option<ConversationId>,
    /// Only events visible to the visitor (status changes, starts, messages
    /// for everyone).
    pub everyone_only: bool,
    /// Only these kinds; empty means all.
    pub kinds: Vec<EventKind>,
}

/// Up to `limit` events in `scope` with `after < sequence <= up_to`, in order.
pub async fn read(
    conn: &mut SqliteConnection,
    scope: &EventScope,
    after: i64,
    up_to: i64,
    limit: i64,
) -> Result<Vec<Event>, StoreError> {
    let mut query = QueryBuilder::<Sqlite>::new(
        "SELECT sequence, event_id, conversation_id, create_time, payload FROM events WHERE sequence > ",
    );
    query
        .push_bind(after)
        .push(" AND sequence <= ")
        .push_bind(up_to);
    query
        .push(" AND workspace_id = ")
        .push_bind(scope.workspace_id.0);
    if let Some(conversation_id) = &scope.conversation_id {
        query
            .push(" AND conversation_id = ")
            .push_bind(conversation_id.as_str().to_owned());
    }
    if scope.everyone_only {
        query.push(" AND audience = 'everyone'");
    }
    if !scope.kinds.is_empty() {
        query.push(" AND kind IN (");
        let mut kinds = query.separated(", ");
        for kind in &scope.kinds {
            kinds.push_bind(kind.as_str());
        }
        query.push(")");
    }
    query.push(" ORDER BY sequence LIMIT ").push_bind(limit);
    let rows = query.build().fetch_all(conn).await?;
    rows.iter()
        .map(|row| {
            Ok(Event {
                sequence: row.try_get("sequence")?,
                event_id: row.try_get("event_id")?,
                conversation_id: ConversationId::from_trusted(row.try_get("conversation_id")?),
                create_time: Micros(row.try_get("create_time")?),
                payload: serde_json::from_str(&row.try_get::<String, _>("payload")?)?,
            })
        })
        .collect()
}

/// The sequence of the newest event; 0 when there is none.
pub async fn head(conn: &mut SqliteConnection) -> Result<i64, StoreError> {
    Ok(sqlx::query("SELECT COALESCE(MAX(sequence), 0) FROM events")
        .fetch_one(conn)
        .await?
        .try_get(0)?)
}

/// Appends `events` in order and returns the sequence of the last one.
pub(super) async fn append(
    conn: &mut SqliteConnection,
    workspace_id: WorkspaceId,
    conversation_id: &str,
    events: &[NewEvent],
) -> Result<Option<i64>, StoreError> {
    if events.is_empty() {
        return Ok(None);
    }
    let payloads = events
        .iter()
        .map(|e| serde_json::to_string(&e.payload))
        .collect::<Result<Vec<_>, _>>()?;
    let mut query = QueryBuilder::<Sqlite>::new(
        "INSERT INTO events (event_id, workspace_id, conversation_id, kind, audience, create_time, payload) ",
    );
    query.push_values(events.iter().zip(&payloads), |mut row, (e, payload)| {
        row.push_bind(e.event_id.as_str())
            .push_bind(workspace_id.0)
            .push_bind(conversation_id)
            .push_bind(e.payload.kind())
            .push_bind(e.payload.audience().as_str())
            .push_bind(e.create_time.0)
            .push_bind(payload.as_str());
    });
    // One statement inserts the rows in order, so their sequences are
    // consecutive and the last is the largest.
    query.push(" RETURNING sequence");
    let rows = query.build().fetch_all(conn).await?;
    let mut last = None;
    for row in rows {
        let sequence: i64 = row.try_get(0)?;
        last = Some(last.map_or(sequence, |l: i64| l.max(sequence)));
    }
    Ok(last)
}
