//! Plain reads on SQLite: templates, tasks, steps, attempts, transitions. Rows map to the
//! same types as PostgreSQL's (host/store/src/pg.rs), column for column.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use tasker_core::state::{StepState, TaskState};
use tasker_core::template::Template;

use super::{SqliteStore, json, opt_ts, ts};
use crate::attempt_log::{ATTEMPT_COLUMNS, AttemptLog, AttemptLogRow, LOGGED_OUTCOMES};
use crate::error::StoreError;
use crate::store::Result;
use crate::types::*;

/// A column, with the column named in the error.
pub(super) fn col<'r, T>(row: &'r SqliteRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(name)
        .map_err(|e| StoreError::decode(format!("column {name}"), e))
}

/// An INTEGER column that PostgreSQL keeps as a non-negative `int`.
pub(super) fn u32_col(row: &SqliteRow, name: &str) -> Result<u32> {
    let v: i64 = col(row, name)?;
    u32::try_from(v).map_err(|_| StoreError::decode(format!("column {name}"), "out of range"))
}

/// An `error_kind` column as an [`ErrorKind`](tasker_core::error_kind::ErrorKind).
fn kind_col(row: &SqliteRow, name: &str) -> Result<Option<tasker_core::error_kind::ErrorKind>> {
    stored_error_kind(name, col(row, name)?)
}

pub(super) fn ts_col(row: &SqliteRow, name: &str) -> Result<DateTime<Utc>> {
    ts(col(row, name)?)
}

pub(super) fn opt_ts_col(row: &SqliteRow, name: &str) -> Result<Option<DateTime<Utc>>> {
    opt_ts(col(row, name)?)
}

pub(super) fn json_col(row: &SqliteRow, name: &str) -> Result<Value> {
    json(&col::<String>(row, name)?, name)
}

pub(super) fn opt_json_col(row: &SqliteRow, name: &str) -> Result<Option<Value>> {
    col::<Option<String>>(row, name)?
        .map(|v| json(&v, name))
        .transpose()
}

pub(super) fn step_state(s: &str) -> Result<StepState> {
    s.parse()
        .map_err(|e: tasker_core::state::UnknownState| StoreError::decode("step state", e))
}

pub(super) fn task_state(s: &str) -> Result<TaskState> {
    s.parse()
        .map_err(|e: tasker_core::state::UnknownState| StoreError::decode("task state", e))
}

/// Ids as a JSON array, for `json_each(?)` (SQLite's stand-in for `= ANY ($1)`).
pub(super) fn id_list<T: Copy + Into<i64>>(ids: &[T]) -> String {
    Value::from(ids.iter().map(|&id| id.into()).collect::<Vec<i64>>()).to_string()
}

pub(super) async fn template(s: &SqliteStore, key: &str) -> Result<Option<Template>> {
    let def: Option<String> =
        sqlx::query_scalar("SELECT definition FROM templates WHERE template_key = ?")
            .bind(key)
            .fetch_optional(s.reader())
            .await?;
    def.map(|d| {
        // Through a Value, as PostgreSQL's jsonb column is read.
        let v = json(&d, "definition")?;
        serde_json::from_value(v).map_err(|e| StoreError::decode(format!("template {key}"), e))
    })
    .transpose()
}

/// migrations/0005_hooks.sql `first_attempt_at`: known steps only, one row each, by id.
pub(super) async fn first_attempt_at(
    s: &SqliteStore,
    step_ids: &[StepId],
) -> Result<Vec<(StepId, Option<DateTime<Utc>>)>> {
    if step_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(StepId, Option<i64>)> = sqlx::query_as(
        "SELECT s.id, coalesce((SELECT min(a.started_at) FROM attempts a WHERE a.step_id = s.id), \
                               s.last_attempted_at) \
         FROM steps s WHERE s.id IN (SELECT value FROM json_each(?)) ORDER BY s.id",
    )
    .bind(id_list(step_ids))
    .fetch_all(s.reader())
    .await?;
    rows.into_iter()
        .map(|(id, at)| Ok((id, opt_ts(at)?)))
        .collect()
}

/// `ready_at` of a task waiting for a concurrency slot (`concurrency::WAITING`) reads as not
/// ready.
const STEP_COLUMNS: &str = "id, task_id, position, name, state, unfinished_parents, \
    nullif(ready_at, 9223372036854775807) AS ready_at, \
    attempts, max_attempts, retryable, claim_count, lease_losses, max_lease_losses, worker, \
    lease_expires_at, last_attempted_at, last_failure_at, backoff_request_ms, last_error_kind, \
    result, finished_at";

