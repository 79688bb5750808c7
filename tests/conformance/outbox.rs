//! The hook outbox in SQL: events written in the same transaction as the state change, in
//! order per (hook, task), leases, retries with backoff, dead letters, custom events, and
//! who decided a failure's retry.

use serde_json::json;
use std::time::Duration;
use tasker_store::*;
use tasker_tests::Backend;
use tasker_tests::store::*;

const HOOKED: &str = "namespace: tests\nname: hooked\nversion: 1.0.0\n\
hooks:\n  - {component: audit@0.1.0, events: ['*']}\n\
\x20 - {component: failures@0.1.0, events: [step.failed, task.failed], delivery: {max_attempts: 2, backoff: {base_ms: 100, jitter: 0}}}\n\
steps:\n  - {name: a, handler: noop@1.0.0, retry: {max_attempts: 2, backoff: {base_ms: 1000, jitter: 0}}}\n\
\x20 - {name: b, handler: noop@1.0.0, depends_on: a}\n";

fn names_of(rows: &[OutboxRow], hook: i64) -> Vec<String> {
    rows.iter()
        .filter(|r| r.hook_id == hook)
        .map(|r| r.event_name.clone())
        .collect()
}

async fn every_state_change_reaches_the_outbox_in_order<S: Backend>(s: S) {
    let t = template(HOOKED);
    let task = start(&s, &t, at(0)).await;

    // a fails once (retry), then succeeds; b succeeds; custom event from b.
    let c = claim_all(&s, at(0)).await;
    let out = s.fail(&[failure(&c[0], true, None)], at(10)).await.unwrap();
    assert_eq!(out[0].decision, Some(RetryDecision::Retry));
    let c = claim_all(&s, at(1010)).await;
    assert_eq!(c[0].step_name, "a");
    s.complete(&[completion(&c[0])], at(1020)).await.unwrap();
    let c = claim_all(&s, at(1030)).await;
    let ev = CustomEventRecord {
        step_id: c[0].step_id,
        token: c[0].token,
        name: "payment_charged".into(),
        payload: json!({"amount": 12}),
    };
    // A stale token's events are dropped with its refused completion.
    let stale = CustomEventRecord {
        token: c[0].token + 7,
        name: "ghost".into(),
        ..ev.clone()
    };
    s.complete_with_events(&[completion(&c[0])], &[ev, stale], at(1040))
        .await
        .unwrap();

    let rows = s.hook_outbox_of_task(task).await.unwrap();
    let hooks: Vec<i64> = {
        let mut h: Vec<i64> = rows.iter().map(|r| r.hook_id).collect();
        h.sort();
        h.dedup();
        h
    };
    assert_eq!(hooks.len(), 2, "{rows:?}");
    assert_eq!(
        names_of(&rows, hooks[0]),
        [
            "task.created",
            "task.started",
            "step.failed",
            "step.retry_scheduled",
            "step.completed",
            "step.completed",
            // Recorded after complete_steps in its transaction: after the task's end.
            "task.completed",
            "custom.payment_charged",
        ]
    );
    assert_eq!(names_of(&rows, hooks[1]), ["step.failed"]);
    let failed = rows.iter().find(|r| r.event_name == "step.failed").unwrap();
    assert_eq!(failed.payload["kind"], "trap");
    assert_eq!(failed.payload["decision"], "retry");
    let custom = rows
        .iter()
        .find(|r| r.event_name == "custom.payment_charged")
        .unwrap();
    assert_eq!(custom.payload, json!({"amount": 12}));
    // Ids (delivery order) follow the order of the changes.
    assert!(rows.windows(2).all(|w| w[0].id < w[1].id));
    assert_hook_heads(&s).await;
}

async fn templates_without_hooks_write_nothing<S: Backend>(s: S) {
    let plain = one_step("plain", "{}");
    let task = start(&s, &plain, at(0)).await;
    run_ready(&s, at(1)).await;
    // Another template with hooks exists, but this task's has none.
    start(&s, &template(HOOKED), at(2)).await;
    assert!(s.hook_outbox_of_task(task).await.unwrap().is_empty());
}

