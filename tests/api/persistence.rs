//! Everything the service acknowledged survives a restart on the same
//! database file: conversations, threads, keys, counts, request ids and the
//! event sequence.

use conversations::{
    domain::credentials::Role,
    pb::{
        self, ConversationStatus,
        send_message_request::{Content, Sender},
    },
};
use tonic::Code;

use crate::helpers::{
    TestApp, as_visitor, close, dana, get, list_all, mark_pending, reason, reopen, restart_request,
    start, text_request, thread,
};

/// What a client can read of a conversation, as agent and as its visitor.
#[derive(Debug, PartialEq)]
struct Seen {
    as_agent: pb::Conversation,
    as_visitor: pb::Conversation,
    agent_thread: Vec<pb::Message>,
    visitor_thread: Vec<pb::Message>,
}

async fn seen(app: &TestApp, id: &str, visitor_id: &str) -> Seen {
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    Seen {
        as_agent: get(&mut agent, id, "").await,
        as_visitor: get(&mut visitor, id, visitor_id).await,
        agent_thread: thread(&mut agent, id, "").await,
        visitor_thread: thread(&mut visitor, id, visitor_id).await,
    }
}

#[tokio::test]
async fn conversations_threads_and_counts_survive_a_restart() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut widget = app.visitor().await;

    // Closed, with a thread of every kind of message.
    let closed = start(&mut agent, "v-1").await.conversation_id;
    widget
        .send_message(text_request(&closed, as_visitor("v-1"), "hello", ""))
        .await
        .unwrap();
    agent
        .send_message(pb::SendMessageRequest {
            conversation_id: closed.clone(),
            sender: Some(Sender::Agent(dana())),
            content: Some(Content::MeetingLink(pb::MeetingLink {
                url: "https://zoom.us/j/1".into(),
                provider: "Zoom".into(),
            })),
            request_id: String::new(),
            audience: 0,
        })
        .await
        .unwrap();
    agent
        .send_message(pb::SendMessageRequest {
            conversation_id: closed.clone(),
            sender: Some(Sender::Agent(dana())),
            content: Some(Content::Appointment(pb::Appointment {
                start_time: Some(prost_types::Timestamp {
                    seconds: 1_900_000_000,
                    nanos: 123_000,
                }),
                duration: Some(prost_types::Duration {
                    seconds: 1800,
                    nanos: 0,
                }),
                title: "Demo".into(),
                url: "https://example.com/book".into(),
            })),
            request_id: String::new(),
            audience: 0,
        })
        .await
        .unwrap();
    close(&mut agent, &closed, dana()).await;
    // Pending.
    let pending = start(&mut agent, "v-2").await.conversation_id;
    mark_pending(&mut agent, &pending, dana()).await;
    // Open, started by an agent, reopened after a close.
    let reopened = agent
        .start_conversation(pb::StartConversationRequest {
            visitor_id: "v-3".into(),
            agent: Some(dana()),
            request_id: String::new(),
            flow_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .conversation
        .unwrap()
        .conversation_id;
    close(&mut agent, &reopened, dana()).await;
    reopen(&mut agent, &reopened, dana()).await;

    let cases = [(&closed, "v-1"), (&pending, "v-2"), (&reopened, "v-3")];
    let mut before = Vec::new();
    for (id, visitor_id) in cases {
        before.push(seen(&app, id, visitor_id).await);
    }
    let listed_before = list_all(&mut agent).await;
    assert_eq!(
        listed_before.status_counts,
        Some(pb::StatusCounts {
            open: 1,
            pending: 1,
            closed: 1
        })
    );
    assert_eq!(before[0].as_agent.status(), ConversationStatus::Closed);
    assert_eq!(before[0].agent_thread.len(), 4);
    drop((agent, widget));

    let app = app.restart().await;

    let mut after = Vec::new();
    for (id, visitor_id) in cases {
        after.push(seen(&app, id, visitor_id).await);
    }
    assert_eq!(after, before);
    let mut agent = app.agent().await;
    assert_eq!(list_all(&mut agent).await, listed_before);

    // And they are still live: the closed one can be restarted, the pending
    // one answered.
    let restarted = app
        .visitor()
        .await
        .restart_conversation(restart_request(&closed, "v-1"))
        .await
        .expect("restart after the server restarted")
        .into_inner()
        .conversation
        .unwrap();
    assert_eq!(restarted.status(), ConversationStatus::Open);
    assert_ne!(restarted.etag, before[0].as_agent.etag);
    let replied = agent
        .send_message(text_request(&pending, as_visitor("v-2"), "back", ""))
        .await
        .expect("reply")
        .into_inner();
    // After the pending note (1): the reply (2), then the status note (3).
    assert_eq!(replied.message.unwrap().position, 2);
    let replied = replied.conversation.unwrap();
    assert_eq!(replied.status(), ConversationStatus::Open);
    assert_eq!(replied.message_count, 3);
    app.stop().await;
}

#[tokio::test]
async fn keys_still_authenticate_after_a_restart() {
    let app = TestApp::spawn().await;
    let (other_agent, other_visitor) = app.new_workspace("other").await;
    let (_, second_default_agent) = app.new_key("default", Role::Agent).await;
    let (revoked_id, revoked) = app.new_key("default", Role::Agent).await;
    app.revoke(&revoked_id).await;
    let mine = start(&mut app.agent().await, "v-1").await.conversation_id;
    let theirs = start(&mut app.client_with(Some(&other_agent)).await, "v-9")
        .await
        .conversation_id;

    let app = app.restart().await;

    let listed = |response: pb::ListConversationsResponse| -> Vec<String> {
        response
            .conversations
            .into_iter()
            .map(|c| c.conversation_id)
            .collect()
    };
    assert_eq!(
        listed(list_all(&mut app.agent().await).await),
        [mine.as_str()]
    );
    let mut second = app.client_with(Some(&second_default_agent)).await;
    assert_eq!(listed(list_all(&mut second).await), [mine.as_str()]);
    let mut other = app.client_with(Some(&other_agent)).await;
    assert_eq!(listed(list_all(&mut other).await), [theirs.as_str()]);
    assert_eq!(
        get(&mut app.visitor().await, &mine, "v-1")
            .await
            .conversation_id,
        mine
    );
    let mut other_widget = app.client_with(Some(&other_visitor)).await;
    assert_eq!(
        get(&mut other_widget, &theirs, "v-9").await.conversation_id,
        theirs
    );

    // Roles survived too: the visitor key still may not close.
    let refused = app
        .visitor()
        .await
        .close_conversation(pb::CloseConversationRequest {
            conversation_id: theirs.clone(),
            agent: Some(dana()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // And a revoked key stays revoked.
    let refused = app
        .client_with(Some(&revoked))
        .await
        .list_conversations(pb::ListConversationsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    app.stop().await;
}

#[tokio::test]
async fn a_request_id_replays_its_first_response_after_a_restart() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let start_request = pb::StartConversationRequest {
        visitor_id: "v-1".into(),
        agent: None,
        request_id: "start-before-restart".into(),
        flow_id: String::new(),
    };
    let started = agent
        .start_conversation(start_request.clone())
        .await
        .unwrap()
        .into_inner();
    let id = started.conversation.clone().unwrap().conversation_id;
    let send_request = text_request(&id, as_visitor("v-1"), "hello", "send-before-restart");
    let sent = app
        .visitor()
        .await
        .send_message(send_request.clone())
        .await
        .unwrap()
        .into_inner();
    let close_request = pb::CloseConversationRequest {
        conversation_id: id.clone(),
        agent: Some(dana()),
        etag: sent.conversation.clone().unwrap().etag,
        request_id: "close-before-restart".into(),
    };
    let closed = agent
        .close_conversation(close_request.clone())
        .await
        .unwrap()
        .into_inner();
    let head = app.max_event_sequence().await;
    let conversation = get(&mut agent, &id, "").await;
    drop(agent);

    let app = app.restart().await;
    let mut agent = app.agent().await;

    assert_eq!(
        agent
            .start_conversation(start_request)
            .await
            .expect("replay")
            .into_inner(),
        started
    );
    assert_eq!(
        app.visitor()
            .await
            .send_message(send_request)
            .await
            .expect("replay")
            .into_inner(),
        sent
    );
    assert_eq!(
        agent
            .close_conversation(close_request)
            .await
            .expect("replay")
            .into_inner(),
        closed
    );
    assert_eq!(app.max_event_sequence().await, head, "nothing was written");
    assert_eq!(get(&mut agent, &id, "").await, conversation);
    assert_eq!(list_all(&mut agent).await.conversations.len(), 1);

    // The id is still taken for anything else.
    let refused = agent
        .start_conversation(pb::StartConversationRequest {
            visitor_id: "v-2".into(),
            agent: None,
            request_id: "start-before-restart".into(),
            flow_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(reason(&refused), "REQUEST_ID_REUSED");
    app.stop().await;
}

#[tokio::test]
async fn event_sequences_keep_increasing_after_a_restart() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut sequences = Vec::new();
    let started = agent
        .start_conversation(pb::StartConversationRequest {
            visitor_id: "v-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    sequences.push(started.event_sequence);
    let id = started.conversation.unwrap().conversation_id;
    for i in 0..3 {
        let sent = agent
            .send_message(text_request(
                &id,
                Sender::Agent(dana()),
                &format!("m{i}"),
                "",
            ))
            .await
            .unwrap()
            .into_inner();
        sequences.push(sent.event_sequence);
    }
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    let head = app.max_event_sequence().await;
    assert_eq!(head, *sequences.last().unwrap());
    drop(agent);

    let app = app.restart().await;
    assert_eq!(app.max_event_sequence().await, head, "the feed survived");
    let mut agent = app.agent().await;
    assert!(list_all(&mut agent).await.as_of_sequence >= head);

    let closed = close(&mut agent, &id, dana()).await;
    assert!(
        closed.event_sequence > head,
        "{} after {head}",
        closed.event_sequence
    );
    let second = start(&mut agent, "v-2").await;
    let newest = app.max_event_sequence().await;
    assert!(newest > closed.event_sequence);
    assert_eq!(list_all(&mut agent).await.as_of_sequence, newest);
    assert_eq!(second.status(), ConversationStatus::Open);
    app.stop().await;
}
