//! What an operator meets: the command line's lists, and admin commands that
//! never create a database by accident. The real binary, as operators run
//! it, on the suite's database.

use std::{process::Output, time::Duration};

use conversations::{config::Settings, domain::credentials::Role, pb, store::Location};
use tokio::process::Command;

use crate::{helpers::*, process};

/// Runs the binary with `args` on `database`.
async fn cli(database: &Location, args: &[&str]) -> Output {
    let database: std::ffi::OsString = match database {
        Location::File(path) => path.into(),
        Location::Postgres(url) => url.into(),
    };
    Command::new(process::binary())
        .arg("--database")
        .arg(database)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("CONVERSATIONS_WORKSPACE")
        .output()
        .await
        .expect("run the binary")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "the command failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The row of `table` whose first cell is `first`, split into cells.
fn row<'a>(table: &'a str, first: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|line| {
            line.split("  ")
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
        })
        .find(|cells| cells.first().map(|c| c.trim()) == Some(first))
        .unwrap_or_else(|| panic!("no row {first:?} in\n{table}"))
        .into_iter()
        .map(str::trim)
        .collect()
}

#[tokio::test]
async fn admin_commands_on_a_database_file_that_does_not_exist_refuse_and_create_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("typo.db");
    let database = Location::File(missing.clone());
    let flow = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/flows/greeting.toml");
    for args in [
        &["workspace", "create", "acme"][..],
        &["workspace", "list"],
        &["workspace", "settings", "--auto-close-after", "30m"],
        &["key", "create", "--role", "admin"],
        &["key", "list"],
        &["key", "revoke", "0123456789abcdef"],
        &["flow", "apply", flow],
        &["flow", "list"],
    ] {
        let output = cli(&database, args).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(&missing.display().to_string()) && stderr.contains("serve"),
            "{args:?} should name the file and how to make it: {stderr}"
        );
        assert!(
            std::fs::read_dir(dir.path()).expect("dir").next().is_none(),
            "{args:?} created a file"
        );
    }
}

#[tokio::test]
async fn workspace_key_and_flow_lists_show_what_exists_and_never_a_secret() {
    let app = TestApp::spawn().await;
    let (acme_agent, acme_visitor) = app.new_workspace("acme").await;
    let (admin_id, admin_token) = app.new_key("acme", Role::Admin).await;
    let mut agent = app.agent().await;
    start(&mut agent, "v-1").await;
    start(&mut agent, "v-2").await;
    admin_commands(&app.database, &["key", "revoke", &admin_id]).await;
    let flow = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/flows/greeting.toml");
    admin_commands(
        &app.database,
        &["flow", "apply", flow, "--workspace", "acme"],
    )
    .await;

    let workspaces = stdout(&cli(&app.database, &["workspace", "list"]).await);
    assert_eq!(
        row(&workspaces, "WORKSPACE"),
        [
            "WORKSPACE",
            "CREATED",
            "OPEN",
            "PENDING",
            "CLOSED",
            "ACTIVE KEYS"
        ]
    );
    let default = row(&workspaces, "default");
    assert_eq!(default[2..], ["2", "0", "0", "2"], "{workspaces}");
    let acme = row(&workspaces, "acme");
    assert_eq!(
        acme[2..],
        ["0", "0", "0", "2"],
        "the revoked key is not active"
    );
    assert!(acme[1].ends_with(" UTC"), "{workspaces}");

    let keys = stdout(&cli(&app.database, &["key", "list"]).await);
    let acme_keys = stdout(&cli(&app.database, &["key", "list", "--workspace", "acme"]).await);
    let revoked = row(&keys, &admin_id);
    assert_eq!(revoked[1..3], ["acme", "admin"]);
    assert!(revoked[4].ends_with(" UTC"), "a revoke time: {keys}");
    for (token, of_acme) in [
        (&app.agent_key, false),
        (&app.visitor_key, false),
        (&acme_agent, true),
        (&acme_visitor, true),
    ] {
        let id = key_id(token);
        assert_eq!(row(&keys, &id)[4], "-", "not revoked: {keys}");
        assert_eq!(acme_keys.contains(&id), of_acme, "{acme_keys}");
    }
    for token in [
        &app.agent_key,
        &app.visitor_key,
        &acme_agent,
        &acme_visitor,
        &admin_token,
    ] {
        let secret = &token[token.len() - 20..];
        assert!(
            !keys.contains(secret) && !acme_keys.contains(secret),
            "a secret was printed"
        );
    }

    let flows = stdout(&cli(&app.database, &["flow", "list", "--workspace", "acme"]).await);
    let greeting = flows
        .lines()
        .find(|l| l.contains("Website greeting"))
        .unwrap_or_else(|| panic!("the applied flow is listed: {flows}"));
    assert!(
        greeting.starts_with("flow_") && greeting.trim_end().ends_with("yes"),
        "{flows}"
    );
    let empty = stdout(&cli(&app.database, &["flow", "list"]).await);
    assert!(empty.contains("(none)"), "{empty}");
}

