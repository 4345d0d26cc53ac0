//! Starts the real server on 127.0.0.1:0 on a fresh database, and gives tests
//! generated clients that carry a key.
//!
//! The backend comes from `CONVERSATIONS_TEST_DATABASE_URL`: unset, each test
//! gets a SQLite file in a temp dir; set to a PostgreSQL server's URL (e.g.
//! `postgres://postgres@127.0.0.1/postgres`), each test gets a database of its
//! own created on that server (named `conversations_test_…`).

use std::{net::SocketAddr, path::PathBuf, sync::Arc, sync::Once};

use conversations::{
    app::{App, LimitsConfig, admin, auth::REVOCATION_POLL},
    config::Settings,
    domain::credentials::Role,
    feed::FeedConfig,
    pb::{
        self,
        conversation_service_client::ConversationServiceClient,
        flow_service_client::FlowServiceClient,
        send_message_request::{Content, Sender},
        workspace_service_client::WorkspaceServiceClient,
    },
    startup::{Application, StartupError},
    store::{Location, Store},
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{
    Request, Status,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};
use tonic_types::StatusExt;

static TRACING: Once = Once::new();
static BACKEND_NOTICE: Once = Once::new();

/// The variable that points the suite at a PostgreSQL server.
pub const POSTGRES_VARIABLE: &str = "CONVERSATIONS_TEST_DATABASE_URL";

/// The PostgreSQL server the suite runs on, if it was given one.
pub fn postgres_server() -> Option<String> {
    std::env::var(POSTGRES_VARIABLE)
        .ok()
        .filter(|url| !url.is_empty())
}

/// Says once per run which backend the suite runs on, straight to the
/// terminal (past the test harness's capture), so a run on SQLite alone
/// cannot pass for one on both.
fn announce_backend() {
    use std::io::Write;
    BACKEND_NOTICE.call_once(|| {
        let line = match postgres_server() {
            Some(url) => format!(
                "integration tests: on PostgreSQL at {}\n",
                url.parse::<Location>().expect("infallible")
            ),
            None => format!(
                "integration tests: on SQLite only; PostgreSQL was not tested (set {POSTGRES_VARIABLE}=postgres://… to run them there)\n"
            ),
        };
        let _ = std::io::stderr().write_all(line.as_bytes());
    });
}

/// A new, empty database for one test: a database of its own on the
/// PostgreSQL server when the suite runs there, else a file in `dir`.
pub async fn fresh_database(dir: &std::path::Path) -> Location {
    announce_backend();
    let Some(server) = postgres_server() else {
        return Location::File(dir.join("conversations.db"));
    };
    use sqlx::Connection;
    let name = format!("conversations_test_{}", ulid::Ulid::new()).to_lowercase();
    let mut admin = sqlx::PgConnection::connect(&server)
        .await
        .expect("connect to the PostgreSQL server of CONVERSATIONS_TEST_DATABASE_URL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create a test database");
    let _ = admin.close().await;
    let mut url = url::Url::parse(&server).expect("a PostgreSQL URL");
    url.set_path(&name);
    Location::Postgres(url.to_string())
}

/// A client that sends `authorization: Bearer <key>` (or nothing).
pub type Client = ConversationServiceClient<InterceptedService<Channel, Bearer>>;

/// A FlowService client that sends `authorization: Bearer <key>`.
pub type FlowClient = FlowServiceClient<InterceptedService<Channel, Bearer>>;

/// A WorkspaceService client that sends `authorization: Bearer <key>`.
pub type WorkspaceClient = WorkspaceServiceClient<InterceptedService<Channel, Bearer>>;

/// Turns auto-close on (after `seconds`, telling the visitor `message` when
/// not empty) or off (None).
pub async fn set_auto_close(admin: &mut WorkspaceClient, seconds: Option<i64>, message: &str) {
    admin
        .update_workspace_settings(pb::UpdateWorkspaceSettingsRequest {
            settings: Some(pb::WorkspaceSettings {
                auto_close: seconds.map(|seconds| pb::AutoClose {
                    idle_duration: Some(prost_types::Duration { seconds, nanos: 0 }),
                    message: message.to_owned(),
                }),
            }),
        })
        .await
        .expect("update settings");
}

/// Adds the key to every call.
#[derive(Clone)]
pub struct Bearer(Option<String>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(key) = &self.0 {
            let value = format!("Bearer {key}")
                .parse()
                .map_err(|_| Status::internal("bad key"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// A running server and the keys of its `default` workspace.
pub struct TestApp {
    pub addr: SocketAddr,
    /// Where it serves metrics, when its settings ask for them.
    pub metrics_addr: Option<SocketAddr>,
    /// The database it serves.
    pub database: Location,
    pub agent_key: String,
    pub visitor_key: String,
    store: Store,
    core: App,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<Result<(), StartupError>>,
    dir: Arc<tempfile::TempDir>,
    /// The settings it was started with, for a restart.
    settings: Settings,
}

/// Default settings on no particular address or file (the helpers fill
/// them in), for tests that change one field.
pub fn default_settings() -> Settings {
    settings_with(FeedConfig::default(), LimitsConfig::default())
}

/// Settings on no particular address or file (the helpers fill them in).
fn settings_with(feed: FeedConfig, limits: LimitsConfig) -> Settings {
    Settings {
        feed,
        limits,
        ..Settings::new(
            "127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .expect("address"),
            PathBuf::new(),
        )
    }
}

impl TestApp {
    /// A server on a new database.
    pub async fn spawn() -> TestApp {
        Self::spawn_with_feed(FeedConfig::default()).await
    }

    /// A server on a new database whose event streams are tuned by `feed`
    /// (short heartbeats, a small buffer, a quick cut-off of slow clients).
    pub async fn spawn_with_feed(feed: FeedConfig) -> TestApp {
        Self::spawn_with(settings_with(feed, LimitsConfig::default())).await
    }

    /// A server on a new database that holds callers to `limits`.
    pub async fn spawn_with_limits(limits: LimitsConfig) -> TestApp {
        Self::spawn_with(settings_with(FeedConfig::default(), limits)).await
    }

    /// A server on a new database, started with `settings` (its address and
    /// file are the helper's).
    pub async fn spawn_with(settings: Settings) -> TestApp {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let database = fresh_database(dir.path()).await;
        Self::spawn_new(dir, database, settings).await
    }

    /// A server on a new SQLite file, whichever backend the suite runs on.
    pub async fn spawn_on_sqlite() -> TestApp {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let database = Location::File(dir.path().join("conversations.db"));
        let settings = settings_with(FeedConfig::default(), LimitsConfig::default());
        Self::spawn_new(dir, database, settings).await
    }

    /// A server on the new, empty `database`, with the keys it bootstraps.
    async fn spawn_new(
        dir: Arc<tempfile::TempDir>,
        database: Location,
        settings: Settings,
    ) -> TestApp {
        let (app, keys) = Self::start(dir, database, settings).await;
        let keys = keys.expect("a new database gets bootstrap keys");
        TestApp {
            agent_key: keys.agent.token,
            visitor_key: keys.visitor.token,
            ..app
        }
    }

    /// A second server on this one's database, with the same keys: a
    /// replica. None on a SQLite file, which one server serves.
    pub async fn replica(&self) -> Option<TestApp> {
        let Location::Postgres(_) = &self.database else {
            return None;
        };
        let (app, keys) = Self::start(
            self.dir.clone(),
            self.database.clone(),
            self.settings.clone(),
        )
        .await;
        assert!(keys.is_none(), "a replica must not bootstrap again");
        Some(TestApp {
            agent_key: self.agent_key.clone(),
            visitor_key: self.visitor_key.clone(),
            ..app
        })
    }

    /// A server on an existing database (which it migrates), with these
    /// keys of its `default` workspace.
    pub async fn spawn_on(
        dir: Arc<tempfile::TempDir>,
        database: Location,
        agent_key: String,
        visitor_key: String,
    ) -> TestApp {
        let settings = settings_with(FeedConfig::default(), LimitsConfig::default());
        let (app, keys) = Self::start(dir, database, settings).await;
        assert!(
            keys.is_none(),
            "an existing database gets no bootstrap keys"
        );
        TestApp {
            agent_key,
            visitor_key,
            ..app
        }
    }

    async fn start(
        dir: Arc<tempfile::TempDir>,
        database: Location,
        settings: Settings,
    ) -> (TestApp, Option<admin::BootstrapKeys>) {
        TRACING.call_once(|| {
            if std::env::var_os("TEST_LOG").is_some() {
                conversations::telemetry::init("debug", conversations::telemetry::LogFormat::Text);
            }
        });
        let settings = Settings {
            database: database.clone(),
            ..settings
        };
        let application = Application::build(&settings).await.expect("server builds");
        let keys = admin::bootstrap(application.app().store())
            .await
            .expect("bootstrap");
        let store = application.app().store().clone();
        let core = application.app().clone();
        let addr = application.local_addr();
        let metrics_addr = application.metrics_addr();
        let (shutdown, rx) = oneshot::channel();
        let server = tokio::spawn(application.run_until(async {
            let _ = rx.await;
        }));
        let app = TestApp {
            addr,
            metrics_addr,
            database,
            agent_key: String::new(),
            visitor_key: String::new(),
            store,
            core,
            shutdown,
            server,
            dir,
            settings,
        };
        (app, keys)
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(self) -> (Arc<tempfile::TempDir>, Location, String, String) {
        let _ = self.shutdown.send(());
        self.server
            .await
            .expect("server task")
            .expect("server stops cleanly");
        (self.dir, self.database, self.agent_key, self.visitor_key)
    }

    /// Stops the server and starts a new one on the same database file, with
    /// the same settings.
    pub async fn restart(self) -> TestApp {
        let settings = self.settings.clone();
        let (dir, database, agent_key, visitor_key) = self.stop().await;
        let (app, keys) = Self::start(dir, database, settings).await;
        assert!(keys.is_none(), "a restart must not bootstrap again");
        TestApp {
            agent_key,
            visitor_key,
            ..app
        }
    }

    /// A plaintext channel to the server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    /// A grpc.health.v1 client (health needs no key).
    pub async fn health(&self) -> tonic_health::pb::health_client::HealthClient<Channel> {
        tonic_health::pb::health_client::HealthClient::new(self.channel().await)
    }

    /// A client with the agent key over `channel` (e.g. one with TLS).
    pub fn agent_over(&self, channel: Channel) -> Client {
        ConversationServiceClient::with_interceptor(channel, Bearer(Some(self.agent_key.clone())))
    }

    /// A client with `key` (None: no authorization metadata).
    pub async fn client_with(&self, key: Option<&str>) -> Client {
        let channel = self.channel().await;
        ConversationServiceClient::with_interceptor(channel, Bearer(key.map(str::to_owned)))
    }

    /// A FlowService client with `key` (None: no authorization metadata).
    pub async fn flows_with(&self, key: Option<&str>) -> FlowClient {
        let channel = self.channel().await;
        FlowServiceClient::with_interceptor(channel, Bearer(key.map(str::to_owned)))
    }

    /// A FlowService client with a new admin key of the default workspace.
    pub async fn admin(&self) -> FlowClient {
        let (_, key) = self.new_key("default", Role::Admin).await;
        self.flows_with(Some(&key)).await
    }

    /// A WorkspaceService client with a new admin key of the default
    /// workspace.
    pub async fn settings_admin(&self) -> WorkspaceClient {
        let (_, key) = self.new_key("default", Role::Admin).await;
        self.settings_with(Some(&key)).await
    }

    /// A WorkspaceService client with `key` (None: no authorization).
    pub async fn settings_with(&self, key: Option<&str>) -> WorkspaceClient {
        let channel = self.channel().await;
        WorkspaceServiceClient::with_interceptor(channel, Bearer(key.map(str::to_owned)))
    }

    /// A client with the default workspace's agent key.
    pub async fn agent(&self) -> Client {
        self.client_with(Some(&self.agent_key)).await
    }

    /// A client with the default workspace's visitor key.
    pub async fn visitor(&self) -> Client {
        self.client_with(Some(&self.visitor_key)).await
    }

    /// Creates another workspace; returns its (agent, visitor) keys.
    pub async fn new_workspace(&self, name: &str) -> (String, String) {
        admin::create_workspace(&self.store, name)
            .await
            .expect("workspace");
        let agent = admin::create_key(&self.store, name, Role::Agent)
            .await
            .expect("agent key");
        let visitor = admin::create_key(&self.store, name, Role::Visitor)
            .await
            .expect("visitor key");
        (agent.token, visitor.token)
    }

    /// Creates a key in an existing workspace.
    pub async fn new_key(&self, workspace: &str, role: Role) -> (String, String) {
        let key = admin::create_key(&self.store, workspace, role)
            .await
            .expect("key");
        (key.key_id, key.token)
    }

    /// Revokes a key, as the command line does beside a running server, and
    /// waits out the time the server promises to notice it in (one second).
    pub async fn revoke(&self, key_id: &str) {
        admin::revoke_key(&self.store, key_id)
            .await
            .expect("revoke");
        tokio::time::sleep(std::time::Duration::from_secs(1).max(REVOCATION_POLL * 4)).await;
    }

    /// The server's store, for tests that write as the command line does.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The server's own use cases, for tests that drive them directly.
    pub fn core(&self) -> &App {
        &self.core
    }

    /// The newest event sequence of the `default` workspace in the
    /// database (to check what a mutation appended).
    pub async fn max_event_sequence(&self) -> i64 {
        self.workspace_head("default").await
    }

    /// The newest event sequence of the workspace `name` in the database.
    pub async fn workspace_head(&self, name: &str) -> i64 {
        let workspace = self
            .store
            .find_workspace(name)
            .await
            .expect("workspace")
            .expect("the workspace exists");
        self.store
            .tally(workspace)
            .await
            .expect("counters")
            .event_head
    }
}

/// Reads a stream until it ends with a status (within 10 s), which it
/// returns; a stream that ends without one fails the test.
pub async fn end_status<T>(stream: &mut tonic::Streaming<T>) -> Status {
    use tokio_stream::StreamExt;
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => return status,
                None => panic!("the stream ended without a status"),
            }
        }
    })
    .await
    .expect("the stream ends within 10 s")
}

/// An agent reference.
pub fn agent_ref(id: &str, name: &str, channel: pb::Channel) -> pb::AgentRef {
    pb::AgentRef {
        agent_id: id.to_owned(),
        display_name: name.to_owned(),
        channel: channel.into(),
    }
}

/// Dana, from Slack.
pub fn dana() -> pb::AgentRef {
    agent_ref("agent-dana", "Dana", pb::Channel::Slack)
}

/// Starts a conversation with `visitor_id` (no agent) and returns it.
pub async fn start(client: &mut Client, visitor_id: &str) -> pb::Conversation {
    client
        .start_conversation(pb::StartConversationRequest {
            visitor_id: visitor_id.to_owned(),
            ..Default::default()
        })
        .await
        .expect("start")
        .into_inner()
        .conversation
        .expect("conversation")
}

/// The sender "the conversation's visitor `visitor_id`".
pub fn as_visitor(visitor_id: &str) -> Sender {
    Sender::VisitorId(visitor_id.to_owned())
}

// Requests, built but not sent: for calls a test expects to be refused, or
// sends itself.

/// GetConversation of `id`; `visitor_id` empty for agent keys.
pub fn get_request(id: &str, visitor_id: &str) -> pb::GetConversationRequest {
    pb::GetConversationRequest {
        conversation_id: id.to_owned(),
        visitor_id: visitor_id.to_owned(),
    }
}

/// ListMessages of `id` (default page size); `visitor_id` empty for agent
/// keys.
pub fn list_messages_request(id: &str, visitor_id: &str) -> pb::ListMessagesRequest {
    pb::ListMessagesRequest {
        conversation_id: id.to_owned(),
        visitor_id: visitor_id.to_owned(),
        ..Default::default()
    }
}

/// SendMessage of the text `text` from `sender`, with `request_id` ("" for
/// none).
pub fn text_request(
    id: &str,
    sender: Sender,
    text: &str,
    request_id: &str,
) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        conversation_id: id.to_owned(),
        sender: Some(sender),
        content: Some(Content::Text(text.to_owned())),
        request_id: request_id.to_owned(),
        audience: 0,
    }
}

