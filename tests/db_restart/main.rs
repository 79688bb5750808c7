//! PostgreSQL restarted in the middle of a run, in immediate mode (the server stops as in a
//! crash and recovers from its WAL when it starts): the running `tasker worker` rides it out,
//! every task finishes, and every step completes exactly once.
//!
//! It restarts the server the test database lives on, so it is alone in its test binary
//! (cargo runs test binaries one at a time). The restart command is
//! `$TASKER_TEST_PG_RESTART` (run by `sh -c`) or else `pg_ctlcluster` on the newest cluster
//! under /etc/postgresql, as on this project's machines.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use sqlx::PgPool;
use tasker_core::fixtures;
use tasker_store::{NewTask, Store};
use tasker_tests::cli::*;

#[sqlx::test(migrations = false)]
async fn a_database_restart_mid_run_loses_no_task(pool: PgPool) {
    let db = Db::Postgres(pool.clone());
    let store = db.store().await;
    let mut template = fixtures::mixed_20("slow@0.1.0");
    for step in &mut template.steps {
        step.config = json!({"ms": 40});
    }
    store.register_template(&template).await.unwrap();
    for i in 0..100 {
        store
            .create_task(&NewTask::new(template.key(), json!({"i": i})), Utc::now())
            .await
            .unwrap();
    }
    drop(store);
    let dir = scratch("db-restart");
    let config = dir.join("tasker.toml");
    std::fs::write(&config, "[worker]\nlease_secs = 3\n").unwrap();

    let mut worker = spawn_worker(&db, &config, "survivor", 32);
    wait_for(
        &db,
        "SELECT count(*) FROM steps WHERE state = 'complete'",
        200,
        Duration::from_secs(60),
    )
    .await;
    let before = started_at(&pool, Duration::ZERO).await;
    restart_postgres();
    let after = started_at(&pool, Duration::from_secs(30)).await;
    assert!(after > before, "the server restarted ({before} -> {after})");
    let done_then = count(&db, "SELECT count(*) FROM steps WHERE state = 'complete'").await;
    assert!(done_then < 2_000, "the restart came before the end");

    wait_for(
        &db,
        "SELECT count(*) FROM tasks WHERE state = 'complete'",
        100,
        Duration::from_secs(120),
    )
    .await;
    assert!(
        worker.0.try_wait().unwrap().is_none(),
        "the worker outlived the restart"
    );
    stop_gracefully(&mut worker.0);
    // Whatever the restart cut short was taken back and run again.
    assert_each_step_completed_once(&db, 2_000).await;
}
