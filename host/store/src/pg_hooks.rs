//! PostgreSQL side of event hooks (the outbox in `migrations/0005_hooks.sql`) and of the
//! retry-policy inputs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;

use crate::error::StoreError;
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

pub(crate) async fn claim(
    db: &sqlx::PgPool,
    worker: &str,
    limit: u32,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<HookDeliveryJob>> {
    let lease = crate::pg::interval(lease, "lease")?;
    let rows = sqlx::query("SELECT * FROM claim_hook_deliveries($1, $2, $3, $4)")
        .bind(worker)
        .bind(i32::try_from(limit).unwrap_or(i32::MAX))
        .bind(lease)
        .bind(now)
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

pub(crate) async fn outbox_of_task(db: &sqlx::PgPool, task_id: TaskId) -> Result<Vec<OutboxRow>> {
    let rows = sqlx::query("SELECT * FROM hook_outbox WHERE task_id = $1 ORDER BY id")
        .bind(task_id)
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(OutboxRow {
                id: col(row, "id")?,
                hook_id: col(row, "hook_id")?,
                task_id: col(row, "task_id")?,
                step_id: col(row, "step_id")?,
                event_name: col(row, "event_name")?,
                payload: col(row, "payload")?,
                state: stored_delivery_state(&col::<String>(row, "state")?)?,
                attempts: col(row, "attempts")?,
                claims: col(row, "claims")?,
                last_error: col(row, "last_error")?,
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
