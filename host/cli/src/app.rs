//! What the commands share: settings, opening the store and the sandbox, loading templates
//! and JSON arguments, creating tasks, exit codes and signals.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use serde_json::Value;
use tasker_core::state::TaskState;
use tasker_core::template::Template;
use tasker_engine::{EventBus, WorkerConfig, ops};
use tasker_sandbox::{Sandbox, SandboxConfig};
use tasker_store::{AnyStore, NewTask, PgStore, SqliteStore, Store, TaskId};

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

/// Loads a template file. Relative `grants.dirs[].host` paths become absolute, relative to
/// the file, so a worker elsewhere finds them.
pub fn load_template(path: &Path) -> Result<Template> {
    let yaml = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read template {}", path.display()))?;
    let mut t = Template::from_yaml_named(&yaml, &path.display().to_string())?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    for step in &mut t.steps {
        for dir in &mut step.grants.dirs {
            let host = PathBuf::from(&dir.host);
            let full = if host.is_absolute() {
                host
            } else {
                base.join(host)
            };
            let full = full.canonicalize().with_context(|| {
                format!(
                    "step '{}': granted directory {} does not exist",
                    step.name,
                    full.display()
                )
            })?;
            dir.host = full.display().to_string();
        }
    }
    crate::hooks::absolutize_hook_grants(&mut t, base)?;
    Ok(t)
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

    /// Opens the configured store (creating the database or file if missing) with its
    /// migrations applied. Without a database URL it is the embedded store, said in one line.
    pub(crate) async fn store(&self, pool_size: u32) -> Result<AnyStore> {
        match self.settings.store_location()? {
            StoreLocation::Postgres(url) => {
                create_database_if_missing(&url).await?;
                let store = PgStore::connect(&url, pool_size).await.with_context(|| {
                    format!("cannot connect to the database at {}", redact(&url))
                })?;
                store
                    .migrate()
                    .await
                    .context("cannot apply the database migrations")?;
                Ok(store.into())
            }
            StoreLocation::Sqlite { path, defaulted } => {
                let store = SqliteStore::open(&path, pool_size).await.with_context(|| {
                    format!("cannot open the embedded store {}", path.display())
                })?;
                if defaulted {
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
        cfg.watch = watch;
        cfg.defaults = self.settings.limits.clone();
        cfg.http = self.settings.http.clone();
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
        let context = read_json_arg(context, "context")?;
        let mut req = NewTask::new(template.key(), context);
        req.identity_key = identity_key;
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

/// What a failed connection means, in words: refused, unknown role, wrong password, TLS or
/// unreachable, with the server's own message when it sent one (never a guess).
fn connect_failure(e: &sqlx::Error, url: &str) -> String {
    let at = redact(url);
    match e {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("cannot connect to {at}: connection refused (is PostgreSQL running there?)")
        }
        sqlx::Error::Io(io) => format!("cannot reach {at}: {io}"),
        sqlx::Error::Tls(t) => format!("cannot connect to {at}: TLS failed: {t}"),
        sqlx::Error::Database(db) => {
            let why = match db.code().as_deref() {
                Some("28000") => "the role is unknown or not allowed",
                Some("28P01") => "wrong password",
                Some("3D000") => "no such database",
                _ => "the server refused",
            };
            format!("cannot connect to {at}: {why}: {}", db.message())
        }
        other => format!("cannot connect to {at}: {other}"),
    }
}

/// A first run on a fresh server creates its database, as `sqlx database create` would.
async fn create_database_if_missing(url: &str) -> Result<()> {
    use sqlx::migrate::MigrateDatabase;
    let exists = sqlx::Postgres::database_exists(url)
        .await
        .map_err(|e| anyhow::anyhow!(connect_failure(&e, url)))?;
    if !exists {
        sqlx::Postgres::create_database(url)
            .await
            .with_context(|| format!("cannot create the database {}", redact(url)))?;
        eprintln!("created database {}", redact(url));
    }
    Ok(())
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

/// Hides the password of a URL in messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
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
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn json_args_name_their_source() {
        let e = read_json_arg("{nope", "context").unwrap_err();
        assert!(format!("{e:#}").contains("the context argument is not valid JSON"));
        let e = read_json_arg("@/nonexistent/ctx.json", "context").unwrap_err();
        assert!(format!("{e:#}").contains("cannot read context file /nonexistent/ctx.json"));
        assert_eq!(read_json_arg("{\"a\":1}", "context").unwrap()["a"], 1);
    }

    #[test]
    fn relative_grants_become_absolute_and_missing_ones_are_named() {
        let dir = std::env::temp_dir().join(format!("tasker-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let yaml = "namespace: t\nname: g\nversion: 1.0.0\nsteps:\n  - name: a\n    handler: h@1.0.0\n    grants: {dirs: [{host: data, guest: /data}]}\n";
        std::fs::write(dir.join("t.yaml"), yaml).unwrap();
        let t = load_template(&dir.join("t.yaml")).unwrap();
        let host = &t.steps[0].grants.dirs[0].host;
        assert!(
            Path::new(host).is_absolute() && host.ends_with("/data"),
            "{host}"
        );
        std::fs::write(
            dir.join("bad.yaml"),
            yaml.replace("host: data", "host: missing"),
        )
        .unwrap();
        let e = load_template(&dir.join("bad.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("step 'a': granted directory") && e.contains("missing"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