/// SendMessage of the text "hello" from `sender`, without a request id.
pub fn hello_request(id: &str, sender: Sender) -> pb::SendMessageRequest {
    text_request(id, sender, "hello", "")
}

/// CloseConversation of `id` by `agent`, without etag or request id.
pub fn close_request(id: &str, agent: pb::AgentRef) -> pb::CloseConversationRequest {
    pb::CloseConversationRequest {
        conversation_id: id.to_owned(),
        agent: Some(agent),
        ..Default::default()
    }
}

/// MarkConversationPending of `id` by `agent`, without etag or request id.
pub fn mark_pending_request(id: &str, agent: pb::AgentRef) -> pb::MarkConversationPendingRequest {
    pb::MarkConversationPendingRequest {
        conversation_id: id.to_owned(),
        agent: Some(agent),
        ..Default::default()
    }
}

/// ReopenConversation of `id` by `agent`, without etag or request id.
pub fn reopen_request(id: &str, agent: pb::AgentRef) -> pb::ReopenConversationRequest {
    pb::ReopenConversationRequest {
        conversation_id: id.to_owned(),
        agent: Some(agent),
        ..Default::default()
    }
}

/// RestartConversation of `id` as its visitor `visitor_id`, without a request
/// id.
pub fn restart_request(id: &str, visitor_id: &str) -> pb::RestartConversationRequest {
    pb::RestartConversationRequest {
        conversation_id: id.to_owned(),
        visitor_id: visitor_id.to_owned(),
        request_id: String::new(),
    }
}

