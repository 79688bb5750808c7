//! Hook deliveries as an operator sees them: the outbox listed in pages and by filter, and
//! dead letters put back into delivery (by id, by hook, all of them) through the same leased
//! claim and finish as any other event, behind the rows their (hook, task) already has. Two
//! scenarios are PostgreSQL's only: a redelivery waits for a concurrent finish or enqueue of
//! the same task (SQLite has one writer at a time).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use tasker_store::*;
use tasker_tests::store::*;
use tasker_tests::{Backend, own_pool};

/// `audit` hears everything and gives up after one failed delivery; `ends` hears the task
/// events and tries twice, 100 ms apart.
const HOOKED: &str = "namespace: tests\nname: deliveries\nversion: 1.0.0\n\
hooks:\n\
\x20 - {component: audit@0.1.0, events: ['*'], delivery: {max_attempts: 1}}\n\
\x20 - {component: ends@0.1.0, events: ['task.*'], delivery: {max_attempts: 2, backoff: {base_ms: 100, jitter: 0}}}\n\
steps:\n\
\x20 - {name: a, handler: noop@1.0.0}\n\
\x20 - {name: b, handler: noop@1.0.0, depends_on: a}\n";

const AUDIT: &str = "audit@0.1.0";
const ENDS: &str = "ends@0.1.0";

/// Claim every deliverable head at `now` and finish each at `now`, failed when `fails` says
/// so. Returns the jobs, by id.
async fn deliver<S: Store>(
    s: &S,
    now: DateTime<Utc>,
    fails: &impl Fn(&HookDeliveryJob) -> bool,
) -> Vec<HookDeliveryJob> {
    let jobs = s
        .claim_hook_deliveries("d1", 1000, LEASE, now)
        .await
        .unwrap();
    let results: Vec<HookDeliveryResult> = jobs
        .iter()
        .map(|j| HookDeliveryResult {
            delivery_id: j.delivery_id,
            token: j.token,
            error: fails(j).then(|| format!("{} refused", j.event_name)),
        })
        .collect();
    let out = s.finish_hook_deliveries(&results, now).await.unwrap();
    assert!(out.iter().all(|o| o.accepted), "{out:?}");
    jobs
}

/// [`deliver`] round after round at `now` until nothing is claimable; every job, in the
/// order delivered.
async fn drain<S: Store>(
    s: &S,
    now: DateTime<Utc>,
    fails: impl Fn(&HookDeliveryJob) -> bool,
) -> Vec<HookDeliveryJob> {
    let mut all = Vec::new();
    for _ in 0..100 {
        let jobs = deliver(s, now, &fails).await;
        if jobs.is_empty() {
            return all;
        }
        all.extend(jobs);
    }
    panic!("deliveries at {now} never ran out");
}

fn never(_: &HookDeliveryJob) -> bool {
    false
}

/// Hook ids by component.
async fn hook_ids<S: Store>(s: &S) -> BTreeMap<String, i64> {
    s.hook_counts(None)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.component, c.hook_id))
        .collect()
}

/// (pending, delivered, dead) of one hook.
async fn counts<S: Store>(s: &S, hook: i64) -> (i64, i64, i64) {
    s.hook_counts(None)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.hook_id == hook)
        .map_or((0, 0, 0), |c| (c.pending, c.delivered, c.dead))
}

/// Two tasks run to completion (a at 10 ms, b at 20 ms): each writes 5 events for `audit`
/// and 3 for `ends`, none delivered yet.
async fn two_finished_tasks<S: Store>(s: &S) -> (TaskId, TaskId) {
    let t = template(HOOKED);
    let t1 = start(s, &t, at(0)).await;
    let t2 = s
        .create_task(&NewTask::new(t.key(), json!({})), at(1))
        .await
        .unwrap()
        .task_id;
    assert_eq!(run_ready(s, at(10)).await, names(&["a"]));
    assert_eq!(run_ready(s, at(20)).await, names(&["b"]));
    (t1, t2)
}

