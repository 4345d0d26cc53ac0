//! The status rules and what each mutation writes.
//!
//! [`decide`] is the whole rule book as one pure function: given a command,
//! the conversation as it stands and the time, it returns the [`Change`] to
//! persist (the new conversation state, the messages and the events) or the
//! reason it is refused. The store writes a `Change` in one transaction.

use serde::{Deserialize, Serialize};

use super::conversation::{Conversation, Status, WorkspaceId};
use super::flow::{self, BotOutput, FlowRun, ValidFlow};
use super::message::{Audience, Author, Message, MessageContent, Transactional, TransactionalKind};
use super::timers::{self, Due, WorkspaceSettings};
use super::values::{AgentRef, ConversationId, Label, MessageId, Micros, VisitorId};

/// Something a caller can do to a conversation (other than writing in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// An agent closes it.
    Close,
    /// An agent marks it pending.
    MarkPending,
    /// An agent reopens it.
    Reopen,
    /// The visitor restarts it.
    Restart,
    /// The visitor writes.
    VisitorMessage,
    /// An agent writes to the visitor.
    AgentMessage,
    /// An agent writes a note only agents see.
    AgentNote,
}

/// Why a change is not allowed in the current status. Each has a stable
/// reason and a message that says what to do instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The visitor wrote to a closed conversation.
    #[error("the conversation is closed; restart it to continue")]
    ClosedToVisitor,
    /// An agent wrote to a closed conversation.
    #[error("the conversation is closed; reopen it to write in it")]
    ClosedToAgent,
    /// An agent marked a closed conversation pending.
    #[error("the conversation is closed; reopen it before marking it pending")]
    ClosedCannotPend,
    /// Close on a closed conversation.
    #[error("the conversation is already closed")]
    AlreadyClosed,
    /// Mark pending on a pending conversation.
    #[error("the conversation is already pending")]
    AlreadyPending,
    /// Reopen on an open conversation.
    #[error("the conversation is already open")]
    AlreadyOpen,
    /// Restart on a conversation that is not closed.
    #[error("only a closed conversation can be restarted; this one is {0}")]
    NotClosed(&'static str),
    /// An assignment to the agent the conversation is assigned to already
    /// (or an unassignment of an unassigned one).
    #[error("the conversation is already assigned that way")]
    AssigneeUnchanged,
    /// A timer fired on a conversation that nothing is due on any more: it
    /// changed since the timer was read (a reply, an agent's action).
    #[error("nothing is due on the conversation")]
    NothingDue,
}

impl Refusal {
    /// The stable reason clients branch on.
    pub fn reason(self) -> &'static str {
        match self {
            Self::ClosedToVisitor | Self::ClosedToAgent | Self::ClosedCannotPend => {
                "CONVERSATION_CLOSED"
            }
            Self::AlreadyClosed => "CONVERSATION_ALREADY_CLOSED",
            Self::AlreadyPending => "CONVERSATION_ALREADY_PENDING",
            Self::AlreadyOpen => "CONVERSATION_ALREADY_OPEN",
            Self::NotClosed(_) => "CONVERSATION_NOT_CLOSED",
            Self::AssigneeUnchanged => "ASSIGNEE_UNCHANGED",
            Self::NothingDue => "NOTHING_DUE",
        }
    }
}

/// The status table: what `action` does to a conversation in `from`.
pub fn next_status(from: Status, action: Action) -> Result<Status, Refusal> {
    use Action::*;
    use Status::*;
    match (from, action) {
        (Open | Pending, Close) => Ok(Closed),
        (Closed, Close) => Err(Refusal::AlreadyClosed),

        (Open, MarkPending) => Ok(Pending),
        (Pending, MarkPending) => Err(Refusal::AlreadyPending),
        (Closed, MarkPending) => Err(Refusal::ClosedCannotPend),

        (Open, Reopen) => Err(Refusal::AlreadyOpen),
        (Pending | Closed, Reopen) => Ok(Open),

        (Open, Restart) => Err(Refusal::NotClosed("open")),
        (Pending, Restart) => Err(Refusal::NotClosed("pending")),
        (Closed, Restart) => Ok(Open),

        (Open | Pending, VisitorMessage) => Ok(Open),
        (Closed, VisitorMessage) => Err(Refusal::ClosedToVisitor),

        (Open, AgentMessage) => Ok(Open),
        (Pending, AgentMessage) => Ok(Pending),
        (Closed, AgentMessage) => Err(Refusal::ClosedToAgent),

        // A note changes nothing the visitor sees, so it is welcome in any
        // status, a closed conversation's included.
        (status, AgentNote) => Ok(status),
    }
}

