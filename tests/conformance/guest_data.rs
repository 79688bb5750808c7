//! What one guest writes can fail only its own step, on both stores: a result nested too
//! deep to hand on, and NUL characters PostgreSQL cannot keep.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tasker_core::error_kind::ErrorKind;
use tasker_core::fixtures::{self, NOOP};
use tasker_core::state::TaskState;
use tasker_engine::executor::Execution;
use tasker_engine::testing::InProcessExecutor;
use tasker_engine::{EventBus, Worker};
use tasker_store::{AttemptLog, LogLevel, LogLine, NewTask};
use tasker_tests::Backend;
use tasker_tests::{own_pool, wait_until_done, worker_config as config};
use tokio_util::sync::CancellationToken;

/// JSON nested `depth` levels deep: `[[[...]]]`.
fn nested(depth: usize) -> serde_json::Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!([v]);
    }
    v
}

/// A result that decodes alone but not once the claim wraps it in `parent_results` must fail
/// only its child: before, the whole claim batch failed to decode, forever, and no step of
/// any task on the store ran again.
async fn a_result_too_deep_to_hand_on_fails_only_its_child<S: Backend>(s: S) {
    let store = s.clone();
    let template = fixtures::linear(2, NOOP);
    store.register_template(&template).await.unwrap();
    let mut tasks = Vec::new();
    for poison in [true, false, false] {
        let t = store
            .create_task(
                &NewTask::new(template.key(), json!({ "poison": poison })),
                Utc::now(),
            )
            .await
            .unwrap();
        tasks.push(t.task_id);
    }
    // serde_json refuses more than 128 levels; the claim adds one.
    let exec = InProcessExecutor::new().handler("noop", |step| {
        if step.context["poison"] == json!(true) && step.step_name == "step_1" {
            Execution::success(nested(127))
        } else {
            Execution::success(json!({"ok": step.step_name}))
        }
    });
    let stop = CancellationToken::new();
    let w = Worker::new(
        Arc::new(own_pool(&s).await),
        Arc::new(exec),
        EventBus::default(),
        config("w1"),
    );
    let run = tokio::spawn(w.run(stop.clone()));
    wait_until_done(&store, &tasks, Duration::from_secs(60)).await;

    let states: Vec<TaskState> = {
        let mut v = Vec::new();
        for t in &tasks {
            v.push(store.task(*t).await.unwrap().unwrap().state);
        }
        v
    };
    assert_eq!(
        states,
        vec![TaskState::Error, TaskState::Complete, TaskState::Complete]
    );
    let steps = store.steps_of_task(tasks[0]).await.unwrap();
    let child = steps.iter().find(|st| st.name == "step_2").unwrap();
    let attempts = store.attempts_of_step(child.id).await.unwrap();
    assert_eq!(
        attempts.len(),
        1,
        "a defective claim is not retried: {attempts:?}"
    );
    assert_eq!(attempts[0].error_kind, Some(ErrorKind::BadOutput));
    let message = attempts[0].message.clone().unwrap_or_default();
    assert!(
        message.contains("parent results cannot be decoded"),
        "{message}"
    );
    // The store keeps serving: a task created afterwards runs.
    let late = store
        .create_task(&NewTask::new(template.key(), json!({})), Utc::now())
        .await
        .unwrap()
        .task_id;
    wait_until_done(&store, &[late], Duration::from_secs(60)).await;
    assert_eq!(
        store.task(late).await.unwrap().unwrap().state,
        TaskState::Complete
    );
    stop.cancel();
    run.await.unwrap();
}

/// PostgreSQL cannot keep NUL in text or jsonb: a result with one fails its own attempt as
/// `bad_output`, a message with one is kept with U+FFFD, and neither fails the batch call
/// that records the other steps (before, the whole call failed and every lease in it
/// expired, again and again).
async fn a_nul_from_a_guest_fails_only_its_own_attempt<S: Backend>(s: S) {
    let store = s.clone();
    let template = fixtures::linear(1, NOOP);
    store.register_template(&template).await.unwrap();
    let mut tasks = Vec::new();
    for what in ["nul_result", "nul_message", "fine", "nul_log"] {
        let t = store
            .create_task(
                &NewTask::new(template.key(), json!({ "what": what })),
                Utc::now(),
            )
            .await
            .unwrap();
        tasks.push(t.task_id);
    }
    let exec =
        InProcessExecutor::new().handler("noop", |step| match step.context["what"].as_str() {
            Some("nul_result") => Execution::success(json!({"text": "a\u{0}b"})),
            Some("nul_message") => Execution::failure(ErrorKind::BadOutput, "broken\u{0}message"),
            Some("nul_log") => Execution {
                log: AttemptLog {
                    lines: vec![LogLine {
                        at_us: 1,
                        level: LogLevel::Info,
                        message: "said\u{0}this".into(),
                    }],
                    stderr: "err\u{0}\n".into(),
                    ..AttemptLog::default()
                },
                ..Execution::success(json!({"ok": true}))
            },
            _ => Execution::success(json!({"ok": true})),
        });
    let stop = CancellationToken::new();
    let w = Worker::new(
        Arc::new(own_pool(&s).await),
        Arc::new(exec),
        EventBus::default(),
        config("w1"),
    );
    let run = tokio::spawn(w.run(stop.clone()));
    wait_until_done(&store, &tasks, Duration::from_secs(60)).await;
    let mut outcomes = Vec::new();
    for t in &tasks {
        let step = &store.steps_of_task(*t).await.unwrap()[0];
        let a = store.attempts_of_step(step.id).await.unwrap();
        assert_eq!(a.len(), 1, "one attempt, no lease loss: {a:?}");
        outcomes.push((a[0].error_kind, a[0].message.clone()));
    }
    assert_eq!(outcomes[0].0, Some(ErrorKind::BadOutput));
    assert!(outcomes[0].1.as_deref().unwrap().contains("NUL"));
    assert_eq!(
        outcomes[1],
        (
            Some(ErrorKind::BadOutput),
            Some("broken\u{fffd}message".to_owned())
        )
    );
    assert_eq!(outcomes[2], (None, None));
    // What a guest said is kept too, NUL as U+FFFD, and its step completes.
    assert_eq!(outcomes[3], (None, None));
    let step = &store.steps_of_task(tasks[3]).await.unwrap()[0];
    let logs = store.attempt_logs(step.id, None).await.unwrap();
    assert_eq!(logs[0].log.lines[0].message, "said\u{fffd}this");
    assert_eq!(logs[0].log.stderr, "err\u{fffd}\n");
    assert_eq!(
        store.task(tasks[2]).await.unwrap().unwrap().state,
        TaskState::Complete
    );
    stop.cancel();
    run.await.unwrap();
}

tasker_tests::on_both_backends!(
    a_result_too_deep_to_hand_on_fails_only_its_child,
    a_nul_from_a_guest_fails_only_its_own_attempt,
);
