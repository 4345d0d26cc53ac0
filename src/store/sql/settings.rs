//! Workspace settings the lifecycle reads (auto-close), and the due times
//! they decide.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Row};

use super::{Conn, Db, DbRow};
use crate::{
    domain::{
        WorkspaceId,
        timers::{AutoClose, WorkspaceSettings},
        values::MessageText,
    },
    store::StoreError,
};

fn from_row(row: &DbRow) -> Result<WorkspaceSettings, StoreError> {
    let after: Option<i64> = row.try_get("auto_close_after")?;
    let message: Option<String> = row.try_get("auto_close_message")?;
    Ok(WorkspaceSettings {
        auto_close: after.map(|after_micros| AutoClose {
            after_micros,
            message: message.map(MessageText::from_trusted),
        }),
    })
}

/// The settings of these workspaces (those that exist).
pub async fn get_many(
    conn: &mut Conn,
    workspaces: &[WorkspaceId],
) -> Result<HashMap<WorkspaceId, WorkspaceSettings>, StoreError> {
    let mut found = HashMap::with_capacity(workspaces.len());
    if workspaces.is_empty() {
        return Ok(found);
    }
    let mut query = QueryBuilder::<Db>::new(
        "SELECT workspace_id, auto_close_after, auto_close_message FROM workspaces \
         WHERE workspace_id IN (",
    );
    let mut list = query.separated(", ");
    for workspace in workspaces {
        list.push_bind(workspace.0);
    }
    query.push(")");
    for row in query.build().fetch_all(conn).await? {
        found.insert(WorkspaceId(row.try_get("workspace_id")?), from_row(&row)?);
    }
    Ok(found)
}

/// Stores the workspace's settings and gives each of its conversations the
/// due time they decide, releasing every claim: the rules of
/// `domain::timers::due_time`, in SQL (none when closed; the snooze's end
/// when snoozed; else `update_time` plus the auto-close time, NULL when
/// auto-close is off). Call with the workspace's counters locked, as a
/// batch holds them, so that no batch writes due times from the old
/// settings after this.
pub async fn put(
    conn: &mut Conn,
    workspace_id: WorkspaceId,
    settings: &WorkspaceSettings,
) -> Result<(), StoreError> {
    let after = settings.auto_close.as_ref().map(|a| a.after_micros);
    let message = settings
        .auto_close
        .as_ref()
        .and_then(|a| a.message.as_ref())
        .map(|m| m.as_str().to_owned());
    sqlx::query(
        "UPDATE workspaces SET auto_close_after = $2, auto_close_message = $3 \
         WHERE workspace_id = $1",
    )
    .bind(workspace_id.0)
    .bind(after)
    .bind(message)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE conversations SET \
             due_time = CASE WHEN snooze_end_time IS NOT NULL THEN snooze_end_time \
                             ELSE update_time + $2 END, \
             timer_claim_until = NULL \
         WHERE workspace_id = $1 AND status <> 'closed'",
    )
    .bind(workspace_id.0)
    .bind(after)
    .execute(conn)
    .await?;
    Ok(())
}
