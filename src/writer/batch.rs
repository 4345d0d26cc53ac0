//! One batch while its commands are decided: what was loaded for it, the
//! state every decided command leaves for the next, and the rows to write.

use std::collections::{HashMap, HashSet};

use super::{Outcome, WriteError, WriteRequest};
use crate::{
    domain::{
        Conversation, WorkspaceId,
        flow::ValidFlow,
        lifecycle::{self, Command, Context, Event, FlowRef, Sender},
        timers::{self, WorkspaceSettings},
        values::{ConversationId, RequestId},
    },
    ids::{UlidIds, now},
    store::{BatchReads, NewRecord, Record, StoreError, StoredFlow, Tally, Writes},
};

/// A committed batch: each request's answer, in order, and its events.
pub(super) struct Done {
    pub answers: Vec<Result<Outcome, WriteError>>,
    pub events: Vec<Event>,
}

/// What a request does before it is decided.
pub(super) enum Step {
    /// It is answered already: a retry, a reused id, or no such conversation.
    Answered(Box<Result<Outcome, WriteError>>),
    /// Decide it against this conversation (None for a start).
    Decide(Option<Box<Conversation>>),
}

/// The flow a command needs.
pub(super) enum WantedFlow {
    /// The one a start names.
    Named(String),
    /// The workspace default, if any.
    Default,
    /// The version a conversation's run started with.
    Running {
        /// Its id.
        flow_id: String,
        /// Its version.
        version: i64,
    },
}

/// The flow `command` runs, given the conversation as it stands: a start runs
/// the named flow, or else the default unless an agent starts it (an agent
/// reaching out proactively talks for themselves); a visitor's message
/// matters only to a run that still waits for an answer; a restart replays
/// whatever the run reached.
pub(super) fn wanted_flow(command: &Command, current: Option<&Conversation>) -> Option<WantedFlow> {
    match (command, current) {
        (
            Command::Start {
                flow_id: Some(flow_id),
                ..
            },
            _,
        ) => Some(WantedFlow::Named(flow_id.clone())),
        (
            Command::Start {
                flow_id: None,
                agent,
                ..
            },
            _,
        ) => agent.is_none().then_some(WantedFlow::Default),
        (
            Command::SendMessage {
                sender: Sender::Visitor(_),
                ..
            },
            Some(Conversation {
                flow: Some(run), ..
            }),
        ) if run.status.is_active() => Some(WantedFlow::Running {
            flow_id: run.flow_id.clone(),
            version: run.version,
        }),
        (
            Command::Restart { .. },
            Some(Conversation {
                flow: Some(run), ..
            }),
        ) => Some(WantedFlow::Running {
            flow_id: run.flow_id.clone(),
            version: run.version,
        }),
        _ => None,
    }
}

/// The state of one batch.
pub(super) struct Batch {
    /// Conversations as they stand, after the commands decided so far.
    conversations: HashMap<ConversationId, Conversation>,
    /// First responses by (workspace, request id): loaded, or written earlier
    /// in this batch.
    records: HashMap<(WorkspaceId, String), Record>,
    /// Counters of the batch's workspaces, after the commands decided so far.
    tallies: HashMap<WorkspaceId, Tally>,
    /// Settings of the batch's workspaces.
    settings: HashMap<WorkspaceId, WorkspaceSettings>,
    /// Default flow ids read in this batch.
    defaults: HashMap<WorkspaceId, Option<String>>,
    /// Newest flow versions read in this batch.
    latest: HashMap<(WorkspaceId, String), Option<i64>>,
    /// Conversations changed, in the order first changed.
    touched: Vec<ConversationId>,
    touched_set: HashSet<ConversationId>,
    writes: Writes,
}

impl Batch {
    /// A batch with nothing loaded yet.
    pub fn new() -> Self {
        Self {
            conversations: HashMap::new(),
            records: HashMap::new(),
            tallies: HashMap::new(),
            settings: HashMap::new(),
            defaults: HashMap::new(),
            latest: HashMap::new(),
            touched: Vec::new(),
            touched_set: HashSet::new(),
            writes: Writes::default(),
        }
    }

