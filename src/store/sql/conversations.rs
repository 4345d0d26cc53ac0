//! Conversations: read one, list a page, read a batch's, write a batch's.

use sqlx::{QueryBuilder, Row};

use super::{Conn, Db, DbRow, rows::Insert};
use crate::{
    domain::{
        Conversation, Micros, Status, WorkspaceId,
        message::stored_agent,
        values::{ConversationId, VisitorId},
    },
    store::{
        StoreError, micros,
        model::{AssigneeFilter, DueTimer, ListCursor, ListFilter},
        rows_per_statement,
    },
};

const COLUMNS: &str = "conversation_id, workspace_id, visitor_id, status, assignee_agent_id, \
     assignee_display_name, assignee_channel, create_time, update_time, status_change_time, \
     close_time, version, message_count, everyone_message_count, flow_run, snooze_end_time";

fn from_row(row: &DbRow) -> Result<Conversation, StoreError> {
    let status: String = row.try_get("status")?;
    let assignee = match row.try_get::<Option<String>, _>("assignee_agent_id")? {
        Some(agent_id) => Some(stored_agent(
            agent_id,
            row.try_get::<Option<String>, _>("assignee_display_name")?
                .unwrap_or_default(),
            &row.try_get::<Option<String>, _>("assignee_channel")?
                .unwrap_or_default(),
        )),
        None => None,
    };
    Ok(Conversation {
        id: ConversationId::from_trusted(row.try_get("conversation_id")?),
        workspace_id: WorkspaceId(row.try_get("workspace_id")?),
        visitor_id: VisitorId::from_trusted(row.try_get("visitor_id")?),
        status: Status::from_stored(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown status {status:?}")))?,
        assignee,
        create_time: Micros(row.try_get("create_time")?),
        update_time: Micros(row.try_get("update_time")?),
        status_change_time: Micros(row.try_get("status_change_time")?),
        close_time: micros(row.try_get("close_time")?),
        version: row.try_get("version")?,
        message_count: row.try_get("message_count")?,
        everyone_message_count: row.try_get("everyone_message_count")?,
        flow: row
            .try_get::<Option<String>, _>("flow_run")?
            .map(|json| serde_json::from_str(&json))
            .transpose()?,
        snooze_end_time: micros(row.try_get("snooze_end_time")?),
    })
}

/// The conversation with this id in this workspace; `None` when there is
/// none (including when it belongs to another workspace).
pub async fn get(
    conn: &mut Conn,
    workspace_id: WorkspaceId,
    id: &ConversationId,
) -> Result<Option<Conversation>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM conversations WHERE workspace_id = $1 AND conversation_id = $2"
    );
    let row = sqlx::query(&sql)
        .bind(workspace_id.0)
        .bind(id.as_str())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Up to `limit` conversations matching `filter`, newest update first, then by
/// id, strictly after `cursor`.
pub async fn list(
    conn: &mut Conn,
    workspace_id: WorkspaceId,
    filter: &ListFilter,
    cursor: Option<&ListCursor>,
    limit: i64,
) -> Result<Vec<Conversation>, StoreError> {
    let mut query = QueryBuilder::<Db>::new(format!(
        "SELECT {COLUMNS} FROM conversations WHERE workspace_id = "
    ));
    query.push_bind(workspace_id.0);
    if !filter.statuses.is_empty() {
        query.push(" AND status IN (");
        let mut list = query.separated(", ");
        for status in &filter.statuses {
            list.push_bind(status.as_str());
        }
        query.push(")");
    }
    push_scope(&mut query, filter);
    if let Some(cursor) = cursor {
        query
            .push(" AND (update_time, conversation_id) < (")
            .push_bind(cursor.update_time.0)
            .push(", ")
            .push_bind(cursor.conversation_id.clone())
            .push(")");
    }
    query
        .push(" ORDER BY update_time DESC, conversation_id DESC LIMIT ")
        .push_bind(limit);
    let rows = query.build().fetch_all(conn).await?;
    rows.iter().map(from_row).collect()
}

/// The filter's assignee and visitor conditions.
fn push_scope(query: &mut QueryBuilder<'_, Db>, filter: &ListFilter) {
    match &filter.assignee {
        AssigneeFilter::Any => {}
        AssigneeFilter::Agent(agent_id) => {
            query
                .push(" AND assignee_agent_id = ")
                .push_bind(agent_id.as_str().to_owned());
        }
        AssigneeFilter::Unassigned => {
            query.push(" AND assignee_agent_id IS NULL");
        }
    }
    if let Some(visitor_id) = &filter.visitor_id {
        query
            .push(" AND visitor_id = ")
            .push_bind(visitor_id.as_str().to_owned());
    }
}

/// The conversations of the filter's assignee and visitor per status (its
/// statuses aside), in [`Status::ALL`] order: "my Open / Pending / Closed".
pub async fn scoped_counts(
    conn: &mut Conn,
    workspace_id: WorkspaceId,
    filter: &ListFilter,
) -> Result<[i64; 3], StoreError> {
    let mut query = QueryBuilder::<Db>::new(
        "SELECT status, COUNT(*) AS n FROM conversations WHERE workspace_id = ",
    );
    query.push_bind(workspace_id.0);
    push_scope(&mut query, filter);
    query.push(" GROUP BY status");
    let mut counts = [0; 3];
    for row in query.build().fetch_all(conn).await? {
        let status: String = row.try_get("status")?;
        let status = Status::from_stored(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown status {status:?}")))?;
        counts[status.index()] = row.try_get("n")?;
    }
    Ok(counts)
}

/// Whether any conversation's timer is due at `now` and unclaimed: the
/// question [`claim_due`] would act on, asked without a write.
pub async fn any_due(conn: &mut Conn, now: Micros) -> Result<bool, StoreError> {
    let due: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM conversations \
         WHERE due_time <= $1 AND (timer_claim_until IS NULL OR timer_claim_until <= $1))",
    )
    .bind(now.0)
    .fetch_one(conn)
    .await?;
    Ok(due)
}

