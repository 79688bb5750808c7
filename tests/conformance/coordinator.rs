//! The test coordinator on both stores: fixtures, retries at exact instants, failure kinds.

use serde_json::json;
use tasker_core::error_kind::ErrorKind;
use tasker_core::fixtures::{self, NOOP};
use tasker_core::state::{StepState, TaskState};
use tasker_core::template::Template;
use tasker_engine::Coordinator;
use tasker_engine::executor::Execution;
use tasker_engine::testing::{Fault, FaultInjector, InProcessExecutor};
use tasker_store::RetryDecision;
use tasker_tests::Backend;

fn coordinator<S: Backend, E: tasker_engine::Executor>(s: &S, exec: E) -> Coordinator<S, E> {
    Coordinator::new(std::sync::Arc::new(s.clone()), exec)
}

fn ms(report: &tasker_engine::RunReport, at: chrono::DateTime<chrono::Utc>) -> i64 {
    (at - report.started_at).num_milliseconds()
}

async fn every_fixture_runs_each_step_once_in_dependency_order<S: Backend>(s: S) {
    for template in fixtures::all(NOOP) {
        let c = coordinator(&s, InProcessExecutor::new());
        let report = c.run(&template, json!({})).await.unwrap();
        assert_eq!(report.state, TaskState::Complete, "{}", template.key());
        let dag = template.dag().unwrap();
        let levels = dag.levels();
        assert_eq!(
            report.attempts.len(),
            template.steps.len(),
            "{}",
            template.key()
        );
        for a in &report.attempts {
            let level = levels[dag.index(&a.step).unwrap()] as usize;
            assert_eq!(a.round, level, "{} step {}", template.key(), a.step);
            assert_eq!(a.attempt, 1);
            assert!(a.error_kind.is_none() && !a.refused);
        }
        for s in &report.steps {
            assert_eq!(s.state, StepState::Complete);
            assert_eq!(s.attempts, 1);
        }
    }
}

async fn parents_results_reach_children<S: Backend>(s: S) {
    let exec = InProcessExecutor::new().handler("noop", tasker_engine::testing::echo);
    let c = coordinator(&s, exec);
    let report = c
        .run(&fixtures::diamond(NOOP), json!({"order": 7}))
        .await
        .unwrap();
    let d = report.step("d").unwrap().result.clone().unwrap();
    assert_eq!(d["context"], json!({"order": 7}));
    assert_eq!(d["parents"]["b"]["step"], "b");
    assert_eq!(d["parents"]["c"]["parents"]["a"]["step"], "a");
}

async fn retryable_failures_back_off_at_exact_instants<S: Backend>(s: S) {
    // Fixtures use base 1000 ms, multiplier 2, no jitter, 3 attempts.
    let exec = FaultInjector::new(InProcessExecutor::new()).fail("b", Fault::retryable(2));
    let c = coordinator(&s, exec);
    let report = c.run(&fixtures::diamond(NOOP), json!({})).await.unwrap();
    assert_eq!(report.state, TaskState::Complete);
    let b = report.attempts_of("b");
    let instants: Vec<i64> = b.iter().map(|a| ms(&report, a.at)).collect();
    assert_eq!(instants, vec![0, 1_000, 3_000]);
    assert_eq!(b[0].decision, Some(RetryDecision::Retry));
    assert_eq!(b[0].next_ready_at.map(|t| ms(&report, t)), Some(1_000));
    assert_eq!(b[1].next_ready_at.map(|t| ms(&report, t)), Some(3_000));
    assert!(b[2].error_kind.is_none());
    // d waits for b's third attempt.
    assert_eq!(ms(&report, report.attempts_of("d")[0].at), 3_000);
    assert_eq!(report.step("b").unwrap().attempts, 3);
}

async fn server_requested_delay_replaces_backoff<S: Backend>(s: S) {
    let exec = FaultInjector::new(InProcessExecutor::new())
        .fail("step_2", Fault::retryable(1).with_retry_after(250));
    let c = coordinator(&s, exec);
    let report = c.run(&fixtures::linear(3, NOOP), json!({})).await.unwrap();
    let s2 = report.attempts_of("step_2");
    assert_eq!(ms(&report, s2[1].at), 250);
    assert_eq!(ms(&report, report.attempts_of("step_3")[0].at), 250);
}

async fn exhausted_retries_block_only_the_failed_branch<S: Backend>(s: S) {
    let exec = FaultInjector::new(InProcessExecutor::new()).fail("b", Fault::retryable(10));
    let c = coordinator(&s, exec);
    let report = c.run(&fixtures::diamond(NOOP), json!({})).await.unwrap();
    assert_eq!(report.state, TaskState::Error);
    let b = report.attempts_of("b");
    assert_eq!(b.len(), 3);
    assert_eq!(b[2].decision, Some(RetryDecision::Exhausted));
    assert_eq!(report.step("b").unwrap().state, StepState::Error);
    // The sibling branch still ran; the join never did.
    assert_eq!(report.step("c").unwrap().state, StepState::Complete);
    assert_eq!(report.step("d").unwrap().state, StepState::Pending);
    assert!(report.attempts_of("d").is_empty());
}

