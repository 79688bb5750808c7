//! `tasker templates register | list | show | plugins`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use tasker_core::template::Template;
use tasker_store::Store;

use crate::app::{App, load_template};
use crate::report;

/// The components that these template files run, each once, in order of first use.
pub fn components_of(files: &[PathBuf]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for f in files {
        for c in load_template(f)?.components() {
            let c = c.to_string();
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy)]
pub enum Graph {
    Mermaid,
    Dot,
}

impl App {
    /// `tasker templates register`.
    pub async fn register(&self, file: &Path) -> Result<ExitCode> {
        let t = load_template(file)?;
        let store = self.store(2).await?;
        let reg = store.register_template(&t).await?;
        println!(
            "{} {} ({} steps)",
            if reg.created {
                "registered"
            } else {
                "already registered"
            },
            reg.key,
            t.steps.len()
        );
        Ok(ExitCode::SUCCESS)
    }

    /// `tasker templates list`.
    pub async fn templates_list(&self) -> Result<ExitCode> {
        let store = self.store(2).await?;
        report::templates(&store).await?;
        Ok(ExitCode::SUCCESS)
    }

    /// `tasker templates show`.
    pub async fn templates_show(&self, template: &str, graph: Option<Graph>) -> Result<ExitCode> {
        let t = if Path::new(template).is_file() {
            load_template(Path::new(template))?
        } else {
            let store = self.store(2).await?;
            store
                .template(template)
                .await?
                .with_context(|| format!("no registered template {template}"))?
        };
        show(&t, graph)
    }
}

/// Prints a template as YAML, or its DAG (local and `--server` alike).
pub fn show(t: &Template, graph: Option<Graph>) -> Result<ExitCode> {
    let dag = t.dag()?;
    match graph {
        Some(Graph::Mermaid) => print!("{}", dag.to_mermaid()),
        Some(Graph::Dot) => print!("{}", dag.to_dot()),
        None => print!("{}", serde_yaml_ng::to_string(t)?),
    }
    Ok(ExitCode::SUCCESS)
}
