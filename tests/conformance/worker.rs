//! Workers with the real clock, on both stores: concurrency, leases, shutdown; and, on
//! PostgreSQL only, LISTEN/NOTIFY wake-ups.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use sqlx::PgPool;
use tasker_core::fixtures::{self, NOOP};
use tasker_core::state::TaskState;
use tasker_engine::executor::{Execution, Executor};
use tasker_engine::testing::InProcessExecutor;
use tasker_engine::{EventBus, Worker, WorkerConfig};
use tasker_store::{AttemptOutcome, ClaimedStep, NewTask, PgStore, Store, TaskId};
use tasker_tests::{Backend, own_pool, wait_until_done, worker_config as config};
use tokio_util::sync::CancellationToken;

fn outcome_name(o: AttemptOutcome) -> &'static str {
    match o {
        AttemptOutcome::Completed => "completed",
        AttemptOutcome::Failed => "failed",
        AttemptOutcome::LeaseLost => "lease_lost",
        AttemptOutcome::Released => "released",
        AttemptOutcome::Cancelled => "cancelled",
    }
}

/// Registers `template` and creates one task from it.
async fn start_task<S: Store>(store: &S, template: &tasker_core::template::Template) -> TaskId {
    store.register_template(template).await.unwrap();
    store
        .create_task(&NewTask::new(template.key(), json!({})), Utc::now())
        .await
        .unwrap()
        .task_id
}

/// A worker with its own connections and a LISTEN wake-up.
async fn listening_worker<E: Executor>(
    pool: &PgPool,
    exec: E,
    cfg: WorkerConfig,
    stop: &CancellationToken,
) -> (
    tokio::task::JoinHandle<tasker_engine::WorkerTotals>,
    tokio::task::JoinHandle<()>,
) {
    let worker_store = own_pool(&PgStore::new(pool.clone())).await;
    let listen_pool = worker_store.pool().clone();
    let w = Worker::new(
        Arc::new(worker_store),
        Arc::new(exec),
        EventBus::default(),
        cfg,
    );
    let listener =
        tasker_engine::pg::spawn_ready_listener(listen_pool, w.wake_handle(), stop.clone());
    (tokio::spawn(w.run(stop.clone())), listener)
}

async fn four_workers_run_20000_steps_exactly_once<S: Backend>(s: S) {
    let store = s.clone();
    let template = fixtures::mixed_20(NOOP);
    store.register_template(&template).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..1_000 {
        let t = store
            .create_task(&NewTask::new(template.key(), json!({"i": i})), Utc::now())
            .await
            .unwrap();
        tasks.push(t.task_id);
    }

    let stop = CancellationToken::new();
    let mut handles = Vec::new();
    for w in 0..4 {
        let st = Arc::new(own_pool(&s).await);
        let worker = Worker::new(
            st,
            Arc::new(InProcessExecutor::new()),
            EventBus::default(),
            config(&format!("w{w}")),
        );
        handles.push(tokio::spawn(worker.run(stop.clone())));
    }
    wait_until_done(&store, &tasks, Duration::from_secs(240)).await;
    stop.cancel();
    let mut claimed = 0;
    for h in handles {
        let totals = h.await.unwrap();
        assert!(totals.completed > 0, "every worker took part: {totals:?}");
        assert_eq!(totals.lease_lost, 0);
        claimed += totals.claimed;
    }
    assert_eq!(claimed, 20_000);

    // Every step completed exactly once, by one attempt.
    let q = |sql: &'static str| {
        let s = s.clone();
        async move { s.count(sql).await.unwrap() }
    };
    assert_eq!(q("SELECT count(*) FROM attempts").await, 20_000);
    assert_eq!(
        q("SELECT count(DISTINCT step_id) FROM attempts WHERE outcome = 'completed'").await,
        20_000
    );
    assert_eq!(q("SELECT count(*) FROM tasks").await, 1_000);
    assert_eq!(
        q("SELECT count(*) FROM tasks WHERE state = 'complete'").await,
        1_000
    );

    // No step was claimed twice: exactly one pending->in_progress transition each, and one
    // in_progress->complete, in that order.
    let bad = q("SELECT count(*) FROM (
           SELECT step_id,
                  count(*) FILTER (WHERE to_state = 'in_progress') AS claims,
                  count(*) FILTER (WHERE to_state = 'complete') AS completes,
                  max(sort_key) AS transitions
           FROM step_transitions GROUP BY step_id) x
         WHERE claims <> 1 OR completes <> 1 OR transitions > 2")
    .await;
    assert_eq!(bad, 0);
}

