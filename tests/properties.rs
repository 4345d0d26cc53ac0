//! Property tests of the lifecycle rules (issue 8): any sequence of commands
//! — visitor and agent messages, close, mark pending, reopen, restart, with
//! fresh, stale or no etags, on a conversation with or without a bot flow —
//! keeps the invariants every reader relies on:
//! - the conversation's status is the `to_status` of its last StatusChanged
//!   event (OPEN before any), and each StatusChanged starts where the last
//!   ended;
//! - thread positions are 1..n with no gap, and the counts agree with them;
//! - a CLOSED conversation never gains a visitor message;
//! - every message has its MessagePosted event; the version moves by one per
//!   applied command, and a refusal is one of the rules' (never a misuse);
//! - (issue 10) with notes, assignments, snoozes, time passing and timers
//!   firing, with auto-close on or off: a status change keeps the assignee;
//!   only a PENDING conversation is snoozed; a timer fires only when due,
//!   never on a closed conversation, and at most once per due time.
//!
//! `PROPTEST_CASES` sets the number of sequences (256 by default).

use conversations::{
    domain::{
        Audience, Author, Command, Conversation, DecideError, EventPayload, Message,
        MessageContent, Micros, Status, WorkspaceId,
        flow::{FlowDefinition, ValidFlow},
        lifecycle::{AgentAction, Context, FlowRef, NewEvent, Sender, decide},
        timers::{self, AutoClose, WorkspaceSettings},
        values::{AgentId, AgentRef, Channel, DisplayName, MessageText, VisitorId},
    },
    ids::UlidIds,
};
use proptest::prelude::*;

/// One step a caller may take.
#[derive(Debug, Clone)]
enum Step {
    VisitorSays(String),
    AgentSays(Channel, String),
    Agent(AgentAction, Channel, Etag),
    Restart,
    AgentNote(String),
    Assign(Option<usize>, Etag),
    Snooze(i64),
    Wait(i64),
    Fire,
}

/// Which etag a status change carries.
#[derive(Debug, Clone, Copy)]
enum Etag {
    None,
    Current,
    Stale,
}

fn channel() -> impl Strategy<Value = Channel> {
    prop_oneof![
        Just(Channel::Unspecified),
        Just(Channel::Inbox),
        Just(Channel::Slack),
        Just(Channel::MsTeams),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let text = "[a-z][a-z ]{0,11}";
    let etag = prop_oneof![Just(Etag::None), Just(Etag::Current), Just(Etag::Stale)];
    let action = prop_oneof![
        Just(AgentAction::Close),
        Just(AgentAction::MarkPending),
        Just(AgentAction::Reopen),
    ];
    prop_oneof![
        3 => text.prop_map(Step::VisitorSays),
        2 => (channel(), text).prop_map(|(c, t)| Step::AgentSays(c, t)),
        4 => (action, channel(), etag.clone()).prop_map(|(a, c, e)| Step::Agent(a, c, e)),
        1 => Just(Step::Restart),
        1 => text.prop_map(Step::AgentNote),
        1 => (proptest::option::of(0..2usize), etag).prop_map(|(a, e)| Step::Assign(a, e)),
        1 => (1..20i64).prop_map(Step::Snooze),
        2 => (1..20i64).prop_map(Step::Wait),
        2 => Just(Step::Fire),
    ]
}

fn agents(i: usize) -> AgentRef {
    AgentRef {
        agent_id: AgentId::parse(["agent-dana", "agent-sam"][i]).expect("id"),
        display_name: DisplayName::parse(["Dana", "Sam"][i]).expect("name"),
        channel: Channel::Inbox,
    }
}

/// A flow that greets, asks two questions and hands off.
fn flow() -> ValidFlow {
    let definition: FlowDefinition = serde_json::from_str(
        r#"{"name": "Greeting", "steps": [
            {"type": "message", "content": {"type": "text", "text": "Hi!"}},
            {"type": "question", "key": "name", "text": "Your name?"},
            {"type": "question", "key": "size", "text": "Team size?", "choices": ["1-10", "11+"]},
            {"type": "handoff", "text": "An agent will join."}
        ]}"#,
    )
    .expect("flow JSON");
    definition.validate().expect("a valid flow")
}

