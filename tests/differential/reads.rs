//! SQLite's reads and task operations against PostgreSQL's, side by side.
//!
//! A deterministic simulation drives PostgreSQL through its hot path (claims, completions,
//! retryable / permanent / retry-after failures, lease losses, releases) into a mix of every
//! state; the rows are then copied verbatim into a fresh SQLite store. From there both
//! backends must answer every read identically (rows, attempts, transitions, readiness at
//! many instants, execution contexts, dependency levels, health counts), and then the same
//! sequence of cancel / retry / resolve calls must give the same outcomes, refusals and
//! errors, and leave the same rows behind.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use tasker_core::error_kind::ErrorKind;
use tasker_core::state::{StepState, TaskState};
use tasker_core::template::Template;
use tasker_store::*;
use tasker_tests::events::{assert_same_log, read_all, settled};
use tasker_tests::store::*;

/// Tables in foreign-key order (the state tables and tasker_ctx come with the schema).
const TABLES: &[&str] = &[
    "namespaces",
    "templates",
    "template_steps",
    "tasks",
    "steps",
    "edges",
    "task_transitions",
    "step_transitions",
    "attempts",
    "task_events_custom",
    "api_tokens",
];

/// Copy every row of PostgreSQL's tables into SQLite's, converted to SQLite's representation
/// (instants in microseconds, JSON as text, booleans 0/1, arrays as JSON arrays).
async fn copy_into(pg: &PgPool, lite: &SqliteStore) {
    for table in TABLES {
        let lite_cols: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?)")
            .bind(table)
            .fetch_all(lite.reader())
            .await
            .unwrap();
        let pg_cols: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1",
        )
        .bind(table)
        .fetch_all(pg)
        .await
        .unwrap();
        let exprs: Vec<String> = lite_cols
            .iter()
            .map(|c| {
                // The event log's transaction: PostgreSQL's xid, whose order SQLite's
                // counter then keeps.
                if c == "tx" {
                    return "xid::text::bigint AS tx".to_owned();
                }
                let ty = pg_cols
                    .iter()
                    .find(|(n, _)| n == c)
                    .unwrap_or_else(|| panic!("PostgreSQL has no {table}.{c}"))
                    .1
                    .as_str();
                match ty {
                    "timestamp with time zone" => {
                        format!("(extract(epoch FROM {c}) * 1000000)::bigint AS {c}")
                    }
                    "jsonb" => format!("{c}::text AS {c}"),
                    "boolean" => format!("{c}::int AS {c}"),
                    "ARRAY" => format!("to_jsonb({c})::text AS {c}"),
                    _ => c.clone(),
                }
            })
            .collect();
        let rows: String = sqlx::query_scalar(&format!(
            "SELECT coalesce(json_agg(x), '[]')::text FROM (SELECT {} FROM {table}) x",
            exprs.join(", ")
        ))
        .fetch_one(pg)
        .await
        .unwrap();
        let extracts: Vec<String> = lite_cols
            .iter()
            .map(|c| format!("json_extract(value, '$.{c}')"))
            .collect();
        sqlx::query(&format!(
            "INSERT INTO {table} ({}) SELECT {} FROM json_each(?)",
            lite_cols.join(", "),
            extracts.join(", ")
        ))
        .bind(rows)
        .execute(lite.writer())
        .await
        .unwrap();
    }
    // The copied events keep PostgreSQL's xids as their transactions; SQLite's counter goes
    // on from the last, so its own events follow them, as PostgreSQL's next ones do.
    sqlx::query(
        "UPDATE tasker_ctx SET tx_seq = (SELECT max(m) FROM (\
             SELECT coalesce(max(tx), 0) AS m FROM task_transitions \
             UNION ALL SELECT coalesce(max(tx), 0) FROM step_transitions \
             UNION ALL SELECT coalesce(max(tx), 0) FROM task_events_custom))",
    )
    .execute(lite.writer())
    .await
    .unwrap();
}

