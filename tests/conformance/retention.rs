//! Retention (docs/store.md, "Retention"): `Store::prune` removes finished tasks past their
//! span with every row they own, never a task still running, counts the same rows in a dry
//! run, honours templates' own `retention:`, removes delivered outbox rows past their span;
//! and a soak in which tasks keep arriving and finishing while a node's pruner runs on a
//! manual clock keeps every table's size flat.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tasker_core::clock::{Clock, ManualClock};
use tasker_core::retention::{Retention, Span};
use tasker_core::state::TaskState;
use tasker_engine::testing::InProcessExecutor;
use tasker_runtime::{Node, PrunerConfig};
use tasker_store::*;
use tasker_tests::Backend;
use tasker_tests::store::*;
use tokio_util::sync::CancellationToken;

const DAY: i64 = 86_400_000;

const TWO: &str = "namespace: tests\nname: two\nversion: 1.0.0\nsteps:\n\
  - {name: a, handler: noop@1.0.0, retry: {max_attempts: 1}}\n\
  - {name: b, handler: noop@1.0.0, depends_on: a}\n";

const SHORT: &str = "namespace: tests\nname: short\nversion: 1.0.0\n\
retention: {complete: 1h}\nsteps:\n  - {name: a, handler: noop@1.0.0}\n";

const HOOKED: &str = "namespace: tests\nname: hooked\nversion: 1.0.0\n\
hooks:\n  - {component: audit@0.1.0, events: ['*']}\n\
steps:\n  - {name: a, handler: noop@1.0.0}\n  - {name: b, handler: noop@1.0.0, depends_on: a}\n";

/// The tables a task owns, each as the count of one task's rows.
const OWNED: [(&str, &str); 8] = [
    ("tasks", "SELECT count(*) FROM tasks WHERE id IN ({})"),
    ("steps", "SELECT count(*) FROM steps WHERE task_id IN ({})"),
    (
        "edges",
        "SELECT count(*) FROM edges WHERE parent_id IN (SELECT id FROM steps WHERE task_id IN ({}))",
    ),
    (
        "attempts",
        "SELECT count(*) FROM attempts WHERE task_id IN ({})",
    ),
    (
        "step_transitions",
        "SELECT count(*) FROM step_transitions \
         WHERE step_id IN (SELECT id FROM steps WHERE task_id IN ({}))",
    ),
    (
        "task_transitions",
        "SELECT count(*) FROM task_transitions WHERE task_id IN ({})",
    ),
    (
        "task_events_custom",
        "SELECT count(*) FROM task_events_custom WHERE task_id IN ({})",
    ),
    (
        "hook_outbox",
        "SELECT count(*) FROM hook_outbox WHERE task_id IN ({})",
    ),
];

