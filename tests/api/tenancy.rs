//! Workspaces are sealed from each other: a key of one workspace reaches
//! nothing of another, and the other's data answers exactly like data that
//! does not exist (same code, reason and message), so ids cannot be probed.

use std::collections::HashMap;

use conversations::pb::{self, ConversationStatus, send_message_request::Sender};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::helpers::{
    Client, TestApp, as_visitor, close, close_request, dana, get, get_request, hello_request, ids,
    list, list_messages_request, mark_pending, mark_pending_request, reason, reopen_request,
    restart_request, start,
};

/// A well-formed id that no conversation has.
const NEVER_EXISTED: &str = "conv_01JD0000000000000000000000";

/// What a caller can observe of an error, with `id` replaced by a
/// placeholder so the answers about two different ids can be compared.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    code: Code,
    reason: String,
    message: String,
    metadata: Vec<(String, String)>,
}

fn observe(status: &Status, id: &str) -> Observed {
    let metadata: HashMap<String, String> = status
        .get_details_error_info()
        .map(|info| info.metadata)
        .unwrap_or_default();
    let mut metadata: Vec<(String, String)> = metadata
        .into_iter()
        .map(|(k, v)| (k, v.replace(id, "<id>")))
        .collect();
    metadata.sort();
    Observed {
        code: status.code(),
        reason: reason(status),
        message: status.message().replace(id, "<id>"),
        metadata,
    }
}

/// Every call that names a conversation, made by `client` about `id`; the
/// errors they answer, by call name. `visitor_id` is the one a visitor-side
/// field names.
async fn errors_about(
    client: &mut Client,
    id: &str,
    visitor_id: &str,
) -> Vec<(&'static str, Status)> {
    let mut errors = Vec::new();
    let get = client.get_conversation(get_request(id, visitor_id)).await;
    errors.push(("GetConversation", get.expect_err("get must fail")));
    let list = client
        .list_messages(list_messages_request(id, visitor_id))
        .await;
    errors.push(("ListMessages", list.expect_err("list must fail")));
    let sent = client
        .send_message(hello_request(id, as_visitor(visitor_id)))
        .await;
    errors.push(("SendMessage (visitor)", sent.expect_err("send must fail")));
    let restarted = client
        .restart_conversation(restart_request(id, visitor_id))
        .await;
    errors.push((
        "RestartConversation",
        restarted.expect_err("restart must fail"),
    ));
    errors
}

/// The calls only agent keys may make, about `id`.
async fn agent_errors_about(client: &mut Client, id: &str) -> Vec<(&'static str, Status)> {
    let mut errors = Vec::new();
    let sent = client
        .send_message(hello_request(id, Sender::Agent(dana())))
        .await;
    errors.push(("SendMessage (agent)", sent.expect_err("send must fail")));
    let closed = client.close_conversation(close_request(id, dana())).await;
    errors.push(("CloseConversation", closed.expect_err("close must fail")));
    let pending = client
        .mark_conversation_pending(mark_pending_request(id, dana()))
        .await;
    errors.push((
        "MarkConversationPending",
        pending.expect_err("mark pending must fail"),
    ));
    let reopened = client.reopen_conversation(reopen_request(id, dana())).await;
    errors.push((
        "ReopenConversation",
        reopened.expect_err("reopen must fail"),
    ));
    errors
}

