//! Reading and writing whole tables by column, for moving a deployment
//! (see `crate::store::copy`).

use sqlx::{QueryBuilder, Row};

use super::{Conn, Db};
use crate::store::{
    StoreError,
    copy::{Kind, Table, Value},
    rows_per_statement,
};

/// The table's rows.
pub async fn count(conn: &mut Conn, table: &Table) -> Result<u64, StoreError> {
    let count: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {}", table.name))
        .fetch_one(conn)
        .await?
        .try_get(0)?;
    Ok(u64::try_from(count).unwrap_or_default())
}

/// Up to `limit` rows after the key `after` (None: from the first), in key
/// order.
pub async fn read_after(
    conn: &mut Conn,
    table: &Table,
    after: Option<&[Value]>,
    limit: i64,
) -> Result<Vec<Vec<Value>>, StoreError> {
    let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
    let key = table.key.join(", ");
    let mut query =
        QueryBuilder::<Db>::new(format!("SELECT {} FROM {}", columns.join(", "), table.name));
    if let Some(after) = after {
        query.push(format!(" WHERE ({key}) > ("));
        let mut values = query.separated(", ");
        for value in after {
            match value {
                Value::Int(v) => values.push_bind(*v),
                Value::Text(v) => values.push_bind(v.clone()),
                Value::Bytes(v) => values.push_bind(v.clone()),
            };
        }
        query.push(")");
    }
    query
        .push(format!(" ORDER BY {key} LIMIT "))
        .push_bind(limit);
    let rows = query.build().fetch_all(conn).await?;
    rows.iter()
        .map(|row| {
            table
                .columns
                .iter()
                .enumerate()
                .map(|(i, (_, kind))| {
                    Ok(match kind {
                        Kind::Int => Value::Int(row.try_get(i)?),
                        Kind::Text => Value::Text(row.try_get(i)?),
                        Kind::Bytes => Value::Bytes(row.try_get(i)?),
                    })
                })
                .collect()
        })
        .collect()
}

/// Inserts `rows` (values in the table's column order).
pub async fn insert(conn: &mut Conn, table: &Table, rows: &[Vec<Value>]) -> Result<(), StoreError> {
    let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
    for chunk in rows.chunks(rows_per_statement(columns.len())) {
        let mut query = QueryBuilder::<Db>::new(format!(
            "INSERT INTO {} ({}) ",
            table.name,
            columns.join(", ")
        ));
        query.push_values(chunk, |mut row, values| {
            for value in values {
                match value {
                    Value::Int(v) => row.push_bind(*v),
                    Value::Text(v) => row.push_bind(v.clone()),
                    Value::Bytes(v) => row.push_bind(v.clone()),
                };
            }
        });
        query.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Whatever the backend needs after rows came in with their own ids.
pub async fn finish(conn: &mut Conn) -> Result<(), StoreError> {
    for statement in super::dialect::AFTER_COPY {
        sqlx::query(statement).execute(&mut *conn).await?;
    }
    Ok(())
}
