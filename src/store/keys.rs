//! Workspaces and their API keys.

use sqlx::{Row, SqliteConnection};

use super::StoreError;
use crate::domain::{Micros, WorkspaceId, credentials::Role};

/// A stored key, found by its id.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// Its workspace.
    pub workspace_id: WorkspaceId,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of its secret.
    pub secret_hash: Vec<u8>,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// How many workspaces exist.
pub async fn count_workspaces(conn: &mut SqliteConnection) -> Result<i64, StoreError> {
    Ok(sqlx::query("SELECT COUNT(*) FROM workspaces")
        .fetch_one(conn)
        .await?
        .try_get(0)?)
}

/// Creates a workspace; `None` when the name is taken.
pub async fn create_workspace(
    conn: &mut SqliteConnection,
    name: &str,
    now: Micros,
) -> Result<Option<WorkspaceId>, StoreError> {
    let row = sqlx::query(
        "INSERT INTO workspaces (name, create_time) VALUES (?, ?) ON CONFLICT (name) DO NOTHING RETURNING workspace_id",
    )
    .bind(name)
    .bind(now.0)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| r.try_get(0).map(WorkspaceId)).transpose()?)
}

/// The workspace with this name.
pub async fn find_workspace(
    conn: &mut SqliteConnection,
    name: &str,
) -> Result<Option<WorkspaceId>, StoreError> {
    let row = sqlx::query("SELECT workspace_id FROM workspaces WHERE name = ?")
        .bind(name)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| r.try_get(0).map(WorkspaceId)).transpose()?)
}

/// Stores a new key's hash.
pub async fn insert_key(
    conn: &mut SqliteConnection,
    key_id: &str,
    workspace_id: WorkspaceId,
    role: Role,
    secret_hash: &[u8],
    now: Micros,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO api_keys (key_id, workspace_id, role, secret_hash, create_time) VALUES (?, ?, ?, ?, ?)")
        .bind(key_id)
        .bind(workspace_id.0)
        .bind(role.as_str())
        .bind(secret_hash)
        .bind(now.0)
        .execute(conn)
        .await?;
    Ok(())
}

/// The key with this id.
pub async fn find_key(
    conn: &mut SqliteConnection,
    key_id: &str,
) -> Result<Option<StoredKey>, StoreError> {
    let row = sqlx::query(
        "SELECT workspace_id, role, secret_hash, revoke_time FROM api_keys WHERE key_id = ?",
    )
    .bind(key_id)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let role: String = row.try_get("role")?;
    Ok(Some(StoredKey {
        workspace_id: WorkspaceId(row.try_get("workspace_id")?),
        role: Role::from_stored(&role)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown role {role:?}")))?,
        secret_hash: row.try_get("secret_hash")?,
        revoked: row.try_get::<Option<i64>, _>("revoke_time")?.is_some(),
    }))
}

/// The ids of keys revoked at or after `since`.
pub async fn revoked_since(
    conn: &mut SqliteConnection,
    since: Micros,
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query(
        "SELECT key_id FROM api_keys WHERE revoke_time IS NOT NULL AND revoke_time >= ?",
    )
    .bind(since.0)
    .fetch_all(conn)
    .await?
    .iter()
    .map(|row| row.try_get(0))
    .collect::<Result<_, _>>()?)
}

/// Revokes a key; false when there is no such key or it was already revoked.
pub async fn revoke_key(
    conn: &mut SqliteConnection,
    key_id: &str,
    now: Micros,
) -> Result<bool, StoreError> {
    Ok(
        sqlx::query("UPDATE api_keys SET revoke_time = ? WHERE key_id = ? AND revoke_time IS NULL")
            .bind(now.0)
            .bind(key_id)
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}