fn templates() -> Vec<Template> {
    let mut all = all_fixtures();
    // Jitter and a steep multiplier: readiness's backoff must match PostgreSQL's exactly.
    all.push(template(
        "namespace: tests\nname: jittery\nversion: 1.0.0\nsteps:\n\
         \x20 - name: first\n    handler: noop@1.0.0\n\
         \x20   retry: { max_attempts: 5, backoff: { base_ms: 700, multiplier: 3.0, cap_ms: 20000, jitter: 0.3 } }\n\
         \x20 - name: second\n    handler: noop@1.0.0\n    depends_on: [first]\n\
         \x20   retry: { max_attempts: 4, max_retry_after_ms: 900, backoff: { base_ms: 333, multiplier: 1.5, cap_ms: 5000, jitter: 0.9 } }\n\
         \x20 - name: third\n    handler: noop@1.0.0\n    depends_on: [first]\n\
         \x20   retry: { max_attempts: 2, retryable: false }\n",
    ));
    all
}

/// A small deterministic generator (the simulation only runs on PostgreSQL; this keeps the
/// scenario the same from run to run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

const LAST_TICK: i64 = 24;

/// Drive PostgreSQL into a mix of states; returns the task ids and the final instant.
async fn simulate(pg: &PgStore) -> (Vec<TaskId>, i64) {
    let mut tasks = Vec::new();
    for (i, t) in templates().iter().enumerate() {
        pg.register_template(t).await.unwrap();
        for k in 0..3 {
            // Tags and identity keys for the listings' filters.
            let mut req = NewTask::new(t.key(), json!({"i": i, "k": k}));
            req.metadata = json!({"tags": [format!("k{k}"), format!("i{}", i % 2)]});
            if k == 0 {
                req = req.with_identity_key(format!("t{i}"));
            }
            let created = pg.create_task(&req, at((i * 3 + k) as i64)).await.unwrap();
            tasks.push(created.task_id);
        }
    }
    let lease = Duration::from_secs(2);
    let mut rng = Lcg(7);
    let mut now = 0;
    for tick in 0..=LAST_TICK {
        now = tick * 700 + 100;
        if tick % 4 == 3 {
            pg.expire_leases(at(now), 1000).await.unwrap();
        }
        let claimed = pg
            .claim(&format!("w{}", tick % 3), 6, lease, at(now))
            .await
            .unwrap();
        let (mut done, mut failed, mut released) = (Vec::new(), Vec::new(), Vec::new());
        for (n, c) in claimed.iter().enumerate() {
            // The end: one round of completions, failures (retries computed and requested)
            // and claims left running.
            let pick = match tick {
                LAST_TICK => 99,
                t if t == LAST_TICK - 1 => [0, 17, 18, 99][n % 4],
                _ => rng.next() % 24,
            };
            match pick {
                0..=13 => done.push(completion(c)),
                14..=17 => failed.push(failure(c, true, None)),
                18 => failed.push(failure(c, true, Some(1500))),
                19 => failed.push(failure(c, false, None)),
                20 => {
                    let mut f = failure(c, true, None);
                    f.error_kind = ErrorKind::HandlerError;
                    failed.push(f);
                }
                21 => released.push(c.lease()),
                _ => {} // left running: its lease expires
            }
        }
        for o in pg.complete(&done, at(now)).await.unwrap() {
            assert!(o.accepted(), "{o:?}");
        }
        for o in pg.fail(&failed, at(now)).await.unwrap() {
            assert!(o.accepted(), "{o:?}");
        }
        let worker = format!("w{}", tick % 3);
        for o in pg.release(&worker, &released, at(now)).await.unwrap() {
            assert!(o.refusal.is_none(), "{o:?}");
        }
    }
    (tasks, now)
}

fn no_connections(mut h: HealthCounts) -> HealthCounts {
    h.active_connections = 0;
    h.max_connections = 0;
    h
}

/// Every page of a task listing, walked through `next`.
async fn task_pages<S: Store>(
    s: &S,
    filter: &TaskFilter,
    limit: u32,
) -> Vec<Page<TaskRow, TaskId>> {
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = s
            .list_tasks(filter, TaskPageRequest { before, limit })
            .await
            .unwrap();
        before = page.next;
        out.push(page);
        if before.is_none() || out.len() > 1000 {
            return out;
        }
    }
}

