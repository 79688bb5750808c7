//! Engine benchmark on PostgreSQL (a bench binary, not a timed test).
//!
//! `cargo bench -p tasker-cli --bench engine` (add `-- --quick` for smaller sizes).
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
//!      ratio against the same workflow without hooks, both measured in this run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tasker_cli::wasm::WasmExecutor;
use tasker_core::events;
use tasker_core::fixtures;
use tasker_core::template::Template;
use tasker_engine::executor::Executor;
use tasker_engine::testing::InProcessExecutor;
use tasker_engine::{EventBus, Worker, WorkerConfig};
use tasker_sandbox::{Sandbox, SandboxConfig};
use tasker_store::{NewTask, PgStore, Store};
use tokio_util::sync::CancellationToken;

const BENCH_DB: &str = "tasker_bench";

/// The WASM no-op plugin, as staged by scripts/build-plugins.sh.
const WASM_NOOP: &str = "noop@0.1.0";

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

async fn wasm_sandbox() -> Result<Sandbox> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
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

fn spawn_worker<E: Executor>(
    store: Arc<PgStore>,
    exec: E,
    bus: EventBus,
    cfg: WorkerConfig,
    stop: CancellationToken,
) -> (
    Arc<tasker_engine::worker::WorkerStats>,
    Arc<tokio::sync::Notify>,
    tokio::task::JoinHandle<()>,
) {
    let w = Worker::new(store, Arc::new(exec), bus, cfg);
    let stats = w.stats();
    let wake = w.wake_handle();
    let h = tokio::spawn(async move {
        w.run(stop).await;
    });
    (stats, wake, h)
}

fn start_worker(
    exec: &Exec,
    store: Arc<PgStore>,
    bus: EventBus,
    cfg: WorkerConfig,
    stop: CancellationToken,
) -> (
    Arc<tasker_engine::worker::WorkerStats>,
    Arc<tokio::sync::Notify>,
    tokio::task::JoinHandle<()>,
) {
    match exec {
        Exec::InProcess => spawn_worker(store, InProcessExecutor::new(), bus, cfg, stop),
        Exec::Wasm(sb) => spawn_worker(store, WasmExecutor::new(sb.clone()), bus, cfg, stop),
    }
}

struct Bench {
    admin: PgPool,
    opts: PgConnectOptions,
}

impl Bench {
    async fn fresh_db(&self) -> Result<PgPool> {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"))
            .execute(&self.admin)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {BENCH_DB}"))
            .execute(&self.admin)
            .await?;
        let pool = self.pool(4).await?;
        tasker_store::MIGRATOR.run(&pool).await?;
        Ok(pool)
    }

    async fn pool(&self, n: u32) -> Result<PgPool> {
        Ok(PgPoolOptions::new()
            .max_connections(n)
            .connect_with(self.opts.clone().database(BENCH_DB))
            .await?)
    }

    async fn drop_db(&self) -> Result<()> {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"))
            .execute(&self.admin)
            .await?;
        Ok(())
    }
}

/// Creates `tasks` tasks of `template` in one statement per 1,000.
async fn backlog(pool: &PgPool, template: &Template, tasks: usize) -> Result<()> {
    let store = PgStore::new(pool.clone());
    store.register_template(template).await?;
    let mut left = tasks;
    while left > 0 {
        let n = left.min(1_000);
        sqlx::query("SELECT create_task($1, '{}'::jsonb) FROM generate_series(1, $2)")
            .bind(template.key())
            .bind(n as i32)
            .execute(pool)
            .await?;
        left -= n;
    }
    sqlx::query("VACUUM ANALYZE").execute(pool).await?;
    Ok(())
}

