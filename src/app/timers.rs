//! The server's timers. Every server polls the store for conversations whose
//! timer is due (a snooze that ends, an idle conversation to close), claims
//! them for a while, and fires each through the writer as
//! [`Command::Fire`], which the domain decides again against the
//! conversation as it stands in the batch's transaction: a timer fires at
//! most once however many servers claim it, one that a reply or an agent's
//! action overtook changes nothing, and one claimed by a server that died is
//! claimed again once the claim runs out.

use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};

use super::App;
use crate::{
    domain::{DecideError, Micros, Refusal, lifecycle::Command},
    ids::now,
    store::{DueTimer, Store},
    writer::{WriteError, WriteRequest, Writer},
};

/// How often the store is asked for due timers: a timer fires within this
/// (plus a batch) of its due time.
pub const POLL: Duration = Duration::from_millis(250);
/// Most timers claimed by one poll; a full claim polls again at once.
const CLAIM: i64 = 256;

/// How the timers run.
#[derive(Debug, Clone, Copy)]
pub struct TimerConfig {
    /// How long a claim keeps other servers away: the longest a timer waits
    /// when the server that claimed it dies.
    pub lease: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
        }
    }
}

impl App {
    /// Starts firing due timers, until [`App::stop`].
    pub fn start_timers(&self, config: TimerConfig) {
        let task = tokio::spawn(run(self.store.clone(), self.writer.clone(), config));
        if let Ok(mut slot) = self.timers.lock()
            && let Some(old) = slot.replace(task)
        {
            old.abort();
        }
    }

    pub(super) fn stop_timers(&self) {
        if let Ok(mut slot) = self.timers.lock()
            && let Some(task) = slot.take()
        {
            task.abort();
        }
    }
}

/// The timer task's handle, if it runs.
pub(super) type TimerTask = std::sync::Arc<std::sync::Mutex<Option<JoinHandle<()>>>>;

async fn run(store: Store, writer: Writer, config: TimerConfig) {
    let lease = i64::try_from(config.lease.as_micros()).unwrap_or(i64::MAX);
    let mut every = tokio::time::interval(POLL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        loop {
            let at = now();
            let claimed = match store
                .claim_due(at, Micros(at.0.saturating_add(lease)), CLAIM)
                .await
            {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "could not read due timers; trying again");
                    break;
                }
            };
            let full = claimed.len() as i64 == CLAIM;
            ::metrics::counter!(crate::metrics::TIMERS_CLAIMED).increment(claimed.len() as u64);
            if !fire(&writer, claimed).await {
                return;
            }
            if !full {
                break;
            }
        }
    }
}

/// Fires `timers` together (the writer batches them); false once the writer
/// has stopped.
async fn fire(writer: &Writer, timers: Vec<DueTimer>) -> bool {
    let mut calls = JoinSet::new();
    for timer in timers {
        let writer = writer.clone();
        calls.spawn(async move {
            let request = WriteRequest {
                workspace_id: timer.workspace_id,
                sees_every_conversation: true,
                request_id: None,
                method: "Timer",
                fingerprint: Vec::new(),
                command: Command::Fire {
                    conversation_id: timer.conversation_id.clone(),
                },
            };
            (timer, writer.submit(request).await)
        });
    }
    let mut running = true;
    while let Some(done) = calls.join_next().await {
        let Ok((timer, answer)) = done else { continue };
        let result = match &answer {
            Ok(_) => "fired",
            Err(WriteError::Decide(DecideError::Refused(Refusal::NothingDue)))
            | Err(WriteError::NotFound(_)) => "overtaken",
            Err(WriteError::Stopped) => "stopped",
            Err(_) => "failed",
        };
        ::metrics::counter!(crate::metrics::TIMERS_FIRED, "result" => result).increment(1);
        match answer {
            Ok(outcome) => tracing::debug!(
                conversation = timer.conversation_id.as_str(),
                status = outcome.conversation.status.as_str(),
                "timer fired"
            ),
            Err(WriteError::Decide(DecideError::Refused(Refusal::NothingDue)))
            | Err(WriteError::NotFound(_)) => tracing::debug!(
                conversation = timer.conversation_id.as_str(),
                "timer no longer due"
            ),
            Err(WriteError::Stopped) => running = false,
            Err(error) => tracing::warn!(
                %error,
                conversation = timer.conversation_id.as_str(),
                "a timer failed; it is tried again once its claim runs out"
            ),
        }
    }
    running
}
