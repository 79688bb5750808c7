//! `Store::complete_and_claim`: a worker's hop in one call. It must record exactly what
//! `complete_with_events` then `claim` record, and its two parts are fenced independently.

use serde_json::json;
use std::time::Duration;
use tasker_core::fixtures;
use tasker_core::state::StepState;
use tasker_store::*;
use tasker_tests::Backend;
use tasker_tests::store::*;

/// A task's whole history with its ids blanked, so two tasks of one template compare.
async fn history<S: Store>(s: &S, task: TaskId) -> String {
    let mut row = s.task(task).await.unwrap().expect("task");
    row.id = TaskId::new(0);
    let mut out = format!("{row:?}\n");
    for mut t in s.task_transitions(task).await.unwrap() {
        t.id = 0;
        out += &format!("{t:?}\n");
    }
    for mut step in s.steps_of_task(task).await.unwrap() {
        let id = step.id;
        (step.id, step.task_id) = (StepId::new(0), TaskId::new(0));
        out += &format!("{step:?}\n");
        for mut a in s.attempts_of_step(id).await.unwrap() {
            (a.step_id, a.task_id) = (StepId::new(0), TaskId::new(0));
            out += &format!("{a:?}\n");
        }
        for mut t in s.step_transitions(id).await.unwrap() {
            t.id = 0;
            out += &format!("{t:?}\n");
        }
    }
    out
}

async fn fused_hops_record_what_separate_calls_record<S: Backend>(s: S) {
    for t in all_fixtures() {
        // Separate calls: complete a batch, then claim, at the same instant.
        let a = start(&s, &t, at(0)).await;
        let mut now = 0;
        let mut claimed = s.claim("w", 100, LEASE, at(now)).await.unwrap();
        while !claimed.is_empty() {
            now += 10;
            let items: Vec<_> = claimed.iter().map(completion).collect();
            let out = s.complete(&items, at(now)).await.unwrap();
            assert!(out.iter().all(|o| o.accepted()), "{out:?}");
            claimed = s.claim("w", 100, LEASE, at(now)).await.unwrap();
        }

        // The same run through complete_and_claim, at the same instants.
        let b = s
            .create_task(&NewTask::new(t.key(), json!({"n": 1})), at(0))
            .await
            .unwrap()
            .task_id;
        let mut now = 0;
        let mut claimed = s.claim("w", 100, LEASE, at(now)).await.unwrap();
        let mut hops = 0;
        while !claimed.is_empty() {
            now += 10;
            hops += 1;
            let items: Vec<_> = claimed.iter().map(completion).collect();
            let (out, next) = s
                .complete_and_claim(&items, &[], "w", 100, LEASE, at(now))
                .await
                .unwrap();
            assert_eq!(out.len(), items.len());
            for (o, i) in out.iter().zip(&items) {
                assert!(o.accepted(), "{o:?}");
                assert_eq!((o.step_id, o.task_id), (i.step_id, Some(b)));
            }
            claimed = next;
        }
        assert!(hops > 0, "{}", t.key());
        assert_eq!(history(&s, a).await, history(&s, b).await, "{}", t.key());
    }
}

