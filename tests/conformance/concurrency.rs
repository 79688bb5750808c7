//! Concurrency keys (issue #19, `tasker_core::concurrency`): at most `limit` tasks of a key
//! hold a slot at once, across workers, on both stores; each strategy; retries, delayed
//! starts and cancels keep the line moving; readiness says why a step waits.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tasker_core::priority::Priority;
use tasker_core::state::{StepState, TaskState};
use tasker_engine::executor::{Execution, Executor};
use tasker_engine::{EventBus, Worker};
use tasker_store::*;
use tasker_tests::store::*;
use tasker_tests::{Backend, own_pool, wait_until_done, worker_config};
use tokio_util::sync::CancellationToken;

tasker_tests::on_both_backends!(
    a_limit_of_one_per_key_holds_with_four_workers,
    a_limit_of_two_lets_two_run_and_never_three,
    a_waiting_task_is_not_claimed_and_readiness_says_why,
    the_line_is_served_by_priority_then_age,
    cancel_in_progress_cancels_the_oldest_of_the_key,
    cancel_newest_refuses_and_writes_nothing,
    a_retried_task_waits_for_a_slot_again,
    a_delayed_task_waits_without_a_slot,
    cancelling_a_waiting_or_holding_task_moves_the_line,
    a_constant_key_is_shared_across_templates,
    a_context_without_a_usable_key_is_refused_naming_the_pointer,
);

fn keyed(name: &str, key: &str, limit: u32, strategy: &str) -> tasker_core::template::Template {
    template(&format!(
        "namespace: conc\nname: {name}\nversion: 1.0.0\n\
         concurrency: {{ key: \"{key}\", limit: {limit}, strategy: {strategy} }}\n\
         steps:\n  - name: only\n    handler: noop@1.0.0\n"
    ))
}

async fn create<S: Store>(s: &S, task: NewTask, ms: i64) -> TaskId {
    s.create_task(&task, at(ms)).await.expect("create").task_id
}

async fn task_state<S: Store>(s: &S, id: TaskId) -> TaskState {
    s.task(id).await.unwrap().expect("task").state
}

/// Claims everything ready at `ms` and returns the claimed steps' tasks, sorted.
async fn claimed_tasks<S: Store>(s: &S, ms: i64) -> Vec<(TaskId, ClaimedStep)> {
    let mut v: Vec<_> = claim_all(s, at(ms))
        .await
        .into_iter()
        .map(|c| (c.task_id, c))
        .collect();
    v.sort_by_key(|(t, _)| *t);
    v
}

async fn complete<S: Store>(s: &S, c: &ClaimedStep, ms: i64) {
    for o in s.complete(&[completion(c)], at(ms)).await.unwrap() {
        assert!(o.accepted(), "{o:?}");
    }
}

/// Sleeps a little in each attempt, so that two attempts of one key would overlap if the
/// limit let them.
struct Sleepy;

impl Executor for Sleepy {
    async fn execute(&self, step: &ClaimedStep) -> Execution {
        tokio::time::sleep(Duration::from_millis(3)).await;
        Execution::success(json!({"step": step.step_name}))
    }
}

/// Pairs (and, with `three`, triples) of attempts of different tasks of one key whose
/// [started_at, finished_at) intervals overlap.
fn overlaps(three: bool) -> String {
    let pairs = "FROM attempts a JOIN steps sa ON sa.id = a.step_id JOIN tasks ta ON ta.id = sa.task_id \
         JOIN attempts b ON true JOIN steps sb ON sb.id = b.step_id JOIN tasks tb ON tb.id = sb.task_id \
         AND tb.concurrency_key = ta.concurrency_key AND tb.id > ta.id";
    if !three {
        return format!(
            "SELECT count(*) {pairs} WHERE a.started_at < b.finished_at AND b.started_at < a.finished_at"
        );
    }
    format!(
        "SELECT count(*) {pairs} \
         JOIN attempts c ON true JOIN steps sc ON sc.id = c.step_id JOIN tasks tc ON tc.id = sc.task_id \
         AND tc.concurrency_key = ta.concurrency_key AND tc.id > tb.id \
         WHERE a.started_at < b.finished_at AND b.started_at < a.finished_at \
           AND a.started_at < c.finished_at AND c.started_at < a.finished_at \
           AND b.started_at < c.finished_at AND c.started_at < b.finished_at"
    )
}

