//! Who may do what: no key, a bad key, a visitor key and an agent key. Every
//! refused call is checked to have changed nothing.

use conversations::{
    domain::credentials::Role,
    pb::{self, ConversationStatus as S, send_message_request::Sender},
};
use tonic::{Code, Status};

use crate::{
    helpers::{
        Client, TestApp, as_visitor, bad_fields, close, close_request, dana, get_request,
        hello_request, list_messages_request, mark_pending, mark_pending_request, reason, reopen,
        reopen_request, restart_request, start,
    },
    status_table::seen,
};

const VISITOR: &str = "v-1";
const OTHER_VISITOR: &str = "v-2";
/// Well formed, but no conversation has it.
const UNKNOWN_ID: &str = "conv_01JD0000000000000000000000";

fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    expected_reason: &str,
    call: &str,
) -> Status {
    let status = match result {
        Ok(answer) => panic!("{call}: should be refused, answered {answer:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), code, "{call}: {status:?}");
    assert_eq!(reason(&status), expected_reason, "{call}: {status:?}");
    status
}

/// A CLOSED conversation of [`VISITOR`].
async fn closed_conversation(agent: &mut Client) -> String {
    let id = start(agent, VISITOR).await.conversation_id;
    close(agent, &id, dana()).await;
    id
}

#[tokio::test]
async fn a_call_without_authorization_is_unauthenticated_with_api_key_missing() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut anonymous = app.client_with(None).await;
    let id = start(&mut agent, VISITOR).await.conversation_id;
    let before = seen(&app, &mut agent, &id).await;

    let start = anonymous
        .start_conversation(pb::StartConversationRequest {
            visitor_id: VISITOR.into(),
            ..Default::default()
        })
        .await;
    assert_refused(start, Code::Unauthenticated, "API_KEY_MISSING", "start");
    let get = anonymous.get_conversation(get_request(&id, VISITOR)).await;
    assert_refused(get, Code::Unauthenticated, "API_KEY_MISSING", "get");
    let send = anonymous
        .send_message(hello_request(&id, as_visitor(VISITOR)))
        .await;
    assert_refused(send, Code::Unauthenticated, "API_KEY_MISSING", "send");
    let list = anonymous
        .list_conversations(pb::ListConversationsRequest::default())
        .await;
    assert_refused(list, Code::Unauthenticated, "API_KEY_MISSING", "list");

    assert_eq!(seen(&app, &mut agent, &id).await, before);
    app.stop().await;
}

#[tokio::test]
async fn a_garbage_unknown_or_revoked_key_is_unauthenticated_with_api_key_invalid() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, VISITOR).await.conversation_id;

    let (revoked_id, revoked) = app.new_key("default", Role::Agent).await;
    let mut soon_revoked = app.client_with(Some(&revoked)).await;
    soon_revoked
        .get_conversation(get_request(&id, ""))
        .await
        .expect("the key works before it is revoked");
    app.revoke(&revoked_id).await;

    let key_id = app.agent_key.split('_').nth(1).expect("cvk_<id>_<secret>");
    let keys = [
        ("garbage", "not-a-key".to_owned()),
        (
            "unknown",
            format!("cvk_{}_{}", "0".repeat(16), "0".repeat(64)),
        ),
        (
            "known id, wrong secret",
            format!("cvk_{key_id}_{}", "f".repeat(64)),
        ),
        ("revoked", revoked),
    ];
    let before = seen(&app, &mut agent, &id).await;
    for (what, key) in keys {
        let mut client = app.client_with(Some(&key)).await;
        let get = client.get_conversation(get_request(&id, "")).await;
        assert_refused(get, Code::Unauthenticated, "API_KEY_INVALID", what);
        let close = client.close_conversation(close_request(&id, dana())).await;
        assert_refused(close, Code::Unauthenticated, "API_KEY_INVALID", what);
    }
    assert_eq!(seen(&app, &mut agent, &id).await, before);
    app.stop().await;
}

