//! The gRPC surface: protobuf conversions, the status mapping and the service
//! handlers. Protobuf types never leave this module (and `pb`).

pub mod convert;
pub mod error;
pub mod flows;
pub mod service;

pub use flows::FlowsApi;
pub use service::ConversationsApi;
