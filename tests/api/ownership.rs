//! Who owns a conversation, and what only agents write (issue 10): internal
//! notes, AssignConversation and its message and event, the assignee kept
//! through status changes, and a visitor's list of its own conversations.

use conversations::pb::{
    self, Audience, AuthorKind, ConversationStatus, EventType, TransactionalKind, event::Payload,
    message::Content, send_message_request::Sender,
};
use tonic::Code;

use crate::helpers::{
    Client, TestApp, agent_ref, as_visitor, assign, bad_fields, close, dana, get, list,
    mark_pending, reason, start, text_request, thread,
};

const VISITOR: &str = "v-1";

fn sam() -> pb::AgentRef {
    agent_ref("agent-sam", "Sam", pb::Channel::Inbox)
}

fn note(id: &str, agent: pb::AgentRef, text: &str) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        audience: Audience::Agents.into(),
        ..text_request(id, Sender::Agent(agent), text, "")
    }
}

fn texts(messages: &[pb::Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match &m.content {
            Some(Content::Text(text)) => text.clone(),
            Some(Content::Transactional(t)) => format!("[{}]", t.text),
            other => format!("{other:?}"),
        })
        .collect()
}

/// Every event of conversation `id` that `client` may list.
async fn events(client: &mut Client, id: &str, visitor_id: &str) -> Vec<pb::Event> {
    client
        .list_events(pb::ListEventsRequest {
            conversation_id: id.into(),
            visitor_id: visitor_id.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list events")
        .into_inner()
        .events
}

#[tokio::test]
async fn an_internal_note_is_for_agents_only_in_any_status_and_changes_nothing_else() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let id = start(&mut visitor, VISITOR).await.conversation_id;
    mark_pending(&mut agent, &id, dana()).await;

    let noted = agent
        .send_message(note(&id, dana(), "Asked for a discount last week."))
        .await
        .expect("a note on a pending conversation")
        .into_inner();
    let message = noted.message.expect("message");
    assert_eq!(message.audience(), Audience::Agents);
    let after = noted.conversation.expect("conversation");
    assert_eq!(
        after.status(),
        ConversationStatus::Pending,
        "a note moves no status"
    );
    assert_eq!(after.assignee, None, "a note does not assign");

    close(&mut agent, &id, dana()).await;
    agent
        .send_message(note(&id, sam(), "Closed: bought the Pro plan."))
        .await
        .expect("a note on a closed conversation");

    // Agents see both notes; the visitor sees neither, nor counts them.
    let agents = texts(&thread(&mut agent, &id, "").await);
    assert!(agents.contains(&"Asked for a discount last week.".to_owned()));
    assert!(agents.contains(&"Closed: bought the Pro plan.".to_owned()));
    let visitors = thread(&mut visitor, &id, VISITOR).await;
    assert!(
        visitors.iter().all(|m| m.audience() == Audience::Everyone),
        "{visitors:?}"
    );
    assert_eq!(
        get(&mut visitor, &id, VISITOR).await.message_count,
        visitors.len() as i64
    );
    let seen = events(&mut visitor, &id, VISITOR).await;
    assert!(
        !format!("{seen:?}").contains("discount") && !format!("{seen:?}").contains("Pro plan"),
        "{seen:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_visitor_cannot_write_a_note() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let id = start(&mut visitor, VISITOR).await.conversation_id;
    let before = thread(&mut agent, &id, "").await;
    for client in [&mut visitor, &mut agent] {
        let refused = client
            .send_message(pb::SendMessageRequest {
                audience: Audience::Agents.into(),
                ..text_request(&id, as_visitor(VISITOR), "psst", "")
            })
            .await
            .expect_err("a visitor's note");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert_eq!(bad_fields(&refused), ["audience"]);
    }
    assert_eq!(thread(&mut agent, &id, "").await, before, "nothing written");
    app.stop().await;
}

#[tokio::test]
async fn assigning_writes_an_agents_only_message_and_an_event_and_status_changes_keep_it() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let id = start(&mut visitor, VISITOR).await.conversation_id;

    let assigned = assign(&mut agent, &id, dana(), Some(sam())).await;
    let conversation = assigned.conversation.expect("conversation");
    assert_eq!(conversation.assignee, Some(sam()));
    let last = thread(&mut agent, &id, "").await.pop().expect("a message");
    match &last.content {
        Some(Content::Transactional(t)) => {
            assert_eq!(t.kind(), TransactionalKind::ConversationAssigned);
            assert_eq!(t.text, "Dana assigned the conversation to Sam from Slack.");
            assert_eq!(
                t.actor.as_ref().map(pb::Author::kind),
                Some(AuthorKind::Agent)
            );
        }
        other => panic!("expected the assignment's message, got {other:?}"),
    }
    assert_eq!(last.audience(), Audience::Agents);

    // The event, for Inboxes, with who from and to.
    let all = events(&mut agent, &id, "").await;
    let event = all
        .iter()
        .filter(|e| e.sequence <= assigned.event_sequence)
        .find_map(|e| match &e.payload {
            Some(Payload::ConversationAssigned(a)) => Some(a.clone()),
            _ => None,
        })
        .expect("a ConversationAssigned event of the call");
    assert_eq!(event.from_assignee, None);
    assert_eq!(event.to_assignee, Some(sam()));
    assert_eq!(event.conversation.expect("snapshot").assignee, Some(sam()));
    let only_assignments = agent
        .list_events(pb::ListEventsRequest {
            event_types: vec![EventType::ConversationAssigned.into()],
            ..Default::default()
        })
        .await
        .expect("filtered")
        .into_inner()
        .events;
    assert_eq!(only_assignments.len(), 1);
    // Never to the visitor.
    let seen = events(&mut visitor, &id, VISITOR).await;
    assert!(
        seen.iter()
            .all(|e| !matches!(e.payload, Some(Payload::ConversationAssigned(_)))),
        "{seen:?}"
    );

    // Status changes by anyone keep Sam.
    mark_pending(&mut agent, &id, dana()).await;
    visitor
        .send_message(text_request(&id, as_visitor(VISITOR), "any news?", ""))
        .await
        .expect("visitor reply");
    close(&mut agent, &id, dana()).await;
    assert_eq!(get(&mut agent, &id, "").await.assignee, Some(sam()));

    // Unassigning, then the same again, which changes nothing.
    let unassigned = assign(&mut agent, &id, dana(), None).await;
    assert_eq!(
        unassigned.conversation.expect("conversation").assignee,
        None
    );
    let before = thread(&mut agent, &id, "").await;
    let refused = agent
        .assign_conversation(pb::AssignConversationRequest {
            conversation_id: id.clone(),
            agent: Some(dana()),
            assignee: None,
            ..Default::default()
        })
        .await
        .expect_err("unassigning an unassigned conversation");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "ASSIGNEE_UNCHANGED");
    assert_eq!(thread(&mut agent, &id, "").await, before);
    app.stop().await;
}

