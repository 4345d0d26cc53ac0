//! The SQLite backend: one file, served by one server.
//!
//! WAL mode with four pools, so that no kind of work queues behind another:
//! one connection for the group-commit writer, one for administrative writes
//! (keys, flows, purges), several for unary reads, and three for event-feed
//! catch-up, so a thousand reconnecting streams never delay a
//! `GetConversation`. Write transactions start with `BEGIN IMMEDIATE`,
//! taking the write lock up front, so a transaction never fails halfway
//! through on a lock upgrade (another process, such as the command line, may
//! write keys and flows to the same file).
//!
//! A serving store holds the file's server lock ([`lock`]), which is what
//! lets it remember its own batches' writes ([`cache`]): nobody else writes
//! conversations or counters, so a batch reads them from memory.

mod cache;
mod lock;
mod raw;

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

use std::{
    path::Path,
    str::FromStr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sqlx::{
    Row, Transaction,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};

use super::{
    StoreError,
    model::{Tally, Writes},
};
use crate::domain::{Conversation, WorkspaceId, values::ConversationId};

/// WAL frames (pages) past which the batch writer is asked to start the
/// WAL over: 256 MiB at 4 KiB pages. Each start-over pauses batches for the
/// writer's own checkpoint (a delivery p99 of 36 ms against 19 ms in a
/// quick bench when it came every 16 MiB), so it is rare under load: every
/// few seconds at the bench's write rate, never below it. The file keeps
/// its size and is overwritten from its start, which costs less than
/// growing it.
const WAL_RESTART_FRAMES: i64 = 65_536;
/// Frames at most that the batch writer is left to copy before it starts
/// the WAL over.
const WAL_LEFT_TO_THE_WRITER: i64 = 512;
/// Checkpoints in a row, at most, to bring what is left down to that.
const CATCH_UP_CHECKPOINTS: usize = 4;

type Db = sqlx::Sqlite;
type Conn = sqlx::SqliteConnection;
type DbRow = sqlx::sqlite::SqliteRow;

/// Where SQLite's SQL differs from PostgreSQL's.
mod dialect {
    /// The primary key of `conversations`, as `ON CONFLICT` names it.
    pub const CONVERSATION_KEY: &str = "conversation_id";
    /// A conversation's events are few among its workspace's: read them by
    /// the conversation's index, which SQLite would otherwise pass over for
    /// the primary key's range (it has no statistics to know better).
    pub const EVENTS_OF_A_CONVERSATION: &str = "events INDEXED BY events_by_conversation";
    /// A text column as a JSON string: opening and closing.
    pub const JSON_STRING: (&str, &str) = ("json_quote(", ")");
    /// The aggregate that joins texts with a separator.
    pub const AGGREGATE_TEXT: &str = "group_concat";
    /// The workspace column where conversations are read by a list of ids:
    /// the unary `+` keeps SQLite (which has no statistics) from scanning a
    /// whole workspace by its index instead of looking each id up by the
    /// primary key.
    pub const WORKSPACE_OF_LISTED_IDS: &str = "+workspace_id";
    /// Row locks: none, the transaction holds the file's write lock.
    pub const LOCK_ROWS: &str = "";
    /// Claiming due timers: the transaction holds the file's write lock.
    pub const SKIP_LOCKED: &str = "";
    /// Statements that make bootstrapping exclusive: none beyond the write
    /// lock.
    pub const BOOTSTRAP_LOCK: &[&str] = &[];
    /// After a copy: nothing to do.
    pub const AFTER_COPY: &[&str] = &[];
}

/// How the batch connection begins, writes and commits: with SQLite's own
/// statements on the calling thread ([`raw`]). A batch begins with the
/// file's write lock taken up front (`BEGIN IMMEDIATE`), so it never fails
/// halfway on a lock upgrade. sqlx does not track these transactions: they
/// begin and end outside its transaction manager.
mod batch_conn {
    use super::{Conn, batch::inserts, raw::BatchConnection};
    use crate::store::{StoreError, model::Writes};

    pub type WriterConn = BatchConnection;

    pub fn wrap(conn: Conn) -> WriterConn {
        BatchConnection::new(conn)
    }

    pub fn conn(conn: &mut WriterConn) -> &mut Conn {
        conn.conn()
    }

    pub fn unwrap(conn: WriterConn) -> Conn {
        conn.into_conn()
    }

    pub async fn begin(conn: &mut WriterConn) -> Result<(), StoreError> {
        conn.execute(c"BEGIN IMMEDIATE").await
    }

    /// Writes `writes` in the transaction [`begin`] opened, and commits.
    pub async fn commit(conn: &mut WriterConn, writes: &Writes) -> Result<(), StoreError> {
        conn.write_and_commit(false, &inserts(writes)?).await
    }

    /// Begins, writes `writes` and commits, on one thread without a pause;
    /// first checkpoints the WAL if the checkpointer asked for it (see
    /// [`super::Backend::checkpoint`]).
    pub async fn write_alone(
        conn: &mut WriterConn,
        backend: &super::Backend,
        writes: &Writes,
    ) -> Result<(), StoreError> {
        let restart = backend
            .restart_wal
            .swap(false, std::sync::atomic::Ordering::Relaxed);
        if restart && let Err(error) = conn.execute(c"PRAGMA wal_checkpoint(PASSIVE)").await {
            tracing::warn!(%error, "the batch connection's checkpoint failed");
        }
        conn.write_and_commit(true, &inserts(writes)?).await
    }
}

/// The SQLite store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Backend {
    batch: batch::WriterConnection,
    ahead: SqlitePool,
    admin: SqlitePool,
    /// The WAL checkpoints' own connection. On `admin` they queued behind
    /// writes waiting for the write lock (for seconds under load, which let
    /// the WAL grow), and a long checkpoint held up those writes in turn.
    checkpointer: SqlitePool,
    reader: SqlitePool,
    feed: SqlitePool,
    /// Set by a checkpoint that found the WAL long: the batch writer then
    /// checkpoints the last frames itself before its next batch, so that
    /// the batch can start the WAL over (see [`Self::checkpoint`]).
    restart_wal: Arc<AtomicBool>,
    /// [`WAL_RESTART_FRAMES`], but for tests.
    wal_restart_frames: i64,
    /// What the batches wrote, while this store holds the server lock.
    cache: Option<Arc<Mutex<cache::Cache>>>,
    /// The file's server lock, while serving; [`Self::close`] lets it go at
    /// once, whatever clones of the store tasks still hold.
    lock: Option<Arc<Mutex<Option<lock::ServerLock>>>>,
    /// The database file.
    path: Arc<Path>,
}

