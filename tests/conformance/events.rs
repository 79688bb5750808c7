//! The event log (`Store::events_after`, `Store::latest_event_cursor`): a task's history,
//! every transition once and the custom events of accepted attempts, in one total order
//! (within a transaction, step changes before custom events before task changes); pages
//! and resumption from every cursor without gaps or duplicates; the task and template
//! filters; malformed cursors and limits refused.
//!
//! One scenario is PostgreSQL only: an event written by a transaction that is still open is
//! not returned, nor is any event of a later transaction, until it ends (the xmin horizon,
//! docs/store.md). The embedded store cannot be in that state: it has one writer at a time,
//! which holds the file's write lock from its first statement to its commit, so no later
//! write can commit while one is open, and its transaction counter is commit order.

use serde_json::json;
use sqlx::{Connection, PgPool};
use tasker_store::*;
use tasker_tests::events::{key, ranked, read_all, settled};
use tasker_tests::store::*;
use tasker_tests::{Backend, on_both_backends};

const EVLOG_V1: &str = "namespace: tests\nname: evlog\nversion: 1.0.0\nsteps:\n\
\x20 - {name: a, handler: noop@1.0.0, retry: {max_attempts: 2, backoff: {base_ms: 1000, jitter: 0}}}\n\
\x20 - {name: b, handler: noop@1.0.0, depends_on: a}\n";
const EVLOG_V2: &str = "namespace: tests\nname: evlog\nversion: 2.0.0\nsteps:\n\
\x20 - {name: a, handler: noop@1.0.0}\n";

fn custom(
    c: &ClaimedStep,
    token_offset: i64,
    name: &str,
    payload: serde_json::Value,
) -> CustomEventRecord {
    CustomEventRecord {
        step_id: c.step_id,
        token: c.token + token_offset,
        name: name.into(),
        payload,
    }
}

fn filter(task_id: Option<TaskId>, template: Option<&str>) -> EventFilter {
    EventFilter {
        task_id,
        template: template.map(str::to_owned),
    }
}

/// An event as (task, step name, name, from, to).
type Line = (
    TaskId,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
);

fn line(e: &StoredEvent) -> Line {
    (
        e.task_id,
        e.step_name.clone(),
        e.name.clone(),
        e.from_state.clone(),
        e.to_state.clone(),
    )
}

fn step(task: TaskId, name: &str, from: &str, to: &str) -> Line {
    (
        task,
        Some(name.into()),
        STEP_TRANSITION.into(),
        Some(from.into()),
        Some(to.into()),
    )
}

fn task_change(task: TaskId, from: &str, to: &str) -> Line {
    (
        task,
        None,
        TASK_TRANSITION.into(),
        Some(from.into()),
        Some(to.into()),
    )
}

fn custom_line(task: TaskId, step: &str, name: &str) -> Line {
    (task, Some(step.into()), name.into(), None, None)
}

/// The transaction rank of each event (0, 1, ...).
fn groups(events: &[StoredEvent]) -> Vec<i64> {
    ranked(events).iter().map(|e| key(&e.cursor).0).collect()
}

/// Three tasks: A (evlog 1.0.0) runs a (fails once, retried) and b, with custom events; B
/// (other) is cancelled in flight; C (evlog 2.0.0) completes with A's last step. Returns
/// (A, B, C).
async fn history<S: Store>(s: &S) -> (TaskId, TaskId, TaskId) {
    let a = start(s, &template(EVLOG_V1), at(0)).await;
    let b = start(s, &one_step("other", "{}"), at(0)).await;
    let c = start(s, &template(EVLOG_V2), at(0)).await;

    // tx 1: all three start.
    let claimed = claim_all(s, at(1)).await;
    assert_eq!(claimed.len(), 3);
    let (a_a, c_a) = (&claimed[0], &claimed[2]);
    // tx 2: a fails, to be retried, with a custom event.
    let out = s
        .fail_decided(
            &[failure(a_a, true, None)],
            &[],
            &[custom(a_a, 0, "tried", json!({"try": 1}))],
            at(10),
        )
        .await
        .unwrap();
    assert_eq!(out[0].decision, Some(RetryDecision::Retry));
    // tx 3: B is cancelled with its step in flight.
    assert!(s.cancel_task(b, at(20)).await.unwrap().cancelled);
    // tx 4: a again.
    let again = claim_all(s, at(1010)).await;
    assert_eq!(again.len(), 1);
    let a_a = &again[0];
    // tx 5: one hop: a completes (a custom event; a stale token's is dropped), b is claimed.
    let (done, next) = s
        .complete_and_claim(
            &[completion(a_a)],
            &[
                custom(a_a, 0, "charged", json!({"amount": 12})),
                custom(a_a, 1, "ghost", json!({})),
            ],
            "w1",
            10,
            LEASE,
            at(1020),
        )
        .await
        .unwrap();
    assert!(done[0].accepted());
    assert_eq!(next.len(), 1);
    // tx 6: b and C's step complete, finishing A and C.
    let out = s
        .complete(&[completion(&next[0]), completion(c_a)], at(1030))
        .await
        .unwrap();
    assert!(out.iter().all(|o| o.accepted()), "{out:?}");
    (a, b, c)
}

