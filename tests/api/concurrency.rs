//! Optimistic concurrency (etags), safe retries (request ids), and calls that
//! race on one conversation.

use std::sync::Arc;

use conversations::pb::{
    self, ConversationStatus, message::Content as MessageContent, send_message_request::Sender,
};
use tokio::{sync::Barrier, task::JoinSet};
use tonic::Code;

use crate::helpers::{
    Client, TestApp, as_visitor, bad_fields, close_request, dana, get, list_all,
    mark_pending_request, reason, reopen_request, restart_request, start, text_request, thread,
};

/// A close by Dana that only applies at `etag` ("" = any version), with
/// `request_id` ("" = none).
fn close_at(id: &str, etag: &str, request_id: &str) -> pb::CloseConversationRequest {
    pb::CloseConversationRequest {
        etag: etag.to_owned(),
        request_id: request_id.to_owned(),
        ..close_request(id, dana())
    }
}

/// A mark pending by Dana that only applies at `etag` ("" = any version).
fn mark_pending_at(id: &str, etag: &str) -> pb::MarkConversationPendingRequest {
    pb::MarkConversationPendingRequest {
        etag: etag.to_owned(),
        ..mark_pending_request(id, dana())
    }
}

/// A reopen by Dana that only applies at `etag` ("" = any version).
fn reopen_at(id: &str, etag: &str) -> pb::ReopenConversationRequest {
    pb::ReopenConversationRequest {
        etag: etag.to_owned(),
        ..reopen_request(id, dana())
    }
}

fn assert_etag_mismatch(status: &tonic::Status) {
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(reason(status), "ETAG_MISMATCH");
}

/// Separate connections, so calls really run side by side.
async fn clients(app: &TestApp, n: usize) -> Vec<Client> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(app.agent().await);
    }
    clients
}

const RACERS: usize = 20;

#[tokio::test]
async fn a_stale_etag_is_aborted_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let started = start(&mut agent, "v-1").await;
    let id = started.conversation_id.clone();
    agent
        .send_message(text_request(&id, Sender::Agent(dana()), "hi", ""))
        .await
        .expect("send");
    let current = get(&mut agent, &id, "").await;
    let stale = started.etag.clone();
    assert_ne!(stale, current.etag);
    let head = app.max_event_sequence().await;

    let refused = agent
        .close_conversation(close_at(&id, &stale, ""))
        .await
        .unwrap_err();
    assert_etag_mismatch(&refused);
    let refused = agent
        .mark_conversation_pending(mark_pending_at(&id, &stale))
        .await
        .unwrap_err();
    assert_etag_mismatch(&refused);
    assert_eq!(get(&mut agent, &id, "").await, current, "nothing changed");
    assert_eq!(thread(&mut agent, &id, "").await.len(), 1);
    assert_eq!(app.max_event_sequence().await, head);

    // The current etag works; the one it replaces is stale from then on.
    let pending = agent
        .mark_conversation_pending(mark_pending_at(&id, &current.etag))
        .await
        .expect("mark pending with the current etag")
        .into_inner()
        .conversation
        .expect("conversation");
    assert_eq!(pending.status(), ConversationStatus::Pending);
    let refused = agent
        .reopen_conversation(reopen_at(&id, &current.etag))
        .await
        .unwrap_err();
    assert_etag_mismatch(&refused);
    assert_eq!(get(&mut agent, &id, "").await, pending, "nothing changed");

    let reopened = agent
        .reopen_conversation(reopen_at(&id, &pending.etag))
        .await
        .expect("reopen with the current etag")
        .into_inner()
        .conversation
        .expect("conversation");
    assert_eq!(reopened.status(), ConversationStatus::Open);
    let closed = agent
        .close_conversation(close_at(&id, &reopened.etag, ""))
        .await
        .expect("close with the current etag")
        .into_inner()
        .conversation
        .expect("conversation");
    assert_eq!(closed.status(), ConversationStatus::Closed);
    app.stop().await;
}

