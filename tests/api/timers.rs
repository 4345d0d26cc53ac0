//! Snooze and auto-close, fired by durable timers (issue 10): each fires once,
//! through the same write path as every call, after a restart too, never
//! into a closed conversation, and a reply or an agent's action that races
//! it leaves exactly one change. Seconds-long timers, so each test waits a
//! few seconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use conversations::pb::{
    self, Audience, AuthorKind, ConversationStatus, TransactionalKind, event::Payload,
    message::Content,
};
use tokio::task::JoinSet;
use tonic::Code;

use crate::helpers::{
    Client, TestApp, as_visitor, close, close_request, dana, get, mark_pending_request, reason,
    restart_request, set_auto_close, start, text_request, thread,
};

const VISITOR: &str = "v-1";
/// The longest a test waits for a timer that is due.
const PATIENCE: Duration = Duration::from_secs(15);

fn in_seconds(seconds: f64) -> prost_types::Timestamp {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    let micros = now.as_micros() as i64 + (seconds * 1e6) as i64;
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

async fn snooze(agent: &mut Client, id: &str, seconds: f64) -> pb::Conversation {
    agent
        .mark_conversation_pending(pb::MarkConversationPendingRequest {
            snooze_end_time: Some(in_seconds(seconds)),
            ..mark_pending_request(id, dana())
        })
        .await
        .expect("snooze")
        .into_inner()
        .conversation
        .expect("conversation")
}

/// Waits until conversation `id` is in `status`.
async fn until_status(
    agent: &mut Client,
    id: &str,
    status: ConversationStatus,
) -> pb::Conversation {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let conversation = get(agent, id, "").await;
        if conversation.status() == status {
            return conversation;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never became {status:?}: {conversation:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn kind_of(message: &pb::Message) -> Option<TransactionalKind> {
    match &message.content {
        Some(Content::Transactional(t)) => Some(t.kind()),
        _ => None,
    }
}

fn count_kind(messages: &[pb::Message], kind: TransactionalKind) -> usize {
    messages.iter().filter(|m| kind_of(m) == Some(kind)).count()
}

/// The (from, to, actor kind) of every status change of `id`, in order.
async fn status_changes(
    agent: &mut Client,
    id: &str,
) -> Vec<(ConversationStatus, ConversationStatus, AuthorKind)> {
    agent
        .list_events(pb::ListEventsRequest {
            conversation_id: id.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list events")
        .into_inner()
        .events
        .into_iter()
        .filter_map(|e| match e.payload {
            Some(Payload::StatusChanged(s)) => Some((
                s.from_status(),
                s.to_status(),
                s.actor
                    .as_ref()
                    .map_or(AuthorKind::Unspecified, pb::Author::kind),
            )),
            _ => None,
        })
        .collect()
}

use ConversationStatus::{Closed, Open, Pending};

#[tokio::test]
async fn a_snooze_returns_the_conversation_to_open_at_its_end_with_a_system_message() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let id = start(&mut visitor, VISITOR).await.conversation_id;
    let snoozed = snooze(&mut agent, &id, 1.0).await;
    assert_eq!(snoozed.status(), Pending);
    assert!(snoozed.snooze_end_time.is_some(), "agents see the snooze");
    assert_eq!(
        get(&mut visitor, &id, VISITOR).await.snooze_end_time,
        None,
        "visitors do not"
    );
    let marked = thread(&mut agent, &id, "").await.pop().expect("message");
    match &marked.content {
        Some(Content::Transactional(t)) => {
            assert!(
                t.text.starts_with("Dana snoozed the conversation until "),
                "{}",
                t.text
            )
        }
        other => panic!("{other:?}"),
    }

    let reopened = until_status(&mut agent, &id, Open).await;
    assert_eq!(reopened.snooze_end_time, None);
    let messages = thread(&mut agent, &id, "").await;
    let last = messages.last().expect("message");
    assert_eq!(kind_of(last), Some(TransactionalKind::SnoozeEnded));
    assert_eq!(last.audience(), Audience::Agents);
    assert_eq!(
        status_changes(&mut agent, &id).await,
        [
            (Open, Pending, AuthorKind::Agent),
            (Pending, Open, AuthorKind::System)
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_visitor_reply_reopens_a_snoozed_conversation_at_once_and_cancels_the_snooze() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let id = start(&mut visitor, VISITOR).await.conversation_id;
    snooze(&mut agent, &id, 1.5).await;
    let replied = visitor
        .send_message(text_request(
            &id,
            as_visitor(VISITOR),
            "Actually, one question",
            "",
        ))
        .await
        .expect("reply")
        .into_inner()
        .conversation
        .expect("conversation");
    assert_eq!(replied.status(), Open);

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let messages = thread(&mut agent, &id, "").await;
    assert_eq!(count_kind(&messages, TransactionalKind::SnoozeEnded), 0);
    assert_eq!(get(&mut agent, &id, "").await.snooze_end_time, None);
    assert_eq!(
        status_changes(&mut agent, &id).await,
        [
            (Open, Pending, AuthorKind::Agent),
            (Pending, Open, AuthorKind::Visitor)
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_snooze_that_ends_while_the_server_is_down_fires_promptly_after_it_starts() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, VISITOR).await.conversation_id;
    snooze(&mut agent, &id, 1.0).await;
    let (dir, database, agent_key, visitor_key) = app.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let app = TestApp::spawn_on(dir, database, agent_key, visitor_key).await;
    let mut agent = app.agent().await;
    let reopened = until_status(&mut agent, &id, Open).await;
    assert_eq!(reopened.snooze_end_time, None);
    assert_eq!(
        count_kind(
            &thread(&mut agent, &id, "").await,
            TransactionalKind::SnoozeEnded
        ),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn auto_close_closes_an_idle_conversation_once_telling_the_visitor_first() {
    let app = TestApp::spawn().await;
    let mut settings = app.settings_admin().await;
    let told = "We closed this chat after a second without activity. Write again to restart.";
    set_auto_close(&mut settings, Some(1), told).await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let id = start(&mut visitor, VISITOR).await.conversation_id;

    let closed = until_status(&mut agent, &id, Closed).await;
    assert!(closed.restart_available);
    // The visitor was told, then the Inbox thread says why.
    let seen = thread(&mut visitor, &id, VISITOR).await;
    let last = seen.last().expect("the visitor is told");
    assert_eq!(last.content, Some(Content::Text(told.to_owned())));
    assert_eq!(
        last.author.as_ref().map(pb::Author::kind),
        Some(AuthorKind::System)
    );
    let messages = thread(&mut agent, &id, "").await;
    match &messages.last().expect("message").content {
        Some(Content::Transactional(t)) => {
            assert_eq!(t.kind(), TransactionalKind::ConversationAutoClosed);
            assert_eq!(
                t.text,
                "The conversation was closed after 1 second without activity."
            );
        }
        other => panic!("{other:?}"),
    }

    // Once: nothing more is written into the closed conversation.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(thread(&mut agent, &id, "").await, messages);
    assert_eq!(
        status_changes(&mut agent, &id).await,
        [(Open, Closed, AuthorKind::System)]
    );

    // Closed like an agent's close: the visitor is refused and may restart.
    let refused = visitor
        .send_message(text_request(&id, as_visitor(VISITOR), "hello?", ""))
        .await
        .expect_err("closed");
    assert_eq!(reason(&refused), "CONVERSATION_CLOSED");
    let restarted = visitor
        .restart_conversation(restart_request(&id, VISITOR))
        .await
        .expect("restart")
        .into_inner()
        .conversation
        .expect("conversation");
    assert_eq!(restarted.status(), Open);
    app.stop().await;
}

#[tokio::test]
async fn auto_close_closes_pending_conversations_and_judges_a_snoozed_one_after_its_snooze() {
    let app = TestApp::spawn().await;
    let mut settings = app.settings_admin().await;
    set_auto_close(&mut settings, Some(1), "").await;
    let mut agent = app.agent().await;
    let pending = start(&mut agent, VISITOR).await.conversation_id;
    agent
        .mark_conversation_pending(mark_pending_request(&pending, dana()))
        .await
        .expect("pending");
    let snoozed = start(&mut agent, "v-2").await.conversation_id;
    snooze(&mut agent, &snoozed, 3.0).await;

    until_status(&mut agent, &pending, Closed).await;
    // Idle far longer than the auto-close time, but snoozed: still pending.
    assert_eq!(get(&mut agent, &snoozed, "").await.status(), Pending);
    until_status(&mut agent, &snoozed, Closed).await;
    assert_eq!(
        status_changes(&mut agent, &snoozed).await,
        [
            (Open, Pending, AuthorKind::Agent),
            (Pending, Open, AuthorKind::System),
            (Open, Closed, AuthorKind::System),
        ],
        "the snooze ended, then the idle time ran from there"
    );
    app.stop().await;
}

#[tokio::test]
async fn changing_auto_close_applies_to_conversations_already_open() {
    let app = TestApp::spawn().await;
    let mut settings = app.settings_admin().await;
    let mut agent = app.agent().await;
    let idle = start(&mut agent, VISITOR).await.conversation_id;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Turned on after it went idle: judged at once.
    set_auto_close(&mut settings, Some(1), "").await;
    until_status(&mut agent, &idle, Closed).await;

    // Turned off before it is due: it stays open.
    set_auto_close(&mut settings, Some(2), "").await;
    let spared = start(&mut agent, "v-2").await.conversation_id;
    set_auto_close(&mut settings, None, "").await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(get(&mut agent, &spared, "").await.status(), Open);
    let shown = settings
        .get_workspace_settings(pb::GetWorkspaceSettingsRequest {})
        .await
        .expect("get settings")
        .into_inner();
    assert_eq!(shown.settings.expect("settings").auto_close, None);
    app.stop().await;
}

#[tokio::test]
async fn an_agent_close_before_the_auto_close_leaves_one_close_and_one_after_it_is_refused() {
    let app = TestApp::spawn().await;
    let mut settings = app.settings_admin().await;
    set_auto_close(&mut settings, Some(1), "Closed for inactivity.").await;
    let mut agent = app.agent().await;

    // The agent first: the timer finds nothing due and writes nothing.
    let first = start(&mut agent, VISITOR).await.conversation_id;
    close(&mut agent, &first, dana()).await;
    let before = thread(&mut agent, &first, "").await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(thread(&mut agent, &first, "").await, before);
    assert_eq!(
        status_changes(&mut agent, &first).await,
        [(Open, Closed, AuthorKind::Agent)]
    );

    // The timer first: the agent's close is refused and changes nothing.
    let second = start(&mut agent, "v-2").await.conversation_id;
    let closed = until_status(&mut agent, &second, Closed).await;
    let refused = agent
        .close_conversation(close_request(&second, dana()))
        .await
        .expect_err("closed already");
    assert_eq!(reason(&refused), "CONVERSATION_ALREADY_CLOSED");
    assert_eq!(get(&mut agent, &second, "").await.etag, closed.etag);
    assert_eq!(
        status_changes(&mut agent, &second).await,
        [(Open, Closed, AuthorKind::System)]
    );
    app.stop().await;
}

/// `at` as a protobuf Timestamp.
fn timestamp_at(at: SystemTime) -> prost_types::Timestamp {
    let since = at.duration_since(UNIX_EPOCH).expect("clock");
    prost_types::Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}

#[tokio::test]
async fn visitor_replies_racing_the_end_of_their_snooze_reopen_each_conversation_once() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    const EACH: usize = 20;
    let mut snoozed = Vec::new();
    for i in 0..EACH {
        snoozed.push((
            i,
            start(&mut agent, &format!("s-{i}")).await.conversation_id,
        ));
    }
    // Every snooze ends at the same moment, and the visitors write around
    // it, from 0.3 s before to 0.6 s after: some before the timer fires,
    // some after. The moment is far enough ahead for the 20 snoozes to be
    // set first on a loaded machine (1.5 s was not, with CI building beside
    // the suite: the last snooze was refused as already past).
    let end = SystemTime::now() + Duration::from_secs(4);
    for (_, id) in &snoozed {
        agent
            .mark_conversation_pending(pb::MarkConversationPendingRequest {
                snooze_end_time: Some(timestamp_at(end)),
                ..mark_pending_request(id, dana())
            })
            .await
            .expect("snooze");
    }
    let mut racers = JoinSet::new();
    for (i, id) in snoozed.clone() {
        let mut visitor = app.visitor().await;
        racers.spawn(async move {
            let at = end - Duration::from_millis(300) + Duration::from_millis(45 * i as u64);
            tokio::time::sleep(at.duration_since(SystemTime::now()).unwrap_or_default()).await;
            visitor
                .send_message(text_request(
                    &id,
                    as_visitor(&format!("s-{i}")),
                    "still here",
                    "",
                ))
                .await
                .map(drop)
        });
    }
    while let Some(answer) = racers.join_next().await {
        answer.expect("racer").expect("a reply is never refused");
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (mut by_timer, mut by_visitor) = (0, 0);
    for (_, id) in &snoozed {
        let changes = status_changes(&mut agent, id).await;
        assert_eq!(
            changes.len(),
            2,
            "{id}: pending, then open once: {changes:?}"
        );
        assert_eq!((changes[1].0, changes[1].1), (Pending, Open), "{id}");
        match changes[1].2 {
            AuthorKind::System => by_timer += 1,
            AuthorKind::Visitor => by_visitor += 1,
            other => panic!("{id}: reopened by {other:?}"),
        }
        let ended = count_kind(
            &thread(&mut agent, id, "").await,
            TransactionalKind::SnoozeEnded,
        );
        assert_eq!(
            ended,
            usize::from(changes[1].2 == AuthorKind::System),
            "{id}"
        );
    }
    println!("snooze race: {by_timer} reopened by the timer, {by_visitor} by the visitor");
    app.stop().await;
}

#[tokio::test]
async fn agent_closes_racing_auto_close_close_each_conversation_once() {
    let app = TestApp::spawn().await;
    let mut settings = app.settings_admin().await;
    let mut agent = app.agent().await;
    const EACH: usize = 20;
    set_auto_close(&mut settings, Some(1), "Closed for inactivity.").await;
    let mut idle = Vec::new();
    for i in 0..EACH {
        idle.push(start(&mut agent, &format!("i-{i}")).await.conversation_id);
    }
    tokio::time::sleep(Duration::from_millis(900)).await;
    let mut racers = JoinSet::new();
    for id in idle.clone() {
        let mut agent = app.agent().await;
        racers.spawn(async move {
            let closed = agent.close_conversation(close_request(&id, dana())).await;
            closed.map(drop).map_err(|s| reason(&s))
        });
    }
    let (mut by_agent, mut refused) = (0, 0);
    while let Some(answer) = racers.join_next().await {
        match answer.expect("racer") {
            Ok(()) => by_agent += 1,
            // The timer won: the close is refused, and changes nothing.
            Err(reason) => {
                assert_eq!(reason, "CONVERSATION_ALREADY_CLOSED");
                refused += 1;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for id in &idle {
        let changes = status_changes(&mut agent, id).await;
        assert_eq!(
            changes.len(),
            1,
            "{id}: one close, by the agent or the timer: {changes:?}"
        );
        assert_eq!((changes[0].0, changes[0].1), (Open, Closed));
        // The auto-close's message to the visitor only with its close.
        let told = thread(&mut agent, id, "")
            .await
            .iter()
            .filter(|m| m.content == Some(Content::Text("Closed for inactivity.".into())))
            .count();
        assert_eq!(
            told,
            usize::from(changes[0].2 == AuthorKind::System),
            "{id}"
        );
    }
    println!("close race: {by_agent} closed by the agent, {refused} by the timer first");
    app.stop().await;
}

#[tokio::test]
async fn due_timers_fire_exactly_once_across_every_server_of_the_database() {
    let app = TestApp::spawn().await;
    // Three servers on PostgreSQL; one on a SQLite file, which one serves.
    let mut servers = vec![];
    for _ in 0..2 {
        if let Some(replica) = app.replica().await {
            servers.push(replica);
        }
    }
    let mut clients = vec![app.agent().await];
    for server in &servers {
        clients.push(server.agent().await);
    }
    const TIMERS: usize = 200;
    let mut ids = Vec::new();
    let mut made = JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        let mut client = client.clone();
        let share = (i..TIMERS).step_by(clients.len()).collect::<Vec<_>>();
        made.spawn(async move {
            let mut ids = Vec::new();
            for n in share {
                let id = start(&mut client, &format!("v-{n}")).await.conversation_id;
                snooze(&mut client, &id, 1.5).await;
                ids.push(id);
            }
            ids
        });
    }
    while let Some(share) = made.join_next().await {
        ids.extend(share.expect("starts"));
    }
    assert_eq!(ids.len(), TIMERS);

    let mut agent = app.agent().await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let open = crate::helpers::list(
            &mut agent,
            pb::ListConversationsRequest {
                page_size: 1,
                ..Default::default()
            },
        )
        .await
        .status_counts
        .expect("counts")
        .open;
        if open == TIMERS as i64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} of {TIMERS} fired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Give a second firing, were there one, the time to happen.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut fired = 0;
    for id in &ids {
        let changes = status_changes(&mut agent, id).await;
        assert_eq!(
            changes,
            [
                (Open, Pending, AuthorKind::Agent),
                (Pending, Open, AuthorKind::System)
            ],
            "{id}"
        );
        fired += count_kind(
            &thread(&mut agent, id, "").await,
            TransactionalKind::SnoozeEnded,
        );
    }
    println!(
        "timers: {fired} of {TIMERS} fired, on {} server(s)",
        clients.len()
    );
    assert_eq!(fired, TIMERS);
    for server in servers {
        server.stop().await;
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_snoozes_and_settings_are_refused_with_field_violations_and_change_nothing() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, VISITOR).await.conversation_id;
    for (when, why) in [
        (-5.0, "in the past"),
        (400.0 * 86_400.0, "over a year ahead"),
    ] {
        let refused = agent
            .mark_conversation_pending(pb::MarkConversationPendingRequest {
                snooze_end_time: Some(in_seconds(when)),
                ..mark_pending_request(&id, dana())
            })
            .await
            .expect_err(why);
        assert_eq!(refused.code(), Code::InvalidArgument, "{why}");
        assert_eq!(
            crate::helpers::bad_fields(&refused),
            ["snooze_end_time"],
            "{why}"
        );
    }
    assert_eq!(get(&mut agent, &id, "").await.status(), Open);

    let mut settings = app.settings_admin().await;
    for (seconds, nanos) in [(0, 0), (0, 500_000_000), (400 * 86_400, 0), (1, 1)] {
        let refused = settings
            .update_workspace_settings(pb::UpdateWorkspaceSettingsRequest {
                settings: Some(pb::WorkspaceSettings {
                    auto_close: Some(pb::AutoClose {
                        idle_duration: Some(prost_types::Duration { seconds, nanos }),
                        message: String::new(),
                    }),
                }),
            })
            .await
            .expect_err("a bad idle time");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert_eq!(
            crate::helpers::bad_fields(&refused),
            ["settings.auto_close.idle_duration"],
            "{seconds}s {nanos}ns"
        );
    }
    let shown = settings
        .get_workspace_settings(pb::GetWorkspaceSettingsRequest {})
        .await
        .expect("get")
        .into_inner();
    assert_eq!(shown.settings.expect("settings").auto_close, None);

    // Only admin keys manage settings.
    let mut as_agent = app.settings_with(Some(&app.agent_key)).await;
    let refused = as_agent
        .get_workspace_settings(pb::GetWorkspaceSettingsRequest {})
        .await
        .expect_err("an agent key");
    assert_eq!(refused.code(), Code::PermissionDenied);
    app.stop().await;
}

#[tokio::test]
async fn a_timer_claimed_by_a_server_that_died_fires_once_the_claim_runs_out() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, VISITOR).await.conversation_id;
    snooze(&mut agent, &id, 0.5).await;
    // Another server claims the timer for 3 s, as a poll does, and dies
    // before it fires it: its claim is all that is left of it.
    let now = conversations::ids::now();
    let claimed = app
        .store()
        .claim_due(
            conversations::domain::Micros(now.0 + 1_000_000),
            conversations::domain::Micros(now.0 + 3_000_000),
            100,
        )
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1, "{claimed:?}");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        get(&mut agent, &id, "").await.status(),
        Pending,
        "due, but claimed: no other server fires it yet"
    );
    until_status(&mut agent, &id, Open).await;
    assert_eq!(
        count_kind(
            &thread(&mut agent, &id, "").await,
            TransactionalKind::SnoozeEnded
        ),
        1
    );
    app.stop().await;
}
