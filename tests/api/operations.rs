//! What an operator meets: the command line's lists, and admin commands that
//! never create a database by accident. The real binary, as operators run
//! it, on the suite's database.

use std::process::Output;

use conversations::{domain::credentials::Role, store::Location};
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
