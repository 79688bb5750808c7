//! The hot path on SQLite: templates, task creation, claim, complete (and the fused
//! complete-and-claim), fail, leases. Mirrors PostgreSQL's functions of the same names in
//! `host/store/sql/functions/` (`register_template`, `create_task`, `claim_ready_steps`,
//! `complete_and_claim_steps`, `fail_steps_decided`, `expire_leases`, ...), function for
//! function; the comments name the PL/pgSQL each piece reproduces.
//!
//! PostgreSQL's row locks have no counterpart: every write runs in one `BEGIN IMMEDIATE`
//! transaction on the single writer connection, so a batch sees no concurrent change. What
//! PostgreSQL does per statement with arrays, this does with JSON arrays and `json_each`.
//! Where rows fire the (row-level) hook triggers, they are written in PostgreSQL's event
//! order (task id, then step id), so outbox ids come out in the same order.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::sqlite::SqliteRow;
use sqlx::{Sqlite, Transaction};
use tasker_core::backoff::Backoff;
use tasker_core::concurrency::Concurrency;
use tasker_core::priority::{self, Priority};
use tasker_core::state::{StepState, TaskState};
use tasker_core::template::Template;

use super::concurrency;
use super::rows::{col, id_list, json_col, step_state, task_state, ts_col, u32_col};
use super::{SqliteStore, set_reason, ts, us};
use crate::attempt_log::AttemptLog;
use crate::error::StoreError;
use crate::payload::Payload;
use crate::rules::{self, refusal};
use crate::store::Result;
use crate::types::*;
use tasker_core::backoff::MAX_DELAY_MS;

pub(super) type Tx = Transaction<'static, Sqlite>;

// ---------------------------------------------------------------------------------------------
// register_template (0004)

/// One step of a template being registered: PostgreSQL's `tasker_tpl_steps` row plus the
/// settings `register_template` inserts.
struct PlannedStep {
    name: String,
    handler: String,
    deps: Vec<String>,
    spec: Value,
    level: Option<i64>,
}

/// PostgreSQL's `%L` (quote_literal).
fn quote_literal(s: &str) -> String {
    let body = s.replace('\'', "''");
    if s.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

/// A JSON value as PostgreSQL's `->>` renders it: a string's text, another value's JSON,
/// None for null.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        v => Some(v.to_string()),
    }
}

/// `spec ->> key`.
fn spec_text(spec: &Value, key: &str) -> Option<String> {
    spec.get(key).and_then(scalar_text)
}

/// The settings columns of one template_steps row, with the checks of the table's CHECK
/// constraints in PostgreSQL's order (by constraint name), and their messages.
struct StepSettings {
    config: String,
    limits: String,
    grants: String,
    max_attempts: i64,
    retryable: bool,
    backoff_base_ms: i64,
    backoff_multiplier: f64,
    backoff_cap_ms: i64,
    backoff_jitter: f64,
    max_retry_after_ms: i64,
    max_lease_losses: i64,
    pin: String,
    priority: Option<i64>,
}

fn step_settings(spec: &Value) -> std::result::Result<StepSettings, String> {
    let json_or = |key: &str, default: &str| match spec.get(key) {
        Some(v) => v.to_string(),
        None => default.to_owned(),
    };
    let int = |key: &str, default: i64, max: i64| match spec_text(spec, key) {
        None => Ok(default),
        Some(t) => t
            .parse::<i64>()
            .ok()
            .filter(|v| (-max - 1..=max).contains(v))
            .ok_or_else(|| format!("{key} is {t}, not an integer within {}..={max}", -max - 1)),
    };
    let float = |key: &str, default: f64| spec.get(key).and_then(Value::as_f64).unwrap_or(default);
    let max_attempts = int("max_attempts", 3, i64::from(i32::MAX))?;
    let settings = StepSettings {
        config: json_or("config", "{}"),
        limits: json_or("limits", "{}"),
        grants: json_or("grants", "{}"),
        max_attempts,
        retryable: spec
            .get("retryable")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        backoff_base_ms: int("backoff_base_ms", 1000, i64::MAX)?,
        backoff_multiplier: float("backoff_multiplier", 2.0),
        backoff_cap_ms: int("backoff_cap_ms", 300_000, i64::MAX)?,
        backoff_jitter: float("backoff_jitter", 0.1),
        max_retry_after_ms: int("max_retry_after_ms", 3_600_000, i64::MAX)?,
        max_lease_losses: int("max_lease_losses", 5, i64::from(i32::MAX))?,
        pin: spec_text(spec, "pin").unwrap_or_else(|| "sticky".to_owned()),
        priority: spec_text(spec, "priority")
            .map(|t| {
                t.parse::<i64>()
                    .map_err(|_| format!("priority is {t}, not an integer"))
            })
            .transpose()?,
    };
    let s = &settings;
    // PostgreSQL's float order: NaN is above every number.
    let ge = |v: f64, min: f64| v.is_nan() || v >= min;
    let le = |v: f64, max: f64| !v.is_nan() && v <= max;
    // By constraint name, the order PostgreSQL checks them in (a CHECK on two columns is
    // named after the table alone).
    let checks = [
        ("backoff_base_ms_check", s.backoff_base_ms >= 0),
        (
            "backoff_jitter_check",
            ge(s.backoff_jitter, 0.0) && le(s.backoff_jitter, 1.0),
        ),
        ("backoff_multiplier_check", ge(s.backoff_multiplier, 1.0)),
        ("check", s.backoff_cap_ms >= s.backoff_base_ms),
        ("max_attempts_check", s.max_attempts >= 1),
        ("max_lease_losses_check", s.max_lease_losses >= 1),
        ("max_retry_after_ms_check", s.max_retry_after_ms >= 0),
        ("pin_check", matches!(s.pin.as_str(), "sticky" | "latest")),
        (
            "priority_check",
            s.priority.is_none_or(|p| (1..=5).contains(&p)),
        ),
    ];
    if let Some((name, _)) = checks.iter().find(|(_, ok)| !ok) {
        return Err(format!(
            "new row for relation \"template_steps\" violates check constraint \
             \"template_steps_{name}\""
        ));
    }
    Ok(settings)
}

/// register_template's checks of the step list and its levels (longest path, by rounds).
fn plan_steps(key: &str, specs: &[Value]) -> Result<Vec<PlannedStep>> {
    let mut steps: Vec<PlannedStep> = specs
        .iter()
        .map(|spec| PlannedStep {
            name: spec_text(spec, "name").unwrap_or_default(),
            handler: spec_text(spec, "handler").unwrap_or_default(),
            deps: spec
                .get("depends_on")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|d| scalar_text(d).unwrap_or_default())
                        .collect()
                })
                .unwrap_or_default(),
            spec: spec.clone(),
            level: None,
        })
        .collect();
    let bad = |msg: String| StoreError::InvalidInput(format!("template {key}: {msg}"));

    if let Some(pos) = steps.iter().position(|s| s.name.is_empty()) {
        return Err(bad(format!("step {pos} has no name")));
    }
    let mut seen = HashSet::new();
    if let Some(s) = steps.iter().find(|s| !seen.insert(s.name.as_str())) {
        return Err(bad(format!(
            "duplicate step name {}",
            quote_literal(&s.name)
        )));
    }
    let position: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    for s in &steps {
        if let Some(d) = s.deps.iter().find(|d| !position.contains_key(d.as_str())) {
            return Err(bad(format!(
                "step {} depends on unknown step {}",
                quote_literal(&s.name),
                quote_literal(d)
            )));
        }
    }
    if let Some(s) = steps.iter().find(|s| s.handler.is_empty()) {
        return Err(bad(format!(
            "step {}: handler must be non-empty",
            quote_literal(&s.name)
        )));
    }

    let parents: Vec<Vec<usize>> = steps
        .iter()
        .map(|s| s.deps.iter().map(|d| position[d.as_str()]).collect())
        .collect();
    for (s, p) in steps.iter_mut().zip(&parents) {
        if p.is_empty() {
            s.level = Some(0);
        }
    }
    // Each round sees the levels as they were before it, like PostgreSQL's UPDATE.
    let mut round = 0;
    loop {
        round += 1;
        let next: Vec<usize> = (0..steps.len())
            .filter(|&i| {
                steps[i].level.is_none()
                    && parents[i]
                        .iter()
                        .all(|&p| steps[p].level.is_some_and(|l| l < round))
            })
            .collect();
        if next.is_empty() {
            break;
        }
        for i in next {
            steps[i].level = Some(round);
        }
    }
    let cyclic: Vec<&str> = steps
        .iter()
        .filter(|s| s.level.is_none())
        .map(|s| s.name.as_str())
        .collect();
    if !cyclic.is_empty() {
        return Err(bad(format!(
            "dependency cycle among steps {}",
            cyclic.join(", ")
        )));
    }
    Ok(steps)
}

