//! The SQLite hot path side by side with PostgreSQL: the same calls on a fresh database of
//! each must return the same outcomes and leave the same rows (tasks, steps, attempts,
//! transitions with their metadata), errors included. And in-process workers sharing one
//! SQLite store never hold a step twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use tasker_core::error_kind::ErrorKind;
use tasker_core::fixtures::{self, NOOP};
use tasker_core::state::TaskState;
use tasker_core::template::Template;
use tasker_store::*;
use tasker_tests::events::assert_same_log;
use tasker_tests::store::*;

const HOOKED: &str = "namespace: tests\nname: hooked\nversion: 1.0.0\n\
hooks:\n  - {component: audit@0.1.0, events: ['*']}\n\
steps:\n  - {name: a, handler: noop@1.0.0, retry: {max_attempts: 3, backoff: {base_ms: 100, jitter: 0.3}}}\n\
\x20 - {name: b, handler: noop@1.0.0, depends_on: a}\n\
\x20 - {name: c, handler: noop@1.0.0, depends_on: a}\n";

/// Line by line, so a difference names the call that diverged.
fn assert_same(pg: &[String], lite: &[String]) {
    for (i, (a, b)) in pg.iter().zip(lite).enumerate() {
        assert_eq!(a, b, "entry {i} differs (left: PostgreSQL, right: SQLite)");
    }
    assert_eq!(pg.len(), lite.len(), "same number of entries");
}

fn with_hash(mut c: StepCompletion, hash: &str) -> StepCompletion {
    c.accounting.plugin_hash = Some(hash.into());
    c
}

fn named<'a>(c: &'a [ClaimedStep], task: TaskId, name: &str) -> &'a ClaimedStep {
    c.iter()
        .find(|x| x.task_id == task && x.step_name == name)
        .unwrap_or_else(|| panic!("{name} of task {task} claimed"))
}

