//! The command line. Every flag can also come from an environment variable,
//! and the defaults run the service with no flags at all.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    app::{LimitsConfig, timers::TimerConfig},
    connections::ConnectionTimeouts,
    domain::credentials::Role,
    feed::FeedConfig,
    store::Location,
    telemetry::LogFormat,
};

/// Live-chat conversation status lifecycle over gRPC.
#[derive(Debug, Parser)]
#[command(name = "conversations", version, about)]
pub struct Cli {
    /// The database: a SQLite file (created with its schema when missing),
    /// or a `postgres://` / `postgresql://` URL, which any number of servers
    /// may share.
    #[arg(
        long,
        env = "CONVERSATIONS_DATABASE",
        default_value = "./conversations.db",
        global = true
    )]
    pub database: Location,
    /// How logs (on stderr) are written: `text` for people, `json` for log
    /// pipelines (one object per line).
    #[arg(
        long,
        env = "CONVERSATIONS_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server. On an empty database, creates workspace `default`
    /// and prints one agent key and one visitor key, once.
    Serve(ServeArgs),
    /// Manage workspaces.
    Workspace {
        /// What to do with workspaces.
        #[command(subcommand)]
        command: WorkspaceCommand,
    },
    /// Manage API keys.
    Key {
        /// What to do with keys.
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Manage conversation flows (the bot playbook).
    Flow {
        /// What to do with flows.
        #[command(subcommand)]
        command: FlowCommand,
    },
    /// Print links that open the demo chat widget and Inbox (examples/web)
    /// against a running server: makes an agent key and a visitor key, and
    /// asks the server for a visitor session, as a site's backend would.
    /// Serve the pages with `serve --web-root examples/web/dist`.
    Demo {
        /// The running server, as a browser on this machine reaches it.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        server: String,
        /// Where the pages are served, when not by the server itself; the
        /// server must then admit that origin (`--cors-origin`).
        #[arg(long)]
        pages: Option<String>,
        /// The workspace the demo keys are made in.
        #[arg(long, env = "CONVERSATIONS_WORKSPACE", default_value = "default")]
        workspace: String,
        /// The visitor the widget's session acts as.
        #[arg(long, default_value = "demo-visitor")]
        visitor_id: String,
        /// Also open both links in the desktop's browser.
        #[arg(long)]
        open: bool,
    },
    /// Copy every row of a database into an empty one (a SQLite file into
    /// PostgreSQL, typically): workspaces, key hashes, conversations,
    /// messages, events with their sequences, request ids and flows, so keys,
    /// etags and cursors keep working. Stop the servers of the source first.
    Migrate {
        /// The database to copy: a SQLite file or a PostgreSQL URL.
        #[arg(long)]
        from: Location,
        /// The empty database to copy into (migrated first).
        #[arg(long)]
        to: Location,
    },
}

/// Flow subcommands.
#[derive(Debug, Subcommand)]
pub enum FlowCommand {
    /// Create a flow from a TOML or JSON file, or write a new version of the
    /// flow the file names with `flow_id`; `default = true` makes it the
    /// workspace default.
    Apply {
        /// The flow file (`.json` for JSON, anything else for TOML).
        file: PathBuf,
        /// The workspace the flow belongs to.
        #[arg(long, env = "CONVERSATIONS_WORKSPACE", default_value = "default")]
        workspace: String,
    },
    /// List a workspace's flows: the newest version of each, and which one
    /// is the default.
    List {
        /// The workspace.
        #[arg(long, env = "CONVERSATIONS_WORKSPACE", default_value = "default")]
        workspace: String,
    },
}

