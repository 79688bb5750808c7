//! Task operations on SQLite: cancel, retry, resolve. Mirrors PostgreSQL's `cancel_task`,
//! `retry_task` and `resolve_step` (host/store/sql/functions/) statement for statement (the audit triggers write the transitions); its RAISEs map to the
//! errors PostgreSQL's SQLSTATEs map to: P0002 -> NotFound, 55000 -> InvalidState.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::concurrency;
use super::hot::{Tx, commit, finalize_tasks, release_children};
use super::rows::{step_state, task_state};
use super::{SqliteStore, set_reason, us};
use crate::error::StoreError;
use crate::store::Result;
use crate::types::*;
use tasker_core::state::{StepState, TaskState};

async fn task_state_of(tx: &mut Tx, task_id: TaskId) -> Result<Option<TaskState>> {
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM tasks WHERE id = ?")
        .bind(task_id)
        .fetch_optional(&mut **tx)
        .await?;
    state.as_deref().map(task_state).transpose()
}

pub(super) async fn cancel_task(
    s: &SqliteStore,
    task_id: TaskId,
    now: DateTime<Utc>,
) -> Result<CancelOutcome> {
    let mut tx = s.write().await?;
    let outcome = cancel_in(&mut tx, task_id, us(now)).await?;
    if outcome.cancelled {
        commit(tx).await?;
    }
    Ok(outcome)
}

/// `cancel_task` inside a write transaction (also `create_task`'s cancel_in_progress).
pub(super) async fn cancel_in(tx: &mut Tx, task_id: TaskId, now: i64) -> Result<CancelOutcome> {
    let state = task_state_of(tx, task_id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("unknown task {task_id}")))?;
    if state == TaskState::Cancelled {
        return Ok(CancelOutcome {
            task_id,
            cancelled: false,
            steps_cancelled: 0,
        });
    }
    if state == TaskState::Complete {
        return Err(StoreError::InvalidState(format!(
            "task {task_id} is complete and cannot be cancelled"
        )));
    }
    set_reason(tx, Some("cancelled")).await?;

    // The in-flight claims, before their state changes: each gets a cancelled attempt.
    let running: Vec<(i64, i64, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT id, claim_count, worker, last_attempted_at FROM steps \
         WHERE task_id = ? AND state = 'in_progress' ORDER BY id",
    )
    .bind(task_id)
    .fetch_all(&mut **tx)
    .await?;
    let cancelled = sqlx::query(
        "UPDATE steps \
         SET state = 'cancelled', ready_at = NULL, lease_expires_at = NULL, finished_at = ?1, \
             updated_at = ?1 \
         WHERE task_id = ?2 AND state IN ('pending', 'in_progress', 'waiting_for_retry', 'error')",
    )
    .bind(now)
    .bind(task_id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    for (step_id, claim_count, worker, started_at) in running {
        sqlx::query(
            "INSERT INTO attempts (step_id, attempt_no, task_id, worker, started_at, finished_at, \
                                   outcome, error_kind, message) \
             VALUES (?, ?, ?, ?, ?, ?, 'cancelled', 'cancelled', \
                     'task cancelled while the step ran')",
        )
        .bind(step_id)
        .bind(claim_count)
        .bind(task_id)
        .bind(worker)
        .bind(started_at)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }

    let done = sqlx::query(
        "UPDATE tasks SET state = 'cancelled', finished_at = ?1, updated_at = ?1 \
         WHERE id = ?2 AND state IN ('pending', 'in_progress', 'error')",
    )
    .bind(now)
    .bind(task_id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if done == 0 {
        // PostgreSQL's guard against a task finishing between its read and its lock; the
        // single writer makes it unreachable here, but the answer stays the same.
        let state = task_state_of(tx, task_id)
            .await?
            .map_or("", TaskState::as_str);
        return Err(StoreError::InvalidState(format!(
            "task {task_id} is {state} and cannot be cancelled"
        )));
    }
    Ok(CancelOutcome {
        task_id,
        cancelled: true,
        steps_cancelled: count(cancelled)?,
    })
}

pub(super) async fn retry_task(
    s: &SqliteStore,
    task_id: TaskId,
    now: DateTime<Utc>,
) -> Result<RetryOutcome> {
    let now = us(now);
    let mut tx = s.write().await?;
    let state = task_state_of(&mut tx, task_id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("unknown task {task_id}")))?;
    if state != TaskState::Error {
        return Err(StoreError::InvalidState(format!(
            "task {task_id} is {state}; only a task in error can be retried"
        )));
    }
    set_reason(&mut tx, Some("task_retry")).await?;
    // A task with a concurrency key joins its key's line again (as PostgreSQL's retry_task).
    let key: Option<String> = sqlx::query_scalar("SELECT concurrency_key FROM tasks WHERE id = ?")
        .bind(task_id)
        .fetch_one(&mut *tx)
        .await?;

    let reset = sqlx::query(
        "UPDATE steps \
         SET state = 'pending', attempts = 0, lease_losses = 0, \
             ready_at = CASE WHEN unfinished_parents > 0 THEN NULL \
                             WHEN ?3 THEN ?4 ELSE ?1 END, \
             backoff_request_ms = NULL, finished_at = NULL, updated_at = ?1 \
         WHERE task_id = ?2 AND state = 'error'",
    )
    .bind(now)
    .bind(task_id)
    .bind(key.is_some())
    .bind(concurrency::WAITING)
    .execute(&mut *tx)
    .await?
    .rows_affected();

    let done = sqlx::query(
        "UPDATE tasks SET state = 'pending', error_steps = 0, finished_at = NULL, updated_at = ?1, \
                          concurrency_state = CASE WHEN ?3 THEN 'waiting' END \
         WHERE id = ?2 AND state = 'error'",
    )
    .bind(now)
    .bind(task_id)
    .bind(key.is_some())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if done == 0 {
        return Err(StoreError::InvalidState(format!(
            "task {task_id} left the error state during the retry"
        )));
    }
    if let Some(key) = &key {
        concurrency::admit(&mut tx, key, now).await?;
    }
    commit(tx).await?;
    Ok(RetryOutcome {
        task_id,
        steps_reset: count(reset)?,
    })
}

