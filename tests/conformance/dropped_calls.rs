//! A store call dropped part-way (a client gone, a `select!` that took another branch, a
//! stopping loop) leaves the store usable and writes all of the call or none of it. sqlx's
//! SQLite `begin` is not drop-safe (transact-rs/sqlx#3932): a drop at the wrong instant used
//! to leave the one write connection inside a transaction, and every later write failed.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tasker_core::fixtures;
use tasker_store::*;
use tasker_tests::Backend;

tasker_tests::on_both_backends!(writes_dropped_at_any_point_leave_the_store_usable);

async fn writes_dropped_at_any_point_leave_the_store_usable<S: Backend>(s: S) {
    let t = fixtures::diamond(fixtures::NOOP);
    s.register_template(&t).await.unwrap();
    let mut kept = 0;
    for i in 0..400u32 {
        // Poll the call a few times, letting the database's thread run a little between
        // polls, then drop it wherever it is.
        let task = NewTask::new(t.key(), json!({"i": i}));
        let mut call = Box::pin(s.create_task(&task, Utc::now()));
        for _ in 0..(i % 12) {
            if futures::poll!(&mut call).is_ready() {
                break;
            }
            for _ in 0..(i * 37 % 2_000) {
                std::hint::spin_loop();
            }
            tokio::task::yield_now().await;
        }
        drop(call);
        // The next write goes through, whatever state the dropped one left.
        let next = NewTask::new(t.key(), json!({"after": i}));
        let created =
            tokio::time::timeout(Duration::from_secs(30), s.create_task(&next, Utc::now()))
                .await
                .unwrap_or_else(|_| panic!("a write after drop {i} hung"));
        assert!(
            created.is_ok(),
            "a write after drop {i} failed: {created:?}"
        );
        kept += 1;
    }
    let after: i64 = s
        .count("SELECT count(*) FROM tasks WHERE CAST(context AS TEXT) LIKE '%after%'")
        .await
        .unwrap();
    assert_eq!(after, kept);
    // Every task is whole: a dropped creation wrote all its steps or nothing.
    let partial = s
        .count(
            "SELECT count(*) FROM tasks t WHERE t.step_count <> \
             (SELECT count(*) FROM steps s WHERE s.task_id = t.id)",
        )
        .await
        .unwrap();
    assert_eq!(partial, 0);
}