fn definition_conflict(key: &str) -> StoreError {
    StoreError::Constraint {
        constraint: None,
        message: format!(
            "template {key} is already registered with a different definition; publish a new version"
        ),
    }
}

/// jsonb equality of a stored definition and a new one.
fn same_definition(stored: &str, new_text: &str, new: &Value) -> bool {
    stored == new_text || serde_json::from_str::<Value>(stored).is_ok_and(|v| v == *new)
}

pub(super) async fn register_template(
    s: &SqliteStore,
    t: &Template,
    at: DateTime<Utc>,
) -> Result<RegisteredTemplate> {
    let definition = serde_json::to_value(t)
        .map_err(|e| StoreError::InvalidInput(format!("template {}: {e}", t.key())))?;
    let specs = crate::wire::steps_json(t)?;
    let version = t.version.to_string();
    let key = format!("{}/{}@{}", t.namespace, t.name, version);
    if t.namespace.is_empty() || t.name.is_empty() || version.is_empty() {
        return Err(StoreError::InvalidInput(format!(
            "register_template: namespace, name and version must be non-empty (got {key})"
        )));
    }
    if specs.is_empty() {
        return Err(StoreError::InvalidInput(format!(
            "template {key}: steps must be a non-empty array"
        )));
    }
    let def_text = definition.to_string();

    let mut tx = s.write().await?;
    let existing: Option<(i64, String)> =
        sqlx::query_as("SELECT id, definition FROM templates WHERE template_key = ?")
            .bind(&key)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some((id, stored)) = existing {
        if same_definition(&stored, &def_text, &definition) {
            super::schedules::upsert_of_template(&mut tx, t, at).await?;
            tx.commit().await?;
            return Ok(RegisteredTemplate {
                template_id: id,
                key,
                created: false,
            });
        }
        tx.rollback().await?;
        return Err(definition_conflict(&key));
    }

    let steps = plan_steps(&key, &specs)?;
    let now = us(at);
    sqlx::query(
        "INSERT INTO namespaces (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
    )
    .bind(&t.namespace)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let ns: i64 = sqlx::query_scalar("SELECT id FROM namespaces WHERE name = ?")
        .bind(&t.namespace)
        .fetch_one(&mut *tx)
        .await?;
    let context_schema = t.context_schema.as_ref().map(Value::to_string);
    let template_id: i64 = sqlx::query_scalar(
        "INSERT INTO templates (namespace_id, name, version, template_key, description, \
                                context_schema, definition, step_count, created_at, priority, \
                                concurrency) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(ns)
    .bind(&t.name)
    .bind(&version)
    .bind(&key)
    .bind(&t.description)
    .bind(context_schema)
    .bind(&def_text)
    .bind(i64::try_from(steps.len()).unwrap_or(i64::MAX))
    .bind(now)
    .bind(t.priority.map(|p| i64::from(p.get())))
    .bind(t.concurrency.as_ref().map(|c| json!(c).to_string()))
    .fetch_one(&mut *tx)
    .await?;

    let position: HashMap<&str, i64> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i as i64))
        .collect();
    for (i, step) in steps.iter().enumerate() {
        let settings = step_settings(&step.spec).map_err(|e| {
            StoreError::InvalidInput(format!("template {key}: bad retry settings: {e}"))
        })?;
        let mut parent_positions: Vec<i64> =
            step.deps.iter().map(|d| position[d.as_str()]).collect();
        parent_positions.sort_unstable();
        sqlx::query(
            "INSERT INTO template_steps (template_id, position, name, handler, config, limits, \
                 grants, parent_positions, level, max_attempts, retryable, backoff_base_ms, \
                 backoff_multiplier, backoff_cap_ms, backoff_jitter, max_retry_after_ms, \
                 max_lease_losses, pin, priority) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(template_id)
        .bind(i as i64)
        .bind(&step.name)
        .bind(&step.handler)
        .bind(&settings.config)
        .bind(&settings.limits)
        .bind(&settings.grants)
        .bind(Value::from(parent_positions).to_string())
        .bind(step.level.unwrap_or_default())
        .bind(settings.max_attempts)
        .bind(settings.retryable)
        .bind(settings.backoff_base_ms)
        .bind(settings.backoff_multiplier)
        .bind(settings.backoff_cap_ms)
        .bind(settings.backoff_jitter)
        .bind(settings.max_retry_after_ms)
        .bind(settings.max_lease_losses)
        .bind(&settings.pin)
        .bind(settings.priority)
        .execute(&mut *tx)
        .await?;
    }
    super::schedules::upsert_of_template(&mut tx, t, at).await?;
    tx.commit().await?;
    Ok(RegisteredTemplate {
        template_id,
        key,
        created: true,
    })
}

// ---------------------------------------------------------------------------------------------
// create_task (0004)

/// PostgreSQL's `jsonb_typeof`.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

