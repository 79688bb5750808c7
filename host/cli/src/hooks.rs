//! What the commands show and wait for about event hooks: draining a task's deliveries and
//! the per-hook summary lines.

use std::time::Duration;

use crate::report::guest_text;
use anyhow::Result;
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

/// A hook as the dead-letter commands name it: its id and component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookName {
    pub id: i64,
    pub component: String,
}

/// The hooks `--hook NAME` means: an id, a component `name@version`, or a component name
/// (every version). No `--hook`: all of them. A name matching nothing is refused with the
/// hooks there are.
pub fn select_hooks(all: Vec<HookName>, wanted: Option<&str>) -> Result<Vec<HookName>> {
    let Some(w) = wanted else { return Ok(all) };
    let id: Option<i64> = w.parse().ok();
    let picked: Vec<HookName> = all
        .iter()
        .filter(|h| {
            Some(h.id) == id
                || h.component == w
                || h.component.split_once('@').is_some_and(|(n, _)| n == w)
        })
        .cloned()
        .collect();
    if picked.is_empty() {
        let known: Vec<String> = all
            .iter()
            .map(|h| format!("{} ({})", h.id, guest_text(&h.component, 80)))
            .collect();
        anyhow::bail!(
            "no hook {w:?}: give a hook id or component name{}",
            if known.is_empty() {
                " (no template has hooks)".to_owned()
            } else {
                format!("; hooks: {}", known.join(", "))
            }
        );
    }
    Ok(picked)
}

/// One dead letter, as `tasker hooks dead-letters` prints it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub id: i64,
    pub hook_id: i64,
    pub hook: String,
    pub event: String,
    pub task: String,
    pub step: Option<String>,
    pub attempts: i64,
    pub last_error: String,
    pub when: String,
}

pub fn print_dead_letters(rows: Vec<DeadLetter>) {
    if rows.is_empty() {
        println!("no dead letters");
        return;
    }
    let n = rows.len();
    crate::report::print_rows(
        &[
            "id",
            "hook",
            "event",
            "task",
            "step",
            "attempts",
            "last error",
            "dead since",
        ],
        rows.into_iter()
            .map(|d| {
                vec![
                    d.id.to_string(),
                    guest_text(&d.hook, 80),
                    guest_text(&d.event, 80),
                    d.task,
                    d.step.unwrap_or_else(|| "-".into()),
                    d.attempts.to_string(),
                    guest_text(&d.last_error, 160),
                    d.when,
                ]
            })
            .collect(),
    );
    println!("{n} dead letters; send them again with `tasker hooks redeliver ID… | --all`");
}

/// What `redeliver` says: one line per dead letter sent again.
pub fn print_redelivered(rows: &[(i64, i64, String)]) {
    for (old, new, task) in rows {
        println!("dead letter {old} sent again as delivery {new} (task {task})");
    }
    println!(
        "{} redelivered; a running worker's hook deliverer sends them in order",
        rows.len()
    );
}

async fn hook_names(store: &AnyStore) -> Result<Vec<HookName>> {
    let mut all: Vec<HookName> = store
        .hook_counts(None)
        .await?
        .into_iter()
        .map(|c| HookName {
            id: c.hook_id,
            component: c.component,
        })
        .collect();
    all.sort_by_key(|h| h.id);
    Ok(all)
}

impl crate::app::App {
    /// `tasker hooks dead-letters [--hook NAME]`.
    pub async fn hooks_dead_letters(&self, hook: Option<&str>) -> Result<std::process::ExitCode> {
        let store = self.store(2).await?;
        let hooks = select_hooks(hook_names(&store).await?, hook)?;
        let mut rows = Vec::new();
        for h in &hooks {
            let filter = tasker_store::OutboxFilter {
                hook_id: Some(h.id),
                task_id: None,
                states: vec![DeliveryState::Dead],
            };
            let mut after = None;
            loop {
                let page = store
                    .list_hook_outbox(&filter, after, tasker_store::MAX_PAGE)
                    .await?;
                rows.extend(page.items.into_iter().map(|r| {
                    DeadLetter {
                        id: r.id,
                        hook_id: h.id,
                        hook: h.component.clone(),
                        event: r.event_name,
                        task: r.task_id.to_string(),
                        step: r.step_name.or(r.step_id.map(|s| s.to_string())),
                        attempts: i64::from(r.attempts),
                        last_error: r.last_error.unwrap_or_default(),
                        when: r
                            .finished_at
                            .unwrap_or(r.next_attempt_at)
                            .format("%Y-%m-%d %H:%M:%S")
                            .to_string(),
                    }
                }));
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
        }
        rows.sort_by_key(|d| d.id);
        print_dead_letters(rows);
        Ok(std::process::ExitCode::SUCCESS)
    }

    /// `tasker hooks redeliver [--hook NAME] ID… | --all`: back into the outbox, where the
    /// workers' leased delivery loop sends them.
    pub async fn hooks_redeliver(
        &self,
        hook: Option<&str>,
        ids: &[i64],
        all: bool,
    ) -> Result<std::process::ExitCode> {
        let store = self.store(2).await?;
        let known = hook_names(&store).await?;
        let hooks = select_hooks(known, hook)?;
        let now = chrono::Utc::now();
        let out = match (all, hook) {
            (true, None) => store.redeliver_dead_letters(None, None, now).await?,
            (true, Some(_)) => {
                let mut out = Vec::new();
                for h in &hooks {
                    out.extend(store.redeliver_dead_letters(Some(h.id), None, now).await?);
                }
                out
            }
            (false, None) => store.redeliver_dead_letters(None, Some(ids), now).await?,
            (false, Some(name)) => {
                let [h] = hooks.as_slice() else {
                    anyhow::bail!(
                        "--hook {name} names {} hooks ({}): give one hook id with dead letter ids",
                        hooks.len(),
                        hooks
                            .iter()
                            .map(|h| h.id.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                };
                store
                    .redeliver_dead_letters(Some(h.id), Some(ids), now)
                    .await?
            }
        };
        let rows: Vec<(i64, i64, String)> = out
            .into_iter()
            .map(|r| (r.old_id, r.new_id, r.task_id.to_string()))
            .collect();
        print_redelivered(&rows);
        Ok(std::process::ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_are_named_by_id_component_or_component_name() {
        let all = vec![
            HookName {
                id: 1,
                component: "notify@0.1.0".into(),
            },
            HookName {
                id: 2,
                component: "notify@0.2.0".into(),
            },
            HookName {
                id: 3,
                component: "audit@1.0.0".into(),
            },
        ];
        let ids = |w| -> Vec<i64> {
            select_hooks(all.clone(), w)
                .unwrap()
                .iter()
                .map(|h| h.id)
                .collect()
        };
        assert_eq!(ids(None), vec![1, 2, 3]);
        assert_eq!(ids(Some("notify")), vec![1, 2]);
        assert_eq!(ids(Some("notify@0.2.0")), vec![2]);
        assert_eq!(ids(Some("3")), vec![3]);
        let e = select_hooks(all.clone(), Some("nope"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no hook \"nope\"") && e.contains("3 (audit@1.0.0)"),
            "{e}"
        );
    }
}