/// Every hot-path call with accepted, refused, duplicate and stale items, retries with
/// jitter, retry-after caps, exhaustion, lease losses up to error, releases and pins.
/// Returns every outcome and, at checkpoints, everything the store holds.
async fn scenario<S: Store>(s: &S) -> Vec<String> {
    let mut log = Vec::new();
    macro_rules! rec {
        ($label:expr, $e:expr) => {{
            let v = $e;
            log.push(format!("{}: {:?}", $label, v));
            v
        }};
    }
    let jitter = one_step(
        "jitter",
        "{ max_attempts: 4, backoff: { base_ms: 1000, multiplier: 3, cap_ms: 20000, jitter: 0.5 } }",
    );
    let fragile = one_step("fragile", "{ max_attempts: 1 }");
    let capped = one_step(
        "capped",
        "{ max_attempts: 5, max_retry_after_ms: 7000, backoff: { jitter: 0.2 } }",
    );
    let diamond = fixtures::diamond(NOOP);
    let tree = fixtures::tree(NOOP);
    for t in [&jitter, &fragile, &capped, &diamond, &tree] {
        rec!("register", s.register_template(t).await.unwrap());
    }
    rec!("register again", s.register_template(&tree).await.unwrap());
    rec!(
        "template",
        s.template(&tree.key()).await.unwrap() == Some(tree.clone())
    );
    rec!("nothing queued", s.next_ready_at().await.unwrap());

    let create = async |t: &Template, ctx: serde_json::Value, at_ms: i64| {
        let mut req = NewTask::new(t.key(), ctx);
        req.metadata = json!({"initiator": "test", "n": at_ms});
        s.create_task(&req, at(at_ms)).await.unwrap()
    };
    let tj1 = rec!("create", create(&jitter, json!({"j": 1}), 0).await).task_id;
    let tj2 = rec!("create", create(&jitter, json!({"j": 2}), 1).await).task_id;
    let tf = rec!("create", create(&fragile, json!({}), 2).await).task_id;
    let tc = rec!("create", create(&capped, json!({"c": [1, 2]}), 3).await).task_id;
    let td = rec!(
        "create",
        s.create_task(
            &NewTask::new(diamond.key(), json!({"d": true})).with_identity_key("d-1"),
            at(4)
        )
        .await
        .unwrap()
    )
    .task_id;
    let tt = rec!("create", create(&tree, json!({"t": "x"}), 5).await).task_id;
    rec!("next", s.next_ready_at().await.unwrap());

    // Two claims by two workers; w2's lease is short.
    let c1 = rec!("claim w1", s.claim("w1", 3, LEASE, at(10)).await.unwrap());
    let c2 = rec!(
        "claim w2",
        s.claim("w2", 100, Duration::from_millis(1500), at(11))
            .await
            .unwrap()
    );
    let all: Vec<ClaimedStep> = c1.iter().chain(&c2).cloned().collect();
    rec!(
        "claim nothing",
        s.claim("w3", 10, LEASE, at(12)).await.unwrap()
    );

    // Completions: good, duplicate, stale, unknown.
    let a = named(&all, td, "a");
    let root = named(&all, tt, "root");
    let good = with_hash(completion(a), "blake3:aa");
    let mut stale = completion(root);
    stale.token += 1;
    let unknown = StepCompletion {
        step_id: StepId::new(99_999),
        token: 1,
        result: json!(null),
        accounting: Accounting::default(),
        log: Default::default(),
    };
    rec!(
        "complete mixed",
        s.complete(&[stale, good.clone(), good, unknown], at(20))
            .await
            .unwrap()
    );
    rec!(
        "complete root",
        s.complete(&[completion(root)], at(21)).await.unwrap()
    );
    rec!(
        "complete again",
        s.complete(&[completion(a)], at(22)).await.unwrap()
    );

    // Failures: jittered backoff, exhausted (task error), capped retry-after, duplicates.
    let j1 = named(&all, tj1, "only");
    let j2 = named(&all, tj2, "only");
    let f = named(&all, tf, "only");
    let cp = named(&all, tc, "only");
    let mut stale_f = failure(j1, true, None);
    stale_f.token = 0;
    let mut with_acct = failure(j2, true, None);
    with_acct.accounting = Accounting {
        fuel: Some(7),
        peak_memory_bytes: Some(8),
        wall_us: Some(9),
        plugin_hash: Some("blake3:j2".into()),
    };
    rec!(
        "fail",
        s.fail(
            &[
                stale_f,
                failure(j1, true, None),
                with_acct,
                failure(j1, true, None),
                failure(f, true, None),
                failure(cp, true, Some(u64::MAX)),
            ],
            at(30)
        )
        .await
        .unwrap()
    );
    rec!("next", s.next_ready_at().await.unwrap());

    // The diamond's b and c and the tree's two children: heartbeats with good, stale,
    // foreign and duplicate items.
    let c3 = rec!("claim w1", s.claim("w1", 10, LEASE, at(40)).await.unwrap());
    let b = named(&c3, td, "b");
    let c = named(&c3, td, "c");
    rec!(
        "heartbeat",
        s.heartbeat(
            "w1",
            &[
                b.lease(),
                Lease {
                    step_id: c.step_id,
                    token: c.token + 3,
                },
                c.lease(),
                b.lease(),
                Lease {
                    step_id: StepId::new(123_456),
                    token: 1,
                },
            ],
            Duration::from_secs(90),
            at(41),
        )
        .await
        .unwrap()
    );
    rec!(
        "heartbeat other worker",
        s.heartbeat("w2", &[b.lease()], LEASE, at(42))
            .await
            .unwrap()
    );

    // Release: own, foreign, duplicate, stale.
    let others: Vec<&ClaimedStep> = c3.iter().filter(|x| x.task_id == tt).collect();
    rec!(
        "release",
        s.release(
            "w2",
            &[
                others[0].lease(),
                Lease {
                    step_id: others[1].step_id,
                    token: 77,
                },
            ],
            at(43)
        )
        .await
        .unwrap()
    );
    rec!(
        "release",
        s.release(
            "w1",
            &[others[0].lease(), others[0].lease(), c.lease()],
            at(44)
        )
        .await
        .unwrap()
    );
    rec!("snapshot", snapshot(s).await);

    // Lease expiry, a few at a time, oldest lease first.
    rec!("expire none", s.expire_leases(at(45), 100).await.unwrap());
    rec!("expire one", s.expire_leases(at(150_000), 1).await.unwrap());
    rec!(
        "expire rest",
        s.expire_leases(at(150_000), 100).await.unwrap()
    );

    // Who decided, with fewer decisions than items.
    let c4 = rec!(
        "claim",
        s.claim("w1", 100, LEASE, at(150_001)).await.unwrap()
    );
    let mut fails = Vec::new();
    let mut dones = Vec::new();
    for x in &c4 {
        if x.task_id == tj1 || x.task_id == tj2 || x.task_id == tc {
            fails.push(failure(x, x.task_id != tj2, Some(250)));
        } else {
            dones.push(with_hash(completion(x), "blake3:bb"));
        }
    }
    rec!(
        "fail decided",
        s.fail_decided(
            &fails,
            &[FailureDecision {
                decided_by: "policy:p@1.0.0".into(),
                detail: Some("retry after 250 ms".into()),
                warning: Some("clamped".into()),
            }],
            &[],
            at(150_002),
        )
        .await
        .unwrap()
    );
    rec!("complete", s.complete(&dones, at(150_003)).await.unwrap());
    rec!("snapshot", snapshot(s).await);

    // Run everything to the end, following next_ready_at.
    let mut now = 150_004;
    for _ in 0..50 {
        let Some(next) = rec!("next", s.next_ready_at().await.unwrap()) else {
            break;
        };
        let next = next.max(at(now));
        let c = rec!("claim", s.claim("w1", 2, LEASE, next).await.unwrap());
        let items: Vec<_> = c
            .iter()
            .map(|x| with_hash(completion(x), "blake3:cc"))
            .collect();
        rec!("complete", s.complete(&items, next).await.unwrap());
        now = (next - t0()).num_milliseconds() + 1;
    }
    for task in [tj1, tj2, tf, tc, td, tt] {
        rec!("task", s.task(task).await.unwrap().map(|t| t.state));
    }

    // A step that loses its lease until it ends in error (and its task with it).
    let tl = rec!("create", create(&jitter, json!({"l": 1}), now).await).task_id;
    for _ in 0..6 {
        let c = rec!("claim", s.claim("w9", 1, LEASE, at(now)).await.unwrap());
        if c.is_empty() {
            break;
        }
        now += 31_000;
        rec!("expire", s.expire_leases(at(now), 10).await.unwrap());
    }
    rec!("task", s.task(tl).await.unwrap().map(|t| t.state));

    // Fused hops (complete_and_claim) to the end: tasks started by the claim of a hop,
    // released children claimed in the same call or left behind, tasks finalized.
    let hopped = [
        rec!("create", create(&tree, json!({"h": 1}), now).await).task_id,
        rec!("create", create(&diamond, json!({"h": 2}), now).await).task_id,
    ];
    now += 1;
    let mut c = rec!("claim", s.claim("w2", 1, LEASE, at(now)).await.unwrap());
    while !c.is_empty() {
        now += 7;
        let items: Vec<_> = c.iter().map(completion).collect();
        let (done, next) = rec!(
            "complete_and_claim",
            s.complete_and_claim(&items, &[], "w2", 2, LEASE, at(now))
                .await
                .unwrap()
        );
        assert!(done.iter().all(|o| o.accepted()), "{done:?}");
        c = next;
    }
    for task in hopped {
        rec!("task", s.task(task).await.unwrap().map(|t| t.state));
    }
    // A duplicate identity key last: PostgreSQL uses up a task id on it.
    rec!(
        "dedupe",
        s.create_task(
            &NewTask::new(diamond.key(), json!({})).with_identity_key("d-1"),
            at(now)
        )
        .await
        .unwrap()
    );
    rec!("snapshot", snapshot(s).await);
    log
}