pub(super) async fn create_task(
    s: &SqliteStore,
    task: &NewTask,
    now: DateTime<Utc>,
) -> Result<CreatedTask> {
    let mut tx = s.write().await?;
    let out = create_task_in(&mut tx, task, now).await?;
    if out.created {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(out)
}

/// A template's id, namespace, step count, priority and concurrency spec.
type TemplateHead = (i64, i64, i64, Option<i64>, Option<String>);

/// [`create_task`] in the caller's write transaction (which it leaves open).
pub(super) async fn create_task_in(
    tx: &mut Tx,
    task: &NewTask,
    now: DateTime<Utc>,
) -> Result<CreatedTask> {
    let now = us(now);
    let tpl: Option<TemplateHead> = sqlx::query_as(
        "SELECT id, namespace_id, step_count, priority, concurrency FROM templates \
         WHERE template_key = ?",
    )
    .bind(&task.template_key)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((template_id, namespace_id, step_count, template_priority, concurrency)) = tpl else {
        return Err(StoreError::NotFound(format!(
            "unknown template {}",
            task.template_key
        )));
    };
    if !task.context.is_object() {
        return Err(StoreError::InvalidInput(format!(
            "task context must be a JSON object, got {}",
            json_type(&task.context)
        )));
    }
    if let Some(identity) = &task.identity_key {
        let existing: Option<TaskId> =
            sqlx::query_scalar("SELECT id FROM tasks WHERE namespace_id = ? AND identity_key = ?")
                .bind(namespace_id)
                .bind(identity)
                .fetch_optional(&mut **tx)
                .await?;
        if let Some(task_id) = existing {
            return Ok(CreatedTask {
                task_id,
                created: false,
            });
        }
    }

    let priority = task
        .priority
        .map(|p| i64::from(p.get()))
        .or(template_priority)
        .unwrap_or(i64::from(Priority::DEFAULT.get()));
    let run_at = task.run_at.map(us);
    let admission = match concurrency {
        None => None,
        Some(text) => {
            let spec: Concurrency = serde_json::from_str(&text)
                .map_err(|e| StoreError::decode("templates.concurrency", e))?;
            let key = spec
                .resolve(&task.context)
                .map_err(|e| StoreError::InvalidInput(e.to_string()))?;
            let a = concurrency::admit_new(tx, &spec, key, &task.template_key, run_at, now).await?;
            Some(a)
        }
    };
    let admitted = admission.as_ref().is_none_or(|a| a.admitted);
    let task_id: TaskId = sqlx::query_scalar(
        "INSERT INTO tasks (namespace_id, template_id, state, context, identity_key, metadata, \
                            step_count, unfinished_steps, created_at, updated_at, priority, \
                            run_at, concurrency_key, concurrency_limit, concurrency_state) \
         VALUES (?1, ?2, 'pending', ?3, ?4, ?5, ?6, ?6, ?7, ?7, ?8, ?9, ?10, ?11, ?12) \
         RETURNING id",
    )
    .bind(namespace_id)
    .bind(template_id)
    .bind(task.context.to_string())
    .bind(&task.identity_key)
    .bind(task.metadata.to_string())
    .bind(step_count)
    .bind(now)
    .bind(priority)
    .bind(run_at)
    .bind(admission.as_ref().map(|a| a.key.as_str()))
    .bind(admission.as_ref().map(|a| i64::from(a.limit)))
    .bind(
        admission
            .as_ref()
            .map(|a| if a.admitted { "holding" } else { "waiting" }),
    )
    .fetch_one(&mut **tx)
    .await?;
    // Steps in level order, so a parent's id is always below its children's.
    sqlx::query(
        "INSERT INTO steps (task_id, position, name, state, unfinished_parents, ready_at, \
                            max_attempts, retryable, backoff_base_ms, backoff_multiplier, \
                            backoff_cap_ms, backoff_jitter, max_retry_after_ms, max_lease_losses, \
                            created_at, updated_at, priority) \
         SELECT ?1, ts.position, ts.name, 'pending', json_array_length(ts.parent_positions), \
                CASE WHEN json_array_length(ts.parent_positions) = 0 THEN ?4 END, \
                ts.max_attempts, ts.retryable, ts.backoff_base_ms, ts.backoff_multiplier, \
                ts.backoff_cap_ms, ts.backoff_jitter, ts.max_retry_after_ms, ts.max_lease_losses, \
                ?2, ?2, coalesce(ts.priority, ?5) \
         FROM template_steps ts WHERE ts.template_id = ?3 \
         ORDER BY ts.level, ts.position",
    )
    .bind(task_id)
    .bind(now)
    .bind(template_id)
    .bind(if admitted {
        run_at.map_or(now, |at| at.max(now))
    } else {
        concurrency::WAITING
    })
    .bind(priority)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO edges (task_id, parent_id, child_id) \
         SELECT ?1, p.id, c.id \
         FROM template_steps ts, json_each(ts.parent_positions) pp \
         JOIN steps c ON c.task_id = ?1 AND c.position = ts.position \
         JOIN steps p ON p.task_id = ?1 AND p.position = pp.value \
         WHERE ts.template_id = ?2",
    )
    .bind(task_id)
    .bind(template_id)
    .execute(&mut **tx)
    .await?;
    Ok(CreatedTask {
        task_id,
        created: true,
    })
}

// ---------------------------------------------------------------------------------------------
// Shared pieces of the hot path (0003)

/// Commit, clearing the reason first: PostgreSQL's `tasker.reason` is transaction-local, and
/// tasker_ctx's row outlives the transaction.
pub(super) async fn commit(mut tx: Tx) -> Result<()> {
    set_reason(&mut tx, None).await?;
    tx.commit().await?;
    Ok(())
}

/// `now + delta` in microseconds, refused (as PostgreSQL refuses it) past the last instant.
fn plus_us(now: i64, delta: i64) -> Result<i64> {
    now.checked_add(delta)
        .filter(|v| DateTime::from_timestamp_micros(*v).is_some())
        .ok_or_else(|| {
            StoreError::InvalidInput(format!("{now} µs + {delta} µs is past the last instant"))
        })
}

/// For each item, whether it is the first occurrence of its step in the batch.
fn first_occurrences(ids: impl Iterator<Item = StepId>) -> Vec<bool> {
    let mut seen = HashSet::new();
    ids.map(|id| seen.insert(id)).collect()
}

fn opt_i64(v: Option<u64>, what: &str) -> Result<Option<i64>> {
    v.map(|x| {
        i64::try_from(x).map_err(|_| StoreError::InvalidInput(format!("{what} {x} is too large")))
    })
    .transpose()
}

/// An item's accounting as JSON members (PgStore refuses the same values before any SQL).
fn accounting_json(a: &Accounting) -> Result<[(&'static str, Value); 4]> {
    Ok([
        ("fuel", json!(opt_i64(a.fuel, "fuel")?)),
        (
            "mem",
            json!(opt_i64(a.peak_memory_bytes, "peak_memory_bytes")?),
        ),
        ("wall", json!(opt_i64(a.wall_us, "wall_us")?)),
        ("hash", json!(a.plugin_hash)),
    ])
}

/// What an attempt said, as a JSON member holding the stored text (null: nothing said).
fn log_member(log: &AttemptLog) -> Value {
    json!(log.to_json().map(|v| v.to_string()))
}

/// The current row of each step a batch names.
struct Current {
    task_id: TaskId,
    state: StepState,
    claim_count: i64,
    worker: Option<String>,
    attempts: i64,
    max_attempts: i64,
    retryable: bool,
    backoff: Backoff,
    max_retry_after_ms: i64,
}

fn current_row(row: &SqliteRow) -> Result<Current> {
    let ms = |name: &str| -> Result<u64> {
        u64::try_from(col::<i64>(row, name)?)
            .map_err(|_| StoreError::decode(format!("column {name}"), "negative"))
    };
    Ok(Current {
        task_id: col(row, "task_id")?,
        state: step_state(&col::<String>(row, "state")?)?,
        claim_count: col(row, "claim_count")?,
        worker: col(row, "worker")?,
        attempts: col(row, "attempts")?,
        max_attempts: col(row, "max_attempts")?,
        retryable: col(row, "retryable")?,
        backoff: Backoff {
            base_ms: ms("backoff_base_ms")?,
            multiplier: col(row, "backoff_multiplier")?,
            cap_ms: ms("backoff_cap_ms")?,
            jitter: col(row, "backoff_jitter")?,
        },
        max_retry_after_ms: col(row, "max_retry_after_ms")?,
    })
}

async fn current(tx: &mut Tx, ids: &[StepId]) -> Result<HashMap<StepId, Current>> {
    let rows = sqlx::query(
        "SELECT id, task_id, state, claim_count, worker, attempts, max_attempts, retryable, \
                backoff_base_ms, backoff_multiplier, backoff_cap_ms, backoff_jitter, \
                max_retry_after_ms \
         FROM steps WHERE id IN (SELECT value FROM json_each(?))",
    )
    .bind(id_list(ids))
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| Ok((col(r, "id")?, current_row(r)?)))
        .collect()
}