async fn a_refused_completion_does_not_stop_the_claim<S: Backend>(s: S) {
    let first = start(&s, &fixtures::linear(2, fixtures::NOOP), at(0)).await;
    let lease = Duration::from_secs(10);
    let old = s.claim("slow", 1, lease, at(0)).await.unwrap();
    assert_eq!(old[0].step_name, "step_1");
    // The slow worker loses its lease; another worker holds the step now.
    assert_eq!(s.expire_leases(at(10_001), 10).await.unwrap().len(), 1);
    let new = s.claim("fast", 1, lease, at(10_002)).await.unwrap();
    assert_eq!((new[0].step_id, new[0].token), (old[0].step_id, 2));
    let other = start(&s, &one_step("other", "{}"), at(10_003)).await;

    // The slow worker's late hop: its completion is refused, its claim still takes the one
    // claimable step (not the step held by the fast worker, nor its blocked child).
    let before = s.attempts_of_step(old[0].step_id).await.unwrap();
    let (out, claimed) = s
        .complete_and_claim(&[completion(&old[0])], &[], "slow", 5, lease, at(10_004))
        .await
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].refusal, Some(Refusal::StaleToken));
    assert_eq!(out[0].task_finalized, None);
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!((claimed[0].task_id, claimed[0].token), (other, 1));
    assert!(claimed[0].task_started);
    // The refused completion changed nothing: the fast worker's lease is intact.
    assert_eq!(s.attempts_of_step(old[0].step_id).await.unwrap(), before);
    let held = s.step(old[0].step_id).await.unwrap().unwrap();
    assert_eq!(
        (held.state, held.claim_count, held.worker.as_deref()),
        (StepState::InProgress, 2, Some("fast"))
    );
    let hb = s
        .heartbeat("fast", &[new[0].lease()], lease, at(10_005))
        .await
        .unwrap();
    assert!(hb[0].lease_expires_at.is_some());

    // The fast worker's hop completes the step and takes the child it released.
    let (out, claimed) = s
        .complete_and_claim(&[completion(&new[0])], &[], "fast", 5, lease, at(10_006))
        .await
        .unwrap();
    assert!(out[0].accepted(), "{out:?}");
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(
        (claimed[0].task_id, claimed[0].step_name.as_str()),
        (first, "step_2")
    );
    assert_eq!(
        claimed[0].parent_results,
        json!({"step_1": {"step": "step_1"}})
    );
    assert!(!claimed[0].task_started);
    let attempts = s.attempts_of_step(old[0].step_id).await.unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|a| (a.attempt_no, a.outcome, a.worker.as_deref()))
            .collect::<Vec<_>>(),
        [
            (1, AttemptOutcome::LeaseLost, Some("slow")),
            (2, AttemptOutcome::Completed, Some("fast")),
        ]
    );
}

async fn a_stale_claim_cannot_be_completed_by_the_next_hop<S: Backend>(s: S) {
    // Tokens issued by a fused claim fence like any other: once the sweeper took the step
    // back, the hop that claimed it cannot complete it.
    let task = start(&s, &fixtures::linear(3, fixtures::NOOP), at(0)).await;
    let lease = Duration::from_secs(1);
    let c = s.claim("w1", 1, lease, at(0)).await.unwrap();
    let (_, c2) = s
        .complete_and_claim(&[completion(&c[0])], &[], "w1", 1, lease, at(10))
        .await
        .unwrap();
    assert_eq!(c2[0].step_name, "step_2");
    assert_eq!(c2[0].lease_expires_at, at(1_010));
    assert_eq!(s.expire_leases(at(1_011), 10).await.unwrap().len(), 1);
    let (out, c3) = s
        .complete_and_claim(&[completion(&c2[0])], &[], "w1", 1, lease, at(1_012))
        .await
        .unwrap();
    assert_eq!(out[0].refusal, Some(Refusal::NotInProgress));
    // Its own claim takes the step back, under a new token; step_3 stays blocked.
    assert_eq!((c3[0].step_id, c3[0].token), (c2[0].step_id, 2));
    let step_3 = ids(&s, task).await["step_3"];
    let row = s.step(step_3).await.unwrap().unwrap();
    assert_eq!((row.state, row.unfinished_parents), (StepState::Pending, 1));
}