/// Blocks until released, counting the attempts it saw.
#[derive(Clone, Default)]
struct Gate {
    started: Arc<AtomicUsize>,
    open: Arc<tokio::sync::Notify>,
}

impl Executor for Gate {
    async fn execute(&self, step: &ClaimedStep) -> Execution {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.open.notified().await;
        Execution::success(json!({"by": "gate", "step": step.step_name}))
    }
}

async fn a_silent_worker_loses_its_leases_and_its_late_completion_is_refused<S: Backend>(s: S) {
    let store = s.clone();
    let template = fixtures::parallel_merge(NOOP);
    let task = start_task(&store, &template).await;

    // Worker A: short lease, never heartbeats, its handler blocks.
    let gate = Gate::default();
    let stop_a = CancellationToken::new();
    let cfg_a = WorkerConfig {
        // Exactly the three roots: with a free slot it could claim a swept step again.
        concurrency: 3,
        lease: Duration::from_millis(500),
        heartbeat_every: Duration::from_secs(3600),
        sweep_every: Duration::from_secs(3600),
        ..config("silent")
    };
    let a = Worker::new(
        Arc::new(own_pool(&s).await),
        Arc::new(gate.clone()),
        EventBus::default(),
        cfg_a,
    );
    let a_stats = a.stats();
    let a_run = tokio::spawn(a.run(stop_a.clone()));
    while gate.started.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Worker B sweeps expired leases and runs everything.
    let bus = EventBus::default();
    let mut lost = bus.subscribe(&["step.lease_lost"]);
    let stop_b = CancellationToken::new();
    let b = Worker::new(
        Arc::new(own_pool(&s).await),
        Arc::new(InProcessExecutor::new()),
        bus,
        config("healthy"),
    );
    let b_run = tokio::spawn(b.run(stop_b.clone()));
    wait_until_done(&store, &[task], Duration::from_secs(30)).await;
    assert_eq!(
        store.task(task).await.unwrap().unwrap().state,
        TaskState::Complete
    );
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(5), lost.recv())
            .await
            .expect("lease_lost events")
            .unwrap();
    }

    // A wakes up late: its three completions are refused and change nothing.
    gate.open.notify_waiters();
    stop_a.cancel();
    let a_totals = a_run.await.unwrap();
    assert_eq!(a_stats.totals().lease_lost, 3);
    assert_eq!(a_totals.completed, 0);
    stop_b.cancel();
    b_run.await.unwrap();

    let mut by_step: HashMap<String, Vec<(String, Option<String>)>> = HashMap::new();
    for step in store.steps_of_task(task).await.unwrap() {
        for a in store.attempts_of_step(step.id).await.unwrap() {
            by_step
                .entry(step.name.clone())
                .or_default()
                .push((outcome_name(a.outcome).to_owned(), a.worker));
        }
    }
    for root in ["fetch_a", "fetch_b", "fetch_c"] {
        assert_eq!(
            by_step[root],
            vec![
                ("lease_lost".to_owned(), Some("silent".to_owned())),
                ("completed".to_owned(), Some("healthy".to_owned())),
            ],
            "{root}"
        );
    }
    // No result of the silent worker was stored.
    for s in store.steps_of_task(task).await.unwrap() {
        assert_ne!(
            s.result.as_ref().and_then(|r| r.get("by")),
            Some(&json!("gate"))
        );
    }
}

async fn graceful_shutdown_finishes_running_steps<S: Backend>(s: S) {
    let store = s.clone();
    let template = fixtures::tree(NOOP);
    let task = start_task(&store, &template).await;
    let gate = Gate::default();
    let stop = CancellationToken::new();
    let w = Worker::new(
        Arc::new(own_pool(&s).await),
        Arc::new(gate.clone()),
        EventBus::default(),
        config("graceful"),
    );
    let run = tokio::spawn(w.run(stop.clone()));
    while gate.started.load(Ordering::SeqCst) < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Stop while the root is running, then let it finish: it is recorded, nothing new starts.
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.open.notify_waiters();
    let totals = run.await.unwrap();
    assert_eq!(totals.claimed, 1);
    assert_eq!(totals.completed, 1);
    let steps = store.steps_of_task(task).await.unwrap();
    let states: HashSet<String> = steps
        .iter()
        .map(|s| format!("{}={}", s.name, s.state))
        .collect();
    assert!(states.contains("root=complete"), "{states:?}");
    assert!(states.contains("left=pending"), "{states:?}");
    // Nothing is left claimed.
    assert!(steps.iter().all(|s| s.lease_expires_at.is_none()));
}

