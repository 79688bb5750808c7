//! `kill -9` of a `tasker worker` in the middle of a 2,000-step run: a new worker finishes
//! every task, each step has exactly one successful attempt, and the killed worker's claims
//! are recorded as lease losses.

#[macro_use]
mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use chrono::Utc;
use common::*;
use serde_json::json;
use tasker_core::fixtures;
use tasker_store::{NewTask, Store};

fn spawn_worker(db: &Db, config: &std::path::Path, id: &str) -> Child {
    let mut c = tasker(db, &plugin_dir());
    c.arg("--config")
        .arg(config)
        .args(["worker", "--id", id, "--concurrency", "32"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    c.spawn().expect("worker starts")
}

async fn a_killed_worker_loses_its_leases_and_a_new_worker_finishes_everything(db: Db) {
    let store = db.store().await;
    let mut template = fixtures::mixed_20("slow@0.1.0");
    for step in &mut template.steps {
        step.config = json!({"ms": 15});
    }
    store.register_template(&template).await.unwrap();
    for i in 0..100 {
        store
            .create_task(&NewTask::new(template.key(), json!({"i": i})), Utc::now())
            .await
            .unwrap();
    }
    assert_eq!(count(&db, "SELECT count(*) FROM steps").await, 2_000);

    let dir = scratch("crash");
    let config = dir.join("tasker.toml");
    std::fs::write(&config, "[worker]\nlease_secs = 2\n").unwrap();

    let mut first = spawn_worker(&db, &config, "doomed");
    wait_for(
        &db,
        "SELECT count(*) FROM steps WHERE state = 'complete'",
        400,
        Duration::from_secs(60),
    )
    .await;
    // Make sure it holds claims right now, then kill it without warning.
    wait_for(
        &db,
        "SELECT count(*) FROM steps WHERE state = 'in_progress' AND worker = 'doomed'",
        1,
        Duration::from_secs(10),
    )
    .await;
    first.kill().expect("SIGKILL");
    first.wait().unwrap();
    // On PostgreSQL a statement the worker sent just before dying still runs to its end on
    // the server: count what it holds only once none of its backends is busy. (On SQLite the
    // writer was the dead process itself: its unfinished transaction is already gone.)
    if let Db::Postgres(_) = db {
        wait_for(
            &db,
            "SELECT (count(*) = 0)::int::bigint FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active'",
            1,
            Duration::from_secs(10),
        )
        .await;
    }
    let held: i64 = count(
        &db,
        "SELECT count(*) FROM steps WHERE state = 'in_progress' AND worker = 'doomed'",
    )
    .await;
    let done_before = count(&db, "SELECT count(*) FROM steps WHERE state = 'complete'").await;
    assert!(done_before < 2_000, "the kill came before the end");

    let mut second = spawn_worker(&db, &config, "rescuer");
    wait_for(
        &db,
        "SELECT count(*) FROM tasks WHERE state = 'complete'",
        100,
        Duration::from_secs(120),
    )
    .await;
    // A graceful stop of the rescuer.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(second.wait().unwrap().success(), "SIGTERM stops it cleanly");

    // Every step has exactly one successful attempt.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM (SELECT step_id FROM attempts WHERE outcome = 'completed'
             GROUP BY step_id HAVING count(*) = 1) x"
        )
        .await,
        2_000
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM attempts WHERE outcome = 'completed'"
        )
        .await,
        2_000
    );
    // The steps the killed worker held were taken back as lease losses, all of them its own.
    let lost = count(
        &db,
        "SELECT count(*) FROM attempts WHERE outcome = 'lease_lost'",
    )
    .await;
    assert_eq!(
        lost, held,
        "every claim held at the kill is a recorded lease loss"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM attempts WHERE outcome = 'lease_lost' AND worker <> 'doomed'"
        )
        .await,
        0
    );
    // Lease losses did not use up retry budget: no step failed.
    assert_eq!(
        count(&db, "SELECT count(*) FROM steps WHERE state <> 'complete'").await,
        0
    );
}

cli_on_both_backends!(a_killed_worker_loses_its_leases_and_a_new_worker_finishes_everything);
