//! kill -9 under load: the server binary is SIGKILLed while writers with
//! request ids and a resuming subscriber keep it busy, then restarted on the
//! same file, again and again. Nothing acknowledged may be lost, no request
//! may apply twice, a retry of an interrupted request gets the first
//! response, and the subscriber's feed equals the stored one.
//!
//! `CONVERSATIONS_BIN` picks the binary (CI points it at the release build);
//! `CRASH_ROUNDS` the number of kills (5 by default).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use conversations::pb::{
    self,
    conversation_service_client::ConversationServiceClient,
    send_message_request::{Content, Sender},
    watch_events_response::Item,
};
use sqlx::{ConnectOptions, Row, sqlite::SqliteConnectOptions};
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tonic::{Request, transport::Channel};

use crate::process::serve;

const WRITERS: usize = 12;

type Client = ConversationServiceClient<Channel>;

async fn connect(addr: &str) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    ConversationServiceClient::new(channel)
}

fn authorized<T>(key: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("metadata"),
    );
    request
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

/// A writer: starts a conversation, then writes in it, until the server
/// dies. Requests whose answer never came stay unacknowledged in the ledger.
async fn write(addr: String, key: String, w: usize, round: usize, ledger: Arc<Mutex<Ledger>>) {
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

/// Follows the whole workspace feed, resuming from its cursor whenever the
/// stream breaks; keeps every event sequence it received.
async fn subscribe(addr: String, key: String, cursor: Arc<Mutex<(i64, Vec<i64>)>>) {
    let Ok(mut client) = tokio::time::timeout(Duration::from_secs(2), connect(&addr)).await else {
        return;
    };
    let after = cursor.lock().unwrap().0;
    let Ok(stream) = client
        .watch_events(authorized(
            &key,
            pb::WatchEventsRequest {
                after_sequence: after,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_loses_nothing_acknowledged_and_applies_nothing_twice() {
    let rounds: usize = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("crash.db");
    let (mut server, key) = serve(&db).await;
    let key = key.expect("a new database prints an agent key");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let cursor = Arc::new(Mutex::new((0i64, Vec::new())));
    let mut seed = 0x2545_f491_4f6c_dd1du64;

    for round in 0..rounds {
        let subscriber = tokio::spawn(subscribe(server.addr.clone(), key.clone(), cursor.clone()));
        let mut writers = JoinSet::new();
        for w in 0..WRITERS {
            writers.spawn(write(
                server.addr.clone(),
                key.clone(),
                w,
                round,
                ledger.clone(),
            ));
        }
        // Kill at a random moment, 50-350 ms into the load.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(50 + seed % 300)).await;
        server.child.start_kill().expect("SIGKILL");
        let _ = server.child.wait().await;
        writers.join_all().await;
        let _ = subscriber.await;

        let (restarted, printed) = serve(&db).await;
        assert!(printed.is_none(), "a restart prints no keys");
        server = restarted;

        // Every request whose answer never came is retried with its id: it
        // applies now, or it had committed and replays its first response.
        let unknown: Vec<(String, Op)> = {
            let ledger = ledger.lock().unwrap();
            ledger
                .ops
                .iter()
                .filter(|(id, _)| !ledger.acked.contains_key(*id))
                .map(|(id, op)| (id.clone(), op.clone()))
                .collect()
        };
        let mut client = connect(&server.addr).await;
        for (request_id, op) in unknown {
            let answer = send(&mut client, &key, &request_id, &op)
                .await
                .unwrap_or_else(|e| panic!("round {round}: retry of {request_id}: {e:?}"));
            ledger.lock().unwrap().acked.insert(request_id, answer);
        }
    }

    // A retry of any acknowledged request answers what it answered first.
    let mut client = connect(&server.addr).await;
    let (ops, acked) = {
        let ledger = ledger.lock().unwrap();
        (ledger.ops.clone(), ledger.acked.clone())
    };
    assert_eq!(ops.len(), acked.len(), "every request ended acknowledged");
    for (request_id, op) in &ops {
        let again = send(&mut client, &key, request_id, op)
            .await
            .expect("replay");
        assert_eq!(
            &again, &acked[request_id],
            "{request_id} replays its first answer"
        );
    }

    // Every acknowledged message is in its thread exactly once.
    let mut lost = 0;
    let mut duplicated = 0;
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
    println!(
        "crash test: {rounds} kills, {} requests acknowledged, lost = {lost}, duplicated = {duplicated}",
        acked.len()
    );
    assert_eq!((lost, duplicated), (0, 0));

    // The subscriber's feed, resumed across every kill, is the stored feed.
    subscribe_to_head(&server.addr, &key, &cursor).await;
    let stored =
        sqlx::query("SELECT sequence FROM events WHERE workspace_id = 1 ORDER BY sequence")
            .fetch_all(
                &mut SqliteConnectOptions::new()
                    .filename(&db)
                    .connect()
                    .await
                    .expect("open"),
            )
            .await
            .expect("events")
            .iter()
            .map(|r| r.get::<i64, _>(0))
            .collect::<Vec<_>>();
    assert_eq!(cursor.lock().unwrap().1, stored, "no gap, no repeat");
    assert_eq!(stored, (1..=stored.len() as i64).collect::<Vec<_>>());

    server.child.start_kill().expect("SIGKILL");
    let _ = server.child.wait().await;
    let mut conn = SqliteConnectOptions::new()
        .filename(&db)
        .connect()
        .await
        .expect("open");
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .expect("integrity check");
    assert_eq!(check, "ok");
}

/// Follows the feed until the subscriber has everything up to the head.
async fn subscribe_to_head(addr: &str, key: &str, cursor: &Arc<Mutex<(i64, Vec<i64>)>>) {
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
    let follow = tokio::spawn(subscribe(addr.to_owned(), key.to_owned(), cursor.clone()));
    tokio::time::timeout(Duration::from_secs(30), async {
        while cursor.lock().unwrap().0 < head {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the subscriber reaches the head");
    follow.abort();
}