/// How many tasks one page of the largest size lists.
async fn count_listed(s: &PgStore, filter: TaskFilter) -> usize {
    let page = s
        .list_tasks(
            &filter,
            TaskPageRequest {
                before: None,
                limit: MAX_PAGE,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.next, None);
    page.items.len()
}

/// The listings (tasks under several filters, in pages of two sizes; templates) and the
/// tokens, on both.
async fn same_listings(pg: &PgStore, lite: &SqliteStore, tasks: &[TaskId]) {
    let first = templates()[0].key();
    let filters = [
        TaskFilter::default(),
        TaskFilter {
            states: vec![TaskState::InProgress, TaskState::Error],
            ..TaskFilter::default()
        },
        TaskFilter {
            states: vec![TaskState::Complete],
            ..TaskFilter::default()
        },
        TaskFilter {
            template: Some(first.clone()),
            ..TaskFilter::default()
        },
        TaskFilter {
            template: Some(first[..first.find('@').unwrap()].to_owned()),
            ..TaskFilter::default()
        },
        TaskFilter {
            template: Some("tests/jittery".into()),
            ..TaskFilter::default()
        },
        TaskFilter {
            tag: Some("k1".into()),
            ..TaskFilter::default()
        },
        TaskFilter {
            identity_key: Some("t2".into()),
            ..TaskFilter::default()
        },
        TaskFilter {
            created_after: Some(at(3)),
            created_before: Some(at(20)),
            ..TaskFilter::default()
        },
        TaskFilter {
            finished_after: Some(at(0)),
            ..TaskFilter::default()
        },
        TaskFilter {
            finished_after: Some(at(5_000)),
            finished_before: Some(at(12_000)),
            ..TaskFilter::default()
        },
        TaskFilter {
            states: vec![TaskState::Complete, TaskState::Error, TaskState::Cancelled],
            tag: Some("i1".into()),
            created_after: Some(at(5)),
            ..TaskFilter::default()
        },
    ];
    for filter in &filters {
        for limit in [4, MAX_PAGE] {
            let want = task_pages(pg, filter, limit).await;
            assert_eq!(
                task_pages(lite, filter, limit).await,
                want,
                "{filter:?} by {limit}"
            );
        }
    }
    let all = task_pages(pg, &filters[0], MAX_PAGE).await;
    assert_eq!(all[0].items.len(), tasks.len(), "every task is listed");

    let mut after: Option<String> = None;
    loop {
        let want = pg.list_templates(after.as_deref(), 4).await.unwrap();
        assert_eq!(
            lite.list_templates(after.as_deref(), 4).await.unwrap(),
            want
        );
        after = want.next;
        if after.is_none() {
            break;
        }
    }
    let tokens = pg.list_tokens().await.unwrap();
    assert_eq!(lite.list_tokens().await.unwrap(), tokens);
    for t in &tokens {
        assert_eq!(lite.token_by_hash(&t.hash).await.unwrap().as_ref(), Some(t));
    }
    assert_eq!(lite.token_by_hash("none").await.unwrap(), None);
}

/// Every read of the Store trait, on both, for these tasks and instants.
async fn same_reads(pg: &PgStore, lite: &SqliteStore, tasks: &[TaskId], times: &[i64]) {
    same_listings(pg, lite, tasks).await;
    let unknown = TaskId::new(1_000_000);
    let unknown_step = StepId::new(1_000_000);
    let mut all_steps = Vec::new();
    for &task in tasks.iter().chain([&unknown]) {
        assert_eq!(lite.task(task).await, pg.task(task).await, "task {task}");
        assert_eq!(
            lite.task_transitions(task).await,
            pg.task_transitions(task).await,
            "task {task} transitions"
        );
        let steps = pg.steps_of_task(task).await.unwrap();
        assert_eq!(
            lite.steps_of_task(task).await.unwrap(),
            steps,
            "task {task}"
        );
        for st in &steps {
            all_steps.push(st.id);
            assert_eq!(lite.step(st.id).await.unwrap().as_ref(), Some(st));
            assert_eq!(
                lite.attempts_of_step(st.id).await.unwrap(),
                pg.attempts_of_step(st.id).await.unwrap(),
                "step {} attempts",
                st.id
            );
            assert_eq!(
                lite.step_transitions(st.id).await.unwrap(),
                pg.step_transitions(st.id).await.unwrap(),
                "step {} transitions",
                st.id
            );
        }
        assert_eq!(
            lite.dependency_levels(task).await,
            pg.dependency_levels(task).await,
            "task {task} levels"
        );
    }
    assert_eq!(lite.step(unknown_step).await.unwrap(), None);
    assert_eq!(pg.step(unknown_step).await.unwrap(), None);
    let mut asked = all_steps.clone();
    asked.extend([unknown_step, all_steps[0]]);
    asked.reverse();
    // PostgreSQL's first_attempt_at has no ORDER BY (callers look ids up): compare as sets.
    let sorted = |r: Result<Vec<(StepId, Option<DateTime<Utc>>)>>| {
        let mut v = r.unwrap();
        v.sort();
        v
    };
    assert_eq!(
        sorted(lite.first_attempt_at(&asked).await),
        sorted(pg.first_attempt_at(&asked).await)
    );
    for t in templates() {
        assert_eq!(
            lite.template(&t.key()).await.unwrap(),
            pg.template(&t.key()).await.unwrap()
        );
    }
    assert_eq!(lite.template("no/such@1.0.0").await.unwrap(), None);

    let mut batch: Vec<TaskId> = tasks.to_vec();
    batch.push(unknown);
    batch.reverse();
    for &ms in times {
        let now = at(ms);
        for &task in tasks {
            assert_eq!(
                lite.readiness(task, None, now).await,
                pg.readiness(task, None, now).await,
                "task {task} at {ms}"
            );
            let ids: Vec<StepId> = all_steps.iter().step_by(3).copied().collect();
            assert_eq!(
                lite.readiness(task, Some(&ids), now).await,
                pg.readiness(task, Some(&ids), now).await,
                "task {task} some steps at {ms}"
            );
            assert_eq!(
                lite.readiness(task, Some(&[]), now).await,
                pg.readiness(task, Some(&[]), now).await
            );
            assert_eq!(
                lite.execution_context(task, now).await,
                pg.execution_context(task, now).await,
                "task {task} context at {ms}"
            );
        }
        assert_eq!(
            lite.readiness_batch(&batch, now).await,
            pg.readiness_batch(&batch, now).await,
            "batch at {ms}"
        );
        assert_eq!(
            lite.execution_context_batch(&batch, now).await,
            pg.execution_context_batch(&batch, now).await,
            "contexts at {ms}"
        );
        assert_eq!(
            no_connections(lite.health_counts(now).await.unwrap()),
            no_connections(pg.health_counts(now).await.unwrap()),
            "health at {ms}"
        );
    }
    assert_eq!(lite.execution_context(unknown, at(0)).await.unwrap(), None);
    assert!(lite.readiness_batch(&[], at(0)).await.unwrap().is_empty());
    assert!(
        lite.execution_context_batch(&[], at(0))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        lite.readiness(unknown, None, at(0))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn step_states(s: &PgStore, tasks: &[TaskId]) -> HashSet<StepState> {
    let mut out = HashSet::new();
    for &t in tasks {
        out.extend(
            s.steps_of_task(t)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.state),
        );
    }
    out
}

/// Instants around the end of the simulation, where backoffs are due, and far beyond.
fn times(end: i64) -> Vec<i64> {
    let mut out = vec![0, end / 2, end, end + 1, end + 2_000];
    out.extend((1..=25).map(|i| end + i * 397));
    out.extend([end + 60_000, end + 10_000_000]);
    out
}

#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn reads_and_operations_agree_with_postgres(pool: PgPool) {
    let pg = PgStore::new(pool.clone());
    let (tasks, end) = simulate(&pg).await;
    for (name, expires_at) in [("ci", Some(at(end))), ("admin", None), ("old", None)] {
        let token = NewToken {
            name: name.into(),
            hash: format!("hash-of-{name}"),
            permissions: vec!["tasks:read".into(), format!("{name}:*")],
            expires_at,
        };
        pg.create_token(&token, at(end - 1)).await.unwrap();
    }
    assert!(pg.revoke_token("old", at(end)).await.unwrap());
    let lite = SqliteStore::temporary().await.unwrap();
    copy_into(&pool, &lite).await;

    // The simulation reached the states readiness distinguishes.
    let states = step_states(&pg, &tasks).await;
    for s in [
        StepState::Pending,
        StepState::InProgress,
        StepState::WaitingForRetry,
        StepState::Complete,
        StepState::Error,
    ] {
        assert!(states.contains(&s), "no step {s} in {states:?}");
    }
    let mut computed = 0;
    let mut requested = 0;
    for &t in &tasks {
        for st in pg.steps_of_task(t).await.unwrap() {
            if st.state == StepState::WaitingForRetry {
                match st.backoff_request_ms {
                    None => computed += 1,
                    Some(_) => requested += 1,
                }
            }
        }
    }
    assert!(computed > 0 && requested > 0, "{computed} / {requested}");
    let lite_health = lite.health_counts(at(end)).await.unwrap();
    assert!(lite_health.active_connections >= 1);
    // temporary(): one writer and four readers.
    assert_eq!(lite_health.max_connections, 5);

    same_reads(&pg, &lite, &tasks, &times(end)).await;
    // The event log, copied with PostgreSQL's xids: the same cursors exactly.
    let any = EventFilter::default();
    let lite_log = read_all(&lite, &any, MAX_PAGE).await;
    assert_eq!(settled(&pg, &any, lite_log.len()).await, lite_log);
    assert_eq!(
        lite.latest_event_cursor(&any).await.unwrap(),
        pg.latest_event_cursor(&any).await.unwrap()
    );
    // The listings compared there are not empty ones.
    let listed = |filter: TaskFilter| count_listed(&pg, filter);
    let tag = |t: &str| TaskFilter {
        tag: Some(t.into()),
        ..TaskFilter::default()
    };
    assert_eq!(listed(tag("k1")).await, tasks.len() / 3);
    assert_eq!(
        listed(tag("i0")).await + listed(tag("i1")).await,
        tasks.len()
    );
    let identity = TaskFilter {
        identity_key: Some("t2".into()),
        ..TaskFilter::default()
    };
    assert_eq!(listed(identity).await, 1);
    let running = TaskFilter {
        states: vec![TaskState::InProgress, TaskState::Error],
        ..TaskFilter::default()
    };
    assert!(listed(running).await > 0);
    assert_eq!(lite.list_tokens().await.unwrap().len(), 3);

    // The same operations, in the same order, on both: outcomes, refusals and errors agree.
    let now = end + 50;
    let unknown = 1_000_000;
    assert_eq!(
        lite.cancel_task(TaskId::new(unknown), at(now)).await,
        pg.cancel_task(TaskId::new(unknown), at(now)).await
    );
    assert_eq!(
        lite.retry_task(TaskId::new(unknown), at(now)).await,
        pg.retry_task(TaskId::new(unknown), at(now)).await
    );
    assert_eq!(
        lite.resolve_step(StepId::new(unknown), None, at(now)).await,
        pg.resolve_step(StepId::new(unknown), None, at(now)).await
    );
    let mut kinds = BTreeSet::new();
    for (i, &task) in tasks.iter().enumerate() {
        let steps = pg.steps_of_task(task).await.unwrap();
        let now = at(now + i as i64);
        let mut ops: Vec<String> = match i % 4 {
            0 => vec!["retry".into(), "resolve_all".into(), "cancel".into()],
            1 => vec!["cancel".into(), "cancel".into(), "retry".into()],
            2 => vec!["resolve_errors".into(), "retry".into(), "cancel".into()],
            _ => vec!["resolve_first".into(), "retry".into()],
        };
        ops.push("resolve_all".into());
        for op in ops {
            match op.as_str() {
                "cancel" => {
                    let (a, b) = (
                        lite.cancel_task(task, now).await,
                        pg.cancel_task(task, now).await,
                    );
                    kinds.insert(match &b {
                        Ok(o) => format!("cancel {}", o.cancelled),
                        Err(_) => "cancel refused".to_owned(),
                    });
                    assert_eq!(a, b, "cancel {task}");
                }
                "retry" => {
                    let (a, b) = (
                        lite.retry_task(task, now).await,
                        pg.retry_task(task, now).await,
                    );
                    kinds.insert(format!("retry {}", b.is_ok()));
                    assert_eq!(a, b, "retry {task}");
                }
                _ => {
                    for (k, st) in steps.iter().enumerate() {
                        let current = pg.step(st.id).await.unwrap().unwrap().state;
                        let wanted = match op.as_str() {
                            "resolve_errors" => current == StepState::Error,
                            "resolve_first" => k == 0,
                            _ => true,
                        };
                        if !wanted {
                            continue;
                        }
                        let result = (k % 2 == 0).then(|| json!({"by": "hand", "k": k}));
                        let (a, b) = (
                            lite.resolve_step(st.id, result.clone(), now).await,
                            pg.resolve_step(st.id, result, now).await,
                        );
                        kinds.insert(format!(
                            "resolve {}",
                            b.as_ref()
                                .map(|o| o.task_state.as_str())
                                .unwrap_or("refused")
                        ));
                        assert_eq!(a, b, "resolve step {} ({current})", st.id);
                    }
                }
            }
        }
    }
    // The operations met every answer: done, refused, no-op, and tasks finishing.
    for k in [
        "cancel true",
        "cancel false",
        "cancel refused",
        "retry true",
        "retry false",
        "resolve complete",
        "resolve pending",
        "resolve refused",
    ] {
        assert!(kinds.contains(k), "no '{k}' among {kinds:?}");
    }
    let states = step_states(&pg, &tasks).await;
    assert!(
        states.contains(&StepState::Cancelled) && states.contains(&StepState::ResolvedManually)
    );
    let mut task_states = HashSet::new();
    for &t in &tasks {
        task_states.insert(pg.task(t).await.unwrap().unwrap().state);
    }
    assert!(
        task_states.contains(&TaskState::Complete) && task_states.contains(&TaskState::Cancelled),
        "{task_states:?}"
    );

    same_reads(&pg, &lite, &tasks, &[end, now + 100, now + 100_000]).await;
    // The operations' events follow the copied ones in the same order and transactions.
    assert_same_log(&pg, &lite).await;
}

/// Resolving steps of a task in error walks it back to pending, then to complete; retrying
/// resets the failed steps; the transition rows carry the same reasons on both.
#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn blocked_task_is_unblocked_and_finished_by_hand(pool: PgPool) {
    let pg = PgStore::new(pool.clone());
    let t = fixtures_diamond_with_one_attempt();
    let task = start(&pg, &t, at(0)).await;
    // a completes; b fails permanently; c stays pending until it is claimed and fails too.
    let a = claim_all(&pg, at(1)).await;
    pg.complete(&[completion(&a[0])], at(2)).await.unwrap();
    let bc = claim_all(&pg, at(3)).await;
    assert_eq!(bc.len(), 2);
    let fails: Vec<_> = bc.iter().map(|c| failure(c, false, None)).collect();
    let out = pg.fail(&fails, at(4)).await.unwrap();
    assert_eq!(out[1].task_finalized, Some(TaskState::Error));

    let lite = SqliteStore::temporary().await.unwrap();
    copy_into(&pool, &lite).await;
    same_reads(&pg, &lite, &[task], &[4, 5]).await;
    let steps = ids(&pg, task).await;

    // Resolving b leaves c in error: still blocked (error -> pending -> error is not taken).
    for s in ["b", "c", "d"] {
        let (x, y) = (
            lite.resolve_step(steps[s], None, at(10)).await,
            pg.resolve_step(steps[s], None, at(10)).await,
        );
        assert_eq!(x, y, "resolve {s}");
    }
    same_reads(&pg, &lite, &[task], &[10, 11]).await;
    let tt = lite.task_transitions(task).await.unwrap();
    assert_eq!(tt.last().unwrap().to_state, TaskState::Complete);
    assert!(
        tt.iter()
            .any(|r| r.metadata == json!({"reason": "resolved_manually"})),
        "{tt:?}"
    );

    // A second task: retried instead of resolved.
    let task2 = pg
        .create_task(&NewTask::new(t.key(), json!({})), at(20))
        .await
        .unwrap()
        .task_id;
    let a = claim_all(&pg, at(21)).await;
    let out = pg
        .fail(&[failure(&a[0], false, None)], at(22))
        .await
        .unwrap();
    assert_eq!(out[0].task_finalized, Some(TaskState::Error));
    let lite = SqliteStore::temporary().await.unwrap();
    copy_into(&pool, &lite).await;
    assert_eq!(
        lite.retry_task(task2, at(30)).await,
        pg.retry_task(task2, at(30)).await
    );
    // The retried root is claimable again at once; a second retry is refused.
    assert_eq!(
        lite.retry_task(task2, at(31)).await,
        pg.retry_task(task2, at(31)).await
    );
    same_reads(&pg, &lite, &[task, task2], &[30, 31]).await;
    let root = ids(&lite, task2).await["a"];
    let tr = lite.step_transitions(root).await.unwrap();
    assert_eq!(tr.last().unwrap().metadata["reason"], json!("task_retry"));
    assert!(lite.readiness(task2, Some(&[root]), at(30)).await.unwrap()[0].ready_for_execution);
}