/// Flags of `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The address to listen on, as `host:port`: an IP address
    /// (`0.0.0.0:50051`, `[::]:50051`) or a host name (`localhost:50051`,
    /// bound at its first address that binds); port 0 picks a free port.
    #[arg(long, env = "CONVERSATIONS_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: ListenAddress,
    /// Seconds an idle event stream waits before sending a checkpoint.
    #[arg(long, env = "CONVERSATIONS_HEARTBEAT_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_seconds: u64,
    /// Seconds an event stream may make no progress before it is ended as
    /// too slow (RESOURCE_EXHAUSTED, SUBSCRIBER_TOO_SLOW).
    #[arg(long, env = "CONVERSATIONS_SLOW_SUBSCRIBER_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub slow_subscriber_seconds: u64,
    /// Recent events each workspace keeps in memory for its streams; a stream
    /// further behind catches up from the database.
    #[arg(long, env = "CONVERSATIONS_FEED_WINDOW_EVENTS", default_value_t = 8192, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub feed_window_events: u64,
    /// Event streams open at once on this server; more are refused with
    /// RESOURCE_EXHAUSTED `TOO_MANY_STREAMS`.
    #[arg(long, env = "CONVERSATIONS_MAX_STREAMS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_streams: u64,
    /// Event streams open at once with one key (a widget backend holds one
    /// per open widget with its visitor key).
    #[arg(long, env = "CONVERSATIONS_MAX_STREAMS_PER_KEY", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_streams_per_key: u64,
    /// Calls per second each workspace may make, in bursts of as many; more
    /// are refused with RESOURCE_EXHAUSTED `RATE_LIMITED` and a RetryInfo.
    /// 0 (the default): no limit.
    #[arg(
        long,
        env = "CONVERSATIONS_WORKSPACE_CALLS_PER_SECOND",
        default_value_t = 0
    )]
    pub workspace_calls_per_second: u32,
    /// Seconds after which a connection is asked to go away (HTTP/2 GOAWAY),
    /// so that clients spread over new servers; its calls get a minute more
    /// to finish, and event streams resume from their cursor. 0: never.
    #[arg(
        long,
        env = "CONVERSATIONS_MAX_CONNECTION_AGE_SECONDS",
        default_value_t = 0
    )]
    pub max_connection_age_seconds: u64,
    /// Seconds a connection may go with no byte either way before it is
    /// closed (an HTTP/1.1 keep-alive connection, a socket left open).
    /// Event streams send a checkpoint every heartbeat and HTTP/2 pings
    /// every 30 s, so connections in use are never idle; it must be longer
    /// than --heartbeat-seconds.
    #[arg(long, env = "CONVERSATIONS_CONNECTION_IDLE_SECONDS", default_value_t = crate::connections::DEFAULT_IDLE.as_secs(), value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub connection_idle_seconds: u64,
    /// Serve TLS with this PEM certificate chain (with --tls-key); plaintext
    /// clients are then refused.
    #[arg(long, env = "CONVERSATIONS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "CONVERSATIONS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA (mutual TLS).
    #[arg(long, env = "CONVERSATIONS_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Seconds a server's claim on a due timer (a snooze's end, an
    /// auto-close) keeps other servers away: if that server dies, another
    /// fires the timer this much later at most.
    #[arg(long, env = "CONVERSATIONS_TIMER_LEASE_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timer_lease_seconds: u64,
    /// Seconds a shutdown (SIGTERM, Ctrl-C) gives the calls in flight to
    /// finish, after health turns NOT_SERVING and event streams are told to
    /// end; calls still open then are cut. Keep it below your orchestrator's
    /// own grace (Kubernetes: 30 s).
    #[arg(long, env = "CONVERSATIONS_SHUTDOWN_GRACE", default_value_t = DEFAULT_SHUTDOWN_GRACE.as_secs(), value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_grace: u64,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (plain HTTP:
    /// keep it on a private interface). Off when not given.
    #[arg(long, env = "CONVERSATIONS_METRICS_LISTEN")]
    pub metrics_listen: Option<ListenAddress>,
    /// Admit browsers of this origin (`https://www.example.com`, scheme,
    /// host and port only) to call over grpc-web. Repeat it for each site;
    /// the environment variable takes them comma-separated. None by
    /// default: no cross-origin browser is admitted until you name it.
    #[arg(
        long = "cors-origin",
        env = "CONVERSATIONS_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<CorsOrigin>,
    /// Serve the static files of this directory (e.g. the demo widget and
    /// Inbox, examples/web/dist) to GET requests on the same port; their
    /// pages then call grpc-web from the server's own origin.
    #[arg(long, env = "CONVERSATIONS_WEB_ROOT")]
    pub web_root: Option<PathBuf>,
}

impl ServeArgs {
    /// The stream tuning these flags ask for.
    pub fn feed(&self) -> FeedConfig {
        FeedConfig {
            heartbeat: std::time::Duration::from_secs(self.heartbeat_seconds),
            slow_after: std::time::Duration::from_secs(self.slow_subscriber_seconds),
            window: usize::try_from(self.feed_window_events).unwrap_or(usize::MAX),
            ..FeedConfig::default()
        }
    }