#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn sqlite_matches_postgres_on_the_hot_path(pool: PgPool) {
    let (pg_store, lite_store) = (PgStore::new(pool), SqliteStore::temporary().await.unwrap());
    let pg = scenario(&pg_store).await;
    let lite = scenario(&lite_store).await;
    assert_same(&pg, &lite);
    // And the same event log: every transition, in the same order and transactions.
    assert_same_log(&pg_store, &lite_store).await;
    // The scenario did reach every kind of outcome.
    let text = pg.join("\n");
    for want in [
        "StaleToken",
        "DuplicateInBatch",
        "UnknownStep",
        "NotInProgress",
        "OtherWorker",
        "Some(Exhausted)",
        "Some(Permanent)",
        "Some(Retry)",
        "task_finalized: Some(Error)",
        "task_finalized: Some(Complete)",
        "pinned_hash: Some(\"blake3:j2\")",
        "parent_results: Object {\"a\": Object",
        "policy:p@1.0.0",
        "lease expired (loss 5 of 5 allowed)",
    ] {
        assert!(text.contains(want), "the scenario never produced {want}");
    }
}

fn error_text<T: std::fmt::Debug>(r: Result<T>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => {
            let kind = format!("{e:?}");
            let kind = kind.split([' ', '(', '{']).next().unwrap_or_default();
            format!("{kind}: {e}")
        }
    }
}