/// `tasker_release_children`: the children of steps that just became complete (or were
/// resolved) lose those parents; the ones left with none become claimable now. Returns how
/// many did.
pub(super) async fn release_children(tx: &mut Tx, parents: &[StepId], now: i64) -> Result<u32> {
    let ready: Vec<bool> = sqlx::query_scalar(
        "UPDATE steps \
         SET unfinished_parents = steps.unfinished_parents - d.n, \
             ready_at = CASE WHEN steps.state IN ('pending', 'waiting_for_retry') \
                                  AND steps.unfinished_parents = d.n \
                             THEN ?1 ELSE steps.ready_at END, \
             updated_at = ?1 \
         FROM (SELECT e.child_id, count(*) AS n FROM edges e \
               WHERE e.parent_id IN (SELECT value FROM json_each(?2)) \
               GROUP BY e.child_id) AS d \
         WHERE steps.id = d.child_id \
         RETURNING steps.ready_at IS NOT NULL AND steps.unfinished_parents = 0",
    )
    .bind(now)
    .bind(id_list(parents))
    .fetch_all(&mut **tx)
    .await?;
    let n = ready.into_iter().filter(|r| *r).count();
    u32::try_from(n).map_err(|_| StoreError::decode("released children", n))
}

/// Add `n` to a counter column of each task: `(task, n)` pairs.
async fn add_to_tasks(
    tx: &mut Tx,
    column: &'static str,
    deltas: &BTreeMap<TaskId, i64>,
    now: i64,
) -> Result<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    let pairs: Vec<Value> = deltas.iter().map(|(t, n)| json!([t, n])).collect();
    sqlx::query(&format!(
        "UPDATE tasks SET {column} = tasks.{column} + (i.value ->> 1), updated_at = ?1 \
         FROM json_each(?2) AS i WHERE tasks.id = i.value ->> 0"
    ))
    .bind(now)
    .bind(Value::from(pairs).to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `tasker_finalize_tasks`: each task becomes what [`rules::finalize`] says. Returns the
/// finalized tasks and their new state. Tasks are updated in ascending id order, PostgreSQL's
/// event order.
pub(super) async fn finalize_tasks(
    tx: &mut Tx,
    tasks: &BTreeSet<TaskId>,
    now: i64,
) -> Result<HashMap<TaskId, TaskState>> {
    if tasks.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<i64> = tasks.iter().map(|t| t.get()).collect();
    // Whether a step can move is asked only where the answer depends on it, as PostgreSQL's
    // inlined CASE does.
    let rows: Vec<(TaskId, String, i64, i64, bool)> = sqlx::query_as(
        "SELECT t.id, t.state, t.unfinished_steps, t.error_steps, \
                CASE WHEN t.unfinished_steps > 0 AND t.error_steps > 0 THEN \
                    EXISTS (SELECT 1 FROM steps s \
                            WHERE s.task_id = t.id \
                              AND (s.state IN ('in_progress', 'waiting_for_retry') \
                                   OR s.ready_at IS NOT NULL)) \
                ELSE 1 END \
         FROM tasks t WHERE t.id IN (SELECT value FROM json_each(?1)) ORDER BY t.id",
    )
    .bind(id_list(&ids))
    .fetch_all(&mut **tx)
    .await?;
    let mut finalized = HashMap::new();
    for (id, state, unfinished, errors, can_move) in rows {
        let Some(to) = rules::finalize(task_state(&state)?, unfinished, errors, can_move) else {
            continue;
        };
        sqlx::query("UPDATE tasks SET state = ?1, finished_at = ?2, updated_at = ?2 WHERE id = ?3")
            .bind(to.as_str())
            .bind(now)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        finalized.insert(id, to);
    }
    Ok(finalized)
}

/// `enqueue_custom_events`: the handlers' custom events of the attempts this transaction
/// accepted, after every other write (PgStore calls it after complete_steps / fail_steps,
/// in the same transaction).
async fn enqueue_custom(
    tx: &mut Tx,
    events: &[CustomEventRecord],
    accepted: impl Iterator<Item = StepId>,
    now: DateTime<Utc>,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let accepted: Vec<StepId> = accepted.collect();
    super::hooks::enqueue_custom_events(tx, events, &accepted, now).await
}

// ---------------------------------------------------------------------------------------------
// claim_ready_steps

const CLAIMED_COLUMNS: &str = "\
    SELECT s.id, s.task_id, s.claim_count, s.attempts + 1 AS attempt, s.max_attempts, s.name, \
           ts.handler, ts.config, ts.limits, ts.grants, t.context, \
           coalesce((SELECT json_group_object(ps.name, json(ps.result)) \
                     FROM edges e JOIN steps ps ON ps.id = e.parent_id \
                     WHERE e.child_id = s.id), '{}') AS parent_results, \
           tp.template_key, s.lease_expires_at, \
           CASE WHEN ts.pin = 'sticky' AND s.claim_count > 1 THEN \
               (SELECT a.plugin_hash FROM attempts a \
                WHERE a.step_id = s.id AND a.plugin_hash IS NOT NULL \
                  AND a.attempt_no > coalesce( \
                      (SELECT max(json_extract(tr.metadata, '$.attempt')) \
                       FROM step_transitions tr \
                       WHERE tr.step_id = s.id AND tr.from_state = 'error' \
                         AND tr.to_state = 'pending'), 0) \
                ORDER BY a.attempt_no LIMIT 1) \
           END AS pinned_hash \
    FROM steps s \
    JOIN tasks t ON t.id = s.task_id \
    JOIN templates tp ON tp.id = t.template_id \
    JOIN template_steps ts ON ts.template_id = t.template_id AND ts.position = s.position \
    WHERE s.id IN (SELECT value FROM json_each(?)) \
    ORDER BY s.id";

fn claimed_step(row: &SqliteRow, started: &HashSet<TaskId>) -> Result<ClaimedStep> {
    let handler: String = col(row, "handler")?;
    let task_id: TaskId = col(row, "task_id")?;
    let mut p = Payload::default();
    let limits = p.typed("limits", "template_steps.limits", json_col(row, "limits"));
    let grants = p.typed("grants", "template_steps.grants", json_col(row, "grants"));
    Ok(ClaimedStep {
        step_id: col(row, "id")?,
        task_id,
        token: col(row, "claim_count")?,
        attempt: u32_col(row, "attempt")?,
        max_attempts: u32_col(row, "max_attempts")?,
        step_name: col(row, "name")?,
        handler: handler
            .parse()
            .map_err(|e| StoreError::decode("template_steps.handler", e))?,
        config: p.field("config", json_col(row, "config")),
        limits,
        grants,
        context: p.field("context", json_col(row, "context")),
        parent_results: p.field("parent results", json_col(row, "parent_results")),
        template_key: col(row, "template_key")?,
        lease_expires_at: ts_col(row, "lease_expires_at")?,
        task_started: started.contains(&task_id),
        pinned_hash: col(row, "pinned_hash")?,
        defect: p.defect(),
    })
}

/// A claim's arguments, checked and converted as `claim_ready_steps` checks them: the limit,
/// and the lease's expiry from `now` (both in µs).
struct ClaimArgs {
    limit: i32,
    now: i64,
    expires: i64,
    /// Only this task's steps (a worker scoped to its task).
    task: Option<TaskId>,
}

/// The claim half of a hop: for `worker`, up to `limit` steps under `lease`, of `task` only
/// when given.
#[derive(Clone, Copy)]
pub(super) struct ClaimOf<'a> {
    pub task: Option<TaskId>,
    pub worker: &'a str,
    pub limit: u32,
    pub lease: Duration,
}