fn assert_indistinguishable(
    foreign: Vec<(&'static str, Status)>,
    foreign_id: &str,
    missing: Vec<(&'static str, Status)>,
) {
    assert_eq!(foreign.len(), missing.len());
    for ((call, foreign), (_, missing)) in foreign.iter().zip(&missing) {
        assert_eq!(foreign.code(), Code::NotFound, "{call}: {foreign:?}");
        assert_eq!(reason(foreign), "CONVERSATION_NOT_FOUND", "{call}");
        assert_eq!(
            observe(foreign, foreign_id),
            observe(missing, NEVER_EXISTED),
            "{call}: another workspace's conversation must answer like a missing one"
        );
    }
}

#[tokio::test]
async fn an_agent_key_of_another_workspace_finds_a_conversation_exactly_like_a_missing_one() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let conversation = start(&mut agent, "v-a").await;
    let id = conversation.conversation_id.clone();
    let (other_agent_key, _) = app.new_workspace("other").await;
    let mut other = app.client_with(Some(&other_agent_key)).await;
    let head = app.max_event_sequence().await;

    let foreign = [
        errors_about(&mut other, &id, "v-a").await,
        agent_errors_about(&mut other, &id).await,
    ]
    .concat();
    let missing = [
        errors_about(&mut other, NEVER_EXISTED, "v-a").await,
        agent_errors_about(&mut other, NEVER_EXISTED).await,
    ]
    .concat();
    assert_eq!(foreign.len(), 8);
    assert_indistinguishable(foreign, &id, missing);

    assert_eq!(
        get(&mut agent, &id, "").await,
        conversation,
        "nothing changed"
    );
    assert_eq!(app.max_event_sequence().await, head, "no event was written");
    app.stop().await;
}

#[tokio::test]
async fn an_agent_key_of_another_workspace_cannot_act_on_a_closed_or_pending_conversation() {
    // Every status: a leak could hide behind a refusal that only one status
    // gives (e.g. CONVERSATION_ALREADY_CLOSED).
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let pending = start(&mut agent, "v-p").await;
    mark_pending(&mut agent, &pending.conversation_id, dana()).await;
    let closed = start(&mut agent, "v-c").await;
    close(&mut agent, &closed.conversation_id, dana()).await;
    let (other_agent_key, _) = app.new_workspace("other").await;
    let mut other = app.client_with(Some(&other_agent_key)).await;
    let before = (
        get(&mut agent, &pending.conversation_id, "").await,
        get(&mut agent, &closed.conversation_id, "").await,
    );
    let head = app.max_event_sequence().await;

    for (id, visitor) in [
        (&pending.conversation_id, "v-p"),
        (&closed.conversation_id, "v-c"),
    ] {
        let foreign = [
            errors_about(&mut other, id, visitor).await,
            agent_errors_about(&mut other, id).await,
        ]
        .concat();
        let missing = [
            errors_about(&mut other, NEVER_EXISTED, visitor).await,
            agent_errors_about(&mut other, NEVER_EXISTED).await,
        ]
        .concat();
        assert_indistinguishable(foreign, id, missing);
    }

    let after = (
        get(&mut agent, &pending.conversation_id, "").await,
        get(&mut agent, &closed.conversation_id, "").await,
    );
    assert_eq!(after, before, "nothing changed");
    assert_eq!(after.0.status(), ConversationStatus::Pending);
    assert_eq!(after.1.status(), ConversationStatus::Closed);
    assert_eq!(app.max_event_sequence().await, head, "no event was written");
    app.stop().await;
}

#[tokio::test]
async fn a_visitor_key_of_another_workspace_cannot_reach_a_conversation_even_naming_its_visitor() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let closed = start(&mut agent, "v-a").await;
    close(&mut agent, &closed.conversation_id, dana()).await;
    let closed = get(&mut agent, &closed.conversation_id, "").await;
    let open = start(&mut agent, "v-a").await;
    let (_, other_visitor_key) = app.new_workspace("other").await;
    let mut other_visitor = app.client_with(Some(&other_visitor_key)).await;
    let head = app.max_event_sequence().await;

    for conversation in [&closed, &open] {
        let id = &conversation.conversation_id;
        let foreign = errors_about(&mut other_visitor, id, "v-a").await;
        let missing = errors_about(&mut other_visitor, NEVER_EXISTED, "v-a").await;
        assert_eq!(foreign.len(), 4);
        assert_indistinguishable(foreign, id, missing);
        assert_eq!(
            &get(&mut agent, id, "").await,
            conversation,
            "nothing changed"
        );
    }
    assert_eq!(app.max_event_sequence().await, head, "no event was written");
    app.stop().await;
}

