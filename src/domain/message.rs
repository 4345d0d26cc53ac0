//! Messages in a conversation's thread, and the sentences transactional
//! messages say.

use serde::{
    Deserialize, Deserializer, Serialize,
    de::{Error as _, IgnoredAny},
};

use super::status::Status;
use super::tagged::{self, Tagged};
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
///
/// Stored as `{"kind": "agent", ...fields}`; read through
/// [`super::tagged`], which skips serde's buffering when the tag comes first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

impl Tagged for Author {
    const TAG: &'static str = "kind";
    const VARIANTS: &'static [&'static str] = &["visitor", "agent", "bot", "system"];

    fn variant<'de, D: Deserializer<'de>>(name: &'static str, fields: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Visitor {
            visitor_id: VisitorId,
        }
        Ok(match name {
            "visitor" => {
                let Visitor { visitor_id } = Visitor::deserialize(fields)?;
                Self::Visitor { visitor_id }
            }
            "agent" => Self::Agent(AgentRef::deserialize(fields)?),
            "bot" => {
                IgnoredAny::deserialize(fields)?;
                Self::Bot
            }
            "system" => {
                IgnoredAny::deserialize(fields)?;
                Self::System
            }
            other => return Err(D::Error::unknown_variant(other, Self::VARIANTS)),
        })
    }
}

impl<'de> Deserialize<'de> for Author {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        tagged::deserialize(deserializer)
    }
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
///
/// Stored as `{"type": "text", ...fields}`; read through [`super::tagged`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

impl Tagged for MessageContent {
    const TAG: &'static str = "type";
    const VARIANTS: &'static [&'static str] =
        &["text", "meeting_link", "appointment", "transactional"];

    fn variant<'de, D: Deserializer<'de>>(name: &'static str, fields: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Text {
            text: MessageText,
        }
        #[derive(Deserialize)]
        struct MeetingLink {
            url: HttpsUrl,
            provider: Label,
        }
        Ok(match name {
            "text" => {
                let Text { text } = Text::deserialize(fields)?;
                Self::Text { text }
            }
            "meeting_link" => {
                let MeetingLink { url, provider } = MeetingLink::deserialize(fields)?;
                Self::MeetingLink { url, provider }
            }
            "appointment" => Self::Appointment(Appointment::deserialize(fields)?),
            "transactional" => Self::Transactional(Transactional::deserialize(fields)?),
            other => return Err(D::Error::unknown_variant(other, Self::VARIANTS)),
        })
    }
}

impl<'de> Deserialize<'de> for MessageContent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        tagged::deserialize(deserializer)
    }
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

    /// Every kind of author and content, as the service writes them.
    fn tagged_samples() -> (Vec<Author>, Vec<MessageContent>) {
        let authors = vec![
            Author::Visitor {
                visitor_id: VisitorId::parse("v-1").unwrap(),
            },
            dana(Channel::Slack),
            Author::Bot,
            Author::System,
        ];
        let contents = vec![
            MessageContent::Text {
                text: MessageText::parse("Hi \"there\"").unwrap(),
            },
            MessageContent::MeetingLink {
                url: HttpsUrl::parse("https://zoom.us/j/123").unwrap(),
                provider: Label::parse("Zoom", 64).unwrap(),
            },
            MessageContent::Appointment(Appointment {
                start_time: Micros(1_796_146_200_000_000),
                duration_nanos: 1_800_000_000_000,
                title: Label::parse("Demo", 64).unwrap(),
                url: None,
            }),
            MessageContent::Transactional(Transactional::new(
                TransactionalKind::Closed,
                Status::Open,
                Status::Closed,
                dana(Channel::Inbox),
            )),
        ];
        (authors, contents)
    }

    /// The same object with its keys in reverse order (the tag last), as a
    /// store that orders keys its own way may hand it back.
    fn reversed(json: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        let serde_json::Value::Object(fields) = value else {
            panic!("{json} is not an object")
        };
        let entries: Vec<String> = fields
            .iter()
            .rev()
            .map(|(key, value)| format!("{}:{value}", serde_json::Value::from(key.as_str())))
            .collect();
        format!("{{{}}}", entries.join(","))
    }

    #[test]
    fn tagged_authors_and_contents_read_back_whether_the_tag_comes_first_or_last() {
        let (authors, contents) = tagged_samples();
        for author in authors {
            let json = serde_json::to_string(&author).unwrap();
            assert!(json.starts_with(r#"{"kind":"#), "{json}");
            assert_eq!(serde_json::from_str::<Author>(&json).unwrap(), author);
            let last = reversed(&json);
            assert_eq!(
                serde_json::from_str::<Author>(&last).unwrap(),
                author,
                "{last}"
            );
        }
        for content in contents {
            let json = serde_json::to_string(&content).unwrap();
            assert!(json.starts_with(r#"{"type":"#), "{json}");
            assert_eq!(
                serde_json::from_str::<MessageContent>(&json).unwrap(),
                content
            );
            let last = reversed(&json);
            assert_eq!(
                serde_json::from_str::<MessageContent>(&last).unwrap(),
                content,
                "{last}"
            );
        }
    }

    #[test]
    fn tagged_reader_ignores_unknown_fields_and_refuses_bad_tags() {
        let extra = r#"{"kind":"visitor","new_field":[1,{"a":2}],"visitor_id":"v-1"}"#;
        assert_eq!(
            serde_json::from_str::<Author>(extra).unwrap(),
            Author::Visitor {
                visitor_id: VisitorId::parse("v-1").unwrap()
            }
        );
        assert_eq!(
            serde_json::from_str::<Author>(r#"{"kind":"bot","x":1}"#).unwrap(),
            Author::Bot
        );
        for (bad, says) in [
            (r#"{"kind":"robot"}"#, "unknown variant `robot`"),
            (
                r#"{"visitor_id":"v-1","kind":"robot"}"#,
                "unknown variant `robot`",
            ),
            (r#"{"visitor_id":"v-1"}"#, "missing field `kind`"),
            (r#"{}"#, "missing field `kind`"),
            (r#"{"x":1,"kind":7}"#, "\"kind\" is not a string"),
            (r#"{"kind":7}"#, "invalid type"),
            (r#"{"kind":"visitor"}"#, "missing field `visitor_id`"),
            (r#""agent""#, "invalid type"),
        ] {
            let error = serde_json::from_str::<Author>(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
        let error = serde_json::from_str::<MessageContent>(r#"{"type":"text"}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing field `text`"), "{error}");
    }
}
