//! Listing: page sizes, order, page tokens bound to their filters, filters,
//! the Inbox status counts and the feed position a page reflects.

use std::collections::HashSet;

use conversations::{
    domain::{Command, values::VisitorId},
    pb::{self, ConversationStatus, send_message_request::Sender},
};
use tokio::task::JoinSet;
use tonic::Code;

use crate::helpers::{
    Client, TestApp, agent_ref, as_visitor, assign, bad_fields, close, dana, ids, list,
    list_messages_request, mark_pending, reason, reopen, reopen_request, restart_request, start,
    text_request,
};

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

fn counts(open: i64, pending: i64, closed: i64) -> Option<pb::StatusCounts> {
    Some(pb::StatusCounts {
        open,
        pending,
        closed,
    })
}

fn statuses(statuses: &[ConversationStatus]) -> Vec<i32> {
    statuses.iter().map(|s| i32::from(*s)).collect()
}

/// Starts `n` conversations, several at a time.
async fn start_many(app: &TestApp, n: usize) -> Vec<String> {
    const WORKERS: usize = 8;
    let mut workers = JoinSet::new();
    for w in 0..WORKERS {
        let mut client = app.agent().await;
        workers.spawn(async move {
            let mut ids = Vec::new();
            for i in (w..n).step_by(WORKERS) {
                ids.push(start(&mut client, &format!("v-{i}")).await.conversation_id);
            }
            ids
        });
    }
    workers.join_all().await.concat()
}

async fn send_text(client: &mut Client, id: &str, text: &str) -> pb::SendMessageResponse {
    client
        .send_message(text_request(id, Sender::Agent(dana()), text, ""))
        .await
        .expect("send")
        .into_inner()
}

fn update_time(c: &pb::Conversation) -> (i64, i32) {
    let t = c.update_time.expect("update_time");
    (t.seconds, t.nanos)
}

/// Newest update first (ties broken by id), and no conversation twice.
fn assert_newest_first(conversations: &[pb::Conversation]) {
    for pair in conversations.windows(2) {
        assert!(
            update_time(&pair[0]) >= update_time(&pair[1]),
            "not newest update first: {:?} before {:?}",
            pair[0],
            pair[1]
        );
    }
    let unique: HashSet<&String> = conversations.iter().map(|c| &c.conversation_id).collect();
    assert_eq!(
        unique.len(),
        conversations.len(),
        "a conversation is listed twice"
    );
}

/// Starts `n` conversations at once through the server's own use cases: the
/// writer commits them in a few batches (the page cap needs more than 500,
/// which one call at a time would make slow).
async fn seed(app: &TestApp, n: usize) -> Vec<String> {
    let core = app.core().clone();
    let caller = core
        .authenticate(Some(&format!("Bearer {}", app.agent_key)))
        .await
        .expect("the agent key authenticates");
    let mut starts = JoinSet::new();
    for i in 0..n {
        let (core, caller) = (core.clone(), caller.clone());
        starts.spawn(async move {
            let command = Command::Start {
                visitor_id: VisitorId::parse(&format!("seed-{i}")).expect("visitor id"),
                agent: None,
                flow_id: None,
            };
            let outcome = core.execute(&caller, None, command).await.expect("start");
            outcome.conversation.id.as_str().to_owned()
        });
    }
    let mut ids = Vec::with_capacity(n);
    while let Some(id) = starts.join_next().await {
        ids.push(id.expect("start task"));
    }
    ids
}

#[tokio::test]
async fn list_conversations_serves_50_by_default_and_at_most_500() {
    let app = TestApp::spawn().await;
    let started = seed(&app, 501).await;
    let mut agent = app.agent().await;

    let default = list(&mut agent, pb::ListConversationsRequest::default()).await;
    assert_eq!(default.conversations.len(), 50);
    assert!(!default.next_page_token.is_empty());

    let huge = list(
        &mut agent,
        pb::ListConversationsRequest {
            page_size: 1000,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(huge.conversations.len(), 500);
    assert!(!huge.next_page_token.is_empty());
    assert_newest_first(&huge.conversations);

    let rest = list(
        &mut agent,
        pb::ListConversationsRequest {
            page_size: 1000,
            page_token: huge.next_page_token.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rest.conversations.len(), 1);
    assert!(rest.next_page_token.is_empty());
    let all = [ids(&huge.conversations), ids(&rest.conversations)].concat();
    assert_eq!(sorted(all), sorted(started));
    assert_eq!(huge.status_counts, counts(501, 0, 0));
    app.stop().await;
}

#[tokio::test]
async fn a_negative_page_size_is_refused() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, "v-1").await.conversation_id;

    let refused = agent
        .list_conversations(pb::ListConversationsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&refused), ["page_size"]);

    let refused = agent
        .list_messages(pb::ListMessagesRequest {
            conversation_id: id,
            page_size: i32::MIN,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&refused), ["page_size"]);
    app.stop().await;
}

