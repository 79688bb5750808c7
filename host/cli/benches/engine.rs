//! Engine benchmark on PostgreSQL and on the embedded SQLite store (a bench binary, not a
//! timed test).
//!
//! `cargo bench -p tasker-cli --bench engine` (add `-- --quick` for smaller sizes, and
//! `-- --only=ac` to run some of the sections a, c, d, e; `--only=c` is the latency alone).
//! Throughput and latency are measured twice in the same run: with the in-process no-op
//! executor (the baseline) and with the real WASM `noop` plugin through the sandbox, and the
//! WASM figures are reported as a ratio of the baseline. Build the plugins first
//! (`scripts/build-plugins.sh`).
//! It creates and drops its own database, `tasker_bench`, on the server of `DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`), and prints:
//!  (a) no-op step throughput with 2 worker pools on a 20k and a 200k ready backlog;
//!  (b) transactions and WAL bytes per step during (a);
//!  (c) submit-to-complete latency of a linear 4-step task on an idle system;
//!  (d) `get_step_readiness_status` time for a 10-step task with 10k and 1M step rows;
//!  (e) the throughput cost of one no-op WASM hook subscribed to every step event, as a
//!      ratio against the same workflow without hooks, both measured in this run;
//!  (f) the throughput cost of observability: WASM no-op steps through `AnyStore` (as the
//!      binary runs them) with the Prometheus recorder and OTLP trace export (to a loopback
//!      receiver) on, against both off, in alternating rounds (`telemetry.rs`; goal ≥ 0.95x);
//!  (g) single-step no-op tasks over 1,000 concurrency keys with a limit of 1 (each task
//!      admitted when the one before it in its key ends) against the same tasks without a
//!      key (goal ≥ 0.8x).
//!
//! Each of (a), (c), (d) and (e) is then measured on SQLite (a fresh file under
//! `target/tmp/bench-sqlite/`, WAL, synchronous NORMAL, one writer connection) with the same
//! code, the 2 workers sharing one `SqliteStore` in this process, and printed with its ratio to
//! the PostgreSQL figure of this run. (b) and the server-side part of (d) are PostgreSQL-only.
//! On SQLite nothing like LISTEN/NOTIFY exists: in (c) the submitter wakes the in-process
//! workers itself, as an embedding application would.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tasker_core::events;
use tasker_core::fixtures;
use tasker_core::template::Template;
use tasker_engine::executor::Executor;
use tasker_engine::testing::InProcessExecutor;
use tasker_engine::{EventBus, WorkerConfig};
use tasker_runtime::{Node, WasmExecutor, WasmHookRunner, spawn_deliverer};
use tasker_sandbox::{Sandbox, SandboxConfig};
use tasker_store::{AnyStore, NewTask, PgStore, SqliteStore, Store, TaskId};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[path = "engine/telemetry.rs"]
mod telemetry;

const BENCH_DB: &str = "tasker_bench";

/// The WASM no-op plugin, as staged by scripts/build-plugins.sh.
const WASM_NOOP: &str = "noop@0.1.0";

/// Read connections of the SQLite store (writes always go through its one writer).
const SQLITE_READERS: u32 = 4;

/// One no-op step per task; with `keyed`, a limit of 1 per concurrency key `/k`.
fn single(keyed: bool) -> Template {
    let (name, conc) = if keyed {
        ("keyed", "concurrency: { key: /k, limit: 1 }\n")
    } else {
        ("single", "")
    };
    Template::from_yaml(&format!(
        "namespace: bench\nname: {name}\nversion: 1.0.0\n{conc}steps:\n  - {{name: only, handler: {WASM_NOOP}}}\n"
    ))
    .expect("valid")
}

fn fan(width: usize) -> Template {
    let mut yaml = format!("namespace: bench\nname: fan_{width}\nversion: 1.0.0\nsteps:\n");
    for i in 0..width {
        yaml.push_str(&format!("  - {{name: s{i:03}, handler: {WASM_NOOP}}}\n"));
    }
    Template::from_yaml(&yaml).expect("valid")
}

/// Which executor a measurement uses.
#[derive(Clone)]
enum Exec {
    InProcess,
    Wasm(Sandbox),
}

impl Exec {
    fn label(&self) -> &'static str {
        match self {
            Exec::InProcess => "in-process",
            Exec::Wasm(_) => "wasm",
        }
    }
}

fn repo_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn wasm_sandbox() -> Result<Sandbox> {
    let root = repo_root();
    let dir = root.join("plugins/dist");
    anyhow::ensure!(
        dir.join(format!("{}.wasm", WASM_NOOP)).is_file(),
        "no {WASM_NOOP} in {}: run scripts/build-plugins.sh first",
        dir.display()
    );
    let mut cfg = SandboxConfig::new(dir);
    let cache = root.join("target/tmp/bench-cache");
    std::fs::create_dir_all(&cache)?;
    cfg.cache_dir = Some(cache);
    let (sandbox, _) = Sandbox::new(cfg).await?;
    Ok(sandbox)
}