// Calls that must succeed: each panics, naming the call, if it is refused.

/// The conversation `id` as `client` sees it; `visitor_id` empty for agent
/// keys.
pub async fn get(client: &mut Client, id: &str, visitor_id: &str) -> pb::Conversation {
    client
        .get_conversation(get_request(id, visitor_id))
        .await
        .expect("get")
        .into_inner()
        .conversation
        .expect("conversation")
}

/// The whole thread (up to 500 messages) as `client` sees it; `visitor_id`
/// empty for agent keys.
pub async fn thread(client: &mut Client, id: &str, visitor_id: &str) -> Vec<pb::Message> {
    client
        .list_messages(pb::ListMessagesRequest {
            page_size: 500,
            ..list_messages_request(id, visitor_id)
        })
        .await
        .expect("list messages")
        .into_inner()
        .messages
}

/// One page of ListConversations.
pub async fn list(
    client: &mut Client,
    request: pb::ListConversationsRequest,
) -> pb::ListConversationsResponse {
    client
        .list_conversations(request)
        .await
        .expect("list conversations")
        .into_inner()
}

/// Every conversation `client` may list (up to 500), unfiltered.
pub async fn list_all(client: &mut Client) -> pb::ListConversationsResponse {
    list(
        client,
        pb::ListConversationsRequest {
            page_size: 500,
            ..Default::default()
        },
    )
    .await
}