impl Backend {
    /// Opens (creating if missing) the file at `path` and applies the
    /// migrations. `serve` takes the file's server lock first.
    pub async fn open(path: &Path, serve: bool) -> Result<Self, StoreError> {
        let directory = match path.parent() {
            Some(parent) if parent.as_os_str().is_empty() => Path::new("."),
            Some(parent) => parent,
            None => Path::new("/"),
        };
        if !directory.is_dir() {
            return Err(StoreError::NoSuchDirectory {
                database: path.display().to_string(),
                directory: directory.display().to_string(),
            });
        }
        let lock = serve.then(|| lock::ServerLock::acquire(path)).transpose()?;
        let options = connect_options(path)?;
        let pool = |connections: u32, options: SqliteConnectOptions| {
            SqlitePoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(Duration::from_secs(30))
                // A connection to a local file does not go stale; the
                // check would cost a round trip to its worker per acquire.
                .test_before_acquire(false)
                .connect_lazy_with(options)
        };
        let admin = pool(1, options.clone());
        sqlx::migrate!("./migrations/sqlite").run(&admin).await?;
        // The batch writer's commits never run a checkpoint themselves (a
        // checkpoint copies pages into the database file and syncs it, which
        // would stall every caller of that batch); `checkpoint` does it
        // beside them. Its page cache (16 MiB, against SQLite's 2 MiB
        // default) holds the index pages that batches touch all over a
        // workspace; a page it lacks comes from the OS's cache. Bigger is
        // slower on a file under 1 GiB: a b-tree split parks a page past
        // the file's end, and then every COMMIT scans the cache's whole
        // hash table to drop it (`pcache1TruncateUnsafe`, 5% of the batch
        // thread at 64 MiB). Its statement cache keeps a statement for each
        // row count of a multi-row write, so a batch of a size seen before
        // is not parsed again (`sqlite3_prepare_v3` was 8% of that thread).
        let batch = pool(
            1,
            options
                .clone()
                .pragma("wal_autocheckpoint", "0")
                .pragma("cache_size", "-16384")
                .statement_cache_capacity(1024)
                // A batch's multi-row statements each keep a statement
                // journal (to undo just that statement if it fails). Past
                // 64 KiB SQLite spills it to a temporary file, which was 6%
                // of the server's time under load; in memory it never is.
                // It is never part of durability: the WAL is.
                .pragma("temp_store", "memory"),
        );
        Ok(Self {
            batch: batch::WriterConnection::new(batch),
            ahead: pool(1, options.clone()),
            admin,
            checkpointer: pool(1, options.clone()),
            reader: pool(4, options.clone()),
            // A catch-up read is one row (the batch as one value, see
            // `events::read`), so sqlx's row channel never fills.
            feed: pool(3, options),
            restart_wal: Arc::default(),
            wal_restart_frames: WAL_RESTART_FRAMES,
            cache: lock.is_some().then(Default::default),
            lock: lock.map(|lock| Arc::new(Mutex::new(Some(lock)))),
            path: Arc::from(path),
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
        super::acquired("read", self.reader.begin()).await
    }

    /// An administrative write transaction (keys, workspaces, flows,
    /// purges), holding SQLite's write lock.
    pub(super) async fn begin_write(&self) -> Result<Transaction<'static, Db>, StoreError> {
        super::acquired("admin", self.admin.begin_with("BEGIN IMMEDIATE")).await
    }

    /// Sets the pool gauges and the sizes of the file and its WAL.
    pub fn observe(&self) {
        self.batch.observe("batch");
        for (name, pool) in [
            ("ahead", &self.ahead),
            ("admin", &self.admin),
            ("checkpoint", &self.checkpointer),
            ("read", &self.reader),
            ("feed", &self.feed),
        ] {
            super::observe_pool(name, pool);
        }
        let size = |path: &Path| std::fs::metadata(path).map_or(0.0, |m| m.len() as f64);
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        ::metrics::gauge!(crate::metrics::DB_FILE_BYTES).set(size(&self.path));
        ::metrics::gauge!(crate::metrics::DB_WAL_BYTES).set(size(Path::new(&wal)));
    }

    /// Commits an administrative write. It runs in a task of its own, so a
    /// caller dropped mid-commit (a client that reset its call) cannot leave
    /// the connection halfway through its COMMIT.
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

    /// Writes and commits a batch decided ahead (see [`AheadReads`]).
    pub async fn commit_batch(&self, writes: &Writes) -> Result<(), StoreError> {
        self.batch.write_alone(self, writes).await
    }

    /// A connection to read ahead of the batch in flight, on a serving
    /// store (see [`AheadReads`]); None on another.
    pub async fn read_ahead(&self) -> Result<Option<AheadReads>, StoreError> {
        if self.cache.is_none() {
            return Ok(None);
        }
        let conn = super::acquired("ahead", self.ahead.acquire()).await?;
        Ok(Some(AheadReads {
            conn,
            backend: self.clone(),
        }))
    }

    fn remembered_conversation(&self, id: &ConversationId) -> Option<Conversation> {
        self.cache.as_ref()?.lock().ok()?.conversation(id)
    }

    fn remembered_tally(&self, workspace: WorkspaceId) -> Option<Tally> {
        self.cache.as_ref()?.lock().ok()?.tally(workspace)
    }

    fn committed(&self, writes: &Writes) {
        if let Some(Ok(mut cache)) = self.cache.as_ref().map(|c| c.lock()) {
            cache.committed(&writes.conversations, &writes.tallies);
        }
    }

    pub fn forget(&self) {
        if let Some(Ok(mut cache)) = self.cache.as_ref().map(|c| c.lock()) {
            cache.clear();
        }
    }

    /// One round trip on a read connection: whether the database answers.
    /// Not on `admin`, whose writes wait for SQLite's write lock (for as
    /// long as the busy timeout while another process holds it, or while a
    /// busy writer keeps taking it): the file answering reads is the server
    /// being fit to serve.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&mut *self.read().await?)
            .await?;
        Ok(())
    }

