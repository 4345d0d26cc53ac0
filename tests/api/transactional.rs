//! The messages a status change writes into the thread, in the same call:
//! their kind, audience, actor and sentence; thread positions; what a visitor
//! key sees and counts; rich contents; and who the assignee is.

use conversations::pb::{
    self, Audience, AuthorKind, ConversationStatus as S, TransactionalKind as K,
    message::Content as Listed,
    send_message_request::{Content, Sender},
};

use crate::helpers::{
    Client, TestApp, agent_ref, as_seen_by_visitor, as_visitor, close, dana, get, mark_pending,
    reopen, restart_request, start, thread,
};

const VISITOR: &str = "v-1";

async fn restart(visitor: &mut Client, id: &str) -> pb::Conversation {
    visitor
        .restart_conversation(restart_request(id, VISITOR))
        .await
        .expect("restart")
        .into_inner()
        .conversation
        .expect("conversation")
}

async fn send(
    client: &mut Client,
    id: &str,
    sender: Sender,
    content: Content,
) -> pb::SendMessageResponse {
    client
        .send_message(pb::SendMessageRequest {
            conversation_id: id.to_owned(),
            sender: Some(sender),
            content: Some(content),
            request_id: String::new(),
            audience: 0,
        })
        .await
        .expect("send")
        .into_inner()
}

fn text(value: &str) -> Content {
    Content::Text(value.into())
}

fn transactional(message: &pb::Message) -> &pb::Transactional {
    match &message.content {
        Some(Listed::Transactional(t)) => t,
        other => panic!("expected a transactional message, got {other:?}"),
    }
}

fn is_transactional(message: &pb::Message) -> bool {
    matches!(message.content, Some(Listed::Transactional(_)))
}

/// Dana from Slack as the actor of a note.
fn dana_author() -> pb::Author {
    pb::Author {
        kind: AuthorKind::Agent.into(),
        id: "agent-dana".into(),
        display_name: "Dana".into(),
        channel: pb::Channel::Slack.into(),
    }
}

/// Checks a note written by the service: author SYSTEM, and the kind,
/// audience, statuses and sentence given.
fn assert_note(
    message: &pb::Message,
    kind: K,
    audience: Audience,
    (from, to): (S, S),
    sentence: &str,
) {
    let author = message.author.as_ref().expect("author");
    assert_eq!(author.kind(), AuthorKind::System, "{message:?}");
    assert_eq!(author.id, "", "SYSTEM has no id");
    assert_eq!(message.audience(), audience, "{message:?}");
    let t = transactional(message);
    assert_eq!(t.kind(), kind);
    assert_eq!((t.from_status(), t.to_status()), (from, to));
    assert_eq!(t.text, sentence);
}

#[tokio::test]
async fn closing_writes_an_agents_only_note_naming_the_agent_and_channel() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, VISITOR).await.conversation_id;

    let closed = close(&mut agent, &id, dana())
        .await
        .conversation
        .expect("conversation");

    assert_eq!(closed.message_count, 1, "the note is counted by the close");
    let messages = thread(&mut agent, &id, "").await;
    assert_eq!(messages.len(), 1);
    let note = &messages[0];
    assert_eq!(note.position, 1);
    assert_eq!(note.conversation_id, id);
    assert_note(
        note,
        K::ConversationClosed,
        Audience::Agents,
        (S::Open, S::Closed),
        "Dana closed the conversation from Slack.",
    );
    assert_eq!(transactional(note).actor, Some(dana_author()));
    assert_eq!(
        note.create_time, closed.close_time,
        "written in the same call as the close"
    );
    app.stop().await;
}

#[tokio::test]
async fn marking_pending_writes_an_agents_only_note_naming_the_agent_and_channel() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, VISITOR).await.conversation_id;

    let pending = mark_pending(&mut agent, &id, dana())
        .await
        .conversation
        .expect("conversation");

    assert_eq!(pending.message_count, 1);
    let messages = thread(&mut agent, &id, "").await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].position, 1);
    assert_note(
        &messages[0],
        K::ConversationMarkedPending,
        Audience::Agents,
        (S::Open, S::Pending),
        "Dana marked the conversation as pending from Slack.",
    );
    assert_eq!(transactional(&messages[0]).actor, Some(dana_author()));
    assert_eq!(messages[0].create_time, pending.status_change_time);
    app.stop().await;
}

