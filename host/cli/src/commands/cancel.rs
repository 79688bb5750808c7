//! `tasker cancel`: cancel a task and its unfinished steps.

use std::process::ExitCode;

use anyhow::Result;
use chrono::Utc;
use tasker_engine::{EventBus, ops};
use tasker_store::TaskId;

use crate::app::App;

impl App {
    /// `tasker cancel`.
    pub async fn cancel(&self, task: TaskId) -> Result<ExitCode> {
        let store = self.store(2).await?;
        let out = ops::cancel_task(&store, &EventBus::default(), task, Utc::now()).await?;
        if out.cancelled {
            println!("task {task} cancelled ({} steps)", out.steps_cancelled);
        } else {
            println!("task {task} was already cancelled");
        }
        Ok(ExitCode::SUCCESS)
    }
}
