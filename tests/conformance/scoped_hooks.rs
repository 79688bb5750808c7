//! Hook deliveries scoped to one task (`Store::claim_hook_deliveries_of_task`, a deliverer
//! with `only_task`, a `Node` whose worker has `only_task`), as `tasker run` makes them on a
//! shared store: another task's outbox rows are neither claimed nor delivered.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tasker_core::state::TaskState;
use tasker_engine::testing::InProcessExecutor;
use tasker_engine::{ComponentError, DeliveryConfig, HookDeliverer, HookRunner, WorkerConfig};
use tasker_runtime::Node;
use tasker_store::*;
use tasker_tests::store::*;
use tasker_tests::{Backend, wait_until_done, worker_config};
use tokio_util::sync::CancellationToken;

tasker_tests::on_both_backends!(
    a_scoped_hook_claim_takes_only_its_task_rows,
    a_scoped_deliverer_delivers_only_its_task_events,
    a_node_scoped_to_its_task_delivers_only_its_task_hooks,
);

const HOOKED: &str = "namespace: tests\nname: scoped_hooks\nversion: 1.0.0\n\
hooks:\n  - {component: audit@0.1.0, events: ['*']}\n\
steps:\n  - {name: a, handler: noop@1.0.0}\n\
\x20 - {name: b, handler: noop@1.0.0, depends_on: a}\n";

/// Every outbox row of `task` pending and never claimed.
async fn unclaimed<S: Store>(s: &S, task: TaskId) {
    let rows = s.hook_outbox_of_task(task).await.unwrap();
    assert!(!rows.is_empty(), "the task has hook rows");
    for r in rows {
        assert_eq!(
            (r.state, r.claims, r.lease_owner.as_deref()),
            (DeliveryState::Pending, 0, None),
            "{r:?}"
        );
    }
}

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(TaskId, String)>>,
}

impl HookRunner for Recorder {
    fn deliver<'a>(
        &'a self,
        job: &'a HookDeliveryJob,
    ) -> BoxFuture<'a, std::result::Result<(), ComponentError>> {
        self.seen
            .lock()
            .unwrap()
            .push((job.task_id, job.event_name.clone()));
        Box::pin(async { Ok(()) })
    }
}

async fn a_scoped_hook_claim_takes_only_its_task_rows<S: Backend>(s: S) {
    let t = template(HOOKED);
    // The other task first, so an unscoped claim would take its rows first.
    let other = start(&s, &t, at(0)).await;
    let mine = start(&s, &t, at(10)).await;

    let claimed = s
        .claim_hook_deliveries_of_task(mine, "d", 1, LEASE, at(20))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(
        (claimed[0].task_id, claimed[0].event_name.as_str()),
        (mine, "task.created")
    );
    unclaimed(&s, other).await;
    // Only the head of the (hook, task) queue, and it is leased: nothing more of the task.
    let again = s
        .claim_hook_deliveries_of_task(mine, "d", 100, LEASE, at(20))
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    // A task without rows (or none at all) claims nothing.
    let none = s
        .claim_hook_deliveries_of_task(TaskId::new(i64::MAX), "d", 100, LEASE, at(20))
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
    unclaimed(&s, other).await;

    // Delivered, the head passes on to the task's next row, still only this task's.
    let ok = HookDeliveryResult {
        delivery_id: claimed[0].delivery_id,
        token: claimed[0].token,
        error: None,
    };
    let fin = s.finish_hook_deliveries(&[ok], at(30)).await.unwrap();
    assert!(fin[0].accepted, "{fin:?}");
    let c = claim_all(&s, at(30)).await; // the other task's `a` too, for more rows
    assert_eq!(c.len(), 2, "{c:?}");
    let next = s
        .claim_hook_deliveries_of_task(mine, "d", 100, LEASE, at(40))
        .await
        .unwrap();
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(
        (next[0].task_id, next[0].event_name.as_str()),
        (mine, "task.started")
    );
    unclaimed(&s, other).await;
    assert_hook_heads(&s).await;

    // The unscoped claim still finds the other task's head, in queue order.
    let rest = s
        .claim_hook_deliveries("d", 100, LEASE, at(50))
        .await
        .unwrap();
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(
        (rest[0].task_id, rest[0].event_name.as_str()),
        (other, "task.created")
    );
}

async fn a_scoped_deliverer_delivers_only_its_task_events<S: Backend>(s: S) {
    let t = template(HOOKED);
    // On the deliverer's clock (the system's): the rows are due.
    let other = start(&s, &t, chrono::Utc::now()).await;
    let mine = start(&s, &t, chrono::Utc::now()).await;
    let rec = Arc::new(Recorder::default());
    let d = HookDeliverer::new(
        Arc::new(s.clone()),
        rec.clone(),
        DeliveryConfig {
            only_task: Some(mine),
            ..DeliveryConfig::default()
        },
    );
    // One row per round (the head of the one (hook, task) queue); a bound, not a sleep.
    for _ in 0..10 {
        if d.deliver_once().await.unwrap() == 0 {
            break;
        }
    }
    let seen = rec.seen.lock().unwrap().clone();
    assert_eq!(seen, [(mine, "task.created".to_owned())]);
    unclaimed(&s, other).await;
}

async fn a_node_scoped_to_its_task_delivers_only_its_task_hooks<S: Backend>(s: S) {
    let t = template(HOOKED);
    s.register_template(&t).await.unwrap();
    let now = chrono::Utc::now;
    let other = start(&s, &t, now()).await;
    let mine = start(&s, &t, now()).await;
    let rec = Arc::new(Recorder::default());
    let cfg = WorkerConfig {
        only_task: Some(mine),
        ..worker_config("scoped")
    };
    let stop = CancellationToken::new();
    let node = Node::new(Arc::new(s.clone()), InProcessExecutor::new(), cfg)
        .with_hooks(rec.clone())
        .start(stop.clone());
    wait_until_done(&s, &[mine], Duration::from_secs(60)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rows = s.hook_outbox_of_task(mine).await.unwrap();
        if rows.iter().all(|r| r.state == DeliveryState::Delivered) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "undelivered: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    node.join().await;
    assert_eq!(
        s.task(mine).await.unwrap().unwrap().state,
        TaskState::Complete
    );
    let seen = rec.seen.lock().unwrap().clone();
    assert!(seen.iter().any(|(_, e)| e == "task.completed"), "{seen:?}");
    assert!(seen.iter().all(|(task, _)| *task == mine), "{seen:?}");
    // The other task was neither run nor had its hooks delivered.
    assert_eq!(
        s.task(other).await.unwrap().unwrap().state,
        TaskState::Pending
    );
    unclaimed(&s, other).await;
}
