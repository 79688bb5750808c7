//! Many worker processes under real chaos: 1,000 tasks (10,500 steps of four DAG shapes, a
//! tenth of them failing their first attempt, all of them slow enough to be caught
//! mid-flight) run on several `tasker worker` processes while one of them is killed with
//! `kill -9` and restarted ten times and, on PostgreSQL, the server is restarted once in
//! immediate mode. At the end every task is complete, each step has exactly one completed
//! attempt, every claim ended in exactly one recorded attempt (so every lease loss is
//! recorded), and a handler-side counter (the `chaos` plugin creates one file per execution in
//! a granted directory) shows that every execution no completed or failed attempt accounts for
//! is a recorded lease loss of its step.
//!
//! Kills are paced by progress (one each twelfth of the work), not by the clock, so a slow or
//! busy machine only makes the test longer. It restarts the database server, so it is alone in
//! its test binary; its two scenarios take turns.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use tasker_core::fixtures;
use tasker_core::template::{DirGrant, DirMode, Template};
use tasker_store::{NewTask, Store};
use tasker_tests::cli::*;

const TASKS: usize = 1_000;
const KILLS: usize = 10;
const CONCURRENCY: u32 = 8;

/// The PostgreSQL and SQLite runs would otherwise share the two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn shapes(count_dir: &Path) -> Vec<Template> {
    let mut shapes = vec![
        fixtures::mixed_20("chaos@0.1.0"),
        fixtures::linear(10, "chaos@0.1.0"),
        fixtures::tree("chaos@0.1.0"),
        fixtures::parallel_merge("chaos@0.1.0"),
    ];
    for t in &mut shapes {
        for step in &mut t.steps {
            step.grants.dirs = vec![DirGrant {
                host: count_dir.display().to_string(),
                guest: "/count".into(),
                mode: DirMode::ReadWrite,
            }];
            step.retry.max_attempts = 3;
            step.retry.backoff.base_ms = 50;
            step.retry.backoff.cap_ms = 200;
        }
    }
    shapes
}

/// Per step (task id, step name): how many executions the handler counted.
fn executions(count_dir: &Path) -> HashMap<(i64, String), i64> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir(count_dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let parts: Vec<&str> = name.split('.').collect();
        assert_eq!(parts.len(), 4, "unexpected file {name}");
        *out.entry((parts[0].parse().unwrap(), parts[1].to_owned()))
            .or_insert(0) += 1;
    }
    out
}

/// Per step: (completed + failed attempts, lease_lost attempts).
async fn recorded(db: &Db) -> HashMap<(i64, String), (i64, i64)> {
    let sql = "SELECT s.task_id, s.name, \
                      sum(CASE WHEN a.outcome IN ('completed', 'failed') THEN 1 ELSE 0 END), \
                      sum(CASE WHEN a.outcome = 'lease_lost' THEN 1 ELSE 0 END) \
               FROM attempts a JOIN steps s ON s.id = a.step_id GROUP BY s.task_id, s.name";
    let rows: Vec<(i64, String, i64, i64)> = match db {
        Db::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
        Db::Sqlite(path) => {
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .read_only(true);
            let mut conn = sqlx::ConnectOptions::connect(&opts).await.unwrap();
            sqlx::query_as(sql).fetch_all(&mut conn).await.unwrap()
        }
    };
    rows.into_iter()
        .map(|(t, n, done, lost)| ((t, n), (done, lost)))
        .collect()
}

