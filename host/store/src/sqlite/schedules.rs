//! Schedules on the embedded store (as `pg_schedules.rs`; migrations/sqlite/0010): each
//! operation one write transaction. `fire_due` needs no row locks: one writer at a time
//! (`BEGIN IMMEDIATE`), so a second scheduler finds the rows already moved on.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use tasker_core::schedule::{DEFAULT_GRACE, plan};
use tasker_core::template::Template;

use super::hot::{Tx, create_task_in};
use super::{SqliteStore, json, opt_ts, ts, us};
use crate::error::StoreError;
use crate::schedules::*;
use crate::store::Result;

const COLUMNS: &str = "name, namespace, template_name, version, cron, tz, context, missed, \
                       priority, paused, next_fire_at, last_fired_at, source, created_at, \
                       updated_at";

fn get<'r, T>(r: &'r SqliteRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    r.try_get(name)
        .map_err(|e| StoreError::decode(format!("column {name}"), e))
}

fn row(r: &SqliteRow) -> Result<ScheduleRow> {
    Ok(ScheduleRow {
        name: get(r, "name")?,
        namespace: get(r, "namespace")?,
        template_name: get(r, "template_name")?,
        version: get(r, "version")?,
        cron: get(r, "cron")?,
        tz: get(r, "tz")?,
        context: json(&get::<String>(r, "context")?, "schedules.context")?,
        missed: missed_of(&get::<String>(r, "missed")?)?,
        priority: priority_of(get(r, "priority")?)?,
        paused: get::<i64>(r, "paused")? != 0,
        next_fire_at: opt_ts(get(r, "next_fire_at")?)?,
        last_fired_at: opt_ts(get(r, "last_fired_at")?)?,
        source: ScheduleSource::parse(&get::<String>(r, "source")?)?,
        created_at: ts(get(r, "created_at")?)?,
        updated_at: ts(get(r, "updated_at")?)?,
    })
}

async fn template_in(tx: &mut Tx, key: &str) -> Result<Option<Template>> {
    let def: Option<String> =
        sqlx::query_scalar("SELECT definition FROM templates WHERE template_key = ?")
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?;
    def.map(|d| {
        let v = json(&d, "definition")?;
        serde_json::from_value(v).map_err(|e| StoreError::decode(format!("template {key}"), e))
    })
    .transpose()
}

async fn upsert_in(tx: &mut Tx, s: &Checked, now: DateTime<Utc>) -> Result<ScheduleRow> {
    let existing: Option<(String, String, i64, Option<i64>)> =
        sqlx::query_as("SELECT cron, tz, paused, next_fire_at FROM schedules WHERE name = ?")
            .bind(&s.name)
            .fetch_optional(&mut **tx)
            .await?;
    let existing = existing
        .map(|(c, t, p, n)| Ok::<_, StoreError>((c, t, p != 0, opt_ts(n)?)))
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
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13) \
         ON CONFLICT (name) DO UPDATE SET namespace = excluded.namespace, \
             template_name = excluded.template_name, version = excluded.version, \
             cron = excluded.cron, tz = excluded.tz, context = excluded.context, \
             missed = excluded.missed, priority = excluded.priority, \
             paused = excluded.paused, next_fire_at = excluded.next_fire_at, \
             source = excluded.source, updated_at = excluded.updated_at \
         RETURNING {COLUMNS}"
    ))
    .bind(&s.name)
    .bind(&s.namespace)
    .bind(&s.template_name)
    .bind(&s.version)
    .bind(s.cron.pattern())
    .bind(s.cron.tz())
    .bind(s.context.to_string())
    .bind(s.missed.as_str())
    .bind(s.priority.map(|p| i64::from(p.get())))
    .bind(i64::from(paused))
    .bind(next.map(us))
    .bind(s.source.as_str())
    .bind(us(now))
    .fetch_one(&mut **tx)
    .await?;
    row(&r)
}