/// Who writes a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sender {
    /// An agent.
    Agent(AgentRef),
    /// The visitor.
    Visitor(VisitorId),
}

/// A mutation a caller asks for. Serialized, it is the fingerprint a retried
/// `request_id` is compared with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Start a new OPEN conversation.
    Start {
        /// With whom.
        visitor_id: VisitorId,
        /// The agent starting it proactively.
        agent: Option<AgentRef>,
        /// The flow to run; `None` for the workspace default, if any.
        #[serde(default)]
        flow_id: Option<String>,
    },
    /// Write a message.
    SendMessage {
        /// Where.
        conversation_id: ConversationId,
        /// Who.
        sender: Sender,
        /// What; never transactional.
        content: MessageContent,
        /// Who may read it: an agent's note is for agents only; a visitor's
        /// message is always for everyone.
        audience: Audience,
    },
    /// Close, mark pending or reopen (an agent's status change).
    ChangeStatus {
        /// Which conversation.
        conversation_id: ConversationId,
        /// Close, MarkPending or Reopen.
        action: AgentAction,
        /// Who.
        agent: AgentRef,
        /// Apply only at this etag.
        etag: Option<String>,
        /// For MarkPending: snooze until then, when the conversation goes
        /// back to OPEN by itself.
        #[serde(default)]
        snooze_end_time: Option<Micros>,
    },
    /// An agent gives the conversation to an agent, or to nobody.
    Assign {
        /// Which conversation.
        conversation_id: ConversationId,
        /// Who assigns.
        agent: AgentRef,
        /// To whom; `None` unassigns.
        assignee: Option<AgentRef>,
        /// Apply only at this etag.
        etag: Option<String>,
    },
    /// The server's timer: whatever is due on the conversation now (its
    /// snooze ends, or it closes for inactivity), or nothing.
    Fire {
        /// Which conversation.
        conversation_id: ConversationId,
    },
    /// The visitor restarts a closed conversation.
    Restart {
        /// Which conversation.
        conversation_id: ConversationId,
        /// Who; must be its visitor.
        visitor_id: VisitorId,
    },
}

/// The status changes agents make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentAction {
    /// Close it.
    Close,
    /// Mark it pending.
    MarkPending,
    /// Reopen it.
    Reopen,
}

impl AgentAction {
    fn action(self) -> Action {
        match self {
            Self::Close => Action::Close,
            Self::MarkPending => Action::MarkPending,
            Self::Reopen => Action::Reopen,
        }
    }

    fn transactional_kind(self) -> TransactionalKind {
        match self {
            Self::Close => TransactionalKind::Closed,
            Self::MarkPending => TransactionalKind::MarkedPending,
            Self::Reopen => TransactionalKind::Reopened,
        }
    }
}

impl Command {
    /// The conversation the command acts on; `None` for a start.
    pub fn conversation_id(&self) -> Option<&ConversationId> {
        match self {
            Self::Start { .. } => None,
            Self::SendMessage {
                conversation_id, ..
            }
            | Self::ChangeStatus {
                conversation_id, ..
            }
            | Self::Assign {
                conversation_id, ..
            }
            | Self::Fire { conversation_id }
            | Self::Restart {
                conversation_id, ..
            } => Some(conversation_id),
        }
    }

    /// The visitor the command acts as, if it acts as one.
    pub fn acting_visitor(&self) -> Option<&VisitorId> {
        match self {
            Self::Start { visitor_id, .. } | Self::Restart { visitor_id, .. } => Some(visitor_id),
            Self::SendMessage {
                sender: Sender::Visitor(visitor_id),
                ..
            } => Some(visitor_id),
            Self::SendMessage {
                sender: Sender::Agent(_),
                ..
            }
            | Self::ChangeStatus { .. }
            | Self::Assign { .. }
            | Self::Fire { .. } => None,
        }
    }

    /// The agent the command acts as, if it acts as one.
    pub fn acting_agent(&self) -> Option<&AgentRef> {
        match self {
            Self::Start { agent, .. } => agent.as_ref(),
            Self::SendMessage {
                sender: Sender::Agent(agent),
                ..
            }
            | Self::ChangeStatus { agent, .. }
            | Self::Assign { agent, .. } => Some(agent),
            Self::SendMessage {
                sender: Sender::Visitor(_),
                ..
            }
            | Self::Restart { .. }
            | Self::Fire { .. } => None,
        }
    }
}

