//! PostgreSQL side of schedules (`schedules.rs`; migration 0023): plain statements in one
//! transaction per operation. `fire_due` locks the due rows `FOR UPDATE SKIP LOCKED`, decides
//! each by `tasker_core::schedule::plan` in Rust, creates the instant's task with
//! `create_task` (identity key `schedule:<name>:<instant>`) and moves the row on, all in the
//! transaction: a second scheduler skips the locked rows, or finds them no longer due once
//! they commit.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, Transaction};
use tasker_core::schedule::{DEFAULT_GRACE, plan};
use tasker_core::template::Template;

use crate::error::StoreError;
use crate::pg::col;
use crate::schedules::*;
use crate::store::Result;

const COLUMNS: &str = "name, namespace, template_name, version, cron, tz, context, missed, \
                       priority, paused, next_fire_at, last_fired_at, source, created_at, \
                       updated_at";

fn row(r: &PgRow) -> Result<ScheduleRow> {
    Ok(ScheduleRow {
        name: col(r, "name")?,
        namespace: col(r, "namespace")?,
        template_name: col(r, "template_name")?,
        version: col(r, "version")?,
        cron: col(r, "cron")?,
        tz: col(r, "tz")?,
        context: col(r, "context")?,
        missed: missed_of(&col::<String>(r, "missed")?)?,
        priority: priority_of(col::<Option<i32>>(r, "priority")?.map(i64::from))?,
        paused: col(r, "paused")?,
        next_fire_at: col(r, "next_fire_at")?,
        last_fired_at: col(r, "last_fired_at")?,
        source: ScheduleSource::parse(&col::<String>(r, "source")?)?,
        created_at: col(r, "created_at")?,
        updated_at: col(r, "updated_at")?,
    })
}

async fn template_in(
    tx: &mut Transaction<'static, Postgres>,
    key: &str,
) -> Result<Option<Template>> {
    let v: Option<Value> =
        sqlx::query_scalar("SELECT definition FROM templates WHERE template_key = $1")
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?;
    v.map(|v| {
        serde_json::from_value(v).map_err(|e| StoreError::decode(format!("template {key}"), e))
    })
    .transpose()
}

/// Insert or replace a checked schedule (keeping its pause state, see
/// [`Checked::upserted_state`]).
pub(crate) async fn upsert_in(
    tx: &mut Transaction<'static, Postgres>,
    s: &Checked,
    now: DateTime<Utc>,
) -> Result<ScheduleRow> {
    let existing = sqlx::query(
        "SELECT cron, tz, paused, next_fire_at FROM schedules WHERE name = $1 FOR UPDATE",
    )
    .bind(&s.name)
    .fetch_optional(&mut **tx)
    .await?;
    let existing = existing
        .map(
            |r| -> Result<(String, String, bool, Option<DateTime<Utc>>)> {
                Ok((
                    col(&r, "cron")?,
                    col(&r, "tz")?,
                    col(&r, "paused")?,
                    col(&r, "next_fire_at")?,
                ))
            },
        )
        .transpose()?;
    let (paused, next) = s.upserted_state(
        existing
            .as_ref()
            .map(|(c, t, p, n)| (c.as_str(), t.as_str(), *p, *n)),
        now,
    );
    let r = sqlx::query(&format!(
        "INSERT INTO schedules (name, namespace, template_name, version, cron, tz, context, \
                                missed, priority, paused, next_fire_at, source, created_at, \
                                updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13) \
         ON CONFLICT (name) DO UPDATE SET namespace = EXCLUDED.namespace, \
             template_name = EXCLUDED.template_name, version = EXCLUDED.version, \
             cron = EXCLUDED.cron, tz = EXCLUDED.tz, context = EXCLUDED.context, \
             missed = EXCLUDED.missed, priority = EXCLUDED.priority, \
             paused = EXCLUDED.paused, next_fire_at = EXCLUDED.next_fire_at, \
             source = EXCLUDED.source, updated_at = EXCLUDED.updated_at \
         RETURNING {COLUMNS}"
    ))
    .bind(&s.name)
    .bind(&s.namespace)
    .bind(&s.template_name)
    .bind(&s.version)
    .bind(s.cron.pattern())
    .bind(s.cron.tz())
    .bind(&s.context)
    .bind(s.missed.as_str())
    .bind(s.priority.map(|p| i32::from(p.get())))
    .bind(paused)
    .bind(next)
    .bind(s.source.as_str())
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    row(&r)
}

pub(crate) async fn create_schedule(
    pool: &PgPool,
    s: &NewSchedule,
    now: DateTime<Utc>,
) -> Result<ScheduleRow> {
    let mut tx = pool.begin().await?;
    let template = template_in(&mut tx, &s.template_key).await?;
    let checked = Checked::by_hand(s, template.as_ref())?;
    let out = upsert_in(&mut tx, &checked, now).await?;
    tx.commit().await?;
    Ok(out)
}

