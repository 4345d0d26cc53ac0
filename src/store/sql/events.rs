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

use serde::Deserialize;
use sqlx::{QueryBuilder, Row};

use super::{Conn, Db};
use crate::{
    domain::{
        Author, Conversation, EventPayload, Message, Micros, Status,
        lifecycle::{Event, EventKind},
        scope::EventScope,
        values::{AgentRef, ConversationId},
    },
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
        "SELECT sequence, event_id, conversation_id, create_time, kind, payload FROM {} WHERE workspace_id = ",
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
                payload: payload(row.try_get("kind")?, row.try_get("payload")?)?,
            })
        })
        .collect()
}

/// A stored payload, read as the variant its `kind` column names.
///
/// The JSON is `EventPayload`'s own (`{"type": kind, ...fields}`), but
/// reading it as the tagged enum makes serde buffer the whole document to
/// find the tag first, which was the largest cost of a catch-up read. The
/// column already says which variant it is, so the fields are read straight
/// into that variant (the `type` key is skipped as unknown).
fn payload(kind: &str, json: &str) -> Result<EventPayload, StoreError> {
    #[derive(Deserialize)]
    struct Started {
        conversation: Conversation,
    }
    #[derive(Deserialize)]
    struct StatusChanged {
        from_status: Status,
        to_status: Status,
        actor: Author,
        conversation: Conversation,
    }
    #[derive(Deserialize)]
    struct Posted {
        message: Message,
    }
    #[derive(Deserialize)]
    struct Assigned {
        from: Option<AgentRef>,
        to: Option<AgentRef>,
        actor: Author,
        conversation: Conversation,
    }
    Ok(match EventKind::from_storage(kind) {
        Some(EventKind::ConversationStarted) => {
            let Started { conversation } = serde_json::from_str(json)?;
            EventPayload::ConversationStarted { conversation }
        }
        Some(EventKind::StatusChanged) => {
            let StatusChanged {
                from_status,
                to_status,
                actor,
                conversation,
            } = serde_json::from_str(json)?;
            EventPayload::StatusChanged {
                from_status,
                to_status,
                actor,
                conversation,
            }
        }
        Some(EventKind::MessagePosted) => {
            let Posted { message } = serde_json::from_str(json)?;
            EventPayload::MessagePosted { message }
        }
        Some(EventKind::ConversationAssigned) => {
            let Assigned {
                from,
                to,
                actor,
                conversation,
            } = serde_json::from_str(json)?;
            EventPayload::ConversationAssigned {
                from,
                to,
                actor,
                conversation,
            }
        }
        // A kind this build does not know: the tagged form still reads it
        // if it is one after all, and fails clearly if not.
        None => serde_json::from_str(json)?,
    })
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