#[tokio::test]
async fn conversations_are_listed_newest_update_first() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let a = start(&mut agent, "v-a").await.conversation_id;
    let b = start(&mut agent, "v-b").await.conversation_id;
    let c = start(&mut agent, "v-c").await.conversation_id;
    assert_eq!(
        ids(&list(&mut agent, Default::default()).await.conversations),
        [c.clone(), b.clone(), a.clone()]
    );

    // A message and a status change are updates: they move to the front.
    send_text(&mut agent, &a, "news").await;
    assert_eq!(
        ids(&list(&mut agent, Default::default()).await.conversations),
        [a.clone(), c.clone(), b.clone()]
    );
    close(&mut agent, &b, dana()).await;
    let page = list(&mut agent, Default::default()).await;
    assert_eq!(ids(&page.conversations), [b, a, c]);
    assert_newest_first(&page.conversations);
    app.stop().await;
}

#[tokio::test]
async fn paging_while_conversations_start_neither_skips_nor_repeats_one() {
    let app = TestApp::spawn().await;
    let existing: HashSet<String> = start_many(&app, 40).await.into_iter().collect();
    let mut agent = app.agent().await;

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = list(
            &mut agent,
            pb::ListConversationsRequest {
                page_size: 7,
                page_token: token,
                ..Default::default()
            },
        )
        .await;
        assert!(page.conversations.len() <= 7);
        assert_newest_first(&page.conversations);
        seen.extend(ids(&page.conversations));
        pages += 1;
        // New conversations between pages.
        for i in 0..2 {
            start(&mut agent, &format!("late-{pages}-{i}")).await;
        }
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        assert!(pages < 100, "paging does not end");
    }

    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a conversation was repeated");
    assert!(
        existing.is_subset(&unique),
        "skipped: {:?}",
        existing.difference(&unique).collect::<Vec<_>>()
    );
    assert_eq!(pages, 6, "40 conversations in pages of 7");
    app.stop().await;
}

