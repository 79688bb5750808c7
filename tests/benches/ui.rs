//! The web page's benchmark in headless Chromium (a bench binary, not a timed test), on the
//! embedded store and, when PostgreSQL answers at `DATABASE_URL` (default
//! postgres://postgres@127.0.0.1:5432/postgres), on PostgreSQL too, in a database
//! `tasker_ui_bench` created and dropped here:
//!
//! ```sh
//! scripts/build-plugins.sh && cargo build --release -p tasker-cli
//! cargo bench -p tasker-tests --bench ui            # -- --quick: fewer rounds
//! ```
//!
//! (It runs the `tasker` beside it: target/release/tasker under `cargo bench`, or, with
//! `cargo bench --profile dev`, the debug build that the test suite uses; `TASKER_BIN`
//! overrides it.)
//!
//! `tasker serve --no-auth --workers 16` runs the steps in the server's own process. It
//! reports, and writes to `target/test-reports/ui-bench.txt`:
//!  (a) the time to first render of a 1,000-step task page: from the navigation's start
//!      to `svg#dag[data-rendered="1"]`, timed in the page (`performance.now()` when a
//!      MutationObserver injected before the page's own scripts sees the attribute), with
//!      the next frame after it, over several navigations (goal: <= 1 s);
//!  (b) the delay from a step transition's commit to its node's change of colour: for each
//!      of 1,000 steps, when its `g.node` got `data-state="complete"` in the page (the
//!      observer's clock) minus the `at` of that transition as stored (`GET
//!      /v1/steps/{id}`), while the workers complete the steps as fast as they can
//!      (goal: P95 <= 250 ms).

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Executor};
use tasker_tests::browser::{Api, Browser, WAIT, listening};
use tasker_tests::cli::{Db, plugin_dir, root, scratch};

const STEPS: usize = 1000;
const WIDTH: usize = 40;
const PG_DB: &str = "tasker_ui_bench";

/// A gate step (`slow`, `gate_ms`), then 999 noop steps in layers of [`WIDTH`] behind it:
/// the page is open and drawn before the noops run.
fn template(name: &str, gate_ms: u64) -> String {
    let mut y = format!(
        "namespace: bench\nname: {name}\nversion: 1.0.0\n\
         steps:\n  - {{ name: gate, handler: slow@0.1.0, config: {{ ms: {gate_ms} }}, \
         limits: {{ timeout_ms: {} }} }}\n",
        gate_ms + 60_000
    );
    for i in 1..STEPS {
        let (layer, at) = ((i - 1) / WIDTH, (i - 1) % WIDTH);
        let parents = if layer == 0 {
            vec!["gate".to_owned()]
        } else {
            let above = (layer - 1) * WIDTH + 1;
            let mut p = vec![above + at];
            let other = above + (at * 7 + 3) % WIDTH;
            if other != p[0] {
                p.push(other);
            }
            p.iter().map(|p| format!("s{p:04}")).collect()
        };
        let _ = writeln!(
            y,
            "  - {{ name: s{i:04}, handler: noop@0.1.0, depends_on: [{}] }}",
            parents.join(", ")
        );
    }
    y
}

/// Timestamps, in the page, the first `svg#dag[data-rendered="1"]` (`__renderedAt`, ms since
/// the navigation started) and the frame after it (`__paintedAt`).
const RENDER_PROBE: &str = "
(() => {
  const look = () => {
    if (window.__renderedAt !== undefined) return;
    const s = document.querySelector('svg#dag[data-rendered=\"1\"]');
    if (s === null) return;
    window.__renderedAt = performance.now();
    requestAnimationFrame(() => requestAnimationFrame(() => {
      window.__paintedAt = performance.now();
    }));
  };
  new MutationObserver(look).observe(document,
    {subtree: true, childList: true, attributes: true, attributeFilter: ['data-rendered']});
})();";

