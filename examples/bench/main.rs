//! The scale benchmark: `cargo run --release --example bench -- [--smoke] [flags]`.
//!
//! The server under test runs as a child process (this binary run again with
//! a hidden `--serve-child DB`), so that its memory can be read from
//! `/proc/<pid>/status` and the bench's own clients do not count. Before the
//! child starts, the database is seeded in this process through the library's
//! write path (`App::execute` from many tasks): a million realistic
//! conversations without a second copy of the SQL.
//!
//! Phases, each a row of the table and a field of the JSON:
//! 1. ceilings, measured in the same run: the child's `Health/Check` rate
//!    (the transport) and a plain sqlx loop, one transaction per "mutation"
//!    (the naive storage baseline);
//! 2. lifecycle mutations (start, visitor message, mark pending, visitor
//!    reply, close, reopen) at 1, 16 and 64 in flight;
//! 3. fan-out: widget streams (one per conversation) plus Inbox streams (the
//!    whole workspace) while 64 writers cycle over those conversations; every
//!    stream's events are checked against `ListEvents` for its filter; then
//!    the same with 10,000 streams;
//! 4. server memory per idle stream (child RSS before and after opening them);
//! 5. catch-up: one stream from sequence 0 until its first checkpoint;
//! 6. `ListConversations` latency on the seeded workspace.
//!
//! With `--database postgres://…` the bench runs on PostgreSQL instead, with
//! `--replicas` servers on one database: see [`postgres`].
//!
//! Figures, not assertions: each target is printed as met or missed and
//! nothing fails because the machine is slow. `--smoke` runs every phase for
//! about a second on tiny sizes (CI) and writes its output under
//! `target/bench/` only.

use std::{
    collections::HashSet,
    future::Future,
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use conversations::{
    app::{Caller, admin},
    config::Settings,
    domain::{
        Audience, Command, MessageContent,
        credentials::Role,
        lifecycle::{AgentAction, Sender},
        values::{AgentId, AgentRef, Channel, ConversationId, DisplayName, MessageText, VisitorId},
    },
    pb::{
        self,
        conversation_service_client::ConversationServiceClient,
        send_message_request::{Content, Sender as PbSender},
        watch_events_response::Item,
    },
    startup::{Application, shutdown_signal},
    store::Location,
};
use serde::Serialize;
use sqlx::sqlite::SqlitePoolOptions;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::{Semaphore, watch},
    task::JoinSet,
};
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    transport::Channel as GrpcChannel,
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

mod postgres;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;
type Client = ConversationServiceClient<GrpcChannel>;

/// In-flight levels of the lifecycle phase.
const IN_FLIGHT: [usize; 3] = [1, 16, 64];
/// Writers of the fan-out phases.
const FAN_OUT_WRITERS: usize = 64;
/// Streams opening at once: more would only queue on the server's readers.
const OPENING_AT_ONCE: usize = 256;
/// How long streams may take to deliver the last write before the bench
/// stops waiting and counts what is missing.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a catch-up may take before the bench reports what it got.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(300);
/// How often a stream ended by the server is resumed before giving up.
const MAX_RESUMES: usize = 20;

/// Targets printed next to the figures.
const TARGET_SHARE_OF_HEALTH: f64 = 0.25;
const TARGET_TIMES_NAIVE: f64 = 5.0;
const TARGET_SHARE_WITH_STREAMS: f64 = 0.80;
const TARGET_DELIVERY_P99_MS: f64 = 25.0;
const TARGET_KIB_PER_STREAM: f64 = 16.0;
const TARGET_CATCH_UP_PER_SECOND: f64 = 400_000.0;
const TARGET_LIST_P99_MS: f64 = 5.0;

/// The scale benchmark of the conversations service (figures, not pass/fail).
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// Run every phase for about a second on tiny sizes (ignores the size
    /// flags; writes target/bench/smoke.json and smoke.svg).
    #[arg(long)]
    smoke: bool,
    /// Seconds each timed phase runs.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Seconds of each ceiling (Health/Check, the naive sqlx loop).
    #[arg(long, default_value_t = 3.0)]
    ceiling_seconds: f64,
    /// Conversations seeded before the server starts.
    #[arg(long, default_value_t = 1_000_000)]
    conversations: usize,
    /// Events seeded at least: agent messages are added when the starts and
    /// pending marks make fewer.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Every Nth seeded conversation is marked pending (0: none).
    #[arg(long, default_value_t = 10)]
    pending_every: usize,
    /// Tasks seeding at once.
    #[arg(long, default_value_t = 256)]
    seed_tasks: usize,
    /// Widget (visitor) streams of the fan-out phase, one per conversation.
    #[arg(long, default_value_t = 1_000)]
    streams: usize,
    /// Inbox (workspace) streams of both fan-out phases.
    #[arg(long, default_value_t = 20)]
    agent_streams: usize,
    /// Streams of the large fan-out and idle-memory phase, Inbox streams included.
    #[arg(long, default_value_t = 10_000)]
    many_streams: usize,
    /// HTTP/2 connections the streams share.
    #[arg(long, default_value_t = 10)]
    stream_connections: usize,
    /// HTTP/2 connections of the unary callers.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// ListConversations calls per query, at most (each query also stops
    /// after twice --seconds).
    #[arg(long, default_value_t = 2_000)]
    list_calls: usize,
    /// Where to write the JSON figures [default: target/bench/bench.json].
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where to draw the SVG chart [default: docs/bench.svg].
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Run on this PostgreSQL server instead of a SQLite file: a
    /// `postgres://` URL of a database the bench may create its own
    /// databases from (it drops them at the end).
    #[arg(long)]
    database: Option<Location>,
    /// Servers of the one PostgreSQL database (with --database).
    #[arg(long, default_value_t = 2)]
    replicas: usize,
    /// Serve this database and print the address and keys (the bench starts
    /// itself this way).
    #[arg(long, hide = true, value_name = "DATABASE")]
    serve_child: Option<Location>,
}

/// The sizes a run uses, after `--smoke`.
#[derive(Debug, Clone, Serialize)]
struct Sizes {
    smoke: bool,
    seconds: f64,
    ceiling_seconds: f64,
    conversations: usize,
    events: usize,
    pending_every: usize,
    seed_tasks: usize,
    streams: usize,
    agent_streams: usize,
    many_streams: usize,
    stream_connections: usize,
    connections: usize,
    list_calls: usize,
}

impl Sizes {
    fn of(args: &Args) -> Result<Self> {
        let sizes = if args.smoke {
            Self {
                smoke: true,
                seconds: 1.0,
                ceiling_seconds: 1.0,
                conversations: 300,
                events: 600,
                pending_every: 10,
                seed_tasks: 32,
                streams: 50,
                agent_streams: 5,
                many_streams: 200,
                stream_connections: 4,
                connections: 4,
                list_calls: 200,
            }
        } else {
            Self {
                smoke: false,
                seconds: args.seconds,
                ceiling_seconds: args.ceiling_seconds,
                conversations: args.conversations,
                events: args.events,
                pending_every: args.pending_every,
                seed_tasks: args.seed_tasks.max(1),
                streams: args.streams,
                agent_streams: args.agent_streams,
                many_streams: args.many_streams,
                stream_connections: args.stream_connections.max(1),
                connections: args.connections.max(1),
                list_calls: args.list_calls,
            }
        };
        if sizes.many_streams <= sizes.agent_streams {
            return Err("--many-streams must be larger than --agent-streams".into());
        }
        if sizes.streams == 0 {
            return Err("--streams must be at least 1".into());
        }
        if sizes.conversations < sizes.pool_size() {
            return Err(format!(
                "--conversations must be at least {} (the widget streams of the fan-out phases)",
                sizes.pool_size()
            )
            .into());
        }
        Ok(sizes)
    }

    /// Seeded conversations the fan-out phases watch and write to.
    fn pool_size(&self) -> usize {
        self.streams.max(self.many_streams - self.agent_streams)
    }

    fn timed(&self) -> Duration {
        Duration::from_secs_f64(self.seconds)
    }
}