    /// The settings in force on the batch connection, as SQLite reports
    /// them, for the start-up log line.
    pub async fn in_force(&self) -> Result<String, StoreError> {
        let mut conn = self.batch.pool().acquire().await?;
        let mut read = async |pragma: &str| -> Result<String, StoreError> {
            let row = sqlx::query(&format!("PRAGMA {pragma}"))
                .fetch_one(&mut *conn)
                .await?;
            Ok(match row.try_get::<String, _>(0) {
                Ok(text) => text,
                Err(_) => row.try_get::<i64, _>(0)?.to_string(),
            })
        };
        let journal = read("journal_mode").await?;
        let synchronous = match read("synchronous").await?.as_str() {
            "0" => "OFF".to_owned(),
            "1" => "NORMAL".to_owned(),
            "2" => "FULL".to_owned(),
            "3" => "EXTRA".to_owned(),
            other => other.to_owned(),
        };
        let busy = read("busy_timeout").await?;
        let cache = read("cache_size").await?;
        let foreign_keys = read("foreign_keys").await?;
        Ok(format!(
            "SQLite {}: journal_mode={journal} synchronous={synchronous} busy_timeout={busy}ms \
             foreign_keys={foreign_keys} cache_size={cache} (batch); pools: {} batch, {} admin, {} read, {} feed",
            sqlite_version(&mut conn).await?,
            self.batch.pool().options().get_max_connections(),
            self.admin.options().get_max_connections(),
            self.reader.options().get_max_connections(),
            self.feed.options().get_max_connections(),
        ))
    }