/// Every row, by id (the listing of everything, one page).
async fn everything<S: Store>(s: &S) -> Vec<OutboxRow> {
    let page = s
        .list_hook_outbox(&OutboxFilter::default(), None, MAX_PAGE)
        .await
        .unwrap();
    assert_eq!(page.next, None);
    page.items
}

/// Every page of a listing, walked through `next`.
async fn pages<S: Store>(s: &S, filter: &OutboxFilter, limit: u32) -> Vec<Page<OutboxRow, i64>> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = s.list_hook_outbox(filter, after, limit).await.unwrap();
        after = page.next;
        out.push(page);
        if after.is_none() {
            return out;
        }
        assert!(out.len() < 100, "a listing that never ends: {filter:?}");
    }
}

fn ids_of(rows: &[OutboxRow]) -> Vec<i64> {
    rows.iter().map(|r| r.id).collect()
}

async fn the_outbox_is_listed_in_pages_and_by_filter<S: Backend>(s: S) {
    let (t1, t2) = two_finished_tasks(&s).await;
    let hooks = hook_ids(&s).await;
    let (audit, ends) = (hooks[AUDIT], hooks[ENDS]);
    // audit refuses the step events, which die at once; the rest is delivered.
    drain(&s, at(100), |j| {
        j.component == AUDIT && j.event_name == "step.completed"
    })
    .await;

    let mut all = s.hook_outbox_of_task(t1).await.unwrap();
    all.extend(s.hook_outbox_of_task(t2).await.unwrap());
    all.sort_by_key(|r| r.id);
    assert_eq!(all.len(), 16);
    assert_eq!(everything(&s).await, all);

    // Pages of 5: 5, 5, 5, 1, each but the last pointing at its last row.
    let walked = pages(&s, &OutboxFilter::default(), 5).await;
    let sizes: Vec<usize> = walked.iter().map(|p| p.items.len()).collect();
    assert_eq!(sizes, [5, 5, 5, 1]);
    for p in &walked[..3] {
        assert_eq!(p.next, p.items.last().map(|r| r.id));
    }
    let joined: Vec<OutboxRow> = walked.into_iter().flat_map(|p| p.items).collect();
    assert_eq!(joined, all);
    // A page that holds exactly the rest has no next; one row fewer has.
    let exact = s
        .list_hook_outbox(&OutboxFilter::default(), None, 16)
        .await
        .unwrap();
    assert_eq!((exact.items.len(), exact.next), (16, None));
    let short = s
        .list_hook_outbox(&OutboxFilter::default(), None, 15)
        .await
        .unwrap();
    assert_eq!(short.next, Some(all[14].id));
    let past = s
        .list_hook_outbox(&OutboxFilter::default(), Some(all[15].id), 10)
        .await
        .unwrap();
    assert_eq!((past.items, past.next), (vec![], None));

    // Each filter, and combinations.
    let by = |hook: Option<i64>, task: Option<TaskId>, states: &[DeliveryState]| OutboxFilter {
        hook_id: hook,
        task_id: task,
        states: states.to_vec(),
    };
    let expect = |f: &dyn Fn(&OutboxRow) -> bool| -> Vec<i64> {
        all.iter().filter(|r| f(r)).map(|r| r.id).collect()
    };
    let cases: Vec<(OutboxFilter, Vec<i64>)> = vec![
        (by(Some(audit), None, &[]), expect(&|r| r.hook_id == audit)),
        (by(None, Some(t2), &[]), expect(&|r| r.task_id == t2)),
        (
            by(None, None, &[DeliveryState::Dead]),
            expect(&|r| r.hook_id == audit && r.event_name == "step.completed"),
        ),
        (
            by(
                Some(ends),
                Some(t1),
                &[DeliveryState::Dead, DeliveryState::Delivered],
            ),
            expect(&|r| r.hook_id == ends && r.task_id == t1),
        ),
        (
            by(Some(audit), Some(t1), &[DeliveryState::Delivered]),
            expect(&|r| r.hook_id == audit && r.task_id == t1 && r.event_name != "step.completed"),
        ),
        (by(None, None, &[DeliveryState::Pending]), vec![]),
        (by(Some(ends), None, &[DeliveryState::Dead]), vec![]),
        (by(Some(999), None, &[]), vec![]),
    ];
    for (filter, want) in &cases {
        let listed: Vec<i64> = pages(&s, filter, 3)
            .await
            .into_iter()
            .flat_map(|p| ids_of(&p.items))
            .collect();
        assert_eq!(&listed, want, "{filter:?}");
    }
    assert_eq!(cases[0].1.len(), 10);
    assert_eq!(cases[2].1.len(), 4);

    // A dead letter shows what an operator needs: the event, why and when it died.
    let dead = s
        .list_hook_outbox(&by(None, Some(t1), &[DeliveryState::Dead]), None, 10)
        .await
        .unwrap()
        .items;
    let steps = ids(&s, t1).await;
    let seen: Vec<_> = dead
        .iter()
        .map(|r| {
            (
                r.step_id,
                r.step_name.as_deref(),
                r.attempt,
                r.event_at,
                r.attempts,
                r.last_error.as_deref(),
                r.finished_at,
                r.head,
                r.lease_owner.as_deref(),
            )
        })
        .collect();
    let refused = Some("step.completed refused");
    assert_eq!(
        seen,
        [
            (
                Some(steps["a"]),
                Some("a"),
                Some(1),
                at(10),
                1,
                refused,
                Some(at(100)),
                false,
                None
            ),
            (
                Some(steps["b"]),
                Some("b"),
                Some(1),
                at(20),
                1,
                refused,
                Some(at(100)),
                false,
                None
            ),
        ]
    );
    // Delivered at 100 ms, each when it was due (its event's instant).
    let created = &all[0];
    assert_eq!(
        (
            created.event_name.as_str(),
            created.state,
            created.next_attempt_at,
            created.finished_at
        ),
        (
            "task.created",
            DeliveryState::Delivered,
            at(0),
            Some(at(100))
        )
    );

    for bad in [0, MAX_PAGE + 1] {
        let err = s
            .list_hook_outbox(&OutboxFilter::default(), None, bad)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::InvalidInput(m) if m.contains("limit")),
            "{err}"
        );
    }
}

