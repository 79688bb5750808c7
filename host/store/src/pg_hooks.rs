//! PostgreSQL side of event hooks (the outbox in `migrations/0005_hooks.sql`; its listing
//! and the redelivery of dead letters, `redeliver_hook_dead_letters`, in
//! `migrations/0013_hook_redelivery.sql`) and of the retry-policy inputs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder};

use crate::error::StoreError;
use crate::listing::{OutboxFilter, Page, check_limit, page, state_is_any};
use crate::pg::col;
use crate::store::Result;
use crate::types::*;

/// Custom events of accepted attempts, in the caller's transaction.
pub(crate) async fn enqueue_custom<'c, E: sqlx::PgExecutor<'c>>(
    db: E,
    events: &[CustomEventRecord],
    now: DateTime<Utc>,
) -> Result<()> {
    let ids: Vec<i64> = events.iter().map(|e| e.step_id.get()).collect();
    let tokens: Vec<i64> = events.iter().map(|e| e.token).collect();
    let names: Vec<String> = events.iter().map(|e| e.name.clone()).collect();
    let payloads: Vec<Value> = events.iter().map(|e| e.payload.clone()).collect();
    sqlx::query("SELECT enqueue_custom_events($1, $2, $3, $4, $5)")
        .bind(&ids)
        .bind(&tokens)
        .bind(&names)
        .bind(&payloads)
        .bind(now)
        .execute(db)
        .await?;
    Ok(())
}

fn job(row: &PgRow) -> Result<HookDeliveryJob> {
    let limits: Value = col(row, "limits")?;
    let grants: Value = col(row, "grants")?;
    let attempt: Option<i32> = col(row, "attempt")?;
    let max_attempts: i32 = col(row, "max_attempts")?;
    let delivery_no: i32 = col(row, "delivery_no")?;
    Ok(HookDeliveryJob {
        delivery_id: col(row, "delivery_id")?,
        token: col(row, "token")?,
        hook_id: col(row, "hook_id")?,
        component: col(row, "component")?,
        limits: serde_json::from_value(limits)
            .map_err(|e| StoreError::decode("template_hooks.limits", e))?,
        grants: serde_json::from_value(grants)
            .map_err(|e| StoreError::decode("template_hooks.grants", e))?,
        max_attempts: u32::try_from(max_attempts).unwrap_or(1),
        template_key: col(row, "template_key")?,
        task_id: col(row, "task_id")?,
        step_id: col(row, "step_id")?,
        step_name: col(row, "step_name")?,
        event_name: col(row, "event_name")?,
        attempt: attempt.and_then(|a| u32::try_from(a).ok()),
        payload: col(row, "payload")?,
        event_at: col(row, "event_at")?,
        delivery_no: u32::try_from(delivery_no).unwrap_or(1),
    })
}

/// claim_hook_deliveries; with `task`, only that task's rows.
pub(crate) async fn claim(
    db: &sqlx::PgPool,
    task: Option<TaskId>,
    worker: &str,
    limit: u32,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<HookDeliveryJob>> {
    let lease = crate::pg::interval(lease, "lease")?;
    let rows = sqlx::query("SELECT * FROM claim_hook_deliveries($1, $2, $3, $4, $5)")
        .bind(worker)
        .bind(i32::try_from(limit).unwrap_or(i32::MAX))
        .bind(lease)
        .bind(now)
        .bind(task)
        .fetch_all(db)
        .await?;
    rows.iter().map(job).collect()
}

pub(crate) async fn finish(
    db: &sqlx::PgPool,
    results: &[HookDeliveryResult],
    now: DateTime<Utc>,
) -> Result<Vec<HookFinishOutcome>> {
    if results.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = results.iter().map(|r| r.delivery_id).collect();
    let tokens: Vec<i32> = results.iter().map(|r| r.token).collect();
    let ok: Vec<bool> = results.iter().map(|r| r.error.is_none()).collect();
    let errors: Vec<Option<String>> = results.iter().map(|r| r.error.clone()).collect();
    let rows = sqlx::query("SELECT * FROM finish_hook_deliveries($1, $2, $3, $4, $5)")
        .bind(&ids)
        .bind(&tokens)
        .bind(&ok)
        .bind(&errors)
        .bind(now)
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(HookFinishOutcome {
                delivery_id: col(row, "delivery_id")?,
                accepted: col(row, "accepted")?,
                state: col::<Option<String>>(row, "state")?
                    .map(|s| stored_delivery_state(&s))
                    .transpose()?,
                next_attempt_at: col(row, "next_attempt_at")?,
            })
        })
        .collect()
}

