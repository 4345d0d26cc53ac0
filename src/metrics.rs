//! Prometheus metrics: what the server records (with the `metrics` crate's
//! macros, wherever the thing happens), and the recorder that renders it as
//! Prometheus text (`metrics-exporter-prometheus`) for the `/metrics`
//! endpoint (`startup`).
//!
//! Every name is here, so that the dashboard (`docs/grafana/`) and the
//! code cannot disagree on one without a test noticing
//! (`tests/api/operations.rs`). Labels are bounded: methods, codes,
//! reasons, kinds and pools, never an id.

use std::{sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// RPCs by `method` and `code` (streams counted when they end).
pub const RPC_REQUESTS: &str = "conversations_rpc_requests_total";
/// Unary RPC latency by `method`, in seconds.
pub const RPC_DURATION: &str = "conversations_rpc_duration_seconds";
/// Refusals by ErrorInfo `reason` (RATE_LIMITED, SUBSCRIBER_TOO_SLOW,
/// TOO_MANY_STREAMS, CONVERSATION_CLOSED, ...).
pub const REFUSALS: &str = "conversations_refusals_total";
/// Event streams open now, by `kind` (conversation: a widget; workspace:
/// an Inbox).
pub const STREAMS_OPEN: &str = "conversations_streams_open";
/// Event streams ended, by `reason` (the end's ErrorInfo reason, or
/// CANCELLED when the client left).
pub const STREAMS_ENDED: &str = "conversations_streams_ended_total";
/// Commit-to-delivery lag of each event a stream delivers, in seconds.
pub const DELIVERY_LAG: &str = "conversations_feed_delivery_lag_seconds";
/// Events delivered to streams.
pub const EVENTS_DELIVERED: &str = "conversations_feed_events_delivered_total";
/// Commands per write batch (one transaction).
pub const BATCH_COMMANDS: &str = "conversations_write_batch_commands";
/// A write batch's time from BEGIN to a durable COMMIT, in seconds.
pub const BATCH_COMMIT: &str = "conversations_write_batch_commit_seconds";
/// Write batches by `result` (committed, failed).
pub const BATCHES: &str = "conversations_write_batches_total";
/// Batches decided while another was in flight and decided again, by `why`:
/// the one before failed (`before_failed`) or reading ahead did
/// (`read_failed`).
pub const BATCHES_DECIDED_AGAIN: &str = "conversations_write_batches_decided_again_total";
/// Due timers (snooze ends, auto-closes) claimed by this server.
pub const TIMERS_CLAIMED: &str = "conversations_timers_claimed_total";
/// Claimed timers by `result`: fired, or overtaken (a reply or an action
/// came first: nothing was due any more).
pub const TIMERS_FIRED: &str = "conversations_timers_fired_total";
/// Connections the server closed because their client kept it waiting, by
/// `reason`: no_first_byte, unanswered (bytes that never made a request:
/// slowloris), idle (see `connections`).
pub const CONNECTIONS_CUT: &str = "conversations_connections_cut_total";
/// 1 while the database answers the health probe, 0 while it does not
/// (health is then NOT_SERVING).
pub const DB_REACHABLE: &str = "conversations_db_reachable";
/// The SQLite database file's size, in bytes.
pub const DB_FILE_BYTES: &str = "conversations_db_file_bytes";
/// The SQLite write-ahead log's size, in bytes.
pub const DB_WAL_BYTES: &str = "conversations_db_wal_bytes";
/// Connections of each `pool` by `state` (in_use, idle).
pub const DB_CONNECTIONS: &str = "conversations_db_pool_connections";
/// Time to get a connection from each `pool`, in seconds (waits show here).
pub const DB_ACQUIRE: &str = "conversations_db_acquire_seconds";
/// Time a read operation spent in the database (holding its connection of
/// `pool`), in seconds.
pub const DB_OPERATION: &str = "conversations_db_operation_seconds";

/// Buckets for latencies: 100 µs to 10 s.
const SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Buckets for batch sizes: 1 to the writer's most.
const COMMANDS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same
/// handle). None if another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(BATCH_COMMANDS.into()), &COMMANDS)
                })
                .ok()?
                .upkeep_timeout(Duration::from_secs(5));
            let handle = builder.install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        RPC_REQUESTS,
        "RPCs by method and gRPC code (streams when they end)"
    );
    describe_histogram!(RPC_DURATION, Unit::Seconds, "Unary RPC latency by method");
    describe_counter!(REFUSALS, "Refusals by ErrorInfo reason");
    describe_gauge!(STREAMS_OPEN, "Event streams open, by kind");
    describe_counter!(STREAMS_ENDED, "Event streams ended, by reason");
    describe_histogram!(
        DELIVERY_LAG,
        Unit::Seconds,
        "Commit-to-delivery lag of delivered events"
    );
    describe_counter!(EVENTS_DELIVERED, "Events delivered to streams");
    describe_histogram!(BATCH_COMMANDS, Unit::Count, "Commands per write batch");
    describe_histogram!(
        BATCH_COMMIT,
        Unit::Seconds,
        "Write batch time from BEGIN to durable COMMIT"
    );
    describe_counter!(BATCHES, "Write batches by result");
    describe_counter!(
        BATCHES_DECIDED_AGAIN,
        "Write batches decided while another was in flight and decided again"
    );
    describe_counter!(
        CONNECTIONS_CUT,
        "Connections closed because the client kept the server waiting, by reason"
    );
    describe_gauge!(
        DB_REACHABLE,
        "1 while the database answers the health probe, 0 while it does not"
    );
    describe_counter!(TIMERS_CLAIMED, "Due timers claimed by this server");
    describe_counter!(TIMERS_FIRED, "Claimed timers by result: fired or overtaken");
    describe_gauge!(DB_FILE_BYTES, Unit::Bytes, "SQLite database file size");
    describe_gauge!(DB_WAL_BYTES, Unit::Bytes, "SQLite write-ahead log size");
    describe_gauge!(
        DB_CONNECTIONS,
        "Database pool connections by pool and state"
    );
    describe_histogram!(
        DB_ACQUIRE,
        Unit::Seconds,
        "Time to get a pooled database connection"
    );
}
