//! All SQL lives here, and nothing else does.
//!
//! **The contract** the layers above rely on is [`Store`]: operations, each
//! one transaction or one statement (reads grouped by the question they
//! answer, administrative writes of keys and flows), and the group-commit
//! write path of mutations, [`BatchTx`]: one transaction loads what a batch
//! of commands needs ([`BatchReads`]), then writes every decided change
//! (rows, per-workspace event sequences, counters, idempotency records) with
//! a few multi-row statements and commits once. A serving SQLite store also
//! offers [`AheadReads`]: the same reads outside any transaction, so that
//! the writer can decide the next batch while one commits.
//!
//! **Two backends** implement it, chosen by the database's [`Location`]: a
//! SQLite file ([`sqlite`], the embedded default, one server per file) and
//! a PostgreSQL database ([`postgres`], any number of servers). Their SQL is
//! written once, in `sql/`, and compiled for each backend with its own
//! driver types; where the two dialects differ, each backend's `dialect`
//! module says so. Nothing above this module knows which backend it runs on.

mod commits;
pub mod copy;
mod location;
mod model;
// Each backend compiles the files of `sql/` as modules of its own, with its
// driver's types: one source, two instantiations, on purpose.
#[allow(clippy::duplicate_mod, reason = "sql/ is compiled once per backend")]
mod postgres;
#[allow(clippy::duplicate_mod, reason = "sql/ is compiled once per backend")]
mod sqlite;

use std::collections::HashMap;

pub use commits::{CommitNotice, CommitWatch};
pub use location::Location;
pub(crate) use location::redacted;
pub use model::{
    AssigneeFilter, ConversationRows, DefaultFlow, DueTimer, KeySummary, ListCursor, ListFilter,
    NewKey, NewRecord, Record, StoredFlow, StoredKey, Tally, WorkspaceSummary, Writes,
};
pub use sqlite::connect_options;

use crate::domain::{
    Conversation, Message, Micros, WorkspaceId,
    lifecycle::Event,
    scope::EventScope,
    timers::WorkspaceSettings,
    values::{ConversationId, RequestId},
};

/// A store failure. Its detail is for the log, never for a client.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database or the driver failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Another server serves this database file.
    #[error(
        "{database} is already served by another `conversations serve` ({holder}; lock file {lock}). \
         One server per database file: stop it first, or give this one another --database \
         (several servers share a PostgreSQL database, not a file)"
    )]
    AlreadyServed {
        /// The database file.
        database: String,
        /// Who holds the lock, as far as its lock file tells.
        holder: String,
        /// The lock file.
        lock: String,
    },
    /// The database server could not be reached or refused the login.
    #[error("cannot connect to {database}: {source}")]
    Unreachable {
        /// The database, its password redacted.
        database: String,
        /// Why.
        source: sqlx::Error,
    },
    /// A database file that should exist does not.
    #[error(
        "no database at {0}: `conversations serve` creates it, or name another with --database (or CONVERSATIONS_DATABASE)"
    )]
    NoSuchFile(String),
    /// A SQLite file's directory does not exist.
    #[error("cannot use {database}: its directory {directory} does not exist")]
    NoSuchDirectory {
        /// The database file.
        database: String,
        /// Its directory.
        directory: String,
    },
    /// The database can be read but not written: a server would answer
    /// every mutation with an error.
    #[error(
        "cannot serve {database}: it cannot be written ({cause}). Check the permissions of the file and \
         its directory and the free disk space, or, on PostgreSQL, that the database and the role are \
         not read-only (a standby, default_transaction_read_only)"
    )]
    NotWritable {
        /// The database, its password redacted.
        database: String,
        /// What the database said.
        cause: String,
    },
    /// A copy's target already holds data.
    #[error("the target database is not empty: {table} has {rows} rows")]
    TargetNotEmpty {
        /// The first table found with rows.
        table: &'static str,
        /// How many.
        rows: u64,
    },
    /// The lock file could not be opened or written.
    #[error("could not lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Records a pool's connections in use and idle.
fn observe_pool<DB: sqlx::Database>(name: &'static str, pool: &sqlx::Pool<DB>) {
    observe_pool_with(name, pool, 0, 0);
}

