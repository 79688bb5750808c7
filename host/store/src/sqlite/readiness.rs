//! Readiness, execution context, dependency levels and health counts on SQLite.
//! Mirrors migrations/0002_readiness.sql: the queries gather the same facts, and the parts
//! PostgreSQL computes in SQL functions (the backoff formula, the status precedence) are the
//! same computations in Rust.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Sqlite, SqliteConnection};
use tasker_core::backoff::Backoff;
use tasker_core::priority::{AGING_PER_LEVEL_US, Priority};
use tasker_core::state::StepState;

use super::rows::{col, id_list, opt_ts_col, step_state, task_state, u32_col};
use super::{SqliteStore, ts};
use crate::error::StoreError;
use crate::store::Result;
use crate::types::*;

/// `get_step_readiness_status_batch`: every step of the tasks (ids as a JSON array), by
/// task then step id. The parent counts join the parents' rows, as PostgreSQL's does.
const READINESS_SQL: &str = "\
    SELECT s.id, s.task_id, s.name, s.state, s.attempts, s.max_attempts, s.retryable, \
           s.last_attempted_at, s.last_failure_at, s.backoff_request_ms, s.backoff_base_ms, \
           s.backoff_multiplier, s.backoff_cap_ms, s.backoff_jitter, s.priority, s.ready_at, \
           (SELECT count(*) FROM edges e JOIN steps ps ON ps.id = e.parent_id \
            WHERE e.child_id = s.id) AS total_parents, \
           (SELECT count(*) FROM edges e JOIN steps ps ON ps.id = e.parent_id \
            WHERE e.child_id = s.id AND ps.state IN ('complete', 'resolved_manually')) \
               AS completed_parents, \
           w.concurrency_key AS w_key, w.concurrency_limit AS w_limit, w.run_at AS w_run_at, \
           (SELECT k.holding FROM concurrency_keys k WHERE k.key = w.concurrency_key) \
               AS w_holding \
    FROM steps s \
    LEFT JOIN tasks w ON w.id = s.task_id AND w.concurrency_state = 'waiting' \
    WHERE s.task_id IN (SELECT value FROM json_each(?)) \
    ORDER BY s.task_id, s.id";

fn readiness_row(row: &SqliteRow, now: DateTime<Utc>) -> Result<ReadinessRow> {
    let step_id: StepId = col(row, "id")?;
    let state = step_state(&col::<String>(row, "state")?)?;
    let attempts = u32_col(row, "attempts")?;
    let max_attempts = u32_col(row, "max_attempts")?;
    let total_parents = u32_col(row, "total_parents")?;
    let completed_parents = u32_col(row, "completed_parents")?;
    let last_failure_at = opt_ts_col(row, "last_failure_at")?;
    let backoff_request_ms: Option<i64> = col(row, "backoff_request_ms")?;

    let waiting = matches!(state, StepState::Pending | StepState::WaitingForRetry);
    let dependencies_satisfied = total_parents == completed_parents;
    // A never-tried step has attempts = 0.
    let retry_eligible = waiting && attempts < max_attempts;
    // Only a step waiting for a retry has a retry time: its last interruption plus either the
    // requested delay or the backoff for its failure count (NULL without an interruption, as
    // NULL + interval is in SQL).
    let next_retry_at = match (state, last_failure_at) {
        (StepState::WaitingForRetry, Some(failed_at)) => {
            let delay_ms = match backoff_request_ms {
                Some(ms) => ms,
                None => backoff_ms(row, step_id.get(), attempts)?,
            };
            Some(plus_ms(failed_at, delay_ms)?)
        }
        _ => None,
    };
    let ready_at: Option<i64> = col(row, "ready_at")?;
    let concurrency = match col::<Option<String>>(row, "w_key")? {
        Some(key) => Some(ConcurrencyWait {
            key,
            holding: u32_col(row, "w_holding")?,
            limit: u32_col(row, "w_limit")?,
        }),
        None => None,
    };
    let now_us = now.timestamp_micros();
    // A delayed start: pending, and its ready time (its task's run_at while the task waits
    // for a concurrency slot) still ahead.
    let not_before = match (state, ready_at) {
        _ if concurrency.is_some() => match col::<Option<i64>>(row, "w_run_at")? {
            Some(at) if at > now_us && state == StepState::Pending && dependencies_satisfied => {
                Some(ts(at)?)
            }
            _ => None,
        },
        (StepState::Pending, Some(at)) if at > now_us => Some(ts(at)?),
        _ => None,
    };
    let ready_for_execution = waiting
        && dependencies_satisfied
        && retry_eligible
        && next_retry_at.is_none_or(|at| at <= now)
        && not_before.is_none()
        && concurrency.is_none();
    let p: i64 = col(row, "priority")?;
    let priority = Priority::new(p)
        .ok_or_else(|| StoreError::decode("steps.priority", format!("priority {p}")))?;

    Ok(ReadinessRow {
        step_id,
        task_id: col(row, "task_id")?,
        name: col(row, "name")?,
        state,
        dependencies_satisfied,
        total_parents,
        completed_parents,
        retry_eligible,
        attempts,
        max_attempts,
        retryable: col(row, "retryable")?,
        next_retry_at,
        last_attempted_at: opt_ts_col(row, "last_attempted_at")?,
        last_failure_at,
        backoff_request_ms,
        ready_for_execution,
        priority,
        not_before,
        // Counted by `ahead_of` for the ready ones.
        ahead: None,
        concurrency,
    })
}