type Started = (
    Arc<tasker_engine::worker::WorkerStats>,
    Arc<Notify>,
    JoinHandle<()>,
);

fn start_worker<S: Store + 'static>(
    exec: &Exec,
    store: Arc<S>,
    listen: Option<PgPool>,
    bus: EventBus,
    cfg: WorkerConfig,
    stop: CancellationToken,
) -> Started {
    fn start<S: Store + 'static, E: Executor>(
        mut node: Node<S, E>,
        listen: Option<PgPool>,
        stop: CancellationToken,
    ) -> Started {
        if let Some(pool) = listen {
            node = node.with_listener(pool);
        }
        let node = node.start(stop);
        let stats = node.stats().clone();
        let wake = node.wake_handle();
        let h = tokio::spawn(async move {
            node.join().await;
        });
        (stats, wake, h)
    }
    match exec {
        Exec::InProcess => start(
            Node::new(store, InProcessExecutor::new(), cfg).with_bus(bus),
            listen,
            stop,
        ),
        Exec::Wasm(sb) => start(
            Node::new(store, WasmExecutor::new(sb.clone()), cfg).with_bus(bus),
            listen,
            stop,
        ),
    }
}

/// What the shared measurements need from a store backend beyond the `Store` trait.
trait BenchBackend {
    type S: Store + Clone + Into<AnyStore> + 'static;
    const NAME: &'static str;
    /// No cross-process wake-up exists: whoever submits must wake the workers itself.
    const SUBMIT_WAKES: bool;

    /// A fresh, empty, migrated database, and a store on it for setup and checks.
    async fn fresh(&self) -> Result<Self::S>;

    /// The store one worker uses (PostgreSQL: its own pool; SQLite: the shared store).
    async fn worker_store(&self, setup: &Self::S) -> Result<Arc<Self::S>>;

    /// `tasks` new tasks of `template`, all ready to run (or, with `keys`, in the lines of
    /// that many concurrency keys: context `{"k": i % keys}`). Returns the newest task's id.
    async fn backlog(
        &self,
        setup: &Self::S,
        template: &Template,
        tasks: usize,
        keys: Option<usize>,
    ) -> Result<TaskId>;

    /// Whether hook deliveries are still pending, cheaply where the backend can tell (the
    /// drain wait polls it; `Store::hook_counts` reads the whole outbox). `None`: ask
    /// `hook_counts`.
    async fn deliveries_pending(&self, _setup: &Self::S) -> Result<Option<bool>> {
        Ok(None)
    }

    /// (transactions, WAL bytes) so far, where the backend reports them.
    async fn counters(&self, _setup: &Self::S) -> Result<Option<(i64, i64)>> {
        Ok(None)
    }

    /// The database whose NOTIFYs wake a worker when another process makes steps ready.
    fn listen_pool(&self, _worker: &Self::S) -> Option<PgPool> {
        None
    }

    /// (server µs, client round trip µs) of the raw readiness function, where there is one.
    async fn server_readiness(
        &self,
        _setup: &Self::S,
        _task: TaskId,
        _n: usize,
    ) -> Result<Option<(f64, f64)>> {
        Ok(None)
    }

    async fn close(&self, setup: Self::S);
}

struct Pg {
    admin: PgPool,
    opts: PgConnectOptions,
}

impl Pg {
    async fn pool(&self, n: u32) -> Result<PgPool> {
        Ok(PgStore::pool_options(n)
            .connect_with(self.opts.clone().database(BENCH_DB))
            .await?)
    }

    async fn drop_db(&self) -> Result<()> {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"))
            .execute(&self.admin)
            .await?;
        Ok(())
    }

    async fn print_settings(&self) -> Result<()> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN
             ('server_version', 'shared_buffers', 'synchronous_commit', 'fsync', 'wal_level',
              'max_connections', 'work_mem', 'max_wal_size', 'checkpoint_timeout') ORDER BY name",
        )
        .fetch_all(&self.admin)
        .await?;
        let s: Vec<String> = rows.iter().map(|(n, v)| format!("{n}={v}")).collect();
        println!("PostgreSQL settings: {}", s.join(", "));
        Ok(())
    }
}

impl BenchBackend for Pg {
    type S = PgStore;
    const NAME: &'static str = "postgres";
    const SUBMIT_WAKES: bool = false;

    async fn fresh(&self) -> Result<PgStore> {
        self.drop_db().await?;
        sqlx::query(&format!("CREATE DATABASE {BENCH_DB}"))
            .execute(&self.admin)
            .await?;
        let pool = self.pool(4).await?;
        tasker_store::MIGRATOR.run(&pool).await?;
        Ok(PgStore::new(pool))
    }

