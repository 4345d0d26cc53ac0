//! Hostile input (issue 8): garbage bytes, an HTTP/1.1 request, a truncated
//! HTTP/2 preface, a gRPC message that claims 4 GB, bytes that are no
//! protobuf message, 10 MB requests and huge metadata, sent thousands of
//! times to the server binary. Meanwhile a well-behaved caller keeps calling:
//! every one of its calls must succeed. Each hostile request gets a clear
//! refusal (or its connection is closed), the server stays up, and its
//! resident memory after the barrage is what it was before it.
//!
//! `HOSTILE_ROUNDS` sets the number of rounds (300 by default; each sends
//! every kind once, the 10 MB request and 1 MiB of metadata every 25th).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use conversations::pb::{
    self, conversation_service_client::ConversationServiceClient, send_message_request::Sender,
};
use prost::Message;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

use crate::process::{authorized, serve};

const GET_CONVERSATION: &str = "/conversations.v1.ConversationService/GetConversation";
/// Rounds before the first memory reading, so that buffers and caches
/// that are meant to stay have been made.
const WARM_UP_ROUNDS: usize = 50;

fn rounds() -> usize {
    std::env::var("HOSTILE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// Writes `bytes` on a fresh connection, then reads until the server closes
/// it (or 5 s pass, which fails the test: a server must not hold open a
/// connection that speaks neither HTTP/2 nor HTTP/1.1, nor one whose
/// HTTP/1.1 client asked to close).
async fn raw(addr: &str, bytes: &[u8], expect_close: bool) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(bytes).await.expect("write");
    if !expect_close {
        return; // We hang up first (a preface cut short).
    }
    let mut sink = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept open a connection it should have closed"
    );
}

/// One gRPC call over raw HTTP/2 with `body` as its request body and
/// `extra` as an extra header: the status it answers (from the headers or
/// the trailers), or the HTTP/2 error that ended it.
async fn h2_call(
    addr: &str,
    key: &str,
    body: Vec<u8>,
    extra: Option<(&str, String)>,
) -> Result<Status, h2::Error> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    // Without it, each small frame waits for the server's delayed ACK.
    tcp.set_nodelay(true).expect("nodelay");
    let (client, connection) = h2::client::handshake(tcp).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await?;
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{GET_CONVERSATION}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {key}"));
    if let Some((name, value)) = extra {
        request = request.header(name, value);
    }
    let (response, mut send) = client.send_request(request.body(()).expect("request"), false)?;
    send.send_data(Bytes::from(body), true)?;
    let response = response.await?;
    if let Some(status) = Status::from_header_map(response.headers()) {
        return Ok(status);
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        chunk?;
    }
    let trailers = body.trailers().await?.unwrap_or_default();
    Ok(Status::from_header_map(&trailers).unwrap_or_else(|| Status::unknown("no grpc-status")))
}