async fn a_permanent_failure_is_not_retried<S: Backend>(s: S) {
    let exec = FaultInjector::new(InProcessExecutor::new()).fail("step_1", Fault::permanent());
    let c = coordinator(&s, exec);
    let report = c.run(&fixtures::linear(2, NOOP), json!({})).await.unwrap();
    assert_eq!(report.state, TaskState::Error);
    let s1 = report.attempts_of("step_1");
    assert_eq!(s1.len(), 1);
    assert_eq!(s1[0].decision, Some(RetryDecision::Permanent));
    assert_eq!(s1[0].error_kind, Some(ErrorKind::HandlerError));
}

async fn error_kinds_follow_defaults_and_template_overrides<S: Backend>(s: S) {
    let yaml = r#"
namespace: tests
name: kinds
version: 1.0.0
defaults:
  retry: { max_attempts: 3, backoff: { base_ms: 100, jitter: 0 } }
steps:
  - { name: fuel, handler: noop@1.0.0 }
  - { name: trap, handler: noop@1.0.0 }
  - name: fuel_override
    handler: noop@1.0.0
    retry: { by_kind: { out_of_fuel: true } }
  - name: timeout_override
    handler: noop@1.0.0
    retry: { by_kind: { timeout: false } }
"#;
    let t = Template::from_yaml(yaml).unwrap();
    let exec = FaultInjector::new(InProcessExecutor::new())
        .fail("fuel", Fault::of_kind(ErrorKind::OutOfFuel, 1))
        .fail("trap", Fault::of_kind(ErrorKind::Trap, 1))
        .fail("fuel_override", Fault::of_kind(ErrorKind::OutOfFuel, 1))
        .fail("timeout_override", Fault::of_kind(ErrorKind::Timeout, 1));
    let c = coordinator(&s, exec);
    let report = c.run(&t, json!({})).await.unwrap();
    let first = |s: &str| report.attempts_of(s)[0].decision;
    assert_eq!(first("fuel"), Some(RetryDecision::Permanent));
    assert_eq!(first("trap"), Some(RetryDecision::Retry));
    assert_eq!(first("fuel_override"), Some(RetryDecision::Retry));
    assert_eq!(first("timeout_override"), Some(RetryDecision::Permanent));
    assert_eq!(report.step("trap").unwrap().state, StepState::Complete);
    assert_eq!(report.state, TaskState::Error);
}

async fn lifecycle_and_custom_events_reach_the_bus_in_order<S: Backend>(s: S) {
    let exec = InProcessExecutor::new().handler("noop", |step| {
        let mut e = Execution::success(json!({"ok": true}));
        e.events.push(tasker_engine::CustomEvent {
            name: "visited".into(),
            payload: json!({"step": step.step_name}),
        });
        e
    });
    let c = coordinator(
        &s,
        FaultInjector::new(exec).fail("step_1", Fault::retryable(1)),
    );
    let mut sub = c.bus().subscribe(&["*"]);
    let report = c.run(&fixtures::linear(2, NOOP), json!({})).await.unwrap();
    assert_eq!(report.state, TaskState::Complete);
    let mut names = Vec::new();
    while let Some(ev) = sub.try_recv() {
        assert_eq!(ev.task_id, Some(report.task_id));
        names.push(ev.name.clone());
    }
    assert_eq!(
        names,
        vec![
            "task.created",
            "task.started",
            "step.failed",
            "step.retry_scheduled",
            "custom.visited",
            "step.completed",
            "custom.visited",
            "step.completed",
            "task.completed",
        ]
    );
}

async fn an_invalid_context_is_refused_before_anything_is_written<S: Backend>(s: S) {
    let t = Template::from_yaml(
        "namespace: tests\nname: schema\nversion: 1.0.0\ncontext_schema: {type: object, required: [id]}\nsteps:\n  - {name: a, handler: noop@1.0.0}\n",
    )
    .unwrap();
    let c = coordinator(&s, InProcessExecutor::new());
    let err = c.run(&t, json!({"nope": 1})).await.unwrap_err();
    assert!(err.to_string().contains("id"), "{err}");
    assert!(s.template(&t.key()).await.unwrap().is_none());
    let n = s.count("SELECT count(*) FROM tasks").await.unwrap();
    assert_eq!(n, 0);
}

async fn a_task_ends_once_even_when_its_last_steps_finish_together<S: Backend>(s: S) {
    // The tree's four leaves complete in one batch; the task's end is one event.
    let c = coordinator(&s, InProcessExecutor::new());
    let mut sub = c.bus().subscribe(&["task.*"]);
    let report = c.run(&fixtures::tree(NOOP), json!({})).await.unwrap();
    assert_eq!(report.state, TaskState::Complete);
    let mut names = Vec::new();
    while let Some(ev) = sub.try_recv() {
        names.push(ev.name.clone());
    }
    assert_eq!(
        names,
        vec!["task.created", "task.started", "task.completed"]
    );
}

tasker_tests::on_both_backends!(
    every_fixture_runs_each_step_once_in_dependency_order,
    parents_results_reach_children,
    retryable_failures_back_off_at_exact_instants,
    server_requested_delay_replaces_backoff,
    exhausted_retries_block_only_the_failed_branch,
    a_permanent_failure_is_not_retried,
    error_kinds_follow_defaults_and_template_overrides,
    lifecycle_and_custom_events_reach_the_bus_in_order,
    an_invalid_context_is_refused_before_anything_is_written,
    a_task_ends_once_even_when_its_last_steps_finish_together,
);
