//! A worker records each batch of completions and claims the next steps in the same store
//! call (`Store::complete_and_claim`), on both stores: the hops of a task need no claim loop,
//! the claim events are published, and the concurrency limit holds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tasker_core::clock::Clock;
use tasker_core::events;
use tasker_core::fixtures::{self, NOOP};
use tasker_core::state::{StepState, TaskState};
use tasker_core::template::Template;
use tasker_engine::executor::{Execution, Executor};
use tasker_engine::{EventBus, Worker, WorkerConfig};
use tasker_store::{ClaimedStep, NewTask, Store, TaskId};
use tasker_tests::Backend;
use tokio_util::sync::CancellationToken;

/// Every reading is 1 ms after the previous one: two instants are equal only when one
/// reading served both.
#[derive(Debug)]
struct TickingClock(Mutex<DateTime<Utc>>);

impl Clock for TickingClock {
    fn now(&self) -> DateTime<Utc> {
        let mut t = self.0.lock().unwrap();
        *t += chrono::Duration::milliseconds(1);
        *t
    }
}

/// Counts the steps running at once.
#[derive(Clone, Default)]
struct Counting {
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Executor for Counting {
    async fn execute(&self, step: &ClaimedStep) -> Execution {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        Execution::success(json!({"step": step.step_name}))
    }
}

/// The claim loop polls only every 30 s: a task that finishes sooner was driven by its
/// completions.
fn config(id: &str, concurrency: usize) -> WorkerConfig {
    WorkerConfig {
        id: id.to_owned(),
        concurrency,
        claim_batch: 64,
        record_batch: 64,
        lease: Duration::from_secs(30),
        heartbeat_every: Duration::from_secs(5),
        sweep_every: Duration::from_secs(5),
        poll_every: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(10),
        only_task: None,
    }
}

async fn start_task<S: Store>(s: &S, t: &Template) -> TaskId {
    s.register_template(t).await.unwrap();
    s.create_task(&NewTask::new(t.key(), json!({})), Utc::now())
        .await
        .unwrap()
        .task_id
}

async fn wait_complete<S: Store>(s: &S, task: TaskId) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let state = s.task(task).await.unwrap().unwrap().state;
        if state == TaskState::Complete {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {task} still {state}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn each_completion_claims_the_next_step_in_the_same_call<S: Backend>(s: S) {
    let task = start_task(&s, &fixtures::linear(4, NOOP)).await;
    let bus = EventBus::new(1024);
    let mut seen = bus.subscribe(&["*"]);
    let clock = Arc::new(TickingClock(Mutex::new(Utc::now())));
    let w = Worker::with_clock(
        Arc::new(s.sibling(4).await.unwrap()),
        Arc::new(Counting::default()),
        bus.clone(),
        config("hops", 8),
        clock,
    );
    let stop = CancellationToken::new();
    let run = tokio::spawn(w.run(stop.clone()));
    wait_complete(&s, task).await;
    stop.cancel();
    let totals = run.await.unwrap();
    assert_eq!(
        (totals.claimed, totals.completed, totals.lease_lost),
        (4, 4, 0)
    );

    // Step k + 1 was claimed at the very instant step k's completion was recorded.
    let steps = s.steps_of_task(task).await.unwrap();
    for pair in steps.windows(2) {
        let done = s.step_transitions(pair[0].id).await.unwrap();
        let claimed = s.step_transitions(pair[1].id).await.unwrap();
        assert_eq!(done.last().unwrap().to_state, StepState::Complete);
        assert_eq!(claimed[0].to_state, StepState::InProgress);
        assert_eq!(
            claimed[0].created_at,
            done.last().unwrap().created_at,
            "{} then {}",
            pair[0].name,
            pair[1].name
        );
    }
    assert!(steps.iter().all(|s| s.lease_expires_at.is_none()));

    // Each step: claimed, started, completed, in that order; the task starts and completes
    // once, around them.
    let mut names = Vec::new();
    while let Some(e) = seen.try_recv() {
        let step = e.step_name.clone().unwrap_or_default();
        names.push(format!("{} {step}", e.name).trim().to_owned());
    }
    let mut want = vec![events::TASK_STARTED.to_owned()];
    for i in 1..=4 {
        for name in [
            events::STEP_CLAIMED,
            events::STEP_STARTED,
            events::STEP_COMPLETED,
        ] {
            want.push(format!("{name} step_{i}"));
        }
    }
    want.push(events::TASK_COMPLETED.to_owned());
    assert_eq!(names, want);
}

async fn claims_with_completions_keep_the_concurrency_limit<S: Backend>(s: S) {
    let mut yaml = "namespace: tests\nname: wide\nversion: 1.0.0\nsteps:\n  - {name: root, handler: noop@1.0.0}\n".to_owned();
    for i in 0..12 {
        yaml.push_str(&format!(
            "  - {{name: c{i:02}, handler: noop@1.0.0, depends_on: root}}\n"
        ));
    }
    yaml.push_str("  - {name: tail, handler: noop@1.0.0, depends_on: [c00, c05, c11]}\n");
    let template = Template::from_yaml(&yaml).unwrap();
    let tasks = [
        start_task(&s, &template).await,
        start_task(&s, &template).await,
    ];
    let exec = Counting::default();
    let w = Worker::new(
        Arc::new(s.sibling(4).await.unwrap()),
        Arc::new(exec.clone()),
        EventBus::default(),
        config("narrow", 3),
    );
    let stop = CancellationToken::new();
    let run = tokio::spawn(w.run(stop.clone()));
    for t in tasks {
        wait_complete(&s, t).await;
    }
    stop.cancel();
    let totals = run.await.unwrap();
    assert_eq!((totals.claimed, totals.completed), (28, 28));
    assert!(exec.most.load(Ordering::SeqCst) <= 3, "limit exceeded");
    assert_eq!(
        s.count("SELECT count(*) FROM steps WHERE lease_expires_at IS NOT NULL")
            .await
            .unwrap(),
        0
    );
}

tasker_tests::on_both_backends!(
    each_completion_claims_the_next_step_in_the_same_call,
    claims_with_completions_keep_the_concurrency_limit,
);
