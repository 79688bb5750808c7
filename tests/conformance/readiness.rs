//! get_step_readiness_status / get_task_execution_context / levels / health, driven through
//! the hot-path functions at exact instants.

use tasker_core::backoff::Backoff;
use tasker_core::error_kind::ErrorKind;
use tasker_core::fixtures;
use tasker_core::state::{StepState, TaskState};
use tasker_store::*;
use tasker_tests::Backend;
use tasker_tests::store::*;

async fn a_never_tried_step_is_ready<S: Backend>(s: S) {
    let task = start(&s, &fixtures::linear(4, fixtures::NOOP), at(0)).await;
    let rows = s.readiness(task, None, at(0)).await.unwrap();
    assert_eq!(rows.len(), 4);
    let first = &rows[0];
    assert_eq!(first.name, "step_1");
    assert_eq!(first.attempts, 0);
    assert!(first.retry_eligible && first.dependencies_satisfied && first.ready_for_execution);
    assert_eq!(first.next_retry_at, None);
    for r in &rows[1..] {
        assert!(!r.ready_for_execution && !r.dependencies_satisfied, "{r:?}");
        assert_eq!((r.total_parents, r.completed_parents), (1, 0));
        assert!(r.retry_eligible, "never tried means eligible: {r:?}");
    }
    // A child that was never tried is ready as soon as its parent completes.
    assert_eq!(run_ready(&s, at(10)).await, names(&["step_1"]));
    assert_eq!(ready_names(&s, task, at(10)).await, names(&["step_2"]));
    let r = s
        .readiness(task, Some(&[rows[1].step_id]), at(10))
        .await
        .unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].attempts, r[0].completed_parents), (0, 1));
    let ctx = s.execution_context(task, at(10)).await.unwrap().unwrap();
    assert_eq!(ctx.execution_status, "has_ready_steps");
    assert_eq!(ctx.recommended_action, "execute_ready_steps");
    assert_eq!(ctx.ready_steps, 1);
    assert_eq!(ctx.completion_percentage, 25.0);
}

async fn backoff_is_honoured_to_the_millisecond<S: Backend>(s: S) {
    let t = one_step(
        "backoff",
        "{ max_attempts: 4, backoff: { base_ms: 1000, multiplier: 2.0, cap_ms: 60000, jitter: 0.2 } }",
    );
    let task = start(&s, &t, at(0)).await;
    let step = ids(&s, task).await["only"];
    let b = Backoff {
        base_ms: 1000,
        multiplier: 2.0,
        cap_ms: 60_000,
        jitter: 0.2,
    };

    let mut now = 0i64;
    for failure in 1..=3u32 {
        let c = claim_all(&s, at(now)).await;
        assert_eq!(c.len(), 1, "failure {failure}");
        assert_eq!(c[0].attempt, failure);
        let out = s.fail(&[failure_of(&c[0])], at(now)).await.unwrap();
        let delay = b.delay_ms(step.get(), failure) as i64;
        assert_eq!(out[0].decision, Some(RetryDecision::Retry));
        assert_eq!(out[0].next_ready_at, Some(at(now + delay)));
        // One millisecond early: neither the readiness function nor the claim sees it.
        let early = at(now + delay - 1);
        let r = &s.readiness(task, None, early).await.unwrap()[0];
        assert_eq!(r.state, StepState::WaitingForRetry);
        assert_eq!(r.next_retry_at, Some(at(now + delay)));
        assert!(r.retry_eligible && !r.ready_for_execution);
        assert!(claim_all(&s, early).await.is_empty());
        // Exactly on time: both do.
        now += delay;
        assert!(s.readiness(task, None, at(now)).await.unwrap()[0].ready_for_execution);
    }
    let c = claim_all(&s, at(now)).await;
    assert_eq!(c[0].attempt, 4);
    let out = s.complete(&[completion(&c[0])], at(now)).await.unwrap();
    assert_eq!(out[0].task_finalized, Some(TaskState::Complete));
}

fn failure_of(c: &ClaimedStep) -> StepFailure {
    failure(c, true, None)
}