#[tokio::test]
async fn an_assignment_with_a_stale_etag_or_a_replayed_request_id_changes_nothing() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, VISITOR).await;
    let stale = id.etag.clone();
    let id = id.conversation_id;
    agent
        .send_message(note(&id, dana(), "moves the etag"))
        .await
        .expect("note");
    let refused = agent
        .assign_conversation(pb::AssignConversationRequest {
            conversation_id: id.clone(),
            agent: Some(dana()),
            assignee: Some(sam()),
            etag: stale,
            request_id: String::new(),
        })
        .await
        .expect_err("stale etag");
    assert_eq!(reason(&refused), "ETAG_MISMATCH");

    let request = pb::AssignConversationRequest {
        conversation_id: id.clone(),
        agent: Some(dana()),
        assignee: Some(sam()),
        etag: String::new(),
        request_id: "assign-1".into(),
    };
    let first = agent
        .assign_conversation(request.clone())
        .await
        .expect("assign")
        .into_inner();
    let again = agent
        .assign_conversation(request)
        .await
        .expect("a retry answers as the first")
        .into_inner();
    assert_eq!(first, again);
    let assignments = thread(&mut agent, &id, "")
        .await
        .iter()
        .filter(|m| {
            matches!(&m.content, Some(Content::Transactional(t))
                if t.kind() == TransactionalKind::ConversationAssigned)
        })
        .count();
    assert_eq!(assignments, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_visitor_key_lists_only_its_visitors_conversations_as_a_visitor_sees_them() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let first = start(&mut visitor, VISITOR).await.conversation_id;
    close(&mut agent, &first, dana()).await;
    let second = start(&mut visitor, VISITOR).await.conversation_id;
    agent
        .send_message(note(&second, dana(), "VIP"))
        .await
        .expect("note");
    let theirs = start(&mut visitor, "v-2").await.conversation_id;

    let page = list(
        &mut visitor,
        pb::ListConversationsRequest {
            visitor_id: VISITOR.into(),
            ..Default::default()
        },
    )
    .await;
    let listed: Vec<_> = page
        .conversations
        .iter()
        .map(|c| c.conversation_id.clone())
        .collect();
    assert_eq!(
        listed,
        [second.clone(), first.clone()],
        "newest first, only v-1's"
    );
    assert!(!listed.contains(&theirs));
    // Counted as a visitor counts: their own, and only messages for everyone.
    assert_eq!(
        page.status_counts,
        Some(pb::StatusCounts {
            open: 1,
            pending: 0,
            closed: 1
        })
    );
    let as_agent = get(&mut agent, &second, "").await;
    assert_eq!(
        page.conversations[0].message_count,
        as_agent.message_count - 1,
        "the note is not counted"
    );

    // Without naming the visitor, a visitor key lists nothing.
    let refused = visitor
        .list_conversations(pb::ListConversationsRequest::default())
        .await
        .expect_err("no visitor_id");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&refused), ["visitor_id"]);
    app.stop().await;
}
