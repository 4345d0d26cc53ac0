//! What the writer remembers of its own writes: the conversations and the
//! workspace counters as its last commits left them.
//!
//! The writer is the only one that writes conversations and counters (one
//! server per database file), so a conversation it wrote is, until its next
//! write, exactly what the database holds: a batch reads from here instead
//! of the database, and only reads what it has not met (or has forgotten).
//! Entries go in only after their batch committed; when a batch fails, the
//! writer forgets everything, so an ambiguous failure cannot leave a stale
//! entry behind.

use std::collections::HashMap;

use crate::{
    domain::{Conversation, WorkspaceId, values::ConversationId},
    store::model::Tally,
};

/// Conversations kept, at most (two generations of half each: recently used
/// ones survive a turnover, the rest are forgotten).
const CONVERSATIONS: usize = 20_000;

#[derive(Debug, Default)]
pub(super) struct Cache {
    current: HashMap<ConversationId, Conversation>,
    previous: HashMap<ConversationId, Conversation>,
    tallies: HashMap<WorkspaceId, Tally>,
}

impl Cache {
    /// The conversation as the last commit left it, if remembered.
    pub fn conversation(&mut self, id: &ConversationId) -> Option<Conversation> {
        if let Some(found) = self.current.get(id) {
            return Some(found.clone());
        }
        let found = self.previous.remove(id)?;
        self.insert(found.clone());
        Some(found)
    }

    /// The workspace's counters as the last commit left them, if remembered.
    pub fn tally(&self, workspace: WorkspaceId) -> Option<Tally> {
        self.tallies.get(&workspace).copied()
    }

    /// Remembers what a batch committed.
    pub fn committed(&mut self, conversations: &[Conversation], tallies: &[(WorkspaceId, Tally)]) {
        for conversation in conversations {
            self.insert(conversation.clone());
        }
        self.tallies.extend(tallies.iter().copied());
    }

    /// Forgets everything (after a failed batch).
    pub fn clear(&mut self) {
        self.current.clear();
        self.previous.clear();
        self.tallies.clear();
    }

    fn insert(&mut self, conversation: Conversation) {
        if self.current.len() >= CONVERSATIONS / 2 {
            self.previous = std::mem::take(&mut self.current);
        }
        self.previous.remove(&conversation.id);
        self.current.insert(conversation.id.clone(), conversation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Micros, values::VisitorId};

    fn conversation(i: usize) -> Conversation {
        Conversation::blank(
            ConversationId::from_trusted(format!("conv_{i}")),
            WorkspaceId(1),
            VisitorId::from_trusted(format!("v-{i}")),
            None,
            Micros(0),
        )
    }

    #[test]
    fn a_recently_used_conversation_survives_a_turnover_and_an_old_one_is_forgotten() {
        let mut cache = Cache::default();
        cache.committed(&[conversation(0), conversation(1)], &[]);
        for i in 2..CONVERSATIONS / 2 {
            cache.committed(&[conversation(i)], &[]);
        }
        // Generation full: the next insert turns it over.
        assert!(cache.conversation(&conversation(0).id).is_some());
        for i in CONVERSATIONS..CONVERSATIONS + CONVERSATIONS / 2 + 1 {
            cache.committed(&[conversation(i)], &[]);
        }
        assert!(cache.conversation(&conversation(1).id).is_none());
        assert!(cache.current.len() + cache.previous.len() <= CONVERSATIONS + 1);
    }

    #[test]
    fn a_failed_batch_forgets_everything() {
        let mut cache = Cache::default();
        cache.committed(&[conversation(0)], &[(WorkspaceId(1), Tally::default())]);
        cache.clear();
        assert!(cache.conversation(&conversation(0).id).is_none());
        assert!(cache.tally(WorkspaceId(1)).is_none());
    }
}
