//! Tables printed by the CLI.

use std::path::Path;

use anyhow::{Context, Result};
use chrono::Utc;
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use tasker_core::state::StepState;
use tasker_sandbox::{Plugin, Sandbox};
use tasker_store::{AnyStore, AttemptOutcome, AttemptRow, MAX_PAGE, Store, TaskId};

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    t
}

fn bytes(n: i64) -> String {
    const MIB: f64 = (1 << 20) as f64;
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / MIB)
    } else {
        format!("{:.0} KiB", n as f64 / 1024.0)
    }
}

fn micros(us: i64) -> String {
    if us >= 10_000 {
        format!("{:.0} ms", us as f64 / 1000.0)
    } else {
        format!("{:.2} ms", us as f64 / 1000.0)
    }
}

fn short_hash(h: &str) -> String {
    h.chars().take(12).collect()
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// Text that came from a guest (or a file name), cut to `max_chars` and with control
/// characters escaped, so it can never drive the operator's terminal.
pub(crate) fn guest_text(s: &str, max_chars: usize) -> String {
    let cut: String = s.chars().take(max_chars).collect();
    tasker_core::text::escape_control(&cut).into_owned()
}

fn last_message(attempts: &[AttemptRow]) -> String {
    attempts
        .iter()
        .rev()
        .find_map(|a| {
            a.message.as_ref().map(|m| {
                // Who decided the retry, when it was not the built-in policy, or why not.
                let decided = match (&a.decided_by, &a.decision_detail, &a.policy_warning) {
                    (_, _, Some(w)) => format!(" [warning: {}]", guest_text(w, 160)),
                    (Some(by), Some(d), None) if by != "builtin" => {
                        format!(" [{}: {}]", guest_text(by, 80), guest_text(d, 160))
                    }
                    _ => String::new(),
                };
                format!(
                    "{}: {}{decided}",
                    a.error_kind
                        .map_or_else(|| a.outcome.as_str(), |k| k.as_str()),
                    guest_text(m, 160)
                )
            })
        })
        .unwrap_or_default()
}

/// Per step: state, attempts, wall time, fuel, peak memory, plugin hash of the last attempt.
pub async fn summary(store: &AnyStore, task: TaskId) -> Result<()> {
    let row = store
        .task(task)
        .await?
        .with_context(|| format!("no task {task}"))?;
    let mut t = table(&[
        "step",
        "state",
        "attempts",
        "wall",
        "fuel",
        "peak memory",
        "plugin",
        "last error",
    ]);
    for s in store.steps_of_task(task).await? {
        let attempts = store.attempts_of_step(s.id).await?;
        let last = attempts.last();
        t.add_row(vec![
            s.name.clone(),
            s.state.to_string(),
            made(&attempts).to_string(),
            last.and_then(|a| a.wall_us)
                .map(micros)
                .unwrap_or_else(|| "-".into()),
            opt(last.and_then(|a| a.fuel)),
            last.and_then(|a| a.peak_memory_bytes)
                .map(bytes)
                .unwrap_or_else(|| "-".into()),
            last.and_then(|a| a.plugin_hash.as_deref())
                .map(short_hash)
                .unwrap_or_else(|| "-".into()),
            if s.state == StepState::Complete {
                String::new()
            } else {
                last_message(&attempts)
            },
        ]);
    }
    println!("{t}");
    println!("task {task} ({}): {}", row.template_key, row.state);
    Ok(())
}

/// What `tasker status` prints besides the steps table.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusDetail {
    /// Every attempt of every step.
    pub attempts: bool,
    /// The task's and the steps' transition rows.
    pub transitions: bool,
}

/// Attempts in which the handler ran (a lost lease, a release or a cancel is not one).
fn made(attempts: &[AttemptRow]) -> usize {
    attempts
        .iter()
        .filter(|a| {
            matches!(
                a.outcome,
                AttemptOutcome::Completed | AttemptOutcome::Failed
            )
        })
        .count()
}