#[tokio::test]
async fn a_visitor_key_can_start_a_conversation_without_an_agent() {
    let app = TestApp::spawn().await;
    let mut visitor = app.visitor().await;

    let started = start(&mut visitor, VISITOR).await;

    assert_eq!(started.status(), S::Open);
    assert_eq!(started.visitor_id, VISITOR);
    assert_eq!(started.assignee, None);
    app.stop().await;
}

#[tokio::test]
async fn a_visitor_key_cannot_start_a_conversation_as_an_agent() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let head = app.max_event_sequence().await;

    let refused = visitor
        .start_conversation(pb::StartConversationRequest {
            visitor_id: VISITOR.into(),
            agent: Some(dana()),
            request_id: String::new(),
            flow_id: String::new(),
        })
        .await;

    assert_refused(
        refused,
        Code::PermissionDenied,
        "ROLE_NOT_PERMITTED",
        "start as agent",
    );
    let listed = agent
        .list_conversations(pb::ListConversationsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(listed.conversations.is_empty(), "nothing was started");
    assert_eq!(app.max_event_sequence().await, head);
    app.stop().await;
}

#[tokio::test]
async fn a_visitor_key_sends_as_the_visitor_but_not_as_an_agent() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let id = start(&mut visitor, VISITOR).await.conversation_id;

    let sent = visitor
        .send_message(hello_request(&id, as_visitor(VISITOR)))
        .await
        .expect("send as the visitor")
        .into_inner();
    assert_eq!(sent.message.expect("message").position, 1);

    let before = seen(&app, &mut agent, &id).await;
    let refused = visitor
        .send_message(hello_request(&id, Sender::Agent(dana())))
        .await;
    assert_refused(
        refused,
        Code::PermissionDenied,
        "ROLE_NOT_PERMITTED",
        "send as agent",
    );
    assert_eq!(seen(&app, &mut agent, &id).await, before);
    app.stop().await;
}

#[tokio::test]
async fn a_visitor_key_cannot_close_mark_pending_reopen_or_assign() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let open = start(&mut visitor, VISITOR).await.conversation_id;
    let closed = closed_conversation(&mut agent).await;
    let open_before = seen(&app, &mut agent, &open).await;
    let closed_before = seen(&app, &mut agent, &closed).await;
    let denied = |result: Result<_, Status>, call| {
        assert_refused(result, Code::PermissionDenied, "ROLE_NOT_PERMITTED", call);
    };

    // Each on a conversation where an agent key would succeed.
    denied(
        visitor
            .close_conversation(close_request(&open, dana()))
            .await
            .map(|_| ()),
        "close",
    );
    denied(
        visitor
            .mark_conversation_pending(mark_pending_request(&open, dana()))
            .await
            .map(|_| ()),
        "mark pending",
    );
    denied(
        visitor
            .reopen_conversation(reopen_request(&closed, dana()))
            .await
            .map(|_| ()),
        "reopen",
    );
    denied(
        visitor
            .assign_conversation(pb::AssignConversationRequest {
                conversation_id: open.clone(),
                agent: Some(dana()),
                assignee: Some(dana()),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        "assign",
    );

    assert_eq!(seen(&app, &mut agent, &open).await, open_before);
    assert_eq!(seen(&app, &mut agent, &closed).await, closed_before);
    app.stop().await;
}

#[tokio::test]
async fn a_visitor_key_can_restart_its_visitors_closed_conversation() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let id = closed_conversation(&mut agent).await;

    let restarted = visitor
        .restart_conversation(restart_request(&id, VISITOR))
        .await
        .expect("restart")
        .into_inner()
        .conversation
        .expect("conversation");

    assert_eq!(restarted.status(), S::Open);
    assert_eq!(
        seen(&app, &mut agent, &id).await.conversation.status(),
        S::Open
    );
    app.stop().await;
}