/// Why [`decide`] refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    /// Not allowed in the current status.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The caller's etag is not the conversation's.
    #[error(
        "the conversation changed since you read it (etag {given:?} is stale; it is now {current:?}); read it again and retry"
    )]
    EtagMismatch {
        /// What the caller sent.
        given: String,
        /// The conversation's etag now.
        current: String,
    },
    /// The named visitor is not the conversation's visitor.
    #[error("visitor {given:?} is not this conversation's visitor")]
    VisitorMismatch {
        /// What the caller sent.
        given: VisitorId,
    },
    /// A command that acts on a conversation was decided without one, or a
    /// start with one: a bug in the caller of `decide`.
    #[error("internal: command and conversation do not fit")]
    Misuse,
}

/// What an event on the feed says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventPayload {
    /// A conversation started.
    ConversationStarted {
        /// As it started.
        conversation: Conversation,
    },
    /// The status changed.
    StatusChanged {
        /// Before.
        from_status: Status,
        /// After.
        to_status: Status,
        /// Who changed it.
        actor: Author,
        /// The conversation after the change.
        conversation: Conversation,
    },
    /// A message was written.
    MessagePosted {
        /// The message.
        message: Message,
    },
    /// The assignee changed.
    ConversationAssigned {
        /// The assignee before; `None` when unassigned.
        from: Option<AgentRef>,
        /// The assignee after; `None` when unassigned.
        to: Option<AgentRef>,
        /// Who changed it.
        actor: Author,
        /// The conversation after the change.
        conversation: Conversation,
    },
}

/// The kinds of event, for filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A conversation started.
    ConversationStarted,
    /// The status changed.
    StatusChanged,
    /// A message was written.
    MessagePosted,
    /// The assignee changed.
    ConversationAssigned,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [Self; 4] = [
        Self::ConversationStarted,
        Self::StatusChanged,
        Self::MessagePosted,
        Self::ConversationAssigned,
    ];

    /// The kind of a storage name ([`EventKind::as_str`]), if it is one.
    pub fn from_storage(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// The kind name used in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConversationStarted => "conversation_started",
            Self::StatusChanged => "status_changed",
            Self::MessagePosted => "message_posted",
            Self::ConversationAssigned => "conversation_assigned",
        }
    }
}

/// A committed event, as the feed delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The workspace whose feed it is on.
    pub workspace_id: WorkspaceId,
    /// Its place in its workspace's feed: 1, 2, 3... strictly increasing,
    /// gap-free in commit order.
    pub sequence: i64,
    /// Its id.
    pub event_id: String,
    /// The conversation it is about.
    pub conversation_id: ConversationId,
    /// When it happened.
    pub create_time: Micros,
    /// What happened.
    pub payload: EventPayload,
}

impl EventPayload {
    /// The kind of event.
    pub fn event_kind(&self) -> EventKind {
        match self {
            Self::ConversationStarted { .. } => EventKind::ConversationStarted,
            Self::StatusChanged { .. } => EventKind::StatusChanged,
            Self::MessagePosted { .. } => EventKind::MessagePosted,
            Self::ConversationAssigned { .. } => EventKind::ConversationAssigned,
        }
    }

    /// The kind name used in storage.
    pub fn kind(&self) -> &'static str {
        self.event_kind().as_str()
    }

    /// Who may see the event: a message's audience; agents for an
    /// assignment; everyone for the rest.
    pub fn audience(&self) -> Audience {
        match self {
            Self::MessagePosted { message } => message.audience,
            Self::ConversationAssigned { .. } => Audience::Agents,
            Self::ConversationStarted { .. } | Self::StatusChanged { .. } => Audience::Everyone,
        }
    }
}

/// An event to append, in order, with the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Its id.
    pub event_id: String,
    /// When.
    pub create_time: Micros,
    /// What.
    pub payload: EventPayload,
}

impl NewEvent {
    /// The event as committed at `sequence` of its workspace's feed.
    pub fn committed(
        self,
        workspace_id: WorkspaceId,
        conversation_id: ConversationId,
        sequence: i64,
    ) -> Event {
        Event {
            workspace_id,
            sequence,
            event_id: self.event_id,
            conversation_id,
            create_time: self.create_time,
            payload: self.payload,
        }
    }
}

/// Everything one mutation writes, in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The conversation after the mutation.
    pub conversation: Conversation,
    /// True when the conversation is new (insert rather than update).
    pub created: bool,
    /// New messages, in thread order.
    pub messages: Vec<Message>,
    /// New events, in feed order.
    pub events: Vec<NewEvent>,
    /// The message the caller wrote, for SendMessage.
    pub sent_message: Option<Message>,
}

/// Makes new ids. The service uses ULIDs; tests can count.
pub trait IdSource {
    /// A new conversation id.
    fn conversation_id(&mut self) -> ConversationId;
    /// A new message id.
    fn message_id(&mut self) -> MessageId;
    /// A new event id.
    fn event_id(&mut self) -> String;
}

