//! Priorities and delayed starts (issue #19): claims follow `tasker_core::priority`'s order
//! on both stores, a delayed task is neither claimed nor called ready before its start, and
//! readiness says why a step waits.

use std::collections::BTreeMap;

use serde_json::json;
use tasker_core::priority::{self, AGING_PER_LEVEL_US, Priority};
use tasker_core::state::StepState;
use tasker_store::*;
use tasker_tests::Backend;
use tasker_tests::store::*;

tasker_tests::on_both_backends!(
    claims_follow_the_claim_key_order,
    a_low_priority_that_waited_long_enough_goes_first,
    a_step_priority_beats_the_task_and_the_template_default,
    a_delayed_task_waits_for_its_start,
    readiness_says_how_many_higher_priority_steps_go_first,
);

fn p(n: i64) -> Priority {
    Priority::new(n).unwrap()
}

fn single(name: &str) -> tasker_core::template::Template {
    template(&format!(
        "namespace: prio\nname: {name}\nversion: 1.0.0\nsteps:\n  - name: only\n    handler: noop@1.0.0\n"
    ))
}

async fn create<S: Store>(s: &S, task: NewTask, ms: i64) -> TaskId {
    s.create_task(&task, at(ms)).await.expect("create").task_id
}

/// A small deterministic generator (the suites use no randomness they cannot replay).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

async fn claims_follow_the_claim_key_order<S: Backend>(s: S) {
    let t = single("order");
    s.register_template(&t).await.unwrap();
    let mut rng = Lcg(19);
    // 60 tasks over 5 minutes with random priorities: every aging case (within a priority,
    // across priorities with and without enough waiting) occurs.
    let mut expected = Vec::new();
    let mut step_of: BTreeMap<TaskId, i64> = BTreeMap::new();
    for i in 0..60 {
        let ms = i * 5_000 + rng.next(3_000) as i64;
        let prio = p(1 + rng.next(5) as i64);
        let task = create(&s, NewTask::new(t.key(), json!({})).with_priority(prio), ms).await;
        let step = ids(&s, task).await["only"];
        step_of.insert(task, step.get());
        expected.push((step.get(), at(ms).timestamp_micros(), prio));
    }
    priority::claim_order(&mut expected);
    let want: Vec<i64> = expected.iter().map(|e| e.0).collect();

    // Claimed in batches of 1, 7 and the rest, the order is the key order.
    let now = at(400_000);
    let mut got = Vec::new();
    for limit in [1, 7, 1, 1, 100] {
        for c in s.claim("w", limit, LEASE, now).await.unwrap() {
            assert_eq!(step_of[&c.task_id], c.step_id.get());
            got.push(c.step_id.get());
        }
    }
    // Within a batch the store returns claimed steps by id: compare as a sequence of sets.
    let mut at_ = 0;
    for limit in [1usize, 7, 1, 1, 100] {
        let end = (at_ + limit).min(want.len());
        let mut a = got[at_..end].to_vec();
        let mut b = want[at_..end].to_vec();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "claims {at_}..{end}");
        at_ = end;
    }
    assert_eq!(got.len(), 60);
}

async fn a_low_priority_that_waited_long_enough_goes_first<S: Backend>(s: S) {
    let t = single("aging");
    s.register_template(&t).await.unwrap();
    let wait_ms = 4 * AGING_PER_LEVEL_US / 1000;
    // Ready 1 ms longer than four levels are worth: it beats a priority 5 ready now.
    let old_low = create(&s, NewTask::new(t.key(), json!({})).with_priority(p(1)), 0).await;
    let new_high = create(
        &s,
        NewTask::new(t.key(), json!({})).with_priority(p(5)),
        wait_ms + 1,
    )
    .await;
    let first = s.claim("w", 1, LEASE, at(wait_ms + 1)).await.unwrap();
    assert_eq!(first[0].task_id, old_low);
    // One that waited 1 ms less than that loses to it.
    let low = create(
        &s,
        NewTask::new(t.key(), json!({})).with_priority(p(1)),
        wait_ms + 2,
    )
    .await;
    let high = create(
        &s,
        NewTask::new(t.key(), json!({})).with_priority(p(5)),
        2 * wait_ms + 1,
    )
    .await;
    let next = s.claim("w", 1, LEASE, at(2 * wait_ms + 1)).await.unwrap();
    assert_eq!(next[0].task_id, new_high, "the older priority 5 first");
    let next = s.claim("w", 1, LEASE, at(2 * wait_ms + 1)).await.unwrap();
    assert_eq!(next[0].task_id, high);
    let next = s.claim("w", 1, LEASE, at(2 * wait_ms + 1)).await.unwrap();
    assert_eq!(next[0].task_id, low);
}