/// [`observe_pool`], adding connections taken out of the pool for good
/// (detached): `in_use` of them busy, `idle` waiting.
fn observe_pool_with<DB: sqlx::Database>(
    name: &'static str,
    pool: &sqlx::Pool<DB>,
    in_use: usize,
    idle: usize,
) {
    let pool_idle = pool.num_idle();
    let pool_in_use = (pool.size() as usize).saturating_sub(pool_idle);
    let gauge = |state: &'static str, value: usize| {
        ::metrics::gauge!(crate::metrics::DB_CONNECTIONS, "pool" => name, "state" => state)
            .set(value as f64);
    };
    gauge("in_use", pool_in_use + in_use);
    gauge("idle", pool_idle + idle);
}

/// Gets a connection (or a transaction) from the pool `name` with `get`,
/// recording how long that took.
async fn acquired<T>(
    name: &'static str,
    get: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, StoreError> {
    let since = std::time::Instant::now();
    let got = get.await?;
    ::metrics::histogram!(crate::metrics::DB_ACQUIRE, "pool" => name)
        .record(since.elapsed().as_secs_f64());
    Ok(got)
}

/// A pooled connection taken for one operation (callers never hold one
/// longer): the time it is held is the operation's time in the database,
/// recorded when it is dropped.
pub(crate) struct Held<DB: sqlx::Database> {
    conn: sqlx::pool::PoolConnection<DB>,
    pool: &'static str,
    since: std::time::Instant,
}

impl<DB: sqlx::Database> Held<DB> {
    /// A connection of `pool`, named `name` in the metrics, for one
    /// operation.
    async fn take(name: &'static str, pool: &sqlx::Pool<DB>) -> Result<Self, StoreError> {
        Ok(Self {
            conn: acquired(name, pool.acquire()).await?,
            pool: name,
            since: std::time::Instant::now(),
        })
    }
}

impl<DB: sqlx::Database> std::ops::Deref for Held<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for Held<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

impl<DB: sqlx::Database> Drop for Held<DB> {
    fn drop(&mut self) {
        ::metrics::histogram!(crate::metrics::DB_OPERATION, "pool" => self.pool)
            .record(self.since.elapsed().as_secs_f64());
    }
}

/// The database's own error inside `error`, if it holds one.
fn database_error(error: &StoreError) -> Option<&dyn sqlx::error::DatabaseError> {
    match error {
        StoreError::Database(e) | StoreError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => {
            e.as_database_error()
        }
        _ => None,
    }
}

/// Whether the database refused a write because it is read-only:
/// PostgreSQL's `read_only_sql_transaction` (a standby, or
/// `default_transaction_read_only`), SQLite's SQLITE_READONLY family.
fn is_read_only(error: &dyn sqlx::error::DatabaseError) -> bool {
    match error.code().as_deref() {
        Some("25006") => true,
        Some(code) => code.parse::<i32>().is_ok_and(|c| c & 0xff == 8),
        None => false,
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self::Corrupt(e.to_string())
    }
}

/// The database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(sqlite::Backend),
    Postgres(postgres::Backend),
}

/// Calls the same method on whichever backend the store has.
macro_rules! dispatch {
    ($self:expr, $backend:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($backend) => $call,
            Backend::Postgres($backend) => $call,
        }
    };
}

impl Store {
    /// Opens the database for the command line and tools, applying the
    /// migrations (creating a missing SQLite file).
    pub async fn open(location: &Location) -> Result<Self, StoreError> {
        Self::connect(location, false).await
    }

    /// Opens a database that exists: unlike [`Store::open`], a missing SQLite
    /// file is refused ([`StoreError::NoSuchFile`]) rather than created.
    pub async fn open_existing(location: &Location) -> Result<Self, StoreError> {
        if let Location::File(path) = location
            && !path.exists()
        {
            return Err(StoreError::NoSuchFile(path.display().to_string()));
        }
        Self::open(location).await
    }

    /// Opens the database for a server: on a SQLite file, takes the file's
    /// server lock first ([`StoreError::AlreadyServed`] if another server
    /// has it).
    pub async fn open_to_serve(location: &Location) -> Result<Self, StoreError> {
        let not_writable = |error: &StoreError| StoreError::NotWritable {
            database: location.to_string(),
            cause: match database_error(error) {
                Some(db) => db.message().to_owned(),
                None => error.to_string(),
            },
        };
        let store = match Self::connect(location, true).await {
            Ok(store) => store,
            // Migrations are the first writes; a read-only database fails
            // them before the check below can run.
            Err(error) if database_error(&error).is_some_and(is_read_only) => {
                return Err(not_writable(&error));
            }
            Err(error) => return Err(error),
        };
        // Refuse now what would otherwise fail every mutation later.
        if let Err(error) = dispatch!(&store, b => b.check_writable().await) {
            store.close().await;
            return Err(not_writable(&error));
        }
        Ok(store)
    }