async fn db_counters(pool: &PgPool) -> Result<(i64, i64)> {
    // pg_stat_database is updated when a backend reports; force it for our own session.
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(pool)
        .await?;
    let (xacts,): (i64,) = sqlx::query_as(
        "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await?;
    let (lsn,): (i64,) = sqlx::query_as("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
        .fetch_one(pool)
        .await?;
    Ok((xacts, lsn))
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
    }
}

/// (a) + (b): two worker pools drain a ready backlog. Returns steps/s.
async fn throughput(b: &Bench, steps: usize, exec: &Exec) -> Result<f64> {
    let width = 50;
    let pool = b.fresh_db().await?;
    backlog(&pool, &fan(width), steps / width).await?;
    // Let the statistics collector settle before the baseline.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (x0, w0) = db_counters(&pool).await?;

    let stop = CancellationToken::new();
    let mut stats = Vec::new();
    let mut runs = Vec::new();
    let started = Instant::now();
    for i in 0..2 {
        let store = Arc::new(PgStore::new(b.pool(4).await?));
        let (st, _, h) = start_worker(
            exec,
            store,
            EventBus::default(),
            worker_config(&format!("bench-{i}")),
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
    stop.cancel();
    for r in runs {
        r.await?;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (x1, w1) = db_counters(&pool).await?;
    pool.close().await;
    let per_s = steps as f64 / elapsed.as_secs_f64();
    println!(
        "(a) throughput, {:<10} {steps:>7} ready steps, 2 workers: {per_s:>9.0} steps/s ({:.2} s)",
        exec.label(),
        elapsed.as_secs_f64()
    );
    println!(
        "(b)   transactions/step: {:.4}   WAL bytes/step: {:.0}",
        (x1 - x0 - 1) as f64 / steps as f64,
        (w1 - w0) as f64 / steps as f64
    );
    Ok(per_s)
}

/// (e): WASM no-op steps on 2 worker pools, each with its hook delivery loop, with or without
/// one no-op hook (`hook_noop@0.1.0`) on `step.*`. Returns steps/s; with the hook, also
/// how long the deliveries took to drain after the last step. With `deliver_during` false
/// the delivery loops start only after the last step: the workflow then pays only for
/// writing the outbox, not for delivering concurrently on the same cores.
async fn hook_cost(
    b: &Bench,
    steps: usize,
    sandbox: &Sandbox,
    hooked: bool,
    deliver_during: bool,
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
    let pool = b.fresh_db().await?;
    backlog(&pool, &template, steps / width).await?;
    tokio::time::sleep(Duration::from_millis(600)).await;

    let stop = CancellationToken::new();
    let mut stats = Vec::new();
    let mut runs = Vec::new();
    let started = Instant::now();
    let mut stores = Vec::new();
    for i in 0..2 {
        let store = Arc::new(PgStore::new(b.pool(4).await?));
        let cfg = worker_config(&format!("hooks-{i}"));
        if deliver_during {
            runs.push(tasker_cli::hooks::spawn_deliverer(
                store.clone(),
                sandbox,
                &cfg,
                stop.clone(),
            ));
        } else {
            stores.push((store.clone(), cfg.clone()));
        }
        let (st, _, h) = start_worker(
            &Exec::Wasm(sandbox.clone()),
            store,
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
        runs.push(tasker_cli::hooks::spawn_deliverer(
            store,
            sandbox,
            &cfg,
            stop.clone(),
        ));
    }
    let store = PgStore::new(pool.clone());
    loop {
        let counts = store.hook_counts(None).await?;
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
    pool.close().await;
    let per_s = steps as f64 / elapsed.as_secs_f64();
    println!(
        "(e) throughput, wasm, {steps:>7} ready steps, 2 workers, {}: {per_s:>9.0} steps/s ({:.2} s)",
        match (hooked, deliver_during) {
            (false, _) => "no hooks                                 ",
            (true, true) => "one no-op hook on step.*                 ",
            (true, false) => "one no-op hook on step.*, delivered after",
        },
        elapsed.as_secs_f64()
    );
    Ok(per_s)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// (c): submit a linear 4-step task and wait for its completion event, one at a time.
/// Returns the P50 in ms.
async fn latency(b: &Bench, runs: usize, exec: &Exec) -> Result<f64> {
    let pool = b.fresh_db().await?;
    let template = fixtures::linear(4, WASM_NOOP);
    let store = PgStore::new(pool.clone());
    store.register_template(&template).await?;
    let bus = EventBus::new(1 << 16);
    let stop = CancellationToken::new();
    let mut handles = Vec::new();
    for i in 0..2 {
        let worker_store = PgStore::new(b.pool(4).await?);
        let listen = worker_store.pool().clone();
        let (_, wake, h) = start_worker(
            exec,
            Arc::new(worker_store),
            bus.clone(),
            worker_config(&format!("lat-{i}")),
            stop.clone(),
        );
        handles.push(tasker_engine::pg::spawn_ready_listener(
            listen,
            wake,
            stop.clone(),
        ));
        handles.push(h);
    }
    let mut done = bus.subscribe(&[events::TASK_COMPLETED]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let id = store
            .create_task(&NewTask::new(template.key(), json!({})), Utc::now())
            .await?
            .task_id;
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
    samples.sort();
    let p50 = percentile(&samples, 0.5).as_secs_f64() * 1e3;
    println!(
        "(c) submit-to-complete, {:<10} linear 4 steps, idle: P50 {p50:.2} ms  P99 {:.2} ms  ({runs} runs)",
        exec.label(),
        percentile(&samples, 0.99).as_secs_f64() * 1e3
    );
    pool.close().await;
    Ok(p50)
}

/// Server-side time of one `get_step_readiness_status` call, median of `n`.
async fn readiness_time(pool: &PgPool, task_id: i64, n: usize) -> Result<(f64, f64)> {
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
    Ok((median, client[client.len() / 2]))
}

/// (d): readiness of one 10-step task as the table grows from 10k to 1M step rows.
async fn readiness(b: &Bench, big: usize) -> Result<()> {
    let pool = b.fresh_db().await?;
    sqlx::query(
        "CREATE FUNCTION tasker_bench_time(p_task bigint) RETURNS float8 LANGUAGE plpgsql AS $$
         DECLARE t0 timestamptz; n int;
         BEGIN
           t0 := clock_timestamp();
           SELECT count(*) INTO n FROM get_step_readiness_status(p_task);
           RETURN extract(epoch FROM clock_timestamp() - t0) * 1e6;
         END $$",
    )
    .execute(&pool)
    .await?;
    let template = fixtures::linear(10, fixtures::NOOP);
    let mut rows = 0usize;
    let mut first: Option<f64> = None;
    for target in [10_000usize, big] {
        backlog(&pool, &template, (target - rows) / 10).await?;
        rows = target;
        let (task_id,): (i64,) = sqlx::query_as("SELECT max(id) FROM tasks")
            .fetch_one(&pool)
            .await?;
        let (server, client) = readiness_time(&pool, task_id, 2_000).await?;
        let ratio = first.map(|f| format!("  ({:.2}x the 10k figure)", server / f));
        first.get_or_insert(server);
        println!(
            "(d) get_step_readiness_status, 10-step task, {target:>8} step rows: server {server:>6.1} µs, client round trip {client:>6.1} µs{}",
            ratio.unwrap_or_default()
        );
    }
    pool.close().await;
    Ok(())
}

async fn print_settings(admin: &PgPool) -> Result<()> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN
         ('server_version', 'shared_buffers', 'synchronous_commit', 'fsync', 'wal_level',
          'max_connections', 'work_mem', 'max_wal_size', 'checkpoint_timeout') ORDER BY name",
    )
    .fetch_all(admin)
    .await?;
    let s: Vec<String> = rows.iter().map(|(n, v)| format!("{n}={v}")).collect();
    println!("PostgreSQL settings: {}", s.join(", "));
    Ok(())
}

fn main() -> Result<()> {
    // SAFETY: single-threaded here, before the runtime starts.
    unsafe { std::env::remove_var("RUST_BACKTRACE") };
    let quick = std::env::args().any(|a| a == "--quick");
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
        print_settings(&admin).await?;
        let b = Bench { admin, opts };
        let (small, large, lat_runs, big) = if quick {
            (5_000, 20_000, 50, 100_000)
        } else {
            (20_000, 200_000, 500, 1_000_000)
        };
        let sandbox = wasm_sandbox().await?;
        let wasm = Exec::Wasm(sandbox.clone());
        let base_small = throughput(&b, small, &Exec::InProcess).await?;
        let base_large = throughput(&b, large, &Exec::InProcess).await?;
        println!(
            "    flatness: {large} vs {small} backlog = {:.2}x",
            base_large / base_small
        );
        let wasm_small = throughput(&b, small, &wasm).await?;
        println!(
            "    wasm / in-process throughput at {small}: {:.0}%",
            100.0 * wasm_small / base_small
        );
        let no_hooks = hook_cost(&b, small, &sandbox, false, true).await?;
        let one_hook = hook_cost(&b, small, &sandbox, true, true).await?;
        let outbox_only = hook_cost(&b, small, &sandbox, true, false).await?;
        println!(
            "    one no-op hook on every step event / no hooks: {:.2}x throughput \
             ({:.2}x when its deliveries wait until the steps are done: the outbox alone)",
            one_hook / no_hooks,
            outbox_only / no_hooks
        );
        let base_lat = latency(&b, lat_runs, &Exec::InProcess).await?;
        let wasm_lat = latency(&b, lat_runs, &wasm).await?;
        println!(
            "    wasm / in-process P50 latency: {:.2}x",
            wasm_lat / base_lat
        );
        readiness(&b, big).await?;
        b.drop_db().await?;
        Ok(())
    })
}