pub(crate) async fn counts(db: &sqlx::PgPool, task_id: Option<TaskId>) -> Result<Vec<HookCounts>> {
    let rows = sqlx::query("SELECT * FROM hook_delivery_counts($1)")
        .bind(task_id)
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(HookCounts {
                hook_id: col(row, "hook_id")?,
                component: col(row, "component")?,
                pending: col(row, "pending")?,
                delivered: col(row, "delivered")?,
                dead: col(row, "dead")?,
            })
        })
        .collect()
}

/// The columns [`outbox_row`] reads.
const OUTBOX_COLUMNS: &str = "o.id, o.hook_id, o.task_id, o.step_id, o.step_name, \
    o.event_name, o.attempt, o.payload, o.event_at, o.state, o.attempts, o.claims, \
    o.next_attempt_at, o.lease_owner, o.lease_expires_at, o.last_error, o.finished_at, o.head";

fn outbox_row(row: &PgRow) -> Result<OutboxRow> {
    let attempt: Option<i32> = col(row, "attempt")?;
    Ok(OutboxRow {
        id: col(row, "id")?,
        hook_id: col(row, "hook_id")?,
        task_id: col(row, "task_id")?,
        step_id: col(row, "step_id")?,
        step_name: col(row, "step_name")?,
        event_name: col(row, "event_name")?,
        attempt: attempt.and_then(|a| u32::try_from(a).ok()),
        payload: col(row, "payload")?,
        event_at: col(row, "event_at")?,
        state: stored_delivery_state(&col::<String>(row, "state")?)?,
        attempts: col(row, "attempts")?,
        claims: col(row, "claims")?,
        next_attempt_at: col(row, "next_attempt_at")?,
        lease_owner: col(row, "lease_owner")?,
        lease_expires_at: col(row, "lease_expires_at")?,
        last_error: col(row, "last_error")?,
        finished_at: col(row, "finished_at")?,
        head: col(row, "head")?,
    })
}

pub(crate) async fn outbox_of_task(db: &sqlx::PgPool, task_id: TaskId) -> Result<Vec<OutboxRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {OUTBOX_COLUMNS} FROM hook_outbox o WHERE o.task_id = $1 ORDER BY o.id"
    ))
    .bind(task_id)
    .fetch_all(db)
    .await?;
    rows.iter().map(outbox_row).collect()
}

/// One statement per combination of filters, in id order. The states are an OR of literals
/// ([`state_is_any`]), so dead and pending rows are read from their partial indexes
/// (`hook_outbox_dead`, `hook_outbox_head`), not from the whole history; a task's rows from
/// `hook_outbox_task`.
pub(crate) async fn list_outbox(
    db: &sqlx::PgPool,
    filter: &OutboxFilter,
    after: Option<i64>,
    limit: u32,
) -> Result<Page<OutboxRow, i64>> {
    check_limit(limit)?;
    let mut q = QueryBuilder::<Postgres>::new(format!(
        "SELECT {OUTBOX_COLUMNS} FROM hook_outbox o WHERE true"
    ));
    if let Some(after) = after {
        q.push(" AND o.id > ").push_bind(after);
    }
    if let Some(hook) = filter.hook_id {
        q.push(" AND o.hook_id = ").push_bind(hook);
    }
    if let Some(task) = filter.task_id {
        q.push(" AND o.task_id = ").push_bind(task);
    }
    if !filter.states.is_empty() {
        q.push(" AND ")
            .push(state_is_any("o.state", &filter.states));
    }
    q.push(" ORDER BY o.id LIMIT ")
        .push_bind(i64::from(limit) + 1);
    let rows = q.build().fetch_all(db).await?;
    let items = rows.iter().map(outbox_row).collect::<Result<Vec<_>>>()?;
    Ok(page(items, limit, |r| r.id))
}

/// redeliver_hook_dead_letters (refusals are its 22023, naming the id).
pub(crate) async fn redeliver(
    db: &sqlx::PgPool,
    hook_id: Option<i64>,
    ids: Option<&[i64]>,
    now: DateTime<Utc>,
) -> Result<Vec<Redelivered>> {
    let rows = sqlx::query("SELECT * FROM redeliver_hook_dead_letters($1, $2, $3)")
        .bind(hook_id)
        .bind(ids)
        .bind(now)
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Redelivered {
                old_id: col(row, "old_id")?,
                new_id: col(row, "new_id")?,
                hook_id: col(row, "hook_id")?,
                task_id: col(row, "task_id")?,
            })
        })
        .collect()
}

pub(crate) async fn first_attempt_at(
    db: &sqlx::PgPool,
    step_ids: &[StepId],
) -> Result<Vec<(StepId, Option<DateTime<Utc>>)>> {
    let rows = sqlx::query("SELECT * FROM first_attempt_at($1)")
        .bind(step_ids)
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|row| Ok((col(row, "step_id")?, col(row, "first_at")?)))
        .collect()
}