/// Records, in the page, when each node first showed `complete` (epoch ms).
const COLOUR_PROBE: &str = "
window.__completeAt = {};
const stamp = () => {
  const now = performance.timeOrigin + performance.now();
  for (const n of document.querySelectorAll('svg#dag g.node[data-state=\"complete\"]'))
    if (window.__completeAt[n.dataset.step] === undefined) window.__completeAt[n.dataset.step] = now;
};
stamp();
new MutationObserver(stamp).observe(document.querySelector('svg#dag'),
  {subtree: true, childList: true, attributes: true, attributeFilter: ['data-state']});
return true";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Figures {
    store: &'static str,
    renders: Vec<(f64, f64)>,
    delays: Vec<f64>,
    run_secs: f64,
}

async fn bench(db: Db, store: &'static str, rounds: usize) -> Figures {
    // As `tasker migrate` leaves it: `serve` only opens a store.
    db.prepare().await;
    let (_server, base) = listening(
        &db,
        &plugin_dir(),
        "serve",
        &["--no-auth", "--workers", "16"],
    );
    let api = Api::new(&base, None);
    api.register(&template("render", 600_000)).await;
    api.register(&template("colour", 4_000)).await;

    // (a) First render: the gate keeps 999 steps pending while the page is opened again
    // and again (a fresh browser: the first navigation loads the assets cold).
    let render = api.submit("bench/render@1.0.0", json!({})).await;
    let b = Browser::start(&format!("bench-{store}")).await;
    b.on_new_document(RENDER_PROBE).await;
    let mut renders = Vec::new();
    for _ in 0..rounds {
        b.goto(&format!("{base}/ui/tasks/{render}")).await;
        let v = b
            .wait_js(
                "the first render and the frame after it",
                "return window.__paintedAt !== undefined
                   ? [window.__renderedAt, window.__paintedAt] : null",
                vec![],
            )
            .await;
        assert_eq!(
            b.count("svg#dag g.node[data-step]").await,
            STEPS,
            "every node drawn"
        );
        renders.push((v[0].as_f64().unwrap(), v[1].as_f64().unwrap()));
    }
    let (s, v) = api
        .post(&format!("/v1/tasks/{render}/cancel"), json!({}))
        .await;
    assert!(s.is_success(), "cancelling the render task: {s} {v}");

    // (b) Colour delay: the page is drawn and watching before the gate opens.
    let colour = api.submit("bench/colour@1.0.0", json!({})).await;
    b.goto(&format!("{base}/ui/tasks/{colour}")).await;
    b.wait_attr("svg#dag", "data-rendered", "1").await;
    b.js(COLOUR_PROBE, vec![]).await;
    b.wait_js(
        "every node to turn complete",
        "return Object.keys(window.__completeAt).length === arguments[0]",
        vec![json!(STEPS)],
    )
    .await;
    let done = api.wait_task(colour, "complete").await;
    let seen: Value = b.js("return window.__completeAt", vec![]).await;
    b.assert_no_console_errors(&[]).await;
    b.close().await;

    // The commits as stored: each step's transition to complete.
    let mut delays = Vec::with_capacity(STEPS);
    let mut last_commit = 0.0f64;
    let mut first_noop = f64::MAX;
    for step in done["steps"].as_array().expect("the task's steps") {
        let id = step["id"].as_i64().unwrap();
        let name = step["name"].as_str().unwrap().to_owned();
        let detail = api.get(&format!("/v1/steps/{id}")).await;
        let at = detail["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["to_state"] == "complete")
            .and_then(|t| t["at"].as_str())
            .unwrap_or_else(|| panic!("no transition to complete for {name}: {detail}"));
        let at = chrono::DateTime::parse_from_rfc3339(at)
            .unwrap_or_else(|e| panic!("{at}: {e}"))
            .timestamp_micros() as f64
            / 1000.0;
        let shown = seen[&name]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} never shown complete"));
        delays.push(shown - at);
        last_commit = last_commit.max(at);
        if name != "gate" {
            first_noop = first_noop.min(at);
        }
    }
    delays.sort_by(f64::total_cmp);
    Figures {
        store,
        renders,
        delays,
        run_secs: (last_commit - first_noop) / 1000.0,
    }
}

