//! Per-workspace counters, kept in the same transaction as every change: the
//! head of the workspace's event feed and its conversations per status (the
//! Inbox tab counts). Reading them is one row, however large the workspace.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Row};

use super::{Conn, Db, DbRow, rows::Insert};
use crate::{
    domain::WorkspaceId,
    store::{StoreError, model::Tally},
};

const SELECT: &str = "SELECT workspace_id, event_head, open_count, pending_count, closed_count \
     FROM workspace_counters";

fn from_row(row: &DbRow) -> Result<(WorkspaceId, Tally), StoreError> {
    Ok((
        WorkspaceId(row.try_get("workspace_id")?),
        Tally {
            event_head: row.try_get("event_head")?,
            counts: [
                row.try_get("open_count")?,
                row.try_get("pending_count")?,
                row.try_get("closed_count")?,
            ],
        },
    ))
}

/// The workspace's counters (zeros for a workspace that never had a change).
pub async fn get(conn: &mut Conn, workspace_id: WorkspaceId) -> Result<Tally, StoreError> {
    let row = sqlx::query(&format!("{SELECT} WHERE workspace_id = $1"))
        .bind(workspace_id.0)
        .fetch_optional(conn)
        .await?;
    Ok(row
        .as_ref()
        .map(from_row)
        .transpose()?
        .map(|(_, tally)| tally)
        .unwrap_or_default())
}

/// Every workspace's counters.
pub async fn all(conn: &mut Conn) -> Result<HashMap<WorkspaceId, Tally>, StoreError> {
    sqlx::query(SELECT)
        .fetch_all(conn)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// The counters of these workspaces (missing ones are zeros), taking the
/// backend's lock on their rows for the rest of the transaction
/// ([`super::dialect::LOCK_ROWS`]), in workspace order so that two batches
/// never wait on each other in a circle.
pub async fn lock_many(
    conn: &mut Conn,
    workspaces: &[WorkspaceId],
) -> Result<HashMap<WorkspaceId, Tally>, StoreError> {
    let mut query = QueryBuilder::<Db>::new(format!("{SELECT} WHERE workspace_id IN ("));
    let mut list = query.separated(", ");
    for workspace in workspaces {
        list.push_bind(workspace.0);
    }
    query.push(") ORDER BY workspace_id");
    query.push(super::dialect::LOCK_ROWS);
    let mut found: HashMap<_, _> = query
        .build()
        .fetch_all(conn)
        .await?
        .iter()
        .map(from_row)
        .collect::<Result<_, _>>()?;
    for workspace in workspaces {
        found.entry(*workspace).or_default();
    }
    Ok(found)
}

/// The rows that write these workspaces' counters.
pub fn put(tallies: &[(WorkspaceId, Tally)]) -> Insert<'_> {
    let mut rows = Vec::with_capacity(tallies.len());
    for (workspace, tally) in tallies {
        rows.push([
            workspace.0.into(),
            tally.event_head.into(),
            tally.counts[0].into(),
            tally.counts[1].into(),
            tally.counts[2].into(),
        ]);
    }
    Insert::new(
        "workspace_counters",
        "INSERT INTO workspace_counters (workspace_id, event_head, open_count, pending_count, closed_count) ",
        rows,
    )
    .with_tail(
        " ON CONFLICT (workspace_id) DO UPDATE SET event_head = excluded.event_head, \
         open_count = excluded.open_count, pending_count = excluded.pending_count, \
         closed_count = excluded.closed_count",
    )
}
