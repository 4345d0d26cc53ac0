//! Visitor sessions: the secret that signs their tokens, and the sessions
//! revoked before they expire (the tokens themselves are never stored).

use sqlx::Row;

use super::Conn;
use crate::{
    domain::{Micros, WorkspaceId},
    store::StoreError,
};

/// The signing secret; `candidate` becomes it if there is none yet (servers
/// starting together agree on the first one stored).
pub async fn session_secret(
    conn: &mut Conn,
    candidate: &[u8],
    now: Micros,
) -> Result<Vec<u8>, StoreError> {
    sqlx::query(
        "INSERT INTO session_secrets (secret_id, secret, create_time) VALUES (1, $1, $2) \
         ON CONFLICT (secret_id) DO NOTHING",
    )
    .bind(candidate)
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    Ok(
        sqlx::query("SELECT secret FROM session_secrets WHERE secret_id = 1")
            .fetch_one(conn)
            .await?
            .try_get(0)?,
    )
}

/// Records `session_id` of `workspace_id` as revoked (again is no change).
pub async fn revoke_session(
    conn: &mut Conn,
    workspace_id: WorkspaceId,
    session_id: &str,
    expire_time: Micros,
    now: Micros,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO revoked_sessions (workspace_id, session_id, expire_time, revoke_time) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (workspace_id, session_id) DO NOTHING",
    )
    .bind(workspace_id.0)
    .bind(session_id)
    .bind(expire_time.0)
    .bind(now.0)
    .execute(conn)
    .await?;
    Ok(())
}

/// Sessions revoked at or after `since` that have not expired by `now`.
pub async fn revoked_sessions_since(
    conn: &mut Conn,
    since: Micros,
    now: Micros,
) -> Result<Vec<(WorkspaceId, String)>, StoreError> {
    sqlx::query(
        "SELECT workspace_id, session_id FROM revoked_sessions \
         WHERE revoke_time >= $1 AND expire_time > $2",
    )
    .bind(since.0)
    .bind(now.0)
    .fetch_all(conn)
    .await?
    .iter()
    .map(|row| Ok((WorkspaceId(row.try_get(0)?), row.try_get(1)?)))
    .collect()
}

/// Forgets revocations of sessions that expired before `cutoff`.
pub async fn purge_expired(conn: &mut Conn, cutoff: Micros) -> Result<u64, StoreError> {
    Ok(
        sqlx::query("DELETE FROM revoked_sessions WHERE expire_time < $1")
            .bind(cutoff.0)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}
