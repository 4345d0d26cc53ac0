//! Messages in a conversation's thread, and the sentences transactional
//! messages say.

use serde::{Deserialize, Serialize};

use super::status::Status;
use super::values::{
    AgentRef, Channel, ConversationId, DisplayName, HttpsUrl, Label, MessageId, MessageText,
    Micros, VisitorId,
};

/// Who may see a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// The visitor and the agents.
    Everyone,
    /// Only the agents.
    Agents,
}

impl Audience {
    /// The name used in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Everyone => "everyone",
            Self::Agents => "agents",
        }
    }

    /// Reads the storage name back; anything unknown is treated as the
    /// narrower audience.
    pub fn from_stored(value: &str) -> Self {
        if value == "everyone" {
            Self::Everyone
        } else {
            Self::Agents
        }
    }
}

/// Who wrote a message, or made a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Author {
    /// The website visitor.
    Visitor {
        /// Which visitor.
        visitor_id: VisitorId,
    },
    /// A sales agent.
    Agent(AgentRef),
    /// The conversation flow bot.
    Bot,
    /// The service itself.
    System,
}

impl Author {
    /// An agent's display name, or nothing for other authors.
    pub fn display_name(&self) -> &str {
        match self {
            Self::Agent(agent) => agent.display_name.as_str(),
            Self::Visitor { .. } | Self::Bot | Self::System => "",
        }
    }

    /// Where the author wrote from.
    pub fn channel(&self) -> Channel {
        match self {
            Self::Agent(agent) => agent.channel,
            Self::Visitor { .. } => Channel::Widget,
            Self::Bot | Self::System => Channel::Unspecified,
        }
    }
}

/// What a transactional message records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionalKind {
    /// An agent closed the conversation.
    Closed,
    /// An agent marked it pending.
    MarkedPending,
    /// An agent reopened it.
    Reopened,
    /// The visitor restarted it.
    Restarted,
    /// The visitor replied while it was pending.
    ReopenedByVisitorReply,
    /// The flow handed the visitor over to the agents.
    FlowHandoff,
    /// An agent assigned the conversation, or unassigned it.
    Assigned,
    /// A snooze ended, so the conversation went back to open.
    SnoozeEnded,
    /// The workspace's auto-close closed the idle conversation.
    AutoClosed,
}

impl TransactionalKind {
    /// Who sees the message: only a reopen by an agent is told to the
    /// visitor; the rest are for the Inbox thread.
    pub fn audience(self) -> Audience {
        match self {
            Self::Reopened => Audience::Everyone,
            Self::Closed
            | Self::MarkedPending
            | Self::Restarted
            | Self::ReopenedByVisitorReply
            | Self::FlowHandoff
            | Self::Assigned
            | Self::SnoozeEnded
            | Self::AutoClosed => Audience::Agents,
        }
    }
}

/// A status change written into the thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transactional {
    /// What happened.
    pub kind: TransactionalKind,
    /// The status before.
    pub from_status: Status,
    /// The status after.
    pub to_status: Status,
    /// Who made the change.
    pub actor: Author,
    /// The change as an English sentence.
    pub text: String,
}

impl Transactional {
    /// The note that tells the agents a flow handed the visitor over; `text`
    /// is the engine's sentence with the answers. The status does not change.
    pub fn handoff(status: Status, text: String) -> Self {
        Self {
            kind: TransactionalKind::FlowHandoff,
            from_status: status,
            to_status: status,
            actor: Author::Bot,
            text,
        }
    }

    /// The note that an agent assigned the conversation (to `to`, or to
    /// nobody) while it was `status`.
    pub fn assigned(
        status: Status,
        actor: Author,
        from: Option<&AgentRef>,
        to: Option<&AgentRef>,
    ) -> Self {
        let who = spoken(&actor);
        let from_channel = channel_suffix(&actor, Audience::Agents);
        let text = match (from, to) {
            (_, Some(to)) if Some(to.agent_id.as_str()) == actor_agent_id(&actor) => {
                format!("{who} assigned the conversation to themselves{from_channel}.")
            }
            (_, Some(to)) => format!(
                "{who} assigned the conversation to {}{from_channel}.",
                to.shown_name()
            ),
            (Some(from), None) => format!(
                "{who} unassigned {} from the conversation{from_channel}.",
                from.shown_name()
            ),
            (None, None) => format!("{who} unassigned the conversation{from_channel}."),
        };
        Self {
            kind: TransactionalKind::Assigned,
            from_status: status,
            to_status: status,
            actor,
            text,
        }
    }