fn step_row(row: &SqliteRow) -> Result<StepRow> {
    Ok(StepRow {
        id: col(row, "id")?,
        task_id: col(row, "task_id")?,
        position: u32_col(row, "position")?,
        name: col(row, "name")?,
        state: step_state(&col::<String>(row, "state")?)?,
        unfinished_parents: u32_col(row, "unfinished_parents")?,
        ready_at: opt_ts_col(row, "ready_at")?,
        attempts: u32_col(row, "attempts")?,
        max_attempts: u32_col(row, "max_attempts")?,
        retryable: col(row, "retryable")?,
        claim_count: col(row, "claim_count")?,
        lease_losses: u32_col(row, "lease_losses")?,
        max_lease_losses: u32_col(row, "max_lease_losses")?,
        worker: col(row, "worker")?,
        lease_expires_at: opt_ts_col(row, "lease_expires_at")?,
        last_attempted_at: opt_ts_col(row, "last_attempted_at")?,
        last_failure_at: opt_ts_col(row, "last_failure_at")?,
        backoff_request_ms: col(row, "backoff_request_ms")?,
        last_error_kind: kind_col(row, "last_error_kind")?,
        result: opt_json_col(row, "result")?,
        finished_at: opt_ts_col(row, "finished_at")?,
    })
}

pub(super) const TASK_COLUMNS: &str = "t.id, tp.template_key, t.state, t.context, t.identity_key, \
    t.metadata, t.step_count, t.unfinished_steps, t.error_steps, t.created_at, t.updated_at, \
    t.started_at, t.finished_at";

pub(super) fn task_row(row: &SqliteRow) -> Result<TaskRow> {
    Ok(TaskRow {
        id: col(row, "id")?,
        template_key: col(row, "template_key")?,
        state: task_state(&col::<String>(row, "state")?)?,
        context: json_col(row, "context")?,
        identity_key: col(row, "identity_key")?,
        metadata: json_col(row, "metadata")?,
        step_count: u32_col(row, "step_count")?,
        unfinished_steps: u32_col(row, "unfinished_steps")?,
        error_steps: u32_col(row, "error_steps")?,
        created_at: ts_col(row, "created_at")?,
        updated_at: ts_col(row, "updated_at")?,
        started_at: opt_ts_col(row, "started_at")?,
        finished_at: opt_ts_col(row, "finished_at")?,
    })
}

fn attempt_row(row: &SqliteRow) -> Result<AttemptRow> {
    let outcome: String = col(row, "outcome")?;
    let decision: Option<String> = col(row, "decision")?;
    Ok(AttemptRow {
        step_id: col(row, "step_id")?,
        attempt_no: col(row, "attempt_no")?,
        task_id: col(row, "task_id")?,
        worker: col(row, "worker")?,
        started_at: ts_col(row, "started_at")?,
        finished_at: ts_col(row, "finished_at")?,
        outcome: AttemptOutcome::parse(&outcome)
            .map_err(|e| StoreError::decode("attempts.outcome", e))?,
        error_kind: kind_col(row, "error_kind")?,
        message: col(row, "message")?,
        retryable: col(row, "retryable")?,
        decision: decision
            .as_deref()
            .map(RetryDecision::parse)
            .transpose()
            .map_err(|e| StoreError::decode("attempts.decision", e))?,
        next_ready_at: opt_ts_col(row, "next_ready_at")?,
        fuel: col(row, "fuel")?,
        peak_memory_bytes: col(row, "peak_memory_bytes")?,
        wall_us: col(row, "wall_us")?,
        plugin_hash: col(row, "plugin_hash")?,
        decided_by: col(row, "decided_by")?,
        decision_detail: col(row, "decision_detail")?,
        policy_warning: col(row, "policy_warning")?,
    })
}

fn transition_row<S>(
    row: &SqliteRow,
    id_col: &str,
    parse: fn(&str) -> Result<S>,
) -> Result<TransitionRow<S>> {
    Ok(TransitionRow {
        id: col(row, id_col)?,
        sort_key: u32_col(row, "sort_key")?,
        from_state: parse(&col::<String>(row, "from_state")?)?,
        to_state: parse(&col::<String>(row, "to_state")?)?,
        metadata: json_col(row, "metadata")?,
        most_recent: col(row, "most_recent")?,
        created_at: ts_col(row, "created_at")?,
    })
}

