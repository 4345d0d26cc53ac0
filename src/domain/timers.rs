//! What happens to a conversation by itself, with time: a snooze ends, or an
//! idle conversation is closed. Both are rules of the conversation and the
//! workspace's settings alone, so the store keeps one due time per
//! conversation ([`due_time`]) and the server fires it through the same
//! rules as every mutation ([`due_now`]): a timer that is no longer due when
//! it fires changes nothing.

use serde::{Deserialize, Serialize};

use super::conversation::{Conversation, Status};
use super::values::{MessageText, Micros};

/// The shortest idle time auto-close accepts.
pub const MIN_AUTO_CLOSE_MICROS: i64 = 1_000_000;
/// The longest: a year.
pub const MAX_AUTO_CLOSE_MICROS: i64 = 366 * 24 * 3600 * 1_000_000;
/// How far ahead a snooze may end: a year.
pub const MAX_SNOOZE_MICROS: i64 = 366 * 24 * 3600 * 1_000_000;

/// Closes conversations nobody wrote in for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoClose {
    /// How long without a message from anyone (the conversation's
    /// `update_time` not moving) before it closes, in microseconds.
    pub after_micros: i64,
    /// What the visitor is told first, if anything.
    pub message: Option<MessageText>,
}

impl AutoClose {
    /// Checks the idle time's range.
    pub fn new(after_micros: i64, message: Option<MessageText>) -> Result<Self, String> {
        if !(MIN_AUTO_CLOSE_MICROS..=MAX_AUTO_CLOSE_MICROS).contains(&after_micros) {
            return Err("must be at least 1 second and at most 366 days".into());
        }
        Ok(Self {
            after_micros,
            message,
        })
    }
}

/// A workspace's settings that the lifecycle rules read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceSettings {
    /// Off (`None`) by default.
    pub auto_close: Option<AutoClose>,
}

/// What a timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The snooze ended: PENDING goes back to OPEN.
    SnoozeEnded,
    /// Idle for the workspace's auto-close time: the conversation closes.
    AutoClose,
}

/// The next time something may happen to `conversation` by itself, or
/// `None`. A snoozed conversation waits for its snooze to end and only then
/// is judged idle (the end of the snooze moves its `update_time`); a closed
/// one waits for nothing.
///
/// The store keeps this time on the conversation's row and recomputes it in
/// SQL when the settings change (`store::sql::settings`), with exactly these
/// rules.
pub fn due_time(conversation: &Conversation, settings: &WorkspaceSettings) -> Option<Micros> {
    if conversation.status == Status::Closed {
        return None;
    }
    if let Some(end) = conversation.snooze_end_time {
        return Some(end);
    }
    settings
        .auto_close
        .as_ref()
        .map(|auto| Micros(conversation.update_time.0.saturating_add(auto.after_micros)))
}

/// What is due on `conversation` at `now`, if anything.
pub fn due_now(
    conversation: &Conversation,
    settings: &WorkspaceSettings,
    now: Micros,
) -> Option<Due> {
    let at = due_time(conversation, settings)?;
    if at > now {
        return None;
    }
    Some(if conversation.snooze_end_time.is_some() {
        Due::SnoozeEnded
    } else {
        Due::AutoClose
    })
}
