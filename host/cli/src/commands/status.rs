//! `tasker status`: a task's steps and why each unfinished one is not ready.

use std::process::ExitCode;

use anyhow::Result;
use tasker_store::TaskId;

use crate::app::App;
use crate::report;

impl App {
    /// `tasker status`.
    pub async fn status(&self, task: TaskId, detail: report::StatusDetail) -> Result<ExitCode> {
        let store = self.store(2).await?;
        report::status(&store, task, detail).await?;
        Ok(ExitCode::SUCCESS)
    }
}
