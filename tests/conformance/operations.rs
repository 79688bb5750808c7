//! Templates, task creation with identity keys, cancel, retry, resolve, NOTIFY.

use serde_json::json;
use sqlx::PgPool;
use std::time::Duration;
use tasker_core::fixtures;
use tasker_core::state::{StepState, TaskState};
use tasker_store::*;
use tasker_tests::Backend;
use tasker_tests::store::*;

async fn templates_register_once_per_version<S: Backend>(s: S) {
    let t = fixtures::diamond(fixtures::NOOP);
    let first = s.register_template(&t).await.unwrap();
    assert!(first.created);
    assert_eq!(first.key, "fixtures/diamond@1.0.0");
    let again = s.register_template(&t).await.unwrap();
    assert_eq!(
        (again.template_id, again.created),
        (first.template_id, false)
    );
    assert_eq!(s.template(&t.key()).await.unwrap(), Some(t.clone()));

    let mut changed = t.clone();
    changed.steps[1].config = json!({"changed": true});
    let err = s.register_template(&changed).await.unwrap_err();
    assert!(matches!(err, StoreError::Constraint { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("already registered with a different definition"),
        "{err}"
    );
    assert!(!err.is_retryable());
}

// PostgreSQL only: register_template's own checks of malformed step rows, which the Rust API
// (validated templates only) cannot send.
#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn bad_templates_are_refused_before_anything_is_written(pool: PgPool) {
    let cases = [
        (json!([]), "steps must be a non-empty array"),
        (
            json!([{"name": "a", "handler": "h@1"}, {"name": "a", "handler": "h@1"}]),
            "duplicate step name 'a'",
        ),
        (
            json!([{"name": "a", "handler": "h@1", "depends_on": ["zz"]}]),
            "step 'a' depends on unknown step 'zz'",
        ),
        (
            json!([{"name": "a", "handler": "h@1", "depends_on": ["b"]}, {"name": "b", "handler": "h@1", "depends_on": ["a"]}, {"name": "c", "handler": "h@1"}]),
            "dependency cycle among steps a, b",
        ),
        (
            json!([{"name": "a", "handler": ""}]),
            "step 'a': handler must be non-empty",
        ),
        (
            json!([{"name": "a", "handler": "h@1", "max_attempts": 0}]),
            "bad retry settings",
        ),
        (
            json!([{"name": "a", "handler": "h@1", "backoff_jitter": 2}]),
            "bad retry settings",
        ),
    ];
    for (steps, want) in cases {
        let err = sqlx::query(
            "SELECT * FROM register_template('ns', 'bad', '1.0.0', NULL, NULL, '{}', $1)",
        )
        .bind(&steps)
        .execute(&pool)
        .await
        .map_err(StoreError::from)
        .unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
        assert!(err.to_string().contains(want), "{err} should say {want}");
        let n: i64 = sqlx::query_scalar("SELECT (SELECT count(*) FROM templates) + (SELECT count(*) FROM template_steps) + (SELECT count(*) FROM namespaces)")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "nothing written for {want}");
    }
}

