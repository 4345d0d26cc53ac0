//! Conversions between protobuf messages and domain values. Parsing collects
//! every bad field of a request, so a caller learns all of them at once.

use prost_types::{Duration, Timestamp};

use crate::{
    app::{AppError, FieldViolation},
    domain::{
        Audience, Author, Conversation, Message, MessageContent, Micros, Status,
        credentials::Role,
        flow::{FlowRun, RunStatus},
        lifecycle::{Event, EventKind, EventPayload},
        message::{Appointment, TransactionalKind},
        values::{
            AgentId, AgentRef, Channel, DisplayName, HttpsUrl, Invalid, Label, MAX_PROVIDER_CHARS,
            MAX_TITLE_CHARS, MessageText, check_appointment_duration,
        },
    },
    pb,
};

/// Collects field violations while a request is parsed.
#[derive(Default)]
pub struct Fields {
    violations: Vec<FieldViolation>,
}

impl Fields {
    /// Records a violation of `field`.
    pub fn violation(&mut self, field: &str, description: impl Into<String>) {
        self.violations.push(FieldViolation {
            field: field.to_owned(),
            description: description.into(),
        });
    }

    /// The value, or `None` with the violation recorded.
    pub fn check<T>(&mut self, field: &str, parsed: Result<T, Invalid>) -> Option<T> {
        parsed.map_err(|why| self.violation(field, why)).ok()
    }

    /// `Some(value)` for a non-empty string, `None` for an empty one (an
    /// optional field left unset), recording a violation if it is malformed.
    pub fn optional<T>(
        &mut self,
        field: &str,
        value: &str,
        parse: impl FnOnce(&str) -> Result<T, Invalid>,
    ) -> Option<T> {
        if value.is_empty() {
            None
        } else {
            self.check(field, parse(value))
        }
    }

    /// The parsed request, or every violation recorded. `parsed` is `None`
    /// only when a required field failed, which recorded a violation; the
    /// fallback violation below guards against a parser that forgot to.
    pub fn done<T>(self, parsed: Option<T>) -> Result<T, AppError> {
        match parsed {
            Some(value) if self.violations.is_empty() => Ok(value),
            _ if !self.violations.is_empty() => Err(AppError::InvalidArgument(self.violations)),
            _ => Err(AppError::InvalidArgument(vec![FieldViolation {
                field: "request".into(),
                description: "is malformed".into(),
            }])),
        }
    }
}

/// A required page size: 0 is the default, negative is refused.
pub fn page_size(fields: &mut Fields, value: i32) -> u32 {
    u32::try_from(value).unwrap_or_else(|_| {
        fields.violation("page_size", "must not be negative");
        0
    })
}

/// `Some(token)` when a page token was given.
pub fn page_token(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}

fn channel(fields: &mut Fields, field: &str, value: i32) -> Channel {
    match pb::Channel::try_from(value) {
        Ok(pb::Channel::Unspecified) => Channel::Unspecified,
        Ok(pb::Channel::Inbox) => Channel::Inbox,
        Ok(pb::Channel::Slack) => Channel::Slack,
        Ok(pb::Channel::MsTeams) => Channel::MsTeams,
        Ok(pb::Channel::Widget) => Channel::Widget,
        Err(_) => {
            fields.violation(field, format!("{value} is not a known Channel"));
            Channel::Unspecified
        }
    }
}

/// A required agent.
pub fn agent(fields: &mut Fields, field: &str, value: Option<&pb::AgentRef>) -> Option<AgentRef> {
    let Some(value) = value else {
        fields.violation(field, "is required");
        return None;
    };
    let agent_id = fields.check(
        &format!("{field}.agent_id"),
        AgentId::parse(&value.agent_id),
    );
    let display_name = fields.check(
        &format!("{field}.display_name"),
        DisplayName::parse(&value.display_name),
    );
    let channel = channel(fields, &format!("{field}.channel"), value.channel);
    Some(AgentRef {
        agent_id: agent_id?,
        display_name: display_name?,
        channel,
    })
}

/// A `google.protobuf.Duration` of whole seconds (no fraction, not
/// negative), as seconds.
pub(super) fn whole_seconds(fields: &mut Fields, field: &str, value: &Duration) -> Option<i64> {
    if value.nanos != 0 || value.seconds < 0 {
        fields.violation(field, "must be a whole, positive number of seconds");
        return None;
    }
    Some(value.seconds)
}

