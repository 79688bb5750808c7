//! Event-hook outbox on SQLite: custom events, delivery claims, results, counts, listings and
//! the redelivery of dead letters. Mirrors migrations/0005_hooks.sql and
//! 0013_hook_redelivery.sql; the outbox itself is filled by the triggers of
//! migrations/sqlite/0002_hooks.sql, in the same transaction as each state change.
//!
//! Those triggers are row-level where PostgreSQL's are statement-level, so outbox ids (the
//! delivery order of a (hook, task)) follow the order in which an operation writes its rows.
//! To get PostgreSQL's order, an operation must:
//! * update its steps before inserting their `attempts` rows (the events carry the step's
//!   attempt counter as the statement left it);
//! * insert `attempts` rows in (task_id, step_id, attempt_no) order;
//! * change task states in ascending task id, after the attempts rows of the same call;
//! * record custom events with [`enqueue_custom_events`] last, after every other write of
//!   complete / fail.
//!
//! PostgreSQL takes outbox ids under the task's row lock so that they follow commit order;
//! SQLite has one writer at a time, so ids follow commit order by construction.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Sqlite, Transaction};
use tasker_core::backoff::Backoff;

use super::rows::{col, id_list, json_col, opt_ts_col, ts_col};
use super::{SqliteStore, ts, us};
use crate::error::StoreError;
use crate::listing::{OutboxFilter, Page, check_limit, page, state_is_any};
use crate::store::Result;
use crate::types::*;

/// PostgreSQL keeps at most this many characters of a delivery error (`left(err, 4000)`).
const MAX_ERROR_CHARS: usize = 4000;

/// Record handlers' custom events (`custom.<name>`) in the event log (`task_events_custom`,
/// every task's) and for the hooks of their tasks, as PostgreSQL's `enqueue_custom_events`
/// does. Call it in the write transaction of a complete (`complete_with_events`) or fail
/// (`fail_decided`), after all of that operation's other writes, so that the events follow
/// the task's end in the outbox.
///
/// Pass `events` exactly as the caller gave them (input order is the order within a task)
/// and `now`, the operation's instant (the one written as the attempts' `finished_at`).
/// `accepted` (the ids of the steps the call accepted) is not consulted.
///
/// An event is kept when its attempt ended here: an `attempts` row for (step, token) that
/// ended at `now` as completed or failed. That is PostgreSQL's test. It drops a stale
/// token's events even when the step itself was accepted under its current token, and it
/// keeps the events of a repeated, refused call at the very instant of the accepted one;
/// filtering by `accepted` would differ from PostgreSQL in both cases.
pub(super) async fn enqueue_custom_events(
    tx: &mut Transaction<'static, Sqlite>,
    events: &[CustomEventRecord],
    _accepted: &[StepId],
    now: DateTime<Utc>,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let now = us(now);
    let mut kept: Vec<(i64, &CustomEventRecord)> = Vec::new();
    for e in events {
        let task: Option<i64> = sqlx::query_scalar(
            "SELECT s.task_id FROM steps s \
             WHERE s.id = ?1 AND EXISTS (\
                 SELECT 1 FROM attempts a \
                 WHERE a.step_id = ?1 AND a.attempt_no = ?2 AND a.finished_at = ?3 \
                   AND a.outcome IN ('completed', 'failed'))",
        )
        .bind(e.step_id)
        .bind(e.token)
        .bind(now)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(task) = task {
            kept.push((task, e));
        }
    }
    // PostgreSQL orders by (task, input position); the sort is stable.
    kept.sort_by_key(|(task, _)| *task);
    // Every kept event goes into the event log, for every task (ids in this order, as
    // PostgreSQL's), then to the outbox when some template has hooks.
    for (_, e) in &kept {
        // A JSON null payload arrives as SQL NULL in PostgreSQL, which writes '{}'.
        let payload = (!e.payload.is_null()).then(|| e.payload.to_string());
        sqlx::query(
            "INSERT INTO task_events_custom \
                 (tx, task_id, step_id, step_name, attempt, name, payload, created_at) \
             SELECT (SELECT tx_seq FROM tasker_ctx WHERE id = 1), s.task_id, s.id, s.name, \
                    s.attempts, 'custom.' || ?2, coalesce(?3, '{}'), ?4 \
             FROM steps s WHERE s.id = ?1",
        )
        .bind(e.step_id)
        .bind(&e.name)
        .bind(payload)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    let any_hooks: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM template_hooks)")
        .fetch_one(&mut **tx)
        .await?;
    if !any_hooks {
        return Ok(());
    }
    for (_, e) in kept {
        // A JSON null payload arrives as SQL NULL in PostgreSQL's fan-out, which writes '{}'.
        let payload = (!e.payload.is_null()).then(|| e.payload.to_string());
        sqlx::query(
            "INSERT INTO hook_events (task_id, step_id, step_name, name, attempt, payload, at) \
             SELECT s.task_id, s.id, s.name, 'custom.' || ?2, s.attempts, ?3, ?4 \
             FROM steps s WHERE s.id = ?1",
        )
        .bind(e.step_id)
        .bind(&e.name)
        .bind(payload)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn job(row: &SqliteRow) -> Result<HookDeliveryJob> {
    let limits = json_col(row, "limits")?;
    let grants = json_col(row, "grants")?;
    let attempt: Option<i64> = col(row, "attempt")?;
    let max_attempts: i64 = col(row, "max_attempts")?;
    let delivery_no: i64 = col(row, "delivery_no")?;
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
        payload: json_col(row, "payload")?,
        event_at: ts_col(row, "event_at")?,
        delivery_no: u32::try_from(delivery_no).unwrap_or(1),
    })
}