    async fn connect(location: &Location, serve: bool) -> Result<Self, StoreError> {
        let backend = match location {
            Location::File(path) => Backend::Sqlite(sqlite::Backend::open(path, serve).await?),
            Location::Postgres(url) => Backend::Postgres(postgres::Backend::open(url).await?),
        };
        Ok(Self { backend })
    }

    /// Starts the write transaction of a batch of mutations. Only the batch
    /// writer calls it, one batch at a time.
    pub async fn begin_batch(&self) -> Result<BatchTx, StoreError> {
        Ok(match &self.backend {
            Backend::Sqlite(b) => BatchTx::Sqlite(b.begin_batch().await?),
            Backend::Postgres(b) => BatchTx::Postgres(b.begin_batch().await?),
        })
    }

    /// Writes a batch decided ahead of its transaction (over
    /// [`AheadReads`]) in one transaction, and commits it: when this
    /// returns Ok, every write is durable. Only the batch writer calls it,
    /// one batch at a time.
    pub async fn commit_batch(&self, writes: &Writes) -> Result<(), StoreError> {
        dispatch!(self, b => b.commit_batch(writes).await)
    }

    /// A way to read for the next batch while the batch in flight commits,
    /// where the store can offer one (a serving SQLite store, see
    /// [`AheadReads`]); None means read inside each batch's transaction.
    pub async fn read_ahead(&self) -> Result<Option<AheadReads>, StoreError> {
        Ok(match &self.backend {
            Backend::Sqlite(b) => b.read_ahead().await?.map(AheadReads),
            Backend::Postgres(_) => None,
        })
    }

    /// Drops what the store remembers of its own writes (after a batch
    /// whose outcome is unknown).
    pub fn forget_remembered(&self) {
        dispatch!(self, b => b.forget())
    }

    /// Starts watching for commits of other servers (see [`CommitWatch`]).
    pub fn watch_commits(&self) -> CommitWatch {
        match &self.backend {
            Backend::Sqlite(_) => CommitWatch::silent(),
            Backend::Postgres(b) => CommitWatch::of(b.watch_commits()),
        }
    }