#[tokio::test]
async fn a_visitor_key_must_name_the_visitor_to_read_a_conversation() {
    let app = TestApp::spawn().await;
    let mut visitor = app.visitor().await;
    let id = start(&mut visitor, VISITOR).await.conversation_id;

    let get = visitor.get_conversation(get_request(&id, "")).await;
    let status = assert_refused(get, Code::InvalidArgument, "INVALID_REQUEST", "get");
    assert_eq!(bad_fields(&status), ["visitor_id"]);
    let list = visitor.list_messages(list_messages_request(&id, "")).await;
    let status = assert_refused(list, Code::InvalidArgument, "INVALID_REQUEST", "list");
    assert_eq!(bad_fields(&status), ["visitor_id"]);

    // Naming the visitor is all it takes.
    visitor
        .get_conversation(get_request(&id, VISITOR))
        .await
        .expect("get with visitor_id");
    visitor
        .list_messages(list_messages_request(&id, VISITOR))
        .await
        .expect("list with visitor_id");
    app.stop().await;
}

/// A NOT_FOUND with the conversation id taken out, to compare two answers.
fn not_found_shape(status: &Status, id: &str) -> (Code, String, String) {
    (
        status.code(),
        reason(status),
        status.message().replace(id, "<id>"),
    )
}

#[tokio::test]
async fn a_visitor_key_naming_another_visitor_reads_not_found_like_an_unknown_conversation() {
    let app = TestApp::spawn().await;
    let mut visitor = app.visitor().await;
    let id = start(&mut visitor, VISITOR).await.conversation_id;

    let unknown = visitor
        .get_conversation(get_request(UNKNOWN_ID, OTHER_VISITOR))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(reason(&unknown), "CONVERSATION_NOT_FOUND");
    let unknown = not_found_shape(&unknown, UNKNOWN_ID);

    let get = visitor
        .get_conversation(get_request(&id, OTHER_VISITOR))
        .await
        .unwrap_err();
    assert_eq!(not_found_shape(&get, &id), unknown, "get: {get:?}");

    let list = visitor
        .list_messages(list_messages_request(&id, OTHER_VISITOR))
        .await
        .unwrap_err();
    assert_eq!(not_found_shape(&list, &id), unknown, "list: {list:?}");
    let unknown_list = visitor
        .list_messages(list_messages_request(UNKNOWN_ID, OTHER_VISITOR))
        .await
        .unwrap_err();
    assert_eq!(not_found_shape(&unknown_list, UNKNOWN_ID), unknown);
    app.stop().await;
}

#[tokio::test]
async fn a_visitor_key_cannot_send_or_restart_as_another_visitor() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let open = start(&mut visitor, VISITOR).await.conversation_id;
    let closed = closed_conversation(&mut agent).await;
    let open_before = seen(&app, &mut agent, &open).await;
    let closed_before = seen(&app, &mut agent, &closed).await;

    let send = visitor
        .send_message(hello_request(&open, as_visitor(OTHER_VISITOR)))
        .await;
    let send = assert_refused(send, Code::NotFound, "CONVERSATION_NOT_FOUND", "send");
    let restart = visitor
        .restart_conversation(restart_request(&closed, OTHER_VISITOR))
        .await;
    let restart = assert_refused(restart, Code::NotFound, "CONVERSATION_NOT_FOUND", "restart");

    // Exactly what an unknown conversation answers.
    let unknown = visitor
        .send_message(hello_request(UNKNOWN_ID, as_visitor(OTHER_VISITOR)))
        .await
        .unwrap_err();
    let unknown = not_found_shape(&unknown, UNKNOWN_ID);
    assert_eq!(not_found_shape(&send, &open), unknown);
    assert_eq!(not_found_shape(&restart, &closed), unknown);

    assert_eq!(seen(&app, &mut agent, &open).await, open_before);
    assert_eq!(seen(&app, &mut agent, &closed).await, closed_before);
    app.stop().await;
}

