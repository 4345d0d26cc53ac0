//! The `conversations` binary: parses the command line and calls into the
//! library. What it prints on stdout is meant for people and scripts; logs go
//! to stderr.

use std::process::ExitCode;

use clap::Parser;
use conversations::{
    app::admin,
    config::{Cli, Command, FlowCommand, KeyCommand, WorkspaceCommand},
    domain::spoken::exact_time,
    startup::{Application, shutdown_signal},
    store::Store,
    telemetry,
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init("info", cli.log_format);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `rows` under `headers`, each column as wide as its widest cell;
/// a table with no rows prints its headers and `(none)`.
fn print_table(headers: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.into_iter().collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(&mut headers.iter().copied());
    if rows.is_empty() {
        println!("(none)");
    }
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Serve(args) => {
            let settings = args.settings(cli.database);
            let application = Application::build(&settings).await?;
            if let Some(keys) = admin::bootstrap(application.app().store()).await? {
                println!(
                    "Created workspace `{}` in {}.",
                    admin::DEFAULT_WORKSPACE,
                    settings.database
                );
                println!("These keys are shown once; only their hashes are stored:");
                println!("agent key: {}", keys.agent.token);
                println!("visitor key: {}", keys.visitor.token);
                println!(
                    "Make more with: conversations key create --workspace {} --role agent|visitor|admin",
                    admin::DEFAULT_WORKSPACE
                );
            }
            println!("Listening on {}", application.local_addr());
            if let Some(metrics) = application.metrics_addr() {
                println!("Metrics on http://{metrics}/metrics");
            }
            application.run_until(shutdown_signal()).await?;
        }
        Command::Workspace {
            command:
                WorkspaceCommand::Settings {
                    workspace,
                    auto_close_after,
                    auto_close_message,
                },
        } => {
            let idle = auto_close_after
                .as_deref()
                .map(admin::parse_idle)
                .transpose()?;
            let store = Store::open_existing(&cli.database).await?;
            let settings =
                admin::workspace_settings(&store, &workspace, idle, auto_close_message.as_deref())
                    .await;
            store.close().await;
            let settings = settings?;
            match &settings.auto_close {
                None => println!("Workspace `{workspace}`: auto-close is off."),
                Some(auto) => {
                    println!(
                        "Workspace `{workspace}`: auto-close after {} without a message.",
                        conversations::domain::spoken::spoken_duration(auto.after_micros)
                    );
                    match &auto.message {
                        Some(text) => println!("The visitor is told: {}", text.as_str()),
                        None => println!("The visitor is told nothing before."),
                    }
                }
            }
        }
        Command::Workspace {
            command: WorkspaceCommand::List,
        } => {
            let store = Store::open_existing(&cli.database).await?;
            let listed = admin::list_workspaces(&store).await;
            store.close().await;
            let rows = listed?.into_iter().map(|w| {
                vec![
                    w.name,
                    exact_time(w.create_time),
                    w.counts[0].to_string(),
                    w.counts[1].to_string(),
                    w.counts[2].to_string(),
                    w.active_keys.to_string(),
                ]
            });
            print_table(
                &[
                    "WORKSPACE",
                    "CREATED",
                    "OPEN",
                    "PENDING",
                    "CLOSED",
                    "ACTIVE KEYS",
                ],
                rows,
            );
        }
        Command::Key {
            command: KeyCommand::List { workspace },
        } => {
            let store = Store::open_existing(&cli.database).await?;
            let listed = admin::list_keys(&store, workspace.as_deref()).await;
            store.close().await;
            let rows = listed?.into_iter().map(|k| {
                vec![
                    k.key_id,
                    k.workspace,
                    k.role.as_str().to_owned(),
                    exact_time(k.create_time),
                    k.revoke_time.map_or_else(|| "-".to_owned(), exact_time),
                ]
            });
            print_table(&["KEY ID", "WORKSPACE", "ROLE", "CREATED", "REVOKED"], rows);
        }
        Command::Flow {
            command: FlowCommand::List { workspace },
        } => {
            let store = Store::open_existing(&cli.database).await?;
            let listed = admin::list_flows(&store, &workspace).await;
            store.close().await;
            let (flows, default) = listed?;
            let rows = flows.into_iter().map(|f| {
                let is_default = default.as_deref() == Some(f.flow_id.as_str());
                vec![
                    f.flow_id,
                    f.definition.name,
                    f.version.to_string(),
                    exact_time(f.create_time),
                    if is_default { "yes" } else { "" }.to_owned(),
                ]
            });
            print_table(&["FLOW ID", "NAME", "VERSION", "UPDATED", "DEFAULT"], rows);
        }
        Command::Workspace {
            command: WorkspaceCommand::Create { name },
        } => {
            let store = Store::open_existing(&cli.database).await?;
            admin::create_workspace(&store, &name).await?;
            store.close().await;
            println!("Created workspace `{name}`.");
            println!("Make a key with: conversations key create --workspace {name} --role agent");
        }
        Command::Key {
            command: KeyCommand::Create { workspace, role },
        } => {
            let store = Store::open_existing(&cli.database).await?;
            let key = admin::create_key(&store, &workspace, role.into()).await?;
            store.close().await;
            println!(
                "{} key: {}",
                conversations::domain::credentials::Role::from(role).as_str(),
                key.token
            );
            println!(
                "key id: {} (revoke with: conversations key revoke {})",
                key.key_id, key.key_id
            );
        }
        Command::Flow {
            command: FlowCommand::Apply { file, workspace },
        } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let flow = admin::FlowFile::parse(&file.to_string_lossy(), &text)?;
            let store = Store::open_existing(&cli.database).await?;
            let applied = admin::apply_flow(&store, &workspace, flow).await;
            store.close().await;
            let (flow_id, version) = applied?;
            println!("flow {flow_id} version {version} applied to workspace `{workspace}`");
        }
        Command::Migrate { from, to } => {
            eprintln!("Copying {from} into {to}");
            let mut shown = (String::new(), 0u64);
            let counted = admin::migrate(&from, &to, |p| {
                // A line per table at its start and end, and every 50,000 rows.
                let new_table = shown.0 != p.table;
                if new_table || p.done == p.total || p.done >= shown.1 + 50_000 {
                    eprintln!("  {}: {} of {} rows", p.table, p.done, p.total);
                    shown = (p.table.to_owned(), p.done);
                }
            })
            .await?;
            println!(
                "{:<22} {:>12} {:>12}",
                "table", "source rows", "target rows"
            );
            let mut differ = false;
            for c in &counted {
                let mark = if c.source == c.target {
                    ""
                } else {
                    "  <- differs"
                };
                differ |= c.source != c.target;
                println!("{:<22} {:>12} {:>12}{mark}", c.table, c.source, c.target);
            }
            if differ {
                return Err("the copy's row counts differ from the source's".into());
            }
            println!("Copied. Point every server at {to} (--database) and start them.");
        }
        Command::Demo {
            server,
            pages,
            workspace,
            visitor_id,
            open,
        } => {
            demo(
                &cli.database,
                &server,
                pages.as_deref(),
                &workspace,
                &visitor_id,
                open,
            )
            .await?
        }
        Command::Key {
            command: KeyCommand::Revoke { key },
        } => {
            let store = Store::open_existing(&cli.database).await?;
            admin::revoke_key(&store, &key).await?;
            store.close().await;
            println!("Revoked.");
        }
    }
    Ok(())
}