/// Runs `tasks` tasks of `t` over `keys` keys (context `/customer_id`) with four workers of
/// the real clock until all are complete.
async fn run_with_four_workers<S: Backend>(
    s: &S,
    t: &tasker_core::template::Template,
    tasks: usize,
    keys: usize,
) {
    s.register_template(t).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..tasks {
        let task = NewTask::new(t.key(), json!({"customer_id": i % keys}));
        ids.push(s.create_task(&task, Utc::now()).await.unwrap().task_id);
    }
    let stop = CancellationToken::new();
    let mut handles = Vec::new();
    for w in 0..4 {
        let worker = Worker::new(
            Arc::new(own_pool(s).await),
            Arc::new(Sleepy),
            EventBus::default(),
            worker_config(&format!("w{w}")),
        );
        handles.push(tokio::spawn(worker.run(stop.clone())));
    }
    wait_until_done(s, &ids, Duration::from_secs(300)).await;
    stop.cancel();
    for h in handles {
        h.await.unwrap();
    }
    let complete = s
        .count("SELECT count(*) FROM tasks WHERE state = 'complete'")
        .await
        .unwrap();
    assert_eq!(complete, tasks as i64);
    // Every slot was given back.
    let held = s
        .count("SELECT coalesce(sum(holding), 0) FROM concurrency_keys")
        .await
        .unwrap();
    assert_eq!(held, 0);
    assert_eq!(
        s.count("SELECT count(*) FROM concurrency_keys")
            .await
            .unwrap(),
        keys as i64
    );
}

async fn a_limit_of_one_per_key_holds_with_four_workers<S: Backend>(s: S) {
    let t = keyed("one", "/customer_id", 1, "queue");
    run_with_four_workers(&s, &t, 1_000, 50).await;
    assert_eq!(s.count(&overlaps(false)).await.unwrap(), 0);
    assert_eq!(
        s.count("SELECT count(*) FROM attempts").await.unwrap(),
        1_000
    );
}

/// The same check on a limit of 2 finds overlapping pairs (so it can see them), and never
/// three at once.
async fn a_limit_of_two_lets_two_run_and_never_three<S: Backend>(s: S) {
    let t = keyed("two", "/customer_id", 2, "queue");
    run_with_four_workers(&s, &t, 200, 10).await;
    assert!(s.count(&overlaps(false)).await.unwrap() > 0);
    assert_eq!(s.count(&overlaps(true)).await.unwrap(), 0);
}

async fn a_waiting_task_is_not_claimed_and_readiness_says_why<S: Backend>(s: S) {
    let t = keyed("why", "/customer_id", 1, "queue");
    s.register_template(&t).await.unwrap();
    let a = create(&s, NewTask::new(t.key(), json!({"customer_id": 42})), 0).await;
    let b = create(&s, NewTask::new(t.key(), json!({"customer_id": 42})), 1).await;
    let other = create(&s, NewTask::new(t.key(), json!({"customer_id": 7})), 2).await;

    let r = s.readiness(b, None, at(3)).await.unwrap().remove(0);
    assert!(!r.ready_for_execution);
    assert_eq!(
        r.concurrency,
        Some(ConcurrencyWait {
            key: "/customer_id=42".into(),
            holding: 1,
            limit: 1
        })
    );
    assert_eq!(
        r.reason(at(3)),
        "concurrency key /customer_id=42 at limit (1/1)"
    );
    let ra = s.readiness(a, None, at(3)).await.unwrap().remove(0);
    assert!(ra.ready_for_execution && ra.concurrency.is_none());
    assert_eq!(s.next_ready_at().await.unwrap(), Some(at(0)));
    // A waiting step is neither ready nor a retry backlog.
    let h = s.health_counts(at(3)).await.unwrap();
    assert_eq!((h.ready_steps, h.retry_backlog), (2, 0), "{h:?}");

    let claimed = claimed_tasks(&s, 3).await;
    let tasks: Vec<TaskId> = claimed.iter().map(|(t, _)| *t).collect();
    assert_eq!(tasks, vec![a, other], "the waiting task is not claimed");
    assert!(claimed_tasks(&s, 4).await.is_empty());
    // Nothing is due while only a waiting task has a pending step.
    complete(&s, &claimed[1].1, 5).await;
    assert_eq!(s.next_ready_at().await.unwrap(), None);

    // A's end hands its slot to B, whose step is ready from that instant.
    complete(&s, &claimed[0].1, 10).await;
    let r = s.readiness(b, None, at(10)).await.unwrap().remove(0);
    assert!(r.ready_for_execution && r.concurrency.is_none(), "{r:?}");
    assert_eq!(s.next_ready_at().await.unwrap(), Some(at(10)));
    let claimed = claimed_tasks(&s, 11).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].0, b);
    complete(&s, &claimed[0].1, 12).await;
    assert_eq!(task_state(&s, b).await, TaskState::Complete);
}