/// For each ready step, the ready steps of higher priority that claims take before it
/// (claim key below its own), counted up to 1,000 per priority, as PostgreSQL's
/// get_step_readiness_status_batch counts them.
async fn ahead_of(
    db: &mut SqliteConnection,
    rows: &mut [ReadinessRow],
    ready_at: &[Option<i64>],
    now: DateTime<Utc>,
) -> Result<()> {
    let now = now.timestamp_micros();
    for (r, at) in rows.iter_mut().zip(ready_at) {
        let Some(at) = *at else { continue };
        if !r.ready_for_execution {
            continue;
        }
        let mut n = 0i64;
        for q in i64::from(r.priority.get()) + 1..=5 {
            let bound = now.min(at + AGING_PER_LEVEL_US * (q - i64::from(r.priority.get())));
            let c: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT 1 FROM steps \
                 WHERE priority = ? AND ready_at IS NOT NULL AND ready_at <= ? LIMIT 1000)",
            )
            .bind(q)
            .bind(bound)
            .fetch_one(&mut *db)
            .await?;
            n += c;
        }
        r.ahead = Some(n as u32);
    }
    Ok(())
}

/// `tasker_backoff_ms(base, multiplier, cap, jitter, step id, failure)`, through the Rust
/// formula it is bit-identical to.
fn backoff_ms(row: &SqliteRow, seed: i64, failure: u32) -> Result<i64> {
    let non_negative = |name: &str| -> Result<u64> {
        let v: i64 = col(row, name)?;
        u64::try_from(v).map_err(|_| StoreError::decode(format!("column {name}"), "negative"))
    };
    let b = Backoff {
        base_ms: non_negative("backoff_base_ms")?,
        multiplier: col(row, "backoff_multiplier")?,
        cap_ms: non_negative("backoff_cap_ms")?,
        jitter: col(row, "backoff_jitter")?,
    };
    if b.multiplier <= 0.0 {
        // tasker_backoff_ms raises invalid_parameter_value.
        return Err(StoreError::InvalidInput(format!(
            "backoff multiplier must be > 0, got {}",
            b.multiplier
        )));
    }
    // At most the cap, which came from an i64 column.
    i64::try_from(b.delay_ms(seed, failure))
        .map_err(|_| StoreError::decode("backoff delay", "out of range"))
}

/// `t + tasker_ms(ms)`.
fn plus_ms(t: DateTime<Utc>, ms: i64) -> Result<DateTime<Utc>> {
    ms.checked_mul(1000)
        .and_then(|us| t.timestamp_micros().checked_add(us))
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(|| {
            StoreError::InvalidInput(format!("retry time {t} + {ms} ms is out of range"))
        })
}