    /// The caller limits these flags ask for.
    pub fn limits(&self) -> LimitsConfig {
        LimitsConfig {
            max_streams: usize::try_from(self.max_streams).unwrap_or(usize::MAX),
            max_streams_per_key: usize::try_from(self.max_streams_per_key).unwrap_or(usize::MAX),
            workspace_calls_per_second: std::num::NonZeroU32::new(self.workspace_calls_per_second),
        }
    }

    /// The server settings these flags ask for, on `database`.
    pub fn settings(&self, database: Location) -> Settings {
        Settings {
            feed: self.feed(),
            limits: self.limits(),
            max_connection_age: (self.max_connection_age_seconds > 0)
                .then(|| std::time::Duration::from_secs(self.max_connection_age_seconds)),
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.tls_client_ca.clone(),
                }),
                _ => None,
            },
            timers: TimerConfig {
                lease: std::time::Duration::from_secs(self.timer_lease_seconds),
            },
            shutdown_grace: std::time::Duration::from_secs(self.shutdown_grace),
            connections: ConnectionTimeouts {
                idle: std::time::Duration::from_secs(self.connection_idle_seconds),
                ..ConnectionTimeouts::default()
            },
            metrics_listen: self.metrics_listen.clone(),
            cors_origins: self.cors_origins.clone(),
            web_root: self.web_root.clone(),
            ..Settings::new(self.listen.clone(), database)
        }
    }
}

/// Workspace subcommands.
#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// List the workspaces, with their conversations per status and their
    /// active keys.
    List,
    /// Create a workspace (a tenant: its data is invisible to other workspaces).
    Create {
        /// 1 to 64 characters of a-z, 0-9, '-' and '_'.
        name: String,
    },
    /// Show a workspace's settings, or change them: `--auto-close-after 30m`
    /// closes conversations nobody wrote in for 30 minutes (`off` turns it
    /// off); `--auto-close-message` is what the visitor is told first.
    Settings {
        /// The workspace.
        #[arg(long, env = "CONVERSATIONS_WORKSPACE", default_value = "default")]
        workspace: String,
        /// Idle time before auto-close, as `90s`, `30m`, `2h`, `7d`, or
        /// `off`. Unchanged when not given.
        #[arg(long)]
        auto_close_after: Option<String>,
        /// What the visitor is told when auto-close closes their
        /// conversation; empty for nothing. Unchanged when not given.
        #[arg(long)]
        auto_close_message: Option<String>,
    },
}

/// Key subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key and print it once; only its hash is stored.
    Create {
        /// The workspace the key belongs to.
        #[arg(long, env = "CONVERSATIONS_WORKSPACE", default_value = "default")]
        workspace: String,
        /// What the key may do.
        #[arg(long, value_enum)]
        role: KeyRole,
    },
    /// List keys (of one workspace, or of all): id, workspace, role, when
    /// made and when revoked. A key's secret is never stored, so never shown.
    List {
        /// Only this workspace's keys.
        #[arg(long, env = "CONVERSATIONS_WORKSPACE")]
        workspace: Option<String>,
    },
    /// Revoke a key, named by its id (the 16 hex digits after `cvk_`) or whole.
    Revoke {
        /// The key id or the key.
        key: String,
    },
}

/// A key's role, as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyRole {
    /// Inbox, Slack and Teams backends: every call, every message.
    Agent,
    /// The widget's backend: acts as visitors, sees what visitors see.
    Visitor,
    /// Workspace administration: manages flows (FlowService).
    Admin,
}

impl From<KeyRole> for Role {
    fn from(role: KeyRole) -> Self {
        match role {
            KeyRole::Agent => Role::Agent,
            KeyRole::Visitor => Role::Visitor,
            KeyRole::Admin => Role::Admin,
        }
    }
}

/// Where a server listens: a host (an IP address or a name) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddress {
    host: String,
    port: u16,
}

impl ListenAddress {
    /// The addresses to try, in the resolver's order.
    pub async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .collect())
    }
}