/// The same allocator as the `conversations` binary: the bench's child is
/// the server under test.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match (&args.serve_child, &args.database) {
        (Some(db), _) => runtime.block_on(serve_child(db)),
        (None, Some(Location::Postgres(url))) => runtime.block_on(postgres::run(&args, url)),
        (None, Some(Location::File(_))) => {
            Err("--database takes a postgres:// URL; without it the bench uses a SQLite file of its own".into())
        }
        (None, None) => runtime.block_on(run(&args)),
    }
}

async fn run(args: &Args) -> Result<()> {
    let sizes = Sizes::of(args)?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (json_default, svg_default) = if sizes.smoke {
        ("target/bench/smoke.json", "target/bench/smoke.svg")
    } else {
        ("target/bench/bench.json", "docs/bench.svg")
    };
    let json_path = args.json.clone().unwrap_or_else(|| root.join(json_default));
    let svg_path = args.svg.clone().unwrap_or_else(|| root.join(svg_default));
    let dir = tempfile::tempdir()?;
    let db = Location::File(dir.path().join("bench.db"));
    let started = Instant::now();
    let load_at_start = load_average();
    progress(format!("sizes: {sizes:?}"));

    progress("ceiling: naive sqlx loop".into());
    let naive = naive_sqlx(&dir.path().join("naive.db"), sizes.ceiling_seconds).await?;
    let seeded = seed(&db, &sizes).await?;
    let pool = Pool::new(seeded.kept.clone());

    // The first server: ceilings, catch-up, lists, mutations, the widget fan-out.
    let server = Server::spawn(&db).await?;
    let api = Api::connect(&server, sizes.connections).await?;
    progress("ceiling: Health/Check".into());
    let health = health_ceiling(&server, 64, sizes.connections, sizes.ceiling_seconds).await?;
    progress("catch-up from sequence 0".into());
    let catch_up = catch_up(&server, &api).await?;
    progress("ListConversations".into());
    let lists = list_conversations(&api, &sizes).await?;
    let mut lifecycle = Vec::new();
    for in_flight in IN_FLIGHT {
        progress(format!("lifecycle mutations, {in_flight} in flight"));
        lifecycle.push(lifecycle_mutations(&api, in_flight, sizes.timed()).await?);
    }
    let widget_pool = pool.first(sizes.streams);
    progress(format!(
        "fan-out writes over {} conversations, no streams",
        widget_pool.len()
    ));
    let no_streams = write_mix(&api, &widget_pool, FAN_OUT_WRITERS, sizes.timed()).await?;
    progress(format!(
        "fan-out: {} widget + {} Inbox streams",
        sizes.streams, sizes.agent_streams
    ));
    let widget = fan_out(&server, &api, &widget_pool, &sizes).await?;
    drop(api);
    server.stop().await?;

    // A fresh server, so that its memory before the idle streams is not
    // inflated by the phases above.
    let server = Server::spawn(&db).await?;
    let api = Api::connect(&server, sizes.connections).await?;
    progress(format!(
        "idle memory and fan-out: {} streams",
        sizes.many_streams
    ));
    let (memory, many) = many_streams(&server, &api, &pool, &sizes).await?;
    drop(api);
    server.stop().await?;

    let report = Report {
        sizes,
        total_seconds: started.elapsed().as_secs_f64(),
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        load_at_start,
        load_at_end: load_average(),
        seed: seeded,
        health,
        naive_sqlx: naive,
        lifecycle,
        fan_out_no_streams: no_streams,
        fan_out: widget,
        many_streams: many,
        idle_memory: memory,
        catch_up,
        list_first_page: lists.first_page,
        list_pending: lists.pending,
        pending_conversations: lists.pending_conversations,
    };
    report.print_table();
    if let Some(parent) = json_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    if let Some(parent) = svg_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    draw_chart(&report, &svg_path)?;
    println!(
        "wrote {} and {} ({:.0} s in all)",
        json_path.display(),
        svg_path.display(),
        report.total_seconds
    );
    Ok(())
}

/// The 1-minute load average: other work on a shared machine skews every
/// figure, so the report says how busy it was.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// A progress line on stderr; the table alone goes to stdout.
fn progress(line: String) {
    eprintln!("bench: {line}");
}

// ---------------------------------------------------------------------------
// Figures

/// Latency percentiles of a set of samples, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
struct Stats {
    count: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Stats {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        // Nearest rank: the smallest sample with at least q of them at or below it.
        let pick = |q: f64| {
            let rank = (q * samples.len() as f64).ceil() as usize;
            samples
                .get(rank.saturating_sub(1))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        Self {
            count: samples.len(),
            p50_ms: pick(0.50),
            p99_ms: pick(0.99),
            max_ms: samples.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        }
    }
}

/// Calls made by a set of concurrent workers over a while.
#[derive(Debug, Clone, Default, Serialize)]
struct Throughput {
    in_flight: usize,
    calls: usize,
    errors: usize,
    first_error: Option<String>,
    seconds: f64,
    per_second: f64,
    latency: Stats,
}

/// What one worker did: latencies of its successful calls and its errors.
#[derive(Debug, Default)]
struct WorkerLog {
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
}

impl WorkerLog {
    /// Runs and times one call; `None` (and an error counted) when it failed.
    async fn time<T>(&mut self, call: impl Future<Output = Result<T, Status>>) -> Option<T> {
        let started = Instant::now();
        match call.await {
            Ok(value) => {
                self.latencies.push(started.elapsed());
                Some(value)
            }
            Err(status) => self.failed(format!("{:?}: {}", status.code(), status.message())),
        }
    }

    fn failed<T>(&mut self, error: String) -> Option<T> {
        self.errors += 1;
        self.first_error.get_or_insert(error);
        None
    }
}

/// Runs `in_flight` workers until `deadline` (each gets its index and the
/// deadline, and stops by itself) and adds up what they did.
async fn drive<F, Fut>(in_flight: usize, seconds: Duration, worker: F) -> Result<Throughput>
where
    F: Fn(usize, Instant) -> Fut,
    Fut: Future<Output = WorkerLog> + Send + 'static,
{
    let started = Instant::now();
    let deadline = started + seconds;
    let mut workers = JoinSet::new();
    for index in 0..in_flight {
        workers.spawn(worker(index, deadline));
    }
    let mut latencies = Vec::new();
    let (mut errors, mut first_error) = (0, None);
    while let Some(log) = workers.join_next().await {
        let log = log?;
        latencies.extend(log.latencies);
        errors += log.errors;
        first_error = first_error.or(log.first_error);
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(error) = &first_error {
        progress(format!("{errors} calls failed; the first: {error}"));
    }
    Ok(Throughput {
        in_flight,
        calls: latencies.len(),
        errors,
        first_error,
        seconds,
        per_second: latencies.len() as f64 / seconds,
        latency: Stats::of(latencies),
    })
}

// ---------------------------------------------------------------------------
// The server under test, in a child process

/// The child process serving the database, and how to reach it.
struct Server {
    child: tokio::process::Child,
    pid: u32,
    addr: SocketAddr,
    agent_key: String,
    visitor_key: String,
}

impl Server {
    /// Starts this binary with `--serve-child DB` and reads its address and
    /// keys from its stdout.
    async fn spawn(db: &Location) -> Result<Self> {
        let argument: std::ffi::OsString = match db {
            Location::File(path) => path.into(),
            Location::Postgres(url) => url.into(),
        };
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .arg("--serve-child")
            .arg(argument)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or("the server exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout of the server")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut addr, mut agent_key, mut visitor_key) = (None, None, None);
        let read = async {
            while let Some(line) = lines.next_line().await? {
                match line.split_once(' ') {
                    Some(("listening", value)) => addr = Some(value.parse::<SocketAddr>()?),
                    Some(("agent-key", value)) => agent_key = Some(value.to_owned()),
                    Some(("visitor-key", value)) => visitor_key = Some(value.to_owned()),
                    _ => {}
                }
                if addr.is_some() && agent_key.is_some() && visitor_key.is_some() {
                    break;
                }
            }
            Ok::<_, Error>(())
        };
        tokio::time::timeout(Duration::from_secs(120), read)
            .await
            .map_err(|_| "the server did not say where it listens within 120 s")??;
        Ok(Self {
            child,
            pid,
            addr: addr.ok_or("the server did not print its address")?,
            agent_key: agent_key.ok_or("the server did not print an agent key")?,
            visitor_key: visitor_key.ok_or("the server did not print a visitor key")?,
        })
    }

    /// A new HTTP/2 connection to the server.
    async fn connect(&self) -> Result<GrpcChannel> {
        Ok(GrpcChannel::from_shared(format!("http://{}", self.addr))?
            .connect()
            .await?)
    }

    /// The server's resident memory, from /proc.
    fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .ok_or("no VmRSS line in /proc/<pid>/status")?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .ok_or("an empty VmRSS line")?
            .parse()?)
    }

    /// Closes the server's stdin (its signal to shut down gracefully) and
    /// waits for it to exit.
    async fn stop(mut self) -> Result<()> {
        drop(self.child.stdin.take());
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    progress(format!("the server exited with {status}"));
                }
            }
            Err(_) => {
                progress("the server did not stop within 30 s; killing it".into());
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

/// The child: serves `db` on a free port until stdin closes or SIGTERM.
async fn serve_child(db: &Location) -> Result<()> {
    conversations::telemetry::init("warn", conversations::telemetry::LogFormat::Text);
    let settings = Settings::new("127.0.0.1:0".parse::<std::net::SocketAddr>()?, db.clone());
    let application = Application::build(&settings).await?;
    let store = application.app().store();
    // A seeded database has its workspace already, and keys are shown only
    // once: make a fresh pair for this run.
    let (agent, visitor) = match admin::bootstrap(store).await? {
        Some(keys) => (keys.agent.token, keys.visitor.token),
        None => (
            admin::create_key(store, admin::DEFAULT_WORKSPACE, Role::Agent)
                .await?
                .token,
            admin::create_key(store, admin::DEFAULT_WORKSPACE, Role::Visitor)
                .await?
                .token,
        ),
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening {}", application.local_addr())?;
    writeln!(stdout, "agent-key {agent}")?;
    writeln!(stdout, "visitor-key {visitor}")?;
    stdout.flush()?;
    drop(stdout);

    // A plain thread, not tokio's stdin: a blocking read left behind must
    // not hold up the runtime's shutdown after SIGTERM.
    let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = closed.send(());
    });
    application
        .run_until(async {
            tokio::select! {
                _ = stdin_closed => {}
                () = shutdown_signal() => {}
            }
        })
        .await?;
    Ok(())
}