    /// An agent's mark-pending that snoozes until `until`.
    pub fn snoozed(from_status: Status, actor: Author, until: Micros) -> Self {
        let text = format!(
            "{} snoozed the conversation until {}{}.",
            spoken(&actor),
            super::spoken::spoken_time(until),
            channel_suffix(&actor, Audience::Agents)
        );
        Self {
            kind: TransactionalKind::MarkedPending,
            from_status,
            to_status: Status::Pending,
            actor,
            text,
        }
    }

    /// The workspace's auto-close closed the conversation after `idle_micros`
    /// without a message.
    pub fn auto_closed(from_status: Status, idle_micros: i64) -> Self {
        Self {
            kind: TransactionalKind::AutoClosed,
            from_status,
            to_status: Status::Closed,
            actor: Author::System,
            text: format!(
                "The conversation was closed after {} without activity.",
                super::spoken::spoken_duration(idle_micros)
            ),
        }
    }

    /// Records a change and renders its sentence.
    pub fn new(
        kind: TransactionalKind,
        from_status: Status,
        to_status: Status,
        actor: Author,
    ) -> Self {
        let text = render(kind, from_status, to_status, &actor);
        Self {
            kind,
            from_status,
            to_status,
            actor,
            text,
        }
    }
}

/// Who made a change, as a sentence starts.
fn spoken(actor: &Author) -> String {
    match actor {
        Author::Agent(agent) => agent.shown_name().to_owned(),
        Author::Visitor { .. } => "The visitor".to_owned(),
        Author::Bot => "The bot".to_owned(),
        Author::System => "The system".to_owned(),
    }
}

fn actor_agent_id(actor: &Author) -> Option<&str> {
    match actor {
        Author::Agent(agent) => Some(agent.agent_id.as_str()),
        Author::Visitor { .. } | Author::Bot | Author::System => None,
    }
}

/// " from Slack": agent-only sentences say which channel the agent acted
/// from; those the visitor also sees do not, since Slack or Teams means
/// nothing to them.
fn channel_suffix(actor: &Author, audience: Audience) -> String {
    match actor.channel().label() {
        Some(label) if audience == Audience::Agents && matches!(actor, Author::Agent(_)) => {
            format!(" from {label}")
        }
        _ => String::new(),
    }
}

fn render(kind: TransactionalKind, from: Status, to: Status, actor: &Author) -> String {
    let who = spoken(actor);
    let from_channel = channel_suffix(actor, kind.audience());
    match kind {
        TransactionalKind::Closed => format!("{who} closed the conversation{from_channel}."),
        TransactionalKind::MarkedPending => {
            format!("{who} marked the conversation as pending{from_channel}.")
        }
        TransactionalKind::Reopened => format!("{who} reopened the conversation."),
        TransactionalKind::Restarted => format!("{who} restarted the conversation."),
        TransactionalKind::ReopenedByVisitorReply => format!(
            "{who} replied, so the conversation moved from {} to {}.",
            from.label(),
            to.label()
        ),
        TransactionalKind::FlowHandoff => "The visitor is waiting for an agent.".to_owned(),
        TransactionalKind::Assigned => format!("{who} changed the assignee{from_channel}."),
        TransactionalKind::SnoozeEnded => format!(
            "The snooze ended, so the conversation moved from {} to {}.",
            from.label(),
            to.label()
        ),
        TransactionalKind::AutoClosed => "The conversation was closed for inactivity.".to_owned(),
    }
}

/// A proposed appointment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appointment {
    /// When it starts.
    pub start_time: Micros,
    /// How long it lasts, in nanoseconds.
    pub duration_nanos: i64,
    /// A title; may be empty.
    pub title: Label,
    /// A booking or meeting link.
    pub url: Option<HttpsUrl>,
}

/// What a message says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageContent {
    /// Plain text.
    Text {
        /// The text.
        text: MessageText,
    },
    /// A link to an online meeting.
    MeetingLink {
        /// Where to join.
        url: HttpsUrl,
        /// Who hosts it, e.g. "Zoom"; may be empty.
        provider: Label,
    },
    /// A proposed appointment.
    Appointment(Appointment),
    /// A status change.
    Transactional(Transactional),
}

