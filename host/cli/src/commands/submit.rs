//! `tasker submit`: enqueue a task, optionally following it to its end.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use tasker_core::state::TaskState;
use tasker_engine::EventBus;
use tasker_store::{AnyStore, Store, TaskId};

use crate::app::{App, exit_for};
use crate::report;

impl App {
    /// `tasker submit`.
    pub async fn submit(
        &self,
        template: &str,
        context: &str,
        identity_key: Option<String>,
        wait: bool,
    ) -> Result<ExitCode> {
        let store = self.store(2).await?;
        let t = self.template_for(&store, template).await?;
        let task_id = self
            .create(&store, &EventBus::default(), &t, context, identity_key)
            .await?;
        println!("{task_id}");
        if !wait {
            return Ok(ExitCode::SUCCESS);
        }
        let state = poll_for_end(&store, task_id).await?;
        report::summary(&store, task_id).await?;
        Ok(exit_for(state))
    }
}

async fn poll_for_end(store: &AnyStore, task: TaskId) -> Result<TaskState> {
    loop {
        let row = store
            .task(task)
            .await?
            .with_context(|| format!("task {task} disappeared"))?;
        if matches!(
            row.state,
            TaskState::Complete | TaskState::Error | TaskState::Cancelled
        ) {
            return Ok(row.state);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
