//! All SQL lives here, and nothing else does. Functions take a connection or
//! a transaction, so a caller can put several of them in one transaction.
//!
//! SQLite runs in WAL mode with two pools: one connection that writes, so
//! writers queue in-process instead of failing on SQLite's lock, and several
//! that read, which WAL lets run beside the writer. Write transactions start
//! with `BEGIN IMMEDIATE`, taking the write lock up front, so a transaction
//! never fails halfway through on a lock upgrade (another process, such as
//! the CLI, may write to the same file).

pub mod changes;
pub mod conversations;
pub mod events;
pub mod flows;
pub mod idempotency;
pub mod keys;
pub mod messages;

use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    Sqlite, Transaction,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};
use tokio::sync::watch;

/// A store failure. Its detail is for the log, never for a client.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite or the driver failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self::Corrupt(e.to_string())
    }
}

/// A write transaction.
pub type WriteTx = Transaction<'static, Sqlite>;

/// The database, and the live head of the event feed.
#[derive(Debug, Clone)]
pub struct Store {
    writer: SqlitePool,
    reader: SqlitePool,
    head: watch::Sender<i64>,
}

impl Store {
    /// Opens (creating if missing) the SQLite file at `path` and applies the
    /// embedded migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged mutation survives a power cut, not only a
            // crash of this process.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        let head = events::head(&mut *writer.acquire().await?).await?;
        let (head, _) = watch::channel(head);
        Ok(Self {
            writer,
            reader,
            head,
        })
    }

    /// Starts a write transaction holding SQLite's write lock.
    pub async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Starts a read transaction: every read in it sees one snapshot.
    pub async fn begin_read(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.reader.begin().await?)
    }

    /// A connection for a single read.
    pub async fn read(&self) -> Result<sqlx::pool::PoolConnection<Sqlite>, StoreError> {
        Ok(self.reader.acquire().await?)
    }

    /// Commits `tx`, then tells feed readers the new head. Publishing after the
    /// commit means a reader woken by it finds the rows there.
    ///
    /// Both happen in a task of their own: a caller dropped mid-commit (a
    /// client that reset its call or hit its deadline) must not leave a
    /// committed event unannounced, or open streams would not see it until
    /// the next commit.
    pub async fn commit(&self, tx: WriteTx, new_head: Option<i64>) -> Result<(), StoreError> {
        let head = self.head.clone();
        let committed = tokio::spawn(async move {
            tx.commit().await?;
            if let Some(sequence) = new_head {
                head.send_if_modified(|head| {
                    let advanced = sequence > *head;
                    if advanced {
                        *head = sequence;
                    }
                    advanced
                });
            }
            Ok::<_, StoreError>(())
        });
        committed
            .await
            .map_err(|e| StoreError::Corrupt(format!("commit task failed: {e}")))?
    }

    /// Watches the sequence of the newest committed event.
    pub fn subscribe_head(&self) -> watch::Receiver<i64> {
        self.head.subscribe()
    }

    /// Closes both pools, checkpointing the WAL.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// Microseconds as stored, from an optional column.
fn micros(value: Option<i64>) -> Option<crate::domain::Micros> {
    value.map(crate::domain::Micros)
}
