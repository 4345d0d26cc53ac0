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

use serde::{
    Deserialize, Deserializer,
    de::{DeserializeSeed, SeqAccess, Visitor},
};
use sqlx::QueryBuilder;

use super::{Conn, Db, rows::Insert};
use crate::{
    domain::{
        Author, Conversation, EventPayload, Message, Micros, Status, WorkspaceId,
        lifecycle::{Event, EventKind},
        scope::EventScope,
        values::{AgentRef, ConversationId},
    },
    store::StoreError,
};

/// Up to `limit` events in `scope` with `after < sequence <= up_to`, in order
/// (sequences of the scope's workspace).
///
/// The database hands the batch over as one value, a JSON array of
/// `[sequence, event_id, conversation_id, create_time, kind, payload]`
/// rows (the payload is the JSON stored, spliced in as it is): the driver's
/// cost of a row (a copy of every column, a hand-over between threads) is
/// then paid once per batch instead of once per event, which was most of a
/// catch-up read's time.
pub async fn read(
    conn: &mut Conn,
    scope: &EventScope,
    after: i64,
    up_to: i64,
    limit: i64,
) -> Result<Vec<Event>, StoreError> {
    use super::dialect::{AGGREGATE_TEXT, JSON_STRING};
    let quoted = |column: &str| format!("{}{column}{}", JSON_STRING.0, JSON_STRING.1);
    let mut query = QueryBuilder::<Db>::new(format!(
        "SELECT COALESCE('[' || {AGGREGATE_TEXT}('[' || sequence || ',' || {} || ',' || {} || ',' || create_time \
         || ',' || {} || ',' || payload || ']', ',') || ']', '[]') \
         FROM (SELECT sequence, event_id, conversation_id, create_time, kind, payload FROM {} WHERE workspace_id = ",
        quoted("event_id"),
        quoted("conversation_id"),
        quoted("kind"),
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
    query
        .push(" ORDER BY sequence LIMIT ")
        .push_bind(limit)
        .push(") AS batch");
    let batch: String = query.build_query_scalar().fetch_one(conn).await?;
    let mut json = serde_json::Deserializer::from_str(&batch);
    let mut events = Rows(scope.workspace_id).deserialize(&mut json)?;
    json.end()?;
    // The rows come in the subquery's order, but an aggregate does not
    // promise to keep it: sorting rows already in order is one pass.
    events.sort_by_key(|event| event.sequence);
    Ok(events)
}

/// A batch as [`read`] selects it: a JSON array of event rows.
struct Rows(WorkspaceId);

impl<'de> DeserializeSeed<'de> for Rows {
    type Value = Vec<Event>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Rows {
    type Value = Vec<Event>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of event rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut rows: A) -> Result<Self::Value, A::Error> {
        let mut events = Vec::with_capacity(rows.size_hint().unwrap_or(0));
        while let Some(event) = rows.next_element_seed(EventRow(self.0))? {
            events.push(event);
        }
        Ok(events)
    }
}

/// One row: `[sequence, event_id, conversation_id, create_time, kind, payload]`.
struct EventRow(WorkspaceId);

impl<'de> DeserializeSeed<'de> for EventRow {
    type Value = Event;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EventRow {
    type Value = Event;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("[sequence, event_id, conversation_id, create_time, kind, payload]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut row: A) -> Result<Self::Value, A::Error> {
        let missing = |column| serde::de::Error::custom(format_args!("event row without {column}"));
        let sequence = row.next_element()?.ok_or_else(|| missing("sequence"))?;
        let event_id = row.next_element()?.ok_or_else(|| missing("event_id"))?;
        let conversation_id: String = row
            .next_element()?
            .ok_or_else(|| missing("conversation_id"))?;
        let create_time = row.next_element()?.ok_or_else(|| missing("create_time"))?;
        let kind: std::borrow::Cow<'de, str> =
            row.next_element()?.ok_or_else(|| missing("kind"))?;
        let payload = row
            .next_element_seed(Payload(EventKind::from_storage(&kind)))?
            .ok_or_else(|| missing("payload"))?;
        Ok(Event {
            workspace_id: self.0,
            sequence,
            event_id,
            conversation_id: ConversationId::from_trusted(conversation_id),
            create_time: Micros(create_time),
            payload,
        })
    }
}

/// A stored payload, read as the variant its `kind` column names (`None`:
/// a kind this build does not know).
///
/// The JSON is `EventPayload`'s own (`{"type": kind, ...fields}`), but
/// reading it as the tagged enum makes serde buffer the whole document to
/// find the tag first, which was the largest cost of a catch-up read. The
/// column already says which variant it is, so the fields are read straight
/// into that variant (the `type` key is skipped as unknown).
struct Payload(Option<EventKind>);

impl<'de> DeserializeSeed<'de> for Payload {
    type Value = EventPayload;

    fn deserialize<D: Deserializer<'de>>(self, json: D) -> Result<Self::Value, D::Error> {
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
        Ok(match self.0 {
            Some(EventKind::ConversationStarted) => {
                let Started { conversation } = Started::deserialize(json)?;
                EventPayload::ConversationStarted { conversation }
            }
            Some(EventKind::StatusChanged) => {
                let StatusChanged {
                    from_status,
                    to_status,
                    actor,
                    conversation,
                } = StatusChanged::deserialize(json)?;
                EventPayload::StatusChanged {
                    from_status,
                    to_status,
                    actor,
                    conversation,
                }
            }
            Some(EventKind::MessagePosted) => {
                let Posted { message } = Posted::deserialize(json)?;
                EventPayload::MessagePosted { message }
            }
            Some(EventKind::ConversationAssigned) => {
                let Assigned {
                    from,
                    to,
                    actor,
                    conversation,
                } = Assigned::deserialize(json)?;
                EventPayload::ConversationAssigned {
                    from,
                    to,
                    actor,
                    conversation,
                }
            }
            // A kind this build does not know: the tagged form still reads it
            // if it is one after all, and fails clearly if not.
            None => EventPayload::deserialize(json)?,
        })
    }
}

/// The rows that append committed-to-be events (sequences already
/// assigned).
pub fn insert(events: &[Event]) -> Result<Insert<'_>, StoreError> {
    let mut rows = Vec::with_capacity(events.len());
    for e in events {
        rows.push([
            e.workspace_id.0.into(),
            e.sequence.into(),
            e.event_id.as_str().into(),
            e.conversation_id.as_str().into(),
            e.payload.kind().into(),
            e.payload.audience().as_str().into(),
            e.create_time.0.into(),
            serde_json::to_string(&e.payload)?.into(),
        ]);
    }
    Ok(Insert::new(
        "events",
        "INSERT INTO events (workspace_id, sequence, event_id, conversation_id, kind, audience, create_time, payload) ",
        rows,
    ))
}
