//! The commands of the `tasker` binary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use serde_json::Value;
use tasker_core::state::TaskState;
use tasker_core::template::Template;
use tasker_engine::{EventBus, Worker, WorkerConfig, ops};
use tasker_sandbox::{PluginRef, Sandbox, SandboxConfig};
use tasker_store::{AnyStore, NewTask, PgStore, SqliteStore, Store, TaskId};
use tokio_util::sync::CancellationToken;

use crate::config::{Settings, StoreLocation};
use crate::progress::Progress;
use crate::report;
use crate::wasm::WasmExecutor;

/// Logs go to stderr; `RUST_LOG` filters them (default: warnings).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: not into logs and pipes.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .try_init();
}

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

/// What `tasker run` runs.
#[derive(Debug, Clone)]
pub enum RunTask {
    /// A new task of this template file, with this context (JSON text or @file).
    New { template: PathBuf, context: String },
    /// An existing task, to its end.
    Resume(TaskId),
}

/// How long running steps of an interrupted `tasker run` may take before their leases are
/// released.
const RUN_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

pub struct App {
    settings: Settings,
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
        App { settings }
    }

    /// Opens the configured store (creating the database or file if missing) with its
    /// migrations applied. Without a database URL it is the embedded store, said in one line.
    async fn store(&self, pool_size: u32) -> Result<AnyStore> {
        match self.settings.store_location()? {
            StoreLocation::Postgres(url) => {
                create_database_if_missing(&url).await?;
                let store = PgStore::connect(&url, pool_size).await.with_context(|| {
                    format!(
                        "cannot connect to the database at {}: is PostgreSQL running?",
                        redact(&url)
                    )
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

    async fn sandbox(&self, watch: bool) -> Result<Sandbox> {
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
        let (sandbox, scan) = Sandbox::new(cfg)
            .await
            .context("cannot start the sandbox")?;
        for (path, err) in &scan.rejected {
            eprintln!("warning: plugin {} was not loaded: {err}", path.display());
        }
        Ok(sandbox)
    }

    fn worker_config(&self, concurrency: Option<usize>, id: Option<String>) -> WorkerConfig {
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

    async fn template_for(&self, store: &AnyStore, arg: &str) -> Result<Template> {
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

    async fn create(
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
        let created = ops::create_task(store, bus, template, &req, Utc::now()).await?;
        if !created.created {
            eprintln!(
                "task {} already exists for this identity key",
                created.task_id
            );
        }
        Ok(created.task_id)
    }

    /// `tasker run`: a new task of a template file, or an existing task resumed.
    pub async fn run(&self, what: RunTask, concurrency: usize, plain: bool) -> Result<ExitCode> {
        // A bad template is refused before the store is even opened.
        let what = match what {
            RunTask::New { template, context } => Ok((load_template(&template)?, context)),
            RunTask::Resume(task_id) => Err(task_id),
        };
        let store = Arc::new(self.store(8).await?);
        let bus = EventBus::default();
        let (template, task_id) = match what {
            Ok((template, context)) => {
                store.register_template(&template).await?;
                let task_id = self.create(&store, &bus, &template, &context, None).await?;
                (template, task_id)
            }
            Err(task_id) => {
                let row = store
                    .task(task_id)
                    .await?
                    .with_context(|| format!("no task {task_id}"))?;
                let template = store
                    .template(&row.template_key)
                    .await?
                    .with_context(|| format!("task {task_id}: no template {}", row.template_key))?;
                (template, task_id)
            }
        };
        let sandbox = self.sandbox(false).await?;
        eprintln!(
            "task {task_id}: {} ({} steps)",
            template.key(),
            template.steps.len()
        );

        let progress = Progress::start(&bus, task_id, &template, plain);
        let stop = CancellationToken::new();
        let cfg = WorkerConfig {
            concurrency: concurrency.max(1),
            poll_every: Duration::from_millis(100),
            // Ctrl-C: a step about to finish is recorded, the others are released at once.
            shutdown_grace: RUN_SHUTDOWN_GRACE,
            ..self.worker_config(None, None)
        };
        let hooks = crate::hooks::spawn_deliverer(store.clone(), &sandbox, &cfg, stop.clone());
        let policies = crate::hooks::policies(&sandbox);
        let worker = Worker::with_policies(
            store.clone(),
            Arc::new(WasmExecutor::new(sandbox)),
            bus.clone(),
            cfg,
            Arc::new(tasker_core::clock::SystemClock),
            policies,
        );
        let interrupted = shutdown_signal();
        let listener = spawn_listener(&store, &worker, &stop);
        let run = tokio::spawn(worker.run(stop.clone()));
        let ended = tokio::select! {
            state = wait_for_end(&store, &bus, task_id) => Some(state?),
            () = interrupted => None,
        };
        let drained = match ended {
            // Let the hooks see the task's last events before returning.
            Some(_) => crate::hooks::drain(&store, task_id, Duration::from_secs(30)).await?,
            None => {
                eprintln!(
                    "interrupted: no new steps; running steps have {} s to finish, the rest are released",
                    RUN_SHUTDOWN_GRACE.as_secs()
                );
                true
            }
        };
        stop.cancel();
        let _ = run.await;
        if let Some(l) = listener {
            let _ = l.await;
        }
        let _ = hooks.await;
        progress.finish().await;

        report::summary(&store, task_id).await?;
        for line in crate::hooks::summary_lines(&store, task_id).await? {
            eprintln!("{line}");
        }
        if !drained {
            eprintln!("some hook deliveries are still pending; a worker will finish them");
        }
        match ended {
            Some(state) => Ok(exit_for(state)),
            None => {
                let state = store.task(task_id).await?.map(|t| t.state);
                match state {
                    Some(s @ (TaskState::Complete | TaskState::Error | TaskState::Cancelled)) => {
                        Ok(exit_for(s))
                    }
                    _ => {
                        eprintln!(
                            "task {task_id} was interrupted and is not finished; resume it with \
                             `tasker run --task {task_id}` (or let any `tasker worker` on this \
                             store finish it)"
                        );
                        Ok(ExitCode::from(130))
                    }
                }
            }
        }
    }

    /// `tasker worker`.
    pub async fn worker(&self, concurrency: Option<usize>, id: Option<String>) -> Result<ExitCode> {
        let cfg = self.worker_config(concurrency, id);
        let store = Arc::new(self.store(cfg.concurrency.clamp(2, 16) as u32).await?);
        let sandbox = self.sandbox(true).await?;
        eprintln!(
            "worker {} started: {} concurrent steps, plugins from {}",
            cfg.id,
            cfg.concurrency,
            self.settings.plugin_dir.display()
        );
        let stop = CancellationToken::new();
        let hooks = crate::hooks::spawn_deliverer(store.clone(), &sandbox, &cfg, stop.clone());
        let policies = crate::hooks::policies(&sandbox);
        let worker = Worker::with_policies(
            store.clone(),
            Arc::new(WasmExecutor::new(sandbox)),
            EventBus::default(),
            cfg,
            Arc::new(tasker_core::clock::SystemClock),
            policies,
        );
        let listener = spawn_listener(&store, &worker, &stop);
        let signals = tokio::spawn({
            let stop = stop.clone();
            let signal = shutdown_signal();
            async move {
                signal.await;
                eprintln!("shutting down: finishing running steps");
                stop.cancel();
            }
        });
        let totals = worker.run(stop.clone()).await;
        signals.abort();
        stop.cancel();
        if let Some(l) = listener {
            let _ = l.await;
        }
        let _ = hooks.await;
        eprintln!(
            "worker stopped: {} claimed, {} completed, {} failed, {} lease losses",
            totals.claimed, totals.completed, totals.failed, totals.lease_lost
        );
        Ok(ExitCode::SUCCESS)
    }

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
        let state = poll_for_end(&store, task_id).await?;
        report::summary(&store, task_id).await?;
        Ok(exit_for(state))
    }

    /// `tasker status`.
    pub async fn status(&self, task: TaskId) -> Result<ExitCode> {
        let store = self.store(2).await?;
        report::status(&store, task).await?;
        Ok(ExitCode::SUCCESS)
    }

    pub async fn cancel(&self, task: TaskId) -> Result<ExitCode> {
        let store = self.store(2).await?;
        let out = ops::cancel_task(&store, &EventBus::default(), task, Utc::now()).await?;
        if out.cancelled {
            println!("task {task} cancelled ({} steps)", out.steps_cancelled);
        } else {
            println!("task {task} was already cancelled");
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn retry(&self, task: TaskId) -> Result<ExitCode> {
        let store = self.store(2).await?;
        let out = ops::retry_task(&store, &EventBus::default(), task, Utc::now()).await?;
        println!(
            "task {task}: {} failed steps will run again",
            out.steps_reset
        );
        Ok(ExitCode::SUCCESS)
    }

    pub async fn resolve(&self, step: i64, result: Option<&str>) -> Result<ExitCode> {
        let result = result.map(|r| read_json_arg(r, "result")).transpose()?;
        let store = self.store(2).await?;
        let out = ops::resolve_step(&store, &EventBus::default(), step, result, Utc::now()).await?;
        println!(
            "step {step} resolved; {} children are ready; task {} is {}",
            out.ready_children, out.task_id, out.task_state
        );
        Ok(ExitCode::SUCCESS)
    }

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

    pub async fn templates_list(&self) -> Result<ExitCode> {
        let store = self.store(2).await?;
        report::templates(&store).await?;
        Ok(ExitCode::SUCCESS)
    }

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
        let dag = t.dag()?;
        match graph {
            Some(Graph::Mermaid) => print!("{}", dag.to_mermaid()),
            Some(Graph::Dot) => print!("{}", dag.to_dot()),
            None => print!("{}", serde_yaml_ng::to_string(&t)?),
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn plugins_list(&self) -> Result<ExitCode> {
        let sandbox = self.sandbox(false).await?;
        // Plugins compile on first use: compile them all here, so a broken one is named.
        for (path, err) in sandbox.registry().load_all().await {
            eprintln!("warning: plugin {} was not loaded: {err}", path.display());
        }
        report::plugins(&sandbox, &self.settings.cache_dir);
        Ok(ExitCode::SUCCESS)
    }

    pub async fn plugins_inspect(&self, plugin: &str) -> Result<ExitCode> {
        let r: PluginRef = plugin.parse().map_err(anyhow::Error::msg)?;
        let sandbox = self.sandbox(false).await?;
        let p = sandbox.registry().load(&r).await?;
        report::plugin(&p, &self.settings.cache_dir);
        Ok(ExitCode::SUCCESS)
    }

    pub async fn migrate(&self) -> Result<ExitCode> {
        self.store(1).await?;
        println!("database is up to date");
        Ok(ExitCode::SUCCESS)
    }
}

/// On PostgreSQL, LISTEN/NOTIFY wakes the worker when another process makes steps ready (the
/// embedded store's writers are this process, or take turns on the file: the poll covers
/// them).
fn spawn_listener<E: tasker_engine::Executor>(
    store: &AnyStore,
    worker: &Worker<AnyStore, E>,
    stop: &CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    store.postgres().map(|pg| {
        tasker_engine::pg::spawn_ready_listener(
            pg.pool().clone(),
            worker.wake_handle(),
            stop.clone(),
        )
    })
}

/// A first run on a fresh server creates its database, as `sqlx database create` would.
async fn create_database_if_missing(url: &str) -> Result<()> {
    use sqlx::migrate::MigrateDatabase;
    let exists = sqlx::Postgres::database_exists(url)
        .await
        .with_context(|| {
            format!(
                "cannot connect to the database server at {}: is PostgreSQL running?",
                redact(url)
            )
        })?;
    if !exists {
        sqlx::Postgres::create_database(url)
            .await
            .with_context(|| format!("cannot create the database {}", redact(url)))?;
        eprintln!("created database {}", redact(url));
    }
    Ok(())
}

fn exit_for(state: TaskState) -> ExitCode {
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

/// Waits for the task's end event; a periodic check covers events missed by a slow reader.
async fn wait_for_end(store: &AnyStore, bus: &EventBus, task: TaskId) -> Result<TaskState> {
    let mut sub = bus.subscribe(&["task.*"]);
    loop {
        if let Some(row) = store.task(task).await?
            && matches!(
                row.state,
                TaskState::Complete | TaskState::Error | TaskState::Cancelled
            )
        {
            return Ok(row.state);
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Some(ev) = sub.recv().await {
                if ev.task_id == Some(task) {
                    break;
                }
            }
        })
        .await;
    }
}

async fn poll_for_end(store: &AnyStore, task: TaskId) -> Result<TaskState> {
    loop {
        let row = store
            .task(task)
            .await?
            .with_context(|| format!("task {task} disappeared"))?;
        if matches!(
            row.state,
            TaskState::Complete | TaskState::Error | TaskState::Cancelled
        ) {
            return Ok(row.state);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when
/// it is first polled, so a signal that comes before the first poll is not lost (or fatal).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
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