#[tokio::test]
async fn the_etag_changes_on_every_mutation() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let started = start(&mut agent, "v-1").await;
    let id = started.conversation_id.clone();
    let mut etags = vec![started.etag.clone()];
    let mut seen = |conversation: Option<pb::Conversation>| {
        etags.push(conversation.expect("conversation").etag);
    };

    let r = agent.send_message(text_request(&id, Sender::Agent(dana()), "hello", ""));
    seen(r.await.unwrap().into_inner().conversation);
    let r = visitor.send_message(text_request(&id, as_visitor("v-1"), "hi", ""));
    seen(r.await.unwrap().into_inner().conversation);
    let r = agent.mark_conversation_pending(mark_pending_at(&id, ""));
    seen(r.await.unwrap().into_inner().conversation);
    // A visitor reply on PENDING moves it back to OPEN.
    let r = visitor.send_message(text_request(&id, as_visitor("v-1"), "still there?", ""));
    seen(r.await.unwrap().into_inner().conversation);
    let r = agent.close_conversation(close_at(&id, "", ""));
    seen(r.await.unwrap().into_inner().conversation);
    let r = agent.reopen_conversation(reopen_at(&id, ""));
    seen(r.await.unwrap().into_inner().conversation);
    let r = agent.close_conversation(close_at(&id, "", ""));
    seen(r.await.unwrap().into_inner().conversation);
    let r = visitor.restart_conversation(restart_request(&id, "v-1"));
    seen(r.await.unwrap().into_inner().conversation);

    assert_eq!(etags.len(), 9);
    let mut distinct = etags.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), etags.len(), "etags repeat: {etags:?}");
    assert!(etags.iter().all(|e| !e.is_empty()));
    assert_eq!(&get(&mut agent, &id, "").await.etag, etags.last().unwrap());
    app.stop().await;
}

#[tokio::test]
async fn a_retried_start_returns_the_first_response_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let request = pb::StartConversationRequest {
        visitor_id: "v-1".into(),
        agent: Some(dana()),
        request_id: "start-1".into(),
        flow_id: String::new(),
    };
    let first = agent
        .start_conversation(request.clone())
        .await
        .expect("start")
        .into_inner();
    let head = app.max_event_sequence().await;
    assert_eq!(head, first.event_sequence);

    for _ in 0..3 {
        let retried = agent
            .start_conversation(request.clone())
            .await
            .expect("retry")
            .into_inner();
        assert_eq!(retried, first);
    }
    assert_eq!(list_all(&mut agent).await.conversations.len(), 1);
    assert_eq!(app.max_event_sequence().await, head);
    app.stop().await;
}

#[tokio::test]
async fn a_retried_send_message_returns_the_first_message_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let id = start(&mut agent, "v-1").await.conversation_id;
    let request = text_request(&id, as_visitor("v-1"), "hello", "send-1");
    let first = visitor
        .send_message(request.clone())
        .await
        .expect("send")
        .into_inner();
    let head = app.max_event_sequence().await;

    let retried = visitor
        .send_message(request.clone())
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(retried, first);
    assert_eq!(
        retried.message.as_ref().unwrap().message_id,
        first.message.as_ref().unwrap().message_id
    );
    let messages = thread(&mut agent, &id, "").await;
    assert_eq!(messages.len(), 1);
    assert_eq!(get(&mut agent, &id, "").await.message_count, 1);
    assert_eq!(app.max_event_sequence().await, head);
    app.stop().await;
}