pub(crate) async fn list_schedules(pool: &PgPool) -> Result<Vec<ScheduleRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM schedules ORDER BY name COLLATE \"C\""
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(row).collect()
}

pub(crate) async fn schedule(pool: &PgPool, name: &str) -> Result<Option<ScheduleRow>> {
    let r = sqlx::query(&format!("SELECT {COLUMNS} FROM schedules WHERE name = $1"))
        .bind(name)
        .fetch_optional(pool)
        .await?;
    r.as_ref().map(row).transpose()
}

/// Pause (no instant fires while paused) or resume (from its next instant after `now`).
pub(crate) async fn set_paused(
    pool: &PgPool,
    name: &str,
    paused: bool,
    now: DateTime<Utc>,
) -> Result<ScheduleRow> {
    let mut tx = pool.begin().await?;
    let r = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM schedules WHERE name = $1 FOR UPDATE"
    ))
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    let current = r
        .as_ref()
        .map(row)
        .transpose()?
        .ok_or_else(|| not_found(name))?;
    if current.paused == paused {
        tx.rollback().await?;
        return Ok(current);
    }
    let next = if paused {
        None
    } else {
        current.cron()?.next_after(now)
    };
    let r = sqlx::query(&format!(
        "UPDATE schedules SET paused = $2, next_fire_at = $3, updated_at = $4 WHERE name = $1 \
         RETURNING {COLUMNS}"
    ))
    .bind(name)
    .bind(paused)
    .bind(next)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let out = row(&r)?;
    tx.commit().await?;
    Ok(out)
}

pub(crate) async fn delete_schedule(pool: &PgPool, name: &str) -> Result<bool> {
    let n = sqlx::query("DELETE FROM schedules WHERE name = $1")
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(n > 0)
}

pub(crate) async fn fire_due(
    pool: &PgPool,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<FiredSchedule>> {
    check_fire_limit(limit)?;
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM schedules \
         WHERE next_fire_at <= $1 AND NOT paused \
         ORDER BY next_fire_at, name \
         LIMIT $2 FOR UPDATE SKIP LOCKED"
    ))
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let s = row(r)?;
        let Some(due) = s.next_fire_at else { continue };
        let Some(tick) = plan(&s.cron()?, s.missed, due, now, DEFAULT_GRACE) else {
            continue;
        };
        let mut fired = FiredSchedule {
            name: s.name.clone(),
            instant: tick.fire,
            task_id: None,
            created: false,
            missed: tick.missed,
            next_fire_at: tick.next,
            error: None,
        };
        if let Some(instant) = tick.fire {
            let task = task_of(&s, instant);
            // A savepoint: a task that cannot be created (its template's concurrency key
            // refuses it, say) leaves the rest of the batch alone.
            sqlx::query("SAVEPOINT fire").execute(&mut *tx).await?;
            let created = sqlx::query("SELECT * FROM create_task($1, $2, $3, $4, $5, $6, $7)")
                .bind(&task.template_key)
                .bind(&task.context)
                .bind(&task.identity_key)
                .bind(&task.metadata)
                .bind(now)
                .bind(task.priority.map(|p| i32::from(p.get())))
                .bind(task.run_at)
                .fetch_one(&mut *tx)
                .await;
            match created {
                Ok(c) => {
                    sqlx::query("RELEASE SAVEPOINT fire")
                        .execute(&mut *tx)
                        .await?;
                    fired.task_id = Some(col(&c, "task_id")?);
                    fired.created = col(&c, "created")?;
                }
                Err(e) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT fire")
                        .execute(&mut *tx)
                        .await?;
                    let e = StoreError::from(e);
                    if matches!(e, StoreError::Unavailable(_) | StoreError::Conflict { .. }) {
                        return Err(e);
                    }
                    fired.error = Some(e.to_string());
                }
            }
        }
        sqlx::query(
            "UPDATE schedules SET next_fire_at = $2, \
                 last_fired_at = coalesce($3, last_fired_at), updated_at = $4 \
             WHERE name = $1",
        )
        .bind(&s.name)
        .bind(tick.next)
        .bind(fired.task_id.and(tick.fire))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        out.push(fired);
    }
    tx.commit().await?;
    Ok(out)
}

/// The schedules of a template's `schedules:` section, upserted in the transaction that
/// registers it.
pub(crate) async fn upsert_of_template(
    tx: &mut Transaction<'static, Postgres>,
    t: &Template,
    now: DateTime<Utc>,
) -> Result<()> {
    for s in Checked::of_template(t)? {
        upsert_in(tx, &s, now).await?;
    }
    Ok(())
}
