//! The batch connection's writes, run with SQLite's own statements on the
//! calling thread.
//!
//! sqlx runs each statement of a SQLite connection on the connection's
//! worker thread: the caller sends it there and waits for the answer. A
//! batch is a BEGIN, a handful of multi-row inserts and a COMMIT, so it
//! paid two thread hand-offs per statement on its serial path, on a box
//! whose cores the RPCs keep busy. Here the batch takes the connection's
//! raw handle once ([`sqlx::SqliteConnection::lock_handle`]: the worker
//! waits meanwhile) and runs every statement itself, binding the values of
//! [`Insert`]s straight into statements it keeps prepared.
//!
//! **Owns** those prepared statements, which live exactly as long as the
//! connection they belong to ([`BatchConnection`] finalizes them before the
//! connection closes). **Never** used by anything but the batch: reads still
//! go through sqlx.

use std::{
    borrow::Cow,
    collections::HashMap,
    ffi::{CStr, c_int},
    fmt,
    ptr::{self, NonNull},
};

use libsqlite3_sys as ffi;

use super::{Conn, rows::Insert, rows::Value};
use crate::store::StoreError;

/// Statements kept prepared, at most (one per table and row count).
const MOST_STATEMENTS: usize = 1024;

/// The batch connection with the statements prepared on it. The statements
/// are finalized before the connection is closed (fields drop in order):
/// SQLite refuses to close a connection that still has statements.
pub struct BatchConnection {
    statements: Statements,
    conn: Conn,
}

impl fmt::Debug for BatchConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchConnection")
            .field("statements", &self.statements.prepared.len())
            .finish_non_exhaustive()
    }
}

impl BatchConnection {
    pub fn new(conn: Conn) -> Self {
        Self {
            statements: Statements::default(),
            conn,
        }
    }

    /// The connection, for reads through sqlx.
    pub fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    /// The connection alone, its statements finalized.
    pub fn into_conn(self) -> Conn {
        let Self { statements, conn } = self;
        drop(statements);
        conn
    }

    /// Runs `sql` (no parameters, no rows), e.g. `BEGIN IMMEDIATE`.
    pub async fn execute(&mut self, sql: &CStr) -> Result<(), StoreError> {
        let mut handle = self.conn.lock_handle().await?;
        let db = handle.as_raw_handle();
        // SAFETY: the handle is locked for this call: no other thread uses
        // the connection until it is dropped.
        unsafe { exec(db, sql) }
    }

    /// Writes `inserts` and commits, in the transaction open on the
    /// connection (`begin` true: begins it first, with `BEGIN IMMEDIATE`).
    /// On failure, the transaction is rolled back.
    pub async fn write_and_commit(
        &mut self,
        begin: bool,
        inserts: &[Insert<'_>],
    ) -> Result<(), StoreError> {
        let mut handle = self.conn.lock_handle().await?;
        let db = handle.as_raw_handle();
        let statements = &mut self.statements;
        // SAFETY: as in `execute`; the statements were prepared on this
        // connection (they never leave it).
        unsafe {
            if begin {
                exec(db, c"BEGIN IMMEDIATE")?;
            }
            let done = inserts
                .iter()
                .try_for_each(|insert| statements.insert(db, insert))
                .and_then(|()| exec(db, c"COMMIT"));
            if done.is_err() && ffi::sqlite3_get_autocommit(db.as_ptr()) == 0 {
                // The caller drops the connection after a failure anyway;
                // rolling back here lets go of the write lock at once.
                let _ = exec(db, c"ROLLBACK");
            }
            done
        }
    }
}

/// Prepared statements by table and row count.
#[derive(Default)]
struct Statements {
    prepared: HashMap<(&'static str, usize), Statement>,
}

struct Statement(NonNull<ffi::sqlite3_stmt>);

// SAFETY: a statement is only used while its connection's handle is locked
// (`BatchConnection` takes the lock for every use), so never by two threads
// at once, which is all SQLite's multi-thread mode asks.
unsafe impl Send for Statement {}

impl Drop for Statement {
    fn drop(&mut self) {
        // SAFETY: the statement is finalized once, here; its connection
        // is open (`BatchConnection` drops statements first) and idle.
        unsafe {
            ffi::sqlite3_finalize(self.0.as_ptr());
        }
    }
}

impl Statements {
    /// Runs `insert`: one statement per chunk of rows ([`Insert::statements`]).
    ///
    /// # Safety
    /// `db` is locked for the caller and is the connection these
    /// statements were prepared on.
    unsafe fn insert(
        &mut self,
        db: NonNull<ffi::sqlite3>,
        insert: &Insert<'_>,
    ) -> Result<(), StoreError> {
        for values in insert.statements() {
            let rows = values.len() / insert.columns.max(1);
            // SAFETY: as this function's.
            let statement = unsafe { self.prepared(db, insert, rows) }?;
            let mut index: c_int = 0;
            let mut bound = Ok(());
            for value in values {
                index += 1;
                // SAFETY: the statement has `columns × rows` parameters;
                // text and blobs are copied by SQLite (SQLITE_TRANSIENT).
                let rc = unsafe { bind(statement, index, value) };
                if rc != ffi::SQLITE_OK {
                    bound = Err(rc);
                    break;
                }
            }
            // SAFETY: a statement prepared on `db`, used by this thread only.
            let rc = match bound {
                Ok(()) => unsafe { ffi::sqlite3_step(statement) },
                Err(rc) => rc,
            };
            unsafe {
                ffi::sqlite3_reset(statement);
                ffi::sqlite3_clear_bindings(statement);
            }
            if rc != ffi::SQLITE_DONE {
                return Err(unsafe { error(db, rc) });
            }
        }
        Ok(())
    }

