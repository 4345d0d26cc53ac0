//! Limits that keep one caller from harming the others: open event streams,
//! per key and in all, and (when configured) a request rate per workspace.
//!
//! A refused call changes nothing and says which limit it met, so a client
//! can tell "close a stream" from "slow down, retry after this long". The
//! counts live in memory: they are about this server's sockets and CPU, not
//! about the database.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use super::AppError;
use crate::domain::WorkspaceId;

/// How many streams, how many calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Event streams open at once on this server, all keys together.
    pub max_streams: usize,
    /// Event streams open at once with one key. A widget backend holds one
    /// stream per open widget with its one visitor key, so this is large.
    pub max_streams_per_key: usize,
    /// Calls per second each workspace may make (a burst of as many), or no
    /// limit.
    pub workspace_calls_per_second: Option<NonZeroU32>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_streams: 20_000,
            max_streams_per_key: 10_000,
            workspace_calls_per_second: None,
        }
    }
}

/// Which stream limit a caller met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamLimit {
    /// The caller's key holds its most streams.
    Key,
    /// The server holds its most streams.
    Server,
}

impl StreamLimit {
    /// The name used in error details.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Server => "server",
        }
    }
}

#[derive(Debug, Default)]
struct StreamCounts {
    total: usize,
    per_key: HashMap<String, usize>,
}

/// A workspace's token bucket: `tokens` refill at the configured rate up to
/// one second's worth.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The limits of one server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Limits {
    config: LimitsConfig,
    streams: Arc<Mutex<StreamCounts>>,
    buckets: Arc<Mutex<HashMap<WorkspaceId, Bucket>>>,
}

/// One open stream, counted until dropped.
#[derive(Debug)]
pub struct StreamPermit {
    streams: Arc<Mutex<StreamCounts>>,
    key_id: String,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut counts = lock(&self.streams);
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.per_key.get_mut(&self.key_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.per_key.remove(&self.key_id);
            }
        }
    }
}

/// A poisoned lock only means another thread panicked while counting; the
/// counts themselves are still whole numbers worth keeping.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Limits {
    /// Limits as configured.
    pub fn new(config: LimitsConfig) -> Self {
        Self {
            config,
            streams: Arc::default(),
            buckets: Arc::default(),
        }
    }

    /// Counts a new stream of `key_id`, or refuses it when the key or the
    /// server holds its most.
    pub fn open_stream(&self, key_id: &str) -> Result<StreamPermit, AppError> {
        let mut counts = lock(&self.streams);
        if counts.total >= self.config.max_streams {
            return Err(AppError::TooManyStreams {
                limit: self.config.max_streams,
                per: StreamLimit::Server,
            });
        }
        let of_key = counts.per_key.get(key_id).copied().unwrap_or(0);
        if of_key >= self.config.max_streams_per_key {
            return Err(AppError::TooManyStreams {
                limit: self.config.max_streams_per_key,
                per: StreamLimit::Key,
            });
        }
        counts.total += 1;
        counts.per_key.insert(key_id.to_owned(), of_key + 1);
        Ok(StreamPermit {
            streams: self.streams.clone(),
            key_id: key_id.to_owned(),
        })
    }

    /// Streams open now, all keys together.
    pub fn open_streams(&self) -> usize {
        lock(&self.streams).total
    }

    /// Counts one call of `workspace` against its rate, or refuses it with
    /// how long to wait for the next.
    pub fn admit(&self, workspace: WorkspaceId) -> Result<(), AppError> {
        let Some(rate) = self.config.workspace_calls_per_second else {
            return Ok(());
        };
        let rate = f64::from(rate.get());
        let now = Instant::now();
        let mut buckets = lock(&self.buckets);
        let bucket = buckets.entry(workspace).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        let refilled = bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = refilled.min(rate);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / rate);
        Err(AppError::RateLimited {
            calls_per_second: rate as u32,
            retry_after: wait.max(Duration::from_millis(1)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_streams: usize, per_key: usize, rate: u32) -> Limits {
        Limits::new(LimitsConfig {
            max_streams,
            max_streams_per_key: per_key,
            workspace_calls_per_second: NonZeroU32::new(rate),
        })
    }

    #[test]
    fn a_key_holds_at_most_its_streams_and_gets_them_back_when_they_close() {
        let limits = limits(10, 2, 0);
        let first = limits.open_stream("k").unwrap();
        let _second = limits.open_stream("k").unwrap();
        assert!(matches!(
            limits.open_stream("k"),
            Err(AppError::TooManyStreams {
                limit: 2,
                per: StreamLimit::Key
            })
        ));
        let _other = limits.open_stream("other").unwrap();
        drop(first);
        let _again = limits.open_stream("k").unwrap();
        assert_eq!(limits.open_streams(), 3);
    }

    #[test]
    fn the_server_holds_at_most_its_streams_whatever_the_keys() {
        let limits = limits(2, 10, 0);
        let _a = limits.open_stream("a").unwrap();
        let _b = limits.open_stream("b").unwrap();
        assert!(matches!(
            limits.open_stream("c"),
            Err(AppError::TooManyStreams {
                limit: 2,
                per: StreamLimit::Server
            })
        ));
    }

    #[test]
    fn a_workspace_gets_a_burst_of_its_rate_then_waits_and_others_are_untouched() {
        let limits = limits(1, 1, 5);
        for _ in 0..5 {
            limits.admit(WorkspaceId(1)).unwrap();
        }
        match limits.admit(WorkspaceId(1)) {
            Err(AppError::RateLimited { retry_after, .. }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_millis(200));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        limits.admit(WorkspaceId(2)).unwrap();
    }

    #[test]
    fn without_a_rate_every_call_is_admitted() {
        let limits = limits(1, 1, 0);
        for _ in 0..10_000 {
            limits.admit(WorkspaceId(1)).unwrap();
        }
    }
}