#[tokio::test]
async fn a_note_shows_the_agent_id_without_a_display_name_and_no_channel_when_unspecified() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, VISITOR).await.conversation_id;

    close(
        &mut agent,
        &id,
        agent_ref("agent-kim", "", pb::Channel::Unspecified),
    )
    .await;

    let messages = thread(&mut agent, &id, "").await;
    assert_eq!(
        transactional(&messages[0]).text,
        "agent-kim closed the conversation."
    );
    app.stop().await;
}

#[tokio::test]
async fn an_agent_reopening_a_closed_conversation_tells_the_visitor_without_a_channel() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let id = start(&mut agent, VISITOR).await.conversation_id;
    close(&mut agent, &id, dana()).await;

    let reopened = reopen(&mut agent, &id, dana())
        .await
        .conversation
        .expect("conversation");

    assert_eq!(reopened.message_count, 2);
    let messages = thread(&mut agent, &id, "").await;
    assert_eq!(messages.len(), 2);
    let note = &messages[1];
    assert_eq!(note.position, 2);
    assert_note(
        note,
        K::ConversationReopened,
        Audience::Everyone,
        (S::Closed, S::Open),
        "Dana reopened the conversation.",
    );
    assert_eq!(transactional(note).actor, Some(dana_author()));

    let seen_by_visitor = thread(&mut visitor, &id, VISITOR).await;
    assert_eq!(
        seen_by_visitor,
        [as_seen_by_visitor(note)],
        "the visitor sees the reopen note, and only it, with no channel"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_agent_reopening_a_pending_conversation_writes_a_reopened_note_for_everyone() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let id = start(&mut agent, VISITOR).await.conversation_id;
    mark_pending(&mut agent, &id, dana()).await;

    reopen(&mut agent, &id, dana()).await;

    let messages = thread(&mut agent, &id, "").await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].position, 2);
    assert_note(
        &messages[1],
        K::ConversationReopened,
        Audience::Everyone,
        (S::Pending, S::Open),
        "Dana reopened the conversation.",
    );
    assert_eq!(
        thread(&mut visitor, &id, VISITOR).await,
        [as_seen_by_visitor(&messages[1])]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_visitor_restart_writes_an_agents_only_note_with_the_visitor_as_actor() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let id = start(&mut visitor, VISITOR).await.conversation_id;
    close(&mut agent, &id, dana()).await;

    let restarted = restart(&mut visitor, &id).await;

    assert_eq!(restarted.status(), S::Open);
    let messages = thread(&mut agent, &id, "").await;
    assert_eq!(messages.len(), 2);
    let note = &messages[1];
    assert_eq!(note.position, 2);
    assert_note(
        note,
        K::ConversationRestarted,
        Audience::Agents,
        (S::Closed, S::Open),
        "The visitor restarted the conversation.",
    );
    let actor = transactional(note).actor.clone().expect("actor");
    assert_eq!(actor.kind(), AuthorKind::Visitor);
    assert_eq!(actor.id, VISITOR);
    assert!(
        thread(&mut visitor, &id, VISITOR).await.is_empty(),
        "close and restart notes are for agents only"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_visitor_reply_to_a_pending_conversation_is_followed_by_a_reopened_note() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let id = start(&mut agent, VISITOR).await.conversation_id;
    mark_pending(&mut agent, &id, dana()).await;

    let reply = send(&mut visitor, &id, as_visitor(VISITOR), text("still there?")).await;

    let sent = reply.message.expect("message");
    assert_eq!(sent.position, 2);
    assert_eq!(sent.content, Some(Listed::Text("still there?".into())));
    assert_eq!(reply.conversation.expect("conversation").status(), S::Open);

    let messages = thread(&mut agent, &id, "").await;
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[1], sent, "the visitor's message comes first");
    let author = messages[1].author.as_ref().expect("author");
    assert_eq!(
        (author.kind(), author.id.as_str()),
        (AuthorKind::Visitor, VISITOR)
    );
    assert_eq!(messages[1].audience(), Audience::Everyone);
    let note = &messages[2];
    assert_eq!(note.position, 3);
    assert_note(
        note,
        K::ConversationReopenedByVisitorReply,
        Audience::Agents,
        (S::Pending, S::Open),
        "The visitor replied, so the conversation moved from Pending to Open.",
    );
    let actor = transactional(note).actor.clone().expect("actor");
    assert_eq!(actor.kind(), AuthorKind::Visitor);
    assert_eq!(actor.id, VISITOR);
    app.stop().await;
}

