//! Fencing tokens, leases, heartbeats, the sweeper and release.

use serde_json::json;
use std::time::Duration;
use tasker_core::error_kind::ErrorKind;
use tasker_core::fixtures;
use tasker_core::state::{StepState, TaskState};
use tasker_store::*;
use tasker_tests::Backend;
use tasker_tests::store::*;

async fn a_stale_token_is_refused_and_changes_nothing<S: Backend>(s: S) {
    start(&s, &fixtures::linear(2, fixtures::NOOP), at(0)).await;
    let c = claim_all(&s, at(0)).await;
    assert_eq!(c[0].token, 1);
    let before = snapshot(&s).await;

    let mut bad = completion(&c[0]);
    bad.token = 2;
    let out = s.complete(&[bad], at(1)).await.unwrap();
    assert_eq!(out[0].refusal, Some(Refusal::StaleToken));
    let mut bad = failure(&c[0], true, None);
    bad.token = 0;
    let out = s.fail(&[bad], at(1)).await.unwrap();
    assert_eq!(out[0].refusal, Some(Refusal::StaleToken));
    assert_eq!(out[0].decision, None);
    let hb = s
        .heartbeat(
            "w1",
            &[Lease {
                step_id: c[0].step_id,
                token: 9,
            }],
            LEASE,
            at(1),
        )
        .await
        .unwrap();
    assert_eq!(hb[0].lease_expires_at, None);
    let rel = s
        .release(
            "w1",
            &[Lease {
                step_id: c[0].step_id,
                token: 9,
            }],
            at(1),
        )
        .await
        .unwrap();
    assert_eq!(rel[0].refusal, Some(Refusal::StaleToken));
    let out = s
        .complete(
            &[StepCompletion {
                step_id: StepId::new(123_456),
                token: 1,
                result: json!(1),
                accounting: Accounting::default(),
                log: Default::default(),
            }],
            at(1),
        )
        .await
        .unwrap();
    assert_eq!(out[0].refusal, Some(Refusal::UnknownStep));
    assert_eq!(out[0].task_id, None);

    assert_eq!(
        before,
        snapshot(&s).await,
        "refused items must not write anything"
    );

    // A batch mixing good, duplicate and stale items: only the good one lands.
    let good = completion(&c[0]);
    let mut stale = good.clone();
    stale.token = 5;
    let out = s
        .complete(&[good.clone(), good, stale], at(2))
        .await
        .unwrap();
    assert!(out[0].accepted());
    assert_eq!(out[1].refusal, Some(Refusal::DuplicateInBatch));
    assert_eq!(out[2].refusal, Some(Refusal::DuplicateInBatch));
    assert_eq!(s.attempts_of_step(c[0].step_id).await.unwrap().len(), 1);
    // And the same completion again is refused as not in progress.
    let out = s.complete(&[completion(&c[0])], at(3)).await.unwrap();
    assert_eq!(out[0].refusal, Some(Refusal::NotInProgress));
}

