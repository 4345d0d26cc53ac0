//! Flows (the bot playbook): every version kept, and each workspace's
//! default flow.

use sqlx::Row;

use super::{Conn, DbRow};
use crate::{
    domain::{Micros, WorkspaceId},
    store::{StoreError, model::StoredFlow},
};

fn from_row(row: &DbRow) -> Result<StoredFlow, StoreError> {
    Ok(StoredFlow {
        flow_id: row.try_get("flow_id")?,
        version: row.try_get("version")?,
        definition: serde_json::from_str(&row.try_get::<String, _>("definition")?)?,
        create_time: Micros(row.try_get("create_time")?),
    })
}

/// Stores a flow version.
pub async fn insert(
    conn: &mut Conn,
    workspace_id: WorkspaceId,
    flow: &StoredFlow,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO flows (flow_id, version, workspace_id, name, definition, create_time) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&flow.flow_id)
    .bind(flow.version)
    .bind(workspace_id.0)
    .bind(&flow.definition.name)
    .bind(serde_json::to_string(&flow.definition)?)
    .bind(flow.create_time.0)
    .execute(conn)
    .await?;
    Ok(())
}

/// A version of a flow of the workspace: `version`, or the newest.
pub async fn get(
    conn: &mut Conn,
    workspace_id: WorkspaceId,
    flow_id: &str,
    version: Option<i64>,
) -> Result<Option<StoredFlow>, StoreError> {
    let row = match version {
        Some(version) => {
            sqlx::query(
                "SELECT flow_id, version, definition, create_time FROM flows \
                 WHERE workspace_id = $1 AND flow_id = $2 AND version = $3",
            )
            .bind(workspace_id.0)
            .bind(flow_id)
            .bind(version)
            .fetch_optional(conn)
            .await?
        }
        None => {
            sqlx::query(
                "SELECT flow_id, version, definition, create_time FROM flows \
                 WHERE workspace_id = $1 AND flow_id = $2 ORDER BY version DESC LIMIT 1",
            )
            .bind(workspace_id.0)
            .bind(flow_id)
            .fetch_optional(conn)
            .await?
        }
    };
    row.as_ref().map(from_row).transpose()
}

/// The newest version of every flow of the workspace, by id.
pub async fn list_latest(
    conn: &mut Conn,
    workspace_id: WorkspaceId,
) -> Result<Vec<StoredFlow>, StoreError> {
    let rows = sqlx::query(
        "SELECT flow_id, version, definition, create_time FROM flows f \
         WHERE workspace_id = $1 AND version = \
           (SELECT MAX(version) FROM flows g \
            WHERE g.workspace_id = f.workspace_id AND g.flow_id = f.flow_id) \
         ORDER BY flow_id",
    )
    .bind(workspace_id.0)
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// The id of the workspace's default flow.
pub async fn default_flow_id(
    conn: &mut Conn,
    workspace_id: WorkspaceId,
) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query("SELECT default_flow_id FROM workspaces WHERE workspace_id = $1")
            .bind(workspace_id.0)
            .fetch_optional(conn)
            .await?
            .map(|row| row.try_get::<Option<String>, _>(0))
            .transpose()?
            .flatten(),
    )
}

/// Sets (or clears) the workspace's default flow.
pub async fn set_default(
    conn: &mut Conn,
    workspace_id: WorkspaceId,
    flow_id: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE workspaces SET default_flow_id = $1 WHERE workspace_id = $2")
        .bind(flow_id)
        .bind(workspace_id.0)
        .execute(conn)
        .await?;
    Ok(())
}
