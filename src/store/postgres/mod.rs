//! The PostgreSQL backend: one database shared by any number of servers.
//!
//! Nothing a server remembers decides anything: every batch locks its
//! workspaces' counter rows first and then reads conversations and request
//! ids as the database holds them, so etag checks, request-id replays and
//! status transitions are decided against the one truth, and sequences are
//! handed out in commit order (see [`batch`]). Reads of several statements
//! run in one REPEATABLE READ snapshot. Migrations run under sqlx's advisory
//! lock, so servers that start together migrate once.

#[path = "../sql/batch.rs"]
pub mod batch;
#[path = "../sql/conversations.rs"]
mod conversations;
#[path = "../sql/copy.rs"]
pub mod copy;
#[path = "../sql/counters.rs"]
mod counters;
#[path = "../sql/events.rs"]
mod events;
#[path = "../sql/flows.rs"]
mod flows;
#[path = "../sql/idempotency.rs"]
mod idempotency;
#[path = "../sql/keys.rs"]
mod keys;
#[path = "../sql/messages.rs"]
mod messages;
#[path = "../sql/operations.rs"]
mod operations;
#[path = "../sql/rows.rs"]
mod rows;
#[path = "../sql/sessions.rs"]
mod sessions;
#[path = "../sql/settings.rs"]
mod settings;

mod notify;

use std::{str::FromStr, time::Duration};

use sqlx::{
    ConnectOptions, Connection, Transaction,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
};
use tokio::sync::mpsc;

use super::{
    CommitNotice, StoreError,
    model::{Tally, Writes},
};
use crate::domain::{Conversation, WorkspaceId, values::ConversationId};

type Db = sqlx::Postgres;
type Conn = sqlx::PgConnection;
type DbRow = sqlx::postgres::PgRow;

/// How the batch connection begins, writes and commits: through sqlx's
/// transaction manager.
mod batch_conn {
    use std::borrow::Cow;

    use sqlx::{Database, QueryBuilder, TransactionManager};

    use super::{
        Conn, Db,
        batch::inserts,
        rows::{Insert, Value},
    };
    use crate::store::{StoreError, model::Writes};

    pub type WriterConn = Conn;

    pub fn wrap(conn: Conn) -> WriterConn {
        conn
    }

    pub fn conn(conn: &mut WriterConn) -> &mut Conn {
        conn
    }

    pub fn unwrap(conn: WriterConn) -> Conn {
        conn
    }

    pub async fn begin(conn: &mut WriterConn) -> Result<(), StoreError> {
        <Db as Database>::TransactionManager::begin(
            conn,
            super::dialect::BEGIN_BATCH.map(Cow::Borrowed),
        )
        .await?;
        Ok(())
    }

    /// Writes `writes` in the transaction [`begin`] opened, and commits.
    pub async fn commit(conn: &mut WriterConn, writes: &Writes) -> Result<(), StoreError> {
        for insert in inserts(writes)? {
            execute(conn, &insert).await?;
        }
        <Db as Database>::TransactionManager::commit(conn).await?;
        Ok(())
    }

    /// Begins, writes `writes` and commits.
    pub async fn write_alone(
        conn: &mut WriterConn,
        _: &super::Backend,
        writes: &Writes,
    ) -> Result<(), StoreError> {
        begin(conn).await?;
        commit(conn, writes).await
    }

    /// Runs `insert` through sqlx, a statement per chunk of rows.
    pub async fn execute(conn: &mut Conn, insert: &Insert<'_>) -> Result<(), StoreError> {
        for statement in insert.statements() {
            let mut query = QueryBuilder::<Db>::new(&*insert.head);
            query.push_values(statement.chunks(insert.columns), |mut row, values| {
                for value in values {
                    match value {
                        Value::Int(v) => row.push_bind(*v),
                        Value::Text(v) => row.push_bind(v.as_deref()),
                        Value::Blob(v) => row.push_bind(*v),
                    };
                }
            });
            query.push(&insert.tail);
            query.build().execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// Where PostgreSQL's SQL differs from SQLite's.
mod dialect {
    /// The primary key of `conversations`, as `ON CONFLICT` names it.
    pub const CONVERSATION_KEY: &str = "workspace_id, conversation_id";
    /// PostgreSQL picks the conversation index from its statistics.
    pub const EVENTS_OF_A_CONVERSATION: &str = "events";
    /// How a batch begins: a plain BEGIN (its counter rows are locked as
    /// it reads them).
    pub const BEGIN_BATCH: Option<&str> = None;
    /// A text column as a JSON string: opening and closing.
    pub const JSON_STRING: (&str, &str) = ("to_json(", ")::text");
    /// The aggregate that joins texts with a separator.
    pub const AGGREGATE_TEXT: &str = "string_agg";
    /// The workspace column where conversations are read by a list of ids:
    /// the primary key's leading column.
    pub const WORKSPACE_OF_LISTED_IDS: &str = "workspace_id";
    /// Locks the selected rows until the transaction ends.
    pub const LOCK_ROWS: &str = " FOR UPDATE";
    /// Claiming due timers: rows another server's claim (or batch) holds
    /// are passed over, not waited for.
    pub const SKIP_LOCKED: &str = " FOR UPDATE SKIP LOCKED";
    /// Servers starting together on an empty database: the first creates
    /// `default`, the others wait and then find it.
    pub const BOOTSTRAP_LOCK: &[&str] = &["LOCK TABLE workspaces IN SHARE ROW EXCLUSIVE MODE"];
    /// After a copy: new workspaces get ids after the copied ones.
    pub const AFTER_COPY: &[&str] = &[
        "SELECT setval(pg_get_serial_sequence('workspaces', 'workspace_id'), \
         COALESCE((SELECT MAX(workspace_id) FROM workspaces), 0) + 1, false)",
    ];
}

/// The PostgreSQL store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Backend {
    batch: batch::WriterConnection,
    admin: PgPool,
    reader: PgPool,
    feed: PgPool,
    /// Commit notices, sent and heard.
    notify: PgPool,
    /// The heads each committed batch reached, for the other servers.
    heads: mpsc::Sender<(WorkspaceId, i64)>,
}

impl Backend {
    /// Connects to the database at `url` and applies the migrations. A
    /// database that cannot be reached fails at once, naming it (redacted).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        let unreachable = |source| StoreError::Unreachable {
            database: super::redacted(url),
            source,
        };
        let mut first = options.connect().await.map_err(unreachable)?;
        sqlx::migrate!("./migrations/postgres")
            .run_direct(&mut first)
            .await?;
        first.close().await.map_err(unreachable)?;
        let pool = |connections: u32| {
            PgPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(Duration::from_secs(30))
                .connect_lazy_with(options.clone())
        };
        let admin = pool(2);
        let notify = pool(2);
        Ok(Self {
            batch: batch::WriterConnection::new(pool(1)),
            admin,
            reader: pool(8),
            feed: pool(4),
            heads: notify::start_announcer(notify.clone()),
            notify,
        })
    }

