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

/// A duration as people say it: "30 minutes", "1 hour", "90 seconds".
pub fn spoken_duration(micros: i64) -> String {
    let seconds = micros / 1_000_000;
    let (amount, unit) = [(86_400, "day"), (3_600, "hour"), (60, "minute")]
        .into_iter()
        .find(|(size, _)| seconds >= *size && seconds % size == 0)
        .map(|(size, unit)| (seconds / size, unit))
        .unwrap_or((seconds, "second"));
    if amount == 1 {
        format!("1 {unit}")
    } else {
        format!("{amount} {unit}s")
    }
}

/// A time as "2026-12-01 17:30 UTC" (to the minute; seconds when not zero).
pub fn spoken_time(at: Micros) -> String {
    let (date, hour, minute, second) = civil_time(at);
    if second == 0 {
        format!("{date} {hour:02}:{minute:02} UTC")
    } else {
        format!("{date} {hour:02}:{minute:02}:{second:02} UTC")
    }
}

/// A time as "2026-12-01 17:30:00 UTC", always to the second (for tables,
/// where every row should line up).
pub fn exact_time(at: Micros) -> String {
    let (date, hour, minute, second) = civil_time(at);
    format!("{date} {hour:02}:{minute:02}:{second:02} UTC")
}

/// The UTC date ("2026-12-01") and time of day of `at`.
fn civil_time(at: Micros) -> (String, i64, i64, i64) {
    let seconds = at.0.div_euclid(1_000_000);
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
    )
}

/// Days since 1970-01-01 as a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_said_in_the_largest_whole_unit() {
        assert_eq!(spoken_duration(30 * 60 * 1_000_000), "30 minutes");
        assert_eq!(spoken_duration(3_600 * 1_000_000), "1 hour");
        assert_eq!(spoken_duration(90 * 1_000_000), "90 seconds");
        assert_eq!(spoken_duration(2 * 86_400 * 1_000_000), "2 days");
        assert_eq!(spoken_duration(1_000_000), "1 second");
    }

    #[test]
    fn times_are_said_in_utc() {
        assert_eq!(spoken_time(Micros(0)), "1970-01-01 00:00 UTC");
        // 2026-12-01 17:30:00 UTC
        assert_eq!(
            spoken_time(Micros(1_796_146_200_000_000)),
            "2026-12-01 17:30 UTC"
        );
        assert_eq!(
            spoken_time(Micros(951_782_401_000_000)),
            "2000-02-29 00:00:01 UTC"
        );
    }
}