fn agent(channel: Channel) -> AgentRef {
    AgentRef {
        agent_id: AgentId::parse("agent-dana").expect("id"),
        display_name: DisplayName::parse("Dana").expect("name"),
        channel,
    }
}

fn visitor() -> VisitorId {
    VisitorId::parse("v-1").expect("visitor")
}

fn text(t: &str) -> MessageContent {
    MessageContent::Text {
        text: MessageText::parse(t).expect("text"),
    }
}

/// The conversation with everything written so far.
struct History {
    conversation: Conversation,
    messages: Vec<Message>,
    events: Vec<NewEvent>,
}

impl History {
    fn check(&self) -> Result<(), TestCaseError> {
        let c = &self.conversation;
        let mut status = Status::Open;
        for event in &self.events {
            if let EventPayload::StatusChanged {
                from_status,
                to_status,
                ..
            } = &event.payload
            {
                prop_assert_eq!(
                    *from_status,
                    status,
                    "a StatusChanged starts where the last ended"
                );
                prop_assert_ne!(from_status, to_status);
                status = *to_status;
            }
        }
        prop_assert_eq!(
            c.status,
            status,
            "status = the last StatusChanged's to_status"
        );

        let positions: Vec<i64> = self.messages.iter().map(|m| m.position).collect();
        let expected: Vec<i64> = (1..=self.messages.len() as i64).collect();
        prop_assert_eq!(positions, expected, "positions 1..n");
        prop_assert_eq!(c.message_count, self.messages.len() as i64);
        let for_everyone = self
            .messages
            .iter()
            .filter(|m| m.audience == Audience::Everyone)
            .count();
        prop_assert_eq!(c.everyone_message_count, for_everyone as i64);
        let posted = self
            .events
            .iter()
            .filter(|e| matches!(e.payload, EventPayload::MessagePosted { .. }))
            .count();
        prop_assert_eq!(posted, self.messages.len(), "one MessagePosted per message");
        Ok(())
    }
}