/// A visitor session id, as CreateVisitorSession gives them.
pub(super) fn session_id(value: &str) -> Result<String, Invalid> {
    crate::domain::session::check_session_id(value).map(|()| value.to_owned())
}

pub(super) fn timestamp(
    fields: &mut Fields,
    field: &str,
    value: Option<&Timestamp>,
) -> Option<Micros> {
    let Some(value) = value else {
        fields.violation(field, "is required");
        return None;
    };
    // Years 0001 to 9999, as google.protobuf.Timestamp allows.
    let in_range = (-62_135_596_800..=253_402_300_799).contains(&value.seconds)
        && (0..1_000_000_000).contains(&value.nanos);
    if !in_range {
        fields.violation(field, "is not a valid timestamp");
        return None;
    }
    Some(Micros(
        value.seconds * 1_000_000 + i64::from(value.nanos / 1000),
    ))
}

/// An appointment's google.protobuf.Duration as nanoseconds: valid (see
/// [`spec_duration`]), more than zero and at most 24 hours.
pub(super) fn duration(fields: &mut Fields, field: &str, value: Option<&Duration>) -> Option<i64> {
    let nanos = spec_duration(fields, field, value, "must be at most 24 hours")?;
    fields.check(field, check_appointment_duration(nanos))?;
    Some(nanos)
}

/// A google.protobuf.Duration as nanoseconds, checked as its spec says:
/// `nanos` within ±999,999,999 and of the same sign as `seconds`; `too_long`
/// when it does not fit.
pub(super) fn spec_duration(
    fields: &mut Fields,
    field: &str,
    value: Option<&Duration>,
    too_long: &str,
) -> Option<i64> {
    let Some(value) = value else {
        fields.violation(field, "is required");
        return None;
    };
    let same_sign =
        value.seconds == 0 || value.nanos == 0 || (value.seconds > 0) == (value.nanos > 0);
    if value.nanos.unsigned_abs() > 999_999_999 || !same_sign {
        fields.violation(
            field,
            "is not a valid duration (nanos out of range or of another sign than seconds)",
        );
        return None;
    }
    let nanos = value
        .seconds
        .checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(i64::from(value.nanos)));
    fields.check(field, nanos.ok_or_else(|| too_long.to_owned()))
}

/// The content of a SendMessage request.
pub fn content(
    fields: &mut Fields,
    value: Option<&pb::send_message_request::Content>,
) -> Option<MessageContent> {
    use pb::send_message_request::Content;
    match value {
        None => {
            fields.violation(
                "content",
                "is required: set one of text, meeting_link or appointment",
            );
            None
        }
        Some(Content::Text(text)) => {
            let text = fields.check("text", MessageText::parse(text))?;
            Some(MessageContent::Text { text })
        }
        Some(Content::MeetingLink(link)) => {
            let url = fields.check("meeting_link.url", HttpsUrl::parse(&link.url));
            let provider = fields.check(
                "meeting_link.provider",
                Label::parse(&link.provider, MAX_PROVIDER_CHARS),
            );
            Some(MessageContent::MeetingLink {
                url: url?,
                provider: provider?,
            })
        }
        Some(Content::Appointment(appointment)) => {
            let start_time = timestamp(
                fields,
                "appointment.start_time",
                appointment.start_time.as_ref(),
            );
            let duration_nanos = duration(
                fields,
                "appointment.duration",
                appointment.duration.as_ref(),
            );
            let title = fields.check(
                "appointment.title",
                Label::parse(&appointment.title, MAX_TITLE_CHARS),
            );
            let url = fields.optional("appointment.url", &appointment.url, HttpsUrl::parse);
            let url_ok = appointment.url.is_empty() || url.is_some();
            if !url_ok {
                return None;
            }
            Some(MessageContent::Appointment(Appointment {
                start_time: start_time?,
                duration_nanos: duration_nanos?,
                title: title?,
                url,
            }))
        }
    }
}

/// Statuses of a list filter; UNSPECIFIED or unknown values are refused.
pub fn statuses(fields: &mut Fields, values: &[i32]) -> Vec<Status> {
    let mut statuses = Vec::new();
    for (i, value) in values.iter().enumerate() {
        match pb::ConversationStatus::try_from(*value) {
            Ok(pb::ConversationStatus::Open) => statuses.push(Status::Open),
            Ok(pb::ConversationStatus::Pending) => statuses.push(Status::Pending),
            Ok(pb::ConversationStatus::Closed) => statuses.push(Status::Closed),
            Ok(pb::ConversationStatus::Unspecified) | Err(_) => {
                fields.violation(
                    &format!("statuses[{i}]"),
                    format!("{value} is not OPEN, PENDING or CLOSED"),
                );
            }
        }
    }
    statuses
}