/// claim_hook_deliveries: up to `limit` due, unleased (or lease expired) heads, oldest due
/// first, leased to `worker`; returned by id. With `task`, only that task's rows.
pub(super) async fn claim_deliveries(
    s: &SqliteStore,
    task: Option<TaskId>,
    worker: &str,
    limit: u32,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<HookDeliveryJob>> {
    let lease = crate::rules::micros("lease", lease)?;
    let now = us(now);
    // The scoped claim is its own statement, as on PostgreSQL.
    const ALL: &str = "UPDATE hook_outbox \
         SET claims = claims + 1, lease_owner = ?1, lease_expires_at = ?2 + ?3 \
         WHERE id IN (\
             SELECT o.id FROM hook_outbox o \
             WHERE o.state = 'pending' AND o.head AND o.next_attempt_at <= ?2 \
               AND (o.lease_expires_at IS NULL OR o.lease_expires_at <= ?2) \
             ORDER BY o.next_attempt_at, o.id \
             LIMIT ?4) \
         RETURNING id";
    const OF_TASK: &str = "UPDATE hook_outbox \
         SET claims = claims + 1, lease_owner = ?1, lease_expires_at = ?2 + ?3 \
         WHERE id IN (\
             SELECT o.id FROM hook_outbox o \
             WHERE o.task_id = ?5 \
               AND o.state = 'pending' AND o.head AND o.next_attempt_at <= ?2 \
               AND (o.lease_expires_at IS NULL OR o.lease_expires_at <= ?2) \
             ORDER BY o.next_attempt_at, o.id \
             LIMIT ?4) \
         RETURNING id";
    let mut tx = s.write().await?;
    let q = sqlx::query_scalar(if task.is_some() { OF_TASK } else { ALL })
        .bind(worker)
        .bind(now)
        .bind(lease)
        .bind(i64::from(i32::try_from(limit).unwrap_or(i32::MAX)));
    let q = match task {
        Some(t) => q.bind(t.get()),
        None => q,
    };
    let ids: Vec<i64> = q.fetch_all(&mut *tx).await?;
    if ids.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT o.id AS delivery_id, o.claims AS token, o.hook_id, h.component, h.limits, \
                h.grants, h.max_attempts, tp.template_key, o.task_id, o.step_id, o.step_name, \
                o.event_name, o.attempt, o.payload, o.event_at, o.attempts + 1 AS delivery_no \
         FROM hook_outbox o \
         JOIN template_hooks h ON h.id = o.hook_id \
         JOIN templates tp ON tp.id = h.template_id \
         WHERE o.id IN (SELECT value FROM json_each(?)) \
         ORDER BY o.id",
    )
    .bind(id_list(&ids))
    .fetch_all(&mut *tx)
    .await?;
    let jobs = rows.iter().map(job).collect::<Result<Vec<_>>>()?;
    tx.commit().await?;
    Ok(jobs)
}

/// What finish_hook_deliveries wrote for one row.
struct Finished {
    state: DeliveryState,
    next_attempt_at: i64,
}