/// Refused arguments: the same error (variant and message) on both, and nothing written.
async fn refusals<S: Store>(s: &S) -> Vec<String> {
    let mut log = Vec::new();
    let t = fixtures::linear(2, NOOP);
    s.register_template(&t).await.unwrap();
    s.create_task(&NewTask::new(t.key(), json!({})), at(0))
        .await
        .unwrap();

    log.push(error_text(s.claim("", 5, LEASE, at(0)).await));
    log.push(error_text(s.claim("w", 0, LEASE, at(0)).await));
    log.push(error_text(s.claim("w", u32::MAX, LEASE, at(0)).await));
    log.push(error_text(s.claim("w", 5, Duration::ZERO, at(0)).await));
    let c = s.claim("w", 1, LEASE, at(0)).await.unwrap();
    let before_hb = snapshot(s).await;
    log.push(error_text(
        s.heartbeat("w", &[c[0].lease()], Duration::ZERO, at(1))
            .await,
    ));
    log.push(error_text(
        s.heartbeat("w", &[], Duration::ZERO, at(1)).await,
    ));
    log.push(error_text(s.release("w", &[], at(1)).await));
    log.push(error_text(s.complete(&[], at(1)).await));
    log.push(error_text(s.fail(&[], at(1)).await));
    let mut huge = completion(&c[0]);
    huge.accounting.fuel = Some(u64::MAX);
    log.push(error_text(s.complete(&[huge], at(1)).await));
    assert_eq!(before_hb, snapshot(s).await, "refused calls wrote nothing");

    log.push(error_text(
        s.create_task(&NewTask::new("no/such@1.0.0", json!({})), at(1))
            .await,
    ));
    for ctx in [json!([1]), json!(null), json!("x"), json!(3), json!(true)] {
        log.push(error_text(
            s.create_task(&NewTask::new(t.key(), ctx), at(1)).await,
        ));
    }

    // Templates: another definition under a registered key, and retry settings the
    // template_steps constraints refuse (PostgreSQL checks them in constraint-name order).
    let mut changed = t.clone();
    changed.steps[0].config = json!({"x": 1});
    log.push(error_text(s.register_template(&changed).await));
    let bad = |f: &dyn Fn(&mut Template)| {
        let mut b = one_step("bad", "{}");
        b.steps.push(b.steps[0].clone());
        b.steps[1].name = "second".into();
        f(&mut b);
        b
    };
    let cases: Vec<Template> = vec![
        bad(&|b| b.steps[1].retry.max_attempts = 0),
        bad(&|b| b.steps[1].retry.backoff.jitter = 2.0),
        bad(&|b| {
            b.steps[1].retry.backoff.multiplier = 0.5;
            b.steps[1].retry.backoff.cap_ms = 10;
        }),
        bad(&|b| b.steps[0].retry.max_attempts = 3_000_000_000),
        bad(&|b| {
            b.steps[0].retry.max_attempts = 0;
            b.steps[1].retry.max_attempts = 3_000_000_000;
        }),
        bad(&|b| b.steps[1].retry.max_retry_after_ms = u64::MAX),
        bad(&|b| b.steps[1].depends_on = vec!["second".into()]),
        bad(&|b| {
            b.steps[0].depends_on = vec!["second".into()];
            b.steps[1].depends_on = vec!["only".into()];
        }),
        bad(&|b| b.steps[1].name = "only".into()),
        bad(&|b| b.steps[1].depends_on = vec!["it's".into()]),
        bad(&|b| b.steps.clear()),
    ];
    for b in &cases {
        // A retry setting out of range is refused the same way on both, but each store words
        // the detail itself (PostgreSQL names the SQL type, SQLite the field and its range).
        let text = error_text(s.register_template(b).await);
        log.push(match text.split_once("bad retry settings: ") {
            Some((head, _)) => format!("{head}bad retry settings: …"),
            None => text,
        });
    }
    assert!(s.template(&cases[0].key()).await.unwrap().is_none());
    log
}

