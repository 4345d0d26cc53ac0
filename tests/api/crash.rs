//! kill -9 under load: a server binary is SIGKILLed while writers with
//! request ids and resuming subscribers (the whole feed, and only starts)
//! keep it busy, then restarted on the same database, again and again.
//! Nothing acknowledged may be lost, no request may apply twice, a retry of
//! an interrupted request gets the first response, and each subscriber's
//! feed equals the stored events of its filter.
//!
//! On SQLite that is the one server of the file. On PostgreSQL it is one of
//! three replicas of one database: writers are spread over them, subscribers
//! reconnect to a random replica each time their stream breaks, interrupted
//! requests are retried on any replica, and the killed replica is restarted
//! while the others are under load.
//!
//! `CONVERSATIONS_BIN` picks the binary (CI points it at the release build);
//! `CRASH_ROUNDS` the number of kills (5 by default).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use conversations::{
    pb::{
        self,
        conversation_service_client::ConversationServiceClient,
        send_message_request::{Content, Sender},
        watch_events_response::Item,
    },
    store::Location,
};
use sqlx::{
    ConnectOptions, Connection, PgConnection, SqliteConnection, sqlite::SqliteConnectOptions,
};
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::{
    helpers::fresh_database,
    process::{Server, authorized, serve},
};

const WRITERS: usize = 12;
/// Servers of one PostgreSQL database in this test.
const REPLICAS: usize = 3;

type Client = ConversationServiceClient<Channel>;

async fn connect(addr: &str) -> Client {
    try_connect(addr).await.expect("connect")
}

/// A client of `addr`, or None when nothing listens there (a killed server).
async fn try_connect(addr: &str) -> Option<Client> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .ok()?;
    Some(ConversationServiceClient::new(channel))
}

/// One request a writer sends, by its request id; its text (for messages)
/// is unique, so a duplicate would show in the thread.
#[derive(Clone, Debug)]
enum Op {
    Start { visitor: String },
    Say { conversation: String, text: String },
}

/// What an acknowledged request answered.
#[derive(Clone, Debug, PartialEq)]
struct Answer {
    conversation_id: String,
    event_sequence: i64,
    message_id: String,
}

async fn send(
    client: &mut Client,
    key: &str,
    request_id: &str,
    op: &Op,
) -> Result<Answer, tonic::Status> {
    match op {
        Op::Start { visitor } => {
            let r = client
                .start_conversation(authorized(
                    key,
                    pb::StartConversationRequest {
                        visitor_id: visitor.clone(),
                        request_id: request_id.to_owned(),
                        ..Default::default()
                    },
                ))
                .await?
                .into_inner();
            Ok(Answer {
                conversation_id: r
                    .conversation
                    .map(|c| c.conversation_id)
                    .unwrap_or_default(),
                event_sequence: r.event_sequence,
                message_id: String::new(),
            })
        }
        Op::Say { conversation, text } => {
            let r = client
                .send_message(authorized(
                    key,
                    pb::SendMessageRequest {
                        conversation_id: conversation.clone(),
                        sender: Some(Sender::Agent(pb::AgentRef {
                            agent_id: "dana".into(),
                            display_name: "Dana".into(),
                            channel: pb::Channel::Inbox.into(),
                        })),
                        content: Some(Content::Text(text.clone())),
                        request_id: request_id.to_owned(),
                        audience: 0,
                    },
                ))
                .await?
                .into_inner();
            Ok(Answer {
                conversation_id: conversation.clone(),
                event_sequence: r.event_sequence,
                message_id: r.message.map(|m| m.message_id).unwrap_or_default(),
            })
        }
    }
}

#[derive(Default)]
struct Ledger {
    /// Every request sent, by id.
    ops: BTreeMap<String, Op>,
    /// Acknowledged answers, by request id.
    acked: HashMap<String, Answer>,
}

