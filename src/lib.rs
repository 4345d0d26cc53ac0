//! # conversations
//!
//! A gRPC service that runs the status lifecycle of live-chat conversations
//! between website visitors and a sales team.
//!
//! The layers, from the outside in; every arrow points down:
//! - [`grpc`]: tonic handlers that authenticate, validate and convert a
//!   request, then delegate. Protobuf types stop here.
//! - [`app`]: the use cases: roles, the commands handed to the writer, reads,
//!   page tokens, administration.
//! - [`writer`]: the group-commit task. Mutations queue to it; it decides a
//!   batch of them with the domain rules, writes it in one transaction,
//!   commits once, publishes the events to the feed, then answers.
//! - [`feed`]: the event feed. Each workspace's recent events in memory,
//!   shared by every stream; catch-up from the store behind them.
//! - [`store`]: all SQL, on SQLite (WAL). A mutation's conversation row,
//!   messages, events, counters and idempotency record commit together or
//!   not at all.
//! - [`domain`]: the pure rules: the status table, what each mutation writes,
//!   the sentences of transactional messages, validated values. No I/O.
//!
//! [`startup`] assembles the server (reflection, health, limits, one server
//! per database file, graceful shutdown); [`config`] is the command line;
//! [`connections`] closes sockets whose clients keep the server waiting.

pub mod app;
pub mod config;
pub mod connections;
pub mod domain;
pub mod feed;
pub mod grpc;
pub mod ids;
pub mod metrics;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod writer;

/// The generated protobuf and tonic code of `proto/conversations/v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("conversations.v1");

    /// The encoded file descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("conversations_descriptor");

    /// The encoded descriptor of `google/rpc/error_details.proto`, so that
    /// reflection clients can decode our error details.
    pub const ERROR_DETAILS_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("error_details_descriptor");
}