async fn dead_letters_are_redelivered_by_id_by_hook_and_all<S: Backend>(s: S) {
    let (t1, t2) = two_finished_tasks(&s).await;
    let hooks = hook_ids(&s).await;
    let (audit, ends) = (hooks[AUDIT], hooks[ENDS]);
    // audit's step events die at once; ends' task.completed dies on its second try.
    let fails = |j: &HookDeliveryJob| {
        matches!(
            (j.component.as_str(), j.event_name.as_str()),
            (AUDIT, "step.completed") | (ENDS, "task.completed")
        )
    };
    drain(&s, at(100), fails).await;
    drain(&s, at(200), fails).await;
    assert_eq!(counts(&s, audit).await, (0, 6, 4));
    assert_eq!(counts(&s, ends).await, (0, 4, 2));
    let dead = |hook: Option<i64>| OutboxFilter {
        hook_id: hook,
        task_id: None,
        states: vec![DeliveryState::Dead],
    };
    let before = everything(&s).await;
    let top = before.last().unwrap().id;

    // One id: the first dead letter of audit and t1.
    let old = s
        .list_hook_outbox(&dead(Some(audit)), None, 1)
        .await
        .unwrap()
        .items
        .remove(0);
    assert_eq!(old.task_id, t1);
    let done = s
        .redeliver_dead_letters(None, Some(&[old.id]), at(300))
        .await
        .unwrap();
    assert_eq!(
        done,
        [Redelivered {
            old_id: old.id,
            new_id: top + 1,
            hook_id: audit,
            task_id: t1
        }]
    );
    let after = everything(&s).await;
    assert!(after.iter().all(|r| r.id != old.id), "the dead row is gone");
    let new = after.last().unwrap();
    // The same event, a fresh delivery: no attempts, due now, the head of its queue.
    assert_eq!(
        new,
        &OutboxRow {
            id: top + 1,
            state: DeliveryState::Pending,
            attempts: 0,
            claims: 0,
            next_attempt_at: at(300),
            lease_owner: None,
            lease_expires_at: None,
            last_error: None,
            finished_at: None,
            head: true,
            ..old.clone()
        }
    );
    // Nothing else changed.
    let rest: Vec<&OutboxRow> = after.iter().filter(|r| r.id != new.id).collect();
    let kept: Vec<&OutboxRow> = before.iter().filter(|r| r.id != old.id).collect();
    assert_eq!(rest, kept);
    assert_eq!(counts(&s, audit).await, (1, 6, 3));
    assert_hook_heads(&s).await;

    // It goes through the leased delivery loop as a first delivery.
    let jobs = s
        .claim_hook_deliveries("d2", 100, LEASE, at(300))
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = &jobs[0];
    assert_eq!(
        (
            job.delivery_id,
            job.hook_id,
            job.task_id,
            job.event_name.as_str(),
            job.step_name.as_deref(),
            job.event_at,
            job.delivery_no,
            job.max_attempts,
        ),
        (
            top + 1,
            audit,
            t1,
            "step.completed",
            old.step_name.as_deref(),
            old.event_at,
            1,
            1
        )
    );
    assert_eq!(job.payload, old.payload);
    // Leased: not claimable again until the lease expires.
    assert!(
        s.claim_hook_deliveries("d3", 100, LEASE, at(301))
            .await
            .unwrap()
            .is_empty()
    );
    // Failing again parks it as dead again (its attempts started over), and it can be
    // redelivered again; this time it is delivered.
    let out = s
        .finish_hook_deliveries(
            &[HookDeliveryResult {
                delivery_id: job.delivery_id,
                token: job.token,
                error: Some("still down".into()),
            }],
            at(310),
        )
        .await
        .unwrap();
    assert_eq!(out[0].state, Some(DeliveryState::Dead));
    assert_eq!(counts(&s, audit).await, (0, 6, 4));
    let again = s
        .redeliver_dead_letters(Some(audit), Some(&[top + 1]), at(320))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].new_id, top + 2);
    let delivered = drain(&s, at(320), never).await;
    assert_eq!(ids_of_jobs(&delivered), [top + 2]);
    assert_eq!(counts(&s, audit).await, (0, 7, 3));

    // A hook: both dead letters of ends, by old id; audit's stay dead.
    let ends_dead = ids_of(
        &s.list_hook_outbox(&dead(Some(ends)), None, 10)
            .await
            .unwrap()
            .items,
    );
    assert_eq!(ends_dead.len(), 2);
    let done = s
        .redeliver_dead_letters(Some(ends), None, at(400))
        .await
        .unwrap();
    assert_eq!(
        done,
        [
            Redelivered {
                old_id: ends_dead[0],
                new_id: top + 3,
                hook_id: ends,
                task_id: t1
            },
            Redelivered {
                old_id: ends_dead[1],
                new_id: top + 4,
                hook_id: ends,
                task_id: t2
            },
        ]
    );
    assert_eq!(counts(&s, ends).await, (2, 4, 0));
    assert_eq!(counts(&s, audit).await, (0, 7, 3));
    assert_hook_heads(&s).await;
    let delivered = drain(&s, at(400), never).await;
    assert_eq!(ids_of_jobs(&delivered), [top + 3, top + 4]);
    assert_eq!(counts(&s, ends).await, (0, 6, 0));

    // All: audit's last three (t2.a completed at 10 ms, before t1.b), two of them in one
    // (hook, task) queue (t2's a and b): the first is its head, the second waits behind it,
    // and they are delivered in their order.
    let left = s
        .list_hook_outbox(&dead(None), None, 10)
        .await
        .unwrap()
        .items;
    assert_eq!(
        left.iter()
            .map(|r| (r.task_id, r.step_name.as_deref().unwrap()))
            .collect::<Vec<_>>(),
        [(t2, "a"), (t1, "b"), (t2, "b")]
    );
    let done = s.redeliver_dead_letters(None, None, at(500)).await.unwrap();
    assert_eq!(
        done.iter()
            .map(|r| (r.old_id, r.new_id))
            .collect::<Vec<_>>(),
        [
            (left[0].id, top + 5),
            (left[1].id, top + 6),
            (left[2].id, top + 7)
        ]
    );
    let heads: Vec<bool> = everything(&s)
        .await
        .iter()
        .filter(|r| r.id > top + 4)
        .map(|r| r.head)
        .collect();
    assert_eq!(heads, [true, true, false]);
    assert_hook_heads(&s).await;
    let first = deliver(&s, at(500), &never).await;
    assert_eq!(ids_of_jobs(&first), [top + 5, top + 6]);
    let second = deliver(&s, at(500), &never).await;
    assert_eq!(ids_of_jobs(&second), [top + 7]);
    assert_eq!(counts(&s, audit).await, (0, 10, 0));

    // Nothing dead is left: nothing to redeliver.
    assert!(
        s.redeliver_dead_letters(None, None, at(600))
            .await
            .unwrap()
            .is_empty()
    );
    assert_hook_heads(&s).await;
}