async fn the_claim_takes_any_ready_step_up_to_its_limit<S: Backend>(s: S) {
    let fan = template(
        "namespace: tests\nname: fan3\nversion: 1.0.0\nsteps:\n\
         \x20 - {name: r, handler: noop@1.0.0}\n\
         \x20 - {name: x, handler: noop@1.0.0, depends_on: r}\n\
         \x20 - {name: y, handler: noop@1.0.0, depends_on: r}\n\
         \x20 - {name: z, handler: noop@1.0.0, depends_on: r}\n",
    );
    let task = start(&s, &fan, at(0)).await;
    let root = s.claim("w", 1, LEASE, at(0)).await.unwrap();
    // Ready before the children will be: claimed first.
    let other = start(&s, &one_step("early", "{}"), at(5)).await;

    let (out, claimed) = s
        .complete_and_claim(&[completion(&root[0])], &[], "w", 2, LEASE, at(10))
        .await
        .unwrap();
    assert!(out[0].accepted());
    let got: Vec<_> = claimed
        .iter()
        .map(|c| (c.task_id, c.step_name.as_str()))
        .collect();
    // The oldest ready first (the other task's step, then one child), returned by step id.
    assert_eq!(got, [(task, "x"), (other, "only")]);
    assert!(claimed.iter().all(|c| c.lease_expires_at == at(10) + LEASE));

    // Limit 0: the completions only.
    let (out, claimed) = s
        .complete_and_claim(&[completion(&claimed[0])], &[], "w", 0, LEASE, at(20))
        .await
        .unwrap();
    assert!(out[0].accepted());
    assert!(claimed.is_empty());
    assert_eq!(
        ready_names(&s, task, at(20)).await,
        names(&["y", "z"]),
        "left for the next claim"
    );

    // No completions: a plain claim.
    let (out, claimed) = s
        .complete_and_claim(&[], &[], "w", 10, LEASE, at(30))
        .await
        .unwrap();
    assert!(out.is_empty());
    let mut got: Vec<_> = claimed.iter().map(|c| c.step_name.as_str()).collect();
    got.sort();
    assert_eq!(got, ["y", "z"]);
}

async fn a_bad_claim_argument_records_nothing<S: Backend>(s: S) {
    start(&s, &fixtures::linear(2, fixtures::NOOP), at(0)).await;
    let c = claim_all(&s, at(0)).await;
    let before = snapshot(&s).await;
    let e = s
        .complete_and_claim(&[completion(&c[0])], &[], "", 1, LEASE, at(1))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::InvalidInput(_)), "{e:?}");
    let e = s
        .complete_and_claim(&[completion(&c[0])], &[], "w", 1, Duration::ZERO, at(1))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::InvalidInput(_)), "{e:?}");
    assert_eq!(before, snapshot(&s).await);
    // Without a claim, the worker name and lease are not used.
    let (out, claimed) = s
        .complete_and_claim(&[completion(&c[0])], &[], "", 0, Duration::ZERO, at(1))
        .await
        .unwrap();
    assert!(out[0].accepted());
    assert!(claimed.is_empty());
}

const HOOKED: &str = "namespace: tests\nname: hooked\nversion: 1.0.0\n\
hooks:\n  - {component: audit@0.1.0, events: ['*']}\n\
steps:\n  - {name: a, handler: noop@1.0.0}\n\
\x20 - {name: b, handler: noop@1.0.0, depends_on: a}\n";

async fn custom_events_are_kept_only_for_accepted_completions<S: Backend>(s: S) {
    let task = start(&s, &template(HOOKED), at(0)).await;
    let c = claim_all(&s, at(0)).await;
    let ev = CustomEventRecord {
        step_id: c[0].step_id,
        token: c[0].token,
        name: "charged".into(),
        payload: json!({"amount": 12}),
    };
    let stale = CustomEventRecord {
        token: c[0].token + 7,
        name: "ghost".into(),
        ..ev.clone()
    };
    let (out, claimed) = s
        .complete_and_claim(&[completion(&c[0])], &[ev, stale], "w", 5, LEASE, at(10))
        .await
        .unwrap();
    assert!(out[0].accepted());
    assert_eq!(claimed[0].step_name, "b");
    let names: Vec<String> = s
        .hook_outbox_of_task(task)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event_name)
        .collect();
    assert_eq!(
        names,
        [
            "task.created",
            "task.started",
            "step.completed",
            "custom.charged"
        ]
    );
}

tasker_tests::on_both_backends!(
    fused_hops_record_what_separate_calls_record,
    a_refused_completion_does_not_stop_the_claim,
    a_stale_claim_cannot_be_completed_by_the_next_hop,
    the_claim_takes_any_ready_step_up_to_its_limit,
    a_bad_claim_argument_records_nothing,
    custom_events_are_kept_only_for_accepted_completions,
);