/// A writer: starts a conversation, then writes in it, until its server
/// dies or `stop` is set. Requests whose answer never came stay
/// unacknowledged in the ledger.
async fn write(
    addr: String,
    key: String,
    w: usize,
    round: usize,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) {
    let mut client = connect(&addr).await;
    let start_id = format!("r{round}-w{w}-start");
    let start = Op::Start {
        visitor: format!("v-{round}-{w}"),
    };
    ledger
        .lock()
        .unwrap()
        .ops
        .insert(start_id.clone(), start.clone());
    let Ok(started) = send(&mut client, &key, &start_id, &start).await else {
        return;
    };
    ledger
        .lock()
        .unwrap()
        .acked
        .insert(start_id, started.clone());
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let request_id = format!("r{round}-w{w}-m{n}");
        let op = Op::Say {
            conversation: started.conversation_id.clone(),
            text: format!("{request_id} text"),
        };
        ledger
            .lock()
            .unwrap()
            .ops
            .insert(request_id.clone(), op.clone());
        match send(&mut client, &key, &request_id, &op).await {
            Ok(answer) => {
                ledger.lock().unwrap().acked.insert(request_id, answer);
            }
            Err(_) => return,
        }
    }
}

/// Where a subscriber is: its cursor and every sequence it received.
type Cursor = Arc<Mutex<(i64, Vec<i64>)>>;

/// A subscriber: its filter (event types; none for the whole feed), the
/// `kind` of the events it must end up with (None: all), and its cursor.
struct Subscriber {
    event_types: Vec<i32>,
    kind: Option<&'static str>,
    cursor: Cursor,
}

/// Follows the workspace feed (of `event_types`) on `addr` from the cursor
/// until the stream breaks; keeps every event sequence it received.
async fn subscribe(addr: String, key: String, event_types: Vec<i32>, cursor: Cursor) {
    let Ok(Some(mut client)) =
        tokio::time::timeout(Duration::from_secs(2), try_connect(&addr)).await
    else {
        return;
    };
    let after = cursor.lock().unwrap().0;
    let Ok(stream) = client
        .watch_events(authorized(
            &key,
            pb::WatchEventsRequest {
                after_sequence: after,
                event_types,
                ..Default::default()
            },
        ))
        .await
    else {
        return;
    };
    let mut stream = stream.into_inner();
    while let Some(Ok(item)) = stream.next().await {
        let mut cursor = cursor.lock().unwrap();
        match item.item {
            Some(Item::Event(event)) => {
                cursor.0 = event.sequence;
                cursor.1.push(event.sequence);
            }
            Some(Item::Checkpoint(c)) => cursor.0 = c.sequence,
            None => {}
        }
    }
}

/// Resubscribes from the cursor, each time to a random server of `addrs`,
/// whenever the stream breaks, until `stop` is set.
async fn follow(
    addrs: Vec<String>,
    key: String,
    event_types: Vec<i32>,
    cursor: Cursor,
    stop: Arc<AtomicBool>,
    mut seed: u64,
) {
    while !stop.load(Ordering::Relaxed) {
        let addr = addrs[(next(&mut seed) % addrs.len() as u64) as usize].clone();
        let stream = subscribe(addr, key.clone(), event_types.clone(), cursor.clone());
        tokio::select! {
            () = stream => tokio::time::sleep(Duration::from_millis(20)).await,
            () = async {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            } => return,
        }
    }
}

/// xorshift64: the test's randomness, the same every run.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// The database, read beside the servers with its own driver.
enum Reader {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl Reader {
    async fn open(database: &Location) -> Self {
        match database {
            Location::File(path) => Self::Sqlite(
                SqliteConnectOptions::new()
                    .filename(path)
                    .connect()
                    .await
                    .expect("open"),
            ),
            Location::Postgres(url) => {
                Self::Postgres(PgConnection::connect(url).await.expect("connect"))
            }
        }
    }

    /// The text column of every row `sql` (one text parameter) selects.
    async fn texts(&mut self, sql: &str, parameter: &str) -> Vec<String> {
        match self {
            Self::Sqlite(conn) => {
                sqlx::query_scalar(sql)
                    .bind(parameter)
                    .fetch_all(conn)
                    .await
            }
            Self::Postgres(conn) => {
                sqlx::query_scalar(sql)
                    .bind(parameter)
                    .fetch_all(conn)
                    .await
            }
        }
        .expect("read")
    }

    /// The sequences of the stored feed of workspace 1 (of `kind`).
    async fn sequences(&mut self, kind: Option<&str>) -> Vec<i64> {
        let sql = "SELECT sequence FROM events WHERE workspace_id = 1 \
                   AND ($1 = '' OR kind = $1) ORDER BY sequence";
        let kind = kind.unwrap_or_default();
        match self {
            Self::Sqlite(conn) => sqlx::query_scalar(sql).bind(kind).fetch_all(conn).await,
            Self::Postgres(conn) => sqlx::query_scalar(sql).bind(kind).fetch_all(conn).await,
        }
        .expect("events")
    }

