//! Prints throughput and latency figures of the real server on loopback with
//! a real SQLite file: `cargo run --release --example bench [-- SECONDS CONCURRENCY]`.
//!
//! Each phase runs CONCURRENCY callers in parallel for SECONDS and reports
//! calls per second and p50/p99/max latency. Figures, not assertions: compare
//! them with the machine's limits in shared/TOOLCHAIN.md.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use conversations::{
    app::admin,
    config::Settings,
    pb::{self, conversation_service_client::ConversationServiceClient},
    startup::Application,
};
use tokio::sync::Mutex;
use tonic::{metadata::MetadataValue, transport::Channel};

type Client = ConversationServiceClient<Channel>;

struct Bench {
    client: Client,
    auth: MetadataValue<tonic::metadata::Ascii>,
}

impl Bench {
    fn req<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.auth.clone());
        request
    }
}

fn agent() -> Option<pb::AgentRef> {
    Some(pb::AgentRef {
        agent_id: "bench-agent".into(),
        display_name: "Bench".into(),
        channel: pb::Channel::Inbox.into(),
    })
}

async fn phase<F, Fut>(
    name: &str,
    seconds: u64,
    concurrency: usize,
    bench: Arc<Bench>,
    ids: Arc<Vec<String>>,
    op: F,
) where
    F: Fn(Arc<Bench>, Arc<Vec<String>>, usize) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (bench, ids, latencies) = (bench.clone(), ids.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut i = worker;
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                if op(bench.clone(), ids.clone(), i).await.is_err() {
                    errors += 1;
                }
                mine.push(t.elapsed());
                i += concurrency;
            }
            latencies.lock().await.extend(mine);
            errors
        }));
    }
    let mut errors = 0;
    for task in tasks {
        errors += task.await.unwrap_or(0);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut all = latencies.lock().await.clone();
    all.sort_unstable();
    let pick = |q: f64| percentile(&all, q);
    println!(
        "{name:<34} {:>8.0} calls/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  ({} calls, {errors} errors)",
        all.len() as f64 / elapsed,
        pick(0.50).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        all.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        all.len(),
    );
}