async fn create_task_dedupes_on_identity_key<S: Backend>(s: S) {
    let t = fixtures::linear(3, fixtures::NOOP);
    s.register_template(&t).await.unwrap();
    let req = NewTask::new(t.key(), json!({"order": 7})).with_identity_key("order-7");
    let a = s.create_task(&req, at(0)).await.unwrap();
    let b = s.create_task(&req, at(1)).await.unwrap();
    assert!(a.created && !b.created);
    assert_eq!(a.task_id, b.task_id);
    let other = s
        .create_task(
            &NewTask::new(t.key(), json!({})).with_identity_key("order-8"),
            at(2),
        )
        .await
        .unwrap();
    let plain1 = s
        .create_task(&NewTask::new(t.key(), json!({})), at(2))
        .await
        .unwrap();
    let plain2 = s
        .create_task(&NewTask::new(t.key(), json!({})), at(2))
        .await
        .unwrap();
    assert!(other.created && plain1.created && plain2.created);
    assert_ne!(plain1.task_id, plain2.task_id);
    let n = s.count("SELECT count(*) FROM steps").await.unwrap();
    assert_eq!(n, 12, "the duplicate created no steps");
    let row = s.task(a.task_id).await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.step_count, row.unfinished_steps),
        (TaskState::Pending, 3, 3)
    );
    assert_eq!(row.identity_key.as_deref(), Some("order-7"));
    assert_eq!(row.context, json!({"order": 7}));

    let err = s
        .create_task(&NewTask::new("nope/x@1.0.0", json!({})), at(0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("nope/x@1.0.0"));
    let err = s
        .create_task(&NewTask::new(t.key(), json!([1])), at(0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
}

async fn cancel_stops_everything<S: Backend>(s: S) {
    let task = start(&s, &fixtures::tree(fixtures::NOOP), at(0)).await;
    run_ready(&s, at(0)).await;
    let c = claim_all(&s, at(1)).await;
    assert_eq!(c.len(), 2);
    let out = s.cancel_task(task, at(2)).await.unwrap();
    assert_eq!((out.cancelled, out.steps_cancelled), (true, 6));
    let steps = s.steps_of_task(task).await.unwrap();
    assert_eq!(
        steps
            .iter()
            .filter(|x| x.state == StepState::Cancelled)
            .count(),
        6
    );
    assert!(
        steps
            .iter()
            .all(|x| x.ready_at.is_none() && x.lease_expires_at.is_none())
    );
    assert!(claim_all(&s, at(3)).await.is_empty());
    assert!(
        s.readiness(task, None, at(3))
            .await
            .unwrap()
            .iter()
            .all(|r| !r.ready_for_execution)
    );
    let ctx = s.execution_context(task, at(3)).await.unwrap().unwrap();
    assert_eq!(
        (ctx.execution_status.as_str(), ctx.task_state),
        ("cancelled", TaskState::Cancelled)
    );
    let tt = s.task_transitions(task).await.unwrap();
    assert_eq!(tt.last().unwrap().to_state, TaskState::Cancelled);
    assert_eq!(tt.last().unwrap().metadata["reason"], "cancelled");
    // Again: nothing to do. A complete task cannot be cancelled.
    assert!(!s.cancel_task(task, at(4)).await.unwrap().cancelled);
    let done = start(&s, &fixtures::linear(1, fixtures::NOOP), at(5)).await;
    run_ready(&s, at(5)).await;
    let err = s.cancel_task(done, at(6)).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidState(_)), "{err}");
    let err = s
        .cancel_task(TaskId::new(424_242), at(6))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
}

async fn retry_gives_failed_steps_a_fresh_budget<S: Backend>(s: S) {
    let task = start(&s, &fixtures::diamond(fixtures::NOOP), at(0)).await;
    run_ready(&s, at(0)).await;
    let c = claim_all(&s, at(1)).await;
    let (b, cc): (Vec<_>, Vec<_>) = c.iter().partition(|x| x.step_name == "b");
    s.complete(&[completion(cc[0])], at(2)).await.unwrap();
    let o = s.fail(&[failure(b[0], false, None)], at(2)).await.unwrap();
    assert_eq!(o[0].task_finalized, Some(TaskState::Error));
    let err = s
        .retry_task(TaskId::new(task.get() + 1000), at(3))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)));

    let r = s.retry_task(task, at(3)).await.unwrap();
    assert_eq!(r.steps_reset, 1);
    let t = s.task(task).await.unwrap().unwrap();
    assert_eq!((t.state, t.error_steps), (TaskState::Pending, 0));
    let step_b = s.step(b[0].step_id).await.unwrap().unwrap();
    assert_eq!((step_b.state, step_b.attempts), (StepState::Pending, 0));
    assert_eq!(ready_names(&s, task, at(3)).await, names(&["b"]));
    assert_eq!(run_ready(&s, at(3)).await, names(&["b"]));
    assert_eq!(run_ready(&s, at(4)).await, names(&["d"]));
    let t = s.task(task).await.unwrap().unwrap();
    assert_eq!(t.state, TaskState::Complete);
    let states: Vec<_> = s
        .task_transitions(task)
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.to_state)
        .collect();
    use TaskState::*;
    assert_eq!(
        states,
        vec![InProgress, Error, Pending, InProgress, Complete]
    );
    let err = s.retry_task(task, at(5)).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidState(_)), "{err}");
}