fn ids_of_jobs(jobs: &[HookDeliveryJob]) -> Vec<i64> {
    jobs.iter().map(|j| j.delivery_id).collect()
}

async fn refused_redeliveries_write_nothing<S: Backend>(s: S) {
    let (t1, _) = two_finished_tasks(&s).await;
    let hooks = hook_ids(&s).await;
    let (audit, ends) = (hooks[AUDIT], hooks[ENDS]);
    drain(&s, at(100), |j| {
        j.component == AUDIT && j.event_name == "step.completed"
    })
    .await;
    // A third task's first events, still pending.
    let t3 = s
        .create_task(&NewTask::new(template(HOOKED).key(), json!({})), at(150))
        .await
        .unwrap()
        .task_id;
    let rows = everything(&s).await;
    let dead = rows
        .iter()
        .find(|r| r.state == DeliveryState::Dead && r.task_id == t1)
        .unwrap()
        .id;
    let delivered = rows
        .iter()
        .find(|r| r.state == DeliveryState::Delivered)
        .unwrap()
        .id;
    let pending = rows
        .iter()
        .find(|r| r.state == DeliveryState::Pending && r.task_id == t3)
        .unwrap()
        .id;
    let unknown = rows.last().unwrap().id + 1000;
    let counts_before = s.hook_counts(None).await.unwrap();

    let refused = |m: String| Err(StoreError::InvalidInput(m));
    let cases: Vec<(Option<i64>, Vec<i64>, String)> = vec![
        (
            None,
            vec![dead, delivered],
            format!("hook delivery {delivered} is delivered, not dead"),
        ),
        (
            None,
            vec![pending, dead],
            format!("hook delivery {pending} is pending, not dead"),
        ),
        (
            None,
            vec![dead, unknown, delivered],
            format!("hook delivery {unknown} does not exist"),
        ),
        (
            Some(ends),
            vec![dead],
            format!("hook delivery {dead} is of hook {audit}, not of hook {ends}"),
        ),
    ];
    for (hook, ids, message) in cases {
        assert_eq!(
            s.redeliver_dead_letters(hook, Some(&ids), at(200)).await,
            refused(message),
            "{hook:?} {ids:?}"
        );
        assert_eq!(everything(&s).await, rows, "a refused call wrote nothing");
    }
    // Nothing asked, or nothing matching: nothing done.
    assert_eq!(
        s.redeliver_dead_letters(None, Some(&[]), at(200)).await,
        Ok(vec![])
    );
    assert_eq!(
        s.redeliver_dead_letters(Some(999), None, at(200)).await,
        Ok(vec![])
    );
    assert_eq!(
        s.redeliver_dead_letters(Some(ends), None, at(200)).await,
        Ok(vec![])
    );
    assert_eq!(everything(&s).await, rows);
    assert_eq!(s.hook_counts(None).await.unwrap(), counts_before);

    // An id given twice is redelivered once.
    let done = s
        .redeliver_dead_letters(Some(audit), Some(&[dead, dead]), at(200))
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].old_id, dead);
    assert_hook_heads(&s).await;
}

