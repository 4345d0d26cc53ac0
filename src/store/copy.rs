//! Moving a deployment: every row of every table, copied from one database
//! to another (a SQLite file to PostgreSQL, typically) so that keys, etags,
//! request ids and event cursors keep working.
//!
//! The source is read in one snapshot, each table in primary-key order in
//! pages; the target is written in one transaction, so a copy that fails
//! leaves the target as empty as it found it. The tables are copied by
//! column name, parents before children.

/// A column's stored type, the same on both backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// INTEGER / BIGINT.
    Int,
    /// TEXT.
    Text,
    /// BLOB / BYTEA.
    Bytes,
}

/// A stored value (NULL as None).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An integer.
    Int(Option<i64>),
    /// A string.
    Text(Option<String>),
    /// Bytes.
    Bytes(Option<Vec<u8>>),
}

/// A table to copy.
#[derive(Debug)]
pub struct Table {
    /// Its name.
    pub name: &'static str,
    /// Its columns and their types.
    pub columns: &'static [(&'static str, Kind)],
    /// Columns unique in every row on both backends, which pages are read
    /// in: SQLite's primary key or unique index, so that a page of a large
    /// file is a range read, not a sort.
    pub key: &'static [&'static str],
}

impl Table {
    /// The positions of the key columns among `columns`.
    pub fn key_positions(&self) -> Vec<usize> {
        self.key
            .iter()
            .map(|k| {
                self.columns
                    .iter()
                    .position(|(c, _)| c == k)
                    .expect("key columns are columns")
            })
            .collect()
    }
}

use Kind::{Bytes, Int, Text};

use super::{Backend, Store, StoreError, postgres, sqlite};

/// Every table, parents before children.
pub const TABLES: &[Table] = &[
    Table {
        name: "workspaces",
        columns: &[
            ("workspace_id", Int),
            ("name", Text),
            ("create_time", Int),
            ("default_flow_id", Text),
            ("auto_close_after", Int),
            ("auto_close_message", Text),
        ],
        key: &["workspace_id"],
    },
    Table {
        name: "api_keys",
        columns: &[
            ("key_id", Text),
            ("workspace_id", Int),
            ("role", Text),
            ("secret_hash", Bytes),
            ("create_time", Int),
            ("revoke_time", Int),
        ],
        key: &["key_id"],
    },
    Table {
        name: "workspace_counters",
        columns: &[
            ("workspace_id", Int),
            ("event_head", Int),
            ("open_count", Int),
            ("pending_count", Int),
            ("closed_count", Int),
        ],
        key: &["workspace_id"],
    },
    Table {
        name: "flows",
        columns: &[
            ("workspace_id", Int),
            ("flow_id", Text),
            ("version", Int),
            ("name", Text),
            ("definition", Text),
            ("create_time", Int),
        ],
        key: &["flow_id", "version"],
    },
    Table {
        name: "conversations",
        columns: &[
            ("workspace_id", Int),
            ("conversation_id", Text),
            ("visitor_id", Text),
            ("status", Text),
            ("assignee_agent_id", Text),
            ("assignee_display_name", Text),
            ("assignee_channel", Text),
            ("create_time", Int),
            ("update_time", Int),
            ("status_change_time", Int),
            ("close_time", Int),
            ("version", Int),
            ("message_count", Int),
            ("everyone_message_count", Int),
            ("flow_run", Text),
            ("snooze_end_time", Int),
            // A timer's due time moves with the data; claims are a running
            // server's and stay behind.
            ("due_time", Int),
        ],
        key: &["conversation_id"],
    },
    Table {
        name: "messages",
        columns: &[
            ("workspace_id", Int),
            ("conversation_id", Text),
            ("position", Int),
            ("message_id", Text),
            ("author_kind", Text),
            ("author_id", Text),
            ("author_display_name", Text),
            ("author_channel", Text),
            ("audience", Text),
            ("create_time", Int),
            ("content", Text),
            ("quick_replies", Text),
        ],
        key: &["conversation_id", "position"],
    },
    Table {
        name: "events",
        columns: &[
            ("workspace_id", Int),
            ("sequence", Int),
            ("event_id", Text),
            ("conversation_id", Text),
            ("kind", Text),
            ("audience", Text),
            ("create_time", Int),
            ("payload", Text),
        ],
        key: &["workspace_id", "sequence"],
    },
    Table {
        name: "idempotency_records",
        columns: &[
            ("workspace_id", Int),
            ("request_id", Text),
            ("method", Text),
            ("fingerprint", Bytes),
            ("response", Text),
            ("create_time", Int),
        ],
        key: &["workspace_id", "request_id"],
    },
    // Visitor session tokens signed before the copy keep working after it,
    // and revoked ones stay revoked.
    Table {
        name: "session_secrets",
        columns: &[("secret_id", Int), ("secret", Bytes), ("create_time", Int)],
        key: &["secret_id"],
    },
    Table {
        name: "revoked_sessions",
        columns: &[
            ("session_id", Text),
            ("workspace_id", Int),
            ("expire_time", Int),
            ("revoke_time", Int),
        ],
        key: &["workspace_id", "session_id"],
    },
];