async fn a_history_is_every_change_once_in_transaction_order<S: Backend>(s: S) {
    let (a, b, c) = history(&s).await;
    let all = settled(&s, &EventFilter::default(), 18).await;
    let lines: Vec<Line> = all.iter().map(line).collect();
    let want = vec![
        step(a, "a", "pending", "in_progress"),
        step(b, "only", "pending", "in_progress"),
        step(c, "a", "pending", "in_progress"),
        task_change(a, "pending", "in_progress"),
        task_change(b, "pending", "in_progress"),
        task_change(c, "pending", "in_progress"),
        step(a, "a", "in_progress", "waiting_for_retry"),
        custom_line(a, "a", "custom.tried"),
        step(b, "only", "in_progress", "cancelled"),
        task_change(b, "in_progress", "cancelled"),
        step(a, "a", "waiting_for_retry", "in_progress"),
        step(a, "a", "in_progress", "complete"),
        step(a, "b", "pending", "in_progress"),
        custom_line(a, "a", "custom.charged"),
        step(a, "b", "in_progress", "complete"),
        step(c, "a", "in_progress", "complete"),
        task_change(a, "in_progress", "complete"),
        task_change(c, "in_progress", "complete"),
    ];
    assert_eq!(lines, want, "{all:#?}");
    // One transaction per call, the step changes of each before its task changes.
    assert_eq!(
        groups(&all),
        [0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 3, 4, 4, 4, 5, 5, 5, 5]
    );
    let keys: Vec<_> = all.iter().map(|e| key(&e.cursor)).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");

    // Every transition row is one event, its entity and sort_key in the cursor, its
    // metadata the payload, its instant the event's.
    let mut transitions = 0;
    for task in [a, b, c] {
        for t in s.task_transitions(task).await.unwrap() {
            transitions += 1;
            let found: Vec<_> = all
                .iter()
                .filter(|e| {
                    let (_, src, entity, seq) = key(&e.cursor);
                    (src, entity, seq) == (2, task.get(), i64::from(t.sort_key))
                })
                .collect();
            assert_eq!(found.len(), 1, "task {task} transition {t:?}");
            let e = found[0];
            assert_eq!(e.to_state.as_deref(), Some(t.to_state.as_str()));
            assert_eq!(e.from_state.as_deref(), Some(t.from_state.as_str()));
            assert_eq!(
                (e.payload.clone(), e.at),
                (t.metadata.clone(), t.created_at)
            );
            assert_eq!((e.step_id, e.attempt), (None, None));
        }
        for st in s.steps_of_task(task).await.unwrap() {
            for t in s.step_transitions(st.id).await.unwrap() {
                transitions += 1;
                let found: Vec<_> = all
                    .iter()
                    .filter(|e| {
                        let (_, src, entity, seq) = key(&e.cursor);
                        (src, entity, seq) == (0, st.id.get(), i64::from(t.sort_key))
                    })
                    .collect();
                assert_eq!(found.len(), 1, "step {} transition {t:?}", st.id);
                let e = found[0];
                assert_eq!((e.task_id, e.step_id), (task, Some(st.id)));
                assert_eq!(e.to_state.as_deref(), Some(t.to_state.as_str()));
                assert_eq!(e.from_state.as_deref(), Some(t.from_state.as_str()));
                assert_eq!(
                    (e.payload.clone(), e.at),
                    (t.metadata.clone(), t.created_at)
                );
                assert_eq!(
                    e.attempt.map(serde_json::Value::from),
                    t.metadata.get("attempt").cloned()
                );
            }
        }
    }
    assert_eq!(transitions, 16);

    // Custom events: the accepted attempts' only, with the attempt that emitted them.
    let customs: Vec<_> = all.iter().filter(|e| e.from_state.is_none()).collect();
    assert_eq!(customs.len(), 2);
    assert_eq!(
        (customs[0].attempt, &customs[0].payload, customs[0].at),
        (Some(1), &json!({"try": 1}), at(10))
    );
    assert_eq!(
        (customs[1].attempt, &customs[1].payload, customs[1].at),
        (Some(2), &json!({"amount": 12}), at(1020))
    );
    assert_eq!(key(&customs[0].cursor).3, 0);
    // Reasons as the audit wrote them.
    assert_eq!(all[0].payload["reason"], "claim");
    assert_eq!(all[6].payload["reason"], "fail");
    assert_eq!(all[9].payload["reason"], "cancelled");
    assert_eq!(all[16].payload["reason"], "steps_finished");
}