    /// Gathers what `requests` need and the batch does not hold yet, in the
    /// order the store asks for: their workspaces' counters first (in a
    /// transaction, held until the commit), then their conversations and
    /// remembered request ids. `before` is the batch in flight, decided but
    /// not yet committed, which `reads` do not see: what it changed comes
    /// from it.
    pub async fn load(
        &mut self,
        reads: &mut BatchReads<'_>,
        requests: &[&WriteRequest],
        before: Option<&Writes>,
    ) -> Result<(), StoreError> {
        let mut workspaces: Vec<WorkspaceId> = requests
            .iter()
            .map(|r| r.workspace_id)
            .filter(|w| !self.settings.contains_key(w))
            .collect();
        workspaces.sort_unstable();
        workspaces.dedup();
        let mut unknown = Vec::new();
        for &workspace in &workspaces {
            if self.tallies.contains_key(&workspace) {
                continue;
            }
            match before.and_then(|b| b.tallies.iter().find(|(w, _)| *w == workspace)) {
                Some(&(_, tally)) => {
                    self.tallies.insert(workspace, tally);
                }
                None => unknown.push(workspace),
            }
        }
        if !unknown.is_empty() {
            self.tallies.extend(reads.tallies(&unknown).await?);
        }
        if !workspaces.is_empty() {
            let mut settings = reads.settings(&workspaces).await?;
            for workspace in workspaces {
                // A workspace without settings has the defaults; remembered
                // as such so that it is read once per batch.
                let found = settings.remove(&workspace).unwrap_or_default();
                self.settings.insert(workspace, found);
            }
        }
        let mut ids: Vec<(WorkspaceId, &ConversationId)> = Vec::new();
        for request in requests {
            let Some(id) = request.command.conversation_id() else {
                continue;
            };
            if self.conversations.contains_key(id) || ids.iter().any(|(_, known)| *known == id) {
                continue;
            }
            match before.and_then(|b| b.conversations.iter().find(|c| &c.id == id)) {
                Some(found) => {
                    self.conversations.insert(id.clone(), found.clone());
                }
                None => ids.push((request.workspace_id, id)),
            }
        }
        if !ids.is_empty() {
            for found in reads.conversations(&ids).await? {
                self.conversations.entry(found.id.clone()).or_insert(found);
            }
        }
        let mut keys: Vec<(WorkspaceId, &RequestId)> = Vec::new();
        for request in requests {
            let Some(request_id) = &request.request_id else {
                continue;
            };
            let key = (request.workspace_id, request_id.as_str().to_owned());
            if self.records.contains_key(&key) {
                continue;
            }
            let in_flight = before.and_then(|b| {
                b.idempotency.iter().find(|new| {
                    new.workspace_id == request.workspace_id && &new.request_id == request_id
                })
            });
            match in_flight {
                Some(new) => {
                    self.records.insert(key, new.record.clone());
                }
                None => keys.push((request.workspace_id, request_id)),
            }
        }
        if !keys.is_empty() {
            for (workspace, request_id, record) in reads.idempotency_records(&keys).await? {
                self.records
                    .entry((workspace, request_id))
                    .or_insert(record);
            }
        }
        Ok(())
    }

    /// Answers a retry, a reused request id or a conversation the caller
    /// cannot see; otherwise gives the conversation to decide against.
    pub fn begin(&self, request: &WriteRequest) -> Result<Step, StoreError> {
        if let Some(request_id) = &request.request_id {
            let key = (request.workspace_id, request_id.as_str().to_owned());
            if let Some(record) = self.records.get(&key) {
                if record.method == request.method && record.fingerprint == request.fingerprint {
                    tracing::debug!("replaying the first response of a retried request");
                    let outcome = serde_json::from_str(&record.response)?;
                    return Ok(Step::Answered(Box::new(Ok(outcome))));
                }
                return Ok(Step::Answered(Box::new(Err(WriteError::RequestIdReused(
                    request_id.clone(),
                )))));
            }
        }
        let Some(id) = request.command.conversation_id() else {
            return Ok(Step::Decide(None));
        };
        let visible = self.conversations.get(id).filter(|c| {
            // Another workspace's conversation, or (for a visitor key) another
            // visitor's, answers exactly like one that does not exist.
            c.workspace_id == request.workspace_id
                && (request.sees_every_conversation
                    || request.command.acting_visitor() == Some(&c.visitor_id))
        });
        Ok(match visible {
            Some(c) => Step::Decide(Some(Box::new(c.clone()))),
            None => Step::Answered(Box::new(Err(WriteError::NotFound(id.clone())))),
        })
    }