async fn the_line_is_served_by_priority_then_age<S: Backend>(s: S) {
    let t = keyed("line", "stripe", 1, "queue");
    s.register_template(&t).await.unwrap();
    let p = |n| Priority::new(n).unwrap();
    let first = create(&s, NewTask::new(t.key(), json!({})), 0).await;
    let old = create(&s, NewTask::new(t.key(), json!({})), 1).await;
    let urgent = create(&s, NewTask::new(t.key(), json!({})).with_priority(p(5)), 2).await;
    let young = create(&s, NewTask::new(t.key(), json!({})), 3).await;
    let r = s.readiness(young, None, at(4)).await.unwrap().remove(0);
    assert_eq!(r.reason(at(4)), "concurrency key stripe at limit (1/1)");

    let mut order = Vec::new();
    let mut ms = 10;
    loop {
        let claimed = claimed_tasks(&s, ms).await;
        if claimed.is_empty() {
            break;
        }
        assert_eq!(claimed.len(), 1, "one at a time");
        order.push(claimed[0].0);
        complete(&s, &claimed[0].1, ms + 1).await;
        ms += 10;
    }
    assert_eq!(order, vec![first, urgent, old, young]);
}

async fn cancel_in_progress_cancels_the_oldest_of_the_key<S: Backend>(s: S) {
    let t = keyed("latest", "/branch", 1, "cancel_in_progress");
    s.register_template(&t).await.unwrap();
    let a = create(&s, NewTask::new(t.key(), json!({"branch": "main"})), 0).await;
    let running = claimed_tasks(&s, 1).await;
    assert_eq!(running.len(), 1);
    let elsewhere = create(&s, NewTask::new(t.key(), json!({"branch": "dev"})), 2).await;
    let b = create(&s, NewTask::new(t.key(), json!({"branch": "main"})), 3).await;
    assert_eq!(task_state(&s, a).await, TaskState::Cancelled);
    assert_ne!(task_state(&s, elsewhere).await, TaskState::Cancelled);
    let steps = s.steps_of_task(a).await.unwrap();
    assert_eq!(steps[0].state, StepState::Cancelled);
    // The cancelled attempt's late result is refused; B runs.
    let late = s
        .complete(&[completion(&running[0].1)], at(4))
        .await
        .unwrap();
    assert!(!late[0].accepted(), "{late:?}");
    let claimed = claimed_tasks(&s, 5).await;
    let tasks: Vec<TaskId> = claimed.iter().map(|(t, _)| *t).collect();
    assert_eq!(tasks, vec![elsewhere, b]);
    // A third cancels B, which waits no longer either: one holder at any time.
    let c = create(&s, NewTask::new(t.key(), json!({"branch": "main"})), 6).await;
    assert_eq!(task_state(&s, b).await, TaskState::Cancelled);
    assert_eq!(claimed_tasks(&s, 7).await[0].0, c);
    let held = s
        .count("SELECT CAST(holding AS bigint) FROM concurrency_keys WHERE key = '/branch=main'")
        .await
        .unwrap();
    assert_eq!(held, 1);
}