/// Event kinds of a feed filter; UNSPECIFIED or unknown values are refused.
pub fn event_kinds(fields: &mut Fields, values: &[i32]) -> Vec<EventKind> {
    let mut kinds = Vec::new();
    for (i, value) in values.iter().enumerate() {
        match pb::EventType::try_from(*value) {
            Ok(pb::EventType::ConversationStarted) => kinds.push(EventKind::ConversationStarted),
            Ok(pb::EventType::StatusChanged) => kinds.push(EventKind::StatusChanged),
            Ok(pb::EventType::MessagePosted) => kinds.push(EventKind::MessagePosted),
            Ok(pb::EventType::ConversationAssigned) => kinds.push(EventKind::ConversationAssigned),
            Ok(pb::EventType::Unspecified) | Err(_) => {
                fields.violation(
                    &format!("event_types[{i}]"),
                    format!("{value} is not a known EventType"),
                );
            }
        }
    }
    kinds
}

/// Who a SendMessage is for: everyone unless an agent writes a note.
pub fn audience(
    fields: &mut Fields,
    value: i32,
    sender: Option<&crate::domain::lifecycle::Sender>,
) -> Option<Audience> {
    use crate::domain::lifecycle::Sender;
    match pb::Audience::try_from(value) {
        Ok(pb::Audience::Unspecified | pb::Audience::Everyone) => Some(Audience::Everyone),
        Ok(pb::Audience::Agents) => match sender {
            Some(Sender::Visitor(_)) => {
                fields.violation(
                    "audience",
                    "AUDIENCE_AGENTS is for agents' internal notes; a visitor's message is for everyone",
                );
                None
            }
            _ => Some(Audience::Agents),
        },
        Err(_) => {
            fields.violation("audience", format!("{value} is not a known Audience"));
            None
        }
    }
}

/// A snooze's end: a valid time, in the future, at most
/// [`MAX_SNOOZE_MICROS`](crate::domain::timers::MAX_SNOOZE_MICROS) ahead.
pub fn snooze_end(fields: &mut Fields, value: &Timestamp) -> Option<Micros> {
    let at = timestamp(fields, "snooze_end_time", Some(value))?;
    let now = crate::ids::now();
    if at <= now {
        fields.violation("snooze_end_time", "must be in the future");
        return None;
    }
    if at.0 - now.0 > crate::domain::timers::MAX_SNOOZE_MICROS {
        fields.violation("snooze_end_time", "must be at most 366 days ahead");
        return None;
    }
    Some(at)
}

// ---- domain to protobuf ----

/// A flow run; its answers only for roles that see agents-only data.
fn to_flow_progress(run: &FlowRun, role: Role) -> pb::FlowProgress {
    pb::FlowProgress {
        flow_id: run.flow_id.clone(),
        flow_version: run.version,
        current_step: i32::try_from(run.step).unwrap_or(i32::MAX),
        answers: if role.sees_agents_only() {
            run.answers
                .iter()
                .map(|a| pb::FlowAnswer {
                    key: a.key.as_str().to_owned(),
                    value: a.value.clone(),
                })
                .collect()
        } else {
            Vec::new()
        },
        status: match run.status {
            RunStatus::AwaitingAnswer => pb::FlowRunStatus::AwaitingAnswer,
            RunStatus::HandedOff => pb::FlowRunStatus::HandedOff,
            RunStatus::Completed => pb::FlowRunStatus::Completed,
            RunStatus::Stopped => pb::FlowRunStatus::Stopped,
        }
        .into(),
    }
}

