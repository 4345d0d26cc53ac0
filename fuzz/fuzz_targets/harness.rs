//! The server's use cases in-process for the fuzz targets: one App on a
//! real SQLite file (on /dev/shm when there is one, so that fsync is
//! cheap), two workspaces with a few conversations, messages and events,
//! and the gRPC handlers called directly (the transport is the hostile-input
//! test's). Built once per process.

use std::sync::OnceLock;

use conversations::{
    app::{App, LimitsConfig, admin},
    domain::credentials::Role,
    feed::FeedConfig,
    grpc::{ConversationsApi, FlowsApi, WorkspacesApi},
    pb::{self, conversation_service_server::ConversationService},
    store::Store,
};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

/// What the fuzz targets call (each target uses some of it).
#[allow(dead_code)]
pub struct Harness {
    pub runtime: tokio::runtime::Runtime,
    pub api: ConversationsApi,
    pub flows: FlowsApi,
    pub workspaces: WorkspacesApi,
    /// Keys of workspace `default`: agent, visitor, admin.
    pub keys: [String; 3],
    /// An agent key of workspace `other`.
    pub other_key: String,
    /// A visitor session token of `default`'s visitor `v-0`.
    pub session: String,
    /// Conversations of `default` and their visitors.
    pub conversations: Vec<(String, String)>,
    /// A conversation of `other`.
    pub foreign: String,
    _dir: tempfile::TempDir,
}

static HARNESS: OnceLock<Harness> = OnceLock::new();

pub fn get() -> &'static Harness {
    HARNESS.get_or_init(build)
}

fn build() -> Harness {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm"),
        false => tempfile::tempdir(),
    }
    .expect("temp dir");
    let db = dir.path().join("fuzz.db");
    let (app, keys, other_key) = runtime.block_on(async {
        let store = Store::open_to_serve(&db.into()).await.expect("store");
        let boot = admin::bootstrap(&store)
            .await
            .expect("bootstrap")
            .expect("keys");
        let admin_key = admin::create_key(&store, admin::DEFAULT_WORKSPACE, Role::Admin)
            .await
            .expect("admin key");
        admin::create_workspace(&store, "other")
            .await
            .expect("workspace");
        let other = admin::create_key(&store, "other", Role::Agent)
            .await
            .expect("key");
        let limits = LimitsConfig {
            // Streams are opened and dropped at once; never hit the cap.
            max_streams: 1_000_000,
            max_streams_per_key: 1_000_000,
            workspace_calls_per_second: None,
        };
        let app = App::start(store, FeedConfig::default(), limits)
            .await
            .expect("app");
        (
            app,
            [boot.agent.token, boot.visitor.token, admin_key.token],
            other.token,
        )
    });
    let api = ConversationsApi::new(app.clone());
    let flows = FlowsApi::new(app.clone());
    let workspaces = WorkspacesApi::new(app);
    let mut harness = Harness {
        runtime,
        api,
        flows,
        workspaces,
        keys,
        other_key,
        session: String::new(),
        conversations: Vec::new(),
        foreign: String::new(),
        _dir: dir,
    };
    harness.seed();
    harness
}

impl Harness {
    /// A request with `authorization: Bearer <key>`.
    pub fn request<T>(&self, key: &str, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Ok(value) = format!("Bearer {key}").parse() {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    /// The key a fuzz byte picks: agent, visitor, admin, another
    /// workspace's agent, a visitor session, or a malformed key or token.
    pub fn key(&self, pick: u8) -> &str {
        match pick % 7 {
            0 => &self.keys[0],
            1 => &self.keys[1],
            2 => &self.keys[2],
            3 => &self.other_key,
            4 => &self.session,
            5 => "cvs_e30.AAAA",
            _ => "cvk_0000000000000000_garbage",
        }
    }

    /// A conversation id a fuzz byte picks: one of ours, another
    /// workspace's, or `fuzzed`.
    pub fn conversation<'a>(&'a self, pick: u8, fuzzed: &'a str) -> &'a str {
        let n = self.conversations.len();
        match usize::from(pick) % (n + 2) {
            i if i < n => &self.conversations[i].0,
            i if i == n => &self.foreign,
            _ => fuzzed,
        }
    }

    fn seed(&mut self) {
        let agent = self.keys[0].clone();
        for i in 0..4 {
            let visitor = format!("v-{i}");
            let started = self
                .runtime
                .block_on(self.api.start_conversation(self.request(
                    &agent,
                    pb::StartConversationRequest {
                        visitor_id: visitor.clone(),
                        ..Default::default()
                    },
                )))
                .expect("seed start")
                .into_inner();
            let id = started.conversation.expect("conversation").conversation_id;
            for text in ["hello", "how can we help?", "a demo please"] {
                self.runtime
                    .block_on(self.api.send_message(self.request(
                        &agent,
                        pb::SendMessageRequest {
                            conversation_id: id.clone(),
                            sender: Some(pb::send_message_request::Sender::VisitorId(
                                visitor.clone(),
                            )),
                            content: Some(pb::send_message_request::Content::Text(text.into())),
                            request_id: String::new(),
                            audience: 0,
                        },
                    )))
                    .expect("seed message");
            }
            self.conversations.push((id, visitor));
        }
        let other = self.other_key.clone();
        self.foreign = self
            .runtime
            .block_on(self.api.start_conversation(self.request(
                &other,
                pb::StartConversationRequest {
                    visitor_id: "v-0".into(),
                    ..Default::default()
                },
            )))
            .expect("seed foreign")
            .into_inner()
            .conversation
            .expect("conversation")
            .conversation_id;
        let visitor = self.keys[1].clone();
        self.session = self
            .runtime
            .block_on(self.api.create_visitor_session(self.request(
                &visitor,
                pb::CreateVisitorSessionRequest {
                    visitor_id: "v-0".into(),
                    ttl: None,
                },
            )))
            .expect("seed session")
            .into_inner()
            .token;
    }
}

/// What every refusal must be: a status that blames the caller (or says
/// what limit was met), never INTERNAL or UNKNOWN, with an ErrorInfo reason.
pub fn check_refusal(status: &Status) {
    assert!(
        !matches!(status.code(), Code::Internal | Code::Unknown | Code::Ok),
        "a refusal with code {:?}: {status:?}",
        status.code()
    );
    assert!(
        status
            .get_details_error_info()
            .is_some_and(|info| !info.reason.is_empty()),
        "a refusal without an ErrorInfo reason: {status:?}"
    );
}