/// Rows per owned table of these tasks.
async fn owned<S: Backend>(s: &S, tasks: &[TaskId]) -> Vec<(&'static str, u64)> {
    let list = tasks
        .iter()
        .map(|t| t.get().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut out = Vec::new();
    for (table, sql) in OWNED {
        let n = s.count(&sql.replace("{}", &list)).await.unwrap();
        out.push((table, n as u64));
    }
    out
}

/// Everything the store says about one task, for "untouched" comparisons.
async fn describe<S: Store>(s: &S, task: TaskId) -> String {
    let mut out = format!(
        "{:?}\n{:?}\n",
        s.task(task).await.unwrap(),
        s.task_transitions(task).await.unwrap()
    );
    for step in s.steps_of_task(task).await.unwrap() {
        out += &format!(
            "{step:?}\n{:?}\n{:?}\n",
            s.attempts_of_step(step.id).await.unwrap(),
            s.step_transitions(step.id).await.unwrap()
        );
    }
    out
}

fn defaults() -> PruneRequest {
    PruneRequest::new(Retention::defaults())
}

async fn run_to_end<S: Store>(s: &S, now: DateTime<Utc>) {
    while !run_ready(s, now).await.is_empty() {}
}

/// Tasks of every kind at t0: complete, cancelled, in error, running, pending; and one that
/// completes two days later.
struct World {
    complete: TaskId,
    cancelled: TaskId,
    error: TaskId,
    running: TaskId,
    pending: TaskId,
    recent: TaskId,
}

async fn world<S: Backend>(s: &S) -> World {
    let t = template(TWO);
    s.register_template(&t).await.unwrap();
    let new = || NewTask::new(t.key(), json!({}));
    let complete = s.create_task(&new(), at(0)).await.unwrap().task_id;
    run_to_end(s, at(0)).await;
    let cancelled = s.create_task(&new(), at(0)).await.unwrap().task_id;
    s.cancel_task(cancelled, at(0)).await.unwrap();
    let error = s.create_task(&new(), at(0)).await.unwrap().task_id;
    let c = claim_all(s, at(0)).await;
    assert_eq!(c.len(), 1);
    s.fail(&[failure(&c[0], false, None)], at(0)).await.unwrap();
    let running = s.create_task(&new(), at(0)).await.unwrap().task_id;
    assert_eq!(claim_all(s, at(0)).await.len(), 1);
    let recent = s.create_task(&new(), at(2 * DAY)).await.unwrap().task_id;
    let c = s.claim("w1", 10, LEASE, at(2 * DAY)).await.unwrap();
    s.complete(&[completion(&c[0])], at(2 * DAY)).await.unwrap();
    run_to_end(s, at(2 * DAY)).await;
    // Created last and never claimed: the claims above took only older steps.
    let pending = s.create_task(&new(), at(2 * DAY)).await.unwrap().task_id;
    for (task, state) in [
        (complete, TaskState::Complete),
        (cancelled, TaskState::Cancelled),
        (error, TaskState::Error),
        (running, TaskState::InProgress),
        (recent, TaskState::Complete),
        (pending, TaskState::Pending),
    ] {
        assert_eq!(s.task(task).await.unwrap().unwrap().state, state, "{task}");
    }
    World {
        complete,
        cancelled,
        error,
        running,
        pending,
        recent,
    }
}

async fn prune_removes_only_finished_tasks_past_their_span<S: Backend>(s: S) {
    let w = world(&s).await;
    let kept = [w.error, w.running, w.pending, w.recent];
    let mut before = Vec::new();
    for &t in &kept {
        before.push(describe(&s, t).await);
    }
    let expected = owned(&s, &[w.complete, w.cancelled]).await;
    assert!(
        expected
            .iter()
            .all(|(t, n)| *n > 0 || t.contains("custom") || *t == "hook_outbox")
    );

    // 8 days on: complete and cancelled (7d) go, error (30d) and the recent one stay.
    let report = s.prune(&defaults(), at(8 * DAY)).await.unwrap();
    assert!(!report.busy && !report.dry_run);
    assert_eq!(report.removed.tables().to_vec(), expected);
    let gone = owned(&s, &[w.complete, w.cancelled]).await;
    assert!(gone.iter().all(|(_, n)| *n == 0), "{gone:?}");
    for (&t, was) in kept.iter().zip(&before) {
        assert_eq!(&describe(&s, t).await, was, "task {t} was touched");
    }
    // Nothing more to do at the same instant.
    let again = s.prune(&defaults(), at(8 * DAY)).await.unwrap();
    assert_eq!(again.removed, PruneCounts::default());

    // 31 days on: the task in error and the recent one go; the running and the pending
    // task never do.
    let expected = owned(&s, &[w.error, w.recent]).await;
    let report = s.prune(&defaults(), at(31 * DAY)).await.unwrap();
    assert_eq!(report.removed.tables().to_vec(), expected);
    assert_eq!(describe(&s, w.running).await, before[1]);
    assert_eq!(describe(&s, w.pending).await, before[2]);
    assert_eq!(s.count("SELECT count(*) FROM tasks").await.unwrap(), 2);
}

async fn a_dry_run_removes_nothing_and_counts_the_same<S: Backend>(s: S) {
    world(&s).await;
    let whole = snapshot(&s).await;
    let mut req = defaults();
    req.dry_run = true;
    req.batch = 1;
    let dry = s.prune(&req, at(31 * DAY)).await.unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.removed.tasks, 4);
    assert_eq!(snapshot(&s).await, whole, "a dry run changed something");
    // Batches of one task: the same total as the dry run's single count.
    req.dry_run = false;
    let real = s.prune(&req, at(31 * DAY)).await.unwrap();
    assert_eq!(real.removed, dry.removed);
    assert!(real.batches >= 4, "{real:?}");
}