fn claim_args(
    fname: &str,
    task: Option<TaskId>,
    worker: &str,
    limit: u32,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<ClaimArgs> {
    let limit = i32::try_from(limit)
        .map_err(|_| StoreError::InvalidInput(format!("claim limit {limit} is too large")))?;
    let lease = rules::micros("lease", lease)?;
    if worker.is_empty() {
        return Err(StoreError::InvalidInput(format!(
            "{fname}: worker must be a non-empty name"
        )));
    }
    if lease <= 0 {
        return Err(StoreError::InvalidInput(format!(
            "{fname}: lease must be positive, got 00:00:00"
        )));
    }
    let now = us(now);
    Ok(ClaimArgs {
        limit,
        now,
        expires: plus_us(now, lease)?,
        task,
    })
}

pub(super) async fn claim(
    s: &SqliteStore,
    task: Option<TaskId>,
    worker: &str,
    limit: u32,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<ClaimedStep>> {
    if limit < 1 {
        return Err(StoreError::InvalidInput(format!(
            "claim_ready_steps: limit must be >= 1, got {limit}"
        )));
    }
    let args = claim_args("claim_ready_steps", task, worker, limit, lease, now)?;

    // Idle workers poll: answer "nothing ready" from a reader, without the write lock. A
    // step that becomes ready after this look is found by the next claim, as on PostgreSQL.
    let any: bool = match task {
        // One range of the queue per priority (its leading column).
        None => {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM json_each('[5,4,3,2,1]') p WHERE EXISTS (\
                     SELECT 1 FROM steps WHERE priority = p.value AND ready_at IS NOT NULL \
                     AND ready_at <= ?))",
            )
            .bind(args.now)
            .fetch_one(s.reader())
            .await?
        }
        Some(task) => {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM steps WHERE task_id = ? AND ready_at IS NOT NULL \
                 AND ready_at <= ?)",
            )
            .bind(task)
            .bind(args.now)
            .fetch_one(s.reader())
            .await?
        }
    };
    if !any {
        return Ok(Vec::new());
    }

    let mut tx = s.write().await?;
    let claimed = claim_in(&mut tx, worker, &args).await?;
    if claimed.is_empty() {
        tx.rollback().await?;
        return Ok(Vec::new());
    }
    commit(tx).await?;
    Ok(claimed)
}

/// `complete_steps` then `claim_ready_steps` in one write transaction, as PostgreSQL's
/// `complete_and_claim_steps` does: a hop of a chain is one transaction, and a refused
/// completion does not stop the claim.
pub(super) async fn complete_and_claim(
    s: &SqliteStore,
    items: &[StepCompletion],
    events: &[CustomEventRecord],
    claim: ClaimOf<'_>,
    now: DateTime<Utc>,
) -> Result<(Vec<CompletionOutcome>, Vec<ClaimedStep>)> {
    let worker = claim.worker;
    let args = if claim.limit > 0 {
        Some(claim_args(
            "complete_and_claim_steps",
            claim.task,
            claim.worker,
            claim.limit,
            claim.lease,
            now,
        )?)
    } else {
        None
    };
    let mut tx = s.write().await?;
    let out = complete_in(&mut tx, items, us(now)).await?;
    let accepted = out.iter().filter(|o| o.accepted()).map(|o| o.step_id);
    enqueue_custom(&mut tx, events, accepted, now).await?;
    let claimed = match &args {
        Some(args) => claim_in(&mut tx, worker, args).await?,
        None => Vec::new(),
    };
    commit(tx).await?;
    Ok((out, claimed))
}

/// Up to `limit` (?2) ready steps (ready_at <= ?1) from the head of each priority.
const CLAIM_HEADS_SQL: &str = "\
    SELECT * FROM (SELECT id, ready_at, priority FROM steps \
                   WHERE priority = 5 AND ready_at IS NOT NULL AND ready_at <= ?1 \
                   ORDER BY ready_at, id LIMIT ?2) \
    UNION ALL SELECT * FROM (SELECT id, ready_at, priority FROM steps \
                   WHERE priority = 4 AND ready_at IS NOT NULL AND ready_at <= ?1 \
                   ORDER BY ready_at, id LIMIT ?2) \
    UNION ALL SELECT * FROM (SELECT id, ready_at, priority FROM steps \
                   WHERE priority = 3 AND ready_at IS NOT NULL AND ready_at <= ?1 \
                   ORDER BY ready_at, id LIMIT ?2) \
    UNION ALL SELECT * FROM (SELECT id, ready_at, priority FROM steps \
                   WHERE priority = 2 AND ready_at IS NOT NULL AND ready_at <= ?1 \
                   ORDER BY ready_at, id LIMIT ?2) \
    UNION ALL SELECT * FROM (SELECT id, ready_at, priority FROM steps \
                   WHERE priority = 1 AND ready_at IS NOT NULL AND ready_at <= ?1 \
                   ORDER BY ready_at, id LIMIT ?2)";

/// The first `limit` of the candidates `(id, ready_at µs, priority)` in the claim order
/// (`tasker_core::priority::claim_order`, the rule PostgreSQL's tasker_claim_key follows).
fn claim_choice(rows: Vec<(StepId, i64, i64)>, limit: i32) -> Result<Vec<StepId>> {
    let mut keyed = rows
        .into_iter()
        .map(|(id, at, p)| {
            let p = Priority::new(p)
                .ok_or_else(|| StoreError::decode("steps.priority", format!("priority {p}")))?;
            Ok((id.get(), at, p))
        })
        .collect::<Result<Vec<_>>>()?;
    priority::claim_order(&mut keyed);
    keyed.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(keyed
        .into_iter()
        .map(|(id, _, _)| StepId::new(id))
        .collect())
}

/// The claim itself, inside the caller's write transaction.
async fn claim_in(tx: &mut Tx, worker: &str, args: &ClaimArgs) -> Result<Vec<ClaimedStep>> {
    let ClaimArgs {
        limit,
        now,
        expires,
        task,
    } = *args;
    let rows: Vec<(StepId, i64, i64)> = match task {
        // The claim queue (steps_claim_queue): the head of each priority, in ready order.
        None => {
            sqlx::query_as(CLAIM_HEADS_SQL)
                .bind(now)
                .bind(limit)
                .fetch_all(&mut **tx)
                .await?
        }
        // One task's steps, through its index steps_task.
        Some(task) => {
            sqlx::query_as(
                "SELECT id, ready_at, priority FROM steps INDEXED BY steps_task \
                 WHERE task_id = ? AND ready_at IS NOT NULL AND ready_at <= ?",
            )
            .bind(task)
            .bind(now)
            .fetch_all(&mut **tx)
            .await?
        }
    };
    let ids = claim_choice(rows, limit)?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids_json = id_list(&ids);
    set_reason(tx, Some("claim")).await?;
    let tasks: Vec<TaskId> = sqlx::query_scalar(
        "UPDATE steps \
         SET state = 'in_progress', ready_at = NULL, claim_count = claim_count + 1, \
             worker = ?1, last_attempted_at = ?2, lease_expires_at = ?3, updated_at = ?2 \
         WHERE id IN (SELECT value FROM json_each(?4)) \
         RETURNING task_id",
    )
    .bind(worker)
    .bind(now)
    .bind(expires)
    .bind(&ids_json)
    .fetch_all(&mut **tx)
    .await?;
    let tasks: BTreeSet<TaskId> = tasks.into_iter().collect();
    let tasks: Vec<TaskId> = tasks.into_iter().collect();

    // A task's first claim starts it.
    let started: Vec<TaskId> = sqlx::query_scalar(
        "UPDATE tasks SET state = 'in_progress', started_at = coalesce(started_at, ?1), \
                          updated_at = ?1 \
         WHERE id IN (SELECT value FROM json_each(?2)) AND state = 'pending' \
         RETURNING id",
    )
    .bind(now)
    .bind(id_list(&tasks))
    .fetch_all(&mut **tx)
    .await?;
    let started: HashSet<TaskId> = started.into_iter().collect();

    let rows = sqlx::query(CLAIMED_COLUMNS)
        .bind(&ids_json)
        .fetch_all(&mut **tx)
        .await?;
    let claimed = rows
        .iter()
        .map(|r| claimed_step(r, &started))
        .collect::<Result<Vec<_>>>()?;
    Ok(claimed)
}