async fn pages_and_every_cursor_resume_without_gaps_or_duplicates<S: Backend>(s: S) {
    history(&s).await;
    let all = settled(&s, &EventFilter::default(), 18).await;
    assert_eq!(all.len(), 18);
    for limit in [1, 2, 3, 5, 7, 17, 18, MAX_PAGE] {
        assert_eq!(
            read_all(&s, &EventFilter::default(), limit).await,
            all,
            "pages of {limit}"
        );
    }
    for (i, e) in all.iter().enumerate() {
        let rest = s
            .events_after(&EventFilter::default(), Some(&e.cursor), MAX_PAGE)
            .await
            .unwrap();
        assert_eq!(rest, all[i + 1..], "after event {i} ({})", e.cursor);
        let one = s
            .events_after(&EventFilter::default(), Some(&e.cursor), 1)
            .await
            .unwrap();
        assert_eq!(
            one,
            all[i + 1..].iter().take(1).cloned().collect::<Vec<_>>()
        );
    }
    let first = s
        .events_after(&EventFilter::default(), None, 4)
        .await
        .unwrap();
    assert_eq!(first, all[..4]);
    // A well-formed cursor past the end is a position like any other.
    let (tx, ..) = key(&all[17].cursor);
    let past = format!("{}-0-1-1", tx + 1000);
    assert!(
        s.events_after(&EventFilter::default(), Some(&past), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The latest cursor is the last event's: a new subscriber from there sees nothing old.
    let latest = s
        .latest_event_cursor(&EventFilter::default())
        .await
        .unwrap();
    assert_eq!(latest.as_deref(), Some(all[17].cursor.as_str()));
    assert!(
        s.events_after(&EventFilter::default(), latest.as_deref(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // New events follow it.
    let task = start(&s, &one_step("late", "{}"), at(2000)).await;
    claim_all(&s, at(2001)).await;
    let new = settled(&s, &EventFilter::default(), 20).await;
    let after_latest = s
        .events_after(&EventFilter::default(), latest.as_deref(), 10)
        .await
        .unwrap();
    assert_eq!(after_latest, new[18..]);
    assert!(after_latest.iter().all(|e| e.task_id == task));
}

async fn filters_select_a_task_or_a_template<S: Backend>(s: S) {
    let (a, b, c) = history(&s).await;
    let all = settled(&s, &EventFilter::default(), 18).await;
    let of = |tasks: &[TaskId]| -> Vec<StoredEvent> {
        all.iter()
            .filter(|e| tasks.contains(&e.task_id))
            .cloned()
            .collect()
    };
    let cases = [
        (filter(Some(a), None), of(&[a])),
        (filter(Some(b), None), of(&[b])),
        (filter(None, Some("tests/evlog@1.0.0")), of(&[a])),
        (filter(None, Some("tests/evlog@2.0.0")), of(&[c])),
        (filter(None, Some("tests/evlog")), of(&[a, c])),
        (filter(None, Some("tests/other@1.0.0")), of(&[b])),
        (filter(Some(c), Some("tests/evlog")), of(&[c])),
        (filter(Some(b), Some("tests/evlog")), vec![]),
        (filter(None, Some("tests/nope")), vec![]),
        (filter(None, Some("tests/evlog@9.9.9")), vec![]),
        (filter(Some(TaskId::new(999)), None), vec![]),
    ];
    for (f, want) in &cases {
        assert_eq!(&read_all(&s, f, MAX_PAGE).await, want, "{f:?}");
        assert_eq!(&read_all(&s, f, 2).await, want, "{f:?} in pages of 2");
        // Resuming a filtered stream from any of its cursors.
        for (i, e) in want.iter().enumerate() {
            let rest = s.events_after(f, Some(&e.cursor), MAX_PAGE).await.unwrap();
            assert_eq!(rest, want[i + 1..], "{f:?} after {}", e.cursor);
        }
        assert_eq!(
            s.latest_event_cursor(f).await.unwrap(),
            want.last().map(|e| e.cursor.clone()),
            "{f:?}"
        );
    }
    // A's history on its own, as the server streams one task.
    let lines: Vec<Line> = of(&[a]).iter().map(line).collect();
    assert_eq!(
        lines,
        [
            step(a, "a", "pending", "in_progress"),
            task_change(a, "pending", "in_progress"),
            step(a, "a", "in_progress", "waiting_for_retry"),
            custom_line(a, "a", "custom.tried"),
            step(a, "a", "waiting_for_retry", "in_progress"),
            step(a, "a", "in_progress", "complete"),
            step(a, "b", "pending", "in_progress"),
            custom_line(a, "a", "custom.charged"),
            step(a, "b", "in_progress", "complete"),
            task_change(a, "in_progress", "complete"),
        ]
    );
}

async fn malformed_cursors_and_limits_are_refused<S: Backend>(s: S) {
    history(&s).await;
    let any = EventFilter::default();
    for bad in [
        "",
        "nope",
        "1-2-3",
        "1-3-1-1",
        "1-0-1-1-1",
        "-1-0-1-1",
        "1-0-x-1",
    ] {
        let e = s.events_after(&any, Some(bad), 10).await.unwrap_err();
        assert!(matches!(e, StoreError::InvalidInput(_)), "{bad:?}: {e}");
        assert!(e.to_string().contains("event cursor"), "{e}");
        assert!(e.to_string().contains(&format!("'{bad}'")), "{e}");
    }
    for limit in [0, MAX_PAGE + 1] {
        let e = s.events_after(&any, None, limit).await.unwrap_err();
        assert!(matches!(e, StoreError::InvalidInput(_)), "{e}");
        assert!(e.to_string().contains("limit"), "{e}");
    }
    // Nothing yet: no latest cursor, and no events for an empty store's filter.
    assert_eq!(
        s.latest_event_cursor(&filter(None, Some("tests/nope")))
            .await
            .unwrap(),
        None
    );
}

on_both_backends!(
    a_history_is_every_change_once_in_transaction_order,
    pages_and_every_cursor_resume_without_gaps_or_duplicates,
    filters_select_a_task_or_a_template,
    malformed_cursors_and_limits_are_refused,
);

// PostgreSQL only (see the module docs).
#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn an_open_transaction_holds_back_its_events_and_every_later_one(pool: PgPool) {
    let s = PgStore::new(pool.clone());
    let t = one_step("held", "{}");
    let first = start(&s, &t, at(0)).await;
    let second = start(&s, &t, at(0)).await;
    claim_all(&s, at(1)).await;
    let before = settled(&s, &EventFilter::default(), 4).await;
    assert_eq!(before.len(), 4);

    // A second connection cancels the first task and keeps its transaction open.
    let mut open = sqlx::PgConnection::connect_with(&pool.connect_options())
        .await
        .unwrap();
    let mut tx = open.begin().await.unwrap();
    sqlx::query("SELECT * FROM cancel_task($1, $2)")
        .bind(first)
        .bind(at(5))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    // A later transaction (the store's own connection) cancels the second and commits.
    assert!(s.cancel_task(second, at(6)).await.unwrap().cancelled);
    assert_eq!(
        s.task(second).await.unwrap().unwrap().state,
        tasker_core::state::TaskState::Cancelled
    );

    // Neither is returned: the open one is not committed, and the later one's xid is above
    // it, so returning it would let the open one's events appear behind a cursor later.
    assert_eq!(
        read_all(&s, &EventFilter::default(), MAX_PAGE).await,
        before
    );
    let last = before.last().unwrap().cursor.clone();
    assert!(
        s.events_after(&EventFilter::default(), Some(&last), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.latest_event_cursor(&EventFilter::default())
            .await
            .unwrap()
            .as_deref(),
        Some(last.as_str())
    );
    assert!(
        read_all(&s, &filter(Some(second), None), MAX_PAGE)
            .await
            .iter()
            .all(|e| e.to_state.as_deref() != Some("cancelled"))
    );

    // Once it commits, both appear after the cursor a reader held meanwhile, the open
    // transaction's first (its xid is the lower), though it committed last.
    tx.commit().await.unwrap();
    let all = settled(&s, &EventFilter::default(), 8).await;
    assert_eq!(all[..4], before);
    let resumed = s
        .events_after(&EventFilter::default(), Some(&last), 10)
        .await
        .unwrap();
    assert_eq!(resumed, all[4..]);
    let lines: Vec<Line> = resumed.iter().map(line).collect();
    assert_eq!(
        lines,
        [
            step(first, "only", "in_progress", "cancelled"),
            task_change(first, "in_progress", "cancelled"),
            step(second, "only", "in_progress", "cancelled"),
            task_change(second, "in_progress", "cancelled"),
        ]
    );
    assert_eq!(groups(&resumed), [0, 0, 1, 1]);
}