/// Runs an admin command that must succeed.
async fn admin_commands(database: &Location, args: &[&str]) {
    stdout(&cli(database, args).await);
}

/// The public id of a key.
fn key_id(token: &str) -> String {
    conversations::domain::credentials::PresentedKey::parse(token)
        .expect("a well-formed key")
        .key_id
}

#[tokio::test]
async fn health_turns_not_serving_the_moment_shutdown_starts_and_its_watches_end() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let app = TestApp::spawn_with(Settings {
        // Long enough that a shutdown held up by a watch would show.
        shutdown_grace: Duration::from_secs(60),
        ..default_settings()
    })
    .await;
    let mut health = app.health().await;
    let ask = |service: &str| HealthCheckRequest {
        service: service.to_owned(),
    };
    for service in [
        "",
        "liveness",
        "conversations.v1.ConversationService",
        "conversations.v1.FlowService",
        "conversations.v1.WorkspaceService",
    ] {
        let status = health
            .check(ask(service))
            .await
            .expect("check")
            .into_inner();
        assert_eq!(status.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(ask("no.such.Service"))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut server_watch = health.watch(ask("")).await.expect("watch").into_inner();
    let mut service_watch = health
        .watch(ask("conversations.v1.ConversationService"))
        .await
        .expect("watch")
        .into_inner();
    let mut unknown_watch = health
        .watch(ask("no.such.Service"))
        .await
        .expect("watch")
        .into_inner();
    for watch in [&mut server_watch, &mut service_watch] {
        let first = watch.message().await.expect("read").expect("a status");
        assert_eq!(first.status(), ServingStatus::Serving);
    }
    let first = unknown_watch
        .message()
        .await
        .expect("read")
        .expect("a status");
    assert_eq!(first.status(), ServingStatus::ServiceUnknown);

    let stopped = tokio::spawn(app.stop());
    for watch in [&mut server_watch, &mut service_watch] {
        let last = watch.message().await.expect("read").expect("a last status");
        assert_eq!(last.status(), ServingStatus::NotServing);
        assert!(
            watch.message().await.expect("a clean end").is_none(),
            "the watch ends"
        );
    }
    assert!(
        unknown_watch
            .message()
            .await
            .expect("a clean end")
            .is_none()
    );
    // Nothing else is open: the server stops without waiting out its grace.
    tokio::time::timeout(Duration::from_secs(30), stopped)
        .await
        .expect("the server stopped well within its 60 s grace")
        .expect("stop");
}

#[tokio::test]
async fn health_stays_serving_while_another_process_holds_the_sqlite_write_lock() {
    use sqlx::Connection;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let app = TestApp::spawn().await;
    let Location::File(path) = &app.database else {
        eprintln!("skipped on PostgreSQL: its writers take row locks, not the file's write lock");
        return;
    };
    let mut health = app.health().await;
    let ask = || HealthCheckRequest {
        service: String::new(),
    };
    let mut watch = health.watch(ask()).await.expect("watch").into_inner();
    let first = watch.message().await.expect("watch").expect("a status");
    assert_eq!(first.status(), ServingStatus::Serving);

    // Another process (a long CLI import, say) takes SQLite's write lock and
    // keeps it past three of the probe's 2 s timeouts. The database still
    // answers reads, so the server is still fit to serve: its probe must not
    // queue behind writers waiting for that lock (the timers' poll did, on
    // the connection the probe shared, until the busy timeout).
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
    let mut other = sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("open the file");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .expect("take the write lock");
    let changed = tokio::time::timeout(Duration::from_secs(9), watch.message()).await;
    assert!(
        changed.is_err(),
        "health changed while only the write lock was held: {changed:?}"
    );
    let now = health.check(ask()).await.expect("check").into_inner();
    assert_eq!(now.status(), ServingStatus::Serving);
    let mut agent = app.agent().await;
    let listed = agent
        .list_conversations(pb::ListConversationsRequest::default())
        .await;
    assert!(listed.is_ok(), "reads go on under the lock: {listed:?}");
    sqlx::query("ROLLBACK")
        .execute(&mut other)
        .await
        .expect("let the lock go");
}

#[tokio::test]
async fn health_is_not_serving_while_the_database_does_not_answer_and_serving_again_when_it_does() {
    use sqlx::Connection;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let Some(server) = postgres_server() else {
        eprintln!(
            "skipped on SQLite: the outage is made on PostgreSQL (connections refused and cut); \
             a SQLite file has none to make short of a failing disk"
        );
        return;
    };
    let app = TestApp::spawn().await;
    let Location::Postgres(url) = &app.database else {
        panic!("the suite runs on PostgreSQL");
    };
    let name = url::Url::parse(url).expect("url").path()[1..].to_owned();
    let mut health = app.health().await;
    let ask = || HealthCheckRequest {
        service: String::new(),
    };
    let mut watch = health.watch(ask()).await.expect("watch").into_inner();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(30), watch.message())
            .await
            .expect("a change within 30 s")
            .expect("the watch stays open")
            .expect("a status")
            .status()
    };
    assert_eq!(next().await, ServingStatus::Serving);

    // The outage: the database takes no new connection, and its open ones
    // are cut.
    let mut admin = sqlx::PgConnection::connect(&server).await.expect("admin");
    let allow = async |admin: &mut sqlx::PgConnection, allow: bool| {
        sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {allow}"))
            .execute(admin)
            .await
            .expect("alter database");
    };
    allow(&mut admin, false).await;
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&mut admin)
        .await
        .expect("cut the server's connections");
    assert_eq!(next().await, ServingStatus::NotServing);
    let now = health.check(ask()).await.expect("check").into_inner();
    assert_eq!(now.status(), ServingStatus::NotServing);
    // Liveness ignores the database: no orchestrator restarts the server.
    let alive = health
        .check(HealthCheckRequest {
            service: "liveness".into(),
        })
        .await
        .expect("check liveness")
        .into_inner();
    assert_eq!(alive.status(), ServingStatus::Serving);

    // Back: the same watch hears SERVING, and calls succeed again.
    allow(&mut admin, true).await;
    assert_eq!(next().await, ServingStatus::Serving);
    let mut agent = app.agent().await;
    let started = agent
        .start_conversation(pb::StartConversationRequest {
            visitor_id: "v-after-the-outage".into(),
            ..Default::default()
        })
        .await;
    assert!(started.is_ok(), "{started:?}");
}

