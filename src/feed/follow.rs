//! Following the database: events other servers committed reach this
//! server's hub in sequence order, with no gap and no duplicate.
//!
//! **Owns** the follower task. It learns that a workspace's feed reaches
//! further than the hub from three sources: a publish that met a gap (this
//! server's batch came after another server's), the store's commit notices
//! (another server's batch), and a full re-read of every head when notices
//! may have been missed. It then reads the missing events from the store by
//! sequence and publishes them: the store is the truth, a notice only says
//! where to look. On a SQLite file there is no other server, and the
//! follower never has anything to do.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{Notify, watch};

use super::hub::Hub;
use crate::{
    domain::{WorkspaceId, scope::EventScope},
    store::{CommitNotice, CommitWatch, Store, StoreError},
};

/// Heads the hub should reach, by workspace, waiting for the follower.
#[derive(Debug, Default)]
pub(super) struct Wanted {
    heads: Mutex<HashMap<WorkspaceId, i64>>,
    ring: Notify,
}

impl Wanted {
    /// Asks the follower to bring `workspace` up to `head`.
    pub fn want(&self, workspace: WorkspaceId, head: i64) {
        {
            let mut heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
            let wanted = heads.entry(workspace).or_insert(head);
            *wanted = (*wanted).max(head);
        }
        self.ring.notify_one();
    }

    fn take(&self) -> HashMap<WorkspaceId, i64> {
        std::mem::take(&mut *self.heads.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Reads the workspace's events after the hub's head up to `head` from the
/// store and publishes them, in batches of `batch`.
pub(super) async fn catch_up(
    hub: &Hub,
    store: &Store,
    workspace: WorkspaceId,
    head: i64,
    batch: usize,
) -> Result<(), StoreError> {
    let everything = EventScope {
        workspace_id: workspace,
        conversation_id: None,
        everyone_only: false,
        kinds: Vec::new(),
    };
    let limit = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
    loop {
        let known = hub.log(workspace).head();
        if known >= head {
            return Ok(());
        }
        let events = store.read_events(&everything, known, head, limit).await?;
        if events.is_empty() {
            // The head was announced but its events are not visible (yet):
            // a later notice or poll brings them.
            return Ok(());
        }
        // Another publish may have appended some meanwhile: the hub skips
        // what it holds, and its head only moves forward.
        hub.publish(events);
    }
}

/// Runs until `shutdown`: brings the hub up to every head it hears of.
pub(super) async fn follow(
    hub: Arc<Hub>,
    store: Store,
    wanted: Arc<Wanted>,
    mut commits: CommitWatch,
    mut shutdown: watch::Receiver<bool>,
    batch: usize,
) {
    loop {
        tokio::select! {
            () = wanted.ring.notified() => {}
            notice = commits.next() => match notice {
                Some(CommitNotice::Head(workspace, head)) => wanted.want(workspace, head),
                Some(CommitNotice::Resync) => match store.tallies().await {
                    Ok(tallies) => {
                        for (workspace, tally) in tallies {
                            if tally.event_head > hub.log(workspace).head() {
                                wanted.want(workspace, tally.event_head);
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "could not read the feed heads"),
                },
                None => return,
            },
            _ = shutdown.changed() => return,
        }
        for (workspace, head) in wanted.take() {
            if let Err(error) = catch_up(&hub, &store, workspace, head, batch).await {
                tracing::warn!(%error, workspace = workspace.0, "could not follow the feed; retrying");
                wanted.want(workspace, head);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
