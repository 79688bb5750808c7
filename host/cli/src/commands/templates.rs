//! `tasker templates register | list | show | plugins`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use tasker_core::template::{Grants, Template};
use tasker_sandbox::Sandbox;
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

/// The directory grants of `t` that do not exist on this host, relative ones resolved
/// against `base` (as this host's workers resolve them): one line each, naming the step or
/// hook.
pub fn missing_grant_dirs(t: &Template, base: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |at: String, g: &Grants| {
        for d in &g.dirs {
            let full = base.join(&d.host);
            if !full.is_dir() {
                let resolved = if Path::new(&d.host).is_absolute() {
                    String::new()
                } else {
                    format!(" ({})", full.display())
                };
                out.push(format!(
                    "{at}: granted directory {}{resolved} does not exist",
                    d.host
                ));
            }
        }
    };
    for s in &t.steps {
        check(format!("step '{}'", s.name), &s.grants);
    }
    for (i, h) in t.hooks.iter().enumerate() {
        check(format!("hooks[{i}] ({})", h.component), &h.grants);
    }
    out
}

/// Refuses a template whose components `sandbox`'s plugin directory lacks, or whose
/// granted directories are missing under its grants base: `tasker run`'s own worker would
/// only burn the steps' attempts.
pub(crate) fn refuse_missing(sandbox: &Sandbox, t: &Template) -> Result<()> {
    tasker_sandbox::check_components(sandbox.registry(), t).map_err(|m| {
        anyhow!("{m}\nbuild or install them (tasker plugins upload) or fix the template")
    })?;
    let missing = missing_grant_dirs(t, sandbox.grants_base());
    if !missing.is_empty() {
        bail!(
            "{}\nrelative grants are resolved against {} (grants_base_dir in tasker.toml, or \
             --grants-base)",
            missing.join("\n"),
            sandbox.grants_base().display()
        );
    }
    Ok(())
}

/// What `--allow-missing-handlers` is for, in the words of the command that has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checking {
    Register,
    Submit,
}

#[derive(Debug, Clone, Copy)]
pub enum Graph {
    Mermaid,
    Dot,
}

impl App {
    /// What relative directory grants are resolved against here: the `grants_base_dir`
    /// setting (or `--grants-base`), else the working directory.
    pub(crate) fn grants_base(&self) -> Result<PathBuf> {
        let cwd = std::env::current_dir().context("cannot read the working directory")?;
        Ok(match &self.settings.grants_base {
            Some(b) => cwd.join(b),
            None => cwd,
        })
    }

    /// Warns about directory grants missing on this host: workers elsewhere may have them.
    pub(crate) fn warn_missing_grants(&self, t: &Template) -> Result<()> {
        for line in missing_grant_dirs(t, &self.grants_base()?) {
            eprintln!("warning: {line} here; workers resolve it against their grants base");
        }
        Ok(())
    }

    /// Checks the template's components against the plugin directory before anything is
    /// written: refused with what the directory offers, or with `allow_missing` a warning.
    pub(crate) async fn check_components(
        &self,
        t: &Template,
        allow_missing: bool,
        what: Checking,
    ) -> Result<()> {
        let hint = match what {
            Checking::Register => "pass --allow-missing-handlers to register it ahead of a deploy",
            Checking::Submit => {
                "pass --allow-missing-handlers when the workers' plugin directory is not this one"
            }
        };
        let sandbox = match self.sandbox(false).await {
            Ok(s) => s,
            Err(e) if allow_missing => {
                eprintln!(
                    "warning: the components of {} are not checked: {}",
                    t.key(),
                    crate::output::error_text(&e)
                );
                return Ok(());
            }
            Err(e) => {
                return Err(e.context(format!(
                    "cannot check the components of {} ({hint})",
                    t.key()
                )));
            }
        };
        match tasker_sandbox::check_components(sandbox.registry(), t) {
            Ok(()) => Ok(()),
            Err(m) if allow_missing => {
                eprintln!(
                    "warning: {m}\ngoing ahead (--allow-missing-handlers): its steps fail until \
                     the plugins are deployed"
                );
                Ok(())
            }
            Err(m) => Err(anyhow!(
                "{m}\nbuild or install them (tasker plugins upload), fix the template, or {hint}"
            )),
        }
    }

    /// `tasker templates register`.
    pub async fn register(&self, file: &Path, allow_missing: bool) -> Result<ExitCode> {
        let t = load_template(file)?;
        self.check_components(&t, allow_missing, Checking::Register)
            .await?;
        self.warn_missing_grants(&t)?;
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
