//! What the commands share: settings, opening the store and the sandbox, loading templates
//! and JSON arguments, creating tasks, exit codes and signals.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use serde_json::Value;
use tasker_core::priority::Priority;
use tasker_core::retention::Span;
use tasker_core::state::TaskState;
use tasker_core::template::Template;
use tasker_engine::{EventBus, WorkerConfig, ops};
use tasker_sandbox::{Sandbox, SandboxConfig};
use tasker_store::{AnyStore, NewTask, PgStore, SqliteStore, Store, StoreError, TaskId};

use crate::config::{Settings, StoreLocation};

/// How the host writes its own log lines (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event for a person; coloured only on a terminal.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields, spans) for a log
    /// collector; never coloured.
    Json,
}

/// Logs go to stderr; `RUST_LOG` filters them (default: warnings). With an OTLP endpoint,
/// the engine's spans are also exported: keep the returned value until the end of `main`
/// (dropping it sends what is buffered).
pub fn init_tracing(
    format: LogFormat,
    otlp: &crate::traces::Otlp,
) -> Result<Option<crate::traces::TraceExport>> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        // Colours only for a person at a terminal: not into logs and pipes.
        LogFormat::Text => fmt
            .with_ansi(
                std::io::IsTerminal::is_terminal(&std::io::stderr())
                    && std::env::var_os("NO_COLOR").is_none(),
            )
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => fmt.json().with_ansi(false).with_filter(filter).boxed(),
    };
    let export = crate::traces::provider(otlp)?;
    let otel = export.as_ref().map(|e| e.layer());
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    if export.is_some() {
        tasker_engine::traces::install(Box::new(crate::traces::OtelTracer));
    }
    Ok(export)
}

pub struct App {
    pub(crate) settings: Settings,
    /// `--traceparent`: the parent of the trace of a task this command creates.
    pub(crate) traceparent: Option<tasker_core::trace::TraceParent>,
}

/// Reads JSON given as text or as `@file`.
pub fn read_json_arg(arg: &str, what: &str) -> Result<Value> {
    let (text, source) = match arg.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {what} file {path}"))?,
            path.to_owned(),
        ),
        None => (arg.to_owned(), format!("the {what} argument")),
    };
    serde_json::from_str(&text).with_context(|| format!("{source} is not valid JSON"))
}

/// Loads a template file. Grant paths stay as written, so the same file registers as the
/// same template from any directory; workers resolve relative ones against their grants
/// base (`commands::missing_grant_dirs` checks them here).
pub fn load_template(path: &Path) -> Result<Template> {
    let yaml = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read template {}", path.display()))?;
    Ok(Template::from_yaml_named(
        &yaml,
        &path.display().to_string(),
    )?)
}

impl App {
    pub fn new(settings: Settings) -> Self {
        App {
            settings,
            traceparent: None,
        }
    }

    pub fn with_traceparent(mut self, tp: Option<tasker_core::trace::TraceParent>) -> Self {
        self.traceparent = tp;
        self
    }

    /// Opens the configured store as it is: a missing database or file is refused and
    /// nothing is created (only `tasker migrate` creates or migrates one), a schema other than
    /// this build's is refused (older: run `tasker migrate`; newer: both versions named).
    /// Without a database URL it is the embedded store, said in one line.
    pub(crate) async fn store(&self, pool_size: u32) -> Result<AnyStore> {
        self.open_store(pool_size, false).await
    }

    /// [`App::store`], except that an embedded store is created and migrated if need be:
    /// `tasker run` and `tasker dev` on a laptop need no `tasker migrate` first. A PostgreSQL
    /// database is still only checked.
    pub(crate) async fn store_creating_embedded(&self, pool_size: u32) -> Result<AnyStore> {
        self.open_store(pool_size, true).await
    }

