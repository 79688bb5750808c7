//! `tasker retry`: a task in error gets its failed steps back with fresh attempts.

use std::process::ExitCode;

use anyhow::Result;
use chrono::Utc;
use tasker_engine::{EventBus, ops};
use tasker_store::TaskId;

use crate::app::App;

impl App {
    /// `tasker retry`.
    pub async fn retry(&self, task: TaskId) -> Result<ExitCode> {
        let store = self.store(2).await?;
        let out = ops::retry_task(&store, &EventBus::default(), task, Utc::now()).await?;
        println!(
            "task {task}: {} failed steps will run again",
            out.steps_reset
        );
        Ok(ExitCode::SUCCESS)
    }
}