async fn deliveries_are_in_order_leased_retried_and_dead_lettered<S: Backend>(s: S) {
    let t = template(HOOKED);
    let task = start(&s, &t, at(0)).await;
    let c = claim_all(&s, at(0)).await;
    s.fail(&[failure(&c[0], false, None)], at(10))
        .await
        .unwrap(); // a: permanent -> task.failed

    let lease = Duration::from_secs(5);
    // Only the head of each (hook, task) queue is claimable: one per hook.
    let first = s
        .claim_hook_deliveries("d1", 100, lease, at(20))
        .await
        .unwrap();
    assert_eq!(first.len(), 2, "{first:?}");
    let audit = first.iter().find(|j| j.component == "audit@0.1.0").unwrap();
    let fails = first
        .iter()
        .find(|j| j.component == "failures@0.1.0")
        .unwrap();
    assert_eq!(audit.event_name, "task.created");
    assert_eq!(fails.event_name, "step.failed");
    assert_eq!(fails.max_attempts, 2);
    // Nothing more while the heads are leased.
    assert!(
        s.claim_hook_deliveries("d2", 100, lease, at(21))
            .await
            .unwrap()
            .is_empty()
    );
    assert_hook_heads(&s).await;

    // d1 "dies" holding the audit head; its lease expires and d2 gets the same event again.
    let again = s
        .claim_hook_deliveries("d2", 100, lease, at(5021))
        .await
        .unwrap();
    let audit2 = again.iter().find(|j| j.component == "audit@0.1.0").unwrap();
    assert_eq!(audit2.delivery_id, audit.delivery_id);
    assert!(audit2.token > audit.token);
    let fails = again
        .iter()
        .find(|j| j.component == "failures@0.1.0")
        .unwrap();
    assert_eq!(fails.event_name, "step.failed");
    // The dead worker's late result is refused; d2's is taken.
    let late = s
        .finish_hook_deliveries(
            &[HookDeliveryResult {
                delivery_id: audit.delivery_id,
                token: audit.token,
                error: None,
            }],
            at(5022),
        )
        .await
        .unwrap();
    assert!(!late[0].accepted);

    let done = s
        .finish_hook_deliveries(
            &[
                HookDeliveryResult {
                    delivery_id: audit2.delivery_id,
                    token: audit2.token,
                    error: None,
                },
                HookDeliveryResult {
                    delivery_id: fails.delivery_id,
                    token: fails.token,
                    error: Some("trap: boom".into()),
                },
            ],
            at(5030),
        )
        .await
        .unwrap();
    assert_eq!(done[0].state, Some(DeliveryState::Delivered));
    assert_eq!(done[1].state, Some(DeliveryState::Pending));
    // Backoff 100 ms, no jitter, from the finish.
    assert_eq!(done[1].next_attempt_at, Some(at(5130)));

    // Next audit event is now the head; the failing one waits for its backoff.
    let next = s
        .claim_hook_deliveries("d2", 100, lease, at(5100))
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].event_name, "task.started");
    let retry = s
        .claim_hook_deliveries("d2", 100, lease, at(5130))
        .await
        .unwrap();
    assert_eq!(retry.len(), 1);
    assert_eq!(
        (retry[0].event_name.as_str(), retry[0].delivery_no),
        ("step.failed", 2)
    );
    let dead = s
        .finish_hook_deliveries(
            &[HookDeliveryResult {
                delivery_id: retry[0].delivery_id,
                token: retry[0].token,
                error: Some("trap: boom again".into()),
            }],
            at(5140),
        )
        .await
        .unwrap();
    assert_eq!(dead[0].state, Some(DeliveryState::Dead));
    assert_hook_heads(&s).await;
    // A dead event no longer blocks the queue: task.failed is next for that hook.
    let after = s
        .claim_hook_deliveries("d2", 100, lease, at(5150))
        .await
        .unwrap();
    assert!(
        after
            .iter()
            .any(|j| j.component == "failures@0.1.0" && j.event_name == "task.failed")
    );

    let counts = s.hook_counts(Some(task)).await.unwrap();
    let f = counts
        .iter()
        .find(|c| c.component == "failures@0.1.0")
        .unwrap();
    assert_eq!((f.dead, f.delivered, f.pending), (1, 0, 1));
    let rows = s.hook_outbox_of_task(task).await.unwrap();
    let d = rows
        .iter()
        .find(|r| r.state == DeliveryState::Dead)
        .unwrap();
    assert_eq!(d.last_error.as_deref(), Some("trap: boom again"));
    assert_eq!(d.attempts, 2);
}

