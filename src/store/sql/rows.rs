//! The rows a batch writes, as values.
//!
//! Each table's module says once which columns a batch writes and with
//! which values ([`Insert`]); an executor turns that into multi-row
//! statements: sqlx's on PostgreSQL, SQLite's own on SQLite's batch
//! connection (`sqlite::raw`), so that a batch's statements follow one
//! another on one thread.

use std::borrow::Cow;

/// One value of a row, typed so that a NULL has its column's type (which
/// PostgreSQL needs).
#[derive(Debug, Clone)]
pub enum Value<'a> {
    Int(Option<i64>),
    Text(Option<Cow<'a, str>>),
    Blob(&'a [u8]),
}

impl From<i64> for Value<'_> {
    fn from(value: i64) -> Self {
        Self::Int(Some(value))
    }
}

impl From<Option<i64>> for Value<'_> {
    fn from(value: Option<i64>) -> Self {
        Self::Int(value)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(value: &'a str) -> Self {
        Self::Text(Some(Cow::Borrowed(value)))
    }
}

impl<'a> From<Option<&'a str>> for Value<'a> {
    fn from(value: Option<&'a str>) -> Self {
        Self::Text(value.map(Cow::Borrowed))
    }
}

impl From<String> for Value<'_> {
    fn from(value: String) -> Self {
        Self::Text(Some(Cow::Owned(value)))
    }
}

impl From<Option<String>> for Value<'_> {
    fn from(value: Option<String>) -> Self {
        Self::Text(value.map(Cow::Owned))
    }
}

impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(value: &'a [u8]) -> Self {
        Self::Blob(value)
    }
}

/// A multi-row insert: `head`, then `VALUES` with one tuple of `columns`
/// values per row, then `tail` (an upsert's `ON CONFLICT`, or nothing).
#[derive(Debug)]
pub struct Insert<'a> {
    /// Names the statement (with its row count) in a statement cache.
    #[allow(
        dead_code,
        reason = "only SQLite's batch connection keeps statements by name"
    )]
    pub name: &'static str,
    pub head: Cow<'static, str>,
    pub tail: Cow<'static, str>,
    /// Values per row: the length of the rows' arrays.
    pub columns: usize,
    /// Row after row.
    pub values: Vec<Value<'a>>,
}

impl<'a> Insert<'a> {
    /// The insert of `rows`, each an array of its columns' values.
    pub fn new<const N: usize>(
        name: &'static str,
        head: impl Into<Cow<'static, str>>,
        rows: Vec<[Value<'a>; N]>,
    ) -> Self {
        Self {
            name,
            head: head.into(),
            tail: Cow::Borrowed(""),
            columns: N,
            values: rows.into_iter().flatten().collect(),
        }
    }

    pub fn with_tail(mut self, tail: impl Into<Cow<'static, str>>) -> Self {
        self.tail = tail.into();
        self
    }

    /// The values of each statement, row after row: as many rows as the
    /// backends' bind limits allow in one statement.
    pub fn statements(&self) -> std::slice::Chunks<'_, Value<'a>> {
        let columns = self.columns.max(1);
        self.values
            .chunks(columns * crate::store::rows_per_statement(columns))
    }
}
