//! Idempotency records: the first response of a mutation that carried a
//! `request_id`, replayed for retries.

use sqlx::{Row, SqliteConnection};

use super::StoreError;
use crate::domain::{Micros, WorkspaceId, values::RequestId};

/// A stored first response.
#[derive(Debug, Clone)]
pub struct Record {
    /// The RPC it answered.
    pub method: String,
    /// The hash of the request it answered.
    pub fingerprint: Vec<u8>,
    /// The response, as JSON of the application's outcome.
    pub response: String,
}

/// The record for `request_id` in this workspace, if any.
pub async fn find(
    conn: &mut SqliteConnection,
    workspace_id: WorkspaceId,
    request_id: &RequestId,
) -> Result<Option<Record>, StoreError> {
    let row = sqlx::query(
        "SELECT method, fingerprint, response FROM idempotency_records WHERE workspace_id = ? AND request_id = ?",
    )
    .bind(workspace_id.0)
    .bind(request_id.as_str())
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        Ok(Record {
            method: row.try_get("method")?,
            fingerprint: row.try_get("fingerprint")?,
            response: row.try_get("response")?,
        })
    })
    .transpose()
}

/// Stores the first response for `request_id`.
pub async fn insert(
    conn: &mut SqliteConnection,
    workspace_id: WorkspaceId,
    request_id: &RequestId,
    record: &Record,
    now: Micros,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO idempotency_records (workspace_id, request_id, method, fingerprint, response, create_time) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(workspace_id.0)
    .bind(request_id.as_str())
    .bind(&record.method)
    .bind(&record.fingerprint)
    .bind(&record.response)
    .bind(now.0)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes records written before `cutoff`; returns how many.
pub async fn purge_before(conn: &mut SqliteConnection, cutoff: Micros) -> Result<u64, StoreError> {
    Ok(
        sqlx::query("DELETE FROM idempotency_records WHERE create_time < ?")
            .bind(cutoff.0)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}
