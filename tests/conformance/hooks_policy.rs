//! Retry policies on the coordinator's (= the worker's) decision path at exact instants, and
//! the hook delivery loop: order, at-least-once after an abandoned lease, dead letters.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::json;
use tasker_core::error_kind::ErrorKind;
use tasker_core::state::TaskState;
use tasker_core::template::{HandlerRef, Template};
use tasker_engine::hooks::{DeliveryConfig, HookDeliverer, HookRunner};
use tasker_engine::policy::{Policies, PolicyAnswer, PolicyFailure, RetryPolicyRunner};
use tasker_engine::testing::{Fault, FaultInjector, InProcessExecutor};
use tasker_engine::{ComponentError, Coordinator};
use tasker_store::{DeliveryState, HookDeliveryJob, RetryDecision, TaskId};
use tasker_tests::Backend;

type Answer = Box<dyn Fn(&PolicyFailure) -> Result<PolicyAnswer, ComponentError> + Send + Sync>;

/// A policy answering from a closure, recording what it was asked.
struct FnPolicy {
    answer: Answer,
    asked: Mutex<Vec<(String, PolicyFailure)>>,
}

impl FnPolicy {
    fn new(
        f: impl Fn(&PolicyFailure) -> Result<PolicyAnswer, ComponentError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(FnPolicy {
            answer: Box::new(f),
            asked: Mutex::new(Vec::new()),
        })
    }
    fn asked(&self) -> Vec<(String, PolicyFailure)> {
        self.asked.lock().unwrap().clone()
    }
}

impl RetryPolicyRunner for FnPolicy {
    fn decide<'a>(
        &'a self,
        policy: &'a HandlerRef,
        failure: &'a PolicyFailure,
    ) -> BoxFuture<'a, Result<PolicyAnswer, ComponentError>> {
        self.asked
            .lock()
            .unwrap()
            .push((policy.to_string(), failure.clone()));
        let a = (self.answer)(failure);
        Box::pin(async move { a })
    }
}

fn one_step(name: &str, max_attempts: u32) -> Template {
    Template::from_yaml(&format!(
        "namespace: tests\nname: {name}\nversion: 1.0.0\nretry_policy: p@1.0.0\n\
         steps:\n  - {{name: s, handler: noop@1.0.0, retry: {{max_attempts: {max_attempts}, \
         backoff: {{base_ms: 1000, multiplier: 2, jitter: 0}}}}}}\n"
    ))
    .unwrap()
}

fn coordinator<S: Backend>(
    s: &S,
    fault: Fault,
    policies: Policies,
) -> Coordinator<S, FaultInjector<InProcessExecutor>> {
    let exec = FaultInjector::new(InProcessExecutor::new()).fail("s", fault);
    Coordinator::new(Arc::new(s.clone()), exec).with_policies(policies)
}

fn ms(r: &tasker_engine::RunReport, t: Option<chrono::DateTime<chrono::Utc>>) -> Option<i64> {
    t.map(|t| (t - r.started_at).num_milliseconds())
}

async fn a_policy_retry_sets_the_exact_instant_and_sees_the_failure<S: Backend>(s: S) {
    let p = FnPolicy::new(|_| Ok(PolicyAnswer::Retry { after_ms: 700 }));
    let c = coordinator(&s, Fault::retryable(2), Policies::with_runner(p.clone()));
    let r = c.run(&one_step("retry", 4), json!({})).await.unwrap();
    assert_eq!(r.state, TaskState::Complete);
    let a = r.attempts_of("s");
    assert_eq!(a.len(), 3);
    assert_eq!(ms(&r, a[0].next_ready_at), Some(700));
    assert_eq!(ms(&r, a[1].next_ready_at), Some(1400));
    let asked = p.asked();
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[0].0, "p@1.0.0");
    let f = &asked[1].1;
    assert_eq!(
        (f.attempt, f.max_attempts, f.error_kind.as_str()),
        (2, 4, "handler_error")
    );
    assert_eq!(f.message, "injected retryable failure");
    assert_eq!(
        (asked[0].1.since_first_attempt_ms, f.since_first_attempt_ms),
        (0, 700)
    );
    let rows = c
        .store()
        .attempts_of_step(r.step("s").unwrap().id)
        .await
        .unwrap();
    assert_eq!(rows[0].decided_by.as_deref(), Some("policy:p@1.0.0"));
    assert_eq!(
        rows[0].decision_detail.as_deref(),
        Some("retry after 700 ms")
    );
    assert_eq!(rows[0].policy_warning, None);
}

