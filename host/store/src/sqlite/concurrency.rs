//! Concurrency keys on SQLite (`tasker_core::concurrency`), as PostgreSQL's create_task,
//! tasker_concurrency_admit and admit_waiting_tasks. The release of a slot when a task
//! finishes is the trigger `tasks_concurrency_release` (migrations/sqlite/0009), which also
//! admits the line's head; admitting is setting a task `holding` with `updated_at = now`,
//! and the trigger `tasks_concurrency_admit` takes the slot and readies its steps.

use tasker_core::concurrency::{Concurrency, Strategy};

use super::hot::Tx;
use super::ops::cancel_in;
use crate::error::StoreError;
use crate::store::Result;
use crate::types::TaskId;

/// `ready_at` of a waiting task's ready steps (PostgreSQL's 'infinity'): never due.
pub(super) const WAITING: i64 = i64::MAX;

/// The claim key of a waiting task, over its creation time (`tasker_core::priority`).
const LINE_ORDER: &str = "created_at - (priority - 1) * 30000000, id";

/// A new task's place: admitted now (holding a slot) or waiting in its key's line.
pub(super) struct Admission {
    pub key: String,
    pub limit: u32,
    pub admitted: bool,
}

/// Decide a new task's admission (before its row exists) under `spec`, cancelling the
/// oldest tasks of its key for `cancel_in_progress` and refusing it for `cancel_newest`.
pub(super) async fn admit_new(
    tx: &mut Tx,
    spec: &Concurrency,
    key: String,
    template_key: &str,
    run_at: Option<i64>,
    now: i64,
) -> Result<Admission> {
    sqlx::query("INSERT INTO concurrency_keys (key) VALUES (?) ON CONFLICT (key) DO NOTHING")
        .bind(&key)
        .execute(&mut **tx)
        .await?;
    let limit = i64::from(spec.limit);
    let mut holding = holding(tx, &key).await?;
    if spec.strategy != Strategy::Queue {
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM tasks \
                 WHERE concurrency_key = ? AND concurrency_state = 'waiting'",
            )
            .bind(&key)
            .fetch_one(&mut **tx)
            .await?;
            if holding + waiting < limit {
                break;
            }
            if spec.strategy == Strategy::CancelNewest {
                return Err(StoreError::InvalidState(format!(
                    "concurrency key {key} is at its limit ({}/{limit}): template {template_key} \
                     refuses new tasks (strategy cancel_newest)",
                    holding + waiting
                )));
            }
            let oldest: Option<TaskId> = sqlx::query_scalar(
                "SELECT id FROM tasks \
                 WHERE concurrency_key = ? AND concurrency_state IS NOT NULL \
                 ORDER BY id LIMIT 1",
            )
            .bind(&key)
            .fetch_optional(&mut **tx)
            .await?;
            let Some(oldest) = oldest else { break };
            cancel_in(tx, oldest, now).await?;
            holding = self::holding(tx, &key).await?;
        }
    }
    let due = run_at.is_none_or(|at| at <= now);
    let line: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM tasks WHERE concurrency_key = ?1 AND concurrency_state = 'waiting' \
           AND (run_at IS NULL OR run_at <= ?2) LIMIT 1",
    )
    .bind(&key)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    let admitted = holding < limit && due && line.is_none();
    if admitted {
        sqlx::query("UPDATE concurrency_keys SET holding = holding + 1 WHERE key = ?")
            .bind(&key)
            .execute(&mut **tx)
            .await?;
    }
    Ok(Admission {
        key,
        limit: spec.limit,
        admitted,
    })
}

async fn holding(tx: &mut Tx, key: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT holding FROM concurrency_keys WHERE key = ?")
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?
            .unwrap_or(0),
    )
}

/// Admit `key`'s line while it has room: the head (by claim key, its run_at passed) while
/// the key holds fewer slots than the head's limit. Returns how many were admitted.
pub(super) async fn admit(tx: &mut Tx, key: &str, now: i64) -> Result<u32> {
    let mut n = 0;
    loop {
        let holding = holding(tx, key).await?;
        let head: Option<(TaskId, i64)> = sqlx::query_as(&format!(
            "SELECT id, concurrency_limit FROM tasks \
             WHERE concurrency_key = ?1 AND concurrency_state = 'waiting' \
               AND (run_at IS NULL OR run_at <= ?2) \
             ORDER BY {LINE_ORDER} LIMIT 1"
        ))
        .bind(key)
        .bind(now)
        .fetch_optional(&mut **tx)
        .await?;
        let Some((id, limit)) = head else { break };
        if holding >= limit {
            break;
        }
        sqlx::query(
            "UPDATE tasks SET concurrency_state = 'holding', updated_at = ?2 WHERE id = ?1",
        )
        .bind(id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        n += 1;
    }
    Ok(n)
}

/// `admit_waiting_tasks`: every key whose line can move now.
pub(super) async fn admit_waiting(tx: &mut Tx, now: i64) -> Result<u32> {
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT t.concurrency_key FROM tasks t \
         JOIN concurrency_keys k ON k.key = t.concurrency_key \
         WHERE t.concurrency_state = 'waiting' AND (t.run_at IS NULL OR t.run_at <= ?) \
           AND k.holding < t.concurrency_limit \
         ORDER BY 1",
    )
    .bind(now)
    .fetch_all(&mut **tx)
    .await?;
    let mut n = 0;
    for key in keys {
        n += admit(tx, &key, now).await?;
    }
    Ok(n)
}