async fn retries_exhaust_into_error_and_block_the_task<S: Backend>(s: S) {
    let t = one_step(
        "exhaust",
        "{ max_attempts: 2, backoff: { base_ms: 100, multiplier: 2.0, cap_ms: 1000, jitter: 0.0 } }",
    );
    let task = start(&s, &t, at(0)).await;
    let c = claim_all(&s, at(0)).await;
    let o = s.fail(&[failure_of(&c[0])], at(0)).await.unwrap();
    assert_eq!(o[0].decision, Some(RetryDecision::Retry));
    assert_eq!(o[0].task_finalized, None);
    // Retryable and waiting: processing, never blocked.
    let ctx = s.execution_context(task, at(50)).await.unwrap().unwrap();
    assert_eq!(ctx.execution_status, "processing");
    assert_eq!(ctx.health_status, "recovering");

    let c = claim_all(&s, at(100)).await;
    assert_eq!(c.len(), 1);
    let o = s.fail(&[failure_of(&c[0])], at(100)).await.unwrap();
    assert_eq!(o[0].decision, Some(RetryDecision::Exhausted));
    assert_eq!(o[0].next_ready_at, None);
    assert_eq!(o[0].task_finalized, Some(TaskState::Error));

    let r = &s.readiness(task, None, at(10_000)).await.unwrap()[0];
    assert_eq!(r.state, StepState::Error);
    assert_eq!((r.attempts, r.max_attempts), (2, 2));
    assert!(!r.retry_eligible && !r.ready_for_execution);
    assert!(claim_all(&s, at(10_000)).await.is_empty());
    let ctx = s
        .execution_context(task, at(10_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ctx.execution_status, "blocked_by_failures");
    assert_eq!(ctx.recommended_action, "handle_failures");
    assert_eq!(ctx.health_status, "blocked");
    let a = s.attempts_of_step(r.step_id).await.unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].decision, Some(RetryDecision::Retry));
    assert_eq!(a[1].decision, Some(RetryDecision::Exhausted));
    assert_eq!(a[1].error_kind, Some(ErrorKind::Trap));
}

async fn a_permanent_error_blocks_only_when_nothing_else_can_move<S: Backend>(s: S) {
    let task = start(&s, &fixtures::diamond(fixtures::NOOP), at(0)).await;
    assert_eq!(run_ready(&s, at(0)).await, names(&["a"]));
    let c = claim_all(&s, at(1)).await;
    let b = c.iter().find(|x| x.step_name == "b").unwrap();
    let cc = c.iter().find(|x| x.step_name == "c").unwrap();
    let o = s.fail(&[failure(b, false, None)], at(2)).await.unwrap();
    assert_eq!(o[0].decision, Some(RetryDecision::Permanent));
    assert_eq!(o[0].task_finalized, None, "c is still running");
    let ctx = s.execution_context(task, at(2)).await.unwrap().unwrap();
    assert_eq!(ctx.execution_status, "processing");
    assert_eq!(
        s.task(task).await.unwrap().unwrap().state,
        TaskState::InProgress
    );

    let o = s.complete(&[completion(cc)], at(3)).await.unwrap();
    assert_eq!(o[0].task_finalized, Some(TaskState::Error));
    let ctx = s.execution_context(task, at(3)).await.unwrap().unwrap();
    assert_eq!(ctx.execution_status, "blocked_by_failures");
    assert_eq!(
        (ctx.completed_steps, ctx.failed_steps, ctx.pending_steps),
        (2, 1, 1)
    );
    let d = s
        .readiness(task, None, at(3))
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.name == "d")
        .unwrap();
    assert_eq!((d.total_parents, d.completed_parents), (2, 1));
    assert!(!d.ready_for_execution);
}

async fn a_step_that_is_not_retryable_fails_permanently<S: Backend>(s: S) {
    let t = one_step("noretry", "{ max_attempts: 5, retryable: false }");
    let task = start(&s, &t, at(0)).await;
    let c = claim_all(&s, at(0)).await;
    let o = s.fail(&[failure(&c[0], true, None)], at(0)).await.unwrap();
    assert_eq!(o[0].decision, Some(RetryDecision::Permanent));
    assert_eq!(o[0].task_finalized, Some(TaskState::Error));
    assert_eq!(s.task(task).await.unwrap().unwrap().state, TaskState::Error);
}

