//! Reading the event feed: who may watch what, and the checks on a cursor.
//! The feed itself (`crate::feed`) serves the events.

use std::sync::Arc;

use super::{App, AppError, Caller, FieldViolation, StreamPermit};
use crate::{
    domain::{
        credentials::Role,
        lifecycle::{Event, EventKind},
        scope::EventScope,
        values::{ConversationId, VisitorId},
    },
    feed::Subscription,
};

/// Largest `ListEvents` page.
pub const MAX_EVENT_PAGE: u32 = 1000;
/// `ListEvents` page when none is asked for.
pub const DEFAULT_EVENT_PAGE: u32 = 100;

/// What a subscriber asks for.
#[derive(Debug, Clone)]
pub struct EventQuery {
    /// Deliver events after this sequence of the workspace's feed; 0 means
    /// from the oldest.
    pub after_sequence: i64,
    /// Only this conversation's events. Required for visitor keys.
    pub conversation_id: Option<ConversationId>,
    /// The conversation's visitor. Required for visitor keys.
    pub visitor_id: Option<VisitorId>,
    /// Only these kinds; empty means all.
    pub kinds: Vec<EventKind>,
}

/// A page of the feed, for pollers.
#[derive(Debug, Clone)]
pub struct EventPage {
    /// Events in order.
    pub events: Vec<Arc<Event>>,
    /// Pass as `after_sequence` next time; past filtered-out events too.
    pub next_after_sequence: i64,
    /// The newest committed sequence when the page was read.
    pub head_sequence: i64,
}

fn invalid(field: &str, description: &str) -> FieldViolation {
    FieldViolation {
        field: field.into(),
        description: description.into(),
    }
}

impl App {
    /// Checks the query against the caller's role, the data and the current
    /// head, and returns the scope to read.
    async fn event_scope(
        &self,
        caller: &Caller,
        query: &EventQuery,
    ) -> Result<EventScope, AppError> {
        caller.require_conversation_access()?;
        if query.after_sequence < 0 {
            return Err(AppError::InvalidArgument(vec![invalid(
                "after_sequence",
                "must not be negative",
            )]));
        }
        if query.visitor_id.is_some() && query.conversation_id.is_none() {
            return Err(AppError::InvalidArgument(vec![invalid(
                "visitor_id",
                "narrows a conversation_id; give the conversation too",
            )]));
        }
        caller.require_own_visitor(query.visitor_id.as_ref())?;
        if caller.role == Role::Visitor {
            let missing: Vec<_> = [
                ("conversation_id", query.conversation_id.is_some()),
                ("visitor_id", query.visitor_id.is_some()),
            ]
            .into_iter()
            .filter(|(_, given)| !given)
            .map(|(field, _)| invalid(field, "is required with a visitor key"))
            .collect();
            if !missing.is_empty() {
                return Err(AppError::InvalidArgument(missing));
            }
        }
        if let Some(id) = &query.conversation_id {
            let visible = self
                .store
                .conversation(caller.workspace_id, id)
                .await?
                .is_some_and(|c| query.visitor_id.as_ref().is_none_or(|v| *v == c.visitor_id));
            if !visible {
                return Err(AppError::NotFound(id.as_str().to_owned()));
            }
        }
        let mut head = self.feed.head(caller.workspace_id);
        if query.after_sequence > head {
            // Perhaps a cursor from another server, ahead of this one.
            head = self.feed.head_in_store(caller.workspace_id).await?;
        }
        if query.after_sequence > head {
            return Err(AppError::CursorAheadOfHead {
                after: query.after_sequence,
                head,
            });
        }
        Ok(EventScope {
            workspace_id: caller.workspace_id,
            conversation_id: query.conversation_id.clone(),
            everyone_only: !caller.role.sees_agents_only(),
            kinds: query.kinds.clone(),
        })
    }

    /// A page of the feed after `query.after_sequence`.
    pub async fn list_events(
        &self,
        caller: &Caller,
        query: &EventQuery,
        page_size: u32,
    ) -> Result<EventPage, AppError> {
        let scope = self.event_scope(caller, query).await?;
        let limit = match page_size {
            0 => DEFAULT_EVENT_PAGE,
            n => n.min(MAX_EVENT_PAGE),
        } as usize;
        let read = self.feed.page(&scope, query.after_sequence, limit).await?;
        Ok(EventPage {
            events: read.events,
            next_after_sequence: read.scanned,
            head_sequence: read.head,
        })
    }

    /// Opens a stream of the feed after `query.after_sequence`, counted
    /// against the stream limits until the returned permit is dropped. It
    /// ends with `FeedEnd::Revoked` if the caller's key is revoked meanwhile
    /// (or, for a visitor session, when the session is revoked or expires).
    pub async fn watch_events(
        &self,
        caller: &Caller,
        query: &EventQuery,
    ) -> Result<(Subscription, StreamPermit), AppError> {
        let scope = self.event_scope(caller, query).await?;
        let permit = self.limits.open_stream(&caller.stream_owner())?;
        let revoked = self.credentials_end(caller);
        Ok((
            self.feed.subscribe(scope, query.after_sequence, revoked),
            permit,
        ))
    }
}
