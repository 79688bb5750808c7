//! Retention on SQLite: PostgreSQL's `prune_finished` (host/store/sql/functions/), batch for
//! batch, each batch one write transaction. No lock is needed beyond that: the store has one
//! writer, so two pruners take turns batch by batch and never see the same task.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite};

use super::hot::{Tx, commit};
use super::rows::id_list;
use super::{SqliteStore, us};
use crate::prune::{
    Cutoffs, PruneCounts, PruneReport, PruneRequest, cutoffs, idle, stored_retention,
};
use crate::store::Result;

/// The guards of every candidate: nothing running or claimable, no delivery pending.
const KEEP_BUSY: &str = " AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.task_id = t.id \
      AND (s.state = 'in_progress' OR s.ready_at IS NOT NULL)) \
     AND NOT EXISTS (SELECT 1 FROM hook_outbox h WHERE h.task_id = t.id AND h.state = 'pending')";

pub(super) async fn prune(
    s: &SqliteStore,
    req: &PruneRequest,
    now: DateTime<Utc>,
) -> Result<PruneReport> {
    req.check()?;
    let mut templates = BTreeMap::new();
    if req.template_overrides {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, json_extract(definition, '$.retention') FROM templates \
             WHERE json_extract(definition, '$.retention') IS NOT NULL",
        )
        .fetch_all(s.reader())
        .await?;
        for (id, text) in rows {
            templates.insert(id, stored_retention(id, &text)?);
        }
    }
    let c = cutoffs(req, now, &templates);
    let mut report = PruneReport {
        dry_run: req.dry_run,
        ..PruneReport::default()
    };
    loop {
        let started = std::time::Instant::now();
        let mut tx = s.write().await?;
        let (counts, more) = batch(&mut tx, &c, req).await?;
        if req.dry_run {
            // Nothing was written but the transaction counter: leave no trace.
            tx.rollback().await?;
        } else {
            commit(tx).await?;
        }
        report.batches += 1;
        report.removed.add(&counts);
        if !more {
            return Ok(report);
        }
        idle(req, started).await;
    }
}

/// Up to `limit` candidates (None: all), oldest first per state, as `prune_finished` picks
/// them.
async fn candidates(tx: &mut Tx, c: &Cutoffs, limit: Option<u32>) -> Result<Vec<i64>> {
    let mut out: Vec<i64> = Vec::new();
    let left = |out: &Vec<i64>| limit.map_or(-1, |l| i64::from(l) - out.len() as i64);
    for &(state, cutoff) in &c.defaults {
        if left(&out) == 0 {
            break;
        }
        let mut q = QueryBuilder::<Sqlite>::new("SELECT t.id FROM tasks t WHERE t.state = ");
        q.push_bind(state)
            .push(" AND t.finished_at < ")
            .push_bind(us(cutoff));
        let mine: Vec<i64> = c
            .overrides
            .iter()
            .filter(|(_, s, _)| *s == state)
            .map(|(id, _, _)| *id)
            .collect();
        if !mine.is_empty() {
            q.push(" AND t.template_id NOT IN (SELECT value FROM json_each(")
                .push_bind(id_list(&mine))
                .push("))");
        }
        q.push(KEEP_BUSY)
            .push(" ORDER BY t.finished_at LIMIT ")
            .push_bind(left(&out));
        out.extend(q.build_query_scalar::<i64>().fetch_all(&mut **tx).await?);
    }
    for &(template_id, state, cutoff) in &c.overrides {
        if left(&out) == 0 {
            break;
        }
        let mut q = QueryBuilder::<Sqlite>::new("SELECT t.id FROM tasks t WHERE t.state = ");
        q.push_bind(state)
            .push(" AND t.finished_at < ")
            .push_bind(us(cutoff))
            .push(" AND t.template_id = ")
            .push_bind(template_id)
            .push(KEEP_BUSY)
            .push(" ORDER BY t.finished_at LIMIT ")
            .push_bind(left(&out));
        out.extend(q.build_query_scalar::<i64>().fetch_all(&mut **tx).await?);
    }
    out.sort_unstable();
    Ok(out)
}

