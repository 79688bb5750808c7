//! `tasker tasks list`: tasks newest first, filtered, a page at a time.

use std::process::ExitCode;

use anyhow::{Context, Result};
use tasker_core::state::TaskState;
use tasker_store::{Store, TaskFilter, TaskId, TaskPageRequest};

use crate::app::App;

/// The filters of `tasker tasks list`.
#[derive(Debug, Clone, Default)]
pub struct TaskListArgs {
    pub states: Vec<TaskState>,
    pub template: Option<String>,
    pub tag: Option<String>,
    pub identity_key: Option<String>,
    pub limit: u32,
    pub cursor: Option<TaskId>,
}

impl App {
    /// `tasker tasks list`.
    pub async fn tasks_list(&self, args: TaskListArgs) -> Result<ExitCode> {
        let store = self.store(2).await?;
        let filter = TaskFilter {
            states: args.states,
            template: args.template,
            tag: args.tag,
            identity_key: args.identity_key,
            ..TaskFilter::default()
        };
        let page = store
            .list_tasks(
                &filter,
                TaskPageRequest {
                    before: args.cursor,
                    limit: args.limit,
                },
            )
            .await
            .context("cannot list tasks")?;
        if page.items.is_empty() {
            eprintln!("no tasks match");
        } else {
            crate::report::tasks(&page.items);
        }
        if let Some(next) = page.next {
            eprintln!("more: add --cursor {next}");
        }
        Ok(ExitCode::SUCCESS)
    }
}
