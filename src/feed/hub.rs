//! The fan-out hub: per workspace, the recent committed events in memory and
//! who is listening.
//!
//! **Owns** one [`Log`] per workspace: the newest `window` events (shared by
//! every stream as `Arc`s, never copied per subscriber), also listed by
//! conversation so that a widget's scan costs its own events only, the
//! workspace's head, and the subscribers, indexed by what they listen to:
//! the whole workspace (Inboxes, bridges) or one conversation (a widget).
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
    /// The same events by conversation, each list in sequence order: a
    /// widget's scan reads its conversation's events, not every event of
    /// the workspace since its cursor.
    by_conversation: HashMap<ConversationId, VecDeque<Arc<Event>>>,
    /// Subscribers of the whole workspace.
    workspace: HashMap<u64, Arc<Signal>>,
    /// Subscribers of one conversation.
    conversations: HashMap<ConversationId, HashMap<u64, Arc<Signal>>>,
}

impl LogState {
    /// Drops the oldest event of the window, from both of its lists: it is
    /// also the oldest of its conversation's.
    fn evict_oldest(&mut self) {
        let Some(oldest) = self.recent.pop_front() else {
            return;
        };
        if let Some(list) = self.by_conversation.get_mut(&oldest.conversation_id) {
            list.pop_front();
            if list.is_empty() {
                self.by_conversation.remove(&oldest.conversation_id);
            }
        }
    }
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
        let mut take = |event: &Arc<Event>| {
            if scope.admits(event) {
                events.push(event.clone());
                if events.len() == limit {
                    scanned = event.sequence;
                    return false;
                }
            }
            true
        };
        match &scope.conversation_id {
            Some(conversation) => {
                if let Some(list) = state.by_conversation.get(conversation) {
                    let skip = list.partition_point(|e| e.sequence <= after);
                    for event in list.iter().skip(skip) {
                        if !take(event) {
                            break;
                        }
                    }
                }
            }
            None => {
                let skip = usize::try_from(after + 1 - oldest).unwrap_or(0);
                for event in state.recent.iter().skip(skip) {
                    if !take(event) {
                        break;
                    }
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
                    let event = Arc::new(event);
                    match state.by_conversation.get_mut(&event.conversation_id) {
                        Some(list) => list.push_back(event.clone()),
                        None => {
                            let list = VecDeque::from([event.clone()]);
                            state
                                .by_conversation
                                .insert(event.conversation_id.clone(), list);
                        }
                    }
                    state.recent.push_back(event);
                    appended = true;
                }
                if !appended {
                    continue;
                }
                while state.recent.len() > self.window {
                    state.evict_oldest();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Conversation, Micros, lifecycle::EventPayload, values::VisitorId};

    fn started(workspace: i64, sequence: i64, conversation: &str) -> Event {
        let id = ConversationId::from_trusted(conversation.to_owned());
        Event {
            workspace_id: WorkspaceId(workspace),
            sequence,
            event_id: format!("evt_{sequence}"),
            conversation_id: id.clone(),
            create_time: Micros(sequence),
            payload: EventPayload::ConversationStarted {
                conversation: Conversation::blank(
                    id,
                    WorkspaceId(workspace),
                    VisitorId::from_trusted("v-1".into()),
                    None,
                    Micros(0),
                ),
            },
        }
    }

    fn widget(conversation: &str) -> EventScope {
        EventScope {
            workspace_id: WorkspaceId(1),
            conversation_id: Some(ConversationId::from_trusted(conversation.to_owned())),
            everyone_only: false,
            kinds: Vec::new(),
        }
    }

    fn sequences(found: Recent) -> (Vec<i64>, i64) {
        match found {
            Recent::Events {
                events, scanned, ..
            } => (events.iter().map(|e| e.sequence).collect(), scanned),
            Recent::Older { head } => panic!("older than the window (head {head})"),
        }
    }

    #[test]
    fn a_conversation_scan_finds_exactly_its_events_after_the_cursor_within_the_limit() {
        let hub = Hub::new(HashMap::new(), 100);
        let names = ["a", "b", "c"];
        hub.publish(
            (1..=30)
                .map(|s| started(1, s, names[(s % 3) as usize]))
                .collect(),
        );
        let log = hub.log(WorkspaceId(1));
        // "a" holds 3, 6, ..., 30.
        assert_eq!(
            sequences(log.scan(&widget("a"), 10, 100, None)),
            ((4..=10).map(|i| i * 3).collect(), 30)
        );
        assert_eq!(
            sequences(log.scan(&widget("a"), 10, 2, None)),
            (vec![12, 15], 15)
        );
        assert_eq!(
            sequences(log.scan(&widget("a"), 30, 100, None)),
            (vec![], 30)
        );
        assert_eq!(
            sequences(log.scan(&widget("z"), 0, 100, None)),
            (vec![], 30)
        );
    }

    #[test]
    fn an_event_that_leaves_the_window_leaves_its_conversation_list_too() {
        let hub = Hub::new(HashMap::new(), 4);
        hub.publish(
            (1..=10)
                .map(|s| started(1, s, if s % 2 == 0 { "even" } else { "odd" }))
                .collect(),
        );
        let log = hub.log(WorkspaceId(1));
        // The window holds 7..=10.
        assert!(matches!(
            log.scan(&widget("even"), 5, 100, None),
            Recent::Older { head: 10 }
        ));
        assert_eq!(
            sequences(log.scan(&widget("even"), 6, 100, None)),
            (vec![8, 10], 10)
        );
        assert_eq!(
            sequences(log.scan(&widget("odd"), 6, 100, None)),
            (vec![7, 9], 10)
        );
        hub.publish((11..=14).map(|s| started(1, s, "new")).collect());
        let state = log.lock();
        assert_eq!(state.recent.len(), 4);
        assert_eq!(
            state.by_conversation.keys().collect::<Vec<_>>(),
            [&ConversationId::from_trusted("new".into())]
        );
    }
}