/// The flow a mutation runs: the one a new conversation starts, or the one
/// (and version) an existing conversation's run was started with.
#[derive(Debug, Clone, Copy)]
pub struct FlowRef<'a> {
    /// The flow's id.
    pub flow_id: &'a str,
    /// Its version.
    pub version: i64,
    /// Its steps.
    pub flow: &'a ValidFlow,
}

/// What a command is decided in: the workspace, its settings, and the time.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The workspace the command acts in.
    pub workspace_id: WorkspaceId,
    /// Its settings.
    pub settings: &'a WorkspaceSettings,
    /// Now.
    pub now: Micros,
}

/// Applies `command` to `current` (None for a start) in `context`. `flow` is
/// the flow to start (for a start) or the one the conversation runs (for a
/// visitor's message or a restart); the caller loads it.
pub fn decide(
    command: &Command,
    context: Context<'_>,
    current: Option<&Conversation>,
    flow: Option<FlowRef<'_>>,
    ids: &mut dyn IdSource,
) -> Result<Change, DecideError> {
    let Context {
        workspace_id,
        settings,
        now,
    } = context;
    match (command, current) {
        (
            Command::Start {
                visitor_id, agent, ..
            },
            None,
        ) => {
            let blank = Conversation::blank(
                ids.conversation_id(),
                workspace_id,
                visitor_id.clone(),
                agent.clone(),
                now,
            );
            let mut change = Builder::new(&blank, now, ids);
            change.started();
            if let Some(flow) = flow {
                let (run, outputs) = flow::start(flow.flow, flow.flow_id, flow.version);
                change.run_flow(run, outputs);
            }
            let mut change = change.finish();
            change.created = true;
            Ok(change)
        }
        (
            Command::SendMessage {
                sender,
                content,
                audience,
                ..
            },
            Some(current),
        ) => {
            let (action, author) = match (sender, audience) {
                (Sender::Agent(agent), Audience::Agents) => {
                    (Action::AgentNote, Author::Agent(agent.clone()))
                }
                (Sender::Agent(agent), Audience::Everyone) => {
                    (Action::AgentMessage, Author::Agent(agent.clone()))
                }
                (Sender::Visitor(_), Audience::Agents) => return Err(DecideError::Misuse),
                (Sender::Visitor(visitor_id), Audience::Everyone) => {
                    check_visitor(current, visitor_id)?;
                    (
                        Action::VisitorMessage,
                        Author::Visitor {
                            visitor_id: visitor_id.clone(),
                        },
                    )
                }
            };
            let to = next_status(current.status, action)?;
            let mut change = Builder::new(current, now, ids);
            let sent = change.post(author.clone(), *audience, content.clone(), Vec::new());
            if to != current.status {
                // Only a visitor reply on PENDING moves the status here (and
                // ends its snooze, if it was snoozed).
                change.change_status(to, author, TransactionalKind::ReopenedByVisitorReply);
            }
            match sender {
                // A note is between agents: the bot, the assignee and the
                // visitor's view stay as they are.
                Sender::Agent(_) if action == Action::AgentNote => {}
                Sender::Agent(agent) => {
                    // An agent writing takes the conversation over from the
                    // bot, and the first to reply to an unassigned one owns it.
                    change.stop_flow();
                    if current.assignee.is_none() {
                        change.assign(Author::Agent(agent.clone()), Some(agent.clone()));
                    }
                }
                Sender::Visitor(_) => {
                    if let (Some(run), Some(flow), MessageContent::Text { text }) =
                        (&current.flow, flow, content)
                    {
                        let (run, outputs) =
                            flow::on_visitor_message(run, flow.flow, text.as_str());
                        change.run_flow(run, outputs);
                    }
                }
            }
            let mut change = change.finish();
            change.sent_message = Some(sent);
            Ok(change)
        }
        (
            Command::ChangeStatus {
                action,
                agent,
                etag,
                snooze_end_time,
                ..
            },
            Some(current),
        ) => {
            check_etag(current, etag.as_deref())?;
            let to = next_status(current.status, action.action())?;
            let mut change = Builder::new(current, now, ids);
            let actor = Author::Agent(agent.clone());
            // Any agent action takes the conversation over from the bot; an
            // agent's reopen does not start it again (a visitor's restart
            // does). The assignee stays who it was.
            change.stop_flow();
            match (action, snooze_end_time) {
                (AgentAction::MarkPending, Some(until)) => {
                    let note = Transactional::snoozed(current.status, actor.clone(), *until);
                    change.change_status_saying(to, actor, note);
                    change.conversation.snooze_end_time = Some(*until);
                }
                _ => change.change_status(to, actor, action.transactional_kind()),
            }
            Ok(change.finish())
        }
        (
            Command::Assign {
                agent,
                assignee,
                etag,
                ..
            },
            Some(current),
        ) => {
            check_etag(current, etag.as_deref())?;
            let same = match (&current.assignee, assignee) {
                (Some(now), Some(to)) => now.agent_id == to.agent_id,
                (None, None) => true,
                _ => false,
            };
            if same {
                return Err(Refusal::AssigneeUnchanged.into());
            }
            let mut change = Builder::new(current, now, ids);
            let actor = Author::Agent(agent.clone());
            let note = Transactional::assigned(
                current.status,
                actor.clone(),
                current.assignee.as_ref(),
                assignee.as_ref(),
            );
            change.assign(actor, assignee.clone());
            change.post(
                Author::System,
                TransactionalKind::Assigned.audience(),
                MessageContent::Transactional(note),
                Vec::new(),
            );
            Ok(change.finish())
        }
        (Command::Fire { .. }, Some(current)) => {
            let due = timers::due_now(current, settings, now).ok_or(Refusal::NothingDue)?;
            let mut change = Builder::new(current, now, ids);
            match (due, &settings.auto_close) {
                (Due::SnoozeEnded, _) => change.change_status(
                    Status::Open,
                    Author::System,
                    TransactionalKind::SnoozeEnded,
                ),
                (Due::AutoClose, Some(auto)) => {
                    if let Some(text) = &auto.message {
                        change.post(
                            Author::System,
                            Audience::Everyone,
                            MessageContent::Text { text: text.clone() },
                            Vec::new(),
                        );
                    }
                    let note = Transactional::auto_closed(current.status, auto.after_micros);
                    change.change_status_saying(Status::Closed, Author::System, note);
                }
                (Due::AutoClose, None) => return Err(Refusal::NothingDue.into()),
            }
            Ok(change.finish())
        }
        (Command::Restart { visitor_id, .. }, Some(current)) => {
            check_visitor(current, visitor_id)?;
            let to = next_status(current.status, Action::Restart)?;
            let mut change = Builder::new(current, now, ids);
            let actor = Author::Visitor {
                visitor_id: visitor_id.clone(),
            };
            change.change_status(to, actor, TransactionalKind::Restarted);
            // "The same conversation flow starts from the beginning": the
            // version the conversation ran, from step one, answers afresh.
            if let Some(flow) = flow {
                let (run, outputs) = flow::restart(flow.flow, flow.flow_id, flow.version);
                change.run_flow(run, outputs);
            }
            Ok(change.finish())
        }
        (Command::Start { .. }, Some(_))
        | (
            Command::SendMessage { .. }
            | Command::ChangeStatus { .. }
            | Command::Assign { .. }
            | Command::Fire { .. }
            | Command::Restart { .. },
            None,
        ) => Err(DecideError::Misuse),
    }
}