async fn a_policy_can_give_up_at_once<S: Backend>(s: S) {
    let p = FnPolicy::new(|f| {
        Ok(PolicyAnswer::GiveUp {
            reason: format!("no point after {}", f.error_kind),
        })
    });
    let c = coordinator(&s, Fault::retryable(5), Policies::with_runner(p.clone()));
    let r = c.run(&one_step("giveup", 5), json!({})).await.unwrap();
    assert_eq!(r.state, TaskState::Error);
    let a = r.attempts_of("s");
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].decision, Some(RetryDecision::Permanent));
    let rows = c
        .store()
        .attempts_of_step(r.step("s").unwrap().id)
        .await
        .unwrap();
    assert_eq!(
        rows[0].decision_detail.as_deref(),
        Some("give up: no point after handler_error")
    );
}

async fn a_policy_may_retry_what_the_builtin_policy_would_not<S: Backend>(s: S) {
    // out_of_fuel is not retried by default; this policy retries it after 50 ms.
    let p = FnPolicy::new(|_| Ok(PolicyAnswer::Retry { after_ms: 50 }));
    let fault = Fault::of_kind(tasker_core::error_kind::ErrorKind::OutOfFuel, 1);
    let c = coordinator(&s, fault, Policies::with_runner(p));
    let r = c.run(&one_step("fuel", 3), json!({})).await.unwrap();
    assert_eq!(r.state, TaskState::Complete);
    assert_eq!(ms(&r, r.attempts_of("s")[0].next_ready_at), Some(50));
}

async fn the_handlers_retry_after_reaches_the_policy<S: Backend>(s: S) {
    let p = FnPolicy::new(|f| {
        Ok(PolicyAnswer::Retry {
            after_ms: f.retry_after_ms.unwrap_or(1),
        })
    });
    let c = coordinator(
        &s,
        Fault::retryable(1).with_retry_after(5000),
        Policies::with_runner(p),
    );
    let r = c.run(&one_step("ra", 3), json!({})).await.unwrap();
    assert_eq!(ms(&r, r.attempts_of("s")[0].next_ready_at), Some(5000));
}

async fn a_policy_cannot_exceed_the_host_maximum_delay<S: Backend>(s: S) {
    let p = FnPolicy::new(|_| {
        Ok(PolicyAnswer::Retry {
            after_ms: 36_000_000,
        })
    });
    let policies = Policies {
        max_delay_ms: 60_000,
        ..Policies::with_runner(p)
    };
    let c = coordinator(&s, Fault::retryable(1), policies);
    let r = c.run(&one_step("clamp", 3), json!({})).await.unwrap();
    assert_eq!(r.state, TaskState::Complete);
    assert_eq!(ms(&r, r.attempts_of("s")[0].next_ready_at), Some(60_000));
    let rows = c
        .store()
        .attempts_of_step(r.step("s").unwrap().id)
        .await
        .unwrap();
    assert_eq!(
        rows[0].decision_detail.as_deref(),
        Some("retry after 36000000 ms, clamped to the host maximum of 60000 ms")
    );
}

async fn a_policy_cannot_exceed_max_attempts<S: Backend>(s: S) {
    let p = FnPolicy::new(|_| Ok(PolicyAnswer::Retry { after_ms: 10 }));
    let c = coordinator(&s, Fault::retryable(5), Policies::with_runner(p.clone()));
    let r = c.run(&one_step("max", 2), json!({})).await.unwrap();
    assert_eq!(r.state, TaskState::Error);
    let a = r.attempts_of("s");
    assert_eq!(a.len(), 2);
    assert_eq!(a[1].decision, Some(RetryDecision::Exhausted));
    // Not asked about the last attempt: nothing it says could run the step again.
    assert_eq!(p.asked().len(), 1);
}

async fn a_failing_policy_falls_back_to_the_builtin_one_with_a_warning<S: Backend>(s: S) {
    let p = FnPolicy::new(|_| {
        Err(ComponentError::Failed {
            kind: ErrorKind::Trap,
            message: "policy bug".into(),
        })
    });
    let c = coordinator(&s, Fault::retryable(1), Policies::with_runner(p));
    let r = c.run(&one_step("broken", 3), json!({})).await.unwrap();
    assert_eq!(r.state, TaskState::Complete);
    // The built-in backoff: base 1000 ms, no jitter.
    assert_eq!(ms(&r, r.attempts_of("s")[0].next_ready_at), Some(1000));
    let rows = c
        .store()
        .attempts_of_step(r.step("s").unwrap().id)
        .await
        .unwrap();
    assert_eq!(rows[0].decided_by.as_deref(), Some("builtin"));
    let w = rows[0].policy_warning.as_deref().unwrap();
    assert!(
        w.contains("p@1.0.0") && w.contains("trap: policy bug"),
        "{w}"
    );

    // Without any runner on the host, the same fallback.
    let c = coordinator(&s, Fault::retryable(1), Policies::default());
    let r = c.run(&one_step("norunner", 3), json!({})).await.unwrap();
    assert_eq!(ms(&r, r.attempts_of("s")[0].next_ready_at), Some(1000));
    let rows = c
        .store()
        .attempts_of_step(r.step("s").unwrap().id)
        .await
        .unwrap();
    assert!(
        rows[0]
            .policy_warning
            .as_deref()
            .unwrap()
            .contains("no retry-policy runner")
    );
}

