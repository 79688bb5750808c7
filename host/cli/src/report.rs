//! Tables printed by the CLI.

use std::path::Path;

use anyhow::{Context, Result};
use chrono::Utc;
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use tasker_core::state::StepState;
use tasker_sandbox::{Plugin, Sandbox};
use tasker_store::{AnyStore, AttemptRow, ReadinessRow, Store, TaskId};

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

/// Why a step has not run yet, from `get_step_readiness_status`.
pub fn readiness_reason(r: &ReadinessRow) -> String {
    if r.state.is_terminal() || r.state == StepState::InProgress {
        return String::new();
    }
    if r.ready_for_execution {
        return "ready".into();
    }
    if !r.dependencies_satisfied {
        return format!(
            "waiting for parents ({} of {} done)",
            r.completed_parents, r.total_parents
        );
    }
    if !r.retry_eligible {
        return if r.state == StepState::Error {
            format!(
                "failed ({} of {} attempts used)",
                r.attempts, r.max_attempts
            )
        } else {
            format!("not retryable ({} attempts)", r.attempts)
        };
    }
    match r.next_retry_at {
        Some(t) if t > Utc::now() => format!("retry at {}", t.format("%H:%M:%S%.3f")),
        _ => "ready".into(),
    }
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
            attempts.len().to_string(),
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

/// `tasker status`: the steps table plus why each unrun step is not ready.
pub async fn status(store: &AnyStore, task: TaskId) -> Result<()> {
    let row = store
        .task(task)
        .await?
        .with_context(|| format!("no task {task}"))?;
    let now = Utc::now();
    let readiness = store.readiness(task, None, now).await?;
    let ctx = store.execution_context(task, now).await?;
    let mut t = table(&[
        "id",
        "step",
        "state",
        "attempts",
        "why not run",
        "last error",
    ]);
    for s in store.steps_of_task(task).await? {
        let attempts = store.attempts_of_step(s.id).await?;
        let why = readiness
            .iter()
            .find(|r| r.step_id == s.id)
            .map(readiness_reason)
            .unwrap_or_default();
        t.add_row(vec![
            s.id.to_string(),
            s.name.clone(),
            s.state.to_string(),
            format!("{}/{}", s.attempts, s.max_attempts),
            why,
            last_message(&attempts),
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
    for line in crate::hooks::summary_lines(store, task).await? {
        println!("{line}");
    }
    Ok(())
}

pub async fn templates(store: &AnyStore) -> Result<()> {
    let rows = store.template_list().await?;
    let mut t = table(&["template", "steps", "description"]);
    for (key, steps, desc) in rows {
        t.add_row(vec![key, steps.to_string(), desc.unwrap_or_default()]);
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
        "world:             tasker:plugin/{}@0.1.0 (export: {export})",
        p.world().as_str()
    );
}