async fn a_redelivered_row_waits_behind_the_pending_rows_of_its_queue<S: Backend>(s: S) {
    let t = template(HOOKED);
    let task = start(&s, &t, at(0)).await;
    let audit = hook_ids(&s).await[AUDIT];
    // audit's task.created dies; the task then runs, so audit's queue fills up behind it.
    let first = deliver(&s, at(1), &|j| j.component == AUDIT).await;
    assert_eq!(first.len(), 2);
    run_ready(&s, at(10)).await;
    run_ready(&s, at(20)).await;
    let dead = s
        .list_hook_outbox(
            &OutboxFilter {
                hook_id: Some(audit),
                task_id: Some(task),
                states: vec![DeliveryState::Dead],
            },
            None,
            10,
        )
        .await
        .unwrap()
        .items;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event_name, "task.created");

    // The queue's head is leased when the dead letter comes back: the new row is no head.
    let leased = s
        .claim_hook_deliveries("d1", 100, LEASE, at(30))
        .await
        .unwrap();
    let audit_head = leased.iter().find(|j| j.hook_id == audit).unwrap();
    assert_eq!(audit_head.event_name, "task.started");
    let done = s
        .redeliver_dead_letters(None, Some(&[dead[0].id]), at(40))
        .await
        .unwrap();
    let new = everything(&s)
        .await
        .into_iter()
        .find(|r| r.id == done[0].new_id)
        .unwrap();
    assert_eq!((new.state, new.head), (DeliveryState::Pending, false));
    assert_hook_heads(&s).await;

    // The leased delivery finishes; the queue moves on in id order, the redelivered event last.
    let results: Vec<HookDeliveryResult> = leased
        .iter()
        .map(|j| HookDeliveryResult {
            delivery_id: j.delivery_id,
            token: j.token,
            error: None,
        })
        .collect();
    s.finish_hook_deliveries(&results, at(41)).await.unwrap();
    assert_hook_heads(&s).await;
    let rest = drain(&s, at(50), never).await;
    let order: Vec<&str> = std::iter::once(audit_head)
        .chain(rest.iter().filter(|j| j.hook_id == audit))
        .map(|j| j.event_name.as_str())
        .collect();
    assert_eq!(
        order,
        [
            "task.started",
            "step.completed",
            "step.completed",
            "task.completed",
            "task.created",
        ]
    );
    assert_eq!(counts(&s, audit).await, (0, 5, 0));
    let row = everything(&s)
        .await
        .into_iter()
        .find(|r| r.id == done[0].new_id)
        .unwrap();
    assert_eq!(
        (row.state, row.attempts, row.finished_at),
        (DeliveryState::Delivered, 1, Some(at(50)))
    );
}

