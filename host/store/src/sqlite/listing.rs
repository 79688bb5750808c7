//! Listings and API tokens on SQLite: PostgreSQL's `pg_listing.rs` statement for statement,
//! with the same filters, order, pages and errors (`migrations/sqlite/0003_api.sql`). Reads
//! run on the reader pool, token writes in a write transaction.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::SqliteRow;

use super::events::query;
use super::rows::{TASK_COLUMNS, col, opt_ts_col, task_row, task_state, ts_col, u32_col};
use super::{SqliteStore, us};
use crate::error::StoreError;
use crate::listing::*;
use crate::store::Result;
use crate::types::*;

/// Templates in key order (SQLite compares text bytewise, as PostgreSQL's `COLLATE "C"`).
pub(super) async fn list_templates(
    s: &SqliteStore,
    after: Option<&str>,
    limit: u32,
) -> Result<Page<TemplateSummary, String>> {
    check_limit(limit)?;
    let rows = sqlx::query(
        "SELECT tp.id, tp.template_key, n.name AS namespace, tp.name, tp.version, \
                tp.description, tp.step_count, tp.created_at \
         FROM templates tp JOIN namespaces n ON n.id = tp.namespace_id \
         WHERE ?1 IS NULL OR tp.template_key > ?1 \
         ORDER BY tp.template_key \
         LIMIT ?2",
    )
    .bind(after)
    .bind(i64::from(limit) + 1)
    .fetch_all(s.reader())
    .await?;
    let items = rows
        .iter()
        .map(template_summary)
        .collect::<Result<Vec<_>>>()?;
    Ok(page(items, limit, |t| t.key.clone()))
}

fn template_summary(row: &SqliteRow) -> Result<TemplateSummary> {
    Ok(TemplateSummary {
        template_id: col(row, "id")?,
        key: col(row, "template_key")?,
        namespace: col(row, "namespace")?,
        name: col(row, "name")?,
        version: col(row, "version")?,
        description: col(row, "description")?,
        step_count: u32_col(row, "step_count")?,
        created_at: ts_col(row, "created_at")?,
    })
}

/// The statement is `listing.rs`'s [`tasks_sql`], bound by `sqlite/events.rs`'s `query`.
pub(super) async fn list_tasks(
    s: &SqliteStore,
    filter: &TaskFilter,
    page_req: TaskPageRequest,
) -> Result<Page<TaskRow, TaskId>> {
    check_limit(page_req.limit)?;
    let (sql, binds) = tasks_sql(&ListDialect::SQLITE, TASK_COLUMNS, filter, page_req);
    let rows = query(&sql, binds).fetch_all(s.reader()).await?;
    let items = rows.iter().map(task_row).collect::<Result<Vec<_>>>()?;
    Ok(page(items, page_req.limit, |t| t.id))
}

/// The statement is `listing.rs`'s [`task_counts_sql`].
pub(super) async fn count_tasks(s: &SqliteStore, filter: &TaskFilter) -> Result<TaskCounts> {
    let (sql, binds) = task_counts_sql(&ListDialect::SQLITE, filter);
    let rows = query(&sql, binds).fetch_all(s.reader()).await?;
    let mut counts = TaskCounts::default();
    for row in &rows {
        let state: String = col(row, "state")?;
        let n: i64 = col(row, "n")?;
        counts.add(task_state(&state)?, u64::try_from(n).unwrap_or(0));
    }
    Ok(counts)
}

const TOKEN_COLUMNS: &str = "id, name, hash, permissions, created_at, expires_at, revoked_at";

fn token_row(row: &SqliteRow) -> Result<TokenRow> {
    let permissions: String = col(row, "permissions")?;
    Ok(TokenRow {
        id: col(row, "id")?,
        name: col(row, "name")?,
        hash: col(row, "hash")?,
        permissions: serde_json::from_str(&permissions)
            .map_err(|e| StoreError::decode("api_tokens.permissions", e))?,
        created_at: ts_col(row, "created_at")?,
        expires_at: opt_ts_col(row, "expires_at")?,
        revoked_at: opt_ts_col(row, "revoked_at")?,
    })
}

/// A taken name or hash inserts nothing and is refused by name, as on PostgreSQL.
pub(super) async fn create_token(
    s: &SqliteStore,
    token: &NewToken,
    now: DateTime<Utc>,
) -> Result<TokenRow> {
    check_new_token(token)?;
    let permissions = Value::from(token.permissions.clone()).to_string();
    let mut tx = s.write().await?;
    let row = sqlx::query(&format!(
        "INSERT INTO api_tokens (name, hash, permissions, created_at, expires_at) \
         VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING {TOKEN_COLUMNS}"
    ))
    .bind(&token.name)
    .bind(&token.hash)
    .bind(permissions)
    .bind(us(now))
    .bind(token.expires_at.map(us))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        let name_taken: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_tokens WHERE name = ?)")
                .bind(&token.name)
                .fetch_one(&mut *tx)
                .await?;
        tx.rollback().await?;
        return Err(token_conflict(&token.name, name_taken));
    };
    let out = token_row(&row)?;
    tx.commit().await?;
    Ok(out)
}

pub(super) async fn token_by_hash(s: &SqliteStore, hash: &str) -> Result<Option<TokenRow>> {
    let row = sqlx::query(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE hash = ?"
    ))
    .bind(hash)
    .fetch_optional(s.reader())
    .await?;
    row.as_ref().map(token_row).transpose()
}

pub(super) async fn list_tokens(s: &SqliteStore) -> Result<Vec<TokenRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id"
    ))
    .fetch_all(s.reader())
    .await?;
    rows.iter().map(token_row).collect()
}

pub(super) async fn revoke_token(s: &SqliteStore, name: &str, now: DateTime<Utc>) -> Result<bool> {
    let mut tx = s.write().await?;
    let done =
        sqlx::query("UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL")
            .bind(us(now))
            .bind(name)
            .execute(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}
