//! Request validation: any bytes, decoded as the request of any RPC, sent
//! with any key (agent, visitor, admin, another workspace's, malformed) and
//! about any conversation (ours, another workspace's, a fuzzed id). The
//! handler answers; it never panics, and a refusal is never INTERNAL or
//! UNKNOWN and always carries an ErrorInfo reason.
#![no_main]

mod harness;

use std::time::Duration;

use conversations::pb::{
    self, conversation_service_server::ConversationService, flow_service_server::FlowService,
    workspace_service_server::WorkspaceService,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tokio_stream::StreamExt;

use harness::{Harness, check_refusal};

/// The answer of one call: refusals are checked, answers dropped.
fn answered<T>(result: Result<tonic::Response<T>, tonic::Status>) {
    if let Err(status) = result {
        check_refusal(&status);
    }
}

/// Decodes `bytes` as `T`; `None` (nothing to send) if they are not one.
fn decode<T: Message + Default>(bytes: &[u8]) -> Option<T> {
    T::decode(bytes).ok()
}

fn call(h: &Harness, rpc: u8, key: &str, target: u8, bytes: &[u8]) -> Option<()> {
    let rt = &h.runtime;
    let api = &h.api;
    // Aims the request at a real conversation most of the time.
    macro_rules! aimed {
        ($req:expr) => {{
            let mut req = $req;
            req.conversation_id = h.conversation(target, &req.conversation_id).to_owned();
            req
        }};
    }
    match rpc % 21 {
        0 => answered(rt.block_on(
            api.start_conversation(h.request(key, decode::<pb::StartConversationRequest>(bytes)?)),
        )),
        1 => answered(rt.block_on(api.get_conversation(
            h.request(key, aimed!(decode::<pb::GetConversationRequest>(bytes)?)),
        ))),
        2 => answered(rt.block_on(
            api.list_conversations(h.request(key, decode::<pb::ListConversationsRequest>(bytes)?)),
        )),
        3 => answered(rt.block_on(
            api.send_message(h.request(key, aimed!(decode::<pb::SendMessageRequest>(bytes)?))),
        )),
        4 => answered(rt.block_on(
            api.list_messages(h.request(key, aimed!(decode::<pb::ListMessagesRequest>(bytes)?))),
        )),
        5 => answered(rt.block_on(api.close_conversation(
            h.request(key, aimed!(decode::<pb::CloseConversationRequest>(bytes)?)),
        ))),
        6 => answered(rt.block_on(api.mark_conversation_pending(h.request(
            key,
            aimed!(decode::<pb::MarkConversationPendingRequest>(bytes)?),
        )))),
        7 => answered(rt.block_on(api.reopen_conversation(
            h.request(key, aimed!(decode::<pb::ReopenConversationRequest>(bytes)?)),
        ))),
        8 => answered(rt.block_on(api.restart_conversation(h.request(
            key,
            aimed!(decode::<pb::RestartConversationRequest>(bytes)?),
        )))),
        9 => answered(rt.block_on(
            api.list_events(h.request(key, aimed!(decode::<pb::ListEventsRequest>(bytes)?))),
        )),
        10 => {
            let request = h.request(key, aimed!(decode::<pb::WatchEventsRequest>(bytes)?));
            rt.block_on(async {
                match api.watch_events(request).await {
                    Err(status) => check_refusal(&status),
                    Ok(stream) => {
                        let mut stream = stream.into_inner();
                        if let Ok(Some(Err(status))) =
                            tokio::time::timeout(Duration::from_millis(50), stream.next()).await
                        {
                            check_refusal(&status);
                        }
                    }
                }
            });
        }
        11 => answered(
            rt.block_on(
                h.flows
                    .create_flow(h.request(key, decode::<pb::CreateFlowRequest>(bytes)?)),
            ),
        ),
        12 => answered(
            rt.block_on(
                h.flows
                    .get_flow(h.request(key, decode::<pb::GetFlowRequest>(bytes)?)),
            ),
        ),
        13 => answered(
            rt.block_on(
                h.flows
                    .list_flows(h.request(key, decode::<pb::ListFlowsRequest>(bytes)?)),
            ),
        ),
        14 => answered(
            rt.block_on(
                h.flows
                    .update_flow(h.request(key, decode::<pb::UpdateFlowRequest>(bytes)?)),
            ),
        ),
        15 => answered(
            rt.block_on(
                h.flows
                    .set_default_flow(h.request(key, decode::<pb::SetDefaultFlowRequest>(bytes)?)),
            ),
        ),
        16 => answered(rt.block_on(api.assign_conversation(
            h.request(key, aimed!(decode::<pb::AssignConversationRequest>(bytes)?)),
        ))),
        17 => answered(rt.block_on(h.workspaces.get_workspace_settings(
            h.request(key, decode::<pb::GetWorkspaceSettingsRequest>(bytes)?),
        ))),
        18 => answered(rt.block_on(h.workspaces.update_workspace_settings(
            h.request(key, decode::<pb::UpdateWorkspaceSettingsRequest>(bytes)?),
        ))),
        19 => answered(rt.block_on(api.create_visitor_session(
            h.request(key, decode::<pb::CreateVisitorSessionRequest>(bytes)?),
        ))),
        _ => answered(rt.block_on(api.revoke_visitor_session(
            h.request(key, decode::<pb::RevokeVisitorSessionRequest>(bytes)?),
        ))),
    }
    Some(())
}

fuzz_target!(|data: &[u8]| {
    let [rpc, key, target, bytes @ ..] = data else {
        return;
    };
    let h = harness::get();
    let _ = call(h, *rpc, h.key(*key), *target, bytes);
});