#[tokio::test]
async fn another_workspace_never_lists_or_counts_this_workspaces_conversations() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let a1 = start(&mut agent, "v-a1").await;
    let a2 = start(&mut agent, "shared-visitor").await;
    let a3 = start(&mut agent, "v-a3").await;
    mark_pending(&mut agent, &a2.conversation_id, dana()).await;
    close(&mut agent, &a3.conversation_id, dana()).await;

    let (other_agent_key, _) = app.new_workspace("other").await;
    let mut other = app.client_with(Some(&other_agent_key)).await;
    let b1 = other
        .start_conversation(pb::StartConversationRequest {
            visitor_id: "shared-visitor".into(),
            agent: Some(dana()),
            request_id: String::new(),
            flow_id: String::new(),
        })
        .await
        .expect("start in the other workspace")
        .into_inner()
        .conversation
        .expect("conversation");

    let everything = list(&mut other, pb::ListConversationsRequest::default()).await;
    assert_eq!(
        ids(&everything.conversations),
        [b1.conversation_id.as_str()]
    );
    assert_eq!(
        everything.status_counts,
        Some(pb::StatusCounts {
            open: 1,
            pending: 0,
            closed: 0
        })
    );

    let by_foreign_visitor = list(
        &mut other,
        pb::ListConversationsRequest {
            visitor_id: "v-a1".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(ids(&by_foreign_visitor.conversations).is_empty());
    assert_eq!(by_foreign_visitor.status_counts, everything.status_counts);

    let by_shared_visitor = list(
        &mut other,
        pb::ListConversationsRequest {
            visitor_id: "shared-visitor".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        ids(&by_shared_visitor.conversations),
        [b1.conversation_id.as_str()]
    );

    let by_status = list(
        &mut other,
        pb::ListConversationsRequest {
            statuses: vec![
                ConversationStatus::Pending.into(),
                ConversationStatus::Closed.into(),
            ],
            ..Default::default()
        },
    )
    .await;
    assert!(ids(&by_status.conversations).is_empty());

    let by_assignee = list(
        &mut other,
        pb::ListConversationsRequest {
            assignee_agent_id: "agent-dana".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        ids(&by_assignee.conversations),
        [b1.conversation_id.as_str()]
    );

    // And the other way round: the default workspace sees only its own.
    let mine = list(&mut agent, pb::ListConversationsRequest::default()).await;
    let mut mine_ids = ids(&mine.conversations);
    mine_ids.sort();
    let mut expected = vec![a1.conversation_id, a2.conversation_id, a3.conversation_id];
    expected.sort();
    assert_eq!(mine_ids, expected);
    assert_eq!(
        mine.status_counts,
        Some(pb::StatusCounts {
            open: 1,
            pending: 1,
            closed: 1
        })
    );
    app.stop().await;
}

#[tokio::test]
async fn a_request_id_used_in_another_workspace_does_not_replay_its_response() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let (other_agent_key, _) = app.new_workspace("other").await;
    let mut other = app.client_with(Some(&other_agent_key)).await;
    let request = pb::StartConversationRequest {
        visitor_id: "v-1".into(),
        agent: None,
        request_id: "shared-request-id".into(),
        flow_id: String::new(),
    };

    let mine = agent
        .start_conversation(request.clone())
        .await
        .expect("start")
        .into_inner()
        .conversation
        .expect("conversation");
    let theirs = other
        .start_conversation(request)
        .await
        .expect("the same request id is free in another workspace")
        .into_inner()
        .conversation
        .expect("conversation");

    assert_ne!(theirs.conversation_id, mine.conversation_id);
    let listed = list(&mut other, pb::ListConversationsRequest::default()).await;
    assert_eq!(ids(&listed.conversations), [theirs.conversation_id]);
    let listed = list(&mut agent, pb::ListConversationsRequest::default()).await;
    assert_eq!(ids(&listed.conversations), [mine.conversation_id]);
    app.stop().await;
}

/// A well-formed flow id that no flow has.
const NO_SUCH_FLOW: &str = "flow_01JD0000000000000000000000";

/// `observe`, with a number in the message replaced too (cursors).
fn observe_number(status: &Status, number: i64) -> Observed {
    let mut observed = observe(status, &number.to_string());
    observed.message = status.message().replace(&number.to_string(), "<n>");
    observed
}

async fn watch_refusal(client: &mut Client, request: pb::WatchEventsRequest) -> Status {
    use tokio_stream::StreamExt;
    match client.watch_events(request).await {
        Err(status) => status,
        Ok(stream) => match stream.into_inner().next().await {
            Some(Err(status)) => status,
            other => panic!("the stream must be refused, got {other:?}"),
        },
    }
}

#[tokio::test]
async fn events_flows_page_tokens_and_cursors_of_another_workspace_answer_exactly_like_unknown_ones()
 {
    // Workspace A (default): a conversation with a thread, enough
    // conversations for a second page, a flow, a long feed.
    let app = TestApp::spawn().await;
    let mut agent_a = app.agent().await;
    let x = start(&mut agent_a, "v-a").await.conversation_id;
    for _ in 0..3 {
        agent_a
            .send_message(hello_request(&x, Sender::Agent(dana())))
            .await
            .expect("message");
    }
    for i in 0..3 {
        start(&mut agent_a, &format!("v-a{i}")).await;
    }
    let conversations_token_a = list(
        &mut agent_a,
        pb::ListConversationsRequest {
            page_size: 1,
            ..Default::default()
        },
    )
    .await
    .next_page_token;
    let messages_token_a = agent_a
        .list_messages(pb::ListMessagesRequest {
            page_size: 1,
            ..list_messages_request(&x, "")
        })
        .await
        .expect("messages")
        .into_inner()
        .next_page_token;
    assert!(!conversations_token_a.is_empty() && !messages_token_a.is_empty());
    let mut admin_a = app.admin().await;
    let flow_a = admin_a
        .create_flow(pb::CreateFlowRequest {
            name: "A's flow".into(),
            steps: vec![pb::FlowStep {
                step: Some(pb::flow_step::Step::Handoff(pb::HandoffStep {
                    text: "One moment.".into(),
                })),
            }],
        })
        .await
        .expect("create flow")
        .into_inner()
        .flow
        .expect("flow")
        .flow_id;
    let head_a = app.workspace_head("default").await;

    // Workspace B: keys of every role, a conversation of its own with a
    // thread long enough to page.
    let (b_agent_key, b_visitor_key) = app.new_workspace("other").await;
    let (_, b_admin_key) = app
        .new_key("other", conversations::domain::credentials::Role::Admin)
        .await;
    let mut agent_b = app.client_with(Some(&b_agent_key)).await;
    let mut visitor_b = app.client_with(Some(&b_visitor_key)).await;
    let mut admin_b = app.flows_with(Some(&b_admin_key)).await;
    let y = start(&mut agent_b, "v-b").await.conversation_id;
    for _ in 0..3 {
        agent_b
            .send_message(hello_request(&y, Sender::Agent(dana())))
            .await
            .expect("message");
    }
    let head_b = app.workspace_head("other").await;
    assert!(head_a > head_b + 1, "A's feed is longer than B's");

    // Events of A's conversation, from B's agent and visitor keys.
    for (client, visitor_id) in [(&mut agent_b, ""), (&mut visitor_b, "v-a")] {
        let list_about = |id: &str| pb::ListEventsRequest {
            conversation_id: id.into(),
            visitor_id: visitor_id.into(),
            ..Default::default()
        };
        let foreign = client.list_events(list_about(&x)).await.unwrap_err();
        let missing = client
            .list_events(list_about(NEVER_EXISTED))
            .await
            .unwrap_err();
        assert_eq!(foreign.code(), Code::NotFound, "{foreign:?}");
        assert_eq!(observe(&foreign, &x), observe(&missing, NEVER_EXISTED));
        let watch_about = |id: &str| pb::WatchEventsRequest {
            conversation_id: id.into(),
            visitor_id: visitor_id.into(),
            ..Default::default()
        };
        let foreign = watch_refusal(client, watch_about(&x)).await;
        let missing = watch_refusal(client, watch_about(NEVER_EXISTED)).await;
        assert_eq!(foreign.code(), Code::NotFound, "{foreign:?}");
        assert_eq!(observe(&foreign, &x), observe(&missing, NEVER_EXISTED));
    }

    // A cursor only A's feed reached: the same as one nobody reached.
    let list_after = |after: i64| pb::ListEventsRequest {
        after_sequence: after,
        ..Default::default()
    };
    let foreign = agent_b.list_events(list_after(head_a)).await.unwrap_err();
    let never = agent_b
        .list_events(list_after(head_a + 1000))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::OutOfRange, "{foreign:?}");
    assert_eq!(
        observe_number(&foreign, head_a),
        observe_number(&never, head_a + 1000)
    );
    let watch_after = |after: i64| pb::WatchEventsRequest {
        after_sequence: after,
        ..Default::default()
    };
    let foreign = watch_refusal(&mut agent_b, watch_after(head_a)).await;
    let never = watch_refusal(&mut agent_b, watch_after(head_a + 1000)).await;
    assert_eq!(
        observe_number(&foreign, head_a),
        observe_number(&never, head_a + 1000)
    );

    // A's page tokens in B: refused exactly like a token never issued.
    let forged = "eyJ1IjoxLCJpIjoiYyIsImYiOiJ4In0";
    let list_with = |token: &str| pb::ListConversationsRequest {
        page_size: 1,
        page_token: token.into(),
        ..Default::default()
    };
    let foreign = agent_b
        .list_conversations(list_with(&conversations_token_a))
        .await
        .unwrap_err();
    let never = agent_b
        .list_conversations(list_with(forged))
        .await
        .unwrap_err();
    assert_eq!(reason(&foreign), "INVALID_PAGE_TOKEN", "{foreign:?}");
    assert_eq!(observe(&foreign, "-"), observe(&never, "-"));
    let thread_with = |token: &str| pb::ListMessagesRequest {
        page_size: 1,
        page_token: token.into(),
        ..list_messages_request(&y, "")
    };
    let foreign = agent_b
        .list_messages(thread_with(&messages_token_a))
        .await
        .unwrap_err();
    let never = agent_b
        .list_messages(thread_with(forged))
        .await
        .unwrap_err();
    assert_eq!(reason(&foreign), "INVALID_PAGE_TOKEN", "{foreign:?}");
    assert_eq!(observe(&foreign, "-"), observe(&never, "-"));

    // A's flow, from B's admin and agent.
    let get_flow = |id: &str| pb::GetFlowRequest {
        flow_id: id.into(),
        version: 0,
    };
    let update_flow = |id: &str| pb::UpdateFlowRequest {
        flow_id: id.into(),
        name: "Hijacked".into(),
        steps: vec![pb::FlowStep {
            step: Some(pb::flow_step::Step::Handoff(pb::HandoffStep {
                text: "Gotcha".into(),
            })),
        }],
    };
    let set_default = |id: &str| pb::SetDefaultFlowRequest { flow_id: id.into() };
    let start_with = |id: &str| pb::StartConversationRequest {
        visitor_id: "v-b2".into(),
        flow_id: id.into(),
        ..Default::default()
    };
    let mut answers = Vec::new();
    for id in [flow_a.as_str(), NO_SUCH_FLOW] {
        answers.push([
            admin_b.get_flow(get_flow(id)).await.map(drop).unwrap_err(),
            admin_b
                .update_flow(update_flow(id))
                .await
                .map(drop)
                .unwrap_err(),
            admin_b
                .set_default_flow(set_default(id))
                .await
                .map(drop)
                .unwrap_err(),
            agent_b
                .start_conversation(start_with(id))
                .await
                .map(drop)
                .unwrap_err(),
        ]);
    }
    for (foreign, missing) in answers[0].iter().zip(&answers[1]) {
        assert_eq!(foreign.code(), Code::NotFound, "{foreign:?}");
        assert_eq!(reason(foreign), "FLOW_NOT_FOUND");
        assert_eq!(observe(foreign, &flow_a), observe(missing, NO_SUCH_FLOW));
    }

    // Nothing of B's probing wrote anything anywhere.
    assert_eq!(app.workspace_head("default").await, head_a);
    assert_eq!(app.workspace_head("other").await, head_b);
    app.stop().await;
}
