//! The status table, cell by cell, through the real API: every one of the 18
//! (status, action) pairs gets its own test, so a failure names its cell.
//!
//! An allowed cell must move the status, change the etag, keep the times
//! consistent and append events; a refused cell must answer
//! FAILED_PRECONDITION with its reason and change nothing at all.

use conversations::pb::{self, ConversationStatus as S, send_message_request::Sender};
use tonic::{Code, Status};

use crate::helpers::{
    Client, TestApp, as_visitor, close_request, dana, get, hello_request, mark_pending_request,
    reason, reopen_request, restart_request, start, thread,
};

const VISITOR: &str = "v-table";

/// The columns of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Close,
    MarkPending,
    Reopen,
    Restart,
    VisitorMessage,
    AgentMessage,
}

/// What a cell says.
#[derive(Debug, Clone, Copy)]
enum Expected {
    Becomes(S),
    Refused(&'static str),
}

use Expected::{Becomes, Refused};

/// A conversation brought to `status` through the API: start, then mark
/// pending or close.
async fn conversation_in(agent: &mut Client, visitor: &mut Client, status: S) -> pb::Conversation {
    let started = start(agent, VISITOR).await;
    let action = match status {
        S::Open => return started,
        S::Pending => Action::MarkPending,
        S::Closed => Action::Close,
        S::Unspecified => unreachable!("no conversation is UNSPECIFIED"),
    };
    let (conversation, _) = act(agent, visitor, &started.conversation_id, action)
        .await
        .expect("setup transition");
    conversation
}

/// Does `action` on `id`: agent actions with the agent key as Dana, visitor
/// actions with the visitor key as the conversation's visitor.
async fn act(
    agent: &mut Client,
    visitor: &mut Client,
    id: &str,
    action: Action,
) -> Result<(pb::Conversation, i64), Status> {
    let (conversation, event_sequence) = match action {
        Action::Close => {
            let r = agent
                .close_conversation(close_request(id, dana()))
                .await?
                .into_inner();
            (r.conversation, r.event_sequence)
        }
        Action::MarkPending => {
            let r = agent
                .mark_conversation_pending(mark_pending_request(id, dana()))
                .await?
                .into_inner();
            (r.conversation, r.event_sequence)
        }
        Action::Reopen => {
            let r = agent
                .reopen_conversation(reopen_request(id, dana()))
                .await?
                .into_inner();
            (r.conversation, r.event_sequence)
        }
        Action::Restart => {
            let r = visitor
                .restart_conversation(restart_request(id, VISITOR))
                .await?
                .into_inner();
            (r.conversation, r.event_sequence)
        }
        Action::VisitorMessage | Action::AgentMessage => {
            let (client, sender) = if action == Action::VisitorMessage {
                (visitor, as_visitor(VISITOR))
            } else {
                (agent, Sender::Agent(dana()))
            };
            let r = client
                .send_message(hello_request(id, sender))
                .await?
                .into_inner();
            (r.conversation, r.event_sequence)
        }
    };
    Ok((conversation.expect("conversation"), event_sequence))
}

/// What an agent key sees of a conversation, plus the event feed head: equal
/// before and after a call exactly when the call changed nothing.
#[derive(Debug, PartialEq)]
pub(crate) struct Seen {
    pub(crate) conversation: pb::Conversation,
    pub(crate) messages: usize,
    pub(crate) head: i64,
}

/// Reads [`Seen`] with an agent key.
pub(crate) async fn seen(app: &TestApp, agent: &mut Client, id: &str) -> Seen {
    Seen {
        conversation: get(agent, id, "").await,
        messages: thread(agent, id, "").await.len(),
        head: app.max_event_sequence().await,
    }
}

fn micros(t: &Option<prost_types::Timestamp>) -> i64 {
    let t = t.as_ref().expect("timestamp set");
    t.seconds * 1_000_000 + i64::from(t.nanos / 1000)
}

/// Messages an allowed cell writes: the sent message, the transactional
/// message of a status change, or both for a visitor reply on PENDING.
fn new_messages(from: S, action: Action) -> usize {
    match (from, action) {
        (S::Pending, Action::VisitorMessage) => 2,
        _ => 1,
    }
}

async fn check_cell(from: S, action: Action, expected: Expected) {
    let cell = format!("cell {from:?} × {action:?}");
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let conversation = conversation_in(&mut agent, &mut visitor, from).await;
    assert_eq!(conversation.status(), from, "{cell}: setup");
    let id = conversation.conversation_id;
    let before = seen(&app, &mut agent, &id).await;

    let result = act(&mut agent, &mut visitor, &id, action).await;
    let after = seen(&app, &mut agent, &id).await;

    match expected {
        Refused(expected_reason) => {
            let status = match result {
                Ok((c, _)) => panic!("{cell}: should be refused, became {:?}", c.status()),
                Err(status) => status,
            };
            assert_eq!(
                status.code(),
                Code::FailedPrecondition,
                "{cell}: {status:?}"
            );
            assert_eq!(reason(&status), expected_reason, "{cell}: {status:?}");
            assert_eq!(
                after.conversation, before.conversation,
                "{cell}: a refused call changed the conversation (status, etag or times)"
            );
            assert_eq!(
                after.messages, before.messages,
                "{cell}: a refused call wrote a message"
            );
            assert_eq!(
                after.head, before.head,
                "{cell}: a refused call appended events"
            );
        }
        Becomes(to) => {
            let (returned, event_sequence) =
                result.unwrap_or_else(|status| panic!("{cell}: refused: {status:?}"));
            let (old, now) = (&before.conversation, &after.conversation);
            assert_eq!(returned.status(), to, "{cell}: status returned");
            assert_eq!(now.status(), to, "{cell}: status read back");
            assert_eq!(returned.etag, now.etag, "{cell}: returned etag is current");
            assert_ne!(now.etag, old.etag, "{cell}: etag must change");
            assert_eq!(now.create_time, old.create_time, "{cell}: create_time");
            assert!(
                micros(&now.update_time) >= micros(&old.update_time),
                "{cell}: update_time went back"
            );
            if to == from {
                assert_eq!(
                    now.status_change_time, old.status_change_time,
                    "{cell}: status_change_time moved without a status change"
                );
            } else {
                assert!(
                    micros(&now.status_change_time) >= micros(&old.status_change_time),
                    "{cell}: status_change_time went back"
                );
                assert_eq!(
                    now.status_change_time, now.update_time,
                    "{cell}: status_change_time is the time of this change"
                );
            }
            assert_eq!(
                now.close_time.is_some(),
                to == S::Closed,
                "{cell}: close_time set exactly when CLOSED"
            );
            if to == S::Closed {
                assert_eq!(now.close_time, now.status_change_time, "{cell}: close_time");
            }
            assert_eq!(now.restart_available, to == S::Closed, "{cell}: restart");
            assert_eq!(returned.restart_available, to == S::Closed, "{cell}");
            assert!(
                event_sequence > before.head,
                "{cell}: event_sequence {event_sequence} not after {}",
                before.head
            );
            assert_eq!(after.head, event_sequence, "{cell}: last event appended");
            assert_eq!(
                after.messages,
                before.messages + new_messages(from, action),
                "{cell}: messages written"
            );
            assert_eq!(
                now.message_count as usize, after.messages,
                "{cell}: agent's message_count"
            );
        }
    }
    app.stop().await;
}

macro_rules! cells {
    ($($name:ident: $from:ident, $action:ident => $expected:expr;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                check_cell(S::$from, Action::$action, $expected).await;
            }
        )*
    };
}