// ---------------------------------------------------------------------------------------------
// Delivery loop

/// Records deliveries; `bad@*` hooks always fail.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(String, TaskId, String)>>,
}

impl HookRunner for Recorder {
    fn deliver<'a>(
        &'a self,
        job: &'a HookDeliveryJob,
    ) -> BoxFuture<'a, Result<(), ComponentError>> {
        self.seen.lock().unwrap().push((
            job.component.clone(),
            job.task_id,
            job.event_name.clone(),
        ));
        let out = if job.component.starts_with("bad@") {
            Err(ComponentError::Failed {
                kind: ErrorKind::HandlerError,
                message: format!("refused {}", job.event_name),
            })
        } else {
            Ok(())
        };
        Box::pin(async move { out })
    }
}

const HOOKED: &str = "namespace: tests\nname: hooked\nversion: 1.0.0\n\
hooks:\n  - {component: rec@1.0.0, events: ['*']}\n\
\x20 - {component: bad@1.0.0, events: [step.*], delivery: {max_attempts: 2, backoff: {base_ms: 1, jitter: 0}}}\n\
steps:\n  - {name: a, handler: noop@1.0.0}\n  - {name: b, handler: noop@1.0.0, depends_on: a}\n  - {name: c, handler: noop@1.0.0, depends_on: a}\n";

async fn hooks_get_every_event_in_order_at_least_once_and_bad_ones_go_dead<S: Backend>(s: S) {
    let store = Arc::new(s.clone());
    let t = Template::from_yaml(HOOKED).unwrap();
    // Real time: the delivery loop below runs on the system clock.
    let c = Coordinator::new(store.clone(), InProcessExecutor::new())
        .with_clock(tasker_core::clock::ManualClock::new(chrono::Utc::now()));
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let r = c.run(&t, json!({})).await.unwrap();
        // The hooks have not run at all: the workflow never waits for them.
        assert_eq!(r.state, TaskState::Complete);
        tasks.push(r.task_id);
    }

    // A delivery worker claims the first deliveries and dies without finishing them.
    let now = chrono::Utc::now();
    let abandoned = store
        .claim_hook_deliveries("dead-worker", 100, Duration::from_millis(300), now)
        .await
        .unwrap();
    assert_eq!(abandoned.len(), 6, "one head per (hook, task)");

    let rec = Arc::new(Recorder::default());
    let d = HookDeliverer::new(
        store.clone(),
        rec.clone(),
        DeliveryConfig {
            batch: 4,
            ..DeliveryConfig::default()
        },
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        d.deliver_once().await.unwrap();
        let counts = store.hook_counts(None).await.unwrap();
        if counts.iter().all(|c| c.pending == 0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "deliveries did not drain: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let seen = rec.seen.lock().unwrap().clone();
    for &task in &tasks {
        let outbox = store.hook_outbox_of_task(task).await.unwrap();
        let rec_hook = outbox
            .iter()
            .find(|r| r.event_name == "task.created")
            .unwrap()
            .hook_id;
        let expected: Vec<String> = outbox
            .iter()
            .filter(|r| r.hook_id == rec_hook)
            .map(|r| r.event_name.clone())
            .collect();
        let got: Vec<String> = seen
            .iter()
            .filter(|(h, t, _)| h == "rec@1.0.0" && *t == task)
            .map(|(_, _, e)| e.clone())
            .collect();
        // Every event, in order, including the abandoned head (delivered after its lease).
        assert_eq!(got, expected, "task {task}");
        assert_eq!(expected.first().map(String::as_str), Some("task.created"));
        assert_eq!(expected.last().map(String::as_str), Some("task.completed"));
        assert!(
            outbox
                .iter()
                .filter(|r| r.hook_id == rec_hook)
                .all(|r| r.state == DeliveryState::Delivered)
        );
        // The bad hook: each step event tried twice, in order, then parked as dead.
        let bad: Vec<&tasker_store::OutboxRow> =
            outbox.iter().filter(|r| r.hook_id != rec_hook).collect();
        assert_eq!(bad.len(), 3, "step.completed x3");
        assert!(
            bad.iter()
                .all(|r| r.state == DeliveryState::Dead && r.attempts == 2)
        );
        assert_eq!(
            bad[0].last_error.as_deref(),
            Some("handler_error: refused step.completed")
        );
    }
    let counts = store.hook_counts(None).await.unwrap();
    let bad = counts.iter().find(|c| c.component == "bad@1.0.0").unwrap();
    assert_eq!((bad.dead, bad.pending, bad.delivered), (9, 0, 0));
    let stats = d.stats();
    assert_eq!(stats.dead.load(std::sync::atomic::Ordering::Relaxed), 9);
}

/// Fails the first delivery of every fifth outbox row, then accepts; records every call.
#[derive(Default)]
struct Flaky {
    seen: Mutex<Vec<(TaskId, i64, String)>>,
}

impl HookRunner for Flaky {
    fn deliver<'a>(
        &'a self,
        job: &'a HookDeliveryJob,
    ) -> BoxFuture<'a, Result<(), ComponentError>> {
        self.seen
            .lock()
            .unwrap()
            .push((job.task_id, job.delivery_id, job.event_name.clone()));
        let out = if job.delivery_id % 5 == 0 && job.delivery_no == 1 {
            Err(ComponentError::NoAnswer(Duration::from_millis(1)))
        } else {
            Ok(())
        };
        Box::pin(async move { out })
    }
}

