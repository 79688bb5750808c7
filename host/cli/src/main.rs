//! `tasker`: run DAG workflows whose steps are sandboxed WebAssembly components.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tasker_cli::app::{self, App, Start};
use tasker_cli::commands::{self, RunTask};
use tasker_cli::config::{FileConfig, Settings};
use tasker_store::{StepId, TaskId};

/// Tasker runs multi-step workflows (DAGs of steps) whose handlers are sandboxed WebAssembly
/// components. State lives in an embedded SQLite file (.tasker/tasker.db) by default, or in
/// PostgreSQL for several worker processes or machines.
///
/// Quick start: build the example plugins (scripts/build-plugins.sh), then
/// `tasker run examples/order/order.yaml --context @examples/order/context.json`.
/// `tasker --version`: the release, the commit it was built from, the WIT package it hosts.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TASKER_GIT_COMMIT"),
    ", hosts WIT ",
    env!("TASKER_WIT_PACKAGE"),
    ")"
);

#[derive(Debug, Parser)]
#[command(name = "tasker", version = VERSION, about, long_about)]
struct Cli {
    /// PostgreSQL URL (postgres://postgres@127.0.0.1:5432/postgres) or sqlite:path/to/file.db.
    /// Without one, the embedded store <data-dir>/tasker.db is used.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

    /// Project data directory, home of the embedded store when no database URL is given
    /// [default: .tasker].
    #[arg(long, env = "TASKER_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,

    /// Directory of plugin components (*.wasm), watched for new versions
    /// [default: plugins/dist].
    #[arg(long, env = "TASKER_PLUGIN_DIR", global = true)]
    plugin_dir: Option<PathBuf>,

    /// Directory for precompiled plugins (native code: keep it private)
    /// [default: .tasker/cache].
    #[arg(long, env = "TASKER_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,

    /// Config file (TOML: database_url, data_dir, plugin_dir, cache_dir, grants_base_dir,
    /// [worker], [limits], ...) [default: ./tasker.toml, when present].
    #[arg(long, env = "TASKER_CONFIG", global = true)]
    config: Option<PathBuf>,

    /// A `tasker serve` URL: submit, status, logs, tasks, cancel, retry, resolve, templates,
    /// plugins, hooks and schedules go through its API instead of the database (other commands ignore it).
    #[arg(long, env = "TASKER_SERVER", global = true)]
    server: Option<String>,

    /// How the host writes its own logs (to stderr, filtered by RUST_LOG): text for a person
    /// (coloured only on a terminal) or one JSON object per line.
    #[arg(long, env = "TASKER_LOG_FORMAT", global = true, value_enum, default_value_t = app::LogFormat::Text)]
    log_format: app::LogFormat,

    /// Export traces over OTLP (HTTP/protobuf) to this collector base URL (spans go to
    /// <URL>/v1/traces): one trace per task, a span per attempt and per store call. Without
    /// it, the standard OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) turns them on;
    /// by default traces are off.
    #[arg(long, global = true, value_name = "URL")]
    otlp_endpoint: Option<String>,

    /// A W3C traceparent (00-<trace id>-<span id>-<flags>) for the task this command creates
    /// (run, submit): its trace joins the caller's.
    #[arg(long, env = "TRACEPARENT", global = true)]
    traceparent: Option<tasker_core::trace::TraceParent>,

    /// The bearer token for --server.
    #[arg(long, env = "TASKER_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,