/// The ids of `conversations`, in order.
pub fn ids(conversations: &[pb::Conversation]) -> Vec<String> {
    conversations
        .iter()
        .map(|c| c.conversation_id.clone())
        .collect()
}

/// Closes `id` as `agent`.
pub async fn close(
    client: &mut Client,
    id: &str,
    agent: pb::AgentRef,
) -> pb::CloseConversationResponse {
    client
        .close_conversation(close_request(id, agent))
        .await
        .expect("close")
        .into_inner()
}

/// Gives `id` to `assignee` (None: nobody), as `agent`.
pub async fn assign(
    client: &mut Client,
    id: &str,
    agent: pb::AgentRef,
    assignee: Option<pb::AgentRef>,
) -> pb::AssignConversationResponse {
    client
        .assign_conversation(pb::AssignConversationRequest {
            conversation_id: id.to_owned(),
            agent: Some(agent),
            assignee,
            ..Default::default()
        })
        .await
        .expect("assign")
        .into_inner()
}

/// Marks `id` pending as `agent`.
pub async fn mark_pending(
    client: &mut Client,
    id: &str,
    agent: pb::AgentRef,
) -> pb::MarkConversationPendingResponse {
    client
        .mark_conversation_pending(mark_pending_request(id, agent))
        .await
        .expect("mark pending")
        .into_inner()
}

