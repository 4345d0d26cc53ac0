//! Visitor sessions: a site's backend asks for a token bound to one visitor,
//! and the browser holding it can do what that visitor may, and nothing else.

use std::time::Duration;

use conversations::{
    domain::{
        Micros, WorkspaceId,
        session::{self, SessionClaims},
        values::VisitorId,
    },
    ids::now,
    pb::{
        self,
        send_message_request::{Content, Sender},
    },
};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

/// Asks for a session for `visitor_id` with `client`'s key.
async fn session_for(client: &mut Client, visitor_id: &str) -> pb::CreateVisitorSessionResponse {
    client
        .create_visitor_session(pb::CreateVisitorSessionRequest {
            visitor_id: visitor_id.to_owned(),
            ttl: None,
        })
        .await
        .expect("create visitor session")
        .into_inner()
}

/// A message with no sender: a session writes as its visitor.
fn unsigned_text(id: &str, text: &str) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        conversation_id: id.to_owned(),
        sender: None,
        content: Some(Content::Text(text.to_owned())),
        ..Default::default()
    }
}

/// The refusals of calls that must all be refused (`why` names them).
fn refusals(
    calls: impl IntoIterator<Item = Result<(), tonic::Status>>,
    why: &str,
) -> Vec<tonic::Status> {
    calls.into_iter().map(|call| call.expect_err(why)).collect()
}