/// Unary clients over a few connections, with both keys.
#[derive(Clone)]
struct Api {
    clients: Arc<[Client]>,
    agent: MetadataValue<Ascii>,
    visitor: MetadataValue<Ascii>,
}

impl Api {
    async fn connect(server: &Server, connections: usize) -> Result<Self> {
        Self::connect_spread(&[server], connections).await
    }

    /// Connections to every one of `servers` in turn (workers spread over
    /// them), with the first one's keys.
    async fn connect_spread(servers: &[&Server], connections: usize) -> Result<Self> {
        let server = servers.first().ok_or("no server")?;
        let mut clients = Vec::new();
        for i in 0..connections.max(servers.len()) {
            clients.push(Client::new(servers[i % servers.len()].connect().await?));
        }
        Ok(Self {
            clients: clients.into(),
            agent: format!("Bearer {}", server.agent_key).parse()?,
            visitor: format!("Bearer {}", server.visitor_key).parse()?,
        })
    }

    /// The client of worker `index`: workers spread over the connections.
    fn client(&self, index: usize) -> Client {
        self.clients[index % self.clients.len()].clone()
    }

    fn as_agent<T>(&self, message: T) -> Request<T> {
        authorized(message, &self.agent)
    }

    fn as_visitor<T>(&self, message: T) -> Request<T> {
        authorized(message, &self.visitor)
    }

    /// The newest event sequence.
    async fn head(&self) -> Result<i64> {
        let page = self
            .client(0)
            .list_events(self.as_agent(pb::ListEventsRequest {
                page_size: 1,
                ..Default::default()
            }))
            .await?;
        Ok(page.into_inner().head_sequence)
    }
}

fn authorized<T>(message: T, key: &MetadataValue<Ascii>) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", key.clone());
    request
}

// ---------------------------------------------------------------------------
// Seeding, in-process, before the server starts

/// A conversation the bench writes to and watches.
#[derive(Debug, Clone)]
struct Conv {
    id: String,
    visitor: String,
}

/// What seeding wrote.
#[derive(Debug, Clone, Serialize)]
struct Seeded {
    conversations: usize,
    pending: usize,
    messages: usize,
    events: i64,
    executes: usize,
    seconds: f64,
    executes_per_second: f64,
    tasks: usize,
    /// The first conversations, for the fan-out phases.
    #[serde(skip)]
    kept: Vec<Conv>,
}

fn bench_agent() -> Result<AgentRef> {
    Ok(AgentRef {
        agent_id: AgentId::parse("bench-agent")?,
        display_name: DisplayName::parse("Bench")?,
        channel: Channel::Inbox,
    })
}