/// Rows read and written per page.
pub const PAGE: i64 = 2000;

/// How a copy is going: `done` of `total` rows of `table`.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// The table being copied.
    pub table: &'static str,
    /// Rows copied of it so far.
    pub done: u64,
    /// Its rows in the source.
    pub total: u64,
}

/// A table's rows in the source and in the target after the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    /// The table.
    pub table: &'static str,
    /// Rows in the source.
    pub source: u64,
    /// Rows in the target.
    pub target: u64,
}

impl Store {
    /// Copies every row of this database into `target`, which must be empty
    /// (it has only just been migrated), in one transaction of the target;
    /// calls `progress` as pages go in. Returns each table's rows in both,
    /// counted afresh after the commit.
    pub async fn copy_into(
        &self,
        target: &Store,
        mut progress: impl FnMut(Progress),
    ) -> Result<Vec<Counted>, StoreError> {
        let mut source = self.begin_copy(false).await?;
        let mut sink = target.begin_copy(true).await?;
        for table in TABLES {
            let rows = sink.count(table).await?;
            if rows > 0 {
                return Err(StoreError::TargetNotEmpty {
                    table: table.name,
                    rows,
                });
            }
        }
        let mut sources = Vec::new();
        for table in TABLES {
            let total = source.count(table).await?;
            sources.push(total);
            let key = table.key_positions();
            let mut after: Option<Vec<Value>> = None;
            let mut done = 0;
            progress(Progress {
                table: table.name,
                done,
                total,
            });
            loop {
                let rows = source.read_after(table, after.as_deref(), PAGE).await?;
                let Some(last) = rows.last() else { break };
                after = Some(key.iter().map(|&i| last[i].clone()).collect());
                sink.insert(table, &rows).await?;
                done += rows.len() as u64;
                progress(Progress {
                    table: table.name,
                    done,
                    total,
                });
            }
        }
        sink.finish().await?;
        sink.commit().await?;
        source.commit().await?;
        let mut check = target.begin_copy(false).await?;
        let mut counted = Vec::new();
        for (table, source) in TABLES.iter().zip(sources) {
            counted.push(Counted {
                table: table.name,
                source,
                target: check.count(table).await?,
            });
        }
        check.commit().await?;
        Ok(counted)
    }

    async fn begin_copy(&self, write: bool) -> Result<CopyTx, StoreError> {
        Ok(match (&self.backend, write) {
            (Backend::Sqlite(b), false) => CopyTx::Sqlite(b.begin_read().await?),
            (Backend::Sqlite(b), true) => CopyTx::Sqlite(b.begin_write().await?),
            (Backend::Postgres(b), false) => CopyTx::Postgres(b.begin_read().await?),
            (Backend::Postgres(b), true) => CopyTx::Postgres(b.begin_write().await?),
        })
    }
}

/// One side of a copy: a read snapshot of the source, or the target's write
/// transaction.
enum CopyTx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

macro_rules! dispatch_copy {
    ($self:expr, $module:ident, $tx:ident => $call:expr) => {
        match $self {
            CopyTx::Sqlite($tx) => {
                use sqlite::copy as $module;
                $call
            }
            CopyTx::Postgres($tx) => {
                use postgres::copy as $module;
                $call
            }
        }
    };
}

impl CopyTx {
    async fn count(&mut self, table: &Table) -> Result<u64, StoreError> {
        dispatch_copy!(self, c, tx => c::count(tx, table).await)
    }

    async fn read_after(
        &mut self,
        table: &Table,
        after: Option<&[Value]>,
        limit: i64,
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        dispatch_copy!(self, c, tx => c::read_after(tx, table, after, limit).await)
    }

    async fn insert(&mut self, table: &Table, rows: &[Vec<Value>]) -> Result<(), StoreError> {
        dispatch_copy!(self, c, tx => c::insert(tx, table, rows).await)
    }

    async fn finish(&mut self) -> Result<(), StoreError> {
        dispatch_copy!(self, c, tx => c::finish(tx).await)
    }

    async fn commit(self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(tx) => tx.commit().await?,
            Self::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }
}
