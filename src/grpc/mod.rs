//! The gRPC surface: protobuf conversions, the status mapping and the service
//! handlers. Protobuf types never leave this module (and `pb`).

pub mod convert;
pub mod error;
pub mod flows;
pub mod refusals;
pub mod service;
pub mod workspaces;

pub use flows::FlowsApi;
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
