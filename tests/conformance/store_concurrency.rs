//! Four worker pools run 20,000 steps at once. Every step completes exactly once and no step
//! is ever held by two claims at the same time, checked from the attempts and transitions
//! tables. One worker stalls past its lease now and then, so steps really do move between
//! workers while the sweeper runs. On PostgreSQL each pool has its own connections (as
//! separate processes would); on SQLite the eight workers share one store in-process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use tasker_core::fixtures;
use tasker_store::*;
use tasker_tests::Backend;
use tasker_tests::store::*;

const TASKS: i64 = 1_000; // x 20 steps
const POOLS: usize = 4;
const WORKERS_PER_POOL: usize = 2;

#[derive(Default)]
struct Counters {
    refused_late: AtomicUsize,
    stalls: AtomicUsize,
    expired: AtomicUsize,
}

async fn create_tasks<S: Store>(s: &S, t: &tasker_core::template::Template, n: i64) -> Vec<TaskId> {
    s.register_template(t).await.unwrap();
    let mut ids = Vec::new();
    for i in 1..=n {
        let task = NewTask::new(t.key(), serde_json::json!({ "i": i }));
        ids.push(s.create_task(&task, Utc::now()).await.unwrap().task_id);
    }
    ids
}

async fn four_pools_complete_20000_steps_exactly_once<S: Backend>(s: S) {
    let t = fixtures::mixed_20(fixtures::NOOP);
    create_tasks(&s, &t, TASKS).await;
    assert_eq!(s.count("SELECT count(*) FROM steps").await.unwrap(), 20_000);

    let done = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let mut handles = Vec::new();
    for p in 0..POOLS {
        let pool = s.sibling(WORKERS_PER_POOL as u32).await.unwrap();
        for w in 0..WORKERS_PER_POOL {
            let st = pool.clone();
            let done = done.clone();
            let counters = counters.clone();
            let name = format!("pool{p}-w{w}");
            let flaky = p == 0 && w == 0;
            handles.push(tokio::spawn(async move {
                worker(st, name, flaky, done, counters).await
            }));
        }
    }
    // The sweeper.
    let sweeper = {
        let st = s.clone();
        let done = done.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let n = st.expire_leases(Utc::now(), 1_000).await?.len();
                counters.expired.fetch_add(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<_, StoreError>(())
        })
    };

    // Wait until every task is complete.
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    loop {
        let open = s
            .count("SELECT count(*) FROM tasks WHERE state <> 'complete'")
            .await
            .unwrap();
        if open == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{open} tasks still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.store(true, Ordering::Relaxed);
    for h in handles {
        h.await
            .unwrap()
            .expect("no worker error (no deadlock, no conflict)");
    }
    sweeper.await.unwrap().unwrap();

    // Every step complete, exactly once.
    let q = |sql: &'static str| {
        let s = s.clone();
        async move { s.count(sql).await.unwrap() }
    };
    assert_eq!(
        q("SELECT count(*) FROM steps WHERE state = 'complete'").await,
        20_000
    );
    assert_eq!(
        q("SELECT count(*) FROM attempts WHERE outcome = 'completed'").await,
        20_000
    );
    assert_eq!(
        q(
            "SELECT count(*) FROM (SELECT step_id FROM attempts WHERE outcome = 'completed' \
           GROUP BY step_id HAVING count(*) <> 1) x"
        )
        .await,
        0
    );
    assert_eq!(
        q("SELECT count(*) FROM step_transitions WHERE to_state = 'complete'").await,
        20_000
    );
    // The completed attempt is each step's last claim.
    assert_eq!(
        q(
            "SELECT count(*) FROM attempts a JOIN steps s ON s.id = a.step_id \
           WHERE a.outcome = 'completed' AND a.attempt_no <> s.claim_count"
        )
        .await,
        0
    );
    // Every claim ended exactly once: one attempts row per claim transition, same worker.
    assert_eq!(
        q("SELECT count(*) FROM step_transitions WHERE to_state = 'in_progress'").await,
        q("SELECT count(*) FROM attempts").await
    );
    assert_eq!(
        q("SELECT count(*) FROM step_transitions t \
           LEFT JOIN attempts a ON a.step_id = t.step_id \
             AND a.attempt_no = CAST(t.metadata->>'attempt' AS integer) \
           WHERE t.to_state = 'in_progress' \
             AND (a.step_id IS NULL OR a.worker IS DISTINCT FROM t.metadata->>'worker')")
        .await,
        0
    );
    // No two claims at once: per step, claims and their ends alternate, and the end right
    // after a claim belongs to that same claim.
    assert_eq!(
        q("SELECT count(*) FROM step_transitions \
           WHERE (sort_key % 2 = 1) <> (to_state = 'in_progress')")
        .await,
        0
    );
    assert_eq!(
        q(
            "SELECT count(*) FROM step_transitions c JOIN step_transitions e \
             ON e.step_id = c.step_id AND e.sort_key = c.sort_key + 1 \
           WHERE c.to_state = 'in_progress' \
             AND (e.from_state <> 'in_progress' \
                  OR e.metadata->>'attempt' <> c.metadata->>'attempt')"
        )
        .await,
        0
    );
    assert_eq!(
        q(
            "SELECT count(*) FROM (SELECT step_id FROM step_transitions WHERE most_recent \
           GROUP BY step_id HAVING count(*) > 1) x"
        )
        .await,
        0
    );
    assert_eq!(
        q("SELECT count(*) FROM tasks WHERE state = 'complete' AND unfinished_steps = 0").await,
        TASKS
    );

    // The run did exercise retries and stolen leases.
    assert!(q("SELECT count(*) FROM attempts WHERE outcome = 'failed'").await > 0);
    let stalls = counters.stalls.load(Ordering::Relaxed);
    let refused = counters.refused_late.load(Ordering::Relaxed);
    let expired = counters.expired.load(Ordering::Relaxed);
    assert!(
        stalls > 0 && refused > 0 && expired > 0,
        "stalls {stalls} refused {refused} expired {expired}"
    );
    assert_eq!(
        q("SELECT count(*) FROM attempts WHERE outcome = 'lease_lost'").await as usize,
        expired
    );
}

