//! The gRPC surface: protobuf conversions, the status mapping and the service
//! handlers. Protobuf types never leave this module (and `pb`).

pub mod codec;
pub mod convert;
pub mod error;
pub mod flows;
pub mod health;
pub mod refusals;
pub mod rpc_log;
pub mod service;
pub mod web;
pub mod workspaces;

pub use flows::FlowsApi;
pub use health::{HealthApi, HealthState};
pub use service::ConversationsApi;
pub use workspaces::WorkspacesApi;

/// The value of a request's `authorization` metadata, if it has one. A value
/// that is not visible ASCII reads as empty, which no key matches.
fn authorization<T>(request: &tonic::Request<T>) -> Option<&str> {
    request
        .metadata()
        .get("authorization")
        .map(|v| v.to_str().unwrap_or_default())
}

/// The authenticated caller of an admin service (flows, workspace
/// settings), refused unless it holds an admin key: the role is checked
/// before the request is read, so a caller without the right learns that
/// first.
async fn admin_caller<T>(
    app: &crate::app::App,
    request: &tonic::Request<T>,
) -> Result<crate::app::Caller, tonic::Status> {
    let caller = app.admit(authorization(request)).await?;
    rpc_log::note_caller(&caller);
    caller.require_admin()?;
    Ok(caller)
}