pub(super) async fn create_schedule(
    st: &SqliteStore,
    s: &NewSchedule,
    now: DateTime<Utc>,
) -> Result<ScheduleRow> {
    let mut tx = st.write().await?;
    let template = template_in(&mut tx, &s.template_key).await?;
    let checked = Checked::by_hand(s, template.as_ref())?;
    let out = upsert_in(&mut tx, &checked, now).await?;
    tx.commit().await?;
    Ok(out)
}

/// The schedules of a template's `schedules:` section, in the transaction that registers it.
pub(super) async fn upsert_of_template(
    tx: &mut Tx,
    t: &Template,
    now: DateTime<Utc>,
) -> Result<()> {
    for s in Checked::of_template(t)? {
        upsert_in(tx, &s, now).await?;
    }
    Ok(())
}

pub(super) async fn list_schedules(st: &SqliteStore) -> Result<Vec<ScheduleRow>> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM schedules ORDER BY name"))
        .fetch_all(st.reader())
        .await?;
    rows.iter().map(row).collect()
}

pub(super) async fn schedule(st: &SqliteStore, name: &str) -> Result<Option<ScheduleRow>> {
    let r = sqlx::query(&format!("SELECT {COLUMNS} FROM schedules WHERE name = ?"))
        .bind(name)
        .fetch_optional(st.reader())
        .await?;
    r.as_ref().map(row).transpose()
}

pub(super) async fn set_paused(
    st: &SqliteStore,
    name: &str,
    paused: bool,
    now: DateTime<Utc>,
) -> Result<ScheduleRow> {
    let mut tx = st.write().await?;
    let r = sqlx::query(&format!("SELECT {COLUMNS} FROM schedules WHERE name = ?"))
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
        "UPDATE schedules SET paused = ?2, next_fire_at = ?3, updated_at = ?4 WHERE name = ?1 \
         RETURNING {COLUMNS}"
    ))
    .bind(name)
    .bind(i64::from(paused))
    .bind(next.map(us))
    .bind(us(now))
    .fetch_one(&mut *tx)
    .await?;
    let out = row(&r)?;
    tx.commit().await?;
    Ok(out)
}

pub(super) async fn delete_schedule(st: &SqliteStore, name: &str) -> Result<bool> {
    let mut tx = st.write().await?;
    let n = sqlx::query("DELETE FROM schedules WHERE name = ?")
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n > 0)
}

pub(super) async fn fire_due(
    st: &SqliteStore,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<FiredSchedule>> {
    check_fire_limit(limit)?;
    let mut tx = st.write().await?;
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM schedules \
         WHERE next_fire_at <= ?1 AND paused = 0 \
         ORDER BY next_fire_at, name LIMIT ?2"
    ))
    .bind(us(now))
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
            sqlx::query("SAVEPOINT fire").execute(&mut *tx).await?;
            match create_task_in(&mut tx, &task, now).await {
                Ok(c) => {
                    sqlx::query("RELEASE fire").execute(&mut *tx).await?;
                    fired.task_id = Some(c.task_id);
                    fired.created = c.created;
                }
                Err(e) => {
                    sqlx::query("ROLLBACK TO fire").execute(&mut *tx).await?;
                    sqlx::query("RELEASE fire").execute(&mut *tx).await?;
                    if matches!(e, StoreError::Unavailable(_) | StoreError::Conflict { .. }) {
                        return Err(e);
                    }
                    fired.error = Some(e.to_string());
                }
            }
        }
        sqlx::query(
            "UPDATE schedules SET next_fire_at = ?2, \
                 last_fired_at = coalesce(?3, last_fired_at), updated_at = ?4 \
             WHERE name = ?1",
        )
        .bind(&s.name)
        .bind(tick.next.map(us))
        .bind(fired.task_id.and(tick.fire).map(us))
        .bind(us(now))
        .execute(&mut *tx)
        .await?;
        out.push(fired);
    }
    tx.commit().await?;
    Ok(out)
}