async fn concurrent_workers_and_delivery_loops_keep_every_task_in_order<S: Backend>(s: S) {
    // mixed_20 with a hook on everything, retried after 1 ms.
    let mut t = tasker_core::fixtures::mixed_20(tasker_core::fixtures::NOOP);
    t.name = "mixed_hooked".into();
    t.hooks = Template::from_yaml(
        "namespace: x\nname: x\nversion: 1.0.0\nhooks:\n  - {component: rec@1.0.0, events: ['*'], \
         delivery: {max_attempts: 3, backoff: {base_ms: 1, jitter: 0}}}\nsteps:\n  - {name: a, handler: h@1.0.0}\n",
    )
    .unwrap()
    .hooks;
    let store = Arc::new(s.clone());
    store.register_template(&t).await.unwrap();
    for i in 0..60 {
        store
            .create_task(
                &tasker_store::NewTask::new(t.key(), json!({ "i": i })),
                chrono::Utc::now(),
            )
            .await
            .unwrap();
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let rec = Arc::new(Flaky::default());
    let mut handles = Vec::new();
    for i in 0..2 {
        let own = Arc::new(s.sibling(4).await.unwrap());
        let w = tasker_engine::Worker::new(
            own.clone(),
            Arc::new(InProcessExecutor::new()),
            tasker_engine::EventBus::default(),
            tasker_engine::WorkerConfig {
                id: format!("w{i}"),
                concurrency: 16,
                claim_batch: 8,
                record_batch: 8,
                poll_every: Duration::from_millis(10),
                ..Default::default()
            },
        );
        handles.push(tokio::spawn({
            let stop = stop.clone();
            async move {
                w.run(stop).await;
            }
        }));
        let d = HookDeliverer::new(
            own,
            rec.clone(),
            DeliveryConfig {
                id: format!("d{i}"),
                batch: 8,
                poll_every: Duration::from_millis(5),
                ..DeliveryConfig::default()
            },
        );
        handles.push(tokio::spawn(d.run(stop.clone())));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let open = s
            .count(
                "SELECT (SELECT count(*) FROM tasks WHERE state <> 'complete')
                      + (SELECT count(*) FROM hook_outbox WHERE state <> 'delivered')",
            )
            .await
            .unwrap();
        if open == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{open} tasks or deliveries left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    for h in handles {
        h.await.unwrap();
    }
    let seen = rec.seen.lock().unwrap().clone();
    let tasks = s.count("SELECT count(*) FROM tasks").await.unwrap();
    assert_eq!(tasks, 60);
    for task in 1..=tasks {
        let want: Vec<i64> = store
            .hook_outbox_of_task(TaskId::new(task))
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        // 1 created + 1 started + 20 step.completed + 1 completed.
        assert_eq!(want.len(), 23, "task {task}");
        let mut got: Vec<i64> = seen
            .iter()
            .filter(|(t, _, _)| *t == task)
            .map(|(_, id, _)| *id)
            .collect();
        got.dedup(); // a failed first delivery is followed directly by its retry
        assert_eq!(got, want, "task {task}: delivered out of order");
    }
}

tasker_tests::on_both_backends!(
    a_policy_retry_sets_the_exact_instant_and_sees_the_failure,
    a_policy_can_give_up_at_once,
    a_policy_may_retry_what_the_builtin_policy_would_not,
    the_handlers_retry_after_reaches_the_policy,
    a_policy_cannot_exceed_the_host_maximum_delay,
    a_policy_cannot_exceed_max_attempts,
    a_failing_policy_falls_back_to_the_builtin_one_with_a_warning,
    hooks_get_every_event_in_order_at_least_once_and_bad_ones_go_dead,
    concurrent_workers_and_delivery_loops_keep_every_task_in_order,
);
