//! Reads: one conversation, the conversation list with its status counts, and
//! a thread. Page tokens are opaque to clients and bound to the filters they
//! were issued for.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{App, AppError, Caller, FieldViolation};
use crate::{
    domain::{
        Conversation, Message, Micros, Status, WorkspaceId,
        credentials::Role,
        values::{ConversationId, VisitorId},
    },
    store::{AssigneeFilter, ListCursor, ListFilter},
};

/// Page size when the request gives none.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page; larger requests are served this many.
pub const MAX_PAGE_SIZE: u32 = 500;

/// A page of conversations and the Inbox counts, from one snapshot.
#[derive(Debug, Clone)]
pub struct ConversationPage {
    /// The page.
    pub conversations: Vec<Conversation>,
    /// The token of the next page; `None` on the last.
    pub next_page_token: Option<String>,
    /// Conversations of the workspace per status, in [`Status::ALL`] order
    /// (for a visitor key: of that visitor).
    pub status_counts: [i64; 3],
    /// With an assignee, unassigned or visitor filter: the conversations
    /// it selects per status, whatever the statuses filter says.
    pub filtered_status_counts: Option<[i64; 3]>,
    /// The event feed head the snapshot reflects.
    pub as_of_sequence: i64,
}

/// A page of a thread.
#[derive(Debug, Clone)]
pub struct MessagePage {
    /// The messages, oldest first.
    pub messages: Vec<Message>,
    /// The token of the next page; `None` on the last.
    pub next_page_token: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct ConversationToken {
    /// update_time of the last row.
    u: i64,
    /// conversation_id of the last row.
    i: String,
    /// Hash of the filters.
    f: String,
}

#[derive(Serialize, Deserialize)]
struct MessageToken {
    /// Position of the last row.
    p: i64,
    /// The conversation.
    c: String,
}

fn encode<T: Serialize>(token: &T) -> String {
    // Serializing these plain structs cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(token).unwrap_or_default())
}

fn decode<T: for<'de> Deserialize<'de>>(token: &str) -> Result<T, AppError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| AppError::InvalidPageToken)?;
    serde_json::from_slice(&bytes).map_err(|_| AppError::InvalidPageToken)
}

/// What a conversations page token is bound to: the workspace that was
/// listed and the filters. Another workspace's token, like one issued for
/// other filters, is refused as not valid for the request, exactly like a
/// token that was never issued.
fn filter_hash(workspace: WorkspaceId, filter: &ListFilter) -> String {
    let mut statuses: Vec<_> = filter.statuses.iter().map(|s| s.as_str()).collect();
    statuses.sort_unstable();
    statuses.dedup();
    let digest = Sha256::new()
        .chain_update(b"w:")
        .chain_update(workspace.0.to_string().as_bytes())
        .chain_update(b"|s:")
        .chain_update(statuses.join(",").as_bytes())
        .chain_update(b"|a:")
        .chain_update(match &filter.assignee {
            AssigneeFilter::Agent(agent_id) => agent_id.as_str().as_bytes(),
            AssigneeFilter::Any | AssigneeFilter::Unassigned => b"",
        })
        // Only when set, so that the tokens of the other filters stay as
        // they were issued before it existed.
        .chain_update(match filter.assignee {
            AssigneeFilter::Unassigned => b"|u".as_slice(),
            AssigneeFilter::Any | AssigneeFilter::Agent(_) => b"",
        })
        .chain_update(b"|v:")
        .chain_update(
            filter
                .visitor_id
                .as_ref()
                .map_or("", |v| v.as_str())
                .as_bytes(),
        )
        .finalize();
    hex::encode(&digest[..8])
}

/// Pages are read with one row more than `limit`: when that row came back,
/// there is a next page. Cuts the page to `limit` and makes the token of the
/// page after it from its last row.
fn next_page<T>(page: &mut Vec<T>, limit: u32, token: impl FnOnce(&T) -> String) -> Option<String> {
    let limit = limit as usize;
    if page.len() <= limit {
        return None;
    }
    page.truncate(limit);
    page.last().map(token)
}