cells! {
    closing_an_open_conversation_closes_it:
        Open, Close => Becomes(S::Closed);
    marking_an_open_conversation_pending_makes_it_pending:
        Open, MarkPending => Becomes(S::Pending);
    reopening_an_open_conversation_is_refused_as_already_open:
        Open, Reopen => Refused("CONVERSATION_ALREADY_OPEN");
    restarting_an_open_conversation_is_refused_as_not_closed:
        Open, Restart => Refused("CONVERSATION_NOT_CLOSED");
    a_visitor_message_keeps_an_open_conversation_open:
        Open, VisitorMessage => Becomes(S::Open);
    an_agent_message_keeps_an_open_conversation_open:
        Open, AgentMessage => Becomes(S::Open);

    closing_a_pending_conversation_closes_it:
        Pending, Close => Becomes(S::Closed);
    marking_a_pending_conversation_pending_is_refused_as_already_pending:
        Pending, MarkPending => Refused("CONVERSATION_ALREADY_PENDING");
    reopening_a_pending_conversation_opens_it:
        Pending, Reopen => Becomes(S::Open);
    restarting_a_pending_conversation_is_refused_as_not_closed:
        Pending, Restart => Refused("CONVERSATION_NOT_CLOSED");
    a_visitor_message_moves_a_pending_conversation_to_open:
        Pending, VisitorMessage => Becomes(S::Open);
    an_agent_message_keeps_a_pending_conversation_pending:
        Pending, AgentMessage => Becomes(S::Pending);

    closing_a_closed_conversation_is_refused_as_already_closed:
        Closed, Close => Refused("CONVERSATION_ALREADY_CLOSED");
    marking_a_closed_conversation_pending_is_refused_as_closed:
        Closed, MarkPending => Refused("CONVERSATION_CLOSED");
    reopening_a_closed_conversation_opens_it:
        Closed, Reopen => Becomes(S::Open);
    restarting_a_closed_conversation_opens_it:
        Closed, Restart => Becomes(S::Open);
    visitor_cannot_message_a_closed_conversation:
        Closed, VisitorMessage => Refused("CONVERSATION_CLOSED");
    agent_cannot_message_a_closed_conversation:
        Closed, AgentMessage => Refused("CONVERSATION_CLOSED");
}

#[tokio::test]
async fn a_visitor_refused_on_a_closed_conversation_is_told_to_restart_it() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let closed = conversation_in(&mut agent, &mut visitor, S::Closed).await;

    let refused = act(
        &mut agent,
        &mut visitor,
        &closed.conversation_id,
        Action::VisitorMessage,
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("restart"),
        "the visitor should be told to restart: {:?}",
        refused.message()
    );
    assert!(
        closed.restart_available,
        "and the conversation offers a restart"
    );
    app.stop().await;
}
