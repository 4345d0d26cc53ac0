//! Notices of commits made by other servers on the same database.

use crate::domain::WorkspaceId;

/// Word that other servers committed to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitNotice {
    /// The workspace's feed reaches at least this sequence.
    Head(WorkspaceId, i64),
    /// Notices may have been missed: read every workspace's head.
    Resync,
}

/// Notices of commits made by other servers on the same database. A notice
/// only says where to look: what was committed is read from the events
/// table by sequence. On a SQLite file no other server writes, and none
/// ever comes.
#[derive(Debug)]
pub struct CommitWatch {
    notices: tokio::sync::mpsc::Receiver<CommitNotice>,
    /// Keeps a watch with no source open (it then waits forever).
    _idle: Option<tokio::sync::mpsc::Sender<CommitNotice>>,
}

impl CommitWatch {
    /// A watch of `notices`.
    pub(super) fn of(notices: tokio::sync::mpsc::Receiver<CommitNotice>) -> Self {
        Self {
            notices,
            _idle: None,
        }
    }

    /// A watch that never hears anything.
    pub(super) fn silent() -> Self {
        let (idle, notices) = tokio::sync::mpsc::channel(1);
        Self {
            notices,
            _idle: Some(idle),
        }
    }

    /// The next notice; None once the store is closed.
    pub async fn next(&mut self) -> Option<CommitNotice> {
        self.notices.recv().await
    }
}