/// An event of the feed as the caller's role sees it.
pub fn to_event(event: &Event, role: Role) -> pb::Event {
    use pb::event::Payload;
    let payload = match &event.payload {
        EventPayload::ConversationStarted { conversation } => {
            Payload::ConversationStarted(pb::ConversationStarted {
                conversation: Some(to_conversation(conversation, role)),
            })
        }
        EventPayload::StatusChanged {
            from_status: from,
            to_status: to,
            actor,
            conversation,
        } => Payload::StatusChanged(pb::StatusChanged {
            from_status: to_status(*from).into(),
            to_status: to_status(*to).into(),
            actor: Some(to_author(actor, role)),
            conversation: Some(to_conversation(conversation, role)),
        }),
        EventPayload::MessagePosted { message } => Payload::MessagePosted(pb::MessagePosted {
            message: Some(to_message(message, role)),
        }),
        EventPayload::ConversationAssigned {
            from,
            to,
            actor,
            conversation,
        } => Payload::ConversationAssigned(pb::ConversationAssigned {
            from_assignee: from.as_ref().map(|a| to_agent(a, role)),
            to_assignee: to.as_ref().map(|a| to_agent(a, role)),
            actor: Some(to_author(actor, role)),
            conversation: Some(to_conversation(conversation, role)),
        }),
    };
    pb::Event {
        sequence: event.sequence,
        event_id: event.event_id.clone(),
        conversation_id: event.conversation_id.as_str().to_owned(),
        create_time: Some(to_timestamp(event.create_time)),
        payload: Some(payload),
    }
}