async fn a_server_requested_delay_replaces_the_backoff<S: Backend>(s: S) {
    let t = one_step(
        "delay",
        "{ max_attempts: 5, max_retry_after_ms: 3000, backoff: { base_ms: 1000, multiplier: 2.0, cap_ms: 60000, jitter: 0.0 } }",
    );
    let task = start(&s, &t, at(0)).await;

    // Longer than the backoff: the backoff instant (1 s) must not make it ready (no OR).
    let c = claim_all(&s, at(0)).await;
    let o = s
        .fail(&[failure(&c[0], true, Some(2_500))], at(0))
        .await
        .unwrap();
    assert_eq!(o[0].next_ready_at, Some(at(2_500)));
    let r = &s.readiness(task, None, at(1_000)).await.unwrap()[0];
    assert_eq!(r.backoff_request_ms, Some(2_500));
    assert_eq!(r.next_retry_at, Some(at(2_500)));
    assert!(!r.ready_for_execution);
    assert!(claim_all(&s, at(2_499)).await.is_empty());
    assert!(s.readiness(task, None, at(2_500)).await.unwrap()[0].ready_for_execution);

    // Beyond the template's maximum: capped at 3 s.
    let c = claim_all(&s, at(2_500)).await;
    let o = s
        .fail(&[failure(&c[0], true, Some(60_000))], at(2_500))
        .await
        .unwrap();
    assert_eq!(o[0].next_ready_at, Some(at(5_500)));
    assert_eq!(
        s.readiness(task, None, at(5_500)).await.unwrap()[0].backoff_request_ms,
        Some(3_000)
    );

    // Shorter than the backoff (4 s for the 3rd failure): wins too.
    let c = claim_all(&s, at(5_500)).await;
    let o = s
        .fail(&[failure(&c[0], true, Some(10))], at(5_500))
        .await
        .unwrap();
    assert_eq!(o[0].next_ready_at, Some(at(5_510)));
    // Without a request the computed backoff applies again (4th failure: 8 s).
    let c = claim_all(&s, at(5_510)).await;
    assert_eq!(c.len(), 1);
    let o = s
        .fail(&[failure(&c[0], true, None)], at(6_000))
        .await
        .unwrap();
    assert_eq!(o[0].next_ready_at, Some(at(14_000)));
    let r = &s.readiness(task, None, at(14_000)).await.unwrap()[0];
    assert_eq!(r.backoff_request_ms, None);
    assert_eq!(r.next_retry_at, Some(at(14_000)));
    assert!(r.ready_for_execution);
}

async fn execution_status_precedence_with_parallel_steps<S: Backend>(s: S) {
    let t = fixtures::parallel_merge(fixtures::NOOP);
    let task = start(&s, &t, at(0)).await;
    let ctx = s.execution_context(task, at(0)).await.unwrap().unwrap();
    assert_eq!(
        (ctx.execution_status.as_str(), ctx.ready_steps),
        ("has_ready_steps", 3)
    );
    assert_eq!(ctx.task_state, TaskState::Pending);

    // Two claimed, one still ready: ready wins over processing.
    let c = s.claim("w1", 2, LEASE, at(1)).await.unwrap();
    assert_eq!(c.len(), 2);
    let ctx = s.execution_context(task, at(1)).await.unwrap().unwrap();
    assert_eq!(ctx.execution_status, "has_ready_steps");
    assert_eq!(ctx.in_progress_steps, 2);
    assert_eq!(ctx.task_state, TaskState::InProgress);

    // One fails permanently while others run: processing, not blocked.
    let third = s.claim("w1", 5, LEASE, at(2)).await.unwrap();
    s.fail(&[failure(&c[0], false, None)], at(3)).await.unwrap();
    let ctx = s.execution_context(task, at(3)).await.unwrap().unwrap();
    assert_eq!(ctx.execution_status, "processing");
    assert_eq!(ctx.health_status, "recovering");
    // The rest finish: now nothing can move and it is blocked.
    let mut rest: Vec<_> = third.iter().map(completion).collect();
    rest.push(completion(&c[1]));
    let out = s.complete(&rest, at(4)).await.unwrap();
    assert!(out.iter().all(|o| o.accepted()));
    assert_eq!(out.last().unwrap().task_finalized, Some(TaskState::Error));
    let ctx = s.execution_context(task, at(4)).await.unwrap().unwrap();
    assert_eq!(ctx.execution_status, "blocked_by_failures");

    // Batch form covers several tasks, and a finished one reads all_complete.
    let t2 = s
        .create_task(&NewTask::new(t.key(), serde_json::json!({})), at(5))
        .await
        .unwrap();
    for i in 0..3 {
        run_ready(&s, at(6 + i)).await;
    }
    let both = s
        .execution_context_batch(&[task, t2.task_id, TaskId::new(999_999)], at(10))
        .await
        .unwrap();
    assert_eq!(both.len(), 2);
    assert_eq!(both[1].execution_status, "all_complete");
    assert_eq!(both[1].recommended_action, "none");
    assert_eq!(both[1].completion_percentage, 100.0);
    assert_eq!(both[1].task_state, TaskState::Complete);
}