async fn cancel_newest_refuses_and_writes_nothing<S: Backend>(s: S) {
    let t = keyed("once", "/customer_id", 1, "cancel_newest");
    s.register_template(&t).await.unwrap();
    let a = create(&s, NewTask::new(t.key(), json!({"customer_id": "c-1"})), 0).await;
    let before = snapshot(&s).await;
    let err = s
        .create_task(&NewTask::new(t.key(), json!({"customer_id": "c-1"})), at(1))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::InvalidState(
            "concurrency key /customer_id=c-1 is at its limit (1/1): template conc/once@1.0.0 \
             refuses new tasks (strategy cancel_newest)"
                .into()
        )
    );
    assert_eq!(snapshot(&s).await, before, "nothing written");
    // Another key is free; after A ends, the key takes a new task.
    create(&s, NewTask::new(t.key(), json!({"customer_id": "c-2"})), 2).await;
    let claimed = claimed_tasks(&s, 3).await;
    let of_a = claimed.iter().find(|(t, _)| *t == a).unwrap();
    complete(&s, &of_a.1, 4).await;
    let again = create(&s, NewTask::new(t.key(), json!({"customer_id": "c-1"})), 5).await;
    assert_eq!(claimed_tasks(&s, 6).await[0].0, again);
}

async fn a_retried_task_waits_for_a_slot_again<S: Backend>(s: S) {
    let t = keyed("retry", "/customer_id", 1, "queue");
    s.register_template(&t).await.unwrap();
    let a = create(&s, NewTask::new(t.key(), json!({"customer_id": 1})), 0).await;
    let b = create(&s, NewTask::new(t.key(), json!({"customer_id": 1})), 1).await;
    let claimed = claimed_tasks(&s, 2).await;
    assert_eq!(claimed.len(), 1);
    s.fail(&[failure(&claimed[0].1, false, None)], at(3))
        .await
        .unwrap();
    assert_eq!(task_state(&s, a).await, TaskState::Error);
    // A's error freed the slot for B; A retried waits behind B.
    s.retry_task(a, at(4)).await.unwrap();
    let r = s.readiness(a, None, at(5)).await.unwrap().remove(0);
    assert!(!r.ready_for_execution);
    assert_eq!(
        r.reason(at(5)),
        "concurrency key /customer_id=1 at limit (1/1)"
    );
    let claimed = claimed_tasks(&s, 5).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].0, b);
    complete(&s, &claimed[0].1, 6).await;
    let claimed = claimed_tasks(&s, 7).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].0, a);
    complete(&s, &claimed[0].1, 8).await;
    assert_eq!(task_state(&s, a).await, TaskState::Complete);
}

async fn a_delayed_task_waits_without_a_slot<S: Backend>(s: S) {
    let t = keyed("later", "/customer_id", 1, "queue");
    s.register_template(&t).await.unwrap();
    let ctx = json!({"customer_id": 5});
    let delayed = create(
        &s,
        NewTask::new(t.key(), ctx.clone()).with_run_at(at(10_000)),
        0,
    )
    .await;
    // The delayed task holds no slot: a task of its key created now runs.
    let now = create(&s, NewTask::new(t.key(), ctx.clone()), 1).await;
    let r = s.readiness(delayed, None, at(2)).await.unwrap().remove(0);
    assert_eq!(r.not_before, Some(at(10_000)));
    assert!(!r.ready_for_execution);
    let claimed = claimed_tasks(&s, 2).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].0, now);
    // Its instant passes while the key is full: it stays in line.
    assert_eq!(s.admit_waiting(at(11_000)).await.unwrap(), 0);
    assert!(claimed_tasks(&s, 11_000).await.is_empty());
    let r = s
        .readiness(delayed, None, at(11_000))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        r.reason(at(11_000)),
        "concurrency key /customer_id=5 at limit (1/1)"
    );
    complete(&s, &claimed[0].1, 12_000).await;
    assert_eq!(claimed_tasks(&s, 12_001).await[0].0, delayed);

    // Alone in a free key, the sweeper's admit_waiting admits it once its instant passed.
    let alone = create(
        &s,
        NewTask::new(t.key(), json!({"customer_id": 6})).with_run_at(at(20_000)),
        13_000,
    )
    .await;
    assert_eq!(s.admit_waiting(at(19_999)).await.unwrap(), 0);
    assert_eq!(s.admit_waiting(at(20_000)).await.unwrap(), 1);
    assert_eq!(claimed_tasks(&s, 20_001).await[0].0, alone);
}