async fn an_expired_lease_moves_to_another_worker_and_the_late_completion_is_refused<S: Backend>(
    s: S,
) {
    let task = start(&s, &fixtures::linear(2, fixtures::NOOP), at(0)).await;
    let lease = Duration::from_secs(10);
    let c1 = s.claim("slow", 10, lease, at(0)).await.unwrap();
    assert_eq!(c1.len(), 1);
    let step = c1[0].step_id;

    // A heartbeat keeps it alive.
    let hb = s
        .heartbeat("slow", &[c1[0].lease()], lease, at(5_000))
        .await
        .unwrap();
    assert_eq!(hb[0].lease_expires_at, Some(at(15_000)));
    assert!(s.expire_leases(at(14_999), 100).await.unwrap().is_empty());
    // A heartbeat from another worker with the right token is not honoured.
    let hb = s
        .heartbeat("thief", &[c1[0].lease()], lease, at(6_000))
        .await
        .unwrap();
    assert_eq!(hb[0].lease_expires_at, None);

    // It stops heartbeating: the sweeper takes the step back, ready at once.
    let exp = s.expire_leases(at(15_001), 100).await.unwrap();
    assert_eq!(exp.len(), 1);
    assert_eq!(exp[0].step_id, step);
    assert_eq!(exp[0].worker.as_deref(), Some("slow"));
    assert_eq!(
        (exp[0].state, exp[0].lease_losses, exp[0].token),
        (StepState::WaitingForRetry, 1, 1)
    );
    let r = &s.readiness(task, Some(&[step]), at(15_001)).await.unwrap()[0];
    assert!(r.ready_for_execution);
    assert_eq!(r.attempts, 0, "a lease loss does not use the retry budget");

    let c2 = s.claim("fast", 10, lease, at(15_002)).await.unwrap();
    assert_eq!(c2.len(), 1);
    assert_eq!((c2[0].step_id, c2[0].token, c2[0].attempt), (step, 2, 1));

    // The slow worker wakes up: its completion, heartbeat and release are all refused.
    let before = snapshot(&s).await;
    let out = s.complete(&[completion(&c1[0])], at(16_000)).await.unwrap();
    assert_eq!(out[0].refusal, Some(Refusal::StaleToken));
    let out = s
        .fail(&[failure(&c1[0], true, None)], at(16_000))
        .await
        .unwrap();
    assert_eq!(out[0].refusal, Some(Refusal::StaleToken));
    let hb = s
        .heartbeat("slow", &[c1[0].lease()], lease, at(16_000))
        .await
        .unwrap();
    assert_eq!(hb[0].lease_expires_at, None);
    assert_eq!(before, snapshot(&s).await);

    let out = s.complete(&[completion(&c2[0])], at(17_000)).await.unwrap();
    assert!(out[0].accepted());
    let attempts = s.attempts_of_step(step).await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        (attempts[0].outcome, attempts[0].worker.as_deref()),
        (AttemptOutcome::LeaseLost, Some("slow"))
    );
    assert_eq!(attempts[0].error_kind, Some(ErrorKind::LeaseLost));
    assert_eq!(
        (attempts[1].outcome, attempts[1].worker.as_deref()),
        (AttemptOutcome::Completed, Some("fast"))
    );
    assert_eq!(attempts[1].fuel, Some(1_000));
    let tr: Vec<_> = s
        .step_transitions(step)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.from_state, t.to_state, t.most_recent))
        .collect();
    use StepState::*;
    assert_eq!(
        tr,
        vec![
            (Pending, InProgress, false),
            (InProgress, WaitingForRetry, false),
            (WaitingForRetry, InProgress, false),
            (InProgress, Complete, true),
        ]
    );
}

async fn repeated_lease_losses_end_in_error<S: Backend>(s: S) {
    let task = start(&s, &one_step("poison", "{ max_attempts: 2 }"), at(0)).await;
    let lease = Duration::from_secs(1);
    let mut now = 0;
    for loss in 1..=DEFAULT_MAX_LEASE_LOSSES {
        let c = s.claim("victim", 1, lease, at(now)).await.unwrap();
        assert_eq!(c.len(), 1, "loss {loss}");
        assert_eq!(c[0].attempt, 1, "lease losses do not count as attempts");
        now += 1_001;
        let e = s.expire_leases(at(now), 10).await.unwrap();
        assert_eq!(e[0].lease_losses, loss);
        if loss < DEFAULT_MAX_LEASE_LOSSES {
            assert_eq!(e[0].state, StepState::WaitingForRetry);
            assert_eq!(e[0].task_finalized, None);
        } else {
            assert_eq!(e[0].state, StepState::Error);
            assert_eq!(e[0].task_finalized, Some(TaskState::Error));
        }
    }
    assert!(
        s.claim("victim", 1, lease, at(now))
            .await
            .unwrap()
            .is_empty()
    );
    let a = s
        .attempts_of_step(ids(&s, task).await["only"])
        .await
        .unwrap();
    assert_eq!(a.len(), 5);
    assert!(a.iter().all(|x| x.outcome == AttemptOutcome::LeaseLost));
    assert_eq!(a[4].decision, Some(RetryDecision::Exhausted));
}