    /// The statement of `insert` for `rows` rows, prepared once.
    unsafe fn prepared(
        &mut self,
        db: NonNull<ffi::sqlite3>,
        insert: &Insert<'_>,
        rows: usize,
    ) -> Result<*mut ffi::sqlite3_stmt, StoreError> {
        let key = (insert.name, rows);
        if let Some(statement) = self.prepared.get(&key) {
            return Ok(statement.0.as_ptr());
        }
        if self.prepared.len() >= MOST_STATEMENTS {
            self.prepared.clear();
        }
        let sql = sql(insert, rows);
        let mut statement = ptr::null_mut();
        let length = c_int::try_from(sql.len())
            .map_err(|_| StoreError::Corrupt("a statement too long for SQLite".into()))?;
        // SAFETY: `sql` outlives the call; SQLite writes the statement out.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                db.as_ptr(),
                sql.as_ptr().cast(),
                length,
                ffi::SQLITE_PREPARE_PERSISTENT,
                &mut statement,
                ptr::null_mut(),
            )
        };
        let Some(statement) = NonNull::new(statement).filter(|_| rc == ffi::SQLITE_OK) else {
            return Err(unsafe { error(db, rc) });
        };
        self.prepared.insert(key, Statement(statement));
        Ok(statement.as_ptr())
    }
}

/// `insert`'s statement text for `rows` rows: `?` placeholders, numbered by
/// position.
fn sql(insert: &Insert<'_>, rows: usize) -> String {
    let tuple = format!("({})", vec!["?"; insert.columns].join(", "));
    let mut sql =
        String::with_capacity(insert.head.len() + 8 + rows * (tuple.len() + 2) + insert.tail.len());
    sql.push_str(&insert.head);
    sql.push_str("VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&tuple);
    }
    sql.push_str(&insert.tail);
    sql
}

/// Binds `value` to parameter `index` (from 1).
unsafe fn bind(statement: *mut ffi::sqlite3_stmt, index: c_int, value: &Value<'_>) -> c_int {
    // SAFETY (for the caller): SQLITE_TRANSIENT makes SQLite copy the bytes
    // before this returns.
    unsafe {
        match value {
            Value::Int(Some(v)) => ffi::sqlite3_bind_int64(statement, index, *v),
            Value::Int(None) | Value::Text(None) => ffi::sqlite3_bind_null(statement, index),
            Value::Text(Some(text)) => ffi::sqlite3_bind_text64(
                statement,
                index,
                text.as_ptr().cast(),
                text.len() as u64,
                ffi::SQLITE_TRANSIENT(),
                ffi::SQLITE_UTF8 as u8,
            ),
            Value::Blob(bytes) => ffi::sqlite3_bind_blob64(
                statement,
                index,
                bytes.as_ptr().cast(),
                bytes.len() as u64,
                ffi::SQLITE_TRANSIENT(),
            ),
        }
    }
}

/// Runs `sql` on `db`.
unsafe fn exec(db: NonNull<ffi::sqlite3>, sql: &CStr) -> Result<(), StoreError> {
    // SAFETY (for the caller): `db` is locked for this thread.
    let rc = unsafe {
        ffi::sqlite3_exec(
            db.as_ptr(),
            sql.as_ptr(),
            None,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(unsafe { error(db, rc) })
    }
}

/// The connection's last error, as sqlx would have reported it.
unsafe fn error(db: NonNull<ffi::sqlite3>, rc: c_int) -> StoreError {
    // SAFETY (for the caller): `db` is open; the message is copied at once.
    let (code, message) = unsafe {
        let code = ffi::sqlite3_extended_errcode(db.as_ptr());
        let message = ffi::sqlite3_errmsg(db.as_ptr());
        let message = if message.is_null() {
            format!("SQLite error {rc}")
        } else {
            CStr::from_ptr(message).to_string_lossy().into_owned()
        };
        (if code == ffi::SQLITE_OK { rc } else { code }, message)
    };
    StoreError::Database(sqlx::Error::Database(Box::new(RawError { code, message })))
}

/// An error SQLite reported to a statement of ours.
#[derive(Debug)]
struct RawError {
    code: c_int,
    message: String,
}

impl fmt::Display for RawError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

impl std::error::Error for RawError {}

impl sqlx::error::DatabaseError for RawError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(self.code.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                sqlx::error::ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => sqlx::error::ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => sqlx::error::ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => sqlx::error::ErrorKind::CheckViolation,
            _ => sqlx::error::ErrorKind::Other,
        }
    }
}