/// `tasker status`: the steps table (result, timing, worker, attempts made, why not run,
/// last error), then what `detail` asks for.
pub async fn status(store: &AnyStore, task: TaskId, detail: StatusDetail) -> Result<()> {
    let row = store
        .task(task)
        .await?
        .with_context(|| format!("no task {task}"))?;
    let now = Utc::now();
    let readiness = store.readiness(task, None, now).await?;
    let ctx = store.execution_context(task, now).await?;
    let steps = store.steps_of_task(task).await?;
    let mut all_attempts = Vec::with_capacity(steps.len());
    for s in &steps {
        all_attempts.push(store.attempts_of_step(s.id).await?);
    }
    let mut t = table(&[
        "id",
        "step",
        "state",
        "attempts",
        "wall",
        "worker",
        "finished",
        "result / why not run",
        "last error",
    ]);
    for (s, attempts) in steps.iter().zip(&all_attempts) {
        let last = attempts.last();
        let why = readiness
            .iter()
            .find(|r| r.step_id == s.id)
            .map(|r| r.reason(now))
            .unwrap_or_default();
        let done = matches!(s.state, StepState::Complete | StepState::ResolvedManually);
        let shown = match (&s.result, done) {
            (Some(r), true) => guest_text(&r.to_string(), 60),
            _ => why,
        };
        t.add_row(vec![
            s.id.to_string(),
            s.name.clone(),
            s.state.to_string(),
            format!("{}/{}", made(attempts), s.max_attempts),
            last.and_then(|a| a.wall_us)
                .map(micros)
                .unwrap_or_else(|| "-".into()),
            last.and_then(|a| a.worker.as_deref())
                .map(|w| guest_text(w, 40))
                .unwrap_or_else(|| "-".into()),
            s.finished_at
                .map(|t| t.format("%H:%M:%S%.3f").to_string())
                .unwrap_or_else(|| "-".into()),
            shown,
            // An old error is history once the step completed (see --attempts).
            if done {
                String::new()
            } else {
                last_message(attempts)
            },
        ]);
    }
    println!(
        "task {task} ({}): {}, created {}",
        row.template_key,
        row.state,
        row.created_at.format("%Y-%m-%d %H:%M:%S")
    );
    if let Some(c) = ctx {
        println!(
            "  {}; {:.0}% complete; next: {}; health: {}",
            c.execution_status, c.completion_percentage, c.recommended_action, c.health_status
        );
    }
    println!("{t}");
    if detail.attempts {
        println!("{}", attempts_table(&steps, &all_attempts));
        let mut logs = Vec::with_capacity(steps.len());
        for s in &steps {
            logs.push(store.attempt_logs(s.id, None).await?);
        }
        if let Some(t) = http_table(&steps, &all_attempts, &logs) {
            println!("HTTP requests:\n{t}");
        }
    }
    if detail.transitions {
        let mut t = table(&["at", "entity", "from", "to", "metadata"]);
        let mut rows = Vec::new();
        for tr in store.task_transitions(task).await? {
            rows.push((
                tr.created_at,
                "task".to_owned(),
                tr.from_state.to_string(),
                tr.to_state.to_string(),
                tr.metadata,
            ));
        }
        for s in &steps {
            for tr in store.step_transitions(s.id).await? {
                rows.push((
                    tr.created_at,
                    s.name.clone(),
                    tr.from_state.to_string(),
                    tr.to_state.to_string(),
                    tr.metadata,
                ));
            }
        }
        rows.sort_by_key(|r| r.0);
        for (at, who, from, to, meta) in rows {
            t.add_row(vec![
                at.format("%H:%M:%S%.6f").to_string(),
                who,
                from,
                to,
                guest_text(&meta.to_string(), 80),
            ]);
        }
        println!("{t}");
    }
    for line in crate::hooks::summary_lines(store, task).await? {
        println!("{line}");
    }
    Ok(())
}

/// Every attempt of every step: outcome, kind, message, decision, costs, hash, worker.
fn attempts_table(steps: &[tasker_store::StepRow], attempts: &[Vec<AttemptRow>]) -> Table {
    let mut t = table(&[
        "step", "#", "outcome", "kind", "message", "decision", "fuel", "memory", "wall", "plugin",
        "worker", "started",
    ]);
    for (s, attempts) in steps.iter().zip(attempts) {
        for (i, a) in attempts.iter().enumerate() {
            t.add_row(vec![
                s.name.clone(),
                (i + 1).to_string(),
                a.outcome.as_str().to_owned(),
                opt(a.error_kind.map(|k| k.as_str())),
                a.message
                    .as_deref()
                    .map(|m| guest_text(m, 80))
                    .unwrap_or_else(|| "-".into()),
                match (a.decision, &a.decided_by) {
                    (Some(d), Some(by)) if by != "builtin" => {
                        format!("{} ({})", d.as_str(), guest_text(by, 40))
                    }
                    (Some(d), _) => d.as_str().to_owned(),
                    (None, _) => "-".into(),
                },
                opt(a.fuel),
                a.peak_memory_bytes.map(bytes).unwrap_or_else(|| "-".into()),
                a.wall_us.map(micros).unwrap_or_else(|| "-".into()),
                a.plugin_hash
                    .as_deref()
                    .map(short_hash)
                    .unwrap_or_else(|| "-".into()),
                a.worker
                    .as_deref()
                    .map(|w| guest_text(w, 40))
                    .unwrap_or_else(|| "-".into()),
                a.started_at.format("%H:%M:%S%.3f").to_string(),
            ]);
        }
    }
    t
}