async fn release_gives_steps_back_without_penalty<S: Backend>(s: S) {
    let task = start(&s, &fixtures::parallel_merge(fixtures::NOOP), at(0)).await;
    let c = s.claim("leaving", 10, LEASE, at(0)).await.unwrap();
    assert_eq!(c.len(), 3);
    let leases: Vec<_> = c.iter().map(|x| x.lease()).collect();
    let out = s
        .release("someone_else", &leases[..1], at(1))
        .await
        .unwrap();
    assert_eq!(out[0].refusal, Some(Refusal::OtherWorker));
    let out = s.release("leaving", &leases, at(1)).await.unwrap();
    assert!(out.iter().all(|o| o.refusal.is_none()), "{out:?}");
    assert_eq!(
        ready_names(&s, task, at(1)).await,
        names(&["fetch_a", "fetch_b", "fetch_c"])
    );
    let again = s.claim("staying", 10, LEASE, at(1)).await.unwrap();
    assert_eq!(again.len(), 3);
    assert!(again.iter().all(|x| x.attempt == 1 && x.token == 2));
    let st = s.step(again[0].step_id).await.unwrap().unwrap();
    assert_eq!((st.attempts, st.lease_losses), (0, 0));
    let a = s.attempts_of_step(again[0].step_id).await.unwrap();
    assert_eq!(a[0].outcome, AttemptOutcome::Released);
    // The released claim's late completion is refused.
    let out = s.complete(&[completion(&c[0])], at(2)).await.unwrap();
    assert_eq!(out[0].refusal, Some(Refusal::StaleToken));
}

async fn completion_after_cancel_is_refused<S: Backend>(s: S) {
    let task = start(&s, &fixtures::diamond(fixtures::NOOP), at(0)).await;
    let c = claim_all(&s, at(0)).await;
    let out = s.cancel_task(task, at(1)).await.unwrap();
    assert!(out.cancelled);
    assert_eq!(out.steps_cancelled, 4);
    let before = snapshot(&s).await;
    let out = s.complete(&[completion(&c[0])], at(2)).await.unwrap();
    assert_eq!(out[0].refusal, Some(Refusal::Cancelled));
    let out = s.fail(&[failure(&c[0], true, None)], at(2)).await.unwrap();
    assert_eq!(out[0].refusal, Some(Refusal::Cancelled));
    assert_eq!(before, snapshot(&s).await);
    let a = s.attempts_of_step(c[0].step_id).await.unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].outcome, AttemptOutcome::Cancelled);
}

async fn only_the_sweeper_revokes_a_lease<S: Backend>(s: S) {
    start(&s, &fixtures::linear(2, fixtures::NOOP), at(0)).await;
    let c = s
        .claim("w1", 1, Duration::from_secs(1), at(0))
        .await
        .unwrap();
    // Past its expiry but not swept: nobody else can hold it, so the token still counts.
    let hb = s
        .heartbeat("w1", &[c[0].lease()], Duration::from_secs(1), at(5_000))
        .await
        .unwrap();
    assert_eq!(hb[0].lease_expires_at, Some(at(6_000)));
    assert!(
        s.claim("w2", 10, LEASE, at(5_500))
            .await
            .unwrap()
            .is_empty()
    );
    let out = s.complete(&[completion(&c[0])], at(7_000)).await.unwrap();
    assert!(out[0].accepted());
    assert!(s.expire_leases(at(8_000), 10).await.unwrap().is_empty());
}

tasker_tests::on_both_backends!(
    a_stale_token_is_refused_and_changes_nothing,
    an_expired_lease_moves_to_another_worker_and_the_late_completion_is_refused,
    repeated_lease_losses_end_in_error,
    release_gives_steps_back_without_penalty,
    completion_after_cancel_is_refused,
    only_the_sweeper_revokes_a_lease,
);