async fn cancelling_a_waiting_or_holding_task_moves_the_line<S: Backend>(s: S) {
    let t = keyed("cancel", "/customer_id", 1, "queue");
    s.register_template(&t).await.unwrap();
    let ctx = json!({"customer_id": 9});
    let a = create(&s, NewTask::new(t.key(), ctx.clone()), 0).await;
    let b = create(&s, NewTask::new(t.key(), ctx.clone()), 1).await;
    let c = create(&s, NewTask::new(t.key(), ctx.clone()), 2).await;
    // A waiting task leaves the line without taking a slot.
    s.cancel_task(b, at(3)).await.unwrap();
    assert_eq!(task_state(&s, b).await, TaskState::Cancelled);
    assert!(claimed_tasks(&s, 4).await.iter().all(|(t, _)| *t == a));
    // Cancelling the holder admits the next.
    s.cancel_task(a, at(5)).await.unwrap();
    let claimed = claimed_tasks(&s, 6).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].0, c);
    let held = s
        .count("SELECT CAST(holding AS bigint) FROM concurrency_keys WHERE key = '/customer_id=9'")
        .await
        .unwrap();
    assert_eq!(held, 1);
}

async fn a_constant_key_is_shared_across_templates<S: Backend>(s: S) {
    let x = keyed("x", "payments", 1, "queue");
    let y = keyed("y", "payments", 1, "queue");
    s.register_template(&x).await.unwrap();
    s.register_template(&y).await.unwrap();
    let a = create(&s, NewTask::new(x.key(), json!({})), 0).await;
    let b = create(&s, NewTask::new(y.key(), json!({})), 1).await;
    let claimed = claimed_tasks(&s, 2).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].0, a);
    let r = s.readiness(b, None, at(2)).await.unwrap().remove(0);
    assert_eq!(r.reason(at(2)), "concurrency key payments at limit (1/1)");
    complete(&s, &claimed[0].1, 3).await;
    assert_eq!(claimed_tasks(&s, 4).await[0].0, b);
}

async fn a_context_without_a_usable_key_is_refused_naming_the_pointer<S: Backend>(s: S) {
    let t = keyed("bad", "/customer/id", 1, "queue");
    s.register_template(&t).await.unwrap();
    let before = snapshot(&s).await;
    let cases = [
        (
            json!({}),
            "concurrency key /customer/id: the context has no value there",
        ),
        (
            json!({"customer": {"id": null}}),
            "concurrency key /customer/id: the context has no value there",
        ),
        (
            json!({"customer": {"id": 1.5}}),
            "concurrency key /customer/id: the context's value there is a fractional number, \
             expected a string, an integer or a boolean",
        ),
        (
            json!({"customer": {"id": [1]}}),
            "concurrency key /customer/id: the context's value there is an array, expected a \
             string, an integer or a boolean",
        ),
        (
            json!({"customer": {"id": {"n": 1}}}),
            "concurrency key /customer/id: the context's value there is an object, expected a \
             string, an integer or a boolean",
        ),
    ];
    for (ctx, message) in cases {
        let err = s
            .create_task(&NewTask::new(t.key(), ctx.clone()), at(1))
            .await
            .unwrap_err();
        assert_eq!(err, StoreError::InvalidInput(message.into()), "{ctx}");
    }
    assert_eq!(snapshot(&s).await, before, "nothing written");
    // Integers, strings and booleans are keys.
    for (i, id) in [json!(-3), json!("x"), json!(true)].into_iter().enumerate() {
        let task = create(
            &s,
            NewTask::new(t.key(), json!({"customer": {"id": id}})),
            2 + i as i64,
        )
        .await;
        let row = s.readiness(task, None, at(10)).await.unwrap().remove(0);
        assert!(row.ready_for_execution, "{id}");
    }
}