#[tokio::test]
async fn an_agent_message_on_a_pending_conversation_writes_no_transactional_message() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, VISITOR).await.conversation_id;
    mark_pending(&mut agent, &id, dana()).await;

    let sent = send(&mut agent, &id, Sender::Agent(dana()), text("any news?")).await;

    let conversation = sent.conversation.expect("conversation");
    assert_eq!(conversation.status(), S::Pending);
    assert_eq!(conversation.message_count, 2);
    let messages = thread(&mut agent, &id, "").await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1], sent.message.expect("message"));
    assert_eq!(messages[1].content, Some(Listed::Text("any news?".into())));
    assert_eq!(
        messages.iter().filter(|m| is_transactional(m)).count(),
        1,
        "only the mark-pending note"
    );
    app.stop().await;
}

/// A thread with every kind of message: 10 in all, 5 for everyone.
async fn busy_thread(agent: &mut Client, visitor: &mut Client) -> String {
    let id = start(agent, VISITOR).await.conversation_id;
    send(agent, &id, Sender::Agent(dana()), text("hi, can I help?")).await; // 1 everyone
    send(visitor, &id, as_visitor(VISITOR), text("pricing?")).await; // 2 everyone
    mark_pending(agent, &id, dana()).await; // 3 agents
    send(visitor, &id, as_visitor(VISITOR), text("hello?")).await; // 4 everyone, 5 agents
    close(agent, &id, dana()).await; // 6 agents
    reopen(agent, &id, dana()).await; // 7 everyone
    let zoom = Content::MeetingLink(pb::MeetingLink {
        url: "https://zoom.us/j/1".into(),
        provider: "Zoom".into(),
    });
    send(agent, &id, Sender::Agent(dana()), zoom).await; // 8 everyone
    close(agent, &id, dana()).await; // 9 agents
    restart(visitor, &id).await; // 10 agents
    id
}

#[tokio::test]
async fn positions_number_the_whole_thread_one_two_three_and_visitors_see_gaps() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let id = busy_thread(&mut agent, &mut visitor).await;

    let all = thread(&mut agent, &id, "").await;
    let positions: Vec<i64> = all.iter().map(|m| m.position).collect();
    assert_eq!(positions, (1..=10).collect::<Vec<i64>>());
    let visible: Vec<i64> = thread(&mut visitor, &id, VISITOR)
        .await
        .iter()
        .map(|m| m.position)
        .collect();
    assert_eq!(visible, [1, 2, 4, 7, 8]);
    app.stop().await;
}

#[tokio::test]
async fn visitors_never_see_agent_only_messages_and_count_only_what_they_see() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let id = busy_thread(&mut agent, &mut visitor).await;

    let all = thread(&mut agent, &id, "").await;
    let for_everyone: Vec<pb::Message> = all
        .iter()
        .filter(|m| m.audience() == Audience::Everyone)
        .map(as_seen_by_visitor)
        .collect();
    assert_eq!(all.len(), 10);
    assert_eq!(for_everyone.len(), 5);
    assert_eq!(thread(&mut visitor, &id, VISITOR).await, for_everyone);

    assert_eq!(get(&mut agent, &id, "").await.message_count, 10);
    assert_eq!(get(&mut visitor, &id, VISITOR).await.message_count, 5);

    // A visitor's own write answers with the visitor's count too.
    let reply = send(&mut visitor, &id, as_visitor(VISITOR), text("thanks")).await;
    assert_eq!(reply.conversation.expect("conversation").message_count, 6);
    assert_eq!(get(&mut agent, &id, "").await.message_count, 11);
    app.stop().await;
}

