//! `tasker submit`: enqueue a task, optionally following it to its end.

use std::process::ExitCode;

use anyhow::Result;
use tasker_engine::EventBus;

use crate::app::{App, exit_for};
use crate::progress::{self, Progress};
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
        // The worker runs elsewhere: its progress comes from the store's event log.
        let bus = EventBus::default();
        let names: Vec<String> = t.steps.iter().map(|s| s.name.clone()).collect();
        let progress = Progress::start(&bus, task_id, &names, false);
        let state = progress::relay(&store, task_id, &bus).await;
        progress.finish().await;
        let state = state?;
        report::summary(&store, task_id).await?;
        Ok(exit_for(state))
    }
}
