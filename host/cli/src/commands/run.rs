//! `tasker run`: a task run to its end in this process, with live progress.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tasker_core::state::TaskState;
use tasker_engine::{EventBus, WorkerConfig};
use tasker_runtime::Node;
use tasker_store::{AnyStore, Store, TaskFilter, TaskId};
use tokio_util::sync::CancellationToken;

use crate::app::{App, exit_for, load_template, shutdown_signal};
use crate::progress::Progress;
use crate::report;

/// What `tasker run` runs.
#[derive(Debug, Clone)]
pub enum RunTask {
    /// A new task of this template file, with this context (JSON text or @file).
    New { template: PathBuf, context: String },
    /// An existing task, to its end.
    Resume(TaskId),
}

/// How long running steps of an interrupted `tasker run` may take before their leases are
/// released, when `[worker] shutdown_grace` is not set: shorter than a worker's, as someone
/// is waiting at the terminal.
const RUN_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

impl App {
    /// `tasker run`: a new task of a template file, or an existing task resumed.
    pub async fn run(
        &self,
        what: RunTask,
        concurrency: usize,
        plain: bool,
        metrics_listen: Option<std::net::SocketAddr>,
    ) -> Result<ExitCode> {
        // A bad template is refused before the store is even opened.
        let what = match what {
            RunTask::New { template, context } => Ok((load_template(&template)?, context)),
            RunTask::Resume(task_id) => Err(task_id),
        };
        // A taken metrics address is refused before anything is written.
        let listener = super::metrics::bind(metrics_listen).await?;
        // What the template runs and grants must be here, or its steps only burn attempts.
        let sandbox = self.sandbox(false).await?;
        if let Ok((template, _)) = &what {
            super::templates::refuse_missing(&sandbox, template)?;
        }
        // The embedded store is created if need be; a PostgreSQL database must exist.
        let store = Arc::new(self.store_creating_embedded(8).await?);
        let bus = EventBus::default();
        let (template, task_id) = match what {
            Ok((template, context)) => {
                store.register_template(&template).await?;
                let task_id = self.create(&store, &bus, &template, &context, None).await?;
                (template, task_id)
            }
            Err(task_id) => {
                let row = store
                    .task(task_id)
                    .await?
                    .with_context(|| format!("no task {task_id}"))?;
                let template = store
                    .template(&row.template_key)
                    .await?
                    .with_context(|| format!("task {task_id}: no template {}", row.template_key))?;
                super::templates::refuse_missing(&sandbox, &template)?;
                (template, task_id)
            }
        };
        eprintln!(
            "task {task_id}: {} ({} steps)",
            template.key(),
            template.steps.len()
        );
        if let Some(line) = others_waiting(&store, task_id).await? {
            eprintln!("{line}");
        }

        let names: Vec<String> = template.steps.iter().map(|s| s.name.clone()).collect();
        let progress = Progress::start(&bus, task_id, &names, plain);
        let stop = CancellationToken::new();
        let grace = self
            .settings
            .worker
            .shutdown_grace
            .unwrap_or(RUN_SHUTDOWN_GRACE);
        let cfg = WorkerConfig {
            concurrency: concurrency.max(1),
            poll_every: Duration::from_millis(100),
            // Ctrl-C: a step finishing within the grace is recorded, the others are released
            // at once.
            shutdown_grace: grace,
            // This task's steps alone: others on a shared store are not ours to run (with
            // this plugin directory) and then abandon when this process exits.
            only_task: Some(task_id),
            ..self.worker_config(None, None)
        };
        let scrape = match listener {
            Some(l) => {
                let handle = super::metrics::recorder()?;
                let s = store.clone();
                Some(super::metrics::endpoint(
                    l,
                    handle,
                    s,
                    Some(sandbox.clone()),
                    stop.clone(),
                )?)
            }
            None => None,
        };
        let node = Node::wasm(store.clone(), &sandbox, cfg)
            .with_bus(bus.clone())
            .start(stop.clone());
        let interrupted = shutdown_signal();
        let ended = tokio::select! {
            state = wait_for_end(&store, &bus, task_id) => Some(state?),
            () = interrupted => None,
        };
        let drained = match ended {
            // Let the hooks see the task's last events before returning.
            Some(_) => crate::hooks::drain(&store, task_id, Duration::from_secs(30)).await?,
            None => {
                eprintln!(
                    "interrupted: no new steps; running steps have {grace:?} to finish \
                     ([worker] shutdown_grace), the rest are released"
                );
                true
            }
        };
        stop.cancel();
        node.join().await;
        // No step is in hand any more: a closed stdout (`| head`) may end the summary.
        crate::output::end_quietly_on_broken_pipe();
        if let Some(s) = scrape {
            let _ = s.await;
        }
        progress.finish().await;

        report::summary(&store, task_id).await?;
        for line in crate::hooks::summary_lines(&store, task_id).await? {
            eprintln!("{line}");
        }
        if !drained {
            eprintln!("some hook deliveries are still pending; a worker will finish them");
        }
        match ended {
            Some(state) => Ok(exit_for(state)),
            None => {
                let state = store.task(task_id).await?.map(|t| t.state);
                match state {
                    Some(s @ (TaskState::Complete | TaskState::Error | TaskState::Cancelled)) => {
                        Ok(exit_for(s))
                    }
                    _ => {
                        eprintln!(
                            "task {task_id} was interrupted and is not finished; resume it with \
                             `tasker run --task {task_id}` (or let any `tasker worker` on this \
                             store finish it)"
                        );
                        Ok(ExitCode::from(130))
                    }
                }
            }
        }
    }
}

/// On a shared store, how many other tasks are unfinished: this run leaves them to workers.
async fn others_waiting(store: &AnyStore, task: TaskId) -> Result<Option<String>> {
    let open = store
        .count_tasks(&TaskFilter {
            states: vec![TaskState::Pending, TaskState::InProgress],
            ..TaskFilter::default()
        })
        .await?;
    let ours = store
        .task(task)
        .await?
        .is_some_and(|t| matches!(t.state, TaskState::Pending | TaskState::InProgress));
    let others = open.total().saturating_sub(u64::from(ours));
    Ok((others > 0).then(|| {
        format!(
            "{others} other unfinished task{} on this store wait{} for a worker: this run \
             runs only task {task} (`tasker worker` runs the others)",
            if others == 1 { "" } else { "s" },
            if others == 1 { "s" } else { "" },
        )
    }))
}

/// Waits for the task's end event; a periodic check covers events missed by a slow reader.
async fn wait_for_end(store: &AnyStore, bus: &EventBus, task: TaskId) -> Result<TaskState> {
    let mut sub = bus.subscribe(&["task.*"]);
    loop {
        if let Some(row) = store.task(task).await?
            && matches!(
                row.state,
                TaskState::Complete | TaskState::Error | TaskState::Cancelled
            )
        {
            return Ok(row.state);
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Some(ev) = sub.recv().await {
                if ev.task_id == Some(task) {
                    break;
                }
            }
        })
        .await;
    }
}