#[tokio::test]
async fn meeting_links_and_appointments_round_trip() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let id = start(&mut agent, VISITOR).await.conversation_id;
    let link = pb::MeetingLink {
        url: "https://zoom.us/j/123456789?pwd=abc".into(),
        provider: "Zoom".into(),
    };
    let appointment = pb::Appointment {
        start_time: Some(prost_types::Timestamp {
            seconds: 1_900_000_000,
            nanos: 250_000_000,
        }),
        duration: Some(prost_types::Duration {
            seconds: 1800,
            nanos: 0,
        }),
        title: "Product demo".into(),
        url: "https://cal.example.com/book/42".into(),
    };
    let bare_appointment = pb::Appointment {
        title: String::new(),
        url: String::new(),
        ..appointment.clone()
    };

    let mut sent = Vec::new();
    for content in [
        Content::MeetingLink(link.clone()),
        Content::Appointment(appointment.clone()),
        Content::Appointment(bare_appointment.clone()),
    ] {
        let response = send(&mut agent, &id, Sender::Agent(dana()), content).await;
        sent.push(response.message.expect("message"));
    }

    let expected = [
        Listed::MeetingLink(link),
        Listed::Appointment(appointment),
        Listed::Appointment(bare_appointment),
    ];
    let as_sent: Vec<_> = sent.iter().map(|m| m.content.clone()).collect();
    let expected: Vec<_> = expected.into_iter().map(Some).collect();
    assert_eq!(as_sent, expected, "as the send answered");
    for client_thread in [
        thread(&mut agent, &id, "").await,
        thread(&mut visitor, &id, VISITOR).await,
    ] {
        let listed: Vec<_> = client_thread.iter().map(|m| m.content.clone()).collect();
        assert_eq!(listed, expected, "as listed");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_first_agent_to_reply_owns_the_conversation_and_later_actions_keep_the_assignee() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let ari = agent_ref("agent-ari", "Ari", pb::Channel::Inbox);
    let bo = agent_ref("agent-bo", "Bo", pb::Channel::MsTeams);
    let started = start(&mut visitor, VISITOR).await;
    assert_eq!(started.assignee, None, "no agent has acted yet");
    let id = started.conversation_id;

    // Acting on an unassigned conversation does not take it.
    let pending = mark_pending(&mut agent, &id, dana())
        .await
        .conversation
        .expect("conversation");
    assert_eq!(pending.assignee, None, "a status change does not assign");
    send(&mut visitor, &id, as_visitor(VISITOR), text("hello")).await;
    assert_eq!(
        get(&mut agent, &id, "").await.assignee,
        None,
        "a visitor message does not"
    );

    let after_reply = send(&mut agent, &id, Sender::Agent(ari.clone()), text("hi")).await;
    assert_eq!(
        after_reply.conversation.expect("conversation").assignee,
        Some(ari.clone()),
        "the first reply to an unassigned conversation assigns its author"
    );
    send(&mut agent, &id, Sender::Agent(bo.clone()), text("me too")).await;
    assert_eq!(
        get(&mut agent, &id, "").await.assignee,
        Some(ari.clone()),
        "a later reply by another agent does not"
    );

    mark_pending(&mut agent, &id, dana()).await;
    send(&mut visitor, &id, as_visitor(VISITOR), text("back")).await;
    let closed = close(&mut agent, &id, bo.clone())
        .await
        .conversation
        .expect("conversation");
    assert_eq!(closed.assignee, Some(ari.clone()), "status changes keep it");
    restart(&mut visitor, &id).await;
    reopen_after_close(&mut agent, &id, &bo).await;
    assert_eq!(
        get(&mut agent, &id, "").await.assignee,
        Some(ari),
        "a restart, a close and a reopen keep it"
    );
    app.stop().await;
}

/// Closes and reopens `id` as `agent`.
async fn reopen_after_close(agent: &mut Client, id: &str, who: &pb::AgentRef) {
    close(agent, id, who.clone()).await;
    reopen(agent, id, who.clone()).await;
}