async fn worker<S: Store>(
    s: S,
    name: String,
    flaky: bool,
    done: Arc<AtomicBool>,
    counters: Arc<Counters>,
) -> Result<()> {
    let mut batch_no = 0u64;
    while !done.load(Ordering::Relaxed) {
        batch_no += 1;
        let stall = flaky && batch_no.is_multiple_of(8);
        let lease = if stall {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(60)
        };
        let claimed = s.claim(&name, 64, lease, Utc::now()).await?;
        if claimed.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        if stall {
            counters.stalls.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        let mut completions = Vec::new();
        let mut failures = Vec::new();
        for c in &claimed {
            // A few first attempts fail retryably and come back at once.
            if c.attempt == 1 && (c.step_id.get() * 7919) % 37 == 0 {
                failures.push(failure(c, true, Some(0)));
            } else {
                completions.push(completion(c));
            }
        }
        let now = Utc::now();
        let mut refusals: Vec<Refusal> = s
            .complete(&completions, now)
            .await?
            .into_iter()
            .filter_map(|o| o.refusal)
            .collect();
        refusals.extend(
            s.fail(&failures, now)
                .await?
                .into_iter()
                .filter_map(|o| o.refusal),
        );
        if stall {
            counters
                .refused_late
                .fetch_add(refusals.len(), Ordering::Relaxed);
        } else {
            // Only a cancel may take a live lease away.
            assert!(
                refusals.iter().all(|r| *r == Refusal::Cancelled),
                "a live lease was refused: {refusals:?}"
            );
        }
    }
    Ok(())
}

/// Cancels land while four pools complete batches that touch the same tasks: no deadlock, no
/// step completed twice, and a cancelled task keeps only what finished before the cancel.
async fn cancels_during_concurrent_batches_never_deadlock<S: Backend>(s: S) {
    let t = fixtures::mixed_20(fixtures::NOOP);
    let tasks = create_tasks(&s, &t, 200).await;
    let done = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let mut handles = Vec::new();
    for p in 0..POOLS {
        let st = s.sibling(1).await.unwrap();
        let (done, counters) = (done.clone(), counters.clone());
        handles.push(tokio::spawn(async move {
            worker(st, format!("pool{p}"), false, done, counters).await
        }));
    }
    // Cancel every 5th task, spread over the run.
    let mut cancelled = Vec::new();
    for (i, task) in tasks.iter().enumerate().filter(|(i, _)| i % 5 == 0) {
        tokio::time::sleep(Duration::from_millis(if i < 100 { 5 } else { 20 })).await;
        match s.cancel_task(*task, Utc::now()).await {
            Ok(o) => {
                assert!(o.cancelled);
                cancelled.push(*task);
            }
            Err(StoreError::InvalidState(_)) => {} // it completed first
            Err(e) => panic!("cancel failed: {e}"),
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let open = s
            .count("SELECT count(*) FROM tasks WHERE state NOT IN ('complete', 'cancelled')")
            .await
            .unwrap();
        if open == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{open} tasks open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.unwrap().expect("no worker error (no deadlock)");
    }
    assert!(!cancelled.is_empty());
    let bad = s
        .count(
            "SELECT count(*) FROM steps s JOIN tasks t ON t.id = s.task_id \
         WHERE (t.state = 'cancelled' AND s.state NOT IN ('complete', 'cancelled')) \
            OR (t.state = 'complete' AND s.state <> 'complete')",
        )
        .await
        .unwrap();
    assert_eq!(bad, 0);
    let twice = s
        .count(
            "SELECT count(*) FROM (SELECT step_id FROM attempts WHERE outcome = 'completed' \
         GROUP BY step_id HAVING count(*) > 1) x",
        )
        .await
        .unwrap();
    assert_eq!(twice, 0);
    // Some cancelled task had work in flight or done: the cancel really raced the workers.
    let partial = s
        .count(
            "SELECT count(DISTINCT t.id) FROM tasks t JOIN steps s ON s.task_id = t.id \
         WHERE t.state = 'cancelled' AND s.state = 'complete'",
        )
        .await
        .unwrap();
    assert!(partial > 0, "no cancel overlapped with running work");
}

/// 16 clients, each on its own connections, create a task with the same identity key at
/// the same moment: exactly one task exists, and every client is told its id.
async fn sixteen_clients_with_one_identity_key_make_one_task<S: Backend>(s: S) {
    let t = fixtures::diamond(fixtures::NOOP);
    s.register_template(&t).await.unwrap();
    let start = Arc::new(tokio::sync::Barrier::new(16));
    let mut clients = Vec::new();
    for i in 0..16 {
        let store = s.sibling(1).await.unwrap();
        let start = start.clone();
        let key = t.key();
        clients.push(tokio::spawn(async move {
            let req = NewTask::new(key, serde_json::json!({ "client": i }))
                .with_identity_key("same-order");
            start.wait().await;
            store.create_task(&req, Utc::now()).await.unwrap()
        }));
    }
    let mut created = Vec::new();
    for c in clients {
        created.push(c.await.unwrap());
    }
    let winners: Vec<_> = created.iter().filter(|c| c.created).collect();
    assert_eq!(winners.len(), 1, "{created:?}");
    assert!(created.iter().all(|c| c.task_id == winners[0].task_id));
    assert_eq!(s.count("SELECT count(*) FROM tasks").await.unwrap(), 1);
    assert_eq!(s.count("SELECT count(*) FROM steps").await.unwrap(), 4);
}

tasker_tests::on_both_backends!(
    sixteen_clients_with_one_identity_key_make_one_task,
    four_pools_complete_20000_steps_exactly_once,
    cancels_during_concurrent_batches_never_deadlock,
);
