//! Feed cursors: any `after_sequence`, filters and page size for ListEvents
//! and WatchEvents, from any key. A page holds events in order, each after
//! the cursor and at most the head, and its `next_after_sequence` never goes
//! back; a refusal is never INTERNAL and carries a reason; nothing panics.
#![no_main]

mod harness;

use std::time::Duration;

use arbitrary::Arbitrary;
use conversations::pb::{
    self, conversation_service_server::ConversationService, watch_events_response::Item,
};
use libfuzzer_sys::fuzz_target;
use tokio_stream::StreamExt;

use harness::check_refusal;

#[derive(Debug, Arbitrary)]
struct Input {
    key: u8,
    conversation: Option<u8>,
    visitor: Option<u8>,
    after_sequence: i64,
    event_types: Vec<i32>,
    page_size: i32,
    watch: bool,
    fuzzed: String,
}

fuzz_target!(|input: Input| {
    let h = harness::get();
    let key = h.key(input.key);
    let conversation_id = input
        .conversation
        .map(|pick| h.conversation(pick, &input.fuzzed).to_owned())
        .unwrap_or_default();
    let visitor_id = input
        .visitor
        .map(|pick| match h.conversations.get(usize::from(pick) % 8) {
            Some((_, visitor)) => visitor.clone(),
            None => input.fuzzed.clone(),
        })
        .unwrap_or_default();
    if input.watch {
        let request = pb::WatchEventsRequest {
            after_sequence: input.after_sequence,
            conversation_id,
            visitor_id,
            event_types: input.event_types.clone(),
        };
        h.runtime.block_on(async {
            match h.api.watch_events(h.request(key, request)).await {
                Err(status) => check_refusal(&status),
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    let mut last = input.after_sequence;
                    // What is already there arrives at once; then a checkpoint.
                    while let Ok(Some(item)) =
                        tokio::time::timeout(Duration::from_millis(50), stream.next()).await
                    {
                        match item {
                            Err(status) => {
                                check_refusal(&status);
                                break;
                            }
                            Ok(pb::WatchEventsResponse {
                                item: Some(Item::Event(e)),
                            }) => {
                                assert!(e.sequence > last, "events in order after the cursor");
                                last = e.sequence;
                            }
                            Ok(pb::WatchEventsResponse {
                                item: Some(Item::Checkpoint(c)),
                            }) => {
                                assert!(c.sequence >= last, "a checkpoint never goes back");
                                break;
                            }
                            Ok(_) => panic!("an empty stream item"),
                        }
                    }
                }
            }
        });
    } else {
        let request = pb::ListEventsRequest {
            after_sequence: input.after_sequence,
            conversation_id,
            visitor_id,
            event_types: input.event_types.clone(),
            page_size: input.page_size,
        };
        match h
            .runtime
            .block_on(h.api.list_events(h.request(key, request)))
        {
            Err(status) => check_refusal(&status),
            Ok(page) => {
                let page = page.into_inner();
                let mut last = input.after_sequence;
                for event in &page.events {
                    assert!(event.sequence > last, "events in order after the cursor");
                    assert!(
                        event.sequence <= page.head_sequence,
                        "an event past the head"
                    );
                    last = event.sequence;
                }
                assert!(
                    page.next_after_sequence >= last,
                    "the next cursor goes back"
                );
                assert!(page.next_after_sequence <= page.head_sequence);
            }
        }
    }
});
