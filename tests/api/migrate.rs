//! `conversations migrate`: a SQLite deployment copied into an empty
//! database (PostgreSQL in the suite's PostgreSQL pass, another SQLite file
//! otherwise) keeps working as it was: keys, etags, request ids, cursors,
//! flows and revocations, with every table's rows counted on both sides.

use conversations::{
    app::admin::{self, FlowFile},
    domain::credentials::Role,
    pb,
    store::Location,
};
use tonic::Code;

use crate::{
    helpers::{TestApp, as_visitor, close_request, dana, fresh_database, start, text_request},
    process::binary,
};

/// Runs the binary with `args`; returns its exit status, stdout and stderr.
async fn run(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let output = tokio::process::Command::new(binary())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run the binary");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn argument(location: &Location) -> std::ffi::OsString {
    match location {
        Location::File(path) => path.into(),
        Location::Postgres(url) => url.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_migrated_deployment_keeps_its_keys_etags_request_ids_cursors_and_flows() {
    let app = TestApp::spawn_on_sqlite().await;
    let (acme_agent, _) = app.new_workspace("acme").await;
    let (revoked_id, revoked) = app.new_key("default", Role::Agent).await;
    admin::revoke_key(app.store(), &revoked_id)
        .await
        .expect("revoke");
    admin::apply_flow(
        app.store(),
        "default",
        FlowFile::parse(
            "greeting.toml",
            include_str!("../../examples/flows/greeting.toml"),
        )
        .expect("flow file"),
    )
    .await
    .expect("apply the example flow");
    let mut agent = app.agent().await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let c = start(&mut agent, &format!("v-{i}")).await;
        agent
            .send_message(text_request(
                &c.conversation_id,
                as_visitor(&format!("v-{i}")),
                "hello",
                &format!("say-{i}"),
            ))
            .await
            .expect("send");
        ids.push(c.conversation_id);
    }
    start(
        &mut app.client_with(Some(&acme_agent)).await,
        "acme-visitor",
    )
    .await;
    let closed = agent
        .close_conversation(pb::CloseConversationRequest {
            request_id: "close-once".into(),
            ..close_request(&ids[0], dana())
        })
        .await
        .expect("close")
        .into_inner();
    let before = agent
        .get_conversation(pb::GetConversationRequest {
            conversation_id: ids[1].clone(),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    let feed_before = agent
        .list_events(pb::ListEventsRequest {
            after_sequence: 10,
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("events")
        .into_inner();
    // A visitor session signed before the move, and one revoked.
    let mut backend = app.visitor().await;
    let mut sessions = Vec::new();
    for visitor in ["v-1", "v-2"] {
        let request = pb::CreateVisitorSessionRequest {
            visitor_id: visitor.into(),
            ttl: None,
        };
        let made = backend.create_visitor_session(request).await;
        sessions.push(made.expect("session").into_inner());
    }
    let (kept, gone) = (sessions[0].clone(), sessions[1].clone());
    app.visitor()
        .await
        .revoke_visitor_session(pb::RevokeVisitorSessionRequest {
            session_id: gone.session_id.clone(),
        })
        .await
        .expect("revoke the session");
    let (agent_key, visitor_key) = (app.agent_key.clone(), app.visitor_key.clone());
    let (_source_dir, source, ..) = app.stop().await;

    let dir = tempfile::tempdir().expect("temp dir");
    let target = fresh_database(dir.path()).await;
    let migrate = |from: &Location, to: &Location| {
        let (from, to) = (argument(from), argument(to));
        async move {
            run(&[
                "migrate".as_ref(),
                "--from".as_ref(),
                from.as_os_str(),
                "--to".as_ref(),
                to.as_os_str(),
            ])
            .await
        }
    };
    let (ok, stdout, stderr) = migrate(&source, &target).await;
    assert!(ok, "migrate failed:\n{stdout}\n{stderr}");
    for table in [
        "workspaces",
        "api_keys",
        "conversations",
        "messages",
        "events",
        "flows",
        "session_secrets",
        "revoked_sessions",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(table))
            .unwrap_or_else(|| panic!("no count line for {table}:\n{stdout}"));
        let counts: Vec<&str> = line.split_whitespace().skip(1).collect();
        assert_eq!(counts.len(), 2, "{line}");
        assert_eq!(counts[0], counts[1], "{line}");
        assert_ne!(counts[0], "0", "{line}");
    }
    let finished = |table: &str| {
        stderr.lines().any(|l| {
            let Some(rest) = l.trim().strip_prefix(&format!("{table}: ")) else {
                return false;
            };
            let numbers: Vec<&str> = rest
                .split(' ')
                .filter(|w| w.parse::<u64>().is_ok())
                .collect();
            numbers.len() == 2 && numbers[0] == numbers[1] && numbers[0] != "0"
        })
    };
    assert!(
        finished("messages") && finished("events"),
        "progress:\n{stderr}"
    );
    if let Location::Postgres(url) = &target {
        let password = url::Url::parse(url)
            .expect("url")
            .password()
            .map(str::to_owned);
        if let Some(password) = password {
            let shown = format!(":{password}@");
            assert!(
                !stdout.contains(&shown) && !stderr.contains(&shown),
                "the password was shown:\n{stdout}\n{stderr}"
            );
        }
    }

    // A second copy into the same target is refused: it is not empty.
    let (ok, _, stderr) = migrate(&source, &target).await;
    assert!(!ok);
    assert!(stderr.contains("not empty"), "{stderr}");

    // Served from the target, everything is as it was.
    let app = TestApp::spawn_on(std::sync::Arc::new(dir), target, agent_key, visitor_key).await;
    let mut agent = app.agent().await;
    let after = agent
        .get_conversation(pb::GetConversationRequest {
            conversation_id: ids[1].clone(),
            ..Default::default()
        })
        .await
        .expect("the key and the conversation survive")
        .into_inner();
    assert_eq!(after, before, "same conversation, same etag");
    let replayed = agent
        .close_conversation(pb::CloseConversationRequest {
            request_id: "close-once".into(),
            ..close_request(&ids[0], dana())
        })
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(replayed, closed, "a request id replays its first response");
    let feed_after = agent
        .list_events(pb::ListEventsRequest {
            after_sequence: 10,
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("events")
        .into_inner();
    assert_eq!(
        feed_after, feed_before,
        "a cursor resumes at the same place"
    );
    // An etag from before the move still guards a change.
    agent
        .mark_conversation_pending(pb::MarkConversationPendingRequest {
            conversation_id: ids[1].clone(),
            agent: Some(dana()),
            etag: before
                .conversation
                .as_ref()
                .expect("conversation")
                .etag
                .clone(),
            ..Default::default()
        })
        .await
        .expect("the old etag is current");
    // New writes continue the sequences; new workspaces get new ids.
    let c = start(&mut agent, "after-the-move").await;
    assert!(c.create_time.is_some());
    app.new_workspace("after-the-move").await;
    let refused = app
        .client_with(Some(&revoked))
        .await
        .get_conversation(pb::GetConversationRequest {
            conversation_id: ids[1].clone(),
            ..Default::default()
        })
        .await
        .expect_err("a revoked key stays revoked");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let flows = app
        .admin()
        .await
        .list_flows(pb::ListFlowsRequest::default())
        .await
        .expect("flows")
        .into_inner();
    assert_eq!(flows.flows.len(), 1);
    // The session signed before the move still works; the revoked one not.
    let mut browser = app.client_with(Some(&kept.token)).await;
    assert_eq!(
        crate::helpers::get(&mut browser, &ids[1], "")
            .await
            .visitor_id,
        "v-1"
    );
    let refused = app
        .client_with(Some(&gone.token))
        .await
        .list_conversations(pb::ListConversationsRequest::default())
        .await
        .expect_err("a revoked session stays revoked");
    assert_eq!(crate::helpers::reason(&refused), "SESSION_REVOKED");
    app.stop().await;
}

#[tokio::test]
async fn migrate_refuses_a_source_file_that_does_not_exist() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.db");
    let target = dir.path().join("target.db");
    let (ok, _, stderr) = run(&[
        "migrate".as_ref(),
        "--from".as_ref(),
        missing.as_os_str(),
        "--to".as_ref(),
        target.as_os_str(),
    ])
    .await;
    assert!(!ok);
    assert!(stderr.contains("no database at"), "{stderr}");
    assert!(!missing.exists(), "the missing source was not created");
}

#[tokio::test]
async fn a_database_password_never_appears_in_any_output() {
    // A server that cannot reach its database says so without the password.
    let unreachable = "postgres://dana:s3cret-pw@127.0.0.1:1/conversations";
    let (ok, stdout, stderr) = run(&[
        "--database".as_ref(),
        unreachable.as_ref(),
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ])
    .await;
    assert!(!ok);
    assert!(
        !stdout.contains("s3cret-pw") && !stderr.contains("s3cret-pw"),
        "{stdout}{stderr}"
    );
    let (ok, stdout, stderr) = run(&[
        "migrate".as_ref(),
        "--from".as_ref(),
        unreachable.as_ref(),
        "--to".as_ref(),
        "postgres://dana:other-pw@127.0.0.1:1/x?password=third-pw".as_ref(),
    ])
    .await;
    assert!(!ok);
    for secret in ["s3cret-pw", "other-pw", "third-pw"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{stdout}{stderr}"
        );
    }
    assert!(
        stderr.contains("postgres://dana:********@127.0.0.1:1/conversations"),
        "{stderr}"
    );

    // A server that starts on a new PostgreSQL database names it redacted.
    let dir = tempfile::tempdir().expect("temp dir");
    let database = fresh_database(dir.path()).await;
    let Location::Postgres(url) = &database else {
        return;
    };
    let password = url::Url::parse(url)
        .expect("url")
        .password()
        .map(str::to_owned);
    let mut child = tokio::process::Command::new(binary())
        .args(["--database", url, "serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    child.start_kill().expect("kill");
    let output = child.wait_with_output().await.expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.contains("Created workspace `default` in postgres://"),
        "{stdout}"
    );
    if let Some(password) = password {
        let shown = format!(":{password}@");
        assert!(
            !stdout.contains(&shown) && !stderr.contains(&shown),
            "{stdout}{stderr}"
        );
        assert!(stdout.contains(":********@"), "{stdout}");
    }
}