async fn a_template_s_own_retention_wins_unless_a_span_is_given<S: Backend>(s: S) {
    let short = template(SHORT);
    let long = template(TWO);
    let a = start(&s, &short, at(0)).await;
    let b = start(&s, &long, at(0)).await;
    run_to_end(&s, at(0)).await;
    let two_hours = at(2 * 3_600_000);

    let mut by_hand = PruneRequest::new(Retention {
        complete: Some(Span::from_secs(86_400)),
        ..Retention::default()
    });
    by_hand.template_overrides = false;
    assert_eq!(s.prune(&by_hand, two_hours).await.unwrap().removed.tasks, 0);

    let report = s.prune(&defaults(), two_hours).await.unwrap();
    assert_eq!(report.removed.tasks, 1);
    assert!(s.task(a).await.unwrap().is_none());
    assert!(s.task(b).await.unwrap().is_some());
}

async fn delivered_outbox_rows_go_and_pending_ones_keep_their_task<S: Backend>(s: S) {
    let t = template(HOOKED);
    let done = start(&s, &t, at(0)).await;
    run_to_end(&s, at(0)).await;
    let live = start(&s, &t, at(0)).await;
    assert_eq!(run_ready(&s, at(0)).await, names(&["a"]));

    // Every event still waits for the hook: nothing goes, not even the finished task.
    let mut req = defaults();
    req.delivered = Some(Span::from_secs(3_600));
    let r = s.prune(&req, at(8 * DAY)).await.unwrap();
    assert_eq!(r.removed, PruneCounts::default());
    assert!(s.task(done).await.unwrap().is_some());

    // Deliver everything at t0 + 1 day (heads in turn).
    let day = at(DAY);
    loop {
        let jobs = s.claim_hook_deliveries("d", 100, LEASE, day).await.unwrap();
        if jobs.is_empty() {
            break;
        }
        let ok: Vec<_> = jobs
            .iter()
            .map(|j| HookDeliveryResult {
                delivery_id: j.delivery_id,
                token: j.token,
                error: None,
            })
            .collect();
        s.finish_hook_deliveries(&ok, day).await.unwrap();
    }
    let live_rows = owned(&s, &[live]).await[7].1;
    let done_rows = owned(&s, &[done]).await;
    assert!(live_rows > 0);

    // Within the hour nothing is removed; past it the delivered rows of the live task go
    // and the live task stays; at 8 days the finished task goes whole.
    let r = s
        .prune(&req, day + chrono::Duration::minutes(30))
        .await
        .unwrap();
    assert_eq!(r.removed.total(), 0);
    let before = describe(&s, live).await;
    let r = s
        .prune(&req, day + chrono::Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(r.removed.tasks, 0);
    assert_eq!(r.removed.hook_outbox, live_rows + done_rows[7].1);
    assert_eq!(describe(&s, live).await, before);
    assert_eq!(owned(&s, &[live]).await[7].1, 0);
    assert_hook_heads(&s).await;
    let r = s.prune(&req, at(8 * DAY)).await.unwrap();
    assert_eq!(r.removed.tasks, 1);
    assert!(s.task(live).await.unwrap().is_some());
}

async fn a_bad_batch_is_refused<S: Backend>(s: S) {
    let mut req = defaults();
    req.batch = 0;
    let err = s.prune(&req, at(0)).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
    assert!(err.to_string().contains("batch"), "{err}");
}

/// Row counts of every table that grows with tasks.
async fn sizes<S: Backend>(s: &S) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    for table in [
        "tasks",
        "steps",
        "edges",
        "attempts",
        "step_transitions",
        "task_transitions",
        "hook_outbox",
    ] {
        let n = s
            .count(&format!("SELECT count(*) FROM {table}"))
            .await
            .unwrap();
        out.push((table, n));
    }
    out
}

