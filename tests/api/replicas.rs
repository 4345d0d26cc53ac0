//! Several servers on one PostgreSQL database: any replica serves any
//! request, decisions are the database's, feeds and cursors cross replicas,
//! and a revocation reaches every replica. On a SQLite file there is one
//! server (see `scale::a_second_server_on_the_same_database_file_…`), so
//! these run in the PostgreSQL pass of the suite.

use std::time::{Duration, Instant};

use conversations::{
    app::admin,
    config::Settings,
    domain::credentials::Role,
    pb::{self, watch_events_response::Item},
    startup::Application,
};
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::helpers::{
    TestApp, all_sequences, as_visitor, close_request, dana, fresh_database, reason, start,
    text_request,
};

/// A server and a replica of it, or None (and a note) on SQLite.
async fn two_replicas() -> Option<(TestApp, TestApp)> {
    let a = TestApp::spawn().await;
    match a.replica().await {
        Some(b) => Some((a, b)),
        None => {
            a.stop().await;
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_on_one_replica_gets_every_event_committed_through_either_in_order_once() {
    let Some((a, b)) = two_replicas().await else {
        return;
    };
    let mut stream = b
        .agent()
        .await
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .expect("watch on b")
        .into_inner();
    // Writers on both replicas, interleaving their batches in one workspace.
    let mut writers = JoinSet::new();
    for w in 0..8 {
        let mut client = if w % 2 == 0 {
            a.agent().await
        } else {
            b.agent().await
        };
        writers.spawn(async move {
            for i in 0..10 {
                let c = start(&mut client, &format!("v-{w}-{i}")).await;
                client
                    .send_message(text_request(
                        &c.conversation_id,
                        as_visitor(&format!("v-{w}-{i}")),
                        "hi",
                        "",
                    ))
                    .await
                    .expect("send");
            }
        });
    }
    writers.join_all().await;
    let head = a.max_event_sequence().await;
    assert_eq!(head, 8 * 10 * 2, "one start and one message each");
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while seen.last().copied().unwrap_or(0) < head {
            match stream.next().await.expect("open").expect("item").item {
                Some(Item::Event(event)) => seen.push(event.sequence),
                Some(Item::Checkpoint(_)) | None => {}
            }
        }
    })
    .await
    .expect("b's stream reaches the head");
    assert_eq!(
        seen,
        (1..=head).collect::<Vec<_>>(),
        "ordered, no gap, once"
    );
    // And both replicas list the same feed: b at once (its stream reached
    // the head), a once its follower has read b's last commits, which the
    // README bounds at a second after a missed notice.
    assert_eq!(all_sequences(&mut b.agent().await).await, seen);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let listed = all_sequences(&mut a.agent().await).await;
        if listed == seen || tokio::time::Instant::now() >= deadline {
            assert_eq!(
                listed, seen,
                "a lists what b committed within the follow bound"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_racing_with_one_etag_let_exactly_one_change_apply() {
    let Some((a, b)) = two_replicas().await else {
        return;
    };
    let conversation = start(&mut a.agent().await, "v-1").await;
    let mut racers = JoinSet::new();
    for r in 0..20 {
        let mut client = if r % 2 == 0 {
            a.agent().await
        } else {
            b.agent().await
        };
        let request = pb::CloseConversationRequest {
            etag: conversation.etag.clone(),
            ..close_request(&conversation.conversation_id, dana())
        };
        racers.spawn(async move { client.close_conversation(request).await });
    }
    let results = racers.join_all().await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "exactly one replica's change applies");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
        assert_eq!(reason(refused), "ETAG_MISMATCH");
    }
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_retry_on_another_replica_returns_the_original_response_and_applies_nothing() {
    let Some((a, b)) = two_replicas().await else {
        return;
    };
    let request = pb::StartConversationRequest {
        visitor_id: "v-1".into(),
        request_id: "start-once".into(),
        ..Default::default()
    };
    let first = a
        .agent()
        .await
        .start_conversation(request.clone())
        .await
        .expect("start on a")
        .into_inner();
    let head = a.max_event_sequence().await;
    let retried = b
        .agent()
        .await
        .start_conversation(request)
        .await
        .expect("retry on b")
        .into_inner();
    assert_eq!(retried, first, "the original response");
    assert_eq!(b.max_event_sequence().await, head, "nothing applied twice");
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_cursor_from_one_replica_resumes_on_another_at_once() {
    let Some((a, b)) = two_replicas().await else {
        return;
    };
    let mut on_a = a.agent().await;
    let mut on_b = b.agent().await;
    for round in 0..20 {
        let c = start(&mut on_a, &format!("v-{round}")).await;
        // The cursor a hands out right after its commit...
        let page = on_a
            .list_events(pb::ListEventsRequest {
                after_sequence: 0,
                page_size: 1000,
                ..Default::default()
            })
            .await
            .expect("list on a")
            .into_inner();
        assert_eq!(page.head_sequence, page.next_after_sequence);
        // ...is good on b straight away, even before b heard of the commit.
        let resumed = on_b
            .list_events(pb::ListEventsRequest {
                after_sequence: page.head_sequence,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("round {round}: a's cursor refused on b: {e:?}"))
            .into_inner();
        assert!(resumed.events.is_empty());
        assert!(resumed.head_sequence >= page.head_sequence);
        let back = on_b
            .list_events(pb::ListEventsRequest {
                after_sequence: page.head_sequence - 1,
                ..Default::default()
            })
            .await
            .expect("list on b")
            .into_inner();
        assert_eq!(back.events.len(), 1);
        assert_eq!(back.events[0].conversation_id, c.conversation_id);
    }
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_key_revoked_through_one_replica_ends_its_streams_on_another_within_a_second() {
    let Some((a, b)) = two_replicas().await else {
        return;
    };
    let (key_id, key) = a.new_key("default", Role::Agent).await;
    let mut on_b = b.client_with(Some(&key)).await;
    let mut stream = on_b
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .expect("watch on b")
        .into_inner();
    // The first checkpoint: the stream is open and authenticated on b.
    loop {
        if let Some(Item::Checkpoint(_)) = stream.next().await.expect("item").expect("ok").item {
            break;
        }
    }
    let revoked_at = Instant::now();
    admin::revoke_key(a.store(), &key_id)
        .await
        .expect("revoke through a");
    let ended = crate::helpers::end_status(&mut stream).await;
    let took = revoked_at.elapsed();
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let refused = on_b
        .get_conversation(pb::GetConversationRequest {
            conversation_id: "conv_x".into(),
            ..Default::default()
        })
        .await
        .expect_err("a revoked key");
    assert_eq!(refused.code(), Code::Unauthenticated);
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_starting_together_on_an_empty_database_migrate_and_bootstrap_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = fresh_database(dir.path()).await;
    if !matches!(database, conversations::store::Location::Postgres(_)) {
        return;
    }
    let settings = Settings::new(
        "127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .expect("address"),
        database,
    );
    let mut starting = JoinSet::new();
    for _ in 0..3 {
        let settings = settings.clone();
        starting.spawn(async move {
            let application = Application::build(&settings).await.expect("builds");
            let keys = admin::bootstrap(application.app().store())
                .await
                .expect("bootstrap");
            (application, keys)
        });
    }
    let started = starting.join_all().await;
    let bootstrapped = started.iter().filter(|(_, keys)| keys.is_some()).count();
    assert_eq!(bootstrapped, 1, "one of them creates `default`");
    // The keys it printed work on every replica.
    let keys = started
        .iter()
        .find_map(|(_, keys)| keys.clone())
        .expect("keys");
    for (application, _) in &started {
        let caller = application
            .app()
            .authenticate(Some(&format!("Bearer {}", keys.agent.token)))
            .await
            .expect("the agent key authenticates on every replica");
        assert_eq!(caller.role, Role::Agent);
    }
}

#[tokio::test]
async fn every_table_of_workspace_data_is_keyed_and_indexed_by_workspace_first() {
    let app = TestApp::spawn().await;
    let conversations::store::Location::Postgres(url) = &app.database else {
        app.stop().await;
        return;
    };
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    // The first column of every index (primary keys included) of every
    // table that holds a workspace's data, so that each can be distributed
    // by workspace_id.
    let firsts: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT t.relname::text, i.relname::text, a.attname::text \
         FROM pg_index x \
         JOIN pg_class t ON t.oid = x.indrelid \
         JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0] \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = 'public' AND t.relname = ANY($1) ORDER BY 1, 2",
    )
    .bind(vec![
        "conversations",
        "messages",
        "events",
        "idempotency_records",
        "flows",
        "workspace_counters",
    ])
    .fetch_all(&pool)
    .await
    .expect("indexes");
    let tables: std::collections::HashSet<&str> = firsts.iter().map(|(t, ..)| t.as_str()).collect();
    assert_eq!(tables.len(), 6, "{firsts:?}");
    for (table, index, first) in &firsts {
        // The revocation poll's index is on api_keys, not listed here; the
        // time index of request ids serves the purge of old ones, and the
        // due-time index the timers' poll: both span every workspace by
        // design (on a distributed table each shard keeps its own).
        if index == "idempotency_records_by_time" || index == "conversations_by_due_time" {
            continue;
        }
        assert_eq!(
            first, "workspace_id",
            "{table}: index {index} starts with {first}"
        );
    }
    pool.close().await;
    app.stop().await;
}

#[tokio::test]
async fn a_server_reaches_postgresql_over_tls_when_the_url_asks_for_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let conversations::store::Location::Postgres(url) = fresh_database(dir.path()).await else {
        return;
    };
    let mut tls = url::Url::parse(&url).expect("url");
    tls.query_pairs_mut().append_pair("sslmode", "require");
    let location = conversations::store::Location::Postgres(tls.to_string());
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&pool)
        .await
        .expect("ssl setting");
    pool.close().await;
    let opened = conversations::store::Store::open(&location).await;
    if ssl == "on" {
        let store = opened.expect("a TLS connection to PostgreSQL");
        assert!(admin::bootstrap(&store).await.expect("bootstrap").is_some());
        assert!(
            store
                .find_workspace("default")
                .await
                .expect("read")
                .is_some(),
            "the workspace written over TLS is there"
        );
        // And such a URL gets TLS: the server says so about the session.
        let pool = sqlx::PgPool::connect(tls.as_ref()).await.expect("tls");
        let encrypted: bool =
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(&pool)
                .await
                .expect("pg_stat_ssl");
        assert!(encrypted);
        pool.close().await;
        store.close().await;
    } else {
        // A server without TLS: the start fails, and says why.
        let error = opened.expect_err("sslmode=require on a server without TLS");
        assert!(error.to_string().contains("cannot connect"), "{error}");
    }
}