fn report(f: &Figures, out: &mut String) {
    let cold = f.renders[0];
    let mut attr: Vec<f64> = f.renders.iter().map(|r| r.0).collect();
    attr.sort_by(f64::total_cmp);
    let mut paint: Vec<f64> = f.renders.iter().map(|r| r.1).collect();
    paint.sort_by(f64::total_cmp);
    let median = percentile(&attr, 0.5);
    let _ = writeln!(
        out,
        "ui bench ({}): first render of a {STEPS}-step task page, navigation start to \
         svg#dag[data-rendered=\"1\"], {} navigations: first (cold) {:.0} ms, median {:.0} ms, \
         max {:.0} ms; next frame after it: median {:.0} ms, max {:.0} ms (goal <= 1000 ms: {})",
        f.store,
        f.renders.len(),
        cold.0,
        median,
        attr[attr.len() - 1],
        percentile(&paint, 0.5),
        paint[paint.len() - 1],
        if attr[attr.len() - 1] <= 1000.0 {
            "met"
        } else if median <= 1000.0 {
            "met by the median, not by the slowest"
        } else {
            "NOT met"
        },
    );
    let d = &f.delays;
    let p95 = percentile(d, 0.95);
    let _ = writeln!(
        out,
        "ui bench ({}): transition commit to node colour, {} steps (999 completed in {:.2} s, \
         {:.0} steps/s): P50 {:.0} ms, P95 {:.0} ms, P99 {:.0} ms, max {:.0} ms, min {:.0} ms \
         (goal P95 <= 250 ms: {})",
        f.store,
        d.len(),
        f.run_secs,
        (STEPS - 1) as f64 / f.run_secs.max(1e-3),
        percentile(d, 0.5),
        p95,
        percentile(d, 0.99),
        d[d.len() - 1],
        d[0],
        if p95 <= 250.0 { "met" } else { "NOT met" },
    );
}

async fn postgres() -> Option<Db> {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let opts: PgConnectOptions = base.parse().ok()?;
    let mut admin = match tokio::time::timeout(Duration::from_secs(10), opts.connect()).await {
        Ok(Ok(c)) => c,
        _ => {
            eprintln!("ui bench: no PostgreSQL at {base}: the embedded store only");
            return None;
        }
    };
    admin
        .execute(format!("DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)").as_str())
        .await
        .ok()?;
    admin
        .execute(format!("CREATE DATABASE {PG_DB}").as_str())
        .await
        .ok()?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(opts.database(PG_DB))
        .await
        .ok()?;
    Some(Db::Postgres(pool))
}

async fn drop_postgres() {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    if let Ok(opts) = base.parse::<PgConnectOptions>()
        && let Ok(mut admin) = opts.connect().await
    {
        let _ = admin
            .execute(format!("DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)").as_str())
            .await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 3 } else { 6 };
    // Every wait of the harness is bounded by WAIT; the whole run by a few of them.
    eprintln!("ui bench: {rounds} navigations per store, waits bounded by {WAIT:?}");
    let mut out = String::new();
    let sqlite = bench(
        Db::Sqlite(scratch("ui-bench").join("tasker.db")),
        "sqlite",
        rounds,
    )
    .await;
    report(&sqlite, &mut out);
    if let Some(db) = postgres().await {
        let pg = bench(db, "postgres", rounds).await;
        report(&pg, &mut out);
        drop_postgres().await;
    }
    print!("{out}");
    let dir = root().join("target/test-reports");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ui-bench.txt"), &out).unwrap();
    eprintln!("written to {}", dir.join("ui-bench.txt").display());
}