/// Runs `steps` on a new conversation (running `flow` if given), checking
/// the invariants after every step.
fn run(
    steps: &[Step],
    flow: Option<&ValidFlow>,
    settings: &WorkspaceSettings,
) -> Result<(), TestCaseError> {
    let workspace = WorkspaceId(1);
    let context = |now| Context {
        workspace_id: workspace,
        settings,
        now,
    };
    let mut ids = UlidIds;
    let mut now = Micros(1_000_000);
    let flow_ref = flow.map(|flow| FlowRef {
        flow_id: "flow_1",
        version: 1,
        flow,
    });
    let start = Command::Start {
        visitor_id: visitor(),
        agent: None,
        flow_id: flow_ref.map(|f| f.flow_id.to_owned()),
    };
    let started = decide(&start, context(now), None, flow_ref, &mut ids).expect("a start");
    let mut history = History {
        conversation: started.conversation,
        messages: started.messages,
        events: started.events,
    };
    history.check()?;
    // An etag the conversation never had, until it has an old one.
    let mut stale = format!("{}-never", history.conversation.etag());

    for step in steps {
        now = Micros(now.0 + 1_000);
        let c = &history.conversation;
        let id = c.id.clone();
        let (command, runs_flow) = match step {
            Step::VisitorSays(t) => (
                Command::SendMessage {
                    conversation_id: id,
                    sender: Sender::Visitor(visitor()),
                    content: text(t),
                    audience: Audience::Everyone,
                },
                true,
            ),
            Step::AgentSays(channel, t) => (
                Command::SendMessage {
                    conversation_id: id,
                    sender: Sender::Agent(agent(*channel)),
                    content: text(t),
                    audience: Audience::Everyone,
                },
                false,
            ),
            Step::Agent(action, channel, etag) => (
                Command::ChangeStatus {
                    conversation_id: id,
                    action: *action,
                    agent: agent(*channel),
                    etag: match etag {
                        Etag::None => None,
                        Etag::Current => Some(c.etag()),
                        Etag::Stale => Some(stale.clone()),
                    },
                    snooze_end_time: None,
                },
                false,
            ),
            Step::AgentNote(t) => (
                Command::SendMessage {
                    conversation_id: id,
                    sender: Sender::Agent(agent(Channel::Inbox)),
                    content: text(t),
                    audience: Audience::Agents,
                },
                false,
            ),
            Step::Assign(to, etag) => (
                Command::Assign {
                    conversation_id: id,
                    agent: agent(Channel::Slack),
                    assignee: to.map(agents),
                    etag: match etag {
                        Etag::None => None,
                        Etag::Current => Some(c.etag()),
                        Etag::Stale => Some(stale.clone()),
                    },
                },
                false,
            ),
            Step::Snooze(seconds) => (
                Command::ChangeStatus {
                    conversation_id: id,
                    action: AgentAction::MarkPending,
                    agent: agent(Channel::Inbox),
                    etag: None,
                    snooze_end_time: Some(Micros(now.0 + seconds * 1_000_000)),
                },
                false,
            ),
            Step::Wait(seconds) => {
                now = Micros(now.0 + seconds * 1_000_000);
                continue;
            }
            Step::Fire => (
                Command::Fire {
                    conversation_id: id,
                },
                false,
            ),
            Step::Restart => (
                Command::Restart {
                    conversation_id: id,
                    visitor_id: visitor(),
                },
                true,
            ),
        };
        let flow = if runs_flow && c.flow.is_some() {
            flow_ref
        } else {
            None
        };
        let before = c.clone();
        let due = timers::due_now(c, settings, now);
        match decide(&command, context(now), Some(c), flow, &mut ids) {
            Ok(change) => {
                if let Command::ChangeStatus { .. } = command {
                    prop_assert_eq!(
                        &change.conversation.assignee,
                        &before.assignee,
                        "a status change keeps the assignee"
                    );
                }
                if let Command::Fire { .. } = command {
                    prop_assert!(due.is_some(), "a timer fired when nothing was due");
                    prop_assert_ne!(
                        before.status,
                        Status::Closed,
                        "a timer fired on a closed conversation"
                    );
                    prop_assert!(
                        timers::due_now(&change.conversation, settings, now).is_none(),
                        "a timer left itself due"
                    );
                }
                if before.status == Status::Closed {
                    prop_assert!(
                        !change
                            .messages
                            .iter()
                            .any(|m| matches!(m.author, Author::Visitor { .. })),
                        "a CLOSED conversation gained a visitor message: {step:?}"
                    );
                }
                prop_assert_eq!(change.conversation.version, before.version + 1);
                stale = before.etag();
                history.conversation = change.conversation;
                history.messages.extend(change.messages);
                history.events.extend(change.events);
            }
            Err(error) => {
                if let Command::Fire { .. } = command {
                    prop_assert!(due.is_none(), "a due timer was refused: {error:?}");
                }
                // A refusal of the rules, never a misuse of `decide`.
                prop_assert!(
                    !matches!(error, DecideError::Misuse),
                    "{step:?} was a misuse: {error:?}"
                );
            }
        }
        history.check()?;
        let c = &history.conversation;
        prop_assert!(
            c.snooze_end_time.is_none() || c.status == Status::Pending,
            "only a pending conversation is snoozed"
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn any_sequence_of_commands_keeps_the_lifecycle_invariants(
        steps in proptest::collection::vec(step(), 0..60)
    ) {
        run(&steps, None, &WorkspaceSettings::default())?;
    }

    #[test]
    fn any_sequence_of_commands_keeps_the_invariants_while_a_bot_flow_runs(
        steps in proptest::collection::vec(step(), 0..60)
    ) {
        run(&steps, Some(&flow()), &WorkspaceSettings::default())?;
    }

    #[test]
    fn any_sequence_of_commands_and_timers_keeps_the_invariants_with_auto_close_on(
        steps in proptest::collection::vec(step(), 0..60)
    ) {
        let settings = WorkspaceSettings {
            auto_close: Some(
                AutoClose::new(8_000_000, Some(MessageText::parse("Closed for now.").expect("text")))
                    .expect("auto-close"),
            ),
        };
        run(&steps, Some(&flow()), &settings)?;
    }
}