/// The `q` quantile of sorted latencies (zero when there are none).
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let index = ((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(index).copied().unwrap_or_default()
}

/// Resident memory of this process (server and bench clients together).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// `streams` WatchEvents subscribers (each on its own connection) follow the
/// feed while one writer posts `messages` messages; prints the commit-to-
/// delivery latency over every delivered event.
async fn fan_out(
    bench: &Arc<Bench>,
    addr: std::net::SocketAddr,
    streams: usize,
    messages: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    use tokio_stream::StreamExt;
    let head = bench
        .client
        .clone()
        .list_events(bench.req(pb::ListEventsRequest {
            page_size: 1,
            ..Default::default()
        }))
        .await?
        .into_inner()
        .head_sequence;
    let conversation = bench
        .client
        .clone()
        .start_conversation(bench.req(pb::StartConversationRequest {
            visitor_id: "fan-out".into(),
            agent: agent(),
            request_id: String::new(),
            flow_id: String::new(),
        }))
        .await?
        .into_inner();
    let id = conversation
        .conversation
        .ok_or("no conversation")?
        .conversation_id;
    let last = Arc::new(tokio::sync::Mutex::new(Vec::<Duration>::new()));
    let mut readers = Vec::new();
    for _ in 0..streams {
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let mut client = ConversationServiceClient::new(channel);
        let mut stream = client
            .watch_events(bench.req(pb::WatchEventsRequest {
                after_sequence: conversation.event_sequence,
                ..Default::default()
            }))
            .await?
            .into_inner();
        let latencies = last.clone();
        readers.push(tokio::spawn(async move {
            let mut mine = Vec::with_capacity(messages);
            while mine.len() < messages {
                let Some(Ok(item)) = stream.next().await else {
                    break;
                };
                if let Some(pb::watch_events_response::Item::Event(event)) = item.item {
                    let created = event.create_time.unwrap_or_default();
                    let created = std::time::UNIX_EPOCH
                        + Duration::new(created.seconds as u64, created.nanos as u32);
                    mine.push(
                        std::time::SystemTime::now()
                            .duration_since(created)
                            .unwrap_or_default(),
                    );
                }
            }
            latencies.lock().await.extend(mine);
        }));
    }
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..8 {
        let (bench, id) = (bench.clone(), id.clone());
        writers.push(tokio::spawn(async move {
            for _ in (w..messages).step_by(8) {
                let _ = bench
                    .client
                    .clone()
                    .send_message(bench.req(pb::SendMessageRequest {
                        conversation_id: id.clone(),
                        sender: Some(pb::send_message_request::Sender::Agent(
                            agent().unwrap_or_default(),
                        )),
                        content: Some(pb::send_message_request::Content::Text("fan-out".into())),
                        request_id: String::new(),
                    }))
                    .await;
            }
        }));
    }
    for writer in writers {
        writer.await?;
    }
    let written = started.elapsed();
    for reader in readers {
        reader.await?;
    }
    let delivered = started.elapsed();
    let mut all = last.lock().await.clone();
    all.sort_unstable();
    let pick = |q: f64| percentile(&all, q);
    println!(
        "WatchEvents fan-out: {streams} streams x {messages} events ({} delivered; head was {head}); writes took {:.2} s, all delivered after {:.2} s; commit->delivery p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        all.len(),
        written.as_secs_f64(),
        delivered.as_secs_f64(),
        pick(0.5).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        all.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let concurrency: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);

    let dir = tempfile::tempdir()?;
    let settings = Settings {
        listen: "127.0.0.1:0".parse()?,
        database: dir.path().join("bench.db"),
        feed: Default::default(),
    };
    let application = Application::build(&settings).await?;
    let keys = admin::bootstrap(application.app().store())
        .await?
        .ok_or("fresh database expected")?;
    let addr = application.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until(async {
        let _ = stopped.await;
    }));

    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let bench = Arc::new(Bench {
        client: ConversationServiceClient::new(channel),
        auth: format!("Bearer {}", keys.agent.token).parse()?,
    });
    println!(
        "conversations bench: {seconds} s per phase, {concurrency} callers, one HTTP/2 connection, SQLite synchronous=FULL"
    );

    // Seed conversations for the phases that need existing ones.
    let mut ids = Vec::new();
    for i in 0..concurrency * 4 {
        let response = bench
            .client
            .clone()
            .start_conversation(bench.req(pb::StartConversationRequest {
                visitor_id: format!("visitor-{i}"),
                agent: agent(),
                request_id: String::new(),
                flow_id: String::new(),
            }))
            .await?;
        ids.push(
            response
                .into_inner()
                .conversation
                .ok_or("no conversation")?
                .conversation_id,
        );
    }
    let ids = Arc::new(ids);

    phase(
        "StartConversation",
        seconds,
        concurrency,
        bench.clone(),
        ids.clone(),
        |b, _, i| async move {
            b.client
                .clone()
                .start_conversation(b.req(pb::StartConversationRequest {
                    visitor_id: format!("v-{i}"),
                    agent: None,
                    request_id: format!("start-{i}"),
                    flow_id: String::new(),
                }))
                .await
                .map(drop)
        },
    )
    .await;
    phase(
        "SendMessage (agent text)",
        seconds,
        concurrency,
        bench.clone(),
        ids.clone(),
        |b, ids, i| async move {
            b.client
                .clone()
                .send_message(b.req(pb::SendMessageRequest {
                    conversation_id: ids[i % ids.len()].clone(),
                    sender: Some(pb::send_message_request::Sender::Agent(
                        agent().unwrap_or_default(),
                    )),
                    content: Some(pb::send_message_request::Content::Text(
                        "How can I help?".into(),
                    )),
                    request_id: String::new(),
                }))
                .await
                .map(drop)
        },
    )
    .await;
    phase(
        "Close+Reopen (2 calls each)",
        seconds,
        concurrency,
        bench.clone(),
        ids.clone(),
        |b, ids, i| async move {
            // Each worker owns the ids i, i+concurrency, … so its pairs never race.
            let id = ids[i % ids.len()].clone();
            b.client
                .clone()
                .close_conversation(b.req(pb::CloseConversationRequest {
                    conversation_id: id.clone(),
                    agent: agent(),
                    ..Default::default()
                }))
                .await?;
            b.client
                .clone()
                .reopen_conversation(b.req(pb::ReopenConversationRequest {
                    conversation_id: id,
                    agent: agent(),
                    ..Default::default()
                }))
                .await
                .map(drop)
        },
    )
    .await;
    phase(
        "GetConversation",
        seconds,
        concurrency,
        bench.clone(),
        ids.clone(),
        |b, ids, i| async move {
            b.client
                .clone()
                .get_conversation(b.req(pb::GetConversationRequest {
                    conversation_id: ids[i % ids.len()].clone(),
                    visitor_id: String::new(),
                }))
                .await
                .map(drop)
        },
    )
    .await;
    phase(
        "ListConversations (50 + counts)",
        seconds,
        concurrency,
        bench.clone(),
        ids.clone(),
        |b, _, _| async move {
            b.client
                .clone()
                .list_conversations(b.req(pb::ListConversationsRequest {
                    page_size: 50,
                    ..Default::default()
                }))
                .await
                .map(drop)
        },
    )
    .await;

    fan_out(&bench, addr, 100, 2000).await?;
    println!("process RSS after the phases: {:.1} MiB", rss_mib());

    let _ = stop.send(());
    server.await??;
    let db_bytes: u64 = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "database files: {:.1} MiB",
        db_bytes as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}
