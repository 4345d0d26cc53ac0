//! A whole conversation walked through its life, as the README shows it.

use conversations::pb::{self, ConversationStatus, message::Content};
use tonic::Code;

use crate::helpers::{TestApp, dana, reason};

#[tokio::test]
async fn a_conversation_walks_from_open_to_closed_and_back_with_its_thread() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;

    let started = agent
        .start_conversation(pb::StartConversationRequest {
            visitor_id: "v-1".into(),
            agent: Some(dana()),
            request_id: String::new(),
            flow_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let conversation = started.conversation.unwrap();
    assert_eq!(conversation.status(), ConversationStatus::Open);
    assert_eq!(
        conversation.assignee.as_ref().unwrap().agent_id,
        "agent-dana"
    );
    assert!(!conversation.restart_available);
    assert!(started.event_sequence > 0);
    let id = conversation.conversation_id.clone();

    let closed = agent
        .close_conversation(pb::CloseConversationRequest {
            conversation_id: id.clone(),
            agent: Some(dana()),
            etag: conversation.etag.clone(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let closed_conversation = closed.conversation.unwrap();
    assert_eq!(closed_conversation.status(), ConversationStatus::Closed);
    assert!(closed_conversation.restart_available);
    assert!(closed_conversation.close_time.is_some());
    assert!(closed.event_sequence > started.event_sequence);

    let refused = visitor
        .send_message(pb::SendMessageRequest {
            conversation_id: id.clone(),
            sender: Some(pb::send_message_request::Sender::VisitorId("v-1".into())),
            content: Some(pb::send_message_request::Content::Text("hello?".into())),
            request_id: String::new(),
            audience: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "CONVERSATION_CLOSED");
    assert!(
        refused.message().contains("restart"),
        "{}",
        refused.message()
    );

    let reopened = agent
        .reopen_conversation(pb::ReopenConversationRequest {
            conversation_id: id.clone(),
            agent: Some(dana()),
            etag: String::new(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .conversation
        .unwrap();
    assert_eq!(reopened.status(), ConversationStatus::Open);
    assert!(reopened.close_time.is_none());

    let texts = |messages: Vec<pb::Message>| -> Vec<String> {
        messages
            .into_iter()
            .filter_map(|m| match m.content {
                Some(Content::Transactional(t)) => Some(t.text),
                _ => None,
            })
            .collect()
    };
    let agent_thread = agent
        .list_messages(pb::ListMessagesRequest {
            conversation_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert_eq!(
        texts(agent_thread),
        [
            "Dana closed the conversation from Slack.",
            "Dana reopened the conversation."
        ]
    );
    let visitor_thread = visitor
        .list_messages(pb::ListMessagesRequest {
            conversation_id: id.clone(),
            visitor_id: "v-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert_eq!(texts(visitor_thread), ["Dana reopened the conversation."]);
    app.stop().await;
}