/// finish_hook_deliveries: fenced by the claim token; a failure retries after the hook's
/// backoff until max_attempts, then the row is dead; a delivered or dead head passes `head`
/// on. One outcome per input item, in input order; of repeated ids, the first item decides
/// and every repetition reports its result.
pub(super) async fn finish_deliveries(
    s: &SqliteStore,
    results: &[HookDeliveryResult],
    now: DateTime<Utc>,
) -> Result<Vec<HookFinishOutcome>> {
    if results.is_empty() {
        return Ok(Vec::new());
    }
    let now_us = us(now);
    let mut tx = s.write().await?;
    let mut done: HashMap<i64, Finished> = HashMap::new();
    let mut seen = HashSet::new();
    // PostgreSQL's DISTINCT ON (id) ... ORDER BY id, ord: the first item of each id, by id.
    let mut firsts: Vec<&HookDeliveryResult> = results
        .iter()
        .filter(|r| seen.insert(r.delivery_id))
        .collect();
    firsts.sort_by_key(|r| r.delivery_id);
    for r in firsts {
        let row = sqlx::query(
            "SELECT o.id, o.hook_id, o.task_id, o.attempts, o.next_attempt_at, \
                    h.backoff_base_ms, h.backoff_multiplier, h.backoff_cap_ms, h.backoff_jitter, \
                    h.max_attempts \
             FROM hook_outbox o JOIN template_hooks h ON h.id = o.hook_id \
             WHERE o.id = ? AND o.claims = ? AND o.state = 'pending'",
        )
        .bind(r.delivery_id)
        .bind(r.token)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            continue;
        };
        let id: i64 = col(&row, "id")?;
        let (hook, task): (i64, i64) = (col(&row, "hook_id")?, col(&row, "task_id")?);
        let attempts = col::<i64>(&row, "attempts")? + 1;
        let max_attempts: i64 = col(&row, "max_attempts")?;
        let next_at: i64 = col(&row, "next_attempt_at")?;
        let ok = r.error.is_none();
        let ends = ok || attempts >= max_attempts;
        let state = if ok {
            DeliveryState::Delivered
        } else if ends {
            DeliveryState::Dead
        } else {
            DeliveryState::Pending
        };
        let next_attempt_at = if ends {
            next_at
        } else {
            // PostgreSQL refuses an instant out of its range (SQLSTATE 22008).
            backoff_ms(&row, id, attempts)?
                .checked_mul(1000)
                .and_then(|d| now_us.checked_add(d))
                .ok_or_else(|| {
                    StoreError::InvalidInput(format!(
                        "hook delivery {id}: the next attempt is past the last instant"
                    ))
                })?
        };
        let error = r
            .error
            .as_deref()
            .map(|e| e.chars().take(MAX_ERROR_CHARS).collect::<String>());
        sqlx::query(
            "UPDATE hook_outbox \
             SET attempts = ?2, state = ?3, next_attempt_at = ?4, \
                 last_error = CASE WHEN ?5 THEN last_error ELSE ?6 END, \
                 lease_owner = NULL, lease_expires_at = NULL, \
                 finished_at = CASE WHEN ?7 THEN ?8 END, head = NOT ?7 \
             WHERE id = ?1",
        )
        .bind(id)
        .bind(attempts)
        .bind(state.as_str())
        .bind(next_attempt_at)
        .bind(ok)
        .bind(error)
        .bind(ends)
        .bind(now_us)
        .execute(&mut *tx)
        .await?;
        if ends {
            // Only a head is ever claimed, so a (hook, task) has at most one row finished
            // here: the next head is its lowest pending row after this one.
            sqlx::query(
                "UPDATE hook_outbox SET head = 1 \
                 WHERE id = (SELECT min(p.id) FROM hook_outbox p \
                             WHERE p.hook_id = ?1 AND p.task_id = ?2 AND p.id > ?3 \
                               AND p.state = 'pending')",
            )
            .bind(hook)
            .bind(task)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        done.insert(
            id,
            Finished {
                state,
                next_attempt_at,
            },
        );
    }
    tx.commit().await?;
    results
        .iter()
        .map(|r| {
            Ok(match done.get(&r.delivery_id) {
                Some(f) => HookFinishOutcome {
                    delivery_id: r.delivery_id,
                    accepted: true,
                    state: Some(f.state),
                    next_attempt_at: Some(ts(f.next_attempt_at)?),
                },
                None => HookFinishOutcome {
                    delivery_id: r.delivery_id,
                    accepted: false,
                    state: None,
                    next_attempt_at: None,
                },
            })
        })
        .collect()
}

