//! Limits (issue 8): each met with RESOURCE_EXHAUSTED and a reason that says
//! which, changing nothing, and costing other callers nothing.

use std::{num::NonZeroU32, time::Duration};

use conversations::{
    app::LimitsConfig,
    pb::{self, send_message_request::Sender},
};
use tokio_stream::StreamExt;
use tonic::{Code, Status, Streaming};
use tonic_types::StatusExt;

use crate::helpers::{Client, TestApp, dana, get, reason, start, text_request, thread};

/// Opens a workspace stream with `client`: the stream, or its refusal.
async fn open_stream(client: &mut Client) -> Result<Streaming<pb::WatchEventsResponse>, Status> {
    let mut stream = client
        .watch_events(pb::WatchEventsRequest::default())
        .await?
        .into_inner();
    // The first item (a checkpoint at the head) proves the stream is open.
    match stream.next().await {
        Some(Ok(_)) => Ok(stream),
        Some(Err(status)) => Err(status),
        None => Err(Status::internal("the stream ended at once")),
    }
}

fn assert_too_many_streams(status: &Status, per: &str, limit: usize) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(status), "TOO_MANY_STREAMS");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.metadata.get("per").map(String::as_str), Some(per));
    assert_eq!(info.metadata.get("limit"), Some(&limit.to_string()));
}

#[tokio::test]
async fn open_streams_are_capped_per_key_and_per_server_and_a_closed_one_frees_its_place() {
    let app = TestApp::spawn_with_limits(LimitsConfig {
        max_streams: 5,
        max_streams_per_key: 3,
        ..LimitsConfig::default()
    })
    .await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, "v-1").await.conversation_id;

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            open_stream(&mut agent)
                .await
                .expect("within the key's limit"),
        );
    }
    let refused = open_stream(&mut agent)
        .await
        .expect_err("a 4th stream of one key");
    assert_too_many_streams(&refused, "key", 3);

    // Another key of the workspace still has room, up to the server's cap.
    let (_, other_key) = app
        .new_key("default", conversations::domain::credentials::Role::Agent)
        .await;
    let mut other = app.client_with(Some(&other_key)).await;
    held.push(open_stream(&mut other).await.expect("another key"));
    held.push(open_stream(&mut other).await.expect("another key"));
    let refused = open_stream(&mut other).await.expect_err("a 6th stream");
    assert_too_many_streams(&refused, "server", 5);

    // Unary calls of the key at its stream limit are not held back.
    agent
        .send_message(text_request(&id, Sender::Agent(dana()), "hi", ""))
        .await
        .expect("a write beside the capped streams");
    assert_eq!(get(&mut agent, &id, "").await.message_count, 1);

    // Closing a stream gives its place back (once the server sees it go).
    drop(held.remove(0));
    let mut reopened = None;
    for _ in 0..100 {
        match open_stream(&mut agent).await {
            Ok(stream) => {
                reopened = Some(stream);
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(reopened.is_some(), "a closed stream's place was given back");
    app.stop().await;
}

#[tokio::test]
async fn a_workspace_over_its_call_rate_is_told_when_to_retry_and_other_workspaces_are_not_slowed()
{
    let app = TestApp::spawn_with_limits(LimitsConfig {
        workspace_calls_per_second: NonZeroU32::new(5),
        ..LimitsConfig::default()
    })
    .await;
    let (other_agent_key, _) = app.new_workspace("other").await;
    let mut agent = app.agent().await;
    let mut other = app.client_with(Some(&other_agent_key)).await;

    let id = start(&mut agent, "v-1").await.conversation_id;
    let mut admitted = 1;
    let refused = loop {
        match agent
            .send_message(text_request(&id, Sender::Agent(dana()), "hi", ""))
            .await
        {
            Ok(_) => admitted += 1,
            Err(status) => break status,
        }
        assert!(admitted <= 10, "the rate was never enforced");
    };
    assert!(admitted >= 5, "a burst of the rate is admitted: {admitted}");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason(&refused), "RATE_LIMITED");
    let retry = refused
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(1),
        "{retry:?}"
    );

    // The other workspace has its own rate: a burst of it right now (each
    // start panics if refused).
    for i in 0..5 {
        start(&mut other, &format!("o-{i}")).await;
    }

    tokio::time::sleep(retry).await;
    let messages_before = thread(&mut agent, &id, "").await.len();
    assert_eq!(messages_before, admitted - 1, "only the admitted messages");
    app.stop().await;
}

#[tokio::test]
async fn a_request_over_the_size_cap_is_resource_exhausted_with_the_limit_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, "v-1").await.conversation_id;

    let huge = "x".repeat(100 * 1024);
    let refused = agent
        .send_message(pb::SendMessageRequest {
            content: Some(pb::send_message_request::Content::Text(huge)),
            ..text_request(&id, Sender::Agent(dana()), "", "")
        })
        .await
        .expect_err("a 100 KiB request");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason(&refused), "REQUEST_TOO_LARGE");
    let info = refused.get_details_error_info().expect("ErrorInfo");
    assert_eq!(
        info.metadata.get("limit_bytes"),
        Some(&conversations::startup::MAX_REQUEST_BYTES.to_string())
    );

    // Nothing was written, and the same connection goes on working.
    assert!(thread(&mut agent, &id, "").await.is_empty());
    agent
        .send_message(text_request(&id, Sender::Agent(dana()), "hi", ""))
        .await
        .expect("a normal request after it");
    app.stop().await;
}
