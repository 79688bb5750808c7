//! Claims scoped to one task (`Store::claim_of_task`, `complete_and_claim_of_task`, a worker
//! with `only_task`), as `tasker run` makes them on a shared store: another task's ready
//! steps stay exactly as they were.

use std::sync::Arc;
use std::time::Duration;

use tasker_core::fixtures::{self, NOOP};
use tasker_core::state::{StepState, TaskState};
use tasker_engine::testing::InProcessExecutor;
use tasker_engine::{EventBus, Worker, WorkerConfig};
use tasker_store::*;
use tasker_tests::store::*;
use tasker_tests::{Backend, wait_until_done, worker_config};
use tokio_util::sync::CancellationToken;

tasker_tests::on_both_backends!(
    a_scoped_claim_takes_only_its_task_steps,
    a_scoped_hop_claims_only_its_task_children,
    a_worker_scoped_to_its_task_leaves_the_others_untouched,
);

/// Every step of `task` pending, unclaimed and unattempted, its roots still ready.
async fn untouched<S: Store>(s: &S, task: TaskId) {
    let row = s.task(task).await.unwrap().expect("task");
    assert_eq!(row.state, TaskState::Pending);
    for step in s.steps_of_task(task).await.unwrap() {
        assert_eq!(step.state, StepState::Pending, "{}", step.name);
        assert_eq!((step.claim_count, step.attempts), (0, 0), "{}", step.name);
        assert!(s.attempts_of_step(step.id).await.unwrap().is_empty());
    }
}

async fn a_scoped_claim_takes_only_its_task_steps<S: Backend>(s: S) {
    let t = fixtures::parallel_merge(NOOP);
    // The other task first, so an unscoped claim would take its steps first.
    let other = start(&s, &t, at(0)).await;
    let mine = start(&s, &t, at(10)).await;
    let roots = ready_names(&s, mine, at(20)).await;
    assert!(roots.len() > 1, "{roots:?}");

    let claimed = s
        .claim_of_task(mine, "w", 100, LEASE, at(20))
        .await
        .unwrap();
    assert!(claimed.iter().all(|c| c.task_id == mine), "{claimed:?}");
    let names: std::collections::BTreeSet<String> =
        claimed.iter().map(|c| c.step_name.clone()).collect();
    assert_eq!(names, roots);
    assert!(claimed.iter().all(|c| c.task_started));
    untouched(&s, other).await;

    // A limit is a limit, and nothing more of the task is ready.
    let again = s
        .claim_of_task(mine, "w", 100, LEASE, at(20))
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    // A task with nothing ready (or none at all) claims nothing.
    let none = s
        .claim_of_task(TaskId::new(i64::MAX), "w", 100, LEASE, at(20))
        .await
        .unwrap();
    assert!(none.is_empty());
    untouched(&s, other).await;

    // The unscoped claim still finds the other task's steps, in queue order.
    let rest = s.claim("w", 1, LEASE, at(30)).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].task_id, other);
}

async fn a_scoped_hop_claims_only_its_task_children<S: Backend>(s: S) {
    let t = fixtures::linear(3, NOOP);
    let mine = start(&s, &t, at(0)).await;
    let other = start(&s, &t, at(0)).await;
    let first = s.claim_of_task(mine, "w", 10, LEASE, at(10)).await.unwrap();
    assert_eq!(first.len(), 1);
    let items: Vec<_> = first.iter().map(completion).collect();
    // The claim may take up to 10, but only this task's released child is its to take.
    let (out, next) = s
        .complete_and_claim_of_task(&items, &[], mine, "w", 10, LEASE, at(20))
        .await
        .unwrap();
    assert!(out.iter().all(|o| o.accepted()), "{out:?}");
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(
        (next[0].task_id, next[0].step_name.as_str()),
        (mine, "step_2")
    );
    untouched(&s, other).await;

    // Completions of any task are recorded; the claim stays scoped.
    let theirs = s
        .claim_of_task(other, "x", 10, LEASE, at(30))
        .await
        .unwrap();
    let items: Vec<_> = theirs.iter().chain(&next).map(completion).collect();
    let (out, claimed) = s
        .complete_and_claim_of_task(&items, &[], mine, "w", 10, LEASE, at(40))
        .await
        .unwrap();
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|o| o.accepted()), "{out:?}");
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(
        (claimed[0].task_id, claimed[0].step_name.as_str()),
        (mine, "step_3")
    );
    // The other task's released child was left for others: still ready, unclaimed.
    let other_steps = s.steps_of_task(other).await.unwrap();
    let step_2 = other_steps.iter().find(|st| st.name == "step_2").unwrap();
    assert_eq!(
        (step_2.state, step_2.claim_count, step_2.ready_at.is_some()),
        (StepState::Pending, 0, true)
    );
}

async fn a_worker_scoped_to_its_task_leaves_the_others_untouched<S: Backend>(s: S) {
    let t = fixtures::mixed_20(NOOP);
    s.register_template(&t).await.unwrap();
    let others = [
        start(&s, &t, chrono::Utc::now()).await,
        start(&s, &t, chrono::Utc::now()).await,
    ];
    let mine = start(&s, &t, chrono::Utc::now()).await;
    let cfg = WorkerConfig {
        only_task: Some(mine),
        ..worker_config("scoped")
    };
    let worker = Worker::new(
        Arc::new(s.clone()),
        Arc::new(InProcessExecutor::new()),
        EventBus::default(),
        cfg,
    );
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    wait_until_done(&s, &[mine], Duration::from_secs(60)).await;
    stop.cancel();
    let totals = run.await.unwrap();
    assert_eq!(totals.claimed, t.steps.len() as u64);
    assert_eq!(
        s.task(mine).await.unwrap().unwrap().state,
        TaskState::Complete
    );
    for other in others {
        untouched(&s, other).await;
    }
}