#[tokio::test]
async fn a_retried_close_returns_the_first_response_even_after_the_conversation_moved_on() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let started = start(&mut agent, "v-1").await;
    let id = started.conversation_id.clone();
    let request = close_at(&id, &started.etag, "close-1");
    let first = agent
        .close_conversation(request.clone())
        .await
        .expect("close")
        .into_inner();
    assert_eq!(
        first.conversation.as_ref().unwrap().status(),
        ConversationStatus::Closed
    );
    let reopened = agent
        .reopen_conversation(reopen_at(&id, ""))
        .await
        .expect("reopen")
        .into_inner()
        .conversation
        .unwrap();
    agent
        .send_message(text_request(&id, Sender::Agent(dana()), "back again", ""))
        .await
        .expect("send");
    let now = get(&mut agent, &id, "").await;
    assert_ne!(now.etag, reopened.etag);
    let messages = thread(&mut agent, &id, "").await;
    let head = app.max_event_sequence().await;

    // The etag in the retried request is stale now, and the conversation is
    // open: only a replay can answer this with the first response.
    let retried = agent
        .close_conversation(request)
        .await
        .expect("retry replays")
        .into_inner();
    assert_eq!(retried, first);
    assert_eq!(
        get(&mut agent, &id, "").await,
        now,
        "the retry changed nothing"
    );
    assert_eq!(thread(&mut agent, &id, "").await, messages);
    assert_eq!(app.max_event_sequence().await, head);
    app.stop().await;
}

#[tokio::test]
async fn a_request_id_reused_for_a_different_request_is_refused() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let first = agent
        .start_conversation(pb::StartConversationRequest {
            visitor_id: "v-1".into(),
            agent: None,
            request_id: "r-1".into(),
            flow_id: String::new(),
        })
        .await
        .expect("start")
        .into_inner();
    let id = first.conversation.unwrap().conversation_id;
    let head = app.max_event_sequence().await;

    let other_visitor = agent
        .start_conversation(pb::StartConversationRequest {
            visitor_id: "v-2".into(),
            agent: None,
            request_id: "r-1".into(),
            flow_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(other_visitor.code(), Code::InvalidArgument);
    assert_eq!(reason(&other_visitor), "REQUEST_ID_REUSED");

    let other_method = agent
        .close_conversation(close_at(&id, "", "r-1"))
        .await
        .unwrap_err();
    assert_eq!(other_method.code(), Code::InvalidArgument);
    assert_eq!(reason(&other_method), "REQUEST_ID_REUSED");

    // A message with a different text under a used id.
    agent
        .send_message(text_request(&id, Sender::Agent(dana()), "one", "r-2"))
        .await
        .expect("send");
    let head_after_send = app.max_event_sequence().await;
    assert!(head_after_send > head);
    let other_text = agent
        .send_message(text_request(&id, Sender::Agent(dana()), "two", "r-2"))
        .await
        .unwrap_err();
    assert_eq!(other_text.code(), Code::InvalidArgument);
    assert_eq!(reason(&other_text), "REQUEST_ID_REUSED");

    let conversation = get(&mut agent, &id, "").await;
    assert_eq!(conversation.status(), ConversationStatus::Open);
    assert_eq!(conversation.message_count, 1);
    assert_eq!(list_all(&mut agent).await.conversations.len(), 1);
    assert_eq!(app.max_event_sequence().await, head_after_send);
    app.stop().await;
}

#[tokio::test]
async fn a_request_id_over_64_characters_is_refused() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, "v-1").await.conversation_id;
    let head = app.max_event_sequence().await;
    let too_long = "r".repeat(65);

    let refused = agent
        .start_conversation(pb::StartConversationRequest {
            visitor_id: "v-2".into(),
            agent: None,
            request_id: too_long.clone(),
            flow_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&refused), ["request_id"]);
    let refused = agent
        .send_message(text_request(&id, Sender::Agent(dana()), "hi", &too_long))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&refused), ["request_id"]);
    let refused = agent
        .close_conversation(close_at(&id, "", &too_long))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&refused), ["request_id"]);
    assert_eq!(app.max_event_sequence().await, head, "nothing was written");
    assert_eq!(list_all(&mut agent).await.conversations.len(), 1);

    agent
        .start_conversation(pb::StartConversationRequest {
            visitor_id: "v-2".into(),
            agent: None,
            request_id: "r".repeat(64),
            flow_id: String::new(),
        })
        .await
        .expect("64 characters are accepted");
    app.stop().await;
}