async fn batch(tx: &mut Tx, c: &Cutoffs, req: &PruneRequest) -> Result<(PruneCounts, bool)> {
    let limit = (!req.dry_run).then_some(req.batch);
    let tasks = candidates(tx, c, limit).await?;
    let task_list = id_list(&tasks);
    let steps: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM steps WHERE task_id IN (SELECT value FROM json_each(?)) ORDER BY id",
    )
    .bind(&task_list)
    .fetch_all(&mut **tx)
    .await?;
    let step_list = id_list(&steps);
    let mut n = PruneCounts {
        tasks: tasks.len() as u64,
        steps: steps.len() as u64,
        ..PruneCounts::default()
    };

    // (table, key column, ids) in PostgreSQL's deletion order: children before parents.
    let by_step = [
        ("edges", "parent_id"),
        ("attempts", "step_id"),
        ("step_transitions", "step_id"),
    ];
    let by_task = [
        ("task_events_custom", "task_id"),
        ("hook_outbox", "task_id"),
    ];
    let mut removed = Vec::new();
    for (table, key, list) in by_step
        .iter()
        .map(|(t, k)| (*t, *k, &step_list))
        .chain(by_task.iter().map(|(t, k)| (*t, *k, &task_list)))
    {
        let from = format!("FROM {table} WHERE {key} IN (SELECT value FROM json_each(?))");
        let rows = if req.dry_run {
            sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) {from}"))
                .bind(list)
                .fetch_one(&mut **tx)
                .await?
                .max(0) as u64
        } else {
            sqlx::query(&format!("DELETE {from}"))
                .bind(list)
                .execute(&mut **tx)
                .await?
                .rows_affected()
        };
        removed.push(rows);
    }
    [
        n.edges,
        n.attempts,
        n.step_transitions,
        n.custom_events,
        n.hook_outbox,
    ] = [removed[0], removed[1], removed[2], removed[3], removed[4]];
    if req.dry_run {
        n.task_transitions = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM task_transitions \
             WHERE task_id IN (SELECT value FROM json_each(?))",
        )
        .bind(&task_list)
        .fetch_one(&mut **tx)
        .await?
        .max(0) as u64;
    } else if !tasks.is_empty() {
        sqlx::query("DELETE FROM steps WHERE id IN (SELECT value FROM json_each(?))")
            .bind(&step_list)
            .execute(&mut **tx)
            .await?;
        n.task_transitions = sqlx::query(
            "DELETE FROM task_transitions WHERE task_id IN (SELECT value FROM json_each(?))",
        )
        .bind(&task_list)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM tasks WHERE id IN (SELECT value FROM json_each(?))")
            .bind(&task_list)
            .execute(&mut **tx)
            .await?;
    }

    // Delivered rows of the tasks that stay, with what is left of the batch.
    let mut delivered = 0;
    if let Some(before) = c.delivered_before {
        let from = "FROM hook_outbox WHERE state = 'delivered' AND finished_at < ?";
        if req.dry_run {
            delivered = sqlx::query_scalar::<_, i64>(&format!(
                "SELECT count(*) {from} \
                 AND task_id NOT IN (SELECT value FROM json_each(?))"
            ))
            .bind(us(before))
            .bind(&task_list)
            .fetch_one(&mut **tx)
            .await?
            .max(0) as u64;
        } else if (tasks.len() as u64) < u64::from(req.batch) {
            let room = u64::from(req.batch) - tasks.len() as u64;
            delivered = sqlx::query(&format!(
                "DELETE FROM hook_outbox WHERE id IN (SELECT id {from} \
                 ORDER BY finished_at LIMIT ?)"
            ))
            .bind(us(before))
            .bind(room as i64)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        }
    }
    n.hook_outbox += delivered;
    let more = !req.dry_run && n.tasks + delivered >= u64::from(req.batch);
    Ok((n, more))
}