fn check_etag(current: &Conversation, given: Option<&str>) -> Result<(), DecideError> {
    match given {
        Some(given) if given != current.etag() => Err(DecideError::EtagMismatch {
            given: given.to_owned(),
            current: current.etag(),
        }),
        _ => Ok(()),
    }
}

fn check_visitor(current: &Conversation, given: &VisitorId) -> Result<(), DecideError> {
    if current.visitor_id == *given {
        Ok(())
    } else {
        Err(DecideError::VisitorMismatch {
            given: given.clone(),
        })
    }
}

/// Accumulates the writes of a mutation on an existing conversation.
struct Builder<'a> {
    conversation: Conversation,
    now: Micros,
    ids: &'a mut dyn IdSource,
    messages: Vec<Message>,
    events: Vec<NewEvent>,
}

impl<'a> Builder<'a> {
    fn new(current: &Conversation, now: Micros, ids: &'a mut dyn IdSource) -> Self {
        let mut conversation = current.clone();
        conversation.version += 1;
        // Never move update_time backwards, even if the clock does.
        conversation.update_time = now.max(current.update_time);
        Self {
            conversation,
            now: now.max(current.update_time),
            ids,
            messages: Vec::new(),
            events: Vec::new(),
        }
    }

    fn post(
        &mut self,
        author: Author,
        audience: Audience,
        content: MessageContent,
        quick_replies: Vec<Label>,
    ) -> Message {
        self.conversation.message_count += 1;
        if audience == Audience::Everyone {
            self.conversation.everyone_message_count += 1;
        }
        let message = Message {
            id: self.ids.message_id(),
            conversation_id: self.conversation.id.clone(),
            position: self.conversation.message_count,
            author,
            audience,
            create_time: self.now,
            content,
            quick_replies,
        };
        self.messages.push(message.clone());
        self.events.push(NewEvent {
            event_id: self.ids.event_id(),
            create_time: self.now,
            payload: EventPayload::MessagePosted {
                message: message.clone(),
            },
        });
        message
    }

