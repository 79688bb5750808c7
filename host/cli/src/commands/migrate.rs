//! `tasker migrate`: create the database if missing and apply the migrations.

use std::process::ExitCode;

use anyhow::Result;

use crate::app::App;

impl App {
    /// `tasker migrate`.
    pub async fn migrate(&self) -> Result<ExitCode> {
        self.store(1).await?;
        println!("database is up to date");
        Ok(ExitCode::SUCCESS)
    }
}