#[tokio::test]
async fn concurrent_closes_of_one_conversation_let_exactly_one_win() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, "v-1").await.conversation_id;
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut racers = JoinSet::new();
    for mut client in clients(&app, RACERS).await {
        let (id, barrier) = (id.clone(), barrier.clone());
        racers.spawn(async move {
            barrier.wait().await;
            client.close_conversation(close_at(&id, "", "")).await
        });
    }
    let results = racers.join_all().await;

    let won: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(won.len(), 1, "exactly one close succeeds");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert_eq!(reason(refused), "CONVERSATION_ALREADY_CLOSED");
    }
    let closes = thread(&mut agent, &id, "")
        .await
        .into_iter()
        .filter(|m| {
            matches!(&m.content, Some(MessageContent::Transactional(t))
                if t.kind() == pb::TransactionalKind::ConversationClosed)
        })
        .count();
    assert_eq!(closes, 1, "exactly one close message");
    let conversation = get(&mut agent, &id, "").await;
    assert_eq!(conversation.status(), ConversationStatus::Closed);
    assert_eq!(conversation.message_count, 1);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_starts_with_one_request_id_create_one_conversation() {
    let app = TestApp::spawn().await;
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut racers = JoinSet::new();
    for mut client in clients(&app, RACERS).await {
        let barrier = barrier.clone();
        racers.spawn(async move {
            barrier.wait().await;
            client
                .start_conversation(pb::StartConversationRequest {
                    visitor_id: "v-1".into(),
                    agent: Some(dana()),
                    request_id: "one-start".into(),
                    flow_id: String::new(),
                })
                .await
                .map(|r| r.into_inner())
        });
    }
    let results = racers.join_all().await;

    let responses: Vec<_> = results
        .into_iter()
        .map(|r| r.expect("every retry succeeds"))
        .collect();
    assert!(
        responses.iter().all(|r| *r == responses[0]),
        "all answer the same first response"
    );
    let mut agent = app.agent().await;
    assert_eq!(list_all(&mut agent).await.conversations.len(), 1);
    assert_eq!(app.max_event_sequence().await, responses[0].event_sequence);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_messages_take_consecutive_positions() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, "v-1").await.conversation_id;
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut racers = JoinSet::new();
    for (i, mut client) in clients(&app, RACERS).await.into_iter().enumerate() {
        let (id, barrier) = (id.clone(), barrier.clone());
        racers.spawn(async move {
            barrier.wait().await;
            client
                .send_message(text_request(
                    &id,
                    Sender::Agent(dana()),
                    &format!("message {i}"),
                    "",
                ))
                .await
                .map(|r| r.into_inner())
        });
    }
    let results = racers.join_all().await;

    let mut answered: Vec<i64> = results
        .into_iter()
        .map(|r| r.expect("send").message.expect("message").position)
        .collect();
    answered.sort_unstable();
    let expected: Vec<i64> = (1..=RACERS as i64).collect();
    assert_eq!(answered, expected);
    let stored: Vec<i64> = thread(&mut agent, &id, "")
        .await
        .iter()
        .map(|m| m.position)
        .collect();
    assert_eq!(stored, expected, "oldest first, no gaps, no duplicates");
    assert_eq!(get(&mut agent, &id, "").await.message_count, RACERS as i64);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_changes_with_one_etag_let_exactly_one_apply() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let started = start(&mut agent, "v-1").await;
    let (id, etag) = (started.conversation_id, started.etag);
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut racers = JoinSet::new();
    for (i, mut client) in clients(&app, RACERS).await.into_iter().enumerate() {
        let (id, etag, barrier) = (id.clone(), etag.clone(), barrier.clone());
        racers.spawn(async move {
            barrier.wait().await;
            // Half close, half mark pending: both are allowed on OPEN, so
            // only the etag can stop the losers.
            if i % 2 == 0 {
                client
                    .close_conversation(close_at(&id, &etag, ""))
                    .await
                    .map(|_| ())
            } else {
                client
                    .mark_conversation_pending(mark_pending_at(&id, &etag))
                    .await
                    .map(|_| ())
            }
        });
    }
    let results = racers.join_all().await;

    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_etag_mismatch(refused);
    }
    let conversation = get(&mut agent, &id, "").await;
    assert_ne!(conversation.status(), ConversationStatus::Open);
    assert_eq!(conversation.message_count, 1, "one status change, one note");
    assert_eq!(thread(&mut agent, &id, "").await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn racing_mutations_leave_a_consistent_thread() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, "v-1").await.conversation_id;
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut racers = JoinSet::new();
    for (i, mut client) in clients(&app, RACERS).await.into_iter().enumerate() {
        let (id, barrier) = (id.clone(), barrier.clone());
        racers.spawn(async move {
            barrier.wait().await;
            let result = match i % 4 {
                0 => client
                    .close_conversation(close_at(&id, "", ""))
                    .await
                    .map(|_| ()),
                1 => client
                    .mark_conversation_pending(mark_pending_at(&id, ""))
                    .await
                    .map(|_| ()),
                2 => client
                    .reopen_conversation(reopen_at(&id, ""))
                    .await
                    .map(|_| ()),
                _ => client
                    .send_message(text_request(&id, as_visitor("v-1"), "hi", ""))
                    .await
                    .map(|_| ()),
            };
            (i % 4 == 3, result)
        });
    }
    let results = racers.join_all().await;
    for refused in results.iter().filter_map(|(_, r)| r.as_ref().err()) {
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    }

    // Whatever the order, the thread tells one consistent story.
    let messages = thread(&mut agent, &id, "").await;
    let positions: Vec<i64> = messages.iter().map(|m| m.position).collect();
    assert_eq!(positions, (1..=messages.len() as i64).collect::<Vec<_>>());
    let mut status = ConversationStatus::Open;
    let mut texts = 0;
    for message in &messages {
        match &message.content {
            Some(MessageContent::Transactional(t)) => {
                assert_eq!(t.from_status(), status, "{message:?}");
                status = t.to_status();
            }
            Some(MessageContent::Text(_)) => {
                assert_ne!(
                    status,
                    ConversationStatus::Closed,
                    "a message in a closed thread"
                );
                texts += 1;
            }
            other => panic!("unexpected content {other:?}"),
        }
    }
    let conversation = get(&mut agent, &id, "").await;
    assert_eq!(conversation.status(), status);
    assert_eq!(conversation.message_count, messages.len() as i64);
    let succeeded_texts = results
        .iter()
        .filter(|(is_text, r)| *is_text && r.is_ok())
        .count();
    assert_eq!(texts, succeeded_texts);
    app.stop().await;
}