    fn change_status(&mut self, to: Status, actor: Author, kind: TransactionalKind) {
        let note = Transactional::new(kind, self.conversation.status, to, actor.clone());
        self.change_status_saying(to, actor, note);
    }

    /// Moves the status and writes `note` into the thread. Every status
    /// change ends a snooze.
    fn change_status_saying(&mut self, to: Status, actor: Author, note: Transactional) {
        let from = self.conversation.status;
        self.conversation.status = to;
        self.conversation.status_change_time = self.now;
        self.conversation.close_time = (to == Status::Closed).then_some(self.now);
        self.conversation.snooze_end_time = None;
        // The event's snapshot is filled in by `finish`, once every write of
        // the mutation is counted.
        self.events.push(NewEvent {
            event_id: self.ids.event_id(),
            create_time: self.now,
            payload: EventPayload::StatusChanged {
                from_status: from,
                to_status: to,
                actor: actor.clone(),
                conversation: self.conversation.clone(),
            },
        });
        let audience = note.kind.audience();
        self.post(
            Author::System,
            audience,
            MessageContent::Transactional(note),
            Vec::new(),
        );
    }

    /// An agent acted: an active flow run stops where it is.
    fn stop_flow(&mut self) {
        if let Some(run) = &self.conversation.flow {
            self.conversation.flow = Some(flow::on_agent_action(run));
        }
    }

    /// Gives the conversation to `to` (or nobody), with its event (its
    /// snapshot is filled in by `finish`).
    fn assign(&mut self, actor: Author, to: Option<AgentRef>) {
        let from = self.conversation.assignee.take();
        self.conversation.assignee = to.clone();
        self.events.push(NewEvent {
            event_id: self.ids.event_id(),
            create_time: self.now,
            payload: EventPayload::ConversationAssigned {
                from,
                to,
                actor,
                conversation: self.conversation.clone(),
            },
        });
    }

    /// Records the start of a new conversation (its snapshot is filled in by
    /// `finish`).
    fn started(&mut self) {
        self.events.push(NewEvent {
            event_id: self.ids.event_id(),
            create_time: self.now,
            payload: EventPayload::ConversationStarted {
                conversation: self.conversation.clone(),
            },
        });
    }

    /// Stores the flow's new run and writes what the bot says: its posts for
    /// everyone, and a handoff note for the agents.
    fn run_flow(&mut self, run: FlowRun, outputs: Vec<BotOutput>) {
        self.conversation.flow = Some(run);
        for output in outputs {
            match output {
                BotOutput::Post {
                    content,
                    quick_replies,
                } => {
                    self.post(Author::Bot, Audience::Everyone, content, quick_replies);
                }
                BotOutput::Handoff { text, .. } => {
                    let note = Transactional::handoff(self.conversation.status, text);
                    self.post(
                        Author::System,
                        TransactionalKind::FlowHandoff.audience(),
                        MessageContent::Transactional(note),
                        Vec::new(),
                    );
                }
            }
        }
    }

    fn finish(mut self) -> Change {
        for event in &mut self.events {
            match &mut event.payload {
                EventPayload::StatusChanged { conversation, .. }
                | EventPayload::ConversationAssigned { conversation, .. }
                | EventPayload::ConversationStarted { conversation } => {
                    *conversation = self.conversation.clone();
                }
                EventPayload::MessagePosted { .. } => {}
            }
        }
        Change {
            conversation: self.conversation,
            created: false,
            messages: self.messages,
            events: self.events,
            sent_message: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::timers;
    use crate::domain::values::{AgentId, Channel, DisplayName, MessageText};

    struct Counter(u32);
    impl IdSource for Counter {
        fn conversation_id(&mut self) -> ConversationId {
            self.0 += 1;
            ConversationId::parse(&format!("conv_{}", self.0)).unwrap()
        }
        fn message_id(&mut self) -> MessageId {
            self.0 += 1;
            MessageId::parse(&format!("msg_{}", self.0)).unwrap()
        }
        fn event_id(&mut self) -> String {
            self.0 += 1;
            format!("evt_{}", self.0)
        }
    }

    fn agent() -> AgentRef {
        AgentRef {
            agent_id: AgentId::parse("dana").unwrap(),
            display_name: DisplayName::parse("Dana").unwrap(),
            channel: Channel::Slack,
        }
    }

    const NO_SETTINGS: WorkspaceSettings = WorkspaceSettings { auto_close: None };

    fn context(now: i64) -> Context<'static> {
        Context {
            workspace_id: WorkspaceId(1),
            settings: &NO_SETTINGS,
            now: Micros(now),
        }
    }

    fn visitor() -> VisitorId {
        VisitorId::parse("v-1").unwrap()
    }

    fn started(status: Status) -> Conversation {
        let start = Command::Start {
            visitor_id: visitor(),
            agent: None,
            flow_id: None,
        };
        let mut c = decide(&start, context(10), None, None, &mut Counter(0))
            .unwrap()
            .conversation;
        c.status = status;
        c
    }

    #[test]
    fn every_event_kind_is_found_by_its_storage_name_and_nothing_else_is() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_storage(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::from_storage("conversation_deleted"), None);
        assert_eq!(EventKind::from_storage(""), None);
    }

