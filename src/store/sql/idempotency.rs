//! Request ids and the first response each one got.

use sqlx::{QueryBuilder, Row};

use super::{Conn, Db, rows::Insert};
use crate::{
    domain::{Micros, WorkspaceId, values::RequestId},
    store::{
        StoreError,
        model::{NewRecord, Record},
        rows_per_statement,
    },
};

/// The remembered first responses of these request ids.
pub async fn find_many(
    conn: &mut Conn,
    keys: &[(WorkspaceId, &RequestId)],
) -> Result<Vec<(WorkspaceId, String, Record)>, StoreError> {
    let mut found = Vec::new();
    for chunk in keys.chunks(rows_per_statement(2).min(200)) {
        let mut query = QueryBuilder::<Db>::new(
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

/// The rows that remember first responses.
pub fn insert(records: &[NewRecord]) -> Insert<'_> {
    let mut rows = Vec::with_capacity(records.len());
    for r in records {
        rows.push([
            r.workspace_id.0.into(),
            r.request_id.as_str().into(),
            r.record.method.as_str().into(),
            r.record.fingerprint.as_slice().into(),
            r.record.response.as_str().into(),
            r.create_time.0.into(),
        ]);
    }
    Insert::new(
        "idempotency_records",
        "INSERT INTO idempotency_records (workspace_id, request_id, method, fingerprint, response, create_time) ",
        rows,
    )
}

/// Forgets records made before `cutoff`; returns how many.
pub async fn purge_before(conn: &mut Conn, cutoff: Micros) -> Result<u64, StoreError> {
    Ok(
        sqlx::query("DELETE FROM idempotency_records WHERE create_time < $1")
            .bind(cutoff.0)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}
