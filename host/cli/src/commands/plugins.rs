//! `tasker plugins list | inspect`.

use std::process::ExitCode;

use anyhow::Result;
use tasker_sandbox::PluginRef;

use crate::app::App;
use crate::report;

impl App {
    /// `tasker plugins list`.
    pub async fn plugins_list(&self) -> Result<ExitCode> {
        let sandbox = self.sandbox(false).await?;
        // Plugins compile on first use: compile them all here, so a broken one is named.
        for (path, err) in sandbox.registry().load_all().await {
            eprintln!("warning: plugin {} was not loaded: {err}", path.display());
        }
        report::plugins(&sandbox, &self.settings.cache_dir);
        Ok(ExitCode::SUCCESS)
    }

    /// `tasker plugins inspect`.
    pub async fn plugins_inspect(&self, plugin: &str) -> Result<ExitCode> {
        let r: PluginRef = plugin.parse().map_err(anyhow::Error::msg)?;
        let sandbox = self.sandbox(false).await?;
        let p = sandbox.registry().load(&r).await?;
        report::plugin(&p, &self.settings.cache_dir);
        Ok(ExitCode::SUCCESS)
    }
}
