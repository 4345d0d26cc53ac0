//! The conversation.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::flow::FlowRun;
pub use super::status::Status;
use super::values::{AgentRef, ConversationId, Micros, VisitorId};

/// The tenant a conversation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkspaceId(pub i64);

/// A live-chat conversation between one visitor and the sales team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// Its id.
    pub id: ConversationId,
    /// Its tenant.
    pub workspace_id: WorkspaceId,
    /// The visitor it is with.
    pub visitor_id: VisitorId,
    /// The current status.
    pub status: Status,
    /// The agent who owns it: the one who started it, the one it was
    /// assigned to, or the first agent who replied to it unassigned. Status
    /// changes leave it as it is.
    pub assignee: Option<AgentRef>,
    /// When it started.
    pub create_time: Micros,
    /// When anything last changed.
    pub update_time: Micros,
    /// When the status last changed.
    pub status_change_time: Micros,
    /// When it was closed; set exactly when CLOSED.
    pub close_time: Option<Micros>,
    /// Starts at 1 and grows by one on every mutation; the etag derives from it.
    pub version: i64,
    /// Messages in the thread.
    pub message_count: i64,
    /// Messages in the thread that the visitor can see.
    pub everyone_message_count: i64,
    /// The conversation's flow run, when it runs one.
    #[serde(default)]
    pub flow: Option<FlowRun>,
    /// When a snoozed PENDING conversation goes back to OPEN by itself; set
    /// only while snoozed.
    #[serde(default)]
    pub snooze_end_time: Option<Micros>,
}

impl Conversation {
    /// The conversation a start makes, before its first event: open, at
    /// version 0, every time `now`.
    pub fn blank(
        id: ConversationId,
        workspace_id: WorkspaceId,
        visitor_id: VisitorId,
        assignee: Option<AgentRef>,
        now: Micros,
    ) -> Self {
        Self {
            id,
            workspace_id,
            visitor_id,
            status: Status::Open,
            assignee,
            create_time: now,
            update_time: now,
            status_change_time: now,
            close_time: None,
            version: 0,
            message_count: 0,
            everyone_message_count: 0,
            flow: None,
            snooze_end_time: None,
        }
    }

    /// An opaque tag that changes on every mutation. It hashes the id with the
    /// version so that one conversation's etag never matches another's.
    pub fn etag(&self) -> String {
        let digest = Sha256::new()
            .chain_update(self.id.as_str().as_bytes())
            .chain_update(b":")
            .chain_update(self.version.to_be_bytes())
            .finalize();
        hex::encode(&digest[..8])
    }

    /// True exactly when the widget offers "Restart conversation".
    pub fn restart_available(&self) -> bool {
        self.status == Status::Closed
    }
}