/// Claims up to `limit` conversations whose timer is due at `now` and not
/// claimed by a server already, until `until`: one statement. On PostgreSQL
/// rows another transaction holds are skipped, not waited for, so servers
/// polling together claim different rows.
pub async fn claim_due(
    conn: &mut Conn,
    now: Micros,
    until: Micros,
    limit: i64,
) -> Result<Vec<DueTimer>, StoreError> {
    let sql = format!(
        "UPDATE conversations SET timer_claim_until = $1 \
         WHERE (workspace_id, conversation_id) IN (\
             SELECT workspace_id, conversation_id FROM conversations \
             WHERE due_time <= $2 AND (timer_claim_until IS NULL OR timer_claim_until <= $2) \
             ORDER BY due_time LIMIT $3{}) \
         RETURNING workspace_id, conversation_id",
        super::dialect::SKIP_LOCKED
    );
    let rows = sqlx::query(&sql)
        .bind(until.0)
        .bind(now.0)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(DueTimer {
                workspace_id: WorkspaceId(row.try_get("workspace_id")?),
                conversation_id: ConversationId::from_trusted(row.try_get("conversation_id")?),
            })
        })
        .collect()
}

/// The rows that write `conversations` (new or changed): an insert of
/// each row that replaces the stored row of a conversation that exists. Only a batch calls it, inside its transaction, after reading
/// those rows in the same transaction.
///
/// Each row is written with its due time (`due_times`, in the same order)
/// and with no timer claim: a change releases a claim, and the timer it
/// leaves is judged afresh.
pub fn upsert<'a>(
    conversations: &'a [Conversation],
    due_times: &[Option<Micros>],
) -> Result<Insert<'a>, StoreError> {
    if due_times.len() != conversations.len() {
        return Err(StoreError::Corrupt(
            "a due time for each conversation written".into(),
        ));
    }
    let mut rows = Vec::with_capacity(conversations.len());
    for (c, due) in conversations.iter().zip(due_times) {
        rows.push([
            c.id.as_str().into(),
            c.workspace_id.0.into(),
            c.visitor_id.as_str().into(),
            c.status.as_str().into(),
            c.assignee.as_ref().map(|a| a.agent_id.as_str()).into(),
            c.assignee.as_ref().map(|a| a.display_name.as_str()).into(),
            c.assignee.as_ref().map(|a| a.channel.as_str()).into(),
            c.create_time.0.into(),
            c.update_time.0.into(),
            c.status_change_time.0.into(),
            c.close_time.map(|t| t.0).into(),
            c.version.into(),
            c.message_count.into(),
            c.everyone_message_count.into(),
            flow_json(c)?.into(),
            c.snooze_end_time.map(|t| t.0).into(),
            due.map(|t| t.0).into(),
            None::<i64>.into(),
        ]);
    }
    let head = format!("INSERT INTO conversations ({COLUMNS}, due_time, timer_claim_until) ");
    Ok(Insert::new("conversations", head, rows).with_tail(format!(
            " ON CONFLICT ({}) DO UPDATE SET status = excluded.status, \
             assignee_agent_id = excluded.assignee_agent_id, \
             assignee_display_name = excluded.assignee_display_name, \
             assignee_channel = excluded.assignee_channel, update_time = excluded.update_time, \
             status_change_time = excluded.status_change_time, close_time = excluded.close_time, \
             version = excluded.version, message_count = excluded.message_count, \
             everyone_message_count = excluded.everyone_message_count, flow_run = excluded.flow_run, \
             snooze_end_time = excluded.snooze_end_time, due_time = excluded.due_time, \
             timer_claim_until = NULL",
            super::dialect::CONVERSATION_KEY
        )))
}

/// The conversations with these ids in these workspaces, one statement per
/// chunk. A row matches one of the workspaces, not necessarily the one its
/// caller named: the caller checks the pair.
pub async fn get_many(
    conn: &mut Conn,
    ids: &[(WorkspaceId, &ConversationId)],
) -> Result<Vec<Conversation>, StoreError> {
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(rows_per_statement(2)) {
        let mut workspaces: Vec<i64> = chunk.iter().map(|(w, _)| w.0).collect();
        workspaces.sort_unstable();
        workspaces.dedup();
        let mut query = QueryBuilder::<Db>::new(format!(
            "SELECT {COLUMNS} FROM conversations WHERE {} IN (",
            super::dialect::WORKSPACE_OF_LISTED_IDS
        ));
        let mut list = query.separated(", ");
        for workspace in workspaces {
            list.push_bind(workspace);
        }
        query.push(") AND conversation_id IN (");
        let mut list = query.separated(", ");
        for (_, id) in chunk {
            list.push_bind(id.as_str());
        }
        query.push(")");
        for row in query.build().fetch_all(&mut *conn).await? {
            found.push(from_row(&row)?);
        }
    }
    Ok(found)
}

/// The flow run as stored: JSON of the domain's FlowRun, or NULL.
fn flow_json(c: &Conversation) -> Result<Option<String>, StoreError> {
    Ok(c.flow.as_ref().map(serde_json::to_string).transpose()?)
}
