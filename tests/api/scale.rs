//! What the scale work promises beyond speed: group commit isolates a bad
//! command from its batch, the Inbox counters always equal the table, keys
//! come from memory yet revocations reach open streams, and one server owns
//! a database file.

use conversations::{
    app::{Caller, admin},
    config::Settings,
    domain::{Command, credentials::Role, values::VisitorId},
    pb::{self, watch_events_response::Item},
    startup::{Application, StartupError},
    store::{Location, Store, StoreError},
};
use sqlx::{PgPool, Row, SqlitePool};
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::helpers::{
    TestApp, all_sequences, as_visitor, close_request, dana, default_settings, list_all,
    mark_pending_request, reason, reopen_request, sample, scrape, start, text_request, thread,
};

/// The server's SQLite file, opened beside it.
async fn raw_file(app: &TestApp) -> Option<SqlitePool> {
    let Location::File(path) = &app.database else {
        return None;
    };
    Some(
        SqlitePool::connect(&format!("sqlite:{}", path.display()))
            .await
            .expect("open the database file"),
    )
}

/// The server's database, opened beside it with its backend's driver.
enum Raw {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Raw {
    async fn open(app: &TestApp) -> Self {
        match &app.database {
            Location::File(_) => Self::Sqlite(raw_file(app).await.expect("a file")),
            Location::Postgres(url) => Self::Postgres(PgPool::connect(url).await.expect("connect")),
        }
    }

    async fn execute(&self, sql: &str) {
        match self {
            Self::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(drop),
            Self::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(drop),
        }
        .expect("execute");
    }