/// A timestamp from microseconds.
pub fn to_timestamp(micros: Micros) -> Timestamp {
    Timestamp {
        seconds: micros.0.div_euclid(1_000_000),
        nanos: i32::try_from(micros.0.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    }
}

/// A duration from nanoseconds. Appointment durations are validated
/// positive, so seconds and nanos share a sign as the type requires.
pub fn to_duration(nanos: i64) -> Duration {
    Duration {
        seconds: nanos / 1_000_000_000,
        nanos: i32::try_from(nanos % 1_000_000_000).unwrap_or(0),
    }
}

/// The protobuf status.
pub fn to_status(status: Status) -> pb::ConversationStatus {
    match status {
        Status::Open => pb::ConversationStatus::Open,
        Status::Pending => pb::ConversationStatus::Pending,
        Status::Closed => pb::ConversationStatus::Closed,
    }
}

/// Which channel an agent acted from, for roles that may know it; the
/// others see CHANNEL_UNSPECIFIED.
fn to_agent_channel(channel: Channel, role: Role) -> pb::Channel {
    if role.sees_agents_only() {
        to_channel(channel)
    } else {
        pb::Channel::Unspecified
    }
}

fn to_channel(channel: Channel) -> pb::Channel {
    match channel {
        Channel::Unspecified => pb::Channel::Unspecified,
        Channel::Inbox => pb::Channel::Inbox,
        Channel::Slack => pb::Channel::Slack,
        Channel::MsTeams => pb::Channel::MsTeams,
        Channel::Widget => pb::Channel::Widget,
    }
}

fn to_agent(agent: &AgentRef, role: Role) -> pb::AgentRef {
    pb::AgentRef {
        agent_id: agent.agent_id.as_str().to_owned(),
        display_name: agent.display_name.as_str().to_owned(),
        channel: to_agent_channel(agent.channel, role).into(),
    }
}

/// A conversation as the caller's role sees it.
pub fn to_conversation(c: &Conversation, role: Role) -> pb::Conversation {
    pb::Conversation {
        conversation_id: c.id.as_str().to_owned(),
        status: to_status(c.status).into(),
        visitor_id: c.visitor_id.as_str().to_owned(),
        assignee: c.assignee.as_ref().map(|a| to_agent(a, role)),
        create_time: Some(to_timestamp(c.create_time)),
        update_time: Some(to_timestamp(c.update_time)),
        status_change_time: Some(to_timestamp(c.status_change_time)),
        close_time: c.close_time.map(to_timestamp),
        etag: c.etag(),
        message_count: if role.sees_agents_only() {
            c.message_count
        } else {
            c.everyone_message_count
        },
        restart_available: c.restart_available(),
        flow: c.flow.as_ref().map(|run| to_flow_progress(run, role)),
        snooze_end_time: if role.sees_agents_only() {
            c.snooze_end_time.map(to_timestamp)
        } else {
            None
        },
    }
}

fn to_author(author: &Author, role: Role) -> pb::Author {
    let (kind, id) = match author {
        Author::Visitor { visitor_id } => (pb::AuthorKind::Visitor, visitor_id.as_str()),
        Author::Agent(agent) => (pb::AuthorKind::Agent, agent.agent_id.as_str()),
        Author::Bot => (pb::AuthorKind::Bot, ""),
        Author::System => (pb::AuthorKind::System, ""),
    };
    pb::Author {
        kind: kind.into(),
        id: id.to_owned(),
        display_name: author.display_name().to_owned(),
        channel: match author {
            Author::Agent(agent) => to_agent_channel(agent.channel, role),
            _ => to_channel(author.channel()),
        }
        .into(),
    }
}

fn to_transactional_kind(kind: TransactionalKind) -> pb::TransactionalKind {
    match kind {
        TransactionalKind::Closed => pb::TransactionalKind::ConversationClosed,
        TransactionalKind::MarkedPending => pb::TransactionalKind::ConversationMarkedPending,
        TransactionalKind::Reopened => pb::TransactionalKind::ConversationReopened,
        TransactionalKind::Restarted => pb::TransactionalKind::ConversationRestarted,
        TransactionalKind::ReopenedByVisitorReply => {
            pb::TransactionalKind::ConversationReopenedByVisitorReply
        }
        TransactionalKind::FlowHandoff => pb::TransactionalKind::FlowHandoff,
        TransactionalKind::Assigned => pb::TransactionalKind::ConversationAssigned,
        TransactionalKind::SnoozeEnded => pb::TransactionalKind::SnoozeEnded,
        TransactionalKind::AutoClosed => pb::TransactionalKind::ConversationAutoClosed,
    }
}

/// A message as the caller's role sees it (visitors are only ever handed
/// AUDIENCE_EVERYONE ones).
pub fn to_message(m: &Message, role: Role) -> pb::Message {
    use pb::message::Content;
    let content = match &m.content {
        MessageContent::Text { text } => Content::Text(text.as_str().to_owned()),
        MessageContent::MeetingLink { url, provider } => Content::MeetingLink(pb::MeetingLink {
            url: url.as_str().to_owned(),
            provider: provider.as_str().to_owned(),
        }),
        MessageContent::Appointment(a) => Content::Appointment(pb::Appointment {
            start_time: Some(to_timestamp(a.start_time)),
            duration: Some(to_duration(a.duration_nanos)),
            title: a.title.as_str().to_owned(),
            url: a
                .url
                .as_ref()
                .map(|u| u.as_str().to_owned())
                .unwrap_or_default(),
        }),
        MessageContent::Transactional(t) => Content::Transactional(pb::Transactional {
            kind: to_transactional_kind(t.kind).into(),
            from_status: to_status(t.from_status).into(),
            to_status: to_status(t.to_status).into(),
            actor: Some(to_author(&t.actor, role)),
            text: t.text.clone(),
        }),
    };
    pb::Message {
        message_id: m.id.as_str().to_owned(),
        conversation_id: m.conversation_id.as_str().to_owned(),
        position: m.position,
        author: Some(to_author(&m.author, role)),
        audience: match m.audience {
            Audience::Everyone => pb::Audience::Everyone,
            Audience::Agents => pb::Audience::Agents,
        }
        .into(),
        create_time: Some(to_timestamp(m.create_time)),
        content: Some(content),
        quick_replies: m
            .quick_replies
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_through_micros_including_before_1970() {
        for micros in [0, 1, 1_700_000_000_123_456, -1, -1_500_000] {
            let ts = to_timestamp(Micros(micros));
            let mut fields = Fields::default();
            assert_eq!(timestamp(&mut fields, "t", Some(&ts)), Some(Micros(micros)));
        }
    }

    #[test]
    fn durations_are_checked_to_the_nanosecond_as_their_spec_says() {
        let check = |seconds, nanos| {
            let mut fields = Fields::default();
            duration(&mut fields, "d", Some(&Duration { seconds, nanos }))
        };
        assert_eq!(check(0, 1), Some(1));
        assert_eq!(check(86_400, 0), Some(86_400_000_000_000));
        assert_eq!(check(86_400, 1), None);
        assert_eq!(check(1, 2_000_000_000), None);
        assert_eq!(check(1, -5), None);
        assert_eq!(check(0, 0), None);
        assert_eq!(check(i64::MAX, 0), None);
        assert_eq!(check(0, i32::MIN), None);
        assert_eq!(check(i64::MIN, -999_999_999), None);
    }

    #[test]
    fn a_negative_page_size_is_a_violation() {
        let mut fields = Fields::default();
        assert_eq!(page_size(&mut fields, -1), 0);
        assert!(fields.done(Some(())).is_err());
    }
}