    /// The conversation a start for `visitor` made, if committed.
    async fn started(&mut self, visitor: &str) -> Vec<String> {
        self.texts(
            "SELECT conversation_id FROM conversations WHERE visitor_id = $1",
            visitor,
        )
        .await
    }

    /// The message with `text`, if committed.
    async fn said(&mut self, text: &str) -> Vec<String> {
        self.texts(
            "SELECT message_id FROM messages WHERE content LIKE $1",
            &format!("%\"{text}\"%"),
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_loses_nothing_acknowledged_and_applies_nothing_twice() {
    let rounds: usize = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().expect("temp dir");
    let database = fresh_database(dir.path()).await;
    let replicas = match database {
        Location::File(_) => 1,
        Location::Postgres(_) => REPLICAS,
    };
    let (first, key) = serve(&database).await;
    let key = key.expect("a new database prints an agent key");
    let mut servers: Vec<Server> = vec![first];
    for _ in 1..replicas {
        let (replica, printed) = serve(&database).await;
        assert!(printed.is_none(), "a replica prints no keys");
        servers.push(replica);
    }
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let subscribers = [
        Subscriber {
            event_types: Vec::new(),
            kind: None,
            cursor: Cursor::default(),
        },
        Subscriber {
            event_types: vec![pb::EventType::ConversationStarted.into()],
            kind: Some("conversation_started"),
            cursor: Cursor::default(),
        },
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;

    // Requests whose answer the kill swallowed, and of those, the ones the
    // server had committed before it died.
    let (mut retried, mut replayed_after_commit) = (0, 0);
    // One reader of the database beside the servers, across their restarts.
    let mut reader = Reader::open(&database).await;
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
        let followers: Vec<_> = subscribers
            .iter()
            .map(|s| {
                tokio::spawn(follow(
                    addrs.clone(),
                    key.clone(),
                    s.event_types.clone(),
                    s.cursor.clone(),
                    stop.clone(),
                    next(&mut seed),
                ))
            })
            .collect();
        let mut writers = JoinSet::new();
        for w in 0..WRITERS {
            writers.spawn(write(
                addrs[w % addrs.len()].clone(),
                key.clone(),
                w,
                round,
                ledger.clone(),
                stop.clone(),
            ));
        }
        // Kill one server at a random moment, 50-350 ms into the load; start
        // it again while the others (if any) carry on.
        tokio::time::sleep(Duration::from_millis(50 + next(&mut seed) % 300)).await;
        let victim = round % servers.len();
        servers[victim].child.start_kill().expect("SIGKILL");
        let _ = servers[victim].child.wait().await;
        let (restarted, printed) = serve(&database).await;
        assert!(printed.is_none(), "a restart prints no keys");
        servers[victim] = restarted;
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, Ordering::Relaxed);
        writers.join_all().await;
        for follower in followers {
            let _ = follower.await;
        }

        // Every request whose answer never came is retried with its id, on
        // any server: it applies now, or it had committed and replays its
        // first response.
        let unknown: Vec<(String, Op)> = {
            let ledger = ledger.lock().unwrap();
            ledger
                .ops
                .iter()
                .filter(|(id, _)| !ledger.acked.contains_key(*id))
                .map(|(id, op)| (id.clone(), op.clone()))
                .collect()
        };
        for (request_id, op) in unknown {
            // What the killed server had committed of it, if anything.
            let committed = match &op {
                Op::Start { visitor } => reader.started(visitor).await,
                Op::Say { text, .. } => reader.said(text).await,
            }
            .pop();
            let server = &servers[(next(&mut seed) % servers.len() as u64) as usize];
            let answer = send(&mut connect(&server.addr).await, &key, &request_id, &op)
                .await
                .unwrap_or_else(|e| panic!("round {round}: retry of {request_id}: {e:?}"));
            if let Some(id) = committed {
                // Committed, never answered: the retry is the original answer.
                let answered = match op {
                    Op::Start { .. } => &answer.conversation_id,
                    Op::Say { .. } => &answer.message_id,
                };
                assert_eq!(
                    answered, &id,
                    "{request_id}: the retry answers what was committed"
                );
                replayed_after_commit += 1;
            }
            retried += 1;
            ledger.lock().unwrap().acked.insert(request_id, answer);
        }
    }

    // A retry of any acknowledged request, on any server, answers what it
    // answered first.
    let mut clients = Vec::new();
    for server in &servers {
        clients.push(connect(&server.addr).await);
    }
    let (ops, acked) = {
        let ledger = ledger.lock().unwrap();
        (ledger.ops.clone(), ledger.acked.clone())
    };
    assert_eq!(ops.len(), acked.len(), "every request ended acknowledged");
    for (i, (request_id, op)) in ops.iter().enumerate() {
        let client = &mut clients[i % servers.len()];
        let again = send(client, &key, request_id, op).await.expect("replay");
        assert_eq!(
            &again, &acked[request_id],
            "{request_id} replays its first answer"
        );
    }

    // Every acknowledged start made exactly its one conversation.
    let mut lost = 0;
    let mut duplicated = 0;
    for (request_id, op) in &ops {
        let Op::Start { visitor } = op else {
            continue;
        };
        match reader.started(visitor).await.as_slice() {
            [] => lost += 1,
            [one] => assert_eq!(one, &acked[request_id].conversation_id),
            _ => duplicated += 1,
        }
    }
    // Every acknowledged message is in its thread exactly once.
    let client = &mut clients[0];
    let mut threads: HashMap<String, Vec<pb::Message>> = HashMap::new();
    for (request_id, op) in &ops {
        let Op::Say { conversation, text } = op else {
            continue;
        };
        if !threads.contains_key(conversation) {
            let messages = client
                .list_messages(authorized(
                    &key,
                    pb::ListMessagesRequest {
                        conversation_id: conversation.clone(),
                        page_size: 500,
                        ..Default::default()
                    },
                ))
                .await
                .expect("thread")
                .into_inner()
                .messages;
            threads.insert(conversation.clone(), messages);
        }
        let copies: Vec<_> = threads[conversation]
            .iter()
            .filter(|m| matches!(&m.content, Some(pb::message::Content::Text(t)) if t == text))
            .collect();
        match copies.len() {
            0 => lost += 1,
            1 => assert_eq!(copies[0].message_id, acked[request_id].message_id),
            _ => duplicated += 1,
        }
    }
    // Each subscriber's feed, resumed across every kill (and on PostgreSQL
    // across replicas), is the stored feed of its filter.
    let mut events_checked = 0;
    let mut gaps = 0;
    for (i, subscriber) in subscribers.iter().enumerate() {
        subscribe_to_head(&servers[i % servers.len()].addr, &key, subscriber).await;
        let stored = reader.sequences(subscriber.kind).await;
        assert_eq!(
            subscriber.cursor.lock().unwrap().1,
            stored,
            "{:?}: no gap, no repeat",
            subscriber.kind
        );
        if subscriber.kind.is_none() {
            gaps = stored
                .iter()
                .zip(1..)
                .filter(|(sequence, expected)| **sequence != *expected)
                .count();
        }
        events_checked += stored.len();
    }
    println!(
        "crash test on {database}: {replicas} server(s), {rounds} kills, {} requests acknowledged (every one replayed its first answer), {retried} retried after a kill ({replayed_after_commit} of them had committed and answered as first committed), lost = {lost}, duplicated = {duplicated}, gaps = {gaps}, {events_checked} events checked over {} subscribers",
        acked.len(),
        subscribers.len()
    );
    assert_eq!((lost, duplicated, gaps), (0, 0, 0));

    for server in &mut servers {
        server.child.start_kill().expect("SIGKILL");
        let _ = server.child.wait().await;
    }
    if let Reader::Sqlite(conn) = &mut reader {
        let check: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(conn)
            .await
            .expect("integrity check");
        assert_eq!(check, "ok");
    }
}

/// Follows the feed until the subscriber has everything up to the head.
async fn subscribe_to_head(addr: &str, key: &str, subscriber: &Subscriber) {
    let cursor = &subscriber.cursor;
    let mut client = connect(addr).await;
    let head = client
        .list_events(authorized(
            key,
            pb::ListEventsRequest {
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .expect("head")
        .into_inner()
        .head_sequence;
    let follow = tokio::spawn(subscribe(
        addr.to_owned(),
        key.to_owned(),
        subscriber.event_types.clone(),
        cursor.clone(),
    ));
    tokio::time::timeout(Duration::from_secs(30), async {
        while cursor.lock().unwrap().0 < head {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the subscriber reaches the head");
    follow.abort();
}