    /// What relative host paths of directory grants are resolved against, by this process's
    /// workers (templates keep them as written) [default: the working directory].
    #[arg(long, env = "TASKER_GRANTS_BASE", global = true, value_name = "DIR")]
    grants_base: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register a template, submit a task and run it to its end in this process, with live
    /// progress and a summary. Exits non-zero when the task fails.
    ///
    /// Ctrl-C stops claiming, lets running steps finish within `[worker] shutdown_grace`
    /// (default 2s here), releases the rest (their leases are given back at once) and prints
    /// how to resume: `run --task <id>`.
    Run {
        /// The template (YAML). Not with --task.
        #[arg(required_unless_present = "task", conflicts_with = "task")]
        template: Option<PathBuf>,
        /// Resume this task (of a registered template) instead of creating one.
        #[arg(long)]
        task: Option<TaskId>,
        /// The task context: JSON text, or @file to read it from a file. Not with --task.
        #[arg(long, short, default_value = "{}", conflicts_with = "task")]
        context: String,
        /// Steps running at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Print one line per event instead of progress bars.
        #[arg(long)]
        plain: bool,
        /// Serve Prometheus metrics on this address (GET /metrics, no token) while running.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
    },
    /// Run a long-lived worker. Several may share one PostgreSQL database (on the embedded
    /// store they take turns writing); SIGINT or SIGTERM stops it gracefully (running steps
    /// finish within `[worker] shutdown_grace`, default 30s, or are released at once).
    Worker {
        /// Steps running at once [default: [worker] concurrency of the config file, else 64].
        #[arg(long)]
        concurrency: Option<usize>,
        /// Worker name, recorded on leases and attempts [default: <host name>-<pid>].
        #[arg(long)]
        id: Option<String>,
        /// Serve Prometheus metrics on this address (GET /metrics, no token: listen on a
        /// loopback or private address).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
    },
    /// Serve the HTTP API (under /v1, health under /health) on this store; optionally run
    /// workers in the same process. Stateless: several servers can share one PostgreSQL
    /// database. SIGINT or SIGTERM stops it gracefully.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = tasker_server::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
        /// Steps run at once by a worker in this process (0: the API only).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Accept requests without a token (loopback addresses only; a development server).
        #[arg(long)]
        no_auth: bool,
        /// Accept requests without a token on any address. Only on a trusted network.
        #[arg(long)]
        insecure_no_auth: bool,
        /// Answer /metrics without a token (by default it needs `metrics:read`).
        #[arg(long)]
        public_metrics: bool,
        /// Largest request body, in bytes.
        #[arg(long, default_value_t = 1 << 20)]
        max_body: usize,
    },
    /// Everything in one process for development: the store (the embedded file unless a
    /// database URL is set), the HTTP API on loopback with auth off and /metrics open,
    /// in-process workers, and the plugin directory watched for new builds.
    Dev {
        /// Address to listen on (loopback only).
        #[arg(long, default_value = tasker_server::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
        /// Steps run at once by the in-process worker.
        #[arg(long, default_value_t = 16)]
        workers: usize,
        /// First register every template under examples/ (run from the repository root).
        #[arg(long)]
        examples: bool,
    },
    /// Schedules: create a template's task on each instant of a cron pattern in a time zone
    /// (docs/schedules.md). Workers, `serve` and `dev` fire them, each instant once.
    #[command(subcommand)]
    Schedules(SchedulesCmd),
    /// API tokens for `tasker serve`.
    #[command(subcommand)]
    Tokens(TokensCmd),
    /// List and inspect tasks.
    #[command(subcommand)]
    Tasks(TasksCmd),
    /// Enqueue a task and print its id.
    Submit {
        /// A template file (registered first) or a registered key namespace/name@version.
        template: String,
        /// The task context: JSON text, or @file.
        #[arg(long, short, default_value = "{}")]
        context: String,
        /// Idempotency key: submitting again with it returns the same task.
        #[arg(long)]
        identity_key: Option<String>,
        /// The task's priority, 1 (lowest) to 5 (highest) [default: the template's, else 3].
        /// Claims take higher priorities first; a lower one gains a level per 30 s of waiting.
        #[arg(long)]
        priority: Option<tasker_core::priority::Priority>,
        /// Start no earlier than this instant (RFC 3339, like 2026-12-24T18:00:00Z).
        #[arg(long, conflicts_with = "delay")]
        run_at: Option<chrono::DateTime<chrono::Utc>>,
        /// Start after this span (like 45s, 10m, 2h or 1d).
        #[arg(long)]
        delay: Option<tasker_core::retention::Span>,
        /// Follow the task to its end with live progress (as `run` shows it, from the store's
        /// event log: a worker elsewhere runs it), then print its steps; exit non-zero if it
        /// fails.
        #[arg(long)]
        wait: bool,
        /// Submit even if the plugin directory here lacks a handler, hook or retry policy the
        /// template names (the workers' directory may be another), with a warning.
        #[arg(long)]
        allow_missing_handlers: bool,
    },
    /// Show a task's steps (result, timing, worker, attempts made) and, for each step not
    /// yet run, why it is not ready.
    Status {
        /// The task's id (as submit and run print it).
        task: TaskId,
        /// Also every attempt of every step: outcome, kind, message, decision, fuel, memory,
        /// wall time, plugin hash, worker.
        #[arg(long)]
        attempts: bool,
        /// Also the task's and its steps' transition rows.
        #[arg(long)]
        transitions: bool,
    },
    /// Print what each attempt of a step said: its log records (with their offset from the
    /// attempt's start), stdout and stderr, as kept with the attempt (bounded by the
    /// [limits] max_logs, log_bytes and stdio_bytes settings).
    Logs {
        /// The step's id (the `id` column of `tasker status`).
        step: StepId,
        /// Only this attempt (its number in `status --attempts`).
        #[arg(long)]
        attempt: Option<i64>,
        /// Keep printing attempts as they are recorded, until the step is done (complete,
        /// in error, cancelled or resolved).
        #[arg(long, short)]
        follow: bool,
    },
    /// Cancel a task: unfinished steps are cancelled, late results refused.
    Cancel {
        /// The task's id.
        task: TaskId,
    },
    /// Retry a task in error: its failed steps get a fresh attempt budget.
    Retry {
        /// The task's id.
        task: TaskId,
    },
    /// Mark a step as done by hand (it counts as complete for its children).
    Resolve {
        /// The step's id (the `id` column of `tasker status`).
        step: StepId,
        /// The step's result, as JSON text or @file.
        #[arg(long)]
        result: Option<String>,
    },
    /// Manage templates.
    #[command(subcommand)]
    Templates(TemplatesCmd),
    /// Inspect the plugin directory, or install into it.
    #[command(subcommand)]
    Plugins(PluginsCmd),
    /// Event hooks' dead letters: list them and send them again.
    #[command(subcommand)]
    Hooks(HooksCmd),
    /// Delete finished tasks past their retention, with their steps, attempts, logs,
    /// transitions and hook outbox rows, and delivered outbox rows past `[retention]
    /// delivered`; prints the rows removed per table. Workers and servers also prune on
    /// their own every `[retention] interval`.
    Prune {
        /// Remove tasks that finished longer ago than this (7d, 12h, 30m), whatever the
        /// settings and templates say [default: `[retention]` of tasker.toml and templates'
        /// own `retention:`].
        #[arg(long, value_name = "SPAN")]
        older_than: Option<tasker_core::retention::Span>,
        /// Only tasks in these final states (repeat or comma-separate) [default: all three].
        #[arg(long, value_enum, value_delimiter = ',')]
        state: Vec<commands::FinalState>,
        /// Count what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Tasks deleted per transaction.
        #[arg(long, default_value_t = commands::PRUNE_BATCH)]
        batch: u32,
    },
    /// Print a task as one JSON document: the task, its transitions, and every step with its
    /// attempts, logs and transitions (what to keep before retention removes it).
    Export {
        /// The task's id.
        task: TaskId,
    },
    /// Apply the database migrations.
    Migrate,
    /// Print shell completions, e.g. `tasker completions bash > /etc/bash_completion.d/tasker`.
    Completions {
        /// The shell to write completions for.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum TemplatesCmd {
    /// Validate and register a template file. Every handler, hook and retry policy it names
    /// must be in the plugin directory (or, with --server, the server's).
    Register {
        /// The template (YAML).
        file: PathBuf,
        /// Register even if the plugin directory lacks some of its components (ahead of a
        /// deploy), with a warning: its steps fail until they are there.
        #[arg(long)]
        allow_missing_handlers: bool,
    },
    /// List registered templates.
    List,
    /// Print the components (handlers, hooks, retry policies) template files run, one
    /// name@version per line: what a plugin directory must hold for them.
    Plugins {
        /// Template files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show a registered template (key) or a template file.
    Show {
        /// A registered key (namespace/name@version) or a template file.
        template: String,
        /// Print the DAG instead, as Mermaid or DOT.
        #[arg(long, value_enum)]
        graph: Option<GraphFormat>,
    },
}

#[derive(Debug, Subcommand)]
enum SchedulesCmd {
    /// Create a schedule, or replace the one of that name (keeping whether it is paused).
    Create {
        /// Its name: letters, digits, '_', '-' or '.' (up to 64).
        name: String,
        /// Five-field cron pattern: minute hour day-of-month month day-of-week, e.g.
        /// '0 * * * *' (hourly) or '30 2 * * MON-FRI'.
        #[arg(long)]
        cron: String,
        /// The IANA time zone the pattern is read in (a wall-clock time skipped by DST fires
        /// at the end of the gap, a repeated one once, at its first occurrence).
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// The registered template each instant runs: namespace/name@version.
        #[arg(long)]
        template: String,
        /// The context of every task it creates: JSON text, or @file.
        #[arg(long, short, default_value = "{}")]
        context: String,
        /// What instants missed while nothing ran (or more than a minute late) do: skip
        /// drops them, run_once fires the latest of them once.
        #[arg(long, value_enum, default_value_t = MissedArg::Skip)]
        missed: MissedArg,
    },
    /// List schedules with their next fire times (UTC and local).
    List,
    /// Pause a schedule: nothing fires until it is resumed.
    Pause {
        /// The schedule's name.
        name: String,
    },
    /// Resume a schedule from its next instant (what passed while paused does not fire).
    Resume {
        /// The schedule's name.
        name: String,
    },
    /// Delete a schedule (the tasks it created stay).
    Delete {
        /// The schedule's name.
        name: String,
    },
}

/// `--missed`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum MissedArg {
    /// Drop missed instants: resume at the next one.
    Skip,
    /// Fire the latest missed instant once, late.
    #[value(name = "run_once")]
    RunOnce,
}

