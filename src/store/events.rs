//! The durable event feed: appended with each change, read by sequence.

use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::StoreError;
use crate::domain::{WorkspaceId, lifecycle::NewEvent};

/// The sequence of the newest event; 0 when there is none.
pub async fn head(conn: &mut SqliteConnection) -> Result<i64, StoreError> {
    Ok(sqlx::query("SELECT COALESCE(MAX(sequence), 0) FROM events")
        .fetch_one(conn)
        .await?
        .try_get(0)?)
}

/// Appends `events` in order and returns the sequence of the last one.
pub(super) async fn append(
    conn: &mut SqliteConnection,
    workspace_id: WorkspaceId,
    conversation_id: &str,
    events: &[NewEvent],
) -> Result<Option<i64>, StoreError> {
    if events.is_empty() {
        return Ok(None);
    }
    let payloads = events
        .iter()
        .map(|e| serde_json::to_string(&e.payload))
        .collect::<Result<Vec<_>, _>>()?;
    let mut query = QueryBuilder::<Sqlite>::new(
        "INSERT INTO events (event_id, workspace_id, conversation_id, kind, audience, create_time, payload) ",
    );
    query.push_values(events.iter().zip(&payloads), |mut row, (e, payload)| {
        row.push_bind(e.event_id.as_str())
            .push_bind(workspace_id.0)
            .push_bind(conversation_id)
            .push_bind(e.payload.kind())
            .push_bind(e.payload.audience().as_str())
            .push_bind(e.create_time.0)
            .push_bind(payload.as_str());
    });
    // One statement inserts the rows in order, so their sequences are
    // consecutive and the last is the largest.
    query.push(" RETURNING sequence");
    let rows = query.build().fetch_all(conn).await?;
    let mut last = None;
    for row in rows {
        let sequence: i64 = row.try_get(0)?;
        last = Some(last.map_or(sequence, |l: i64| l.max(sequence)));
    }
    Ok(last)
}
