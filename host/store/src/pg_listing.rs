//! PostgreSQL side of the listings and API tokens (`listing.rs`): plain statements, no
//! functions (migrations/0012_api.sql adds the table and the index they use). The embedded
//! store's side is `sqlite/listing.rs`, with the same filters, order and errors.

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgRow};

use crate::listing::*;
use crate::pg::{TASK_COLUMNS, col, task_row, task_state, u32_col};
use crate::pg_events::query;
use crate::store::Result;
use crate::types::*;

/// Templates in byte order of their keys (`COLLATE "C"`, as SQLite compares text), whatever
/// the database's collation.
pub(crate) async fn list_templates(
    pool: &PgPool,
    after: Option<&str>,
    limit: u32,
) -> Result<Page<TemplateSummary, String>> {
    check_limit(limit)?;
    let rows = sqlx::query(
        "SELECT tp.id, tp.template_key, n.name AS namespace, tp.name, tp.version, \
                tp.description, tp.step_count, tp.created_at \
         FROM templates tp JOIN namespaces n ON n.id = tp.namespace_id \
         WHERE $1::text IS NULL OR tp.template_key > $1 COLLATE \"C\" \
         ORDER BY tp.template_key COLLATE \"C\" \
         LIMIT $2",
    )
    .bind(after)
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    let items = rows
        .iter()
        .map(template_summary)
        .collect::<Result<Vec<_>>>()?;
    Ok(page(items, limit, |t| t.key.clone()))
}

fn template_summary(row: &PgRow) -> Result<TemplateSummary> {
    Ok(TemplateSummary {
        template_id: col(row, "id")?,
        key: col(row, "template_key")?,
        namespace: col(row, "namespace")?,
        name: col(row, "name")?,
        version: col(row, "version")?,
        description: col(row, "description")?,
        step_count: u32_col(row, "step_count")?,
        created_at: col(row, "created_at")?,
    })
}

/// The statement is `listing.rs`'s [`tasks_sql`], bound by `pg_events.rs`'s `query`.
pub(crate) async fn list_tasks(
    pool: &PgPool,
    filter: &TaskFilter,
    page_req: TaskPageRequest,
) -> Result<Page<TaskRow, TaskId>> {
    check_limit(page_req.limit)?;
    let (sql, binds) = tasks_sql(&ListDialect::POSTGRES, TASK_COLUMNS, filter, page_req);
    let rows = query(&sql, binds).fetch_all(pool).await?;
    let items = rows.iter().map(task_row).collect::<Result<Vec<_>>>()?;
    Ok(page(items, page_req.limit, |t| t.id))
}

/// The statement is `listing.rs`'s [`task_counts_sql`].
pub(crate) async fn count_tasks(pool: &PgPool, filter: &TaskFilter) -> Result<TaskCounts> {
    let (sql, binds) = task_counts_sql(&ListDialect::POSTGRES, filter);
    let rows = query(&sql, binds).fetch_all(pool).await?;
    let mut counts = TaskCounts::default();
    for row in &rows {
        let state: String = col(row, "state")?;
        let n: i64 = col(row, "n")?;
        counts.add(task_state(&state)?, u64::try_from(n).unwrap_or(0));
    }
    Ok(counts)
}

const TOKEN_COLUMNS: &str = "id, name, hash, permissions, created_at, expires_at, revoked_at";

fn token_row(row: &PgRow) -> Result<TokenRow> {
    Ok(TokenRow {
        id: col(row, "id")?,
        name: col(row, "name")?,
        hash: col(row, "hash")?,
        permissions: col(row, "permissions")?,
        created_at: col(row, "created_at")?,
        expires_at: col(row, "expires_at")?,
        revoked_at: col(row, "revoked_at")?,
    })
}

/// A taken name or hash inserts nothing (`ON CONFLICT DO NOTHING`, which also settles two
/// concurrent creates) and is refused by name.
pub(crate) async fn create_token(
    pool: &PgPool,
    token: &NewToken,
    now: DateTime<Utc>,
) -> Result<TokenRow> {
    check_new_token(token)?;
    let row = sqlx::query(&format!(
        "INSERT INTO api_tokens (name, hash, permissions, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING {TOKEN_COLUMNS}"
    ))
    .bind(&token.name)
    .bind(&token.hash)
    .bind(&token.permissions)
    .bind(now)
    .bind(token.expires_at)
    .fetch_optional(pool)
    .await?;
    if let Some(row) = row {
        return token_row(&row);
    }
    // Tokens are never deleted: the row that conflicted is still there.
    let name_taken: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_tokens WHERE name = $1)")
            .bind(&token.name)
            .fetch_one(pool)
            .await?;
    Err(token_conflict(&token.name, name_taken))
}

pub(crate) async fn token_by_hash(pool: &PgPool, hash: &str) -> Result<Option<TokenRow>> {
    let row = sqlx::query(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE hash = $1"
    ))
    .bind(hash)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(token_row).transpose()
}

pub(crate) async fn list_tokens(pool: &PgPool) -> Result<Vec<TokenRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(token_row).collect()
}

pub(crate) async fn revoke_token(pool: &PgPool, name: &str, now: DateTime<Utc>) -> Result<bool> {
    let done =
        sqlx::query("UPDATE api_tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL")
            .bind(name)
            .bind(now)
            .execute(pool)
            .await?;
    Ok(done.rows_affected() == 1)
}