/// `next_ready_at()`: the earliest ready_at in the claim queue.
pub(super) async fn next_ready_at(s: &SqliteStore) -> Result<Option<DateTime<Utc>>> {
    // The least of each priority's head, as PostgreSQL's next_ready_at(); a waiting task's
    // steps (concurrency::WAITING) are never due.
    // One row always (min of nothing is NULL), so fetch_one into an Option.
    let at: Option<i64> = sqlx::query_scalar(
        "SELECT min(ready_at) FROM (\
             SELECT (SELECT ready_at FROM steps \
                     WHERE priority = p.value AND ready_at < 9223372036854775807 \
                     ORDER BY ready_at, id LIMIT 1) AS ready_at \
             FROM json_each('[1,2,3,4,5]') p)",
    )
    .fetch_one(s.reader())
    .await?;
    at.map(ts).transpose()
}

// ---------------------------------------------------------------------------------------------
// complete_steps

pub(super) async fn complete(
    s: &SqliteStore,
    items: &[StepCompletion],
    events: &[CustomEventRecord],
    now: DateTime<Utc>,
) -> Result<Vec<CompletionOutcome>> {
    if items.is_empty() && events.is_empty() {
        return Ok(Vec::new());
    }
    let now_us = us(now);
    let mut tx = s.write().await?;
    let out = complete_in(&mut tx, items, now_us).await?;
    let accepted = out.iter().filter(|o| o.accepted()).map(|o| o.step_id);
    enqueue_custom(&mut tx, events, accepted, now).await?;
    commit(tx).await?;
    Ok(out)
}

async fn complete_in(
    tx: &mut Tx,
    items: &[StepCompletion],
    now: i64,
) -> Result<Vec<CompletionOutcome>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let mut accounting = Vec::with_capacity(items.len());
    for c in items {
        accounting.push(accounting_json(&c.accounting)?);
    }
    let results = items
        .iter()
        .map(|c| serde_json::to_string(&c.result))
        .collect::<serde_json::Result<Vec<_>>>()
        .map_err(|e| StoreError::InvalidInput(format!("step result: {e}")))?;
    let ids: Vec<StepId> = items.iter().map(|c| c.step_id).collect();
    set_reason(tx, Some("complete")).await?;
    let cur = current(tx, &ids).await?;
    let first = first_occurrences(ids.iter().copied());
    let accepted: Vec<bool> = items
        .iter()
        .zip(&first)
        .map(|(c, &first)| {
            first
                && cur
                    .get(&c.step_id)
                    .is_some_and(|s| s.state == StepState::InProgress && s.claim_count == c.token)
        })
        .collect();

    // In PostgreSQL's event order: task, then step.
    let mut done: Vec<(TaskId, StepId, usize)> = (0..items.len())
        .filter(|&i| accepted[i])
        .map(|i| (cur[&items[i].step_id].task_id, items[i].step_id, i))
        .collect();
    done.sort_unstable();
    let mut finalized = HashMap::new();
    if !done.is_empty() {
        let rows: Vec<Value> = done
            .iter()
            .map(|&(_, id, i)| {
                let mut o = serde_json::Map::new();
                o.insert("id".into(), json!(id));
                o.insert("res".into(), json!(results[i]));
                for (k, v) in accounting[i].clone() {
                    o.insert(k.into(), v);
                }
                o.insert("logs".into(), log_member(&items[i].log));
                Value::Object(o)
            })
            .collect();
        let rows = Value::from(rows).to_string();
        sqlx::query(
            "UPDATE steps \
             SET state = 'complete', result = i.value ->> 'res', attempts = steps.attempts + 1, \
                 lease_expires_at = NULL, finished_at = ?1, updated_at = ?1 \
             FROM json_each(?2) AS i WHERE steps.id = i.value ->> 'id'",
        )
        .bind(now)
        .bind(&rows)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO attempts (step_id, attempt_no, task_id, worker, started_at, finished_at, \
                                   outcome, fuel, peak_memory_bytes, wall_us, plugin_hash, logs) \
             SELECT s.id, s.claim_count, s.task_id, s.worker, s.last_attempted_at, ?1, \
                    'completed', i.value ->> 'fuel', i.value ->> 'mem', i.value ->> 'wall', \
                    i.value ->> 'hash', i.value ->> 'logs' \
             FROM json_each(?2) AS i JOIN steps s ON s.id = i.value ->> 'id' \
             ORDER BY i.key",
        )
        .bind(now)
        .bind(&rows)
        .execute(&mut **tx)
        .await?;

        let parents: Vec<StepId> = done.iter().map(|&(_, id, _)| id).collect();
        release_children(tx, &parents, now).await?;
        let mut per_task: BTreeMap<TaskId, i64> = BTreeMap::new();
        for &(task, _, _) in &done {
            *per_task.entry(task).or_default() -= 1;
        }
        add_to_tasks(tx, "unfinished_steps", &per_task, now).await?;
        set_reason(tx, Some("steps_finished")).await?;
        finalized = finalize_tasks(tx, &per_task.keys().copied().collect(), now).await?;
    }

    Ok(items
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let step = cur.get(&c.step_id);
            let task_id = step.map(|s| s.task_id);
            if accepted[i] {
                CompletionOutcome {
                    step_id: c.step_id,
                    task_id,
                    refusal: None,
                    task_finalized: task_id.and_then(|t| finalized.get(&t).copied()),
                }
            } else {
                CompletionOutcome {
                    step_id: c.step_id,
                    task_id,
                    refusal: Some(refusal(
                        step.map(|s| (s.state, s.claim_count)),
                        c.token,
                        !first[i],
                    )),
                    task_finalized: None,
                }
            }
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// fail_steps / fail_steps_decided

pub(super) async fn fail(
    s: &SqliteStore,
    items: &[StepFailure],
    decisions: &[FailureDecision],
    events: &[CustomEventRecord],
    now: DateTime<Utc>,
) -> Result<Vec<FailureOutcome>> {
    if items.is_empty() && events.is_empty() {
        return Ok(Vec::new());
    }
    let now_us = us(now);
    let mut tx = s.write().await?;
    let out = fail_in(&mut tx, items, decisions, now_us).await?;
    let accepted = out.iter().filter(|o| o.accepted()).map(|o| o.step_id);
    enqueue_custom(&mut tx, events, accepted, now).await?;
    commit(tx).await?;
    Ok(out)
}

/// An accepted failure: what fail_steps decided for it.
struct Decided {
    decision: RetryDecision,
    ready_at: Option<i64>,
    /// A retry's capped retry-after (`backoff_request_ms`).
    requested: Option<i64>,
}

fn decision_str(d: RetryDecision) -> &'static str {
    match d {
        RetryDecision::Retry => "retry",
        RetryDecision::Permanent => "permanent",
        RetryDecision::Exhausted => "exhausted",
    }
}