    /// Copies what the WAL holds into the database file as far as readers
    /// allow (SQLite's PASSIVE checkpoint, which never blocks a writer).
    ///
    /// SQLite starts the WAL over from its first frame only when a write
    /// transaction begins on a WAL that is wholly copied. Under a steady
    /// stream of batches this checkpoint never catches up with the last
    /// frame (more are written while it copies), so the WAL grew without
    /// bound: 2.2 GB in a 40 s bench, every frame appended past the end of
    /// the file (the kernel zeroing new pages was 15% of the commit
    /// thread). So once the WAL holds [`WAL_RESTART_FRAMES`], this
    /// checkpoint runs again until few frames are left to copy (each run
    /// copies what the one before left, written while it ran), then asks
    /// the batch writer to copy those few itself, between two batches; its
    /// next batch then starts the WAL over, unless a reader still reads
    /// from the WAL (then the next request tries again).
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        for _ in 0..CATCH_UP_CHECKPOINTS {
            let (_busy, frames, copied): (i64, i64, i64) =
                sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                    .fetch_one(&self.checkpointer)
                    .await?;
            if frames < self.wal_restart_frames {
                return Ok(());
            }
            if frames - copied <= WAL_LEFT_TO_THE_WRITER {
                self.restart_wal.store(true, Ordering::Relaxed);
                return Ok(());
            }
        }
        Ok(())
    }

    /// Closes every pool, the WAL copied into the file and emptied first.
    pub async fn close(&self) {
        self.feed.close().await;
        self.reader.close().await;
        self.batch.close().await;
        self.checkpointer.close().await;
        // SQLite's last connection to close would checkpoint the WAL too,
        // but sqlx may finish that close after `close` returns: a server
        // started at once on the same file then waited for it, past its
        // busy timeout after a large WAL (the bench, after seeding 1M
        // events: "database is locked"). Done here, it is done on return.
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.admin)
            .await
        {
            tracing::warn!(%error, "the last checkpoint before closing failed");
        }
        self.admin.close().await;
        // No connection is left: another server may have the file now,
        // even before the last clone of this store (in a task still
        // winding down) is dropped.
        if let Some(Ok(mut lock)) = self.lock.as_ref().map(|l| l.lock()) {
            lock.take();
        }
    }
}