#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn sqlite_refuses_what_postgres_refuses(pool: PgPool) {
    let pg = refusals(&PgStore::new(pool)).await;
    let lite = refusals(&SqliteStore::temporary().await.unwrap()).await;
    assert_same(&pg, &lite);
    assert!(pg.iter().filter(|l| !l.starts_with("ok")).count() >= 20);
    assert!(pg.iter().any(|l| l.ends_with("bad retry settings: …")));
}

#[tokio::test]
async fn sqlite_names_the_retry_setting_out_of_range() {
    let lite = SqliteStore::temporary().await.unwrap();
    let mut t = one_step("bad", "{}");
    t.steps[0].retry.max_attempts = 3_000_000_000;
    let err = lite.register_template(&t).await.unwrap_err();
    assert_eq!(
        err,
        StoreError::InvalidInput(
            "template tests/bad@1.0.0: bad retry settings: max_attempts is 3000000000, \
             not an integer within -2147483648..=2147483647"
                .into()
        )
    );
    assert!(lite.template(&t.key()).await.unwrap().is_none());
}

/// Custom events and the outbox rows the hot path writes, in the same order on both.
async fn hooked<S: Store>(s: &S) -> Vec<String> {
    let mut log = Vec::new();
    let t = template(HOOKED);
    s.register_template(&t).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..3 {
        let req = NewTask::new(t.key(), json!({ "i": i }));
        tasks.push(s.create_task(&req, at(i)).await.unwrap().task_id);
    }
    let c = s.claim("w", 10, LEASE, at(5)).await.unwrap();
    let ev = |x: &ClaimedStep, name: &str, token_off: i64| CustomEventRecord {
        step_id: x.step_id,
        token: x.token + token_off,
        name: name.into(),
        payload: json!({"step": x.step_id}),
    };
    // Task 0 completes a, task 1 fails a (retry), task 2's a fails for good.
    log.push(format!(
        "{:?}",
        s.complete_with_events(
            &[completion(&c[0])],
            &[
                ev(&c[0], "done", 0),
                ev(&c[1], "not_this_call", 0),
                ev(&c[0], "stale", 1)
            ],
            at(6)
        )
        .await
        .unwrap()
    ));
    let mut permanent = failure(&c[2], false, None);
    permanent.error_kind = ErrorKind::BadOutput;
    log.push(format!(
        "{:?}",
        s.fail_decided(
            &[failure(&c[1], true, None), permanent],
            &[],
            &[ev(&c[1], "failed_once", 0), ev(&c[2], "gave_up", 0)],
            at(7)
        )
        .await
        .unwrap()
    ));
    // The expired lease of task 0's children, then everything to the end.
    s.claim("w", 10, Duration::from_secs(1), at(8))
        .await
        .unwrap();
    log.push(format!(
        "{:?}",
        s.expire_leases(at(5_000), 10).await.unwrap()
    ));
    let mut now = 5_000;
    while let Some(next) = s.next_ready_at().await.unwrap() {
        let next = next.max(at(now));
        let c = s.claim("w", 10, LEASE, next).await.unwrap();
        let items: Vec<_> = c.iter().map(completion).collect();
        let events: Vec<_> = c.iter().map(|x| ev(x, "ran", 0)).collect();
        log.push(format!(
            "{:?}",
            s.complete_with_events(&items, &events, next).await.unwrap()
        ));
        now = (next - t0()).num_milliseconds() + 1;
    }
    for task in tasks {
        for r in s.hook_outbox_of_task(task).await.unwrap() {
            log.push(format!("{r:?}"));
        }
    }
    log
}

#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn sqlite_custom_events_and_outbox_match_postgres(pool: PgPool) {
    let (pg_store, lite_store) = (PgStore::new(pool), SqliteStore::temporary().await.unwrap());
    let pg = hooked(&pg_store).await;
    let lite = hooked(&lite_store).await;
    assert_same(&pg, &lite);
    // The custom events are in the event log too, at the same places on both.
    assert_same_log(&pg_store, &lite_store).await;
    let text = pg.join("\n");
    for want in [
        "custom.done",
        "custom.failed_once",
        "custom.gave_up",
        "custom.ran",
    ] {
        assert!(text.contains(want), "no {want} in the outbox");
    }
    for never in ["custom.stale", "custom.not_this_call"] {
        assert!(!text.contains(never), "{never} was kept");
    }
}