fn texts(messages: &[pb::Message]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match &m.content {
            Some(pb::message::Content::Text(text)) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// A token the server's own secret signed, for claims no RPC would make
/// (one about to expire), read from the database as an operator could.
async fn signed(app: &TestApp, visitor_id: &str, expire_time: Micros) -> String {
    let secret = app
        .store()
        .session_secret(&[0; 32], now())
        .await
        .expect("the server made its secret at start");
    let workspace_id: WorkspaceId = app
        .store()
        .find_workspace("default")
        .await
        .expect("workspace")
        .expect("default");
    let issuer_key_id = app
        .visitor_key
        .split('_')
        .nth(1)
        .expect("key id")
        .to_owned();
    session::sign(
        &secret,
        &SessionClaims {
            workspace_id,
            session_id: "00000000000000aa".into(),
            visitor_id: VisitorId::parse(visitor_id).expect("visitor"),
            expire_time,
            issuer_key_id,
        },
    )
}

#[tokio::test]
async fn a_session_acts_as_its_visitor_with_every_visitor_id_left_empty() {
    let app = TestApp::spawn().await;
    let mut backend = app.visitor().await;
    let issued = session_for(&mut backend, "v-ada").await;
    assert!(issued.token.starts_with("cvs_"));
    assert_eq!(issued.session_id.len(), 16);
    let expires = issued.expire_time.expect("expire time").seconds;
    let hour_from_now = now().0 / 1_000_000 + 3600;
    assert!((hour_from_now - 5..=hour_from_now + 5).contains(&expires));
    let mut browser = app.client_with(Some(&issued.token)).await;

    let started = browser
        .start_conversation(pb::StartConversationRequest::default())
        .await
        .expect("start with the session's visitor")
        .into_inner()
        .conversation
        .expect("conversation");
    assert_eq!(started.visitor_id, "v-ada");
    let id = started.conversation_id.clone();
    browser
        .send_message(unsigned_text(&id, "hi, pricing?"))
        .await
        .expect("send as the session's visitor");
    // Naming its own visitor is fine too.
    browser
        .send_message(text_request(&id, as_visitor("v-ada"), "still there?", ""))
        .await
        .expect("send naming its own visitor");
    assert_eq!(
        texts(&thread(&mut browser, &id, "").await),
        ["hi, pricing?", "still there?"]
    );
    assert_eq!(get(&mut browser, &id, "").await.visitor_id, "v-ada");
    let listed = list_all(&mut browser).await;
    assert_eq!(ids(&listed.conversations), std::slice::from_ref(&id));

    let mut agent = app.agent().await;
    close(&mut agent, &id, dana()).await;
    let restarted = browser
        .restart_conversation(restart_request(&id, ""))
        .await
        .expect("restart as the session's visitor")
        .into_inner()
        .conversation
        .expect("conversation");
    assert_eq!(restarted.status, pb::ConversationStatus::Open as i32);

    let mut stream = browser
        .watch_events(pb::WatchEventsRequest {
            conversation_id: id.clone(),
            ..Default::default()
        })
        .await
        .expect("watch its own conversation")
        .into_inner();
    // The whole story so far, then nothing more.
    let mut seen = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(1), stream.next()).await {
        if let Some(pb::watch_events_response::Item::Event(event)) = item.expect("event").item {
            assert_eq!(event.conversation_id, id);
            seen.push(event.payload.expect("payload"));
        }
    }
    use pb::event::Payload;
    assert!(matches!(
        seen.first(),
        Some(Payload::ConversationStarted(_))
    ));
    let statuses: Vec<i32> = seen
        .iter()
        .filter_map(|p| match p {
            Payload::StatusChanged(change) => Some(change.to_status),
            _ => None,
        })
        .collect();
    assert_eq!(
        statuses,
        [
            pb::ConversationStatus::Closed as i32,
            pb::ConversationStatus::Open as i32
        ]
    );
    let posted = seen
        .iter()
        .filter(|p| matches!(p, Payload::MessagePosted(_)))
        .count();
    assert!(
        posted >= 2,
        "the visitor's two messages, at least: {seen:?}"
    );
}

#[tokio::test]
async fn a_session_sees_nothing_of_another_visitor_and_cannot_act_as_one() {
    let app = TestApp::spawn().await;
    let mut backend = app.visitor().await;
    let mut agent = app.agent().await;
    let theirs = start(&mut agent, "v-bob").await.conversation_id;
    let issued = session_for(&mut backend, "v-ada").await;
    let mut browser = app.client_with(Some(&issued.token)).await;

    // Another visitor's conversation answers as one that does not exist.
    let refused = [
        browser
            .get_conversation(get_request(&theirs, ""))
            .await
            .map(drop),
        browser
            .list_messages(list_messages_request(&theirs, ""))
            .await
            .map(drop),
        browser
            .send_message(unsigned_text(&theirs, "hello"))
            .await
            .map(drop),
        browser
            .restart_conversation(restart_request(&theirs, ""))
            .await
            .map(drop),
        browser
            .list_events(pb::ListEventsRequest {
                conversation_id: theirs.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        browser
            .watch_events(pb::WatchEventsRequest {
                conversation_id: theirs.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
    ];
    for status in refusals(refused, "another visitor's") {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert_eq!(reason(&status), "CONVERSATION_NOT_FOUND");
    }
    assert!(list_all(&mut browser).await.conversations.is_empty());

    // Naming another visitor is refused outright.
    let named = [
        browser
            .start_conversation(pb::StartConversationRequest {
                visitor_id: "v-bob".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        browser
            .get_conversation(get_request(&theirs, "v-bob"))
            .await
            .map(drop),
        browser
            .send_message(hello_request(&theirs, as_visitor("v-bob")))
            .await
            .map(drop),
        browser
            .list_conversations(pb::ListConversationsRequest {
                visitor_id: "v-bob".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        browser
            .watch_events(pb::WatchEventsRequest {
                conversation_id: theirs.clone(),
                visitor_id: "v-bob".into(),
                ..Default::default()
            })
            .await
            .map(drop),
    ];
    for status in refusals(named, "as another visitor") {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    assert_eq!(
        texts(&thread(&mut agent, &theirs, "").await),
        Vec::<String>::new(),
        "nothing was written to the other visitor's conversation"
    );
}

#[tokio::test]
async fn a_session_may_not_do_what_agents_or_the_sites_backend_do() {
    let app = TestApp::spawn().await;
    let mut backend = app.visitor().await;
    let issued = session_for(&mut backend, "v-ada").await;
    let mut browser = app.client_with(Some(&issued.token)).await;
    let id = start(&mut browser, "v-ada").await.conversation_id;
    let mut agent = app.agent().await;
    agent
        .send_message(pb::SendMessageRequest {
            audience: pb::Audience::Agents as i32,
            ..text_request(&id, Sender::Agent(dana()), "hot lead, call them", "")
        })
        .await
        .expect("an agents-only note");

    let refused = [
        browser
            .close_conversation(close_request(&id, dana()))
            .await
            .map(drop),
        browser
            .mark_conversation_pending(mark_pending_request(&id, dana()))
            .await
            .map(drop),
        browser
            .reopen_conversation(reopen_request(&id, dana()))
            .await
            .map(drop),
        browser
            .send_message(hello_request(&id, Sender::Agent(dana())))
            .await
            .map(drop),
        browser
            .create_visitor_session(pb::CreateVisitorSessionRequest {
                visitor_id: "v-ada".into(),
                ttl: None,
            })
            .await
            .map(drop),
        browser
            .revoke_visitor_session(pb::RevokeVisitorSessionRequest {
                session_id: issued.session_id.clone(),
            })
            .await
            .map(drop),
    ];
    for status in refusals(refused, "not a visitor's") {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    let mut flows = app.flows_with(Some(&issued.token)).await;
    let status = flows
        .list_flows(pb::ListFlowsRequest {})
        .await
        .expect_err("flows are an admin's");
    assert_eq!(status.code(), Code::PermissionDenied);
    // Agents-only notes stay with agents.
    assert!(
        thread(&mut browser, &id, "")
            .await
            .iter()
            .all(|m| m.audience != pb::Audience::Agents as i32)
    );
    let mut agents_thread = thread(&mut agent, &id, "").await;
    agents_thread.retain(|m| m.audience == pb::Audience::Agents as i32);
    assert_eq!(agents_thread.len(), 1);
}

#[tokio::test]
async fn expired_altered_and_revoked_tokens_are_unauthenticated_each_with_its_reason() {
    let app = TestApp::spawn().await;
    let mut backend = app.visitor().await;
    let issued = session_for(&mut backend, "v-ada").await;

    let expired = signed(&app, "v-ada", Micros(now().0 - 1)).await;
    let mut altered = issued.token.clone();
    altered.pop();
    altered.push(if issued.token.ends_with('A') {
        'B'
    } else {
        'A'
    });
    for (token, expected) in [
        (expired, "SESSION_EXPIRED"),
        (altered, "SESSION_INVALID"),
        ("cvs_e30.AAAA".to_owned(), "SESSION_INVALID"),
    ] {
        let status = app
            .client_with(Some(&token))
            .await
            .list_conversations(pb::ListConversationsRequest::default())
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert_eq!(reason(&status), expected);
    }

    let mut browser = app.client_with(Some(&issued.token)).await;
    let id = start(&mut browser, "v-ada").await.conversation_id;
    let mut stream = browser
        .watch_events(pb::WatchEventsRequest {
            conversation_id: id,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    backend
        .revoke_visitor_session(pb::RevokeVisitorSessionRequest {
            session_id: issued.session_id.clone(),
        })
        .await
        .expect("revoke");
    let ended = end_status(&mut stream).await;
    assert_eq!(ended.code(), Code::Unauthenticated);
    assert_eq!(reason(&ended), "SESSION_REVOKED");
    let status = browser
        .list_conversations(pb::ListConversationsRequest::default())
        .await
        .expect_err("revoked");
    assert_eq!(reason(&status), "SESSION_REVOKED");
    // Other sessions of the visitor still work.
    let other = session_for(&mut backend, "v-ada").await;
    let mut again = app.client_with(Some(&other.token)).await;
    assert_eq!(list_all(&mut again).await.conversations.len(), 1);
}

#[tokio::test]
async fn a_sessions_stream_ends_when_the_session_expires() {
    let app = TestApp::spawn().await;
    let token = signed(&app, "v-ada", Micros(now().0 + 3_000_000)).await;
    let mut browser = app.client_with(Some(&token)).await;
    let id = start(&mut browser, "v-ada").await.conversation_id;
    let mut stream = browser
        .watch_events(pb::WatchEventsRequest {
            conversation_id: id,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let ended = end_status(&mut stream).await;
    assert_eq!(ended.code(), Code::Unauthenticated);
    assert_eq!(reason(&ended), "SESSION_EXPIRED");
    assert!(
        ended
            .get_details_error_info()
            .is_some_and(|info| info.metadata.contains_key("last_sequence"))
    );
}

#[tokio::test]
async fn revoking_the_key_that_made_a_session_ends_the_session() {
    let app = TestApp::spawn().await;
    let (key_id, key) = app
        .new_key("default", conversations::domain::credentials::Role::Visitor)
        .await;
    let mut backend = app.client_with(Some(&key)).await;
    let issued = session_for(&mut backend, "v-ada").await;
    let mut browser = app.client_with(Some(&issued.token)).await;
    let id = start(&mut browser, "v-ada").await.conversation_id;
    let mut stream = browser
        .watch_events(pb::WatchEventsRequest {
            conversation_id: id,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    app.revoke(&key_id).await;
    let ended = end_status(&mut stream).await;
    assert_eq!(reason(&ended), "SESSION_REVOKED");
    let status = browser
        .list_conversations(pb::ListConversationsRequest::default())
        .await
        .expect_err("its key is revoked");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(reason(&status), "SESSION_REVOKED");
}

#[tokio::test]
async fn a_session_of_one_workspace_sees_nothing_of_another() {
    let app = TestApp::spawn().await;
    let (other_agent, other_visitor) = app.new_workspace("acme").await;
    let mut other = app.client_with(Some(&other_agent)).await;
    let theirs = start(&mut other, "v-ada").await.conversation_id;
    let mut backend = app.client_with(Some(&other_visitor)).await;
    let acme_session = session_for(&mut backend, "v-ada").await;

    let mut home = app.visitor().await;
    let issued = session_for(&mut home, "v-ada").await;
    let mut browser = app.client_with(Some(&issued.token)).await;
    let status = browser
        .get_conversation(get_request(&theirs, ""))
        .await
        .expect_err("another workspace's");
    assert_eq!(status.code(), Code::NotFound);
    // Revoking by id from another workspace touches nothing here.
    home.revoke_visitor_session(pb::RevokeVisitorSessionRequest {
        session_id: acme_session.session_id.clone(),
    })
    .await
    .expect("revoke, as far as this workspace goes");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut acme_browser = app.client_with(Some(&acme_session.token)).await;
    assert_eq!(
        get(&mut acme_browser, &theirs, "").await.visitor_id,
        "v-ada"
    );
}

#[tokio::test]
async fn session_requests_out_of_bounds_are_invalid_arguments_naming_the_field() {
    let app = TestApp::spawn().await;
    let mut backend = app.agent().await;
    for (request, field) in [
        (
            pb::CreateVisitorSessionRequest {
                visitor_id: String::new(),
                ttl: None,
            },
            "visitor_id",
        ),
        (
            pb::CreateVisitorSessionRequest {
                visitor_id: "v".into(),
                ttl: Some(prost_types::Duration {
                    seconds: 59,
                    nanos: 0,
                }),
            },
            "ttl",
        ),
        (
            pb::CreateVisitorSessionRequest {
                visitor_id: "v".into(),
                ttl: Some(prost_types::Duration {
                    seconds: 86_401,
                    nanos: 0,
                }),
            },
            "ttl",
        ),
    ] {
        let status = backend
            .create_visitor_session(request)
            .await
            .expect_err("out of bounds");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(bad_fields(&status), [field]);
    }
    let status = backend
        .revoke_visitor_session(pb::RevokeVisitorSessionRequest {
            session_id: "not-an-id".into(),
        })
        .await
        .expect_err("malformed id");
    assert_eq!(bad_fields(&status), ["session_id"]);
    let ttl = backend
        .create_visitor_session(pb::CreateVisitorSessionRequest {
            visitor_id: "v".into(),
            ttl: Some(prost_types::Duration {
                seconds: 600,
                nanos: 0,
            }),
        })
        .await
        .expect("ten minutes")
        .into_inner();
    let left = ttl.expire_time.expect("expiry").seconds - now().0 / 1_000_000;
    assert!((595..=605).contains(&left), "{left}");
}

#[tokio::test]
async fn revocations_of_expired_sessions_are_forgotten_and_live_ones_kept() {
    let app = TestApp::spawn().await;
    let workspace_id = app
        .store()
        .find_workspace("default")
        .await
        .expect("workspace")
        .expect("default");
    let now = now();
    for (id, expire_time) in [
        ("00000000000000e1", Micros(now.0 - 1)),
        ("00000000000000e2", Micros(now.0 + 60_000_000)),
    ] {
        app.store()
            .revoke_session(workspace_id, id, expire_time, Micros(now.0 - 10))
            .await
            .expect("revoke");
    }
    // The server's own purge may run first; either way, after this one the
    // expired revocation is gone and the live one stays.
    app.core().purge_revoked_sessions().await.expect("purge");
    assert_eq!(app.core().purge_revoked_sessions().await.expect("purge"), 0);
    let left = app
        .store()
        .revoked_sessions_since(Micros(0), Micros(0))
        .await
        .expect("read");
    assert_eq!(left, [(workspace_id, "00000000000000e2".to_owned())]);
}
