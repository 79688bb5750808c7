//! `tasker export <task>`: one JSON document with everything the store keeps of a task (the
//! task, its transitions, each step with its attempts, logs and transitions), what an
//! operator saves before retention removes it.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Result, bail};
use chrono::Utc;
use serde::Serialize;
use tasker_server::views::{AttemptLogView, StepDetail, TaskView, TransitionView};
use tasker_store::{Store, TaskId};

use crate::app::App;

/// The document's format, so a reader can tell versions apart.
pub const EXPORT_FORMAT: &str = "tasker.export/1";

#[derive(Serialize)]
struct Export {
    format: &'static str,
    exported_at: chrono::DateTime<Utc>,
    task: TaskView,
    transitions: Vec<TransitionView<tasker_core::state::TaskState>>,
    steps: Vec<ExportStep>,
}

#[derive(Serialize)]
struct ExportStep {
    #[serde(flatten)]
    step: StepDetail,
    /// What each attempt said (attempts that never ran a handler have none).
    logs: Vec<AttemptLogView>,
}

impl App {
    /// `tasker export`.
    pub async fn export(&self, task_id: TaskId) -> Result<ExitCode> {
        let store = self.store(2).await?;
        let Some(task) = store.task(task_id).await? else {
            bail!("task {task_id} does not exist (or retention removed it)");
        };
        let mut steps = Vec::new();
        for s in store.steps_of_task(task_id).await? {
            let attempts = store.attempts_of_step(s.id).await?;
            let transitions = store.step_transitions(s.id).await?;
            let logs = store.attempt_logs(s.id, None).await?;
            steps.push(ExportStep {
                step: StepDetail::of(s, attempts, transitions),
                logs: logs.into_iter().map(AttemptLogView::from).collect(),
            });
        }
        let doc = Export {
            format: EXPORT_FORMAT,
            exported_at: Utc::now(),
            transitions: store
                .task_transitions(task_id)
                .await?
                .into_iter()
                .map(TransitionView::from)
                .collect(),
            task: TaskView::from(task),
            steps,
        };
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
        Ok(ExitCode::SUCCESS)
    }
}
