//! `tasker submit`: enqueue a task, optionally following it to its end.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use tasker_engine::EventBus;
use tasker_store::Store;

use super::templates::Checking;
use crate::app::{App, Start, exit_for, load_template};
use crate::progress::{self, Progress};
use crate::report;

impl App {
    /// `tasker submit`.
    pub async fn submit(
        &self,
        template: &str,
        context: &str,
        start: Start,
        wait: bool,
        allow_missing: bool,
    ) -> Result<ExitCode> {
        // A file is checked before anything is opened or written; a key once it is read.
        let (store, t) = if Path::new(template).is_file() {
            let t = load_template(Path::new(template))?;
            self.check_components(&t, allow_missing, Checking::Submit)
                .await?;
            self.warn_missing_grants(&t)?;
            let store = self.store(2).await?;
            store.register_template(&t).await?;
            (store, t)
        } else {
            let store = self.store(2).await?;
            let t = self.template_for(&store, template).await?;
            self.check_components(&t, allow_missing, Checking::Submit)
                .await?;
            (store, t)
        };
        let task_id = self
            .create_with(&store, &EventBus::default(), &t, context, start)
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