/// Runs `serve` on `database` with `args` and returns its exit and stderr
/// once it exits (within 30 s: these servers are meant to refuse).
async fn refused_serve(
    binary: &std::path::Path,
    database: &std::path::Path,
    as_nobody: bool,
) -> (bool, String) {
    let mut command = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(binary);
        c
    } else {
        Command::new(binary)
    };
    let output = command
        .arg("--database")
        .arg(database)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("the server refuses to start rather than serve")
        .expect("run the binary");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Whether this process runs as root (which file permissions do not stop).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn serve_refuses_a_database_file_it_cannot_write_naming_the_file_and_the_cause() {
    use std::os::unix::fs::PermissionsExt;
    // A directory anyone may write (the WAL and the lock file go there),
    // holding a file nobody but root may write.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let database = dir.path().join("read-only.db");
    let store = conversations::store::Store::open(&Location::File(database.clone()))
        .await
        .expect("create the database");
    store.close().await;
    std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    // Root writes whatever the permissions say: run the server as nobody,
    // from a copy of the binary nobody may run.
    let root = is_root();
    let binary = dir.path().join("conversations");
    std::fs::copy(process::binary(), &binary).expect("copy the binary");
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (ok, stderr) = refused_serve(&binary, &database, root).await;
    assert!(!ok, "a read-only database must not be served: {stderr}");
    assert!(
        stderr.contains(&database.display().to_string())
            && stderr.contains("cannot be written")
            && stderr.contains("readonly"),
        "{stderr}"
    );
}

