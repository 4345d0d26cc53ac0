//! All SQL lives here, and nothing else does. Functions take a connection or
//! a transaction, so a caller can put several of them in one transaction.
//!
//! The contract the layers above rely on is small:
//! - [`batch`]: the write path of mutations. One transaction loads what a
//!   batch of commands needs, then writes every decided change (rows,
//!   per-workspace event sequences, counters, idempotency records) with a few
//!   multi-row statements, then commits once. A second backend implements
//!   the same [`batch::BatchTx`] calls.
//! - reads grouped by the question they answer: [`conversations`],
//!   [`messages`], [`events`], [`flows`], [`keys`].
//!
//! SQLite runs in WAL mode with four pools, so that no kind of work queues
//! behind another: one connection for the group-commit writer (see
//! `crate::writer`), one for administrative writes (keys, flows, purges),
//! several for unary reads, and two for event-feed catch-up, so a thousand
//! reconnecting streams never delay a `GetConversation`. Write transactions
//! start with `BEGIN IMMEDIATE`, taking the write lock up front, so a
//! transaction never fails halfway through on a lock upgrade (another
//! process, such as the CLI, may write keys and flows to the same file).

pub mod batch;
pub mod conversations;
pub mod counters;
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

/// The database: its pools, each for one kind of work.
#[derive(Debug, Clone)]
pub struct Store {
    batch: SqlitePool,
    admin: SqlitePool,
    reader: SqlitePool,
    feed: SqlitePool,
}

impl Store {
    /// Opens (creating if missing) the SQLite file at `path` and applies the
    /// embedded migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = connect_options(path)?;
        let pool = |connections: u32, options: SqliteConnectOptions| {
            SqlitePoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(Duration::from_secs(30))
                .connect_lazy_with(options)
        };
        let admin = pool(1, options.clone());
        sqlx::migrate!("./migrations").run(&admin).await?;
        // The batch writer's commits never run a checkpoint themselves (a
        // checkpoint copies pages into the database file and syncs it, which
        // would stall every caller of that batch); `checkpoint` does it
        // beside them.
        let batch = pool(1, options.clone().pragma("wal_autocheckpoint", "0"));
        Ok(Self {
            batch,
            admin,
            reader: pool(4, options.clone()),
            feed: pool(2, options),
        })
    }

    /// Starts an administrative write transaction (keys, workspaces, flows,
    /// purges) holding SQLite's write lock. Mutations of conversations go
    /// through [`Store::begin_batch`] instead.
    pub async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        Ok(self.admin.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Starts the write transaction of a batch of mutations.
    pub async fn begin_batch(&self) -> Result<batch::BatchTx, StoreError> {
        Ok(batch::BatchTx::new(
            self.batch.begin_with("BEGIN IMMEDIATE").await?,
        ))
    }

    /// Starts a read transaction: every read in it sees one snapshot.
    pub async fn begin_read(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.reader.begin().await?)
    }

    /// A connection for a single read.
    pub async fn read(&self) -> Result<sqlx::pool::PoolConnection<Sqlite>, StoreError> {
        Ok(self.reader.acquire().await?)
    }

    /// A read transaction on the event feed's own connections.
    pub async fn begin_feed_read(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.feed.begin().await?)
    }

    /// Commits an administrative write. It runs in a task of its own, so a
    /// caller dropped mid-commit (a client that reset its call) cannot leave
    /// the connection halfway through its COMMIT.
    pub async fn commit(&self, tx: WriteTx) -> Result<(), StoreError> {
        tokio::spawn(async move { tx.commit().await })
            .await
            .map_err(|e| StoreError::Corrupt(format!("commit task failed: {e}")))??;
        Ok(())
    }

    /// Copies what the WAL holds into the database file as far as readers
    /// allow (SQLite's PASSIVE checkpoint, which never blocks a writer).
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&self.admin)
            .await?;
        Ok(())
    }

    /// Closes every pool; the last connection to close checkpoints the WAL.
    pub async fn close(&self) {
        self.feed.close().await;
        self.reader.close().await;
        self.admin.close().await;
        self.batch.close().await;
    }
}

/// How every connection to the database file is opened: WAL, FULL sync,
/// foreign keys, a 10 s busy timeout. Public so that baselines (the bench's
/// naive loop) measure SQLite with exactly these pragmas.
pub fn connect_options(path: &Path) -> Result<SqliteConnectOptions, StoreError> {
    Ok(SqliteConnectOptions::from_str("sqlite:")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: an acknowledged mutation survives a power cut, not only a
        // crash of this process.
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10)))
}

/// Rows of `columns` bound values that fit in one statement, under SQLite's
/// limit of 32,766 bound variables.
fn rows_per_statement(columns: usize) -> usize {
    32_000 / columns
}

/// Microseconds as stored, from an optional column.
fn micros(value: Option<i64>) -> Option<crate::domain::Micros> {
    value.map(crate::domain::Micros)
}