/// `conversations demo`: keys for the demo pages and a visitor session from
/// the running server, printed as links (credentials in the fragment, which
/// browsers never send to a server).
async fn demo(
    database: &conversations::store::Location,
    server: &str,
    pages: Option<&str>,
    workspace: &str,
    visitor_id: &str,
    open: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    use conversations::{domain::credentials::Role, pb};
    let store = Store::open_existing(database).await?;
    let keys = async {
        let agent = admin::create_key(&store, workspace, Role::Agent).await?;
        let visitor = admin::create_key(&store, workspace, Role::Visitor).await?;
        Ok::<_, admin::AdminError>((agent, visitor))
    }
    .await;
    store.close().await;
    let (agent, visitor) = keys?;
    let server = server.trim_end_matches('/');
    let channel = tonic::transport::Channel::from_shared(server.to_owned())?
        .connect()
        .await
        .map_err(|e| format!("cannot reach the server at {server} ({e}): start it with `conversations serve --web-root examples/web/dist`"))?;
    let mut client = pb::conversation_service_client::ConversationServiceClient::new(channel);
    let mut request = tonic::Request::new(pb::CreateVisitorSessionRequest {
        visitor_id: visitor_id.to_owned(),
        ttl: None,
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", visitor.token).parse()?,
    );
    let session = client
        .create_visitor_session(request)
        .await
        .map_err(|status| format!("the server refused a visitor session: {}", status.message()))?
        .into_inner();
    let pages = pages.unwrap_or(server).trim_end_matches('/');
    let server_param = if pages == server {
        String::new()
    } else {
        format!("&server={server}")
    };
    let widget = format!("{pages}/widget.html#token={}{server_param}", session.token);
    let inbox = format!("{pages}/inbox.html#key={}{server_param}", agent.token);
    println!(
        "Made an agent key ({}) and a visitor key ({}) in workspace `{workspace}`, and a one-hour session for visitor `{visitor_id}`.",
        agent.key_id, visitor.key_id
    );
    println!("widget: {widget}");
    println!("inbox: {inbox}");
    if open {
        for link in [&widget, &inbox] {
            let opener = if cfg!(target_os = "macos") {
                "open"
            } else {
                "xdg-open"
            };
            if let Err(error) = std::process::Command::new(opener).arg(link).spawn() {
                eprintln!("could not run {opener} ({error}); open the links above yourself");
                break;
            }
        }
    }
    Ok(())
}