    /// The workspace's default flow id, read once per batch.
    pub async fn default_flow_id(
        &mut self,
        tx: &mut BatchReads<'_>,
        workspace_id: WorkspaceId,
    ) -> Result<Option<String>, StoreError> {
        if let Some(known) = self.defaults.get(&workspace_id) {
            return Ok(known.clone());
        }
        let found = tx.default_flow_id(workspace_id).await?;
        self.defaults.insert(workspace_id, found.clone());
        Ok(found)
    }

    /// The newest version of a flow, read once per batch.
    pub async fn latest_flow_version(
        &mut self,
        tx: &mut BatchReads<'_>,
        workspace_id: WorkspaceId,
        flow_id: &str,
    ) -> Result<Option<i64>, StoreError> {
        let key = (workspace_id, flow_id.to_owned());
        if let Some(known) = self.latest.get(&key) {
            return Ok(*known);
        }
        let found = tx
            .flow(workspace_id, flow_id, None)
            .await?
            .map(|f| f.version);
        self.latest.insert(key, found);
        Ok(found)
    }

    /// Decides `request` against `current` and, when the rules allow it,
    /// records its writes: its events get the next sequences of its
    /// workspace, its conversation's new state is what later commands see.
    pub fn decide(
        &mut self,
        request: &WriteRequest,
        current: Option<&Conversation>,
        flow: Option<&(StoredFlow, ValidFlow)>,
    ) -> Result<Result<Outcome, WriteError>, StoreError> {
        let workspace_id = request.workspace_id;
        let now = now();
        let flow = flow.map(|(stored, valid)| FlowRef {
            flow_id: &stored.flow_id,
            version: stored.version,
            flow: valid,
        });
        let context = Context {
            workspace_id,
            settings: self.settings_of(workspace_id),
            now,
        };
        let change = match lifecycle::decide(&request.command, context, current, flow, &mut UlidIds)
        {
            Ok(change) => change,
            Err(refused) => return Ok(Err(WriteError::Decide(refused))),
        };
        if change.events.is_empty() {
            return Err(StoreError::Corrupt("a change without events".into()));
        }
        let tally = self.tallies.entry(workspace_id).or_default();
        tally.count_move(current.map(|c| c.status), change.conversation.status);
        let first_sequence = tally.event_head + 1;
        tally.event_head += change.events.len() as i64;
        let event_sequence = tally.event_head;

        let conversation = change.conversation;
        let id = conversation.id.clone();
        self.writes.events.extend(
            change
                .events
                .into_iter()
                .zip(first_sequence..)
                .map(|(event, sequence)| event.committed(workspace_id, id.clone(), sequence)),
        );
        self.writes.messages.extend(change.messages);
        let outcome = Outcome {
            conversation: conversation.clone(),
            message: change.sent_message,
            event_sequence,
        };
        self.conversations.insert(id.clone(), conversation);
        // Written once, in its final state, however many commands change it.
        if self.touched_set.insert(id.clone()) {
            self.touched.push(id);
        }
        if let Some(request_id) = &request.request_id {
            let record = Record {
                method: request.method.to_owned(),
                fingerprint: request.fingerprint.clone(),
                response: serde_json::to_string(&outcome)?,
            };
            self.records.insert(
                (workspace_id, request_id.as_str().to_owned()),
                record.clone(),
            );
            self.writes.idempotency.push(NewRecord {
                workspace_id,
                request_id: request_id.clone(),
                record,
                create_time: now,
            });
        }
        Ok(Ok(outcome))
    }

    fn settings_of(&self, workspace_id: WorkspaceId) -> &WorkspaceSettings {
        static NONE: WorkspaceSettings = WorkspaceSettings { auto_close: None };
        self.settings.get(&workspace_id).unwrap_or(&NONE)
    }

    /// The rows to write: every changed conversation in its final state with
    /// its next due time, and the counters of every workspace of the batch.
    pub fn into_writes(mut self) -> Writes {
        self.writes.conversations = self
            .touched
            .iter()
            .filter_map(|id| self.conversations.remove(id))
            .collect();
        self.writes.due_times = self
            .writes
            .conversations
            .iter()
            .map(|c| timers::due_time(c, self.settings_of(c.workspace_id)))
            .collect();
        self.writes.tallies = self.tallies.into_iter().collect();
        self.writes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Status;

    #[test]
    fn a_tally_counts_a_start_and_each_move() {
        let mut tally = Tally::default();
        tally.count_move(None, Status::Open);
        tally.count_move(None, Status::Open);
        tally.count_move(Some(Status::Open), Status::Closed);
        assert_eq!(tally.counts, [1, 0, 1]);
    }
}
