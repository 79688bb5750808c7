//! Retention benchmark on PostgreSQL (a bench binary, not a timed test): no-op step
//! throughput while the pruner deletes 1M finished step rows, against the same workload with
//! no pruning, side by side in one run (goal ≥ 0.9x; docs/store.md, "Retention").
//!
//! `cargo bench -p tasker-cli --bench prune` (`-- --quick`: 100k finished step rows).
//! It creates and drops its own database, `tasker_bench_prune`, on the server of
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`), seeds finished
//! tasks of 10 steps each (every step with one attempt and two transitions, each task with
//! two transitions, all finished 30 days ago), then drains three ready backlogs of no-op steps
//! (in-process executor, 2 workers as in the engine benchmark's (a)): without pruning, while
//! `Store::prune` (retention 7 days, default batches of 500 tasks) deletes the seeded rows,
//! and without pruning again. The figure with pruning counts only the steps completed while
//! the pruner was still deleting; the baseline is the mean of the two runs around it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tasker_core::retention::Retention;
use tasker_core::template::Template;
use tasker_engine::WorkerConfig;
use tasker_engine::testing::InProcessExecutor;
use tasker_runtime::Node;
use tasker_store::{PgStore, PruneReport, PruneRequest, Store};
use tokio_util::sync::CancellationToken;

const BENCH_DB: &str = "tasker_bench_prune";
const WIDTH: usize = 10;

fn fan(name: &str) -> Template {
    let mut yaml = format!("namespace: bench\nname: {name}\nversion: 1.0.0\nsteps:\n");
    for i in 0..WIDTH {
        yaml.push_str(&format!("  - {{name: s{i:02}, handler: noop@1.0.0}}\n"));
    }
    Template::from_yaml(&yaml).expect("valid")
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

struct Bench {
    admin: PgPool,
    opts: PgConnectOptions,
}

impl Bench {
    async fn pool(&self, n: u32) -> Result<PgPool> {
        Ok(PgStore::pool_options(n)
            .connect_with(self.opts.clone().database(BENCH_DB))
            .await?)
    }

    async fn fresh(&self) -> Result<PgStore> {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"))
            .execute(&self.admin)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {BENCH_DB}"))
            .execute(&self.admin)
            .await?;
        let pool = self.pool(4).await?;
        tasker_store::MIGRATOR.run(&pool).await?;
        Ok(PgStore::new(pool))
    }
}

/// `tasks` ready tasks of `t`, one `create_task` statement per 1,000.
async fn backlog(store: &PgStore, t: &Template, tasks: usize) -> Result<()> {
    store.register_template(t).await?;
    let mut left = tasks;
    while left > 0 {
        let n = left.min(1_000);
        sqlx::query("SELECT create_task($1, '{}'::jsonb) FROM generate_series(1, $2)")
            .bind(t.key())
            .bind(n as i32)
            .execute(store.pool())
            .await?;
        left -= n;
    }
    sqlx::query("VACUUM ANALYZE").execute(store.pool()).await?;
    Ok(())
}

/// Turns every task there is into one that completed 30 days ago, with the rows a real run
/// leaves (attempts, transitions). Written directly, triggers off (replica role), because
/// running 1M steps first would take longer than the measurement.
async fn finish_everything_long_ago(store: &PgStore) -> Result<()> {
    let mut c = store.pool().acquire().await?;
    let old = Utc::now() - chrono::Duration::days(30);
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *c)
        .await?;
    for sql in [
        "UPDATE steps SET state = 'complete', ready_at = NULL, attempts = 1, claim_count = 1, \
         worker = 'seed', last_attempted_at = $1, finished_at = $1, updated_at = $1, \
         result = '{}'",
        "INSERT INTO attempts (step_id, attempt_no, task_id, worker, started_at, finished_at, \
         outcome, wall_us) SELECT id, 1, task_id, 'seed', $1, $1, 'completed', 100 FROM steps",
        "INSERT INTO step_transitions (step_id, sort_key, from_state, to_state, most_recent, \
         created_at) SELECT id, 1, 'pending', 'in_progress', false, $1 FROM steps",
        "INSERT INTO step_transitions (step_id, sort_key, from_state, to_state, most_recent, \
         created_at) SELECT id, 2, 'in_progress', 'complete', true, $1 FROM steps",
        "UPDATE tasks SET state = 'complete', unfinished_steps = 0, started_at = $1, \
         finished_at = $1, updated_at = $1",
        "INSERT INTO task_transitions (task_id, sort_key, from_state, to_state, most_recent, \
         created_at) SELECT id, 1, 'pending', 'in_progress', false, $1 FROM tasks",
        "INSERT INTO task_transitions (task_id, sort_key, from_state, to_state, most_recent, \
         created_at) SELECT id, 2, 'in_progress', 'complete', true, $1 FROM tasks",
    ] {
        sqlx::query(sql).bind(old).execute(&mut *c).await?;
    }
    sqlx::query("SET session_replication_role = origin")
        .execute(&mut *c)
        .await?;
    drop(c);
    sqlx::query("VACUUM ANALYZE").execute(store.pool()).await?;
    Ok(())
}

/// Drains a backlog of `steps` ready no-op steps with 2 workers; while `prune` runs (if
/// given) beside them. Returns (steps/s over the measured window, the pruner's report and
/// seconds, and the fraction of the backlog completed while it ran).
async fn drain(
    b: &Bench,
    setup: &PgStore,
    name: &str,
    steps: usize,
    prune: Option<PruneRequest>,
) -> Result<(f64, Option<(PruneReport, f64, f64)>)> {
    backlog(setup, &fan(name), steps / WIDTH).await?;
    let stop = CancellationToken::new();
    let mut nodes = Vec::new();
    for i in 0..2 {
        let pool = b.pool(4).await?;
        let open = futures::future::try_join_all((0..3).map(|_| pool.acquire())).await?;
        drop(open);
        let store = Arc::new(PgStore::new(pool));
        nodes.push(
            Node::new(
                store,
                InProcessExecutor::new(),
                worker_config(&format!("w{i}")),
            )
            .start(stop.clone()),
        );
    }
    let started = Instant::now();
    let pruner = match prune {
        Some(req) => {
            let store = PgStore::new(b.pool(2).await?);
            Some(tokio::spawn(async move {
                let t = Instant::now();
                let r = store.prune(&req, Utc::now()).await;
                (r, t.elapsed())
            }))
        }
        None => None,
    };
    let done = |nodes: &[tasker_runtime::RunningNode]| -> u64 {
        nodes.iter().map(|n| n.stats().totals().completed).sum()
    };
    // The measured window ends when the backlog is drained or the pruner is done.
    let mut window: Option<(u64, Duration)> = None;
    loop {
        let n = done(&nodes);
        if window.is_none() && pruner.as_ref().is_some_and(|p| p.is_finished()) {
            window = Some((n, started.elapsed()));
        }
        if n as usize >= steps {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (measured, elapsed) = window.unwrap_or((done(&nodes), started.elapsed()));
    stop.cancel();
    for n in nodes {
        n.join().await;
    }
    let pruned = match pruner {
        Some(h) => {
            let (r, took) = h.await?;
            Some((r?, took.as_secs_f64(), measured as f64 / steps as f64))
        }
        None => None,
    };
    // The figure counts only if every step of this backlog really ended complete.
    let complete: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM steps s JOIN tasks t ON t.id = s.task_id \
         JOIN templates p ON p.id = t.template_id WHERE p.name = $1 AND s.state = 'complete'",
    )
    .bind(name)
    .fetch_one(setup.pool())
    .await?;
    anyhow::ensure!(
        complete as usize == steps,
        "{complete} of {steps} steps completed"
    );
    Ok((measured as f64 / elapsed.as_secs_f64(), pruned))
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
        let b = Bench { admin, opts };
        let (finished_steps, backlog_steps) = if quick {
            (100_000, 50_000)
        } else {
            (1_000_000, 100_000)
        };
        println!(
            "tasker prune benchmark ({} mode), 2 tokio threads, no-op in-process handlers, \
             {finished_steps} finished step rows, backlogs of {backlog_steps} steps",
            if quick { "quick" } else { "full" }
        );
        let setup = b.fresh().await?;
        let t = Instant::now();
        backlog(&setup, &fan("finished"), finished_steps / WIDTH).await?;
        finish_everything_long_ago(&setup).await?;
        println!("seeded in {:.1} s", t.elapsed().as_secs_f64());

        let (before, _) = drain(&b, &setup, "before", backlog_steps, None).await?;
        println!("no pruning:          {before:>9.0} steps/s");
        let req = PruneRequest::new(Retention::defaults());
        let (during, pruned) = drain(&b, &setup, "during", backlog_steps, Some(req)).await?;
        let (report, secs, share) = pruned.expect("the pruner ran");
        println!(
            "while pruning:       {during:>9.0} steps/s  ({:.0}% of the backlog ran while it deleted)",
            share * 100.0
        );
        let (after, _) = drain(&b, &setup, "after", backlog_steps, None).await?;
        println!("no pruning (again):  {after:>9.0} steps/s");
        let removed = report.removed;
        println!(
            "pruner: {} tasks, {} steps, {} attempts, {} step transitions in {:.1} s, \
             {} batches ({:.0} step rows/s)",
            removed.tasks,
            removed.steps,
            removed.attempts,
            removed.step_transitions,
            secs,
            report.batches,
            removed.steps as f64 / secs
        );
        anyhow::ensure!(
            removed.steps as usize == finished_steps,
            "the pruner removed {} of {finished_steps} step rows",
            removed.steps
        );
        let baseline = (before + after) / 2.0;
        println!(
            "throughput while pruning / without: {:.2}x (goal >= 0.9x)",
            during / baseline
        );
        setup.pool().close().await;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"))
            .execute(&b.admin)
            .await?;
        Ok(())
    })
}
