//! A conversation's status: OPEN, PENDING or CLOSED. Its own room, so that
//! messages (which name statuses) and conversations (which hold flow runs
//! that hold messages) need not import each other.

use serde::{Deserialize, Serialize};

/// OPEN, PENDING or CLOSED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Live: visitors and agents write.
    Open,
    /// Waiting on the visitor.
    Pending,
    /// Done; accepts no messages until reopened or restarted.
    Closed,
}

impl Status {
    /// Every status, in Inbox tab order.
    pub const ALL: [Status; 3] = [Status::Open, Status::Pending, Status::Closed];

    /// Its place in [`Status::ALL`].
    pub fn index(self) -> usize {
        match self {
            Self::Open => 0,
            Self::Pending => 1,
            Self::Closed => 2,
        }
    }

    /// The name used in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Pending => "pending",
            Self::Closed => "closed",
        }
    }

    /// Reads the storage name back.
    pub fn from_stored(value: &str) -> Option<Self> {
        match value {
            "open" => Some(Self::Open),
            "pending" => Some(Self::Pending),
            "closed" => Some(Self::Closed),
            _ => None,
        }
    }

    /// How a sentence names the status.
    pub fn label(self) -> &'static str {
        match self {
            Self::Open => "Open",
            Self::Pending => "Pending",
            Self::Closed => "Closed",
        }
    }
}