/// tasker_backoff_ms for a hook row (seeded by the outbox id): tasker_core's backoff, which
/// is bit-identical to the SQL, with the SQL's refusal of a multiplier <= 0 and its
/// treatment of negative settings (a hook's settings are validated at registration, so
/// neither happens through the store).
fn backoff_ms(hook: &SqliteRow, seed: i64, failure: i64) -> Result<i64> {
    let base: i64 = col(hook, "backoff_base_ms")?;
    let mult: f64 = col(hook, "backoff_multiplier")?;
    let cap: i64 = col(hook, "backoff_cap_ms")?;
    let jitter: f64 = col(hook, "backoff_jitter")?;
    if mult <= 0.0 {
        return Err(StoreError::InvalidInput(format!(
            "backoff multiplier must be > 0, got {mult}"
        )));
    }
    let b = Backoff {
        base_ms: u64::try_from(base).unwrap_or(0),
        multiplier: mult,
        cap_ms: u64::try_from(cap).unwrap_or(0),
        jitter,
    };
    let failure = u32::try_from(failure).unwrap_or(u32::MAX);
    Ok(i64::try_from(b.delay_ms(seed, failure)).unwrap_or(i64::MAX))
}

/// hook_delivery_counts: per hook with outbox rows (of one task, or of all), by hook id.
pub(super) async fn counts(s: &SqliteStore, task_id: Option<TaskId>) -> Result<Vec<HookCounts>> {
    let rows = sqlx::query(
        "SELECT h.id AS hook_id, h.component, \
                count(o.id) FILTER (WHERE o.state = 'pending') AS pending, \
                count(o.id) FILTER (WHERE o.state = 'delivered') AS delivered, \
                count(o.id) FILTER (WHERE o.state = 'dead') AS dead \
         FROM template_hooks h \
         LEFT JOIN hook_outbox o ON o.hook_id = h.id AND (?1 IS NULL OR o.task_id = ?1) \
         WHERE ?1 IS NULL OR o.id IS NOT NULL \
         GROUP BY h.id, h.component \
         ORDER BY h.id",
    )
    .bind(task_id)
    .fetch_all(s.reader())
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

fn outbox_row(row: &SqliteRow) -> Result<OutboxRow> {
    let attempt: Option<i64> = col(row, "attempt")?;
    Ok(OutboxRow {
        id: col(row, "id")?,
        hook_id: col(row, "hook_id")?,
        task_id: col(row, "task_id")?,
        step_id: col(row, "step_id")?,
        step_name: col(row, "step_name")?,
        event_name: col(row, "event_name")?,
        attempt: attempt.and_then(|a| u32::try_from(a).ok()),
        payload: json_col(row, "payload")?,
        event_at: ts_col(row, "event_at")?,
        state: stored_delivery_state(&col::<String>(row, "state")?)?,
        attempts: col(row, "attempts")?,
        claims: col(row, "claims")?,
        next_attempt_at: ts_col(row, "next_attempt_at")?,
        lease_owner: col(row, "lease_owner")?,
        lease_expires_at: opt_ts_col(row, "lease_expires_at")?,
        last_error: col(row, "last_error")?,
        finished_at: opt_ts_col(row, "finished_at")?,
        head: col(row, "head")?,
    })
}

/// A task's outbox rows, by id.
pub(super) async fn outbox_of_task(s: &SqliteStore, task_id: TaskId) -> Result<Vec<OutboxRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {OUTBOX_COLUMNS} FROM hook_outbox o WHERE o.task_id = ? ORDER BY o.id"
    ))
    .bind(task_id)
    .fetch_all(s.reader())
    .await?;
    rows.iter().map(outbox_row).collect()
}