async fn who_decided_is_recorded_on_the_attempt<S: Backend>(s: S) {
    let t = template(HOOKED);
    start(&s, &t, at(0)).await;
    let c = claim_all(&s, at(0)).await;
    // A policy asked for 250 ms: the step becomes ready exactly then.
    let mut f = failure(&c[0], true, Some(250));
    f.retryable = true;
    let out = s
        .fail_decided(
            &[f],
            &[FailureDecision {
                decided_by: "policy:smart@1.0.0".into(),
                detail: Some("retry after 250 ms".into()),
                warning: None,
            }],
            &[],
            at(10),
        )
        .await
        .unwrap();
    assert_eq!(out[0].next_ready_at, Some(at(260)));
    let c = claim_all(&s, at(260)).await;
    s.fail(&[failure(&c[0], true, None)], at(300))
        .await
        .unwrap();
    let attempts = s.attempts_of_step(c[0].step_id).await.unwrap();
    assert_eq!(
        attempts[0].decided_by.as_deref(),
        Some("policy:smart@1.0.0")
    );
    assert_eq!(
        attempts[0].decision_detail.as_deref(),
        Some("retry after 250 ms")
    );
    assert_eq!(attempts[1].decided_by.as_deref(), Some("builtin"));
    // Attempts exhausted: whatever a policy says, the step ends.
    assert_eq!(attempts[1].decision, Some(RetryDecision::Exhausted));
    let first = s.first_attempt_at(&[c[0].step_id]).await.unwrap();
    assert_eq!(first, vec![(c[0].step_id, Some(at(0)))]);
}

async fn operator_actions_reach_the_outbox<S: Backend>(s: S) {
    let t = template(HOOKED);
    let task = start(&s, &t, at(0)).await;
    let c = claim_all(&s, at(0)).await;
    s.fail(&[failure(&c[0], false, None)], at(10))
        .await
        .unwrap(); // a: permanent
    s.retry_task(task, at(20)).await.unwrap();
    let a = ids(&s, task).await["a"];
    s.resolve_step(a, Some(json!({"by": "hand"})), at(30))
        .await
        .unwrap();
    s.cancel_task(task, at(40)).await.unwrap();
    let rows = s.hook_outbox_of_task(task).await.unwrap();
    let audit = rows
        .iter()
        .find(|r| r.event_name == "task.created")
        .unwrap()
        .hook_id;
    assert_eq!(
        names_of(&rows, audit),
        [
            "task.created",
            "task.started",
            "step.failed",
            "task.failed",
            "task.retry_requested",
            "step.resolved_manually",
            "task.cancelled",
        ]
    );
    let resolved = rows
        .iter()
        .find(|r| r.event_name == "step.resolved_manually")
        .unwrap();
    assert_eq!(resolved.step_id, Some(a));
    assert_hook_heads(&s).await;
}

tasker_tests::on_both_backends!(
    every_state_change_reaches_the_outbox_in_order,
    templates_without_hooks_write_nothing,
    deliveries_are_in_order_leased_retried_and_dead_lettered,
    who_decided_is_recorded_on_the_attempt,
    operator_actions_reach_the_outbox,
);
