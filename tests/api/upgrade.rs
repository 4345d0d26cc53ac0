//! Upgrading a database written before per-workspace sequences: events are
//! renumbered 1, 2, 3... per workspace in their old order, remembered
//! responses replay the renumbered `event_sequence`, and the Inbox counters
//! start from the rows.

use std::{borrow::Cow, sync::Arc};

use conversations::{
    app::{UlidIds, mutations::Outcome, now},
    domain::{
        Command, Conversation,
        conversation::WorkspaceId,
        credentials::{IssuedKey, Role},
        lifecycle::{self, AgentAction},
        message::stored_agent,
        timers::WorkspaceSettings,
        values::VisitorId,
    },
    pb,
};
use sha2::{Digest, Sha256};
use sqlx::{ConnectOptions, SqliteConnection, sqlite::SqliteConnectOptions};

use crate::helpers::{Client, TestApp, list_all};

fn key(seed: u8) -> IssuedKey {
    IssuedKey::from_random([seed; 40])
}

/// Writes `change` as the schema before migration 0003 stored it, with
/// global sequences from `next_sequence`; returns the last one.
async fn write_old(
    conn: &mut SqliteConnection,
    change: &lifecycle::Change,
    next_sequence: &mut i64,
) -> i64 {
    let c = &change.conversation;
    sqlx::query(
        "INSERT INTO conversations (conversation_id, workspace_id, visitor_id, status, \
         assignee_agent_id, assignee_display_name, assignee_channel, create_time, update_time, \
         status_change_time, close_time, version, message_count, everyone_message_count, flow_run) \
         VALUES (?, ?, ?, ?, NULL, NULL, NULL, ?, ?, ?, ?, ?, ?, ?, NULL) \
         ON CONFLICT (conversation_id) DO UPDATE SET status = excluded.status, \
         version = excluded.version, close_time = excluded.close_time, \
         message_count = excluded.message_count, everyone_message_count = excluded.everyone_message_count",
    )
    .bind(c.id.as_str())
    .bind(c.workspace_id.0)
    .bind(c.visitor_id.as_str())
    .bind(c.status.as_str())
    .bind(c.create_time.0)
    .bind(c.update_time.0)
    .bind(c.status_change_time.0)
    .bind(c.close_time.map(|t| t.0))
    .bind(c.version)
    .bind(c.message_count)
    .bind(c.everyone_message_count)
    .execute(&mut *conn)
    .await
    .expect("old conversation row");
    for event in &change.events {
        sqlx::query(
            "INSERT INTO events (sequence, event_id, workspace_id, conversation_id, kind, audience, create_time, payload) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(*next_sequence)
        .bind(&event.event_id)
        .bind(c.workspace_id.0)
        .bind(c.id.as_str())
        .bind(event.payload.kind())
        .bind(event.payload.audience().as_str())
        .bind(event.create_time.0)
        .bind(serde_json::to_string(&event.payload).expect("payload"))
        .execute(&mut *conn)
        .await
        .expect("old event row");
        *next_sequence += 1;
    }
    *next_sequence - 1
}

fn decide(
    command: &Command,
    workspace: WorkspaceId,
    current: Option<&Conversation>,
) -> lifecycle::Change {
    let context = lifecycle::Context {
        workspace_id: workspace,
        settings: &WorkspaceSettings::default(),
        now: now(),
    };
    lifecycle::decide(command, context, current, None, &mut UlidIds).expect("allowed")
}

#[tokio::test]
async fn an_old_database_is_renumbered_per_workspace_in_order_and_replays_renumbered_responses() {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let db_path = dir.path().join("old.db");
    let mut conn = SqliteConnectOptions::new()
        .filename(&db_path)
        .create_if_missing(true)
        .connect()
        .await
        .expect("create the old database");
    // The schema as it was: the migrations before 0003 only.
    let mut old = sqlx::migrate!("./migrations/sqlite");
    old.migrations = Cow::Owned(old.migrations.iter().take(2).cloned().collect());
    old.run(&mut conn).await.expect("old schema");

    let (default_agent, default_visitor, acme_agent) = (key(1), key(2), key(3));
    let (default, acme) = (WorkspaceId(1), WorkspaceId(2));
    for (ws, name) in [(default, "default"), (acme, "acme")] {
        sqlx::query("INSERT INTO workspaces (workspace_id, name, create_time) VALUES (?, ?, ?)")
            .bind(ws.0)
            .bind(name)
            .bind(now().0)
            .execute(&mut conn)
            .await
            .expect("old workspace row");
    }
    for (k, ws, role) in [
        (&default_agent, default, Role::Agent),
        (&default_visitor, default, Role::Visitor),
        (&acme_agent, acme, Role::Agent),
    ] {
        sqlx::query(
            "INSERT INTO api_keys (key_id, workspace_id, role, secret_hash, create_time) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&k.key_id)
        .bind(ws.0)
        .bind(role.as_str())
        .bind(&k.secret_hash)
        .bind(now().0)
        .execute(&mut conn)
        .await
        .expect("old key row");
    }

    // Interleaved traffic of both workspaces under one global sequence.
    let agent = stored_agent("dana".into(), "Dana".into(), "slack");
    let mut next = 1;
    let start = |visitor: &str| Command::Start {
        visitor_id: VisitorId::parse(visitor).expect("visitor"),
        agent: None,
        flow_id: None,
    };
    let a1 = decide(&start("a-1"), default, None);
    write_old(&mut conn, &a1, &mut next).await; // 1
    let b1 = decide(&start("b-1"), acme, None);
    write_old(&mut conn, &b1, &mut next).await; // 2
    let close = Command::ChangeStatus {
        conversation_id: a1.conversation.id.clone(),
        action: AgentAction::Close,
        agent: agent.clone(),
        etag: None,
        snooze_end_time: None,
    };
    let a1_closed = decide(&close, default, Some(&a1.conversation));
    let closed_at = write_old(&mut conn, &a1_closed, &mut next).await; // 3, 4
    let b2 = decide(&start("b-2"), acme, None);
    let b2_at = write_old(&mut conn, &b2, &mut next).await; // 5
    // The close and b-2 were retried-able: their first responses are stored.
    for (ws, request_id, change, sequence, command, method) in [
        (
            default,
            "close-1",
            &a1_closed,
            closed_at,
            &close,
            "CloseConversation",
        ),
        (
            acme,
            "start-b2",
            &b2,
            b2_at,
            &start("b-2"),
            "StartConversation",
        ),
    ] {
        // The fingerprint the server keeps: the RPC and the command it ran.
        let fingerprint = Sha256::new()
            .chain_update(method.as_bytes())
            .chain_update(serde_json::to_vec(command).expect("command"))
            .finalize()
            .to_vec();
        let outcome = Outcome {
            conversation: change.conversation.clone(),
            message: None,
            event_sequence: sequence,
        };
        sqlx::query(
            "INSERT INTO idempotency_records (workspace_id, request_id, method, fingerprint, response, create_time) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(ws.0)
        .bind(request_id)
        .bind(method)
        .bind(fingerprint)
        .bind(serde_json::to_string(&outcome).expect("outcome"))
        .bind(now().0)
        .execute(&mut conn)
        .await
        .expect("record");
    }
    drop(conn);

    let app = TestApp::spawn_on(
        dir,
        db_path.into(),
        default_agent.token,
        default_visitor.token,
    )
    .await;
    let mut default_client = app.agent().await;
    let mut acme_client = app.client_with(Some(&acme_agent.token)).await;

    let feed = |events: Vec<pb::Event>| -> Vec<(i64, String)> {
        events
            .into_iter()
            .map(|e| (e.sequence, e.event_id))
            .collect()
    };
    let listed = |client: &mut Client| {
        let mut client = client.clone();
        async move {
            client
                .list_events(pb::ListEventsRequest::default())
                .await
                .expect("list events")
                .into_inner()
                .events
        }
    };
    let ids = |changes: &[&lifecycle::Change]| -> Vec<String> {
        changes
            .iter()
            .flat_map(|c| c.events.iter().map(|e| e.event_id.clone()))
            .collect()
    };
    let default_feed = feed(listed(&mut default_client).await);
    assert_eq!(
        default_feed,
        (1..).zip(ids(&[&a1, &a1_closed])).collect::<Vec<_>>(),
        "the default workspace's events, renumbered 1, 2, 3 in their old order"
    );
    let acme_feed = feed(listed(&mut acme_client).await);
    assert_eq!(acme_feed, (1..).zip(ids(&[&b1, &b2])).collect::<Vec<_>>());

    // Retries replay their first responses, renumbered.
    let retried_start = acme_client
        .start_conversation(pb::StartConversationRequest {
            visitor_id: "b-2".into(),
            request_id: "start-b2".into(),
            ..Default::default()
        })
        .await
        .expect("retried start")
        .into_inner();
    assert_eq!(
        retried_start.event_sequence, 2,
        "b-2 was acme's second event"
    );
    assert_eq!(
        retried_start
            .conversation
            .expect("conversation")
            .conversation_id,
        b2.conversation.id.as_str()
    );
    let retried_close = default_client
        .close_conversation(pb::CloseConversationRequest {
            conversation_id: a1.conversation.id.as_str().to_owned(),
            agent: Some(crate::helpers::agent_ref(
                "dana",
                "Dana",
                pb::Channel::Slack,
            )),
            request_id: "close-1".into(),
            ..Default::default()
        })
        .await
        .expect("retried close")
        .into_inner();
    assert_eq!(
        retried_close.event_sequence, 3,
        "the close's last event was default's third"
    );

    let counts = list_all(&mut default_client).await;
    let c = counts.status_counts.expect("counts");
    assert_eq!((c.open, c.pending, c.closed), (0, 0, 1));
    assert_eq!(counts.as_of_sequence, 3);
    let acme_counts = list_all(&mut acme_client).await;
    assert_eq!(acme_counts.status_counts.expect("counts").open, 2);
    assert_eq!(acme_counts.as_of_sequence, 2);

    // New traffic continues each workspace's own count.
    let next_start = acme_client
        .start_conversation(pb::StartConversationRequest {
            visitor_id: "b-3".into(),
            ..Default::default()
        })
        .await
        .expect("start")
        .into_inner();
    assert_eq!(next_start.event_sequence, 3);
    app.stop().await;
}