    async fn read(&self) -> Result<super::Held<Db>, StoreError> {
        super::Held::take("read", &self.reader).await
    }

    async fn feed_read(&self) -> Result<super::Held<Db>, StoreError> {
        super::Held::take("feed", &self.feed).await
    }

    /// A read transaction: every read in it sees one snapshot.
    pub(super) async fn begin_read(&self) -> Result<Transaction<'static, Db>, StoreError> {
        super::acquired(
            "read",
            self.reader
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
        )
        .await
    }

    /// An administrative write transaction (keys, workspaces, flows, purges).
    pub(super) async fn begin_write(&self) -> Result<Transaction<'static, Db>, StoreError> {
        super::acquired("admin", self.admin.begin()).await
    }

    /// Sets the pool gauges.
    pub fn observe(&self) {
        self.batch.observe("batch");
        for (name, pool) in [
            ("admin", &self.admin),
            ("read", &self.reader),
            ("feed", &self.feed),
            ("notify", &self.notify),
        ] {
            super::observe_pool(name, pool);
        }
    }

    /// Commits an administrative write, in a task of its own (see the
    /// SQLite backend).
    async fn commit(&self, tx: Transaction<'static, Db>) -> Result<(), StoreError> {
        tokio::spawn(async move { tx.commit().await })
            .await
            .map_err(|e| StoreError::Corrupt(format!("commit task failed: {e}")))??;
        Ok(())
    }

    /// Starts the write transaction of a batch of mutations.
    pub async fn begin_batch(&self) -> Result<batch::BatchTx, StoreError> {
        self.batch.begin(self.clone()).await
    }

    /// Writes and commits a batch decided outside its transaction.
    pub async fn commit_batch(&self, writes: &Writes) -> Result<(), StoreError> {
        self.batch.write_alone(self, writes).await
    }

    /// Other servers write too: nothing is remembered.
    fn remembered_conversation(&self, _id: &ConversationId) -> Option<Conversation> {
        None
    }

    fn remembered_tally(&self, _workspace: WorkspaceId) -> Option<Tally> {
        None
    }

    /// Tells the other servers how far each workspace of the batch got,
    /// after the commit and off the writer's path.
    fn committed(&self, writes: &Writes) {
        for (workspace, tally) in &writes.tallies {
            // A full queue loses nothing: the servers also poll the heads.
            let _ = self.heads.try_send((*workspace, tally.event_head));
        }
    }

    /// Notices of other servers' commits.
    pub fn watch_commits(&self) -> mpsc::Receiver<CommitNotice> {
        notify::start_listener(self.notify.clone())
    }

    pub fn forget(&self) {}

    /// One round trip on the admin pool (the least busy): whether the
    /// database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.admin).await?;
        Ok(())
    }

    /// The settings in force, as the server reports them, for the start-up
    /// log line.
    pub async fn in_force(&self) -> Result<String, StoreError> {
        let mut conn = self.admin.acquire().await?;
        let (version, commit, isolation): (String, String, String) = sqlx::query_as(
            "SELECT current_setting('server_version'), current_setting('synchronous_commit'), \
             current_setting('default_transaction_isolation')",
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok(format!(
            "PostgreSQL {version}: synchronous_commit={commit} default_transaction_isolation={isolation}; \
             pools: {} batch, {} admin, {} read, {} feed, {} notify",
            self.batch.pool().options().get_max_connections(),
            self.admin.options().get_max_connections(),
            self.reader.options().get_max_connections(),
            self.feed.options().get_max_connections(),
            self.notify.options().get_max_connections(),
        ))
    }

    /// PostgreSQL checkpoints on its own.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Closes every pool.
    pub async fn close(&self) {
        self.notify.close().await;
        self.feed.close().await;
        self.reader.close().await;
        self.admin.close().await;
        self.batch.close().await;
    }
}