/// A gRPC length-prefixed message: flag 0, a big-endian length, the bytes.
fn grpc_frame(claimed_len: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&claimed_len.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

fn assert_refused(status: &Status, code: Code, why: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(
        status.get_details_error_info().map(|i| i.reason).as_deref(),
        Some(why),
        "{status:?}"
    );
}

/// Every kind of hostile input once (the 10 MB request when `big`); the
/// number of requests sent.
async fn barrage(
    addr: &str,
    key: &str,
    conversation: &str,
    client: &mut ConversationServiceClient<Channel>,
    big: bool,
) -> usize {
    // Neither HTTP/2 nor HTTP/1.1 (which the server speaks for grpc-web).
    raw(addr, &[0xde, 0xad, 0xbe, 0xef].repeat(256), true).await;
    // HTTP/1.1 that is not a call: answered, then closed as asked.
    raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        true,
    )
    .await;
    raw(
        addr,
        b"POST /x HTTP/1.1\r\nHost: \xff\r\nContent-Length: -1\r\n\r\n",
        true,
    )
    .await;
    raw(addr, b"PRI * HTTP/2.0\r\n\r\nSM", false).await;

    // A message that claims 4 GB: refused from its prefix.
    let status = h2_call(addr, key, grpc_frame(u32::MAX, &[0; 64]), None)
        .await
        .expect("an answer to a 4 GB claim");
    assert_refused(&status, Code::ResourceExhausted, "REQUEST_TOO_LARGE");

    // Bytes that are no GetConversationRequest (field 1 claims more bytes
    // than follow; a wire type that does not exist).
    let status = h2_call(
        addr,
        key,
        grpc_frame(6, &[0x0a, 0x7f, 0xff, 0xff, 0x0f, 0x07]),
        None,
    )
    .await
    .expect("an answer to invalid protobuf");
    assert_refused(&status, Code::InvalidArgument, "MALFORMED_REQUEST");

    // A unary call without a message; a compression flag that is no flag.
    let status = h2_call(addr, key, Vec::new(), None)
        .await
        .expect("an answer to an empty body");
    assert_refused(&status, Code::InvalidArgument, "MALFORMED_REQUEST");
    let mut flagged = grpc_frame(2, &[0x0a, 0x00]);
    flagged[0] = 2;
    let status = h2_call(addr, key, flagged, None)
        .await
        .expect("an answer to compression flag 2");
    assert_refused(&status, Code::InvalidArgument, "MALFORMED_REQUEST");

    // A body that ends inside its message.
    let status = h2_call(addr, key, grpc_frame(100, &[0x0a, 0x02]), None)
        .await
        .expect("an answer to a truncated body");
    assert_refused(&status, Code::InvalidArgument, "MALFORMED_REQUEST");

    // Metadata over the 16 KiB cap (1 MiB of it with the big ones), on a
    // request that would otherwise succeed: HTTP/2 refuses the header block
    // (a GOAWAY ENHANCE_YOUR_CALM), so no answer comes at all.
    let junk = "j".repeat(if big { 1 << 20 } else { 64 << 10 });
    let get = pb::GetConversationRequest {
        conversation_id: conversation.to_owned(),
        visitor_id: String::new(),
    };
    let huge = h2_call(
        addr,
        key,
        grpc_frame(get.encoded_len() as u32, &get.encode_to_vec()),
        Some(("x-junk", junk)),
    )
    .await;
    assert!(huge.is_err(), "huge metadata was answered: {huge:?}");
    let small = h2_call(
        addr,
        key,
        grpc_frame(get.encoded_len() as u32, &get.encode_to_vec()),
        None,
    )
    .await
    .expect("the same request without the junk");
    assert_eq!(small.code(), Code::Ok, "{small:?}");
    let mut sent = 9;

    if big {
        let refused = client
            .send_message(authorized(
                key,
                pb::SendMessageRequest {
                    conversation_id: "conv_01JD0000000000000000000000".into(),
                    sender: Some(Sender::VisitorId("v".into())),
                    content: Some(pb::send_message_request::Content::Text(
                        "x".repeat(10 << 20),
                    )),
                    request_id: String::new(),
                    audience: 0,
                },
            ))
            .await
            .expect_err("a 10 MB request");
        assert_refused(&refused, Code::ResourceExhausted, "REQUEST_TOO_LARGE");
        sent += 1;
    }
    sent
}