/// Reopens `id` as `agent`.
pub async fn reopen(
    client: &mut Client,
    id: &str,
    agent: pb::AgentRef,
) -> pb::ReopenConversationResponse {
    client
        .reopen_conversation(reopen_request(id, agent))
        .await
        .expect("reopen")
        .into_inner()
}

/// The ErrorInfo reason of a status ("" if none).
pub fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

/// The BadRequest field names of a status.
pub fn bad_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|br| br.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// `message` as a visitor key is shown it: the same, except that an agent's
/// channel is never named.
pub fn as_seen_by_visitor(message: &pb::Message) -> pb::Message {
    fn scrub(author: &mut Option<pb::Author>) {
        if let Some(author) = author
            && author.kind() == pb::AuthorKind::Agent
        {
            author.channel = pb::Channel::Unspecified.into();
        }
    }
    let mut seen = message.clone();
    scrub(&mut seen.author);
    if let Some(pb::message::Content::Transactional(t)) = &mut seen.content {
        scrub(&mut t.actor);
    }
    seen
}

/// The text `GET /metrics` answers at `addr`, through a plain HTTP/1.1
/// request (as Prometheus scrapes).
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: metrics\r\nconnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain"), "{head}");
    body.to_owned()
}

/// The value of the series `series` (name and labels as printed), or 0.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Every sequence of the `default` workspace's feed, paged from 0.
pub async fn all_sequences(client: &mut Client) -> Vec<i64> {
    let mut after = 0;
    let mut sequences = Vec::new();
    loop {
        let page = client
            .list_events(pb::ListEventsRequest {
                after_sequence: after,
                page_size: 500,
                ..Default::default()
            })
            .await
            .expect("list events")
            .into_inner();
        sequences.extend(page.events.iter().map(|e| e.sequence));
        if page.next_after_sequence >= page.head_sequence {
            return sequences;
        }
        after = page.next_after_sequence;
    }
}