#[tokio::test]
async fn filters_select_by_status_assignee_and_visitor_while_counts_stay_whole() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let lee = || agent_ref("agent-lee", "Lee", pb::Channel::Inbox);
    let by_dana = agent
        .start_conversation(pb::StartConversationRequest {
            visitor_id: "v-1".into(),
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
    let pending_by_lee = start(&mut agent, "v-2").await.conversation_id;
    assign(&mut agent, &pending_by_lee, dana(), Some(lee())).await;
    mark_pending(&mut agent, &pending_by_lee, lee()).await;
    let closed_by_dana = start(&mut agent, "v-1").await.conversation_id;
    assign(&mut agent, &closed_by_dana, dana(), Some(dana())).await;
    close(&mut agent, &closed_by_dana, lee()).await;
    let unassigned = start(&mut agent, "v-3").await.conversation_id;
    // Acting on a conversation does not make it yours.
    mark_pending(&mut agent, &unassigned, lee()).await;
    reopen(&mut agent, &unassigned, lee()).await;

    let cases: Vec<(pb::ListConversationsRequest, Vec<&String>)> = vec![
        (
            Default::default(),
            vec![&by_dana, &pending_by_lee, &closed_by_dana, &unassigned],
        ),
        (
            pb::ListConversationsRequest {
                statuses: statuses(&[ConversationStatus::Open]),
                ..Default::default()
            },
            vec![&by_dana, &unassigned],
        ),
        (
            pb::ListConversationsRequest {
                statuses: statuses(&[ConversationStatus::Pending, ConversationStatus::Closed]),
                ..Default::default()
            },
            vec![&pending_by_lee, &closed_by_dana],
        ),
        (
            pb::ListConversationsRequest {
                assignee_agent_id: "agent-dana".into(),
                ..Default::default()
            },
            vec![&by_dana, &closed_by_dana],
        ),
        (
            pb::ListConversationsRequest {
                assignee_agent_id: "agent-lee".into(),
                ..Default::default()
            },
            vec![&pending_by_lee],
        ),
        (
            pb::ListConversationsRequest {
                unassigned: true,
                ..Default::default()
            },
            vec![&unassigned],
        ),
        (
            pb::ListConversationsRequest {
                unassigned: true,
                visitor_id: "v-1".into(),
                ..Default::default()
            },
            vec![],
        ),
        (
            pb::ListConversationsRequest {
                visitor_id: "v-1".into(),
                ..Default::default()
            },
            vec![&by_dana, &closed_by_dana],
        ),
        (
            pb::ListConversationsRequest {
                visitor_id: "v-1".into(),
                statuses: statuses(&[ConversationStatus::Closed]),
                ..Default::default()
            },
            vec![&closed_by_dana],
        ),
        (
            pb::ListConversationsRequest {
                visitor_id: "v-3".into(),
                assignee_agent_id: "agent-dana".into(),
                ..Default::default()
            },
            vec![],
        ),
        (
            pb::ListConversationsRequest {
                visitor_id: "nobody".into(),
                ..Default::default()
            },
            vec![],
        ),
    ];
    for (request, expected) in cases {
        let described = format!("{request:?}");
        let page = list(&mut agent, request).await;
        assert_eq!(
            sorted(ids(&page.conversations)),
            sorted(expected.into_iter().cloned().collect()),
            "{described}"
        );
        assert_eq!(page.status_counts, counts(2, 1, 1), "{described}");
    }

    // "My Open / Pending / Closed": the counts of one assignee's (or the
    // unassigned) conversations, whatever the statuses asked for.
    let mine = |assignee: &str, unassigned: bool| pb::ListConversationsRequest {
        assignee_agent_id: assignee.into(),
        unassigned,
        statuses: statuses(&[ConversationStatus::Open]),
        ..Default::default()
    };
    for (request, expected) in [
        (mine("agent-dana", false), counts(1, 0, 1)),
        (mine("agent-lee", false), counts(0, 1, 0)),
        (mine("", true), counts(1, 0, 0)),
        (mine("agent-nobody", false), counts(0, 0, 0)),
        (mine("", false), None),
    ] {
        let described = format!("{request:?}");
        let page = list(&mut agent, request).await;
        assert_eq!(page.filtered_status_counts, expected, "{described}");
        assert_eq!(page.status_counts, counts(2, 1, 1), "{described}");
    }
    app.stop().await;
}

#[tokio::test]
async fn status_counts_match_the_conversations_after_every_transition() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let a = start(&mut agent, "v-a").await.conversation_id;
    let b = start(&mut agent, "v-b").await.conversation_id;
    let c = start(&mut agent, "v-c").await.conversation_id;

    async fn check(agent: &mut Client, expected: Option<pb::StatusCounts>) {
        let page = list(
            agent,
            pb::ListConversationsRequest {
                page_size: 500,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(page.status_counts, expected);
        let real = |s: ConversationStatus| {
            page.conversations
                .iter()
                .filter(|c| c.status() == s)
                .count() as i64
        };
        assert_eq!(
            counts(
                real(ConversationStatus::Open),
                real(ConversationStatus::Pending),
                real(ConversationStatus::Closed)
            ),
            expected,
            "the counts match the listed conversations"
        );
    }

    check(&mut agent, counts(3, 0, 0)).await;
    mark_pending(&mut agent, &a, dana()).await;
    check(&mut agent, counts(2, 1, 0)).await;
    close(&mut agent, &b, dana()).await;
    check(&mut agent, counts(1, 1, 1)).await;
    close(&mut agent, &a, dana()).await;
    check(&mut agent, counts(1, 0, 2)).await;
    reopen(&mut agent, &a, dana()).await;
    check(&mut agent, counts(2, 0, 1)).await;
    visitor
        .restart_conversation(restart_request(&b, "v-b"))
        .await
        .expect("restart");
    check(&mut agent, counts(3, 0, 0)).await;
    mark_pending(&mut agent, &c, dana()).await;
    check(&mut agent, counts(2, 1, 0)).await;
    // A visitor reply moves a pending conversation back to open.
    visitor
        .send_message(text_request(&c, as_visitor("v-c"), "hello?", ""))
        .await
        .expect("visitor reply");
    check(&mut agent, counts(3, 0, 0)).await;
    // A refused change changes no count.
    let refused = agent
        .reopen_conversation(reopen_request(&c, dana()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    check(&mut agent, counts(3, 0, 0)).await;
    app.stop().await;
}

#[tokio::test]
async fn as_of_sequence_covers_the_last_mutation() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let started = agent
        .start_conversation(pb::StartConversationRequest {
            visitor_id: "v-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let id = started.conversation.unwrap().conversation_id;
    let mut last = started.event_sequence;
    assert!(list(&mut agent, Default::default()).await.as_of_sequence >= last);

    let sequences = [
        send_text(&mut agent, &id, "hi").await.event_sequence,
        mark_pending(&mut agent, &id, dana()).await.event_sequence,
        close(&mut agent, &id, dana()).await.event_sequence,
        reopen(&mut agent, &id, dana()).await.event_sequence,
    ];
    for sequence in sequences {
        assert!(sequence > last, "event sequences increase");
        last = sequence;
    }
    let page = list(&mut agent, Default::default()).await;
    assert!(page.as_of_sequence >= last);
    assert_eq!(page.as_of_sequence, app.max_event_sequence().await);
    app.stop().await;
}

#[tokio::test]
async fn a_page_token_only_continues_the_filters_it_was_issued_for() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    for i in 0..3 {
        start(&mut agent, &format!("v-{i}")).await;
    }
    let open = statuses(&[ConversationStatus::Open]);
    let first = list(
        &mut agent,
        pb::ListConversationsRequest {
            statuses: open.clone(),
            page_size: 1,
            ..Default::default()
        },
    )
    .await;
    let token = first.next_page_token.clone();
    assert!(!token.is_empty());

    let other_filters = [
        pb::ListConversationsRequest {
            statuses: statuses(&[ConversationStatus::Closed]),
            ..Default::default()
        },
        pb::ListConversationsRequest::default(),
        pb::ListConversationsRequest {
            statuses: open.clone(),
            visitor_id: "v-1".into(),
            ..Default::default()
        },
        pb::ListConversationsRequest {
            statuses: open.clone(),
            assignee_agent_id: "agent-dana".into(),
            ..Default::default()
        },
    ];
    for request in other_filters {
        let request = pb::ListConversationsRequest {
            page_token: token.clone(),
            page_size: 1,
            ..request
        };
        let described = format!("{request:?}");
        let refused = agent.list_conversations(request).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{described}");
        assert_eq!(reason(&refused), "INVALID_PAGE_TOKEN", "{described}");
    }

    let second = list(
        &mut agent,
        pb::ListConversationsRequest {
            statuses: open,
            page_size: 1,
            page_token: token,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(second.conversations.len(), 1);
    assert_ne!(
        second.conversations[0].conversation_id,
        first.conversations[0].conversation_id
    );
    app.stop().await;
}

#[tokio::test]
async fn a_garbage_page_token_is_refused() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, "v-1").await.conversation_id;
    for garbage in ["garbage", "!!!", "eyJ1IjoxfQ", "e30"] {
        let refused = agent
            .list_conversations(pb::ListConversationsRequest {
                page_token: garbage.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{garbage}");
        assert_eq!(reason(&refused), "INVALID_PAGE_TOKEN", "{garbage}");

        let refused = agent
            .list_messages(pb::ListMessagesRequest {
                conversation_id: id.clone(),
                page_token: garbage.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{garbage}");
        assert_eq!(reason(&refused), "INVALID_PAGE_TOKEN", "{garbage}");
    }
    app.stop().await;
}

#[tokio::test]
async fn list_messages_pages_through_the_thread_oldest_first() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, "v-1").await.conversation_id;
    for i in 1..=10 {
        send_text(&mut agent, &id, &format!("message {i}")).await;
    }

    let mut positions = Vec::new();
    let mut texts = Vec::new();
    let mut sizes = Vec::new();
    let mut token = String::new();
    loop {
        let page = agent
            .list_messages(pb::ListMessagesRequest {
                conversation_id: id.clone(),
                page_size: 3,
                page_token: token,
                visitor_id: String::new(),
            })
            .await
            .expect("list messages")
            .into_inner();
        sizes.push(page.messages.len());
        for m in page.messages {
            positions.push(m.position);
            if let Some(pb::message::Content::Text(t)) = m.content {
                texts.push(t);
            }
        }
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        assert!(sizes.len() < 10, "paging does not end");
    }
    assert_eq!(sizes, [3, 3, 3, 1]);
    assert_eq!(positions, (1..=10).collect::<Vec<i64>>());
    let expected: Vec<String> = (1..=10).map(|i| format!("message {i}")).collect();
    assert_eq!(texts, expected);

    // A page that holds exactly the rest is the last one.
    let whole = agent
        .list_messages(pb::ListMessagesRequest {
            conversation_id: id,
            page_size: 10,
            ..Default::default()
        })
        .await
        .expect("list messages")
        .into_inner();
    assert_eq!(whole.messages.len(), 10);
    assert!(whole.next_page_token.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn list_messages_serves_50_by_default() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, "v-1").await.conversation_id;
    for i in 1..=51 {
        send_text(&mut agent, &id, &format!("message {i}")).await;
    }
    let page = agent
        .list_messages(list_messages_request(&id, ""))
        .await
        .expect("list messages")
        .into_inner();
    assert_eq!(page.messages.len(), 50);
    assert_eq!(page.messages.last().unwrap().position, 50);
    assert!(!page.next_page_token.is_empty());
    let rest = agent
        .list_messages(pb::ListMessagesRequest {
            conversation_id: id,
            page_token: page.next_page_token,
            ..Default::default()
        })
        .await
        .expect("list messages")
        .into_inner();
    assert_eq!(
        rest.messages.iter().map(|m| m.position).collect::<Vec<_>>(),
        [51]
    );
    assert!(rest.next_page_token.is_empty());
    app.stop().await;
}