fn page_limit(page_size: u32) -> u32 {
    match page_size {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

impl App {
    /// Checks that a visitor key names the visitor whose conversation it reads.
    fn visible_to(
        caller: &Caller,
        conversation: &Conversation,
        visitor_id: Option<&VisitorId>,
    ) -> bool {
        match visitor_id {
            Some(visitor_id) => conversation.visitor_id == *visitor_id,
            None => caller.role == Role::Agent,
        }
    }

    fn require_visitor_for_visitor_keys(
        caller: &Caller,
        visitor_id: Option<&VisitorId>,
    ) -> Result<(), AppError> {
        caller.require_conversation_access()?;
        caller.require_own_visitor(visitor_id)?;
        if caller.role == Role::Visitor && visitor_id.is_none() {
            return Err(AppError::InvalidArgument(vec![FieldViolation {
                field: "visitor_id".into(),
                description:
                    "is required with a visitor key: name the visitor whose conversation this is"
                        .into(),
            }]));
        }
        Ok(())
    }

    /// One conversation, if the caller can see it.
    pub async fn get_conversation(
        &self,
        caller: &Caller,
        id: &ConversationId,
        visitor_id: Option<&VisitorId>,
    ) -> Result<Conversation, AppError> {
        Self::require_visitor_for_visitor_keys(caller, visitor_id)?;
        self.store
            .conversation(caller.workspace_id, id)
            .await?
            .filter(|c| Self::visible_to(caller, c, visitor_id))
            .ok_or_else(|| AppError::NotFound(id.as_str().to_owned()))
    }

    /// A page of the workspace's conversations, newest update first. A
    /// visitor key lists the conversations of the visitor it names, and
    /// their counts only.
    pub async fn list_conversations(
        &self,
        caller: &Caller,
        filter: ListFilter,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<ConversationPage, AppError> {
        Self::require_visitor_for_visitor_keys(caller, filter.visitor_id.as_ref())?;
        let hash = filter_hash(caller.workspace_id, &filter);
        let cursor = match page_token {
            Some(token) => {
                let token: ConversationToken = decode(token)?;
                if token.f != hash {
                    return Err(AppError::InvalidPageToken);
                }
                Some(ListCursor {
                    update_time: Micros(token.u),
                    conversation_id: token.i,
                })
            }
            None => None,
        };
        let limit = page_limit(page_size);
        // One read transaction: the page, the counts and the head agree.
        let rows = self
            .store
            .conversation_page(
                caller.workspace_id,
                &filter,
                cursor.as_ref(),
                i64::from(limit) + 1,
            )
            .await?;
        let mut page = rows.conversations;
        let next_page_token = next_page(&mut page, limit, |last| {
            encode(&ConversationToken {
                u: last.update_time.0,
                i: last.id.as_str().to_owned(),
                f: hash,
            })
        });
        let status_counts = match (caller.role, rows.scoped_counts) {
            (Role::Agent, _) => rows.tally.counts,
            // A visitor's filter always names the visitor.
            (_, counts) => counts.unwrap_or_default(),
        };
        Ok(ConversationPage {
            conversations: page,
            next_page_token,
            status_counts,
            filtered_status_counts: rows.scoped_counts,
            as_of_sequence: rows.tally.event_head,
        })
    }

    /// A page of a conversation's thread, oldest first. Visitor keys see only
    /// messages for everyone.
    pub async fn list_messages(
        &self,
        caller: &Caller,
        id: &ConversationId,
        visitor_id: Option<&VisitorId>,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<MessagePage, AppError> {
        Self::require_visitor_for_visitor_keys(caller, visitor_id)?;
        let after_position = match page_token {
            Some(token) => {
                let token: MessageToken = decode(token)?;
                if token.c != id.as_str() {
                    return Err(AppError::InvalidPageToken);
                }
                token.p
            }
            None => 0,
        };
        let limit = page_limit(page_size);
        let everyone_only = !caller.role.sees_agents_only();
        let mut page = self
            .store
            .thread_page(
                caller.workspace_id,
                id,
                everyone_only,
                after_position,
                i64::from(limit) + 1,
            )
            .await?
            .filter(|(c, _)| Self::visible_to(caller, c, visitor_id))
            .ok_or_else(|| AppError::NotFound(id.as_str().to_owned()))?
            .1;
        let next_page_token = next_page(&mut page, limit, |last| {
            encode(&MessageToken {
                p: last.position,
                c: id.as_str().to_owned(),
            })
        });
        Ok(MessagePage {
            messages: page,
            next_page_token,
        })
    }
}

/// The count of `status` among counts in [`Status::ALL`] order.
pub fn count_of(counts: &[i64; 3], status: Status) -> i64 {
    counts[status.index()]
}
