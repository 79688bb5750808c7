//! The embedded store's schema keeps the invariants PostgreSQL's triggers and constraints
//! keep: its state tables equal tasker-core's, its triggers refuse every illegal transition
//! and keep nothing of the refused statement, and a reopened file keeps its data.

use sqlx::Row;
use tasker_core::fixtures;
use tasker_core::state::{StepState, TaskState};
use tasker_store::{SqliteStore, Store, StoreError};
use tasker_tests::store::*;

async fn pairs(s: &SqliteStore, table: &str) -> Vec<(String, String)> {
    sqlx::query(&format!("SELECT from_state, to_state FROM {table}"))
        .fetch_all(s.reader())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn state_tables_match_rust_pair_by_pair() {
    let s = SqliteStore::temporary().await.unwrap();
    let steps = pairs(&s, "step_state_transitions").await;
    let mut want = Vec::new();
    for from in StepState::ALL {
        for to in StepState::ALL {
            if from.can_transition_to(to) {
                want.push((from.as_str().to_owned(), to.as_str().to_owned()));
            }
        }
    }
    let mut got = steps.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    let tasks = pairs(&s, "task_state_transitions").await;
    let mut want = Vec::new();
    for from in TaskState::ALL {
        for to in TaskState::ALL {
            if from.can_transition_to(to) {
                want.push((from.as_str().to_owned(), to.as_str().to_owned()));
            }
        }
    }
    let mut got = tasks;
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn triggers_refuse_every_illegal_step_transition_and_keep_nothing() {
    let s = SqliteStore::temporary().await.unwrap();
    let task = start(&s, &fixtures::diamond(fixtures::NOOP), at(0)).await;
    let ids = ids(&s, task).await;
    let before = snapshot(&s).await;
    let mut refused = 0;
    for from in StepState::ALL {
        for to in StepState::ALL {
            if from == to || from.can_transition_to(to) {
                continue;
            }
            let mut tx = s.writer().begin().await.unwrap();
            // Put the step into `from` without the check, then restore the schema's own
            // trigger and try the move. The rollback below undoes all of it.
            let check: String = sqlx::query_scalar(
                "SELECT sql FROM sqlite_master \
                 WHERE type = 'trigger' AND name = 'steps_transition_allowed'",
            )
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            sqlx::query("DROP TRIGGER steps_transition_allowed")
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query(
                "UPDATE steps SET state = ?2, ready_at = NULL, unfinished_parents = 1, \
                 lease_expires_at = CASE WHEN ?2 = 'in_progress' THEN 1 END WHERE id = ?1",
            )
            .bind(ids["d"])
            .bind(from.as_str())
            .execute(&mut *tx)
            .await
            .unwrap();
            sqlx::query(&check).execute(&mut *tx).await.unwrap();
            let err = sqlx::query(
                "UPDATE steps SET state = ?2, ready_at = NULL, \
                 lease_expires_at = CASE WHEN ?2 = 'in_progress' THEN 1 END WHERE id = ?1",
            )
            .bind(ids["d"])
            .bind(to.as_str())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)
            .expect_err(&format!("{from} -> {to} must be refused"));
            assert!(matches!(err, StoreError::Constraint { .. }), "{err}");
            assert!(err.to_string().contains("illegal step transition"), "{err}");
            assert!(!err.is_retryable());
            tx.rollback().await.unwrap();
            refused += 1;
        }
    }
    assert_eq!(
        refused,
        49 - 7 - 13,
        "every pair that is neither a no-op nor allowed"
    );
    assert_eq!(
        before,
        snapshot(&s).await,
        "nothing of a refused move was kept"
    );
}

#[tokio::test]
async fn an_illegal_task_transition_is_refused_through_the_real_table() {
    let s = SqliteStore::temporary().await.unwrap();
    let task = start(&s, &fixtures::linear(2, fixtures::NOOP), at(0)).await;
    let before = snapshot(&s).await;
    let err = sqlx::query("UPDATE tasks SET state = 'complete' WHERE id = ?1")
        .bind(task)
        .execute(s.writer())
        .await
        .map(|_| ())
        .map_err(StoreError::from);
    // pending -> complete is allowed for tasks (a task whose steps were all resolved);
    // complete -> pending is not.
    assert!(err.is_ok(), "{err:?}");
    let err = sqlx::query("UPDATE tasks SET state = 'pending' WHERE id = ?1")
        .bind(task)
        .execute(s.writer())
        .await
        .map_err(StoreError::from)
        .unwrap_err();
    assert!(err.to_string().contains("illegal task transition"), "{err}");
    assert!(matches!(err, StoreError::Constraint { .. }), "{err}");
    assert_ne!(before, snapshot(&s).await);
    let t = s.task_transitions(task).await.unwrap();
    assert_eq!(t.len(), 1, "one audit row for the allowed change: {t:?}");
    assert_eq!(
        (t[0].from_state, t[0].to_state),
        (TaskState::Pending, TaskState::Complete)
    );
}

#[tokio::test]
async fn a_reopened_file_keeps_its_tasks_and_migrates_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/tasker.db");
    let task = {
        let s = SqliteStore::open(&path, 2).await.unwrap();
        let task = start(&s, &fixtures::diamond(fixtures::NOOP), at(0)).await;
        let c = claim_all(&s, at(1)).await;
        assert_eq!(c.len(), 1);
        s.complete(&[completion(&c[0])], at(2)).await.unwrap();
        task
    };
    let s = SqliteStore::open(&path, 2).await.unwrap();
    let migrations: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(s.reader())
        .await
        .unwrap();
    assert_eq!(
        migrations as usize,
        tasker_store::SQLITE_MIGRATOR.iter().count()
    );
    let steps = s.steps_of_task(task).await.unwrap();
    assert_eq!(
        steps
            .iter()
            .filter(|st| st.state == StepState::Complete)
            .count(),
        1
    );
    assert_eq!(ready_names(&s, task, at(3)).await, names(&["b", "c"]));
}

/// A worker and a `submit` opening one new file at the same moment both succeed: creating the
/// file, switching it to WAL and migrating happen one opener at a time, and an opener that
/// meets a writer waits for it instead of failing with "database is locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_openers_of_one_new_file_at_once_all_succeed() {
    for round in 0..25 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasker.db");
        let openers = (0..6).map(|i| {
            let path = path.clone();
            tokio::spawn(async move {
                let s = SqliteStore::open(&path, 1)
                    .await
                    .unwrap_or_else(|e| panic!("round {round}, opener {i}: {e}"));
                // Each opener writes at once, as a worker's first claim or a submit does.
                start(&s, &fixtures::diamond(fixtures::NOOP), at(0)).await
            })
        });
        let mut tasks = Vec::new();
        for o in openers {
            tasks.push(o.await.unwrap());
        }
        tasks.sort_unstable();
        tasks.dedup();
        assert_eq!(
            tasks.len(),
            6,
            "round {round}: every opener made its own task"
        );
    }
}
