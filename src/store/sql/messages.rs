//! The thread: messages in order of their position in the conversation.

use sqlx::{QueryBuilder, Row};

use super::{Conn, Db, DbRow, rows::Insert};
use crate::{
    domain::{
        Audience, Author, Message, Micros, WorkspaceId,
        message::stored_agent,
        values::{ConversationId, MessageId, VisitorId},
    },
    store::StoreError,
};

/// How an author is stored: kind, id, display name, channel.
fn author_columns(author: &Author) -> (&'static str, &str, &str, &'static str) {
    let kind = match author {
        Author::Visitor { .. } => "visitor",
        Author::Agent(_) => "agent",
        Author::Bot => "bot",
        Author::System => "system",
    };
    let id = match author {
        Author::Visitor { visitor_id } => visitor_id.as_str(),
        Author::Agent(agent) => agent.agent_id.as_str(),
        Author::Bot | Author::System => "",
    };
    (kind, id, author.display_name(), author.channel().as_str())
}

fn author_from_row(row: &DbRow) -> Result<Author, StoreError> {
    let kind: String = row.try_get("author_kind")?;
    let id: String = row.try_get("author_id")?;
    Ok(match kind.as_str() {
        "visitor" => Author::Visitor {
            visitor_id: VisitorId::from_trusted(id),
        },
        "agent" => Author::Agent(stored_agent(
            id,
            row.try_get("author_display_name")?,
            &row.try_get::<String, _>("author_channel")?,
        )),
        "bot" => Author::Bot,
        "system" => Author::System,
        other => {
            return Err(StoreError::Corrupt(format!(
                "unknown author kind {other:?}"
            )));
        }
    })
}

fn from_row(row: &DbRow) -> Result<Message, StoreError> {
    Ok(Message {
        id: MessageId::from_trusted(row.try_get("message_id")?),
        conversation_id: ConversationId::from_trusted(row.try_get("conversation_id")?),
        position: row.try_get("position")?,
        author: author_from_row(row)?,
        audience: Audience::from_stored(&row.try_get::<String, _>("audience")?),
        create_time: Micros(row.try_get("create_time")?),
        content: serde_json::from_str(&row.try_get::<String, _>("content")?)?,
        quick_replies: row
            .try_get::<Option<String>, _>("quick_replies")?
            .map(|json| serde_json::from_str(&json))
            .transpose()?
            .unwrap_or_default(),
    })
}

/// The rows that append `messages` (each with its conversation's
/// workspace).
pub fn insert<'a>(messages: &[(WorkspaceId, &'a Message)]) -> Result<Insert<'a>, StoreError> {
    let mut rows = Vec::with_capacity(messages.len());
    for (workspace, m) in messages {
        let replies = (!m.quick_replies.is_empty())
            .then(|| serde_json::to_string(&m.quick_replies))
            .transpose()?;
        let (kind, id, name, channel) = author_columns(&m.author);
        rows.push([
            workspace.0.into(),
            m.id.as_str().into(),
            m.conversation_id.as_str().into(),
            m.position.into(),
            kind.into(),
            id.into(),
            name.into(),
            channel.into(),
            m.audience.as_str().into(),
            m.create_time.0.into(),
            serde_json::to_string(&m.content)?.into(),
            replies.into(),
        ]);
    }
    Ok(Insert::new(
        "messages",
        "INSERT INTO messages (workspace_id, message_id, conversation_id, position, author_kind, \
         author_id, author_display_name, author_channel, audience, create_time, content, \
         quick_replies) ",
        rows,
    ))
}

/// Up to `limit` messages of the conversation after `after_position`, oldest
/// first; only those for everyone when `everyone_only`.
pub async fn list(
    conn: &mut Conn,
    workspace_id: WorkspaceId,
    conversation_id: &ConversationId,
    everyone_only: bool,
    after_position: i64,
    limit: i64,
) -> Result<Vec<Message>, StoreError> {
    let mut query = QueryBuilder::<Db>::new("SELECT * FROM messages WHERE workspace_id = ");
    query
        .push_bind(workspace_id.0)
        .push(" AND conversation_id = ")
        .push_bind(conversation_id.as_str())
        .push(" AND position > ")
        .push_bind(after_position);
    if everyone_only {
        query.push(" AND audience = 'everyone'");
    }
    query.push(" ORDER BY position LIMIT ").push_bind(limit);
    let rows = query.build().fetch_all(conn).await?;
    rows.iter().map(from_row).collect()
}