async fn worker_processes_survive_kills_and_restarts(db: Db) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let postgres = matches!(db, Db::Postgres(_));
    let workers = if postgres { 4 } else { 2 };
    let dir = scratch("chaos");
    let count_dir = dir.join("count");
    std::fs::create_dir_all(&count_dir).unwrap();
    let store = db.store().await;
    let shapes = shapes(&count_dir);
    for t in &shapes {
        store.register_template(t).await.unwrap();
    }
    let mut planned_failures = 0;
    for i in 0..TASKS {
        let fail_first = i % 10 == 0;
        if fail_first {
            planned_failures += shapes[i % shapes.len()].steps.len() as i64;
        }
        let context = json!({ "slow_ms": 80, "fail_first": fail_first });
        store
            .create_task(
                &NewTask::new(shapes[i % shapes.len()].key(), context),
                Utc::now(),
            )
            .await
            .unwrap();
    }
    drop(store);
    let steps = count(&db, "SELECT count(*) FROM steps").await;
    assert_eq!(steps, 10_500);
    let config = dir.join("tasker.toml");
    std::fs::write(&config, "[worker]\nlease_secs = 3\n").unwrap();

    let started = Instant::now();
    let spawn = |slot: usize, generation: usize| {
        let id = format!("w{slot}-{generation}");
        (id.clone(), spawn_worker(&db, &config, &id, CONCURRENCY))
    };
    let mut pool: Vec<(String, KillOnDrop)> = (0..workers).map(|w| spawn(w, 0)).collect();
    let mut dead = Vec::new();
    let mut db_restarted = false;
    for k in 1..=KILLS {
        let milestone = (steps as usize * k / (KILLS + 2)) as i64;
        wait_for(
            &db,
            "SELECT count(*) FROM steps WHERE state = 'complete'",
            milestone,
            Duration::from_secs(300),
        )
        .await;
        let slot = k % workers;
        let victim = pool[slot].0.clone();
        wait_for(
            &db,
            &format!(
                "SELECT count(*) FROM steps WHERE state = 'in_progress' AND worker = '{victim}'"
            ),
            1,
            Duration::from_secs(60),
        )
        .await;
        let (_, mut child) = std::mem::replace(&mut pool[slot], spawn(slot, k));
        child.0.kill().expect("SIGKILL");
        child.0.wait().unwrap();
        dead.push(victim);
        if postgres && k == KILLS / 2 {
            let Db::Postgres(p) = &db else { unreachable!() };
            let before = started_at(p, Duration::ZERO).await;
            restart_postgres();
            let after = started_at(p, Duration::from_secs(60)).await;
            assert!(after > before, "the server restarted");
            db_restarted = true;
        }
    }
    let done_at_last_kill = count(&db, "SELECT count(*) FROM steps WHERE state = 'complete'").await;
    assert!(
        done_at_last_kill < steps,
        "the last kill came before the end"
    );
    wait_for(
        &db,
        "SELECT count(*) FROM tasks WHERE state = 'complete'",
        TASKS as i64,
        Duration::from_secs(600),
    )
    .await;
    let elapsed = started.elapsed();
    for (id, child) in &mut pool {
        assert!(child.0.try_wait().unwrap().is_none(), "{id} is still up");
        stop_gracefully(&mut child.0);
    }

    assert_each_step_completed_once(&db, steps).await;
    // Every claim ended in exactly one attempt row: nothing a kill or the restart cut short
    // went unrecorded.
    let claims = count(&db, "SELECT sum(claim_count) FROM steps").await;
    let attempts = count(&db, "SELECT count(*) FROM attempts").await;
    assert_eq!(claims, attempts, "one attempt row per claim");
    let lost = count(
        &db,
        "SELECT count(*) FROM attempts WHERE outcome = 'lease_lost'",
    )
    .await;
    // Each victim was seen holding claims just before its kill; it could in theory have
    // finished them all in between, so only the total is asserted.
    let ids: Vec<String> = dead.iter().map(|id| format!("'{id}'")).collect();
    let lost_by_dead = count(
        &db,
        &format!(
            "SELECT count(*) FROM attempts WHERE outcome = 'lease_lost' AND worker IN ({})",
            ids.join(", ")
        ),
    )
    .await;
    assert!(
        lost_by_dead >= 1,
        "the killed workers' claims are lease losses"
    );
    let failed = count(
        &db,
        "SELECT count(*) FROM attempts WHERE outcome = 'failed'",
    )
    .await;
    assert_eq!(
        failed, planned_failures,
        "exactly the first attempts of every tenth task failed"
    );

    // The handler's own count: every execution beyond the recorded completed and failed
    // attempts of a step is one of that step's recorded lease losses.
    let ran = executions(&count_dir);
    let rec = recorded(&db).await;
    let mut extra_total = 0;
    for (step, (done, lost_here)) in &rec {
        let n = ran.get(step).copied().unwrap_or(0);
        assert!(
            n >= *done,
            "{step:?}: {n} executions, {done} recorded results"
        );
        assert!(
            n - done <= *lost_here,
            "{step:?}: {} executions unaccounted for, {lost_here} lease losses",
            n - done
        );
        extra_total += n - done;
    }
    assert_eq!(ran.len(), rec.len(), "no execution of an unknown step");
    let report = format!(
        "chaos ({}): {TASKS} tasks, {steps} steps, {workers} workers x {CONCURRENCY}, {KILLS} kills \
         + restarts, database restart: {db_restarted}, {elapsed:.1?}; {attempts} attempts = \
         {claims} claims; {failed} planned failures; {lost} lease losses ({lost_by_dead} of killed workers); {} executions, \
         {extra_total} beyond the recorded results (each one a lease loss of its step)",
        if postgres { "postgres" } else { "sqlite" },
        ran.values().sum::<i64>(),
    );
    eprintln!("{report}");
    let reports = root().join("target").join("test-reports");
    std::fs::create_dir_all(&reports).unwrap();
    let file = format!("chaos-{}.txt", if postgres { "postgres" } else { "sqlite" });
    std::fs::write(reports.join(file), &report).unwrap();
}

tasker_tests::cli_on_both_backends!(worker_processes_survive_kills_and_restarts);
