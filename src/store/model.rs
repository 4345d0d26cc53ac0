//! The values the store contract speaks in, beside the domain's own types:
//! what a read is filtered by, what a batch writes, and what is stored about
//! keys, flows and request ids. Neither backend owns them.

use crate::domain::{
    Conversation, Message, Micros, Status, WorkspaceId,
    credentials::Role,
    flow::FlowDefinition,
    lifecycle::Event,
    values::{AgentId, ConversationId, RequestId, VisitorId},
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

/// Which assignee a conversation list is filtered by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AssigneeFilter {
    /// Any, or none.
    #[default]
    Any,
    /// Only this agent's.
    Agent(AgentId),
    /// Only conversations nobody is assigned to.
    Unassigned,
}

/// Filters of a conversation list.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Any of these statuses; empty means all.
    pub statuses: Vec<Status>,
    /// Only this assignee (or none).
    pub assignee: AssigneeFilter,
    /// Only this visitor.
    pub visitor_id: Option<VisitorId>,
}

impl ListFilter {
    /// True when the filter names whose conversations to list (an assignee,
    /// the unassigned ones, a visitor): the page then comes with their counts
    /// per status.
    pub fn scoped(&self) -> bool {
        self.assignee != AssigneeFilter::Any || self.visitor_id.is_some()
    }
}

/// A page of conversations as read in one snapshot.
#[derive(Debug, Clone)]
pub struct ConversationRows {
    /// The page.
    pub conversations: Vec<Conversation>,
    /// The workspace's counters.
    pub tally: Tally,
    /// With a [`ListFilter::scoped`] filter: its conversations per status
    /// (whatever the filter's statuses), in [`Status::ALL`] order.
    pub scoped_counts: Option<[i64; 3]>,
}

/// A conversation whose timer is due, claimed for a while by the server
/// that read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    /// Its workspace.
    pub workspace_id: WorkspaceId,
    /// The conversation.
    pub conversation_id: ConversationId,
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

/// A workspace as the command line lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceSummary {
    /// Its id.
    pub workspace_id: WorkspaceId,
    /// Its name.
    pub name: String,
    /// When it was created.
    pub create_time: Micros,
    /// Its conversations per status: open, pending, closed.
    pub counts: [i64; 3],
    /// Its keys that are not revoked.
    pub active_keys: i64,
}

/// A key as the command line lists it: never its secret or hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySummary {
    /// Its public id.
    pub key_id: String,
    /// The name of its workspace.
    pub workspace: String,
    /// What it may do.
    pub role: Role,
    /// When it was made.
    pub create_time: Micros,
    /// When it was revoked, if it was.
    pub revoke_time: Option<Micros>,
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
    /// When each of `conversations` (in the same order) next has a timer
    /// due, if ever ([`crate::domain::timers::due_time`]).
    pub due_times: Vec<Option<Micros>>,
    /// New messages.
    pub messages: Vec<Message>,
    /// New events, with the sequences the writer assigned.
    pub events: Vec<Event>,
    /// First responses of requests that carried a request id.
    pub idempotency: Vec<NewRecord>,
    /// The counters of each workspace the batch touched, as they end.
    pub tallies: Vec<(WorkspaceId, Tally)>,
}
