//! Flows: every version kept, and each workspace's default.

use sqlx::{Row, SqliteConnection, sqlite::SqliteRow};

use super::StoreError;
use crate::domain::{Micros, WorkspaceId, flow::FlowDefinition};

/// One stored version of a flow.
#[derive(Debug, Clone)]
pub struct StoredFlow {
    /// Its id.
    pub flow_id: String,
    /// Its version.
    pub version: i64,
    /// The definition as written (validated when it was stored).
    pub definition: FlowDefinition,
    /// When this version was written.
    pub create_time: Micros,
}

fn from_row(row: &SqliteRow) -> Result<StoredFlow, StoreError> {
    Ok(StoredFlow {
        flow_id: row.try_get("flow_id")?,
        version: row.try_get("version")?,
        definition: serde_json::from_str(&row.try_get::<String, _>("definition")?)?,
        create_time: Micros(row.try_get("create_time")?),
    })
}

/// Stores a version of a flow.
pub async fn insert(
    conn: &mut SqliteConnection,
    workspace_id: WorkspaceId,
    flow: &StoredFlow,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO flows (flow_id, version, workspace_id, name, definition, create_time) \
         VALUES (?, ?, ?, ?, ?, ?)",
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

/// A version of a flow of this workspace; the newest when `version` is None.
pub async fn get(
    conn: &mut SqliteConnection,
    workspace_id: WorkspaceId,
    flow_id: &str,
    version: Option<i64>,
) -> Result<Option<StoredFlow>, StoreError> {
    let row = sqlx::query(
        "SELECT flow_id, version, definition, create_time FROM flows \
         WHERE workspace_id = ? AND flow_id = ? AND (? IS NULL OR version = ?) \
         ORDER BY version DESC LIMIT 1",
    )
    .bind(workspace_id.0)
    .bind(flow_id)
    .bind(version)
    .bind(version)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// The newest version of each flow of the workspace, by flow id.
pub async fn list_latest(
    conn: &mut SqliteConnection,
    workspace_id: WorkspaceId,
) -> Result<Vec<StoredFlow>, StoreError> {
    let rows = sqlx::query(
        "SELECT flow_id, version, definition, create_time FROM flows f \
         WHERE workspace_id = ? AND version = \
           (SELECT MAX(version) FROM flows g WHERE g.flow_id = f.flow_id) \
         ORDER BY flow_id",
    )
    .bind(workspace_id.0)
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// The workspace's default flow id, if it has one.
pub async fn default_flow_id(
    conn: &mut SqliteConnection,
    workspace_id: WorkspaceId,
) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query("SELECT default_flow_id FROM workspaces WHERE workspace_id = ?")
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
    conn: &mut SqliteConnection,
    workspace_id: WorkspaceId,
    flow_id: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE workspaces SET default_flow_id = ? WHERE workspace_id = ?")
        .bind(flow_id)
        .bind(workspace_id.0)
        .execute(conn)
        .await?;
    Ok(())
}
