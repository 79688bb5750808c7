//! What the commands show and wait for about event hooks: draining a task's deliveries,
//! hook grants relative to the template file, and the per-hook summary lines.

use std::path::Path;
use std::time::Duration;

use crate::report::guest_text;
use anyhow::{Context as _, Result};
use tasker_core::template::Template;
use tasker_store::{AnyStore, DeliveryState, Store, TaskId};

/// Wait until no delivery of `task` is pending (or `timeout` passes); `tasker run` uses it so
/// the hooks have seen the task's last events before the command returns.
pub async fn drain(store: &AnyStore, task: TaskId, timeout: Duration) -> Result<bool> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let counts = store.hook_counts(Some(task)).await?;
        if counts.iter().all(|c| c.pending == 0) {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Relative `hooks[].grants.dirs[].host` paths become absolute, relative to the template
/// file (as for steps).
pub fn absolutize_hook_grants(t: &mut Template, base: &Path) -> Result<()> {
    for (i, hook) in t.hooks.iter_mut().enumerate() {
        for dir in &mut hook.grants.dirs {
            let host = Path::new(&dir.host);
            let full = if host.is_absolute() {
                host.to_path_buf()
            } else {
                base.join(host)
            };
            let full = full.canonicalize().with_context(|| {
                format!(
                    "hooks[{i}] ({}): granted directory {} does not exist",
                    hook.component,
                    full.display()
                )
            })?;
            dir.host = full.display().to_string();
        }
    }
    Ok(())
}

/// One line per hook of a task (delivered, pending and dead deliveries), then one per dead
/// letter with its last error.
pub async fn summary_lines(store: &AnyStore, task: TaskId) -> Result<Vec<String>> {
    let counts = store.hook_counts(Some(task)).await?;
    let mut lines: Vec<String> = counts
        .iter()
        .map(|c| {
            format!(
                "hook {}: {} delivered, {} pending, {} dead",
                guest_text(&c.component, 120),
                c.delivered,
                c.pending,
                c.dead
            )
        })
        .collect();
    if counts.iter().any(|c| c.dead > 0) {
        for row in store.hook_outbox_of_task(task).await? {
            if row.state != DeliveryState::Dead {
                continue;
            }
            let hook = counts
                .iter()
                .find(|c| c.hook_id == row.hook_id)
                .map_or("?", |c| c.component.as_str());
            let step = row
                .step_id
                .map(|s| format!(" (step {s})"))
                .unwrap_or_default();
            let error = guest_text(row.last_error.as_deref().unwrap_or_default(), 160);
            lines.push(format!(
                "  dead: {hook} {}{step} after {} attempts: {error}",
                guest_text(&row.event_name, 120),
                row.attempts
            ));
        }
    }
    Ok(lines)
}