async fn shutdown_after_the_grace_period_releases_leases<S: Backend>(s: S) {
    let store = s.clone();
    let template = fixtures::linear(2, NOOP);
    let task = start_task(&store, &template).await;
    let gate = Gate::default();
    let stop = CancellationToken::new();
    let w = Worker::new(
        Arc::new(own_pool(&s).await),
        Arc::new(gate.clone()),
        EventBus::default(),
        WorkerConfig {
            shutdown_grace: Duration::from_millis(200),
            ..config("impatient")
        },
    );
    let run = tokio::spawn(w.run(stop.clone()));
    while gate.started.load(Ordering::SeqCst) < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    run.await.unwrap();
    // The step went back to the queue at once, without counting as an attempt.
    let steps = store.steps_of_task(task).await.unwrap();
    let first = steps.iter().find(|s| s.name == "step_1").unwrap();
    assert!(first.ready_at.is_some(), "{first:?}");
    assert_eq!(first.attempts, 0);
    let outcomes: Vec<AttemptOutcome> = store
        .attempts_of_step(first.id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.outcome)
        .collect();
    assert_eq!(outcomes, vec![AttemptOutcome::Released]);
}

// PostgreSQL only: LISTEN/NOTIFY (the embedded store has no other process to hear from).
#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn an_idle_worker_wakes_on_notify_not_on_its_poll(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let template = fixtures::linear(4, NOOP);
    store.register_template(&template).await.unwrap();
    let stop = CancellationToken::new();
    // Only a notification can wake it in time.
    let quiet = WorkerConfig {
        poll_every: Duration::from_secs(3600),
        sweep_every: Duration::from_secs(3600),
        ..config("listener")
    };
    let (run, listener) = listening_worker(&pool, InProcessExecutor::new(), quiet, &stop).await;
    // Let the worker find the queue empty and go to sleep.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let task = store
        .create_task(&NewTask::new(template.key(), json!({})), Utc::now())
        .await
        .unwrap()
        .task_id;
    wait_until_done(&store, &[task], Duration::from_secs(20)).await;
    assert_eq!(
        store.task(task).await.unwrap().unwrap().state,
        TaskState::Complete
    );
    stop.cancel();
    run.await.unwrap();
    listener.await.unwrap();
}

// PostgreSQL only: LISTEN/NOTIFY (the embedded store has no other process to hear from).
#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn an_idle_worker_wakes_for_a_retry_another_process_scheduled(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let template = fixtures::linear(2, NOOP);
    let task = start_task(&store, &template).await;
    // "Another process" claims the first step before the worker starts.
    let claimed = store
        .claim("other", 1, Duration::from_secs(30), Utc::now())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);

    let stop = CancellationToken::new();
    let quiet = WorkerConfig {
        poll_every: Duration::from_secs(3600),
        sweep_every: Duration::from_secs(3600),
        ..config("idle")
    };
    let (run, listener) = listening_worker(&pool, InProcessExecutor::new(), quiet, &stop).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The other process fails it with a retry 400 ms out, then goes away.
    let failed_at = Utc::now();
    store
        .fail(
            &[tasker_store::StepFailure {
                step_id: claimed[0].step_id,
                token: claimed[0].token,
                error_kind: tasker_core::error_kind::ErrorKind::HandlerError,
                message: "busy".into(),
                retryable: true,
                retry_after_ms: Some(400),
                accounting: Default::default(),
                log: Default::default(),
            }],
            failed_at,
        )
        .await
        .unwrap();
    wait_until_done(&store, &[task], Duration::from_secs(20)).await;
    let first = store.steps_of_task(task).await.unwrap()[0].clone();
    let attempts = store.attempts_of_step(first.id).await.unwrap();
    assert_eq!(attempts.len(), 2);
    // It ran when due, not an hour later at the next poll.
    assert!(attempts[1].started_at >= failed_at + chrono::Duration::milliseconds(400));
    assert_eq!(attempts[1].worker.as_deref(), Some("idle"));
    stop.cancel();
    run.await.unwrap();
    listener.await.unwrap();
}

tasker_tests::on_both_backends!(
    four_workers_run_20000_steps_exactly_once,
    a_silent_worker_loses_its_leases_and_its_late_completion_is_refused,
    graceful_shutdown_finishes_running_steps,
    shutdown_after_the_grace_period_releases_leases,
);
