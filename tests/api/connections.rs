//! Connections that keep the server waiting are closed; connections in use
//! are not. A server with short timeouts (a first byte within 0.5 s, an
//! answer to bytes within 1 s, 1.5 s idle at most, HTTP/2 pings every
//! 0.4 s, heartbeats every 0.2 s), raw sockets for the clients that
//! misbehave, and the generated client, over HTTP/2 and over grpc-web on
//! HTTP/1.1, for those that behave.

use std::time::{Duration, Instant};

use conversations::{config::Settings, connections::ConnectionTimeouts, feed::FeedConfig, pb};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_stream::StreamExt;

use crate::{
    helpers::*,
    web::{grpc_web, session_token},
};

/// Long enough for any of the short timeouts below to have fired.
const SURELY: Duration = Duration::from_secs(10);

fn impatient(web_root: Option<std::path::PathBuf>) -> Settings {
    Settings {
        connections: ConnectionTimeouts {
            first_byte: Duration::from_millis(500),
            unanswered: Duration::from_secs(1),
            idle: Duration::from_millis(1500),
            ping_every: Duration::from_millis(400),
        },
        feed: FeedConfig {
            heartbeat: Duration::from_millis(200),
            ..FeedConfig::default()
        },
        metrics_listen: Some("127.0.0.1:0".parse().expect("address")),
        web_root,
        ..default_settings()
    }
}

/// Whether the server has closed `tcp`, reading (and dropping) what it
/// sends meanwhile, for at most `within`.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut sink = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Reads one HTTP/1.1 answer's head (up to its blank line) from `tcp`.
async fn answer_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(SURELY, tcp.read(&mut byte))
            .await
            .expect("an answer")
            .expect("read");
        assert_eq!(read, 1, "closed before the answer's head ended");
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("an ASCII head")
}

#[tokio::test]
async fn sockets_that_say_nothing_trickle_headers_or_sit_idle_are_closed() {
    let web_root = tempfile::tempdir().expect("temp dir");
    std::fs::write(web_root.path().join("index.html"), "<p>hello</p>").expect("file");
    let app = TestApp::spawn_with(impatient(Some(web_root.path().to_path_buf()))).await;
    let metrics = app.metrics_addr.expect("metrics");
    let cut = |text: &str, reason: &str| {
        sample(
            text,
            &format!("conversations_connections_cut_total{{reason=\"{reason}\"}}"),
        )
    };
    let before = scrape(metrics).await;

    // Connects and says nothing.
    let mut silent = TcpStream::connect(app.addr).await.expect("connect");
    assert!(
        closed_within(&mut silent, SURELY).await,
        "a socket that sent nothing was held open"
    );

    // Sends a request line, then one byte of a header every 100 ms: never
    // idle, never a request (slowloris).
    let mut trickle = TcpStream::connect(app.addr).await.expect("connect");
    trickle
        .write_all(b"GET /index.html HTTP/1.1\r\nhost: x\r\nx-slow: ")
        .await
        .expect("write");
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < SURELY {
        if trickle.write_all(b"a").await.is_err()
            || closed_within(&mut trickle, Duration::from_millis(100)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a client trickling its headers was held open");

    // A keep-alive connection answered twice, then left idle.
    let mut idle = TcpStream::connect(app.addr).await.expect("connect");
    for _ in 0..2 {
        idle.write_all(b"GET /index.html HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let head = answer_head(&mut idle).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut body = [0u8; 12];
        idle.read_exact(&mut body).await.expect("the body");
        assert_eq!(&body, b"<p>hello</p>");
        // Less than the idle timeout: the second request finds it open.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert!(
        closed_within(&mut idle, SURELY).await,
        "an idle keep-alive connection was held open"
    );

    let after = scrape(metrics).await;
    for reason in ["no_first_byte", "unanswered", "idle"] {
        assert!(
            cut(&after, reason) > cut(&before, reason),
            "conversations_connections_cut_total{{reason={reason}}} did not move:\n{after}"
        );
    }
}

#[tokio::test]
async fn connections_in_use_outlive_every_timeout_streams_included() {
    let app = TestApp::spawn_with(impatient(None)).await;
    let mut agent = app.agent().await;
    let conversation = start(&mut agent, "v-ada").await;
    let id = conversation.conversation_id;
    // A widget's stream over grpc-web on HTTP/1.1, an Inbox's over HTTP/2.
    let token = session_token(&app, "v-ada").await;
    let mut browser = grpc_web(&app, &token);
    let watch = pb::WatchEventsRequest {
        conversation_id: id.clone(),
        ..Default::default()
    };
    let mut widget = browser
        .watch_events(watch.clone())
        .await
        .expect("watch over grpc-web")
        .into_inner();
    let mut inbox = agent
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .expect("watch over HTTP/2")
        .into_inner();
    // Longer than the idle and the unanswered timeouts together, with no
    // event: only checkpoints and pings cross.
    let quiet_until = Instant::now() + Duration::from_secs(4);
    let mut checkpoints = 0;
    while Instant::now() < quiet_until {
        tokio::select! {
            item = widget.next() => {
                let item = item.expect("the widget's stream stays open").expect("an item");
                if let Some(pb::watch_events_response::Item::Checkpoint(_)) = item.item {
                    checkpoints += 1;
                }
            }
            item = inbox.next() => {
                item.expect("the Inbox's stream stays open").expect("an item");
            }
            () = tokio::time::sleep_until(quiet_until.into()) => {}
        }
    }
    assert!(checkpoints > 4, "{checkpoints} checkpoints in 4 s");
    // Both streams are still live: the reply reaches each of them.
    agent
        .send_message(text_request(
            &id,
            pb::send_message_request::Sender::Agent(dana()),
            "Still here?",
            "",
        ))
        .await
        .expect("a unary call on the same channel");
    for (name, stream) in [("widget", &mut widget), ("inbox", &mut inbox)] {
        let delivered = tokio::time::timeout(SURELY, async {
            while let Some(item) = stream.next().await {
                let item = item.expect("an item");
                if let Some(pb::watch_events_response::Item::Event(event)) = item.item
                    && matches!(event.payload, Some(pb::event::Payload::MessagePosted(_)))
                {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(delivered, Ok(true), "the {name}'s stream missed the reply");
    }
}

#[tokio::test]
async fn serve_refuses_an_idle_timeout_its_own_heartbeats_would_trip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("conversations.db");
    let output = tokio::process::Command::new(crate::process::binary())
        .arg("--database")
        .arg(&database)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args([
            "--heartbeat-seconds",
            "60",
            "--connection-idle-seconds",
            "30",
        ])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SURELY, output)
        .await
        .expect("the server refuses to start rather than serve")
        .expect("run the binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("idle timeout (30 s)") && stderr.contains("heartbeat (60 s)"),
        "{stderr}"
    );
    assert!(!database.exists(), "a refused start created the database");
}