async fn resolving_a_step_releases_its_children<S: Backend>(s: S) {
    let task = start(&s, &fixtures::linear(3, fixtures::NOOP), at(0)).await;
    let c = claim_all(&s, at(0)).await;
    s.fail(&[failure(&c[0], false, None)], at(1)).await.unwrap();
    assert_eq!(s.task(task).await.unwrap().unwrap().state, TaskState::Error);

    let r = s
        .resolve_step(c[0].step_id, Some(json!({"by": "ops"})), at(2))
        .await
        .unwrap();
    assert_eq!((r.ready_children, r.task_state), (1, TaskState::Pending));
    assert_eq!(ready_names(&s, task, at(2)).await, names(&["step_2"]));
    let claimed = claim_all(&s, at(2)).await;
    assert_eq!(claimed[0].parent_results, json!({"step_1": {"by": "ops"}}));
    // A pending step can be resolved too, and then the task completes.
    let ids = ids(&s, task).await;
    s.complete(&[completion(&claimed[0])], at(3)).await.unwrap();
    let r = s.resolve_step(ids["step_3"], None, at(4)).await.unwrap();
    assert_eq!(r.task_state, TaskState::Complete);
    let err = s
        .resolve_step(ids["step_2"], None, at(5))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidState(_)), "{err}");
    let ctx = s.execution_context(task, at(5)).await.unwrap().unwrap();
    assert_eq!(
        (
            ctx.completed_steps,
            ctx.resolved_steps,
            ctx.completion_percentage
        ),
        (1, 2, 100.0)
    );
}

// PostgreSQL only: LISTEN/NOTIFY wake-ups (the embedded store wakes its in-process workers
// directly).
#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn one_notification_per_statement(pool: PgPool) {
    let s = PgStore::new(pool.clone());
    let mut listener = s.ready_listener().await.unwrap();
    start(&s, &fixtures::parallel_merge(fixtures::NOOP), at(0)).await;
    let n = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.payload(), "3", "three roots ready");

    let c = claim_all(&s, at(1)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), listener.recv())
            .await
            .is_err(),
        "a claim readies nothing"
    );
    let items: Vec<_> = c.iter().map(completion).collect();
    s.complete(&items, at(2)).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.payload(), "1", "merge became ready");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), listener.recv())
            .await
            .is_err()
    );

    // A failure with a future retry wakes nobody; an immediate one does.
    let c = claim_all(&s, at(3)).await;
    s.fail(&[failure(&c[0], true, None)], at(3)).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), listener.recv())
            .await
            .is_err()
    );
    let c = claim_all(&s, at(2_000)).await;
    s.fail(&[failure(&c[0], true, Some(0))], at(2_000))
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.payload(), "1");
}

// PostgreSQL only: a fused hop wakes other workers only for released steps its own claim
// left behind (the released steps are locked by its transaction, so nobody else took them).
#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn a_hop_notifies_only_for_released_steps_it_left_behind(pool: PgPool) {
    let s = PgStore::new(pool.clone());
    let diamond = fixtures::diamond(fixtures::NOOP);
    let first = start(&s, &diamond, at(0)).await;
    let second = s
        .create_task(&NewTask::new(diamond.key(), json!({})), at(0))
        .await
        .unwrap()
        .task_id;
    let roots = claim_all(&s, at(1)).await;
    assert_eq!(roots.len(), 2);
    let mut listener = s.ready_listener().await.unwrap();
    let quiet = async |l: &mut sqlx::postgres::PgListener| {
        tokio::time::timeout(Duration::from_millis(200), l.recv())
            .await
            .is_err()
    };

    // The first root releases two children and the claim takes both: nobody is woken.
    let root = roots.iter().find(|c| c.task_id == first).unwrap();
    let (_, next) = s
        .complete_and_claim(&[completion(root)], &[], "w1", 2, LEASE, at(2))
        .await
        .unwrap();
    assert_eq!(next.len(), 2);
    assert!(next.iter().all(|c| c.task_id == first));
    assert!(quiet(&mut listener).await, "nothing was left behind");

    // The second root releases two, the claim takes one: one is announced.
    let root = roots.iter().find(|c| c.task_id == second).unwrap();
    let (_, next) = s
        .complete_and_claim(&[completion(root)], &[], "w1", 1, LEASE, at(3))
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    let n = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.payload(), "1", "one released step left behind");
    assert!(quiet(&mut listener).await, "one notification per call");
}