/// fail_steps' decision for an accepted failure: retry, permanent or exhausted, and when a
/// retry is due (a capped retry-after, else the step's backoff).
fn decide(f: &StepFailure, step: &Current, id: StepId, now: i64) -> Result<Decided> {
    let decision = rules::retry_decision(
        f.retryable,
        step.retryable,
        step.attempts,
        step.max_attempts,
    );
    let requested = f.retry_after_ms.map(|ms| {
        i64::try_from(ms)
            .unwrap_or(i64::MAX)
            .min(step.max_retry_after_ms)
    });
    let failure = u32::try_from(step.attempts + 1)
        .map_err(|_| StoreError::decode("steps.attempts", step.attempts))?;
    let backoff = i64::try_from(step.backoff.delay_ms(id.get(), failure)).unwrap_or(i64::MAX);
    let ready_at = match decision {
        RetryDecision::Retry => {
            // As `tasker_ms` clamps in SQL: no stored setting can overflow the instant.
            let delay_ms = requested.unwrap_or(backoff).clamp(0, MAX_DELAY_MS as i64);
            Some(plus_us(now, delay_ms * 1000)?)
        }
        _ => None,
    };
    Ok(Decided {
        decision,
        ready_at,
        requested: requested.filter(|_| decision == RetryDecision::Retry),
    })
}

