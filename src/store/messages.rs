//! A conversation's thread.

use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, sqlite::SqliteRow};

use super::StoreError;
use crate::domain::{
    Audience, Author, Message, Micros,
    message::stored_agent,
    values::{ConversationId, MessageId, VisitorId},
};

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

fn author_from_row(row: &SqliteRow) -> Result<Author, StoreError> {
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

fn from_row(row: &SqliteRow) -> Result<Message, StoreError> {
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

/// Inserts messages, one statement per chunk of them.
pub(super) async fn insert_many(
    conn: &mut SqliteConnection,
    messages: &[&Message],
) -> Result<(), StoreError> {
    let contents = messages
        .iter()
        .map(|m| {
            let replies = (!m.quick_replies.is_empty())
                .then(|| serde_json::to_string(&m.quick_replies))
                .transpose()?;
            Ok::<_, serde_json::Error>((serde_json::to_string(&m.content)?, replies))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rows: Vec<_> = messages.iter().zip(&contents).collect();
    for chunk in rows.chunks(super::rows_per_statement(11)) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO messages (message_id, conversation_id, position, author_kind, author_id, \
             author_display_name, author_channel, audience, create_time, content, quick_replies) ",
        );
        query.push_values(chunk, |mut row, (m, (content, replies))| {
            let (kind, id, name, channel) = author_columns(&m.author);
            row.push_bind(m.id.as_str())
                .push_bind(m.conversation_id.as_str())
                .push_bind(m.position)
                .push_bind(kind)
                .push_bind(id)
                .push_bind(name)
                .push_bind(channel)
                .push_bind(m.audience.as_str())
                .push_bind(m.create_time.0)
                .push_bind(content.as_str())
                .push_bind(replies.as_deref());
        });
        query.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Up to `limit` messages of the thread after `after_position`, oldest first;
/// only AUDIENCE_EVERYONE ones when `everyone_only`.
pub async fn list(
    conn: &mut SqliteConnection,
    conversation_id: &ConversationId,
    everyone_only: bool,
    after_position: i64,
    limit: i64,
) -> Result<Vec<Message>, StoreError> {
    let rows = sqlx::query(
        "SELECT * FROM messages WHERE conversation_id = ? AND position > ? \
         AND (? = 0 OR audience = 'everyone') ORDER BY position LIMIT ?",
    )
    .bind(conversation_id.as_str())
    .bind(after_position)
    .bind(everyone_only)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}