/// Every outbound HTTP request of every attempt, or `None` when no attempt made one.
fn http_table(
    steps: &[tasker_store::StepRow],
    attempts: &[Vec<AttemptRow>],
    logs: &[Vec<tasker_store::AttemptLogRow>],
) -> Option<Table> {
    let mut t = table(&[
        "step", "#", "at", "method", "url", "status", "sent", "received", "took", "note",
    ]);
    let mut any = false;
    for ((s, attempts), logs) in steps.iter().zip(attempts).zip(logs) {
        for row in logs {
            // The attempt's number as the attempts table shows it.
            let n = attempts
                .iter()
                .position(|a| a.attempt_no == row.attempt_no)
                .map_or_else(|| "-".into(), |i| (i + 1).to_string());
            for h in &row.log.http {
                any = true;
                let note = match (&h.error, h.refused) {
                    (Some(e), true) => format!("refused: {}", guest_text(e, 80)),
                    (None, true) => "refused".into(),
                    (Some(e), false) => guest_text(e, 80),
                    (None, false) => String::new(),
                };
                t.add_row(vec![
                    s.name.clone(),
                    n.clone(),
                    micros(i64::try_from(h.at_us).unwrap_or(i64::MAX)),
                    guest_text(&h.method, 10),
                    guest_text(&h.url, 80),
                    opt(h.status),
                    bytes(i64::try_from(h.request_bytes).unwrap_or(i64::MAX)),
                    bytes(i64::try_from(h.response_bytes).unwrap_or(i64::MAX)),
                    micros(i64::try_from(h.duration_us).unwrap_or(i64::MAX)),
                    note,
                ]);
            }
        }
    }
    any.then_some(t)
}

pub async fn templates(store: &AnyStore) -> Result<()> {
    let mut t = table(&["template", "steps", "description"]);
    let mut after = None;
    loop {
        let page = store.list_templates(after.as_deref(), MAX_PAGE).await?;
        for tpl in page.items {
            t.add_row(vec![
                tpl.key,
                tpl.step_count.to_string(),
                tpl.description.unwrap_or_default(),
            ]);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    println!("{t}");
    Ok(())
}

fn cache_size(cache_dir: &Path, p: &Plugin) -> u64 {
    let prefix = p.hash.to_hex();
    std::fs::read_dir(cache_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

pub fn plugins(sandbox: &Sandbox, cache_dir: &Path) {
    let mut t = table(&[
        "plugin",
        "world",
        "hash",
        "size",
        "precompiled cache",
        "file",
    ]);
    let mut plugins = sandbox.registry().plugins();
    plugins.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    for p in plugins {
        t.add_row(vec![
            guest_text(&format!("{}@{}", p.name, p.version), 120),
            p.world().as_str().to_owned(),
            short_hash(&p.hash.to_hex()),
            bytes(p.size_bytes as i64),
            bytes(cache_size(cache_dir, &p) as i64),
            guest_text(&p.path.display().to_string(), 400),
        ]);
    }
    println!("{t}");
}

pub fn plugin(p: &Plugin, cache_dir: &Path) {
    println!("plugin:            {}@{}", p.name, p.version);
    println!("hash:              blake3:{}", p.hash.to_hex());
    println!("file:              {}", p.path.display());
    println!("size:              {}", bytes(p.size_bytes as i64));
    println!(
        "precompiled cache: {} in {}",
        bytes(cache_size(cache_dir, p) as i64),
        cache_dir.display()
    );
    let export = match p.world() {
        tasker_sandbox::World::StepHandler => "handle",
        tasker_sandbox::World::EventHook => "on-event",
        tasker_sandbox::World::RetryPolicy => "decide",
    };
    println!(
        "world:             tasker:plugin/{}@0.1.1 (export: {export})",
        p.world().as_str()
    );
}

/// `tasker tokens list`.
pub fn tokens(rows: &[tasker_store::TokenRow], now: chrono::DateTime<Utc>) {
    let mut t = table(&["name", "permissions", "created", "expires", "state"]);
    for r in rows {
        let state = if r.revoked_at.is_some() {
            "revoked"
        } else if !r.is_valid_at(now) {
            "expired"
        } else {
            "active"
        };
        t.add_row(vec![
            guest_text(&r.name, 64),
            r.permissions.join(","),
            r.created_at.format("%Y-%m-%d %H:%M").to_string(),
            opt(r.expires_at.map(|e| e.format("%Y-%m-%d %H:%M"))),
            state.to_owned(),
        ]);
    }
    println!("{t}");
}

/// `tasker tasks list`.
pub fn tasks(rows: &[tasker_store::TaskRow]) {
    let mut t = table(&["task", "template", "state", "steps", "created", "finished"]);
    for r in rows {
        t.add_row(vec![
            r.id.to_string(),
            r.template_key.clone(),
            r.state.to_string(),
            format!("{}/{}", r.step_count - r.unfinished_steps, r.step_count),
            r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            opt(r.finished_at.map(|e| e.format("%Y-%m-%d %H:%M:%S"))),
        ]);
    }
    println!("{t}");
}

/// A table of already formatted rows (the `--server` commands, whose rows are JSON).
pub fn print_rows(header: &[&str], rows: Vec<Vec<String>>) {
    let mut t = table(header);
    for r in rows {
        t.add_row(r);
    }
    println!("{t}");
}