    async fn open_store(&self, pool_size: u32, create_embedded: bool) -> Result<AnyStore> {
        match self.settings.store_location()? {
            StoreLocation::Postgres(url) => Ok(PgStore::open(&url, pool_size).await?.into()),
            StoreLocation::Sqlite { path, defaulted } => {
                let opened = if create_embedded {
                    SqliteStore::open(&path, pool_size).await
                } else {
                    SqliteStore::open_existing(&path, pool_size).await
                };
                let store = opened.map_err(|e| embedded_error(e, &path))?;
                // Said once per process (`tasker dev` opens the store twice).
                static SAID: std::sync::atomic::AtomicBool =
                    std::sync::atomic::AtomicBool::new(false);
                if defaulted && !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    eprintln!(
                        "store: embedded SQLite {} (set DATABASE_URL or --database-url for PostgreSQL)",
                        path.display()
                    );
                }
                Ok(store.into())
            }
        }
    }

    pub(crate) async fn sandbox(&self, watch: bool) -> Result<Sandbox> {
        let dir = self.settings.require_plugin_dir()?.to_path_buf();
        std::fs::create_dir_all(&self.settings.cache_dir).with_context(|| {
            format!(
                "cannot create the cache directory {}",
                self.settings.cache_dir.display()
            )
        })?;
        let mut cfg = SandboxConfig::new(dir);
        cfg.cache_dir = Some(self.settings.cache_dir.clone());
        cfg.cache_max_bytes = self.settings.cache_max_bytes;
        cfg.watch = watch;
        cfg.defaults = self.settings.limits.clone();
        cfg.http = self.settings.http.clone();
        cfg.grants_base = self.settings.grants_base.clone();
        let (sandbox, scan) = Sandbox::new(cfg)
            .await
            .context("cannot start the sandbox")?;
        for (path, err) in &scan.rejected {
            eprintln!("warning: plugin {} was not loaded: {err}", path.display());
        }
        Ok(sandbox)
    }

    pub(crate) fn worker_config(
        &self,
        concurrency: Option<usize>,
        id: Option<String>,
    ) -> WorkerConfig {
        let w = &self.settings.worker;
        let mut cfg = WorkerConfig {
            id: id.unwrap_or_else(default_worker_id),
            ..WorkerConfig::default()
        };
        if let Some(c) = concurrency.or(w.concurrency) {
            cfg.concurrency = c.max(1);
        }
        if let Some(b) = w.claim_batch {
            cfg.claim_batch = b.max(1);
        }
        if let Some(l) = w.lease_secs {
            cfg.lease = Duration::from_secs(l.max(1));
            cfg.heartbeat_every = cfg.lease / 3;
        }
        if let Some(g) = w.shutdown_grace {
            cfg.shutdown_grace = g;
        }
        cfg
    }

    pub(crate) async fn template_for(&self, store: &AnyStore, arg: &str) -> Result<Template> {
        let path = Path::new(arg);
        if path.is_file() {
            let t = load_template(path)?;
            store.register_template(&t).await?;
            return Ok(t);
        }
        match store.template(arg).await? {
            Some(t) => Ok(t),
            None => bail!(
                "{arg} is neither a template file nor a registered template key (namespace/name@version)"
            ),
        }
    }

    pub(crate) async fn create(
        &self,
        store: &AnyStore,
        bus: &EventBus,
        template: &Template,
        context: &str,
        identity_key: Option<String>,
    ) -> Result<TaskId> {
        let start = Start {
            identity_key,
            ..Start::default()
        };
        self.create_with(store, bus, template, context, start).await
    }

    pub(crate) async fn create_with(
        &self,
        store: &AnyStore,
        bus: &EventBus,
        template: &Template,
        context: &str,
        start: Start,
    ) -> Result<TaskId> {
        let context = read_json_arg(context, "context")?;
        let mut req = NewTask::new(template.key(), context);
        req.identity_key = start.identity_key;
        req.priority = start.priority;
        req.run_at = start.run_at;
        if let (Some(tp), Value::Object(m)) = (&self.traceparent, &mut req.metadata) {
            m.insert(
                tasker_core::trace::METADATA_KEY.into(),
                Value::String(tp.to_string()),
            );
        }
        let created = ops::create_task(store, bus, template, &mut req, Utc::now()).await?;
        if !created.created {
            eprintln!(
                "task {} already exists for this identity key",
                created.task_id
            );
        }
        Ok(created.task_id)
    }
}

/// How a submitted task starts: its identity key, priority and start time.
#[derive(Debug, Clone, Default)]
pub struct Start {
    pub identity_key: Option<String>,
    pub priority: Option<Priority>,
    pub run_at: Option<DateTime<Utc>>,
}

impl Start {
    /// From `submit`'s flags; `--delay` counts from now.
    pub fn new(
        identity_key: Option<String>,
        priority: Option<Priority>,
        run_at: Option<DateTime<Utc>>,
        delay: Option<Span>,
    ) -> Result<Start> {
        let run_at = match delay {
            None => run_at,
            Some(d) => {
                let d = chrono::Duration::from_std(d.duration())
                    .map_err(|_| anyhow::anyhow!("--delay {d} is too long"))?;
                Some(Utc::now() + d)
            }
        };
        Ok(Start {
            identity_key,
            priority,
            run_at,
        })
    }
}

/// An embedded store's error; those that do not name the file get its name.
fn embedded_error(e: StoreError, path: &Path) -> anyhow::Error {
    match e {
        StoreError::DatabaseMissing { .. }
        | StoreError::SchemaOlder { .. }
        | StoreError::SchemaNewer { .. } => e.into(),
        e => anyhow::Error::new(e)
            .context(format!("cannot open the embedded store {}", path.display())),
    }
}

pub(crate) fn exit_for(state: TaskState) -> ExitCode {
    if state == TaskState::Complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when
/// it is first polled, so a signal that comes before the first poll is not lost (or fatal).
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt()).ok();
        let mut term = signal(SignalKind::terminate()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(int.take()) => {}
                () = wait(term.take()) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_args_name_their_source() {
        let e = read_json_arg("{nope", "context").unwrap_err();
        assert!(format!("{e:#}").contains("the context argument is not valid JSON"));
        let e = read_json_arg("@/nonexistent/ctx.json", "context").unwrap_err();
        assert!(format!("{e:#}").contains("cannot read context file /nonexistent/ctx.json"));
        assert_eq!(read_json_arg("{\"a\":1}", "context").unwrap()["a"], 1);
    }

    #[test]
    fn grant_paths_are_kept_as_written() {
        let dir = std::env::temp_dir().join(format!("tasker-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let yaml = "namespace: t\nname: g\nversion: 1.0.0\nsteps:\n  - name: a\n    handler: h@1.0.0\n    grants: {dirs: [{host: data, guest: /data}]}\n";
        std::fs::write(dir.join("t.yaml"), yaml).unwrap();
        let t = load_template(&dir.join("t.yaml")).unwrap();
        assert_eq!(t.steps[0].grants.dirs[0].host, "data");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
