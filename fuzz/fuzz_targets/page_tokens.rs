//! Page tokens: any string as the `page_token` of ListConversations or
//! ListMessages, with any filters and page size, from any key. The answer is
//! a page or a refusal (INVALID_ARGUMENT for a token this server did not
//! issue for the request); never a panic, never INTERNAL, and never a
//! conversation or message of another workspace.
#![no_main]

mod harness;

use arbitrary::Arbitrary;
use conversations::pb::{self, conversation_service_server::ConversationService};
use libfuzzer_sys::fuzz_target;

use harness::check_refusal;

#[derive(Debug, Arbitrary)]
struct Input {
    key: u8,
    conversation: u8,
    list_messages: bool,
    page_size: i32,
    statuses: Vec<i32>,
    visitor_id: String,
    /// Used as given, or (when `mangle` is set) as a base64 of it, to get
    /// past the base64 layer into the token's JSON.
    token: String,
    mangle: bool,
    fuzzed_conversation: String,
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fuzz_target!(|input: Input| {
    let h = harness::get();
    let key = h.key(input.key);
    let token = if input.mangle {
        base64(input.token.as_bytes())
    } else {
        input.token.clone()
    };
    let ours: Vec<&str> = h.conversations.iter().map(|(id, _)| id.as_str()).collect();
    if input.list_messages {
        let id = h.conversation(input.conversation, &input.fuzzed_conversation);
        let request = pb::ListMessagesRequest {
            conversation_id: id.to_owned(),
            visitor_id: input.visitor_id.clone(),
            page_size: input.page_size,
            page_token: token,
        };
        match h
            .runtime
            .block_on(h.api.list_messages(h.request(key, request)))
        {
            Err(status) => check_refusal(&status),
            Ok(page) => {
                // Keys of `default` never read the other workspace's thread.
                let of_default = h.keys.iter().any(|k| k == key);
                assert!(
                    !(of_default && id == h.foreign),
                    "another workspace's thread was read"
                );
                for message in &page.into_inner().messages {
                    assert_eq!(
                        message.conversation_id, id,
                        "a message of another conversation"
                    );
                }
            }
        }
    } else {
        let request = pb::ListConversationsRequest {
            statuses: input.statuses.clone(),
            visitor_id: input.visitor_id.clone(),
            page_size: input.page_size,
            page_token: token,
            ..Default::default()
        };
        match h
            .runtime
            .block_on(h.api.list_conversations(h.request(key, request)))
        {
            Err(status) => check_refusal(&status),
            Ok(page) => {
                if key == h.keys[0] {
                    for c in &page.into_inner().conversations {
                        assert!(
                            ours.contains(&c.conversation_id.as_str()),
                            "a conversation of another workspace: {c:?}"
                        );
                    }
                }
            }
        }
    }
});