async fn a_step_priority_beats_the_task_and_the_template_default<S: Backend>(s: S) {
    let t = template(
        "namespace: prio\nname: mixed\nversion: 1.0.0\npriority: 4\nsteps:\n  \
         - name: urgent\n    handler: noop@1.0.0\n    priority: 5\n  \
         - name: plain\n    handler: noop@1.0.0\n",
    );
    s.register_template(&t).await.unwrap();
    let by_default = create(&s, NewTask::new(t.key(), json!({})), 0).await;
    let low = create(&s, NewTask::new(t.key(), json!({})).with_priority(p(1)), 0).await;
    let prio = |task: TaskId| {
        let s = &s;
        async move {
            s.readiness(task, None, at(1))
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.name, r.priority.get()))
                .collect::<BTreeMap<_, _>>()
        }
    };
    assert_eq!(
        prio(by_default).await,
        BTreeMap::from([("plain".into(), 4), ("urgent".into(), 5)])
    );
    assert_eq!(
        prio(low).await,
        BTreeMap::from([("plain".into(), 1), ("urgent".into(), 5)])
    );
    // Claimed: both urgent steps, then the template default, then the low task's.
    let mut order = Vec::new();
    for _ in 0..4 {
        let c = s.claim("w", 1, LEASE, at(1)).await.unwrap();
        order.push((c[0].task_id, c[0].step_name.clone()));
    }
    assert_eq!(
        order,
        vec![
            (by_default, "urgent".to_owned()),
            (low, "urgent".to_owned()),
            (by_default, "plain".to_owned()),
            (low, "plain".to_owned()),
        ]
    );
}

async fn a_delayed_task_waits_for_its_start<S: Backend>(s: S) {
    let t = tasker_core::fixtures::linear(2, tasker_core::fixtures::NOOP);
    s.register_template(&t).await.unwrap();
    let start_at = at(60_000);
    let task = create(
        &s,
        NewTask::new(t.key(), json!({})).with_run_at(start_at),
        0,
    )
    .await;
    // A task with no start time, created later, is claimable at once.
    let now_task = create(&s, NewTask::new(t.key(), json!({})), 1_000).await;

    let rows = s.readiness(task, None, at(30_000)).await.unwrap();
    let root = rows.iter().find(|r| r.total_parents == 0).unwrap();
    assert!(!root.ready_for_execution);
    assert_eq!(root.state, StepState::Pending);
    assert_eq!(root.not_before, Some(start_at));
    assert_eq!(
        root.reason(at(30_000)),
        "scheduled for 2030-01-01 00:01:00.000 UTC"
    );
    assert_eq!(s.next_ready_at().await.unwrap(), Some(at(1_000)));

    let early = s.claim("w", 10, LEASE, at(59_999)).await.unwrap();
    assert_eq!(early.len(), 1);
    assert_eq!(early[0].task_id, now_task);
    // Nothing else before the start; the next instant is the start.
    assert_eq!(s.next_ready_at().await.unwrap(), Some(start_at));
    assert!(
        s.claim("w", 10, LEASE, at(59_999))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.task(task).await.unwrap().unwrap().state,
        tasker_core::state::TaskState::Pending
    );

    let rows = s.readiness(task, None, start_at).await.unwrap();
    let root = rows.iter().find(|r| r.total_parents == 0).unwrap();
    assert!(root.ready_for_execution);
    assert_eq!(root.not_before, None);
    assert_eq!(root.reason(start_at), "ready");
    let on_time = s.claim("w", 10, LEASE, start_at).await.unwrap();
    assert_eq!(on_time.len(), 1);
    assert_eq!(on_time[0].task_id, task);

    // A start time already past starts the task at creation.
    let past = create(
        &s,
        NewTask::new(t.key(), json!({})).with_run_at(at(0)),
        70_000,
    )
    .await;
    let c = s.claim("w", 10, LEASE, at(70_000)).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].task_id, past);
}

async fn readiness_says_how_many_higher_priority_steps_go_first<S: Backend>(s: S) {
    let t = single("ahead");
    s.register_template(&t).await.unwrap();
    let low = create(
        &s,
        NewTask::new(t.key(), json!({})).with_priority(p(1)),
        10_000,
    )
    .await;
    for i in 0..3 {
        create(
            &s,
            NewTask::new(t.key(), json!({})).with_priority(p(4)),
            10_000 + i,
        )
        .await;
    }
    // Ready later than the low one by more than its head start: not ahead of it.
    let late = 10_000 + 3 * AGING_PER_LEVEL_US / 1000 + 1;
    create(
        &s,
        NewTask::new(t.key(), json!({})).with_priority(p(4)),
        late,
    )
    .await;
    let now = at(late + 1);
    let row = s.readiness(low, None, now).await.unwrap().remove(0);
    assert!(row.ready_for_execution);
    assert_eq!(row.ahead, Some(3));
    assert_eq!(
        row.reason(now),
        "ready: priority 1 behind 3 ready steps of higher priority"
    );
    // Claim the three: it is next, and says plain "ready" again.
    let c = s.claim("w", 3, LEASE, now).await.unwrap();
    assert!(c.iter().all(|c| c.task_id != low));
    let row = s.readiness(low, None, now).await.unwrap().remove(0);
    assert_eq!(row.ahead, Some(0));
    assert_eq!(row.reason(now), "ready");
}