/// A 30-minute soak in 10-second steps of a manual clock (bounded wall time): each step a
/// few tasks arrive and an in-process worker runs them, one task is held running throughout,
/// and the node's pruner (retention 2 minutes, every minute of the clock) runs beside it.
/// At the end every table holds what about two and a half minutes of tasks leave, not the
/// half hour's, and the held task is untouched.
async fn a_soak_keeps_table_sizes_flat_while_tasks_keep_finishing<S: Backend>(s: S) {
    let t = template(TWO);
    s.register_template(&t).await.unwrap();
    let clock = ManualClock::new(t0());
    // A task held in progress by a claim that never ends, so a running task exists the
    // whole time (its lease is the soak's length, so no sweeper takes it back).
    let held = s
        .create_task(&NewTask::new(t.key(), json!({})), clock.now())
        .await
        .unwrap()
        .task_id;
    let c = s
        .claim("holder", 1, Duration::from_secs(3_600), clock.now())
        .await
        .unwrap();
    assert_eq!(c.len(), 1);
    let held_before = describe(&s, held).await;

    let span = Span::from_secs(120);
    let mut req = PruneRequest::new(Retention {
        complete: Some(span),
        cancelled: Some(span),
        error: Some(span),
    });
    req.batch = 7;
    let pruner = PrunerConfig {
        request: req,
        interval: Duration::from_secs(60),
        tick: Duration::from_millis(5),
    };
    let mut cfg = tasker_tests::worker_config("soak");
    cfg.lease = Duration::from_secs(3_600);
    let stop = CancellationToken::new();
    let node = Node::new(Arc::new(s.clone()), InProcessExecutor::new(), cfg)
        .with_clock(Arc::new(clock.clone()))
        .with_pruner(Some(pruner))
        .start(stop.clone());
    let stats = node.pruner_stats().unwrap().clone();

    let per_step = 3;
    let steps = 30 * 6; // 30 minutes of 10 s
    let mut sizes_at = Vec::new();
    for i in 0..steps {
        for _ in 0..per_step {
            s.create_task(&NewTask::new(t.key(), json!({})), clock.now())
                .await
                .unwrap();
        }
        // Every task but the held one finishes before the clock moves on.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let unfinished = s
                .count("SELECT count(*) FROM tasks WHERE finished_at IS NULL")
                .await
                .unwrap();
            if unfinished == 1 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "tasks did not finish");
            node.wake_handle().notify_one();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let runs = stats.totals().runs;
        clock.advance(Duration::from_secs(10));
        if i % 6 == 5 {
            // A minute passed: wait for the pruner's run of this minute.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while stats.totals().runs == runs {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the pruner did not run"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            sizes_at.push(sizes(&s).await);
        }
    }
    stop.cancel();
    node.join().await;

    let totals = stats.totals();
    assert_eq!(totals.errors, 0);
    let created = (steps * per_step) as u64;
    // Flat: after the first few minutes the tasks table holds at most the tasks of the
    // span plus one interval (and the held one), whatever the elapsed time.
    let bound = (per_step * 6 * 3 + 1) as i64;
    for (minute, s) in sizes_at.iter().enumerate().skip(3) {
        let tasks = s[0].1;
        assert!(tasks <= bound, "minute {minute}: {s:?} over {bound} tasks");
        assert!(s[1].1 <= 2 * bound, "minute {minute}: {s:?}");
    }
    let last = sizes_at.last().unwrap();
    let mid = &sizes_at[sizes_at.len() / 2];
    for ((table, a), (_, b)) in last.iter().zip(mid) {
        assert!(
            (a - b).abs() <= 2 * bound * 4,
            "{table}: {b} at mid-soak, {a} at the end"
        );
    }
    assert!(totals.removed.tasks + bound as u64 >= created, "{totals:?}");
    assert_eq!(
        describe(&s, held).await,
        held_before,
        "the running task was touched"
    );
}

tasker_tests::on_both_backends!(
    prune_removes_only_finished_tasks_past_their_span,
    a_dry_run_removes_nothing_and_counts_the_same,
    a_template_s_own_retention_wins_unless_a_span_is_given,
    delivered_outbox_rows_go_and_pending_ones_keep_their_task,
    a_bad_batch_is_refused,
    a_soak_keeps_table_sizes_flat_while_tasks_keep_finishing,
);

// PostgreSQL only (SQLite has one writer, so there is nothing to lock): while one pruner
// holds the advisory lock, another changes nothing and says it is busy.
#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn a_second_pruner_on_postgres_finds_the_first_busy(pool: sqlx::PgPool) {
    let s = PgStore::new(pool.clone());
    world(&s).await;
    let mut holder = pool.begin().await.unwrap();
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('tasker_prune'))")
            .fetch_one(&mut *holder)
            .await
            .unwrap();
    assert!(locked);
    let r = s.prune(&defaults(), at(31 * DAY)).await.unwrap();
    assert!(r.busy);
    assert_eq!(r.removed, PruneCounts::default());
    // A dry run takes no lock.
    let mut dry = defaults();
    dry.dry_run = true;
    assert_eq!(s.prune(&dry, at(31 * DAY)).await.unwrap().removed.tasks, 4);
    holder.rollback().await.unwrap();
    assert_eq!(
        s.prune(&defaults(), at(31 * DAY))
            .await
            .unwrap()
            .removed
            .tasks,
        4
    );
}
