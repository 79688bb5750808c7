//! Listings and API tokens on SQLite: PostgreSQL's `pg_listing.rs` statement for statement,
//! with the same filters, order, pages and errors (`migrations/sqlite/0003_api.sql`). Reads
//! run on the reader pool, token writes in a write transaction.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Sqlite};

use super::rows::{TASK_COLUMNS, col, opt_ts_col, task_row, ts_col, u32_col};
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

pub(super) async fn list_tasks(
    s: &SqliteStore,
    filter: &TaskFilter,
    page_req: TaskPageRequest,
) -> Result<Page<TaskRow, TaskId>> {
    check_limit(page_req.limit)?;
    let mut q = QueryBuilder::<Sqlite>::new(format!(
        "SELECT {TASK_COLUMNS} FROM tasks t JOIN templates tp ON tp.id = t.template_id \
         WHERE 1"
    ));
    if let Some(before) = page_req.before {
        q.push(" AND t.id < ").push_bind(before);
    }
    match filter.states.as_slice() {
        [] => {}
        // One state reads `tasks_state` backwards, already in the listing's order.
        [one] => {
            q.push(" AND t.state = ").push_bind(one.as_str());
        }
        many => {
            let states = Value::from(many.iter().map(|s| s.as_str()).collect::<Vec<_>>());
            q.push(" AND t.state IN (SELECT value FROM json_each(")
                .push_bind(states.to_string())
                .push("))");
        }
    }
    match filter.template.as_deref().map(template_filter) {
        None => {}
        Some(TemplateMatch::Key(key)) => {
            q.push(" AND tp.template_key = ").push_bind(key);
        }
        Some(TemplateMatch::Name(name)) => {
            q.push(
                " AND t.template_id IN (SELECT x.id FROM templates x \
                 JOIN namespaces n ON n.id = x.namespace_id WHERE n.name || '/' || x.name = ",
            )
            .push_bind(name)
            .push(")");
        }
    }
    if let Some(tag) = &filter.tag {
        // A string element of a `tags` array (not an object's value, nor a lone string), as
        // PostgreSQL's `jsonb_typeof(...) = 'array' AND metadata->'tags' ? tag`.
        q.push(
            " AND json_type(t.metadata, '$.tags') = 'array' AND EXISTS (SELECT 1 FROM \
             json_each(t.metadata, '$.tags') WHERE type = 'text' AND value = ",
        )
        .push_bind(tag)
        .push(")");
    }
    if let Some(key) = &filter.identity_key {
        q.push(" AND t.identity_key = ").push_bind(key);
    }
    range(
        &mut q,
        "t.created_at",
        filter.created_after,
        filter.created_before,
    );
    range(
        &mut q,
        "t.finished_at",
        filter.finished_after,
        filter.finished_before,
    );
    q.push(" ORDER BY t.id DESC LIMIT ")
        .push_bind(i64::from(page_req.limit) + 1);
    let rows = q.build().fetch_all(s.reader()).await?;
    let items = rows.iter().map(task_row).collect::<Result<Vec<_>>>()?;
    Ok(page(items, page_req.limit, |t| t.id))
}

/// `[after, before)` on a column of instants (a NULL instant is in no range).
fn range(
    q: &mut QueryBuilder<'_, Sqlite>,
    column: &str,
    after: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
) {
    if let Some(after) = after {
        q.push(format!(" AND {column} >= ")).push_bind(us(after));
    }
    if let Some(before) = before {
        q.push(format!(" AND {column} < ")).push_bind(us(before));
    }
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