    #[test]
    fn the_status_table_holds_in_every_cell() {
        use Action::*;
        use Status::*;
        let table: [(Status, Action, Option<Status>); 21] = [
            (Open, Close, Some(Closed)),
            (Open, MarkPending, Some(Pending)),
            (Open, Reopen, None),
            (Open, Restart, None),
            (Open, VisitorMessage, Some(Open)),
            (Open, AgentMessage, Some(Open)),
            (Pending, Close, Some(Closed)),
            (Pending, MarkPending, None),
            (Pending, Reopen, Some(Open)),
            (Pending, Restart, None),
            (Pending, VisitorMessage, Some(Open)),
            (Pending, AgentMessage, Some(Pending)),
            (Closed, Close, None),
            (Closed, MarkPending, None),
            (Closed, Reopen, Some(Open)),
            (Closed, Restart, Some(Open)),
            (Closed, VisitorMessage, None),
            (Closed, AgentMessage, None),
            (Open, AgentNote, Some(Open)),
            (Pending, AgentNote, Some(Pending)),
            (Closed, AgentNote, Some(Closed)),
        ];
        for (from, action, expected) in table {
            assert_eq!(
                next_status(from, action).ok(),
                expected,
                "{from:?} {action:?}"
            );
        }
        assert_eq!(
            next_status(Closed, VisitorMessage).unwrap_err().reason(),
            "CONVERSATION_CLOSED"
        );
    }