    /// Its connections are open: a worker uses up to three at once (claim, record, sweep).
    async fn worker_store(&self, _setup: &PgStore) -> Result<Arc<PgStore>> {
        let pool = self.pool(4).await?;
        let open = futures::future::try_join_all((0..3).map(|_| pool.acquire())).await?;
        drop(open);
        Ok(Arc::new(PgStore::new(pool)))
    }

    /// One `create_task` statement per 1,000 tasks, then VACUUM ANALYZE.
    async fn backlog(
        &self,
        setup: &PgStore,
        template: &Template,
        tasks: usize,
        keys: Option<usize>,
    ) -> Result<TaskId> {
        setup.register_template(template).await?;
        let pool = setup.pool();
        let mut left = tasks;
        while left > 0 {
            let n = left.min(1_000);
            sqlx::query(
                "SELECT create_task($1, CASE WHEN $3 > 0 THEN jsonb_build_object('k', g % $3) \
                 ELSE '{}'::jsonb END) FROM generate_series(1, $2) g",
            )
            .bind(template.key())
            .bind(n as i32)
            .bind(keys.unwrap_or(0) as i32)
            .execute(pool)
            .await?;
            left -= n;
        }
        sqlx::query("VACUUM ANALYZE").execute(pool).await?;
        let (id,): (i64,) = sqlx::query_as("SELECT max(id) FROM tasks")
            .fetch_one(pool)
            .await?;
        Ok(TaskId::new(id))
    }

    /// One probe of the pending-rows index.
    async fn deliveries_pending(&self, setup: &PgStore) -> Result<Option<bool>> {
        let pending: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM hook_outbox WHERE state = 'pending')")
                .fetch_one(setup.pool())
                .await?;
        Ok(Some(pending))
    }

    async fn counters(&self, setup: &PgStore) -> Result<Option<(i64, i64)>> {
        // Let the statistics collector settle, then force a fresh snapshot for this session.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let pool = setup.pool();
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(pool)
            .await?;
        let (xacts,): (i64,) = sqlx::query_as(
            "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(pool)
        .await?;
        let (lsn,): (i64,) =
            sqlx::query_as("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
                .fetch_one(pool)
                .await?;
        Ok(Some((xacts, lsn)))
    }

    fn listen_pool(&self, worker: &PgStore) -> Option<PgPool> {
        Some(worker.pool().clone())
    }

    async fn server_readiness(
        &self,
        setup: &PgStore,
        task_id: TaskId,
        n: usize,
    ) -> Result<Option<(f64, f64)>> {
        let pool = setup.pool();
        sqlx::query(
            "CREATE OR REPLACE FUNCTION tasker_bench_time(p_task bigint) RETURNS float8 LANGUAGE plpgsql AS $$
             DECLARE t0 timestamptz; n int;
             BEGIN
               t0 := clock_timestamp();
               SELECT count(*) INTO n FROM get_step_readiness_status(p_task);
               RETURN extract(epoch FROM clock_timestamp() - t0) * 1e6;
             END $$",
        )
        .execute(pool)
        .await?;
        // A PL/pgSQL loop times each call on the server, without network round trips.
        let mut micros: Vec<f64> = sqlx::query_scalar(
            "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < $2)
             SELECT tasker_bench_time($1) FROM r",
        )
        .bind(task_id)
        .bind(n as i32)
        .fetch_all(pool)
        .await?;
        micros.sort_by(f64::total_cmp);
        let median = micros[micros.len() / 2];
        let mut client = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let _rows: Vec<(i64,)> =
                sqlx::query_as("SELECT step_id FROM get_step_readiness_status($1)")
                    .bind(task_id)
                    .fetch_all(pool)
                    .await?;
            client.push(t.elapsed().as_secs_f64() * 1e6);
        }
        client.sort_by(f64::total_cmp);
        Ok(Some((median, client[client.len() / 2])))
    }

    async fn close(&self, setup: PgStore) {
        setup.pool().close().await;
    }
}

/// The embedded store in a file of its own, recreated for each measurement.
struct Lite {
    path: PathBuf,
}

impl Lite {
    /// The database, its WAL and shared memory, and the store's migration lock file.
    fn remove_files(&self) -> Result<()> {
        for suffix in ["", "-wal", "-shm", ".lock"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", p.display()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn print_settings(&self) -> Result<()> {
        let store = self.fresh().await?;
        // Per-connection pragmas: read them on the writer, which runs every write.
        let w = store.writer();
        let version: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(w)
            .await?;
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(w)
            .await?;
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(w)
            .await?;
        let page: i64 = sqlx::query_scalar("PRAGMA page_size").fetch_one(w).await?;
        let cache: i64 = sqlx::query_scalar("PRAGMA cache_size").fetch_one(w).await?;
        let ckpt: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(w)
            .await?;
        let sync = match sync {
            0 => "OFF",
            1 => "NORMAL",
            2 => "FULL",
            3 => "EXTRA",
            _ => "?",
        };
        println!(
            "SQLite settings: version={version}, journal_mode={journal}, synchronous={sync}, \
             page_size={page}, cache_size={cache}, wal_autocheckpoint={ckpt} pages, \
             1 writer connection (BEGIN IMMEDIATE), {SQLITE_READERS} readers, 2 workers share \
             one store in this process, file {}",
            self.path.display()
        );
        println!(
            "    durability differs: synchronous=NORMAL in WAL mode syncs at checkpoints, not at \
             each commit (a power loss can drop the last commits, a crash of the process \
             cannot); PostgreSQL's synchronous_commit=on flushes each commit"
        );
        self.close(store).await;
        Ok(())
    }
}

impl BenchBackend for Lite {
    type S = SqliteStore;
    const NAME: &'static str = "sqlite";
    const SUBMIT_WAKES: bool = true;