async fn dependency_levels_match_the_core_dag<S: Backend>(s: S) {
    for t in all_fixtures() {
        let task = start(&s, &t, at(0)).await;
        let dag = t.dag().unwrap();
        let want = dag.levels();
        let got = s.dependency_levels(task).await.unwrap();
        assert_eq!(got.len(), t.steps.len(), "{}", t.key());
        for l in got {
            let i = dag.index(&l.name).unwrap();
            assert_eq!(l.level, want[i], "{} step {}", t.key(), l.name);
        }
        // Step ids follow a topological order.
        let steps = s.steps_of_task(task).await.unwrap();
        let id_of: std::collections::HashMap<_, _> =
            steps.iter().map(|x| (x.name.clone(), x.id)).collect();
        for st in &t.steps {
            for d in &st.depends_on {
                assert!(id_of[d] < id_of[&st.name]);
            }
        }
    }
}

async fn health_counts_by_state<S: Backend>(s: S) {
    let t = fixtures::diamond(fixtures::NOOP);
    start(&s, &t, at(0)).await;
    s.create_task(&NewTask::new(t.key(), serde_json::json!({})), at(0))
        .await
        .unwrap();
    let h = s.health_counts(at(0)).await.unwrap();
    assert_eq!(
        (h.total_tasks, h.pending_tasks, h.total_steps, h.ready_steps),
        (2, 2, 8, 2)
    );
    let c = s.claim("w", 1, LEASE, at(1)).await.unwrap();
    s.fail(&[failure(&c[0], true, None)], at(1)).await.unwrap();
    let h = s.health_counts(at(1)).await.unwrap();
    assert_eq!(
        (
            h.in_progress_tasks,
            h.waiting_for_retry_steps,
            h.retry_backlog
        ),
        (1, 1, 1)
    );
    assert_eq!(h.ready_steps, 1);
    s.claim("w", 1, LEASE, at(2)).await.unwrap();
    let h = s.health_counts(at(40_000)).await.unwrap();
    assert_eq!((h.in_progress_steps, h.expired_leases), (1, 1));
    assert!(h.active_connections >= 1 && h.max_connections > 0);
}

/// A setting past the validated maximum (a template built in code skips validation) and a
/// handler asking for u64::MAX ms: the failure is still recorded, due at the 30-day clamp.
/// Before, the embedded store's interval arithmetic overflowed, the failure was never
/// recorded and the step ended as `lease_lost`.
async fn a_huge_retry_after_is_clamped_not_lost<S: Backend>(s: S) {
    let mut t = one_step(
        "huge_delay",
        "{ max_attempts: 5, backoff: { jitter: 0.0 } }",
    );
    t.steps[0].retry.max_retry_after_ms = i64::MAX as u64;
    start(&s, &t, at(0)).await;
    let c = claim_all(&s, at(0)).await;
    let o = s
        .fail(&[failure(&c[0], true, Some(u64::MAX))], at(0))
        .await
        .unwrap();
    let max = tasker_core::backoff::MAX_DELAY_MS as i64;
    assert_eq!(o[0].decision, Some(RetryDecision::Retry));
    assert_eq!(o[0].next_ready_at, Some(at(max)));
    assert!(claim_all(&s, at(max - 1)).await.is_empty());
    assert_eq!(claim_all(&s, at(max)).await.len(), 1);
}

tasker_tests::on_both_backends!(
    a_huge_retry_after_is_clamped_not_lost,
    a_never_tried_step_is_ready,
    backoff_is_honoured_to_the_millisecond,
    retries_exhaust_into_error_and_block_the_task,
    a_permanent_error_blocks_only_when_nothing_else_can_move,
    a_step_that_is_not_retryable_fails_permanently,
    a_server_requested_delay_replaces_the_backoff,
    execution_status_precedence_with_parallel_steps,
    dependency_levels_match_the_core_dag,
    health_counts_by_state,
);
