//! The fan-out hub: per workspace, the recent committed events in memory and
//! who is listening.
//!
//! **Owns** one [`Log`] per workspace: the newest `window` events (shared by
//! every stream as `Arc`s, never copied per subscriber), the workspace's
//! head, and the subscribers, indexed by what they listen to: the whole
//! workspace (Inboxes, bridges) or one conversation (a widget).
//!
//! **Promises**: a subscriber is woken by every commit that holds an event
//! it can match (its workspace's, or its conversation's), and by no other;
//! a wake-up is never lost, because the pending flag is set under the same
//! lock the subscriber scans under, and `Notify` keeps a permit for a
//! subscriber that is not waiting yet.
//!
//! **Never** blocks or waits in `publish` beyond a short mutex: the writer
//! appends and rings; what each subscriber does with it is its own business.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use tokio::sync::Notify;

use crate::domain::{WorkspaceId, lifecycle::Event, scope::EventScope, values::ConversationId};

/// A subscriber's doorbell.
#[derive(Debug, Default)]
pub(super) struct Signal {
    pub notify: Notify,
    /// Set under the log's lock when an event the subscriber may want is
    /// appended; cleared under it when the subscriber scans to the head.
    pending: AtomicBool,
}

#[derive(Debug, Default)]
struct LogState {
    /// The newest sequence of the workspace.
    head: i64,
    /// The newest events, the last at `head`, consecutive sequences.
    recent: VecDeque<Arc<Event>>,
    /// Subscribers of the whole workspace.
    workspace: HashMap<u64, Arc<Signal>>,
    /// Subscribers of one conversation.
    conversations: HashMap<ConversationId, HashMap<u64, Arc<Signal>>>,
}

/// One workspace's recent feed and its subscribers.
#[derive(Debug, Default)]
pub(super) struct Log {
    state: Mutex<LogState>,
}

/// What a scan of the recent log found.
#[derive(Debug)]
pub(super) enum Recent {
    /// Matching events after the cursor (at most the limit), and how far the
    /// scan went: every event up to `scanned` was looked at.
    Events {
        events: Vec<Arc<Event>>,
        scanned: i64,
        head: i64,
    },
    /// The cursor is older than the window: read the store up to `head`.
    Older { head: i64 },
}

impl Log {
    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        // A panic while holding this lock leaves plain data behind; keep
        // serving it rather than poisoning every stream of the workspace.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The newest sequence.
    pub fn head(&self) -> i64 {
        self.lock().head
    }

    /// Up to `limit` events in `scope` after `after`, from memory; or
    /// [`Recent::Older`] when they are no longer all there. A scan that
    /// reaches the head clears `signal`'s pending flag.
    pub fn scan(
        &self,
        scope: &EventScope,
        after: i64,
        limit: usize,
        signal: Option<&Signal>,
    ) -> Recent {
        let state = self.lock();
        let head = state.head;
        let oldest = head - state.recent.len() as i64 + 1;
        if after + 1 < oldest {
            return Recent::Older { head };
        }
        let mut events = Vec::new();
        let mut scanned = head;
        let skip = usize::try_from(after + 1 - oldest).unwrap_or(0);
        for event in state.recent.iter().skip(skip) {
            if scope.admits(event) {
                events.push(event.clone());
                if events.len() == limit {
                    scanned = event.sequence;
                    break;
                }
            }
        }
        if scanned == head
            && let Some(signal) = signal
        {
            signal.pending.store(false, Ordering::Release);
        }
        Recent::Events {
            events,
            scanned,
            head,
        }
    }

    /// The head, if nothing `signal` may want arrived since its last scan to
    /// the head: then everything up to it is scanned.
    pub fn quiet_head(&self, signal: &Signal) -> Option<i64> {
        let state = self.lock();
        (!signal.pending.load(Ordering::Acquire)).then_some(state.head)
    }
}

/// The logs of every workspace.
#[derive(Debug)]
pub(super) struct Hub {
    logs: RwLock<HashMap<WorkspaceId, Arc<Log>>>,
    /// Events kept in memory per workspace.
    window: usize,
    next_id: AtomicU64,
}