    async fn fresh(&self) -> Result<SqliteStore> {
        self.remove_files()?;
        Ok(SqliteStore::open(&self.path, SQLITE_READERS).await?)
    }

    async fn worker_store(&self, setup: &SqliteStore) -> Result<Arc<SqliteStore>> {
        Ok(Arc::new(setup.clone()))
    }

    /// Through `Store::create_task` (SQLite has no server-side function to batch them), then
    /// a WAL checkpoint so the measurement starts from a compact file.
    async fn backlog(
        &self,
        setup: &SqliteStore,
        template: &Template,
        tasks: usize,
        keys: Option<usize>,
    ) -> Result<TaskId> {
        setup.register_template(template).await?;
        let req = |i: usize| {
            let ctx = keys.map_or_else(|| json!({}), |k| json!({"k": i % k}));
            NewTask::new(template.key(), ctx)
        };
        let newest = futures::stream::iter(0..tasks)
            .map(|i| async move { setup.create_task(&req(i), Utc::now()).await })
            .buffered(4)
            .try_fold(TaskId::new(0), |m, c| async move { Ok(m.max(c.task_id)) })
            .await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(setup.writer())
            .await?;
        Ok(newest)
    }

    async fn close(&self, setup: SqliteStore) {
        // The workers' clones share these pools: this closes the file for the next fresh one.
        setup.writer().close().await;
        setup.reader().close().await;
    }
}

fn worker_config(id: &str) -> WorkerConfig {
    WorkerConfig {
        id: id.to_owned(),
        concurrency: 256,
        claim_batch: 128,
        record_batch: 256,
        lease: Duration::from_secs(60),
        heartbeat_every: Duration::from_secs(20),
        sweep_every: Duration::from_secs(10),
        poll_every: Duration::from_millis(200),
        shutdown_grace: Duration::from_secs(10),
        only_task: None,
    }
}

/// " (0.52x PostgreSQL)" when there is a PostgreSQL figure to compare with.
fn vs_pg(x: f64, pg: Option<f64>) -> String {
    pg.map(|p| format!("  ({:.2}x PostgreSQL)", x / p))
        .unwrap_or_default()
}

/// SQLite / PostgreSQL figures of this run, printed together at the end.
#[derive(Default)]
struct Summary(Vec<(String, f64, f64, &'static str)>);

impl Summary {
    fn add(&mut self, what: impl Into<String>, pg: f64, lite: f64, unit: &'static str) {
        self.0.push((what.into(), pg, lite, unit));
    }

    fn print(&self) {
        println!("SQLite vs PostgreSQL, both measured in this run:");
        for (what, pg, lite, unit) in &self.0 {
            println!(
                "    {what:<52} postgres {pg:>9.1} {unit:<7} sqlite {lite:>9.1} {unit:<7} {:>5.2}x",
                lite / pg
            );
        }
    }
}

/// (a) + (b): two workers drain a ready backlog. Returns steps/s.
/// `through_any`: the workers use the store as `AnyStore` (as the binary does: its calls
/// are metered and traced), not the backend's own type.
async fn throughput<B: BenchBackend>(
    b: &B,
    steps: usize,
    exec: &Exec,
    pg: Option<f64>,
    through_any: bool,
) -> Result<f64> {
    let width = 50;
    let label = if through_any { "f" } else { "a" };
    drain(
        b,
        &fan(width),
        steps / width,
        None,
        exec,
        pg,
        through_any,
        label,
    )
    .await
}

/// Two workers drain `tasks` tasks of `template` (of `keys` concurrency keys, if set).
/// Returns steps/s; `label` names the section in the printed line.
#[allow(clippy::too_many_arguments)]
async fn drain<B: BenchBackend>(
    b: &B,
    template: &Template,
    tasks: usize,
    keys: Option<usize>,
    exec: &Exec,
    pg: Option<f64>,
    through_any: bool,
    label: &str,
) -> Result<f64> {
    let steps = tasks * template.steps.len();
    let setup = b.fresh().await?;
    b.backlog(&setup, template, tasks, keys).await?;
    let before = b.counters(&setup).await?;

    let stop = CancellationToken::new();
    let mut stats = Vec::new();
    let mut runs = Vec::new();
    // The workers' connections are open before the clock starts, as a running worker's are.
    let mut stores = Vec::new();
    for _ in 0..2 {
        stores.push(b.worker_store(&setup).await?);
    }
    let started = Instant::now();
    for (i, store) in stores.into_iter().enumerate() {
        let cfg = worker_config(&format!("bench-{i}"));
        let (st, _, h) = if through_any {
            let any: AnyStore = (*store).clone().into();
            start_worker(
                exec,
                Arc::new(any),
                None,
                EventBus::default(),
                cfg,
                stop.clone(),
            )
        } else {
            start_worker(exec, store, None, EventBus::default(), cfg, stop.clone())
        };
        stats.push(st);
        runs.push(h);
    }
    loop {
        let done: u64 = stats.iter().map(|s| s.totals().completed).sum();
        if done as usize >= steps {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    stop.cancel();
    for r in runs {
        r.await?;
    }
    let after = b.counters(&setup).await?;
    // The figure counts only if every step really ended complete in the store.
    let h = setup.health_counts(Utc::now()).await?;
    anyhow::ensure!(
        h.complete_steps as usize == steps && h.complete_tasks == h.total_tasks,
        "{}: not every step completed: {h:?}",
        B::NAME
    );
    b.close(setup).await;
    let per_s = steps as f64 / elapsed.as_secs_f64();
    let keyed = keys.map(|k| format!(", {k} keys")).unwrap_or_default();
    println!(
        "({label}) throughput, {:<8} {:<10} {steps:>7} steps{keyed}, 2 workers: {per_s:>9.0} steps/s ({:.2} s){}",
        B::NAME,
        exec.label(),
        elapsed.as_secs_f64(),
        vs_pg(per_s, pg)
    );
    if let (Some((x0, w0)), Some((x1, w1)), false) = (before, after, through_any) {
        println!(
            "(b)   transactions/step: {:.4}   WAL bytes/step: {:.0}",
            (x1 - x0 - 1) as f64 / steps as f64,
            (w1 - w0) as f64 / steps as f64
        );
    }
    Ok(per_s)
}

/// (e): WASM no-op steps on 2 workers, each with its hook delivery loop, with or without
/// one no-op hook (`hook_noop@0.1.0`) on `step.*`. Returns steps/s; with the hook, also
/// how long the deliveries took to drain after the last step. With `deliver_during` false
/// the delivery loops start only after the last step: the workflow then pays only for
/// writing the outbox, not for delivering concurrently on the same cores.
async fn hook_cost<B: BenchBackend>(
    b: &B,
    steps: usize,
    sandbox: &Sandbox,
    hooked: bool,
    deliver_during: bool,
    pg: Option<f64>,
) -> Result<f64> {
    let width = 50;
    let mut yaml = format!("namespace: bench\nname: fan_hooks_{hooked}\nversion: 1.0.0\nsteps:\n");
    for i in 0..width {
        yaml.push_str(&format!("  - {{name: s{i:03}, handler: {WASM_NOOP}}}\n"));
    }
    if hooked {
        yaml.push_str("hooks:\n  - {component: hook_noop@0.1.0, events: [step.*]}\n");
    }
    let template = Template::from_yaml(&yaml).expect("valid");
    let setup = b.fresh().await?;
    b.backlog(&setup, &template, steps / width, None).await?;
    tokio::time::sleep(Duration::from_millis(600)).await;

    let stop = CancellationToken::new();
    let mut stats = Vec::new();
    let mut runs = Vec::new();
    let started = Instant::now();
    let mut stores = Vec::new();
    for i in 0..2 {
        let store = b.worker_store(&setup).await?;
        let any: Arc<AnyStore> = Arc::new((*store).clone().into());
        let cfg = worker_config(&format!("hooks-{i}"));
        if deliver_during {
            runs.push(spawn_deliverer(
                any,
                Arc::new(WasmHookRunner::new(sandbox.clone())),
                &cfg,
                stop.clone(),
            ));
        } else {
            stores.push((any, cfg.clone()));
        }
        let (st, _, h) = start_worker(
            &Exec::Wasm(sandbox.clone()),
            store,
            None,
            EventBus::default(),
            cfg,
            stop.clone(),
        );
        stats.push(st);
        runs.push(h);
    }
    loop {
        let done: u64 = stats.iter().map(|s| s.totals().completed).sum();
        if done as usize >= steps {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    for (store, cfg) in stores {
        runs.push(spawn_deliverer(
            store,
            Arc::new(WasmHookRunner::new(sandbox.clone())),
            &cfg,
            stop.clone(),
        ));
    }
    loop {
        if b.deliveries_pending(&setup).await? == Some(true) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let counts = setup.hook_counts(None).await?;
        if counts.iter().all(|c| c.pending == 0) {
            if let Some(c) = counts.first() {
                println!(
                    "(e)   {} hook deliveries done {:.2} s after the last step ({:.0} deliveries/s overall)",
                    c.delivered,
                    started.elapsed().as_secs_f64() - elapsed.as_secs_f64(),
                    c.delivered as f64 / started.elapsed().as_secs_f64()
                );
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    for r in runs {
        r.await?;
    }
    b.close(setup).await;
    let per_s = steps as f64 / elapsed.as_secs_f64();
    println!(
        "(e) throughput, {:<8} wasm, {steps:>7} ready steps, 2 workers, {}: {per_s:>9.0} steps/s ({:.2} s){}",
        B::NAME,
        match (hooked, deliver_during) {
            (false, _) => "no hooks                                 ",
            (true, true) => "one no-op hook on step.*                 ",
            (true, false) => "one no-op hook on step.*, delivered after",
        },
        elapsed.as_secs_f64(),
        vs_pg(per_s, pg)
    );
    Ok(per_s)
}

/// The three (e) figures: no hooks, one hook delivered during, one delivered after.
async fn hook_costs<B: BenchBackend>(
    b: &B,
    steps: usize,
    sandbox: &Sandbox,
    pg: Option<[f64; 3]>,
) -> Result<[f64; 3]> {
    let no_hooks = hook_cost(b, steps, sandbox, false, true, pg.map(|p| p[0])).await?;
    let one_hook = hook_cost(b, steps, sandbox, true, true, pg.map(|p| p[1])).await?;
    let outbox_only = hook_cost(b, steps, sandbox, true, false, pg.map(|p| p[2])).await?;
    println!(
        "    {}: one no-op hook on every step event / no hooks: {:.2}x throughput \
         ({:.2}x when its deliveries wait until the steps are done: the outbox alone)",
        B::NAME,
        one_hook / no_hooks,
        outbox_only / no_hooks
    );
    Ok([no_hooks, one_hook, outbox_only])
}

/// (f): steps/s with observability off and on (medians of alternating rounds).
async fn telemetry_cost<B: BenchBackend>(b: &B, steps: usize, exec: &Exec) -> Result<(f64, f64)> {
    let (mut off, mut on) = (Vec::new(), Vec::new());
    // A first run warms the database and the plugin cache; it is not counted.
    telemetry::set(false);
    println!("    warm-up");
    throughput(b, steps, exec, None, true).await?;
    for round in 0..5 {
        // Alternate which goes first, so neither always runs on a warmer machine.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for enabled in order {
            telemetry::set(enabled);
            println!("    telemetry {}", if enabled { "on" } else { "off" });
            let x = throughput(b, steps, exec, None, true).await?;
            if enabled { on.push(x) } else { off.push(x) }
        }
    }
    telemetry::set(false);
    let (off, on) = (telemetry::median(off), telemetry::median(on));
    println!(
        "(f) observability on / off, {:<8} {} {steps} steps: {on:.0} / {off:.0} steps/s = {:.3}x (goal >= 0.95x)",
        B::NAME,
        exec.label(),
        on / off
    );
    Ok((off, on))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// (c): submit a linear 4-step task and wait for its completion event, one at a time.
/// Returns the P50 and P99 in ms.
async fn latency<B: BenchBackend>(
    b: &B,
    runs: usize,
    exec: &Exec,
    pg: Option<(f64, f64)>,
) -> Result<(f64, f64)> {
    let setup = b.fresh().await?;
    let template = fixtures::linear(4, WASM_NOOP);
    setup.register_template(&template).await?;
    let bus = EventBus::new(1 << 16);
    let stop = CancellationToken::new();
    let mut handles = Vec::new();
    let mut wakes = Vec::new();
    for i in 0..2 {
        let worker_store = b.worker_store(&setup).await?;
        let (_, wake, h) = start_worker(
            exec,
            worker_store.clone(),
            b.listen_pool(&worker_store),
            bus.clone(),
            worker_config(&format!("lat-{i}")),
            stop.clone(),
        );
        handles.push(h);
        wakes.push(wake);
    }
    let mut done = bus.subscribe(&[events::TASK_COMPLETED]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let id = setup
            .create_task(&NewTask::new(template.key(), json!({})), Utc::now())
            .await?
            .task_id;
        if B::SUBMIT_WAKES {
            for w in &wakes {
                w.notify_one();
            }
        }
        loop {
            let ev = done.recv().await.context("bus closed")?;
            if ev.task_id == Some(id) {
                break;
            }
        }
        samples.push(t.elapsed());
    }
    stop.cancel();
    for h in handles {
        h.await?;
    }
    b.close(setup).await;
    samples.sort();
    let p50 = percentile(&samples, 0.5).as_secs_f64() * 1e3;
    let p99 = percentile(&samples, 0.99).as_secs_f64() * 1e3;
    let ratio = pg
        .map(|(p, q)| format!("  ({:.2}x / {:.2}x PostgreSQL)", p50 / p, p99 / q))
        .unwrap_or_default();
    println!(
        "(c) submit-to-complete, {:<8} {:<10} linear 4 steps, idle: P50 {p50:.2} ms  P99 {p99:.2} ms  ({runs} runs){ratio}",
        B::NAME,
        exec.label(),
    );
    Ok((p50, p99))
}

/// Median client time of `Store::readiness` for one task, in µs.
async fn store_readiness_time<S: Store>(store: &S, task_id: TaskId, n: usize) -> Result<f64> {
    let mut micros = Vec::with_capacity(n);
    for _ in 0..n {
        let now = Utc::now();
        let t = Instant::now();
        let rows = store.readiness(task_id, None, now).await?;
        micros.push(t.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(rows.len() == 10, "task {task_id}: {} rows", rows.len());
    }
    micros.sort_by(f64::total_cmp);
    Ok(micros[micros.len() / 2])
}

/// (d): readiness of one 10-step task as the table grows from 10k to `big` step rows.
/// Returns the `Store::readiness` medians (µs) at each size.
async fn readiness<B: BenchBackend>(b: &B, big: usize, pg: Option<&[f64]>) -> Result<Vec<f64>> {
    let setup = b.fresh().await?;
    let template = fixtures::linear(10, fixtures::NOOP);
    let mut rows = 0usize;
    let mut server_first: Option<f64> = None;
    let mut out: Vec<f64> = Vec::new();
    for (i, target) in [10_000usize, big].into_iter().enumerate() {
        let task_id = b
            .backlog(&setup, &template, (target - rows) / 10, None)
            .await?;
        rows = target;
        if let Some((server, client)) = b.server_readiness(&setup, task_id, 2_000).await? {
            let ratio = server_first.map(|f| format!("  ({:.2}x the 10k figure)", server / f));
            server_first.get_or_insert(server);
            println!(
                "(d) get_step_readiness_status, 10-step task, {target:>8} step rows: server {server:>6.1} µs, client round trip {client:>6.1} µs{}",
                ratio.unwrap_or_default()
            );
        }
        let t = store_readiness_time(&setup, task_id, 2_000).await?;
        let growth = out
            .first()
            .map(|f| format!("  ({:.2}x the 10k figure)", t / f))
            .unwrap_or_default();
        println!(
            "(d) Store::readiness, {:<8} 10-step task, {target:>8} step rows: {t:>6.1} µs{growth}{}",
            B::NAME,
            vs_pg(t, pg.and_then(|p| p.get(i).copied()))
        );
        out.push(t);
    }
    b.close(setup).await;
    Ok(out)
}

fn main() -> Result<()> {
    // SAFETY: single-threaded here, before the runtime starts.
    unsafe { std::env::remove_var("RUST_BACKTRACE") };
    let quick = std::env::args().any(|a| a == "--quick");
    let only: Option<String> =
        std::env::args().find_map(|a| a.strip_prefix("--only=").map(str::to_owned));
    if let Some(bad) = only
        .as_deref()
        .and_then(|o| o.chars().find(|c| !"acdefg".contains(*c)))
    {
        anyhow::bail!("--only: unknown section '{bad}' (sections are a, c, d, e, f, g)");
    }
    let run = move |section: char| only.as_deref().is_none_or(|o| o.contains(section));
    // Global, and needed before the runtime starts: installed (switched off) only for (f).
    let observability = if run('f') {
        Some(telemetry::install()?)
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let opts: PgConnectOptions = url.parse()?;
        let opts = opts.disable_statement_logging();
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await
            .with_context(|| format!("connecting to {url}"))?;
        println!(
            "tasker engine benchmark ({} mode), 2 tokio threads, no-op handlers",
            if quick { "quick" } else { "full" }
        );
        let pg = Pg { admin, opts };
        let lite = Lite {
            path: repo_root().join("target/tmp/bench-sqlite/tasker.db"),
        };
        pg.print_settings().await?;
        lite.print_settings().await?;
        let (small, large, lat_runs, big) = if quick {
            (5_000, 20_000, 50, 100_000)
        } else {
            (20_000, 200_000, 500, 1_000_000)
        };
        let sandbox = wasm_sandbox().await?;
        let wasm = Exec::Wasm(sandbox.clone());
        let mut sum = Summary::default();
        let observability = observability
            .map(|(export, listener)| telemetry::serve_receiver(listener).map(|()| export));
        let _export = observability.transpose()?;

        if run('a') {
            let base_small = throughput(&pg, small, &Exec::InProcess, None, false).await?;
            let lite_small =
                throughput(&lite, small, &Exec::InProcess, Some(base_small), false).await?;
            sum.add(
                format!("(a) in-process, {small} steps"),
                base_small,
                lite_small,
                "steps/s",
            );
            let base_large = throughput(&pg, large, &Exec::InProcess, None, false).await?;
            let lite_large =
                throughput(&lite, large, &Exec::InProcess, Some(base_large), false).await?;
            sum.add(
                format!("(a) in-process, {large} steps"),
                base_large,
                lite_large,
                "steps/s",
            );
            println!(
                "    flatness: {large} vs {small} backlog = {:.2}x on postgres, {:.2}x on sqlite",
                base_large / base_small,
                lite_large / lite_small
            );
            let wasm_small = throughput(&pg, small, &wasm, None, false).await?;
            let lite_wasm_small = throughput(&lite, small, &wasm, Some(wasm_small), false).await?;
            sum.add(
                format!("(a) wasm, {small} steps"),
                wasm_small,
                lite_wasm_small,
                "steps/s",
            );
            println!(
                "    wasm / in-process throughput at {small}: {:.0}% on postgres, {:.0}% on sqlite",
                100.0 * wasm_small / base_small,
                100.0 * lite_wasm_small / lite_small
            );
        }
        if run('e') {
            let pg_hooks = hook_costs(&pg, small, &sandbox, None).await?;
            let lite_hooks = hook_costs(&lite, small, &sandbox, Some(pg_hooks)).await?;
            for (i, what) in ["no hooks", "one hook", "one hook, delivered after"]
                .iter()
                .enumerate()
            {
                sum.add(
                    format!("(e) wasm, {small} steps, {what}"),
                    pg_hooks[i],
                    lite_hooks[i],
                    "steps/s",
                );
            }
        }

        if run('f') {
            let (pg_off, pg_on) = telemetry_cost(&pg, small, &wasm).await?;
            let (lite_off, lite_on) = telemetry_cost(&lite, small, &wasm).await?;
            sum.add(
                format!("(f) wasm, {small} steps, observability off"),
                pg_off,
                lite_off,
                "steps/s",
            );
            sum.add(
                format!("(f) wasm, {small} steps, observability on"),
                pg_on,
                lite_on,
                "steps/s",
            );
            println!(
                "    observability on / off: {:.3}x on postgres, {:.3}x on sqlite (goal >= 0.95x)",
                pg_on / pg_off,
                lite_on / lite_off
            );
        }

        if run('g') {
            // 1,000 keys, limit 1: every task waits in its key's line and is admitted when
            // the one before it ends, against the same single-step tasks without a key.
            let tasks = small;
            let mut fig = [[0.0; 2]; 2];
            for (i, keyed) in [false, true].into_iter().enumerate() {
                let t = single(keyed);
                let k = keyed.then_some(1_000);
                let p = drain(&pg, &t, tasks, k, &Exec::InProcess, None, false, "g").await?;
                let l = drain(&lite, &t, tasks, k, &Exec::InProcess, Some(p), false, "g").await?;
                fig[i] = [p, l];
                let what = if keyed {
                    "1000 keys, limit 1"
                } else {
                    "no keys"
                };
                sum.add(
                    format!("(g) in-process, {tasks} tasks, {what}"),
                    p,
                    l,
                    "steps/s",
                );
            }
            println!(
                "    keys / no keys: {:.2}x on postgres, {:.2}x on sqlite (goal >= 0.8x)",
                fig[1][0] / fig[0][0],
                fig[1][1] / fig[0][1]
            );
        }

        if run('c') {
            let base_lat = latency(&pg, lat_runs, &Exec::InProcess, None).await?;
            let lite_lat = latency(&lite, lat_runs, &Exec::InProcess, Some(base_lat)).await?;
            let wasm_lat = latency(&pg, lat_runs, &wasm, None).await?;
            let lite_wasm_lat = latency(&lite, lat_runs, &wasm, Some(wasm_lat)).await?;
            println!(
                "    wasm / in-process P50 latency: {:.2}x on postgres, {:.2}x on sqlite",
                wasm_lat.0 / base_lat.0,
                lite_wasm_lat.0 / lite_lat.0
            );
            sum.add("(c) in-process P50", base_lat.0, lite_lat.0, "ms");
            sum.add("(c) in-process P99", base_lat.1, lite_lat.1, "ms");
            sum.add("(c) wasm P50", wasm_lat.0, lite_wasm_lat.0, "ms");
            sum.add("(c) wasm P99", wasm_lat.1, lite_wasm_lat.1, "ms");
        }

        if run('d') {
            let pg_ready = readiness(&pg, big, None).await?;
            pg.drop_db().await?;
            let lite_ready = readiness(&lite, big, Some(&pg_ready)).await?;
            for (i, rows) in [10_000, big].iter().enumerate() {
                sum.add(
                    format!("(d) Store::readiness, {rows} step rows"),
                    pg_ready[i],
                    lite_ready[i],
                    "µs",
                );
            }
        }
        lite.remove_files()?;
        sum.print();
        Ok(())
    })
}