#[tokio::test]
async fn an_agent_key_sending_or_restarting_as_the_wrong_visitor_is_a_visitor_mismatch() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let open = start(&mut agent, VISITOR).await.conversation_id;
    let closed = closed_conversation(&mut agent).await;
    let open_before = seen(&app, &mut agent, &open).await;
    let closed_before = seen(&app, &mut agent, &closed).await;

    let send = agent
        .send_message(hello_request(&open, as_visitor(OTHER_VISITOR)))
        .await;
    let send = assert_refused(send, Code::InvalidArgument, "VISITOR_MISMATCH", "send");
    assert_eq!(bad_fields(&send), ["visitor_id"]);
    let restart = agent
        .restart_conversation(restart_request(&closed, OTHER_VISITOR))
        .await;
    let restart = assert_refused(
        restart,
        Code::InvalidArgument,
        "VISITOR_MISMATCH",
        "restart",
    );
    assert_eq!(bad_fields(&restart), ["visitor_id"]);

    assert_eq!(seen(&app, &mut agent, &open).await, open_before);
    assert_eq!(seen(&app, &mut agent, &closed).await, closed_before);
    app.stop().await;
}

#[tokio::test]
async fn an_agent_key_naming_another_visitor_reads_not_found() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, VISITOR).await.conversation_id;

    let get = agent
        .get_conversation(get_request(&id, OTHER_VISITOR))
        .await;
    assert_refused(get, Code::NotFound, "CONVERSATION_NOT_FOUND", "get");
    let list = agent
        .list_messages(list_messages_request(&id, OTHER_VISITOR))
        .await;
    assert_refused(list, Code::NotFound, "CONVERSATION_NOT_FOUND", "list");
    app.stop().await;
}

#[tokio::test]
async fn an_agent_key_can_do_everything() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;

    let started = agent
        .start_conversation(pb::StartConversationRequest {
            visitor_id: VISITOR.into(),
            agent: Some(dana()),
            request_id: String::new(),
            flow_id: String::new(),
        })
        .await
        .expect("start with an agent")
        .into_inner()
        .conversation
        .expect("conversation");
    let id = started.conversation_id;

    let as_agent = agent
        .send_message(hello_request(&id, Sender::Agent(dana())))
        .await
        .expect("send as an agent")
        .into_inner()
        .message
        .expect("message");
    assert_eq!(
        as_agent.author.expect("author").kind(),
        pb::AuthorKind::Agent
    );
    let as_the_visitor = agent
        .send_message(hello_request(&id, as_visitor(VISITOR)))
        .await
        .expect("send as the conversation's visitor")
        .into_inner()
        .message
        .expect("message");
    let author = as_the_visitor.author.expect("author");
    assert_eq!(
        (author.kind(), author.id.as_str()),
        (pb::AuthorKind::Visitor, VISITOR)
    );

    mark_pending(&mut agent, &id, dana()).await;
    reopen(&mut agent, &id, dana()).await;
    close(&mut agent, &id, dana()).await;
    let restarted = agent
        .restart_conversation(restart_request(&id, VISITOR))
        .await
        .expect("restart as the conversation's visitor")
        .into_inner()
        .conversation
        .expect("conversation");
    assert_eq!(restarted.status(), S::Open);

    // Reads, with or without naming the visitor; agent keys see every message.
    for visitor_id in ["", VISITOR] {
        let got = agent
            .get_conversation(get_request(&id, visitor_id))
            .await
            .expect("get")
            .into_inner()
            .conversation
            .expect("conversation");
        assert_eq!(got.message_count, 6, "2 messages and 4 notes");
        let messages = agent
            .list_messages(list_messages_request(&id, visitor_id))
            .await
            .expect("list messages")
            .into_inner()
            .messages;
        assert_eq!(messages.len(), 6);
    }
    let listed = agent
        .list_conversations(pb::ListConversationsRequest::default())
        .await
        .expect("list conversations")
        .into_inner();
    let ids: Vec<_> = listed
        .conversations
        .iter()
        .map(|c| c.conversation_id.as_str())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    app.stop().await;
}