/// What the writer reads for a batch it decides while the batch before it
/// commits: the conversations and counters it remembers, the rest read on a
/// connection of its own, outside any write transaction. Only a serving store
/// offers it: holding the file's server lock, its writer is the only writer
/// of conversations, counters and request ids, so what it remembers, what
/// this connection sees and the batch still in flight (which the writer
/// lays over these reads) are together the whole truth. Settings and flows,
/// which others write, are read as of now, as a batch that began now would.
///
/// The writer holds the connection for its life (its pool, of one, counts
/// it as in use), so it is never pinged on its way back between batches;
/// after a failed read it goes back and the next batch takes it again.
pub struct AheadReads {
    conn: sqlx::pool::PoolConnection<Db>,
    backend: Backend,
}

impl AheadReads {
    pub fn reads(&mut self) -> batch::Reads<'_> {
        batch::Reads::new(&mut self.conn, &self.backend)
    }
}

async fn sqlite_version(conn: &mut Conn) -> Result<String, StoreError> {
    Ok(sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(conn)
        .await?)
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    /// A batch that rewrites the counters of `workspaces` workspaces: a few
    /// dozen WAL frames each.
    fn counters(workspaces: i64, round: i64) -> Writes {
        Writes {
            tallies: (1..=workspaces)
                .map(|w| {
                    let tally = Tally {
                        event_head: round,
                        counts: [round, w, 0],
                    };
                    (WorkspaceId(w), tally)
                })
                .collect(),
            ..Writes::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_stay_whole_and_the_wal_small_while_the_checkpointer_asks_the_writer_to_start_it_over()
     {
        const WORKSPACES: i64 = 2000;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("wal.db");
        let mut backend = Backend::open(&path, true).await.expect("open");
        backend.wal_restart_frames = 64;
        let mut tx = backend.begin_write().await.expect("begin");
        for w in 1..=WORKSPACES {
            sqlx::query(
                "INSERT INTO workspaces (workspace_id, name, create_time) VALUES ($1, $2, 0)",
            )
            .bind(w)
            .bind(format!("w{w}"))
            .execute(&mut *tx)
            .await
            .expect("workspace");
        }
        backend.commit(tx).await.expect("commit");

        // Batches back to back, with the checkpointer beside them as a
        // server runs it: a PASSIVE checkpoint alone never catches up.
        let largest = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let checkpoints = tokio::spawn({
            let (backend, stop) = (backend.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    backend.checkpoint().await.expect("checkpoint");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        // Readers all the while, as streams and Inboxes read: each holds
        // back what a checkpoint may copy to the snapshot it reads.
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (backend, stop) = (backend.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let mut tx = backend.begin_read().await.expect("read");
                        sqlx::query("SELECT sum(open_count) FROM workspace_counters")
                            .execute(&mut *tx)
                            .await
                            .expect("sum");
                        tx.commit().await.expect("end read");
                    }
                })
            })
            .collect();
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let mut written = 0u64;
        for round in 0..400 {
            backend
                .commit_batch(&counters(WORKSPACES, round))
                .await
                .expect("batch");
            let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
            largest.fetch_max(size, Ordering::Relaxed);
            written += 1;
        }
        stop.store(true, Ordering::Relaxed);
        checkpoints.await.expect("checkpointer");
        for reader in readers {
            reader.await.expect("reader");
        }

        // Each batch rewrites the table's pages (over 20 frames of 4 KiB):
        // 400 of them appended without a start-over would make a WAL of
        // over 32 MiB. (Here SQLite also starts over by itself at times:
        // this run is too small to starve the checkpointer as the bench's
        // steady load did, growing the WAL to 2.2 GB before this change.)
        let largest = largest.load(Ordering::Relaxed);
        assert_eq!(written, 400);
        assert!(
            largest < 8 << 20,
            "the WAL grew to {largest} bytes: it never started over"
        );
        let row: (i64, i64) = sqlx::query_as(
            "SELECT event_head, open_count FROM workspace_counters WHERE workspace_id = 7",
        )
        .fetch_one(&backend.reader)
        .await
        .expect("read");
        assert_eq!(row, (399, 399));
        backend.close().await;
    }
}