/// Redeliveries racing deliveries and new events (on PostgreSQL, each on its own
/// connections): every committed state keeps one head per (hook, task) at its front, and in
/// the end every event is delivered.
async fn redelivery_races_deliveries_and_new_events<S: Backend>(s: S) {
    let t = template(HOOKED);
    s.register_template(&t).await.unwrap();
    let now = at(1000);
    for i in 0..6 {
        s.create_task(&NewTask::new(t.key(), json!({"i": i})), at(i))
            .await
            .unwrap();
    }
    let (work, hooks, redo) = (own_pool(&s).await, own_pool(&s).await, own_pool(&s).await);
    let delivering = Arc::new(AtomicBool::new(true));
    let workflow = tokio::spawn(async move {
        for _ in 0..3 {
            run_ready(&work, now).await;
        }
    });
    let deliverer = tokio::spawn({
        let delivering = delivering.clone();
        async move {
            let mut delivered = 0;
            for _ in 0..30 {
                // A third of the deliveries fail (audit's first failure is its last).
                delivered += deliver(&hooks, now, &|j| j.delivery_id % 3 == 0)
                    .await
                    .len();
                assert_hook_heads(&hooks).await;
            }
            delivering.store(false, Ordering::SeqCst);
            delivered
        }
    });
    // Redeliver while the deliverer runs, and once after it stopped.
    let redeliverer = tokio::spawn(async move {
        let mut redelivered = 0;
        loop {
            let last = !delivering.load(Ordering::SeqCst);
            redelivered += redo
                .redeliver_dead_letters(None, None, now)
                .await
                .unwrap()
                .len();
            assert_hook_heads(&redo).await;
            if last {
                return redelivered;
            }
        }
    });
    workflow.await.unwrap();
    let delivered = deliverer.await.unwrap();
    let redelivered = redeliverer.await.unwrap();
    assert!(
        delivered > 0 && redelivered > 0,
        "{delivered} {redelivered}"
    );
    assert_hook_heads(&s).await;

    // Then everything still dead comes back and is delivered (ends' failed first tries are
    // due 100 ms later).
    let later = now + chrono::Duration::milliseconds(100);
    s.redeliver_dead_letters(None, None, later).await.unwrap();
    drain(&s, later, never).await;
    assert_hook_heads(&s).await;
    for c in s.hook_counts(None).await.unwrap() {
        assert_eq!((c.pending, c.dead), (0, 0), "{c:?}");
        // 6 tasks, 5 events each for audit and 3 for ends.
        let per_task = if c.component == AUDIT { 5 } else { 3 };
        assert_eq!(c.delivered, 6 * per_task, "{c:?}");
    }
}

