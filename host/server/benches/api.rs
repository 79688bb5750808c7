//! API benchmark (a bench binary, not a timed test): `cargo bench -p tasker-server --bench
//! api` (`-- --quick` for smaller sizes). Build the plugins first (scripts/build-plugins.sh).
//!
//! On PostgreSQL, in its own database `tasker_api_bench` on the server of `DATABASE_URL`
//! (created and dropped here), with token auth on, as in production, it prints side by side
//! from one run:
//!  (a) tasks created per second by 16 concurrent callers of `Store::create_task` (the
//!      baseline) and by 16 keep-alive HTTP clients of `POST /v1/tasks`, and their ratio
//!      (goal: HTTP >= 0.7x the baseline);
//!  (b) P50 and P99 of `GET /v1/tasks/{id}` for a 100-step task (goal: P99 <= 5 ms).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::{ConnectOptions, Executor};
use tasker_core::template::Template;
use tasker_engine::EventBus;
use tasker_sandbox::{Sandbox, SandboxConfig};
use tasker_server::{AppState, AuthMode, ServerConfig};
use tasker_store::{AnyStore, NewTask, PgStore, Store};
use tokio_util::sync::CancellationToken;

const DB: &str = "tasker_api_bench";
const CLIENTS: usize = 16;
/// Measured rounds of each create path, alternated.
const ROUNDS: usize = 3;

fn one_step() -> Template {
    Template::from_yaml(
        "namespace: bench\nname: one\nversion: 1.0.0\nsteps:\n  - {name: only, handler: noop@0.1.0}\n",
    )
    .expect("a valid template")
}

fn hundred_steps() -> Template {
    let mut y = String::from("namespace: bench\nname: hundred\nversion: 1.0.0\nsteps:\n");
    for i in 0..100 {
        if i == 0 {
            y.push_str("  - {name: s000, handler: noop@0.1.0}\n");
        } else {
            // A chain with side branches: a realistic mix of ready and waiting steps.
            y.push_str(&format!(
                "  - {{name: s{i:03}, handler: noop@0.1.0, depends_on: [s{:03}]}}\n",
                (i - 1) / 2
            ));
        }
    }
    Template::from_yaml(&y).expect("a valid template")
}

async fn fresh_database() -> Result<PgStore> {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let opts: sqlx::postgres::PgConnectOptions = base.parse()?;
    let mut admin = opts.connect().await.context("cannot reach PostgreSQL")?;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)").as_str())
        .await?;
    admin
        .execute(format!("CREATE DATABASE {DB}").as_str())
        .await?;
    let pool = PgPoolOptions::new()
        .max_connections(32)
        .connect_with(opts.database(DB))
        .await?;
    let store = PgStore::new(pool);
    store.migrate().await?;
    Ok(store)
}

/// `n` creates spread over [`CLIENTS`] concurrent callers; tasks per second.
async fn rate<F, Fut>(n: usize, call: F) -> Result<f64>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let start = Instant::now();
    let mut joins = Vec::new();
    for c in 0..CLIENTS {
        let call = call.clone();
        joins.push(tokio::spawn(async move {
            let mut i = c;
            while i < n {
                call(i).await?;
                i += CLIENTS;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for j in joins {
        j.await??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let creates = if quick { 2_000 } else { 20_000 };
    let gets = if quick { 500 } else { 5_000 };

    let pg = fresh_database().await?;
    let store: AnyStore = pg.clone().into();
    let plugins = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/dist");
    let (sandbox, _) = Sandbox::new(SandboxConfig::new(plugins))
        .await
        .context("a sandbox on plugins/dist (run scripts/build-plugins.sh)")?;
    for t in [one_step(), hundred_steps()] {
        store.register_template(&t).await?;
    }
    let (_, token) =
        tasker_server::issue_token(&store, "bench", vec!["*".into()], None, Utc::now()).await?;
    let state = AppState::new(
        Arc::new(store.clone()),
        sandbox,
        EventBus::default(),
        ServerConfig {
            auth: AuthMode::Tokens,
            ..ServerConfig::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        async move { tasker_server::serve(listener, state, async move { stop.cancelled().await }).await }
    });

    println!(
        "tasker API benchmark on PostgreSQL ({creates} creates, {CLIENTS} concurrent; {gets} reads)"
    );
    // (a) Warm both paths, then measure them in alternated rounds.
    let key = one_step().key();
    let direct = {
        let store = store.clone();
        let key = key.clone();
        move |i: usize| {
            let (store, key) = (store.clone(), key.clone());
            async move {
                let t = NewTask::new(key, json!({"n": i}));
                store.create_task(&t, Utc::now()).await?;
                Ok(())
            }
        }
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()?;
    let over_http = {
        let (http, base, token, key) = (http.clone(), base.clone(), token.clone(), key.clone());
        move |i: usize| {
            let (http, base, token, key) = (http.clone(), base.clone(), token.clone(), key.clone());
            async move {
                let res = http
                    .post(format!("{base}/v1/tasks"))
                    .bearer_auth(&token)
                    .json(&json!({"template": key, "context": {"n": i}}))
                    .send()
                    .await?;
                anyhow::ensure!(
                    res.status().as_u16() == 201,
                    "create answered {}",
                    res.status()
                );
                res.bytes().await?;
                Ok(())
            }
        }
    };
    rate(creates / 10, direct.clone()).await?;
    rate(creates / 10, over_http.clone()).await?;
    // Alternated rounds, so that neither side always meets the larger table.
    let (mut base_rate, mut http_rate) = (0.0, 0.0);
    for _ in 0..ROUNDS {
        base_rate += rate(creates / ROUNDS, direct.clone()).await? / ROUNDS as f64;
        http_rate += rate(creates / ROUNDS, over_http.clone()).await? / ROUNDS as f64;
    }
    println!(
        "(a) tasks created/s: Store::create_task {base_rate:.0}, POST /v1/tasks {http_rate:.0}: {:.2}x the baseline (goal >= 0.70x)",
        http_rate / base_rate
    );

    // (b) One 100-step task, read again and again by one keep-alive client.
    let task = store
        .create_task(&NewTask::new(hundred_steps().key(), json!({})), Utc::now())
        .await?
        .task_id;
    let url = format!("{base}/v1/tasks/{task}");
    let mut times = Vec::with_capacity(gets);
    for i in 0..gets + gets / 10 {
        let t = Instant::now();
        let res = http.get(&url).bearer_auth(&token).send().await?;
        anyhow::ensure!(res.status().is_success(), "read answered {}", res.status());
        let body = res.bytes().await?;
        anyhow::ensure!(
            body.len() > 10_000,
            "a 100-step task reads as {} bytes",
            body.len()
        );
        if i >= gets / 10 {
            times.push(t.elapsed());
        }
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "(b) GET /v1/tasks/{{id}} of a 100-step task: P50 {:.2} ms, P99 {:.2} ms (goal P99 <= 5 ms)",
        ms(percentile(&times, 0.50)),
        ms(percentile(&times, 0.99))
    );

    stop.cancel();
    server.await??;
    pg.pool().close().await;
    Ok(())
}