    /// The conversation with this id in this workspace; None when there is
    /// none (including when it belongs to another workspace).
    pub async fn conversation(
        &self,
        workspace_id: WorkspaceId,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StoreError> {
        dispatch!(self, b => b.conversation(workspace_id, id).await)
    }

    /// Up to `limit` conversations matching `filter`, newest update first,
    /// then by id, strictly after `cursor`; the workspace's counters; and,
    /// for a [`ListFilter::scoped`] filter, its counts per status: from the
    /// same snapshot.
    pub async fn conversation_page(
        &self,
        workspace_id: WorkspaceId,
        filter: &ListFilter,
        cursor: Option<&ListCursor>,
        limit: i64,
    ) -> Result<ConversationRows, StoreError> {
        dispatch!(self, b => b.conversation_page(workspace_id, filter, cursor, limit).await)
    }

    /// The workspace's settings; None when there is no such workspace.
    pub async fn settings(
        &self,
        workspace_id: WorkspaceId,
    ) -> Result<Option<WorkspaceSettings>, StoreError> {
        dispatch!(self, b => b.settings(workspace_id).await)
    }

    /// Replaces the workspace's settings and, in the same transaction,
    /// reschedules its conversations' timers by them: serialized with the
    /// workspace's batches, so every due time stored follows the settings
    /// stored.
    pub async fn update_settings(
        &self,
        workspace_id: WorkspaceId,
        next: &WorkspaceSettings,
    ) -> Result<(), StoreError> {
        dispatch!(self, b => b.update_settings(workspace_id, next).await)
    }

    /// Claims up to `limit` conversations, of any workspace, whose timer is
    /// due at `now` and that no server has claimed (or whose claim ran out),
    /// until `until`. A claim only keeps other servers from firing the same
    /// timer at once: the timer's effect is decided again in the batch that
    /// fires it, against the row as it stands, so it fires at most once
    /// however many servers claim it, and a server that dies holding claims
    /// delays those timers by the claim's length at most.
    pub async fn claim_due(
        &self,
        now: Micros,
        until: Micros,
        limit: i64,
    ) -> Result<Vec<DueTimer>, StoreError> {
        dispatch!(self, b => b.claim_due(now, until, limit).await)
    }

    /// The conversation and up to `limit` of its messages after
    /// `after_position`, oldest first (only those for everyone when
    /// `everyone_only`), from one snapshot; None when the workspace has no
    /// such conversation.
    pub async fn thread_page(
        &self,
        workspace_id: WorkspaceId,
        id: &ConversationId,
        everyone_only: bool,
        after_position: i64,
        limit: i64,
    ) -> Result<Option<(Conversation, Vec<Message>)>, StoreError> {
        dispatch!(self, b => b.thread_page(workspace_id, id, everyone_only, after_position, limit).await)
    }

    /// The workspace's counters (zeros before its first change).
    pub async fn tally(&self, workspace_id: WorkspaceId) -> Result<Tally, StoreError> {
        dispatch!(self, b => b.tally(workspace_id).await)
    }

    /// Every workspace's counters.
    pub async fn tallies(&self) -> Result<HashMap<WorkspaceId, Tally>, StoreError> {
        dispatch!(self, b => b.tallies().await)
    }

    /// Up to `limit` events in `scope` with `after < sequence <= up_to`, in
    /// order, on the feed's own connections.
    pub async fn read_events(
        &self,
        scope: &EventScope,
        after: i64,
        up_to: i64,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        dispatch!(self, b => b.read_events(scope, after, up_to, limit).await)
    }

    /// The key with this id.
    pub async fn find_key(&self, key_id: &str) -> Result<Option<StoredKey>, StoreError> {
        dispatch!(self, b => b.find_key(key_id).await)
    }

    /// Ids of keys revoked at or after `since`.
    pub async fn revoked_since(&self, since: Micros) -> Result<Vec<String>, StoreError> {
        dispatch!(self, b => b.revoked_since(since).await)
    }

    /// Every workspace, by name, with its counts and active keys.
    pub async fn workspaces(&self) -> Result<Vec<WorkspaceSummary>, StoreError> {
        dispatch!(self, b => b.workspaces().await)
    }

    /// The keys of one workspace (None: of every workspace), oldest first;
    /// never their hashes.
    pub async fn keys(
        &self,
        workspace_id: Option<WorkspaceId>,
    ) -> Result<Vec<KeySummary>, StoreError> {
        dispatch!(self, b => b.keys(workspace_id).await)
    }

    /// The id of the workspace named `name`.
    pub async fn find_workspace(&self, name: &str) -> Result<Option<WorkspaceId>, StoreError> {
        dispatch!(self, b => b.find_workspace(name).await)
    }

    /// Creates a workspace; None if the name is taken.
    pub async fn create_workspace(
        &self,
        name: &str,
        now: Micros,
    ) -> Result<Option<WorkspaceId>, StoreError> {
        dispatch!(self, b => b.create_workspace(name, now).await)
    }

    /// Stores a key of the workspace named `workspace`; false (and nothing
    /// stored) when there is no such workspace.
    pub async fn create_key(
        &self,
        workspace: &str,
        key: &NewKey<'_>,
        now: Micros,
    ) -> Result<bool, StoreError> {
        dispatch!(self, b => b.create_key(workspace, key, now).await)
    }

    /// Revokes a key; false if there is no such key or it was revoked.
    pub async fn revoke_key(&self, key_id: &str, now: Micros) -> Result<bool, StoreError> {
        dispatch!(self, b => b.revoke_key(key_id, now).await)
    }

    /// On a database with no workspace, creates `name` with `keys` and
    /// returns its id; otherwise changes nothing (servers starting together
    /// bootstrap once).
    pub async fn bootstrap(
        &self,
        name: &str,
        keys: &[NewKey<'_>],
        now: Micros,
    ) -> Result<Option<WorkspaceId>, StoreError> {
        dispatch!(self, b => b.bootstrap(name, keys, now).await)
    }

    /// Stores a new flow.
    pub async fn insert_flow(
        &self,
        workspace_id: WorkspaceId,
        flow: &StoredFlow,
    ) -> Result<(), StoreError> {
        dispatch!(self, b => b.insert_flow(workspace_id, flow).await)
    }

    /// A flow version (the newest when `version` is None) and whether the
    /// flow is the workspace's default.
    pub async fn flow(
        &self,
        workspace_id: WorkspaceId,
        flow_id: &str,
        version: Option<i64>,
    ) -> Result<Option<(StoredFlow, bool)>, StoreError> {
        dispatch!(self, b => b.flow(workspace_id, flow_id, version).await)
    }

    /// The newest version of each flow of the workspace, and its default.
    pub async fn flows(
        &self,
        workspace_id: WorkspaceId,
    ) -> Result<(Vec<StoredFlow>, Option<String>), StoreError> {
        dispatch!(self, b => b.flows(workspace_id).await)
    }

    /// Writes the next version of a flow, made by `next` from the newest;
    /// None when the workspace has no such flow. Returns what was written and
    /// whether the flow is the default.
    pub async fn update_flow(
        &self,
        workspace_id: WorkspaceId,
        flow_id: &str,
        next: impl FnOnce(StoredFlow) -> StoredFlow,
    ) -> Result<Option<(StoredFlow, bool)>, StoreError> {
        dispatch!(self, b => b.update_flow(workspace_id, flow_id, next).await)
    }

    /// Makes `flow_id` the workspace default, or clears it with None.
    pub async fn set_default_flow(
        &self,
        workspace_id: WorkspaceId,
        flow_id: Option<&str>,
    ) -> Result<DefaultFlow, StoreError> {
        dispatch!(self, b => b.set_default_flow(workspace_id, flow_id).await)
    }

    /// Forgets request ids remembered before `cutoff`; returns how many.
    pub async fn purge_request_ids(&self, cutoff: Micros) -> Result<u64, StoreError> {
        dispatch!(self, b => b.purge_request_ids(cutoff).await)
    }

    /// The secret that signs visitor session tokens; `candidate` becomes it
    /// on a database that has none (every server on one database gets the
    /// same one).
    pub async fn session_secret(
        &self,
        candidate: &[u8],
        now: Micros,
    ) -> Result<Vec<u8>, StoreError> {
        dispatch!(self, b => b.session_secret(candidate, now).await)
    }

    /// Records a visitor session of `workspace_id` as revoked until
    /// `expire_time` (again is no change).
    pub async fn revoke_session(
        &self,
        workspace_id: WorkspaceId,
        session_id: &str,
        expire_time: Micros,
        now: Micros,
    ) -> Result<(), StoreError> {
        dispatch!(self, b => b.revoke_session(workspace_id, session_id, expire_time, now).await)
    }

    /// Visitor sessions revoked at or after `since`, not yet expired at `now`.
    pub async fn revoked_sessions_since(
        &self,
        since: Micros,
        now: Micros,
    ) -> Result<Vec<(WorkspaceId, String)>, StoreError> {
        dispatch!(self, b => b.revoked_sessions_since(since, now).await)
    }

    /// Forgets revocations of sessions expired before `cutoff`.
    pub async fn purge_revoked_sessions(&self, cutoff: Micros) -> Result<u64, StoreError> {
        dispatch!(self, b => b.purge_revoked_sessions(cutoff).await)
    }

    /// Housekeeping the backend does not do on its own (SQLite: copying
    /// the WAL into the file, never blocking a writer).
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        dispatch!(self, b => b.checkpoint().await)
    }

    /// Whether the database answers a query now (the health probe).
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, b => b.ping().await)
    }

    /// What the database runs with (version, durability settings, pools),
    /// as it reports them: for the start-up log line.
    pub async fn in_force(&self) -> Result<String, StoreError> {
        dispatch!(self, b => b.in_force().await)
    }

    /// Sets the database gauges: pool connections in use and idle, and (on
    /// SQLite) the sizes of the file and its write-ahead log.
    pub fn observe(&self) {
        dispatch!(self, b => b.observe())
    }

    /// Closes every connection, and lets go of the SQLite file's server lock.
    pub async fn close(&self) {
        dispatch!(self, b => b.close().await)
    }
}