async fn readiness_on(
    db: &mut SqliteConnection,
    task_ids: &[TaskId],
    now: DateTime<Utc>,
) -> Result<Vec<ReadinessRow>> {
    if task_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query::<Sqlite>(READINESS_SQL)
        .bind(id_list(task_ids))
        .fetch_all(&mut *db)
        .await?;
    let ready_at = rows
        .iter()
        .map(|r| col::<Option<i64>>(r, "ready_at"))
        .collect::<Result<Vec<_>>>()?;
    let mut out = rows
        .iter()
        .map(|r| readiness_row(r, now))
        .collect::<Result<Vec<_>>>()?;
    ahead_of(db, &mut out, &ready_at, now).await?;
    Ok(out)
}

pub(super) async fn readiness(
    s: &SqliteStore,
    task_id: TaskId,
    step_ids: Option<&[StepId]>,
    now: DateTime<Utc>,
) -> Result<Vec<ReadinessRow>> {
    let mut conn = s.reader().acquire().await?;
    let mut rows = readiness_on(&mut conn, &[task_id], now).await?;
    if let Some(ids) = step_ids {
        let ids: HashSet<StepId> = ids.iter().copied().collect();
        rows.retain(|r| ids.contains(&r.step_id));
    }
    Ok(rows)
}

pub(super) async fn readiness_batch(
    s: &SqliteStore,
    task_ids: &[TaskId],
    now: DateTime<Utc>,
) -> Result<Vec<ReadinessRow>> {
    let mut conn = s.reader().acquire().await?;
    readiness_on(&mut conn, task_ids, now).await
}

/// `get_task_execution_context_batch`: known tasks only, by id.
pub(super) async fn execution_context_batch(
    s: &SqliteStore,
    task_ids: &[TaskId],
    now: DateTime<Utc>,
) -> Result<Vec<ExecutionContext>> {
    if task_ids.is_empty() {
        return Ok(Vec::new());
    }
    // One read transaction: the tasks and their steps from the same snapshot.
    let mut tx = s.reader().begin().await?;
    let tasks: Vec<(TaskId, String)> = sqlx::query_as(
        "SELECT id, state FROM tasks WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
    )
    .bind(id_list(task_ids))
    .fetch_all(&mut *tx)
    .await?;
    let steps = readiness_on(&mut tx, task_ids, now).await?;
    tx.commit().await?;

    tasks
        .into_iter()
        .map(|(id, state)| {
            let state = task_state(&state)?;
            Ok(crate::rules::execution_context(
                id,
                state,
                steps.iter().filter(|r| r.task_id == id),
            ))
        })
        .collect()
}

/// `calculate_dependency_levels`: the longest path from a root, by level then step id. The
/// same recursive walk as PostgreSQL's.
pub(super) async fn dependency_levels(
    s: &SqliteStore,
    task_id: TaskId,
) -> Result<Vec<DependencyLevel>> {
    let rows: Vec<(StepId, String, i64)> = sqlx::query_as(
        "WITH RECURSIVE walk (step_id, level) AS ( \
             SELECT s.id, 0 \
             FROM steps s \
             WHERE s.task_id = ? \
               AND NOT EXISTS (SELECT 1 FROM edges e WHERE e.child_id = s.id) \
             UNION ALL \
             SELECT e.child_id, w.level + 1 \
             FROM walk w JOIN edges e ON e.parent_id = w.step_id \
         ) \
         SELECT s.id, s.name, max(w.level) AS dependency_level \
         FROM walk w JOIN steps s ON s.id = w.step_id \
         GROUP BY s.id, s.name \
         ORDER BY max(w.level), s.id",
    )
    .bind(task_id)
    .fetch_all(s.reader())
    .await?;
    rows.into_iter()
        .map(|(step_id, name, level)| {
            let level = u32::try_from(level)
                .map_err(|_| StoreError::decode("dependency_level", "out of range"))?;
            Ok(DependencyLevel {
                step_id,
                name,
                level,
            })
        })
        .collect()
}