/// The server's memory once the barrage just sent is done with: the last
/// 10 MB requests may still be in its buffers, and the allocator returns
/// freed pages after a short delay. The least of three samples, so that a
/// buffer still held at one instant does not count. Read the same way before
/// and after.
async fn settled_rss(server: &crate::process::Server) -> u64 {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut least = u64::MAX;
    for _ in 0..3 {
        least = least.min(server.rss_kib());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    least
}

/// Reads at once from many callers, twice over, so that the server has
/// opened every connection its pools will use.
async fn fill_pools(client: &ConversationServiceClient<Channel>, key: &str, id: &str) {
    for _ in 0..2 {
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..64 {
            let (mut client, key, id) = (client.clone(), key.to_owned(), id.to_owned());
            calls.spawn(async move {
                match i % 3 {
                    0 => client
                        .list_conversations(authorized(
                            &key,
                            pb::ListConversationsRequest::default(),
                        ))
                        .await
                        .map(drop),
                    1 => client
                        .list_events(authorized(&key, pb::ListEventsRequest::default()))
                        .await
                        .map(drop),
                    _ => client
                        .list_messages(authorized(
                            &key,
                            pb::ListMessagesRequest {
                                conversation_id: id,
                                ..Default::default()
                            },
                        ))
                        .await
                        .map(drop),
                }
                .expect("a well-formed read")
            });
        }
        calls.join_all().await;
    }
}

#[tokio::test]
async fn hostile_bytes_and_requests_leave_the_server_up_answering_others_with_flat_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut server, key) = serve(&crate::helpers::fresh_database(dir.path()).await).await;
    let key = key.expect("a new database prints its agent key");
    let addr = server.addr.clone();
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client =
        ConversationServiceClient::new(channel.clone()).max_encoding_message_size(usize::MAX);

    // A well-behaved caller, on its own connection, all along.
    let id = client
        .start_conversation(authorized(
            &key,
            pb::StartConversationRequest {
                visitor_id: "bystander".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("start")
        .into_inner()
        .conversation
        .expect("conversation")
        .conversation_id;
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let bystander = {
        let (stop, answered, failed, key, id) = (
            stop.clone(),
            answered.clone(),
            failed.clone(),
            key.clone(),
            id.clone(),
        );
        let mut calm = ConversationServiceClient::new(
            Channel::from_shared(format!("http://{addr}"))
                .expect("uri")
                .connect()
                .await
                .expect("connect"),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let got = calm
                    .get_conversation(authorized(
                        &key,
                        pb::GetConversationRequest {
                            conversation_id: id.clone(),
                            visitor_id: String::new(),
                        },
                    ))
                    .await;
                match got {
                    Ok(_) => answered.fetch_add(1, Ordering::Relaxed),
                    Err(error) => {
                        eprintln!("bystander refused: {error:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    let mut sent = 0;
    for round in 0..WARM_UP_ROUNDS {
        sent += barrage(&addr, &key, &id, &mut client, round % 25 == 0).await;
    }
    // Steady state before the reading: every pool connection of the server
    // open (on PostgreSQL they open lazily, as concurrency first needs them,
    // and each holds its buffers and statement cache), so the reading after
    // the hostile rounds compares like with like.
    fill_pools(&client, &key, &id).await;
    let first = settled_rss(&server).await;
    // The rounds in three stretches, read after each. The first stretch
    // still settles the allocator's arenas (the 10 MB requests of its
    // rounds land in them), so the higher of its reading and the warm-up's
    // is the baseline: the allocator may hand pages back in between (one
    // CI run read 57 MiB after the warm-up, 50 MiB after the first stretch,
    // then 59 and 59 MiB). A leak grows with the rounds, so it shows in
    // both later readings; the allocator's swings (several MiB either way
    // on a busy machine) show in one at a time. Memory has grown only if
    // both later readings pass the bound.
    let rounds = rounds();
    let mut readings = Vec::new();
    for stretch in 0..3 {
        for round in stretch * rounds / 3..(stretch + 1) * rounds / 3 {
            sent += barrage(&addr, &key, &id, &mut client, round % 25 == 0).await;
        }
        readings.push(settled_rss(&server).await);
    }
    let (before, after) = (first.max(readings[0]), readings[1].min(readings[2]));
    stop.store(true, Ordering::Relaxed);
    bystander.await.expect("bystander");

    assert!(
        server.child.try_wait().expect("wait").is_none(),
        "the server is still running"
    );
    let (answered, failed) = (
        answered.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    println!(
        "hostile: {sent} hostile requests in {} rounds; server RSS {first} KiB after the warm-up, {readings:?} KiB after each third of the last {rounds}; the bystander's calls: {answered} answered, {failed} failed",
        WARM_UP_ROUNDS + rounds
    );
    assert_eq!(failed, 0, "every well-behaved call was answered");
    assert!(answered > 0);
    // Flat: both later readings more than 10% (and 4 MiB) above the
    // baseline would be growth.
    assert!(
        after <= before + before / 10 + 4096,
        "memory grew: {readings:?} KiB after each third, from {first} KiB after the warm-up"
    );
    server.child.start_kill().expect("kill");
    let _ = server.child.wait().await;
}