fn fixtures_diamond_with_one_attempt() -> Template {
    template(
        "namespace: tests\nname: diamond_once\nversion: 1.0.0\nsteps:\n\
         \x20 - name: a\n    handler: noop@1.0.0\n    retry: { max_attempts: 1 }\n\
         \x20 - name: b\n    handler: noop@1.0.0\n    depends_on: [a]\n    retry: { max_attempts: 1 }\n\
         \x20 - name: c\n    handler: noop@1.0.0\n    depends_on: [a]\n    retry: { max_attempts: 1 }\n\
         \x20 - name: d\n    handler: noop@1.0.0\n    depends_on: [b, c]\n    retry: { max_attempts: 1 }\n",
    )
}

/// Cancelling a task with a step in flight records its cancelled attempt identically.
#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn cancel_records_the_in_flight_attempt(pool: PgPool) {
    let pg = PgStore::new(pool.clone());
    let t = fixtures_diamond_with_one_attempt();
    let task = start(&pg, &t, at(0)).await;
    let c = claim_all(&pg, at(5)).await;
    assert_eq!(c.len(), 1);
    let lite = SqliteStore::temporary().await.unwrap();
    copy_into(&pool, &lite).await;
    let (x, y) = (
        lite.cancel_task(task, at(9)).await,
        pg.cancel_task(task, at(9)).await,
    );
    assert_eq!(x, y);
    assert_eq!(x.unwrap().steps_cancelled, 4);
    let attempts = lite.attempts_of_step(c[0].step_id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, AttemptOutcome::Cancelled);
    assert_eq!(attempts[0].started_at, at(5));
    same_reads(&pg, &lite, &[task], &[9, 10]).await;
    // The reason does not outlive its transaction.
    let reason: Option<String> = sqlx::query_scalar("SELECT reason FROM tasker_ctx")
        .fetch_one(lite.reader())
        .await
        .unwrap();
    assert_eq!(reason, None);
}

