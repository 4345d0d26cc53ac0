//! Idempotency records: the first response of a mutation that carried a
//! `request_id`, replayed for retries.

use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

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

/// The records of these (workspace, request id) pairs that exist.
pub(super) async fn find_many(
    conn: &mut SqliteConnection,
    keys: &[(WorkspaceId, &RequestId)],
) -> Result<Vec<(WorkspaceId, String, Record)>, StoreError> {
    let mut found = Vec::new();
    for chunk in keys.chunks(super::rows_per_statement(2).min(200)) {
        // One indexed lookup per term of the OR: the primary key serves each.
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT workspace_id, request_id, method, fingerprint, response FROM idempotency_records WHERE ",
        );
        for (i, (workspace, request_id)) in chunk.iter().enumerate() {
            if i > 0 {
                query.push(" OR ");
            }
            query
                .push("(workspace_id = ")
                .push_bind(workspace.0)
                .push(" AND request_id = ")
                .push_bind(request_id.as_str())
                .push(")");
        }
        for row in query.build().fetch_all(&mut *conn).await? {
            found.push((
                WorkspaceId(row.try_get("workspace_id")?),
                row.try_get("request_id")?,
                Record {
                    method: row.try_get("method")?,
                    fingerprint: row.try_get("fingerprint")?,
                    response: row.try_get("response")?,
                },
            ));
        }
    }
    Ok(found)
}

/// A first response to remember.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// The request's workspace.
    pub workspace_id: WorkspaceId,
    /// The request id.
    pub request_id: RequestId,
    /// What to replay.
    pub record: Record,
    /// When it was answered.
    pub create_time: Micros,
}

/// Stores first responses, one statement per chunk of them.
pub(super) async fn insert_many(
    conn: &mut SqliteConnection,
    records: &[NewRecord],
) -> Result<(), StoreError> {
    for chunk in records.chunks(super::rows_per_statement(6)) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO idempotency_records (workspace_id, request_id, method, fingerprint, response, create_time) ",
        );
        query.push_values(chunk, |mut row, r| {
            row.push_bind(r.workspace_id.0)
                .push_bind(r.request_id.as_str())
                .push_bind(r.record.method.as_str())
                .push_bind(r.record.fingerprint.as_slice())
                .push_bind(r.record.response.as_str())
                .push_bind(r.create_time.0);
        });
        query.build().execute(&mut *conn).await?;
    }
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