async fn fail_in(
    tx: &mut Tx,
    items: &[StepFailure],
    decisions: &[FailureDecision],
    now: i64,
) -> Result<Vec<FailureOutcome>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let mut accounting = Vec::with_capacity(items.len());
    for f in items {
        accounting.push(accounting_json(&f.accounting)?);
    }
    let ids: Vec<StepId> = items.iter().map(|f| f.step_id).collect();
    set_reason(tx, Some("fail")).await?;
    let cur = current(tx, &ids).await?;
    let first = first_occurrences(ids.iter().copied());

    let mut decided: HashMap<usize, Decided> = HashMap::new();
    let mut rows: Vec<(TaskId, StepId, Value)> = Vec::new();
    for (i, f) in items.iter().enumerate() {
        let Some(step) = cur.get(&f.step_id) else {
            continue;
        };
        if !(first[i] && step.state == StepState::InProgress && step.claim_count == f.token) {
            continue;
        }
        let d = decide(f, step, f.step_id, now)?;
        // Without an explicit decision, the built-in policy decided.
        let who = decisions.get(i);
        let mut o = serde_json::Map::new();
        o.insert("id".into(), json!(f.step_id));
        o.insert(
            "state".into(),
            json!(match d.decision {
                RetryDecision::Retry => "waiting_for_retry",
                _ => "error",
            }),
        );
        o.insert("ready_at".into(), json!(d.ready_at));
        o.insert("requested".into(), json!(d.requested));
        o.insert("kind".into(), json!(f.error_kind.as_str()));
        o.insert("msg".into(), json!(f.message));
        o.insert("retryable".into(), json!(f.retryable));
        o.insert("decision".into(), json!(decision_str(d.decision)));
        for (k, v) in accounting[i].clone() {
            o.insert(k.into(), v);
        }
        o.insert(
            "by".into(),
            json!(who.map_or("builtin", |d| d.decided_by.as_str())),
        );
        o.insert(
            "detail".into(),
            json!(who.and_then(|d| d.detail.as_deref())),
        );
        o.insert("warn".into(), json!(who.and_then(|d| d.warning.as_deref())));
        o.insert("logs".into(), log_member(&f.log));
        rows.push((step.task_id, f.step_id, Value::Object(o)));
        decided.insert(i, d);
    }

    let mut finalized = HashMap::new();
    if !rows.is_empty() {
        // In PostgreSQL's event order: task, then step.
        rows.sort_unstable_by_key(|(task, id, _)| (*task, *id));
        let mut errors: BTreeMap<TaskId, i64> = BTreeMap::new();
        let mut tasks: BTreeSet<TaskId> = BTreeSet::new();
        for (task, _, o) in &rows {
            tasks.insert(*task);
            if o["state"] == "error" {
                *errors.entry(*task).or_default() += 1;
            }
        }
        let json_rows =
            Value::from(rows.into_iter().map(|(_, _, o)| o).collect::<Vec<_>>()).to_string();
        sqlx::query(
            "UPDATE steps \
             SET state = i.value ->> 'state', attempts = steps.attempts + 1, \
                 ready_at = i.value ->> 'ready_at', \
                 backoff_request_ms = i.value ->> 'requested', \
                 lease_expires_at = NULL, last_failure_at = ?1, \
                 last_error_kind = coalesce(i.value ->> 'kind', 'unknown'), \
                 finished_at = CASE WHEN i.value ->> 'state' = 'waiting_for_retry' THEN NULL \
                                    ELSE ?1 END, \
                 updated_at = ?1 \
             FROM json_each(?2) AS i WHERE steps.id = i.value ->> 'id'",
        )
        .bind(now)
        .bind(&json_rows)
        .execute(&mut **tx)
        .await?;
        // Who decided is recorded with the attempt (fail_steps_decided's UPDATE of the row
        // fail_steps just wrote).
        sqlx::query(
            "INSERT INTO attempts (step_id, attempt_no, task_id, worker, started_at, finished_at, \
                                   outcome, error_kind, message, retryable, decision, \
                                   next_ready_at, fuel, peak_memory_bytes, wall_us, plugin_hash, \
                                   decided_by, decision_detail, policy_warning, logs) \
             SELECT s.id, s.claim_count, s.task_id, s.worker, s.last_attempted_at, ?1, 'failed', \
                    coalesce(i.value ->> 'kind', 'unknown'), i.value ->> 'msg', \
                    i.value ->> 'retryable', i.value ->> 'decision', s.ready_at, \
                    i.value ->> 'fuel', i.value ->> 'mem', i.value ->> 'wall', \
                    i.value ->> 'hash', i.value ->> 'by', i.value ->> 'detail', \
                    i.value ->> 'warn', i.value ->> 'logs' \
             FROM json_each(?2) AS i JOIN steps s ON s.id = i.value ->> 'id' \
             ORDER BY i.key",
        )
        .bind(now)
        .bind(&json_rows)
        .execute(&mut **tx)
        .await?;
        add_to_tasks(tx, "error_steps", &errors, now).await?;
        set_reason(tx, Some("step_failed")).await?;
        finalized = finalize_tasks(tx, &tasks, now).await?;
    }

    items
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let step = cur.get(&f.step_id);
            let task_id = step.map(|s| s.task_id);
            Ok(match decided.get(&i) {
                Some(d) => FailureOutcome {
                    step_id: f.step_id,
                    task_id,
                    refusal: None,
                    decision: Some(d.decision),
                    next_ready_at: d.ready_at.map(ts).transpose()?,
                    task_finalized: task_id.and_then(|t| finalized.get(&t).copied()),
                },
                None => FailureOutcome {
                    step_id: f.step_id,
                    task_id,
                    refusal: Some(refusal(
                        step.map(|s| (s.state, s.claim_count)),
                        f.token,
                        !first[i],
                    )),
                    decision: None,
                    next_ready_at: None,
                    task_finalized: None,
                },
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// heartbeat_steps

pub(super) async fn heartbeat(
    s: &SqliteStore,
    worker: &str,
    leases: &[Lease],
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<HeartbeatOutcome>> {
    if leases.is_empty() {
        return Ok(Vec::new());
    }
    let lease = rules::micros("lease", lease)?;
    if lease <= 0 {
        return Err(StoreError::InvalidInput(
            "heartbeat_steps: lease must be positive, got 00:00:00".into(),
        ));
    }
    let now = us(now);
    let expires = plus_us(now, lease)?;
    let pairs: Vec<Value> = leases.iter().map(|l| json!([l.step_id, l.token])).collect();
    let mut tx = s.write().await?;
    let extended: Vec<StepId> = sqlx::query_scalar(
        "UPDATE steps SET lease_expires_at = ?1, updated_at = ?2 \
         FROM json_each(?3) AS i \
         WHERE steps.id = i.value ->> 0 AND steps.claim_count = i.value ->> 1 \
           AND steps.state = 'in_progress' AND steps.worker = ?4 \
         RETURNING steps.id",
    )
    .bind(expires)
    .bind(now)
    .bind(Value::from(pairs).to_string())
    .bind(worker)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    // As PostgreSQL's result joins on the step id only: every item of an extended step
    // reports the new expiry.
    let extended: HashSet<StepId> = extended.into_iter().collect();
    let expires = ts(expires)?;
    Ok(leases
        .iter()
        .map(|l| HeartbeatOutcome {
            step_id: l.step_id,
            lease_expires_at: extended.contains(&l.step_id).then_some(expires),
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// expire_leases

pub(super) async fn expire_leases(
    s: &SqliteStore,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<ExpiredLease>> {
    let limit = i64::from(i32::try_from(limit).unwrap_or(i32::MAX));
    let now = us(now);
    // Idle sweeps: nothing expired, no write lock.
    let any: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM steps \
                        WHERE lease_expires_at IS NOT NULL AND lease_expires_at < ?)",
    )
    .bind(now)
    .fetch_one(s.reader())
    .await?;
    if !any {
        return Ok(Vec::new());
    }

    let mut tx = s.write().await?;
    let mut ids: Vec<StepId> = sqlx::query_scalar(
        "SELECT id FROM steps WHERE lease_expires_at IS NOT NULL AND lease_expires_at < ? \
         ORDER BY lease_expires_at, id LIMIT ?",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    if ids.is_empty() {
        tx.rollback().await?;
        return Ok(Vec::new());
    }
    ids.sort_unstable();
    let ids_json = id_list(&ids);
    set_reason(&mut tx, Some("lease_expired")).await?;
    let rows = sqlx::query(
        "UPDATE steps \
         SET state = CASE WHEN lease_losses + 1 >= max_lease_losses \
                          THEN 'error' ELSE 'waiting_for_retry' END, \
             lease_losses = lease_losses + 1, \
             ready_at = CASE WHEN lease_losses + 1 >= max_lease_losses THEN NULL ELSE ?1 END, \
             backoff_request_ms = 0, \
             lease_expires_at = NULL, \
             last_failure_at = ?1, \
             last_error_kind = 'lease_lost', \
             finished_at = CASE WHEN lease_losses + 1 >= max_lease_losses THEN ?1 END, \
             updated_at = ?1 \
         WHERE id IN (SELECT value FROM json_each(?2)) \
           AND state = 'in_progress' AND lease_expires_at < ?1 \
         RETURNING id, task_id, worker, claim_count, state, lease_losses",
    )
    .bind(now)
    .bind(&ids_json)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO attempts (step_id, attempt_no, task_id, worker, started_at, finished_at, \
                               outcome, error_kind, message, retryable, decision, next_ready_at) \
         SELECT id, claim_count, task_id, worker, last_attempted_at, ?1, 'lease_lost', \
                'lease_lost', \
                format('lease expired (loss %d of %d allowed)', lease_losses, max_lease_losses), \
                state = 'waiting_for_retry', \
                CASE WHEN state = 'error' THEN 'exhausted' ELSE 'retry' END, \
                ready_at \
         FROM steps WHERE id IN (SELECT value FROM json_each(?2)) \
         ORDER BY task_id, id",
    )
    .bind(now)
    .bind(&ids_json)
    .execute(&mut *tx)
    .await?;

    let mut expired = Vec::with_capacity(rows.len());
    for r in &rows {
        expired.push(ExpiredLease {
            step_id: col(r, "id")?,
            task_id: col(r, "task_id")?,
            worker: col(r, "worker")?,
            token: col(r, "claim_count")?,
            state: step_state(&col::<String>(r, "state")?)?,
            lease_losses: u32_col(r, "lease_losses")?,
            task_finalized: None,
        });
    }
    let mut errors: BTreeMap<TaskId, i64> = BTreeMap::new();
    for e in &expired {
        if e.state == tasker_core::state::StepState::Error {
            *errors.entry(e.task_id).or_default() += 1;
        }
    }
    if !errors.is_empty() {
        add_to_tasks(&mut tx, "error_steps", &errors, now).await?;
        let tasks: BTreeSet<TaskId> = expired.iter().map(|e| e.task_id).collect();
        let finalized = finalize_tasks(&mut tx, &tasks, now).await?;
        for e in &mut expired {
            e.task_finalized = finalized.get(&e.task_id).copied();
        }
    }
    commit(tx).await?;
    expired.sort_unstable_by_key(|e| e.step_id);
    Ok(expired)
}

// ---------------------------------------------------------------------------------------------
// release_steps

pub(super) async fn release(
    s: &SqliteStore,
    worker: &str,
    leases: &[Lease],
    now: DateTime<Utc>,
) -> Result<Vec<ReleaseOutcome>> {
    if leases.is_empty() {
        return Ok(Vec::new());
    }
    let now = us(now);
    let ids: Vec<StepId> = leases.iter().map(|l| l.step_id).collect();
    let mut tx = s.write().await?;
    set_reason(&mut tx, Some("released")).await?;
    let cur = current(&mut tx, &ids).await?;
    let first = first_occurrences(ids.iter().copied());
    let accepted: Vec<bool> = leases
        .iter()
        .zip(&first)
        .map(|(l, &first)| {
            first
                && cur.get(&l.step_id).is_some_and(|s| {
                    s.state == StepState::InProgress
                        && s.claim_count == l.token
                        && s.worker.as_deref() == Some(worker)
                })
        })
        .collect();
    let mut done: Vec<StepId> = (0..leases.len())
        .filter(|&i| accepted[i])
        .map(|i| leases[i].step_id)
        .collect();
    if !done.is_empty() {
        done.sort_unstable();
        let done_json = id_list(&done);
        sqlx::query(
            "UPDATE steps \
             SET state = 'waiting_for_retry', ready_at = ?1, backoff_request_ms = 0, \
                 lease_expires_at = NULL, last_failure_at = ?1, last_error_kind = 'released', \
                 updated_at = ?1 \
             WHERE id IN (SELECT value FROM json_each(?2))",
        )
        .bind(now)
        .bind(&done_json)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO attempts (step_id, attempt_no, task_id, worker, started_at, finished_at, \
                                   outcome, error_kind, message, next_ready_at) \
             SELECT id, claim_count, task_id, worker, last_attempted_at, ?1, 'released', \
                    'released', 'released by its worker', ?1 \
             FROM steps WHERE id IN (SELECT value FROM json_each(?2)) \
             ORDER BY task_id, id",
        )
        .bind(now)
        .bind(&done_json)
        .execute(&mut *tx)
        .await?;
    }
    commit(tx).await?;

    Ok(leases
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let step = cur.get(&l.step_id);
            let refused = if accepted[i] {
                None
            } else if step.is_some_and(|s| {
                s.worker.as_deref() != Some(worker)
                    && s.state == StepState::InProgress
                    && s.claim_count == l.token
            }) {
                Some(Refusal::OtherWorker)
            } else {
                Some(refusal(
                    step.map(|s| (s.state, s.claim_count)),
                    l.token,
                    !first[i],
                ))
            };
            ReleaseOutcome {
                step_id: l.step_id,
                refusal: refused,
            }
        })
        .collect())
}