impl std::str::FromStr for ListenAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("{text:?} is not host:port (e.g. 127.0.0.1:50051, [::]:50051, localhost:50051)")
        };
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse().map_err(|_| bad())?;
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.strip_suffix(']').ok_or_else(bad)?,
            None if host.contains(':') => return Err(bad()),
            None => host,
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl From<SocketAddr> for ListenAddress {
    fn from(addr: SocketAddr) -> Self {
        Self {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl std::fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// How long a shutdown waits for calls in flight unless told otherwise (a
/// client that stopped reading its stream cannot hold the server up longer).
pub const DEFAULT_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// What the server needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen.
    pub listen: ListenAddress,
    /// The database.
    pub database: Location,
    /// How event streams are tuned.
    pub feed: FeedConfig,
    /// What callers are held to.
    pub limits: LimitsConfig,
    /// When connections are asked to go away; `None`: never.
    pub max_connection_age: Option<std::time::Duration>,
    /// TLS, when served with it.
    pub tls: Option<TlsFiles>,
    /// How due timers are claimed.
    pub timers: TimerConfig,
    /// How long a shutdown waits for calls in flight.
    pub shutdown_grace: std::time::Duration,
    /// How long a connection may keep the server waiting.
    pub connections: ConnectionTimeouts,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_listen: Option<ListenAddress>,
    /// The browser origins admitted to call over grpc-web (CORS).
    pub cors_origins: Vec<CorsOrigin>,
    /// Static files served to GET requests, if any.
    pub web_root: Option<PathBuf>,
}

/// A browser origin: `scheme://host[:port]`, as browsers send it in the
/// `Origin` header (no path, no trailing slash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsOrigin(String);

impl CorsOrigin {
    /// The origin as browsers write it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for CorsOrigin {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let refuse = |why: &str| {
            Err(format!(
                "{text:?} is not an origin ({why}): give scheme, host and port only, e.g. https://www.example.com or http://localhost:8080"
            ))
        };
        let Ok(url) = url::Url::parse(text) else {
            return refuse("not a URL");
        };
        if !matches!(url.scheme(), "http" | "https") {
            return refuse("the scheme must be http or https");
        }
        if url.host_str().is_none() || !url.username().is_empty() || url.password().is_some() {
            return refuse("it needs a host and no user");
        }
        // `Url` adds a "/" path to a bare origin; anything more is a path.
        if url.path() != "/"
            || url.query().is_some()
            || url.fragment().is_some()
            || text.ends_with('/')
        {
            return refuse("it has a path");
        }
        // As browsers serialise it: lowercase host, default port left out.
        Ok(Self(url.origin().ascii_serialization()))
    }
}

/// The PEM files TLS is served with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// When set, clients must present a certificate this CA signed.
    pub client_ca: Option<PathBuf>,
}

impl Settings {
    /// Serving `database` on `listen`, with every default.
    pub fn new(listen: impl Into<ListenAddress>, database: impl Into<Location>) -> Self {
        Self {
            listen: listen.into(),
            database: database.into(),
            feed: FeedConfig::default(),
            limits: LimitsConfig::default(),
            max_connection_age: None,
            tls: None,
            timers: TimerConfig::default(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            connections: ConnectionTimeouts::default(),
            metrics_listen: None,
            cors_origins: Vec::new(),
            web_root: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cors_origin_is_a_scheme_a_host_and_a_port_as_browsers_write_it() {
        for (text, origin) in [
            ("https://www.example.com", "https://www.example.com"),
            ("http://localhost:8080", "http://localhost:8080"),
            ("HTTPS://Example.COM:443", "https://example.com"),
            ("http://127.0.0.1:5173", "http://127.0.0.1:5173"),
        ] {
            assert_eq!(text.parse::<CorsOrigin>().unwrap().as_str(), origin);
        }
        for text in [
            "",
            "*",
            "example.com",
            "https://example.com/",
            "https://example.com/widget",
            "https://example.com?x=1",
            "ftp://example.com",
            "https://user@example.com",
        ] {
            assert!(text.parse::<CorsOrigin>().is_err(), "{text}");
        }
    }

    #[test]
    fn a_listen_address_is_an_ip_or_a_host_name_with_a_port() {
        for (text, shown) in [
            ("127.0.0.1:50051", "127.0.0.1:50051"),
            ("localhost:0", "localhost:0"),
            ("[::]:50051", "[::]:50051"),
            ("[::1]:7", "[::1]:7"),
            ("chat.internal:443", "chat.internal:443"),
        ] {
            let parsed: ListenAddress = text.parse().expect(text);
            assert_eq!(parsed.to_string(), shown);
        }
        for bad in [
            "localhost",
            ":50051",
            "::1:50051",
            "[::1:5",
            "host:port",
            "host:70000",
            "",
        ] {
            let refused = bad.parse::<ListenAddress>().expect_err(bad);
            assert!(refused.contains("host:port"), "{refused}");
        }
    }
}