    /// (status, count) rows of the conversations table.
    async fn count_by_status(&self) -> Vec<(String, i64)> {
        let sql = "SELECT status, COUNT(*) FROM conversations GROUP BY status";
        match self {
            Self::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await,
            Self::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await,
        }
        .expect("count")
    }
}

async fn agent_caller(app: &TestApp) -> Caller {
    app.core()
        .authenticate(Some(&format!("Bearer {}", app.agent_key)))
        .await
        .expect("the agent key authenticates")
}

fn start_command(visitor: &str, flow_id: Option<&str>) -> Command {
    Command::Start {
        visitor_id: VisitorId::parse(visitor).expect("visitor id"),
        agent: None,
        flow_id: flow_id.map(str::to_owned),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_bad_command_does_not_fail_the_commands_batched_with_it() {
    let app = TestApp::spawn().await;
    // A stored flow that no longer validates: starting it is a fault of the
    // store, which fails the whole batch transaction.
    Raw::open(&app)
        .await
        .execute(
            "INSERT INTO flows (flow_id, version, workspace_id, name, definition, create_time) \
         VALUES ('flow_broken', 1, 1, 'broken', '{\"name\":\"broken\",\"steps\":[]}', 0)",
        )
        .await;
    let caller = agent_caller(&app).await;

    for round in 0..5 {
        let mut calls = JoinSet::new();
        for i in 0..40 {
            let (core, caller) = (app.core().clone(), caller.clone());
            let flow = (i == 20).then_some("flow_broken");
            calls.spawn(async move {
                let command = start_command(&format!("v-{round}-{i}"), flow);
                (flow.is_some(), core.execute(&caller, None, command).await)
            });
        }
        let results = calls.join_all().await;
        for (bad, result) in &results {
            match (bad, result) {
                (false, Ok(outcome)) => assert!(outcome.event_sequence > 0),
                (true, Err(conversations::app::AppError::Store(_))) => {}
                other => panic!("round {round}: {other:?}"),
            }
        }
    }
    let listed = list_all(&mut app.agent().await).await;
    assert_eq!(listed.status_counts.expect("counts").open, 5 * 39);
    app.stop().await;
}

/// A message whose text holds this fails its INSERT (a trigger the tests
/// install): a fault in the middle of a batch's writes, after other rows of
/// the batch are written.
const FAILING_TEXT: &str = "boom-injected-fault";

impl Raw {
    async fn fail_inserts_of(&self, text: &str) {
        match self {
            Self::Sqlite(_) => {
                self.execute(&format!(
                    "CREATE TRIGGER injected_fault BEFORE INSERT ON messages \
                     WHEN instr(NEW.content, '{text}') > 0 \
                     BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
                ))
                .await
            }
            Self::Postgres(_) => {
                self.execute(&format!(
                    "CREATE FUNCTION injected_fault() RETURNS trigger AS $$ BEGIN \
                     IF position('{text}' in NEW.content) > 0 THEN \
                     RAISE EXCEPTION 'injected fault'; END IF; RETURN NEW; END $$ \
                     LANGUAGE plpgsql"
                ))
                .await;
                self.execute(
                    "CREATE TRIGGER injected_fault BEFORE INSERT ON messages \
                     FOR EACH ROW EXECUTE FUNCTION injected_fault()",
                )
                .await
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_that_fails_midway_through_its_writes_leaves_no_row_and_its_neighbours_commit_once()
{
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(start(&mut agent, &format!("v-{i}")).await.conversation_id);
    }
    Raw::open(&app).await.fail_inserts_of(FAILING_TEXT).await;

    const ROUNDS: usize = 5;
    for round in 0..ROUNDS {
        let mut calls = JoinSet::new();
        for (i, id) in ids.iter().enumerate() {
            let (mut client, id) = (agent.clone(), id.clone());
            let bad = i == 20;
            let text = if bad {
                format!("{round} {FAILING_TEXT}")
            } else {
                format!("round {round}")
            };
            calls.spawn(async move {
                let sent = client
                    .send_message(text_request(&id, as_visitor(&format!("v-{i}")), &text, ""))
                    .await;
                (bad, sent.map(|r| r.into_inner()))
            });
        }
        for (bad, sent) in calls.join_all().await {
            match (bad, sent) {
                (false, Ok(answer)) => assert!(answer.event_sequence > 0),
                (true, Err(status)) => {
                    assert_eq!(status.code(), Code::Internal);
                    assert_eq!(reason(&status), "INTERNAL");
                }
                other => panic!("round {round}: {other:?}"),
            }
        }
    }

    // Every good message is in its thread once, in order; the bad one never.
    for (i, id) in ids.iter().enumerate() {
        let texts: Vec<String> = thread(&mut agent, id, "")
            .await
            .into_iter()
            .filter_map(|m| match m.content {
                Some(pb::message::Content::Text(text)) => Some(text),
                _ => None,
            })
            .filter(|text| text.starts_with("round ") || text.contains(FAILING_TEXT))
            .collect();
        let expected: Vec<String> = if i == 20 {
            Vec::new()
        } else {
            (0..ROUNDS).map(|round| format!("round {round}")).collect()
        };
        assert_eq!(texts, expected, "conversation {i}");
    }
    // The feed has no hole and no duplicate where the failed batches were.
    let sequences = all_sequences(&mut agent).await;
    let head = app.max_event_sequence().await;
    assert_eq!(sequences, (1..=head).collect::<Vec<_>>());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_decided_behind_a_batch_that_fails_are_decided_again_and_commit_once() {
    let app = TestApp::spawn_with(Settings {
        metrics_listen: Some("127.0.0.1:0".parse().expect("address")),
        ..default_settings()
    })
    .await;
    let metrics = app.metrics_addr.expect("metrics are served");
    let on_sqlite = matches!(&app.database, Location::File(_));
    let mut agent = app.agent().await;
    let id = start(&mut agent, "v-0").await.conversation_id;
    Raw::open(&app).await.fail_inserts_of(FAILING_TEXT).await;
    let decided_again = async || {
        sample(
            &scrape(metrics).await,
            r#"conversations_write_batches_decided_again_total{why="before_failed"}"#,
        )
    };
    let before = decided_again().await;

    // Each round sends the bad message first, so that its batch is the one
    // in flight while the good ones queue behind it on the same
    // conversation, decided over a thread that will not hold the bad one.
    // Rounds stop once SQLite shows a batch decided again (at most 20, so
    // that the thread fits one page of 500).
    let mut good = 0;
    for round in 0..if on_sqlite { 20 } else { 5 } {
        let mut calls = JoinSet::new();
        for i in 0..24 {
            let (mut client, id) = (agent.clone(), id.clone());
            let text = if i == 0 {
                format!("{round} {FAILING_TEXT}")
            } else {
                format!("round {round} #{i}")
            };
            calls.spawn(async move {
                let sent = client
                    .send_message(text_request(&id, as_visitor("v-0"), &text, ""))
                    .await;
                (i == 0, sent.map(|r| r.into_inner()))
            });
            if i == 0 {
                tokio::task::yield_now().await;
            }
        }
        for (bad, sent) in calls.join_all().await {
            match (bad, sent) {
                (false, Ok(answer)) => {
                    assert!(answer.event_sequence > 0);
                    good += 1;
                }
                (true, Err(status)) => assert_eq!(status.code(), Code::Internal),
                other => panic!("round {round}: {other:?}"),
            }
        }
        if on_sqlite && decided_again().await > before && round >= 4 {
            break;
        }
    }

    // The thread holds every good message once, at consecutive positions,
    // and no bad one; the feed has no hole and no duplicate.
    let messages = thread(&mut agent, &id, "").await;
    let positions: Vec<i64> = messages.iter().map(|m| m.position).collect();
    assert_eq!(positions, (1..=positions.len() as i64).collect::<Vec<_>>());
    let texts: Vec<String> = messages
        .into_iter()
        .filter_map(|m| match m.content {
            Some(pb::message::Content::Text(text)) => Some(text),
            _ => None,
        })
        .collect();
    assert!(!texts.iter().any(|t| t.contains(FAILING_TEXT)));
    let mut sent: Vec<&String> = texts.iter().filter(|t| t.starts_with("round ")).collect();
    assert_eq!(sent.len(), good);
    sent.sort();
    sent.dedup();
    assert_eq!(sent.len(), good, "a message was written twice");
    let sequences = all_sequences(&mut agent).await;
    let head = app.max_event_sequence().await;
    assert_eq!(sequences, (1..=head).collect::<Vec<_>>());
    // On SQLite the writer decides a batch while the one before commits, so
    // the good messages were decided over the bad one's batch at least once
    // and had to be decided again (PostgreSQL decides each batch inside its
    // own transaction).
    if on_sqlite {
        assert!(decided_again().await > before, "no batch was decided again");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inbox_counts_equal_a_count_of_the_table_after_racing_mutations() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(start(&mut agent, &format!("v-{i}")).await.conversation_id);
    }
    let mut racers = JoinSet::new();
    for r in 0..48 {
        let mut client = app.agent().await;
        let id = ids[r % ids.len()].clone();
        let visitor = format!("v-{}", r % ids.len());
        racers.spawn(async move {
            for step in 0..6 {
                // Refusals are expected: the racers fight over each status.
                let _ = match (r + step) % 4 {
                    0 => client
                        .close_conversation(close_request(&id, dana()))
                        .await
                        .map(|_| ()),
                    1 => client
                        .mark_conversation_pending(mark_pending_request(&id, dana()))
                        .await
                        .map(|_| ()),
                    2 => client
                        .reopen_conversation(reopen_request(&id, dana()))
                        .await
                        .map(|_| ()),
                    _ => client
                        .send_message(text_request(&id, as_visitor(&visitor), "hi", ""))
                        .await
                        .map(|_| ()),
                };
            }
        });
    }
    racers.join_all().await;

    let listed = list_all(&mut agent).await;
    let counts = listed.status_counts.expect("counts");
    let rows = Raw::open(&app).await.count_by_status().await;
    let counted = |status: &str| {
        rows.iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, count)| *count)
    };
    assert_eq!(
        (counts.open, counts.pending, counts.closed),
        (counted("open"), counted("pending"), counted("closed"))
    );
    assert_eq!(counts.open + counts.pending + counts.closed, 12);
    // And the list's feed position is the workspace's head.
    assert_eq!(listed.as_of_sequence, app.max_event_sequence().await);
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_keys_open_stream_ends_unauthenticated_with_a_cursor_to_resume_from() {
    let app = TestApp::spawn().await;
    let (key_id, key) = app.new_key("default", Role::Agent).await;
    let mut client = app.client_with(Some(&key)).await;
    start(&mut client, "v-1").await;
    let mut stream = client
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let last = loop {
        let item = stream.next().await.expect("an item").expect("not ended");
        if let Some(Item::Checkpoint(checkpoint)) = item.item {
            break checkpoint.sequence;
        }
    };
    // Revoked as the command line does, from outside the server's cache.
    admin::revoke_key(app.store(), &key_id)
        .await
        .expect("revoke");
    let ended = crate::helpers::end_status(&mut stream).await;
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert_eq!(reason(&ended), "API_KEY_INVALID");
    let info = tonic_types::StatusExt::get_details_error_info(&ended).expect("error info");
    assert_eq!(info.metadata.get("last_sequence"), Some(&last.to_string()));
    // The revoked key is refused for calls too.
    let refused = client
        .list_events(pb::ListEventsRequest::default())
        .await
        .expect_err("a revoked key");
    assert_eq!(refused.code(), Code::Unauthenticated);
    app.stop().await;
}

#[tokio::test]
async fn a_second_server_on_the_same_database_file_refuses_to_start_naming_the_holder() {
    let app = TestApp::spawn().await;
    let settings = Settings::new(
        "127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .expect("address"),
        app.database.clone(),
    );
    let Location::File(db_path) = &app.database else {
        // One server per database is a rule of SQLite files: on PostgreSQL
        // a second server is a replica, and starts.
        let second = Application::build(&settings)
            .await
            .expect("a second server starts on the same PostgreSQL database");
        drop(second);
        app.stop().await;
        return;
    };
    let error = match Application::build(&settings).await {
        Ok(_) => panic!("a second server started on the same file"),
        Err(error) => error,
    };
    assert!(
        matches!(error, StartupError::Store(StoreError::AlreadyServed { .. })),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&db_path.display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&format!("process {}", std::process::id())),
        "{message}"
    );

    // The admin commands open the same file beside the server.
    let store = Store::open(&app.database)
        .await
        .expect("open beside the server");
    admin::create_workspace(&store, "beside")
        .await
        .expect("create a workspace beside the server");
    store.close().await;

    // Once the server stops, the file can be served again.
    let (_dir, database, ..) = app.stop().await;
    let again = Settings {
        database,
        ..settings
    };
    let application = Application::build(&again)
        .await
        .expect("a server starts once the first has stopped");
    drop(application);
}

#[tokio::test]
async fn every_list_query_is_a_range_read_of_its_own_index_without_a_sort() {
    let app = TestApp::spawn().await;
    let Some(pool) = raw_file(&app).await else {
        // These are SQLite's plans (it has no statistics to pick indexes
        // by); PostgreSQL plans from its own.
        app.stop().await;
        return;
    };
    let page = "SELECT * FROM conversations WHERE workspace_id = 1";
    let order = "ORDER BY update_time DESC, conversation_id DESC LIMIT 51";
    let cursor = "AND (update_time, conversation_id) < (5, 'conv_x')";
    let queries = [
        (format!("{page} {order}"), "conversations_by_update"),
        (
            format!("{page} {cursor} {order}"),
            "conversations_by_update",
        ),
        (
            format!("{page} AND status IN ('pending') {order}"),
            "conversations_by_status",
        ),
        (
            format!("{page} AND status IN ('pending') {cursor} {order}"),
            "conversations_by_status",
        ),
        (
            format!("{page} AND assignee_agent_id = 'dana' {order}"),
            "conversations_by_assignee",
        ),
        (
            format!("{page} AND visitor_id = 'v-1' {cursor} {order}"),
            "conversations_by_visitor",
        ),
        (
            "SELECT * FROM messages WHERE workspace_id = 1 AND conversation_id = 'c' \
             AND position > 0 ORDER BY position LIMIT 51"
                .to_owned(),
            "sqlite_autoindex_messages_2",
        ),
        (
            "SELECT * FROM events WHERE workspace_id = 1 AND sequence > 0 AND sequence <= 9 \
             ORDER BY sequence LIMIT 256"
                .to_owned(),
            "sqlite_autoindex_events_1",
        ),
        (
            "SELECT * FROM events INDEXED BY events_by_conversation WHERE workspace_id = 1 \
             AND sequence > 0 AND sequence <= 9 AND conversation_id = 'c' ORDER BY sequence LIMIT 256"
                .to_owned(),
            "events_by_conversation",
        ),
        // The timers' poll (and its claim): only due rows, by due time.
        (
            "SELECT 1 FROM conversations WHERE due_time <= 5 \
             AND (timer_claim_until IS NULL OR timer_claim_until <= 5) ORDER BY due_time LIMIT 256"
                .to_owned(),
            "conversations_by_due_time",
        ),
        (
            "SELECT * FROM workspace_counters WHERE workspace_id = 1".to_owned(),
            "INTEGER PRIMARY KEY",
        ),
        // A batch reads its conversations by id: each by the primary key,
        // never a scan of the workspace.
        (
            format!(
                "SELECT * FROM conversations WHERE +workspace_id IN (1, 2) AND conversation_id IN ({})",
                (0..256).map(|i| format!("'c{i}'")).collect::<Vec<_>>().join(", ")
            ),
            "sqlite_autoindex_conversations_1",
        ),
    ];
    for (query, index) in queries {
        let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {query}"))
            .fetch_all(&pool)
            .await
            .expect("plan")
            .iter()
            .map(|row| row.get::<String, _>("detail"))
            .collect();
        let plan = plan.join("; ");
        assert!(
            plan.starts_with("SEARCH") && plan.contains(index) && !plan.contains("TEMP B-TREE"),
            "{query}\n  => {plan} (want a search of {index} and no sort)"
        );
    }
    app.stop().await;
}
