//! PostgreSQL side of the event log (`events.rs`; the columns and table in
//! migrations/0014_event_log.sql). Plain statements, no functions.
//!
//! An event's `tx` is the `xid8` of the transaction that wrote it (the column default
//! `pg_current_xact_id()`). Xids are handed out when a transaction first writes, not when it
//! commits, so a transaction with a smaller xid can still commit after a reader has passed
//! larger ones: reading up to the largest visible xid would skip its events for good. So a
//! reader returns only rows with `xid < pg_snapshot_xmin(pg_current_snapshot())`, its
//! statement's own snapshot: the xmin is the oldest transaction still running, so every
//! transaction below it has ended, committed (and visible to the snapshot) or aborted. No
//! event can appear below that horizon later, and the horizon only moves up, so a cursor
//! taken from a returned event is never overtaken: resuming from it is gap-free, and it is
//! strictly after everything returned, so there are no duplicates. The price is latency: an
//! event waits until every transaction older than its own (on the whole cluster, of any
//! database) has ended.

use sqlx::Postgres;
use sqlx::postgres::{PgPool, PgRow};

use crate::events::*;
use crate::listing::{Bind, check_limit};
use crate::pg::col;
use crate::store::Result;

const DIALECT: Dialect = Dialect {
    tx: "xid",
    tx_out: |a| format!("{a}.xid::text::bigint"),
    tx_in: |p| format!("{p}::bigint::text::xid8"),
    horizon: Some(|a| format!("{a}.xid < pg_snapshot_xmin(pg_current_snapshot())")),
    attempt: |a| format!("({a}.metadata ->> 'attempt')::int"),
    placeholder: |n| format!("${n}"),
};

/// `sql` with `binds` bound in order (the event log's and the task listing's statements).
pub(crate) fn query(
    sql: &str,
    binds: Vec<Bind>,
) -> sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments> {
    binds.into_iter().fold(sqlx::query(sql), |q, b| match b {
        Bind::Int(v) => q.bind(v),
        Bind::Int4(v) => q.bind(v),
        Bind::Text(v) => q.bind(v),
        // A `text[]`.
        Bind::Texts(v) => q.bind(v),
        // A `timestamptz`.
        Bind::Instant(v) => q.bind(v),
    })
}

fn event_row(row: &PgRow) -> Result<EventRow> {
    Ok(EventRow {
        tx: col(row, "tx")?,
        src: col(row, "src")?,
        entity: col(row, "entity")?,
        seq: i64::from(col::<i32>(row, "seq")?),
        task_id: col(row, "task_id")?,
        step_id: col(row, "step_id")?,
        step_name: col(row, "step_name")?,
        name: col(row, "name")?,
        from_state: col(row, "from_state")?,
        to_state: col(row, "to_state")?,
        attempt: col::<Option<i32>>(row, "attempt")?.map(i64::from),
        payload: col(row, "payload")?,
        at: col(row, "at")?,
    })
}

pub(crate) async fn events_after(
    pool: &PgPool,
    filter: &EventFilter,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<StoredEvent>> {
    check_limit(limit)?;
    let after = after.map(Cursor::parse).transpose()?;
    let (sql, binds) = events_sql(&DIALECT, filter, after.as_ref(), limit);
    let rows = query(&sql, binds).fetch_all(pool).await?;
    rows.iter().map(|r| event_row(r)?.into_event()).collect()
}

pub(crate) async fn latest_event_cursor(
    pool: &PgPool,
    filter: &EventFilter,
) -> Result<Option<String>> {
    let (sql, binds) = latest_sql(&DIALECT, filter);
    let row = query(&sql, binds).fetch_optional(pool).await?;
    row.map(|r| Ok(event_row(&r)?.cursor()?.to_string()))
        .transpose()
}