pub(super) async fn resolve_step(
    s: &SqliteStore,
    step_id: StepId,
    result: Option<Value>,
    now: DateTime<Utc>,
) -> Result<ResolveOutcome> {
    let now = us(now);
    let result = result
        .map(|v| serde_json::to_string(&v))
        .transpose()
        .map_err(|e| StoreError::InvalidInput(format!("step result: {e}")))?;
    let mut tx = s.write().await?;
    let (task_id, state): (TaskId, String) =
        sqlx::query_as("SELECT task_id, state FROM steps WHERE id = ?")
            .bind(step_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("unknown step {step_id}")))?;
    let state = step_state(&state)?;
    set_reason(&mut tx, Some("resolved_manually")).await?;
    if !matches!(
        state,
        StepState::Pending | StepState::WaitingForRetry | StepState::Error
    ) {
        return Err(StoreError::InvalidState(format!(
            "step {step_id} is {state}; only a pending, waiting_for_retry or error step can be \
             resolved"
        )));
    }

    sqlx::query(
        "UPDATE steps \
         SET state = 'resolved_manually', ready_at = NULL, result = ?1, finished_at = ?2, \
             updated_at = ?2 \
         WHERE id = ?3",
    )
    .bind(result)
    .bind(now)
    .bind(step_id)
    .execute(&mut *tx)
    .await?;
    let ready = release_children(&mut tx, &[step_id], now).await?;

    let task_state_now: String = sqlx::query_scalar(
        "UPDATE tasks \
         SET unfinished_steps = unfinished_steps - 1, \
             error_steps = error_steps - ?1, \
             updated_at = ?2 \
         WHERE id = ?3 \
         RETURNING state",
    )
    .bind(i64::from(state == StepState::Error))
    .bind(now)
    .bind(task_id)
    .fetch_one(&mut *tx)
    .await?;
    if task_state(&task_state_now)? == TaskState::Error {
        // Blocked before; unblocked now if something can move or nothing is left.
        sqlx::query(
            "UPDATE tasks SET state = 'pending', finished_at = NULL, updated_at = ?1 \
             WHERE id = ?2 \
               AND (unfinished_steps = 0 OR error_steps = 0 \
                    OR EXISTS (SELECT 1 FROM steps s WHERE s.task_id = tasks.id \
                               AND (s.state IN ('in_progress', 'waiting_for_retry') \
                                    OR s.ready_at IS NOT NULL)))",
        )
        .bind(now)
        .bind(task_id)
        .execute(&mut *tx)
        .await?;
    }
    finalize_tasks(&mut tx, &BTreeSet::from([task_id]), now).await?;
    let final_state = task_state_of(&mut tx, task_id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("unknown task {task_id}")))?;
    commit(tx).await?;
    Ok(ResolveOutcome {
        step_id,
        task_id,
        ready_children: ready,
        task_state: final_state,
    })
}

/// A row count as PostgreSQL's `int` result column.
fn count(n: u64) -> Result<u32> {
    u32::try_from(n).map_err(|_| StoreError::decode("row count", n))
}
