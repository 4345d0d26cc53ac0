//! The two impure inputs of every decision: the wall clock and new ids.
//! The domain takes both as arguments; the writer and the use cases get them
//! here.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::domain::{
    Micros,
    lifecycle::IdSource,
    values::{ConversationId, MessageId},
};

/// The wall clock, in microseconds.
pub fn now() -> Micros {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    Micros(micros)
}

/// ULID-based ids: sortable by creation time, unguessable enough to be
/// opaque, and prefixed so a stray id says what it names.
pub struct UlidIds;

impl IdSource for UlidIds {
    fn conversation_id(&mut self) -> ConversationId {
        ConversationId::from_trusted(format!("conv_{}", ulid::Ulid::new()))
    }

    fn message_id(&mut self) -> MessageId {
        MessageId::from_trusted(format!("msg_{}", ulid::Ulid::new()))
    }

    fn event_id(&mut self) -> String {
        format!("evt_{}", ulid::Ulid::new())
    }
}