/// PostgreSQL only (SQLite has one writer at a time): `tx`, an open transaction of another
/// session, holds the task's row lock; a redelivery of the task's dead letter waits for it
/// and then decides the new row's head from what `tx` committed. Returns the redelivery.
async fn redeliver_behind(
    pool: &PgPool,
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    dead: i64,
    now: DateTime<Utc>,
) -> Vec<Redelivered> {
    let store = PgStore::new(pool.clone());
    let redelivery = tokio::spawn(async move {
        store
            .redeliver_dead_letters(None, Some(&[dead]), now)
            .await
            .unwrap()
    });
    // Until it waits for a lock (or, without one, is done).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while !redelivery.is_finished() {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the redelivery neither waits for the lock nor ends within a minute"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    tx.commit().await.unwrap();
    redelivery.await.unwrap()
}

/// A dead `task.created` for audit (audit's first delivery fails), the rest delivered.
async fn one_dead_letter(s: &PgStore) -> (TaskId, i64) {
    let task = start(s, &template(HOOKED), at(0)).await;
    let first = deliver(s, at(1), &|j| j.component == AUDIT).await;
    let dead = first.iter().find(|j| j.component == AUDIT).unwrap();
    (task, dead.delivery_id)
}

/// A finish that moves the head on in a transaction still open when the redelivery starts:
/// the redelivery waits for its task lock and sees the queue empty, so its row is the head
/// (had it not waited, it would have seen the old head pending, and the finish would not
/// have seen the new row: a queue without a head, never delivered).
#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn redelivery_waits_for_a_finish_of_the_same_task(pool: PgPool) {
    let s = PgStore::new(pool.clone());
    let (task, dead) = one_dead_letter(&s).await;
    // task.started: audit's only pending row, claimed.
    claim_all(&s, at(10)).await;
    let jobs = s
        .claim_hook_deliveries("d1", 10, LEASE, at(20))
        .await
        .unwrap();
    let head = jobs.iter().find(|j| j.component == AUDIT).unwrap();
    assert_eq!(head.event_name, "task.started");
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT * FROM finish_hook_deliveries($1, $2, $3, $4, $5)")
        .bind(vec![head.delivery_id])
        .bind(vec![head.token])
        .bind(vec![true])
        .bind(vec![None::<String>])
        .bind(at(25))
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    let done = redeliver_behind(&pool, tx, dead, at(30)).await;
    assert_hook_heads(&s).await;
    let next = s
        .claim_hook_deliveries("d1", 10, LEASE, at(40))
        .await
        .unwrap();
    assert_eq!(
        next.iter()
            .map(|j| (j.delivery_id, j.task_id, j.event_name.as_str()))
            .collect::<Vec<_>>(),
        [(done[0].new_id, task, "task.created")]
    );
}