/// A status change by Dana at `etag` ("" = any version), as a future that
/// answers only whether it applied.
async fn change(
    client: &mut Client,
    id: &str,
    action: Action,
    etag: &str,
) -> Result<(), tonic::Status> {
    match action {
        Action::Close => client
            .close_conversation(close_at(id, etag, ""))
            .await
            .map(|_| ()),
        Action::Pending => client
            .mark_conversation_pending(mark_pending_at(id, etag))
            .await
            .map(|_| ()),
        Action::Reopen => client
            .reopen_conversation(reopen_at(id, etag))
            .await
            .map(|_| ()),
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Close,
    Pending,
    Reopen,
}

/// What the status table allows from each status.
fn allowed_from(status: ConversationStatus) -> &'static [Action] {
    match status {
        ConversationStatus::Open => &[Action::Close, Action::Pending],
        ConversationStatus::Pending => &[Action::Close, Action::Reopen],
        _ => &[Action::Reopen],
    }
}

const MANY_RACERS: usize = 50;

#[tokio::test]
async fn fifty_racing_changes_with_one_etag_let_exactly_one_apply_from_every_status() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let racers_clients = clients(&app, MANY_RACERS).await;
    for (visitor, from) in [
        ("v-open", ConversationStatus::Open),
        ("v-pending", ConversationStatus::Pending),
        ("v-closed", ConversationStatus::Closed),
    ] {
        let id = start(&mut agent, visitor).await.conversation_id;
        match from {
            ConversationStatus::Pending => change(&mut agent, &id, Action::Pending, "").await,
            ConversationStatus::Closed => change(&mut agent, &id, Action::Close, "").await,
            _ => Ok(()),
        }
        .expect("set up the starting status");
        let before = get(&mut agent, &id, "").await;
        assert_eq!(before.status(), from);
        let barrier = Arc::new(Barrier::new(MANY_RACERS));
        let mut racers = JoinSet::new();
        for (i, mut client) in racers_clients.iter().cloned().enumerate() {
            let (id, etag, barrier) = (id.clone(), before.etag.clone(), barrier.clone());
            // Every action the status allows, so that only the etag can stop
            // the losers.
            let actions = allowed_from(from);
            let action = actions[i % actions.len()];
            racers.spawn(async move {
                barrier.wait().await;
                change(&mut client, &id, action, &etag).await
            });
        }
        let results = racers.join_all().await;

        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "exactly one change from {from:?} applies"
        );
        for refused in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_etag_mismatch(refused);
        }
        let after = get(&mut agent, &id, "").await;
        assert_ne!(after.status(), from);
        assert_ne!(after.etag, before.etag, "the winner moved the etag");
        assert_eq!(
            thread(&mut agent, &id, "").await.len(),
            before.message_count as usize + 1,
            "one transactional message"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn five_hundred_racing_transitions_leave_a_valid_status_chain_on_the_feed() {
    const TRANSITIONS: usize = 500;
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, "v-1").await.conversation_id;
    let connections = clients(&app, 25).await;
    let barrier = Arc::new(Barrier::new(TRANSITIONS));
    let mut racers = JoinSet::new();
    for i in 0..TRANSITIONS {
        let mut client = connections[i % connections.len()].clone();
        let (id, barrier) = (id.clone(), barrier.clone());
        let action = [Action::Close, Action::Pending, Action::Reopen][i % 3];
        racers.spawn(async move {
            barrier.wait().await;
            change(&mut client, &id, action, "").await
        });
    }
    let results = racers.join_all().await;
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        // Only the status table may refuse: nothing failed or timed out.
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    }
    let applied = results.iter().filter(|r| r.is_ok()).count();
    assert!(applied > 0, "some transitions applied");

    // Every StatusChanged of the conversation, from the feed.
    let mut chain = Vec::new();
    let mut after = 0;
    loop {
        let page = agent
            .list_events(pb::ListEventsRequest {
                after_sequence: after,
                conversation_id: id.clone(),
                event_types: vec![pb::EventType::StatusChanged.into()],
                page_size: 200,
                ..Default::default()
            })
            .await
            .expect("list events")
            .into_inner();
        for event in &page.events {
            match &event.payload {
                Some(pb::event::Payload::StatusChanged(changed)) => {
                    chain.push((changed.from_status(), changed.to_status()));
                }
                other => panic!("a filtered page holds {other:?}"),
            }
        }
        if page.next_after_sequence >= page.head_sequence || page.events.is_empty() {
            break;
        }
        after = page.next_after_sequence;
    }
    assert_eq!(chain.len(), applied, "one StatusChanged per applied call");
    let mut status = ConversationStatus::Open;
    for (step, (from, to)) in chain.iter().enumerate() {
        assert_eq!(*from, status, "step {step} starts where the last ended");
        let reachable: Vec<ConversationStatus> = allowed_from(*from)
            .iter()
            .map(|action| match action {
                Action::Close => ConversationStatus::Closed,
                Action::Pending => ConversationStatus::Pending,
                Action::Reopen => ConversationStatus::Open,
            })
            .collect();
        assert!(
            reachable.contains(to),
            "step {step}: {from:?} -> {to:?} is not in the status table"
        );
        status = *to;
    }
    assert_eq!(get(&mut agent, &id, "").await.status(), status);
    app.stop().await;
}