/// Seeds `sizes.conversations` conversations (every `pending_every`th marked
/// pending), then agent messages until the feed holds `sizes.events` events,
/// through `App::execute` from `seed_tasks` tasks.
async fn seed(db: &Location, sizes: &Sizes) -> Result<Seeded> {
    let settings = Settings::new("127.0.0.1:0".parse::<std::net::SocketAddr>()?, db.clone());
    let application = Application::build(&settings).await?;
    let app = application.app().clone();
    admin::bootstrap(app.store()).await?;
    let workspace_id = app
        .store()
        .find_workspace(admin::DEFAULT_WORKSPACE)
        .await?
        .ok_or("the bootstrapped workspace is missing")?;
    let caller = Caller {
        workspace_id,
        role: Role::Agent,
        key_id: "bench-seed".into(),
        session: None,
    };
    let started = Instant::now();
    let executes = Arc::new(AtomicUsize::new(0));
    let head = Arc::new(AtomicI64::new(0));
    let ticker = tokio::spawn(seed_progress(executes.clone(), started));

    // Starts, and the pending marks.
    let (conversations, keep, pending_every) =
        (sizes.conversations, sizes.pool_size(), sizes.pending_every);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..sizes.seed_tasks {
        let (app, caller, next, executes, head) = (
            app.clone(),
            caller.clone(),
            next.clone(),
            executes.clone(),
            head.clone(),
        );
        tasks.spawn(async move {
            let agent = bench_agent()?;
            let mut kept = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= conversations {
                    return Ok::<_, Error>(kept);
                }
                let visitor = format!("seed-{i}");
                let start = Command::Start {
                    visitor_id: VisitorId::parse(&visitor)?,
                    agent: None,
                    flow_id: None,
                };
                let outcome = app.execute(&caller, None, start).await?;
                executes.fetch_add(1, Ordering::Relaxed);
                head.fetch_max(outcome.event_sequence, Ordering::Relaxed);
                let id = outcome.conversation.id;
                if pending_every > 0 && i % pending_every == 0 {
                    let mark = Command::ChangeStatus {
                        conversation_id: id.clone(),
                        action: AgentAction::MarkPending,
                        agent: agent.clone(),
                        etag: None,
                        snooze_end_time: None,
                    };
                    let outcome = app.execute(&caller, None, mark).await?;
                    executes.fetch_add(1, Ordering::Relaxed);
                    head.fetch_max(outcome.event_sequence, Ordering::Relaxed);
                }
                if i < keep {
                    kept.push((
                        i,
                        Conv {
                            id: id.as_str().to_owned(),
                            visitor,
                        },
                    ));
                }
            }
        });
    }
    let mut kept = Vec::new();
    while let Some(done) = tasks.join_next().await {
        kept.extend(done??);
    }
    kept.sort_by_key(|(i, _)| *i);
    let kept: Vec<Conv> = kept.into_iter().map(|(_, conv)| conv).collect();

    // Agent messages on the kept conversations until the feed is long enough.
    let messages = usize::try_from(sizes.events as i64 - head.load(Ordering::Relaxed)).unwrap_or(0);
    if messages > 0 && !kept.is_empty() {
        let ids = Arc::new(
            kept.iter()
                .map(|c| ConversationId::parse(&c.id))
                .collect::<Result<Vec<_>, _>>()?,
        );
        let next = Arc::new(AtomicUsize::new(0));
        for _ in 0..sizes.seed_tasks {
            let (app, caller, next, executes, head, ids) = (
                app.clone(),
                caller.clone(),
                next.clone(),
                executes.clone(),
                head.clone(),
                ids.clone(),
            );
            tasks.spawn(async move {
                let agent = bench_agent()?;
                loop {
                    let m = next.fetch_add(1, Ordering::Relaxed);
                    if m >= messages {
                        return Ok::<_, Error>(Vec::new());
                    }
                    let send = Command::SendMessage {
                        conversation_id: ids[m % ids.len()].clone(),
                        sender: Sender::Agent(agent.clone()),
                        content: MessageContent::Text {
                            text: MessageText::parse("Seeded message: how can we help?")?,
                        },
                        audience: Audience::Everyone,
                    };
                    let outcome = app.execute(&caller, None, send).await?;
                    executes.fetch_add(1, Ordering::Relaxed);
                    head.fetch_max(outcome.event_sequence, Ordering::Relaxed);
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
    }
    ticker.abort();
    app.stop().await;
    app.store().close().await;
    drop(application);

    let seconds = started.elapsed().as_secs_f64();
    let executes = executes.load(Ordering::Relaxed);
    let seeded = Seeded {
        conversations,
        pending: if pending_every > 0 {
            conversations.div_ceil(pending_every)
        } else {
            0
        },
        messages,
        events: head.load(Ordering::Relaxed),
        executes,
        seconds,
        executes_per_second: executes as f64 / seconds,
        tasks: sizes.seed_tasks,
        kept,
    };
    progress(format!(
        "seeded {} conversations ({} pending), {} messages, {} events: {} executes in {:.1} s = {:.0}/s",
        seeded.conversations,
        seeded.pending,
        seeded.messages,
        seeded.events,
        seeded.executes,
        seeded.seconds,
        seeded.executes_per_second
    ));
    Ok(seeded)
}

/// Prints the seeding rate every few seconds.
async fn seed_progress(executes: Arc<AtomicUsize>, started: Instant) {
    let mut last = (0, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let done = executes.load(Ordering::Relaxed);
        let now = Instant::now();
        progress(format!(
            "seeding: {done} executes in {:.0} s, {:.0}/s now",
            started.elapsed().as_secs_f64(),
            (done - last.0) as f64 / (now - last.1).as_secs_f64()
        ));
        last = (done, now);
    }
}

// ---------------------------------------------------------------------------
// Phase 1: ceilings

/// `grpc.health.v1.Health/Check` at `in_flight` over `connections`: what
/// the transport alone allows.
async fn health_ceiling(
    server: &Server,
    in_flight: usize,
    connections: usize,
    seconds: f64,
) -> Result<Throughput> {
    let mut clients = Vec::new();
    for _ in 0..connections.max(1) {
        clients.push(HealthClient::new(server.connect().await?));
    }
    drive(
        in_flight,
        Duration::from_secs_f64(seconds),
        |w, deadline| {
            let mut client = clients[w % clients.len()].clone();
            async move {
                let mut log = WorkerLog::default();
                while Instant::now() < deadline {
                    log.time(client.check(HealthCheckRequest {
                        service: String::new(),
                    }))
                    .await;
                }
                log
            }
        },
    )
    .await
}

/// One transaction per "mutation" (UPDATE one row, INSERT two), serially,
/// with sqlx on its own SQLite file and the store's pragmas.
async fn naive_sqlx(path: &Path, seconds: f64) -> Result<Throughput> {
    let options = conversations::store::connect_options(path)?;
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    for statement in [
        "CREATE TABLE conversations (id INTEGER PRIMARY KEY, status TEXT NOT NULL, version INTEGER NOT NULL, update_time INTEGER NOT NULL)",
        "CREATE TABLE messages (id INTEGER PRIMARY KEY, conversation_id INTEGER NOT NULL REFERENCES conversations (id), body TEXT NOT NULL, create_time INTEGER NOT NULL)",
        "CREATE TABLE events (sequence INTEGER PRIMARY KEY AUTOINCREMENT, conversation_id INTEGER NOT NULL, payload TEXT NOT NULL)",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) INSERT INTO conversations SELECT i, 'open', 1, 0 FROM n",
    ] {
        sqlx::query(statement).execute(&pool).await?;
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut latencies = Vec::new();
    let mut i: i64 = 0;
    while Instant::now() < deadline {
        let t = Instant::now();
        let conversation = i % 1000 + 1;
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("UPDATE conversations SET version = version + 1, update_time = ? WHERE id = ?")
            .bind(i)
            .bind(conversation)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO messages (conversation_id, body, create_time) VALUES (?, ?, ?)")
            .bind(conversation)
            .bind("How can I help?")
            .bind(i)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO events (conversation_id, payload) VALUES (?, ?)")
            .bind(conversation)
            .bind(r#"{"type":"message_posted"}"#)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        latencies.push(t.elapsed());
        i += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    pool.close().await;
    Ok(Throughput {
        in_flight: 1,
        calls: latencies.len(),
        seconds,
        per_second: latencies.len() as f64 / seconds,
        latency: Stats::of(latencies),
        ..Default::default()
    })
}

// ---------------------------------------------------------------------------
// Phase 2: lifecycle mutations

/// One step of a conversation's lifecycle cycle, as the widget (visitor key)
/// or the Inbox (agent key) does it.
#[derive(Debug, Clone, Copy)]
enum Step {
    VisitorMessage,
    MarkPending,
    VisitorReply,
    Close,
    Reopen,
}

/// The cycle after a start; it ends where it began (OPEN), so it repeats.
const CYCLE: [Step; 5] = [
    Step::VisitorMessage,
    Step::MarkPending,
    Step::VisitorReply,
    Step::Close,
    Step::Reopen,
];

fn pb_agent() -> Option<pb::AgentRef> {
    Some(pb::AgentRef {
        agent_id: "bench-agent".into(),
        display_name: "Bench".into(),
        channel: pb::Channel::Inbox.into(),
    })
}

impl Step {
    async fn apply(self, api: &Api, client: &mut Client, conv: &Conv) -> Result<(), Status> {
        let visitor_text = |text: &str| pb::SendMessageRequest {
            conversation_id: conv.id.clone(),
            sender: Some(PbSender::VisitorId(conv.visitor.clone())),
            content: Some(Content::Text(text.into())),
            request_id: String::new(),
            ..Default::default()
        };
        match self {
            Self::VisitorMessage => client
                .send_message(api.as_visitor(visitor_text("Hi, is anyone there?")))
                .await
                .map(drop),
            Self::VisitorReply => client
                .send_message(api.as_visitor(visitor_text("Thanks, one more question.")))
                .await
                .map(drop),
            Self::MarkPending => client
                .mark_conversation_pending(api.as_agent(pb::MarkConversationPendingRequest {
                    conversation_id: conv.id.clone(),
                    agent: pb_agent(),
                    ..Default::default()
                }))
                .await
                .map(drop),
            Self::Close => client
                .close_conversation(api.as_agent(pb::CloseConversationRequest {
                    conversation_id: conv.id.clone(),
                    agent: pb_agent(),
                    ..Default::default()
                }))
                .await
                .map(drop),
            Self::Reopen => client
                .reopen_conversation(api.as_agent(pb::ReopenConversationRequest {
                    conversation_id: conv.id.clone(),
                    agent: pb_agent(),
                    ..Default::default()
                }))
                .await
                .map(drop),
        }
    }
}

/// `in_flight` workers, each starting a conversation and running it through
/// the cycle, again and again; every call counts as one mutation.
async fn lifecycle_mutations(api: &Api, in_flight: usize, seconds: Duration) -> Result<Throughput> {
    drive(in_flight, seconds, |w, deadline| {
        let api = api.clone();
        async move {
            let mut client = api.client(w);
            let mut log = WorkerLog::default();
            let mut n = 0;
            while Instant::now() < deadline {
                let visitor = format!("life-{in_flight}-{w}-{n}");
                n += 1;
                let start = api.as_visitor(pb::StartConversationRequest {
                    visitor_id: visitor.clone(),
                    ..Default::default()
                });
                let Some(started) = log.time(client.start_conversation(start)).await else {
                    continue;
                };
                let Some(conversation) = started.into_inner().conversation else {
                    log.failed::<()>("StartConversation answered no conversation".into());
                    continue;
                };
                let conv = Conv {
                    id: conversation.conversation_id,
                    visitor,
                };
                for step in CYCLE {
                    if Instant::now() >= deadline {
                        break;
                    }
                    log.time(step.apply(&api, &mut client, &conv)).await;
                }
            }
            log
        }
    })
    .await
}

/// Seeded conversations and where each is in its cycle, kept across phases
/// (and servers) so that every step is one the status table allows.
#[derive(Clone)]
struct Pool {
    convs: Arc<[Conv]>,
    steps: Arc<[AtomicUsize]>,
    len: usize,
}

impl Pool {
    fn new(convs: Vec<Conv>) -> Self {
        let len = convs.len();
        Self {
            steps: (0..len).map(|_| AtomicUsize::new(0)).collect(),
            convs: convs.into(),
            len,
        }
    }

    /// The first `n` conversations.
    fn first(&self, n: usize) -> Self {
        Self {
            len: n.min(self.len),
            ..self.clone()
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// The next step of conversation `i`.
    fn next_step(&self, i: usize) -> Step {
        CYCLE[self.steps[i].fetch_add(1, Ordering::Relaxed) % CYCLE.len()]
    }
}

/// `in_flight` writers, each owning every `in_flight`th conversation of the
/// pool and taking them one step further in turn.
async fn write_mix(
    api: &Api,
    pool: &Pool,
    in_flight: usize,
    seconds: Duration,
) -> Result<Throughput> {
    let in_flight = in_flight.min(pool.len()).max(1);
    drive(in_flight, seconds, |w, deadline| {
        let (api, pool) = (api.clone(), pool.clone());
        async move {
            let mut client = api.client(w);
            let mut log = WorkerLog::default();
            let mine: Vec<usize> = (w..pool.len()).step_by(in_flight).collect();
            'writing: loop {
                for &i in &mine {
                    if Instant::now() >= deadline {
                        break 'writing;
                    }
                    let step = pool.next_step(i);
                    log.time(step.apply(&api, &mut client, &pool.convs[i]))
                        .await;
                }
            }
            log
        }
    })
    .await
}

// ---------------------------------------------------------------------------
// Phase 3: fan-out, with every delivery checked

/// What a stream watches.
#[derive(Debug, Clone)]
enum Scope {
    /// The whole workspace, with the agent key (an Inbox).
    Workspace,
    /// One conversation, with the visitor key (a widget).
    Conversation(Conv),
}

/// What one stream received.
#[derive(Debug, Default)]
struct StreamLog {
    sequences: Vec<i64>,
    latencies: Vec<Duration>,
    /// When the last event arrived.
    last_event: Option<Instant>,
    resumes: usize,
    gave_up: Option<String>,
}

struct Watcher {
    scope: Scope,
    /// The last sequence received (event or checkpoint); -1 before any.
    progress: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<StreamLog>,
}

/// Open streams, all from one cursor.
struct Streams {
    watchers: Vec<Watcher>,
    stop: watch::Sender<bool>,
    start: i64,
    opened: usize,
    open_seconds: f64,
}

fn watch_request(api: &Api, scope: &Scope, after: i64) -> Request<pb::WatchEventsRequest> {
    match scope {
        Scope::Workspace => api.as_agent(pb::WatchEventsRequest {
            after_sequence: after,
            ..Default::default()
        }),
        Scope::Conversation(conv) => api.as_visitor(pb::WatchEventsRequest {
            after_sequence: after,
            conversation_id: conv.id.clone(),
            visitor_id: conv.visitor.clone(),
            event_types: Vec::new(),
        }),
    }
}

/// The commit→delivery time of an event created at `time` (same clock: the
/// server runs on this machine).
fn since(time: Option<prost_types::Timestamp>) -> Duration {
    let Some(time) = time else {
        return Duration::ZERO;
    };
    let created = UNIX_EPOCH + Duration::new(time.seconds.max(0) as u64, time.nanos.max(0) as u32);
    SystemTime::now()
        .duration_since(created)
        .unwrap_or_default()
}

/// Follows one stream until told to stop, resuming from its last sequence
/// when the server ends it (as the contract tells clients to).
async fn follow(
    mut client: Client,
    api: Api,
    scope: Scope,
    start: i64,
    progress: Arc<AtomicI64>,
    mut stop: watch::Receiver<bool>,
    mut opening: Option<tokio::sync::OwnedSemaphorePermit>,
) -> StreamLog {
    let mut log = StreamLog::default();
    let mut after = start;
    loop {
        let opened = tokio::select! {
            opened = client.watch_events(watch_request(&api, &scope, after)) => opened,
            _ = stop.wait_for(|stop| *stop) => return log,
        };
        let ended = match opened {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    let item = tokio::select! {
                        item = stream.message() => item,
                        _ = stop.wait_for(|stop| *stop) => return log,
                    };
                    match item {
                        Ok(Some(pb::WatchEventsResponse {
                            item: Some(Item::Event(event)),
                        })) => {
                            log.latencies.push(since(event.create_time));
                            log.sequences.push(event.sequence);
                            log.last_event = Some(Instant::now());
                            after = event.sequence;
                            progress.store(after, Ordering::Relaxed);
                        }
                        Ok(Some(pb::WatchEventsResponse {
                            item: Some(Item::Checkpoint(checkpoint)),
                        })) => {
                            after = checkpoint.sequence;
                            progress.store(after, Ordering::Relaxed);
                            // Open: let the next stream start opening.
                            opening.take();
                        }
                        Ok(Some(pb::WatchEventsResponse { item: None })) => {}
                        Ok(None) => {
                            break "the server ended the stream without a status".to_owned();
                        }
                        Err(status) => break format!("{:?}: {}", status.code(), status.message()),
                    }
                }
            }
            Err(status) => format!("{:?}: {}", status.code(), status.message()),
        };
        log.resumes += 1;
        if log.resumes > MAX_RESUMES {
            log.gave_up = Some(ended);
            return log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Streams {
    /// Opens one widget stream per conversation of `pool` and `agents` Inbox
    /// streams over `connections` connections, from the current head, and
    /// waits until each has sent its first checkpoint.
    async fn open(
        server: &Server,
        api: &Api,
        pool: &Pool,
        agents: usize,
        connections: usize,
    ) -> Result<Self> {
        let start = api.head().await?;
        let mut clients = Vec::new();
        for _ in 0..connections.max(1) {
            clients.push(Client::new(server.connect().await?));
        }
        let (stop, stopped) = watch::channel(false);
        let opening = Arc::new(Semaphore::new(OPENING_AT_ONCE));
        let scopes = (0..agents).map(|_| Scope::Workspace).chain(
            pool.convs[..pool.len()]
                .iter()
                .cloned()
                .map(Scope::Conversation),
        );
        let started = Instant::now();
        let mut watchers = Vec::new();
        for (i, scope) in scopes.enumerate() {
            let permit = opening.clone().acquire_owned().await?;
            let progress = Arc::new(AtomicI64::new(-1));
            let task = tokio::spawn(follow(
                clients[i % clients.len()].clone(),
                api.clone(),
                scope.clone(),
                start,
                progress.clone(),
                stopped.clone(),
                Some(permit),
            ));
            watchers.push(Watcher {
                scope,
                progress,
                task,
            });
        }
        let mut streams = Self {
            watchers,
            stop,
            start,
            opened: 0,
            open_seconds: 0.0,
        };
        let (lagging, _) = streams.wait_for(start, DRAIN_TIMEOUT).await;
        streams.opened = streams.watchers.len() - lagging;
        streams.open_seconds = started.elapsed().as_secs_f64();
        if lagging > 0 {
            progress(format!(
                "{lagging} of {} streams did not open within {DRAIN_TIMEOUT:?}",
                streams.watchers.len()
            ));
        }
        Ok(streams)
    }

    /// Waits until every stream has received `sequence` (an event or a
    /// checkpoint at or after it), or `timeout`; returns how many have not,
    /// and how long it waited.
    async fn wait_for(&self, sequence: i64, timeout: Duration) -> (usize, Duration) {
        let started = Instant::now();
        loop {
            let lagging = self
                .watchers
                .iter()
                .filter(|w| w.progress.load(Ordering::Relaxed) < sequence)
                .count();
            if lagging == 0 || started.elapsed() >= timeout {
                return (lagging, started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Call when the writers are done: reads the head, waits for the
    /// streams to deliver up to it, closes them, and compares what each
    /// received with `ListEvents` for its filter.
    async fn check(self, api: &Api, writes: Throughput) -> Result<Delivery> {
        let writes_ended = Instant::now();
        let head = api.head().await?;
        // Streams scoped to a quiet conversation learn the head only from
        // their next heartbeat checkpoint: waiting for that proves they are
        // complete, but the drain is when the last event arrived.
        let (lagging, _) = self.wait_for(head, DRAIN_TIMEOUT).await;
        self.stop.send_replace(true);
        let mut logs = Vec::new();
        for watcher in self.watchers {
            logs.push((watcher.scope, watcher.task.await?));
        }
        let expected = expected_events(api, &logs, self.start, head).await?;
        let drain = logs
            .iter()
            .filter_map(|(_, log)| log.last_event)
            .max()
            .map_or(Duration::ZERO, |last| {
                last.saturating_duration_since(writes_ended)
            });
        let mut delivery = Delivery {
            streams: logs.len(),
            opened: self.opened,
            open_seconds: self.open_seconds,
            writes,
            drain_seconds: drain.as_secs_f64(),
            lagging,
            ..Default::default()
        };
        let mut latencies = Vec::new();
        for ((_, log), expected) in logs.into_iter().zip(expected) {
            let received: HashSet<i64> = log.sequences.iter().copied().collect();
            let expected: HashSet<i64> = expected.into_iter().collect();
            delivery.events += log.sequences.len();
            delivery.duplicated += log.sequences.len() - received.len();
            delivery.out_of_order += log.sequences.windows(2).filter(|w| w[1] < w[0]).count();
            delivery.missed += expected.difference(&received).count();
            delivery.unexpected += received.difference(&expected).count();
            delivery.resumes += log.resumes;
            delivery.gave_up += usize::from(log.gave_up.is_some());
            if let Some(reason) = log.gave_up {
                delivery.first_end.get_or_insert(reason);
            }
            latencies.extend(log.latencies);
        }
        delivery.latency = Stats::of(latencies);
        if delivery.missed + delivery.duplicated + delivery.unexpected + delivery.out_of_order > 0 {
            progress(format!(
                "delivery check failed: {} missed, {} duplicated, {} unexpected, {} out of order",
                delivery.missed, delivery.duplicated, delivery.unexpected, delivery.out_of_order
            ));
        }
        Ok(delivery)
    }
}

/// The sequences each stream should have received: `ListEvents` with its
/// filter over `(start, head]`. Inbox streams share one listing.
async fn expected_events(
    api: &Api,
    logs: &[(Scope, StreamLog)],
    start: i64,
    head: i64,
) -> Result<Vec<Vec<i64>>> {
    let workspace = Arc::new(list_events(api.clone(), Scope::Workspace, start, head).await?);
    let mut lists = JoinSet::new();
    let limit = Arc::new(Semaphore::new(16));
    for (i, (scope, _)) in logs.iter().enumerate() {
        let (api, scope, limit, workspace) =
            (api.clone(), scope.clone(), limit.clone(), workspace.clone());
        lists.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let expected = match scope {
                Scope::Workspace => workspace.as_ref().clone(),
                Scope::Conversation(_) => list_events(api, scope, start, head).await?,
            };
            Ok::<_, Error>((i, expected))
        });
    }
    let mut expected = vec![Vec::new(); logs.len()];
    while let Some(listed) = lists.join_next().await {
        let (i, list) = listed??;
        expected[i] = list;
    }
    Ok(expected)
}

/// Every sequence in `(after, head]` that `ListEvents` shows for `scope`.
async fn list_events(api: Api, scope: Scope, mut after: i64, head: i64) -> Result<Vec<i64>> {
    let mut client = api.client(0);
    let mut sequences = Vec::new();
    while after < head {
        let (conversation_id, visitor_id) = match &scope {
            Scope::Workspace => (String::new(), String::new()),
            Scope::Conversation(conv) => (conv.id.clone(), conv.visitor.clone()),
        };
        let page = pb::ListEventsRequest {
            after_sequence: after,
            conversation_id,
            visitor_id,
            event_types: Vec::new(),
            page_size: 1000,
        };
        let page = match scope {
            Scope::Workspace => client.list_events(api.as_agent(page)).await?,
            Scope::Conversation(_) => client.list_events(api.as_visitor(page)).await?,
        }
        .into_inner();
        sequences.extend(
            page.events
                .iter()
                .map(|e| e.sequence)
                .filter(|s| *s <= head),
        );
        if page.next_after_sequence <= after {
            return Err(format!("ListEvents did not move past {after}").into());
        }
        after = page.next_after_sequence;
    }
    Ok(sequences)
}

/// How the streams fared while the writers wrote.
#[derive(Debug, Clone, Default, Serialize)]
struct Delivery {
    streams: usize,
    opened: usize,
    open_seconds: f64,
    writes: Throughput,
    /// Events received, over every stream.
    events: usize,
    /// Commit→delivery: event `create_time` to its arrival at the client.
    latency: Stats,
    /// From the end of the writes until the last event reached its stream.
    drain_seconds: f64,
    /// Streams that had not reached the head when the bench stopped waiting.
    lagging: usize,
    missed: usize,
    duplicated: usize,
    unexpected: usize,
    out_of_order: usize,
    /// Streams the server ended, resumed from their last sequence.
    resumes: usize,
    gave_up: usize,
    first_end: Option<String>,
}

/// 1,000 widget streams and 20 Inbox streams while 64 writers cycle over
/// the widgets' conversations.
async fn fan_out(server: &Server, api: &Api, pool: &Pool, sizes: &Sizes) -> Result<Delivery> {
    let streams = Streams::open(
        server,
        api,
        pool,
        sizes.agent_streams,
        sizes.stream_connections,
    )
    .await?;
    let writes = write_mix(api, pool, FAN_OUT_WRITERS, sizes.timed()).await?;
    streams.check(api, writes).await
}

/// Server memory with idle streams open.
#[derive(Debug, Clone, Default, Serialize)]
struct Memory {
    streams: usize,
    rss_before_kib: u64,
    rss_after_kib: u64,
    kib_per_stream: f64,
}

/// On a fresh server: its RSS before and after opening `many_streams` idle
/// streams, then the fan-out with all of them open.
async fn many_streams(
    server: &Server,
    api: &Api,
    pool: &Pool,
    sizes: &Sizes,
) -> Result<(Memory, Delivery)> {
    let pool = pool.first(sizes.many_streams - sizes.agent_streams);
    warm_up(server, api, &pool, sizes).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before_kib = server.rss_kib()?;
    let streams = Streams::open(
        server,
        api,
        &pool,
        sizes.agent_streams,
        sizes.stream_connections,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_kib = server.rss_kib()?;
    let memory = Memory {
        streams: streams.opened,
        rss_before_kib,
        rss_after_kib,
        kib_per_stream: rss_after_kib.saturating_sub(rss_before_kib) as f64
            / streams.opened.max(1) as f64,
    };
    let writes = write_mix(api, &pool, FAN_OUT_WRITERS, sizes.timed()).await?;
    Ok((memory, streams.check(api, writes).await?))
}

/// Brings the fresh server to a steady state before its memory is read: its
/// reader connections opened with warm caches, writes done, a few streams
/// opened and closed.
async fn warm_up(server: &Server, api: &Api, pool: &Pool, sizes: &Sizes) -> Result<()> {
    let mut lists = JoinSet::new();
    for i in 0..8 {
        let api = api.clone();
        lists.spawn(async move {
            api.client(i)
                .list_conversations(api.as_agent(pb::ListConversationsRequest::default()))
                .await
        });
    }
    while let Some(listed) = lists.join_next().await {
        listed??;
    }
    write_mix(api, pool, FAN_OUT_WRITERS, Duration::from_secs(1)).await?;
    let few = pool.first(100);
    let streams = Streams::open(server, api, &few, 1, sizes.stream_connections).await?;
    streams.check(api, Throughput::default()).await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Phase 5: catch-up

/// One Inbox stream from sequence 0 until the first checkpoint at the head.
#[derive(Debug, Clone, Default, Serialize)]
struct CatchUp {
    head: i64,
    events: usize,
    seconds: f64,
    events_per_second: f64,
    reached_head: bool,
}

async fn catch_up(server: &Server, api: &Api) -> Result<CatchUp> {
    let head = api.head().await?;
    let mut client = Client::new(server.connect().await?);
    let started = Instant::now();
    let mut stream = client
        .watch_events(api.as_agent(pb::WatchEventsRequest::default()))
        .await?
        .into_inner();
    let mut events = 0;
    let mut reached_head = false;
    let read = async {
        while let Some(item) = stream.message().await? {
            match item.item {
                Some(Item::Event(_)) => events += 1,
                Some(Item::Checkpoint(checkpoint)) if checkpoint.sequence >= head => {
                    reached_head = true;
                    break;
                }
                Some(Item::Checkpoint(_)) | None => {}
            }
        }
        Ok::<_, Status>(())
    };
    match tokio::time::timeout(CATCH_UP_TIMEOUT, read).await {
        Ok(read) => read?,
        Err(_) => progress(format!("catch-up stopped after {CATCH_UP_TIMEOUT:?}")),
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(CatchUp {
        head,
        events,
        seconds,
        events_per_second: events as f64 / seconds,
        reached_head,
    })
}

// ---------------------------------------------------------------------------
// Phase 6: ListConversations

struct Lists {
    first_page: Throughput,
    pending: Throughput,
    pending_conversations: i64,
}

/// The Inbox's first page, unfiltered and filtered to PENDING, one call at a
/// time.
async fn list_conversations(api: &Api, sizes: &Sizes) -> Result<Lists> {
    let cap = Duration::from_secs_f64(sizes.seconds * 2.0);
    let measure = async |statuses: Vec<i32>| {
        let calls = sizes.list_calls;
        drive(1, cap, |_, deadline| {
            let api = api.clone();
            let statuses = statuses.clone();
            async move {
                let mut client = api.client(0);
                let mut log = WorkerLog::default();
                for _ in 0..calls {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let request = api.as_agent(pb::ListConversationsRequest {
                        statuses: statuses.clone(),
                        page_size: 50,
                        ..Default::default()
                    });
                    log.time(client.list_conversations(request)).await;
                }
                log
            }
        })
        .await
    };
    let first_page = measure(Vec::new()).await?;
    let pending = measure(vec![pb::ConversationStatus::Pending.into()]).await?;
    let pending_conversations = api
        .client(0)
        .list_conversations(api.as_agent(pb::ListConversationsRequest::default()))
        .await?
        .into_inner()
        .status_counts
        .map_or(0, |counts| counts.pending);
    Ok(Lists {
        first_page,
        pending,
        pending_conversations,
    })
}

// ---------------------------------------------------------------------------
// The report

#[derive(Debug, Serialize)]
struct Report {
    sizes: Sizes,
    total_seconds: f64,
    cores: usize,
    load_at_start: f64,
    load_at_end: f64,
    seed: Seeded,
    health: Throughput,
    naive_sqlx: Throughput,
    lifecycle: Vec<Throughput>,
    fan_out_no_streams: Throughput,
    fan_out: Delivery,
    many_streams: Delivery,
    idle_memory: Memory,
    catch_up: CatchUp,
    list_first_page: Throughput,
    list_pending: Throughput,
    pending_conversations: i64,
}

/// `12,345`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn latency(stats: &Stats) -> String {
    format!("{:.2} / {:.2} ms", stats.p50_ms, stats.p99_ms)
}

fn verdict(met: bool) -> String {
    if met { "met" } else { "MISSED" }.to_owned()
}

impl Report {
    fn lifecycle_at(&self, in_flight: usize) -> Option<&Throughput> {
        self.lifecycle.iter().find(|t| t.in_flight == in_flight)
    }

    fn print_table(&self) {
        let mut rows: Vec<[String; 5]> = Vec::new();
        let mut row = |a: &str, b: String, c: String, d: &str, e: String| {
            rows.push([a.to_owned(), b, c, d.to_owned(), e]);
        };
        let s = &self.seed;
        row(
            "seed: App::execute in-process",
            format!(
                "{} conv ({} pending), {} events: {}/s",
                thousands(s.conversations as f64),
                thousands(s.pending as f64),
                thousands(s.events as f64),
                thousands(s.executes_per_second)
            ),
            format!("{:.0} s, {} tasks", s.seconds, s.tasks),
            "",
            String::new(),
        );
        let h = &self.health;
        row(
            "ceiling: Health/Check, 64 in flight",
            format!("{}/s", thousands(h.per_second)),
            latency(&h.latency),
            "",
            String::new(),
        );
        let n = &self.naive_sqlx;
        row(
            "ceiling: naive sqlx, 1 txn/mutation",
            format!("{}/s", thousands(n.per_second)),
            latency(&n.latency),
            "",
            String::new(),
        );
        for t in &self.lifecycle {
            row(
                &format!("mutations, {} in flight", t.in_flight),
                format!(
                    "{}/s = {:.1}% of Health, {:.2}x sqlx{}",
                    thousands(t.per_second),
                    100.0 * t.per_second / h.per_second,
                    t.per_second / n.per_second,
                    errors(t)
                ),
                latency(&t.latency),
                "",
                String::new(),
            );
        }
        if let Some(t) = self.lifecycle_at(64) {
            let share = t.per_second / h.per_second;
            row(
                "  64 in flight / Health/Check",
                format!("{:.1}%", share * 100.0),
                String::new(),
                ">= 25%",
                verdict(share >= TARGET_SHARE_OF_HEALTH),
            );
            let times = t.per_second / n.per_second;
            row(
                "  64 in flight / naive sqlx",
                format!("{times:.2}x"),
                String::new(),
                ">= 5x",
                verdict(times >= TARGET_TIMES_NAIVE),
            );
        }
        let base = &self.fan_out_no_streams;
        row(
            "fan-out writes, 0 streams",
            format!(
                "{}/s over {} conv{}",
                thousands(base.per_second),
                thousands(self.sizes.streams as f64),
                errors(base)
            ),
            latency(&base.latency),
            "",
            String::new(),
        );
        for (d, targets) in [(&self.fan_out, true), (&self.many_streams, false)] {
            let agents = self.sizes.agent_streams;
            let name = format!(
                "fan-out, {}+{} streams",
                thousands(d.streams.saturating_sub(agents) as f64),
                agents
            );
            row(
                &format!("{name}: writes"),
                format!(
                    "{}/s = {:.1}% of 0 streams{}",
                    thousands(d.writes.per_second),
                    100.0 * d.writes.per_second / base.per_second,
                    errors(&d.writes)
                ),
                latency(&d.writes.latency),
                if targets { ">= 80%" } else { "" },
                if targets {
                    verdict(d.writes.per_second >= TARGET_SHARE_WITH_STREAMS * base.per_second)
                } else {
                    String::new()
                },
            );
            row(
                &format!("{name}: opened"),
                format!(
                    "{}/{} in {:.1} s",
                    thousands(d.opened as f64),
                    thousands(d.streams as f64),
                    d.open_seconds
                ),
                String::new(),
                "all",
                verdict(d.opened == d.streams),
            );
            row(
                &format!("{name}: commit->delivery"),
                format!(
                    "{} events, the last {:.3} s after the writes",
                    thousands(d.events as f64),
                    d.drain_seconds
                ),
                latency(&d.latency),
                if targets { "p99 <= 25 ms" } else { "" },
                if targets {
                    verdict(d.latency.p99_ms <= TARGET_DELIVERY_P99_MS)
                } else {
                    String::new()
                },
            );
            row(
                &format!("{name}: missed/duplicated"),
                format!(
                    "{} / {} ({} unexpected, {} out of order, {} lagging, {} resumes)",
                    d.missed, d.duplicated, d.unexpected, d.out_of_order, d.lagging, d.resumes
                ),
                String::new(),
                "0 / 0",
                verdict(d.missed + d.duplicated + d.unexpected + d.out_of_order == 0),
            );
        }
        let m = &self.idle_memory;
        row(
            "server RSS per idle stream",
            format!(
                "{:.1} KiB ({} streams, {:.0} -> {:.0} MiB)",
                m.kib_per_stream,
                thousands(m.streams as f64),
                m.rss_before_kib as f64 / 1024.0,
                m.rss_after_kib as f64 / 1024.0
            ),
            String::new(),
            "<= 16 KiB",
            verdict(m.kib_per_stream <= TARGET_KIB_PER_STREAM),
        );
        let c = &self.catch_up;
        row(
            "catch-up from 0 to the head",
            format!(
                "{}/s ({} events in {:.1} s{})",
                thousands(c.events_per_second),
                thousands(c.events as f64),
                c.seconds,
                if c.reached_head {
                    ""
                } else {
                    ", head NOT reached"
                }
            ),
            String::new(),
            ">= 400,000/s",
            verdict(c.reached_head && c.events_per_second >= TARGET_CATCH_UP_PER_SECOND),
        );
        for (name, t) in [
            ("ListConversations, first page", &self.list_first_page),
            ("ListConversations, PENDING", &self.list_pending),
        ] {
            row(
                name,
                format!(
                    "{} calls, 1 in flight, {} conv ({} pending){}",
                    t.calls,
                    thousands(self.seed.conversations as f64),
                    thousands(self.pending_conversations as f64),
                    errors(t)
                ),
                latency(&t.latency),
                "p99 <= 5 ms",
                verdict(t.errors == 0 && t.latency.p99_ms <= TARGET_LIST_P99_MS),
            );
        }

        let header = ["phase", "figure", "p50 / p99", "target", ""];
        let mut widths = header.map(str::len);
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String; 5]| {
            let mut out = String::new();
            for (cell, w) in cells.iter().zip(widths) {
                out.push_str(&format!("{cell:<w$}  "));
            }
            println!("{}", out.trim_end());
        };
        println!();
        println!(
            "conversations bench: {} cores, load average {:.1} at the start and {:.1} at the end{}",
            self.cores,
            self.load_at_start,
            self.load_at_end,
            if self.load_at_start > 0.5 {
                " (the machine was busy: figures are low)"
            } else {
                ""
            }
        );
        line(&header.map(str::to_owned));
        line(&widths.map(|w| "-".repeat(w)));
        for r in &rows {
            line(r);
        }
        println!();
    }
}

fn errors(t: &Throughput) -> String {
    if t.errors == 0 {
        String::new()
    } else {
        format!(", {} ERRORS", t.errors)
    }
}

// ---------------------------------------------------------------------------
// The chart

/// Two panels: mutations against in-flight requests, and writes and
/// delivery against open streams; each with a rate (left axis) and a p99
/// (right axis).
fn draw_chart(report: &Report, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let (body, footer) = root.split_vertically(475);
    let (left, right) = body.split_horizontally(600);
    let sizes = &report.sizes;
    footer.draw_text(
        &format!(
            "{} conversations, {} events seeded; {} s per phase; {} cores, load average {:.1} at the start{}",
            thousands(report.seed.conversations as f64),
            thousands(report.seed.events as f64),
            sizes.seconds,
            report.cores,
            report.load_at_start,
            if sizes.smoke { "; --smoke" } else { "" },
        ),
        &("sans-serif", 13).into_text_style(&footer).color(&BLACK.mix(0.6)),
        (16, 6),
    )?;

    let health = report.health.per_second;
    let naive = report.naive_sqlx.per_second;
    panel(
        &left,
        "Lifecycle mutations",
        "requests in flight",
        &report
            .lifecycle
            .iter()
            .map(|t| t.in_flight.to_string())
            .collect::<Vec<_>>(),
        (
            "mutations/s",
            &report
                .lifecycle
                .iter()
                .map(|t| Some(t.per_second))
                .collect::<Vec<_>>(),
        ),
        (
            "p99 latency (ms)",
            &report
                .lifecycle
                .iter()
                .map(|t| Some(t.latency.p99_ms))
                .collect::<Vec<_>>(),
        ),
        Some((
            format!(
                "target: max(25% of Health {}/s, 5x sqlx {}/s)",
                thousands(health),
                thousands(naive)
            ),
            (TARGET_SHARE_OF_HEALTH * health).max(TARGET_TIMES_NAIVE * naive),
        )),
        None,
    )?;
    let base = report.fan_out_no_streams.per_second;
    let fan = [&report.fan_out, &report.many_streams];
    panel(
        &right,
        "Writes with open streams (64 in flight)",
        "open streams",
        &std::iter::once("0".to_owned())
            .chain(fan.iter().map(|d| thousands(d.streams as f64)))
            .collect::<Vec<_>>(),
        (
            "writes/s",
            &std::iter::once(Some(base))
                .chain(fan.iter().map(|d| Some(d.writes.per_second)))
                .collect::<Vec<_>>(),
        ),
        (
            "commit->delivery p99 (ms)",
            &std::iter::once(None)
                .chain(fan.iter().map(|d| Some(d.latency.p99_ms)))
                .collect::<Vec<_>>(),
        ),
        Some((
            "target: 80% of 0 streams".to_owned(),
            TARGET_SHARE_WITH_STREAMS * base,
        )),
        Some(("target: p99 25 ms".to_owned(), TARGET_DELIVERY_P99_MS)),
    )?;
    root.present()?;
    Ok(())
}

/// A rate series on the left axis and a latency series on the right, over
/// categories; `None` leaves a point out. Targets are horizontal lines.
#[allow(clippy::too_many_arguments)]
fn panel(
    area: &plotters::drawing::DrawingArea<
        plotters::prelude::SVGBackend<'_>,
        plotters::coord::Shift,
    >,
    title: &str,
    x_desc: &str,
    labels: &[String],
    rate: (&str, &[Option<f64>]),
    p99: (&str, &[Option<f64>]),
    rate_target: Option<(String, f64)>,
    p99_target: Option<(String, f64)>,
) -> Result<()> {
    use plotters::prelude::*;
    let top = |values: &[Option<f64>], target: Option<f64>| {
        values
            .iter()
            .flatten()
            .copied()
            .chain(target)
            .fold(0.0_f64, f64::max)
            .max(1e-3)
            * 1.2
    };
    // Categories at 0, 1, 2…, half a step of room on either side.
    let x = -0.5..labels.len() as f64 - 0.5;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .right_y_label_area_size(70)
        .build_cartesian_2d(
            x.clone(),
            0.0..top(rate.1, rate_target.as_ref().map(|t| t.1)),
        )?
        .set_secondary_coord(x.clone(), 0.0..top(p99.1, p99_target.as_ref().map(|t| t.1)));
    let label = |v: &f64| {
        let i = v.round();
        match labels.get(i as usize) {
            Some(label) if (v - i).abs() < 1e-6 && i >= 0.0 => label.clone(),
            _ => String::new(),
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc(x_desc)
        .y_desc(rate.0)
        .x_labels(labels.len())
        .x_label_formatter(&label)
        .y_label_formatter(&|v| thousands(*v))
        .light_line_style(WHITE)
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc(p99.0)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    let points = |values: &[Option<f64>]| {
        values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (i as f64, v)))
            .collect::<Vec<_>>()
    };
    let (blue, red) = (BLUE.stroke_width(2), RED.stroke_width(2));
    chart
        .draw_series(LineSeries::new(points(rate.1), blue))?
        .label(rate.0)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue));
    chart.draw_series(
        points(rate.1)
            .into_iter()
            .map(|p| Circle::new(p, 4, BLUE.filled())),
    )?;
    chart
        .draw_secondary_series(LineSeries::new(points(p99.1), red))?
        .label(p99.0)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red));
    chart.draw_secondary_series(
        points(p99.1)
            .into_iter()
            .map(|p| Circle::new(p, 4, RED.filled())),
    )?;
    let across = |y: f64| vec![(x.start, y), (x.end, y)];
    if let Some((name, y)) = rate_target {
        let style = BLUE.mix(0.4).stroke_width(1);
        chart
            .draw_series(LineSeries::new(across(y), style))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    if let Some((name, y)) = p99_target {
        let style = RED.mix(0.4).stroke_width(1);
        chart
            .draw_secondary_series(LineSeries::new(across(y), style))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}