/// What a batch reads before it is decided: inside its transaction
/// ([`BatchTx::reads`]) or ahead of it ([`AheadReads::reads`]).
pub enum BatchReads<'a> {
    /// On SQLite.
    Sqlite(sqlite::batch::Reads<'a>),
    /// On PostgreSQL.
    Postgres(postgres::batch::Reads<'a>),
}

macro_rules! dispatch_reads {
    ($self:expr, $reads:ident => $call:expr) => {
        match $self {
            BatchReads::Sqlite($reads) => $call,
            BatchReads::Postgres($reads) => $call,
        }
    };
}

impl BatchReads<'_> {
    /// The counters of these workspaces (in a transaction: held until the
    /// commit; read them first).
    pub async fn tallies(
        &mut self,
        workspaces: &[WorkspaceId],
    ) -> Result<HashMap<WorkspaceId, Tally>, StoreError> {
        dispatch_reads!(self, r => r.tallies(workspaces).await)
    }

    /// The conversations with these ids in these workspaces (the caller
    /// checks each row's workspace).
    pub async fn conversations(
        &mut self,
        ids: &[(WorkspaceId, &ConversationId)],
    ) -> Result<Vec<Conversation>, StoreError> {
        dispatch_reads!(self, r => r.conversations(ids).await)
    }

    /// The remembered first responses of these request ids.
    pub async fn idempotency_records(
        &mut self,
        keys: &[(WorkspaceId, &RequestId)],
    ) -> Result<Vec<(WorkspaceId, String, Record)>, StoreError> {
        dispatch_reads!(self, r => r.idempotency_records(keys).await)
    }

    /// The settings of these workspaces (in a transaction: after
    /// [`Self::tallies`]).
    pub async fn settings(
        &mut self,
        workspaces: &[WorkspaceId],
    ) -> Result<HashMap<WorkspaceId, WorkspaceSettings>, StoreError> {
        dispatch_reads!(self, r => r.settings(workspaces).await)
    }

    /// The workspace's default flow id.
    pub async fn default_flow_id(
        &mut self,
        workspace_id: WorkspaceId,
    ) -> Result<Option<String>, StoreError> {
        dispatch_reads!(self, r => r.default_flow_id(workspace_id).await)
    }

    /// A flow version (the newest when `version` is None).
    pub async fn flow(
        &mut self,
        workspace_id: WorkspaceId,
        flow_id: &str,
        version: Option<i64>,
    ) -> Result<Option<StoredFlow>, StoreError> {
        dispatch_reads!(self, r => r.flow(workspace_id, flow_id, version).await)
    }
}

