//! The values the store contract speaks in, beside the domain's own types:
//! what a read is filtered by, what a batch writes, and what is stored about
//! keys, flows and request ids. Neither backend owns them.

use crate::domain::{
    Conversation, Message, Micros, Status, WorkspaceId,
    credentials::Role,
    flow::FlowDefinition,
    lifecycle::Event,
    values::{AgentId, RequestId, VisitorId},
};

/// One workspace's counters, kept in the same transaction as every change:
/// the head of its event feed and its conversations per status (the Inbox
/// tab counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// The sequence of its newest event; 0 before the first.
    pub event_head: i64,
    /// Its conversations per status, in [`Status::ALL`] order.
    pub counts: [i64; 3],
}

impl Tally {
    /// Counts a conversation that moved from `from` (None: a new one) to `to`.
    pub fn count_move(&mut self, from: Option<Status>, to: Status) {
        if let Some(from) = from {
            self.counts[from.index()] -= 1;
        }
        self.counts[to.index()] += 1;
    }
}

/// Filters of a conversation list.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Any of these statuses; empty means all.
    pub statuses: Vec<Status>,
    /// Only this assignee.
    pub assignee_agent_id: Option<AgentId>,
    /// Only this visitor.
    pub visitor_id: Option<VisitorId>,
}

/// Where a page starts: after this (update_time, id) in newest-first order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    /// The last listed conversation's update time.
    pub update_time: Micros,
    /// The last listed conversation's id.
    pub conversation_id: String,
}

/// What the store knows of a key: enough to check a presented secret.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// The workspace it acts in.
    pub workspace_id: WorkspaceId,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of its secret part.
    pub secret_hash: Vec<u8>,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// A key to store: only the hash of its secret.
#[derive(Debug, Clone)]
pub struct NewKey<'a> {
    /// Its public id.
    pub key_id: &'a str,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of its secret part.
    pub secret_hash: &'a [u8],
}

/// One version of a flow as stored.
#[derive(Debug, Clone)]
pub struct StoredFlow {
    /// Its id.
    pub flow_id: String,
    /// Its version, from 1.
    pub version: i64,
    /// Its definition, validated when written.
    pub definition: FlowDefinition,
    /// When this version was written.
    pub create_time: Micros,
}

/// What setting a workspace's default flow found.
#[derive(Debug, Clone)]
pub enum DefaultFlow {
    /// The default is now this flow's newest version (None: cleared).
    Set(Option<StoredFlow>),
    /// The workspace has no flow with the id given; nothing changed.
    NoSuchFlow,
}

/// A mutation's first response, remembered with its request id.
#[derive(Debug, Clone)]
pub struct Record {
    /// The RPC it answered.
    pub method: String,
    /// A hash of its request.
    pub fingerprint: Vec<u8>,
    /// The JSON of its outcome.
    pub response: String,
}

/// A record to write.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// The workspace the request id belongs to.
    pub workspace_id: WorkspaceId,
    /// The request id.
    pub request_id: RequestId,
    /// The first response.
    pub record: Record,
    /// When it was answered.
    pub create_time: Micros,
}

/// Everything a batch of mutations writes.
#[derive(Debug, Default)]
pub struct Writes {
    /// Each conversation the batch created or changed, in its final state.
    pub conversations: Vec<Conversation>,
    /// New messages.
    pub messages: Vec<Message>,
    /// New events, with the sequences the writer assigned.
    pub events: Vec<Event>,
    /// First responses of requests that carried a request id.
    pub idempotency: Vec<NewRecord>,
    /// The counters of each workspace the batch touched, as they end.
    pub tallies: Vec<(WorkspaceId, Tally)>,
}