/// What the workers saw: every claim `(step, token)`, and which steps are held right now.
#[derive(Default)]
struct Seen {
    claims: HashSet<(StepId, i64)>,
    held: HashSet<StepId>,
    completed: HashMap<StepId, usize>,
}

/// Eight tasks share one store, claiming, completing, failing (retry at once) and releasing.
/// No step is ever held by two claims, no token is handed out twice, every step completes
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_workers_in_one_process_never_hold_a_step_twice() {
    let s = SqliteStore::temporary().await.unwrap();
    let templates = [fixtures::mixed_20(NOOP), fixtures::diamond(NOOP)];
    let mut steps = 0;
    for t in &templates {
        s.register_template(t).await.unwrap();
        for i in 0..60 {
            let req = NewTask::new(t.key(), json!({ "i": i }));
            s.create_task(&req, chrono::Utc::now()).await.unwrap();
            steps += t.steps.len();
        }
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut handles = Vec::new();
    for w in 0..8 {
        let (s, seen) = (s.clone(), seen.clone());
        handles.push(tokio::spawn(async move {
            let name = format!("w{w}");
            let limit = 1 + (w % 5) as u32;
            let mut round = 0u64;
            let mut idle = 0;
            while idle < 20 {
                round += 1;
                let c = s
                    .claim(&name, limit, LEASE, chrono::Utc::now())
                    .await
                    .unwrap();
                if c.is_empty() {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                idle = 0;
                {
                    let mut seen = seen.lock().unwrap();
                    for x in &c {
                        assert!(seen.claims.insert((x.step_id, x.token)), "token reused");
                        assert!(seen.held.insert(x.step_id), "step held twice");
                    }
                }
                // Give up the steps in the store's eyes only after the test forgot them, so
                // a quicker worker's claim cannot look like a double hold.
                let (mut done, mut failed, mut released) = (Vec::new(), Vec::new(), Vec::new());
                for (i, x) in c.iter().enumerate() {
                    match (round + i as u64) % 7 {
                        0 if x.attempt < 3 => failed.push(failure(x, true, Some(0))),
                        1 => released.push(x.lease()),
                        _ => done.push(completion(x)),
                    }
                }
                {
                    let mut seen = seen.lock().unwrap();
                    for x in &c {
                        seen.held.remove(&x.step_id);
                    }
                    for d in &done {
                        *seen.completed.entry(d.step_id).or_default() += 1;
                    }
                }
                let now = chrono::Utc::now();
                for o in s.release(&name, &released, now).await.unwrap() {
                    assert_eq!(o.refusal, None, "a held lease was refused");
                }
                for o in s.fail(&failed, now).await.unwrap() {
                    assert_eq!(o.refusal, None, "a held lease was refused");
                }
                for o in s.complete(&done, now).await.unwrap() {
                    assert_eq!(o.refusal, None, "a held lease was refused");
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(seen.completed.len(), steps, "every step completed");
    assert!(seen.completed.values().all(|n| *n == 1), "exactly once");
    let mut per_step: BTreeMap<StepId, Vec<i64>> = BTreeMap::new();
    for (step, token) in &seen.claims {
        per_step.entry(*step).or_default().push(*token);
    }
    for tokens in per_step.values_mut() {
        tokens.sort_unstable();
        assert_eq!(
            *tokens,
            (1..=tokens.len() as i64).collect::<Vec<_>>(),
            "tokens are 1, 2, 3... per step"
        );
    }
    assert!(seen.claims.len() > steps, "some steps went round again");
    let open = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tasks WHERE state <> 'complete'")
        .fetch_one(s.reader())
        .await
        .unwrap();
    assert_eq!(open, 0);
    let attempts = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM attempts")
        .fetch_one(s.reader())
        .await
        .unwrap();
    assert_eq!(
        attempts as usize,
        seen.claims.len(),
        "one attempt per claim"
    );
    let t = s.task(TaskId::new(1)).await.unwrap().unwrap();
    assert_eq!(t.state, TaskState::Complete);
    assert_eq!(s.next_ready_at().await.unwrap(), None);
}