/// Reads of an empty store and of unknown ids.
#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn empty_stores_agree(pool: PgPool) {
    let pg = PgStore::new(pool);
    let lite = SqliteStore::temporary().await.unwrap();
    let now: DateTime<Utc> = at(0);
    assert_eq!(
        no_connections(lite.health_counts(now).await.unwrap()),
        no_connections(pg.health_counts(now).await.unwrap())
    );
    assert_eq!(
        lite.dependency_levels(TaskId::new(1)).await,
        pg.dependency_levels(TaskId::new(1)).await
    );
    assert_eq!(
        lite.first_attempt_at(&[]).await,
        pg.first_attempt_at(&[]).await
    );
    assert_eq!(
        lite.first_attempt_at(&[StepId::new(1), StepId::new(2)])
            .await,
        Ok(Vec::new())
    );
    assert_eq!(
        pg.first_attempt_at(&[StepId::new(1), StepId::new(2)]).await,
        Ok(Vec::new())
    );
    assert_eq!(
        lite.task(TaskId::new(1)).await,
        pg.task(TaskId::new(1)).await
    );
    assert_eq!(
        lite.attempts_of_step(StepId::new(1)).await,
        pg.attempts_of_step(StepId::new(1)).await
    );
    same_listings(&pg, &lite, &[]).await;
    assert!(pg.list_templates(None, 1).await.unwrap().items.is_empty());
    assert!(pg.list_tokens().await.unwrap().is_empty());
}