impl MissedArg {
    fn policy(self) -> tasker_core::schedule::Missed {
        match self {
            MissedArg::Skip => tasker_core::schedule::Missed::Skip,
            MissedArg::RunOnce => tasker_core::schedule::Missed::RunOnce,
        }
    }
}

fn schedule_args(cmd: &SchedulesCmd) -> Option<commands::schedules::ScheduleArgs> {
    match cmd {
        SchedulesCmd::Create {
            name,
            cron,
            tz,
            template,
            context,
            missed,
        } => Some(commands::schedules::ScheduleArgs {
            name: name.clone(),
            cron: cron.clone(),
            tz: tz.clone(),
            template: template.clone(),
            context: context.clone(),
            missed: missed.policy(),
        }),
        _ => None,
    }
}

#[derive(Debug, Subcommand)]
enum TokensCmd {
    /// Create a token and print it (once: the store keeps only its hash).
    Create {
        /// A name for the token, unique: revoke takes it.
        #[arg(long)]
        name: String,
        /// Comma-separated `resource:action` permissions (tasks:read, tasks:create, ...),
        /// `resource:*` or `*`.
        #[arg(long)]
        permissions: String,
        /// Lifetime such as 30d, 12h or 90m [default: no expiry].
        #[arg(long)]
        expires: Option<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by name.
    Revoke {
        /// The token's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum TasksCmd {
    /// List tasks, newest first.
    List {
        /// Only tasks in these states (comma-separated: pending, in_progress, complete,
        /// error, cancelled).
        #[arg(long, value_delimiter = ',')]
        state: Vec<tasker_core::state::TaskState>,
        /// namespace/name@version, or namespace/name for every version.
        #[arg(long)]
        template: Option<String>,
        /// Only tasks with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Only the task with this identity key.
        #[arg(long)]
        identity_key: Option<String>,
        /// Tasks per page (1..=500).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: u32,
        /// Continue a listing: the cursor the previous page printed.
        #[arg(long)]
        cursor: Option<TaskId>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GraphFormat {
    Mermaid,
    Dot,
}

impl GraphFormat {
    fn to_graph(self) -> commands::Graph {
        match self {
            GraphFormat::Mermaid => commands::Graph::Mermaid,
            GraphFormat::Dot => commands::Graph::Dot,
        }
    }
}

#[derive(Debug, Subcommand)]
enum HooksCmd {
    /// List dead letters (deliveries that failed their last attempt): id, hook, event,
    /// task, step, attempts, last error, when.
    DeadLetters {
        /// Only this hook: its id, its component name@version, or a component name.
        #[arg(long)]
        hook: Option<String>,
    },
    /// Send dead letters again, through the workers' leased delivery loop (in order, after
    /// what is pending for the same hook and task), with a fresh attempt budget.
    Redeliver {
        /// Only this hook: its id, its component name@version, or a component name.
        #[arg(long)]
        hook: Option<String>,
        /// The dead letters to send again (ids from `hooks dead-letters`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<i64>,
        /// Every dead letter (of --hook, if given).
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PluginsCmd {
    /// List the plugins: hash, name@version, size, whether precompiled.
    List,
    /// Delete every precompiled file no process is using (from the cache directory, shared
    /// by every worker pointing at it) and say what was removed.
    Gc,
    /// Show one plugin by name, name@version or blake3:<hash>.
    Inspect {
        /// name, name@version or blake3:<hash>.
        plugin: String,
    },
    /// Check a component and install it into the plugin directory (or, with --server, the
    /// server's), where every worker hot-loads it. The same bytes again change nothing.
    Upload {
        /// The component (*.wasm).
        file: PathBuf,
        /// The plugin's name [default: from a file named name@version.wasm].
        #[arg(long)]
        name: Option<String>,
        /// Its version [default: from the file name].
        #[arg(long)]
        version: Option<String>,
    },
}

/// A reader that went away (`tasker tasks list | head`) ends a short command quietly, as it
/// does any Unix tool: the default SIGPIPE action, which Rust replaces with an error that
/// `println!` turns into a panic. Long-running commands keep the error (a closed stdout must
/// not kill a worker with steps in hand: they stop gracefully).
fn quiet_broken_pipe(command: &Command) {
    let long_running = matches!(
        command,
        Command::Run { .. } | Command::Worker { .. } | Command::Serve { .. } | Command::Dev { .. }
    );
    // Before any thread starts.
    if !long_running {
        tasker_cli::output::end_quietly_on_broken_pipe();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    quiet_broken_pipe(&cli.command);
    // Commands that need no settings, store or runtime.
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "tasker", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Templates(TemplatesCmd::Plugins { files }) => {
            return match commands::components_of(files) {
                Ok(names) => {
                    for n in names {
                        println!("{n}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {}", tasker_cli::output::error_text(&e));
                    ExitCode::from(2)
                }
            };
        }
        _ => {}
    }
    let _traces = match app::init_tracing(
        cli.log_format,
        &tasker_cli::traces::Otlp::resolve(cli.otlp_endpoint.clone()),
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}", tasker_cli::output::error_text(&e));
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", tasker_cli::output::error_text(&e));
            ExitCode::from(2)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let file = FileConfig::load(cli.config.as_deref())?;
    let mut settings = Settings::resolve(
        file,
        cli.database_url,
        cli.data_dir,
        cli.plugin_dir,
        cli.cache_dir,
    );
    if cli.grants_base.is_some() {
        settings.grants_base = cli.grants_base;
    }
    let app = App::new(settings).with_traceparent(cli.traceparent);
    if let Some(url) = &cli.server {
        let api = tasker_cli::api::Api::new(url, cli.token.clone())?
            .with_traceparent(cli.traceparent.map(|t| t.to_string()));
        if let Some(code) = through_server(&api, &cli.command).await? {
            return Ok(code);
        }
    }
    match cli.command {
        Command::Run {
            template,
            task,
            context,
            concurrency,
            plain,
            metrics_listen,
        } => {
            let what = match (template, task) {
                (_, Some(task)) => RunTask::Resume(task),
                (Some(path), None) => RunTask::New {
                    template: path,
                    context,
                },
                (None, None) => unreachable!("clap requires a template or --task"),
            };
            app.run(what, concurrency, plain, metrics_listen).await
        }
        Command::Worker {
            concurrency,
            id,
            metrics_listen,
        } => app.worker(concurrency, id, metrics_listen).await,
        Command::Serve {
            listen,
            workers,
            no_auth,
            insecure_no_auth,
            public_metrics,
            max_body,
        } => {
            app.serve(commands::ServeOptions {
                listen,
                workers,
                no_auth,
                insecure_no_auth,
                public_metrics,
                max_body_bytes: max_body,
            })
            .await
        }
        Command::Dev {
            listen,
            workers,
            examples,
        } => app.dev(listen, workers, examples).await,
        Command::Tokens(TokensCmd::Create {
            name,
            permissions,
            expires,
        }) => {
            app.tokens_create(&name, &permissions, expires.as_deref())
                .await
        }
        Command::Schedules(cmd) => {
            let args = schedule_args(&cmd);
            match (cmd, args) {
                (_, Some(args)) => app.schedules_create(&args).await,
                (SchedulesCmd::List, _) => app.schedules_list().await,
                (SchedulesCmd::Pause { name }, _) => app.schedules_pause(&name, true).await,
                (SchedulesCmd::Resume { name }, _) => app.schedules_pause(&name, false).await,
                (SchedulesCmd::Delete { name }, _) => app.schedules_delete(&name).await,
                (SchedulesCmd::Create { .. }, None) => unreachable!("create has its arguments"),
            }
        }
        Command::Tokens(TokensCmd::List) => app.tokens_list().await,
        Command::Tokens(TokensCmd::Revoke { name }) => app.tokens_revoke(&name).await,
        Command::Tasks(TasksCmd::List {
            state,
            template,
            tag,
            identity_key,
            limit,
            cursor,
        }) => {
            app.tasks_list(commands::TaskListArgs {
                states: state,
                template,
                tag,
                identity_key,
                limit,
                cursor,
            })
            .await
        }
        Command::Submit {
            template,
            context,
            identity_key,
            priority,
            run_at,
            delay,
            wait,
            allow_missing_handlers,
        } => {
            let start = Start::new(identity_key, priority, run_at, delay)?;
            app.submit(&template, &context, start, wait, allow_missing_handlers)
                .await
        }
        Command::Status {
            task,
            attempts,
            transitions,
        } => {
            let detail = tasker_cli::report::StatusDetail {
                attempts,
                transitions,
            };
            app.status(task, detail).await
        }
        Command::Logs {
            step,
            attempt,
            follow,
        } => app.logs(step, attempt, follow).await,
        Command::Cancel { task } => app.cancel(task).await,
        Command::Retry { task } => app.retry(task).await,
        Command::Resolve { step, result } => app.resolve(step, result.as_deref()).await,
        Command::Templates(TemplatesCmd::Register {
            file,
            allow_missing_handlers,
        }) => app.register(&file, allow_missing_handlers).await,
        Command::Templates(TemplatesCmd::List) => app.templates_list().await,
        Command::Templates(TemplatesCmd::Plugins { .. }) | Command::Completions { .. } => {
            unreachable!("handled before the runtime starts")
        }
        Command::Templates(TemplatesCmd::Show { template, graph }) => {
            app.templates_show(&template, graph.map(GraphFormat::to_graph))
                .await
        }
        Command::Plugins(PluginsCmd::List) => app.plugins_list().await,
        Command::Plugins(PluginsCmd::Gc) => app.plugins_gc(),
        Command::Hooks(HooksCmd::DeadLetters { hook }) => {
            app.hooks_dead_letters(hook.as_deref()).await
        }
        Command::Hooks(HooksCmd::Redeliver { hook, ids, all }) => {
            app.hooks_redeliver(hook.as_deref(), &ids, all).await
        }
        Command::Plugins(PluginsCmd::Inspect { plugin }) => app.plugins_inspect(&plugin).await,
        Command::Plugins(PluginsCmd::Upload {
            file,
            name,
            version,
        }) => {
            let (name, version, bytes) = commands::upload_args(&file, name, version)?;
            app.plugins_upload(&name, &version, bytes).await
        }
        Command::Migrate => app.migrate().await,
        Command::Prune {
            older_than,
            state,
            dry_run,
            batch,
        } => {
            let args = commands::PruneArgs {
                older_than,
                states: state,
                dry_run,
                batch,
            };
            app.prune(&args).await
        }
        Command::Export { task } => app.export(task).await,
    }
}

/// The commands `--server` sends through the API (None: this one runs locally).
async fn through_server(
    api: &tasker_cli::api::Api,
    command: &Command,
) -> anyhow::Result<Option<ExitCode>> {
    use commands::remote;
    Ok(Some(match command {
        Command::Submit {
            template,
            context,
            identity_key,
            priority,
            run_at,
            delay,
            wait,
            allow_missing_handlers,
        } => {
            let start = Start::new(identity_key.clone(), *priority, *run_at, *delay)?;
            remote::submit(
                api,
                template,
                context,
                start,
                *wait,
                *allow_missing_handlers,
            )
            .await?
        }
        Command::Status {
            task,
            attempts,
            transitions,
        } => {
            if *attempts || *transitions {
                anyhow::bail!(
                    "status --attempts and --transitions read the store: run them without --server"
                );
            }
            remote::status_of(api, task.get()).await?;
            ExitCode::SUCCESS
        }
        Command::Logs {
            step,
            attempt,
            follow,
        } => commands::logs::remote(api, step.get(), *attempt, *follow).await?,
        Command::Cancel { task } => remote::cancel(api, task.get()).await?,
        Command::Retry { task } => remote::retry(api, task.get()).await?,
        Command::Resolve { step, result } => {
            remote::resolve(api, step.get(), result.as_deref()).await?
        }
        Command::Tasks(TasksCmd::List {
            state,
            template,
            tag,
            identity_key,
            limit,
            cursor,
        }) => {
            let args = commands::TaskListArgs {
                states: state.clone(),
                template: template.clone(),
                tag: tag.clone(),
                identity_key: identity_key.clone(),
                limit: *limit,
                cursor: *cursor,
            };
            remote::tasks_list(api, &args).await?
        }
        Command::Templates(TemplatesCmd::Register {
            file,
            allow_missing_handlers,
        }) => remote::templates_register(api, file, *allow_missing_handlers).await?,
        Command::Templates(TemplatesCmd::List) => remote::templates_list(api).await?,
        Command::Templates(TemplatesCmd::Show { template, graph })
            if !std::path::Path::new(template).is_file() =>
        {
            remote::templates_show(api, template, graph.map(GraphFormat::to_graph)).await?
        }
        Command::Schedules(cmd) => {
            use commands::schedules as sched;
            match (cmd, schedule_args(cmd)) {
                (_, Some(args)) => sched::create_remote(api, &args).await?,
                (SchedulesCmd::List, _) => sched::list_remote(api).await?,
                (SchedulesCmd::Pause { name }, _) => sched::pause_remote(api, name, true).await?,
                (SchedulesCmd::Resume { name }, _) => sched::pause_remote(api, name, false).await?,
                (SchedulesCmd::Delete { name }, _) => sched::delete_remote(api, name).await?,
                (SchedulesCmd::Create { .. }, None) => unreachable!("create has its arguments"),
            }
        }
        Command::Plugins(PluginsCmd::List) => remote::plugins_list(api).await?,
        Command::Hooks(HooksCmd::DeadLetters { hook }) => {
            remote::hooks_dead_letters(api, hook.as_deref()).await?
        }
        Command::Hooks(HooksCmd::Redeliver { hook, ids, all }) => {
            remote::hooks_redeliver(api, hook.as_deref(), ids, *all).await?
        }
        Command::Plugins(PluginsCmd::Inspect { plugin }) => {
            remote::plugins_inspect(api, plugin).await?
        }
        Command::Plugins(PluginsCmd::Upload {
            file,
            name,
            version,
        }) => {
            let (name, version, bytes) =
                commands::upload_args(file, name.clone(), version.clone())?;
            remote::plugins_upload(api, &name, &version, bytes).await?
        }
        _ => return Ok(None),
    }))
}

/// The help text walks the whole command tree: every command and argument says what it is,
/// defaults are shown, and `-h` lists what `--help` lists.
#[cfg(test)]
mod help {
    use clap::CommandFactory;

    /// Every command of the tree, built (with clap's own `help` and `--version`), with its
    /// path (`tasker templates register`).
    fn commands() -> Vec<(String, clap::Command)> {
        fn walk(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
            out.push((path.clone(), cmd.clone()));
            for sub in cmd.get_subcommands() {
                // clap's `help` subcommand mirrors the tree; the tree itself is checked.
                if sub.get_name() != "help" {
                    walk(sub, format!("{path} {}", sub.get_name()), out);
                }
            }
        }
        let mut root = super::Cli::command();
        root.build();
        let mut out = Vec::new();
        walk(&root, "tasker".into(), &mut out);
        out
    }

    #[test]
    fn every_argument_has_help() {
        let mut missing = Vec::new();
        for (path, cmd) in commands() {
            if cmd.get_about().is_none() {
                missing.push(format!("{path}: no description"));
            }
            for a in cmd.get_arguments() {
                let id = a.get_id();
                let help = a.get_help().map(ToString::to_string).unwrap_or_default();
                if help.trim().is_empty() {
                    missing.push(format!("{path} {id}: no help"));
                }
                if !a.get_default_values().is_empty() && a.is_hide_default_value_set() {
                    missing.push(format!("{path} {id}: its default is hidden"));
                }
                // A default said in words is in the summary `-h` prints, not only in `--help`.
                let long = a
                    .get_long_help()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                if long.contains("[default:") && !help.contains("[default:") {
                    missing.push(format!("{path} {id}: its default is only in --help"));
                }
            }
        }
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }

    /// The arguments and subcommands a help text lists: its two-space-indented entries.
    fn entries(text: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
            .map(|l| l.trim().split("  ").next().unwrap_or("").to_owned())
            .collect()
    }

    #[test]
    fn short_and_long_help_list_the_same_arguments() {
        for (path, mut cmd) in commands() {
            let short = entries(&cmd.render_help().to_string());
            let long = entries(&cmd.render_long_help().to_string());
            assert!(!short.is_empty(), "{path}: -h lists nothing");
            assert_eq!(short, long, "{path}: -h and --help list different entries");
        }
    }
}