#[tokio::test]
async fn serve_refuses_a_postgresql_database_that_is_read_only() {
    let Some(_) = postgres_server() else {
        // The SQLite suite covers the file case above; this one needs a
        // PostgreSQL server, and the suite runs again on one in CI.
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let location = fresh_database(dir.path()).await;
    let Location::Postgres(url) = &location else {
        unreachable!("fresh_database gives PostgreSQL when the suite runs there")
    };
    let name = url::Url::parse(url)
        .expect("url")
        .path()
        .trim_start_matches('/')
        .to_owned();
    {
        use sqlx::Connection;
        let store = conversations::store::Store::open(&location)
            .await
            .expect("migrate");
        store.close().await;
        let mut admin = sqlx::PgConnection::connect(url).await.expect("connect");
        sqlx::query(&format!(
            "ALTER DATABASE {name} SET default_transaction_read_only = on"
        ))
        .execute(&mut admin)
        .await
        .expect("make the database read-only");
        let _ = admin.close().await;
    }
    let refused = conversations::store::Store::open_to_serve(&location)
        .await
        .map(|_| ())
        .expect_err("a read-only database must not be served");
    let said = refused.to_string();
    assert!(
        said.contains("cannot be written") && said.contains("read-only transaction"),
        "{said}"
    );
}

#[tokio::test]
async fn serve_refuses_a_database_in_a_directory_that_does_not_exist() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("no-such-dir").join("conversations.db");
    let (ok, stderr) = refused_serve(process::binary().as_ref(), &database, false).await;
    assert!(!ok);
    assert!(
        stderr.contains("no-such-dir") && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(std::fs::read_dir(dir.path()).expect("dir").next().is_none());
}

#[tokio::test]
async fn serve_listens_on_a_host_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(process::binary())
        .arg("--database")
        .arg(dir.path().join("conversations.db"))
        .args(["serve", "--listen", "localhost:0"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the server");
    let (addr, _) = process::announcement(&mut child).await;
    let addr: std::net::SocketAddr = addr.parse().expect("a socket address");
    assert!(
        addr.ip().is_loopback(),
        "localhost binds a loopback address: {addr}"
    );
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("check")
        .into_inner();
    assert_eq!(
        status.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}

#[tokio::test]
async fn every_rpc_logs_one_json_line_with_its_outcome_and_never_a_secret_or_a_message_text() {
    use conversations::pb::{self, conversation_service_client::ConversationServiceClient};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(process::binary())
        .args(["--log-format", "json", "--database"])
        .arg(dir.path().join("conversations.db"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the server");
    let (addr, key) = process::announcement(&mut child).await;
    let key = key.expect("a new database prints its agent key");
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = ConversationServiceClient::new(channel);
    let started = client
        .start_conversation(process::authorized(
            &key,
            pb::StartConversationRequest {
                visitor_id: "v-logs".into(),
                request_id: "req-start-1".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("start")
        .into_inner();
    let id = started.conversation.expect("conversation").conversation_id;
    let secret_text = "our-pricing-is-4200-per-seat";
    client
        .send_message(process::authorized(
            &key,
            text_request(&id, as_visitor("v-logs"), secret_text, "req-send-1"),
        ))
        .await
        .expect("send");
    let refused = client
        .reopen_conversation(process::authorized(&key, reopen_request(&id, dana())))
        .await
        .expect_err("an open conversation cannot be reopened");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let unauthenticated = client
        .get_conversation(process::authorized(
            &format!("{key}x"),
            get_request(&id, ""),
        ))
        .await
        .expect_err("a bad key");
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);

    // SIGTERM, as an orchestrator stops it; then read everything it logged.
    let pid = child.id().expect("running");
    let _ = std::process::Command::new("kill")
        .arg(pid.to_string())
        .status();
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("it stops")
        .expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let logged: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let rpcs: Vec<&serde_json::Value> = logged.iter().filter(|l| l["message"] == "rpc").collect();
    let line = |method: &str| {
        let found: Vec<_> = rpcs
            .iter()
            .filter(|l| l["method"] == format!("conversations.v1.ConversationService/{method}"))
            .collect();
        assert_eq!(found.len(), 1, "one line for {method}: {stderr}");
        *found[0]
    };
    let start = line("StartConversation");
    assert_eq!(start["level"], "INFO");
    assert_eq!(start["code"], "OK");
    assert_eq!(start["request_id"], "req-start-1");
    assert_eq!(start["workspace"], 1);
    assert_eq!(start["key_id"], key_id(&key));
    assert!(
        start["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
        "{start}"
    );
    assert_eq!(line("SendMessage")["request_id"], "req-send-1");
    let reopen = line("ReopenConversation");
    assert_eq!(reopen["code"], "FAILED_PRECONDITION");
    assert_eq!(reopen["reason"], "CONVERSATION_ALREADY_OPEN");
    let get = line("GetConversation");
    assert_eq!(get["code"], "UNAUTHENTICATED");
    assert_eq!(get["reason"], "API_KEY_INVALID");
    assert!(
        get.get("workspace").is_none_or(serde_json::Value::is_null),
        "{get}"
    );

    let started_line = logged
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("serving"))
        })
        .expect("a start-up line");
    assert_eq!(started_line["address"], addr.as_str());
    assert!(
        started_line["store"]
            .as_str()
            .is_some_and(|s| s.contains("synchronous=FULL")),
        "the start-up line states the durability in force: {started_line}"
    );
    assert!(started_line["max_streams"].is_number());
    assert!(
        logged.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("stopped"))),
        "a shutdown line: {stderr}"
    );
    let secret = &key[key.len() - 20..];
    assert!(!stderr.contains(secret), "a key's secret was logged");
    assert!(!stderr.contains(secret_text), "a message's text was logged");
}

#[tokio::test]
async fn metrics_move_with_traffic_and_every_metric_the_dashboard_queries_is_served() {
    let app = TestApp::spawn_with(Settings {
        metrics_listen: Some("127.0.0.1:0".parse().expect("address")),
        ..default_settings()
    })
    .await;
    let metrics = app.metrics_addr.expect("metrics are served");
    let before = scrape(metrics).await;

    // Traffic that touches every panel: calls and refusals, a widget and an
    // Inbox stream that deliver and then end, batches, an auto-close timer.
    let mut agent = app.agent().await;
    let inbox = agent
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .expect("inbox stream")
        .into_inner();
    let conversation = start(&mut agent, "v-metrics").await;
    let id = conversation.conversation_id.clone();
    let mut widget = app
        .visitor()
        .await
        .watch_events(pb::WatchEventsRequest {
            conversation_id: id.clone(),
            visitor_id: "v-metrics".into(),
            ..Default::default()
        })
        .await
        .expect("widget stream")
        .into_inner();
    agent
        .send_message(hello_request(&id, as_visitor("v-metrics")))
        .await
        .expect("send");
    widget
        .message()
        .await
        .expect("read")
        .expect("an event reaches the widget");
    let refused = agent
        .reopen_conversation(reopen_request(&id, dana()))
        .await
        .expect_err("already open");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let mut admin = app.settings_admin().await;
    set_auto_close(&mut admin, Some(1), "").await;
    let fired = async {
        loop {
            let got = agent
                .get_conversation(get_request(&id, ""))
                .await
                .expect("get")
                .into_inner();
            if got.conversation.expect("conversation").status() == pb::ConversationStatus::Closed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), fired)
        .await
        .expect("the auto-close timer fires");
    // A path the server does not implement counts, but not under its name.
    let mut raw = tonic::client::Grpc::new(
        tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect"),
    );
    raw.ready().await.expect("ready");
    let made_up = raw
        .unary(
            tonic::Request::new(()),
            http::uri::PathAndQuery::from_static("/grpc.madeup1.Probe/Call"),
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await
        .expect_err("no such method");
    assert_eq!(made_up.code(), tonic::Code::Unimplemented);
    drop(widget);
    drop(inbox);
    // The streams' ends and the database gauges are recorded within a
    // sampling interval.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = scrape(metrics).await;

    let moved = |series: &str| {
        assert!(
            sample(&after, series) > sample(&before, series),
            "{series} did not move:\n{after}"
        );
    };
    moved(
        r#"conversations_rpc_requests_total{method="conversations.v1.ConversationService/StartConversation",code="OK"}"#,
    );
    moved(
        r#"conversations_rpc_requests_total{method="conversations.v1.ConversationService/ReopenConversation",code="FAILED_PRECONDITION"}"#,
    );
    moved(r#"conversations_refusals_total{reason="CONVERSATION_ALREADY_OPEN"}"#);
    moved(
        r#"conversations_rpc_duration_seconds_count{method="conversations.v1.ConversationService/SendMessage"}"#,
    );
    moved(r#"conversations_write_batches_total{result="committed"}"#);
    moved("conversations_write_batch_commit_seconds_count");
    moved("conversations_feed_delivery_lag_seconds_count");
    moved("conversations_feed_events_delivered_total");
    moved("conversations_timers_claimed_total");
    moved(r#"conversations_timers_fired_total{result="fired"}"#);
    moved(r#"conversations_streams_ended_total{reason="CANCELLED"}"#);
    assert!(
        sample(&after, "conversations_db_file_bytes") > 0.0
            || !matches!(app.database, Location::File(_))
    );
    // The batch writer keeps its connection out of its pool between
    // batches; it is still counted, idle or in use.
    let batch_connections = sample(
        &after,
        r#"conversations_db_pool_connections{pool="batch",state="idle"}"#,
    ) + sample(
        &after,
        r#"conversations_db_pool_connections{pool="batch",state="in_use"}"#,
    );
    assert_eq!(batch_connections, 1.0, "{after}");

    // The shipped dashboard queries only what the server serves.
    let dashboard: serde_json::Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/grafana/conversations.json"
    )))
    .expect("the dashboard is JSON");
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("an expression");
            let mut rest = expr;
            while let Some(at) = rest.find("conversations_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(
        queried.len() >= 12,
        "the dashboard queries our metrics: {queried:?}"
    );
    let served: std::collections::BTreeSet<&str> = after
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let sqlite_only = ["conversations_db_file_bytes", "conversations_db_wal_bytes"];
    for name in &queried {
        if !matches!(app.database, Location::File(_)) && sqlite_only.contains(&name.as_str()) {
            continue;
        }
        assert!(
            served.contains(name.as_str()),
            "the dashboard queries {name}, which /metrics does not serve:\n{after}"
        );
    }
}