/// Reads for the next batch, made while the batch in flight commits
/// ([`Store::read_ahead`]). The writer lays the batch in flight over them:
/// they do not see it until it commits.
pub struct AheadReads(sqlite::AheadReads);

impl AheadReads {
    /// The reads, on the writer's read-ahead connection.
    pub fn reads(&mut self) -> BatchReads<'_> {
        BatchReads::Sqlite(self.0.reads())
    }
}

/// An open batch transaction (see [`Store::begin_batch`]). Read in this
/// order: [`BatchTx::tallies`] first (it holds the batch's workspaces until
/// the commit), then conversations, request ids and flows; then
/// [`BatchTx::commit`] the decided writes.
pub enum BatchTx {
    /// On SQLite.
    Sqlite(sqlite::batch::BatchTx),
    /// On PostgreSQL.
    Postgres(postgres::batch::BatchTx),
}

macro_rules! dispatch_tx {
    ($self:expr, $tx:ident => $call:expr) => {
        match $self {
            BatchTx::Sqlite($tx) => $call,
            BatchTx::Postgres($tx) => $call,
        }
    };
}

impl BatchTx {
    /// The batch's reads, in its transaction: [`BatchReads::tallies`] first.
    pub fn reads(&mut self) -> BatchReads<'_> {
        match self {
            BatchTx::Sqlite(tx) => BatchReads::Sqlite(tx.reads()),
            BatchTx::Postgres(tx) => BatchReads::Postgres(tx.reads()),
        }
    }

    /// Writes the batch's rows and commits: when this returns Ok, every
    /// write is durable.
    pub async fn commit(self, writes: &Writes) -> Result<(), StoreError> {
        dispatch_tx!(self, tx => tx.commit(writes).await)
    }
}

/// Rows of `columns` bound values that fit in one statement, under SQLite's
/// limit of 32,766 bound variables (PostgreSQL allows 65,535).
fn rows_per_statement(columns: usize) -> usize {
    32_000 / columns
}

/// Microseconds as stored, from an optional column.
fn micros(value: Option<i64>) -> Option<Micros> {
    value.map(Micros)
}