/// One message in a thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Its id.
    pub id: MessageId,
    /// Its conversation.
    pub conversation_id: ConversationId,
    /// 1, 2, 3… within the thread.
    pub position: i64,
    /// Who wrote it.
    pub author: Author,
    /// Who may see it.
    pub audience: Audience,
    /// When it was written.
    pub create_time: Micros,
    /// What it says.
    pub content: MessageContent,
    /// Quick replies the widget may offer (a bot question's choices).
    #[serde(default)]
    pub quick_replies: Vec<Label>,
}

/// Makes an agent author from its parts as stored.
pub fn stored_agent(agent_id: String, display_name: String, channel: &str) -> AgentRef {
    AgentRef {
        agent_id: super::values::AgentId::from_trusted(agent_id),
        display_name: DisplayName::from_trusted(display_name),
        channel: Channel::from_stored(channel),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::values::AgentId;

    fn dana(channel: Channel) -> Author {
        Author::Agent(AgentRef {
            agent_id: AgentId::parse("agent-dana").unwrap(),
            display_name: DisplayName::parse("Dana").unwrap(),
            channel,
        })
    }

    #[test]
    fn close_sentence_names_the_agent_and_channel() {
        let t = Transactional::new(
            TransactionalKind::Closed,
            Status::Open,
            Status::Closed,
            dana(Channel::Slack),
        );
        assert_eq!(t.text, "Dana closed the conversation from Slack.");
        let t = Transactional::new(
            TransactionalKind::Closed,
            Status::Open,
            Status::Closed,
            dana(Channel::Unspecified),
        );
        assert_eq!(t.text, "Dana closed the conversation.");
    }

    #[test]
    fn reopen_sentence_seen_by_the_visitor_names_no_channel() {
        let t = Transactional::new(
            TransactionalKind::Reopened,
            Status::Closed,
            Status::Open,
            dana(Channel::MsTeams),
        );
        assert_eq!(t.text, "Dana reopened the conversation.");
        assert_eq!(TransactionalKind::Reopened.audience(), Audience::Everyone);
    }

    #[test]
    fn assignment_sentences_name_both_agents() {
        let sam = AgentRef {
            agent_id: AgentId::parse("agent-sam").unwrap(),
            display_name: DisplayName::parse("Sam").unwrap(),
            channel: Channel::Inbox,
        };
        let t = Transactional::assigned(Status::Open, dana(Channel::Slack), None, Some(&sam));
        assert_eq!(t.text, "Dana assigned the conversation to Sam from Slack.");
        assert_eq!(t.kind.audience(), Audience::Agents);
        let t = Transactional::assigned(Status::Open, dana(Channel::Unspecified), Some(&sam), None);
        assert_eq!(t.text, "Dana unassigned Sam from the conversation.");
        let Author::Agent(me) = dana(Channel::Inbox) else {
            unreachable!()
        };
        let t = Transactional::assigned(Status::Open, dana(Channel::Inbox), None, Some(&me));
        assert_eq!(
            t.text,
            "Dana assigned the conversation to themselves from the Inbox."
        );
    }

    #[test]
    fn snooze_and_auto_close_sentences_say_when() {
        let t = Transactional::snoozed(
            Status::Open,
            dana(Channel::Unspecified),
            Micros(1_796_146_200_000_000),
        );
        assert_eq!(
            t.text,
            "Dana snoozed the conversation until 2026-12-01 17:30 UTC."
        );
        let t = Transactional::auto_closed(Status::Pending, 30 * 60 * 1_000_000);
        assert_eq!(
            t.text,
            "The conversation was closed after 30 minutes without activity."
        );
        assert_eq!(t.actor, Author::System);
    }

    #[test]
    fn visitor_reply_sentence_says_the_move() {
        let visitor = Author::Visitor {
            visitor_id: VisitorId::parse("v").unwrap(),
        };
        let t = Transactional::new(
            TransactionalKind::ReopenedByVisitorReply,
            Status::Pending,
            Status::Open,
            visitor,
        );
        assert_eq!(
            t.text,
            "The visitor replied, so the conversation moved from Pending to Open."
        );
    }
}