pub(super) async fn task(s: &SqliteStore, task_id: TaskId) -> Result<Option<TaskRow>> {
    let row = sqlx::query(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks t JOIN templates tp ON tp.id = t.template_id \
         WHERE t.id = ?"
    ))
    .bind(task_id)
    .fetch_optional(s.reader())
    .await?;
    row.as_ref().map(task_row).transpose()
}

pub(super) async fn steps_of_task(s: &SqliteStore, task_id: TaskId) -> Result<Vec<StepRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {STEP_COLUMNS} FROM steps WHERE task_id = ? ORDER BY id"
    ))
    .bind(task_id)
    .fetch_all(s.reader())
    .await?;
    rows.iter().map(step_row).collect()
}

pub(super) async fn step(s: &SqliteStore, step_id: StepId) -> Result<Option<StepRow>> {
    let row = sqlx::query(&format!("SELECT {STEP_COLUMNS} FROM steps WHERE id = ?"))
        .bind(step_id)
        .fetch_optional(s.reader())
        .await?;
    row.as_ref().map(step_row).transpose()
}

pub(super) async fn attempts_of_step(s: &SqliteStore, step_id: StepId) -> Result<Vec<AttemptRow>> {
    let sql =
        format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE step_id = ? ORDER BY attempt_no");
    let rows = sqlx::query(&sql)
        .bind(step_id)
        .fetch_all(s.reader())
        .await?;
    rows.iter().map(attempt_row).collect()
}

pub(super) async fn attempts_of_task(s: &SqliteStore, task_id: TaskId) -> Result<Vec<AttemptRow>> {
    let sql = format!(
        "SELECT {ATTEMPT_COLUMNS} FROM attempts \
         WHERE step_id IN (SELECT id FROM steps WHERE task_id = ?) \
         ORDER BY started_at, step_id, attempt_no"
    );
    let rows = sqlx::query(&sql)
        .bind(task_id)
        .fetch_all(s.reader())
        .await?;
    rows.iter().map(attempt_row).collect()
}

pub(super) async fn attempt_logs(
    s: &SqliteStore,
    step_id: StepId,
    attempt_no: Option<i64>,
) -> Result<Vec<AttemptLogRow>> {
    let sql = format!(
        "SELECT step_id, attempt_no, outcome, started_at, finished_at, logs FROM attempts \
         WHERE step_id = ?1 AND (?2 IS NULL OR attempt_no = ?2) \
           AND outcome IN {LOGGED_OUTCOMES} ORDER BY attempt_no"
    );
    let rows = sqlx::query(&sql)
        .bind(step_id)
        .bind(attempt_no)
        .fetch_all(s.reader())
        .await?;
    rows.iter()
        .map(|row| {
            let outcome: String = col(row, "outcome")?;
            let logs: Option<String> = col(row, "logs")?;
            let logs = logs
                .map(|t| serde_json::from_str(&t))
                .transpose()
                .map_err(|e| StoreError::decode("attempts.logs", e))?;
            Ok(AttemptLogRow {
                step_id: col(row, "step_id")?,
                attempt_no: col(row, "attempt_no")?,
                outcome: AttemptOutcome::parse(&outcome)
                    .map_err(|e| StoreError::decode("attempts.outcome", e))?,
                started_at: ts_col(row, "started_at")?,
                finished_at: ts_col(row, "finished_at")?,
                log: AttemptLog::from_json(logs)?,
            })
        })
        .collect()
}

pub(super) async fn step_transitions(
    s: &SqliteStore,
    step_id: StepId,
) -> Result<Vec<TransitionRow<StepState>>> {
    let rows = sqlx::query("SELECT * FROM step_transitions WHERE step_id = ? ORDER BY sort_key")
        .bind(step_id)
        .fetch_all(s.reader())
        .await?;
    rows.iter()
        .map(|r| transition_row(r, "step_id", step_state))
        .collect()
}

pub(super) async fn task_transitions(
    s: &SqliteStore,
    task_id: TaskId,
) -> Result<Vec<TransitionRow<TaskState>>> {
    let rows = sqlx::query("SELECT * FROM task_transitions WHERE task_id = ? ORDER BY sort_key")
        .bind(task_id)
        .fetch_all(s.reader())
        .await?;
    rows.iter()
        .map(|r| transition_row(r, "task_id", task_state))
        .collect()
}
