//! Which events of a workspace's feed a reader may see and wants.

use super::{
    WorkspaceId,
    lifecycle::{Event, EventKind},
    message::Audience,
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

impl EventScope {
    /// True when the reader gets `event`.
    pub fn admits(&self, event: &Event) -> bool {
        event.workspace_id == self.workspace_id
            && self
                .conversation_id
                .as_ref()
                .is_none_or(|id| *id == event.conversation_id)
            && (!self.everyone_only || event.payload.audience() == Audience::Everyone)
            && (self.kinds.is_empty() || self.kinds.contains(&event.payload.event_kind()))
    }
}