/// An event enqueued in a transaction still open when the redelivery starts (a cancel): the
/// redelivery waits for its task lock and sees the new event pending, so its row is not the
/// head (had it not waited, both would be heads of one queue).
#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn redelivery_waits_for_an_enqueue_of_the_same_task(pool: PgPool) {
    let s = PgStore::new(pool.clone());
    let (task, dead) = one_dead_letter(&s).await;
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT * FROM cancel_task($1, $2)")
        .bind(task)
        .bind(at(20))
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    let done = redeliver_behind(&pool, tx, dead, at(30)).await;
    assert_hook_heads(&s).await;
    let audit = hook_ids(&s).await[AUDIT];
    let order: Vec<String> = drain(&s, at(40), never)
        .await
        .into_iter()
        .filter(|j| j.hook_id == audit)
        .map(|j| j.event_name)
        .collect();
    assert_eq!(order, ["task.cancelled", "task.created"]);
    assert!(done[0].new_id > dead);
}

/// A registered hook is counted before anything is delivered to it (an operator lists it
/// with zeros); counts of one task name only the hooks with rows for it.
async fn every_hook_is_counted_before_its_first_delivery<S: Backend>(s: S) {
    s.register_template(&template(HOOKED)).await.unwrap();
    let counts = |c: Vec<HookCounts>| -> Vec<(String, i64, i64, i64)> {
        c.into_iter()
            .map(|c| (c.component, c.pending, c.delivered, c.dead))
            .collect()
    };
    let zero = counts(s.hook_counts(None).await.unwrap());
    assert_eq!(zero, [(AUDIT.into(), 0, 0, 0), (ENDS.into(), 0, 0, 0)]);
    let (t1, _) = two_finished_tasks(&s).await;
    let of_t1 = counts(s.hook_counts(Some(t1)).await.unwrap());
    assert_eq!(of_t1, [(AUDIT.into(), 5, 0, 0), (ENDS.into(), 3, 0, 0)]);
    let other = s
        .register_template(&template(&HOOKED.replace("deliveries", "quiet")))
        .await;
    other.unwrap();
    assert_eq!(s.hook_counts(Some(t1)).await.unwrap().len(), 2);
    assert_eq!(s.hook_counts(None).await.unwrap().len(), 4);
}

tasker_tests::on_both_backends!(
    every_hook_is_counted_before_its_first_delivery,
    the_outbox_is_listed_in_pages_and_by_filter,
    dead_letters_are_redelivered_by_id_by_hook_and_all,
    refused_redeliveries_write_nothing,
    a_redelivered_row_waits_behind_the_pending_rows_of_its_queue,
    redelivery_races_deliveries_and_new_events,
);
