//! Workspaces and their API keys. Keys are stored as SHA-256 hashes of their
//! secret part; a lookup is by the public key id. Every new workspace gets
//! its counter row in the same transaction, so that a batch always has a row
//! to lock.

use sqlx::Row;

use super::Conn;
use crate::{
    domain::{Micros, WorkspaceId, credentials::Role},
    store::{
        StoreError,
        model::{KeySummary, NewKey, StoredKey, WorkspaceSummary},
    },
};

/// How many workspaces there are.
pub async fn count_workspaces(conn: &mut Conn) -> Result<i64, StoreError> {
    Ok(sqlx::query("SELECT COUNT(*) FROM workspaces")
        .fetch_one(conn)
        .await?
        .try_get(0)?)
}

/// Creates a workspace and its counters; `None` if the name is taken.
pub async fn create_workspace(
    conn: &mut Conn,
    name: &str,
    now: Micros,
) -> Result<Option<WorkspaceId>, StoreError> {
    let row = sqlx::query(
        "INSERT INTO workspaces (name, create_time) VALUES ($1, $2) \
         ON CONFLICT (name) DO NOTHING RETURNING workspace_id",
    )
    .bind(name)
    .bind(now.0)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(id) = row.map(|r| r.try_get(0).map(WorkspaceId)).transpose()? else {
        return Ok(None);
    };
    sqlx::query(
        "INSERT INTO workspace_counters (workspace_id, event_head, open_count, pending_count, closed_count) \
         VALUES ($1, 0, 0, 0, 0)",
    )
    .bind(id.0)
    .execute(conn)
    .await?;
    Ok(Some(id))
}

/// The id of the workspace named `name`.
pub async fn find_workspace(
    conn: &mut Conn,
    name: &str,
) -> Result<Option<WorkspaceId>, StoreError> {
    let row = sqlx::query("SELECT workspace_id FROM workspaces WHERE name = $1")
        .bind(name)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| r.try_get(0).map(WorkspaceId)).transpose()?)
}

/// Stores a key of `workspace_id`.
pub async fn insert_key(
    conn: &mut Conn,
    workspace_id: WorkspaceId,
    key: &NewKey<'_>,
    now: Micros,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO api_keys (key_id, workspace_id, role, secret_hash, create_time) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(key.key_id)
    .bind(workspace_id.0)
    .bind(key.role.as_str())
    .bind(key.secret_hash)
    .bind(now.0)
    .execute(conn)
    .await?;
    Ok(())
}

/// The key with this id.
pub async fn find_key(conn: &mut Conn, key_id: &str) -> Result<Option<StoredKey>, StoreError> {
    let row = sqlx::query(
        "SELECT workspace_id, role, secret_hash, revoke_time FROM api_keys WHERE key_id = $1",
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

/// Ids of keys revoked at or after `since`.
pub async fn revoked_since(conn: &mut Conn, since: Micros) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query(
        "SELECT key_id FROM api_keys WHERE revoke_time IS NOT NULL AND revoke_time >= $1",
    )
    .bind(since.0)
    .fetch_all(conn)
    .await?
    .iter()
    .map(|row| row.try_get(0))
    .collect::<Result<_, _>>()?)
}

/// Revokes a key; false if there is no such key or it was revoked already.
pub async fn revoke_key(conn: &mut Conn, key_id: &str, now: Micros) -> Result<bool, StoreError> {
    Ok(sqlx::query(
        "UPDATE api_keys SET revoke_time = $1 WHERE key_id = $2 AND revoke_time IS NULL",
    )
    .bind(now.0)
    .bind(key_id)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Every workspace, by name, with its counters and its count of active keys.
pub async fn list_workspaces(conn: &mut Conn) -> Result<Vec<WorkspaceSummary>, StoreError> {
    sqlx::query(
        "SELECT w.workspace_id, w.name, w.create_time, \
         COALESCE(c.open_count, 0) AS open_count, COALESCE(c.pending_count, 0) AS pending_count, \
         COALESCE(c.closed_count, 0) AS closed_count, \
         (SELECT COUNT(*) FROM api_keys k WHERE k.workspace_id = w.workspace_id AND k.revoke_time IS NULL) AS active_keys \
         FROM workspaces w LEFT JOIN workspace_counters c ON c.workspace_id = w.workspace_id \
         ORDER BY w.name",
    )
    .fetch_all(conn)
    .await?
    .iter()
    .map(|row| {
        Ok(WorkspaceSummary {
            workspace_id: WorkspaceId(row.try_get("workspace_id")?),
            name: row.try_get("name")?,
            create_time: Micros(row.try_get("create_time")?),
            counts: [
                row.try_get("open_count")?,
                row.try_get("pending_count")?,
                row.try_get("closed_count")?,
            ],
            active_keys: row.try_get("active_keys")?,
        })
    })
    .collect()
}

/// The keys of one workspace, or of every workspace, oldest first: never
/// their hashes.
pub async fn list_keys(
    conn: &mut Conn,
    workspace_id: Option<WorkspaceId>,
) -> Result<Vec<KeySummary>, StoreError> {
    let mut query = sqlx::QueryBuilder::<super::Db>::new(
        "SELECT k.key_id, w.name, k.role, k.create_time, k.revoke_time \
         FROM api_keys k JOIN workspaces w ON w.workspace_id = k.workspace_id",
    );
    if let Some(workspace_id) = workspace_id {
        query
            .push(" WHERE k.workspace_id = ")
            .push_bind(workspace_id.0);
    }
    query.push(" ORDER BY w.name, k.create_time, k.key_id");
    query
        .build()
        .fetch_all(conn)
        .await?
        .iter()
        .map(|row| {
            let role: String = row.try_get("role")?;
            Ok(KeySummary {
                key_id: row.try_get("key_id")?,
                workspace: row.try_get("name")?,
                role: Role::from_stored(&role)
                    .ok_or_else(|| StoreError::Corrupt(format!("unknown role {role:?}")))?,
                create_time: Micros(row.try_get("create_time")?),
                revoke_time: row.try_get::<Option<i64>, _>("revoke_time")?.map(Micros),
            })
        })
        .collect()
}