/// PostgreSQL's `list_outbox` (pg_hooks.rs), statement for statement, on the reader pool.
pub(super) async fn list_outbox(
    s: &SqliteStore,
    filter: &OutboxFilter,
    after: Option<i64>,
    limit: u32,
) -> Result<Page<OutboxRow, i64>> {
    check_limit(limit)?;
    let mut q = QueryBuilder::<Sqlite>::new(format!(
        "SELECT {OUTBOX_COLUMNS} FROM hook_outbox o WHERE 1"
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
    let rows = q.build().fetch_all(s.reader()).await?;
    let items = rows.iter().map(outbox_row).collect::<Result<Vec<_>>>()?;
    Ok(page(items, limit, |r| r.id))
}

/// redeliver_hook_dead_letters, in one write transaction: the dead rows asked for (every id
/// checked first, in input order, before anything is written), each replaced by a new
/// pending row of the same event, due at `now`, then deleted.
///
/// The new rows are inserted before the old ones are deleted: `hook_outbox.id` is a rowid
/// without AUTOINCREMENT, which takes the highest id + 1, so the highest id is never deleted
/// without a higher one in its place and a new id is above every id the table ever held, as
/// PostgreSQL's identity (never a dead row's own). One row at a time, by old id, so each
/// head check sees the rows inserted before it (the enqueue trigger's rule: the head when
/// no other row of its (hook, task) is pending).
pub(super) async fn redeliver(
    s: &SqliteStore,
    hook_id: Option<i64>,
    ids: Option<&[i64]>,
    now: DateTime<Utc>,
) -> Result<Vec<Redelivered>> {
    if ids.is_some_and(<[i64]>::is_empty) {
        return Ok(Vec::new());
    }
    let mut tx = s.write().await?;
    let dead: Vec<(i64, i64, i64)> = match ids {
        Some(ids) => {
            for &id in ids {
                let row: Option<(String, i64)> =
                    sqlx::query_as("SELECT state, hook_id FROM hook_outbox WHERE id = ?")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if let Some(refusal) = not_a_dead_letter(id, row, hook_id) {
                    tx.rollback().await?;
                    return Err(StoreError::InvalidInput(refusal));
                }
            }
            sqlx::query_as(
                "SELECT id, hook_id, task_id FROM hook_outbox \
                 WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
            )
            .bind(id_list(ids))
            .fetch_all(&mut *tx)
            .await?
        }
        None => {
            sqlx::query_as(
                "SELECT id, hook_id, task_id FROM hook_outbox \
                 WHERE state = 'dead' AND (?1 IS NULL OR hook_id = ?1) ORDER BY id",
            )
            .bind(hook_id)
            .fetch_all(&mut *tx)
            .await?
        }
    };
    let mut out = Vec::with_capacity(dead.len());
    for &(old_id, hook, task) in &dead {
        let new_id: i64 = sqlx::query_scalar(
            "INSERT INTO hook_outbox (hook_id, task_id, step_id, step_name, event_name, \
                                      attempt, payload, event_at, next_attempt_at, head) \
             SELECT o.hook_id, o.task_id, o.step_id, o.step_name, o.event_name, o.attempt, \
                    o.payload, o.event_at, ?2, \
                    NOT EXISTS (SELECT 1 FROM hook_outbox p \
                                WHERE p.hook_id = o.hook_id AND p.task_id = o.task_id \
                                  AND p.state = 'pending') \
             FROM hook_outbox o WHERE o.id = ?1 \
             RETURNING id",
        )
        .bind(old_id)
        .bind(us(now))
        .fetch_one(&mut *tx)
        .await?;
        out.push(Redelivered {
            old_id,
            new_id,
            hook_id: hook,
            task_id: TaskId::new(task),
        });
    }
    let old: Vec<i64> = dead.iter().map(|&(id, _, _)| id).collect();
    sqlx::query("DELETE FROM hook_outbox WHERE id IN (SELECT value FROM json_each(?))")
        .bind(id_list(&old))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(out)
}

/// Why the row `id` (its state and hook, None: no such row) is not a dead letter of `hook`
/// (any hook when None), in PostgreSQL's words; None when it is one.
fn not_a_dead_letter(id: i64, row: Option<(String, i64)>, hook: Option<i64>) -> Option<String> {
    match row {
        None => Some(format!("hook delivery {id} does not exist")),
        Some((state, _)) if state != DeliveryState::Dead.as_str() => {
            Some(format!("hook delivery {id} is {state}, not dead"))
        }
        Some((_, of)) => match hook {
            Some(hook) if hook != of => Some(format!(
                "hook delivery {id} is of hook {of}, not of hook {hook}"
            )),
            _ => None,
        },
    }
}