// PostgreSQL only: a claim is on disk when its commit returns. A claim lost in a server
// crash would hand the step's next claim the same token, so the worker of the lost claim,
// still running the step, could complete it in the new holder's name.
#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn a_claim_is_flushed_before_its_commit_returns(pool: PgPool) {
    let s = PgStore::new(pool.clone());
    let t = fixtures::linear(2, fixtures::NOOP);
    for _ in 0..3 {
        start(&s, &t, at(0)).await;
    }
    let mut conn = pool.acquire().await.unwrap();
    for round in 0..3 {
        sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
        let claimed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM claim_ready_steps('w', 1, interval '30 s', $1)",
        )
        .bind(at(1 + round))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert_eq!(claimed, 1);
        // Where the transaction's WAL ends, before its commit record.
        let written: String = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        sqlx::query("COMMIT").execute(&mut *conn).await.unwrap();
        // An asynchronous commit leaves this to the WAL writer, up to wal_writer_delay later.
        let flushed: bool = sqlx::query_scalar("SELECT pg_current_wal_flush_lsn() >= $1::pg_lsn")
            .bind(&written)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert!(flushed, "claim {round} was not flushed at its commit");
    }
}

async fn bad_arguments_are_refused_by_name<S: Backend>(s: S) {
    start(&s, &fixtures::linear(2, fixtures::NOOP), at(0)).await;
    let before = snapshot(&s).await;
    let err = s.claim("w", 0, LEASE, at(0)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidInput(_)) && err.to_string().contains("limit"),
        "{err}"
    );
    let err = s.claim("w", 5, Duration::ZERO, at(0)).await.unwrap_err();
    assert!(err.to_string().contains("lease must be positive"), "{err}");
    let err = s.claim("", 5, LEASE, at(0)).await.unwrap_err();
    assert!(err.to_string().contains("worker"), "{err}");
    assert_eq!(before, snapshot(&s).await);
}

// PostgreSQL only: the SQL functions' own argument checks (arrays of unequal length), which
// the Rust API cannot produce.
#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn sql_array_arguments_are_checked_by_position(pool: PgPool) {
    let s = PgStore::new(pool.clone());
    start(&s, &fixtures::linear(2, fixtures::NOOP), at(0)).await;
    let before = snapshot(&s).await;
    let err = sqlx::query("SELECT * FROM complete_steps('{1,2}', '{1}', '{null,null}')")
        .execute(&pool)
        .await
        .map_err(StoreError::from)
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
    assert!(
        err.to_string()
            .contains("array argument 2 has 1 elements, expected 2"),
        "{err}"
    );
    let err =
        sqlx::query("SELECT * FROM fail_steps('{1}', '{1}', '{trap}', '{m}', '{true,false}')")
            .execute(&pool)
            .await
            .map_err(StoreError::from)
            .unwrap_err();
    assert!(
        err.to_string().contains("fail_steps: array argument 5"),
        "{err}"
    );
    assert_eq!(before, snapshot(&s).await);
}

async fn claims_report_task_starts_and_the_next_due_time<S: Backend>(s: S) {
    assert_eq!(s.next_ready_at().await.unwrap(), None);
    let task = start(&s, &fixtures::parallel_merge(fixtures::NOOP), at(0)).await;
    assert_eq!(s.next_ready_at().await.unwrap(), Some(at(0)));
    let first = s.claim("w", 1, LEASE, at(5)).await.unwrap();
    assert!(first[0].task_started);
    let rest = s.claim("w", 5, LEASE, at(6)).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert!(rest.iter().all(|c| !c.task_started));
    assert_eq!(s.task(task).await.unwrap().unwrap().started_at, Some(at(5)));
    assert_eq!(s.next_ready_at().await.unwrap(), None);
    // A retry due later is the next due time.
    let o = s
        .fail(&[failure(&first[0], true, Some(4_000))], at(7))
        .await
        .unwrap();
    assert_eq!(s.next_ready_at().await.unwrap(), o[0].next_ready_at);
    assert_eq!(o[0].next_ready_at, Some(at(4_007)));
}

tasker_tests::on_both_backends!(
    templates_register_once_per_version,
    create_task_dedupes_on_identity_key,
    cancel_stops_everything,
    retry_gives_failed_steps_a_fresh_budget,
    resolving_a_step_releases_its_children,
    bad_arguments_are_refused_by_name,
    claims_report_task_starts_and_the_next_due_time,
);
