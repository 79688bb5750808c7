//! The event log on SQLite (`events.rs`; migrations/sqlite/0005_event_log.sql): the same
//! statements as PostgreSQL's `pg_events.rs`, on the reader pool.
//!
//! `tx` is `tasker_ctx.tx_seq`, bumped once by every write transaction
//! ([`SqliteStore::write`]). One writer at a time makes it commit order, and a statement
//! reads one snapshot, which holds every transaction up to some `tx` and none after: no
//! horizon is needed, an event is readable as soon as it commits.

use serde_json::Value;
use sqlx::Sqlite;
use sqlx::sqlite::SqliteRow;

use super::rows::{col, json_col, ts_col};
use super::{SqliteStore, us};
use crate::events::*;
use crate::listing::{Bind, check_limit};
use crate::store::Result;

const DIALECT: Dialect = Dialect {
    tx: "tx",
    tx_out: |a| format!("{a}.tx"),
    tx_in: |p| p,
    horizon: None,
    attempt: |a| format!("json_extract({a}.metadata, '$.attempt')"),
    placeholder: |n| format!("?{n}"),
};

/// `sql` with `binds` bound in order (the event log's and the task listing's statements).
pub(super) fn query(
    sql: &str,
    binds: Vec<Bind>,
) -> sqlx::query::Query<'_, Sqlite, sqlx::sqlite::SqliteArguments<'_>> {
    binds.into_iter().fold(sqlx::query(sql), |q, b| match b {
        Bind::Int(v) => q.bind(v),
        Bind::Int4(v) => q.bind(v),
        Bind::Text(v) => q.bind(v),
        // A JSON array, read with `json_each`.
        Bind::Texts(v) => q.bind(Value::from(v).to_string()),
        // The stored form of an instant.
        Bind::Instant(v) => q.bind(us(v)),
    })
}

fn event_row(row: &SqliteRow) -> Result<EventRow> {
    Ok(EventRow {
        tx: col(row, "tx")?,
        src: col(row, "src")?,
        entity: col(row, "entity")?,
        seq: col(row, "seq")?,
        task_id: col(row, "task_id")?,
        step_id: col(row, "step_id")?,
        step_name: col(row, "step_name")?,
        name: col(row, "name")?,
        from_state: col(row, "from_state")?,
        to_state: col(row, "to_state")?,
        attempt: col(row, "attempt")?,
        payload: json_col(row, "payload")?,
        at: ts_col(row, "at")?,
    })
}

pub(super) async fn events_after(
    s: &SqliteStore,
    filter: &EventFilter,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<StoredEvent>> {
    check_limit(limit)?;
    let after = after.map(Cursor::parse).transpose()?;
    let (sql, binds) = events_sql(&DIALECT, filter, after.as_ref(), limit);
    let rows = query(&sql, binds).fetch_all(s.reader()).await?;
    rows.iter().map(|r| event_row(r)?.into_event()).collect()
}

pub(super) async fn latest_event_cursor(
    s: &SqliteStore,
    filter: &EventFilter,
) -> Result<Option<String>> {
    let (sql, binds) = latest_sql(&DIALECT, filter);
    let row = query(&sql, binds).fetch_optional(s.reader()).await?;
    row.map(|r| Ok(event_row(&r)?.cursor()?.to_string()))
        .transpose()
}
