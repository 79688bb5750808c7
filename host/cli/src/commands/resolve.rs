//! `tasker resolve`: mark a step done by hand.

use std::process::ExitCode;

use anyhow::Result;
use chrono::Utc;
use tasker_engine::{EventBus, ops};
use tasker_store::StepId;

use crate::app::{App, read_json_arg};

impl App {
    /// `tasker resolve`.
    pub async fn resolve(&self, step: StepId, result: Option<&str>) -> Result<ExitCode> {
        let result = result.map(|r| read_json_arg(r, "result")).transpose()?;
        let store = self.store(2).await?;
        let out = ops::resolve_step(&store, &EventBus::default(), step, result, Utc::now()).await?;
        println!(
            "step {step} resolved; {} children are ready; task {} is {}",
            out.ready_children, out.task_id, out.task_state
        );
        Ok(ExitCode::SUCCESS)
    }
}
