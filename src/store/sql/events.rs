//! The durable event feed: appended with each batch, read by sequence.
//!
//! Sequences count per workspace: 1, 2, 3... Readers rely on one invariant:
//! a workspace's sequences become visible in order. It holds because every
//! batch hands them out from the workspace's counter row in the transaction
//! that writes the events, holding that row until it commits (SQLite: the
//! one writer; PostgreSQL: the row lock, whichever replica writes). A reader
//! that has seen sequence N of a workspace has therefore seen everything of
//! it before N, and can resume with `sequence > N` without missing a late
//! commit.

use sqlx::{QueryBuilder, Row};

use super::{Conn, Db};
use crate::{
    domain::{Micros, lifecycle::Event, scope::EventScope, values::ConversationId},
    store::{StoreError, rows_per_statement},
};

/// Up to `limit` events in `scope` with `after < sequence <= up_to`, in order
/// (sequences of the scope's workspace).
pub async fn read(
    conn: &mut Conn,
    scope: &EventScope,
    after: i64,
    up_to: i64,
    limit: i64,
) -> Result<Vec<Event>, StoreError> {
    let mut query = QueryBuilder::<Db>::new(format!(
        "SELECT sequence, event_id, conversation_id, create_time, payload FROM {} WHERE workspace_id = ",
        match scope.conversation_id {
            Some(_) => super::dialect::EVENTS_OF_A_CONVERSATION,
            None => "events",
        }
    ));
    query
        .push_bind(scope.workspace_id.0)
        .push(" AND sequence > ")
        .push_bind(after)
        .push(" AND sequence <= ")
        .push_bind(up_to);
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
                workspace_id: scope.workspace_id,
                sequence: row.try_get("sequence")?,
                event_id: row.try_get("event_id")?,
                conversation_id: ConversationId::from_trusted(row.try_get("conversation_id")?),
                create_time: Micros(row.try_get("create_time")?),
                payload: serde_json::from_str(&row.try_get::<String, _>("payload")?)?,
            })
        })
        .collect()
}

/// Appends committed-to-be events (sequences already assigned), a few
/// multi-row statements for any number of them.
pub async fn insert_many(conn: &mut Conn, events: &[Event]) -> Result<(), StoreError> {
    let payloads = events
        .iter()
        .map(|e| serde_json::to_string(&e.payload))
        .collect::<Result<Vec<_>, _>>()?;
    let rows: Vec<_> = events.iter().zip(&payloads).collect();
    for chunk in rows.chunks(rows_per_statement(8)) {
        let mut query = QueryBuilder::<Db>::new(
            "INSERT INTO events (workspace_id, sequence, event_id, conversation_id, kind, audience, create_time, payload) ",
        );
        query.push_values(chunk, |mut row, (e, payload)| {
            row.push_bind(e.workspace_id.0)
                .push_bind(e.sequence)
                .push_bind(e.event_id.as_str())
                .push_bind(e.conversation_id.as_str())
                .push_bind(e.payload.kind())
                .push_bind(e.payload.audience().as_str())
                .push_bind(e.create_time.0)
                .push_bind(payload.as_str());
        });
        query.build().execute(&mut *conn).await?;
    }
    Ok(())
}