/// `get_system_health_counts`. PostgreSQL reports the server's connections to the database
/// and its `max_connections`; an embedded store has no server, so here they are this store's
/// own pools: the connections open now (writer + readers) and the most it will open.
pub(super) async fn health_counts(s: &SqliteStore, now: DateTime<Utc>) -> Result<HealthCounts> {
    let now = super::us(now);
    let row: SqliteRow = sqlx::query(
        "SELECT t.total AS total_tasks, t.pending AS pending_tasks, \
                t.in_progress AS in_progress_tasks, t.complete AS complete_tasks, \
                t.error AS error_tasks, t.cancelled AS cancelled_tasks, \
                s.total AS total_steps, s.pending AS pending_steps, \
                s.in_progress AS in_progress_steps, s.waiting AS waiting_for_retry_steps, \
                s.complete AS complete_steps, s.error AS error_steps, \
                s.cancelled AS cancelled_steps, s.resolved AS resolved_steps, \
                (SELECT count(*) FROM steps x WHERE x.ready_at IS NOT NULL AND x.ready_at <= ?1) \
                    AS ready_steps, \
                (SELECT count(*) FROM steps x WHERE x.ready_at > ?1 AND x.ready_at < ?2) \
                    AS retry_backlog, \
                (SELECT count(*) FROM steps x \
                 WHERE x.lease_expires_at IS NOT NULL AND x.lease_expires_at < ?1) \
                    AS expired_leases \
         FROM ( \
             SELECT count(*) AS total, \
                    count(*) FILTER (WHERE state = 'pending') AS pending, \
                    count(*) FILTER (WHERE state = 'in_progress') AS in_progress, \
                    count(*) FILTER (WHERE state = 'complete') AS complete, \
                    count(*) FILTER (WHERE state = 'error') AS error, \
                    count(*) FILTER (WHERE state = 'cancelled') AS cancelled \
             FROM tasks \
         ) t, ( \
             SELECT count(*) AS total, \
                    count(*) FILTER (WHERE state = 'pending') AS pending, \
                    count(*) FILTER (WHERE state = 'in_progress') AS in_progress, \
                    count(*) FILTER (WHERE state = 'waiting_for_retry') AS waiting, \
                    count(*) FILTER (WHERE state = 'complete') AS complete, \
                    count(*) FILTER (WHERE state = 'error') AS error, \
                    count(*) FILTER (WHERE state = 'cancelled') AS cancelled, \
                    count(*) FILTER (WHERE state = 'resolved_manually') AS resolved \
             FROM steps \
         ) s",
    )
    .bind(now)
    // Not a task waiting for its concurrency key's slot.
    .bind(super::concurrency::WAITING)
    .fetch_one(s.reader())
    .await?;
    let pools = [s.writer(), s.reader()];
    Ok(HealthCounts {
        total_tasks: col(&row, "total_tasks")?,
        pending_tasks: col(&row, "pending_tasks")?,
        in_progress_tasks: col(&row, "in_progress_tasks")?,
        complete_tasks: col(&row, "complete_tasks")?,
        error_tasks: col(&row, "error_tasks")?,
        cancelled_tasks: col(&row, "cancelled_tasks")?,
        total_steps: col(&row, "total_steps")?,
        pending_steps: col(&row, "pending_steps")?,
        in_progress_steps: col(&row, "in_progress_steps")?,
        waiting_for_retry_steps: col(&row, "waiting_for_retry_steps")?,
        complete_steps: col(&row, "complete_steps")?,
        error_steps: col(&row, "error_steps")?,
        cancelled_steps: col(&row, "cancelled_steps")?,
        resolved_steps: col(&row, "resolved_steps")?,
        ready_steps: col(&row, "ready_steps")?,
        retry_backlog: col(&row, "retry_backlog")?,
        expired_leases: col(&row, "expired_leases")?,
        active_connections: pools.iter().map(|p| i64::from(p.size())).sum(),
        max_connections: pools
            .iter()
            .map(|p| i64::from(p.options().get_max_connections()))
            .sum(),
    })
}