/// A subscriber's place in a log; leaving it (drop) unsubscribes.
#[derive(Debug)]
pub(super) struct Registration {
    pub log: Arc<Log>,
    pub signal: Arc<Signal>,
    id: u64,
    conversation: Option<ConversationId>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut state = self.log.lock();
        match &self.conversation {
            None => {
                state.workspace.remove(&self.id);
            }
            Some(conversation) => {
                if let Some(subscribers) = state.conversations.get_mut(conversation) {
                    subscribers.remove(&self.id);
                    if subscribers.is_empty() {
                        state.conversations.remove(conversation);
                    }
                }
            }
        }
    }
}

impl Hub {
    /// A hub whose workspaces start at these heads, keeping `window` recent
    /// events each.
    pub fn new(heads: HashMap<WorkspaceId, i64>, window: usize) -> Self {
        let logs = heads
            .into_iter()
            .map(|(workspace, head)| {
                let state = LogState {
                    head,
                    ..LogState::default()
                };
                (
                    workspace,
                    Arc::new(Log {
                        state: Mutex::new(state),
                    }),
                )
            })
            .collect();
        Self {
            logs: RwLock::new(logs),
            window: window.max(1),
            next_id: AtomicU64::new(0),
        }
    }

    /// The workspace's log. A workspace the hub has not met has had no event
    /// yet: every event is published here first.
    pub fn log(&self, workspace: WorkspaceId) -> Arc<Log> {
        if let Some(log) = self
            .logs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&workspace)
        {
            return log.clone();
        }
        self.logs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(workspace)
            .or_default()
            .clone()
    }

    /// Subscribes to `scope`'s workspace, or to its conversation when it
    /// names one.
    pub fn register(&self, scope: &EventScope) -> Registration {
        let log = self.log(scope.workspace_id);
        let signal = Arc::new(Signal::default());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut state = log.lock();
            match &scope.conversation_id {
                None => {
                    state.workspace.insert(id, signal.clone());
                }
                Some(conversation) => {
                    state
                        .conversations
                        .entry(conversation.clone())
                        .or_default()
                        .insert(id, signal.clone());
                }
            }
        }
        Registration {
            log,
            signal,
            id,
            conversation: scope.conversation_id.clone(),
        }
    }

    /// Appends committed events (in commit order) and wakes the subscribers
    /// who may want them. Each workspace's log only ever grows by the next
    /// sequence: events it holds already are skipped, and events after a
    /// gap (committed by another server, not yet read) are left out. For
    /// each workspace left with such a gap, returns the head the events
    /// showed, for the caller to read the missing ones from the store.
    pub fn publish(&self, events: Vec<Event>) -> Vec<(WorkspaceId, i64)> {
        let mut by_workspace: Vec<(WorkspaceId, Vec<Event>)> = Vec::new();
        for event in events {
            match by_workspace
                .iter_mut()
                .find(|(w, _)| *w == event.workspace_id)
            {
                Some((_, list)) => list.push(event),
                None => by_workspace.push((event.workspace_id, vec![event])),
            }
        }
        let mut gaps = Vec::new();
        for (workspace, events) in by_workspace {
            let log = self.log(workspace);
            let mut wake = Vec::new();
            {
                let mut state = log.lock();
                let mut appended = false;
                let newest = events.last().map_or(0, |e| e.sequence);
                for event in events {
                    if event.sequence <= state.head {
                        continue;
                    }
                    if event.sequence > state.head + 1 {
                        gaps.push((workspace, newest));
                        break;
                    }
                    state.head = event.sequence;
                    if let Some(subscribers) = state.conversations.get(&event.conversation_id) {
                        wake.extend(subscribers.values().cloned());
                    }
                    state.recent.push_back(Arc::new(event));
                    appended = true;
                }
                if !appended {
                    continue;
                }
                while state.recent.len() > self.window {
                    state.recent.pop_front();
                }
                wake.extend(state.workspace.values().cloned());
                for signal in &wake {
                    signal.pending.store(true, Ordering::Release);
                }
            }
            for signal in wake {
                signal.notify.notify_one();
            }
        }
        gaps
    }
}
