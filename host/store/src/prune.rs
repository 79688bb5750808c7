//! Retention: deleting finished tasks and delivered hook outbox rows (docs/store.md,
//! "Retention"). The request, the counts and the cutoffs (both stores compute them here, from
//! the request and the templates' own `retention:`) are shared; each batch is PostgreSQL's
//! `prune_finished` or SQLite's `sqlite/prune.rs`, which mirrors it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use tasker_core::retention::{FINAL_STATES, Retention, Span};

use crate::error::StoreError;
use crate::pg::col;
use crate::store::Result;

/// Tasks per transaction when the caller does not say: small enough that a batch holds its
/// locks for milliseconds.
pub const DEFAULT_PRUNE_BATCH: u32 = 500;

/// A background pruner's [`PruneRequest::idle_ratio`].
pub const DEFAULT_IDLE_RATIO: f64 = 3.0;

/// What to prune.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneRequest {
    /// Per final state, how long after it finished a task is kept (`None`: kept).
    pub retention: Retention,
    /// Whether a template's own `retention:` wins over `retention` for its tasks (the
    /// background pruner: yes; `tasker prune --older-than`: no, the span given is the rule).
    pub template_overrides: bool,
    /// Delivered hook outbox rows are deleted this long after delivery, whatever their task
    /// (`None`: only with their task).
    pub delivered: Option<Span>,
    /// Tasks per transaction (1..=10,000).
    pub batch: u32,
    /// Count what would be removed, remove nothing.
    pub dry_run: bool,
    /// After each batch, wait this many times as long as the batch took (0: never), so that
    /// a background run leaves the hot path most of the database's time: 3 deletes at most a
    /// quarter of the time.
    pub idle_ratio: f64,
}

impl PruneRequest {
    pub fn new(retention: Retention) -> PruneRequest {
        PruneRequest {
            retention,
            template_overrides: true,
            delivered: None,
            batch: DEFAULT_PRUNE_BATCH,
            dry_run: false,
            idle_ratio: DEFAULT_IDLE_RATIO,
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        if !(self.idle_ratio.is_finite() && (0.0..=1_000.0).contains(&self.idle_ratio)) {
            return Err(StoreError::InvalidInput(format!(
                "prune idle_ratio must be 0..=1000, got {}",
                self.idle_ratio
            )));
        }
        if !(1..=10_000).contains(&self.batch) {
            return Err(StoreError::InvalidInput(format!(
                "prune batch must be 1..=10000, got {}",
                self.batch
            )));
        }
        Ok(())
    }
}

/// Rows removed (or, in a dry run, that would be), per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneCounts {
    pub tasks: u64,
    pub steps: u64,
    pub edges: u64,
    /// Attempts, with the logs they hold.
    pub attempts: u64,
    pub step_transitions: u64,
    pub task_transitions: u64,
    /// `task_events_custom`: handlers' custom events.
    pub custom_events: u64,
    /// Outbox rows of removed tasks and delivered rows past `delivered`.
    pub hook_outbox: u64,
}

impl PruneCounts {
    /// `(table, rows)` in deletion report order.
    pub fn tables(&self) -> [(&'static str, u64); 8] {
        [
            ("tasks", self.tasks),
            ("steps", self.steps),
            ("edges", self.edges),
            ("attempts", self.attempts),
            ("step_transitions", self.step_transitions),
            ("task_transitions", self.task_transitions),
            ("task_events_custom", self.custom_events),
            ("hook_outbox", self.hook_outbox),
        ]
    }

    pub fn total(&self) -> u64 {
        self.tables().iter().map(|(_, n)| n).sum()
    }

    pub fn add(&mut self, o: &PruneCounts) {
        self.tasks += o.tasks;
        self.steps += o.steps;
        self.edges += o.edges;
        self.attempts += o.attempts;
        self.step_transitions += o.step_transitions;
        self.task_transitions += o.task_transitions;
        self.custom_events += o.custom_events;
        self.hook_outbox += o.hook_outbox;
    }
}

/// What one [`crate::Store::prune`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub removed: PruneCounts,
    /// Transactions it took (1 for a dry run).
    pub batches: u32,
    /// Another pruner held the lock (PostgreSQL): this one stopped and left the rest to it.
    pub busy: bool,
    pub dry_run: bool,
}