    #[test]
    fn visitor_reply_on_pending_writes_message_status_change_and_agents_note() {
        let current = started(Status::Pending);
        let command = Command::SendMessage {
            conversation_id: current.id.clone(),
            sender: Sender::Visitor(visitor()),
            content: MessageContent::Text {
                text: MessageText::parse("still there?").unwrap(),
            },
            audience: Audience::Everyone,
        };
        let change = decide(
            &command,
            context(20),
            Some(&current),
            None,
            &mut Counter(100),
        )
        .unwrap();
        assert_eq!(change.conversation.status, Status::Open);
        assert_eq!(change.messages.len(), 2);
        assert_eq!(change.messages[0].position, 1);
        assert_eq!(change.messages[1].audience, Audience::Agents);
        assert_eq!(change.conversation.message_count, 2);
        assert_eq!(change.conversation.everyone_message_count, 1);
        let kinds: Vec<_> = change.events.iter().map(|e| e.payload.kind()).collect();
        assert_eq!(
            kinds,
            ["message_posted", "status_changed", "message_posted"]
        );
        match &change.events[1].payload {
            EventPayload::StatusChanged { conversation, .. } => {
                assert_eq!(conversation, &change.conversation)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn stale_etag_is_refused_before_the_status_rules() {
        let current = started(Status::Closed);
        let command = Command::ChangeStatus {
            conversation_id: current.id.clone(),
            action: AgentAction::Close,
            agent: agent(),
            etag: Some("stale".into()),
            snooze_end_time: None,
        };
        let err = decide(&command, context(20), Some(&current), None, &mut Counter(0)).unwrap_err();
        assert!(matches!(err, DecideError::EtagMismatch { .. }));
    }

    #[test]
    fn close_sets_close_time_and_reopen_clears_it() {
        let current = started(Status::Open);
        let close = Command::ChangeStatus {
            conversation_id: current.id.clone(),
            action: AgentAction::Close,
            agent: agent(),
            etag: Some(current.etag()),
            snooze_end_time: None,
        };
        let closed = decide(&close, context(20), Some(&current), None, &mut Counter(0))
            .unwrap()
            .conversation;
        assert_eq!(closed.close_time, Some(Micros(20)));
        assert!(closed.restart_available());
        assert_ne!(closed.etag(), current.etag());
        let reopen = Command::ChangeStatus {
            conversation_id: current.id.clone(),
            action: AgentAction::Reopen,
            agent: agent(),
            etag: None,
            snooze_end_time: None,
        };
        let reopened = decide(&reopen, context(30), Some(&closed), None, &mut Counter(50)).unwrap();
        assert_eq!(reopened.conversation.close_time, None);
        assert_eq!(reopened.messages[0].audience, Audience::Everyone);
    }

    fn say(current: &Conversation, sender: Sender, audience: Audience) -> Command {
        Command::SendMessage {
            conversation_id: current.id.clone(),
            sender,
            content: MessageContent::Text {
                text: MessageText::parse("hi").unwrap(),
            },
            audience,
        }
    }

    #[test]
    fn the_first_reply_assigns_a_note_does_not_and_status_changes_keep_the_assignee() {
        let current = started(Status::Open);
        let noted = decide(
            &say(&current, Sender::Agent(agent()), Audience::Agents),
            context(20),
            Some(&current),
            None,
            &mut Counter(0),
        )
        .unwrap();
        assert_eq!(noted.conversation.assignee, None);
        assert_eq!(noted.conversation.everyone_message_count, 0);
        let replied = decide(
            &say(
                &noted.conversation,
                Sender::Agent(agent()),
                Audience::Everyone,
            ),
            context(30),
            Some(&noted.conversation),
            None,
            &mut Counter(10),
        )
        .unwrap();
        assert_eq!(replied.conversation.assignee, Some(agent()));
        let kinds: Vec<_> = replied.events.iter().map(|e| e.payload.kind()).collect();
        assert_eq!(kinds, ["message_posted", "conversation_assigned"]);
        let mut sam = agent();
        sam.agent_id = AgentId::parse("sam").unwrap();
        let closed = decide(
            &Command::ChangeStatus {
                conversation_id: current.id.clone(),
                action: AgentAction::Close,
                agent: sam,
                etag: None,
                snooze_end_time: None,
            },
            context(40),
            Some(&replied.conversation),
            None,
            &mut Counter(20),
        )
        .unwrap();
        assert_eq!(closed.conversation.assignee, Some(agent()));
    }

    #[test]
    fn a_timer_fires_only_what_is_due_and_auto_close_tells_the_visitor_first() {
        let settings = WorkspaceSettings {
            auto_close: Some(
                timers::AutoClose::new(1_000_000, Some(MessageText::parse("Bye for now").unwrap()))
                    .unwrap(),
            ),
        };
        let at = |now| Context {
            workspace_id: WorkspaceId(1),
            settings: &settings,
            now: Micros(now),
        };
        let fire = |c: &Conversation| Command::Fire {
            conversation_id: c.id.clone(),
        };
        let current = started(Status::Pending);
        // Idle since 10 µs: due at 1_000_010.
        let early = decide(
            &fire(&current),
            at(999_999),
            Some(&current),
            None,
            &mut Counter(0),
        );
        assert_eq!(
            early.unwrap_err(),
            DecideError::Refused(Refusal::NothingDue)
        );
        let closed = decide(
            &fire(&current),
            at(1_000_010),
            Some(&current),
            None,
            &mut Counter(0),
        )
        .unwrap();
        assert_eq!(closed.conversation.status, Status::Closed);
        assert_eq!(closed.messages[0].audience, Audience::Everyone);
        assert_eq!(closed.messages[0].author, Author::System);
        match &closed.messages[1].content {
            MessageContent::Transactional(t) => assert_eq!(t.kind, TransactionalKind::AutoClosed),
            other => panic!("{other:?}"),
        }
        let again = decide(
            &fire(&closed.conversation),
            at(9_000_000),
            Some(&closed.conversation),
            None,
            &mut Counter(0),
        );
        assert_eq!(
            again.unwrap_err(),
            DecideError::Refused(Refusal::NothingDue)
        );

        // Snoozed: the snooze ends first, and the idle time starts there.
        let mut snoozed = started(Status::Pending);
        snoozed.snooze_end_time = Some(Micros(5_000_000));
        assert_eq!(
            timers::due_time(&snoozed, &settings),
            Some(Micros(5_000_000))
        );
        let woken = decide(
            &fire(&snoozed),
            at(5_000_000),
            Some(&snoozed),
            None,
            &mut Counter(0),
        )
        .unwrap();
        assert_eq!(woken.conversation.status, Status::Open);
        assert_eq!(woken.conversation.snooze_end_time, None);
        assert_eq!(
            timers::due_time(&woken.conversation, &settings),
            Some(Micros(6_000_000))
        );
    }

    #[test]
    fn another_visitor_cannot_restart() {
        let current = started(Status::Closed);
        let command = Command::Restart {
            conversation_id: current.id.clone(),
            visitor_id: VisitorId::parse("someone-else").unwrap(),
        };
        let err = decide(&command, context(20), Some(&current), None, &mut Counter(0)).unwrap_err();
        assert!(matches!(err, DecideError::VisitorMismatch { .. }));
    }
}