/// The cutoffs of one run: a task of state `s` finished before `defaults[s]` goes, unless
/// its template is in `overrides` for `s`, whose instant then decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cutoffs {
    pub defaults: Vec<(&'static str, DateTime<Utc>)>,
    pub overrides: Vec<(i64, &'static str, DateTime<Utc>)>,
    pub delivered_before: Option<DateTime<Utc>>,
}

/// `now - span`, clamped to the earliest instant (a span is at most 100 years).
fn before(now: DateTime<Utc>, span: Span) -> DateTime<Utc> {
    chrono::Duration::from_std(span.duration())
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The one rule of both stores: which finished tasks a request removes at `now`, given the
/// templates that set their own `retention:` (`templates`: id and that retention).
pub(crate) fn cutoffs(
    req: &PruneRequest,
    now: DateTime<Utc>,
    templates: &BTreeMap<i64, Retention>,
) -> Cutoffs {
    let mut out = Cutoffs {
        delivered_before: req.delivered.map(|s| before(now, s)),
        ..Cutoffs::default()
    };
    for state in FINAL_STATES {
        if let Some(span) = req.retention.of(state) {
            out.defaults.push((state, before(now, span)));
        }
        if req.template_overrides {
            for (&id, r) in templates {
                if let Some(span) = r.of(state) {
                    out.overrides.push((id, state, before(now, span)));
                }
            }
        }
    }
    out
}

/// A stored template's `retention` (JSON), refused as a decode error when it does not parse.
pub(crate) fn stored_retention(id: i64, json: &str) -> Result<Retention> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::decode(format!("retention of template {id}"), e))
}

/// Between batches: leave the hot path the database (and the CPU) for `idle_ratio` times the
/// batch's own time.
pub(crate) async fn idle(req: &PruneRequest, batch_started: std::time::Instant) {
    let pause = batch_started.elapsed().mul_f64(req.idle_ratio);
    if pause.is_zero() {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(pause).await;
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

pub(crate) async fn pg_prune(
    db: &sqlx::PgPool,
    req: &PruneRequest,
    now: DateTime<Utc>,
) -> Result<PruneReport> {
    req.check()?;
    let mut templates = BTreeMap::new();
    if req.template_overrides {
        let rows = sqlx::query(
            "SELECT id, (definition->'retention')::text AS retention FROM templates \
             WHERE definition ? 'retention'",
        )
        .fetch_all(db)
        .await?;
        for row in &rows {
            let id: i64 = col(row, "id")?;
            let text: String = col(row, "retention")?;
            templates.insert(id, stored_retention(id, &text)?);
        }
    }
    let c = cutoffs(req, now, &templates);
    let states: Vec<&str> = c.defaults.iter().map(|(s, _)| *s).collect();
    let instants: Vec<DateTime<Utc>> = c.defaults.iter().map(|(_, t)| *t).collect();
    let tpl_ids: Vec<i64> = c.overrides.iter().map(|(id, _, _)| *id).collect();
    let tpl_states: Vec<&str> = c.overrides.iter().map(|(_, s, _)| *s).collect();
    let tpl_instants: Vec<DateTime<Utc>> = c.overrides.iter().map(|(_, _, t)| *t).collect();

    let mut report = PruneReport {
        dry_run: req.dry_run,
        ..PruneReport::default()
    };
    loop {
        let started = std::time::Instant::now();
        let row = sqlx::query("SELECT * FROM prune_finished($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(&states)
            .bind(&instants)
            .bind(&tpl_ids)
            .bind(&tpl_states)
            .bind(&tpl_instants)
            .bind(c.delivered_before)
            .bind(i32::try_from(req.batch).unwrap_or(i32::MAX))
            .bind(req.dry_run)
            .fetch_one(db)
            .await?;
        report.batches += 1;
        if row.try_get::<bool, _>("busy").unwrap_or(false) {
            report.busy = true;
            return Ok(report);
        }
        let n = |name: &str| -> Result<u64> { Ok(col::<i64>(&row, name)?.max(0) as u64) };
        report.removed.add(&PruneCounts {
            tasks: n("tasks")?,
            steps: n("steps")?,
            edges: n("edges")?,
            attempts: n("attempts")?,
            step_transitions: n("step_transitions")?,
            task_transitions: n("task_transitions")?,
            custom_events: n("custom_events")?,
            hook_outbox: n("hook_outbox")?,
        });
        if !col::<bool>(&row, "more")? {
            return Ok(report);
        }
        idle(req, started).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_override_per_state_only_when_asked() {
        let now = DateTime::from_timestamp(1_000_000_000, 0).unwrap();
        let day = Span::from_secs(86_400);
        let mut templates = BTreeMap::new();
        templates.insert(
            7,
            Retention {
                error: Some(Span::from_secs(60)),
                ..Retention::default()
            },
        );
        let mut req = PruneRequest::new(Retention {
            complete: Some(day),
            ..Retention::default()
        });
        let c = cutoffs(&req, now, &templates);
        assert_eq!(
            c.defaults,
            vec![("complete", now - chrono::Duration::days(1))]
        );
        assert_eq!(
            c.overrides,
            vec![(7, "error", now - chrono::Duration::seconds(60))]
        );
        assert_eq!(c.delivered_before, None);
        req.template_overrides = false;
        assert!(cutoffs(&req, now, &templates).overrides.is_empty());
    }

    #[test]
    fn a_bad_batch_is_refused_naming_it() {
        let mut req = PruneRequest::new(Retention::defaults());
        req.batch = 0;
        let err = req.check().unwrap_err().to_string();
        assert!(err.contains("prune batch"), "{err}");
    }
}
